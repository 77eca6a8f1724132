//! Policy objects against the shared cluster, each namespace with its own operator: two
//! namespaces whose `default` RolloutPolicies differ (the built-in `flagger`; the `bad-weight`
//! fixture from a ConfigMap, whose decisions the runtime refuses) run the same Canary and end
//! differently; a Canary's own `spec.policy` wins over its namespace's default; a reference to
//! another namespace's RolloutPolicy is refused naming `spec.policy`; a wrong sha256 and a
//! ConfigMap that holds no component leave the previous component in force with `Ready=False`
//! saying why; swapping a namespace's default mid-analysis keeps the running analysis on the
//! digest it pinned, and the next analysis uses the new one; a pinned component lost across a
//! restart (its ConfigMap edited in place) lets the analysis go on under the current one, with a
//! Warning Event.
//!
//! No ClusterRolloutPolicy here: a cluster-wide `default` would reach every other test's
//! Canaries. The cluster rungs of the ladder are unit-tested (`operator::policies::select`).
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fledge_e2e::Cluster;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Client;
use serde_json::{json, Value};

use super::{
    bootstrap_target, canary_resource, canary_status, fledge_binary, install_fledge_crds,
    set_image, test_canary, wait_phase, Receiver,
};
use crate::{apply, ssa, wait_for, world};

/// A fixture policy as `host/build.rs` built it next to the `fledge` binary.
pub(super) fn fixture(name: &str) -> Result<Vec<u8>> {
    let bin = fledge_binary()?;
    let build = bin
        .parent()
        .context("the binary's directory")?
        .join("build");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&build)?
        .flatten()
        .map(|e| e.path().join(format!("out/fixtures/{name}.wasm")))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    let (_, path) = found
        .pop()
        .with_context(|| format!("no out/fixtures/{name}.wasm under {}", build.display()))?;
    Ok(std::fs::read(path)?)
}

/// The hex sha256 of `bytes`, as `spec.sha256` takes it.
pub(super) fn sha256(bytes: &[u8]) -> String {
    fledge::policy::digest(bytes)
        .trim_start_matches("sha256:")
        .to_string()
}

/// `bytes` as a ConfigMap's `binaryData` holds them (base64).
fn base64(bytes: &[u8]) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())).unwrap_or_default()
}

pub(super) fn config_map(name: &str, bytes: &[u8]) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
           "binaryData": {"policy.wasm": base64(bytes)}})
}

pub(super) fn rollout_policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "policies.fledge.dev/v1alpha1", "kind": "RolloutPolicy",
           "metadata": {"name": name}, "spec": spec})
}

pub(super) fn from_config_map(cm: &str, sha: Option<&str>) -> Value {
    let mut spec = json!({"configMap": {"name": cm, "key": "policy.wasm"}});
    if let Some(sha) = sha {
        spec["sha256"] = json!(sha);
    }
    spec
}

pub(super) fn policies_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policies.fledge.dev", "v1alpha1", "RolloutPolicy"),
        "rolloutpolicies",
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Waits until RolloutPolicy `name` has the Ready condition `status` with `reason`.
pub(super) async fn wait_ready(
    client: &Client,
    ns: &str,
    name: &str,
    status: &str,
    reason: &str,
) -> Result<Value> {
    let api = policies_api(client, ns);
    wait_for(
        &format!("RolloutPolicy {ns}/{name} Ready={status} ({reason})"),
        Duration::from_secs(20),
        || async {
            let s = api.get(name).await?.data["status"].clone();
            let ready = s["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .cloned()
                .unwrap_or_default();
            Ok((ready["status"] == status && ready["reason"] == reason).then_some(s))
        },
    )
    .await
}

/// Warning Event notes about RolloutPolicy `name`.
pub(super) async fn policy_warnings(client: &Client, ns: &str, name: &str) -> Result<Vec<String>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("RolloutPolicy")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .filter_map(|e| e.note)
        .collect())
}

