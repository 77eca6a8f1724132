//! A policy object whose new component cannot be had or used leaves the previous one in force:
//! an unreachable URL, a URL that serves a file that is not a component, and a component of
//! another world each turn the object `Ready=False` with the reason and a Warning Event, while
//! `status.digest` (and the Canary's policy) stay on the component loaded before.
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fledge_e2e::Cluster;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::policies::{
    fixture, policies_api, policy_of, policy_warnings, rollout_policy, sha256, wait_ready,
};
use super::{bootstrap_target, canary_status, install_fledge_crds, set_image, wait_phase};
use crate::{apply, ssa, wait_for, world};

/// Serves `files` (path → body) over HTTP/1.1 on 127.0.0.1 until the test ends.
async fn serve(files: Vec<(&'static str, Vec<u8>)>) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let files = files.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = match files.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => ("200 OK", body.clone()),
                    None => ("404 Not Found", b"not found".to_vec()),
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
    Ok(base)
}

/// The Ready condition's message in `status`.
fn ready_message(status: &Value) -> String {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

async fn refusals(cluster: &'static Cluster) -> Result<()> {
    let ns = "op-policy-refusals";
    let client = cluster.client().await?;
    let builtin = rollout_policy("default", json!({"builtin": "flagger"}));
    let (_operator, _, _) =
        bootstrap_target(cluster, &client, ns, &[builtin], &|d| d, &|c| c, false).await?;
    let loaded = wait_ready(&client, ns, "default", "True", "Loaded").await?;
    let digest = loaded["digest"]
        .as_str()
        .context("status.digest")?
        .to_string();

    let wrong_world = fixture("wrong-world")?;
    let text = b"#!/bin/sh\necho this is not a policy\n".to_vec();
    let base = serve(vec![
        ("/wrong-world.wasm", wrong_world.clone()),
        ("/script.wasm", text.clone()),
    ])
    .await?;
    // Port 9 on the loopback: nothing listens there.
    let cases = [
        (
            json!({"url": "http://127.0.0.1:9/policy.wasm", "sha256": sha256(&wrong_world)}),
            "FetchFailed",
            "fetching http://127.0.0.1:9/policy.wasm",
        ),
        (
            json!({"url": format!("{base}/script.wasm"), "sha256": sha256(&text)}),
            "LoadFailed",
            "not a WebAssembly component",
        ),
        (
            json!({"url": format!("{base}/wrong-world.wasm"), "sha256": sha256(&wrong_world)}),
            "LoadFailed",
            "does not implement fledge:policy/rollout-policy@0.1.1",
        ),
    ];
    let api = policies_api(&client, ns);
    for (spec, reason, says) in cases {
        let applied = apply(
            &client,
            ns,
            &rollout_policy("default", spec.clone()),
            &ssa(),
        )
        .await?;
        let generation = applied.metadata.generation.context("metadata.generation")?;
        // The status of this generation, not the last one's.
        let status = wait_for(
            &format!("RolloutPolicy default generation {generation} Ready=False ({reason})"),
            Duration::from_secs(20),
            || async {
                let s = api.get("default").await?.data["status"].clone();
                let ready = s["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .cloned()
                    .unwrap_or_default();
                let current = s["observedGeneration"] == json!(generation);
                Ok(
                    (current && ready["status"] == "False" && ready["reason"] == reason)
                        .then_some(s),
                )
            },
        )
        .await
        .with_context(|| format!("{spec}"))?;
        let message = ready_message(&status);
        ensure!(message.contains(says), "{spec}: Ready says {message:?}");
        ensure!(
            status["digest"] == json!(digest),
            "{spec}: the component in force changed: {status}"
        );
        // The Event follows the status write.
        wait_for(
            &format!("a Warning Event saying {says:?}"),
            Duration::from_secs(15),
            || async {
                let warnings = policy_warnings(&client, ns, "default").await?;
                Ok(warnings.iter().any(|w| w.contains(says)).then_some(()))
            },
        )
        .await?;
    }
    // An analysis started now is judged by the component loaded first.
    set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    wait_phase(&client, ns, "Progressing", Duration::from_secs(60)).await?;
    let status = canary_status(&client, ns).await?;
    let (kind, name, in_force) = policy_of(&status);
    ensure!(
        (kind.as_str(), name.as_str(), in_force.as_str())
            == ("RolloutPolicy", "default", digest.as_str()),
        "Canary status.policy: {status}"
    );
    // The status describes the object as it is now.
    let obj = api.get("default").await?;
    ensure!(
        obj.data["status"]["observedGeneration"] == json!(obj.metadata.generation),
        "status describes generation {}, object is at {:?}",
        obj.data["status"]["observedGeneration"],
        obj.metadata.generation
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_keeps_the_previous_policy_when_a_new_one_cannot_be_used() -> Result<()> {
    let Some(cluster) = world("operator_keeps_the_previous_policy_when_a_new_one_cannot_be_used")
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(120), refusals(cluster))
        .await
        .context("refusals took over 120 s")??;
    println!("policy refusals: {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
