use super::*;
use fledge_policy::WebhookKind;

const GUIDE: &str = include_str!("../../../../examples/podinfo/canary.yaml");

fn canary(text: &str) -> Canary {
    let doc = crate::api::yaml::documents(text).expect("parses").remove(0);
    crate::api::yaml::typed(&doc).expect("parses")
}

fn errors(text: &str) -> Vec<String> {
    match validate(&canary(text)) {
        Ok(_) => vec![],
        Err(issues) => issues.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_guide_canaries_are_valid() {
    let v = validate(&canary(GUIDE)).expect("valid");
    assert_eq!(v.rollout.analysis.max_weight, Some(50));
    assert_eq!(v.rollout.analysis.step_weight, Some(5));
    assert_eq!(v.rollout.analysis.threshold, 5);
    assert_eq!(v.rollout.metrics.len(), 2);
    assert_eq!(v.rollout.metrics[1].max, Some(500.0));
    assert_eq!(v.rollout.webhooks[0].kind, WebhookKind::PreRollout);
    assert_eq!(v.rollout.webhooks[1].kind, WebhookKind::Rollout);
    assert_eq!(v.rollout.progress_deadline, Duration::from_secs(60));
    // `rewrite` is in the guide but App Mesh never used it.
    assert!(v.warnings.iter().any(|w| w.field == "spec.service.rewrite"));
    for ab in [
        include_str!("../../../../examples/podinfo/canary-ab-header.yaml"),
        include_str!("../../../../examples/podinfo/canary-ab-cookie.yaml"),
    ] {
        let v = validate(&canary(ab)).expect("valid");
        assert_eq!(v.rollout.strategy, fledge_policy::Strategy::AbTesting);
        assert_eq!(v.rollout.analysis.match_rules.len(), 1);
    }
}

#[test]
fn each_mistake_names_the_field_and_the_fix() {
    let cases = [
        (
            "    kind: Deployment\n    name: podinfo\n",
            "    kind: Deployment\n    name: \"\"\n",
            "spec.targetRef.name: missing",
        ),
        (
            "stepWeight: 5",
            "stepWeight: 101",
            "spec.analysis.stepWeight: 101 is outside 1..=100",
        ),
        (
            "maxWeight: 50",
            "maxWeight: -1",
            "spec.analysis.maxWeight: -1 is outside 1..=100",
        ),
        (
            "stepWeight: 5",
            "stepWeights: [10, 5]",
            "spec.analysis.stepWeights[1]: 5 is not above the previous step",
        ),
        (
            "stepWeight: 5",
            "stepWeight: 5\n    iterations: 10",
            "spec.analysis.iterations: set together with stepWeight/stepWeights",
        ),
        (
            "interval: 1m",
            "interval: 1 minute",
            "spec.analysis.interval: `1 minute`",
        ),
        (
            "provider: appmesh:v1beta2",
            "provider: linkerd2",
            "spec.provider: unknown provider `linkerd2`",
        ),
        (
            "provider: appmesh:v1beta2",
            "provider: istio",
            "spec.provider: `istio` is not supported by Fledge",
        ),
        (
            "      thresholdRange:\n        min: 99\n",
            "",
            "spec.analysis.metrics[0] (request-success-rate): has no threshold",
        ),
        (
            "    - name: request-duration",
            "    - name: error-rate",
            "spec.analysis.metrics[1] (error-rate): has no templateRef or query",
        ),
        (
            "      type: pre-rollout",
            "      type: pre-rolout",
            "spec.analysis.webhooks[0] (acceptance-test).type: unknown type `pre-rolout`",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(GUIDE.contains(from), "fixture `{from}`");
        let errs = errors(&GUIDE.replacen(from, to, 1));
        assert!(
            errs.iter()
                .any(|e| e.starts_with(expected) && e.contains("; ")),
            "{expected}: {errs:#?}"
        );
    }
}

#[test]
fn a_missing_target_ref_says_how_to_write_one() {
    let text = GUIDE.replace(
        "  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: podinfo\n",
        "",
    );
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.starts_with("spec.targetRef: missing; set targetRef")),
        "{errs:?}"
    );
}

#[test]
fn header_matches_need_exactly_one_valid_comparison() {
    let ab = include_str!("../../../../examples/podinfo/canary-ab-cookie.yaml");
    let errs = errors(&ab.replace("^(.*?;)?(canary=insider)(;.*)?$", "(unclosed"));
    assert!(
        errs.iter()
            .any(|e| e.contains("match[0].headers.cookie.regex: `(unclosed` does not compile")),
        "{errs:?}"
    );
    let header = include_str!("../../../../examples/podinfo/canary-ab-header.yaml");
    let errs = errors(&header.replace(
        "exact: \"insider\"",
        "exact: \"insider\"\n          prefix: \"in\"",
    ));
    assert!(
        errs.iter()
            .any(|e| e.contains("has 2 comparisons; give exactly one")),
        "{errs:?}"
    );
}

#[test]
fn fields_app_mesh_does_not_use_load_with_warnings() {
    let text = GUIDE.replace(
        "  service:\n",
        "  service:\n    hosts: [app.example.com]\n    gateways: [public-gateway]\n    apex:\n      annotations: {a: b}\n",
    )
    .replace("    threshold: 5\n", "    threshold: 5\n    sessionAffinity: {cookieName: flagger-cookie}\n    mirror: true\n");
    let v = validate(&canary(&text)).expect("loads");
    let fields: Vec<_> = v.warnings.iter().map(|w| w.field.as_str()).collect();
    for f in [
        "spec.service.hosts",
        "spec.service.gateways",
        "spec.analysis.sessionAffinity",
        "spec.analysis.mirror",
    ] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    assert!(!v.rollout.analysis.mirror);
}

#[test]
fn no_analysis_means_skip_analysis() {
    let head = GUIDE
        .split("  # define the canary analysis")
        .next()
        .expect("head");
    let v = validate(&canary(head)).expect("valid");
    assert!(v.rollout.skip_analysis);
}

#[test]
fn lists_are_capped_so_no_canary_grows_the_policy_input_without_bound() {
    let metric = "    - name: request-duration\n      thresholdRange:\n        max: 500\n";
    let many = GUIDE.replacen(
        "    - name: request-duration\n",
        &format!("{}    - name: request-duration\n", metric.repeat(64)),
        1,
    );
    let errs = errors(&many);
    assert!(
        errs.iter()
            .any(|e| e
                == "spec.analysis.metrics: 66 entries, more than the 64 allowed; list at most 64"),
        "{errs:#?}"
    );
    let hook = "    - name: h\n      type: rollout\n      url: http://h/\n";
    let many = GUIDE.replacen(
        "    - name: load-test\n",
        &format!("{}    - name: load-test\n", hook.repeat(64)),
        1,
    );
    assert!(errors(&many)
        .iter()
        .any(|e| e.starts_with("spec.analysis.webhooks: 66 entries, more than the 64 allowed")));
    let header = include_str!("../../../../examples/podinfo/canary-ab-header.yaml");
    let rule = "    - headers:\n        x-canary:\n          exact: \"insider\"\n";
    let many = header.replacen(rule, &rule.repeat(33), 1);
    assert!(errors(&many)
        .iter()
        .any(|e| e.starts_with("spec.analysis.match: 33 entries, more than the 32 allowed")));
    let headers: String = (0..17)
        .map(|i| format!("        h{i}:\n          exact: x\n"))
        .collect();
    let many = header.replacen(
        "        x-canary:\n          exact: \"insider\"\n",
        &headers,
        1,
    );
    assert!(errors(&many)
        .iter()
        .any(|e| e
            .starts_with("spec.analysis.match[0].headers: 17 headers, more than the 16 allowed")));
}

#[test]
fn numbers_outside_their_ranges_name_the_range() {
    for (from, to, expected) in [
        (
            "progressDeadlineSeconds: 60",
            "progressDeadlineSeconds: 0",
            "spec.progressDeadlineSeconds: 0 is outside 1..=604800 (seven days)",
        ),
        (
            "timeout: 5s\n",
            "timeout: 5s\n      retries: 1000\n",
            "spec.analysis.webhooks[1] (load-test).retries: 1000 is outside 0..=100",
        ),
        (
            "attempts: 3",
            "attempts: -1",
            "spec.service.retries.attempts: -1 is outside 0..=100",
        ),
        (
            "      interval: 30s",
            "      interval: 48h",
            "spec.analysis.metrics[1] (request-duration).interval: `48h` is longer than the 24h maximum",
        ),
    ] {
        assert!(GUIDE.contains(from), "fixture `{from}`");
        let errs = errors(&GUIDE.replacen(from, to, 1));
        assert!(errs.iter().any(|e| e.starts_with(expected)), "{expected}: {errs:#?}");
    }
}

const GATEWAY: &str = include_str!("../../../../examples/podinfo/canary-gatewayapi.yaml");

#[test]
fn gatewayapi_v1_is_accepted_and_needs_gateway_refs() {
    let v = validate(&canary(GATEWAY)).expect("valid");
    assert_eq!(v.rollout.provider, "gatewayapi:v1");
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let without = GATEWAY.replace(
        "    gatewayRefs:\n      - name: gateway\n        namespace: gateway-system\n",
        "",
    );
    let e = errors(&without);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("spec.service.gatewayRefs: missing")
            && e[0].contains("gatewayRefs: [{name: gateway, namespace: gateway-system}]"),
        "{e:?}"
    );
    let nameless = GATEWAY.replace("      - name: gateway\n", "      - name: \"\"\n");
    assert!(errors(&nameless)
        .iter()
        .any(|e| e.starts_with("spec.service.gatewayRefs[0].name: missing")));
}

