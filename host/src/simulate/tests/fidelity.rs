//! Where Flagger's code (v1.44.0) decides: rollback hooks, gates, deadlines,
//! A/B promotion, manual rollbacks, metric wording and order, status counts.
use super::*;

fn texts(report: &Report) -> Vec<String> {
    lines(report, Format::Text)
}

/// The lines after the first one equal to `line`.
fn after<'a>(text: &'a [String], line: &str) -> &'a [String] {
    let at = text
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no line {line:?} in {text:#?}"));
    &text[at + 1..]
}

#[test]
fn every_rollback_hook_is_asked_and_the_first_that_fires_rolls_back() {
    let canary = with_webhooks(&(hook("quiet", "rollback") + &hook("abort", "rollback")));
    let report = simulate(
        &canary,
        "trigger: {image: podinfo:2}\nwebhooks: {quiet: fail, abort: [fail, pass]}\n",
    );
    assert_eq!(report.phase, Phase::Failed);
    let text = texts(&report);
    assert!(!text.iter().any(|l| l.starts_with("Copying")), "{text:#?}");
    // First step: both hooks called, neither fires; second step: the second fires.
    let first = after(&text, "Rollback hook quiet not signaling a rollback");
    assert_eq!(first[0], "Rollback hook abort not signaling a rollback");
    assert_eq!(
        text[text.len() - 4..],
        [
            "Rollback hook quiet not signaling a rollback",
            "Rollback check abort passed",
            "Rolling back podinfo.test manual webhook invoked",
            "Canary failed! Scaling down podinfo.test",
        ]
    );
    let warn = report
        .alerts
        .iter()
        .filter(|a| a.message == "Rolling back manual webhook invoked")
        .count();
    assert_eq!(warn, 0, "the guide canary sends no alerts");
}

#[test]
fn confirm_traffic_increase_also_gates_the_step_that_promotes() {
    // maxWeight 20, stepWeight 10: 10, 20, then the promotion step.
    let canary = with_webhooks(&hook("more", "confirm-traffic-increase"));
    let report = simulate(
        &canary,
        "trigger: {image: podinfo:2}\nwebhooks: {more: [pass, pass, fail, pass]}\n",
    );
    assert_eq!(report.phase, Phase::Succeeded);
    let text = texts(&report);
    assert_eq!(
        &after(&text, "Advance podinfo.test canary weight 20")[..3],
        [
            "Halt podinfo.test advancement waiting for traffic increase approval more",
            "Confirm-traffic-increase check more passed",
            "Copying podinfo.test template spec to podinfo-primary.test",
        ]
    );
}

#[test]
fn a_progress_deadline_rolls_back_even_when_analysis_is_skipped() {
    let canary = GUIDE.replace(
        "  progressDeadlineSeconds: 60\n",
        "  progressDeadlineSeconds: 60\n  skipAnalysis: true\n",
    );
    let report = simulate(
        &canary,
        "trigger: {image: podinfo:2}\nrollout: {canaryReadyAfter: 100}\n",
    );
    assert!(report.finished);
    assert_eq!(report.phase, Phase::Failed);
    let text = texts(&report);
    assert!(!text.iter().any(|l| l.starts_with("Copying")), "{text:#?}");
    assert_eq!(
        text[text.len() - 2..],
        [
            "deployment \"podinfo\" exceeded its progress deadline",
            "Canary failed! Scaling down podinfo.test",
        ]
    );
}

#[test]
fn a_primary_that_misses_its_deadline_fails_initialization() {
    let inputs = load("canary.yaml", GUIDE, &[]).expect("inputs load");
    let scenario: Scenario =
        super::scenario::parse("trigger: {image: podinfo:2}\nrollout: {primaryReadyAfter: 100}\n")
            .expect("scenario parses");
    let report = run(&inputs, scenario, builtin());
    assert!(report.finished);
    assert_eq!(report.phase, Phase::Failed);
    let text = render(&report, Format::Text, true);
    assert!(
        !text.iter().any(|l| l.starts_with("Initialization done")),
        "{text:#?}"
    );
    assert_eq!(
        text[text.len() - 2..],
        [
            "deployment \"podinfo-primary\" exceeded its progress deadline",
            "Initialization of podinfo.test failed! podinfo-primary.test is not ready; podinfo.test keeps running",
        ]
    );
}

