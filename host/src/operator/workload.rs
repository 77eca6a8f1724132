//! The Kubernetes side of a Canary: the target Deployment, the generated
//! `<target>-primary` Deployment, HPA, ConfigMaps and Secrets, and the
//! ClusterIP Services `<apex>`, `<apex>-canary` and `<apex>-primary`.
//!
//! Every write sets a value (replicas, a template, an applied object), so
//! doing it twice is the same as doing it once.
use super::cache::{self, Cache, Cached};
use super::resource::CanaryObject;
use crate::core::readiness::{self, DeploymentView};
use crate::core::revision;
use crate::core::Rollout;
use anyhow::{anyhow, Context, Result};
use fledge_policy::Readiness;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const FIELD_MANAGER: &str = "fledge";
/// Selector labels, in the order Flagger looks for them.
pub const SELECTOR_LABELS: [&str; 3] = ["app", "name", "app.kubernetes.io/name"];
/// Annotations that keep Flux from fighting over generated objects.
const TOOLKIT_ANNOTATIONS: [(&str, &str); 2] = [
    ("kustomize.toolkit.fluxcd.io/reconcile", "disabled"),
    ("helm.toolkit.fluxcd.io/driftDetection", "disabled"),
];

/// What one reconcile reads of the workload.
pub struct Observed {
    pub target: Deployment,
    pub target_template: Value,
    /// The first selector label of the target and its value.
    pub label: (String, String),
    pub primary: Option<Deployment>,
    /// `configmap/<name>` / `secret/<name>` the target uses → checksum.
    pub configs: BTreeMap<String, String>,
    pub revision: String,
}

/// Why a Canary cannot be acted on: the field and the fix, for the condition and Event.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}; {fix}")]
pub struct BadReference {
    pub field: String,
    pub problem: String,
    pub fix: String,
}

pub struct Workload<'a> {
    pub client: &'a Client,
    pub canary: &'a CanaryObject,
    pub rollout: &'a Rollout,
    /// `spec.service` as the user wrote it (port name, target port, apex/primary/canary metadata).
    pub service: &'a Value,
    /// `spec.autoscalerRef.primaryScalerReplicas`.
    pub primary_scaler_replicas: Option<Value>,
    pub cache: &'a Cache,
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

