//! What the operator reads on every reconcile, served from the watches the
//! controller runs anyway instead of a GET each time: Deployments, HPAs,
//! Services, ConfigMaps and Secrets (without their data) and the routers'
//! mesh objects, each in a reflector store.
//!
//! A store lags behind the API server. [`Writes`] remembers the
//! resourceVersion of every write this process made, so a read prefers the
//! store only once the store has seen that write (read-your-writes), and an
//! apply is skipped only when its object is unchanged since this process
//! applied it, exactly as then.
use futures::{Stream, TryStreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, store::Writer, Lookup, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// One write of this process to one object.
struct Write {
    resource_version: String,
    /// Of the applied object, for writes that set the whole object.
    desired: Option<u64>,
    /// The store has seen the write (or something newer).
    seen: bool,
}

/// This process' writes, by `kind/namespace/name`.
#[derive(Default)]
pub struct Writes {
    by_key: Mutex<HashMap<String, Write>>,
}

pub fn key(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind}/{ns}/{name}")
}

/// A fingerprint of an object as applied.
pub fn fingerprint(obj: &Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.to_string().hash(&mut h);
    h.finish()
}

impl Writes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Write>> {
        self.by_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a write that left the object at `resource_version`.
    pub fn wrote(&self, key: String, resource_version: Option<String>, desired: Option<u64>) {
        let mut by_key = self.lock();
        match resource_version {
            Some(rv) => {
                by_key.insert(
                    key,
                    Write {
                        resource_version: rv,
                        desired,
                        seen: false,
                    },
                );
            }
            // Unknown where the write left it: trust no store for it.
            None => {
                by_key.remove(&key);
            }
        }
    }

    /// The store holds the object at `resource_version`.
    fn saw(&self, key: &str, resource_version: &str) {
        if let Some(w) = self.lock().get_mut(key) {
            if w.resource_version == resource_version {
                w.seen = true;
            }
        }
    }

    /// A GET found the object at `resource_version`: when that is not this
    /// process' last write, someone wrote since, and the store is current
    /// once it has seen that version.
    pub fn fetched(&self, key: &str, resource_version: Option<&str>) {
        let mut by_key = self.lock();
        let Some(w) = by_key.get_mut(key) else {
            return;
        };
        match resource_version {
            Some(rv) if rv != w.resource_version => {
                *w = Write {
                    resource_version: rv.to_string(),
                    desired: None,
                    seen: false,
                }
            }
            Some(_) => {}
            None => {
                by_key.remove(key);
            }
        }
    }

