//! The simulator's routing, statuses and metrics, without a cluster.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde_json::{json, Value};

use super::status::keep_transition_times;
use super::*;
use crate::mesh::{Behaviour, Engine, RequestClass, SimConfig};

fn route(ns: &str, name: &str, created: i64, spec: Value) -> HttpRoute {
    HttpRoute::from_spec(ns, name, 3, created, &spec).unwrap()
}

fn req(path: &str) -> RequestClass {
    RequestClass {
        path: path.into(),
        ..RequestClass::default()
    }
}

fn with_headers(mut r: RequestClass, h: &[(&str, &str)]) -> RequestClass {
    r.headers = h
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    r
}

/// `(route name, rule index)` the request selects.
fn pick(routes: &[&HttpRoute], r: &RequestClass) -> Option<(String, usize)> {
    select(routes, r).map(|(rt, i)| (rt.name.clone(), i))
}

fn to(svc: &str) -> Value {
    json!([{"name": svc, "port": 9898}])
}

#[test]
fn path_precedence_exact_then_regex_then_longest_prefix() {
    let r = route(
        "t",
        "r",
        0,
        json!({"rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": to("root")},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api/"}}], "backendRefs": to("api")},
            {"matches": [{"path": {"type": "RegularExpression", "value": "/api/v[0-9]+"}}], "backendRefs": to("re")},
            {"matches": [{"path": {"type": "Exact", "value": "/api/v1"}}], "backendRefs": to("exact")}
        ]}),
    );
    let rs = [&r];
    assert_eq!(pick(&rs, &req("/api/v1")), Some(("r".into(), 3)));
    assert_eq!(pick(&rs, &req("/api/v2")), Some(("r".into(), 2)));
    assert_eq!(pick(&rs, &req("/api/v2/x")), Some(("r".into(), 1)));
    assert_eq!(
        pick(&rs, &req("/api")),
        Some(("r".into(), 1)),
        "trailing slash ignored"
    );
    assert_eq!(
        pick(&rs, &req("/apix")),
        Some(("r".into(), 0)),
        "element-wise prefix"
    );
    assert_eq!(pick(&rs, &req("/")), Some(("r".into(), 0)));
}

#[test]
fn method_then_header_count_then_query_count_then_rule_order() {
    let r = route(
        "t",
        "r",
        0,
        json!({"rules": [
            {"backendRefs": to("plain")},
            {"matches": [{"headers": [{"name": "x-a", "value": "1"}]}], "backendRefs": to("one-header")},
            {"matches": [{"headers": [{"name": "x-a", "value": "1"}, {"name": "x-b", "type": "RegularExpression", "value": "b+"}]}], "backendRefs": to("two-headers")},
            {"matches": [{"method": "POST"}], "backendRefs": to("post")},
            {"matches": [{"queryParams": [{"name": "q", "value": "1"}]}], "backendRefs": to("query")},
            {"matches": [{"queryParams": [{"name": "q", "value": "1"}]}], "backendRefs": to("query-again")}
        ]}),
    );
    let rs = [&r];
    assert_eq!(pick(&rs, &req("/")), Some(("r".into(), 0)));
    let a = with_headers(req("/"), &[("X-A", "1")]);
    assert_eq!(
        pick(&rs, &a),
        Some(("r".into(), 1)),
        "header names are case-insensitive"
    );
    let ab = with_headers(req("/"), &[("x-a", "1"), ("x-b", "bbb")]);
    assert_eq!(pick(&rs, &ab), Some(("r".into(), 2)));
    let a_bad_regex = with_headers(req("/"), &[("x-a", "1"), ("x-b", "bbc")]);
    assert_eq!(
        pick(&rs, &a_bad_regex),
        Some(("r".into(), 1)),
        "regex matches the whole value"
    );
    // A method match outranks any number of header matches.
    let mut post = ab.clone();
    post.method = "POST".into();
    assert_eq!(pick(&rs, &post), Some(("r".into(), 3)));
    let mut q = req("/");
    q.query.insert("q".into(), "1".into());
    assert_eq!(
        pick(&rs, &q),
        Some(("r".into(), 4)),
        "first rule wins a tie"
    );
    // A header match outranks a query match.
    let mut aq = a.clone();
    aq.query.insert("q".into(), "1".into());
    assert_eq!(pick(&rs, &aq), Some(("r".into(), 1)));
}

