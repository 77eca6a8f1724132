//! The gateway simulator against the shared cluster: a hand-written HTTPRoute on
//! `gateway-system/gateway` (class `fledge-sim`) gets the statuses a Gateway controller writes,
//! with the delayed-acceptance knob holding a new generation back; its 80/20 split and then a
//! header-match rule show in the simulator's per-Service counts; and the MetricTemplates of
//! `examples/gatewayapi/metric-templates-envoy-gateway.yaml`, rendered as Fledge renders them,
//! give Prometheus the success rate the injected errors imply, as does Flagger's builtin
//! `request-success-rate` under `gatewayapi:v1` over podinfo's own series.
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fledge::operator::metrics::render;
use fledge_e2e::cluster::{create_namespace, gateway_manifest, read_manifest};
use fledge_e2e::gateway::CONTROLLER_NAME;
use fledge_e2e::mesh::StateView;
use fledge_e2e::prometheus;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use kube::Client;
use serde_json::{json, Value};

use crate::{apply, configure_sim, podinfo_deployment, sim_state, ssa, wait_for, world};

const NS: &str = "e2e-gateway-sim";
const CANARY_ERRORS: f64 = 0.1;

fn gw_api(client: &Client, kind: &str, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        kind,
    ));
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn route(rules: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "podinfo"},
        "spec": {
            "parentRefs": [{"name": "gateway", "namespace": "gateway-system"}],
            "rules": rules
        }
    })
}

fn backend(name: &str, weight: u32) -> Value {
    json!({"name": name, "port": 9898, "weight": weight})
}

/// Our `status.parents[]` entry's condition `t`, as `(status, reason, observedGeneration)`.
fn our_condition(obj: &DynamicObject, t: &str) -> Option<(String, String, i64)> {
    let parent = obj.data["status"]["parents"]
        .as_array()?
        .iter()
        .find(|p| p["controllerName"] == CONTROLLER_NAME)?;
    let c = parent["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
        c["observedGeneration"].as_i64()?,
    ))
}

/// The route is ready as a router would wait for it: every parent Accepted at its generation.
fn accepted_at(obj: &DynamicObject) -> Option<i64> {
    let (status, _, observed) = our_condition(obj, "Accepted")?;
    (status == "True" && observed >= obj.metadata.generation?).then_some(observed)
}

fn service(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]}
    })
}

/// Requests per Service `<NS>/<name>` counted by the simulator.
fn served(st: &StateView, name: &str) -> u64 {
    st.gateway
        .services
        .get(&format!("{NS}/{name}"))
        .map_or(0, |t| t.requests)
}

/// The canary's share (percent) of what both Services served over `window`, and the total.
async fn canary_share(cluster: &fledge_e2e::Cluster, window: Duration) -> Result<(f64, u64)> {
    let before = sim_state(cluster)?;
    tokio::time::sleep(window).await;
    let after = sim_state(cluster)?;
    let canary = served(&after, "podinfo-canary") - served(&before, "podinfo-canary");
    let primary = served(&after, "podinfo-primary") - served(&before, "podinfo-primary");
    ensure!(canary + primary > 0, "no gateway traffic in {window:?}");
    Ok((
        canary as f64 * 100.0 / (canary + primary) as f64,
        canary + primary,
    ))
}

/// The examples' MetricTemplate queries by name, rendered with Fledge's renderer for a Canary
/// `podinfo` in `NS` (the guide's Canary, moved there).
fn template_queries(interval: &str) -> Result<Vec<(String, String)>> {
    let text = include_str!("../../../examples/podinfo/canary.yaml")
        .replace("namespace: test", &format!("namespace: {NS}"));
    let canary: fledge::api::Canary =
        fledge::api::yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rollout = fledge::api::validate(&canary)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .rollout;
    let file = fledge_e2e::cluster::crate_dir()
        .join("../examples/gatewayapi/metric-templates-envoy-gateway.yaml");
    read_manifest(&file)?
        .into_iter()
        .filter(|d| d["kind"] == "MetricTemplate")
        .map(|d| {
            let name = d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let q = render(
                d["spec"]["query"]
                    .as_str()
                    .context("template without query")?,
                &rollout,
                &rollout.metrics[0],
                interval,
            )
            .map_err(anyhow::Error::msg)?;
            Ok((name, q))
        })
        .collect()
}