/// Annotations of the Canary's decision Events with `note_prefix`.
async fn decision_annotations(client: &Client, ns: &str, note_prefix: &str) -> Result<Vec<Value>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.note
                .as_deref()
                .is_some_and(|n| n.starts_with(note_prefix))
        })
        .map(|e| json!(e.metadata.annotations))
        .collect())
}

/// Bootstraps the guide's Canary with `objects` (policies, ConfigMaps) applied first, the
/// Canary edited by `edit`; then starts an analysis.
async fn start(
    cluster: &'static Cluster,
    ns: &str,
    objects: &[Value],
    edit: &(dyn Fn(Value) -> Value + Sync),
) -> Result<(super::Operator, Client)> {
    let client = cluster.client().await?;
    let (operator, _, _) =
        bootstrap_target(cluster, &client, ns, objects, &|d| d, edit, false).await?;
    set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    Ok((operator, client))
}

pub(super) fn policy_of(status: &Value) -> (String, String, String) {
    let p = &status["policy"];
    let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
    (s("kind"), s("name"), s("digest"))
}

/// The built-in policy's digest, as the operator reports it for the namespace that uses it.
const BUILTIN_NS: &str = "op-policy-flagger";

/// (1) and (5): the `flagger` default promotes; mid-analysis the default is swapped, first to a
/// wrong sha256 (refused, the built-in stays), then to `bad-weight`: the running analysis
/// keeps the built-in digest and promotes; the next analysis runs under `bad-weight` and fails.
async fn flagger_then_swapped(cluster: &'static Cluster, bad: &[u8]) -> Result<()> {
    let ns = BUILTIN_NS;
    let objects = [
        rollout_policy("default", json!({"builtin": "flagger"})),
        config_map("bad-weight", bad),
    ];
    let (operator, client) = start(cluster, ns, &objects, &|c| c).await?;
    let progressing = wait_for(
        "Progressing at weight 50",
        Duration::from_secs(30),
        || async {
            let s = canary_status(&client, ns).await?;
            Ok((s["phase"] == "Progressing" && s["canaryWeight"] == 50).then_some(s))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let (kind, name, builtin) = policy_of(&progressing);
    assert_eq!((kind.as_str(), name.as_str()), ("RolloutPolicy", "default"));
    ensure!(
        builtin.starts_with("sha256:"),
        "status.policy.digest {builtin}"
    );
    let ready = wait_ready(&client, ns, "default", "True", "Loaded").await?;
    assert_eq!(
        ready["digest"], builtin,
        "the policy's status names the digest in force"
    );

    // A wrong sha256: refused, the built-in stays in force and says so.
    let wrong = "0".repeat(64);
    apply(
        &client,
        ns,
        &rollout_policy("default", from_config_map("bad-weight", Some(&wrong))),
        &ssa(),
    )
    .await?;
    let refused = wait_ready(&client, ns, "default", "False", "DigestMismatch").await?;
    let message = refused["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(&format!("not sha256:{wrong}"))
            && message.contains(&format!("the previous component {builtin} stays in force")),
        "{message}"
    );
    assert_eq!(refused["digest"], builtin);
    let warnings = wait_for(
        "a Warning Event on the RolloutPolicy",
        Duration::from_secs(10),
        || async {
            let w = policy_warnings(&client, ns, "default").await?;
            Ok((!w.is_empty()).then_some(w))
        },
    )
    .await?;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("DigestMismatch") || w.contains("spec.sha256")),
        "{warnings:?}"
    );

    // The right one: in force for the next analysis, not this one.
    let bad_sha = sha256(bad);
    apply(
        &client,
        ns,
        &rollout_policy("default", from_config_map("bad-weight", Some(&bad_sha))),
        &ssa(),
    )
    .await?;
    let swapped = wait_ready(&client, ns, "default", "True", "Loaded").await?;
    assert_eq!(swapped["digest"], format!("sha256:{bad_sha}"));
    // Still mid-analysis when the new component came into force, or the
    // check below would hold whatever the operator does.
    let during = canary_status(&client, ns).await?;
    ensure!(
        !matches!(during["phase"].as_str(), Some("Succeeded" | "Failed")),
        "the analysis ended before the swap took effect: {during}"
    );
    assert_eq!(policy_of(&during).2, builtin, "swapped mid-analysis");
    let done = wait_phase(&client, ns, "Succeeded", Duration::from_secs(60))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert_eq!(
        policy_of(&done).2,
        builtin,
        "the analysis kept the digest it started with"
    );

    set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.2").await?;
    let failed = wait_phase(&client, ns, "Failed", Duration::from_secs(60))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert_eq!(
        policy_of(&failed).2,
        format!("sha256:{bad_sha}"),
        "the next analysis used the new policy"
    );
    // Decisions say which policy made them, in the Event and in the log line.
    let annotated = decision_annotations(&client, ns, "Advance podinfo").await?;
    assert!(
        annotated.iter().any(
            |a| a["policies.fledge.dev/policy"] == "RolloutPolicy/default"
                && a["policies.fledge.dev/digest"] == builtin
        ),
        "{annotated:?}"
    );
    let logs = operator.logs();
    assert!(
        logs.lines().any(|l| l.contains("Advance podinfo")
            && l.contains("\"policy\":\"RolloutPolicy/default\"")
            && l.contains(&builtin)),
        "no decision log line names the policy:\n{logs}"
    );
    Ok(())
}

