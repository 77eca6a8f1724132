//! What starts, restarts and paces an analysis: a tracked ConfigMap's new data starts one (seen
//! from the watch, not at the next tick) and is copied to the `-primary` ConfigMap on promotion; a
//! new image mid-analysis restarts it from the first weight; a burst of label and annotation
//! edits to the target and the Canary takes no step early.
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fledge_e2e::{http, Cluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use super::{
    bootstrap_target, bootstrap_with, canary_resource, canary_status, events, events_since,
    image_of, install_fledge_crds, live_weights, set_image, settled_events, simulated, wait_phase,
    MkDir, Operator,
};
use crate::{wait_for, world};

/// Every Canary here analyses at this interval.
const INTERVAL: Duration = Duration::from_secs(10);
/// How long a change may take to be seen through the watch (it takes tens of milliseconds).
/// The operator's next tick is at least `INTERVAL - 2 * WATCH_BOUND` after each change (see
/// [`fresh_step`]), so a change found only at the tick misses this bound, and so does one
/// found only by another object's update waking the Canary.
const WATCH_BOUND: Duration = Duration::from_secs(1);
/// The resolution of `status.lastStepTime` (RFC 3339 with milliseconds).
const STEP_TIME_RESOLUTION: Duration = Duration::from_millis(1);

fn since(t: Timestamp, earlier: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(earlier)).unwrap_or_default()
}

fn last_step_time(status: &Value) -> Option<Timestamp> {
    status["lastStepTime"].as_str().and_then(|s| s.parse().ok())
}

/// Waits for the operator to take a step (a new `lastStepTime`), so the next tick is a whole
/// interval away; returns the step's time.
async fn fresh_step(client: &Client, ns: &str) -> Result<Timestamp> {
    let before = last_step_time(&canary_status(client, ns).await?);
    wait_for(
        &format!("Canary {ns}/podinfo to take a step"),
        INTERVAL * 2,
        || async {
            let t = last_step_time(&canary_status(client, ns).await?);
            Ok(t.filter(|t| Some(*t) != before))
        },
    )
    .await
}

/// The first Event from `since` on whose note is `note`, with its time.
async fn event(
    client: &Client,
    ns: &str,
    since: Timestamp,
    note: &str,
    timeout: Duration,
) -> Result<Timestamp> {
    wait_for(&format!("the Event `{note}`"), timeout, || async {
        Ok(events(client, ns, "podinfo")
            .await?
            .into_iter()
            .find(|(t, m)| *t >= since && m == note)
            .map(|(t, _)| t))
    })
    .await
}

/// A counter from the operator's `/metrics`.
fn counter(operator: &Operator, name: &str) -> Result<u64> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], operator.port));
    let body = http::get(addr, "/metrics")?.body;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("{name} missing from /metrics:\n{body}"))
}

fn owner_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"][0]["uid"].as_str()
}

