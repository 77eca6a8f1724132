//! The built-in `statistical` and `change-window` policies through the
//! simulator: the embedded components, loaded from the policy objects of
//! `examples/policies` as the operator reads them.
use super::*;
use crate::api::policy::{validate_policy, Maximums, RolloutPolicySpec, Source};
use crate::policy::{builtin_component, Policy};

const STATISTICAL: &str = include_str!("../../../../examples/policies/statistical.yaml");
const CHANGE_WINDOW: &str = include_str!("../../../../examples/policies/change-window.yaml");
const SHIPPED: &str = include_str!("../../../../deploy/policies/builtin.yaml");
const STAT_PROMOTE: &str = include_str!("../../../../examples/scenarios/statistical-promote.yaml");
const STAT_ROLLBACK: &str =
    include_str!("../../../../examples/scenarios/statistical-rollback.yaml");
const WINDOW_RUN: &str = include_str!("../../../../examples/scenarios/change-window.yaml");

/// Fri 2026-12-04 17:00 and Mon 2026-12-07 09:00 UTC.
const FRIDAY_1700: i64 = 1_796_403_600;
const MONDAY_0900: i64 = 1_796_634_000;

fn spec_of(doc: &serde_json::Value) -> RolloutPolicySpec {
    crate::api::yaml::typed(&doc["spec"]).expect("spec reads")
}

/// The policy object `text`, validated and loaded with its config, on the
/// simulator's fuel-counting runtime.
fn policy_object(text: &str) -> Policy {
    let doc: serde_json::Value = crate::api::yaml::from_str(text).expect("policy object parses");
    let max = Maximums {
        deadline: std::time::Duration::from_secs(1),
        memory: 32 << 20,
    };
    let valid = validate_policy(&spec_of(&doc), max).expect("policy object is valid");
    let Source::Builtin(name) = &valid.source else {
        panic!("not a built-in: {:?}", valid.source)
    };
    let policy = runtime()
        .load(builtin_component(name).expect("embedded"))
        .expect("built-in component loads");
    // The capability is granted exactly when the component needs it.
    assert_eq!(policy.needs_metric_query(), valid.metric_query, "{name}");
    policy.with_config(valid.config)
}

fn runtime() -> &'static PolicyRuntime {
    static RUNTIME: OnceLock<PolicyRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        PolicyRuntime::new(RuntimeConfig::deterministic(crate::policy::DEFAULT_FUEL))
            .expect("runtime starts")
    })
}

#[test]
fn the_shipped_cluster_policies_carry_the_examples_config() {
    let docs = crate::api::yaml::documents(SHIPPED).expect("builtin.yaml parses");
    for (name, example) in [
        ("statistical", STATISTICAL),
        ("change-window", CHANGE_WINDOW),
    ] {
        let shipped = docs
            .iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("builtin.yaml has no {name}"));
        assert_eq!(shipped["kind"], "ClusterRolloutPolicy");
        let example: serde_json::Value = crate::api::yaml::from_str(example).unwrap();
        assert_eq!(spec_of(shipped), spec_of(&example), "{name}");
    }
}

/// The metric readings of every step stay inside the Canary's fixed thresholds.
fn fixed_checks_pass_throughout(report: &Report) {
    let readings: Vec<&(String, f64)> = report.samples.iter().flat_map(|s| &s.metrics).collect();
    assert!(!readings.is_empty());
    for (name, v) in readings {
        match name.as_str() {
            "request-duration" => assert!(*v <= 500.0, "{name} {v}"),
            "request-success-rate" => assert!(*v >= 99.0, "{name} {v}"),
            other => panic!("unexpected metric {other}"),
        }
    }
}

#[test]
fn statistical_promotes_a_canary_like_the_primary_and_rolls_back_a_slower_one() {
    let statistical = policy_object(STATISTICAL);
    // Flagger's analysis alone promotes both: its fixed thresholds hold.
    for scenario in [STAT_PROMOTE, STAT_ROLLBACK] {
        let report = simulate(GUIDE, scenario);
        assert_eq!(report.phase, Phase::Succeeded);
        fixed_checks_pass_throughout(&report);
    }

    let report = simulate_with(GUIDE, STAT_PROMOTE, &statistical);
    assert_eq!(report.phase, Phase::Succeeded);
    let text = lines(&report, Format::Text);
    assert_eq!(
        text.iter()
            .filter(|l| l.starts_with("Advance podinfo.test canary weight"))
            .count(),
        10,
        "{text:#?}"
    );
    assert!(!text.iter().any(|l| l.contains("Halt")), "{text:#?}");

    let report = simulate_with(GUIDE, STAT_ROLLBACK, &statistical);
    assert_eq!(report.phase, Phase::Failed);
    fixed_checks_pass_throughout(&report);
    let text = lines(&report, Format::Text);
    // The first advance routes the first traffic; the next step compares.
    let rollback = text
        .iter()
        .find(|l| l.starts_with("Rolling back podinfo.test"))
        .unwrap_or_else(|| panic!("no rollback in {text:#?}"));
    assert!(
        rollback.starts_with(
            "Rolling back podinfo.test statistical score 0 < marginal 75: latency High (p="
        ) && rollback.contains("ratio 1.3"),
        "{rollback}"
    );
    assert!(!text.iter().any(|l| l.starts_with("Copying")), "{text:#?}");
    assert_eq!(
        text.iter()
            .filter(|l| l.starts_with("Advance"))
            .collect::<Vec<_>>(),
        ["Advance podinfo.test canary weight 5"]
    );
}