    /// The object was deleted: whatever was written is gone.
    fn gone(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Whether the store holds this process' last write to the object or
    /// something newer (true for objects this process never wrote).
    pub fn caught_up(&self, key: &str) -> bool {
        self.lock().get(key).is_none_or(|w| w.seen)
    }

    /// Whether `desired` is what this process last applied to the object and
    /// the object is still at the version that apply left (`live`).
    pub fn unchanged(&self, key: &str, desired: u64, live: Option<&str>) -> bool {
        self.lock().get(key).is_some_and(|w| {
            w.desired == Some(desired) && live == Some(w.resource_version.as_str())
        })
    }
}

/// The stores, filled by the controller's watches ([`reflect`]).
pub struct Cache {
    pub writes: Arc<Writes>,
    pub deployments: Store<k8s_openapi::api::apps::v1::Deployment>,
    pub hpas: Store<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
    pub services: Store<k8s_openapi::api::core::v1::Service>,
    /// ConfigMaps and Secrets without their data: its checksum instead
    /// ([`DATA_CHECKSUM`]), all a reconcile reads of them.
    pub configmaps: Store<k8s_openapi::api::core::v1::ConfigMap>,
    pub secrets: Store<k8s_openapi::api::core::v1::Secret>,
    /// The routers' kinds, by kind name.
    pub mesh: HashMap<String, Store<kube::api::DynamicObject>>,
}

/// The write halves of [`Cache`]'s stores, for the controller's watches.
pub struct Writers {
    pub deployments: Writer<k8s_openapi::api::apps::v1::Deployment>,
    pub hpas: Writer<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
    pub services: Writer<k8s_openapi::api::core::v1::Service>,
    pub configmaps: Writer<k8s_openapi::api::core::v1::ConfigMap>,
    pub secrets: Writer<k8s_openapi::api::core::v1::Secret>,
    pub mesh: Vec<(kube::api::ApiResource, Writer<kube::api::DynamicObject>)>,
}

impl Cache {
    /// Empty stores for the built-in kinds and the routers' `kinds`.
    pub fn new(kinds: &[kube::api::ApiResource]) -> (Cache, Writers) {
        let (deployments, dw) = reflector::store();
        let (hpas, hw) = reflector::store();
        let (services, sw) = reflector::store();
        let (configmaps, cw) = reflector::store();
        let (secrets, xw) = reflector::store();
        let mut mesh = HashMap::new();
        let mut mesh_writers = Vec::new();
        for ar in kinds {
            let w = Writer::new(ar.clone());
            mesh.insert(ar.kind.clone(), w.as_reader());
            mesh_writers.push((ar.clone(), w));
        }
        let cache = Cache {
            writes: Arc::default(),
            deployments,
            hpas,
            services,
            configmaps,
            secrets,
            mesh,
        };
        let writers = Writers {
            deployments: dw,
            hpas: hw,
            services: sw,
            configmaps: cw,
            secrets: xw,
            mesh: mesh_writers,
        };
        (cache, writers)
    }
}

/// Whether a store has its first full list (before that it knows nothing).
pub fn ready<K>(store: &Store<K>) -> bool
where
    K: Lookup + Clone + 'static,
    <K as Lookup>::DynamicType: Eq + std::hash::Hash + Clone,
{
    futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
}

/// What a read from a store says about one object.
pub enum Cached<K> {
    /// The store is current for it: the object, or `None` when it does not exist.
    Known(Option<Arc<K>>),
    /// The store may be behind: read it from the API server.
    Unknown,
}

/// The object `name` in `ns` of `kind` from `store`, if the store is ready
/// and has seen this process' last write to it.
pub fn lookup<K>(
    store: &Store<K>,
    writes: &Writes,
    (kind, dyntype): (&str, <K as Lookup>::DynamicType),
    ns: &str,
    name: &str,
) -> Cached<K>
where
    K: Lookup + Clone + 'static,
    <K as Lookup>::DynamicType: Eq + std::hash::Hash + Clone,
{
    if !ready(store) || !writes.caught_up(&key(kind, ns, name)) {
        return Cached::Unknown;
    }
    Cached::Known(store.get(&ObjectRef::<K>::new_with(name, dyntype).within(ns)))
}

/// The resourceVersion of `name` in `ns` as `store` has it.
pub fn live_version<K>(
    store: &Store<K>,
    ns: &str,
    name: &str,
    dyntype: <K as Lookup>::DynamicType,
) -> Option<String>
where
    K: Lookup + Clone + 'static,
    <K as Lookup>::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .get(&ObjectRef::<K>::new_with(name, dyntype).within(ns))
        .and_then(|o| o.resource_version().map(|v| v.into_owned()))
}

/// Records a write of this process that left `name` at `rv` (`desired`:
/// the fingerprint of an applied object). A write that changed nothing
/// leaves the version the store may hold already: then it is current.
pub fn note_write<K>(
    store: &Store<K>,
    writes: &Writes,
    (kind, dyntype): (&str, <K as Lookup>::DynamicType),
    ns: &str,
    name: &str,
    rv: Option<String>,
    desired: Option<u64>,
) where
    K: Lookup + Clone + 'static,
    <K as Lookup>::DynamicType: Eq + std::hash::Hash + Clone,
{
    let k = key(kind, ns, name);
    writes.wrote(k.clone(), rv, desired);
    // After the record, so a watch event in between is not missed.
    if let Some(live) = live_version(store, ns, name, dyntype) {
        writes.saw(&k, &live);
    }
}

/// Records what a GET of `name` found (`rv`, `None` when there is none).
pub fn note_read<K>(
    store: &Store<K>,
    writes: &Writes,
    (kind, dyntype): (&str, <K as Lookup>::DynamicType),
    ns: &str,
    name: &str,
    rv: Option<&str>,
) where
    K: Lookup + Clone + 'static,
    <K as Lookup>::DynamicType: Eq + std::hash::Hash + Clone,
{
    let k = key(kind, ns, name);
    writes.fetched(&k, rv);
    if let Some(live) = live_version(store, ns, name, dyntype) {
        writes.saw(&k, &live);
    }
}

/// The annotation a cached ConfigMap or Secret carries instead of its data:
/// [`crate::core::revision::config_checksum`] of it. Only in this process' stores.
pub const DATA_CHECKSUM: &str = "fledge.app/cached-data-checksum";

/// What the stores keep of a ConfigMap: no data, no copy of it in the last
/// applied configuration.
pub fn strip_configmap(cm: &mut k8s_openapi::api::core::v1::ConfigMap) {
    let checksum = crate::core::revision::config_checksum(
        &serde_json::to_value(&cm.data).unwrap_or(Value::Null),
    );
    cm.data = None;
    cm.binary_data = None;
    keep_checksum(&mut cm.metadata, checksum);
}