/// Flagger v1.44.0's builtin `request-success-rate` under `gatewayapi:v1`
/// (pkg/metrics/observers/http.go): podinfo's own series of the target's pods.
fn flagger_http_success_rate(target: &str, interval: &str) -> String {
    let sel = format!(
        "kubernetes_namespace=\"{NS}\", kubernetes_pod_name=~\"{target}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)\""
    );
    format!(
        "sum(rate(http_request_duration_seconds_count{{{sel}, status!~\"5.*\"}}[{interval}])) / \
         sum(rate(http_request_duration_seconds_count{{{sel}}}[{interval}])) * 100"
    )
}

/// Waits until a query's value is within `tolerance` of `expected`; returns the value.
async fn wait_value(
    prom: std::net::SocketAddr,
    what: &str,
    q: &str,
    expected: f64,
    tolerance: f64,
) -> Result<f64> {
    let last = std::sync::Mutex::new(None);
    let r = wait_for(what, Duration::from_secs(30), || async {
        let v = prometheus::query_value(prom, q)?;
        *last.lock().unwrap() = v;
        Ok(v.filter(|v| (v - expected).abs() <= tolerance))
    })
    .await;
    r.with_context(|| {
        format!(
            "{q} last gave {:?}, expected {expected} ± {tolerance}",
            last.lock().unwrap()
        )
    })
}

