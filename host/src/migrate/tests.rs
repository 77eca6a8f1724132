//! The conversion of the guide's Canaries, field by field; the report; the
//! templates of both gateway kinds down to the requests they make; webhooks.
use super::webhooks::{rewrite, Rewrite};
use super::*;
use crate::api::{self, yaml, CanaryMetric, MetricTemplate};
use std::path::PathBuf;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/podinfo")
}

/// Every Canary document of examples/podinfo, with its file name.
fn guide_canaries() -> Vec<(String, Canary)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for p in files {
        let text = std::fs::read_to_string(&p).unwrap();
        for doc in yaml::documents(&text).unwrap() {
            // The App Mesh ones; a Gateway API example is refused (below).
            let appmesh = doc["spec"]["provider"]
                .as_str()
                .is_none_or(|p| p.starts_with("appmesh"));
            if doc["kind"] == "Canary" && appmesh {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                out.push((name, yaml::typed(&doc).unwrap()));
            }
        }
    }
    out
}

fn opts(kind: GatewayKind) -> Options {
    Options {
        gateways: vec!["gateway-system/gateway/http".parse().unwrap()],
        hosts: Vec::new(),
        kind,
        gateway_address: Some("http://gateway.gateway-system".into()),
        metrics_namespace: None,
        region: Some("eu-west-1".into()),
    }
}

fn one(c: &Canary, o: &Options) -> Migration {
    migrate(
        &Input {
            canaries: vec![c.clone()],
            templates: Vec::new(),
        },
        o,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn finding<'a>(m: &'a Migration, field: &str) -> &'a Finding {
    m.findings
        .iter()
        .find(|f| f.field == field)
        .unwrap_or_else(|| panic!("no finding for {field}: {:#?}", m.findings))
}

fn metric<'a>(c: &'a Canary, name: &str) -> &'a CanaryMetric {
    c.spec
        .as_ref()
        .unwrap()
        .analysis
        .as_ref()
        .unwrap()
        .metrics
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name.as_deref() == Some(name))
        .unwrap()
}

fn cmd(c: &Canary, webhook: &str) -> String {
    let hooks = c
        .spec
        .as_ref()
        .unwrap()
        .analysis
        .as_ref()
        .unwrap()
        .webhooks
        .as_ref()
        .unwrap();
    let w = hooks
        .iter()
        .find(|w| w.name.as_deref() == Some(webhook))
        .unwrap();
    w.metadata.as_ref().unwrap()["cmd"].clone()
}

#[test]
fn every_guide_canary_converts_and_keeps_what_gateway_api_keeps() {
    let canaries = guide_canaries();
    assert_eq!(canaries.len(), 3, "the guide's three Canaries");
    for (file, before) in canaries {
        let m = one(&before, &opts(GatewayKind::EnvoyGateway));
        assert_eq!(m.canaries.len(), 1, "{file}");
        let after = &m.canaries[0];
        let (b, a) = (before.spec.as_ref().unwrap(), after.spec.as_ref().unwrap());
        assert_eq!(a.provider.as_deref(), Some("gatewayapi:v1"), "{file}");
        let (bs, s) = (b.service.as_ref().unwrap(), a.service.as_ref().unwrap());
        let refs = s.gateway_refs.as_ref().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(
            (
                refs[0].namespace.as_deref(),
                refs[0].name.as_deref(),
                refs[0].section_name.as_deref()
            ),
            (Some("gateway-system"), Some("gateway"), Some("http")),
            "{file}"
        );
        assert_eq!(
            s.hosts.as_deref(),
            Some(&["podinfo.test".to_string()][..]),
            "{file}"
        );
        // App Mesh only: gone.
        assert_eq!(
            (&s.retries, &s.mesh_name, &s.backends, &s.rewrite),
            (&None, &None, &None, &None),
            "{file}"
        );
        assert!(bs.retries.is_some(), "{file}: the guide sets retries");
        // Kept as written.
        assert_eq!(
            (s.port, &s.timeout, &s.match_),
            (bs.port, &bs.timeout, &bs.match_),
            "{file}"
        );
        assert_eq!(a.target_ref, b.target_ref, "{file}");
        assert_eq!(a.autoscaler_ref, b.autoscaler_ref, "{file}");
        assert_eq!(
            a.progress_deadline_seconds, b.progress_deadline_seconds,
            "{file}"
        );
        assert_eq!(after.metadata.name, before.metadata.name);
        assert_eq!(after.metadata.namespace, before.metadata.namespace);
        let (ba, aa) = (b.analysis.as_ref().unwrap(), a.analysis.as_ref().unwrap());
        assert_eq!(
            (
                aa.interval.as_deref(),
                aa.threshold,
                aa.max_weight,
                aa.step_weight,
                aa.iterations
            ),
            (
                ba.interval.as_deref(),
                ba.threshold,
                ba.max_weight,
                ba.step_weight,
                ba.iterations
            ),
            "{file}"
        );
        assert_eq!(
            aa.match_, ba.match_,
            "{file}: exact and regex matches carry over"
        );
        assert_eq!(
            aa.webhooks.as_ref().map(Vec::len),
            ba.webhooks.as_ref().map(Vec::len)
        );
        // The retries are reported, naming the field and the reason.
        let r = finding(&m, "spec.service.retries");
        assert_eq!(r.severity, Severity::NotConverted);
        assert!(
            r.reason.contains("v1.6.3") && r.reason.contains("BackendTrafficPolicy"),
            "{r}"
        );
        assert_eq!(r.canary, "test/podinfo");
    }
}

