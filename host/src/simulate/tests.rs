//! Whole rollouts through the simulator: the guide's three walkthroughs, each
//! phase transition and webhook type, failures of metrics and policies.
use super::output::{render, Format};
use super::scenario::Scenario;
use super::*;
use crate::core::{Judge, JudgeError};
use crate::policy::{PolicyRuntime, RuntimeConfig};
use fledge_policy::{Decision, PolicyInput};
use std::sync::OnceLock;

const GUIDE: &str = include_str!("../../../examples/podinfo/canary.yaml");
const AB_HEADER: &str = include_str!("../../../examples/podinfo/canary-ab-header.yaml");
const AB_COOKIE: &str = include_str!("../../../examples/podinfo/canary-ab-cookie.yaml");
const PROMOTE: &str = include_str!("../../../examples/scenarios/promote.yaml");
const ROLLBACK: &str = include_str!("../../../examples/scenarios/rollback.yaml");
const AB_TEST: &str = include_str!("../../../examples/scenarios/ab-test.yaml");

/// The built-in policy through the Wasm runtime, as `fledge simulate` runs it.
fn builtin() -> &'static crate::policy::Policy {
    static POLICY: OnceLock<crate::policy::Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        // Fuel, as `fledge simulate` runs it: a loaded test machine cannot
        // turn a slow decision into a failed check.
        let runtime = PolicyRuntime::new(RuntimeConfig::deterministic(crate::policy::DEFAULT_FUEL))
            .expect("runtime starts");
        runtime.builtin().expect("built-in policy loads")
    })
}

fn simulate_with(canary: &str, scenario: &str, judge: &dyn Judge) -> Report {
    let inputs = load("canary.yaml", canary, &[]).expect("inputs load");
    let scenario: Scenario = super::scenario::parse(scenario).expect("scenario parses");
    run(&inputs, scenario, judge)
}

fn simulate(canary: &str, scenario: &str) -> Report {
    simulate_with(canary, scenario, builtin())
}

fn lines(report: &Report, format: Format) -> Vec<String> {
    render(report, format, false)
}

/// The guide's Canary with `analysis` replaced by `analysis_yaml`.
fn with_analysis(analysis_yaml: &str) -> String {
    let head = GUIDE
        .split("  # define the canary analysis")
        .next()
        .unwrap_or(GUIDE);
    format!("{head}  analysis:\n{analysis_yaml}")
}

#[test]
fn guide_promotion_events() {
    let report = simulate(GUIDE, PROMOTE);
    assert_eq!(report.phase, Phase::Succeeded);
    assert!(report.finished);
    let mut expected = vec![
        "New revision detected! Scaling up podinfo.test".to_string(),
        "Waiting for podinfo.test rollout to finish: 0 of 1 updated replicas are available".into(),
        "Pre-rollout check acceptance-test passed".into(),
    ];
    expected.extend((1..=10).map(|i| format!("Advance podinfo.test canary weight {}", i * 5)));
    expected.extend([
        "Copying podinfo.test template spec to podinfo-primary.test".to_string(),
        "Waiting for podinfo-primary.test rollout to finish: 1 of 2 updated replicas are available"
            .into(),
        "Routing all traffic to primary".into(),
        "Promotion completed! Scaling down podinfo.test".into(),
    ]);
    assert_eq!(lines(&report, Format::Events), expected);
}

#[test]
fn bootstrap_initializes_then_waits_for_a_change() {
    let report = simulate(
        GUIDE,
        "trigger: {image: podinfo:2}\nrollout: {primaryReadyAfter: 1}\n",
    );
    let boot: Vec<_> = report.records.iter().filter(|r| r.bootstrap).collect();
    // The primary is created on the first step, rolls out on the second, and
    // the Canary is initialized on the third.
    assert_eq!(boot.len(), 3);
    assert_eq!(
        boot[0].msg,
        "Waiting for podinfo-primary.test rollout to finish: observed deployment generation less than desired generation"
    );
    assert_eq!(boot[1].msg, "Waiting for podinfo-primary.test rollout to finish: 1 out of 2 new replicas have been updated");
    assert_eq!(boot[1].phase, Phase::Initializing);
    assert_eq!(boot[2].msg, "Initialization done! podinfo.test");
    assert_eq!(boot[2].phase, Phase::Initialized);
    let all = render(&report, Format::Text, true);
    assert_eq!(all[2], "Initialization done! podinfo.test");
    assert_eq!(
        all[3],
        "New revision detected! progressing canary analysis for podinfo.test"
    );
}

