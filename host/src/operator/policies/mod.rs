//! Policy objects (`RolloutPolicy`, `ClusterRolloutPolicy`) and the
//! components they bring into force.
//!
//! - [`select`]: which policy object judges a Canary (a pure function).
//! - [`objects`]: the two kinds as read from the API server.
//! - [`fetch`]: a component's bytes, verified against its pinned sha256.
//! - [`shadow`]: shadow-mode policies judging beside the enforcing one.
//!
//! [`Policies`] keeps, per policy object, the component in force: loaded
//! (fetched, verified, compiled, linked) when the object's spec changes, at
//! most once per generation. A load that fails leaves the previous component
//! in force, with `Ready=False` on the object and a Warning Event saying why.
//! Every component loaded is also kept by digest, so an analysis in flight
//! goes on with the digest it pinned in its status; [`Policies::evict`]
//! drops the digests no policy object and no Canary's status refers to.
pub mod fetch;
pub mod objects;
pub mod select;
pub mod shadow;

use super::resource::CanaryObject;
use super::status::PolicyInForce;
use crate::api::policy::{
    validate_policy, Maximums, RolloutPolicyStatus, ValidPolicy, METRIC_QUERY, POLICY_GROUP,
    POLICY_VERSION,
};
use crate::policy::{Policy, PolicyRuntime};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;
use objects::{ClusterRolloutPolicyObject, RolloutPolicyObject};
use select::{Mode, PolicyKey, PolicyKind, Selected, BUILTIN_KIND, BUILTIN_NAME};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `policy` as policy object `valid` runs it: its limits and config, and
/// refused when the component asks for range queries of its own without
/// the object granting `metric-query`.
pub fn bind(policy: Policy, valid: &ValidPolicy) -> Result<Policy, String> {
    if policy.needs_metric_query() && !valid.metric_query {
        return Err(format!(
            "the component imports {} (it asks for range queries of its own); \
             grant it with spec.capabilities: [{METRIC_QUERY}]",
            crate::policy::METRIC_QUERY
        ));
    }
    Ok(policy
        .with_limits(valid.deadline, valid.memory)
        .with_config(valid.config.clone()))
}

/// The condition a policy object's status carries.
pub const READY: &str = "Ready";
/// How soon a failed load is tried again though the object did not change
/// (a URL that did not answer, a ConfigMap not created yet).
const RETRY_FAILED: Duration = Duration::from_secs(30);

/// A policy to judge with, and how the status names it.
#[derive(Clone)]
pub struct Chosen {
    pub record: PolicyInForce,
    pub policy: Policy,
}

/// What is known of one policy object.
struct Loaded {
    uid: String,
    generation: i64,
    in_force: Option<Policy>,
    /// When the last load of this generation failed.
    failed: Option<Instant>,
}

#[derive(Default)]
struct State {
    loaded: HashMap<PolicyKey, Loaded>,
    /// Every component loaded and not evicted, by digest.
    digests: HashMap<String, Policy>,
}

pub struct Policies {
    client: Client,
    http: reqwest::Client,
    runtime: PolicyRuntime,
    builtin: Policy,
    max: Maximums,
    /// Where a ClusterRolloutPolicy's ConfigMap is looked for.
    home_namespace: String,
    /// Events' `reportingInstance`.
    instance: String,
    pub namespaced: Store<RolloutPolicyObject>,
    pub cluster: Store<ClusterRolloutPolicyObject>,
    state: tokio::sync::Mutex<State>,
    /// One load at a time per object. `state` is not held across a load (a
    /// fetch may take its whole timeout), so reconciles of Canaries under
    /// other policies never wait for it.
    loading: std::sync::Mutex<HashMap<PolicyKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// `spec` and `metadata` of a policy object from the caches.
struct Found {
    meta: ObjectMeta,
    spec: Result<crate::api::policy::RolloutPolicySpec, crate::api::Issue>,
    status: RolloutPolicyStatus,
}

/// `spec.mode` of a policy object's raw spec.
fn mode_of(spec: &Value) -> Mode {
    match spec.get("mode").and_then(Value::as_str) {
        Some("shadow") => Mode::Shadow,
        _ => Mode::Enforce,
    }
}

impl Policies {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        runtime: PolicyRuntime,
        builtin: Policy,
        max: Maximums,
        home_namespace: String,
        instance: String,
        namespaced: Store<RolloutPolicyObject>,
        cluster: Store<ClusterRolloutPolicyObject>,
    ) -> anyhow::Result<Policies> {
        Ok(Policies {
            client,
            http: reqwest::Client::builder().build()?,
            runtime,
            builtin,
            max,
            home_namespace,
            instance,
            namespaced,
            cluster,
            state: Default::default(),
            loading: Default::default(),
        })
    }