#[test]
fn builtin_checks_become_template_refs_keeping_thresholds_and_intervals() {
    let (_, guide) = guide_canaries()
        .into_iter()
        .find(|(f, _)| f == "canary.yaml")
        .unwrap();
    for kind in [GatewayKind::EnvoyGateway, GatewayKind::VpcLattice] {
        let m = one(&guide, &opts(kind));
        let c = &m.canaries[0];
        for (name, before) in [
            (
                "request-success-rate",
                metric(&guide, "request-success-rate"),
            ),
            ("request-duration", metric(&guide, "request-duration")),
        ] {
            let after = metric(c, name);
            let t = after.template_ref.as_ref().expect("a templateRef");
            assert_eq!(
                t.name.as_deref(),
                Some(templates::name(kind, name).as_str())
            );
            assert_eq!(t.namespace, None, "the Canary's namespace");
            assert_eq!(
                after.threshold_range, before.threshold_range,
                "{kind} {name}"
            );
            assert_eq!(after.interval, before.interval, "{kind} {name}");
            // Each reference resolves to a template in the output.
            assert!(
                m.templates.iter().any(|mt| mt.metadata.name == t.name
                    && mt.metadata.namespace.as_deref() == Some("test")),
                "{kind} {name}"
            );
            let vars = after.template_variables.as_ref();
            match kind {
                GatewayKind::EnvoyGateway => assert_eq!(vars, None),
                GatewayKind::VpcLattice => {
                    let tg = &vars.unwrap()[templates::TARGET_GROUP_VARIABLE];
                    assert!(tg.contains("k8s-test-podinfo-canary-"), "{tg}");
                    let f = finding(
                        &m,
                        &format!(
                            "spec.analysis.metrics[{}].templateVariables.targetGroup",
                            if name == "request-success-rate" { 0 } else { 1 }
                        ),
                    );
                    assert_eq!(f.severity, Severity::NotConverted);
                    assert!(
                        f.reason.contains("aws vpc-lattice list-target-groups"),
                        "{f}"
                    );
                }
            }
        }
        assert_eq!(m.templates.len(), 2, "{kind}");
    }
    // --metrics-namespace moves the templates and names them in the refs.
    let mut o = opts(GatewayKind::EnvoyGateway);
    o.metrics_namespace = Some("flagger-system".into());
    let m = one(&guide, &o);
    assert!(m
        .templates
        .iter()
        .all(|t| t.metadata.namespace.as_deref() == Some("flagger-system")));
    assert_eq!(
        metric(&m.canaries[0], "request-duration")
            .template_ref
            .as_ref()
            .unwrap()
            .namespace
            .as_deref(),
        Some("flagger-system")
    );
    // The A/B Canaries have no builtin checks: no templates.
    let (_, ab) = guide_canaries()
        .into_iter()
        .find(|(f, _)| f == "canary-ab-header.yaml")
        .unwrap();
    assert!(one(&ab, &opts(GatewayKind::EnvoyGateway))
        .templates
        .is_empty());
}