#[test]
fn guide_rollback_log() {
    let report = simulate(GUIDE, ROLLBACK);
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(
        lines(&report, Format::Text),
        [
            "New revision detected! progressing canary analysis for podinfo.test",
            "Pre-rollout check acceptance-test passed",
            "Advance podinfo.test canary weight 5",
            "Advance podinfo.test canary weight 10",
            "Advance podinfo.test canary weight 15",
            "Halt podinfo.test advancement success rate 69.17% < 99%",
            "Halt podinfo.test advancement success rate 61.39% < 99%",
            "Halt podinfo.test advancement success rate 55.06% < 99%",
            "Halt podinfo.test advancement request duration 1.20s > 0.5s",
            "Halt podinfo.test advancement request duration 1.45s > 0.5s",
            "Rolling back podinfo.test failed checks threshold reached 5",
            "Canary failed! Scaling down podinfo.test",
        ]
    );
}

fn ab_log() -> Vec<String> {
    let mut expected =
        vec!["New revision detected! progressing canary analysis for podinfo.test".to_string()];
    expected.extend((1..=10).map(|i| format!("Advance podinfo.test canary iteration {i}/10")));
    expected.extend([
        "Copying podinfo.test template spec to podinfo-primary.test".to_string(),
        "Waiting for podinfo-primary.test rollout to finish: 1 of 2 updated replicas are available"
            .into(),
        "Routing all traffic to primary".into(),
        "Promotion completed! Scaling down podinfo.test".into(),
    ]);
    expected
}

#[test]
fn guide_ab_test_log_with_the_header_and_the_cookie_match() {
    for canary in [AB_HEADER, AB_COOKIE] {
        let report = simulate(canary, AB_TEST);
        assert_eq!(report.phase, Phase::Succeeded);
        assert_eq!(lines(&report, Format::Text), ab_log());
    }
}

#[test]
fn json_lines_carry_time_phase_weight_checks_and_iteration() {
    let report = simulate(GUIDE, ROLLBACK);
    let json = lines(&report, Format::Json);
    let halt: serde_json::Value = serde_json::from_str(&json[5]).expect("json");
    assert_eq!(
        halt["msg"],
        "Halt podinfo.test advancement success rate 69.17% < 99%"
    );
    assert_eq!(halt["phase"], "Progressing");
    assert_eq!(halt["canaryWeight"], 15);
    assert_eq!(halt["failedChecks"], 1);
    assert_eq!(halt["iteration"], 0);
    assert_eq!(halt["level"], "warn");
    let first: serde_json::Value = serde_json::from_str(&json[0]).expect("json");
    let last: serde_json::Value = serde_json::from_str(json.last().expect("lines")).expect("json");
    assert!(
        first["ts"].as_str() < last["ts"].as_str(),
        "virtual time moves forward"
    );
    assert_eq!(last["phase"], "Failed");
}