    /// The built-in policy, as the status names it when no object applies.
    pub fn builtin(&self) -> Chosen {
        Chosen {
            record: PolicyInForce {
                kind: BUILTIN_KIND.into(),
                name: BUILTIN_NAME.into(),
                digest: self.builtin.digest().into(),
            },
            policy: self.builtin.clone(),
        }
    }

    pub fn exists(&self, key: &PolicyKey) -> bool {
        self.mode(key).is_some()
    }

    /// The `spec.mode` of policy object `key`, `None` when it does not
    /// exist. Read from the raw spec: an object whose spec does not validate
    /// counts as enforcing, so selecting it reports why it has no component.
    pub fn mode(&self, key: &PolicyKey) -> Option<Mode> {
        self.with_object(key, |_, spec, _| mode_of(spec))
    }

    /// `f` of the metadata, raw spec and raw status of policy object `key`,
    /// read in place from the watch store.
    fn with_object<R>(
        &self,
        key: &PolicyKey,
        f: impl FnOnce(&ObjectMeta, &Value, Option<&Value>) -> R,
    ) -> Option<R> {
        match key.kind {
            PolicyKind::RolloutPolicy => {
                let r = ObjectRef::new(&key.name).within(key.namespace.as_deref().unwrap_or(""));
                let o = self.namespaced.get(&r)?;
                Some(f(&o.metadata, &o.spec, o.status.as_ref()))
            }
            PolicyKind::ClusterRolloutPolicy => {
                let o = self.cluster.get(&ObjectRef::new(&key.name))?;
                Some(f(&o.metadata, &o.spec, o.status.as_ref()))
            }
        }
    }

