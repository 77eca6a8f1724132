//! Gateway API `gateway.networking.k8s.io/v1`: one HTTPRoute named after the
//! apex Service, attached to `spec.service.gatewayRefs`, whose rule 0 splits
//! traffic between the `<apex>-primary` and `<apex>-canary` Services, in the
//! shape Flagger's `gatewayapi:v1` router writes.
//!
//! Differences from Flagger, on purpose: header `prefix`/`suffix` conditions
//! become anchored regular expressions instead of being dropped (Flagger's
//! rule 0 then matches everything and sends all traffic to the canary);
//! conditions an HTTPRoute cannot express are refused by validation
//! ([`inexpressible`]); A/B headers are added to the service match's headers
//! rather than replacing them; the weights are read only from a route every
//! parent has accepted at its current generation.
use super::{NotReady, Retirement, RouteTarget, Router};
use crate::api::{CanaryService, HeaderOperations, HttpMatchRequest, Issue, IstioStringMatch};
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
use std::time::Duration;

pub const GROUP: &str = "gateway.networking.k8s.io";
pub const VERSION: &str = "v1";
pub const KIND: &str = "HTTPRoute";
pub const PLURAL: &str = "httproutes";
/// The provider this router serves.
pub const PROVIDER: &str = "gatewayapi:v1";
const FIELD_MANAGER: &str = "fledge";
const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The HTTPRoute kind.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

pub struct GatewayApi {
    client: Client,
    route: ApiResource,
    cache: OnceLock<Arc<Cache>>,
}

impl GatewayApi {
    pub fn new(client: Client) -> GatewayApi {
        GatewayApi {
            client,
            route: resource(),
            cache: OnceLock::new(),
        }
    }

    fn api(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &self.route)
    }

    fn store(&self) -> Option<(&Arc<Cache>, &kube::runtime::reflector::Store<DynamicObject>)> {
        let c = self.cache.get()?;
        Some((c, c.mesh.get(KIND)?))
    }

    /// Applies the route, unless this process applied the same object before
    /// and it has not changed since.
    async fn apply(&self, ns: &str, obj: Value) -> Result<()> {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let desired = cache::fingerprint(&obj);
        if let Some((c, store)) = self.store() {
            let live = cache::live_version(store, ns, &name, self.route.clone());
            if c.writes
                .unchanged(&cache::key(KIND, ns, &name), desired, live.as_deref())
            {
                return Ok(());
            }
        }
        let applied = self
            .api(ns)
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .with_context(|| format!("applying HTTPRoute {name}.{ns}"))?;
        if let Some((c, store)) = self.store() {
            let rv = applied.metadata.resource_version;
            let kind = (KIND, self.route.clone());
            cache::note_write(store, &c.writes, kind, ns, &name, rv, Some(desired));
        }
        Ok(())
    }

    /// The live HTTPRoute: from the store when it is current, else read.
    async fn live(&self, t: &RouteTarget<'_>) -> Result<Option<Value>> {
        let ns = t.namespace();
        if let Some((c, store)) = self.store() {
            if let Cached::Known(found) =
                cache::lookup(store, &c.writes, (KIND, self.route.clone()), ns, t.apex())
            {
                return Ok(found
                    .map(|o| serde_json::to_value(o.as_ref()))
                    .transpose()?);
            }
        }
        let found = self
            .api(ns)
            .get_opt(t.apex())
            .await
            .with_context(|| format!("reading HTTPRoute {}.{ns}", t.apex()))?;
        if let Some((c, store)) = self.store() {
            let rv = found
                .as_ref()
                .and_then(|o| o.metadata.resource_version.as_deref());
            cache::note_read(
                store,
                &c.writes,
                (KIND, self.route.clone()),
                ns,
                t.apex(),
                rv,
            );
        }
        Ok(found.map(serde_json::to_value).transpose()?)
    }

    async fn apply_route(
        &self,
        t: &RouteTarget<'_>,
        routes: Routes,
        rules: &[MatchRule],
    ) -> Result<()> {
        refuse_inexpressible(t)?;
        self.apply(t.namespace(), http_route(t, routes, rules))
            .await
            .context("reconcileHTTPRoute failed")
    }
}

