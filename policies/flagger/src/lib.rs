//! The built-in rollout policy: the judgements of Flagger's canary analysis.
//!
//! - weighted canary: `stepWeight` increments (or the `stepWeights` list) up to
//!   the maximum weight, then promotion — never above the maximum (Flagger
//!   overshoots `maxWeight` when it is not a multiple of `stepWeight`; this does not);
//! - A/B testing: `iterations` steps with every request matching `match` on the canary;
//! - blue/green: `iterations` steps at 0 %, then all traffic to the canary, then promotion;
//! - promotion: all traffic back to the primary at once, or `stepWeightPromotion` at a time
//!   (for an A/B test, of the requests its match rules select);
//! - checks: webhooks first, then metrics in the order the host queried them
//!   (built-in and inline-query metrics before templates), both bounds of
//!   `thresholdRange` inclusive, a value that is not a finite number failing;
//!   the first failure holds the step and counts one failed check;
//! - rollback when failed checks reach `threshold`, when a rollback webhook says so,
//!   or when a Deployment misses its progress deadline.
#![forbid(unsafe_code)]

use fledge_policy::format::threshold_violation;
use fledge_policy::{
    Advance, Decision, MetricValue, Phase, PolicyInput, Readiness, RoutePlan, Strategy, WebhookKind,
};

#[cfg(feature = "component")]
fledge_policy::export_policy!(decide);

/// Judges one analysis step.
pub fn decide(input: &PolicyInput) -> Decision {
    let state = &input.state;
    let analysis = &input.analysis;

    // The primary carries the traffic: its health comes first.
    match &input.primary_ready {
        Readiness::Ready => {}
        Readiness::NotReady(why) => return Decision::Wait(why.clone()),
        Readiness::DeadlineExceeded(why) => {
            return Decision::Rollback(format!("progress deadline exceeded {why}"))
        }
    }
    match &input.canary_ready {
        Readiness::Ready => {}
        Readiness::NotReady(why) => return Decision::Wait(why.clone()),
        Readiness::DeadlineExceeded(why) => {
            return Decision::Rollback(format!("progress deadline exceeded {why}"))
        }
    }
    if state.phase == Phase::Promoting {
        return promotion_step(input);
    }

    if input
        .webhooks
        .iter()
        .any(|h| h.kind == WebhookKind::Rollback && h.passed)
    {
        return Decision::Rollback("manual webhook invoked".to_string());
    }
    if state.failed_checks >= analysis.threshold.max(1) {
        return Decision::Rollback(format!(
            "failed checks threshold reached {}",
            state.failed_checks
        ));
    }
    if let Some(reason) = failed_check(input) {
        return Decision::failed_check(reason);
    }

    match input.strategy {
        Strategy::Canary => canary_step(input),
        Strategy::AbTesting => {
            let iterations = analysis.iterations.unwrap_or(0);
            if state.iteration < iterations {
                Decision::Advance(Advance {
                    route: RoutePlan {
                        primary_weight: 0,
                        canary_weight: 100,
                        match_rules: analysis.match_rules.clone(),
                    },
                    iteration: state.iteration + 1,
                })
            } else {
                Decision::Promote
            }
        }
        Strategy::BlueGreen => {
            let iterations = analysis.iterations.unwrap_or(0);
            if state.iteration < iterations {
                Decision::Advance(Advance {
                    route: RoutePlan::weighted(0),
                    iteration: state.iteration + 1,
                })
            } else if state.iteration == iterations {
                // Analysis done on the canary service alone: now all traffic to it.
                Decision::Advance(Advance {
                    route: RoutePlan::weighted(100),
                    iteration: state.iteration + 1,
                })
            } else {
                Decision::Promote
            }
        }
    }
}

/// The first failing check of this step, as the reason text of its hold.
fn failed_check(input: &PolicyInput) -> Option<String> {
    let first_step = input.state.canary_weight == 0 && input.state.iteration == 0;
    for hook in &input.webhooks {
        if hook.passed {
            continue;
        }
        match hook.kind {
            WebhookKind::PreRollout if first_step => {
                return Some(format!(
                    "pre-rollout check {} failed {}",
                    hook.name, hook.message
                ))
            }
            WebhookKind::Rollout => {
                return Some(format!(
                    "external check {} failed {}",
                    hook.name, hook.message
                ))
            }
            _ => {}
        }
    }
    // In the order the host queried them: built-in and inline-query metrics
    // first, then templates, as Flagger checks them.
    for metric in &input.metrics {
        match &metric.value {
            MetricValue::Error(why) => return Some(why.clone()),
            MetricValue::Value(v) => {
                if let Some(reason) =
                    threshold_violation(&metric.name, metric.unit, *v, metric.min, metric.max)
                {
                    return Some(reason);
                }
            }
        }
    }
    None
}

/// The next weight of a weighted canary, or promotion once the maximum is reached.
fn canary_step(input: &PolicyInput) -> Decision {
    let analysis = &input.analysis;
    let current = input.state.canary_weight;
    let max = analysis.effective_max_weight();
    if current >= max {
        return Decision::Promote;
    }
    let next = match analysis.step_weight {
        Some(step) if step > 0 => current.saturating_add(step),
        _ => match analysis.step_weights.iter().find(|w| **w > current) {
            Some(w) => *w,
            None if analysis.step_weights.is_empty() => {
                return Decision::halt("no stepWeight or stepWeights to advance by")
            }
            None => max,
        },
    };
    Decision::Advance(Advance {
        route: RoutePlan::weighted(next.min(max)),
        iteration: input.state.iteration,
    })
}

/// During promotion: all traffic back to the primary, at once or
/// `stepWeightPromotion` percent per step. An A/B test shifts only the
/// requests its match rules select: everyone else stays on the primary.
fn promotion_step(input: &PolicyInput) -> Decision {
    let state = &input.state;
    let mut route = match input.analysis.step_weight_promotion {
        Some(step) if step > 0 && state.canary_weight > 0 => {
            let primary = state.primary_weight.saturating_add(step).min(100);
            RoutePlan::weighted(100 - primary)
        }
        _ => RoutePlan::weighted(0),
    };
    if input.strategy == Strategy::AbTesting && route.canary_weight > 0 {
        route.match_rules = input.analysis.match_rules.clone();
    }
    Decision::Advance(Advance {
        route,
        iteration: state.iteration,
    })
}

#[cfg(test)]
mod tests;
