//! gatewayapi:v1 Canaries through the simulator: the same decisions and
//! events as App Mesh, with the weights living in the HTTPRoute the
//! operator's router would write.
use super::*;

const GATEWAY: &str = include_str!("../../../../examples/podinfo/canary-gatewayapi.yaml");

/// Runs `canary` under `scenario`, returning the report and the canary
/// weight read back from the HTTPRoute after every step.
fn simulate_routes(canary: &str, scenario: &str) -> (Report, Vec<u32>, Option<serde_json::Value>) {
    let inputs = load("canary.yaml", canary, &[]).expect("inputs load");
    let scenario: Scenario = super::scenario::parse(scenario).expect("scenario parses");
    let mut sim = Sim::new(&inputs, scenario);
    let mut weights = Vec::new();
    let mut ab_route = None;
    while sim.step(builtin()) {
        let model = sim
            .world
            .gateway
            .as_ref()
            .expect("a gatewayapi:v1 Canary has a route model");
        if let Some(w) = model.routes(&sim.rollout) {
            if weights.last() != Some(&w.canary) {
                weights.push(w.canary);
            }
            if w.canary == 100 && ab_route.is_none() {
                ab_route = model.route.clone();
            }
        }
    }
    (sim.report, weights, ab_route)
}

#[test]
fn the_gatewayapi_guide_canary_is_promoted_through_its_http_route() {
    let (report, weights, _) = simulate_routes(GATEWAY, PROMOTE);
    assert_eq!(report.phase, Phase::Succeeded);
    // The same events as the App Mesh guide Canary.
    assert_eq!(
        lines(&report, Format::Events),
        lines(&simulate(GUIDE, PROMOTE), Format::Events)
    );
    let mut expected = vec![0];
    expected.extend((1..=10).map(|i| i * 5));
    expected.push(0);
    assert_eq!(
        weights, expected,
        "canary weights as read from the HTTPRoute"
    );
}

#[test]
fn an_ab_header_canary_for_gatewayapi_simulates() {
    let canary = AB_HEADER
        .replace("provider: appmesh:v1beta2", "provider: gatewayapi:v1")
        .replace(
            "    retries:\n      attempts: 3\n      perTryTimeout: 5s\n      retryOn: \"gateway-error,client-error,stream-error\"\n",
            "    gatewayRefs: [{name: gateway, namespace: gateway-system}]\n",
        );
    assert!(
        canary.contains("gatewayRefs"),
        "the example still has the retries block"
    );
    let (report, weights, route) = simulate_routes(&canary, AB_TEST);
    assert_eq!(report.phase, Phase::Succeeded);
    assert_eq!(lines(&report, Format::Text), ab_log());
    assert_eq!(weights, vec![0, 100, 0]);
    let route = route.expect("the route while the A/B test ran");
    let rules = route["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(
        rules[0]["matches"][0]["headers"],
        serde_json::json!([{"name": "x-canary", "type": "Exact", "value": "insider"}])
    );
    assert_eq!(rules[1]["backendRefs"][0]["name"], "podinfo-primary");
    assert_eq!(rules[1]["backendRefs"][0]["weight"], 100);
}

#[test]
fn a_gatewayapi_canary_without_gateway_refs_does_not_load() {
    let canary = GATEWAY.replace(
        "    gatewayRefs:\n      - name: gateway\n        namespace: gateway-system\n",
        "",
    );
    let Err(LoadError::Invalid { issues, .. }) = load("canary.yaml", &canary, &[]) else {
        panic!("a Canary without gatewayRefs loaded");
    };
    assert!(
        issues.iter().any(|i| i.field == "spec.service.gatewayRefs"),
        "{issues:?}"
    );
}