/// `spec.service` as written, typed.
fn service(t: &RouteTarget<'_>) -> CanaryService {
    serde_json::from_value(t.service.clone()).unwrap_or_default()
}

/// The Canary's conditions the route cannot express, as one error: applying
/// the route without them would send traffic they exclude.
fn refuse_inexpressible(t: &RouteTarget<'_>) -> Result<()> {
    let issues = inexpressible(&service(t));
    if issues.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = issues.iter().map(Issue::to_string).collect();
    anyhow::bail!(
        "HTTPRoute {}.{} not written: {}",
        t.apex(),
        t.namespace(),
        text.join("; ")
    )
}

/// An anchored regular expression matching the strings that start with `v`.
pub fn prefix_regex(v: &str) -> String {
    format!("^{}.*", regex::escape(v))
}

/// An anchored regular expression matching the strings that end with `v`.
pub fn suffix_regex(v: &str) -> String {
    format!("^.*{}$", regex::escape(v))
}

/// `{name, type, value}` of a header or query parameter condition.
fn condition(name: &str, m: &StringMatch) -> Value {
    let (kind, value) = match m {
        StringMatch::Exact(v) => ("Exact", v.clone()),
        StringMatch::Regex(v) => ("RegularExpression", v.clone()),
        StringMatch::Prefix(v) => ("RegularExpression", prefix_regex(v)),
        StringMatch::Suffix(v) => ("RegularExpression", suffix_regex(v)),
    };
    json!({"name": name, "type": kind, "value": value})
}

/// An Istio string match with exactly one comparison, as a [`StringMatch`].
fn istio(m: &IstioStringMatch) -> Option<StringMatch> {
    let set: Vec<StringMatch> = [
        m.exact.clone().map(StringMatch::Exact),
        m.prefix.clone().map(StringMatch::Prefix),
        m.regex.clone().map(StringMatch::Regex),
    ]
    .into_iter()
    .flatten()
    .collect();
    if set.len() == 1 {
        set.into_iter().next()
    } else {
        None
    }
}