#[test]
fn load_tests_go_through_the_gateway_and_acceptance_tests_stay() {
    let (_, guide) = guide_canaries()
        .into_iter()
        .find(|(f, _)| f == "canary.yaml")
        .unwrap();
    let m = one(&guide, &opts(GatewayKind::EnvoyGateway));
    let c = &m.canaries[0];
    assert_eq!(
        cmd(c, "load-test"),
        "hey -z 1m -q 10 -c 2 -host podinfo.test http://gateway.gateway-system/"
    );
    // A pre-rollout check of the canary itself needs no split.
    assert_eq!(cmd(c, "acceptance-test"), cmd(&guide, "acceptance-test"));
    assert_eq!(
        finding(&m, "spec.analysis.webhooks[1] (load-test).metadata.cmd").severity,
        Severity::Changed
    );

    // The A/B test keeps its header, now through the gateway, with the host given.
    let (_, ab) = guide_canaries()
        .into_iter()
        .find(|(f, _)| f == "canary-ab-cookie.yaml")
        .unwrap();
    let mut o = opts(GatewayKind::EnvoyGateway);
    o.hosts = vec!["podinfo.example.com".into()];
    let m = one(&ab, &o);
    assert_eq!(
        cmd(&m.canaries[0], "load-test"),
        "hey -z 1m -q 10 -c 2 -H 'Cookie: canary=insider' -host podinfo.example.com http://gateway.gateway-system/"
    );
    assert_eq!(
        m.canaries[0]
            .spec
            .as_ref()
            .unwrap()
            .service
            .as_ref()
            .unwrap()
            .hosts,
        Some(vec!["podinfo.example.com".to_string()])
    );

    // Without --gateway-address the load test is kept and reported.
    let mut o = opts(GatewayKind::EnvoyGateway);
    o.gateway_address = None;
    let m = one(&guide, &o);
    assert_eq!(cmd(&m.canaries[0], "load-test"), cmd(&guide, "load-test"));
    let f = finding(&m, "spec.analysis.webhooks[1] (load-test).metadata.cmd");
    assert_eq!(f.severity, Severity::NotConverted);
    assert!(
        f.reason.contains("http://podinfo-canary.test:9898/")
            && f.reason.contains("Host: podinfo.test"),
        "{f}"
    );
}

