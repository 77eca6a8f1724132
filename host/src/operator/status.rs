//! `status` of a Canary: Flagger's fields plus `lastStepTime`, converted to
//! and from the core's [`Status`], and written through the status subresource.
use super::resource::CanaryObject;
use crate::core::Status;
use fledge_policy::Phase;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Condition type Flagger users wait on (`kubectl wait --for=condition=promoted`).
pub const PROMOTED: &str = "Promoted";
/// Fledge's condition about the Canary's spec: False with the problems when invalid.
pub const VALID: &str = "Valid";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

/// The status as stored. Unknown fields written by others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default)]
    pub failed_checks: i64,
    #[serde(default)]
    pub canary_weight: i64,
    #[serde(default)]
    pub iterations: i64,
    #[serde(default)]
    pub tracked_configs: BTreeMap<String, String>,
    #[serde(default)]
    pub last_applied_spec: String,
    #[serde(default)]
    pub last_promoted_spec: String,
    /// Time of the last phase change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Fledge: when the last analysis step was taken (RFC 3339, milliseconds).
    /// Steps follow `analysis.interval` from here, whatever wakes the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step_time: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

pub fn parse_phase(s: &str) -> Option<Phase> {
    use Phase::*;
    Some(match s {
        "" | "Initializing" => Initializing,
        "Initialized" => Initialized,
        "Waiting" => Waiting,
        "Progressing" => Progressing,
        "WaitingPromotion" => WaitingPromotion,
        "Promoting" => Promoting,
        "Finalising" => Finalising,
        "Succeeded" => Succeeded,
        "Failed" => Failed,
        "Terminating" => Terminating,
        "Terminated" => Terminated,
        _ => return None,
    })
}

/// RFC 3339 with millisecond precision.
pub fn format_time(t: Timestamp) -> String {
    let ms = t.as_millisecond();
    Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|_| t.to_string())
}

pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

impl CanaryStatus {
    pub fn from_object(obj: &CanaryObject) -> CanaryStatus {
        obj.status
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }

    pub fn phase(&self) -> Phase {
        self.phase
            .as_deref()
            .and_then(parse_phase)
            .unwrap_or(Phase::Initializing)
    }

    pub fn last_step(&self) -> Option<Timestamp> {
        self.last_step_time.as_deref().and_then(parse_time)
    }

    /// The core's view.
    pub fn to_core(&self) -> Status {
        let clamp = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
        Status {
            phase: self.phase(),
            canary_weight: clamp(self.canary_weight),
            failed_checks: clamp(self.failed_checks),
            iterations: clamp(self.iterations),
            last_applied_spec: self.last_applied_spec.clone(),
            last_promoted_spec: self.last_promoted_spec.clone(),
            last_transition: self
                .last_transition_time
                .as_deref()
                .and_then(parse_time)
                .map(|t| t.as_second())
                .unwrap_or(0),
        }
    }

    /// This status after a step that produced `core`, taken at `now`.
    /// `kind` is `targetRef.kind`, as the condition messages name it.
    pub fn after_step(
        &self,
        core: &Status,
        tracked: &BTreeMap<String, String>,
        now: Timestamp,
        kind: &str,
    ) -> CanaryStatus {
        let mut next = self.clone();
        next.phase = Some(core.phase.as_str().to_string());
        next.canary_weight = i64::from(core.canary_weight);
        next.failed_checks = i64::from(core.failed_checks);
        next.iterations = i64::from(core.iterations);
        next.last_applied_spec = core.last_applied_spec.clone();
        next.last_promoted_spec = core.last_promoted_spec.clone();
        if core.phase != self.phase() || self.last_transition_time.is_none() {
            next.last_transition_time = Some(format_time(now));
        } else if core.last_transition > 0 {
            // Keep what is stored: the core reports whole seconds.
            next.last_transition_time = self.last_transition_time.clone();
        }
        next.tracked_configs = tracked.clone();
        next.last_step_time = Some(format_time(now));
        let (status, message) = promoted_condition(core.phase, kind);
        next.set_condition(PROMOTED, status, core.phase.as_str(), &message, now);
        next
    }