fn issue(field: String, problem: &str, fix: &str) -> Issue {
    Issue {
        field,
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// What of `spec.service.match` an HTTPRoute cannot express. Every such
/// condition is an error: dropping it would widen the match.
pub fn inexpressible(svc: &CanaryService) -> Vec<Issue> {
    let mut issues = Vec::new();
    for (i, m) in svc.match_.iter().flatten().enumerate() {
        let field = |f: &str| format!("spec.service.match[{i}].{f}");
        let unsupported: [(&str, bool); 8] = [
            ("authority", m.authority.is_some()),
            ("gateways", m.gateways.is_some()),
            ("ignoreUriCase", m.ignore_uri_case.unwrap_or(false)),
            ("port", m.port.is_some()),
            ("scheme", m.scheme.is_some()),
            ("sourceLabels", m.source_labels.is_some()),
            ("sourceNamespace", m.source_namespace.is_some()),
            ("withoutHeaders", m.without_headers.is_some()),
        ];
        for (f, set) in unsupported {
            if set {
                issues.push(issue(
                    field(f),
                    "an HTTPRoute match cannot express it",
                    "remove it, or express the condition with uri, method, headers or queryParams",
                ));
            }
        }
        if let Some(u) = &m.uri {
            if istio(u).is_none() {
                issues.push(issue(
                    field("uri"),
                    "needs exactly one of exact, prefix or regex",
                    "give one comparison, e.g. uri: {prefix: /api}",
                ));
            }
        }
        if let Some(method) = &m.method {
            let ok = method
                .exact
                .as_deref()
                .is_some_and(|v| HTTP_METHODS.contains(&v))
                && method.prefix.is_none()
                && method.regex.is_none();
            if !ok {
                issues.push(issue(
                    field("method"),
                    "an HTTPRoute matches a method only exactly, by its upper-case name",
                    "use method: {exact: GET} (or another HTTP method)",
                ));
            }
        }
        for (what, map) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
            for (name, v) in map.iter().flatten() {
                if istio(v).is_none() {
                    issues.push(issue(
                        field(&format!("{what}.{name}")),
                        "needs exactly one of exact, prefix or regex",
                        "give one comparison, e.g. {exact: value}",
                    ));
                }
            }
        }
    }
    issues
}

/// One `spec.service.match` entry as an HTTPRouteMatch (`None` when empty).
fn route_match(m: &HttpMatchRequest) -> Option<Value> {
    let mut out = Map::new();
    if let Some(u) = m.uri.as_ref().and_then(istio) {
        let (kind, value) = match u {
            StringMatch::Exact(v) => ("Exact", v),
            StringMatch::Regex(v) => ("RegularExpression", v),
            StringMatch::Prefix(v) | StringMatch::Suffix(v) => ("PathPrefix", v),
        };
        out.insert("path".into(), json!({"type": kind, "value": value}));
    }
    if let Some(method) = m.method.as_ref().and_then(|x| x.exact.clone()) {
        out.insert("method".into(), json!(method));
    }
    for (what, map) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
        let list: Vec<Value> = map
            .iter()
            .flatten()
            .filter_map(|(name, v)| Some(condition(name, &istio(v)?)))
            .collect();
        if !list.is_empty() {
            out.insert(what.into(), json!(list));
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// The service's matches; `PathPrefix /` when there are none.
pub fn service_matches(svc: &CanaryService) -> Vec<Value> {
    let list: Vec<Value> = svc
        .match_
        .iter()
        .flatten()
        .filter_map(route_match)
        .collect();
    if list.is_empty() {
        vec![json!({"path": {"type": "PathPrefix", "value": "/"}})]
    } else {
        list
    }
}

/// Each A/B rule crossed with each service match: the service match's path,
/// method and query, its headers plus the rule's (a rule's header wins over
/// the service's of the same name).
pub fn ab_matches(rules: &[MatchRule], service: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for r in rules {
        let headers: Vec<Value> = r
            .headers
            .iter()
            .map(|h| condition(&h.name, &h.matcher))
            .collect();
        for s in service {
            let mut m = s.clone();
            let mut all: Vec<Value> = m
                .get("headers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|h| {
                    let name = h["name"].as_str().unwrap_or("").to_ascii_lowercase();
                    !r.headers.iter().any(|x| x.name == name)
                })
                .cloned()
                .collect();
            all.extend(headers.iter().cloned());
            m["headers"] = json!(all);
            out.push(m);
        }
    }
    out
}

fn header_ops(ops: &HeaderOperations) -> Value {
    let pairs = |m: &Option<std::collections::BTreeMap<String, String>>| -> Vec<Value> {
        m.iter()
            .flatten()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect()
    };
    let mut f = Map::new();
    let add = pairs(&ops.add);
    if !add.is_empty() {
        f.insert("add".into(), json!(add));
    }
    let set = pairs(&ops.set);
    if !set.is_empty() {
        f.insert("set".into(), json!(set));
    }
    if let Some(r) = ops.remove.as_ref().filter(|r| !r.is_empty()) {
        f.insert("remove".into(), json!(r));
    }
    Value::Object(f)
}

/// Request and response header modifiers of `spec.service.headers`.
fn filters(svc: &CanaryService) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(h) = &svc.headers {
        if let Some(r) = &h.request {
            out.push(
                json!({"type": "RequestHeaderModifier", "requestHeaderModifier": header_ops(r)}),
            );
        }
        if let Some(r) = &h.response {
            out.push(
                json!({"type": "ResponseHeaderModifier", "responseHeaderModifier": header_ops(r)}),
            );
        }
    }
    out
}

/// `timeouts` from `spec.service.timeout` and `backendTimeout`.
fn timeouts(svc: &CanaryService) -> Option<Value> {
    let mut t = Map::new();
    if let Some(v) = svc.timeout.as_ref().filter(|v| !v.is_empty()) {
        t.insert("request".into(), json!(v));
    }
    if let Some(v) = svc.backend_timeout.as_ref().filter(|v| !v.is_empty()) {
        t.insert("backendRequest".into(), json!(v));
    }
    (!t.is_empty()).then_some(Value::Object(t))
}

fn backend(name: String, port: i32, weight: u32) -> Value {
    json!({"group": "", "kind": "Service", "name": name, "port": port, "weight": weight})
}

fn rule(svc: &CanaryService, matches: Vec<Value>, backends: Vec<Value>) -> Value {
    let mut r = json!({"matches": matches, "backendRefs": backends});
    let f = filters(svc);
    if !f.is_empty() {
        r["filters"] = json!(f);
    }
    if let Some(to) = timeouts(svc) {
        r["timeouts"] = to;
    }
    r
}

/// `spec.service.gatewayRefs` as parentRefs, fields as given.
pub fn parent_refs(svc: &CanaryService) -> Vec<Value> {
    svc.gateway_refs
        .iter()
        .flatten()
        .map(|p| serde_json::to_value(p).unwrap_or_default())
        .collect()
}

/// The HTTPRoute for `t` with `routes`; with match rules, the A/B shape:
/// rule 0 (the rules crossed with the service matches, the weights) and
/// rule 1 (the service matches, all to the primary).
pub fn http_route(t: &RouteTarget<'_>, routes: Routes, rules: &[MatchRule]) -> Value {
    let svc = service(t);
    let apex = t.apex();
    let port = t.rollout.service_port;
    let primary = format!("{apex}-primary");
    let canary = format!("{apex}-canary");
    let matches = service_matches(&svc);
    let weighted = vec![
        backend(primary.clone(), port, routes.primary),
        backend(canary, port, routes.canary),
    ];
    let mut list = Vec::new();
    if rules.is_empty() {
        list.push(rule(&svc, matches, weighted));
    } else {
        list.push(rule(&svc, ab_matches(rules, &matches), weighted));
        list.push(rule(&svc, matches, vec![backend(primary, port, 100)]));
    }
    let apex_meta = svc.apex.clone().unwrap_or_default();
    let mut spec = json!({"parentRefs": parent_refs(&svc), "rules": list});
    let hosts = svc.hosts.clone().unwrap_or_default();
    if !hosts.is_empty() {
        spec["hostnames"] = json!(hosts);
    }
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": {
            "name": apex,
            "namespace": t.namespace(),
            "ownerReferences": [t.owner],
            "labels": apex_meta.labels.unwrap_or_default(),
            "annotations": apex_meta.annotations.unwrap_or_default(),
        },
        "spec": spec,
    })
}