#[test]
fn webhook_commands_are_rewritten_only_where_they_reach_the_canary() {
    let gw = Some("http://gw.gateway-system:8080/");
    let rw = |c: &str, a| rewrite(c, "podinfo", "test", "podinfo.test", a);
    assert_eq!(
        rw("curl -sd 'test' 'http://podinfo.test.svc.cluster.local:9898/token' | grep token", gw),
        Rewrite::Rewritten(
            "curl -sd 'test' -H 'Host: podinfo.test' 'http://gw.gateway-system:8080/token' | grep token".into()
        )
    );
    assert_eq!(
        rw("hey -z 1m http://podinfo-primary:9898", gw),
        Rewrite::Rewritten("hey -z 1m -host podinfo.test http://gw.gateway-system:8080/".into())
    );
    for other in [
        "curl http://flagger-loadtester.test/",
        "hey http://podinfo.other:9898/",
        "hey http://podinfo-canaryx.test:9898/",
        "helm test podinfo",
    ] {
        assert_eq!(rw(other, gw), Rewrite::Unchanged, "{other}");
    }
    match rw("wrk -d 1m http://podinfo-canary.test:9898/", gw) {
        Rewrite::Report(why) => assert!(
            why.contains("\"wrk\"") && why.contains("Host: podinfo.test"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    match rw("curl -H 'Host: x' http://podinfo.test:9898/", gw) {
        Rewrite::Report(why) => assert!(why.contains("already sets a Host header"), "{why}"),
        other => panic!("{other:?}"),
    }
}

fn with(yaml_patch: &str) -> Canary {
    let base = std::fs::read_to_string(examples().join("canary.yaml")).unwrap();
    yaml::from_str(&format!("{base}{yaml_patch}")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn app_mesh_only_fields_are_removed_and_reported_with_the_reason() {
    let mut c = with("");
    {
        let s = c.spec.as_mut().unwrap().service.as_mut().unwrap();
        s.mesh_name = Some("global".into());
        s.backends = Some(vec!["backend.test".into()]);
        s.rewrite.as_mut().unwrap().uri = Some("/api".into());
    }
    c.metadata.annotations = Some(
        [
            (
                "appmesh.flagger.app/accesslog".to_string(),
                "enabled".to_string(),
            ),
            ("team".to_string(), "web".to_string()),
        ]
        .into(),
    );
    let m = one(&c, &opts(GatewayKind::VpcLattice));
    let out = &m.canaries[0];
    let s = out.spec.as_ref().unwrap().service.as_ref().unwrap();
    assert_eq!(
        (&s.mesh_name, &s.backends, &s.rewrite),
        (&None, &None, &None)
    );
    assert_eq!(
        out.metadata.annotations,
        Some([("team".to_string(), "web".to_string())].into())
    );
    for (field, words) in [
        ("spec.service.meshName", "\"global\""),
        ("spec.service.backends", "backend.test"),
        ("spec.service.rewrite", "URLRewrite"),
        (
            "metadata.annotations.appmesh.flagger.app/accesslog",
            "AccessLogPolicy",
        ),
        ("spec.service.retries", "attempts 3, perTryTimeout 5s"),
    ] {
        let f = finding(&m, field);
        assert_eq!(f.severity, Severity::NotConverted, "{field}");
        assert!(f.reason.contains(words), "{field}: {}", f.reason);
    }
    assert_eq!(
        finding(&m, "spec.service.timeout").severity,
        Severity::Changed
    );
    let report = m.report();
    assert!(
        report.starts_with(
            "Not converted (act on each before switching):\n  test/podinfo spec.service.meshName: "
        ),
        "{report}"
    );
    assert!(report.contains("\nConverted with changes:\n"), "{report}");

    // The guide's rewrite of / to / is a no-op: removed, not a loss.
    let m = one(&with(""), &opts(GatewayKind::EnvoyGateway));
    assert_eq!(
        finding(&m, "spec.service.rewrite").severity,
        Severity::Changed
    );
}

#[test]
fn ab_conditions_the_router_refuses_are_reported_and_kept() {
    let mut c = with("");
    let a = c.spec.as_mut().unwrap().analysis.as_mut().unwrap();
    a.match_ = Some(vec![yaml::from_str(
        "headers:\n  x-canary:\n    prefix: insider\nqueryParams:\n  canary:\n    exact: \"1\"\n",
    )
    .unwrap()]);
    a.iterations = Some(10);
    a.max_weight = None;
    a.step_weight = None;
    let m = one(&c, &opts(GatewayKind::EnvoyGateway));
    let f = finding(&m, "spec.analysis.match[0].queryParams");
    assert_eq!(f.severity, Severity::NotConverted);
    assert!(f.reason.contains("headers only"), "{f}");
    // Kept, so the router refuses the Canary instead of matching every request.
    let after = &m.canaries[0]
        .spec
        .as_ref()
        .unwrap()
        .analysis
        .as_ref()
        .unwrap()
        .match_;
    assert_eq!(
        after,
        &c.spec.as_ref().unwrap().analysis.as_ref().unwrap().match_
    );
}

#[test]
fn templates_reading_sidecars_are_reported() {
    let mut c = with("");
    c.spec
        .as_mut()
        .unwrap()
        .analysis
        .as_mut()
        .unwrap()
        .metrics
        .as_mut()
        .unwrap()
        .push(
            yaml::from_str(
                "name: errors\ntemplateRef: {name: mesh-errors}\nthresholdRange: {max: 1}\n",
            )
            .unwrap(),
        );
    let t: MetricTemplate = yaml::from_str(
        "apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata: {name: mesh-errors, namespace: test}\n\
         spec:\n  provider: {type: prometheus, address: http://prometheus:9090}\n  query: sum(rate(envoy_cluster_upstream_rq{kubernetes_pod_name=~\"podinfo-.*\"}[1m]))\n").unwrap();
    let m = migrate(
        &Input {
            canaries: vec![c],
            templates: vec![t],
        },
        &opts(GatewayKind::EnvoyGateway),
    )
    .unwrap();
    let f = finding(&m, "spec.analysis.metrics[2] (errors)");
    assert_eq!(f.severity, Severity::NotConverted);
    assert!(f.reason.contains("kubernetes_pod_name"), "{f}");
}

#[test]
fn bad_input_is_an_error_naming_the_field_and_the_fix() {
    let o = opts(GatewayKind::EnvoyGateway);
    let err = |c: Canary, o: &Options| {
        format!(
            "{:#}",
            migrate(
                &Input {
                    canaries: vec![c],
                    templates: vec![]
                },
                o
            )
            .unwrap_err()
        )
    };
    let mut gw = with("");
    gw.spec.as_mut().unwrap().provider = Some("gatewayapi:v1".into());
    let e = err(gw, &o);
    assert!(
        e.contains("Canary test/podinfo: spec.provider: already \"gatewayapi:v1\"")
            && e.contains("leave it out"),
        "{e}"
    );
    let mut istio = with("");
    istio.spec.as_mut().unwrap().provider = Some("istio".into());
    assert!(err(istio, &o).contains("spec.provider: \"istio\" is not App Mesh"));
    let mut bad = with("");
    bad.spec
        .as_mut()
        .unwrap()
        .analysis
        .as_mut()
        .unwrap()
        .step_weight = Some(0);
    let e = err(bad, &o);
    assert!(
        e.contains("spec.analysis") && e.contains("set stepWeight"),
        "{e}"
    );
    let e = err(
        with(""),
        &Options {
            gateways: vec![],
            ..o.clone()
        },
    );
    assert!(
        e.contains("--gateway is required") && e.contains("NAMESPACE/NAME"),
        "{e}"
    );
    let e = err(
        with(""),
        &Options {
            kind: GatewayKind::VpcLattice,
            region: None,
            ..o.clone()
        },
    );
    assert!(e.contains("--region is required"), "{e}");
    let e = err(
        with(""),
        &Options {
            gateway_address: Some("gateway:80/x".into()),
            ..o.clone()
        },
    );
    assert!(e.contains("--gateway-address"), "{e}");
    assert!("gateway"
        .parse::<GatewayRef>()
        .unwrap_err()
        .contains("NAMESPACE/NAME[/SECTION]"));
    assert_eq!("ns/gw".parse::<GatewayRef>().unwrap().section, None);

    // Every other Canary of the examples is refused by name.
    for entry in std::fs::read_dir(examples()).unwrap() {
        let p = entry.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        if !text.contains("provider: gatewayapi") {
            continue;
        }
        let e = format!("{:#}", migrate_files(&[&p], &o).unwrap_err());
        assert!(
            e.contains("spec.provider: already \"gatewayapi:v1\""),
            "{}: {e}",
            p.display()
        );
    }

    let mut input = Input::default();
    let e = input
        .add_yaml(
            &std::fs::read_to_string(examples().join("deployment.yaml")).unwrap(),
            "deployment.yaml",
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("deployment.yaml (document 1): kind:") && e.contains("is not a Canary"),
        "{e}"
    );
}

#[test]
fn cluster_objects_lose_status_and_server_metadata() {
    let text = std::fs::read_to_string(examples().join("canary.yaml")).unwrap();
    let mut doc = yaml::documents(&text).unwrap().remove(0);
    doc["metadata"]["uid"] = "1234".into();
    doc["metadata"]["resourceVersion"] = "99".into();
    doc["metadata"]["annotations"] =
        serde_json::json!({"kubectl.kubernetes.io/last-applied-configuration": "{}"});
    doc["status"] = serde_json::json!({"phase": "Succeeded"});
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [doc]});
    let mut input = Input::default();
    input.add_object(list, "cluster").unwrap();
    let m = migrate(&input, &opts(GatewayKind::EnvoyGateway)).unwrap();
    let c = &m.canaries[0];
    assert_eq!(
        (
            c.metadata.uid.as_ref(),
            c.metadata.resource_version.as_ref()
        ),
        (None, None)
    );
    assert_eq!(
        (c.metadata.annotations.as_ref(), c.status.as_ref()),
        (None, None)
    );
}

/// The output of migrating the guide reads back as Canaries and
/// MetricTemplates, strictly, and carries every object.
#[test]
fn the_output_of_the_guide_is_valid_for_the_gateway_api_router() {
    let paths: Vec<PathBuf> = guide_canaries()
        .iter()
        .map(|(f, _)| examples().join(f))
        .collect();
    for kind in [GatewayKind::EnvoyGateway, GatewayKind::VpcLattice] {
        let m = migrate_files(&paths, &opts(kind)).unwrap();
        let mut back = Input::default();
        back.add_yaml(&m.to_yaml(), "output").unwrap();
        assert_eq!(back.canaries.len(), 3);
        for c in &back.canaries {
            let v = api::validate(c).unwrap_or_else(|e| {
                panic!(
                    "{kind} {}: {}",
                    c.name(),
                    e.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            });
            // Nothing App Mesh-only is left for the router to ignore.
            let left: Vec<String> = v.warnings.iter().map(|w| w.to_string()).collect();
            assert!(
                left.iter()
                    .all(|w| !w.contains("not used with gatewayapi:v1")),
                "{kind}: {left:?}"
            );
            for m in &v.rollout.metrics {
                assert!(
                    matches!(
                        m.source,
                        crate::core::rollout::MetricSource::Template { .. }
                    ),
                    "{kind}: {} is a template check",
                    m.name
                );
            }
        }
    }
}

#[test]
fn the_output_of_the_guide_reads_back() {
    let paths: Vec<PathBuf> = ["canary.yaml", "canary-ab-header.yaml"]
        .iter()
        .map(|f| examples().join(f))
        .collect();
    let m = migrate_files(&paths, &opts(GatewayKind::VpcLattice)).unwrap();
    let yaml_out = m.to_yaml();
    let mut back = Input::default();
    back.add_yaml(&yaml_out, "output").unwrap();
    assert_eq!(back.canaries, m.canaries);
    assert_eq!(back.templates, m.templates);
    assert_eq!((back.canaries.len(), back.templates.len()), (2, 2));
    assert!(
        yaml_out.starts_with("---\napiVersion: flagger.app/v1beta1\nkind: MetricTemplate\n"),
        "{yaml_out}"
    );
    for t in &back.templates {
        assert_eq!(
            t.spec
                .as_ref()
                .unwrap()
                .provider
                .as_ref()
                .unwrap()
                .region
                .as_deref(),
            Some("eu-west-1")
        );
    }
}

// --- the templates' queries, rendered as the operator renders them ---

fn rollout_of_guide() -> crate::core::rollout::Rollout {
    api::validate(&with("")).unwrap().rollout
}

fn rendered(t: &MetricTemplate, vars: &[(&str, &str)]) -> String {
    let r = rollout_of_guide();
    let mut m = r.metrics[0].clone();
    m.variables = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    crate::operator::metrics::render(
        t.spec.as_ref().unwrap().query.as_deref().unwrap(),
        &r,
        &m,
        "1m",
    )
    .unwrap()
}

#[test]
fn envoy_gateway_templates_read_the_routes_first_rule() {
    let ts = templates::for_gateway(GatewayKind::EnvoyGateway, "test", None);
    let by = |n: &str| {
        ts.iter()
            .find(|t| t.metadata.name.as_deref() == Some(n))
            .unwrap()
    };
    let sr = by("envoy-gateway-success-rate");
    assert_eq!(
        sr.spec
            .as_ref()
            .unwrap()
            .provider
            .as_ref()
            .unwrap()
            .type_
            .as_deref(),
        Some("prometheus")
    );
    assert_eq!(
        sr.spec.as_ref().unwrap().provider.as_ref().unwrap().address,
        None
    );
    assert_eq!(
        rendered(sr, &[]),
        "sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=\"httproute/test/podinfo/rule/0\", envoy_response_code!~\"5.*\"}[1m])) / \
         sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=\"httproute/test/podinfo/rule/0\"}[1m])) * 100"
    );
    assert_eq!(
        rendered(by("envoy-gateway-latency-p99"), &[]),
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"httproute/test/podinfo/rule/0\"}[1m])) by (le))"
    );
}

mod vpc_lattice {
    use super::*;
    use crate::metrics::aws::Chain;
    use crate::metrics::cloudwatch::CloudWatch;
    use crate::metrics::env::Env;
    use crate::metrics::testserver::{clients, Answering};
    use crate::metrics::{Answer, Call, Provider, Source};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    const NOW: u64 = 1_764_547_200; // 2025-12-01T00:00:00Z

    /// The request CloudWatch gets for `t`, rendered for the guide's Canary
    /// with its target group, and the answer made of `reply`.
    async fn ask(t: &MetricTemplate, reply: &'static str) -> (serde_json::Value, Answer) {
        let server = Answering::start(move |_| (200, reply.into()));
        let secret = BTreeMap::new();
        let cw = CloudWatch::new(
            &Source {
                spec: t.spec.as_ref().unwrap().provider.as_ref().unwrap(),
                secret: &secret,
                interval: Duration::from_secs(60),
                default_address: "http://prometheus:9090",
            },
            Arc::new(Chain::new(Env::from_pairs([
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_ENDPOINT_URL_CLOUDWATCH", server.base.as_str()),
            ]))),
        )
        .unwrap();
        let query = rendered(t, &[("targetGroup", "tg-0123456789abcdef0")]);
        let http = clients();
        let call = Call {
            http: &http,
            now: UNIX_EPOCH + Duration::from_secs(NOW),
        };
        let answer = cw.query(&call, &query).await;
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert!(seen[0]
            .header("authorization")
            .unwrap()
            .contains("/eu-west-1/monitoring/aws4_request"));
        (serde_json::from_str(&seen[0].body).unwrap(), answer)
    }

    fn stat(metric: &str, stat: &str) -> serde_json::Value {
        serde_json::json!({"Metric": {"Namespace": "AWS/VpcLattice", "MetricName": metric,
            "Dimensions": [{"Name": "TargetGroup", "Value": "tg-0123456789abcdef0"}]},
            "Period": 60, "Stat": stat})
    }

    #[tokio::test]
    async fn the_success_rate_asks_for_the_canary_target_groups_5xx_and_requests() {
        let ts = templates::for_gateway(GatewayKind::VpcLattice, "test", Some("eu-west-1"));
        let t = ts
            .iter()
            .find(|t| t.metadata.name.as_deref() == Some("vpc-lattice-success-rate"))
            .unwrap();
        let (body, answer) = ask(t, r#"{"MetricDataResults":[{"Id":"success","Label":"SuccessRate","StatusCode":"Complete","Timestamps":[1764547140],"Values":[99.5]}]}"#).await;
        assert_eq!(answer, Answer::Value(99.5));
        assert_eq!(
            body,
            serde_json::json!({
                "MetricDataQueries": [
                    {"Id": "success", "Expression": "100 - 100 * FILL(errors, 0) / requests", "Label": "SuccessRate"},
                    {"Id": "errors", "MetricStat": stat("HTTPCode_5XX_Count", "Sum"), "ReturnData": false},
                    {"Id": "requests", "MetricStat": stat("TotalRequestCount", "Sum"), "ReturnData": false},
                ],
                "StartTime": NOW - 600, "EndTime": NOW, "MaxDatapoints": 20,
            })
        );
    }

    #[tokio::test]
    async fn the_duration_asks_for_the_p99_of_request_time() {
        let ts = templates::for_gateway(GatewayKind::VpcLattice, "test", Some("eu-west-1"));
        let t = ts
            .iter()
            .find(|t| t.metadata.name.as_deref() == Some("vpc-lattice-latency-p99"))
            .unwrap();
        let (body, answer) = ask(t, r#"{"MetricDataResults":[{"Id":"p99","StatusCode":"Complete","Timestamps":[],"Values":[]}]}"#).await;
        assert_eq!(
            answer,
            Answer::NoValues,
            "no requests is no data, never a pass"
        );
        assert_eq!(
            body["MetricDataQueries"],
            serde_json::json!([
                {"Id": "p99", "MetricStat": stat("RequestTime", "p99"), "ReturnData": true}
            ])
        );
    }
}