/// What the stores keep of a Secret, as of a ConfigMap.
pub fn strip_secret(s: &mut k8s_openapi::api::core::v1::Secret) {
    let checksum = crate::core::revision::config_checksum(
        &serde_json::to_value(&s.data).unwrap_or(Value::Null),
    );
    s.data = None;
    s.string_data = None;
    keep_checksum(&mut s.metadata, checksum);
}

fn keep_checksum(
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    checksum: String,
) {
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    annotations.insert(DATA_CHECKSUM.into(), checksum);
}

/// Leaves an object as it is in the store.
pub fn keep<K>(_: &mut K) {}

/// Drops the copy of the object kubectl keeps in an annotation, which nothing
/// generated from a Deployment or HPA carries over.
pub fn strip_last_applied<K: Resource>(o: &mut K) {
    if let Some(a) = o.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A watch of `api` that keeps `writer`'s store and tells `writes` what it
/// has seen; yields the objects touched, as the controller's own watches do.
pub fn reflect<K>(
    api: Api<K>,
    writer: Writer<K>,
    writes: Arc<Writes>,
    kind: String,
    strip: fn(&mut K),
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Lookup + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    <K as Lookup>::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    // Objects listed again (after a restart of the watch) reach the store
    // together at the end of the list.
    let mut listed: Vec<(String, String)> = Vec::new();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        // Nobody reads them; they are a large part of every object.
        .modify(move |o: &mut K| {
            o.managed_fields_mut().clear();
            strip(o);
        });
    reflector::reflector(writer, stream)
        .inspect_ok(move |ev| {
            let k = |o: &K| key(&kind, o.namespace().as_deref().unwrap_or(""), &o.name_any());
            match ev {
                watcher::Event::Apply(o) => {
                    writes.saw(&k(o), &ResourceExt::resource_version(o).unwrap_or_default())
                }
                watcher::Event::Delete(o) => writes.gone(&k(o)),
                watcher::Event::Init => listed.clear(),
                watcher::Event::InitApply(o) => {
                    listed.push((k(o), ResourceExt::resource_version(o).unwrap_or_default()))
                }
                watcher::Event::InitDone => {
                    for (key, rv) in listed.drain(..) {
                        writes.saw(&key, &rv);
                    }
                }
            }
        })
        .touched_objects()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_current_for_an_object_once_it_has_seen_the_last_write() {
        let w = Writes::default();
        let k = key("Deployment", "test", "podinfo");
        assert!(
            w.caught_up(&k),
            "never written: the store is as good as a GET"
        );
        w.wrote(k.clone(), Some("7".into()), None);
        assert!(!w.caught_up(&k));
        w.saw(&k, "6");
        assert!(!w.caught_up(&k), "an older version is not the write");
        w.saw(&k, "7");
        assert!(w.caught_up(&k));
        // A GET found someone else's write: current again once the store has it.
        w.fetched(&k, Some("9"));
        assert!(!w.caught_up(&k));
        w.saw(&k, "9");
        assert!(w.caught_up(&k));
        // A write whose result is unknown trusts no earlier record.
        w.wrote(k.clone(), None, None);
        assert!(w.caught_up(&k));
        w.wrote(k.clone(), Some("12".into()), None);
        w.gone(&k);
        assert!(w.caught_up(&k), "deleted: the store says so");
    }

    #[test]
    fn an_apply_is_skipped_only_for_the_same_object_at_the_version_it_left() {
        let w = Writes::default();
        let k = key("Service", "test", "podinfo");
        let desired =
            fingerprint(&serde_json::json!({"spec": {"selector": {"app": "podinfo-primary"}}}));
        let other = fingerprint(&serde_json::json!({"spec": {"selector": {"app": "podinfo"}}}));
        assert_ne!(desired, other);
        assert!(!w.unchanged(&k, desired, Some("3")), "never applied here");
        w.wrote(k.clone(), Some("3".into()), Some(desired));
        assert!(w.unchanged(&k, desired, Some("3")));
        assert!(
            !w.unchanged(&k, other, Some("3")),
            "the desired object changed"
        );
        assert!(
            !w.unchanged(&k, desired, Some("4")),
            "someone changed the object"
        );
        assert!(
            !w.unchanged(&k, desired, None),
            "the object is gone (or not seen yet)"
        );
        // What a GET found instead of the apply's result: apply again.
        w.fetched(&k, Some("5"));
        assert!(!w.unchanged(&k, desired, Some("5")));
    }
}