/// The weights of the first rule that routes to both `<apex>-primary` and
/// `<apex>-canary`.
pub fn read_routes(route: &Value, apex: &str) -> Option<Routes> {
    let primary = format!("{apex}-primary");
    let canary = format!("{apex}-canary");
    route
        .pointer("/spec/rules")?
        .as_array()?
        .iter()
        .find_map(|r| {
            let refs = r.get("backendRefs")?.as_array()?;
            let weight = |name: &str| {
                refs.iter()
                    .find(|b| b.get("name").and_then(Value::as_str) == Some(name))
                    // An unset weight is 1 in Gateway API.
                    .map(|b| b.get("weight").and_then(Value::as_u64).unwrap_or(1))
                    .map(|w| w.min(100) as u32)
            };
            Some(Routes {
                primary: weight(&primary)?,
                canary: weight(&canary)?,
            })
        })
}

/// A parentRef with Gateway API's defaults filled in, for comparing the
/// route's parentRefs with those of its status.
fn normalized(p: &Value, route_ns: &str) -> Value {
    let s = |k: &str, d: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .unwrap_or(d)
            .to_string()
    };
    json!({
        "group": s("group", GROUP),
        "kind": s("kind", "Gateway"),
        "namespace": s("namespace", route_ns),
        "name": s("name", ""),
        "sectionName": p.get("sectionName").and_then(Value::as_str),
        "port": p.get("port").and_then(Value::as_i64),
    })
}

fn parent_name(p: &Value) -> String {
    let mut n = format!(
        "{}/{}",
        p["namespace"].as_str().unwrap_or(""),
        p["name"].as_str().unwrap_or("")
    );
    if let Some(s) = p["sectionName"].as_str() {
        n.push_str(&format!(" (section {s})"));
    }
    if let Some(port) = p["port"].as_i64() {
        n.push_str(&format!(" (port {port})"));
    }
    n
}