#[test]
fn alerts_reach_the_providers_whose_severity_they_meet() {
    let canary = GUIDE.replace(
        "    webhooks:\n    - name: acceptance-test",
        "    alerts:\n    - name: on-call\n      severity: error\n      providerRef: {name: pager}\n    - name: team\n      severity: info\n      providerRef: {name: slack}\n    webhooks:\n    - name: acceptance-test",
    );
    let providers = "apiVersion: flagger.app/v1beta1\nkind: AlertProvider\nmetadata: {name: slack, namespace: test}\nspec: {type: slack, channel: deploys}\n---\napiVersion: flagger.app/v1beta1\nkind: AlertProvider\nmetadata: {name: pager, namespace: test}\nspec: {type: msteams}\n";
    let targets = vec![
        (
            "deployment.yaml".to_string(),
            load::PODINFO_DEPLOYMENT.to_string(),
        ),
        ("hpa.yaml".to_string(), load::PODINFO_HPA.to_string()),
        ("alerts.yaml".to_string(), providers.to_string()),
    ];
    let inputs = load("canary.yaml", &canary, &targets).expect("loads");
    let report = run(
        &inputs,
        super::scenario::parse(ROLLBACK).expect("scenario"),
        builtin(),
    );
    let sent: Vec<(&str, &str)> = report
        .alerts
        .iter()
        .filter(|a| !a.bootstrap)
        .map(|a| (a.provider.as_str(), a.message.as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            (
                "slack",
                "New revision detected, progressing canary analysis."
            ),
            ("pager", "Failed checks threshold reached 5"),
            ("slack", "Failed checks threshold reached 5"),
        ]
    );
    let json = lines(&report, Format::Json);
    // Alerts sit where they were sent: after the rollback event.
    let alert: serde_json::Value = serde_json::from_str(&json[json.len() - 3]).expect("json");
    assert_eq!(alert["alert"]["provider"], "pager");
    assert_eq!(alert["alert"]["severity"], "error");

    // A provider that was not given is named, with the fix.
    let err = load("canary.yaml", &canary, &targets[..2]).expect_err("missing provider");
    assert!(err.to_string().contains("spec.analysis.alerts[0].providerRef: AlertProvider pager.test not found; pass the AlertProvider with --target"), "{err}");
}

#[test]
fn weights_stop_at_max_weight_instead_of_overshooting() {
    let canary = with_analysis(
        "    interval: 1m\n    threshold: 5\n    maxWeight: 50\n    stepWeight: 20\n",
    );
    let report = simulate(&canary, "trigger: {image: podinfo:2}");
    let advances: Vec<_> = lines(&report, Format::Text)
        .into_iter()
        .filter(|l| l.starts_with("Advance"))
        .collect();
    assert_eq!(
        advances,
        [
            "Advance podinfo.test canary weight 20",
            "Advance podinfo.test canary weight 40",
            "Advance podinfo.test canary weight 50"
        ]
    );
}

#[test]
fn step_weight_promotion_returns_traffic_gradually() {
    let canary = with_analysis(
        "    interval: 1m\n    threshold: 5\n    stepWeights: [10, 40]\n    stepWeightPromotion: 25\n",
    );
    let report = simulate(&canary, "trigger: {image: podinfo:2}");
    assert_eq!(report.phase, Phase::Succeeded);
    let text = lines(&report, Format::Text);
    let from = text
        .iter()
        .position(|l| l.starts_with("Copying"))
        .expect("promotes");
    assert_eq!(
        &text[from + 1..],
        [
            "Advance podinfo.test primary weight 85",
            "Advance podinfo.test primary weight 100",
            "Promotion completed! Scaling down podinfo.test"
        ]
    );
}

#[test]
fn blue_green_runs_iterations_then_switches_all_traffic() {
    let canary = with_analysis("    interval: 1m\n    threshold: 2\n    iterations: 2\n");
    let report = simulate(&canary, "trigger: {image: podinfo:2}");
    assert_eq!(report.phase, Phase::Succeeded);
    let text = lines(&report, Format::Text);
    assert_eq!(
        &text[1..4],
        [
            "Advance podinfo.test canary iteration 1/2",
            "Advance podinfo.test canary iteration 2/2",
            "Routing all traffic to canary"
        ]
    );
    assert_eq!(
        text[4],
        "Copying podinfo.test template spec to podinfo-primary.test"
    );
}