fn strip_toolkit(map: Option<&Value>) -> Map<String, Value> {
    map.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.contains("toolkit.fluxcd.io"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

impl<'a> Workload<'a> {
    fn ns(&self) -> &str {
        self.canary.namespace()
    }
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), self.ns())
    }
    fn owner(&self) -> Value {
        json!([self.canary.owner_reference()])
    }

    /// A Deployment from the store when the store is current for it; read
    /// when it may be behind, or says there is none (it may be new).
    async fn deployment(&self, name: &str) -> Result<Option<Deployment>, kube::Error> {
        let c = self.cache;
        if let Cached::Known(Some(d)) = cache::lookup(
            &c.deployments,
            &c.writes,
            ("Deployment", ()),
            self.ns(),
            name,
        ) {
            return Ok(Some(d.as_ref().clone()));
        }
        let found = self.deployments().get_opt(name).await?;
        let rv = found
            .as_ref()
            .and_then(|d| d.metadata.resource_version.as_deref());
        cache::note_read(
            &c.deployments,
            &c.writes,
            ("Deployment", ()),
            self.ns(),
            name,
            rv,
        );
        Ok(found)
    }

    /// An HPA, as [`Self::deployment`] reads a Deployment.
    async fn hpa(&self, name: &str) -> Result<Option<HorizontalPodAutoscaler>, kube::Error> {
        let c = self.cache;
        let kind = "HorizontalPodAutoscaler";
        if let Cached::Known(Some(h)) =
            cache::lookup(&c.hpas, &c.writes, (kind, ()), self.ns(), name)
        {
            return Ok(Some(h.as_ref().clone()));
        }
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), self.ns());
        let found = api.get_opt(name).await?;
        let rv = found
            .as_ref()
            .and_then(|d| d.metadata.resource_version.as_deref());
        cache::note_read(&c.hpas, &c.writes, (kind, ()), self.ns(), name, rv);
        Ok(found)
    }

    /// Remembers where a write left an object, so reads wait for the store to see it.
    fn wrote(&self, kind: &str, name: &str, rv: Option<String>, desired: Option<u64>) {
        let (c, ns) = (self.cache, self.ns());
        match kind {
            "Deployment" => {
                cache::note_write(&c.deployments, &c.writes, (kind, ()), ns, name, rv, desired)
            }
            "HorizontalPodAutoscaler" => {
                cache::note_write(&c.hpas, &c.writes, (kind, ()), ns, name, rv, desired)
            }
            _ => cache::note_write(&c.services, &c.writes, (kind, ()), ns, name, rv, desired),
        }
    }

    /// Reads the target, the primary and the configs the target uses.
    pub async fn observe(&self) -> Result<Observed> {
        let r = self.rollout;
        let target = match self.deployment(&r.target).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                return Err(BadReference {
                    field: "spec.targetRef.name".into(),
                    problem: format!("Deployment {}.{} not found", r.target, r.namespace),
                    fix: "create the Deployment or point targetRef.name at an existing one".into(),
                }
                .into())
            }
            Err(e) => return Err(anyhow!(e).context(format!("reading Deployment {}", r.target))),
        };
        let value = serde_json::to_value(&target)?;
        let template = value
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(Value::Null);
        let match_labels = value.pointer("/spec/selector/matchLabels");
        let label = SELECTOR_LABELS
            .iter()
            .find_map(|k| {
                match_labels
                    .and_then(|m| m.get(*k))
                    .and_then(Value::as_str)
                    .map(|v| (k.to_string(), v.to_string()))
            })
            .ok_or_else(|| BadReference {
                field: "spec.targetRef.name".into(),
                problem: format!(
                    "deployment {}.{} spec.selector.matchLabels must contain one of [app name app.kubernetes.io/name]",
                    r.target, r.namespace
                ),
                fix: "label the Deployment's pods and selector with app: <name>".into(),
            })?;
        let primary = match self.deployment(&r.primary()).await {
            Ok(p) => p,
            Err(e) => return Err(anyhow!(e).context(format!("reading Deployment {}", r.primary()))),
        };
        let configs = self.configs(&template).await?;
        let revision = revision::revision(&template, &configs);
        Ok(Observed {
            target,
            target_template: template,
            label,
            primary,
            configs,
            revision,
        })
    }

    /// The ConfigMaps and Secrets the template uses, with checksums of their data.
    async fn configs(&self, template: &Value) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (kind, name, optional) in config_refs(template) {
            let c = self.cache;
            let found = match kind {
                ConfigKind::ConfigMap => self.config(&c.configmaps, "ConfigMap", &name).await?,
                ConfigKind::Secret => self.config(&c.secrets, "Secret", &name).await?,
            };
            let key = format!("{}/{name}", kind.key());
            let Some((obj, checksum)) = found else {
                if optional {
                    continue;
                }
                return Err(BadReference {
                    field: format!("Deployment {} spec.template", self.rollout.target),
                    problem: format!("uses {key}, which does not exist"),
                    fix: "create it, or mark the reference optional: true".into(),
                }
                .into());
            };
            if !tracked(kind, &obj) {
                continue;
            }
            out.insert(key, checksum);
        }
        Ok(out)
    }

    /// A ConfigMap or Secret and the checksum of its data: from the store
    /// (which keeps only the checksum) when it has it, else read.
    async fn config<K>(
        &self,
        store: &kube::runtime::reflector::Store<K>,
        kind: &str,
        name: &str,
    ) -> Result<Option<(Value, String)>>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug
            + 'static,
    {
        let cached = cache::lookup(store, &self.cache.writes, (kind, ()), self.ns(), name);
        if let Cached::Known(Some(o)) = cached {
            let checksum = o
                .meta()
                .annotations
                .as_ref()
                .and_then(|a| a.get(cache::DATA_CHECKSUM))
                .cloned();
            if let Some(checksum) = checksum {
                return Ok(Some((serde_json::to_value(o.as_ref())?, checksum)));
            }
        }
        let found = Api::<K>::namespaced(self.client.clone(), self.ns())
            .get_opt(name)
            .await
            .with_context(|| format!("reading {kind} {name}.{}", self.ns()))?;
        let Some(found) = found else {
            return Ok(None);
        };
        let obj = serde_json::to_value(found)?;
        let checksum = revision::config_checksum(&obj.get("data").cloned().unwrap_or(Value::Null));
        Ok(Some((obj, checksum)))
    }

    /// Readiness of a Deployment as the core judges it.
    pub fn readiness(&self, d: Option<&Deployment>, name: &str, threshold: u32) -> Readiness {
        let Some(d) = d else {
            return crate::core::readiness::not_created_yet(&format!("{name}.{}", self.ns()));
        };
        readiness::assess(
            &view(d, self.ns()),
            threshold,
            self.rollout.progress_deadline,
        )
    }

    /// Creates what is missing (primary Deployment, its configs, HPA) and
    /// applies the Services. The primary keeps its template until a promotion.
    pub async fn ensure(&self, obs: &Observed) -> Result<()> {
        let r = self.rollout;
        if obs.primary.is_none() {
            self.apply_configs(obs).await?;
            let primary = self.primary_deployment(obs, true);
            let created = self
                .deployments()
                .patch(&r.primary(), &apply_params(), &Patch::Apply(&primary))
                .await
                .with_context(|| format!("creating Deployment {}.{}", r.primary(), r.namespace))?;
            self.wrote(
                "Deployment",
                &r.primary(),
                created.metadata.resource_version,
                None,
            );
            tracing::info!(canary = %self.canary.id(), namespace = self.ns(), "Deployment {}.{} created", r.primary(), r.namespace);
        }
        if let Some(hpa) = &r.autoscaler {
            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), self.ns());
            let name = format!("{hpa}-primary");
            if self.hpa(&name).await?.is_none() {
                let desired = self.primary_hpa(hpa).await?;
                let created = api
                    .patch(&name, &apply_params(), &Patch::Apply(&desired))
                    .await
                    .with_context(|| {
                        format!("creating HorizontalPodAutoscaler {name}.{}", r.namespace)
                    })?;
                let rv = created.metadata.resource_version;
                self.wrote("HorizontalPodAutoscaler", &name, rv, None);
            }
        }
        self.apply_services(obs).await
    }

    /// The three ClusterIP Services: `<apex>` and `<apex>-primary` select the
    /// primary pods, `<apex>-canary` the target's.
    pub async fn apply_services(&self, obs: &Observed) -> Result<()> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), self.ns());
        let (key, value) = &obs.label;
        let apex = &self.rollout.apex;
        for (name, selects, meta) in [
            (apex.clone(), format!("{value}-primary"), "apex"),
            (format!("{apex}-canary"), value.clone(), "canary"),
            (
                format!("{apex}-primary"),
                format!("{value}-primary"),
                "primary",
            ),
        ] {
            let desired = self.service(&name, key, &selects, meta);
            // Applied again only when it would change something: this
            // process did not apply this object, or it changed since.
            let fingerprint = cache::fingerprint(&desired);
            let live = cache::live_version(&self.cache.services, self.ns(), &name, ());
            let k = cache::key("Service", self.ns(), &name);
            if self
                .cache
                .writes
                .unchanged(&k, fingerprint, live.as_deref())
            {
                continue;
            }
            let applied = api
                .patch(&name, &apply_params(), &Patch::Apply(&desired))
                .await
                .with_context(|| format!("applying Service {name}.{}", self.ns()))?;
            let rv = applied.metadata.resource_version;
            self.wrote("Service", &name, rv, Some(fingerprint));
        }
        Ok(())
    }

    fn service(&self, name: &str, key: &str, selects: &str, meta: &str) -> Value {
        let svc = self.service;
        let port_name = svc
            .get("portName")
            .and_then(Value::as_str)
            .unwrap_or("http");
        let port = self.rollout.service_port;
        let target_port = match svc.get("targetPort") {
            Some(Value::Number(n)) if n.as_i64().unwrap_or(0) > 0 => Value::Number(n.clone()),
            Some(Value::String(s)) if !s.is_empty() && s != "0" => Value::String(s.clone()),
            _ => json!(port),
        };
        let custom = svc.get(meta);
        let mut labels = custom
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        labels.insert(key.into(), json!(name));
        let mut annotations = strip_toolkit(custom.and_then(|m| m.get("annotations")));
        for (k, v) in TOOLKIT_ANNOTATIONS {
            annotations.insert(k.into(), json!(v));
        }
        let mut port_spec =
            json!({"name": port_name, "protocol": "TCP", "port": port, "targetPort": target_port});
        if let Some(p) = svc.get("appProtocol").and_then(Value::as_str) {
            port_spec["appProtocol"] = json!(p);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": self.ns(),
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": self.owner(),
            },
            "spec": {
                "type": "ClusterIP",
                "selector": {key: selects},
                "ports": [port_spec],
            }
        })
    }

    /// The primary Deployment built from the target: `-primary` names and
    /// selector label, the target's pod spec with `-primary` configs.
    fn primary_deployment(&self, obs: &Observed, create: bool) -> Value {
        let r = self.rollout;
        let (key, value) = &obs.label;
        let primary_value = format!("{value}-primary");
        let target = serde_json::to_value(&obs.target).unwrap_or_default();
        let spec = &target["spec"];
        let mut template = obs.target_template.clone();
        let mut labels = strip_toolkit(template.pointer("/metadata/labels"));
        labels.insert(key.clone(), json!(primary_value));
        let mut annotations = strip_toolkit(template.pointer("/metadata/annotations"));
        annotations.insert("flagger-id".into(), json!(self.flagger_id(&obs.revision)));
        template["metadata"] = json!({"labels": labels, "annotations": annotations});
        rename_configs(&mut template["spec"], &obs.configs);
        rename_selectors(&mut template["spec"], key, value);
        let target_replicas = spec.get("replicas").and_then(Value::as_i64).unwrap_or(0);
        let mut dep_spec = json!({
            "selector": {"matchLabels": {key: primary_value}},
            "template": template,
        });
        for f in [
            "progressDeadlineSeconds",
            "minReadySeconds",
            "revisionHistoryLimit",
            "strategy",
        ] {
            if let Some(v) = spec.get(f) {
                dep_spec[f] = v.clone();
            }
        }
        if create || r.autoscaler.is_none() {
            dep_spec["replicas"] = json!(if target_replicas > 0 {
                target_replicas
            } else {
                1
            });
        }
        let annotations: Map<String, Value> =
            strip_toolkit(target.pointer("/metadata/annotations"))
                .into_iter()
                .filter(|(k, _)| {
                    k != "kubectl.kubernetes.io/last-applied-configuration"
                        && k != "deployment.kubernetes.io/revision"
                })
                .collect();
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": r.primary(),
                "namespace": r.namespace,
                "labels": {key.as_str(): primary_value},
                "annotations": annotations,
                "ownerReferences": self.owner(),
            },
            "spec": dep_spec,
        })
    }

    /// The pod template a promotion of the target would give the primary.
    pub fn promoted_template(&self, obs: &Observed) -> Value {
        self.primary_deployment(obs, false)["spec"]["template"].take()
    }

    /// Flagger writes a random `flagger-id` so every promotion rolls the
    /// primary; deriving it from the Canary and the revision does the same
    /// and keeps a repeated promotion of one revision a no-op.
    fn flagger_id(&self, revision: &str) -> String {
        let uid = self.canary.metadata.uid.as_deref().unwrap_or("");
        let h = Sha256::digest(format!("{uid}/{revision}").as_bytes());
        let hex = hex::encode(&h[..16]);
        format!(
            "{}-{}-4{}-{}{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            ["8", "9", "a", "b"][(h[8] & 3) as usize],
            &hex[17..20],
            &hex[20..32]
        )
    }

    async fn primary_hpa(&self, hpa: &str) -> Result<Value> {
        let target = self.hpa(hpa).await?.ok_or_else(|| BadReference {
            field: "spec.autoscalerRef.name".into(),
            problem: format!("HorizontalPodAutoscaler {hpa}.{} not found", self.ns()),
            fix: "create the HPA or remove autoscalerRef".into(),
        })?;
        let t = serde_json::to_value(&target)?;
        let mut spec = json!({
            "scaleTargetRef": {
                "apiVersion": t.pointer("/spec/scaleTargetRef/apiVersion").cloned().unwrap_or(json!("apps/v1")),
                "kind": t.pointer("/spec/scaleTargetRef/kind").cloned().unwrap_or(json!("Deployment")),
                "name": self.rollout.primary(),
            },
            "maxReplicas": t.pointer("/spec/maxReplicas").cloned().unwrap_or(json!(1)),
        });
        for f in ["minReplicas", "metrics", "behavior"] {
            if let Some(v) = t["spec"].get(f) {
                spec[f] = v.clone();
            }
        }
        if let Some(o) = &self.primary_scaler_replicas {
            for f in ["minReplicas", "maxReplicas"] {
                if let Some(v) = o.get(f).filter(|v| !v.is_null()) {
                    spec[f] = v.clone();
                }
            }
        }
        let labels: Map<String, Value> = strip_toolkit(t.pointer("/metadata/labels"));
        Ok(json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {
                "name": format!("{hpa}-primary"),
                "namespace": self.ns(),
                "labels": labels,
                "ownerReferences": self.owner(),
            },
            "spec": spec,
        }))
    }

    /// `<name>-primary` copies of the tracked ConfigMaps and Secrets.
    async fn apply_configs(&self, obs: &Observed) -> Result<()> {
        for key in obs.configs.keys() {
            let Some((kind, name)) = key.split_once('/') else {
                continue;
            };
            let copy = format!("{name}-primary");
            let meta =
                json!({"name": copy, "namespace": self.ns(), "ownerReferences": self.owner()});
            match kind {
                "configmap" => {
                    let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), self.ns());
                    let Some(src) = api.get_opt(name).await? else {
                        continue;
                    };
                    let src = serde_json::to_value(src)?;
                    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                        "data": src.get("data").cloned().unwrap_or(json!({})),
                        "binaryData": src.get("binaryData").cloned().unwrap_or(json!({}))});
                    api.patch(&copy, &apply_params(), &Patch::Apply(&obj))
                        .await
                        .with_context(|| format!("applying ConfigMap {copy}"))?;
                }
                _ => {
                    let api: Api<Secret> = Api::namespaced(self.client.clone(), self.ns());
                    let Some(src) = api.get_opt(name).await? else {
                        continue;
                    };
                    let src = serde_json::to_value(src)?;
                    let obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                        "type": src.get("type").cloned().unwrap_or(json!("Opaque")),
                        "data": src.get("data").cloned().unwrap_or(json!({}))});
                    api.patch(&copy, &apply_params(), &Patch::Apply(&obj))
                        .await
                        .with_context(|| format!("applying Secret {copy}"))?;
                }
            }
        }
        Ok(())
    }

    /// Copies the target's template (and configs) to the primary.
    pub async fn promote(&self, obs: &Observed) -> Result<()> {
        let r = self.rollout;
        self.apply_configs(obs).await?;
        let desired = self.primary_deployment(obs, false);
        let mut spec = desired["spec"].clone();
        // Replace the template as a whole, so fields the target dropped go too.
        if let Some(t) = spec.get_mut("template").and_then(Value::as_object_mut) {
            t.insert("$patch".into(), json!("replace"));
        }
        let patch =
            json!({"metadata": {"annotations": desired["metadata"]["annotations"]}, "spec": spec});
        let promoted = self
            .deployments()
            .patch(
                &r.primary(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
            .with_context(|| format!("promoting to Deployment {}.{}", r.primary(), r.namespace))?;
        let rv = promoted.metadata.resource_version;
        self.wrote("Deployment", &r.primary(), rv, None);
        if let Some(hpa) = &r.autoscaler {
            let desired = self.primary_hpa(hpa).await?;
            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), self.ns());
            let name = format!("{hpa}-primary");
            let applied = api
                .patch(&name, &apply_params(), &Patch::Apply(&desired))
                .await
                .with_context(|| format!("updating HorizontalPodAutoscaler {name}"))?;
            let rv = applied.metadata.resource_version;
            self.wrote("HorizontalPodAutoscaler", &name, rv, None);
        }
        Ok(())
    }

    pub async fn scale_target(&self, replicas: i32) -> Result<()> {
        let r = self.rollout;
        let patch = json!({"spec": {"replicas": replicas}});
        let scaled = self
            .deployments()
            .patch(&r.target, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| {
                format!("scaling {}.{} to {replicas} failed", r.target, r.namespace)
            })?;
        self.wrote(
            "Deployment",
            &r.target,
            scaled.metadata.resource_version,
            None,
        );
        Ok(())
    }

    /// Flagger's ScaleFromZero: the target's replicas if set, else the HPA's
    /// minimum (at least 1), else the primary's.
    pub async fn scale_up(&self, obs: &Observed) -> Result<()> {
        let current = obs
            .target
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        let replicas = if current > 0 {
            current
        } else if let Some(hpa) = &self.rollout.autoscaler {
            let min = self
                .hpa(hpa)
                .await?
                .and_then(|h| h.spec)
                .and_then(|s| s.min_replicas)
                .unwrap_or(1);
            min.max(1)
        } else {
            obs.primary
                .as_ref()
                .and_then(|p| p.spec.as_ref())
                .and_then(|s| s.replicas)
                .filter(|r| *r > 0)
                .unwrap_or(1)
        };
        self.scale_target(replicas).await
    }
}