    /// Sets a condition; the transition time moves only when `status` changes.
    pub fn set_condition(
        &mut self,
        type_: &str,
        status: &str,
        reason: &str,
        message: &str,
        now: Timestamp,
    ) {
        let now = format_time(now);
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(now.clone());
                }
                if c.status != status || c.reason != reason || c.message != message {
                    c.last_update_time = Some(now);
                }
                c.status = status.into();
                c.reason = reason.into();
                c.message = message.into();
            }
            None => self.conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                last_update_time: Some(now.clone()),
                last_transition_time: Some(now),
                reason: reason.into(),
                message: message.into(),
            }),
        }
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Flagger's `Promoted` condition for a phase.
pub fn promoted_condition(phase: Phase, kind: &str) -> (&'static str, String) {
    use Phase::*;
    match phase {
        Initializing | Terminating | Terminated => (
            "Unknown",
            format!("New {kind} detected, starting initialization."),
        ),
        Initialized => ("True", format!("{kind} initialization completed.")),
        Waiting | WaitingPromotion => ("Unknown", "Waiting for approval.".into()),
        Progressing => (
            "Unknown",
            "New revision detected, progressing canary analysis.".into(),
        ),
        Promoting => (
            "Unknown",
            "Canary analysis completed, starting primary rolling update.".into(),
        ),
        Finalising => (
            "Unknown",
            "Canary analysis completed, routing all traffic to primary.".into(),
        ),
        Succeeded => (
            "True",
            "Canary analysis completed successfully, promotion finished.".into(),
        ),
        Failed => (
            "False",
            format!("Canary analysis failed, {kind} scaled to zero."),
        ),
    }
}

/// The merge patch that makes the stored status `next`: keys of tracked
/// configs that are gone are deleted explicitly.
pub fn merge_patch(prev: &CanaryStatus, next: &CanaryStatus) -> Value {
    let mut status = serde_json::to_value(next).unwrap_or(Value::Null);
    if let Some(obj) = status.as_object_mut() {
        let mut tracked = serde_json::Map::new();
        for k in prev.tracked_configs.keys() {
            if !next.tracked_configs.contains_key(k) {
                tracked.insert(k.clone(), Value::Null);
            }
        }
        for (k, v) in &next.tracked_configs {
            tracked.insert(k.clone(), Value::String(v.clone()));
        }
        obj.insert("trackedConfigs".into(), Value::Object(tracked));
    }
    json!({ "status": status })
}

/// Writes `patch` to the status subresource. Fledge is the only writer of a
/// Canary's status, so there is no resourceVersion precondition; transient
/// errors are retried with backoff for about half a minute.
pub async fn write(api: &Api<CanaryObject>, name: &str, patch: &Value) -> Result<(), kube::Error> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return Ok(()),
            // Gone: nothing to write to.
            Err(kube::Error::Api(e)) if e.code == 404 => return Err(kube::Error::Api(e)),
            Err(e) if attempt >= 8 => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "status write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_strings_round_trip() {
        for p in [
            Phase::Initializing,
            Phase::Initialized,
            Phase::Waiting,
            Phase::Progressing,
            Phase::WaitingPromotion,
            Phase::Promoting,
            Phase::Finalising,
            Phase::Succeeded,
            Phase::Failed,
            Phase::Terminating,
        ] {
            assert_eq!(parse_phase(p.as_str()), Some(p));
        }
        assert_eq!(parse_phase(""), Some(Phase::Initializing));
        assert_eq!(parse_phase("Bogus"), None);
    }

    #[test]
    fn a_step_records_its_time_and_the_promoted_condition() {
        let t0: Timestamp = "2026-01-01T00:00:00.250Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:00:10.500Z".parse().unwrap();
        let prev = CanaryStatus::default();
        let core = Status {
            phase: Phase::Initialized,
            last_applied_spec: "abc".into(),
            last_promoted_spec: "abc".into(),
            ..Status::default()
        };
        let s = prev.after_step(&core, &BTreeMap::new(), t0, "Deployment");
        assert_eq!(
            s.last_step_time.as_deref(),
            Some("2026-01-01T00:00:00.250Z")
        );
        assert_eq!(s.phase.as_deref(), Some("Initialized"));
        let c = s.condition(PROMOTED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            (
                "True",
                "Initialized",
                "Deployment initialization completed."
            )
        );
        // Same phase later: the transition time stays, the step time moves.
        let s2 = s.after_step(&core, &BTreeMap::new(), t1, "Deployment");
        assert_eq!(s2.last_transition_time, s.last_transition_time);
        assert_eq!(
            s2.last_step_time.as_deref(),
            Some("2026-01-01T00:00:10.500Z")
        );
        assert_eq!(
            s2.condition(PROMOTED).unwrap().last_transition_time,
            c.last_transition_time
        );
        assert_eq!(s2.to_core().phase, Phase::Initialized);
        assert_eq!(s2.to_core().last_transition, t0.as_second());
    }

    #[test]
    fn the_patch_deletes_configs_no_longer_tracked() {
        let mut prev = CanaryStatus::default();
        prev.tracked_configs
            .insert("configmap/a".into(), "1".into());
        let mut next = prev.clone();
        next.tracked_configs.clear();
        next.tracked_configs.insert("secret/b".into(), "2".into());
        let p = merge_patch(&prev, &next);
        assert_eq!(p["status"]["trackedConfigs"]["configmap/a"], Value::Null);
        assert_eq!(p["status"]["trackedConfigs"]["secret/b"], "2");
    }
}
