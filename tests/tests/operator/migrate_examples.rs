//! `fledge migrate appmesh-to-gateway-api` on every Canary in `examples/`: what it prints is
//! applied to the cluster as it is (MetricTemplates and Canary) and runs to Succeeded through
//! the gateway simulator. The test changes only what makes it fit a test: the namespace, a 10 s
//! interval with at most two steps or iterations, 30 s metric windows, and webhook URLs
//! pointed at a local receiver (which checks that the load tests now call the gateway). The
//! example already written for `gatewayapi:v1` is refused by the migration and applied as it
//! is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fledge_e2e::cluster::{assets_dir, create_namespace, read_manifest};
use fledge_e2e::Cluster;
use kube::Client;
use serde_json::{json, Value};

use super::gateway_api::{http_route, route_weights};
use super::{
    events_since, fledge_binary, image_of, install_fledge_crds, set_image, wait_phase, Operator,
    Receiver,
};
use crate::{apply, manifest, ssa, world};

/// The Canaries under `examples/`, found by walking it (a new example is covered without
/// editing this test).
fn example_canaries() -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    walk(&path, out)?;
                }
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && read_manifest(&path)?
                    .iter()
                    .any(|d| d["kind"] == "Canary" && d["apiVersion"] == "flagger.app/v1beta1")
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&assets_dir().join("../../examples"), &mut out)?;
    out.sort();
    Ok(out)
}

/// `fledge migrate appmesh-to-gateway-api` of `file`: (exit code, stdout, stderr).
fn migrate(file: &Path) -> Result<(i32, String, String)> {
    let out = Command::new(fledge_binary()?)
        .args(["migrate", "appmesh-to-gateway-api", "-f"])
        .arg(file)
        .args([
            "--gateway",
            "gateway-system/gateway",
            "--gateway-address",
            "http://gateway.gateway-system",
        ])
        .output()
        .context("running fledge migrate")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// What the test changes in a document so it runs here, quickly.
fn fit_for_test(mut doc: Value, ns: &str, hooks: &Receiver) -> Value {
    doc["metadata"]["namespace"] = json!(ns);
    if doc["kind"] != "Canary" {
        return doc;
    }
    let a = &mut doc["spec"]["analysis"];
    a["interval"] = json!("10s");
    if a["iterations"].as_u64().is_some_and(|n| n > 2) {
        a["iterations"] = json!(2);
    }
    if let Some(max) = a["maxWeight"].as_u64() {
        a["stepWeight"] = json!(max.div_ceil(2));
    }
    for m in a["metrics"].as_array_mut().into_iter().flatten() {
        m["interval"] = json!("30s");
    }
    for w in a["webhooks"].as_array_mut().into_iter().flatten() {
        let name = w["name"].as_str().unwrap_or("hook").to_string();
        w["url"] = json!(hooks.url(&format!("/{name}")));
    }
    doc
}

/// The commands the receiver was sent for the webhook `name`.
fn commands(hooks: &Receiver, name: &str) -> Vec<String> {
    hooks
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == format!("/{name}"))
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
        .filter_map(|b| b["metadata"]["cmd"].as_str().map(str::to_string))
        .collect()
}

