//! Taking over a Canary Flagger promoted. Flagger's `lastAppliedSpec` and
//! `lastPromotedSpec` are FNV-32a hashes of Go's spew printing of the pod
//! template struct, which cannot be reproduced outside Go's type layout;
//! Fledge's revision is a hash of the template's JSON. Instead of comparing
//! hashes, a status Fledge never wrote is recognised as a finished promotion
//! when the primary runs exactly the template Fledge would promote from the
//! target, with the configs Flagger tracked: then that revision is the
//! promoted one, and no analysis starts.
use super::status::CanaryStatus;
use fledge_policy::Phase;
use serde_json::Value;
use std::collections::BTreeMap;

/// Pod template annotation Flagger (and Fledge) set to a fresh value on every
/// promotion, so the primary rolls; it names no revision.
const FLAGGER_ID: &str = "flagger-id";

/// Whether `status` is another operator's record of a promotion of the
/// target's current revision: written without Fledge's `lastStepTime`, a
/// finished phase, a hash that is not Fledge's revision, the same tracked
/// configs, and a primary template (`primary`) equal to the one Fledge derives
/// from the target (`derived`), apart from `flagger-id`.
pub fn is_foreign_promotion(
    status: &CanaryStatus,
    revision: &str,
    configs: &BTreeMap<String, String>,
    derived: &Value,
    primary: Option<&Value>,
) -> bool {
    status_could_be_foreign(status, revision, configs)
        && primary.is_some_and(|p| comparable(p) == comparable(derived))
}

/// The status half of [`is_foreign_promotion`]: cheap, so a reconcile asks it
/// before serializing any pod template (Fledge's own statuses fail it first).
pub fn status_could_be_foreign(
    status: &CanaryStatus,
    revision: &str,
    configs: &BTreeMap<String, String>,
) -> bool {
    let finished = matches!(status.phase(), Phase::Succeeded | Phase::Initialized);
    finished
        && status.last_step_time.is_none()
        && status.pending_step.is_none()
        && !status.last_applied_spec.is_empty()
        && status.last_applied_spec != revision
        && status.last_promoted_spec != revision
        && status.last_applied_spec == status.last_promoted_spec
        && &status.tracked_configs == configs
}

/// A pod template without `flagger-id` and with empty label and annotation
/// maps dropped, as the API server and Flagger leave them.
fn comparable(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(FLAGGER_ID);
        }
        meta.retain(|k, v| {
            (k == "labels" || k == "annotations") && v.as_object().is_some_and(|m| !m.is_empty())
        });
    }
    t
}

/// `status` taking `revision` as both applied and promoted.
pub fn adopted(status: &CanaryStatus, revision: &str) -> CanaryStatus {
    let mut next = status.clone();
    next.last_applied_spec = revision.to_string();
    next.last_promoted_spec = revision.to_string();
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flaggers_status() -> CanaryStatus {
        serde_json::from_value(json!({
            "phase": "Succeeded",
            "lastAppliedSpec": "5c8b4f9d7",
            "lastPromotedSpec": "5c8b4f9d7",
            "trackedConfigs": {},
            "conditions": [{"type": "Promoted", "status": "True", "reason": "Succeeded"}]
        }))
        .unwrap()
    }

    fn template(image: &str, id: &str) -> Value {
        json!({
            "metadata": {"labels": {"app": "podinfo-primary"}, "annotations": {"flagger-id": id}},
            "spec": {"containers": [{"name": "podinfod", "image": image}]}
        })
    }

    #[test]
    fn a_primary_running_the_target_is_flaggers_promotion() {
        let s = flaggers_status();
        let none = BTreeMap::new();
        let derived = template("podinfo:6.0.0", "fledge-id");
        let flaggers = template("podinfo:6.0.0", "random-id");
        assert!(is_foreign_promotion(
            &s,
            "rev",
            &none,
            &derived,
            Some(&flaggers)
        ));
        let a = adopted(&s, "rev");
        assert_eq!(
            (a.last_applied_spec.as_str(), a.last_promoted_spec.as_str()),
            ("rev", "rev")
        );
        assert_eq!(a.phase(), Phase::Succeeded);
    }

    #[test]
    fn anything_else_is_left_to_the_analysis() {
        let s = flaggers_status();
        let none = BTreeMap::new();
        let derived = template("podinfo:6.0.1", "x");
        let older = template("podinfo:6.0.0", "x");
        // The target moved past what the primary runs: a new revision.
        assert!(!is_foreign_promotion(
            &s,
            "rev",
            &none,
            &derived,
            Some(&older)
        ));
        assert!(!is_foreign_promotion(&s, "rev", &none, &derived, None));
        // A tracked config whose data changed.
        let mut configs = BTreeMap::new();
        configs.insert("configmap/podinfo".to_string(), "abc".to_string());
        assert!(!is_foreign_promotion(
            &s,
            "rev",
            &configs,
            &derived,
            Some(&derived)
        ));
        // Fledge's own status, or one mid-analysis.
        let mut ours = s.clone();
        ours.last_step_time = Some("2026-01-01T00:00:00.000Z".into());
        assert!(!is_foreign_promotion(
            &ours,
            "rev",
            &none,
            &derived,
            Some(&derived)
        ));
        let mut progressing = s.clone();
        progressing.phase = Some("Progressing".into());
        assert!(!is_foreign_promotion(
            &progressing,
            "rev",
            &none,
            &derived,
            Some(&derived)
        ));
        let mut mid = s;
        mid.last_applied_spec = "other".into();
        assert!(!is_foreign_promotion(
            &mid,
            "rev",
            &none,
            &derived,
            Some(&derived)
        ));
    }
}
