//! Kubernetes Events about Canaries (`events.k8s.io/v1`, reporting controller
//! `fledge`), and the log line that goes with each.
//!
//! Repeated messages are aggregated as client-go's recorder does: the same
//! type, reason and note about the same object within ten minutes bumps the
//! first Event's series count instead of creating another Event. (kube's own
//! recorder keys its series on the reason alone, which would fold
//! `Advance ... canary weight 10` into the earlier `... weight 5`.)
//!
//! The Events of an analysis step are planned when the step is recorded
//! ([`Recorder::plan`]): each gets the name of the Event object it creates,
//! derived from the Canary's uid, the step and its place in the step, or the
//! name and series count of the earlier Event it extends. Publishing a
//! planned Event again ([`Recorder::deliver`]) finds it there and does
//! nothing, so a step finished after a restart tells the user once.
use super::resource::{CanaryObject, API_VERSION, KIND};
use super::status::{PendingEvent, PolicyInForce};
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

/// The name of the Event a step's `tag`-th Event creates: the same whoever
/// publishes it.
pub fn event_name(canary: &CanaryObject, step: &str, tag: &str) -> String {
    use sha2::{Digest, Sha256};
    let uid = canary.metadata.uid.as_deref().unwrap_or("");
    let h = Sha256::digest(format!("{uid}/{step}/{tag}").as_bytes());
    format!("{}.{}", canary.name(), hex::encode(&h[..8]))
}

