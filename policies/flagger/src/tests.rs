use super::decide;
use fledge_policy::testing::{duration, guide_input, success_rate};
use fledge_policy::*;

/// Applies `decide` until promotion, returning the weights it stepped through.
fn walk(mut input: PolicyInput) -> (Vec<u32>, Decision) {
    let mut weights = vec![];
    for _ in 0..200 {
        match decide(&input) {
            Decision::Advance(a) => {
                weights.push(a.route.canary_weight);
                input.state.canary_weight = a.route.canary_weight;
                input.state.primary_weight = a.route.primary_weight;
                input.state.iteration = a.iteration;
            }
            other => return (weights, other),
        }
    }
    panic!("no promotion after 200 steps");
}

#[test]
fn guide_canary_steps_by_five_to_fifty_then_promotes() {
    let mut input = guide_input();
    input.metrics = vec![success_rate(99.9), duration(120.0)];
    let (weights, end) = walk(input);
    assert_eq!(weights, (1..=10).map(|i| i * 5).collect::<Vec<_>>());
    assert_eq!(end, Decision::Promote);
}

#[test]
fn weights_never_overshoot_max_weight() {
    let mut input = guide_input();
    input.analysis.step_weight = Some(20);
    let (weights, end) = walk(input);
    assert_eq!(weights, vec![20, 40, 50]);
    assert_eq!(end, Decision::Promote);
}

#[test]
fn step_weights_list_is_followed_and_its_last_entry_is_the_maximum() {
    let mut input = guide_input();
    input.analysis.step_weight = None;
    input.analysis.max_weight = None;
    input.analysis.step_weights = vec![1, 2, 10, 80];
    let (weights, end) = walk(input);
    assert_eq!(weights, vec![1, 2, 10, 80]);
    assert_eq!(end, Decision::Promote);
}

#[test]
fn failing_success_rate_holds_with_the_reason_and_counts_a_check() {
    let mut input = guide_input();
    input.state.canary_weight = 15;
    input.metrics = vec![success_rate(69.17), duration(1200.0)];
    assert_eq!(
        decide(&input),
        Decision::failed_check("success rate 69.17% < 99%")
    );
    input.metrics = vec![success_rate(100.0), duration(1450.0)];
    assert_eq!(
        decide(&input),
        Decision::failed_check("request duration 1.45s > 0.5s")
    );
}

#[test]
fn metrics_are_judged_in_the_order_the_host_queried_them() {
    // The host queries built-in and inline metrics before templates and
    // passes them in that order; the first failure is the reason.
    let mut input = guide_input();
    input.state.canary_weight = 5;
    input.metrics = vec![
        duration(900.0),
        MetricResult {
            name: "error-budget".into(),
            value: MetricValue::Value(9.0),
            min: None,
            max: Some(1.0),
            unit: MetricUnit::None,
        },
    ];
    assert_eq!(
        decide(&input),
        Decision::failed_check("request duration 0.90s > 0.5s")
    );
    input.metrics.reverse();
    assert_eq!(
        decide(&input),
        Decision::failed_check("error-budget 9.00 > 1")
    );
}

#[test]
fn a_metric_error_is_a_failed_check_never_a_pass() {
    let mut input = guide_input();
    input.state.canary_weight = 50;
    input.metrics = vec![MetricResult {
        value: MetricValue::Error("Prometheus query failed: connection refused".into()),
        ..success_rate(0.0)
    }];
    assert_eq!(
        decide(&input),
        Decision::failed_check("Prometheus query failed: connection refused")
    );
}

#[test]
fn fifth_failed_check_rolls_back() {
    let mut input = guide_input();
    input.state.canary_weight = 15;
    input.state.failed_checks = 4;
    input.metrics = vec![success_rate(100.0)];
    assert!(matches!(decide(&input), Decision::Advance(_)));
    input.state.failed_checks = 5;
    assert_eq!(
        decide(&input),
        Decision::Rollback("failed checks threshold reached 5".into())
    );
}

#[test]
fn webhooks_fail_checks_by_their_kind() {
    let mut input = guide_input();
    input.webhooks = vec![WebhookResult {
        name: "acceptance-test".into(),
        kind: WebhookKind::PreRollout,
        passed: false,
        message: "exit status 1".into(),
    }];
    assert_eq!(
        decide(&input),
        Decision::failed_check("pre-rollout check acceptance-test failed exit status 1")
    );
    input.webhooks[0].kind = WebhookKind::Rollout;
    input.webhooks[0].name = "load-test".into();
    assert_eq!(
        decide(&input),
        Decision::failed_check("external check load-test failed exit status 1")
    );
    input.webhooks[0].kind = WebhookKind::Rollback;
    input.webhooks[0].passed = true;
    assert_eq!(
        decide(&input),
        Decision::Rollback("manual webhook invoked".into())
    );
}

#[test]
fn ab_test_runs_its_iterations_on_matching_requests_then_promotes() {
    let mut input = guide_input();
    input.strategy = Strategy::AbTesting;
    input.analysis.max_weight = None;
    input.analysis.step_weight = None;
    input.analysis.iterations = Some(10);
    input.analysis.match_rules = vec![MatchRule {
        headers: vec![HeaderMatch {
            name: "x-canary".into(),
            matcher: StringMatch::Exact("insider".into()),
        }],
    }];
    let mut iterations = vec![];
    for _ in 0..10 {
        match decide(&input) {
            Decision::Advance(a) => {
                assert_eq!(a.route.canary_weight, 100);
                assert_eq!(a.route.match_rules, input.analysis.match_rules);
                iterations.push(a.iteration);
                input.state.iteration = a.iteration;
                input.state.canary_weight = 100;
                input.state.primary_weight = 0;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(iterations, (1..=10).collect::<Vec<_>>());
    assert_eq!(decide(&input), Decision::Promote);
}

#[test]
fn blue_green_routes_all_traffic_to_the_canary_after_its_iterations() {
    let mut input = guide_input();
    input.strategy = Strategy::BlueGreen;
    input.analysis.iterations = Some(2);
    let (weights, end) = walk(input);
    assert_eq!(weights, vec![0, 0, 100]);
    assert_eq!(end, Decision::Promote);
}

#[test]
fn promotion_returns_traffic_at_once_or_by_step_weight_promotion() {
    let mut input = guide_input();
    input.state.phase = Phase::Promoting;
    input.state.canary_weight = 50;
    input.state.primary_weight = 50;
    let Decision::Advance(a) = decide(&input) else {
        panic!()
    };
    assert_eq!((a.route.primary_weight, a.route.canary_weight), (100, 0));
    input.analysis.step_weight_promotion = Some(20);
    let Decision::Advance(a) = decide(&input) else {
        panic!()
    };
    assert_eq!((a.route.primary_weight, a.route.canary_weight), (70, 30));
}

#[test]
fn readiness_waits_and_a_missed_deadline_rolls_back() {
    let mut input = guide_input();
    input.canary_ready = Readiness::NotReady("Waiting for podinfo.test rollout to finish".into());
    assert_eq!(
        decide(&input),
        Decision::Wait("Waiting for podinfo.test rollout to finish".into())
    );
    input.canary_ready =
        Readiness::DeadlineExceeded("deployment \"podinfo\" exceeded its progress deadline".into());
    assert!(
        matches!(decide(&input), Decision::Rollback(r) if r.starts_with("progress deadline exceeded"))
    );
}
