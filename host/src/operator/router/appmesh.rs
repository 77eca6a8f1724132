//! App Mesh `appmesh.k8s.aws/v1beta2`: VirtualNodes `<apex>-primary` and
//! `<apex>-canary`, and a VirtualRouter plus VirtualService for `<apex>`
//! (the weighted entry point) and `<apex>-canary` (always the canary, for
//! tests and load generators), in the shapes Flagger writes.
//!
//! Differences from Flagger, on purpose: VirtualNode pod selectors use the
//! target's selector label value (Flagger uses the Deployment name, which
//! selects nothing when they differ); A/B headers are sorted by name (Flagger
//! iterates a Go map, so its routes change order between reconciles); retry
//! events are trimmed (`"a, b"` would be rejected by the schema); the
//! VirtualServices are kept in step like the other objects.
use super::{Retirement, RouteTarget, Router};
use crate::api::duration;
use crate::core::Routes;
use crate::operator::cache::{self, Cache, Cached};
use anyhow::{Context, Result};
use fledge_policy::{MatchRule, RoutePlan, StringMatch};
use futures::future::BoxFuture;
use futures::FutureExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Map, Value};
use std::sync::{Arc, OnceLock};

const GROUP: &str = "appmesh.k8s.aws";
const VERSION: &str = "v1beta2";
const FIELD_MANAGER: &str = "fledge";
const ACCESS_LOG_ANNOTATION: &str = "appmesh.flagger.app/accesslog";
/// The namespace label that has App Mesh's sidecar injector act on its pods.
pub const INJECTOR_LABEL: &str = "appmesh.k8s.aws/sidecarInjectorWebhook";
/// The container App Mesh's injector adds to a pod.
const ENVOY_CONTAINER: &str = "envoy";

pub struct AppMesh {
    client: Client,
    node: ApiResource,
    router: ApiResource,
    service: ApiResource,
    cache: OnceLock<Arc<Cache>>,
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

impl AppMesh {
    pub fn new(client: Client) -> AppMesh {
        AppMesh {
            client,
            node: resource("VirtualNode", "virtualnodes"),
            router: resource("VirtualRouter", "virtualrouters"),
            service: resource("VirtualService", "virtualservices"),
            cache: OnceLock::new(),
        }
    }

    fn api(&self, ar: &ApiResource, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, ar)
    }

    /// Applies `obj`, unless this process applied the same object before and
    /// it has not changed since (then applying it again would change nothing).
    async fn apply(&self, ar: &ApiResource, ns: &str, obj: Value) -> Result<()> {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let desired = cache::fingerprint(&obj);
        let cache = self.cache.get();
        if let Some((c, store)) = cache.and_then(|c| Some((c, c.mesh.get(&ar.kind)?))) {
            let live = cache::live_version(store, ns, &name, ar.clone());
            if c.writes
                .unchanged(&cache::key(&ar.kind, ns, &name), desired, live.as_deref())
            {
                return Ok(());
            }
        }
        let applied = self
            .api(ar, ns)
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .with_context(|| format!("applying {} {name}.{ns}", ar.kind))?;
        if let Some((c, store)) = cache.and_then(|c| Some((c, c.mesh.get(&ar.kind)?))) {
            let rv = applied.metadata.resource_version;
            let kind = (ar.kind.as_str(), ar.clone());
            cache::note_write(store, &c.writes, kind, ns, &name, rv, Some(desired));
        }
        Ok(())
    }

    /// The apex VirtualRouter: from the store when it is current, else read.
    async fn live_router(&self, t: &RouteTarget<'_>) -> Result<Option<Value>> {
        let ns = t.namespace();
        let kind = &self.router.kind;
        if let Some(c) = self.cache.get() {
            if let Some(store) = c.mesh.get(kind) {
                if let Cached::Known(found) =
                    cache::lookup(store, &c.writes, (kind, self.router.clone()), ns, t.apex())
                {
                    return Ok(found
                        .map(|o| serde_json::to_value(o.as_ref()))
                        .transpose()?);
                }
            }
        }
        let found = self.api(&self.router, ns).get_opt(t.apex()).await?;
        if let Some((c, store)) = self.cache.get().and_then(|c| Some((c, c.mesh.get(kind)?))) {
            let rv = found
                .as_ref()
                .and_then(|o| o.metadata.resource_version.as_deref());
            let kind = (kind.as_str(), self.router.clone());
            cache::note_read(store, &c.writes, kind, ns, t.apex(), rv);
        }
        Ok(found.map(serde_json::to_value).transpose()?)
    }

