//! A stricter rollout policy: the built-in judgement, except that a failed
//! check rolls the canary back at once instead of counting toward the
//! Canary's `analysis.threshold`.
//!
//! `spec.config` of its RolloutPolicy:
//!
//! - `max-failed-checks` (default `0`): failed checks tolerated before the
//!   next one rolls back; below the Canary's threshold it makes the policy
//!   stricter than the built-in, at or above it the two judge alike.
//!
//! See README.md beside this file for building, testing, replaying a
//! decision journal and shipping it.
use fledge_policy::{Context, Decision, PolicyInput};

/// The `spec.config` key of the failed checks tolerated.
pub const MAX_FAILED_CHECKS: &str = "max-failed-checks";

pub fn decide(input: &PolicyInput, ctx: &Context) -> Decision {
    let tolerated = match max_failed_checks(ctx) {
        Ok(n) => n,
        // A policy that cannot read its config must not let a canary
        // through: a failed check, so the Canary's threshold still ends it.
        Err(why) => return Decision::failed_check(why),
    };
    match fledge_policy_flagger::decide(input) {
        Decision::Hold(hold) if hold.failed_check && input.state.failed_checks >= tolerated => {
            Decision::Rollback(format!("strict policy: {}", hold.reason))
        }
        decision => decision,
    }
}

/// `spec.config.max-failed-checks`, 0 when unset.
fn max_failed_checks(ctx: &Context) -> Result<u32, String> {
    match ctx.config(MAX_FAILED_CHECKS) {
        None => Ok(0),
        Some(text) => text.trim().parse().map_err(|_| {
            format!(
                "spec.config.{MAX_FAILED_CHECKS}: `{text}` is not a whole number; give the \
                 failed checks to tolerate before rolling back, e.g. \"1\" (default 0)"
            )
        }),
    }
}

// `with_context`: `decide` gets the step's time and `spec.config`.
fledge_policy::export_policy!(decide, with_context);

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_policy::testing::{duration, guide_input, success_rate, webhook};
    use fledge_policy::{Advance, RoutePlan, WebhookKind};

    /// The guide's Canary at 15 % with these metrics and `failed` failed checks so far.
    fn at_15(metrics: Vec<fledge_policy::MetricResult>, failed: u32) -> PolicyInput {
        let mut input = PolicyInput {
            metrics,
            ..guide_input()
        };
        input.state.canary_weight = 15;
        input.state.primary_weight = 85;
        input.state.failed_checks = failed;
        input
    }

    #[test]
    fn the_first_failed_check_rolls_back() {
        let input = at_15(vec![success_rate(69.17), duration(120.0)], 0);
        assert_eq!(
            decide(&input, &Context::at(0)),
            Decision::Rollback("strict policy: success rate 69.17% < 99%".into())
        );
        // The built-in only holds here.
        assert_eq!(
            fledge_policy_flagger::decide(&input),
            Decision::failed_check("success rate 69.17% < 99%")
        );
    }

    #[test]
    fn passing_checks_advance_as_the_builtin_does() {
        let input = at_15(vec![success_rate(99.9), duration(120.0)], 0);
        assert_eq!(
            decide(&input, &Context::at(0)),
            Decision::Advance(Advance {
                route: RoutePlan::weighted(20),
                iteration: 0
            })
        );
        let mut top = at_15(vec![success_rate(99.9)], 0);
        top.state.canary_weight = 50;
        assert_eq!(decide(&top, &Context::at(0)), Decision::Promote);
    }

    #[test]
    fn a_failed_webhook_is_a_failed_check_too() {
        let mut input = at_15(vec![success_rate(99.9)], 0);
        input.webhooks = vec![webhook("load-test", WebhookKind::Rollout, false)];
        assert!(matches!(
            decide(&input, &Context::at(0)),
            Decision::Rollback(why) if why.contains("external check load-test failed")
        ));
    }

    #[test]
    fn max_failed_checks_tolerates_that_many_first() {
        let ctx = Context::at(0).with_config(MAX_FAILED_CHECKS, "2");
        for failed in [0, 1] {
            let input = at_15(vec![success_rate(50.0)], failed);
            assert_eq!(
                decide(&input, &ctx),
                Decision::failed_check("success rate 50.00% < 99%"),
                "{failed} failed so far"
            );
        }
        let third = at_15(vec![success_rate(50.0)], 2);
        assert!(matches!(decide(&third, &ctx), Decision::Rollback(_)));
    }

    #[test]
    fn a_config_it_cannot_read_is_a_failed_check() {
        let input = at_15(vec![success_rate(99.9)], 0);
        let ctx = Context::at(0).with_config(MAX_FAILED_CHECKS, "many");
        match decide(&input, &ctx) {
            Decision::Hold(h) => {
                assert!(h.failed_check);
                assert!(
                    h.reason.contains("spec.config.max-failed-checks: `many`"),
                    "{}",
                    h.reason
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