#[test]
fn a_change_mid_analysis_restarts_it_and_the_new_revision_is_promoted() {
    let scenario = "trigger: {image: podinfo:2}\nupdates:\n- afterStep: 4\n  image: podinfo:3\n";
    let report = simulate(GUIDE, scenario);
    assert_eq!(report.phase, Phase::Succeeded);
    let text = lines(&report, Format::Text);
    let restart = text
        .iter()
        .position(|l| l == "New revision detected! Restarting analysis for podinfo.test")
        .expect("restarts");
    assert_eq!(text[restart - 1], "Advance podinfo.test canary weight 15");
    assert_eq!(
        text[restart + 1],
        "Pre-rollout check acceptance-test passed"
    );
    assert_eq!(text[restart + 2], "Advance podinfo.test canary weight 5");
}

#[test]
fn a_change_of_a_tracked_config_map_starts_a_rollout() {
    let deployment = load::PODINFO_DEPLOYMENT.replace(
        "          env:\n",
        "          envFrom:\n            - configMapRef:\n                name: podinfo-config\n          env:\n",
    );
    let targets = vec![
        ("deployment.yaml".to_string(), deployment),
        ("hpa.yaml".to_string(), load::PODINFO_HPA.to_string()),
        (
            "config.yaml".to_string(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: podinfo-config, namespace: test}\ndata: {color: blue}\n".to_string(),
        ),
    ];
    let inputs = load("canary.yaml", GUIDE, &targets).expect("loads");
    assert!(inputs.configs.contains_key("configmap/podinfo-config"));
    let scenario: Scenario =
        super::scenario::parse("trigger: {configMaps: {podinfo-config: {color: green}}}")
            .expect("parses");
    let report = run(&inputs, scenario, builtin());
    assert_eq!(report.phase, Phase::Succeeded);
    assert_eq!(
        lines(&report, Format::Text)[0],
        "New revision detected! progressing canary analysis for podinfo.test"
    );
    // Without the ConfigMap the target refers to, loading says what is missing.
    let err = load("canary.yaml", GUIDE, &targets[..2]).expect_err("missing config");
    assert!(
        err.to_string()
            .contains("uses configmap/podinfo-config, which was not given"),
        "{err}"
    );
}

#[test]
fn a_canary_that_misses_its_progress_deadline_rolls_back() {
    let report = simulate(
        GUIDE,
        "trigger: {image: podinfo:2}\nrollout: {canaryReadyAfter: 100}\n",
    );
    assert_eq!(report.phase, Phase::Failed);
    let text = lines(&report, Format::Text);
    assert_eq!(
        text[text.len() - 2..],
        [
            "deployment \"podinfo\" exceeded its progress deadline",
            "Canary failed! Scaling down podinfo.test"
        ]
    );
    // progressDeadlineSeconds is 60 and the interval 1m: one wait (60s in), then
    // the rollback (120s in).
    assert_eq!(
        text.iter()
            .filter(|l| l.starts_with("Waiting for podinfo.test"))
            .count(),
        1
    );
}

#[test]
fn a_primary_that_cannot_take_the_promotion_fails_it_without_moving_traffic() {
    let report = simulate(
        GUIDE,
        "trigger: {image: podinfo:2}\nrollout: {primaryReadyAfter: 1, promotionReadyAfter: 3}\n",
    );
    assert_eq!(report.phase, Phase::Failed);
    let text = lines(&report, Format::Text);
    let copy = text
        .iter()
        .position(|l| l.starts_with("Copying"))
        .expect("promotes");
    assert_eq!(
        &text[copy + 1..],
        [
            "Waiting for podinfo-primary.test rollout to finish: 1 of 2 updated replicas are available",
            "Promotion of podinfo.test failed, primary not ready: progress deadline exceeded deployment \"podinfo-primary\" exceeded its progress deadline",
        ]
    );
    // The canary keeps its analysed share (50%), never more than maxWeight.
    assert_eq!(report.samples.last().map(|s| s.canary_weight), Some(50));
    assert_eq!(report.records.last().map(|r| r.canary_weight), Some(50));
}

