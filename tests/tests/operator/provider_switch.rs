//! A live Canary moved from App Mesh to Gateway API by changing `spec.provider` (and adding
//! `gatewayRefs`): no new analysis, the primary serves throughout (the simulators' request
//! counts to it, App Mesh's plus the gateway's, grow in every quarter second of the switch),
//! and the App Mesh objects go: the routing ones once the HTTPRoute is Accepted, the
//! VirtualNodes only after the namespace stops joining the mesh. A Canary changed
//! mid-analysis finishes that analysis on App Mesh first. A move given up before the gateway
//! accepted the route leaves App Mesh as it was and removes the HTTPRoute made for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fledge_e2e::Cluster;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use super::gateway_api::{http_route, on_gateway, route_weights};
use super::{
    appmesh, bootstrap_with, canary_status, image_of, install_fledge_crds, live_weights,
    replicas_of, set_image, wait_phase,
};
use crate::{apply, configure_sim, sim_state, ssa, wait_for, world};

const INJECTOR: &str = "appmesh.k8s.aws/sidecarInjectorWebhook";
/// The App Mesh objects that route: they go as soon as the HTTPRoute carries the traffic.
const ROUTING: [(&str, &str); 4] = [
    ("VirtualService", "podinfo"),
    ("VirtualService", "podinfo-canary"),
    ("VirtualRouter", "podinfo"),
    ("VirtualRouter", "podinfo-canary"),
];
const NODES: [&str; 2] = ["podinfo-primary", "podinfo-canary"];

/// Requests the simulators have sent to one backend so far: (through App Mesh, through the
/// gateway).
#[derive(Debug, Clone, Copy)]
struct Count {
    mesh: u64,
    gateway: u64,
}

impl Count {
    fn total(self) -> u64 {
        self.mesh + self.gateway
    }
}

/// Reads the simulator's per-backend counts for `ns/podinfo-primary` every quarter second
/// until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Vec<(Instant, Count)>>>,
}

impl Sampler {
    fn start(cluster: &'static Cluster, ns: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let key = format!("{ns}/podinfo-primary");
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let st = sim_state(cluster)?;
                let count = Count {
                    mesh: st.totals.get(&key).map_or(0, |t| t.requests),
                    gateway: st.gateway.services.get(&key).map_or(0, |t| t.requests),
                };
                out.push((Instant::now(), count));
                std::thread::sleep(Duration::from_millis(250));
            }
            Ok(out)
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> Result<Vec<(Instant, Count)>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the sampler panicked"))?
    }
}

/// Waits until App Mesh routes requests to `ns/podinfo-primary` (the simulator picks up a new
/// router within a second of its creation), so the samples start from a serving primary.
async fn primary_served(cluster: &'static Cluster, ns: &str) -> Result<()> {
    let key = format!("{ns}/podinfo-primary");
    let first = sim_state(cluster)?
        .totals
        .get(&key)
        .map_or(0, |t| t.requests);
    wait_for(
        "App Mesh to serve the primary",
        Duration::from_secs(30),
        || async {
            let now = sim_state(cluster)?
                .totals
                .get(&key)
                .map_or(0, |t| t.requests);
            Ok((now > first).then_some(()))
        },
    )
    .await
}

/// Every window between two samples saw requests reach the primary.
fn served_throughout(ns: &str, samples: &[(Instant, Count)]) -> Result<()> {
    ensure!(samples.len() > 10, "too few samples: {}", samples.len());
    let start = samples[0].0;
    let record = samples
        .iter()
        .map(|(t, c)| {
            format!(
                "{:.2}s {}+{}",
                (*t - start).as_secs_f64(),
                c.mesh,
                c.gateway
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut least = u64::MAX;
    for w in samples.windows(2) {
        let (t0, a) = w[0];
        let (t1, b) = w[1];
        let got = b.total() - a.total();
        ensure!(
            got > 0,
            "no request reached podinfo-primary in {:.2}s ({a:?} -> {b:?}); samples (App Mesh + \
             gateway): {record}",
            (t1 - t0).as_secs_f64()
        );
        least = least.min(got);
    }
    let (first, last) = (samples[0].1, samples[samples.len() - 1].1);
    println!(
        "{ns}: podinfo-primary served in each of {} windows (at least {least} requests); \
         App Mesh {} -> {}, gateway {} -> {}",
        samples.len() - 1,
        first.mesh,
        last.mesh,
        first.gateway,
        last.gateway
    );
    Ok(())
}

/// The first samples came through App Mesh only and the last through the gateway only.
fn moved_to_the_gateway(samples: &[(Instant, Count)]) {
    let (first, last) = (samples[0].1, samples[samples.len() - 1].1);
    let tail = samples[samples.len() - 5].1;
    assert_eq!(first.gateway, 0, "no gateway traffic before the switch");
    assert!(
        last.gateway > 0,
        "the gateway serves the primary at the end"
    );
    assert_eq!(last.mesh, tail.mesh, "App Mesh routes nothing at the end");
}

/// (reason, Warning?, note) of the Canary's Events from Fledge since `since`, oldest first.
async fn events_with_reasons(
    client: &Client,
    ns: &str,
    since: Timestamp,
) -> Result<Vec<(String, bool, String)>> {
    let mut out: Vec<_> = super::fledge_events(client, ns, "podinfo")
        .await?
        .into_iter()
        .filter_map(|e| {
            let at = e.event_time.as_ref()?.0;
            (at >= since).then(|| {
                (
                    at,
                    e.reason.unwrap_or_default(),
                    e.type_.as_deref() == Some("Warning"),
                    e.note.unwrap_or_default(),
                )
            })
        })
        .collect();
    out.sort_by_key(|e| e.0);
    Ok(out.into_iter().map(|(_, r, w, n)| (r, w, n)).collect())
}

fn switch_condition(status: &Value) -> Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "RouterSwitch"))
        .cloned()
        .unwrap_or_default()
}

