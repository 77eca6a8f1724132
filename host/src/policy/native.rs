//! The built-in policy called natively: the same judgement as the embedded
//! component, without the sandbox. For tests and benchmarks of the core.
use super::validate::validate_decision;
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
        let input = PolicyInput {
            canary: "podinfo.test".into(),
            strategy: Strategy::Canary,
            analysis: Analysis {
                threshold: 5,
                max_weight: Some(50),
                step_weight: Some(5),
                ..Analysis::default()
            },
            state: State {
                phase: Phase::Progressing,
                canary_weight: 45,
                primary_weight: 55,
                iteration: 0,
                failed_checks: 0,
                seconds_in_phase: 0,
            },
            metrics: vec![],
            webhooks: vec![],
            canary_ready: Readiness::Ready,
            primary_ready: Readiness::Ready,
        };
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
