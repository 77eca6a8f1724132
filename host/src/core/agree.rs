//! When two policies' decisions for the same step count as the same.
use fledge_policy::Decision;

/// True when `a` and `b` would have the same effect on a rollout: the same
/// kind of decision, the same route plan and iteration (advance), and the
/// same `failed_check` (hold). Reasons are ignored: two policies that agree
/// need not say it in the same words.
pub fn agree(a: &Decision, b: &Decision) -> bool {
    match (a, b) {
        (Decision::Advance(x), Decision::Advance(y)) => x == y,
        (Decision::Hold(x), Decision::Hold(y)) => x.failed_check == y.failed_check,
        (Decision::Promote, Decision::Promote)
        | (Decision::Rollback(_), Decision::Rollback(_))
        | (Decision::Wait(_), Decision::Wait(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_policy::{Advance, RoutePlan};

    fn advance(canary: u32, iteration: u32) -> Decision {
        Decision::Advance(Advance {
            route: RoutePlan::weighted(canary),
            iteration,
        })
    }

    #[test]
    fn same_effect_agrees_whatever_the_reasons() {
        assert!(agree(&advance(20, 1), &advance(20, 1)));
        assert!(agree(&Decision::halt("a"), &Decision::halt("b")));
        assert!(agree(
            &Decision::failed_check("a"),
            &Decision::failed_check("b")
        ));
        assert!(agree(
            &Decision::Rollback("a".into()),
            &Decision::Rollback("b".into())
        ));
        assert!(agree(
            &Decision::Wait("a".into()),
            &Decision::Wait("b".into())
        ));
        assert!(agree(&Decision::Promote, &Decision::Promote));
    }

    #[test]
    fn another_effect_disagrees() {
        assert!(!agree(&advance(20, 1), &advance(30, 1)));
        assert!(!agree(&advance(20, 1), &advance(20, 2)));
        let mut header = advance(20, 1);
        if let Decision::Advance(a) = &mut header {
            a.route.match_rules.push(Default::default());
        }
        assert!(!agree(&advance(20, 1), &header));
        assert!(!agree(&Decision::halt("x"), &Decision::failed_check("x")));
        assert!(!agree(&Decision::Promote, &advance(100, 1)));
        assert!(!agree(
            &Decision::Rollback("x".into()),
            &Decision::failed_check("x")
        ));
        assert!(!agree(&Decision::Wait("x".into()), &Decision::halt("x")));
    }
}