#[test]
fn a_metric_query_error_halts_and_never_promotes() {
    let report = simulate(
        GUIDE,
        "trigger: {image: podinfo:2}\nmetrics: {request-success-rate: [100, error]}\n",
    );
    assert_eq!(report.phase, Phase::Failed);
    let text = lines(&report, Format::Text);
    assert!(!text.iter().any(|l| l.starts_with("Copying")));
    let halts: Vec<_> = text
        .iter()
        .filter(|l| l.starts_with("Prometheus query failed: "))
        .collect();
    assert_eq!(halts.len(), 5);
    assert!(halts[0].contains("connection refused"), "{}", halts[0]);
}

struct Broken;
impl Judge for Broken {
    fn decide(&self, _: &PolicyInput, _: &fledge_policy::Context) -> Result<Decision, JudgeError> {
        Err(JudgeError(
            "policy trapped: wasm `unreachable` instruction executed".into(),
        ))
    }
}

#[test]
fn a_failing_policy_counts_failed_checks_and_rolls_back_never_promotes() {
    let report = simulate_with(GUIDE, PROMOTE, &Broken);
    assert_eq!(report.phase, Phase::Failed);
    let text = lines(&report, Format::Text);
    assert!(!text
        .iter()
        .any(|l| l.starts_with("Copying") || l.starts_with("Advance")));
    assert_eq!(
        text.iter()
            .filter(|l| l.as_str() == "Halt podinfo.test advancement policy failed: policy trapped: wasm `unreachable` instruction executed")
            .count(),
        5
    );
    assert_eq!(
        text.last().map(String::as_str),
        Some("Canary failed! Scaling down podinfo.test")
    );
}

#[test]
fn hostile_policies_are_failed_checks_and_never_promote() {
    let runtime = PolicyRuntime::new(RuntimeConfig::default()).expect("runtime starts");
    for fixture in ["endless-loop", "panic", "bad-weight", "memory-bomb"] {
        let path = std::path::Path::new(env!("FLEDGE_FIXTURE_DIR")).join(format!("{fixture}.wasm"));
        let bytes = std::fs::read(&path).expect("fixture built by host/build.rs");
        let policy = runtime.load(&bytes).expect("fixture loads");
        let report = simulate_with(GUIDE, PROMOTE, &policy);
        assert_eq!(report.phase, Phase::Failed, "{fixture}");
        let text = lines(&report, Format::Text);
        assert!(
            !text
                .iter()
                .any(|l| l.starts_with("Copying") || l.starts_with("Advance")),
            "{fixture}: {text:#?}"
        );
        let halts = text
            .iter()
            .filter(|l| l.starts_with("Halt podinfo.test advancement policy failed: "))
            .count();
        assert_eq!(halts, 5, "{fixture}: {text:#?}");
        assert_eq!(
            text[text.len() - 2],
            "Rolling back podinfo.test failed checks threshold reached 5",
            "{fixture}"
        );
    }
}

fn with_webhooks(hooks: &str) -> String {
    with_analysis(&format!(
        "    interval: 1m\n    threshold: 2\n    maxWeight: 20\n    stepWeight: 10\n    webhooks:\n{hooks}"
    ))
}

fn hook(name: &str, kind: &str) -> String {
    format!("    - name: {name}\n      type: {kind}\n      url: http://gate.test/\n")
}

#[test]
fn confirm_rollout_waits_for_approval_then_starts() {
    let canary = with_webhooks(&hook("gate", "confirm-rollout"));
    let report = simulate(
        &canary,
        "trigger: {image: podinfo:2}\nwebhooks: {gate: [fail, fail, pass]}\n",
    );
    assert_eq!(report.phase, Phase::Succeeded);
    let text = lines(&report, Format::Text);
    assert_eq!(
        text[0],
        "Halt podinfo.test advancement waiting for approval gate"
    );
    assert_eq!(text[1], "Confirm-rollout check gate passed");
    assert_eq!(
        text[2],
        "New revision detected! progressing canary analysis for podinfo.test"
    );
    assert_eq!(
        report.records[report
            .records
            .iter()
            .position(|r| !r.bootstrap)
            .expect("lines")]
        .phase,
        Phase::Waiting
    );
}