/// `Ok` when every parentRef has accepted the route at its current
/// generation; otherwise why not, naming the route, the parent and the
/// condition's reason and message.
pub fn readiness(route: &Value) -> Result<()> {
    let ns = route
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = route
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let generation = route
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let statuses: Vec<&Value> = route
        .pointer("/status/parents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let parents = route
        .pointer("/spec/parentRefs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for p in &parents {
        let want = normalized(p, ns);
        let parent = parent_name(&want);
        let not_after = |detail: String, retry: u64, transient: bool| {
            anyhow::Error::new(NotReady {
                message: format!(
                    "HTTPRoute {name}.{ns} is not accepted by parent {parent}: {detail}; \
                     Fledge changes no traffic until it is"
                ),
                retry: Duration::from_secs(retry),
                transient,
            })
        };
        // A refusal needs a person: look again at the error back-off.
        let not = |detail: String| not_after(detail, 10, false);
        let Some(st) = statuses.iter().find(|s| {
            s.get("parentRef")
                .is_some_and(|r| normalized(r, ns) == want)
        }) else {
            // Usual for a moment after the route is created.
            return Err(not_after(
                "no status.parents entry for it (has a Gateway controller seen the route? \
                 check that the Gateway exists and its GatewayClass is accepted)"
                    .into(),
                3,
                true,
            ));
        };
        let accepted = st
            .get("conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Accepted"));
        let Some(c) = accepted else {
            return Err(not("its status has no Accepted condition".into()));
        };
        let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if field("status") != "True" {
            return Err(not(format!(
                "Accepted={} (reason {}: {})",
                field("status"),
                field("reason"),
                field("message")
            )));
        }
        let observed = c
            .get("observedGeneration")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if observed < generation {
            // Every change of weights passes through here: look again soon.
            return Err(not_after(
                format!(
                    "Accepted at generation {observed}, the route is at generation {generation} \
                     (the Gateway controller has not processed the latest change yet)"
                ),
                1,
                true,
            ));
        }
    }
    Ok(())
}

impl Router for GatewayApi {
    fn providers(&self) -> &'static [&'static str] {
        &[PROVIDER]
    }

    fn kinds(&self) -> Vec<ApiResource> {
        vec![self.route.clone()]
    }

    fn use_cache(&self, cache: Arc<Cache>) {
        let _ = self.cache.set(cache);
    }

    fn reconcile<'a>(&'a self, t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<()>> {
        async move {
            // The weights belong to set_routes: keep what is live, accepted or not.
            let live = self.live(t).await?;
            let routes = live
                .as_ref()
                .and_then(|r| read_routes(r, t.apex()))
                .unwrap_or_default();
            self.apply_route(t, routes, t.match_rules()).await
        }
        .boxed()
    }

    fn get_routes<'a>(&'a self, t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<Option<Routes>>> {
        async move {
            let Some(route) = self.live(t).await? else {
                return Ok(None);
            };
            if let Err(not_ready) = readiness(&route) {
                // The Canary may have been changed to fix what the parent
                // refuses: bring the route up to date (the live weights kept)
                // so the parent can accept it, and halt meanwhile.
                let routes = read_routes(&route, t.apex()).unwrap_or_default();
                if let Err(e) = self.apply_route(t, routes, t.match_rules()).await {
                    anyhow::bail!("{not_ready:#}; updating the route failed too: {e:#}");
                }
                return Err(not_ready);
            }
            Ok(Some(read_routes(&route, t.apex()).with_context(|| {
                format!(
                    "HTTPRoute {}.{} has no rule with backendRefs {}-primary and {}-canary",
                    t.apex(),
                    t.namespace(),
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
            self.apply_route(t, routes, rules).await
        }
        .boxed()
    }

    fn finalize<'a>(&'a self, _t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<()>> {
        // The HTTPRoute is owned by the Canary: the garbage collector removes it.
        async { Ok(()) }.boxed()
    }

    fn retire<'a>(&'a self, t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<Retirement>> {
        async move {
            let (ns, name) = (t.namespace(), t.apex());
            let api = self.api(ns);
            let mut out = Retirement::default();
            let Some(live) = api
                .get_opt(name)
                .await
                .with_context(|| format!("reading HTTPRoute {name}.{ns}"))?
            else {
                return Ok(out);
            };
            // A route someone else made under the same name is theirs.
            let owned = live
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == t.owner.uid);
            if owned {
                match api.delete(name, &Default::default()).await {
                    Ok(_) => out.deleted.push(format!("HTTPRoute {name}")),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("deleting HTTPRoute {name}.{ns}"))
                    }
                }
            }
            Ok(out)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
