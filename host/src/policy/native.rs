//! The built-in policy called natively: the same judgement as the embedded
//! component, without the sandbox. For tests and benchmarks of the core.
use crate::core::validate::validate_decision;
use crate::core::{Judge, JudgeError};
use fledge_policy::{Decision, PolicyInput};

/// [`fledge_policy_flagger::decide`] plus [`validate_decision`], as a [`Judge`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeJudge;

impl Judge for NativeJudge {
    fn decide(&self, input: &PolicyInput) -> Result<Decision, JudgeError> {
        let decision = fledge_policy_flagger::decide(input);
        validate_decision(input, &decision).map_err(|e| {
            JudgeError(format!(
                "the built-in policy returned an invalid decision: {e}"
            ))
        })?;
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_policy::*;

    #[test]
    fn native_judge_validates_the_builtin_decision() {
        let mut input = testing::guide_input();
        input.state.canary_weight = 45;
        input.state.primary_weight = 55;
        let decision = NativeJudge.decide(&input).unwrap();
        assert_eq!(
            decision,
            Decision::Advance(Advance {
                route: RoutePlan::weighted(50),
                iteration: 0
            })
        );
    }
}