async fn exists(client: &Client, ns: &str, kind: &str, name: &str) -> Result<bool> {
    Ok(
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &appmesh(kind))
            .get_opt(name)
            .await?
            .is_some(),
    )
}

async fn routing_left(client: &Client, ns: &str) -> Result<Vec<String>> {
    let mut left = Vec::new();
    for (kind, name) in ROUTING {
        if exists(client, ns, kind, name).await? {
            left.push(format!("{kind} {name}"));
        }
    }
    Ok(left)
}

/// The HTTPRoute routes everything to the primary and its Gateway accepted it.
async fn check_route(client: &Client, ns: &str) -> Result<()> {
    assert_eq!(
        route_weights(client, ns).await?,
        (100, 0),
        "all on the primary"
    );
    let r = http_route(client, ns).await?;
    let accepted = r.data["status"]["parents"][0]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Accepted"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(accepted["status"], "True", "{}", r.data["status"]);
    assert_eq!(
        accepted["observedGeneration"].as_i64(),
        r.metadata.generation
    );
    Ok(())
}

/// What must never follow a change of router on a promoted Canary.
fn analysis_started(events: &[(String, bool, String)]) -> Option<&String> {
    events.iter().map(|(_, _, n)| n).find(|n| {
        n.contains("New revision detected")
            || n.contains("Starting canary analysis")
            || n.contains("Advance podinfo")
            || n.contains("Initialization done")
    })
}