#[test]
fn gatewayapi_v1beta1_and_bare_gatewayapi_say_to_write_v1() {
    for p in ["gatewayapi:v1beta1", "gatewayapi"] {
        let e = errors(&GATEWAY.replace("provider: gatewayapi:v1", &format!("provider: {p}")));
        assert!(
            e.iter().any(
                |e| e.starts_with(&format!("spec.provider: `{p}` is not supported"))
                    && e.contains("write provider: gatewayapi:v1")
            ),
            "{p}: {e:?}"
        );
    }
}

#[test]
fn app_mesh_settings_under_gatewayapi_are_ignored_with_a_warning() {
    let text = GATEWAY
        .replace(
            "  name: podinfo\n  namespace: test\n",
            "  name: podinfo\n  namespace: test\n  annotations:\n    appmesh.flagger.app/accesslog: enabled\n",
        )
        .replace(
            "    timeout: 15s\n",
            "    timeout: 15s\n    meshName: global\n    backends: [backend.test]\n    retries: {attempts: 3}\n",
        );
    let v = validate(&canary(&text)).expect("valid");
    let fields: Vec<&str> = v.warnings.iter().map(|w| w.field.as_str()).collect();
    for f in [
        "spec.service.meshName",
        "spec.service.backends",
        "spec.service.retries",
        "metadata.annotations.appmesh.flagger.app/accesslog",
    ] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }
    assert!(v
        .warnings
        .iter()
        .all(|w| w.fix.contains("ignored") && !w.problem.contains("App Mesh router")));
    // hosts and gatewayRefs are used, so not warned about.
    assert!(!fields
        .iter()
        .any(|f| f.contains("hosts") || f.contains("gatewayRefs")));
}

