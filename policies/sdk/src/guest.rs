//! The component glue: WIT bindings, conversions to the plain types, and a
//! panic hook that reports the panic message through the host's `log` import
//! before the guest traps.

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "fledge:policy/rollout-policy",
        pub_export_macro: true,
        export_macro_name: "__export_rollout_policy",
        default_bindings_module: "fledge_policy::guest::bindings",
    });
}

use bindings::fledge::policy::host;
use bindings::fledge::policy::types as w;

pub fn log(level: crate::LogLevel, message: &str) {
    let level = match level {
        crate::LogLevel::Debug => host::LogLevel::Debug,
        crate::LogLevel::Info => host::LogLevel::Info,
        crate::LogLevel::Warn => host::LogLevel::Warn,
        crate::LogLevel::Error => host::LogLevel::Error,
    };
    host::log(level, message);
}

/// Calls `decide` on the converted input and converts its answer back.
pub fn run(
    input: w::PolicyInput,
    decide: fn(&crate::PolicyInput) -> crate::Decision,
) -> w::Decision {
    std::panic::set_hook(Box::new(|info| {
        host::log(host::LogLevel::Error, &format!("policy panicked: {info}"));
    }));
    let input = from_wit(input);
    to_wit(decide(&input))
}

fn string_match(m: w::StringMatch) -> crate::StringMatch {
    match m {
        w::StringMatch::Exact(s) => crate::StringMatch::Exact(s),
        w::StringMatch::Prefix(s) => crate::StringMatch::Prefix(s),
        w::StringMatch::Suffix(s) => crate::StringMatch::Suffix(s),
        w::StringMatch::Regex(s) => crate::StringMatch::Regex(s),
    }
}

fn rules_from(rules: Vec<w::MatchRule>) -> Vec<crate::MatchRule> {
    rules
        .into_iter()
        .map(|r| crate::MatchRule {
            headers: r
                .headers
                .into_iter()
                .map(|h| crate::HeaderMatch {
                    name: h.name,
                    matcher: string_match(h.match_),
                })
                .collect(),
        })
        .collect()
}

fn rules_to(rules: Vec<crate::MatchRule>) -> Vec<w::MatchRule> {
    rules
        .into_iter()
        .map(|r| w::MatchRule {
            headers: r
                .headers
                .into_iter()
                .map(|h| w::HeaderMatch {
                    name: h.name,
                    match_: match h.matcher {
                        crate::StringMatch::Exact(s) => w::StringMatch::Exact(s),
                        crate::StringMatch::Prefix(s) => w::StringMatch::Prefix(s),
                        crate::StringMatch::Suffix(s) => w::StringMatch::Suffix(s),
                        crate::StringMatch::Regex(s) => w::StringMatch::Regex(s),
                    },
                })
                .collect(),
        })
        .collect()
}

fn readiness(r: w::Readiness) -> crate::Readiness {
    match r {
        w::Readiness::Ready => crate::Readiness::Ready,
        w::Readiness::NotReady(s) => crate::Readiness::NotReady(s),
        w::Readiness::DeadlineExceeded(s) => crate::Readiness::DeadlineExceeded(s),
    }
}

fn from_wit(i: w::PolicyInput) -> crate::PolicyInput {
    let a = i.analysis;
    let s = i.state;
    crate::PolicyInput {
        canary: i.canary,
        strategy: match i.strategy {
            w::Strategy::Canary => crate::Strategy::Canary,
            w::Strategy::BlueGreen => crate::Strategy::BlueGreen,
            w::Strategy::AbTesting => crate::Strategy::AbTesting,
        },
        analysis: crate::Analysis {
            interval_seconds: a.interval_seconds,
            threshold: a.threshold,
            max_weight: a.max_weight,
            step_weight: a.step_weight,
            step_weights: a.step_weights,
            step_weight_promotion: a.step_weight_promotion,
            iterations: a.iterations,
            match_rules: rules_from(a.match_rules),
            mirror: a.mirror,
            mirror_weight: a.mirror_weight,
        },
        state: crate::State {
            phase: match s.phase {
                w::Phase::Initializing => crate::Phase::Initializing,
                w::Phase::Initialized => crate::Phase::Initialized,
                w::Phase::Waiting => crate::Phase::Waiting,
                w::Phase::Progressing => crate::Phase::Progressing,
                w::Phase::WaitingPromotion => crate::Phase::WaitingPromotion,
                w::Phase::Promoting => crate::Phase::Promoting,
                w::Phase::Finalising => crate::Phase::Finalising,
                w::Phase::Succeeded => crate::Phase::Succeeded,
                w::Phase::Failed => crate::Phase::Failed,
                w::Phase::Terminating => crate::Phase::Terminating,
                w::Phase::Terminated => crate::Phase::Terminated,
            },
            canary_weight: s.canary_weight,
            primary_weight: s.primary_weight,
            iteration: s.iteration,
            failed_checks: s.failed_checks,
            seconds_in_phase: s.seconds_in_phase,
        },
        metrics: i
            .metrics
            .into_iter()
            .map(|m| crate::MetricResult {
                name: m.name,
                value: match m.value {
                    Ok(v) => crate::MetricValue::Value(v),
                    Err(e) => crate::MetricValue::Error(e),
                },
                min: m.min,
                max: m.max,
                unit: match m.unit {
                    w::MetricUnit::Percent => crate::MetricUnit::Percent,
                    w::MetricUnit::Milliseconds => crate::MetricUnit::Milliseconds,
                    w::MetricUnit::None => crate::MetricUnit::None,
                },
            })
            .collect(),
        webhooks: i
            .webhooks
            .into_iter()
            .map(|h| crate::WebhookResult {
                name: h.name,
                kind: match h.kind {
                    w::WebhookKind::ConfirmRollout => crate::WebhookKind::ConfirmRollout,
                    w::WebhookKind::PreRollout => crate::WebhookKind::PreRollout,
                    w::WebhookKind::Rollout => crate::WebhookKind::Rollout,
                    w::WebhookKind::ConfirmTrafficIncrease => {
                        crate::WebhookKind::ConfirmTrafficIncrease
                    }
                    w::WebhookKind::ConfirmPromotion => crate::WebhookKind::ConfirmPromotion,
                    w::WebhookKind::PostRollout => crate::WebhookKind::PostRollout,
                    w::WebhookKind::Rollback => crate::WebhookKind::Rollback,
                    w::WebhookKind::Event => crate::WebhookKind::Event,
                },
                passed: h.passed,
                message: h.message,
            })
            .collect(),
        canary_ready: readiness(i.canary_ready),
        primary_ready: readiness(i.primary_ready),
    }
}

fn to_wit(d: crate::Decision) -> w::Decision {
    match d {
        crate::Decision::Advance(a) => w::Decision::Advance(w::Advance {
            route: w::RoutePlan {
                primary_weight: a.route.primary_weight,
                canary_weight: a.route.canary_weight,
                match_rules: rules_to(a.route.match_rules),
            },
            iteration: a.iteration,
        }),
        crate::Decision::Hold(h) => w::Decision::Hold(w::Hold {
            reason: h.reason,
            failed_check: h.failed_check,
        }),
        crate::Decision::Promote => w::Decision::Promote,
        crate::Decision::Rollback(r) => w::Decision::Rollback(r),
        crate::Decision::Wait(r) => w::Decision::Wait(r),
    }
}
