//! Unit tests of the gatewayapi:v1 router: the HTTPRoute it writes, match
//! conversion, readiness and reading the weights back.
use super::*;
use crate::api;
use fledge_policy::HeaderMatch;
use std::collections::BTreeMap;

const GUIDE: &str = include_str!("../../../../../examples/podinfo/canary-gatewayapi.yaml");

fn load(yaml: &str) -> (crate::core::Rollout, Value) {
    let canary: api::Canary = api::yaml::from_str(yaml).unwrap();
    let service = serde_json::to_value(&canary.spec.as_ref().unwrap().service).unwrap();
    let v = api::validate(&canary).unwrap_or_else(|e| panic!("{e:?}"));
    (v.rollout, service)
}

fn target<'a>(
    rollout: &'a crate::core::Rollout,
    service: &'a Value,
    annotations: &'a BTreeMap<String, String>,
) -> RouteTarget<'a> {
    RouteTarget {
        rollout,
        service,
        annotations,
        label: ("app", "podinfo"),
        owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "flagger.app/v1beta1".into(),
            kind: "Canary".into(),
            name: "podinfo".into(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    }
}

fn routes(primary: u32, canary: u32) -> Routes {
    Routes { primary, canary }
}

#[test]
fn the_guides_canary_becomes_one_http_route() {
    let (rollout, service) = load(GUIDE);
    let ann = BTreeMap::new();
    let t = target(&rollout, &service, &ann);
    let hr = http_route(&t, routes(100, 0), &[]);
    assert_eq!(hr["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(hr["kind"], "HTTPRoute");
    assert_eq!(hr["metadata"]["name"], "podinfo");
    assert_eq!(hr["metadata"]["namespace"], "test");
    assert_eq!(hr["metadata"]["ownerReferences"][0]["kind"], "Canary");
    assert_eq!(hr["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        hr["spec"]["parentRefs"],
        json!([{"name": "gateway", "namespace": "gateway-system"}])
    );
    assert_eq!(hr["spec"]["hostnames"], json!(["podinfo.example.com"]));
    let rules = hr["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0]["backendRefs"],
        json!([
            {"group": "", "kind": "Service", "name": "podinfo-primary", "port": 9898, "weight": 100},
            {"group": "", "kind": "Service", "name": "podinfo-canary", "port": 9898, "weight": 0},
        ])
    );
    assert_eq!(
        rules[0]["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/"}}])
    );
    assert_eq!(rules[0]["timeouts"], json!({"request": "15s"}));
    assert!(rules[0].get("filters").is_none());
    assert_eq!(read_routes(&hr, "podinfo"), Some(routes(100, 0)));
    let hr = http_route(&t, routes(55, 45), &[]);
    assert_eq!(read_routes(&hr, "podinfo"), Some(routes(55, 45)));
}

#[test]
fn without_a_service_match_rule_0_matches_every_path() {
    let yaml = GUIDE.replace("    match:\n      - uri:\n          prefix: /\n", "");
    let (rollout, service) = load(&yaml);
    let ann = BTreeMap::new();
    let hr = http_route(&target(&rollout, &service, &ann), routes(90, 10), &[]);
    assert_eq!(
        hr["spec"]["rules"][0]["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/"}}])
    );
}

#[test]
fn parent_refs_keep_section_and_port_and_headers_become_filters() {
    let yaml = GUIDE
        .replace(
            "      - name: gateway\n        namespace: gateway-system\n",
            "      - name: gateway\n        namespace: gateway-system\n        sectionName: https\n        port: 443\n",
        )
        .replace(
            "    timeout: 15s\n",
            "    timeout: 15s\n    backendTimeout: 5s\n    headers:\n      request:\n        set: {x-b: \"2\", x-a: \"1\"}\n        remove: [x-drop]\n      response:\n        add: {x-served-by: fledge}\n",
        );
    let (rollout, service) = load(&yaml);
    let ann = BTreeMap::new();
    let hr = http_route(&target(&rollout, &service, &ann), routes(100, 0), &[]);
    assert_eq!(
        hr["spec"]["parentRefs"],
        json!([{"name": "gateway", "namespace": "gateway-system", "sectionName": "https", "port": 443}])
    );
    let rule = &hr["spec"]["rules"][0];
    assert_eq!(
        rule["timeouts"],
        json!({"request": "15s", "backendRequest": "5s"})
    );
    assert_eq!(
        rule["filters"],
        json!([
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "set": [{"name": "x-a", "value": "1"}, {"name": "x-b", "value": "2"}],
                "remove": ["x-drop"]}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                "add": [{"name": "x-served-by", "value": "fledge"}]}},
        ])
    );
}

