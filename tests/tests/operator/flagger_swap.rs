//! Swapping Flagger for Fledge: a Canary Flagger v1.44.0 promoted, with the status and
//! generated objects Flagger left (captured from the real binary by
//! `tests/cluster/fixtures/flagger-swap/capture.sh`), is taken over without a new analysis;
//! the next change of the pod template is analysed.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fledge_e2e::cluster::{assets_dir, create_namespace};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};

use super::{
    canary_resource, events, install_fledge_crds, live_weights, set_image, wait_phase, Operator,
};
use crate::{apply, ssa, wait_for, world};

const NS: &str = "op-flagger-swap";

/// A captured object with its namespace (`test` at capture) moved to `ns`, and the owner
/// placeholder replaced by the Canary's uid.
fn fixture(name: &str, ns: &str, uid: &str) -> Result<Value> {
    let path = assets_dir().join(format!("fixtures/flagger-swap/{name}.json"));
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    fn moved(v: &mut Value, ns: &str, uid: &str) {
        match v {
            Value::String(s) if s == "test" => *s = ns.to_string(),
            Value::String(s) if s == "CANARY_UID" => *s = uid.to_string(),
            Value::String(s) => *s = s.replace(".test.", &format!(".{ns}.")),
            Value::Array(a) => a.iter_mut().for_each(|x| moved(x, ns, uid)),
            Value::Object(o) => o.values_mut().for_each(|x| moved(x, ns, uid)),
            _ => {}
        }
    }
    let mut v: Value = serde_json::from_str(&text)?;
    moved(&mut v, ns, uid);
    Ok(v)
}

/// Generation and `flagger-id` of the primary Deployment.
async fn primary_state(client: &kube::Client, ns: &str) -> Result<(i64, String)> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("podinfo-primary")
        .await?;
    let id = d
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get("flagger-id").cloned())
        .unwrap_or_default();
    Ok((d.metadata.generation.unwrap_or(-1), id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_takes_over_a_canary_flagger_promoted() -> Result<()> {
    let Some(cluster) = world("operator_takes_over_a_canary_flagger_promoted") else {
        return Ok(());
    };
    let started = Instant::now();
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    create_namespace(
        &client,
        NS,
        &[("appmesh.k8s.aws/sidecarInjectorWebhook", "enabled")],
    )
    .await?;

    // The target and its HPA as Flagger left them (scaled to zero, template at 6.0.1).
    apply(&client, NS, &fixture("deployment-podinfo", NS, "")?, &ssa()).await?;
    apply(&client, NS, &fixture("hpa-podinfo", NS, "")?, &ssa()).await?;
    // The same Canary, then the status Flagger wrote after the promotion.
    let captured = fixture("canary", NS, "")?;
    let canary = json!({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": captured["spec"],
    });
    let stored = apply(&client, NS, &canary, &ssa()).await?;
    let uid = stored.metadata.uid.clone().context("Canary uid")?;
    let canaries: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &canary_resource());
    canaries
        .patch_status(
            "podinfo",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": captured["status"]})),
        )
        .await?;
    let flaggers_hash = captured["status"]["lastAppliedSpec"]
        .as_str()
        .context("captured lastAppliedSpec")?
        .to_string();
    // Flagger's generated objects, owned by this Canary.
    for name in [
        "deployment-podinfo-primary",
        "hpa-podinfo-primary",
        "service-podinfo",
        "service-podinfo-canary",
        "service-podinfo-primary",
        "virtualnode-podinfo-primary",
        "virtualnode-podinfo-canary",
        "virtualrouter-podinfo",
        "virtualrouter-podinfo-canary",
        "virtualservice-podinfo",
        "virtualservice-podinfo-canary",
    ] {
        apply(&client, NS, &fixture(name, NS, &uid)?, &ssa())
            .await
            .with_context(|| format!("creating {name}"))?;
    }
    let before = primary_state(&client, NS).await?;
    let weights = live_weights(&client, NS).await?;
    ensure!(weights == (0, 100), "Flagger left {weights:?}");

    let operator = Operator::start(
        cluster,
        NS,
        &[&format!("--namespace={NS}"), "--log-level=info"],
    )?;
    let since = k8s_openapi::jiff::Timestamp::now();
    // Fledge records the revision as its own once it has looked.
    let status = wait_for(
        "the Canary's revision in Fledge's terms",
        Duration::from_secs(30),
        || async {
            let s = canaries.get("podinfo").await?.data["status"].clone();
            let adopted = s["lastAppliedSpec"]
                .as_str()
                .is_some_and(|h| h != flaggers_hash);
            Ok(adopted.then_some(s))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert_eq!(
        status["lastPromotedSpec"], status["lastAppliedSpec"],
        "{status}"
    );
    // Three analysis intervals (10 s): nothing starts, nothing moves.
    let watch_until = Instant::now() + Duration::from_secs(32);
    while Instant::now() < watch_until {
        let s = canaries.get("podinfo").await?.data["status"].clone();
        assert_eq!(
            s["phase"],
            "Succeeded",
            "phase after the swap: {s}\n{}",
            operator.logs()
        );
        assert_eq!(
            live_weights(&client, NS).await?,
            (0, 100),
            "routes after the swap"
        );
        assert_eq!(
            primary_state(&client, NS).await?,
            before,
            "primary after the swap"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let notes: Vec<String> = events(&client, NS, "podinfo")
        .await?
        .into_iter()
        .filter(|(t, _)| *t >= since)
        .map(|(_, n)| n)
        .collect();
    ensure!(
        !notes.iter().any(|n| n.contains("New revision detected")),
        "Fledge started an analysis of the promoted revision: {notes:?}"
    );
    println!("{NS}: no analysis over 32 s after the swap; Events: {notes:?}");

    // A change of the pod template is a new revision, and is analysed.
    let changed = set_image(&client, NS, "ghcr.io/stefanprodan/podinfo:6.0.2").await?;
    wait_phase(&client, NS, "Progressing", Duration::from_secs(30))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let notes: Vec<String> = events(&client, NS, "podinfo")
        .await?
        .into_iter()
        .filter(|(t, _)| *t >= changed)
        .map(|(_, n)| n)
        .collect();
    ensure!(
        notes.iter().any(|n| n.starts_with("New revision detected")),
        "no analysis of the changed template: {notes:?}"
    );
    println!(
        "{NS}: analysis of the next revision started; {:.1}s in all",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