    /// Deletes `name` if the Canary `owner` owns it (Fledge made it); whether
    /// it did.
    async fn delete_owned(
        &self,
        ar: &ApiResource,
        ns: &str,
        name: &str,
        owner: &str,
    ) -> Result<bool> {
        let api = self.api(ar, ns);
        let Some(live) = api.get_opt(name).await? else {
            return Ok(false);
        };
        let owned = live
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == owner);
        if !owned {
            return Ok(false);
        }
        match api.delete(name, &Default::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(e).with_context(|| format!("deleting {} {name}.{ns}", ar.kind)),
        }
    }

    /// Why the VirtualNodes of `t` must stay: App Mesh's injector refuses
    /// the pods no VirtualNode selects while it acts on the namespace, and
    /// pods that still run its envoy sidecar need their VirtualNode.
    async fn nodes_needed(&self, t: &RouteTarget<'_>) -> Result<Option<String>> {
        use k8s_openapi::api::core::v1::{Namespace, Pod};
        let ns = t.namespace();
        let primary = t.rollout.primary();
        let restart = format!(
            "restart the workloads so their pods run without the sidecar (kubectl -n {ns} \
             rollout restart deployment/{primary}); the VirtualNodes are deleted on a later reconcile"
        );
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.get_opt(ns).await {
            Ok(found) => {
                let labels = found.and_then(|n| n.metadata.labels).unwrap_or_default();
                if labels.get(INJECTOR_LABEL).map(String::as_str) == Some("enabled") {
                    return Ok(Some(format!(
                        "namespace {ns} has label {INJECTOR_LABEL}=enabled, and App Mesh's sidecar \
                         injector refuses pods that no VirtualNode selects; remove the label \
                         (kubectl label namespace {ns} {INJECTOR_LABEL}-), then {restart}"
                    )));
                }
            }
            Err(kube::Error::Api(e)) if e.code == 403 => {
                return Ok(Some(format!(
                    "the labels of namespace {ns} cannot be read ({}), so whether App Mesh's \
                     sidecar injector still acts on it is unknown; once it does not and no pod \
                     runs an envoy sidecar, delete the VirtualNodes by hand",
                    e.message
                )));
            }
            Err(e) => return Err(e).with_context(|| format!("reading namespace {ns}")),
        }
        let (key, value) = t.label;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let selector = format!("{key} in ({value},{value}-primary)");
        let list = pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .with_context(|| format!("listing the pods of {selector} in {ns}"))?;
        let mut sidecars: Vec<String> = list
            .items
            .iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .is_some_and(|s| s.containers.iter().any(|c| c.name == ENVOY_CONTAINER))
            })
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        if sidecars.is_empty() {
            return Ok(None);
        }
        sidecars.sort();
        Ok(Some(format!(
            "pods {} still run App Mesh's envoy sidecar; {restart}",
            sidecars.join(", ")
        )))
    }

    async fn apply_router(
        &self,
        t: &RouteTarget<'_>,
        routes: Routes,
        rules: &[MatchRule],
    ) -> Result<()> {
        self.apply(&self.router, t.namespace(), apex_router(t, routes, rules))
            .await
            .context("reconcileVirtualRouter failed")
    }
}

/// `containerPort`: an integer `targetPort` above zero, else `port`.
fn container_port(t: &RouteTarget<'_>) -> i64 {
    match t.service.get("targetPort") {
        Some(Value::Number(n)) if n.as_i64().unwrap_or(0) > 0 => n.as_i64().unwrap_or(0),
        _ => i64::from(t.rollout.service_port),
    }
}