fn header(name: &str, m: StringMatch) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        matcher: m,
    }
}

#[test]
fn ab_rules_cross_the_service_matches_and_the_rest_goes_to_the_primary() {
    let yaml = GUIDE.replace(
        "    match:\n      - uri:\n          prefix: /\n",
        "    match:\n      - uri:\n          prefix: /api\n        method:\n          exact: GET\n      - uri:\n          exact: /healthz\n        headers:\n          x-env:\n            exact: prod\n",
    );
    let (rollout, service) = load(&yaml);
    let ann = BTreeMap::new();
    let t = target(&rollout, &service, &ann);
    let rules = vec![
        MatchRule {
            headers: vec![header("x-canary", StringMatch::Exact("insider".into()))],
        },
        MatchRule {
            headers: vec![header(
                "cookie",
                StringMatch::Regex("^(.*?;)?(canary=always)(;.*)?$".into()),
            )],
        },
    ];
    let hr = http_route(&t, routes(0, 100), &rules);
    let list = hr["spec"]["rules"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let insider = json!({"name": "x-canary", "type": "Exact", "value": "insider"});
    let cookie = json!({"name": "cookie", "type": "RegularExpression", "value": "^(.*?;)?(canary=always)(;.*)?$"});
    let env = json!({"name": "x-env", "type": "Exact", "value": "prod"});
    assert_eq!(
        list[0]["matches"],
        json!([
            {"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET", "headers": [insider]},
            {"path": {"type": "Exact", "value": "/healthz"}, "headers": [env, insider]},
            {"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET", "headers": [cookie]},
            {"path": {"type": "Exact", "value": "/healthz"}, "headers": [env, cookie]},
        ])
    );
    assert_eq!(
        list[1]["matches"],
        json!([
            {"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET"},
            {"path": {"type": "Exact", "value": "/healthz"}, "headers": [env]},
        ])
    );
    assert_eq!(
        list[1]["backendRefs"],
        json!([{"group": "", "kind": "Service", "name": "podinfo-primary", "port": 9898, "weight": 100}])
    );
    assert_eq!(list[1]["timeouts"], json!({"request": "15s"}));
    // The weights are those of rule 0, not the primary-only rule 1.
    assert_eq!(read_routes(&hr, "podinfo"), Some(routes(0, 100)));
}

#[test]
fn an_ab_rule_header_replaces_the_service_header_of_the_same_name() {
    let svc = json!({"headers": [{"name": "x-canary", "type": "Exact", "value": "no"}]});
    let rules = vec![MatchRule {
        headers: vec![header("x-canary", StringMatch::Exact("yes".into()))],
    }];
    assert_eq!(
        ab_matches(&rules, &[svc]),
        vec![json!({"headers": [{"name": "x-canary", "type": "Exact", "value": "yes"}]})]
    );
}

#[test]
fn prefix_and_suffix_become_anchored_escaped_regexes() {
    for (value, yes, no) in [
        (
            "beta",
            vec!["beta", "beta-1", "betamax"],
            vec!["", "xbeta", "bet", "BETA"],
        ),
        (
            "v1.2+(x)[y]*?|^$\\",
            vec!["v1.2+(x)[y]*?|^$\\", "v1.2+(x)[y]*?|^$\\tail"],
            vec![
                "v1x2+(x)[y]*?|^$\\",
                "v1.22(x)[y]*?|^$\\",
                "pre-v1.2+(x)[y]*?|^$\\",
                "v1.2",
            ],
        ),
    ] {
        let p = condition("x", &StringMatch::Prefix(value.into()));
        assert_eq!(p["type"], "RegularExpression");
        let re = regex::Regex::new(p["value"].as_str().unwrap()).unwrap();
        for s in &yes {
            assert!(re.is_match(s), "prefix {value:?} should match {s:?}");
        }
        for s in &no {
            assert!(!re.is_match(s), "prefix {value:?} should not match {s:?}");
        }
    }
    for (value, yes, no) in [
        (
            "-beta",
            vec!["-beta", "v2-beta"],
            vec!["-beta2", "beta", "-BETA", ""],
        ),
        (
            ".*(a|b)$",
            vec![".*(a|b)$", "x.*(a|b)$"],
            vec!["a", "xxa", ".*(a|b)", ".*(a|b)$x"],
        ),
    ] {
        let s = condition("x", &StringMatch::Suffix(value.into()));
        assert_eq!(s["type"], "RegularExpression");
        let re = regex::Regex::new(s["value"].as_str().unwrap()).unwrap();
        for v in &yes {
            assert!(re.is_match(v), "suffix {value:?} should match {v:?}");
        }
        for v in &no {
            assert!(!re.is_match(v), "suffix {value:?} should not match {v:?}");
        }
    }
}

#[test]
fn a_prefix_header_of_the_ab_rule_is_kept_as_a_regex() {
    let yaml = include_str!("../../../../../examples/podinfo/canary-ab-header.yaml")
        .replace("provider: appmesh:v1beta2", "provider: gatewayapi:v1")
        .replace("    retries:\n      attempts: 3\n      perTryTimeout: 5s\n      retryOn: \"gateway-error,client-error,stream-error\"\n", "    gatewayRefs: [{name: gateway, namespace: gateway-system}]\n")
        .replace("exact: \"insider\"", "prefix: \"insider.\"");
    let (rollout, service) = load(&yaml);
    let ann = BTreeMap::new();
    let t = target(&rollout, &service, &ann);
    let hr = http_route(&t, routes(0, 100), t.match_rules());
    let m = &hr["spec"]["rules"][0]["matches"][0];
    assert_eq!(
        m["headers"],
        json!([{"name": "x-canary", "type": "RegularExpression", "value": "^insider\\..*"}])
    );
}

fn route_with_status(generation: i64, parents: Value) -> Value {
    json!({
        "metadata": {"name": "podinfo", "namespace": "test", "generation": generation},
        "spec": {
            "parentRefs": [{"name": "gateway", "namespace": "gateway-system"}],
            "rules": [{"backendRefs": [
                {"name": "podinfo-primary", "weight": 80},
                {"name": "podinfo-canary", "weight": 20}]}],
        },
        "status": {"parents": parents},
    })
}

fn parent(status: &str, reason: &str, observed: i64) -> Value {
    json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                      "name": "gateway", "namespace": "gateway-system"},
        "controllerName": "example.com/gateway",
        "conditions": [
            {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "observedGeneration": observed},
            {"type": "Accepted", "status": status, "reason": reason,
             "message": "listener refuses the route", "observedGeneration": observed},
        ],
    })
}

