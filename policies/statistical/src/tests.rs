use super::stats::{erfc, hodges_lehmann, mann_whitney, median};
use super::*;
use fledge_policy::testing::{duration, guide_input, success_rate};
use fledge_policy::{Advance, RoutePlan};

const LATENCY: &str = "histogram_quantile(0.99, sum(rate(lat_bucket{pod=~\"{{ workload }}-.*\",ns=\"{{ namespace }}\"}[1m])) by (le))";

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-300)
}

#[test]
fn u_and_p_of_two_separated_samples_match_the_hand_computation() {
    // Ranks of x: 1, 2, 3, so R = 6 and U = R - 3·4/2 = 0. Mean of U 4.5,
    // variance 3·3/12 · 7 = 5.25; z = (4.5 - 0.5) / √5.25 = 1.7457;
    // p = erfc(z / √2) = 0.080856.
    let t = mann_whitney(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
    assert_eq!(t.u, 0.0);
    assert!(close(t.z, -1.745_743_1, 1e-6), "{t:?}");
    assert!(close(t.p, 0.080_855_598, 1e-6), "{t:?}");
    // The other way round: U = 9, same p, z positive.
    let r = mann_whitney(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]);
    assert_eq!(r.u, 9.0);
    assert!(r.z > 0.0 && close(r.p, t.p, 1e-12));
}

#[test]
fn ties_share_ranks_and_shrink_the_variance() {
    // Pooled: 1(x) 2(x) 2(x) 2(y) 3(y) 3(y); the three 2s share rank 3,
    // the two 3s rank 5.5. R = 1 + 3 + 3 = 7, U = 1. Σ(t³ - t) = 24 + 6,
    // variance 9/12 · (7 - 30/30) = 4.5; z = (3.5 - 0.5) / √4.5 = √2;
    // p = erfc(1) = 0.157299.
    let t = mann_whitney(&[1.0, 2.0, 2.0], &[2.0, 3.0, 3.0]);
    assert_eq!(t.u, 1.0);
    assert!(close(t.z, -std::f64::consts::SQRT_2, 1e-9), "{t:?}");
    assert!(close(t.p, 0.157_299_207, 1e-6), "{t:?}");
}

#[test]
fn identical_samples_give_p_one_and_a_clear_shift_a_tiny_p() {
    let a: Vec<f64> = (0..31).map(|i| 100.0 + f64::from(i % 7)).collect();
    assert_eq!(mann_whitney(&a, &a).p, 1.0);
    // All tied: no variance, nothing to tell apart.
    assert_eq!(mann_whitney(&[5.0; 4], &[5.0; 9]).p, 1.0);
    // Interleaved samples with U at its mean: z = 0 after the continuity correction.
    assert_eq!(
        mann_whitney(&[5.0, 7.0, 9.0, 11.0], &[6.0, 8.0, 10.0]).p,
        1.0
    );
    // 31 canary samples all above 31 primary ones: U = 961 of 961 pairs,
    // z = (480.5 - 0.5) / √(961/12 · 63) = 6.7577, p = 1.40e-11.
    let canary: Vec<f64> = (0..31).map(|i| 130.0 + f64::from(i)).collect();
    let primary: Vec<f64> = (0..31).map(|i| 100.0 + f64::from(i) * 0.1).collect();
    let t = mann_whitney(&canary, &primary);
    assert_eq!(t.u, 961.0);
    assert!(close(t.p, 1.401_846_3e-11, 1e-5), "{t:?}");
}

#[test]
fn erfc_is_accurate_in_the_tails() {
    for (x, want) in [
        (0.0, 1.0),
        (0.5, 0.479_500_122_186_953_5),
        (1.0, 0.157_299_207_050_285_13),
        (3.0, 2.209_049_699_858_544e-5),
        (6.0, 2.151_973_671_249_891_3e-17),
        (-1.0, 1.842_700_792_949_715),
    ] {
        assert!(close(erfc(x), want, 2e-7), "erfc({x}) = {}", erfc(x));
    }
}