#[test]
fn reverting_the_target_to_the_promoted_revision_does_not_restart_the_analysis() {
    let report = simulate(
        GUIDE,
        "trigger: {image: podinfo:2}\nupdates:\n  - afterStep: 3\n    image: ghcr.io/stefanprodan/podinfo:6.0.0\n",
    );
    assert_eq!(report.phase, Phase::Succeeded);
    let text = texts(&report);
    assert!(
        !text.iter().any(|l| l.contains("Restarting analysis")),
        "{text:#?}"
    );
}

#[test]
fn a_reverted_target_promotes_what_it_runs() {
    let inputs = load("canary.yaml", GUIDE, &[]).expect("inputs load");
    let scenario: Scenario = super::scenario::parse(
        "trigger: {image: podinfo:2}\nupdates:\n  - afterStep: 3\n    image: ghcr.io/stefanprodan/podinfo:6.0.0\n",
    )
    .expect("scenario parses");
    let mut sim = Sim::new(&inputs, scenario);
    while sim.step(builtin()) {}
    assert_eq!(sim.report.phase, Phase::Succeeded);
    assert_eq!(sim.status.last_promoted_spec, sim.status.last_applied_spec);
    let primary = sim.world.primary.as_ref().expect("primary exists");
    assert_eq!(
        primary.template.pointer("/spec/containers/0/image"),
        Some(&serde_json::json!("ghcr.io/stefanprodan/podinfo:6.0.0"))
    );
}

#[test]
fn metric_errors_read_as_flagger_words_them() {
    let halt = |scenario: &str| {
        let report = simulate(GUIDE, scenario);
        let text = texts(&report);
        text.into_iter()
            .find(|l| l.contains("no values") || l.contains("query failed"))
            .unwrap_or_else(|| panic!("no metric error in {scenario}"))
    };
    assert_eq!(
        halt("trigger: {image: podinfo:2}\nmetrics: {request-success-rate: [100, nodata]}\n"),
        "Halt advancement no values found for appmesh:v1beta2 metric request-success-rate probably podinfo.test is not receiving traffic: no values found"
    );
    assert_eq!(
        halt("trigger: {image: podinfo:2}\nmetrics: {request-duration: [100, nodata]}\n"),
        "Halt advancement no values found for appmesh:v1beta2 metric request-duration probably podinfo.test is not receiving traffic"
    );
    assert_eq!(
        halt("trigger: {image: podinfo:2}\nmetrics: {request-success-rate: [100, error]}\n"),
        "Prometheus query failed: Get \"http://prometheus:9090/api/v1/query\": dial tcp: connection refused"
    );
}

const TEMPLATE: &str = "apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: not-found-percentage
  namespace: test