/// (a) A ConfigMap volume and a Secret in `envFrom`: `-primary` copies at bootstrap (and the
/// pod anti-affinity to the target's pods turned to the primary's), a data edit starts an
/// analysis at once, and the promotion copies the new data.
async fn tracked_configs(cluster: &'static Cluster, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let config_data = json!({"config.yaml": "level: info\n"});
    // "s3cret"
    let secret_data = json!({"PODINFO_TOKEN": "czNjcmV0"});
    let objects = [
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "podinfo-config"}, "data": config_data}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "podinfo-secret"}, "data": secret_data}),
    ];
    let target = |mut d: Value| {
        let spec = &mut d["spec"]["template"]["spec"];
        spec["volumes"] = json!([{"name": "config", "configMap": {"name": "podinfo-config"}}]);
        let c = &mut spec["containers"][0];
        c["volumeMounts"] = json!([{"name": "config", "mountPath": "/etc/podinfo"}]);
        c["envFrom"] = json!([{"secretRef": {"name": "podinfo-secret"}}]);
        spec["affinity"] = json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
             "labelSelector": {"matchLabels": {"app": "podinfo"}}}}]}});
        d
    };
    // Without an autoscaler: the primary HPA's status updates would wake the Canary too.
    let edit = |mut c: Value| {
        if let Some(spec) = c["spec"].as_object_mut() {
            spec.remove("autoscalerRef");
        }
        c
    };
    let (operator, _canary, _hooks) =
        bootstrap_target(cluster, &client, ns, &objects, &target, &edit, false).await?;

    // The copies hold the same data and belong to the Canary.
    let canaries: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &canary_resource());
    let uid = canaries
        .get("podinfo")
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let cm = serde_json::to_value(config_maps.get("podinfo-config-primary").await?)?;
    assert_eq!(cm["data"], config_data, "podinfo-config-primary data");
    assert_eq!(
        owner_uid(&cm),
        Some(uid.as_str()),
        "podinfo-config-primary owner"
    );
    let secret = serde_json::to_value(secrets.get("podinfo-secret-primary").await?)?;
    assert_eq!(secret["data"], secret_data, "podinfo-secret-primary data");
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        owner_uid(&secret),
        Some(uid.as_str()),
        "podinfo-secret-primary owner"
    );

    // The primary runs the target's pod spec with the references pointed at the copies.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let primary_spec = |d: Deployment| -> Result<Value> {
        Ok(serde_json::to_value(d)?["spec"]["template"]["spec"].clone())
    };
    let mut expected = primary_spec(deployments.get("podinfo").await?)?;
    expected["volumes"][0]["configMap"]["name"] = json!("podinfo-config-primary");
    expected["containers"][0]["envFrom"][0]["secretRef"]["name"] = json!("podinfo-secret-primary");
    expected["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
        ["podAffinityTerm"]["labelSelector"]["matchLabels"]["app"] = json!("podinfo-primary");
    assert_eq!(
        primary_spec(deployments.get("podinfo-primary").await?)?,
        expected,
        "the primary's pod spec"
    );

    let checksum = |data: &Value| fledge::core::revision::config_checksum(data);
    let status = canary_status(&client, ns).await?;
    assert_eq!(
        status["trackedConfigs"],
        json!({"configmap/podinfo-config": checksum(&config_data),
               "secret/podinfo-secret": checksum(&secret_data)}),
        "status.trackedConfigs"
    );

    // Right after a step, so the next tick is a whole interval away: only the ConfigMap watch
    // can notice the edit within WATCH_BOUND.
    let step = fresh_step(&client, ns).await?;
    let new_data = json!({"config.yaml": "level: debug\n"});
    let edited = Timestamp::now();
    config_maps
        .patch(
            "podinfo-config",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": new_data})),
        )
        .await?;
    ensure!(
        since(edited, step) < INTERVAL - WATCH_BOUND * 2,
        "the edit came {:?} after the last step; the bound needs it sooner",
        since(edited, step)
    );
    let note = format!("New revision detected! Scaling up podinfo.{ns}");
    let detected = event(&client, ns, edited, &note, INTERVAL * 3)
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let latency = since(detected, edited);
    println!(
        "{ns}: ConfigMap edit -> `{note}` in {:.0} ms",
        latency.as_secs_f64() * 1000.0
    );
    assert!(
        latency < WATCH_BOUND,
        "the ConfigMap edit was noticed after {latency:?}, not from the watch"
    );

    wait_phase(&client, ns, "Succeeded", Duration::from_secs(150))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let got = events_since(&client, ns, edited).await?;
    assert!(
        got.contains(&format!("Advance podinfo.{ns} canary weight 50")),
        "{got:#?}"
    );
    assert!(
        got.last()
            .is_some_and(|l| l.starts_with("Promotion completed!")),
        "{got:#?}"
    );
    let cm = serde_json::to_value(config_maps.get("podinfo-config-primary").await?)?;
    assert_eq!(cm["data"], new_data, "the promotion copies the new data");
    let secret = serde_json::to_value(secrets.get("podinfo-secret-primary").await?)?;
    assert_eq!(secret["data"], secret_data);
    assert_eq!(
        primary_spec(deployments.get("podinfo-primary").await?)?,
        expected,
        "the promoted pod spec still uses the copies"
    );
    let status = canary_status(&client, ns).await?;
    assert_eq!(
        status["trackedConfigs"]["configmap/podinfo-config"],
        json!(checksum(&new_data))
    );
    Ok(())
}