fn protocol(t: &RouteTarget<'_>) -> &'static str {
    let name = t
        .service
        .get("portName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.contains("grpc") {
        "grpc"
    } else {
        "http"
    }
}

fn millis(s: Option<&str>) -> Option<i64> {
    let d = duration::parse(s?).ok()?;
    Some(d.as_millis() as i64)
}

fn timeout(t: &RouteTarget<'_>) -> Option<Value> {
    let ms = millis(t.service.get("timeout").and_then(Value::as_str))?;
    Some(json!({"unit": "ms", "value": ms}))
}

fn port_mapping(t: &RouteTarget<'_>) -> Value {
    json!({"port": container_port(t), "protocol": protocol(t)})
}

fn prefix(t: &RouteTarget<'_>) -> String {
    t.service
        .pointer("/match/0/uri/prefix")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_string()
}

fn retry_policy(t: &RouteTarget<'_>) -> Option<Value> {
    let r = t.service.get("retries").filter(|r| r.is_object())?;
    let attempts = r
        .get("attempts")
        .and_then(Value::as_i64)
        .filter(|a| *a > 0)
        .unwrap_or(1);
    let per_try = millis(r.get("perTryTimeout").and_then(Value::as_str)).unwrap_or(250);
    let events: Vec<String> = r
        .get("retryOn")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect()
        })
        .unwrap_or_else(|| vec!["gateway-error".to_string()]);
    Some(json!({
        "maxRetries": attempts,
        "perRetryTimeout": {"unit": "ms", "value": per_try},
        "httpRetryEvents": events,
    }))
}

fn metadata(t: &RouteTarget<'_>, name: &str, extra: Map<String, Value>) -> Value {
    json!({
        "name": name,
        "namespace": t.namespace(),
        "ownerReferences": [t.owner],
        "labels": Value::Object(extra.get("labels").and_then(Value::as_object).cloned().unwrap_or_default()),
        "annotations": Value::Object(extra.get("annotations").and_then(Value::as_object).cloned().unwrap_or_default()),
    })
}

/// A VirtualNode for the pods whose selector label is `selects`.
pub fn virtual_node(t: &RouteTarget<'_>, name: &str, selects: &str) -> Value {
    let apex_meta = t.service.get("apex");
    let labels = apex_meta
        .and_then(|m| m.get("labels"))
        .cloned()
        .unwrap_or(json!({}));
    let mut annotations = apex_meta
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.insert(
        "kustomize.toolkit.fluxcd.io/reconcile".into(),
        json!("disabled"),
    );
    annotations.insert(
        "helm.toolkit.fluxcd.io/driftDetection".into(),
        json!("disabled"),
    );
    let mut extra = Map::new();
    extra.insert("labels".into(), labels);
    extra.insert("annotations".into(), Value::Object(annotations));
    let mut listener = json!({"portMapping": port_mapping(t)});
    if let Some(to) = timeout(t) {
        listener["timeout"] = json!({"http": {"perRequest": to}});
    }
    let mut spec = json!({
        "podSelector": {"matchLabels": {t.label.0: selects}},
        "listeners": [listener],
        "serviceDiscovery": {"dns": {"hostname": format!("{name}.{}.svc.cluster.local.", t.namespace())}},
    });
    if t.annotations.get(ACCESS_LOG_ANNOTATION).map(String::as_str) == Some("enabled") {
        spec["logging"] = json!({"accessLog": {"file": {"path": "/dev/stdout"}}});
    }
    let backends: Vec<Value> = t
        .service
        .get("backends")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|b| {
            if b.starts_with("arn:aws") {
                json!({"virtualService": {"virtualServiceARN": b}})
            } else {
                json!({"virtualService": {"virtualServiceRef": {"name": b}}})
            }
        })
        .collect();
    if !backends.is_empty() {
        spec["backends"] = json!(backends);
    }
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "VirtualNode",
        "metadata": metadata(t, name, extra),
        "spec": spec,
    })
}

fn weighted(t: &RouteTarget<'_>, routes: Routes) -> Value {
    json!([
        {"virtualNodeRef": {"name": format!("{}-canary", t.apex())}, "weight": routes.canary},
        {"virtualNodeRef": {"name": format!("{}-primary", t.apex())}, "weight": routes.primary},
    ])
}

fn http_route(t: &RouteTarget<'_>, headers: Option<Vec<Value>>, targets: Value) -> Value {
    let mut m = json!({"prefix": prefix(t)});
    if let Some(h) = headers {
        m["headers"] = json!(h);
    }
    let mut route = json!({"match": m, "action": {"weightedTargets": targets}});
    if let Some(to) = timeout(t) {
        route["timeout"] = json!({"perRequest": to});
    }
    if let Some(r) = retry_policy(t) {
        route["retryPolicy"] = r;
    }
    route
}