#[tokio::test]
async fn gateway_sim_statuses_splits_and_envoy_gateway_templates() -> Result<()> {
    let Some(cluster) = world("gateway_sim_statuses_splits_and_envoy_gateway_templates") else {
        return Ok(());
    };
    let started = Instant::now();
    let client = cluster.client().await?;
    let prom = cluster.prometheus().context("prometheus not started")?;
    create_namespace(&client, NS, &[]).await?;
    let route_key = format!("{NS}/podinfo");

    // One request in four carries the A/B header; the canary fails one request in ten.
    configure_sim(cluster, |config| {
        config.gateway.routes.insert(
            route_key.clone(),
            serde_json::from_value(json!({"rps": 400, "requests": [
                {"weight": 3},
                {"weight": 1, "headers": {"x-canary": "insider"}}
            ]}))?,
        );
        config.backends.insert(
            format!("{NS}/podinfo-canary"),
            serde_json::from_value(json!({"error_ratio": CANARY_ERRORS}))?,
        );
        Ok(())
    })?;

    for (name, app) in [
        ("podinfo", "podinfo"),
        ("podinfo-primary", "podinfo-primary"),
    ] {
        apply(&client, NS, &podinfo_deployment(name, app, 2), &ssa()).await?;
    }
    apply(&client, NS, &service("podinfo-canary", "podinfo"), &ssa()).await?;
    apply(
        &client,
        NS,
        &service("podinfo-primary", "podinfo-primary"),
        &ssa(),
    )
    .await?;

    // The class and Gateway the harness created are ours, accepted and programmed.
    let class = gw_api(&client, "GatewayClass", None)
        .get("fledge-sim")
        .await?;
    ensure!(class.data["spec"]["controllerName"] == CONTROLLER_NAME);
    let gateway_doc = read_manifest(&gateway_manifest())?
        .into_iter()
        .find(|d| d["kind"] == "Gateway")
        .context("gateway.yaml has no Gateway")?;
    ensure!(gateway_doc["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]["from"] == "All");

    // A route on another controller's Gateway, and one with a missing backend.
    let other_class = "e2e-gateway-sim-other";
    apply(
        &client,
        NS,
        &json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": {"name": other_class}, "spec": {"controllerName": "example.com/other"}}),
        &ssa(),
    )
    .await?;
    apply(
        &client,
        NS,
        &json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "other"},
                "spec": {"gatewayClassName": other_class, "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}}),
        &ssa(),
    )
    .await?;
    let mut foreign = route(json!([{"backendRefs": [backend("podinfo-primary", 1)]}]));
    foreign["metadata"]["name"] = json!("foreign");
    foreign["spec"]["parentRefs"] = json!([{"name": "other"}]);
    apply(&client, NS, &foreign, &ssa()).await?;
    let mut broken = route(json!([{"backendRefs": [backend("podinfo-missing", 1)]}]));
    broken["metadata"]["name"] = json!("broken");
    apply(&client, NS, &broken, &ssa()).await?;

    // Generation 1: 80/20.
    apply(
        &client,
        NS,
        &route(json!([{"backendRefs": [backend("podinfo-primary", 80), backend("podinfo-canary", 20)]}])),
        &ssa(),
    )
    .await?;
    let routes = gw_api(&client, "HTTPRoute", Some(NS));
    let r = wait_for(
        "HTTPRoute podinfo accepted at generation 1",
        Duration::from_secs(30),
        || async {
            let r = routes.get("podinfo").await?;
            Ok(accepted_at(&r).map(|_| r))
        },
    )
    .await?;
    assert_eq!(
        our_condition(&r, "ResolvedRefs"),
        Some(("True".into(), "ResolvedRefs".into(), 1))
    );
    let parent = &r.data["status"]["parents"][0];
    // The API server defaults group and kind; the simulator echoes the stored parentRef.
    assert_eq!(
        parent["parentRef"],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
               "name": "gateway", "namespace": "gateway-system"})
    );
    let b = wait_for(
        "HTTPRoute broken's status",
        Duration::from_secs(10),
        || async { Ok(our_condition(&routes.get("broken").await?, "ResolvedRefs")) },
    )
    .await?;
    assert_eq!(
        (b.0.as_str(), b.1.as_str(), b.2),
        ("False", "BackendNotFound", 1)
    );
    let gw = gw_api(&client, "Gateway", Some("gateway-system"))
        .get("gateway")
        .await?;
    let programmed = gw.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Programmed" && c["status"] == "True");
    assert!(programmed, "{}", gw.data["status"]);
    assert!(gw.data["status"]["listeners"][0]["attachedRoutes"].as_i64() >= Some(2));
    let class = gw_api(&client, "GatewayClass", None)
        .get("fledge-sim")
        .await?;
    assert_eq!(class.data["status"]["conditions"][0]["status"], "True");
    // More syncs: the foreign route and its class are still untouched.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let foreign = routes.get("foreign").await?;
    let parents = &foreign.data["status"]["parents"];
    assert!(
        parents.is_null() || parents == &json!([]),
        "another controller's route got {parents}"
    );
    let other = gw_api(&client, "GatewayClass", None)
        .get(other_class)
        .await?;
    assert!(
        other.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|c| c["status"] != "True"),
        "another controller's class got {}",
        other.data["status"]
    );

    // The 80/20 split, counted per Service by the simulator.
    wait_for(
        "gateway traffic to both Services",
        Duration::from_secs(30),
        || async {
            let st = sim_state(cluster)?;
            let pods = |s: &str| {
                st.gateway
                    .endpoints
                    .get(&format!("{NS}/{s}"))
                    .map_or(0, Vec::len)
            };
            Ok((pods("podinfo-canary") == 2
                && pods("podinfo-primary") == 2
                && served(&st, "podinfo-canary") > 0)
                .then_some(()))
        },
    )
    .await?;
    let (share, n) = canary_share(cluster, Duration::from_secs(2)).await?;
    println!("80/20 route: canary served {share:.2}% of {n} requests");
    assert!(n > 500, "too little traffic: {n}");
    assert!((share - 20.0).abs() <= 1.0, "canary share {share:.2}%");

    // The templates, unchanged: rule 0 mixes both backends, so 20 % of traffic at 10 % errors
    // is a 98 % success rate; Flagger's builtin over podinfo's series sees the canary's 90 %.
    let queries = template_queries("10s")?;
    let success_q = &queries
        .iter()
        .find(|(n, _)| n == "envoy-gateway-success-rate")
        .context("no success-rate template")?
        .1;
    let p99_q = &queries
        .iter()
        .find(|(n, _)| n == "envoy-gateway-latency-p99")
        .context("no latency template")?
        .1;
    assert!(
        success_q.contains(&format!("httproute/{NS}/podinfo/rule/0")),
        "{success_q}"
    );
    // Both windows must hold only 80/20 traffic: wait out the route's first 10 s.
    let mixed = 100.0 - 20.0 * CANARY_ERRORS;
    let v = wait_value(
        prom,
        "the success-rate template at 98 %",
        success_q,
        mixed,
        0.5,
    )
    .await?;
    println!("envoy-gateway-success-rate under 80/20: {v:.3}%");
    let builtin = wait_value(
        prom,
        "Flagger's builtin success rate of the canary",
        &flagger_http_success_rate("podinfo", "10s"),
        100.0 - 100.0 * CANARY_ERRORS,
        1.0,
    )
    .await?;
    println!("Flagger's builtin request-success-rate (canary pods): {builtin:.3}%");
    let primary =
        prometheus::query_value(prom, &flagger_http_success_rate("podinfo-primary", "10s"))?
            .context("no primary success rate")?;
    assert!(
        (primary - 100.0).abs() < 1e-9,
        "primary success rate {primary}"
    );
    // Both backends answer in 2-20 ms (the default behaviour).
    let p99 = prometheus::query_value(prom, p99_q)?.context("no P99 from the template")?;
    let expected_p99 = crate::uniform_p99_over_envoy_buckets(2.0, 20.0);
    println!("envoy-gateway-latency-p99: {p99:.3} ms (expected {expected_p99:.3} ms)");
    assert!(
        (p99 - expected_p99).abs() <= 0.5,
        "P99 {p99} ms, expected {expected_p99} ms"
    );

    // Generation 2, an A/B rule, held back 3 s by the simulator: until then the status and
    // the traffic stay at generation 1.
    configure_sim(cluster, |config| {
        config.gateway.accept_delay.insert(route_key.clone(), 3.0);
        Ok(())
    })?;
    // The simulator reads its configuration once per refresh (500 ms): a route applied during
    // a refresh that began before the PUT would be judged by the old one, without the delay.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let applied = Instant::now();
    apply(
        &client,
        NS,
        &route(json!([
            {"matches": [{"headers": [{"name": "x-canary", "type": "RegularExpression", "value": ".*insider.*"}]}],
             "backendRefs": [backend("podinfo-canary", 100)]},
            {"backendRefs": [backend("podinfo-primary", 100)]}
        ])),
        &ssa(),
    )
    .await?;
    let held = std::sync::Mutex::new(Vec::new());
    let observed = wait_for(
        "HTTPRoute podinfo accepted at generation 2",
        Duration::from_secs(20),
        || async {
            let r = routes.get("podinfo").await?;
            let generation = r.metadata.generation.unwrap_or(0);
            let seen = our_condition(&r, "Accepted").map(|c| c.2);
            if accepted_at(&r).is_none() {
                held.lock().unwrap().push((
                    applied.elapsed(),
                    generation,
                    seen,
                    sim_state(cluster)?
                        .gateway
                        .routes
                        .get(&route_key)
                        .map(|v| v.generation),
                ));
            }
            Ok(accepted_at(&r)
                .filter(|g| *g == 2)
                .map(|_| applied.elapsed()))
        },
    )
    .await?;
    println!(
        "generation 2 accepted {:.1} s after the apply",
        observed.as_secs_f64()
    );
    assert!(
        observed >= Duration::from_millis(2500),
        "accepted after {observed:?}"
    );
    assert!(
        observed <= Duration::from_secs(8),
        "accepted after {observed:?}"
    );
    let held = held.into_inner().unwrap();
    assert!(
        held.iter()
            .all(|(_, g, seen, sim)| *g == 2 && *seen == Some(1) && *sim == Some(1)),
        "while held back: {held:?}"
    );
    ensure!(
        held.len() >= 5,
        "polled only {} times while held back",
        held.len()
    );
    configure_sim(cluster, |config| {
        config.gateway.accept_delay.remove(&route_key);
        Ok(())
    })?;

    // Only the requests with the header reach the canary: one in four.
    wait_for(
        "the simulator to route by generation 2",
        Duration::from_secs(10),
        || async {
            let st = sim_state(cluster)?;
            Ok((st.gateway.routes.get(&route_key).map(|v| v.generation) == Some(2)).then_some(()))
        },
    )
    .await?;
    // The new rule's cluster warms up before it takes traffic.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (share, n) = canary_share(cluster, Duration::from_secs(2)).await?;
    println!("A/B route: canary served {share:.2}% of {n} requests");
    assert!((share - 25.0).abs() <= 1.0, "canary share {share:.2}%");

    // Rule 0 is now the canary's traffic alone: the template reads its 90 %.
    let v = wait_value(
        prom,
        "the success-rate template at the canary's 90 %",
        success_q,
        100.0 - 100.0 * CANARY_ERRORS,
        0.5,
    )
    .await?;
    println!("envoy-gateway-success-rate under A/B: {v:.3}%");

    gw_api(&client, "GatewayClass", None)
        .delete(other_class, &DeleteParams::default())
        .await?;
    println!("gateway_sim took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
