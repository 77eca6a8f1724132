//! The operator's own metrics: `/metrics` after a promotion and a rollback, the Grafana
//! dashboard's queries against the harness's Prometheus (which scrapes the operators) while an
//! analysis runs, and analyses whose Prometheus cannot answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fledge_e2e::cluster::assets_dir;
use fledge_e2e::{http, prometheus, Cluster};
use kube::Client;
use serde_json::Value;

use super::{
    bootstrap_with, canary_status, events, fledge_binary, free_port, image_of, install_fledge_crds,
    live_weights, set_image, wait_phase, Operator,
};
use crate::{configure_sim, wait_for, world};

/// The value of sample `series` (name and labels exactly as encoded) in a `/metrics` text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn metrics_of(operator: &Operator) -> Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], operator.port));
    let resp = http::get(addr, "/metrics")?;
    ensure!(resp.status == 200, "/metrics answered {}", resp.status);
    Ok(resp.body)
}

/// `series` must be in `text` with `value`.
fn expect(text: &str, series: &str, value: f64) {
    assert_eq!(sample(text, series), Some(value), "{series} in\n{text}");
}

/// The built-in policy's digest, as `fledge policy inspect builtin` prints it.
fn builtin_digest() -> Result<String> {
    let out = std::process::Command::new(fledge_binary()?)
        .args(["policy", "inspect", "builtin"])
        .output()?;
    ensure!(out.status.success(), "fledge policy inspect builtin failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| Some(l.strip_prefix("digest:")?.trim().to_string()))
        .context("no digest in `fledge policy inspect builtin`")
}

fn decisions(text: &str, digest: &str, decision: &str) -> f64 {
    let series = format!(
        "fledge_policy_decisions_total{{policy=\"builtin\",digest=\"{digest}\",decision=\"{decision}\"}}"
    );
    sample(text, &series).unwrap_or_else(|| panic!("{series} missing from\n{text}"))
}

/// Series every analysed Canary has, with Flagger's labels: the phase as 1 (Succeeded) or 2
/// (Failed), routes back to 100 % primary, one Canary in the namespace.
fn expect_finished(text: &str, ns: &str, status: f64) {
    expect(
        text,
        &format!(
            "flagger_info{{version=\"{}\",mesh_provider=\"appmesh:v1beta2\"}}",
            env!("CARGO_PKG_VERSION")
        ),
        1.0,
    );
    expect(
        text,
        &format!("flagger_canary_total{{namespace=\"{ns}\"}}"),
        1.0,
    );
    expect(
        text,
        &format!("flagger_canary_status{{name=\"podinfo\",namespace=\"{ns}\"}}"),
        status,
    );
    expect(
        text,
        &format!("flagger_canary_weight{{workload=\"podinfo-primary\",namespace=\"{ns}\"}}"),
        100.0,
    );
    expect(
        text,
        &format!("flagger_canary_weight{{workload=\"podinfo\",namespace=\"{ns}\"}}"),
        0.0,
    );
    expect(text, "fledge_leader", 1.0);
    let (result, other) = if status == 1.0 {
        ("successes", "failures")
    } else {
        ("failures", "successes")
    };
    let labels = format!(
        "{{name=\"podinfo\",namespace=\"{ns}\",deployment_strategy=\"canary\",analysis_status=\"completed\"}}"
    );
    expect(text, &format!("flagger_canary_{result}_total{labels}"), 1.0);
    assert_eq!(
        sample(text, &format!("flagger_canary_{other}_total{labels}")),
        None
    );
    // Steps taken in Progressing that did not roll back: at least the advance to 50 %.
    let timed = sample(
        text,
        &format!("flagger_canary_duration_seconds_count{{name=\"podinfo\",namespace=\"{ns}\"}}"),
    );
    assert!(timed.is_some_and(|n| n >= 1.0), "{timed:?} in\n{text}");
    let queries = sample(
        text,
        "fledge_metric_query_seconds_count{provider=\"prometheus\"}",
    );
    assert!(queries.is_some_and(|n| n >= 1.0), "{queries:?} in\n{text}");
}

fn analysis(text: &str, ns: &str, metric: &str) -> Option<f64> {
    sample(
        text,
        &format!(
            "flagger_canary_metric_analysis{{name=\"podinfo\",namespace=\"{ns}\",metric=\"{metric}\"}}"
        ),
    )
}

/// Every PromQL query of the dashboard's panels.
fn dashboard_queries() -> Result<(Value, Vec<String>)> {
    let path = assets_dir().join("../../deploy/grafana/fledge-appmesh.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    fn walk(panels: &Value, out: &mut Vec<String>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], out);
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push(e.to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    Ok((dash, out))
}

fn substitute(q: &str, ns: &str) -> String {
    q.replace("$namespace", ns)
        .replace("$primary", "podinfo-primary")
        .replace("$canary", "podinfo")
}

/// Runs every panel query (and the selectors of the template variables) for `ns` until each
/// parses and returns at least one finite sample; a query Prometheus rejects fails at once.
async fn dashboard_answers(prom: SocketAddr, ns: &str, within: Duration) -> Result<()> {
    let (dash, queries) = dashboard_queries()?;
    ensure!(queries.len() >= 10, "only {} panel queries", queries.len());
    let deadline = Instant::now() + within;
    loop {
        let mut missing = Vec::new();
        for q in &queries {
            let promql = substitute(q, ns);
            let samples = prometheus::query(prom, &promql)?;
            if !samples.iter().any(|s| s.value.is_finite()) {
                missing.push(format!("{promql} -> {samples:?}"));
            }
        }
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "dashboard queries without data after {within:?}:\n{}",
                missing.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // `label_values(selector, label)`: the selector finds this Canary's value of the label.
    let vars = regex::Regex::new(r"^label_values\((.+), (\w+)\)$")?;
    let mut checked = 0;
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let Some(q) = v["query"]["query"].as_str() else {
            continue;
        };
        let c = vars
            .captures(q)
            .with_context(|| format!("variable query {q}"))?;
        let expected = match v["name"].as_str() {
            Some("namespace") => ns,
            Some("canary") => "podinfo",
            Some("primary") => "podinfo-primary",
            other => bail!("unexpected variable {other:?}"),
        };
        let promql = format!("group by ({}) ({})", &c[2], substitute(&c[1], ns));
        let found = prometheus::query(prom, &promql)?;
        assert!(
            found
                .iter()
                .any(|s| s.labels.get(&c[2]).map(String::as_str) == Some(expected)),
            "variable {} ({promql}) lacks {expected}: {found:?}",
            v["name"]
        );
        checked += 1;
    }
    assert_eq!(checked, 3, "namespace, canary and primary variables");
    Ok(())
}

/// Bootstrap, register the operator with Prometheus, roll out a new image, and while the
/// analysis runs at 50 % check the dashboard; then the promoted Canary's series.
async fn promoted(cluster: &'static Cluster, ns: &str, digest: &str) -> Result<()> {
    let client = cluster.client().await?;
    let (operator, _, _hooks) = bootstrap_with(cluster, &client, ns, &|c| c, false).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], operator.port));
    cluster.add_scrape_target(ns, addr)?;
    set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    wait_for("the analysis at 50 %", Duration::from_secs(60), || async {
        let s = canary_status(&client, ns).await?;
        Ok((s["canaryWeight"] == 50).then_some(()))
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let prom = cluster.prometheus().context("no Prometheus")?;
    dashboard_answers(prom, ns, Duration::from_secs(40)).await?;
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(120))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;

    let text = metrics_of(&operator)?;
    expect_finished(&text, ns, 1.0);
    // No errors in the default backend; its 2-20 ms latency recorded in seconds, as Flagger does.
    assert_eq!(analysis(&text, ns, "request-success-rate"), Some(100.0));
    let p99 = analysis(&text, ns, "request-duration");
    assert!(p99.is_some_and(|s| s > 0.0 && s <= 0.025), "P99 {p99:?}");
    assert_eq!(decisions(&text, digest, "promote"), 1.0, "{text}");
    assert_eq!(decisions(&text, digest, "rollback"), 0.0);
    assert!(decisions(&text, digest, "advance") >= 1.0);
    Ok(())
}

/// Half the canary's requests fail: one failed check, then the rollback.
async fn rolled_back(cluster: &'static Cluster, ns: &str, digest: &str) -> Result<()> {
    let client = cluster.client().await?;
    let (operator, _, _hooks) = bootstrap_with(cluster, &client, ns, &|c| c, false).await?;
    cluster.add_scrape_target(ns, SocketAddr::from(([127, 0, 0, 1], operator.port)))?;
    set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.2").await?;
    wait_phase(&client, ns, "Failed", Duration::from_secs(120))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let text = metrics_of(&operator)?;
    expect_finished(&text, ns, 2.0);
    let rate = analysis(&text, ns, "request-success-rate");
    assert!(rate.is_some_and(|r| (40.0..60.0).contains(&r)), "{rate:?}");
    assert_eq!(decisions(&text, digest, "promote"), 0.0, "{text}");
    assert!(decisions(&text, digest, "hold") >= 1.0, "{text}");
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.0"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_metrics_after_promotion_and_rollback_and_dashboard_queries() -> Result<()> {
    let Some(cluster) =
        world("operator_metrics_after_promotion_and_rollback_and_dashboard_queries")
    else {
        return Ok(());
    };
    let started = Instant::now();
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    configure_sim(cluster, |config| {
        config.backends.insert(
            "tm-rollback/podinfo-canary".into(),
            fledge_e2e::mesh::Behaviour {
                error_ratio: 0.5,
                ..Default::default()
            },
        );
        Ok(())
    })?;
    let digest = builtin_digest()?;
    let (p, r) = tokio::join!(
        promoted(cluster, "tm-promote", &digest),
        rolled_back(cluster, "tm-rollback", &digest)
    );
    p.context("promotion")?;
    r.context("rollback")?;
    println!(
        "telemetry scenarios: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A Prometheus that cannot answer: bootstrap with the harness's, then run the analysis with
/// an operator whose `--metrics-server` is `server`. The check fails with Flagger's words,
/// the Canary rolls back after `threshold` (1) failed checks, and nothing is promoted.
async fn broken_prometheus(
    cluster: &'static Cluster,
    ns: &str,
    server: &str,
    says: &str,
) -> Result<()> {
    let client = cluster.client().await?;
    let (first, _, _hooks) = bootstrap_with(cluster, &client, ns, &|c| c, false).await?;
    drop(first);
    let operator = Operator::start(
        cluster,
        &format!("{ns}-broken"),
        &[
            &format!("--namespace={ns}"),
            "--log-level=info",
            &format!("--metrics-server={server}"),
        ],
    )?;
    let before = image_of(&client, ns, "podinfo-primary").await?;
    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.3").await?;
    wait_phase(&client, ns, "Failed", Duration::from_secs(90))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let said: Vec<String> = events(&client, ns, "podinfo")
        .await?
        .into_iter()
        .filter(|(t, _)| *t >= triggered)
        .map(|(_, m)| m)
        .collect();
    let failed: Vec<&String> = said
        .iter()
        .filter(|m| m.starts_with("Prometheus query failed: "))
        .collect();
    assert!(
        !failed.is_empty() && failed.iter().all(|m| m.contains(says)),
        "{said:#?}"
    );
    assert!(
        said.contains(&format!(
            "Rolling back podinfo.{ns} failed checks threshold reached 1"
        )),
        "{said:#?}"
    );
    assert!(
        !said
            .iter()
            .any(|m| m.starts_with("Copying") || m.starts_with("Promotion completed")),
        "{said:#?}"
    );
    assert_eq!(image_of(&client, ns, "podinfo-primary").await?, before);
    assert_eq!(live_weights(&client, ns).await?, (0, 100));
    let text = metrics_of(&operator)?;
    expect(
        &text,
        &format!("flagger_canary_status{{name=\"podinfo\",namespace=\"{ns}\"}}"),
        2.0,
    );
    assert_eq!(analysis(&text, ns, "request-success-rate"), None, "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_failing_prometheus_never_promotes() -> Result<()> {
    let Some(cluster) = world("an_unreachable_or_failing_prometheus_never_promotes") else {
        return Ok(());
    };
    let client: Client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    // Nothing listens on a port just given back.
    let closed = format!("http://127.0.0.1:{}", free_port()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let failing = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(http::serve(listener, |_| {
        (500, "text/plain", "the query engine is down".to_string())
    }));
    let (unreachable, erroring) = tokio::join!(
        broken_prometheus(
            cluster,
            "tm-unreachable",
            &closed,
            closed.trim_start_matches("http://")
        ),
        broken_prometheus(cluster, "tm-erroring", &failing, "500"),
    );
    server.abort();
    unreachable.context("unreachable Prometheus")?;
    erroring.context("Prometheus answering 500")?;
    Ok(())
}