    /// The shadow-mode policies that judge beside the enforcing policy of a
    /// Canary in `namespace` ([`select::shadows`]), each with its component
    /// in force (loaded first if its object changed). One with no component
    /// in force is left out: its Ready condition says why.
    pub async fn shadows(&self, namespace: &str) -> Vec<Chosen> {
        // Every reconcile asks: keys only for the few objects in shadow mode.
        let mut objects: Vec<(PolicyKey, Mode)> = Vec::new();
        for o in self.namespaced.state() {
            if o.metadata.namespace.as_deref() == Some(namespace)
                && mode_of(&o.spec) == Mode::Shadow
            {
                let name = o.metadata.name.as_deref().unwrap_or("");
                objects.push((PolicyKey::namespaced(namespace, name), Mode::Shadow));
            }
        }
        for o in self.cluster.state() {
            if mode_of(&o.spec) == Mode::Shadow {
                let name = o.metadata.name.as_deref().unwrap_or("");
                objects.push((PolicyKey::cluster(name), Mode::Shadow));
            }
        }
        let keys = select::shadows(namespace, objects.iter().map(|(k, m)| (k, *m)));
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match self.current(&Selected::Object(key.clone())).await {
                Ok(chosen) => out.push(chosen),
                Err(why) => tracing::debug!(policy = %key, "shadow policy not evaluated: {why}"),
            }
        }
        out
    }

    /// The object as a load needs it: its typed spec and status.
    fn find(&self, key: &PolicyKey) -> Option<Found> {
        self.with_object(key, |meta, spec, status| Found {
            meta: meta.clone(),
            spec: objects::typed_spec(spec),
            status: status
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default(),
        })
    }

    /// The policy `selected` stands for now: the object's component in
    /// force, loaded first if the object changed. An error when the object
    /// never had a component that loaded.
    pub async fn current(&self, selected: &Selected) -> Result<Chosen, String> {
        let key = match selected {
            Selected::Builtin => return Ok(self.builtin()),
            Selected::Object(key) => key,
        };
        self.refresh(key).await;
        let state = self.state.lock().await;
        match state.loaded.get(key).and_then(|l| l.in_force.clone()) {
            Some(policy) => Ok(Chosen {
                record: PolicyInForce {
                    kind: key.kind.as_str().into(),
                    name: key.name.clone(),
                    digest: policy.digest().into(),
                },
                policy,
            }),
            None => Err(format!(
                "{key} has no component in force; its Ready condition says why"
            )),
        }
    }

    /// The component of digest `record.digest`, if it is still loaded.
    pub async fn pinned(&self, record: &PolicyInForce) -> Option<Policy> {
        if record.digest == self.builtin.digest() {
            return Some(self.builtin.clone());
        }
        self.state.lock().await.digests.get(&record.digest).cloned()
    }

    /// Loads the component of the policy object `key` if its spec changed
    /// since the last load (or the last load failed a while ago). True when
    /// it loaded (or forgot) something, false when nothing changed.
    pub async fn refresh(&self, key: &PolicyKey) -> bool {
        let gate = self
            .loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _one_load = gate.lock().await;
        let mut state = self.state.lock().await;
        // Only the identity first: every reconcile comes here, and parsing
        // the spec is only needed when the object changed.
        let identity = self.with_object(key, |meta, _, _| {
            (
                meta.uid.clone().unwrap_or_default(),
                meta.generation.unwrap_or(0),
            )
        });
        let Some((uid, generation)) = identity else {
            return state.loaded.remove(key).is_some();
        };
        let previous = match state.loaded.get(key) {
            Some(l) if l.uid == uid => {
                let retry = l.failed.is_some_and(|t| t.elapsed() >= RETRY_FAILED);
                if l.generation == generation && !retry {
                    return false;
                }
                l.in_force.clone()
            }
            _ => None,
        };
        drop(state);
        let Some(found) = self.find(key) else {
            return false;
        };
        let outcome = self.load(key, &found).await;
        let mut state = self.state.lock().await;
        let (in_force, failed, condition) = match outcome {
            Ok(policy) => {
                let digest = policy.digest().to_string();
                state.digests.insert(digest.clone(), policy.clone());
                tracing::info!(policy = %key, digest = %digest, "policy component in force");
                let message = format!("component {digest} is in force");
                (Some(policy), None, ("True", "Loaded", message))
            }
            Err((reason, why)) => {
                let message = match &previous {
                    Some(p) => format!("{why}; the previous component {} stays in force", p.digest()),
                    None => format!("{why}; no component is in force, so Canaries using this policy are not analysed"),
                };
                tracing::warn!(policy = %key, reason, "{message}");
                (previous, Some(Instant::now()), ("False", reason, message))
            }
        };
        let digest = in_force.as_ref().map(|p| p.digest().to_string());
        state.loaded.insert(
            key.clone(),
            Loaded {
                uid,
                generation,
                in_force,
                failed,
            },
        );
        drop(state);
        self.report(key, &found, generation, digest, condition)
            .await;
        true
    }

    /// Validates, fetches, verifies, compiles and links the object's component.
    async fn load(&self, key: &PolicyKey, found: &Found) -> Result<Policy, (&'static str, String)> {
        let spec = found
            .spec
            .clone()
            .map_err(|i| ("InvalidSpec", i.to_string()))?;
        let valid = validate_policy(&spec, self.max).map_err(|issues| {
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            ("InvalidSpec", text.join("; "))
        })?;
        let namespace = key.namespace.as_deref().unwrap_or(&self.home_namespace);
        let max_bytes = self.runtime.config().load.max_component_bytes;
        let bytes = fetch::fetch(
            &self.client,
            &self.http,
            namespace,
            &valid.source,
            max_bytes,
        )
        .await
        .map_err(|e| (e.reason, e.message))?;
        let runtime = self.runtime.clone();
        // Compiling takes milliseconds to about a second: off the async threads.
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .map_err(|e| ("LoadFailed", format!("the compile task failed: {e}")))?;
        let policy =
            loaded.map_err(|e| ("LoadFailed", format!("the component does not load: {e}")))?;
        bind(policy, &valid).map_err(|e| ("CapabilityMissing", e))
    }

    /// Writes the object's status, and a Warning Event when it turns to (or
    /// changes within) `Ready=False`.
    async fn report(
        &self,
        key: &PolicyKey,
        found: &Found,
        generation: i64,
        digest: Option<String>,
        (status, reason, message): (&str, &str, String),
    ) {
        let old = found.status.conditions.iter().find(|c| c.type_ == READY);
        let same =
            old.is_some_and(|c| c.status == status && c.reason == reason && c.message == message);
        if same
            && found.status.digest == digest
            && found.status.observed_generation == Some(generation)
        {
            return;
        }
        let now = crate::operator::status::format_time(Timestamp::now());
        let transition = match old {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Some(now),
        };
        let patch = json!({"status": {
            "digest": digest,
            "observedGeneration": generation,
            "conditions": [{
                "type": READY, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": transition,
            }],
        }});
        let pp = PatchParams::default();
        let written = match &key.namespace {
            Some(ns) => Api::<RolloutPolicyObject>::namespaced(self.client.clone(), ns)
                .patch_status(&key.name, &pp, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            None => Api::<ClusterRolloutPolicyObject>::all(self.client.clone())
                .patch_status(&key.name, &pp, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        };
        if let Err(e) = written {
            tracing::warn!(policy = %key, error = %e, "writing the policy's status failed");
        }
        if status == "False" && !same {
            self.warn(key, &found.meta, reason, &message).await;
        }
    }

    /// A Warning Event about a policy object (in `default` for a
    /// ClusterRolloutPolicy, as Kubernetes does for cluster-scoped objects).
    async fn warn(&self, key: &PolicyKey, meta: &ObjectMeta, reason: &str, note: &str) {
        let ns = key.namespace.clone().unwrap_or_else(|| "default".into());
        let now = Timestamp::now();
        let event = K8sEvent {
            action: Some("Load".into()),
            reason: Some(reason.into()),
            note: Some(crate::core::text::one_line(note, 1024)),
            event_time: Some(MicroTime(now)),
            regarding: Some(ObjectReference {
                api_version: Some(format!("{POLICY_GROUP}/{POLICY_VERSION}")),
                kind: Some(key.kind.as_str().into()),
                name: Some(key.name.clone()),
                namespace: key.namespace.clone(),
                uid: meta.uid.clone(),
                ..Default::default()
            }),
            reporting_controller: Some(super::events::REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some("Warning".into()),
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", key.name, now.as_nanosecond())),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        if let Err(e) = Api::<K8sEvent>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &event)
            .await
        {
            tracing::warn!(policy = %key, error = %e, "writing an Event failed");
        }
    }

    /// Forgets policy objects that are gone, then drops the components no
    /// policy object and no Canary's `status.policy` refers to (the
    /// built-in one stays).
    pub async fn evict(&self, canaries: &Store<CanaryObject>) {
        let mut state = self.state.lock().await;
        let gone: Vec<PolicyKey> = state
            .loaded
            .keys()
            .filter(|k| !self.exists(k))
            .cloned()
            .collect();
        for k in gone {
            state.loaded.remove(&k);
        }
        let mut keep: HashSet<String> = state
            .loaded
            .values()
            .filter_map(|l| l.in_force.as_ref().map(|p| p.digest().to_string()))
            .collect();
        keep.insert(self.builtin.digest().to_string());
        for c in canaries.state() {
            if let Some(d) = c
                .status
                .as_ref()
                .and_then(|s| s.pointer("/policy/digest"))
                .and_then(Value::as_str)
            {
                keep.insert(d.to_string());
            }
        }
        let before = state.digests.len();
        state.digests.retain(|d, _| keep.contains(d));
        if state.digests.len() != before {
            tracing::info!(
                kept = state.digests.len(),
                evicted = before - state.digests.len(),
                "evicted policy components no policy or Canary uses"
            );
        }
        self.runtime.retain(|d| keep.contains(d));
    }

    /// Digests of the components held (loaded and compiled), sorted.
    #[cfg(test)]
    pub async fn held(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state.lock().await.digests.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RuntimeConfig;
    use kube::runtime::{reflector, watcher};

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("FLEDGE_FIXTURE_DIR")).join(format!("{name}.wasm"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn canary(digest: &str) -> CanaryObject {
        serde_json::from_value(json!({
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1"},
            "spec": {},
            "status": {"policy": {"kind": "RolloutPolicy", "name": "default", "digest": digest}}
        }))
        .unwrap()
    }

    fn record(digest: &str) -> PolicyInForce {
        PolicyInForce {
            kind: "RolloutPolicy".into(),
            name: "default".into(),
            digest: digest.into(),
        }
    }

    #[tokio::test]
    async fn components_no_policy_and_no_canary_refers_to_are_evicted() {
        let runtime = PolicyRuntime::new(RuntimeConfig::default()).unwrap();
        let builtin = runtime.builtin().unwrap();
        // Never contacted: nothing here reads the API.
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let policies = Policies::new(
            client,
            runtime.clone(),
            builtin.clone(),
            Maximums {
                deadline: Duration::from_millis(100),
                memory: 32 << 20,
            },
            "fledge-system".into(),
            "test".into(),
            reflector::store().0,
            reflector::store().0,
        )
        .unwrap();
        let pinned = runtime.load(&fixture("bad-weight")).unwrap();
        let unused = runtime.load(&fixture("panic")).unwrap();
        {
            let mut state = policies.state.lock().await;
            for p in [&pinned, &unused] {
                state.digests.insert(p.digest().into(), p.clone());
            }
        }
        let (canaries, mut writer) = reflector::store::<CanaryObject>();
        writer.apply_watcher_event(&watcher::Event::Apply(canary(pinned.digest())));

        policies.evict(&canaries).await;
        assert_eq!(policies.held().await, [pinned.digest()]);
        let mut compiled = vec![builtin.digest().to_string(), pinned.digest().to_string()];
        compiled.sort();
        assert_eq!(
            runtime.cached(),
            compiled,
            "the runtime's compiled cache too"
        );
        assert!(policies.pinned(&record(pinned.digest())).await.is_some());
        assert!(policies.pinned(&record(unused.digest())).await.is_none());
        assert!(
            policies.pinned(&record(builtin.digest())).await.is_some(),
            "the built-in policy is never evicted"
        );

        // The analysis ended under another policy: nothing refers to it any more.
        writer.apply_watcher_event(&watcher::Event::Apply(canary(builtin.digest())));
        policies.evict(&canaries).await;
        assert!(policies.held().await.is_empty());
        assert_eq!(runtime.cached(), [builtin.digest()]);
        // A policy already loaded from an evicted component still decides.
        let input: fledge_policy::PolicyInput =
            serde_json::from_str(include_str!("../../../../examples/policies/step.json")).unwrap();
        let decided = pinned.evaluate(&input);
        assert!(
            matches!(decided, Err(crate::policy::PolicyError::InvalidDecision(_))),
            "{decided:?}"
        );
    }

    #[test]
    fn a_policy_objects_limits_bound_its_decisions_within_the_runtimes() {
        let runtime = PolicyRuntime::new(RuntimeConfig::default()).unwrap();
        let input: fledge_policy::PolicyInput =
            serde_json::from_str(include_str!("../../../../examples/policies/step.json")).unwrap();
        let endless = runtime.load(&fixture("endless-loop")).unwrap();
        let short = endless.with_limits(Some(Duration::from_millis(10)), None);
        match short.evaluate(&input) {
            Err(crate::policy::PolicyError::Timeout { limit }) => {
                assert_eq!(limit, Duration::from_millis(10))
            }
            other => panic!("{other:?}"),
        }
        // More than the runtime allows is capped at the runtime's.
        let long = endless.with_limits(Some(Duration::from_secs(5)), None);
        match long.evaluate(&input) {
            Err(crate::policy::PolicyError::Timeout { limit }) => {
                assert_eq!(limit, Duration::from_millis(100))
            }
            other => panic!("{other:?}"),
        }
        let bomb = runtime.load(&fixture("memory-bomb")).unwrap();
        match bomb.with_limits(None, Some(2 << 20)).evaluate(&input) {
            Err(crate::policy::PolicyError::MemoryLimit { limit }) => assert_eq!(limit, 2 << 20),
            other => panic!("{other:?}"),
        }
    }
}
