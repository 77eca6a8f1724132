//! The built-in policy called natively: the same judgement as the embedded
//! component, without the sandbox. For tests and benchmarks of the core.
use crate::core::validate::validate_decision;
use crate::core::{Judge, JudgeError};
use fledge_policy::{Context, Decision, PolicyInput};

/// [`fledge_policy_flagger::decide`] plus [`validate_decision`], as a
/// [`Judge`]; reasons are cleaned as the Wasm runtime cleans them.
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeJudge;

impl Judge for NativeJudge {
    fn decide(&self, input: &PolicyInput, _: &Context) -> Result<Decision, JudgeError> {
        let mut decision = fledge_policy_flagger::decide(input);
        validate_decision(input, &decision).map_err(|e| {
            JudgeError(format!(
                "the built-in policy returned an invalid decision: {e}"
            ))
        })?;
        super::clean_reasons(&mut decision);
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
        let decision = NativeJudge.decide(&input, &Context::default()).unwrap();
        assert_eq!(
            decision,
            Decision::Advance(Advance {
                route: RoutePlan::weighted(50),
                iteration: 0
            })
        );
    }

    #[test]
    fn native_judge_cleans_reasons_built_from_canary_text() {
        // A metric name from the Canary ends up in the built-in's reason.
        let mut input = testing::guide_input();
        input.state.canary_weight = 10;
        input.state.primary_weight = 90;
        input.metrics = vec![MetricResult {
            name: "errors\u{1b}[2J\nforged".into(),
            value: MetricValue::Value(5.0),
            min: None,
            max: Some(1.0),
            unit: MetricUnit::None,
        }];
        let Decision::Hold(hold) = NativeJudge.decide(&input, &Context::default()).unwrap() else {
            panic!("expected a hold");
        };
        assert_eq!(hold.reason, "errors\\u{1b}[2J forged 5.00 > 1");
    }
}