#[test]
fn hodges_lehmann_is_the_median_of_pairwise_differences() {
    // Differences x - y: -3 -4 -5 / -2 -3 -4 / -1 -2 -3: median -3.
    assert_eq!(hodges_lehmann(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), -3.0);
    // Even count: the two middle ones averaged (1 - 0, 1 - 2 → 1 and -1).
    assert_eq!(hodges_lehmann(&[1.0], &[0.0, 2.0]), 0.0);
    assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    // Long samples are thinned, and the shift survives it.
    let canary: Vec<f64> = (0..1100).map(|i| 130.0 + f64::from(i % 21)).collect();
    let primary: Vec<f64> = (0..1100).map(|i| 100.0 + f64::from(i % 21)).collect();
    let shift = hodges_lehmann(&canary, &primary);
    assert!((shift - 30.0).abs() <= 1.0, "{shift}");
}

fn samples(values: impl IntoIterator<Item = f64>) -> Vec<Sample> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| Sample {
            timestamp: 1_000 + 10 * i as i64,
            value,
        })
        .collect()
}

/// 31 samples around `mean`, ±`spread`, in a fixed zig-zag.
fn around(mean: f64, spread: f64, phase: usize) -> Vec<Sample> {
    samples((0..31).map(|i| mean + spread * ((((i + phase) * 7) % 21) as f64 / 10.0 - 1.0)))
}

/// The guide's Canary mid-analysis at 20 %, its fixed checks passing.
fn mid_analysis() -> PolicyInput {
    let mut input = guide_input();
    input.state.canary_weight = 20;
    input.state.primary_weight = 80;
    input.state.iteration = 0;
    input.metrics = vec![success_rate(99.9), duration(120.0)];
    input
}

fn latency_config() -> Context {
    Context::at(1_300)
        .with_config("metrics", "latency")
        .with_config("latency.query", LATENCY)
        .with_config("latency.effect-size", "1.1")
}

fn advance(weight: u32) -> Decision {
    Decision::Advance(Advance {
        route: RoutePlan::weighted(weight),
        iteration: 0,
    })
}

#[test]
fn queries_name_the_canary_and_primary_deployments() {
    let q = queries(
        &mid_analysis(),
        &latency_config().with_config("window", "60"),
    );
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].name, "latency/canary");
    assert_eq!(q[1].name, "latency/primary");
    // The host renders the target Deployment's name and the namespace.
    assert!(q[0]
        .query
        .contains("pod=~\"{{ target }}-.*\",ns=\"{{ namespace }}\""));
    assert!(q[1]
        .query
        .contains("pod=~\"{{ target }}-primary-.*\",ns=\"{{ namespace }}\""));
    assert_eq!((q[0].window_seconds, q[0].step_seconds), (60, 10));
    // `workload` names the Deployment outright.
    let q = queries(
        &mid_analysis(),
        &latency_config().with_config("workload", "web"),
    );
    assert!(q[1].query.contains("pod=~\"web-primary-.*\""));
    // Nothing to ask before the first advance, while a check fails, or
    // during promotion.
    assert!(queries(&guide_input(), &latency_config()).is_empty());
    let mut failing = mid_analysis();
    failing.metrics = vec![success_rate(50.0)];
    assert!(queries(&failing, &latency_config()).is_empty());
    let mut promoting = mid_analysis();
    promoting.state.phase = Phase::Promoting;
    assert!(queries(&promoting, &latency_config()).is_empty());
}

#[test]
fn templates_keep_host_variables_and_spacing_variants() {
    assert_eq!(
        with_workload("a{{workload}}b{{ .workload }}c{{ target }}", "w"),
        "awbwc{{ target }}"
    );
    assert!(!has_workload("up{job=\"{{ target }}\"}"));
}

#[test]
fn matching_series_let_flaggers_decision_stand() {
    let ctx = latency_config()
        .with_series("latency/canary", around(100.0, 10.0, 3))
        .with_series("latency/primary", around(100.0, 10.0, 0));
    assert_eq!(decide(&mid_analysis(), &ctx), advance(25));
    let mut last = mid_analysis();
    last.state.canary_weight = 50;
    assert_eq!(decide(&last, &ctx), Decision::Promote);
}