/// All header conditions of all rules in one route (App Mesh cannot OR
/// routes' matches), sorted by name.
fn headers(rules: &[MatchRule]) -> Vec<Value> {
    let mut all: Vec<_> = rules.iter().flat_map(|r| r.headers.iter()).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all.into_iter()
        .map(|h| {
            let m = match &h.matcher {
                StringMatch::Exact(v) => json!({"exact": v}),
                StringMatch::Prefix(v) => json!({"prefix": v}),
                StringMatch::Suffix(v) => json!({"suffix": v}),
                StringMatch::Regex(v) => json!({"regex": v}),
            };
            json!({"name": h.name, "match": m})
        })
        .collect()
}

fn router_object(t: &RouteTarget<'_>, name: &str, routes: Vec<Value>) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "VirtualRouter",
        "metadata": metadata(t, name, Map::new()),
        "spec": {
            "listeners": [{"portMapping": port_mapping(t)}],
            "routes": routes,
        }
    })
}

/// The apex VirtualRouter with `routes`; with match rules, the A/B shape:
/// `<apex>-a` (priority 10, the headers, the weights) ahead of `<apex>-b`
/// (priority 20, all to the primary).
pub fn apex_router(t: &RouteTarget<'_>, routes: Routes, rules: &[MatchRule]) -> Value {
    let apex = t.apex();
    let list = if rules.is_empty() {
        vec![json!({"name": apex, "httpRoute": http_route(t, None, weighted(t, routes))})]
    } else {
        vec![
            json!({"name": format!("{apex}-a"), "priority": 10,
                   "httpRoute": http_route(t, Some(headers(rules)), weighted(t, routes))}),
            json!({"name": format!("{apex}-b"), "priority": 20,
            "httpRoute": http_route(t, None, json!([
                {"virtualNodeRef": {"name": format!("{apex}-primary")}, "weight": 100}
            ]))}),
        ]
    };
    router_object(t, apex, list)
}

/// `<apex>-canary`: everything to the canary node.
pub fn canary_router(t: &RouteTarget<'_>) -> Value {
    let name = format!("{}-canary", t.apex());
    let route = json!({"name": name, "httpRoute": http_route(t, None, weighted(t, Routes { primary: 0, canary: 100 }))});
    router_object(t, &name, vec![route])
}

pub fn virtual_service(t: &RouteTarget<'_>, name: &str, apex: bool) -> Value {
    let mut annotations = Map::new();
    let hosts: Vec<&str> = t
        .service
        .get("hosts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if apex && !hosts.is_empty() {
        annotations.insert("gateway.appmesh.k8s.aws/expose".into(), json!("true"));
        let domain: String = hosts.iter().map(|h| format!("{h},")).collect();
        annotations.insert("gateway.appmesh.k8s.aws/domain".into(), json!(domain));
        if let Some(to) = t.service.get("timeout").and_then(Value::as_str) {
            annotations.insert("gateway.appmesh.k8s.aws/timeout".into(), json!(to));
        }
        if let Some(a) = t
            .service
            .pointer("/retries/attempts")
            .and_then(Value::as_i64)
            .filter(|a| *a > 0)
        {
            annotations.insert(
                "gateway.appmesh.k8s.aws/retries".into(),
                json!(a.to_string()),
            );
        }
    }
    let mut extra = Map::new();
    extra.insert("annotations".into(), Value::Object(annotations));
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "VirtualService",
        "metadata": metadata(t, name, extra),
        "spec": {"provider": {"virtualRouter": {"virtualRouterRef": {"name": name}}}},
    })
}

/// The weights of route 0 of a VirtualRouter, by virtual node name.
fn read_routes(router: &Value, apex: &str) -> Option<Routes> {
    let targets = router
        .pointer("/spec/routes/0/httpRoute/action/weightedTargets")?
        .as_array()?;
    let weight = |node: String| {
        targets
            .iter()
            .find(|t| {
                t.pointer("/virtualNodeRef/name").and_then(Value::as_str) == Some(node.as_str())
            })
            .and_then(|t| t.get("weight"))
            .and_then(Value::as_u64)
            .map(|w| w.min(100) as u32)
    };
    Some(Routes {
        primary: weight(format!("{apex}-primary"))?,
        canary: weight(format!("{apex}-canary"))?,
    })
}