#[test]
fn a_series_without_data_holds_without_failing_checks() {
    let scenario = STAT_PROMOTE.replace(
        "latency/canary: {mean: 100, spread: 10}",
        "latency/canary: nodata",
    ) + "maxSteps: 20\n";
    let report = simulate_with(GUIDE, &scenario, &policy_object(STATISTICAL));
    assert!(!report.finished);
    let halts: Vec<&Record> = report
        .records
        .iter()
        .filter(|r| r.msg.contains("no data for latency (no canary samples)"))
        .collect();
    assert!(halts.len() > 10, "{:#?}", report.records);
    assert!(halts
        .iter()
        .all(|r| r.failed_checks == 0 && r.canary_weight == 5));
}

#[test]
fn change_window_holds_over_the_weekend_and_goes_on_on_monday() {
    let report = simulate_with(GUIDE, WINDOW_RUN, &policy_object(CHANGE_WINDOW));
    assert_eq!(
        report.phase,
        Phase::Succeeded,
        "{:#?}",
        report.records.iter().take(20).collect::<Vec<_>>()
    );
    let advances: Vec<&Record> = report
        .records
        .iter()
        .filter(|r| r.msg.starts_with("Advance podinfo.test canary weight"))
        .collect();
    assert_eq!(advances.len(), 10);
    // Some before Friday 17:00, none over the weekend, the rest from Monday 09:00.
    let before = advances.iter().filter(|r| r.ts < FRIDAY_1700).count();
    assert!(before > 0 && before < 10, "{before}");
    assert!(advances[before..].iter().all(|r| r.ts >= MONDAY_0900));
    let held_at = advances[before - 1].canary_weight;
    let closed: Vec<&Record> = report
        .records
        .iter()
        .filter(|r| !r.bootstrap && (FRIDAY_1700..MONDAY_0900).contains(&r.ts))
        .collect();
    assert!(closed.len() > 60 * 60, "{}", closed.len());
    assert!(closed
        .iter()
        .all(|r| r.canary_weight == held_at && r.failed_checks == 0));
    assert_eq!(
        closed[0].msg,
        "Halt podinfo.test advancement outside the change window Mon-Fri 09:00-17:00 UTC \
         (now Fri 2026-12-04 17:00 UTC)"
    );
    assert!(closed
        .iter()
        .any(|r| r.msg.ends_with("(now Sun 2026-12-06 12:00 UTC)")));
    // The builtin flagger policy alone finishes on Friday.
    let flagger = simulate(GUIDE, WINDOW_RUN);
    assert_eq!(flagger.phase, Phase::Succeeded);
    assert!(flagger.records.last().unwrap().ts < FRIDAY_1700 + 3600);
}

/// The guide's Canary at 20 %, its fixed checks passing.
fn mid_analysis() -> fledge_policy::PolicyInput {
    use fledge_policy::testing::{duration, guide_input, success_rate};
    let mut input = guide_input();
    input.state.canary_weight = 20;
    input.state.primary_weight = 80;
    input.metrics = vec![success_rate(99.9), duration(120.0)];
    input
}

/// `points` samples around `mean`, ±10 in a fixed zig-zag.
fn series(points: usize, mean: f64) -> Vec<fledge_policy::Sample> {
    (0..points)
        .map(|i| fledge_policy::Sample {
            timestamp: 1_000 + 10 * i as i64,
            value: mean + ((i * 7) % 21) as f64 - 10.0,
        })
        .collect()
}

#[test]
fn fuel_of_the_statistical_policy_per_decision() {
    // The shipped config: one metric, two 31-point series.
    let policy = policy_object(STATISTICAL);
    let ctx = fledge_policy::Context::at(1_300)
        .with_series("latency/canary", series(31, 130.0))
        .with_series("latency/primary", series(31, 100.0));
    let input = mid_analysis();
    let small = policy
        .fuel_used_in(&input, &ctx)
        .unwrap()
        .expect("fuel is counted");
    assert_eq!(policy.fuel_used_in(&input, &ctx).unwrap(), Some(small));
    assert!(matches!(
        policy.evaluate_in(&input, &ctx).unwrap(),
        Decision::Rollback(r) if r.contains("latency High")
    ));
    // The most the host answers: 8 metrics, 16 series of 687 points (10 992 samples).
    let mut config: std::collections::BTreeMap<String, String> = [
        (
            "metrics",
            (0..8)
                .map(|i| format!("m{i}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("window", "6860".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut big = fledge_policy::Context::at(1_300);
    for i in 0..8 {
        config.insert(format!("m{i}.query"), "up{pod=\"{{ workload }}\"}".into());
        big = big
            .with_series(format!("m{i}/canary"), series(687, 100.0 + i as f64))
            .with_series(format!("m{i}/primary"), series(687, 100.0));
    }
    let policy = policy.with_config(config);
    let large = policy
        .fuel_used_in(&input, &big)
        .unwrap()
        .expect("fuel is counted");
    println!("statistical policy: {small} units of fuel with two 31-point series, {large} with 16 of 687");
    // Within the simulator's budget by orders of magnitude.
    assert!(small < crate::policy::DEFAULT_FUEL / 1_000, "{small}");
    assert!(large < crate::policy::DEFAULT_FUEL / 10, "{large}");
    assert!(large > small);
}
