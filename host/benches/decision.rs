//! One rollout decision on a realistic step (5 metrics, 3 webhooks): the
//! built-in policy in a fresh sandboxed instance (as the operator runs it,
//! with a deadline, and as the simulator does, counting fuel), against the
//! same function called natively; and how long the simulator's default fuel
//! budget lasts in an endless loop.
//!
//! Run with `cargo bench -p fledge --bench decision`.
use criterion::{criterion_group, criterion_main, Criterion};
use fledge::core::Judge;
use fledge::policy::{NativeJudge, PolicyError, PolicyRuntime, RuntimeConfig, DEFAULT_FUEL};
use fledge_policy::*;
use std::hint::black_box;

fn metric(
    name: &str,
    value: f64,
    min: Option<f64>,
    max: Option<f64>,
    unit: MetricUnit,
) -> MetricResult {
    MetricResult {
        name: name.into(),
        value: MetricValue::Value(value),
        min,
        max,
        unit,
    }
}

/// Mid-analysis, every check passing, so the policy judges all of them.
fn realistic_input() -> PolicyInput {
    PolicyInput {
        state: State {
            canary_weight: 20,
            primary_weight: 80,
            failed_checks: 1,
            seconds_in_phase: 240,
            ..testing::guide_input().state
        },
        metrics: vec![
            testing::success_rate(99.7),
            testing::duration(212.0),
            metric("error-budget-burn", 0.4, None, Some(1.0), MetricUnit::None),
            metric(
                "p99-latency",
                380.0,
                None,
                Some(900.0),
                MetricUnit::Milliseconds,
            ),
            metric(
                "cpu-saturation",
                61.5,
                None,
                Some(85.0),
                MetricUnit::Percent,
            ),
        ],
        webhooks: vec![
            testing::webhook("acceptance-test", WebhookKind::PreRollout, true),
            testing::webhook("load-test", WebhookKind::Rollout, true),
            testing::webhook("promotion-gate", WebhookKind::ConfirmPromotion, true),
        ],
        ..testing::guide_input()
    }
}

fn decision(c: &mut Criterion) {
    let runtime = PolicyRuntime::new(RuntimeConfig::default()).expect("policy runtime");
    let policy = runtime.builtin().expect("built-in policy");
    let input = realistic_input();
    let expected = Decision::Advance(Advance {
        route: RoutePlan::weighted(25),
        iteration: 0,
    });
    // Measure the right thing: both paths must reach the same decision.
    assert_eq!(policy.evaluate(&input), Ok(expected.clone()));
    assert_eq!(fledge_policy_flagger::decide(&input), expected);

    let fuel_runtime =
        PolicyRuntime::new(RuntimeConfig::deterministic(DEFAULT_FUEL)).expect("fuel runtime");
    let fuel_policy = fuel_runtime.builtin().expect("built-in policy");
    assert_eq!(fuel_policy.evaluate(&input), Ok(expected.clone()));

    let mut group = c.benchmark_group("decision");
    group.bench_function("wasm (fresh instance, validated)", |b| {
        b.iter(|| policy.evaluate(black_box(&input)))
    });
    group.bench_function("wasm with fuel (fresh instance, validated)", |b| {
        b.iter(|| fuel_policy.evaluate(black_box(&input)))
    });
    group.bench_function("native", |b| {
        b.iter(|| fledge_policy_flagger::decide(black_box(&input)))
    });
    group.bench_function("native (validated)", |b| {
        b.iter(|| NativeJudge.decide(black_box(&input), &fledge_policy::Context::default()))
    });
    group.finish();

    let looping = std::path::Path::new(env!("FLEDGE_FIXTURE_DIR")).join("endless-loop.wasm");
    let looping = fuel_runtime
        .load(&std::fs::read(looping).expect("fixture built by host/build.rs"))
        .expect("fixture loads");
    assert_eq!(
        looping.evaluate(&input),
        Err(PolicyError::FuelExhausted {
            budget: DEFAULT_FUEL
        })
    );
    let mut group = c.benchmark_group("fuel");
    group.sample_size(10);
    group.bench_function("endless loop until the default budget is spent", |b| {
        b.iter(|| looping.evaluate(black_box(&input)))
    });
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