/// The readiness view of a Deployment.
pub fn view(d: &Deployment, ns: &str) -> DeploymentView {
    let name = d.metadata.name.clone().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    let conditions = status.conditions.clone().unwrap_or_default();
    let progress_deadline_exceeded = conditions.iter().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    let unavailable_for = conditions
        .iter()
        .find(|c| {
            c.type_ == "Available"
                && c.status == "False"
                && c.reason.as_deref() == Some("MinimumReplicasUnavailable")
        })
        .and_then(|c| c.last_update_time.as_ref())
        .map(|t| {
            let secs = (Timestamp::now().as_second() - t.0.as_second()).max(0);
            std::time::Duration::from_secs(secs as u64)
        });
    DeploymentView {
        id: format!("{name}.{ns}"),
        name,
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: status.observed_generation.unwrap_or(0),
        replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        updated_replicas: status.updated_replicas.unwrap_or(0),
        available_replicas: status.available_replicas.unwrap_or(0),
        total_replicas: status.replicas.unwrap_or(0),
        progress_deadline_exceeded,
        unavailable_for,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    fn key(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "configmap",
            ConfigKind::Secret => "secret",
        }
    }
}

/// Whether Flagger tracks this object: not disabled by annotation, and for
/// Secrets one of the types that carry configuration.
fn tracked(kind: ConfigKind, obj: &Value) -> bool {
    let disabled = obj
        .pointer("/metadata/annotations/flagger.app~1config-tracking")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with("disable"));
    if disabled {
        return false;
    }
    match kind {
        ConfigKind::ConfigMap => true,
        ConfigKind::Secret => matches!(
            obj.get("type").and_then(Value::as_str).unwrap_or("Opaque"),
            "Opaque" | "kubernetes.io/basic-auth" | "kubernetes.io/ssh-auth" | "kubernetes.io/tls"
        ),
    }
}

