//! `status` of a Canary: Flagger's fields plus `lastStepTime` and
//! `pendingStep`, converted to and from the core's [`Status`], and written
//! through the status subresource.
//!
//! # Crash safety: the step is written before it is carried out
//!
//! A step's new status is written together with a [`PendingStep`] (its
//! identity, the target revision it was taken for, and its actions, Events
//! and alerts as data) *before* any of its actions run. The actions run, the
//! Events are published, then a small patch clears `pendingStep`. Whoever
//! reconciles the Canary next (this process after an error, a restarted one,
//! another leader) and finds a record finishes that step from it: the
//! idempotent actions are applied again (routes and replicas set to a value,
//! objects applied), Events already published are recognised by their names
//! and skipped, and neither the policy, the metrics nor the webhooks are
//! asked again. A step whose status was never written was never taken: it is
//! taken again from scratch, its webhooks called again.
//!
//! Of the two ways out in the architecture sketch this is the one that does
//! not need the live routes to be comparable with the status: an A/B or
//! blue/green step changes iterations, not weights, and a promotion step
//! changes the primary's template; a record says exactly what is left,
//! whatever the step did.
use super::resource::CanaryObject;
use crate::api::StringMatchSpec;
use crate::core::rollout::Severity;
use crate::core::{self, Action, Status};
use fledge_policy::{HeaderMatch, MatchRule, Phase, RoutePlan, StringMatch};
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
    /// Fledge: the policy that judges the analysis, pinned when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyInForce>,
    /// Fledge: the last step, while its actions are being carried out. A
    /// reconcile that finds it finishes that step instead of taking another.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub pending_step: Option<PendingStep>,
    /// Fledge: the router that carries the Canary's traffic. Absent on
    /// Canaries Fledge has not reconciled since it started recording it:
    /// those are on their `spec.provider`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub router: Option<RouterInUse>,
}

/// The router a Canary's traffic goes through (`status.router`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouterInUse {
    /// The provider whose router carries the traffic, as `spec.provider` names it.
    pub provider: String,
    /// The provider traffic moved away from, while its objects are still
    /// being removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring: Option<String>,
    /// When `provider` took over the traffic (RFC 3339): the retiring
    /// router's objects stay until a while after, so every proxy has the new
    /// routes and clients have left the old ones before they go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The provider whose objects are being created for a move that has not
    /// happened yet; if `spec.provider` goes back, they are retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<String>,
}

/// `status.router` as a merge patch writes it: a cleared field as null.
pub fn router_patch(router: &RouterInUse) -> Value {
    json!({
        "provider": router.provider,
        "retiring": router.retiring,
        "since": router.since,
        "moving": router.moving,
    })
}

/// The policy object (or the built-in fallback) in force for a Canary, and
/// the digest of its component. An analysis keeps the digest it started with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInForce {
    /// `RolloutPolicy`, `ClusterRolloutPolicy`, or `Builtin` when no policy
    /// object applies.
    pub kind: String,
    pub name: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
}

/// A record that does not parse (edited by hand: `pendingStep`, `router`) is
/// dropped rather than making the whole status unreadable, which would
/// restart the Canary.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    match serde_json::from_value(v) {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            tracing::warn!(error = %e, record = std::any::type_name::<T>(), "ignoring an unreadable status record");
            Ok(None)
        }
    }
}

/// A step whose status is written and whose actions may not all have been
/// carried out yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingStep {
    /// The step's identity: the `lastStepTime` it was taken at.
    pub step: String,
    /// The target's revision the step was taken for: a promotion copies the
    /// target only while it is still this revision.
    #[serde(default)]
    pub revision: String,
    /// The step's actions in order; Events are published after the others.
    #[serde(default)]
    pub actions: Vec<PendingAction>,
    /// The step ended the analysis and its post-rollout hooks have not been
    /// called yet. They are called at most once: the record loses this field
    /// before they are called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_rollout: Option<PendingPostRollout>,
}