#[test]
fn a_canary_thirty_percent_slower_is_rolled_back() {
    let ctx = latency_config()
        .with_series("latency/canary", around(130.0, 10.0, 0))
        .with_series("latency/primary", around(100.0, 10.0, 0));
    let Decision::Rollback(reason) = decide(&mid_analysis(), &ctx) else {
        panic!("not a rollback");
    };
    assert!(
        reason.starts_with("statistical score 0 < marginal 75: latency High (p=")
            && reason.contains("ratio 1.3"),
        "{reason}"
    );
}

#[test]
fn effect_size_and_direction_decide_what_a_significant_difference_means() {
    let slower = latency_config()
        .with_config("latency.effect-size", "1.5")
        .with_series("latency/canary", around(130.0, 10.0, 0))
        .with_series("latency/primary", around(100.0, 10.0, 0));
    // Within the allowed 50 %: significant but passing.
    assert_eq!(decide(&mid_analysis(), &slower), advance(25));
    // Lower latency is no failure for `increase`, but is for `either`.
    let faster = |direction: &str| {
        latency_config()
            .with_config("latency.direction", direction)
            .with_series("latency/canary", around(70.0, 10.0, 0))
            .with_series("latency/primary", around(100.0, 10.0, 0))
    };
    assert_eq!(decide(&mid_analysis(), &faster("increase")), advance(25));
    assert!(matches!(
        decide(&mid_analysis(), &faster("either")),
        Decision::Rollback(r) if r.contains("latency Low")
    ));
    assert!(matches!(
        decide(&mid_analysis(), &faster("decrease")),
        Decision::Rollback(_)
    ));
}

fn two_metrics(errors_weight: &str) -> Context {
    latency_config()
        .with_config("metrics", "latency,errors")
        .with_config(
            "errors.query",
            "sum(rate(errors{pod=~\"{{ workload }}-.*\"}[1m]))",
        )
        .with_config("errors.weight", errors_weight)
        .with_series("latency/canary", around(100.0, 10.0, 3))
        .with_series("latency/primary", around(100.0, 10.0, 0))
        .with_series("errors/canary", around(5.0, 1.0, 0))
        .with_series("errors/primary", around(1.0, 0.2, 0))
}

#[test]
fn the_weighted_score_holds_marginal_canaries_and_rolls_back_bad_ones() {
    // latency passes (weight 4), errors fails (weight 1): score 80, marginal.
    let d = decide(
        &mid_analysis(),
        &two_metrics("1").with_config("latency.weight", "4"),
    );
    let Decision::Hold(hold) = d else {
        panic!("not a hold: {d:?}")
    };
    assert!(hold.failed_check);
    assert!(
        hold.reason
            .starts_with("statistical score 80 < pass 95: latency Pass (p=")
            && hold.reason.contains(", errors High (p=")
            && hold.reason.ends_with("ratio 5.00)"),
        "{}",
        hold.reason
    );
    // Equal weights: 50 < 75, rollback.
    assert!(matches!(
        decide(&mid_analysis(), &two_metrics("1")),
        Decision::Rollback(r) if r.starts_with("statistical score 50 < marginal 75")
    ));
    // A critical metric rolls back whatever the score.
    let critical = two_metrics("0.01")
        .with_config("latency.weight", "100")
        .with_config("errors.critical", "true");
    assert!(matches!(
        decide(&mid_analysis(), &critical),
        Decision::Rollback(r) if r.starts_with("critical metric errors failed: ")
    ));
    // Without the critical flag that score (99.99) passes.
    let not_critical = two_metrics("0.01").with_config("latency.weight", "100");
    assert_eq!(decide(&mid_analysis(), &not_critical), advance(25));
}

