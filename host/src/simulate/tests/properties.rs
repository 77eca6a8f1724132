//! For any scenario: the canary weight never exceeds the maximum, nothing is
//! promoted once failed checks reach the threshold, and every run ends
//! Succeeded or Failed within a bound.
use super::*;
use proptest::prelude::*;

fn reading() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0u32..=10_000).prop_map(|v| format!("{}", f64::from(v) / 100.0)),
        1 => Just("error".to_string()),
    ]
}

fn answer() -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => Just("pass"), 1 => Just("fail")]
}

prop_compose! {
    fn case()(
        step in 1u32..=60,
        max in 1u32..=100,
        threshold in 1u32..=6,
        success in prop::collection::vec(reading(), 1..12),
        duration in prop::collection::vec(reading(), 1..12),
        acceptance in prop::collection::vec(answer(), 1..4),
        load in prop::collection::vec(answer(), 1..6),
        canary_ready_after in 0u32..3,
        primary_ready_after in 0u32..3,
    ) -> (String, String, u32, u32) {
        let canary = with_analysis(&format!(
            "    interval: 1m\n    threshold: {threshold}\n    maxWeight: {max}\n    stepWeight: {step}\n    metrics:\n    - name: request-success-rate\n      thresholdRange: {{min: 99}}\n    - name: request-duration\n      thresholdRange: {{max: 500}}\n    webhooks:\n    - name: acceptance-test\n      type: pre-rollout\n      url: http://t/\n    - name: load-test\n      url: http://t/\n"
        ));
        let scenario = format!(
            "trigger: {{image: podinfo:2}}\nrollout: {{canaryReadyAfter: {canary_ready_after}, primaryReadyAfter: {primary_ready_after}}}\nwebhooks:\n  acceptance-test: [{}]\n  load-test: [{}]\nmetrics:\n  request-success-rate: [{}]\n  request-duration: [{}]\nmaxSteps: 400\n",
            acceptance.join(", "), load.join(", "), success.join(", "), duration.join(", ")
        );
        (canary, scenario, max, threshold)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn rollouts_stay_within_their_bounds((canary, scenario, max, threshold) in case()) {
        let report = simulate(&canary, &scenario);
        prop_assert!(report.finished, "did not finish: {:?}", report.phase);
        prop_assert!(matches!(report.phase, Phase::Succeeded | Phase::Failed));
        // Steps needed at most: start, readiness waits, one per weight, one per
        // failed check, promotion with its waits, finalising.
        let bound = 8 + 100 + threshold * 2 + 6;
        prop_assert!(report.steps <= bound, "{} steps", report.steps);
        for s in &report.samples {
            prop_assert!(s.canary_weight <= max, "weight {} above {}", s.canary_weight, max);
        }
        for r in &report.records {
            prop_assert!(r.canary_weight <= max);
            if r.msg.starts_with("Copying") {
                prop_assert!(r.failed_checks < threshold, "promoted with {} failed checks", r.failed_checks);
            }
        }
    }
}