#[test]
fn hostnames_then_age_then_name_across_routes() {
    let any = route("t", "any", 10, json!({"rules": [{"backendRefs": to("a")}]}));
    let wild = route(
        "t",
        "wild",
        10,
        json!({"hostnames": ["*.example.com"], "rules": [{"backendRefs": to("w")}]}),
    );
    let exact = route(
        "t",
        "exact",
        10,
        json!({"hostnames": ["app.example.com"], "rules": [{"backendRefs": to("e")}]}),
    );
    let rs = [&any, &wild, &exact];
    let host = |h: &str| RequestClass {
        host: h.into(),
        ..RequestClass::default()
    };
    assert_eq!(pick(&rs, &host("app.example.com")).unwrap().0, "exact");
    assert_eq!(pick(&rs, &host("APP.Example.com")).unwrap().0, "exact");
    assert_eq!(pick(&rs, &host("other.example.com")).unwrap().0, "wild");
    assert_eq!(pick(&rs, &host("a.b.example.com")).unwrap().0, "wild");
    assert_eq!(pick(&rs, &host("example.com")).unwrap().0, "any");
    assert_eq!(pick(&[&wild, &exact], &host("example.org")), None, "404");
    // A more specific path beats an older route only after hostnames tie.
    let older = route(
        "t",
        "zz-older",
        5,
        json!({"rules": [{"backendRefs": to("o")}]}),
    );
    let newer = route(
        "t",
        "aa-newer",
        9,
        json!({"rules": [{"backendRefs": to("n")}]}),
    );
    assert_eq!(pick(&[&newer, &older], &req("/")).unwrap().0, "zz-older");
    let same_age = route(
        "t",
        "aa-same",
        5,
        json!({"rules": [{"backendRefs": to("s")}]}),
    );
    assert_eq!(pick(&[&older, &same_age], &req("/")).unwrap().0, "aa-same");
    let longer = route(
        "t",
        "longer",
        9,
        json!({"rules": [{"matches": [{"path": {"value": "/x"}}], "backendRefs": to("l")}]}),
    );
    assert_eq!(pick(&[&older, &longer], &req("/x/y")).unwrap().0, "longer");
}

#[test]
fn bad_regex_is_an_error_naming_the_rule() {
    let err = HttpRoute::from_spec(
        "t",
        "r",
        1,
        0,
        &json!({"rules": [{}, {"matches": [{"path": {"type": "RegularExpression", "value": "("}}]}]}),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("rules[1].matches"), "{err:#}");
}

fn gateway(from: &str, hostname: Option<&str>) -> OurGateway {
    OurGateway {
        namespace: "gateway-system".into(),
        name: "gateway".into(),
        generation: 1,
        listeners: vec![Listener::parse(&json!({
            "name": "http", "port": 80, "protocol": "HTTP", "hostname": hostname,
            "allowedRoutes": {"namespaces": {"from": from}}
        }))],
    }
}

fn cond<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .unwrap()
}