/// Every ConfigMap and Secret a pod template refers to: `(kind, name, optional)`.
pub fn config_refs(template: &Value) -> Vec<(ConfigKind, String, bool)> {
    let mut refs = Vec::new();
    let mut push = |kind, v: &Value, key: &str| {
        if let Some(n) = v.get(key).and_then(Value::as_str) {
            let optional = v.get("optional").and_then(Value::as_bool).unwrap_or(false);
            if !refs
                .iter()
                .any(|(k, name, _): &(ConfigKind, String, bool)| *k == kind && name == n)
            {
                refs.push((kind, n.to_string(), optional));
            }
        }
    };
    let spec = template.get("spec").cloned().unwrap_or(Value::Null);
    let list = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for vol in list(&spec, "volumes") {
        if let Some(cm) = vol.get("configMap") {
            push(ConfigKind::ConfigMap, cm, "name");
        }
        if let Some(s) = vol.get("secret") {
            push(ConfigKind::Secret, s, "secretName");
        }
        for src in vol
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(cm) = src.get("configMap") {
                push(ConfigKind::ConfigMap, cm, "name");
            }
            if let Some(s) = src.get("secret") {
                push(ConfigKind::Secret, s, "name");
            }
        }
    }
    for key in ["initContainers", "containers"] {
        for c in list(&spec, key) {
            for env in list(&c, "env") {
                if let Some(r) = env.pointer("/valueFrom/configMapKeyRef") {
                    push(ConfigKind::ConfigMap, r, "name");
                }
                if let Some(r) = env.pointer("/valueFrom/secretKeyRef") {
                    push(ConfigKind::Secret, r, "name");
                }
            }
            for env in list(&c, "envFrom") {
                if let Some(r) = env.get("configMapRef") {
                    push(ConfigKind::ConfigMap, r, "name");
                }
                if let Some(r) = env.get("secretRef") {
                    push(ConfigKind::Secret, r, "name");
                }
            }
        }
    }
    refs
}