/// Applies `docs` (MetricTemplates first) into `ns` beside the guide's podinfo, and runs the
/// Canary to a promotion of a new image.
async fn run_to_succeeded(
    cluster: &'static Cluster,
    client: &Client,
    ns: &str,
    docs: Vec<Value>,
) -> Result<()> {
    create_namespace(client, ns, &[]).await?;
    for doc in manifest("manifests/podinfo-deployment.yaml")
        .into_iter()
        .chain(manifest("manifests/podinfo-hpa.yaml"))
    {
        apply(client, ns, &doc, &ssa()).await?;
    }
    let hooks = Receiver::start().await?;
    let operator = Operator::start(
        cluster,
        ns,
        &[&format!("--namespace={ns}"), "--log-level=info"],
    )?;
    let logs = || format!("operator log:\n{}", operator.logs());
    let docs: Vec<Value> = docs
        .into_iter()
        .map(|d| fit_for_test(d, ns, &hooks))
        .collect();
    let canary = docs
        .iter()
        .find(|d| d["kind"] == "Canary")
        .cloned()
        .context("no Canary in the migration's output")?;
    for doc in docs.iter().filter(|d| d["kind"] != "Canary") {
        apply(client, ns, doc, &ssa()).await?;
    }
    apply(client, ns, &canary, &ssa()).await?;
    wait_phase(client, ns, "Initialized", Duration::from_secs(90))
        .await
        .with_context(logs)?;
    assert_eq!(
        route_weights(client, ns).await?,
        (100, 0),
        "{ns}: bootstrap"
    );
    let hosts = &http_route(client, ns).await?.data["spec"]["hostnames"];
    assert_eq!(
        hosts, &canary["spec"]["service"]["hosts"],
        "{ns}: hostnames"
    );

    let triggered = set_image(client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    wait_phase(client, ns, "Succeeded", Duration::from_secs(180))
        .await
        .with_context(logs)?;
    let events = events_since(client, ns, triggered).await?;
    // Every check passed the first time: the gateway's metrics were there for each query
    // (a Halt Event tells each failed check; `failedChecks` is reset by the promotion).
    assert!(
        !events.iter().any(|e| e.starts_with("Halt")),
        "{ns}: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Promotion completed! Scaling down")),
        "{ns}: {events:#?}"
    );
    assert_eq!(
        image_of(client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    assert_eq!(route_weights(client, ns).await?, (100, 0), "{ns}: promoted");

    // The load tests were sent as the migration wrote them: through the gateway.
    let wanted: Vec<(String, String)> = canary["spec"]["analysis"]["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["type"].as_str().unwrap_or("rollout") == "rollout")
        .filter_map(|w| {
            Some((
                w["name"].as_str()?.to_string(),
                w["metadata"]["cmd"].as_str()?.to_string(),
            ))
        })
        .collect();
    ensure!(!wanted.is_empty(), "{ns}: no load test in the Canary");
    for (name, cmd) in &wanted {
        let sent = commands(&hooks, name);
        ensure!(
            !sent.is_empty() && sent.iter().all(|c| c == cmd),
            "{ns}: webhook {name} was sent {sent:?}, the Canary says {cmd:?}"
        );
        ensure!(
            cmd.contains("http://gateway.gateway-system/"),
            "{ns}: {name} does not go through the gateway: {cmd}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrated_examples_run_to_succeeded_on_gateway_api() -> Result<()> {
    let Some(cluster) = world("migrated_examples_run_to_succeeded_on_gateway_api") else {
        return Ok(());
    };
    let started = Instant::now();
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    let files = example_canaries()?;
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| Some(f.file_stem()?.to_str()?.to_string()))
        .collect();
    // The guide's three App Mesh Canaries and the one written for Gateway API, at least.
    for known in [
        "canary",
        "canary-ab-header",
        "canary-ab-cookie",
        "canary-gatewayapi",
    ] {
        ensure!(
            names.iter().any(|n| n == known),
            "{known} not found: {names:?}"
        );
    }

    let mut runs = Vec::new();
    for (file, name) in files.iter().zip(&names) {
        let original = read_manifest(file)?;
        let provider = original
            .iter()
            .find(|d| d["kind"] == "Canary")
            .and_then(|c| c["spec"]["provider"].as_str())
            .unwrap_or_default()
            .to_string();
        let (code, out, err) = migrate(file)?;
        let docs = if provider == "gatewayapi:v1" {
            // Nothing to migrate: refused with the reason, and the example runs as it is.
            assert_eq!(code, 1, "{name}: {err}");
            assert!(
                err.contains("spec.provider: already \"gatewayapi:v1\""),
                "{name}: {err}"
            );
            original
        } else {
            assert_eq!(code, 0, "{name}: {err}");
            println!("fledge migrate {name}.yaml reports:\n{err}");
            let path = cluster
                .dir()
                .join("logs")
                .join(format!("migrated-{name}.yaml"));
            std::fs::write(&path, &out)?;
            let docs = read_manifest(&path)?;
            let canary = docs
                .iter()
                .find(|d| d["kind"] == "Canary")
                .with_context(|| format!("{name}: no Canary in\n{out}"))?;
            assert_eq!(canary["spec"]["provider"], "gatewayapi:v1", "{name}");
            docs
        };
        let ns = format!("mig-{name}");
        let (client, name) = (client.clone(), name.clone());
        runs.push(tokio::spawn(async move {
            run_to_succeeded(cluster, &client, &ns, docs)
                .await
                .with_context(|| format!("{ns}: the migrated {name}.yaml"))
        }));
    }
    for run in runs {
        run.await??;
    }
    println!(
        "migrated examples ran to Succeeded: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
