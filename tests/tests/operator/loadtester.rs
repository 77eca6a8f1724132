//! `fledge loadtester` as the guide's `flagger-loadtester.test`: one child process with shell
//! commands allowed and `podinfo-canary.test:9898` resolved to the podinfo stand-in, serving
//! the guide's webhooks unchanged, and gates, each in its own namespace, concurrently.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fledge_e2e::podinfo::Podinfo;
use fledge_e2e::{http, Cluster};
use kube::Client;
use serde_json::{json, Value};

use super::{bootstrap_with, events, image_of, install_fledge_crds, set_image, wait_phase};
use super::{Loadtester, Operator};
use crate::{wait_for, world};

const NEW_IMAGE: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";

/// The Canary's Event notes, in order.
async fn notes(client: &Client, ns: &str) -> Result<Vec<String>> {
    Ok(events(client, ns, "podinfo")
        .await?
        .into_iter()
        .map(|(_, m)| m)
        .collect())
}

async fn wait_note(client: &Client, ns: &str, note: &str, within: Duration) -> Result<()> {
    wait_for(&format!("Event {note:?} in {ns}"), within, || async {
        Ok(notes(client, ns)
            .await?
            .iter()
            .any(|n| n == note)
            .then_some(()))
    })
    .await
}

/// `POST path` of the loadtester with the Canary's name and namespace.
async fn gate(lt: &Loadtester, path: &str, ns: &str) -> Result<u16> {
    let body = json!({"name": "podinfo", "namespace": ns}).to_string();
    let addr = lt.addr;
    let path = path.to_string();
    let r = tokio::task::spawn_blocking(move || http::request(addr, "POST", &path, Some(&body)))
        .await??;
    Ok(r.status)
}

fn with_hooks(hooks: Value) -> impl Fn(Value) -> Value + Sync {
    move |mut c: Value| {
        c["spec"]["analysis"]["webhooks"] = hooks.clone();
        c
    }
}

async fn started(
    cluster: &'static Cluster,
    client: &Client,
    ns: &str,
    edit: &(dyn Fn(Value) -> Value + Sync),
) -> Result<Operator> {
    let (operator, _, _) = bootstrap_with(cluster, client, ns, edit, false).await?;
    set_image(client, ns, NEW_IMAGE).await?;
    Ok(operator)
}

/// The guide's two webhooks, metadata as written, only the URL pointing at the loadtester.
async fn guide_webhooks(
    cluster: &'static Cluster,
    lt: &Loadtester,
    podinfo: &Podinfo,
    ns: &str,
) -> Result<()> {
    let client = cluster.client().await?;
    let url = lt.url("/");
    let edit = move |mut c: Value| {
        let hooks = &mut c["spec"]["analysis"]["webhooks"];
        hooks[0]["url"] = json!(url);
        hooks[1]["url"] = json!(url);
        c
    };
    let operator = started(cluster, &client, ns, &edit).await?;
    let guide: Value = serde_saphyr::from_str(&std::fs::read_to_string(
        fledge_e2e::cluster::assets_dir().join("../../examples/podinfo/canary.yaml"),
    )?)?;
    let hooks = &guide["spec"]["analysis"]["webhooks"];
    assert_eq!(hooks[0]["metadata"]["type"], "bash");
    assert_eq!(
        hooks[0]["metadata"]["cmd"],
        "curl -sd 'test' http://podinfo-canary.test:9898/token | grep token"
    );
    assert_eq!(
        hooks[1]["metadata"]["cmd"],
        "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"
    );
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(80))
        .await
        .with_context(|| {
            format!(
                "operator log:\n{}\nloadtester log:\n{}",
                operator.logs(),
                lt.logs()
            )
        })?;
    let got = notes(&client, ns).await?;
    ensure!(
        got.contains(&"Pre-rollout check acceptance-test passed".to_string()),
        "{got:#?}"
    );
    let seen = podinfo.seen();
    assert_eq!(seen.token_bodies, ["test"], "the acceptance test's curl");
    assert!(
        seen.paths.get("/").copied().unwrap_or(0) > 0,
        "load-test traffic: {seen:?}"
    );
    assert!(
        seen.hosts
            .get("podinfo-canary.test:9898")
            .copied()
            .unwrap_or(0)
            > 1,
        "by the guide's host name: {seen:?}"
    );
    assert_eq!(image_of(&client, ns, "podinfo-primary").await?, NEW_IMAGE);
    Ok(())
}