/// (1): the same Canary under a `bad-weight` default never shifts traffic and fails; a second
/// Canary naming another namespace's RolloutPolicy is refused naming `spec.policy`.
async fn bad_default(cluster: &'static Cluster, bad: &[u8]) -> Result<()> {
    let ns = "op-policy-bad";
    let objects = [
        config_map("bad-weight", bad),
        rollout_policy("default", from_config_map("bad-weight", None)),
    ];
    let (operator, client) = start(cluster, ns, &objects, &|c| c).await?;
    let failed = wait_phase(&client, ns, "Failed", Duration::from_secs(60))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert_eq!(
        policy_of(&failed),
        (
            "RolloutPolicy".into(),
            "default".into(),
            format!("sha256:{}", sha256(bad))
        )
    );
    let advanced = decision_annotations(&client, ns, "Advance podinfo").await?;
    assert!(advanced.is_empty(), "bad-weight advanced: {advanced:?}");

    // Another namespace's RolloutPolicy.
    let hooks = Receiver::start().await?;
    let mut other = test_canary(ns, &hooks);
    other["metadata"]["name"] = json!("podinfo-elsewhere");
    other["spec"]["policy"] = json!({"name": "default", "namespace": BUILTIN_NS});
    apply(&client, ns, &other, &ssa()).await?;
    let canaries: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &canary_resource());
    let message = wait_for(
        "Valid=False on podinfo-elsewhere",
        Duration::from_secs(20),
        || async {
            let s = canaries.get("podinfo-elsewhere").await?.data["status"].clone();
            Ok(s["conditions"].as_array().and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == "Valid" && c["status"] == "False")
                    .and_then(|c| c["message"].as_str().map(str::to_string))
            }))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert!(
        message.starts_with("spec.policy.namespace:")
            && message.contains("cannot use another namespace's RolloutPolicy"),
        "{message}"
    );
    Ok(())
}

