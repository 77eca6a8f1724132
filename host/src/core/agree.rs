//! When two decisions for the same step are the same judgement: what
//! `fledge policy replay` reports as a difference, and what a shadow policy
//! is compared on.
use fledge_policy::Decision;

/// True when `a` and `b` would drive the canary the same way: the same kind
/// of decision and, for an advance, the same route plan (weights and match
/// rules) and iteration, for a hold, the same `failed_check`. Reasons are
/// words for people and are not compared: two rollbacks agree whatever they
/// say, and so do two waits.
///
/// A policy error is not a decision: the core turns it into a failed check
/// (see [`effective`]), so compare that.
pub fn agree(a: &Decision, b: &Decision) -> bool {
    match (a, b) {
        (Decision::Advance(x), Decision::Advance(y)) => {
            x.route == y.route && x.iteration == y.iteration
        }
        (Decision::Hold(x), Decision::Hold(y)) => x.failed_check == y.failed_check,
        (Decision::Promote, Decision::Promote)
        | (Decision::Rollback(_), Decision::Rollback(_))
        | (Decision::Wait(_), Decision::Wait(_)) => true,
        _ => false,
    }
}

/// What the core does with a policy's answer: its decision, or for an error
/// (trap, timeout, invalid decision, ...) a hold that counts as a failed check.
pub fn effective(result: Result<&Decision, &str>) -> Decision {
    match result {
        Ok(d) => d.clone(),
        Err(why) => Decision::failed_check(super::messages::policy_failed(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_policy::{Advance, HeaderMatch, MatchRule, RoutePlan, StringMatch};

    fn advance(canary: u32, iteration: u32) -> Decision {
        Decision::Advance(Advance {
            route: RoutePlan::weighted(canary),
            iteration,
        })
    }

    #[test]
    fn the_same_judgement_agrees_whatever_its_words() {
        assert!(agree(&advance(10, 0), &advance(10, 0)));
        assert!(agree(
            &Decision::failed_check("success rate 69.17% < 99%"),
            &Decision::failed_check("p99 too high")
        ));
        assert!(agree(&Decision::halt("a"), &Decision::halt("b")));
        assert!(agree(
            &Decision::Rollback("x".into()),
            &Decision::Rollback("y".into())
        ));
        assert!(agree(
            &Decision::Wait("x".into()),
            &Decision::Wait("y".into())
        ));
        assert!(agree(&Decision::Promote, &Decision::Promote));
    }

    #[test]
    fn kind_route_iteration_and_failed_check_differ() {
        assert!(!agree(&advance(10, 0), &advance(15, 0)));
        assert!(!agree(&advance(10, 0), &advance(10, 1)));
        let mut with_rules = RoutePlan::weighted(10);
        with_rules.match_rules = vec![MatchRule {
            headers: vec![HeaderMatch {
                name: "x-canary".into(),
                matcher: StringMatch::Exact("insider".into()),
            }],
        }];
        assert!(!agree(
            &advance(10, 0),
            &Decision::Advance(Advance {
                route: with_rules,
                iteration: 0
            })
        ));
        assert!(!agree(&Decision::failed_check("x"), &Decision::halt("x")));
        assert!(!agree(
            &Decision::failed_check("x"),
            &Decision::Rollback("x".into())
        ));
        assert!(!agree(&Decision::Promote, &advance(50, 0)));
        assert!(!agree(&Decision::Wait("x".into()), &Decision::halt("x")));
    }

    #[test]
    fn an_error_is_the_failed_check_the_core_makes_of_it() {
        let e = effective(Err("deadline exceeded"));
        assert!(
            matches!(&e, Decision::Hold(h) if h.failed_check && h.reason.contains("deadline exceeded"))
        );
        assert!(agree(&e, &Decision::failed_check("success rate 50% < 99%")));
        assert!(!agree(&e, &Decision::Rollback("x".into())));
        assert_eq!(effective(Ok(&Decision::Promote)), Decision::Promote);
    }
}