#[test]
fn parent_status_conditions_carry_the_generation() {
    let r = route(
        "app",
        "podinfo",
        0,
        json!({
            "parentRefs": [{"name": "gateway", "namespace": "gateway-system"}],
            "rules": [{"backendRefs": [
                {"name": "podinfo-primary", "port": 9898, "weight": 80},
                {"name": "podinfo-canary", "port": 9898, "weight": 20}
            ]}]
        }),
    );
    let pref = r.parent_refs[0].clone();
    let both = BTreeSet::from([
        "app/podinfo-primary".to_string(),
        "app/podinfo-canary".to_string(),
    ]);
    let (st, listeners) = parent_status(&r, &pref, &gateway("All", None), None, &both);
    assert_eq!(listeners, ["http"]);
    assert_eq!(st["controllerName"], CONTROLLER_NAME);
    assert_eq!(st["parentRef"], pref);
    for t in ["Accepted", "ResolvedRefs"] {
        assert_eq!(cond(&st, t)["status"], "True", "{st}");
        assert_eq!(cond(&st, t)["observedGeneration"], 3);
    }

    let one = BTreeSet::from(["app/podinfo-primary".to_string()]);
    let (st, listeners) = parent_status(&r, &pref, &gateway("All", None), None, &one);
    assert_eq!(
        listeners,
        ["http"],
        "a missing backend does not detach the route"
    );
    let rr = cond(&st, "ResolvedRefs");
    assert_eq!(
        (rr["status"].as_str(), rr["reason"].as_str()),
        (Some("False"), Some("BackendNotFound"))
    );
    assert!(
        rr["message"]
            .as_str()
            .unwrap()
            .contains("app/podinfo-canary"),
        "{rr}"
    );

    let (st, listeners) = parent_status(&r, &pref, &gateway("Same", None), None, &both);
    assert!(listeners.is_empty());
    assert_eq!(cond(&st, "Accepted")["reason"], "NotAllowedByListeners");

    let mut wrong_section = pref.clone();
    wrong_section["sectionName"] = json!("https");
    let (st, _) = parent_status(&r, &wrong_section, &gateway("All", None), None, &both);
    assert_eq!(cond(&st, "Accepted")["reason"], "NoMatchingParent");

    // A listener for `*.example.com` takes routes whose hostnames it covers, only them.
    for (host, field, want) in [
        ("a.example.org", "reason", "NoMatchingListenerHostname"),
        ("a.example.com", "status", "True"),
    ] {
        let hosted = route("app", "h", 0, json!({"hostnames": [host], "rules": []}));
        let listener = gateway("All", Some("*.example.com"));
        let (st, _) = parent_status(&hosted, &pref, &listener, None, &both);
        assert_eq!(cond(&st, "Accepted")[field], want, "{host}");
    }

    let labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
    let mut sel = gateway("Selector", None);
    sel.listeners[0].selector = json!({"matchLabels": {"team": "a"}});
    assert_eq!(
        parent_status(&r, &pref, &sel, Some(&labels), &both).1,
        ["http"]
    );
    assert!(parent_status(&r, &pref, &sel, None, &both).1.is_empty());
}

#[test]
fn transition_times_survive_unchanged_statuses() {
    let mut old = vec![condition("Accepted", true, "Accepted", "ok", 1)];
    old[0]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
    let mut same = vec![condition("Accepted", true, "Accepted", "ok", 1)];
    keep_transition_times(&mut same, &old);
    assert_eq!(same, old);
    let mut flipped = vec![condition(
        "Accepted",
        false,
        "NotAllowedByListeners",
        "no",
        1,
    )];
    keep_transition_times(&mut flipped, &old);
    assert_ne!(
        flipped[0]["lastTransitionTime"],
        old[0]["lastTransitionTime"]
    );
}

fn service(ns: &str, name: &str, pods: &[(&str, &str)]) -> ServiceBackend {
    ServiceBackend {
        namespace: ns.into(),
        name: name.into(),
        endpoints: pods
            .iter()
            .map(|(p, ip)| ServiceEndpoint {
                pod: p.to_string(),
                ip: ip.to_string(),
                labels: BTreeMap::from([("app".to_string(), name.to_string())]),
            })
            .collect(),
        ports: BTreeMap::from([(9898, 9898)]),
    }
}

fn engine_with(spec: Value, config: SimConfig) -> Engine {
    let mut engine = Engine::new(config).unwrap();
    let r = route("app", "podinfo", 0, spec);
    let mut model = GatewayModel::default();
    model.gateways.insert(
        "gateway-system/gateway".into(),
        Proxy::for_gateway("gateway-system", "gateway"),
    );
    model.routes.insert(
        r.key(),
        AcceptedRoute {
            route: r,
            gateways: vec!["gateway-system/gateway".into()],
        },
    );
    for (svc, pods) in [
        (
            "podinfo-primary",
            vec![("podinfo-primary-7c9b4d8f5-klmno", "10.244.0.5")],
        ),
        (
            "podinfo-canary",
            vec![
                ("podinfo-5d8f7c9b4-abcde", "10.244.0.6"),
                ("podinfo-5d8f7c9b4-fghij", "10.244.0.7"),
            ],
        ),
    ] {
        model
            .services
            .insert(format!("app/{svc}"), service("app", svc, &pods));
    }
    engine.set_gateway_model(model);
    engine
}