/// (b) A new image after the first weight step restarts the analysis: weight back to zero, then
/// the first step again, and the newest image is promoted.
async fn restart(cluster: &'static Cluster, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let edit = |mut c: Value| {
        c["spec"]["analysis"]["stepWeight"] = json!(25);
        c
    };
    let (operator, canary, _hooks) = bootstrap_with(cluster, &client, ns, &edit, false).await?;
    let scenario = "trigger:\n  image: ghcr.io/stefanprodan/podinfo:6.0.1\nupdates:\n- afterStep: 2\n  image: ghcr.io/stefanprodan/podinfo:6.0.2\nrollout:\n  canaryReadyAfter: 0\n  primaryReadyAfter: 0\n";
    let expected = simulated(
        &cluster.dir().join("logs").join(ns).tap_mkdir()?,
        &canary,
        scenario,
    )?;

    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    let first = format!("Advance podinfo.{ns} canary weight 25");
    let advanced = event(&client, ns, triggered, &first, INTERVAL * 4)
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert_eq!(live_weights(&client, ns).await?, (25, 75));
    let changed = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.2").await?;
    ensure!(
        since(changed, advanced) < INTERVAL - WATCH_BOUND * 2,
        "the change came {:?} after the step; the bound needs it sooner",
        since(changed, advanced)
    );
    let note = format!("New revision detected! Restarting analysis for podinfo.{ns}");
    let restarted = event(&client, ns, changed, &note, INTERVAL * 2)
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let latency = since(restarted, changed);
    println!(
        "{ns}: set image mid-analysis -> `{note}` in {:.0} ms",
        latency.as_secs_f64() * 1000.0
    );
    assert!(
        latency < WATCH_BOUND,
        "the new image was noticed after {latency:?}, not from the watch"
    );
    // Until the next step: everything back on the primary, the analysis from the start.
    let status = canary_status(&client, ns).await?;
    assert_eq!(
        (
            status["phase"].as_str(),
            status["canaryWeight"].as_i64(),
            status["iterations"].as_i64(),
            status["failedChecks"].as_i64()
        ),
        (Some("Progressing"), Some(0), Some(0), Some(0)),
        "status after the restart: {status}"
    );
    assert_eq!(
        live_weights(&client, ns).await?,
        (0, 100),
        "routes after the restart"
    );

    wait_phase(&client, ns, "Succeeded", Duration::from_secs(150))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let got = settled_events(&client, ns, triggered, &expected).await?;
    assert_eq!(
        got, expected,
        "Events differ from `fledge simulate --format events`"
    );
    let after: Vec<&String> = got
        .iter()
        .skip_while(|l| **l != note)
        .filter(|l| l.starts_with("Advance"))
        .collect();
    assert_eq!(
        after.first().map(|l| l.as_str()),
        Some(first.as_str()),
        "the restarted analysis begins at the first weight: {got:#?}"
    );
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.2"
    );
    Ok(())
}

/// 50 label and annotation edits of the target and 50 of the Canary, as fast as the API takes
/// them; returns how long they took.
async fn burst(client: &Client, ns: &str, round: usize) -> Result<Duration> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let canaries: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &canary_resource());
    let started = Instant::now();
    for i in 0..50 {
        let n = format!("{round}-{i}");
        let meta =
            json!({"metadata": {"labels": {"burst": n}, "annotations": {"example.com/burst": n}}});
        let p = PatchParams::default();
        deployments
            .patch("podinfo", &p, &Patch::Merge(&meta))
            .await?;
        canaries.patch("podinfo", &p, &Patch::Merge(&meta)).await?;
    }
    Ok(started.elapsed())
}