async fn succeeded_canary(cluster: &'static Cluster, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let (operator, canary, _hooks) = bootstrap_with(cluster, &client, ns, &|c| c, false).await?;
    set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(150))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let promoted = canary_status(&client, ns).await?;
    let logs = || format!("operator log:\n{}", operator.logs());

    primary_served(cluster, ns).await?;
    let sampler = Sampler::start(cluster, ns);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let switched_at = Timestamp::now();
    let began = Instant::now();
    apply(&client, ns, &on_gateway(canary), &ssa()).await?;
    // The routing App Mesh objects go once the HTTPRoute is Accepted (after the gateway
    // simulator's delay); the Canary stays promoted the whole time.
    let result = wait_for(
        "the App Mesh routing retired",
        Duration::from_secs(60),
        || async {
            let s = canary_status(&client, ns).await?;
            ensure!(
                s["phase"] == "Succeeded" && s["canaryWeight"] == 0,
                "the Canary left Succeeded during the switch: {s}"
            );
            ensure!(
                replicas_of(&client, ns, "podinfo").await? == 0,
                "the canary Deployment was scaled up"
            );
            let done = switch_condition(&s)["reason"] == "RetirePending"
                && routing_left(&client, ns).await?.is_empty();
            Ok(done.then(Timestamp::now))
        },
    )
    .await;
    let took = began.elapsed();
    // Gateway-only traffic for a while, then look at the whole record.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = sampler.finish()?;
    let retired_at = result.with_context(logs)?;
    println!(
        "{ns}: App Mesh routing retired {:.1}s after spec.provider changed",
        took.as_secs_f64()
    );
    served_throughout(ns, &samples)?;
    moved_to_the_gateway(&samples);
    check_route(&client, ns).await?;
    for node in NODES {
        assert!(
            exists(&client, ns, "VirtualNode", node).await?,
            "VirtualNode {node} is kept while {INJECTOR}=enabled"
        );
    }

    let status = canary_status(&client, ns).await?;
    for kept in ["lastAppliedSpec", "lastPromotedSpec"] {
        assert_eq!(status[kept], promoted[kept], "status.{kept}");
    }
    let record = &status["router"];
    assert_eq!(
        (&record["provider"], &record["retiring"]),
        (&json!("gatewayapi:v1"), &json!("appmesh:v1beta2")),
        "{record}"
    );
    // Retired no sooner than 10 s after the gateway took over.
    let since: Timestamp = record["since"].as_str().context("router.since")?.parse()?;
    ensure!(
        retired_at.duration_since(since) >= k8s_openapi::jiff::SignedDuration::from_secs(10),
        "the App Mesh routing went at {retired_at}, {since} + less than 10 s"
    );
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    let events = events_with_reasons(&client, ns, switched_at).await?;
    let reasons: Vec<&str> = events.iter().map(|(r, _, _)| r.as_str()).collect();
    let told: Vec<&str> = reasons
        .iter()
        .copied()
        .filter(|r| *r != "WaitingForRouter")
        .collect();
    assert_eq!(
        told,
        ["Moving", "Switched", "Retired", "RetirePending"],
        "{events:#?}"
    );
    assert!(
        reasons.contains(&"WaitingForRouter"),
        "the gateway accepts the route after a delay: {events:#?}"
    );
    let pending = &events[events.len() - 1];
    assert!(pending.1, "RetirePending is a Warning");
    assert!(
        pending
            .2
            .contains("VirtualNode podinfo-primary, VirtualNode podinfo-canary kept")
            && pending
                .2
                .contains(&format!("kubectl label namespace {ns} {INJECTOR}-")),
        "{}",
        pending.2
    );
    let retired = &events[events.len() - 2].2;
    for (kind, name) in ROUTING {
        assert!(retired.contains(&format!("{kind} {name}")), "{retired}");
    }
    if let Some(n) = analysis_started(&events) {
        panic!("a promoted Canary was analysed again: {n}");
    }

    // Injection off: the VirtualNodes go on a later reconcile and the switch is over.
    let label_off = Timestamp::now();
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {INJECTOR: null}}})),
        )
        .await?;
    wait_for(
        "the VirtualNodes deleted",
        Duration::from_secs(60),
        || async {
            let mut left = 0;
            for node in NODES {
                left += usize::from(exists(&client, ns, "VirtualNode", node).await?);
            }
            let s = canary_status(&client, ns).await?;
            Ok((left == 0 && s["router"]["retiring"].is_null()).then_some(s))
        },
    )
    .await
    .with_context(logs)?;
    let s = canary_status(&client, ns).await?;
    let c = switch_condition(&s);
    assert_eq!(
        (&c["status"], &c["reason"]),
        (&json!("True"), &json!("Switched"))
    );
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains("the appmesh:v1beta2 objects are gone")),
        "{c}"
    );
    assert_eq!(s["phase"], "Succeeded");
    let events = events_with_reasons(&client, ns, label_off).await?;
    let reasons: Vec<&str> = events.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(reasons, ["Retired", "Switched"], "{events:#?}");
    assert!(
        events[0].2.contains("VirtualNode podinfo-primary")
            && events[0].2.contains("VirtualNode podinfo-canary"),
        "{events:#?}"
    );
    check_route(&client, ns).await?;
    Ok(())
}

async fn mid_analysis(cluster: &'static Cluster, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let (operator, canary, _hooks) = bootstrap_with(cluster, &client, ns, &|c| c, false).await?;
    let logs = || format!("operator log:\n{}", operator.logs());
    set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    wait_for("the canary at 50 %", Duration::from_secs(60), || async {
        Ok((live_weights(&client, ns).await? == (50, 50)).then_some(()))
    })
    .await
    .with_context(logs)?;
    let changed_at = Timestamp::now();
    apply(&client, ns, &on_gateway(canary), &ssa()).await?;
    wait_for("the switch deferred", Duration::from_secs(30), || async {
        let s = canary_status(&client, ns).await?;
        Ok((switch_condition(&s)["reason"] == "Deferred").then_some(()))
    })
    .await
    .with_context(logs)?;
    // The analysis goes on on App Mesh: no HTTPRoute until it has ended.
    ensure!(
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            ns,
            &fledge::operator::router::gateway_api::resource()
        )
        .get_opt("podinfo")
        .await?
        .is_none(),
        "an HTTPRoute was created during the analysis"
    );
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(150))
        .await
        .with_context(logs)?;
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.1",
        "the analysis ended in promotion"
    );
    wait_for(
        "the move to Gateway API",
        Duration::from_secs(60),
        || async {
            let s = canary_status(&client, ns).await?;
            Ok((switch_condition(&s)["reason"] == "RetirePending"
                && routing_left(&client, ns).await?.is_empty())
            .then_some(()))
        },
    )
    .await
    .with_context(logs)?;
    check_route(&client, ns).await?;
    let events = events_with_reasons(&client, ns, changed_at).await?;
    let at = |reason: &str, text: &str| {
        events
            .iter()
            .position(|(r, _, n)| r == reason && n.contains(text))
            .with_context(|| format!("no {reason} Event with {text:?}: {events:#?}"))
    };
    let deferred = at("Deferred", "during the analysis")?;
    let promoted = events
        .iter()
        .position(|(_, _, n)| n.contains("Promotion completed!"))
        .with_context(|| format!("no promotion Event: {events:#?}"))?;
    let moving = at("Moving", "from appmesh:v1beta2 to gatewayapi:v1")?;
    assert!(
        deferred < promoted && promoted < moving,
        "deferred, then promoted on App Mesh, then moved: {events:#?}"
    );
    Ok(())
}