#[test]
fn gatewayapi_refuses_conditions_an_http_route_would_drop() {
    let ab = GATEWAY.replace("    stepWeight: 5\n", "").replace(
        "    threshold: 5\n",
        "    threshold: 5\n    iterations: 10\n    match:\n      - headers:\n          x-canary:\n            suffix: \"-beta\"\n        queryParams:\n          canary:\n            exact: \"1\"\n",
    );
    let e = errors(&ab);
    assert!(
        e.iter()
            .any(|e| e.starts_with("spec.analysis.match[0].queryParams: ")
                && e.contains("headers only")),
        "{e:?}"
    );
    // The suffix header itself is expressible (as a regex).
    assert!(!e.iter().any(|e| e.contains("headers.x-canary")), "{e:?}");
    let authority = GATEWAY.replace(
        "      - uri:\n          prefix: /\n",
        "      - uri:\n          prefix: /\n        authority:\n          exact: podinfo.example.com\n",
    );
    let e = errors(&authority);
    assert!(
        e.iter()
            .any(|e| e.starts_with("spec.service.match[0].authority: ")),
        "{e:?}"
    );
    // The same conditions are accepted (ignored) under App Mesh.
    assert!(errors(&ab.replace("provider: gatewayapi:v1", "provider: appmesh:v1beta2")).is_empty());
}
