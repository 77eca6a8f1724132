//! The guide's promotion, rollback and A/B test with `provider: gatewayapi:v1`: the operator
//! writes one HTTPRoute per Canary, the gateway simulator accepts it and routes its requests by
//! the route's rules, and the analysis runs on the same policy decisions as App Mesh's.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fledge::operator::router::gateway_api;
use fledge_e2e::mesh::{Behaviour, RequestClass, RouterTraffic, StateView};
use kube::api::{Api, DynamicObject};
use kube::Client;
use serde_json::{json, Value};

use super::{
    about_half, bootstrap_with, events_since, image_of, install_fledge_crds, set_image,
    settled_events, simulated, wait_phase, MkDir, PROMOTE, ROLLBACK,
};
use crate::{configure_sim, sim_state, wait_for, world};

/// The test Canary moved to the test cluster's Gateway.
pub(super) fn on_gateway(mut c: Value) -> Value {
    let spec = &mut c["spec"];
    spec["provider"] = json!("gatewayapi:v1");
    let svc = spec["service"].as_object_mut().expect("service");
    for appmesh_only in ["meshName", "backends", "retries"] {
        svc.remove(appmesh_only);
    }
    svc.insert(
        "gatewayRefs".into(),
        json!([{"name": "gateway", "namespace": "gateway-system"}]),
    );
    svc.insert("hosts".into(), json!(["podinfo.example.com"]));
    c
}

pub(super) async fn http_route(client: &Client, ns: &str) -> Result<DynamicObject> {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &gateway_api::resource())
        .get("podinfo")
        .await
        .with_context(|| format!("HTTPRoute {ns}/podinfo"))
}

/// (primary, canary) weights of the HTTPRoute's first rule.
pub(super) async fn route_weights(client: &Client, ns: &str) -> Result<(u64, u64)> {
    let r = http_route(client, ns).await?;
    let refs = &r.data["spec"]["rules"][0]["backendRefs"];
    let weight = |name: String| {
        refs.as_array()
            .and_then(|a| a.iter().find(|b| b["name"] == name.as_str()))
            .and_then(|b| b["weight"].as_u64())
            .unwrap_or(999)
    };
    Ok((
        weight("podinfo-primary".into()),
        weight("podinfo-canary".into()),
    ))
}

/// Requests per Service `ns/name` the gateway simulator has sent so far.
fn served(st: &StateView, ns: &str, name: &str) -> u64 {
    st.gateway
        .services
        .get(&format!("{ns}/{name}"))
        .map_or(0, |t| t.requests)
}