/// A move given up while the gateway has not accepted the route: App Mesh keeps the traffic
/// and the HTTPRoute made for the move goes.
async fn given_up(cluster: &'static Cluster, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let (operator, canary, _hooks) = bootstrap_with(cluster, &client, ns, &|c| c, false).await?;
    let logs = || format!("operator log:\n{}", operator.logs());
    primary_served(cluster, ns).await?;
    let sampler = Sampler::start(cluster, ns);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let changed_at = Timestamp::now();
    apply(&client, ns, &on_gateway(canary.clone()), &ssa()).await?;
    let waiting = wait_for("the move to wait", Duration::from_secs(30), || async {
        let s = canary_status(&client, ns).await?;
        Ok((switch_condition(&s)["reason"] == "WaitingForRouter").then_some(s))
    })
    .await
    .with_context(logs)?;
    assert_eq!(waiting["router"]["moving"], "gatewayapi:v1", "{waiting}");
    assert_eq!(route_weights(&client, ns).await?, (100, 0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Back to App Mesh.
    apply(&client, ns, &canary, &ssa()).await?;
    let back = wait_for("the HTTPRoute removed", Duration::from_secs(30), || async {
        let s = canary_status(&client, ns).await?;
        let route = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            ns,
            &fledge::operator::router::gateway_api::resource(),
        )
        .get_opt("podinfo")
        .await?;
        let c = switch_condition(&s);
        Ok(
            (route.is_none() && c["reason"] == "Cancelled" && s["router"]["retiring"].is_null())
                .then_some(s),
        )
    })
    .await
    .with_context(logs)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = sampler.finish()?;
    served_throughout(ns, &samples)?;
    assert_eq!(
        samples[samples.len() - 1].1.gateway,
        0,
        "the gateway never carried the traffic"
    );
    assert_eq!(back["phase"], "Initialized");
    assert_eq!(back["router"], json!({"provider": "appmesh:v1beta2"}));
    let c = switch_condition(&back);
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("the gatewayapi:v1 objects made for the move are gone")),
        "{c}"
    );
    assert_eq!(routing_left(&client, ns).await?.len(), ROUTING.len());
    for node in NODES {
        assert!(exists(&client, ns, "VirtualNode", node).await?, "{node}");
    }
    assert_eq!(
        live_weights(&client, ns).await?,
        (0, 100),
        "all on the primary"
    );
    let events = events_with_reasons(&client, ns, changed_at).await?;
    let reasons: Vec<&str> = events.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(
        reasons,
        ["Moving", "WaitingForRouter", "Cancelled", "Retired"],
        "{events:#?}"
    );
    assert!(
        events[3]
            .2
            .contains("Deleted the gatewayapi:v1 objects of podinfo.")
            && events[3].2.ends_with("HTTPRoute podinfo"),
        "{events:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_moves_a_live_canary_from_app_mesh_to_gateway_api() -> Result<()> {
    let Some(cluster) = world("operator_moves_a_live_canary_from_app_mesh_to_gateway_api") else {
        return Ok(());
    };
    let started = Instant::now();
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    // The gateway accepts each route generation 3 s after it sees it, as a real controller
    // takes a moment: App Mesh must keep serving meanwhile.
    configure_sim(cluster, |config| {
        for ns in ["switch-live", "switch-mid"] {
            config
                .gateway
                .accept_delay
                .insert(format!("{ns}/podinfo"), 3.0);
        }
        // Never accepted within the test.
        config
            .gateway
            .accept_delay
            .insert("switch-back/podinfo".into(), 3600.0);
        Ok(())
    })?;
    let (live, mid, back) = tokio::join!(
        succeeded_canary(cluster, "switch-live"),
        mid_analysis(cluster, "switch-mid"),
        given_up(cluster, "switch-back"),
    );
    live.context("a Succeeded Canary")?;
    mid.context("a Canary mid-analysis")?;
    back.context("a move given up")?;
    println!(
        "provider switch scenarios: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