/// Points every reference to a tracked config at its `-primary` copy.
pub fn rename_configs(pod_spec: &mut Value, configs: &BTreeMap<String, String>) {
    let has = |kind: &str, name: &str| configs.contains_key(&format!("{kind}/{name}"));
    let rename = |v: &mut Value, key: &str, kind: &str| {
        if let Some(n) = v.get(key).and_then(Value::as_str).map(str::to_string) {
            if has(kind, &n) {
                v[key] = json!(format!("{n}-primary"));
            }
        }
    };
    if let Some(vols) = pod_spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for vol in vols {
            if let Some(cm) = vol.get_mut("configMap") {
                rename(cm, "name", "configmap");
            }
            if let Some(s) = vol.get_mut("secret") {
                rename(s, "secretName", "secret");
            }
            if let Some(srcs) = vol
                .pointer_mut("/projected/sources")
                .and_then(Value::as_array_mut)
            {
                for src in srcs {
                    if let Some(cm) = src.get_mut("configMap") {
                        rename(cm, "name", "configmap");
                    }
                    if let Some(s) = src.get_mut("secret") {
                        rename(s, "name", "secret");
                    }
                }
            }
        }
    }
    for key in ["initContainers", "containers"] {
        let Some(cs) = pod_spec.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs {
            if let Some(envs) = c.get_mut("env").and_then(Value::as_array_mut) {
                for env in envs {
                    if let Some(r) = env.pointer_mut("/valueFrom/configMapKeyRef") {
                        rename(r, "name", "configmap");
                    }
                    if let Some(r) = env.pointer_mut("/valueFrom/secretKeyRef") {
                        rename(r, "name", "secret");
                    }
                }
            }
            if let Some(envs) = c.get_mut("envFrom").and_then(Value::as_array_mut) {
                for env in envs {
                    if let Some(r) = env.get_mut("configMapRef") {
                        rename(r, "name", "configmap");
                    }
                    if let Some(r) = env.get_mut("secretRef") {
                        rename(r, "name", "secret");
                    }
                }
            }
        }
    }
}