fn quiet_config() -> SimConfig {
    let mut c = SimConfig {
        endpoint_warmup_secs: 0.0,
        ..SimConfig::default()
    };
    c.gateway.default_rps = 1000.0;
    c
}

#[test]
fn weights_split_exactly_and_metrics_render() {
    let mut config = quiet_config();
    config.backends.insert(
        "app/podinfo-canary".into(),
        Behaviour {
            error_ratio: 0.1,
            ..Behaviour::default()
        },
    );
    let mut engine = engine_with(
        json!({"rules": [{"backendRefs": [
            {"name": "podinfo-primary", "port": 9898, "weight": 80},
            {"name": "podinfo-canary", "port": 9898, "weight": 20}
        ]}]}),
        config,
    );
    engine.advance(1.0);
    let st = engine.state().gateway;
    assert_eq!(st.services["app/podinfo-primary"].requests, 800);
    assert_eq!(st.services["app/podinfo-canary"].requests, 200);
    assert_eq!(st.services["app/podinfo-canary"].errors, 20);
    assert_eq!(
        st.routes["app/podinfo"].rules[0][1],
        ("app/podinfo-canary".to_string(), 20)
    );

    let text = engine.render();
    let proxy = Proxy::for_gateway("gateway-system", "gateway");
    let base = format!(
        "envoy_cluster_name=\"httproute/app/podinfo/rule/0\",kubernetes_namespace=\"envoy-gateway-system\",\
         kubernetes_pod_name=\"{}\",app_kubernetes_io_component=\"proxy\",app_kubernetes_io_managed_by=\"envoy-gateway\",\
         app_kubernetes_io_name=\"envoy\",gateway_envoyproxy_io_owning_gateway_name=\"gateway\",\
         gateway_envoyproxy_io_owning_gateway_namespace=\"gateway-system\"",
        proxy.pod
    );
    for line in [
        format!("envoy_cluster_upstream_rq{{envoy_response_code=\"200\",{base}}} 980"),
        format!("envoy_cluster_upstream_rq{{envoy_response_code=\"500\",{base}}} 20"),
        format!("envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"5\",{base}}} 20"),
        format!("envoy_cluster_upstream_rq_total{{{base}}} 1000"),
        format!("envoy_cluster_upstream_rq_time_bucket{{{base},le=\"+Inf\"}} 1000"),
    ] {
        assert!(text.contains(&line), "missing {line}\n{text}");
    }
    // One TYPE line per family: the gateway's series join the mesh's.
    assert_eq!(
        text.matches("# TYPE envoy_cluster_upstream_rq counter")
            .count(),
        1
    );
    assert!(text.contains(
        "http_request_duration_seconds_count{kubernetes_namespace=\"app\",kubernetes_pod_name=\"podinfo-5d8f7c9b4-abcde\",\
         app=\"podinfo-canary\",method=\"GET\",path=\"root\",status=\"500\"} 10"
    ), "{text}");
    assert!(text.contains(
        "http_request_duration_seconds_count{kubernetes_namespace=\"app\",kubernetes_pod_name=\"podinfo-primary-7c9b4d8f5-klmno\",\
         app=\"podinfo-primary\",method=\"GET\",path=\"root\",status=\"200\"} 800"
    ), "{text}");
    assert!(text.contains("http_request_duration_seconds_bucket{kubernetes_namespace=\"app\""));
    assert!(text.contains(&format!(
        "envoy_cluster_endpoint_rq_error{{envoy_cluster_name=\"httproute/app/podinfo/rule/0\",envoy_endpoint_address=\"10.244.0.6:9898\",\
         kubernetes_namespace=\"envoy-gateway-system\",kubernetes_pod_name=\"{}\"",
        proxy.pod
    )), "{text}");
    assert!(text.contains("envoy_cluster_endpoint_rq_total{"));
    assert!(text.contains("http_requests_total{kubernetes_namespace=\"app\""));
}