#[test]
fn pre_rollout_and_rollout_failures_are_failed_checks() {
    let canary = with_webhooks(&(hook("smoke", "pre-rollout") + &hook("load", "rollout")));
    let report = simulate(
        &canary,
        "trigger: {image: podinfo:2}\nwebhooks: {smoke: [fail, pass], load: fail}\n",
    );
    assert_eq!(report.phase, Phase::Failed);
    let text = lines(&report, Format::Text);
    assert!(
        text[1].starts_with("Halt podinfo.test advancement pre-rollout check smoke failed POST"),
        "{}",
        text[1]
    );
    assert_eq!(text[2], "Pre-rollout check smoke passed");
    assert_eq!(text[3], "Advance podinfo.test canary weight 10");
    assert!(
        text[4].starts_with("Halt podinfo.test advancement external check load failed"),
        "{}",
        text[4]
    );
    assert_eq!(
        text[5],
        "Rolling back podinfo.test failed checks threshold reached 2"
    );
}

#[test]
fn confirm_traffic_increase_holds_without_failing_checks() {
    let canary = with_webhooks(&hook("more", "confirm-traffic-increase"));
    let report = simulate(
        &canary,
        "trigger: {image: podinfo:2}\nwebhooks: {more: [fail, fail, fail, pass]}\n",
    );
    assert_eq!(report.phase, Phase::Succeeded);
    let text = lines(&report, Format::Text);
    let halts = text
        .iter()
        .filter(|l| {
            *l == "Halt podinfo.test advancement waiting for traffic increase approval more"
        })
        .count();
    assert_eq!(halts, 3);
    assert!(report.records.iter().all(|r| r.failed_checks == 0));
}

#[test]
fn confirm_promotion_waits_in_waiting_promotion() {
    let canary = with_webhooks(&hook("ship", "confirm-promotion"));
    let report = simulate(
        &canary,
        "trigger: {image: podinfo:2}\nwebhooks: {ship: [fail, fail, pass]}\n",
    );
    assert_eq!(report.phase, Phase::Succeeded);
    let text = lines(&report, Format::Text);
    let at = text
        .iter()
        .position(|l| l == "Halt podinfo.test advancement waiting for promotion approval ship")
        .expect("waits");
    assert_eq!(
        report
            .records
            .iter()
            .filter(|r| !r.bootstrap)
            .nth(at)
            .map(|r| r.phase),
        Some(Phase::WaitingPromotion)
    );
    assert_eq!(text[at + 1], "Confirm-promotion check ship passed");
    assert_eq!(
        text[at + 2],
        "Copying podinfo.test template spec to podinfo-primary.test"
    );
}

#[test]
fn rollback_webhook_rolls_back_and_post_rollout_reports() {
    let canary = with_webhooks(&(hook("abort", "rollback") + &hook("notify", "post-rollout")));
    let report = simulate(
        &canary,
        "trigger: {image: podinfo:2}\nwebhooks: {abort: [fail, fail, pass], notify: fail}\n",
    );
    assert_eq!(report.phase, Phase::Failed);
    let text = lines(&report, Format::Text);
    let n = text.len();
    assert_eq!(
        text[n - 3],
        "Rolling back podinfo.test manual webhook invoked"
    );
    assert_eq!(text[n - 2], "Canary failed! Scaling down podinfo.test");
    assert!(
        text[n - 1].starts_with("Post-rollout hook notify failed POST"),
        "{}",
        text[n - 1]
    );
}

#[test]
fn event_webhooks_receive_every_event() {
    let canary = with_webhooks(&hook("audit", "event"));
    let inputs = load("canary.yaml", &canary, &[]).expect("loads");
    let scenario: Scenario = super::scenario::parse("trigger: {image: podinfo:2}").expect("parses");
    let mut sim = Sim::new(&inputs, scenario);
    while sim.step(builtin()) {}
    let events = sim.report.records.len();
    assert_eq!(sim.world.calls.webhooks.get("audit").copied(), Some(events));
}

