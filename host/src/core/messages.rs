//! Event and log texts, word for word as Flagger users know them. Where the
//! App Mesh guide and later Flagger releases word a message differently, the
//! guide's wording is used.
use super::rollout::{MetricSource, MetricSpec, Rollout};

pub fn suspended() -> String {
    "skipping canary run as object is suspended".into()
}
pub fn initialized(r: &Rollout) -> String {
    format!("Initialization done! {}", r.id())
}
pub fn new_revision_event(r: &Rollout) -> String {
    format!("New revision detected! Scaling up {}", r.target_id())
}
pub fn new_revision_log(r: &Rollout) -> String {
    format!(
        "New revision detected! progressing canary analysis for {}",
        r.target_id()
    )
}
pub fn restart(r: &Rollout) -> String {
    format!(
        "New revision detected! Restarting analysis for {}",
        r.target_id()
    )
}
pub fn waiting_approval(r: &Rollout, hook: &str) -> String {
    format!("Halt {} advancement waiting for approval {hook}", r.id())
}
pub fn waiting_traffic_increase(r: &Rollout, hook: &str) -> String {
    format!(
        "Halt {} advancement waiting for traffic increase approval {hook}",
        r.id()
    )
}
pub fn waiting_promotion(r: &Rollout, hook: &str) -> String {
    format!(
        "Halt {} advancement waiting for promotion approval {hook}",
        r.id()
    )
}
pub fn check_passed(kind: fledge_policy::WebhookKind, hook: &str) -> String {
    use fledge_policy::WebhookKind as K;
    let what = match kind {
        K::ConfirmRollout => "Confirm-rollout",
        K::PreRollout => "Pre-rollout",
        K::ConfirmTrafficIncrease => "Confirm-traffic-increase",
        K::ConfirmPromotion => "Confirm-promotion",
        K::PostRollout => "Post-rollout",
        K::Rollback => "Rollback",
        K::Rollout => "Rollout",
        K::Event => "Event",
    };
    format!("{what} check {hook} passed")
}
pub fn post_rollout_failed(hook: &str, err: &str) -> String {
    format!("Post-rollout hook {hook} failed {err}")
}
pub fn rollback_not_signaled(hook: &str) -> String {
    format!("Rollback hook {hook} not signaling a rollback")
}
pub fn manual_rollback(r: &Rollout) -> String {
    rolling_back(r, "manual webhook invoked")
}
pub fn halt(r: &Rollout, reason: &str) -> String {
    format!("Halt {} advancement {reason}", r.id())
}
pub fn advance_weight(r: &Rollout, w: u32) -> String {
    format!("Advance {} canary weight {w}", r.id())
}
pub fn advance_iteration(r: &Rollout, n: u32, of: u32) -> String {
    format!("Advance {} canary iteration {n}/{of}", r.id())
}
pub fn advance_primary(r: &Rollout, p: u32) -> String {
    format!("Advance {} primary weight {p}", r.id())
}
pub fn copying(r: &Rollout) -> String {
    format!(
        "Copying {} template spec to {}.{}",
        r.target_id(),
        r.primary(),
        r.namespace
    )
}
pub fn routing_all_to_primary() -> String {
    "Routing all traffic to primary".into()
}
pub fn routing_all_to_canary() -> String {
    "Routing all traffic to canary".into()
}
pub fn promotion_completed(r: &Rollout) -> String {
    format!("Promotion completed! Scaling down {}", r.target_id())
}
pub fn promotion_skipped(r: &Rollout) -> String {
    format!(
        "Promotion completed! Canary analysis was skipped for {}",
        r.target_id()
    )
}
pub fn rolling_back(r: &Rollout, reason: &str) -> String {
    format!("Rolling back {} {reason}", r.id())
}
pub fn canary_failed(r: &Rollout) -> String {
    format!("Canary failed! Scaling down {}", r.id())
}
pub fn initialization_failed(r: &Rollout) -> String {
    format!(
        "Initialization of {} failed! {}.{} is not ready; {} keeps running",
        r.id(),
        r.primary(),
        r.namespace,
        r.target_id()
    )
}
pub fn promotion_failed(r: &Rollout, err: &str) -> String {
    format!(
        "Promotion of {} failed, primary not ready: {err}",
        r.target_id()
    )
}
/// Why a metric has no value, in Flagger's words for its kind of source
/// (`pkg/controller/scheduler_metrics.go`). The shell words the error, the
/// policy's hold points at it, and the Event carries it unchanged.
pub fn metric_query_failed(spec: &MetricSpec, err: &str) -> String {
    match &spec.source {
        MetricSource::Builtin => format!("Prometheus query failed: {err}"),
        MetricSource::Query(_) => format!("Prometheus query failed for {}: {err}", spec.name),
        MetricSource::Template { .. } => format!("Metric query failed for {}: {err}", spec.name),
    }
}

/// The query ran but returned nothing (or NaN): the canary is probably not
/// receiving traffic. Flagger appends the provider's error only for
/// `request-success-rate` and templates.
pub fn metric_no_values(r: &Rollout, spec: &MetricSpec, err: &str) -> String {
    match &spec.source {
        MetricSource::Builtin => {
            let text = format!(
                "Halt advancement no values found for {} metric {} probably {} is not receiving traffic",
                r.provider,
                spec.name,
                r.target_id()
            );
            if spec.name == "request-duration" {
                text
            } else {
                format!("{text}: {err}")
            }
        }
        MetricSource::Query(_) => {
            format!("Halt advancement no values found for metric: {}", spec.name)
        }
        MetricSource::Template { .. } => format!(
            "Halt advancement no values found for custom metric: {}: {err}",
            spec.name
        ),
    }
}

pub fn policy_failed(err: &str) -> String {
    format!("policy failed: {err}")
}

/// Alert texts (Slack, Teams, ...).
pub mod alert {
    pub const INITIALIZED: &str = "New Deployment detected, initialization completed.";
    pub const NEW_REVISION: &str = "New revision detected, progressing canary analysis.";
    pub const WAITING_APPROVAL: &str = "Canary is waiting for approval.";
    pub const WAITING_TRAFFIC: &str = "Canary traffic increase is waiting for approval.";
    pub const WAITING_PROMOTION: &str = "Canary promotion is waiting for approval.";
    pub const SUCCEEDED: &str = "Canary analysis completed successfully, promotion finished.";
    pub const SKIPPED: &str = "Canary analysis was skipped, promotion finished.";
    pub const MANUAL_ROLLBACK: &str = "Rolling back manual webhook invoked";
}