/// (2) and (4): a Canary's own `spec.policy` (the built-in `flagger`) wins over its namespace's
/// `bad-weight` default; the default pointed at a ConfigMap that holds no component keeps
/// `bad-weight` in force, its Ready condition saying why.
async fn own_policy(cluster: &'static Cluster, bad: &[u8]) -> Result<()> {
    let ns = "op-policy-own";
    let objects = [
        config_map("bad-weight", bad),
        config_map("not-a-component", b"this is not WebAssembly"),
        rollout_policy("default", from_config_map("bad-weight", None)),
        rollout_policy("lenient", json!({"builtin": "flagger"})),
    ];
    let edit = |mut c: Value| {
        c["spec"]["policy"] = json!({"name": "lenient", "kind": "RolloutPolicy"});
        c
    };
    let (operator, client) = start(cluster, ns, &objects, &edit).await?;
    let progressing = wait_for(
        "Progressing at weight 50",
        Duration::from_secs(30),
        || async {
            let s = canary_status(&client, ns).await?;
            Ok((s["phase"] == "Progressing" && s["canaryWeight"] == 50).then_some(s))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert_eq!(policy_of(&progressing).1, "lenient");

    let bad_digest = format!("sha256:{}", sha256(bad));
    wait_ready(&client, ns, "default", "True", "Loaded").await?;
    apply(
        &client,
        ns,
        &rollout_policy("default", from_config_map("not-a-component", None)),
        &ssa(),
    )
    .await?;
    let refused = wait_ready(&client, ns, "default", "False", "LoadFailed").await?;
    let message = refused["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("does not load")
            && message.contains(&format!(
                "the previous component {bad_digest} stays in force"
            )),
        "{message}"
    );
    assert_eq!(refused["digest"], bad_digest);
    Ok(())
}

/// (3): the pinned component can no longer be had. The namespace's default holds `stateful`
/// (it always waits, so the analysis stays in flight); its ConfigMap is edited in place to
/// `bad-weight` and the operator restarted. The analysis goes on under the component the
/// policy object brings now, with a Warning Event naming both digests, and fails.
async fn pinned_component_lost(cluster: &'static Cluster, bad: &[u8]) -> Result<()> {
    let ns = "op-policy-lost";
    let waits = fixture("stateful")?;
    let objects = [
        config_map("policy", &waits),
        rollout_policy("default", from_config_map("policy", None)),
    ];
    let (mut operator, client) = start(cluster, ns, &objects, &|c| c).await?;
    let waiting = format!("sha256:{}", sha256(&waits));
    let pinned = wait_for(
        "Progressing under stateful",
        Duration::from_secs(30),
        || async {
            let s = canary_status(&client, ns).await?;
            Ok((s["phase"] == "Progressing"
                && s["lastStepTime"].is_string()
                && policy_of(&s).2 == waiting)
                .then_some(s))
        },
    )
    .await
    .with_context(|| {
        format!(
            "operator log:
{}",
            operator.logs()
        )
    })?;
    assert_eq!(pinned["canaryWeight"], 0, "stateful only waits");

    operator.kill();
    apply(&client, ns, &config_map("policy", bad), &ssa()).await?;
    let operator = super::Operator::start(
        cluster,
        &format!("{ns}-restarted"),
        &[&format!("--namespace={ns}"), "--log-level=info"],
    )?;
    let failing = format!("sha256:{}", sha256(bad));
    let failed = wait_phase(&client, ns, "Failed", Duration::from_secs(45))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert_eq!(
        policy_of(&failed).2,
        failing,
        "status.policy names the component now in force"
    );
    let notes: Vec<String> = super::events(&client, ns, "podinfo")
        .await?
        .into_iter()
        .map(|(_, n)| n)
        .filter(|n| n.starts_with("Policy component"))
        .collect();
    assert!(
        notes.iter().any(|n| n.contains(&waiting)
            && n.contains("no longer available")
            && n.contains(&failing)),
        "{notes:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_selects_and_swaps_policies() -> Result<()> {
    let Some(cluster) = world("operator_selects_and_swaps_policies") else {
        return Ok(());
    };
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    let bad = fixture("bad-weight")?;
    let started = Instant::now();
    let (a, b, c, d) = tokio::join!(
        flagger_then_swapped(cluster, &bad),
        bad_default(cluster, &bad),
        own_policy(cluster, &bad),
        pinned_component_lost(cluster, &bad),
    );
    a.context("flagger default, swapped mid-analysis")?;
    b.context("bad-weight default, cross-namespace reference")?;
    c.context("the Canary's own policy, a ConfigMap without a component")?;
    d.context("the pinned component lost across a restart")?;
    println!("policy scenarios: {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