#[test]
fn readiness_needs_every_parent_to_accept_the_current_generation() {
    let ok = route_with_status(3, json!([parent("True", "Accepted", 3)]));
    assert!(readiness(&ok).is_ok());
    assert_eq!(read_routes(&ok, "podinfo"), Some(routes(80, 20)));
    // A newer observation than the route's generation is fine too.
    assert!(readiness(&route_with_status(
        2,
        json!([parent("True", "Accepted", 3)])
    ))
    .is_ok());

    let refused = route_with_status(3, json!([parent("False", "NotAllowedByListeners", 3)]));
    let e = format!("{:#}", readiness(&refused).unwrap_err());
    assert_eq!(
        e,
        "HTTPRoute podinfo.test is not accepted by parent gateway-system/gateway: \
         Accepted=False (reason NotAllowedByListeners: listener refuses the route); \
         Fledge changes no traffic until it is"
    );

    // A refusal waits for a person; a controller catching up is looked at again soon.
    let wait = |r: &Value| {
        let e = readiness(r).unwrap_err();
        NotReady::find(&e)
            .map(|w| (w.transient, w.retry.as_secs()))
            .expect("a NotReady")
    };
    assert_eq!(wait(&refused), (false, 10));
    assert_eq!(
        wait(&route_with_status(
            4,
            json!([parent("True", "Accepted", 3)])
        )),
        (true, 1)
    );
    assert_eq!(wait(&route_with_status(1, json!([]))), (true, 3));

    let stale = route_with_status(4, json!([parent("True", "Accepted", 3)]));
    let e = format!("{:#}", readiness(&stale).unwrap_err());
    assert!(
        e.contains(
            "parent gateway-system/gateway: Accepted at generation 3, the route is at generation 4"
        ),
        "{e}"
    );

    let missing = route_with_status(1, json!([]));
    let e = format!("{:#}", readiness(&missing).unwrap_err());
    assert!(
        e.contains("HTTPRoute podinfo.test is not accepted by parent gateway-system/gateway: no status.parents entry"),
        "{e}"
    );

    // Another parent's acceptance does not count for ours.
    let mut other = parent("True", "Accepted", 1);
    other["parentRef"]["name"] = json!("other");
    assert!(readiness(&route_with_status(1, json!([other]))).is_err());

    // Each parent must accept: the second of two is missing.
    let mut two = route_with_status(1, json!([parent("True", "Accepted", 1)]));
    two["spec"]["parentRefs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "internal", "namespace": "gateway-system", "sectionName": "http"}));
    let e = format!("{:#}", readiness(&two).unwrap_err());
    assert!(
        e.contains("parent gateway-system/internal (section http)"),
        "{e}"
    );

    let mut unconditioned = parent("True", "Accepted", 1);
    unconditioned["conditions"] = json!([]);
    let e = format!(
        "{:#}",
        readiness(&route_with_status(1, json!([unconditioned]))).unwrap_err()
    );
    assert!(e.contains("no Accepted condition"), "{e}");
}

#[test]
fn a_parent_ref_without_namespace_is_the_routes_namespace() {
    let mut r = route_with_status(1, json!([]));
    r["spec"]["parentRefs"] = json!([{"name": "gateway"}]);
    let mut p = parent("True", "Accepted", 1);
    p["parentRef"]["namespace"] = json!("test");
    r["status"]["parents"] = json!([p]);
    assert!(readiness(&r).is_ok());
}

#[test]
fn read_routes_needs_both_backends() {
    let hr = json!({"spec": {"rules": [
        {"backendRefs": [{"name": "podinfo-primary", "weight": 100}]},
    ]}});
    assert_eq!(read_routes(&hr, "podinfo"), None);
    assert_eq!(read_routes(&json!({}), "podinfo"), None);
}

#[test]
fn inexpressible_service_matches_are_named() {
    let svc: api::CanaryService = serde_json::from_value(json!({
        "port": 80,
        "match": [
            {"uri": {"prefix": "/"}, "authority": {"exact": "a.example.com"}},
            {"method": {"regex": "GET|POST"}, "headers": {"x-a": {"exact": "1", "prefix": "2"}}},
        ]
    }))
    .unwrap();
    let fields: Vec<String> = inexpressible(&svc).into_iter().map(|i| i.field).collect();
    assert_eq!(
        fields,
        vec![
            "spec.service.match[0].authority",
            "spec.service.match[1].method",
            "spec.service.match[1].headers.x-a",
        ]
    );
    // A service header prefix is expressible: it becomes a regex.
    let svc: api::CanaryService = serde_json::from_value(json!({
        "match": [{"headers": {"x-a": {"prefix": "a.b"}}, "queryParams": {"q": {"exact": "1"}}}]
    }))
    .unwrap();
    assert!(inexpressible(&svc).is_empty());
    assert_eq!(
        service_matches(&svc),
        vec![json!({
            "headers": [{"name": "x-a", "type": "RegularExpression", "value": "^a\\.b.*"}],
            "queryParams": [{"name": "q", "type": "Exact", "value": "1"}],
        })]
    );
}