/// A closed confirm-rollout gate keeps the Canary Waiting; opening it starts the analysis.
async fn confirm_rollout(cluster: &'static Cluster, lt: &Loadtester, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let hooks = json!([{"name": "confirm-rollout", "type": "confirm-rollout", "url": lt.url("/gate/check")}]);
    let operator = started(cluster, &client, ns, &with_hooks(hooks)).await?;
    wait_phase(&client, ns, "Waiting", Duration::from_secs(30))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    wait_note(
        &client,
        ns,
        &format!("Halt podinfo.{ns} advancement waiting for approval confirm-rollout"),
        Duration::from_secs(5),
    )
    .await?;
    // Still waiting an interval later.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(super::canary_status(&client, ns).await?["phase"], "Waiting");
    assert_eq!(gate(lt, "/gate/open", ns).await?, 202);
    wait_note(
        &client,
        ns,
        "Confirm-rollout check confirm-rollout passed",
        Duration::from_secs(30),
    )
    .await?;
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(60))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    Ok(())
}

/// A closed confirm-promotion gate keeps the Canary WaitingPromotion; opening it promotes.
async fn confirm_promotion(cluster: &'static Cluster, lt: &Loadtester, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let hooks = json!([{"name": "confirm-promotion", "type": "confirm-promotion", "url": lt.url("/gate/check")}]);
    let operator = started(cluster, &client, ns, &with_hooks(hooks)).await?;
    wait_phase(&client, ns, "WaitingPromotion", Duration::from_secs(60))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    wait_note(
        &client,
        ns,
        &format!("Halt podinfo.{ns} advancement waiting for promotion approval confirm-promotion"),
        Duration::from_secs(5),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        super::canary_status(&client, ns).await?["phase"],
        "WaitingPromotion"
    );
    assert_ne!(image_of(&client, ns, "podinfo-primary").await?, NEW_IMAGE);
    assert_eq!(gate(lt, "/gate/open", ns).await?, 202);
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(60))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    wait_note(
        &client,
        ns,
        "Confirm-promotion check confirm-promotion passed",
        Duration::from_secs(5),
    )
    .await?;
    assert_eq!(image_of(&client, ns, "podinfo-primary").await?, NEW_IMAGE);
    Ok(())
}

/// A rollback webhook does not signal while its gate is closed; `/rollback/open` rolls back.
async fn rollback(cluster: &'static Cluster, lt: &Loadtester, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let hooks = json!([{"name": "rollback", "type": "rollback", "url": lt.url("/rollback/check")}]);
    let hooks = with_hooks(hooks);
    // Five weight steps, so the analysis outlasts the closed gate.
    let edit = move |c: Value| {
        let mut c = hooks(c);
        c["spec"]["analysis"]["stepWeight"] = json!(10);
        c
    };
    let operator = started(cluster, &client, ns, &edit).await?;
    wait_note(
        &client,
        ns,
        "Rollback hook rollback not signaling a rollback",
        Duration::from_secs(40),
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert_eq!(
        super::canary_status(&client, ns).await?["phase"],
        "Progressing"
    );
    assert_eq!(gate(lt, "/rollback/open", ns).await?, 202);
    wait_phase(&client, ns, "Failed", Duration::from_secs(30))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let got = notes(&client, ns).await?;
    for note in [
        "Rollback check rollback passed".to_string(),
        format!("Rolling back podinfo.{ns} manual webhook invoked"),
    ] {
        ensure!(got.contains(&note), "{note:?} not in {got:#?}");
    }
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.0",
        "the primary is unchanged"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtester_serves_the_guides_webhooks_and_gates() -> Result<()> {
    let Some(cluster) = world("loadtester_serves_the_guides_webhooks_and_gates") else {
        return Ok(());
    };
    let started = Instant::now();
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    let podinfo = Podinfo::start().await?;
    let resolve = format!("--resolve=podinfo-canary.test:9898={}", podinfo.addr);
    let lt = Loadtester::start(cluster, "guide", &["--allow-shell", &resolve]).await?;

    let (guide, rollout, promotion, back) = tokio::join!(
        guide_webhooks(cluster, &lt, &podinfo, "lt-guide"),
        confirm_rollout(cluster, &lt, "lt-confirm-rollout"),
        confirm_promotion(cluster, &lt, "lt-confirm-promotion"),
        rollback(cluster, &lt, "lt-rollback"),
    );
    let log = || format!("loadtester log:\n{}", lt.logs());
    guide.context("the guide's webhooks").with_context(log)?;
    rollout.context("confirm-rollout").with_context(log)?;
    promotion.context("confirm-promotion").with_context(log)?;
    back.context("rollback").with_context(log)?;
    println!(
        "loadtester scenarios: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
