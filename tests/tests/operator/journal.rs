//! The decision journal against the shared cluster: the guide's rollback (half the canary's
//! requests fail, threshold 2) under an operator that keeps its journal on stdout (the
//! default); its whole log, replayed with the built-in policy, differs nowhere, and replayed
//! with the strict example policy (`examples/custom-policy`, built by `fledge policy build`)
//! differs at exactly the steps where the built-in held with a failed check.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fledge::policy::journal::{self, Line, Record};
use serde_json::{json, Value};

use super::{bootstrap_with, fledge_binary, set_image, wait_phase};
use crate::world;

fn root() -> PathBuf {
    fledge_e2e::cluster::crate_dir().join("..")
}

/// `fledge policy build examples/custom-policy` into `out`, with host/build.rs's profile and
/// target directory (its dependencies are already built there).
fn build_strict(out: &Path) -> Result<Output> {
    let target_dir = root().join("target").join("wasm");
    Ok(Command::new(fledge_binary()?)
        .args([
            "policy",
            "build",
            "examples/custom-policy",
            "--profile",
            "policy",
        ])
        .arg("-o")
        .arg(out)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root())
        .output()?)
}

/// The recorded decision as JSON (`{"hold": {...}}`, ...).
fn decision(r: &Record) -> Value {
    serde_json::to_value(&r.decision).unwrap_or_default()
}

fn replay(policy: &Path, journal: &Path) -> Result<Output> {
    Ok(Command::new(fledge_binary()?)
        .arg("policy")
        .arg("replay")
        .arg(policy)
        .arg("--journal")
        .arg(journal)
        .output()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_journal_replays_with_the_builtin_and_a_strict_policy() -> Result<()> {
    let Some(cluster) = world("operator_journal_replays_with_the_builtin_and_a_strict_policy")
    else {
        return Ok(());
    };
    let started = Instant::now();
    let ns = "op-journal";
    let client = cluster.client().await?;
    super::install_fledge_crds(cluster, &client).await?;
    super::super::configure_sim(cluster, |config| {
        config.backends.insert(
            format!("{ns}/podinfo-canary"),
            fledge_e2e::mesh::Behaviour {
                error_ratio: 0.5,
                ..Default::default()
            },
        );
        Ok(())
    })?;
    let dir = cluster.dir().join("logs").join(ns);
    std::fs::create_dir_all(&dir)?;
    // Built while the canary rolls out.
    let strict = dir.join("strict.wasm");
    let build = {
        let strict = strict.clone();
        tokio::task::spawn_blocking(move || build_strict(&strict))
    };

    let edit = |mut c: Value| {
        c["spec"]["analysis"]["threshold"] = json!(2);
        c
    };
    let (operator, _canary, _hooks) = bootstrap_with(cluster, &client, ns, &edit, false).await?;
    set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.2").await?;
    wait_phase(&client, ns, "Failed", Duration::from_secs(120))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;

    // The operator's whole output, log lines and journal lines, as `kubectl logs` has it.
    let log = dir.join("operator.log");
    let text = operator.logs();
    std::fs::write(&log, &text)?;
    let records: Vec<(usize, Record, usize)> = text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| match journal::parse(l) {
            Ok(Line::Record(r)) => Some(Ok((i + 1, *r, l.len() + 1))),
            Ok(Line::Other) => None,
            Err(e) => Some(Err(anyhow::anyhow!("line {}: {e}", i + 1))),
        })
        .collect::<Result<_>>()?;
    let canary = format!("podinfo.{ns}");
    ensure!(
        records
            .iter()
            .all(|(_, r, _)| r.canary == canary && r.policy == "builtin" && r.input.is_some()),
        "records of another canary or policy: {records:#?}"
    );
    let failed_checks: Vec<usize> = records
        .iter()
        .filter(|(_, r, _)| decision(r)["hold"]["failedCheck"] == true)
        .map(|(n, _, _)| *n)
        .collect();
    // Threshold 2: two failed checks held, then the operator rolls back without asking.
    assert_eq!(failed_checks.len(), 2, "{records:#?}");
    assert!(
        records
            .iter()
            .any(|(_, r, _)| decision(r)["advance"]["route"]["canaryWeight"] == 50),
        "the first step advances to 50 %: {records:#?}"
    );
    let largest = records.iter().map(|(_, _, len)| *len).max().unwrap_or(0);
    println!(
        "{ns}: {} journal records in {} log lines, largest {largest} bytes",
        records.len(),
        text.lines().count()
    );

    let same = replay(Path::new("builtin"), &log)?;
    let out = String::from_utf8_lossy(&same.stdout);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&same.stderr)
    );
    assert!(
        out.starts_with(&format!("{} decisions, 0 differ; ", records.len())),
        "{out}"
    );

    let built = build.await??;
    ensure!(
        built.status.success(),
        "fledge policy build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let stricter = replay(&strict, &log)?;
    let out = String::from_utf8_lossy(&stricter.stdout);
    assert_eq!(
        stricter.status.code(),
        Some(1),
        "{out}{}",
        String::from_utf8_lossy(&stricter.stderr)
    );
    let differing: Vec<usize> = out
        .lines()
        .filter_map(|l| l.split_once(" (line ")?.1.split_once(')')?.0.parse().ok())
        .collect();
    assert_eq!(differing, failed_checks, "{out}");
    assert!(
        out.lines()
            .filter(|l| l.contains(" (line "))
            .all(|l| l.contains("recorded hold (failed check): success rate")
                && l.contains("replayed rollback: strict policy: success rate")),
        "{out}"
    );
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("{} decisions, 2 differ", records.len()))),
        "{out}"
    );
    println!("{ns}: {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