async fn check_route(client: &Client, ns: &str) -> Result<()> {
    let r = http_route(client, ns).await?;
    let spec = &r.data["spec"];
    assert_eq!(spec["hostnames"], json!(["podinfo.example.com"]));
    assert_eq!(spec["parentRefs"][0]["name"], "gateway");
    assert_eq!(spec["parentRefs"][0]["namespace"], "gateway-system");
    assert_eq!(
        route_weights(client, ns).await?,
        (100, 0),
        "bootstrap split"
    );
    let parent = &r.data["status"]["parents"][0];
    let accepted = parent["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Accepted"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(accepted["status"], "True", "{parent}");
    assert_eq!(
        accepted["observedGeneration"].as_i64(),
        r.metadata.generation,
        "accepted at the route's generation"
    );
    Ok(())
}

async fn promotion(cluster: &'static fledge_e2e::Cluster, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let (operator, canary, _hooks) =
        bootstrap_with(cluster, &client, ns, &on_gateway, false).await?;
    check_route(&client, ns).await?;
    let expected = simulated(
        &cluster.dir().join("logs").join(ns).tap_mkdir()?,
        &canary,
        PROMOTE,
    )?;
    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    // Mid-analysis the canary gets its share through the gateway.
    wait_for("the canary at 50 %", Duration::from_secs(60), || async {
        Ok((route_weights(&client, ns).await? == (50, 50)).then_some(()))
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(150))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let got = settled_events(&client, ns, triggered, &expected).await?;
    assert_eq!(
        got, expected,
        "Events differ from `fledge simulate --format events`"
    );
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    assert_eq!(
        route_weights(&client, ns).await?,
        (100, 0),
        "back to the primary"
    );
    Ok(())
}

async fn rollback(cluster: &'static fledge_e2e::Cluster, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let (operator, canary, _hooks) =
        bootstrap_with(cluster, &client, ns, &on_gateway, false).await?;
    let expected = simulated(
        &cluster.dir().join("logs").join(ns).tap_mkdir()?,
        &canary,
        ROLLBACK,
    )?;
    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.2").await?;
    wait_phase(&client, ns, "Failed", Duration::from_secs(150))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let expected = about_half(expected);
    let got = about_half(settled_events(&client, ns, triggered, &expected).await?);
    assert_eq!(
        got, expected,
        "Events differ from `fledge simulate --format events`"
    );
    assert!(
        got.contains(&format!(
            "Halt podinfo.{ns} advancement success rate ~50% < 99%"
        )),
        "{got:#?}"
    );
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.0",
        "the primary keeps the old version"
    );
    assert_eq!(route_weights(&client, ns).await?, (100, 0), "rolled back");
    Ok(())
}

async fn ab_testing(cluster: &'static fledge_e2e::Cluster, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let edit = |c: Value| {
        let mut c = on_gateway(c);
        let a = c["spec"]["analysis"].as_object_mut().expect("analysis");
        a.remove("stepWeight");
        a.remove("maxWeight");
        a.insert("iterations".into(), json!(2));
        a.insert(
            "match".into(),
            json!([{"headers": {"x-canary": {"exact": "insider"}}}]),
        );
        c
    };
    let (operator, _canary, _hooks) = bootstrap_with(cluster, &client, ns, &edit, false).await?;
    let rules = http_route(&client, ns).await?.data["spec"]["rules"].clone();
    assert_eq!(
        rules[0]["matches"][0]["headers"],
        json!([{"name": "x-canary", "type": "Exact", "value": "insider"}])
    );
    assert_eq!(
        rules[1]["backendRefs"].as_array().map(|b| b.len()),
        Some(1),
        "the rest goes to the primary only: {rules}"
    );
    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    let iteration = format!("Advance podinfo.{ns} canary iteration 1/2");
    wait_for(
        "the first A/B iteration",
        Duration::from_secs(60),
        || async {
            Ok(events_since(&client, ns, triggered)
                .await?
                .contains(&iteration)
                .then_some(()))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = sim_state(cluster)?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = sim_state(cluster)?;
    let canary = served(&after, ns, "podinfo-canary") - served(&before, ns, "podinfo-canary");
    let primary = served(&after, ns, "podinfo-primary") - served(&before, ns, "podinfo-primary");
    let share = canary as f64 * 100.0 / (canary + primary).max(1) as f64;
    println!(
        "{ns}: canary share at the gateway during A/B {share:.1}% of {} requests",
        canary + primary
    );
    ensure!(
        canary + primary > 100,
        "too little gateway traffic: {canary} + {primary}"
    );
    assert!(
        (share - 10.0).abs() <= 3.0,
        "only the insiders (10 %) may reach the canary: {share:.1}%"
    );
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(150))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_drives_gateway_api_canaries() -> Result<()> {
    let Some(cluster) = world("operator_drives_gateway_api_canaries") else {
        return Ok(());
    };
    let started = Instant::now();
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    configure_sim(cluster, |config| {
        config.backends.insert(
            "gw-rollback/podinfo-canary".into(),
            Behaviour {
                error_ratio: 0.5,
                ..Default::default()
            },
        );
        let plain = RequestClass {
            weight: 9.0,
            ..Default::default()
        };
        let insider = RequestClass {
            weight: 1.0,
            headers: [("x-canary".to_string(), "insider".to_string())].into(),
            ..Default::default()
        };
        config.gateway.routes.insert(
            "gw-ab/podinfo".into(),
            RouterTraffic {
                rps: 100.0,
                requests: Some(vec![plain, insider]),
            },
        );
        Ok(())
    })?;
    let (p, r, ab) = tokio::join!(
        promotion(cluster, "gw-promote"),
        rollback(cluster, "gw-rollback"),
        ab_testing(cluster, "gw-ab"),
    );
    p.context("promotion")?;
    r.context("rollback")?;
    ab.context("A/B testing")?;
    println!(
        "gatewayapi:v1 scenarios: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
