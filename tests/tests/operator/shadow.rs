//! Shadow-mode policies and the metric-query capability against the shared cluster, each
//! namespace with its own operator, run at once:
//!
//! - Shadows change nothing: with four shadow RolloutPolicies in its namespace (`clock-reader`,
//!   which halts everything; `panic`, which traps; `series-reader`, whose range queries reach the
//!   harness Prometheus; the built-in `flagger` as a shadow `default`, which agrees) the guide's
//!   Canary runs to Succeeded under the built-in policy with exactly the Events `fledge simulate`
//!   gives for the built-in policy alone, while `ShadowDisagreement` Events (with the shadow's
//!   annotations) and `fledge_policy_shadow_*` on `/metrics` record what the shadows would have
//!   done. A Canary naming a shadow policy in `spec.policy` is refused naming `spec.policy`.
//! - metric-query needs its grant: `series-reader` as the namespace's default without
//!   `capabilities: [metric-query]` is refused (`Ready=False`, `CapabilityMissing`, a Warning
//!   Event) and the built-in default stays in force; with the grant it loads and its decisions
//!   show the samples Prometheus answered.
//!
//! No ClusterRolloutPolicy here, shadow or not: every other test's Canaries would see it (a
//! cluster-wide `default` changes their policy, a cluster-wide shadow adds Events to them). The
//! cluster rungs of the ladder and of shadowing are unit-tested (`operator::policies::select`).
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fledge_e2e::{http, Cluster};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams};
use kube::Client;
use serde_json::{json, Value};

use super::policies::{
    config_map, fixture, from_config_map, policy_of, policy_warnings, rollout_policy, sha256,
    wait_ready,
};
use super::{
    bootstrap_target, canary_resource, comparable, events, events_since, install_fledge_crds,
    live_weights, set_image, simulated, test_canary, wait_phase, MkDir, PROMOTE,
};
use crate::{apply, ssa, wait_for, world};

/// A RolloutPolicy `name` in shadow mode, its component from ConfigMap `cm`, with `extra` spec.
fn shadow_policy(name: &str, cm: &str, extra: Value) -> Value {
    let mut spec = from_config_map(cm, None);
    spec["mode"] = json!("shadow");
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            spec[k] = v;
        }
    }
    rollout_policy(name, spec)
}

/// `series-reader`'s config: one range query `up` of `sum(up)` (every target the harness
/// Prometheus scrapes), 60 s at a 10 s step.
fn reads_up() -> Value {
    json!({"queries": "up", "query.up": "sum(up)"})
}

/// The `ShadowDisagreement` Events in `ns`: type, note and annotations.
async fn disagreements(client: &Client, ns: &str) -> Result<Vec<(String, String, Value)>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ShadowDisagreement"))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.note.unwrap_or_default(),
                json!(e.metadata.annotations),
            )
        })
        .collect())
}