impl PendingStep {
    /// Marks every Event of the step as the decision of `policy`.
    pub fn attribute(&mut self, policy: &PolicyInForce) {
        let then = self.post_rollout.iter_mut().flat_map(|p| p.then.iter_mut());
        for a in self.actions.iter_mut().chain(then) {
            if let Some(e) = a.event.as_mut() {
                e.policy = Some(policy.clone());
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingPostRollout {
    /// The phase sent in the hooks' payload.
    pub phase: String,
    /// What follows the hooks' own Events.
    #[serde(default)]
    pub then: Vec<PendingAction>,
}

/// What an action does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ActionKind {
    #[default]
    EnsureObjects,
    SetRoutes,
    ScaleCanaryUp,
    ScaleCanaryToZero,
    PromoteToPrimary,
    Event,
    Alert,
}

/// An action of a pending step: its type and, for routes, Events and alerts,
/// what it carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingAction {
    #[serde(rename = "type")]
    pub kind: ActionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<PendingRoutes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<PendingEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<PendingAlert>,
}

/// A traffic split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingRoutes {
    pub primary_weight: u32,
    pub canary_weight: u32,
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_rules: Vec<PendingMatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PendingMatch {
    #[serde(default)]
    pub headers: Vec<PendingHeader>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PendingHeader {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: StringMatchSpec,
}

/// An Event of a step, and the Event object it goes to, chosen when the step
/// is recorded so that publishing it again reaches the same object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingEvent {
    #[serde(default)]
    pub warning: bool,
    pub reason: String,
    pub message: String,
    /// The log line, when it words things differently from the Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The Event object: created under this name when `count` is 1; else an
    /// earlier Event with the same note whose series this one extends.
    pub name: String,
    /// The Event's series count once this one is published.
    #[serde(default = "one")]
    pub count: i32,
    /// When it was observed: an analysis step's Events carry the step's
    /// time, a microsecond apart in their order, not the moment they are
    /// written after the step's queries and status write, so the time
    /// between two steps' Events is the time between the steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The policy whose decision this Event reports: the Event carries it in
    /// its annotations, the log line in its `policy` and `digest` fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyInForce>,
}

fn one() -> i32 {
    1
}

impl PendingEvent {
    pub fn log_message(&self) -> &str {
        self.log.as_deref().unwrap_or(&self.message)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    #[default]
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingAlert {
    pub severity: AlertSeverity,
    pub message: String,
    #[serde(default)]
    pub muted: bool,
}

/// What carrying out a [`PendingAction`] means (not stored).
#[derive(Debug, Clone, PartialEq)]
pub enum Op<'a> {
    EnsureObjects,
    SetRoutes(RoutePlan),
    ScaleCanaryUp,
    ScaleCanaryToZero,
    PromoteToPrimary,
    Event(&'a PendingEvent),
    Alert(&'a PendingAlert),
}

impl PendingAction {
    /// `action` as data; `event` says where an Event goes: (name, count).
    pub fn record(action: &Action, event: &mut dyn FnMut(&core::Event) -> (String, i32)) -> Self {
        let of = |kind| PendingAction {
            kind,
            ..Default::default()
        };
        match action {
            Action::EnsureObjects => of(ActionKind::EnsureObjects),
            Action::SetRoutes(plan) => PendingAction {
                routes: Some(PendingRoutes::from(plan)),
                ..of(ActionKind::SetRoutes)
            },
            Action::ScaleCanaryUp => of(ActionKind::ScaleCanaryUp),
            Action::ScaleCanaryToZero => of(ActionKind::ScaleCanaryToZero),
            Action::PromoteToPrimary => of(ActionKind::PromoteToPrimary),
            Action::Event(e) => {
                let (name, count) = event(e);
                PendingAction {
                    event: Some(PendingEvent {
                        warning: e.warning,
                        reason: e.reason.to_string(),
                        message: e.message.clone(),
                        log: e.log.clone(),
                        name,
                        count,
                        at: None,
                        policy: None,
                    }),
                    ..of(ActionKind::Event)
                }
            }
            Action::Alert(a) => PendingAction {
                alert: Some(PendingAlert {
                    severity: match a.severity {
                        Severity::Info => AlertSeverity::Info,
                        Severity::Warn => AlertSeverity::Warn,
                        Severity::Error => AlertSeverity::Error,
                    },
                    message: a.message.clone(),
                    muted: a.muted,
                }),
                ..of(ActionKind::Alert)
            },
        }
    }

    /// What to do; an error when the record lacks what its kind needs.
    pub fn op(&self) -> Result<Op<'_>, String> {
        let missing = |what: &str| format!("a {:?} action without {what}", self.kind);
        Ok(match self.kind {
            ActionKind::EnsureObjects => Op::EnsureObjects,
            ActionKind::SetRoutes => Op::SetRoutes(
                self.routes
                    .as_ref()
                    .ok_or_else(|| missing("routes"))?
                    .to_plan()?,
            ),
            ActionKind::ScaleCanaryUp => Op::ScaleCanaryUp,
            ActionKind::ScaleCanaryToZero => Op::ScaleCanaryToZero,
            ActionKind::PromoteToPrimary => Op::PromoteToPrimary,
            ActionKind::Event => Op::Event(self.event.as_ref().ok_or_else(|| missing("event"))?),
            ActionKind::Alert => Op::Alert(self.alert.as_ref().ok_or_else(|| missing("alert"))?),
        })
    }
}

impl From<&RoutePlan> for PendingRoutes {
    fn from(p: &RoutePlan) -> Self {
        PendingRoutes {
            primary_weight: p.primary_weight,
            canary_weight: p.canary_weight,
            match_rules: p
                .match_rules
                .iter()
                .map(|r| PendingMatch {
                    headers: r
                        .headers
                        .iter()
                        .map(|h| {
                            let mut m = StringMatchSpec::default();
                            match &h.matcher {
                                StringMatch::Exact(s) => m.exact = Some(s.clone()),
                                StringMatch::Prefix(s) => m.prefix = Some(s.clone()),
                                StringMatch::Suffix(s) => m.suffix = Some(s.clone()),
                                StringMatch::Regex(s) => m.regex = Some(s.clone()),
                            }
                            PendingHeader {
                                name: h.name.clone(),
                                matcher: m,
                            }
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl PendingRoutes {
    pub fn to_plan(&self) -> Result<RoutePlan, String> {
        let header = |h: &PendingHeader| {
            let m = &h.matcher;
            let matcher = if let Some(s) = &m.exact {
                StringMatch::Exact(s.clone())
            } else if let Some(s) = &m.prefix {
                StringMatch::Prefix(s.clone())
            } else if let Some(s) = &m.suffix {
                StringMatch::Suffix(s.clone())
            } else if let Some(s) = &m.regex {
                StringMatch::Regex(s.clone())
            } else {
                return Err(format!("header {} has no comparison", h.name));
            };
            Ok(HeaderMatch {
                name: h.name.clone(),
                matcher,
            })
        };
        Ok(RoutePlan {
            primary_weight: self.primary_weight,
            canary_weight: self.canary_weight,
            match_rules: self
                .match_rules
                .iter()
                .map(|r| {
                    Ok(MatchRule {
                        headers: r.headers.iter().map(header).collect::<Result<_, _>>()?,
                    })
                })
                .collect::<Result<_, String>>()?,
        })
    }
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

/// RFC 3339 with microsecond precision, as an Event's `eventTime` holds it.
pub fn format_time_micros(t: Timestamp) -> String {
    Timestamp::from_microsecond(t.as_microsecond())
        .map(|t| format!("{t:.6}"))
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

    /// The status to work from: `memo`, what this process wrote last, unless
    /// `stored` (the cache) holds a later step. At the same step what was
    /// written wins, as the cache may still hold the step's record after it
    /// was cleared.
    pub fn newest(stored: CanaryStatus, memo: Option<&CanaryStatus>) -> CanaryStatus {
        match memo {
            Some(m) if m.last_step() >= stored.last_step() => m.clone(),
            _ => stored,
        }
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

/// The patch that sets (or, with `None`, clears) `pendingStep` alone.
pub fn pending_patch(pending: Option<&PendingStep>) -> Value {
    json!({ "status": { "pendingStep": pending } })
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

    fn every_action() -> Vec<Action> {
        use crate::core::{Alert, Event};
        let ab = RoutePlan {
            primary_weight: 100,
            canary_weight: 0,
            match_rules: vec![MatchRule {
                headers: vec![
                    HeaderMatch {
                        name: "x-canary".into(),
                        matcher: StringMatch::Exact("insider".into()),
                    },
                    HeaderMatch {
                        name: "user-agent".into(),
                        matcher: StringMatch::Regex(".*Firefox.*".into()),
                    },
                ],
            }],
        };
        vec![
            Action::EnsureObjects,
            Action::SetRoutes(RoutePlan::weighted(30)),
            Action::SetRoutes(ab),
            Action::ScaleCanaryUp,
            Action::ScaleCanaryToZero,
            Action::PromoteToPrimary,
            Action::Event(Event {
                warning: false,
                reason: "NewRevision",
                message: "New revision detected! Scaling up podinfo.test".into(),
                log: Some("New revision detected! podinfo.test".into()),
            }),
            Action::Alert(Alert {
                severity: Severity::Warn,
                message: "Waiting for approval".into(),
                muted: true,
            }),
        ]
    }

    #[test]
    fn a_recorded_step_reads_back_as_the_actions_it_was_made_of() {
        let mut planned = Vec::new();
        let actions: Vec<PendingAction> = every_action()
            .iter()
            .map(|a| {
                PendingAction::record(a, &mut |e| {
                    planned.push(e.message.clone());
                    ("podinfo.0123456789abcdef".into(), 1)
                })
            })
            .collect();
        assert_eq!(planned.len(), 1, "only Events are planned");
        let mut stored = CanaryStatus {
            last_step_time: Some("2026-01-01T00:00:10.500Z".into()),
            ..Default::default()
        };
        stored.pending_step = Some(PendingStep {
            step: "2026-01-01T00:00:10.500Z".into(),
            revision: "abc".into(),
            actions,
            post_rollout: Some(PendingPostRollout {
                phase: "Succeeded".into(),
                then: vec![],
            }),
        });
        let json = serde_json::to_value(&stored).unwrap();
        let p = &json["pendingStep"];
        assert_eq!(p["actions"][1]["type"], "SetRoutes");
        assert_eq!(
            p["actions"][1]["routes"],
            json!({"primaryWeight": 70, "canaryWeight": 30})
        );
        assert_eq!(
            p["actions"][2]["routes"]["match"][0]["headers"][0],
            json!({"name": "x-canary", "match": {"exact": "insider"}})
        );
        assert_eq!(p["actions"][7]["alert"]["severity"], "warn");
        assert_eq!(p["postRollout"]["phase"], "Succeeded");

        let back: CanaryStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, stored);
        let ops: Vec<Op> = back
            .pending_step
            .as_ref()
            .unwrap()
            .actions
            .iter()
            .map(|a| a.op().unwrap())
            .collect();
        let expected = every_action();
        for (op, action) in ops.iter().zip(&expected) {
            match (op, action) {
                (Op::EnsureObjects, Action::EnsureObjects)
                | (Op::ScaleCanaryUp, Action::ScaleCanaryUp)
                | (Op::ScaleCanaryToZero, Action::ScaleCanaryToZero)
                | (Op::PromoteToPrimary, Action::PromoteToPrimary) => {}
                (Op::SetRoutes(a), Action::SetRoutes(b)) => assert_eq!(a, b),
                (Op::Event(a), Action::Event(b)) => {
                    assert_eq!(
                        (
                            a.warning,
                            a.reason.as_str(),
                            a.message.as_str(),
                            a.log_message()
                        ),
                        (b.warning, b.reason, b.message.as_str(), b.log_message())
                    );
                    assert_eq!((a.name.as_str(), a.count), ("podinfo.0123456789abcdef", 1));
                }
                (Op::Alert(a), Action::Alert(b)) => {
                    assert_eq!(
                        (a.severity, a.message.as_str(), a.muted),
                        (AlertSeverity::Warn, b.message.as_str(), b.muted)
                    );
                }
                (op, action) => panic!("{op:?} read back from {action:?}"),
            }
        }
        assert_eq!(ops.len(), expected.len());
    }

    #[test]
    fn a_record_missing_what_its_action_needs_is_refused_not_guessed() {
        let a = PendingAction {
            kind: ActionKind::SetRoutes,
            ..Default::default()
        };
        assert!(a.op().is_err());
        let mut r = PendingAction::record(
            &Action::SetRoutes(RoutePlan::weighted(0)),
            &mut |_| unreachable!(),
        );
        r.routes.as_mut().unwrap().match_rules = vec![PendingMatch {
            headers: vec![PendingHeader {
                name: "x".into(),
                matcher: StringMatchSpec::default(),
            }],
        }];
        assert!(r.op().is_err(), "a header without a comparison");
    }

    #[test]
    fn an_unreadable_record_leaves_the_rest_of_the_status_readable() {
        let v = json!({"phase": "Progressing", "canaryWeight": 50,
                       "lastStepTime": "2026-01-01T00:00:10.500Z",
                       "pendingStep": {"actions": "not a list"}});
        let s: CanaryStatus = serde_json::from_value(v).unwrap();
        assert_eq!((s.phase(), s.canary_weight), (Phase::Progressing, 50));
        assert_eq!(s.pending_step, None);
        let cleared: CanaryStatus =
            serde_json::from_value(json!({"phase": "Progressing", "pendingStep": null})).unwrap();
        assert_eq!(cleared.pending_step, None);
    }

    #[test]
    fn the_record_is_cleared_by_a_patch_of_its_own() {
        assert_eq!(
            pending_patch(None),
            json!({"status": {"pendingStep": null}})
        );
        let p = PendingStep {
            step: "t".into(),
            ..Default::default()
        };
        assert_eq!(
            pending_patch(Some(&p))["status"]["pendingStep"]["step"],
            "t"
        );
        // A step's own write carries the record with the rest of the status.
        let next = CanaryStatus {
            pending_step: Some(p),
            ..Default::default()
        };
        let full = merge_patch(&CanaryStatus::default(), &next);
        assert_eq!(full["status"]["pendingStep"]["step"], "t");
    }

    #[test]
    fn what_this_process_wrote_wins_over_a_cache_at_the_same_step() {
        let at = |t: &str, pending: bool| CanaryStatus {
            last_step_time: Some(t.into()),
            pending_step: pending.then(PendingStep::default),
            ..Default::default()
        };
        let t1 = "2026-01-01T00:00:10.500Z";
        let t2 = "2026-01-01T00:00:20.500Z";
        // The cache still shows the record this process has cleared since.
        let s = CanaryStatus::newest(at(t1, true), Some(&at(t1, false)));
        assert_eq!(s.pending_step, None);
        // The cache is behind: the write wins.
        let s = CanaryStatus::newest(at(t1, false), Some(&at(t2, true)));
        assert_eq!(s.last_step_time.as_deref(), Some(t2));
        // Someone else took a later step: the cache wins.
        let s = CanaryStatus::newest(at(t2, true), Some(&at(t1, false)));
        assert_eq!(
            (s.last_step_time.as_deref(), s.pending_step.is_some()),
            (Some(t2), true)
        );
        assert_eq!(CanaryStatus::newest(at(t1, true), None), at(t1, true));
    }
}