#[test]
fn skip_analysis_promotes_without_checks() {
    let canary = GUIDE.replace(
        "  progressDeadlineSeconds: 60\n",
        "  progressDeadlineSeconds: 60\n  skipAnalysis: true\n",
    );
    let report = simulate(
        &canary,
        "trigger: {image: podinfo:2}\nmetrics: {request-success-rate: 1}\n",
    );
    assert_eq!(report.phase, Phase::Succeeded);
    assert_eq!(
        lines(&report, Format::Text)[1..],
        [
            "Copying podinfo.test template spec to podinfo-primary.test",
            "Promotion completed! Canary analysis was skipped for podinfo.test"
        ]
    );
}

#[test]
fn a_suspended_canary_never_starts() {
    let canary = GUIDE.replace(
        "  progressDeadlineSeconds: 60\n",
        "  progressDeadlineSeconds: 60\n  suspend: true\n",
    );
    let report = simulate(&canary, "trigger: {image: podinfo:2}\nmaxSteps: 5\n");
    assert!(!report.finished);
    assert_eq!(report.phase, Phase::Initializing);
}

#[test]
fn a_revision_pushed_after_a_failure_is_analysed() {
    let scenario = "trigger: {image: podinfo:2}\nmetrics: {request-success-rate: [100, 1, 1, 1, 1, 1, 100]}\nupdates:\n- afterStep: 9\n  image: podinfo:3\n";
    let report = simulate(GUIDE, scenario);
    let text = lines(&report, Format::Text);
    let starts = text
        .iter()
        .filter(|l| l.starts_with("New revision detected!"))
        .count();
    assert_eq!(starts, 2, "{text:#?}");
    assert_eq!(report.phase, Phase::Succeeded);
}

#[test]
fn bad_input_names_the_file_field_and_fix() {
    let canary = GUIDE.replace("stepWeight: 5", "stepWeight: 150");
    let err = load("podinfo-canary.yaml", &canary, &[]).expect_err("invalid");
    let text = err.to_string();
    assert!(
        text.starts_with("podinfo-canary.yaml: the Canary is not valid"),
        "{text}"
    );
    assert!(
        text.contains("spec.analysis.stepWeight: 150 is outside 1..=100"),
        "{text}"
    );
    let canary = GUIDE.replace(
        "kind: Deployment\n    name: podinfo",
        "kind: Deployment\n    name: frontend",
    );
    let err = load(
        "c.yaml",
        &canary,
        &[("d.yaml".into(), load::PODINFO_DEPLOYMENT.into())],
    )
    .expect_err("no target");
    assert!(
        err.to_string().contains("no Deployment named `frontend`"),
        "{err}"
    );
}

#[test]
fn plot_draws_weight_and_metrics_with_thresholds() {
    let inputs = load("canary.yaml", GUIDE, &[]).expect("loads");
    let report = simulate(GUIDE, ROLLBACK);
    let svg = plot::svg(&report, &inputs.rollout.metrics);
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("canary weight"));
    assert!(svg.contains("request-success-rate"));
    assert!(svg.contains("min 99"));
    assert!(svg.contains("max 500"));
    assert_eq!(svg.matches("<polyline").count(), 3);
}

#[test]
fn many_canaries_run_at_once() {
    let inputs = load("canary.yaml", GUIDE, &[]).expect("loads");
    let scenario: Scenario = super::scenario::parse(PROMOTE).expect("parses");
    let reports = run_many(&inputs, &scenario, 20, builtin());
    assert_eq!(reports.len(), 20);
    assert!(reports
        .iter()
        .all(|r| r.finished && r.phase == Phase::Succeeded));
    assert_eq!(reports[7].canary, "podinfo-0007.test");
}

mod builtins;
mod fidelity;
mod gateway;
mod properties;