/// The value of the sample `series` (name and labels exactly as encoded) in `/metrics`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The sample count `series-reader` reports for its series `up` in `note` (`up=<n>x<sum>`).
fn samples_of_up(note: &str) -> Option<u64> {
    let at = note.find("up=")? + 3;
    let digits: String = note[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

async fn shadows_change_nothing(cluster: &'static Cluster) -> Result<()> {
    let ns = "op-shadow";
    let client = cluster.client().await?;
    let (clock, panic, reader) = (
        fixture("clock-reader")?,
        fixture("panic")?,
        fixture("series-reader")?,
    );
    let objects = [
        config_map("clock-reader", &clock),
        config_map("panic", &panic),
        config_map("series-reader", &reader),
        shadow_policy(
            "clock",
            "clock-reader",
            json!({"config": {"greeting": "hello"}}),
        ),
        shadow_policy("panic", "panic", json!({})),
        shadow_policy(
            "reader",
            "series-reader",
            json!({"capabilities": ["metric-query"], "config": reads_up()}),
        ),
        rollout_policy("default", json!({"builtin": "flagger", "mode": "shadow"})),
    ];
    let (operator, canary, _hooks) =
        bootstrap_target(cluster, &client, ns, &objects, &|d| d, &|c| c, false).await?;
    let expected = simulated(
        &cluster.dir().join("logs").join(ns).tap_mkdir()?,
        &canary,
        PROMOTE,
    )?;
    for name in ["clock", "panic", "reader", "default"] {
        wait_ready(&client, ns, name, "True", "Loaded").await?;
    }
    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    let done = wait_phase(&client, ns, "Succeeded", Duration::from_secs(90))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let (kind, name, builtin) = policy_of(&done);
    assert_eq!(
        (kind.as_str(), name.as_str()),
        ("Builtin", "flagger"),
        "a shadow `default` does not enforce"
    );

    // Exactly what the built-in policy alone does: the same Events, the same weights.
    // Left out before repeats are folded: a disagreement between two repeats would keep both.
    let ours = || async {
        let all = events(&client, ns, "podinfo").await?;
        Ok::<_, anyhow::Error>(comparable(
            all.into_iter()
                .filter(|(t, n)| *t >= triggered && !n.starts_with("shadow policy "))
                .map(|(_, n)| n),
        ))
    };
    let settled = Instant::now() + Duration::from_secs(5);
    let mut got = ours().await?;
    while got.len() < expected.len() && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = ours().await?;
    }
    assert_eq!(
        got, expected,
        "Events differ from `fledge simulate --format events` for the built-in policy"
    );
    assert!(got.contains(&format!("Advance podinfo.{ns} canary weight 50")));
    assert_eq!(live_weights(&client, ns).await?, (0, 100), "routes back");

    // What the shadows would have done.
    let found = disagreements(&client, ns).await?;
    let by = |policy: &str| -> Vec<(String, String, Value)> {
        found
            .iter()
            .filter(|(_, n, _)| n.starts_with(&format!("shadow policy RolloutPolicy/{policy} ")))
            .cloned()
            .collect()
    };
    let annotated = |events: &[(String, String, Value)], policy: &str, bytes: &[u8]| {
        events.iter().all(|(t, _, a)| {
            t == "Normal"
                && a["policies.fledge.dev/policy"] == format!("RolloutPolicy/{policy}")
                && a["policies.fledge.dev/digest"] == format!("sha256:{}", sha256(bytes))
        })
    };
    let clocked = by("clock");
    ensure!(
        clocked.iter().any(|(_, n, _)| n.contains("would hold (at ")
            && n.contains(": hello); enforced: advance (canary weight 50, iteration ")),
        "{found:#?}"
    );
    ensure!(annotated(&clocked, "clock", &clock), "{clocked:#?}");
    let trapped = by("panic");
    ensure!(
        !trapped.is_empty()
            && trapped
                .iter()
                .all(|(_, n, _)| n.contains("failed (") && n.contains("; enforced: ")),
        "{found:#?}"
    );
    ensure!(annotated(&trapped, "panic", &panic), "{trapped:#?}");
    let read = by("reader");
    let counts: Vec<u64> = read
        .iter()
        .filter_map(|(_, n, _)| samples_of_up(n))
        .collect();
    ensure!(
        !counts.is_empty() && counts.iter().all(|c| *c > 0),
        "the shadow's range query `up` got no samples: {read:#?}"
    );
    ensure!(annotated(&read, "reader", &reader), "{read:#?}");
    ensure!(
        by("default").is_empty(),
        "the built-in shadow agrees: {found:#?}"
    );

    let metrics = http::get(
        std::net::SocketAddr::from(([127, 0, 0, 1], operator.port)),
        "/metrics",
    )?
    .body;
    let disagreed = |policy: &str, bytes: &[u8], enforced: &str, shadow: &str| {
        sample(
            &metrics,
            &format!(
                "fledge_policy_shadow_disagreements_total{{policy=\"RolloutPolicy/{ns}/{policy}\",digest=\"sha256:{}\",enforced=\"{enforced}\",shadow=\"{shadow}\"}}",
                sha256(bytes)
            ),
        )
        .unwrap_or(0.0)
    };
    for (policy, bytes, shadow) in [
        ("clock", &clock, "hold"),
        ("panic", &panic, "error"),
        ("reader", &reader, "hold"),
    ] {
        for enforced in ["advance", "promote"] {
            ensure!(
                disagreed(policy, bytes, enforced, shadow) >= 1.0,
                "{policy}: no {enforced}/{shadow} disagreement counted in\n{metrics}"
            );
        }
    }
    let agreed = sample(
        &metrics,
        &format!("fledge_policy_shadow_decisions_total{{policy=\"RolloutPolicy/{ns}/default\",digest=\"{builtin}\"}}"),
    );
    ensure!(agreed.is_some_and(|n| n >= 2.0), "{metrics}");
    ensure!(
        !metrics.lines().any(|l| l.starts_with(&format!(
            "fledge_policy_shadow_disagreements_total{{policy=\"RolloutPolicy/{ns}/default\""
        ))),
        "{metrics}"
    );

    // A Canary cannot name a shadow policy.
    let hooks = super::Receiver::start().await?;
    let mut named = test_canary(ns, &hooks);
    named["metadata"]["name"] = json!("podinfo-named");
    named["spec"]["policy"] = json!({"name": "clock"});
    apply(&client, ns, &named, &ssa()).await?;
    let canaries: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &canary_resource());
    let message = wait_for(
        "Valid=False on podinfo-named",
        Duration::from_secs(20),
        || async {
            let s = canaries.get("podinfo-named").await?.data["status"].clone();
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
        message.starts_with("spec.policy: RolloutPolicy `clock` is in shadow mode")
            && message.contains("spec.mode to enforce"),
        "{message}"
    );
    let warned = wait_for(
        "the InvalidSpec Warning",
        Duration::from_secs(10),
        || async {
            let api: Api<Event> = Api::namespaced(client.clone(), ns);
            Ok(api
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some("InvalidSpec")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some("podinfo-named")
                        && e.note.as_deref().is_some_and(|n| {
                            n.contains("spec.policy: RolloutPolicy `clock` is in shadow mode")
                        })
                }))
        },
    )
    .await;
    warned?;
    Ok(())
}