/// Points the pod anti-affinity terms and topology spread constraints that
/// select the target's pods (`key: value`) at the primary's (`key:
/// value-primary`), so the primary spreads its own pods as the target did.
/// Flagger does the same for every selector label whose value is the
/// Deployment's name; here it is the one label the primary renames, with the
/// value it renames, since other labels keep their values on the primary.
pub fn rename_selectors(pod_spec: &mut Value, key: &str, value: &str) {
    let primary = format!("{value}-primary");
    let rename = |selector: &mut Value| {
        if let Some(v) = selector.get_mut("matchLabels").and_then(|m| m.get_mut(key)) {
            if v == value {
                *v = json!(primary);
            }
        }
        let exprs = selector
            .get_mut("matchExpressions")
            .and_then(Value::as_array_mut);
        for e in exprs.into_iter().flatten() {
            if e.get("key").and_then(Value::as_str) != Some(key) {
                continue;
            }
            for v in e
                .get_mut("values")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if v == value {
                    *v = json!(primary);
                }
            }
        }
    };
    if let Some(cs) = pod_spec
        .get_mut("topologySpreadConstraints")
        .and_then(Value::as_array_mut)
    {
        for c in cs {
            if let Some(sel) = c.get_mut("labelSelector") {
                rename(sel);
            }
        }
    }
    if let Some(anti) = pod_spec.pointer_mut("/affinity/podAntiAffinity") {
        if let Some(terms) = anti
            .get_mut("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array_mut)
        {
            for t in terms {
                if let Some(sel) = t.get_mut("labelSelector") {
                    rename(sel);
                }
            }
        }
        if let Some(terms) = anti
            .get_mut("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array_mut)
        {
            for t in terms {
                if let Some(sel) = t.pointer_mut("/podAffinityTerm/labelSelector") {
                    rename(sel);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_references_are_found_and_renamed() {
        let mut t = json!({"spec": {
            "volumes": [{"name": "cfg", "configMap": {"name": "podinfo-config"}},
                        {"name": "s", "secret": {"secretName": "podinfo-secret", "optional": true}}],
            "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "podinfo-env"}}],
                            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "podinfo-secret", "key": "k"}}}]}]
        }});
        let refs = config_refs(&t);
        assert_eq!(
            refs,
            [
                (ConfigKind::ConfigMap, "podinfo-config".to_string(), false),
                (ConfigKind::Secret, "podinfo-secret".to_string(), true),
                (ConfigKind::ConfigMap, "podinfo-env".to_string(), false),
            ]
        );
        let configs: BTreeMap<String, String> = [
            ("configmap/podinfo-config".to_string(), "1".to_string()),
            ("secret/podinfo-secret".to_string(), "2".to_string()),
        ]
        .into();
        rename_configs(&mut t["spec"], &configs);
        assert_eq!(
            t["spec"]["volumes"][0]["configMap"]["name"],
            "podinfo-config-primary"
        );
        assert_eq!(
            t["spec"]["volumes"][1]["secret"]["secretName"],
            "podinfo-secret-primary"
        );
        // Not tracked (e.g. missing and optional): left alone.
        assert_eq!(
            t["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
            "podinfo-env"
        );
        assert_eq!(
            t["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            "podinfo-secret-primary"
        );
    }

    #[test]
    fn anti_affinity_and_spread_selectors_of_the_target_select_the_primary() {
        let selects = |app: &str| json!({"matchLabels": {"app": app, "tier": "web"}});
        let mut spec = json!({
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": selects("podinfo"), "topologyKey": "kubernetes.io/hostname"},
                        {"labelSelector": selects("backend"), "topologyKey": "kubernetes.io/hostname"}
                    ],
                    "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {
                        "labelSelector": {"matchExpressions": [
                            {"key": "app", "operator": "In", "values": ["backend", "podinfo"]},
                            {"key": "name", "operator": "In", "values": ["podinfo"]}
                        ]},
                        "topologyKey": "topology.kubernetes.io/zone"}}]
                },
                // Affinity to the target's pods is left as written, as in Flagger.
                "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": selects("podinfo"), "topologyKey": "kubernetes.io/hostname"}
                ]}
            },
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
                 "labelSelector": {"matchLabels": {"app": "podinfo"}}}
            ]
        });
        let before = spec.clone();
        rename_selectors(&mut spec, "app", "podinfo");
        let anti = &spec["affinity"]["podAntiAffinity"];
        let required = &anti["requiredDuringSchedulingIgnoredDuringExecution"];
        assert_eq!(required[0]["labelSelector"], selects("podinfo-primary"));
        assert_eq!(
            required[1],
            before["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                [1]
        );
        let exprs = &anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["labelSelector"]["matchExpressions"];
        assert_eq!(exprs[0]["values"], json!(["backend", "podinfo-primary"]));
        // Only the label the primary renames: its pods keep `name: podinfo`.
        assert_eq!(exprs[1]["values"], json!(["podinfo"]));
        assert_eq!(
            spec["affinity"]["podAffinity"],
            before["affinity"]["podAffinity"]
        );
        assert_eq!(
            spec["topologySpreadConstraints"][0]["labelSelector"],
            json!({"matchLabels": {"app": "podinfo-primary"}})
        );
        let mut again = spec.clone();
        rename_selectors(&mut again, "app", "podinfo");
        assert_eq!(again, spec, "renaming twice is renaming once");
    }
}
