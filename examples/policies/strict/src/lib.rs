//! A stricter rollout policy: the built-in judgement, except that the first
//! failed check rolls the canary back instead of counting toward `threshold`.
//!
//! Build it and use it:
//!
//! ```sh
//! fledge policy build examples/policies/strict -o strict.wasm
//! fledge simulate --policy strict.wasm --canary examples/podinfo/canary.yaml \
//!     --scenario examples/scenarios/rollback.yaml
//! ```
use fledge_policy::{Decision, PolicyInput};

pub fn decide(input: &PolicyInput) -> Decision {
    match fledge_policy_flagger::decide(input) {
        Decision::Hold(hold) if hold.failed_check => {
            Decision::Rollback(format!("strict policy: {}", hold.reason))
        }
        decision => decision,
    }
}

fledge_policy::export_policy!(decide);

#[cfg(test)]
mod tests {
    use super::decide;
    use fledge_policy::testing::{guide_input, success_rate};
    use fledge_policy::{Decision, PolicyInput};

    #[test]
    fn the_first_failed_check_rolls_back() {
        let input = PolicyInput {
            metrics: vec![success_rate(69.17)],
            ..guide_input()
        };
        let mut input = input;
        input.state.canary_weight = 15;
        assert_eq!(
            decide(&input),
            Decision::Rollback("strict policy: success rate 69.17% < 99%".into())
        );
        input.metrics = vec![success_rate(99.9)];
        assert!(matches!(decide(&input), Decision::Advance(_)));
    }
}
