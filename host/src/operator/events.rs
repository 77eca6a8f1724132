//! Kubernetes Events about Canaries (`events.k8s.io/v1`, reporting controller
//! `fledge`), and the log line that goes with each.
//!
//! Repeated messages are aggregated as client-go's recorder does: the same
//! type, reason and note about the same object within ten minutes bumps the
//! first Event's series count instead of creating another Event. (kube's own
//! recorder keys its series on the reason alone, which would fold
//! `Advance ... canary weight 10` into the earlier `... weight 5`.)
use super::resource::{CanaryObject, API_VERSION, KIND};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

pub const REPORTING_CONTROLLER: &str = "fledge";
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(10);

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    warning: bool,
    reason: String,
    note: String,
}

struct Seen {
    namespace: String,
    name: String,
    count: i32,
    last: Timestamp,
}

/// Publishes Events; shared by all reconciles (the aggregation cache is global).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    instance: String,
    seen: Arc<Mutex<HashMap<Key, Seen>>>,
}

pub fn reference(c: &CanaryObject) -> ObjectReference {
    ObjectReference {
        api_version: Some(API_VERSION.into()),
        kind: Some(KIND.into()),
        name: c.metadata.name.clone(),
        namespace: c.metadata.namespace.clone(),
        uid: c.metadata.uid.clone(),
        ..Default::default()
    }
}

impl Recorder {
    pub fn new(client: Client, instance: String) -> Recorder {
        Recorder {
            client,
            instance,
            seen: Arc::default(),
        }
    }

    /// Publishes one Event about `canary`, observed now. Failures are logged,
    /// not returned: an Event that cannot be written must not stop a rollout.
    pub async fn publish(&self, canary: &CanaryObject, warning: bool, reason: &str, note: &str) {
        self.publish_at(canary, warning, reason, note, Timestamp::now())
            .await
    }

    /// [`Recorder::publish`] of an Event observed at `at`: an analysis step's
    /// Events carry the step's time, not the moment they are written after
    /// the step's queries and status write, so the time between two steps'
    /// Events is the time between the steps.
    pub async fn publish_at(
        &self,
        canary: &CanaryObject,
        warning: bool,
        reason: &str,
        note: &str,
        at: Timestamp,
    ) {
        if let Err(e) = self.try_publish(canary, warning, reason, note, at).await {
            tracing::warn!(
                canary = %canary.id(),
                namespace = canary.namespace(),
                error = %e,
                "writing an Event failed"
            );
        }
    }

    async fn try_publish(
        &self,
        canary: &CanaryObject,
        warning: bool,
        reason: &str,
        note: &str,
        at: Timestamp,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        // One line, and within the API server's 1 kB cap for notes.
        let note = crate::core::text::one_line(note, 1024);
        let key = Key {
            uid: canary.metadata.uid.clone().unwrap_or_default(),
            warning,
            reason: reason.into(),
            note: note.clone(),
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), canary.namespace());
        let mut seen = self.seen.lock().await;
        seen.retain(|_, s| s.last + SERIES_WINDOW > now);
        if let Some(s) = seen.get_mut(&key) {
            s.count += 1;
            s.last = now;
            let patch = serde_json::json!({"series": EventSeries {
                count: s.count,
                last_observed_time: MicroTime(at),
            }});
            let name = s.name.clone();
            let namespace = s.namespace.clone();
            drop(seen);
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            return Ok(());
        }
        let name = format!("{}.{:x}", canary.name(), now.as_nanosecond());
        let event = K8sEvent {
            action: Some("Analysis".into()),
            reason: Some(reason.into()),
            note: Some(note),
            event_time: Some(MicroTime(at)),
            regarding: Some(reference(canary)),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(canary.namespace().into()),
                ..Default::default()
            },
            ..Default::default()
        };
        seen.insert(
            key,
            Seen {
                namespace: canary.namespace().into(),
                name,
                count: 1,
                last: now,
            },
        );
        drop(seen);
        api.create(&PostParams::default(), &event).await?;
        Ok(())
    }
}

/// The log line of an Event: `msg` plus `canary` and `namespace` fields.
pub fn log(canary: &CanaryObject, warning: bool, msg: &str) {
    let id = canary.id();
    let msg = crate::core::text::one_line(msg, 4096);
    if warning {
        tracing::warn!(canary = %id, namespace = canary.namespace(), "{msg}");
    } else {
        tracing::info!(canary = %id, namespace = canary.namespace(), "{msg}");
    }
}
