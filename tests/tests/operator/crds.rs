//! The CRDs `fledge crds` generates accept every Flagger object users already have, store it
//! exactly as written, and refuse what Flagger's types cannot hold.
use anyhow::{ensure, Context, Result};
use fledge_e2e::cluster::{create_namespace, read_manifest};
use kube::api::{Patch, PatchParams, ValidationDirective};
use serde_json::{json, Value};
use std::path::PathBuf;

use super::{apply, install_fledge_crds, world};

fn strict() -> PatchParams {
    PatchParams::apply("fledge-compat")
        .force()
        .validation(ValidationDirective::Strict)
}

fn repo() -> PathBuf {
    fledge_e2e::cluster::crate_dir().join("..")
}

/// Every leaf the user wrote, with its path, and whether `stored` holds the same value there
/// (same JSON type: an integer stays an integer, a string stays a string).
fn differences(path: &str, written: &Value, stored: &Value, out: &mut Vec<String>) {
    match (written, stored) {
        (Value::Object(w), Value::Object(s)) => {
            for (k, v) in w {
                let p = format!("{path}.{k}");
                match s.get(k) {
                    Some(sv) => differences(&p, v, sv, out),
                    None => out.push(format!("{p}: pruned (wrote {v})")),
                }
            }
        }
        (Value::Array(w), Value::Array(s)) => {
            if w.len() != s.len() {
                out.push(format!(
                    "{path}: {} items written, {} stored",
                    w.len(),
                    s.len()
                ));
            }
            for (i, (wv, sv)) in w.iter().zip(s).enumerate() {
                differences(&format!("{path}[{i}]"), wv, sv, out);
            }
        }
        // serde_json's equality tells 99 from 99.0 and "99" from 99.
        (w, s) if w == s => {}
        (w, s) => out.push(format!("{path}: wrote {w}, stored {s}")),
    }
}

/// The guide's Canaries (`examples/podinfo`), and a Canary, MetricTemplate and AlertProvider
/// that set every field Flagger v1.44.0 defines, apply under strict field validation and read
/// back with every field unchanged; a misspelled field and a mistyped value are refused with
/// the field's path, where the open schema used to store them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagger_objects_apply_strictly_and_read_back_unchanged() -> Result<()> {
    let Some(cluster) = world("flagger_objects_apply_strictly_and_read_back_unchanged") else {
        return Ok(());
    };
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    let ns = "op-compat";
    create_namespace(&client, ns, &[]).await?;

    let mut docs: Vec<(String, Value)> = Vec::new();
    for file in [
        "examples/podinfo/canary.yaml",
        "examples/podinfo/canary-ab-header.yaml",
        "examples/podinfo/canary-ab-cookie.yaml",
        "host/src/api/every-field.yaml",
    ] {
        let stem = file
            .rsplit('/')
            .next()
            .unwrap_or(file)
            .trim_end_matches(".yaml");
        for mut doc in read_manifest(&repo().join(file))? {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            ensure!(
                matches!(kind.as_str(), "Canary" | "MetricTemplate" | "AlertProvider"),
                "{file}: unexpected kind {kind}"
            );
            // One namespace, a name per file; everything else as the user wrote it.
            doc["metadata"]["name"] = json!(stem);
            doc["metadata"]["namespace"] = json!(ns);
            docs.push((format!("{file} ({kind})"), doc));
        }
    }
    ensure!(
        docs.len() >= 6,
        "expected the guide's three Canaries and three every-field objects"
    );
    ensure!(
        docs.iter().any(|(_, d)| d["kind"] == "MetricTemplate")
            && docs.iter().any(|(_, d)| d["kind"] == "AlertProvider"),
        "every kind must be covered"
    );

    let mut problems = Vec::new();
    for (what, doc) in &docs {
        let stored = match apply(&client, ns, doc, &strict()).await {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{what}: refused: {e:#}"));
                continue;
            }
        };
        let stored = serde_json::to_value(&stored)?;
        let mut diffs = Vec::new();
        differences("spec", &doc["spec"], &stored["spec"], &mut diffs);
        for field in ["labels", "annotations"] {
            if let Some(w) = doc["metadata"].get(field) {
                differences(
                    &format!("metadata.{field}"),
                    w,
                    &stored["metadata"][field],
                    &mut diffs,
                );
            }
        }
        problems.extend(diffs.into_iter().map(|d| format!("{what}: {d}")));
    }
    ensure!(
        problems.is_empty(),
        "objects not stored as written:\n{}",
        problems.join("\n")
    );

    // What the schema refuses, by path. Before the typed schema both were stored silently.
    let (_, canary) = docs
        .iter()
        .find(|(w, _)| w.starts_with("examples/podinfo/canary.yaml"))
        .context("the guide's Canary")?;
    let mut typo = canary.clone();
    typo["metadata"]["name"] = json!("typo");
    typo["spec"]["analysis"]["maxWieght"] = json!(50);
    let mut mistyped = canary.clone();
    mistyped["metadata"]["name"] = json!("mistyped");
    mistyped["spec"]["analysis"]["stepWeight"] = json!("5");
    for (obj, path) in [
        (&typo, "spec.analysis.maxWieght"),
        (&mistyped, "spec.analysis.stepWeight"),
    ] {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        match apply(&client, ns, obj, &strict()).await {
            Ok(_) => anyhow::bail!("the API server stored Canary {name} with a bad {path}"),
            Err(e) => {
                let msg = format!("{e:#}");
                ensure!(
                    msg.contains(path),
                    "{name}: the refusal should name {path}: {msg}"
                );
            }
        }
    }

    // A Canary as Flagger's own status leaves it: Fledge's status schema keeps Flagger's fields.
    let canaries: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(client.clone(), ns, &super::canary_resource());
    let status = json!({
        "phase": "Succeeded",
        "canaryWeight": 0,
        "failedChecks": 0,
        "iterations": 0,
        "lastAppliedSpec": "5d8f9b6c7",
        "lastPromotedSpec": "5d8f9b6c7",
        "lastTransitionTime": "2026-11-30T10:00:00Z",
        "trackedConfigs": {"configmap/podinfo-config": "abc"},
        "conditions": [{
            "type": "Promoted", "status": "True", "reason": "Succeeded",
            "message": "Canary analysis completed successfully, promotion finished.",
            "lastUpdateTime": "2026-11-30T10:00:00Z",
            "lastTransitionTime": "2026-11-30T10:00:00Z"
        }]
    });
    let patched = canaries
        .patch_status(
            "canary",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .context("writing a Flagger status")?;
    let mut diffs = Vec::new();
    differences(
        "status",
        &status,
        &serde_json::to_value(&patched)?["status"],
        &mut diffs,
    );
    ensure!(diffs.is_empty(), "status not kept:\n{}", diffs.join("\n"));
    Ok(())
}