spec:
  provider:
    type: prometheus
    address: http://prometheus.istio-system:9090
  query: sum(rate(http_requests_total{status=\"404\"}[{{ interval }}]))
";

/// The guide's Canary with a template metric `t` and an inline query `q`, in that spec order.
fn with_template_and_query() -> String {
    with_analysis(
        "    interval: 1m
    threshold: 1
    maxWeight: 20
    stepWeight: 10
    metrics:
    - name: t
      templateRef:
        name: not-found-percentage
      thresholdRange:
        max: 5
    - name: q
      query: sum(rate(errors[1m]))
      thresholdRange:
        max: 1
",
    )
}

fn simulate_with_template(scenario: &str) -> Report {
    let targets = [
        (
            "deployment.yaml".to_string(),
            load::PODINFO_DEPLOYMENT.to_string(),
        ),
        ("hpa.yaml".to_string(), load::PODINFO_HPA.to_string()),
        ("template.yaml".to_string(), TEMPLATE.to_string()),
    ];
    let inputs = load("canary.yaml", &with_template_and_query(), &targets).expect("inputs load");
    let scenario: Scenario = super::scenario::parse(scenario).expect("scenario parses");
    run(&inputs, scenario, builtin())
}

#[test]
fn inline_queries_are_checked_with_the_builtins_before_templates() {
    // Both fail; the inline query is asked first, so its failure is the one reported.
    let report =
        simulate_with_template("trigger: {image: podinfo:2}\nmetrics: {t: error, q: error}\n");
    let text = texts(&report);
    let halt = text
        .iter()
        .find(|l| l.contains("query failed"))
        .expect("a failed query");
    assert!(
        halt.starts_with("Prometheus query failed for q: "),
        "{halt}"
    );
    // With the inline query healthy, the template is reached, in its own words.
    let report =
        simulate_with_template("trigger: {image: podinfo:2}\nmetrics: {t: [error], q: 0}\n");
    let text = texts(&report);
    assert!(
        text.iter()
            .any(|l| l.starts_with("Metric query failed for t: ")),
        "{text:#?}"
    );
    let report =
        simulate_with_template("trigger: {image: podinfo:2}\nmetrics: {t: 0, q: [nodata]}\n");
    let text = texts(&report);
    assert!(
        text.iter()
            .any(|l| l == "Halt advancement no values found for metric: q"),
        "{text:#?}"
    );
}

#[test]
fn failed_checks_keep_their_count_when_the_canary_succeeds() {
    let report = simulate(
        GUIDE,
        "trigger: {image: podinfo:2}\nmetrics: {request-success-rate: [100, 50, 100]}\n",
    );
    assert_eq!(report.phase, Phase::Succeeded);
    let last = report.records.last().expect("records");
    assert_eq!(last.phase, Phase::Succeeded);
    assert_eq!(last.failed_checks, 1);
}

#[test]
fn post_rollout_hooks_report_before_the_promotion_completes() {
    let canary = with_webhooks(&hook("notify", "post-rollout"));
    let report = simulate(&canary, "trigger: {image: podinfo:2}\n");
    assert_eq!(report.phase, Phase::Succeeded);
    let text = texts(&report);
    assert_eq!(
        text[text.len() - 2..],
        [
            "Post-rollout check notify passed",
            "Promotion completed! Scaling down podinfo.test",
        ]
    );
}

#[test]
fn a_metric_that_reads_infinity_fails_its_check() {
    let report = simulate(
        GUIDE,
        "trigger: {image: podinfo:2}\nmetrics: {request-success-rate: .inf}\n",
    );
    assert_eq!(report.phase, Phase::Failed);
    assert!(
        texts(&report)
            .iter()
            .any(|l| l.ends_with("request-success-rate returned no finite number (inf)")),
        "{:#?}",
        texts(&report)
    );
}

#[test]
fn templates_of_providers_fledge_refuses_fail_to_load_naming_the_field() {
    for kind in ["keptn", "externalmetrics"] {
        let targets = [
            (
                "deployment.yaml".to_string(),
                load::PODINFO_DEPLOYMENT.to_string(),
            ),
            ("hpa.yaml".to_string(), load::PODINFO_HPA.to_string()),
            (
                "template.yaml".to_string(),
                TEMPLATE.replace("type: prometheus", &format!("type: {kind}")),
            ),
        ];
        let Err(err) = load("canary.yaml", &with_template_and_query(), &targets) else {
            panic!("a {kind} template must not load");
        };
        let text = err.to_string();
        assert!(
            text.contains("MetricTemplate not-found-percentage: spec.provider.type")
                && text.contains(&format!("`{kind}` is not supported by Fledge"))
                && text.contains("query the backend"),
            "{text}"
        );
    }
}