impl Router for AppMesh {
    fn providers(&self) -> &'static [&'static str] {
        &["appmesh:v1beta2", "appmesh"]
    }

    fn kinds(&self) -> Vec<ApiResource> {
        vec![self.node.clone(), self.router.clone(), self.service.clone()]
    }

    fn use_cache(&self, cache: Arc<Cache>) {
        let _ = self.cache.set(cache);
    }

    fn reconcile<'a>(&'a self, t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<()>> {
        async move {
            let ns = t.namespace();
            let apex = t.apex();
            let (_, value) = t.label;
            self.apply(
                &self.node,
                ns,
                virtual_node(t, &format!("{apex}-primary"), &format!("{value}-primary")),
            )
            .await
            .context("reconcileVirtualNode failed")?;
            self.apply(
                &self.node,
                ns,
                virtual_node(t, &format!("{apex}-canary"), value),
            )
            .await
            .context("reconcileVirtualNode failed")?;
            // The weights belong to set_routes: keep what is live.
            let live = self.get_routes(t).await?.unwrap_or_default();
            self.apply_router(t, live, t.match_rules()).await?;
            self.apply(&self.service, ns, virtual_service(t, apex, true))
                .await
                .context("reconcileVirtualService failed")?;
            self.apply(&self.router, ns, canary_router(t))
                .await
                .context("reconcileVirtualRouter failed")?;
            self.apply(
                &self.service,
                ns,
                virtual_service(t, &format!("{apex}-canary"), false),
            )
            .await
            .context("reconcileVirtualService failed")?;
            Ok(())
        }
        .boxed()
    }

    fn get_routes<'a>(&'a self, t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<Option<Routes>>> {
        async move {
            let Some(value) = self.live_router(t).await? else {
                return Ok(None);
            };
            Ok(Some(read_routes(&value, t.apex()).with_context(|| {
                format!(
                    "VirtualRouter {} does not contain routes for {}-primary and {}-canary",
                    t.apex(),
                    t.apex(),
                    t.apex()
                )
            })?))
        }
        .boxed()
    }

    fn set_routes<'a>(
        &'a self,
        t: &'a RouteTarget<'a>,
        plan: &'a RoutePlan,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            let (routes, rules) = super::planned(t, plan);
            self.apply_router(t, routes, rules).await
        }
        .boxed()
    }

    fn finalize<'a>(&'a self, _t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<()>> {
        // The mesh objects are owned by the Canary: the garbage collector
        // removes them, and the apex Service now selects the target again.
        async { Ok(()) }.boxed()
    }

    /// The VirtualServices and VirtualRouters go at once; the VirtualNodes
    /// once no pod of the Canary can need one (see `nodes_needed`).
    fn retire<'a>(&'a self, t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<Retirement>> {
        async move {
            let ns = t.namespace();
            let apex = t.apex();
            let owner = t.owner.uid.as_str();
            let canary = format!("{apex}-canary");
            let mut out = Retirement::default();
            // The services first: they name the routers.
            let routing = [
                (&self.service, apex),
                (&self.service, canary.as_str()),
                (&self.router, apex),
                (&self.router, canary.as_str()),
            ];
            for (ar, name) in routing {
                if self.delete_owned(ar, ns, name, owner).await? {
                    out.deleted.push(format!("{} {name}", ar.kind));
                }
            }
            let nodes = [format!("{apex}-primary"), canary.clone()];
            match self.nodes_needed(t).await? {
                None => {
                    for name in &nodes {
                        if self.delete_owned(&self.node, ns, name, owner).await? {
                            out.deleted.push(format!("VirtualNode {name}"));
                        }
                    }
                }
                Some(why) => {
                    for name in &nodes {
                        if self.api(&self.node, ns).get_opt(name).await?.is_some() {
                            out.kept.push(format!("VirtualNode {name}"));
                        }
                    }
                    if !out.kept.is_empty() {
                        out.why = why;
                    }
                }
            }
            Ok(out)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api;
    use fledge_policy::HeaderMatch;
    use std::collections::BTreeMap;

    fn target<'a>(
        rollout: &'a crate::core::Rollout,
        service: &'a Value,
        annotations: &'a BTreeMap<String, String>,
    ) -> RouteTarget<'a> {
        RouteTarget {
            rollout,
            service,
            annotations,
            label: ("app", "podinfo"),
            owner: Default::default(),
        }
    }

    fn guide() -> (crate::core::Rollout, Value) {
        let canary: api::Canary =
            api::yaml::from_str(include_str!("../../../../examples/podinfo/canary.yaml")).unwrap();
        let service = serde_json::to_value(&canary.spec.as_ref().unwrap().service).unwrap();
        (api::validate(&canary).unwrap().rollout, service)
    }

    #[test]
    fn the_guides_objects() {
        let (rollout, service) = guide();
        let ann = BTreeMap::new();
        let t = target(&rollout, &service, &ann);
        let vn = virtual_node(&t, "podinfo-primary", "podinfo-primary");
        assert_eq!(
            vn["spec"]["podSelector"],
            json!({"matchLabels": {"app": "podinfo-primary"}})
        );
        assert_eq!(
            vn["spec"]["listeners"],
            json!([{"portMapping": {"port": 9898, "protocol": "http"},
                    "timeout": {"http": {"perRequest": {"unit": "ms", "value": 15000}}}}])
        );
        assert_eq!(
            vn["spec"]["serviceDiscovery"]["dns"]["hostname"],
            "podinfo-primary.test.svc.cluster.local."
        );
        let vr = apex_router(
            &t,
            Routes {
                primary: 100,
                canary: 0,
            },
            &[],
        );
        let route = &vr["spec"]["routes"][0];
        assert_eq!(route["name"], "podinfo");
        assert!(route.get("priority").is_none());
        assert_eq!(route["httpRoute"]["match"], json!({"prefix": "/"}));
        assert_eq!(
            route["httpRoute"]["retryPolicy"],
            json!({"maxRetries": 3, "perRetryTimeout": {"unit": "ms", "value": 5000},
                   "httpRetryEvents": ["gateway-error", "client-error", "stream-error"]})
        );
        assert_eq!(
            route["httpRoute"]["action"]["weightedTargets"],
            json!([{"virtualNodeRef": {"name": "podinfo-canary"}, "weight": 0},
                   {"virtualNodeRef": {"name": "podinfo-primary"}, "weight": 100}])
        );
        assert_eq!(
            read_routes(&vr, "podinfo"),
            Some(Routes {
                primary: 100,
                canary: 0
            })
        );
        let cr = canary_router(&t);
        assert_eq!(
            read_routes(&cr, "podinfo"),
            Some(Routes {
                primary: 0,
                canary: 100
            })
        );
        let vs = virtual_service(&t, "podinfo", true);
        assert_eq!(
            vs["spec"]["provider"]["virtualRouter"]["virtualRouterRef"]["name"],
            "podinfo"
        );
    }

    #[test]
    fn ab_routes_put_sorted_headers_ahead_of_the_default() {
        let (rollout, service) = guide();
        let ann = BTreeMap::new();
        let t = target(&rollout, &service, &ann);
        let rules = vec![MatchRule {
            headers: vec![
                HeaderMatch {
                    name: "x-user".into(),
                    matcher: StringMatch::Prefix("beta".into()),
                },
                HeaderMatch {
                    name: "x-canary".into(),
                    matcher: StringMatch::Exact("insider".into()),
                },
            ],
        }];
        let vr = apex_router(
            &t,
            Routes {
                primary: 0,
                canary: 100,
            },
            &rules,
        );
        let routes = vr["spec"]["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(
            (routes[0]["name"].as_str(), routes[0]["priority"].as_i64()),
            (Some("podinfo-a"), Some(10))
        );
        assert_eq!(
            routes[0]["httpRoute"]["match"]["headers"],
            json!([{"name": "x-canary", "match": {"exact": "insider"}},
                   {"name": "x-user", "match": {"prefix": "beta"}}])
        );
        assert_eq!(
            (routes[1]["name"].as_str(), routes[1]["priority"].as_i64()),
            (Some("podinfo-b"), Some(20))
        );
        assert_eq!(
            routes[1]["httpRoute"]["action"]["weightedTargets"],
            json!([{"virtualNodeRef": {"name": "podinfo-primary"}, "weight": 100}])
        );
        assert_eq!(
            read_routes(&vr, "podinfo"),
            Some(Routes {
                primary: 0,
                canary: 100
            })
        );
    }
}