#[test]
fn ab_rule_sends_only_matching_requests_to_the_canary() {
    let mut config = quiet_config();
    config.gateway.default_rps = 100.0;
    config.gateway.requests = vec![
        RequestClass {
            weight: 3.0,
            ..RequestClass::default()
        },
        with_headers(RequestClass::default(), &[("X-Canary", "insider")]),
    ];
    let mut engine = engine_with(
        json!({"rules": [
            {"matches": [{"headers": [{"name": "x-canary", "type": "RegularExpression", "value": ".*insider.*"}]}],
             "backendRefs": [{"name": "podinfo-canary", "port": 9898}]},
            {"backendRefs": [{"name": "podinfo-primary", "port": 9898}]}
        ]}),
        config,
    );
    engine.advance(1.0);
    let st = engine.state().gateway;
    assert_eq!(st.services["app/podinfo-canary"].requests, 25);
    assert_eq!(st.services["app/podinfo-primary"].requests, 75);
    let text = engine.render();
    assert!(text.contains("httproute/app/podinfo/rule/1"));
}

#[test]
fn missing_backends_and_zero_weights_get_no_upstream_requests() {
    let mut engine = engine_with(
        json!({"rules": [{"backendRefs": [
            {"name": "podinfo-primary", "port": 9898, "weight": 1},
            {"name": "gone", "port": 9898, "weight": 1}
        ]}, {"matches": [{"path": {"value": "/zero"}}], "backendRefs": [{"name": "podinfo-primary", "weight": 0}]}]}),
        quiet_config(),
    );
    engine.advance(1.0);
    let st = engine.state().gateway;
    assert_eq!(st.services["app/podinfo-primary"].requests, 500);
    assert_eq!(st.no_backend, 500);
}

#[test]
fn new_routes_get_traffic_after_warmup() {
    let mut config = quiet_config();
    config.endpoint_warmup_secs = 1.0;
    config.gateway.default_rps = 100.0;
    let mut engine = engine_with(
        json!({"rules": [{"backendRefs": [{"name": "podinfo-primary", "port": 9898}]}]}),
        config,
    );
    engine.advance(0.5);
    assert!(engine.state().gateway.services.is_empty());
    assert!(engine.render().contains(
        "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"httproute/app/podinfo/rule/0\""
    ));
    engine.advance(0.5);
    assert_eq!(
        engine.state().gateway.services["app/podinfo-primary"].requests,
        50
    );
}

#[test]
fn podinfo_path_labels() {
    assert_eq!(podinfo_path_label("/"), "root");
    assert_eq!(podinfo_path_label("/api/info"), "api_info");
    assert_eq!(podinfo_path_label("/Delay/1/"), "delay_1");
}

#[test]
fn proxy_names_look_like_envoy_gateways() {
    let p = Proxy::for_gateway("gateway-system", "gateway");
    assert!(
        Regex::new("^envoy-gateway-system-gateway-[0-9a-f]{8}-[a-z0-9]{10}-[a-z0-9]{5}$")
            .unwrap()
            .is_match(&p.pod),
        "{}",
        p.pod
    );
    assert_eq!(p, Proxy::for_gateway("gateway-system", "gateway"));
}

#[test]
fn config_rejects_negative_delays() {
    let mut c = SimConfig::default();
    c.gateway.accept_delay_secs = -1.0;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("accept_delay"));
    let parsed: SimConfig = serde_json::from_value(
        json!({"gateway": {"accept_delay_secs": 3, "routes": {"a/b": {"rps": 10}}}}),
    )
    .unwrap();
    assert_eq!(parsed.gateway.accept_delay_secs, 3.0);
    assert_eq!(parsed.gateway.default_rps, 50.0);
}