/// What [`Recorder::deliver`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Published,
    /// It had been published before.
    AlreadyThere,
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

    /// Publishes one Event about `canary` that is not part of a step (a
    /// failed action, an invalid spec, deletion). Failures are logged, not
    /// returned: an Event that cannot be written must not stop a rollout.
    pub async fn publish(&self, canary: &CanaryObject, warning: bool, reason: &str, note: &str) {
        self.publish_by(canary, warning, reason, note, None).await
    }

    /// [`Recorder::publish`] of an Event about what `policy` said, with its
    /// policy annotations.
    pub async fn publish_by(
        &self,
        canary: &CanaryObject,
        warning: bool,
        reason: &str,
        note: &str,
        policy: Option<&PolicyInForce>,
    ) {
        if let Err(e) = self
            .try_publish(canary, warning, reason, note, policy)
            .await
        {
            tracing::warn!(
                canary = %canary.id(),
                namespace = canary.namespace(),
                error = %e,
                "writing an Event failed"
            );
        }
    }

    /// Where a step's Event goes: a new Event named `fresh`, or, for a note
    /// repeated within the series window, the earlier Event and the count
    /// its series reaches with this one. The aggregation cache counts it now.
    pub async fn plan(
        &self,
        canary: &CanaryObject,
        warning: bool,
        reason: &str,
        note: &str,
        fresh: String,
    ) -> (String, i32) {
        let key = Key {
            uid: canary.metadata.uid.clone().unwrap_or_default(),
            warning,
            reason: reason.into(),
            note: crate::core::text::one_line(note, 1024),
        };
        let mut seen = self.seen.lock().await;
        plan_in(&mut seen, key, fresh, Timestamp::now())
    }

    /// Publishes a planned Event: creates it, or sets its series count.
    /// With `again` (the step may have been carried out before) an Event
    /// already there, or a series already counting it, is left alone.
    pub async fn deliver(
        &self,
        canary: &CanaryObject,
        e: &PendingEvent,
        again: bool,
    ) -> Result<Delivery, kube::Error> {
        let now =
            e.at.as_deref()
                .and_then(super::status::parse_time)
                .unwrap_or_else(Timestamp::now);
        let note = crate::core::text::one_line(&e.message, 1024);
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), canary.namespace());
        if again {
            // A new process learns the Events of the step it finishes, so
            // that the notes repeated by the next steps extend them.
            let key = Key {
                uid: canary.metadata.uid.clone().unwrap_or_default(),
                warning: e.warning,
                reason: e.reason.clone(),
                note: note.clone(),
            };
            let mut seen = self.seen.lock().await;
            let s = seen.entry(key).or_insert_with(|| Seen {
                name: e.name.clone(),
                count: e.count,
                last: now,
            });
            if s.name == e.name {
                s.count = s.count.max(e.count);
            }
        }
        if e.count > 1 {
            if again {
                if let Some(old) = api.get_opt(&e.name).await? {
                    let count = old.series.as_ref().map_or(1, |s| s.count);
                    if count >= e.count {
                        return Ok(Delivery::AlreadyThere);
                    }
                }
            }
            let patch = serde_json::json!({"series": EventSeries {
                count: e.count,
                last_observed_time: MicroTime(now),
            }});
            match api
                .patch(&e.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(Delivery::Published),
                // The Event it extends expired, or was planned by a step whose
                // status write failed: this one starts it.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(err) => return Err(err),
            }
        }
        let mut event = self.event(canary, &e.name, e.warning, &e.reason, note, now);
        if let Some(p) = &e.policy {
            event.metadata.annotations = Some(policy_annotations(p));
        }
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => Ok(Delivery::Published),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Delivery::AlreadyThere),
            Err(err) => Err(err),
        }
    }

    fn event(
        &self,
        canary: &CanaryObject,
        name: &str,
        warning: bool,
        reason: &str,
        note: String,
        now: Timestamp,
    ) -> K8sEvent {
        K8sEvent {
            action: Some("Analysis".into()),
            reason: Some(reason.into()),
            note: Some(note),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference(canary)),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(canary.namespace().into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    async fn try_publish(
        &self,
        canary: &CanaryObject,
        warning: bool,
        reason: &str,
        note: &str,
        policy: Option<&PolicyInForce>,
    ) -> Result<(), kube::Error> {
        // The same path as a step's Events, planned and delivered at once.
        let fresh = format!("{}.{:x}", canary.name(), Timestamp::now().as_nanosecond());
        let (name, count) = self.plan(canary, warning, reason, note, fresh).await;
        let e = PendingEvent {
            warning,
            reason: reason.into(),
            message: note.into(),
            log: None,
            name,
            count,
            at: None,
            policy: policy.cloned(),
        };
        self.deliver(canary, &e, false).await.map(|_| ())
    }
}

/// Where an Event with `key` goes given the Events `seen`, and counts it.
fn plan_in(
    seen: &mut HashMap<Key, Seen>,
    key: Key,
    fresh: String,
    now: Timestamp,
) -> (String, i32) {
    seen.retain(|_, s| s.last + SERIES_WINDOW > now);
    if let Some(s) = seen.get_mut(&key) {
        s.count += 1;
        s.last = now;
        return (s.name.clone(), s.count);
    }
    seen.insert(
        key,
        Seen {
            name: fresh.clone(),
            count: 1,
            last: now,
        },
    );
    (fresh, 1)
}

/// Annotation of a decision's Event: the policy that made it, as
/// `<kind>/<name>` (a RolloutPolicy is in the Canary's namespace).
pub const POLICY_ANNOTATION: &str = "policies.fledge.dev/policy";
/// Annotation of a decision's Event: the digest of the policy's component.
pub const DIGEST_ANNOTATION: &str = "policies.fledge.dev/digest";

fn policy_annotations(p: &PolicyInForce) -> std::collections::BTreeMap<String, String> {
    [
        (
            POLICY_ANNOTATION.to_string(),
            format!("{}/{}", p.kind, p.name),
        ),
        (DIGEST_ANNOTATION.to_string(), p.digest.clone()),
    ]
    .into()
}

/// The log line of a decision's Event: as [`log`], plus `policy`
/// (`<kind>/<name>`) and `digest` when the policy is known.
pub fn log_decision(
    canary: &CanaryObject,
    warning: bool,
    msg: &str,
    policy: Option<&PolicyInForce>,
) {
    let Some(p) = policy else {
        return log(canary, warning, msg);
    };
    let id = canary.id();
    let msg = crate::core::text::one_line(msg, 4096);
    let name = format!("{}/{}", p.kind, p.name);
    if warning {
        tracing::warn!(canary = %id, namespace = canary.namespace(), policy = %name, digest = %p.digest, "{msg}");
    } else {
        tracing::info!(canary = %id, namespace = canary.namespace(), policy = %name, digest = %p.digest, "{msg}");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(uid: &str) -> CanaryObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": uid},
            "spec": {}
        }))
        .unwrap()
    }

    #[test]
    fn a_steps_event_names_depend_only_on_the_canary_the_step_and_the_place() {
        let c = canary("5f0c");
        let step = "2026-01-01T00:00:10.500Z";
        let a = event_name(&c, step, "0");
        assert_eq!(a, event_name(&c, step, "0"), "the same whoever computes it");
        assert!(
            a.starts_with("podinfo.") && a.len() == "podinfo.".len() + 16,
            "{a}"
        );
        assert!(a
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '.'));
        assert_ne!(a, event_name(&c, step, "1"));
        assert_ne!(a, event_name(&c, "2026-01-01T00:00:20.500Z", "0"));
        assert_ne!(a, event_name(&canary("77aa"), step, "0"));
    }

    #[test]
    fn a_repeated_note_extends_the_first_events_series_within_the_window() {
        let key = |note: &str| Key {
            uid: "u".into(),
            warning: true,
            reason: "Halt".into(),
            note: note.into(),
        };
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut seen = HashMap::new();
        let first = plan_in(&mut seen, key("a"), "e1".into(), t0);
        assert_eq!(first, ("e1".to_string(), 1));
        let again = plan_in(
            &mut seen,
            key("a"),
            "e2".into(),
            t0 + SignedDuration::from_secs(10),
        );
        assert_eq!(again, ("e1".to_string(), 2), "folded into the first");
        let other = plan_in(
            &mut seen,
            key("b"),
            "e3".into(),
            t0 + SignedDuration::from_secs(20),
        );
        assert_eq!(other, ("e3".to_string(), 1));
        // Past the window since the last one, a new Event.
        let later = plan_in(
            &mut seen,
            key("a"),
            "e4".into(),
            t0 + SignedDuration::from_secs(10) + SERIES_WINDOW,
        );
        assert_eq!(later, ("e4".to_string(), 1));
    }
}