/// (c) Bursts of metadata-only edits right after two weight steps: no step comes early.
async fn steady(cluster: &'static Cluster, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let edit = |mut c: Value| {
        c["spec"]["analysis"]["stepWeight"] = json!(25);
        c["spec"]["analysis"]["maxWeight"] = json!(75);
        c
    };
    let (operator, canary, _hooks) = bootstrap_with(cluster, &client, ns, &edit, false).await?;
    let expected = simulated(
        &cluster.dir().join("logs").join(ns).tap_mkdir()?,
        &canary,
        super::PROMOTE,
    )?;

    // The time of the first status write at each weight, read every 100 ms.
    let watcher = {
        let client = client.clone();
        let ns = ns.to_string();
        tokio::spawn(async move {
            let mut first: Vec<(i64, Timestamp)> = Vec::new();
            loop {
                if let Ok(s) = canary_status(&client, &ns).await {
                    let w = s["canaryWeight"].as_i64().unwrap_or(0);
                    if let Some(t) = last_step_time(&s) {
                        if w > 0 && !first.iter().any(|(seen, _)| *seen == w) {
                            first.push((w, t));
                        }
                    }
                    if s["phase"] == "Succeeded" {
                        return first;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    let mut total = 0;
    for (round, weight) in [25, 50].into_iter().enumerate() {
        let note = format!("Advance podinfo.{ns} canary weight {weight}");
        let stepped = event(&client, ns, triggered, &note, INTERVAL * 4)
            .await
            .with_context(|| format!("operator log:\n{}", operator.logs()))?;
        let (reconciles, steps) = (
            counter(&operator, "fledge_reconciles_total")?,
            counter(&operator, "fledge_analysis_steps_total")?,
        );
        let took = burst(&client, ns, round).await?;
        // Let the operator catch up with the last edits.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = Timestamp::now();
        ensure!(
            since(seen, stepped) < INTERVAL - Duration::from_secs(1),
            "the burst took {took:?}; it must end well before the next step is due"
        );
        let woke = counter(&operator, "fledge_reconciles_total")? - reconciles;
        let stepped_early = counter(&operator, "fledge_analysis_steps_total")? - steps;
        println!(
            "{ns}: burst {round} (100 edits in {:.1}s) woke {woke} reconciles, {stepped_early} steps",
            took.as_secs_f64()
        );
        assert!(
            woke >= 5,
            "the burst should reach the operator: {woke} reconciles"
        );
        assert_eq!(stepped_early, 0, "steps taken during the burst");
        total += woke;
    }
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(150))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let steps = watcher.await?;

    let got = settled_events(&client, ns, triggered, &expected).await?;
    assert_eq!(
        got, expected,
        "Events differ from `fledge simulate --format events`"
    );
    // The Advance Events, and the step times the status recorded for each weight.
    let advances: Vec<(Timestamp, String)> = events(&client, ns, "podinfo")
        .await?
        .into_iter()
        .filter(|(t, m)| *t >= triggered && m.starts_with(&format!("Advance podinfo.{ns}")))
        .collect();
    let weights: Vec<i64> = steps.iter().map(|(w, _)| *w).collect();
    assert_eq!(weights, [25, 50, 75], "weights the status went through");
    assert_eq!(advances.len(), 3, "{advances:#?}");
    let interval = SignedDuration::try_from(INTERVAL)?;
    let resolution = SignedDuration::try_from(STEP_TIME_RESOLUTION)?;
    for pair in steps.windows(2) {
        let gap = pair[1].1.duration_since(pair[0].1);
        println!("{ns}: step to weight {} after {gap:#}", pair[1].0);
        assert!(
            gap >= interval - resolution,
            "weight {} came {gap:#} after weight {}: early",
            pair[1].0,
            pair[0].0
        );
    }
    for pair in advances.windows(2) {
        let gap = pair[1].0.duration_since(pair[0].0);
        println!("{ns}: `{}` {gap:#} after the previous", pair[1].1);
        // A step's Events carry its time, a microsecond apart; steps are due from the
        // millisecond `lastStepTime`.
        assert!(
            gap >= interval - resolution - SignedDuration::from_micros(10),
            "`{}` came {gap:#} after `{}`: early",
            pair[1].1,
            pair[0].1
        );
    }
    println!("{ns}: {total} reconciles from the bursts, no early step");
    Ok(())
}

/// Tracked configs, restarts and pacing, concurrently in three namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tracks_configs_and_restarts_on_change() -> Result<()> {
    let Some(cluster) = world("operator_tracks_configs_and_restarts_on_change") else {
        return Ok(());
    };
    let started = Instant::now();
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    let (a, b, c) = tokio::join!(
        tracked_configs(cluster, "op-track-config"),
        restart(cluster, "op-track-restart"),
        steady(cluster, "op-track-steady"),
    );
    a.context("tracked ConfigMap and Secret")?;
    b.context("restart on a new image")?;
    c.context("metadata bursts")?;
    println!(
        "tracking scenarios: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