#[test]
fn missing_data_holds_without_counting_and_partial_data_is_scored() {
    let none = latency_config().with_series("latency/canary", vec![]);
    assert_eq!(
        decide(&mid_analysis(), &none),
        Decision::halt("no data for latency (no canary samples)")
    );
    let mut failed = latency_config().with_series("latency/canary", around(100.0, 1.0, 0));
    failed.series.push(fledge_policy::Series {
        name: "latency/primary".into(),
        samples: Err("connection refused".into()),
    });
    assert_eq!(
        decide(&mid_analysis(), &failed),
        Decision::halt("no data for latency (series latency/primary: connection refused)")
    );
    // NaN samples (an empty histogram) are no data either.
    let nan = latency_config()
        .with_series("latency/canary", samples([f64::NAN; 3]))
        .with_series("latency/primary", around(100.0, 1.0, 0));
    assert!(matches!(decide(&mid_analysis(), &nan), Decision::Hold(h) if !h.failed_check));
    // errors has no data; latency alone passes: Flagger's decision stands.
    let mut partial = two_metrics("1");
    partial.series.retain(|s| s.name != "errors/canary");
    assert_eq!(decide(&mid_analysis(), &partial), advance(25));
}

#[test]
fn flaggers_judgement_comes_first() {
    let bad = latency_config()
        .with_series("latency/canary", around(130.0, 10.0, 0))
        .with_series("latency/primary", around(100.0, 10.0, 0));
    // A fixed check failing: Flagger's failed check, not the comparison.
    let mut input = mid_analysis();
    input.metrics = vec![success_rate(50.0)];
    assert_eq!(
        decide(&input, &bad),
        Decision::failed_check("success rate 50.00% < 99%")
    );
    // The first step routes the first traffic: nothing to compare yet.
    assert_eq!(decide(&guide_input(), &bad), advance(5));
    // The threshold reached: rollback, as Flagger says it.
    input = mid_analysis();
    input.state.failed_checks = 5;
    assert_eq!(
        decide(&input, &bad),
        Decision::Rollback("failed checks threshold reached 5".into())
    );
    // Promotion under way goes on.
    input = mid_analysis();
    input.state.phase = Phase::Promoting;
    assert_eq!(decide(&input, &bad), advance(0));
}

#[test]
fn bad_config_is_a_failed_check_naming_the_key() {
    let cases = [
        (Context::at(0), "config metrics: missing"),
        (
            latency_config().with_config("latency.query", "up"),
            "config latency.query: no {{ workload }}",
        ),
        (
            latency_config().with_config("latency.direction", "up"),
            "config latency.direction: `up` is not a direction",
        ),
        (
            latency_config().with_config("latency.weight", "0"),
            "config latency.weight: 0 is not a positive number",
        ),
        (
            latency_config().with_config("latency.effect-size", "0.9"),
            "config latency.effect-size: 0.9 is below 1",
        ),
        (
            latency_config().with_config("latency.critical", "yes"),
            "config latency.critical: `yes` is not true or false",
        ),
        (
            latency_config().with_config("confidence", "95"),
            "config confidence: 95 is not between 0 and 1",
        ),
        (
            latency_config().with_config("window", "20000"),
            "config window: 20000 s at a step of 10 s is 2001 samples",
        ),
        (
            latency_config().with_config("step", "0"),
            "config step: 0 s",
        ),
        (
            latency_config().with_config("marginal-score", "99"),
            "config marginal-score: 99 is above pass-score 95",
        ),
        (
            latency_config().with_config("pass-score", "101"),
            "config pass-score: 101 is outside 0..=100",
        ),
        (
            latency_config().with_config("latncy.query", "x"),
            "config latncy.query: unknown key",
        ),
        (
            latency_config().with_config("metrics", "latency,latency"),
            "config metrics: `latency` is listed twice",
        ),
        (
            latency_config().with_config("metrics", "a.b"),
            "config metrics: `a.b` is not a metric name",
        ),
    ];
    for (ctx, want) in cases {
        let d = decide(&mid_analysis(), &ctx);
        let Decision::Hold(h) = &d else {
            panic!("{want}: {d:?}")
        };
        assert!(h.failed_check, "{want}");
        assert!(
            h.reason.starts_with(&format!("statistical policy: {want}")),
            "{want}: {}",
            h.reason
        );
        assert!(queries(&mid_analysis(), &ctx).is_empty(), "{want}");
    }
    // Even the first advance waits for a good config.
    assert!(matches!(
        decide(&guide_input(), &Context::at(0)),
        Decision::Hold(h) if h.failed_check
    ));
}