async fn metric_query_needs_its_grant(cluster: &'static Cluster) -> Result<()> {
    let ns = "op-shadow-grant";
    let client = cluster.client().await?;
    let reader = fixture("series-reader")?;
    let objects = [
        config_map("series-reader", &reader),
        rollout_policy("default", json!({"builtin": "flagger"})),
    ];
    let (operator, _canary, _hooks) =
        bootstrap_target(cluster, &client, ns, &objects, &|d| d, &|c| c, false).await?;
    let builtin = wait_ready(&client, ns, "default", "True", "Loaded").await?["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let mut spec = from_config_map("series-reader", None);
    spec["config"] = reads_up();
    apply(
        &client,
        ns,
        &rollout_policy("default", spec.clone()),
        &ssa(),
    )
    .await?;
    let refused = wait_ready(&client, ns, "default", "False", "CapabilityMissing").await?;
    let message = refused["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("grant it with spec.capabilities: [metric-query]")
            && message.contains(&format!("the previous component {builtin} stays in force")),
        "{message}"
    );
    assert_eq!(refused["digest"], builtin, "the built-in stays in force");
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
        warnings.iter().any(|w| w.contains("spec.capabilities")),
        "{warnings:?}"
    );

    spec["capabilities"] = json!(["metric-query"]);
    apply(&client, ns, &rollout_policy("default", spec), &ssa()).await?;
    let granted = wait_ready(&client, ns, "default", "True", "Loaded").await?;
    assert_eq!(granted["digest"], format!("sha256:{}", sha256(&reader)));

    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    let held = wait_for(
        "a Halt Event showing the series `up`",
        Duration::from_secs(45),
        || async {
            Ok(events_since(&client, ns, triggered)
                .await?
                .into_iter()
                .find(|n| {
                    n.starts_with(&format!("Halt podinfo.{ns} advancement")) && n.contains(" up")
                }))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert!(
        held.contains("with 2 config entries: up=") && samples_of_up(&held).is_some_and(|n| n > 0),
        "the range query reached Prometheus and got samples: {held}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_shadows_policies_and_grants_metric_query() -> Result<()> {
    let Some(cluster) = world("operator_shadows_policies_and_grants_metric_query") else {
        return Ok(());
    };
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    let started = Instant::now();
    let (a, b) = tokio::join!(
        shadows_change_nothing(cluster),
        metric_query_needs_its_grant(cluster),
    );
    a.context("shadow policies beside the built-in one")?;
    b.context("series-reader without and with the metric-query grant")?;
    println!("shadow scenarios: {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
