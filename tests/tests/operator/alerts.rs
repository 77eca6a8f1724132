//! Alerts from `fledge operator` to local receivers: AlertProviders of three types whose
//! Secrets hold the receivers' addresses, one of them a receiver that accepts and never
//! answers, filtered by severity; and the global `--slack-url` for a Canary without
//! `analysis.alerts`. Three namespaces run at once: a promotion and a rollback with
//! AlertProviders, and a promotion with the global notifier.

use std::sync::atomic::{AtomicUsize, Ordering};

use fledge::core::messages::alert;

use super::*;

/// A receiver that accepts connections and never answers; counts them.
async fn blackhole() -> Result<(String, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    Ok((url, accepted))
}

fn secret(name: &str, address: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
           "stringData": {"address": address, "token": "xoxb-test"}})
}

fn provider(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
           "metadata": {"name": name}, "spec": spec})
}

/// The receivers of one namespace with AlertProviders.
struct Receivers {
    slack: Receiver,
    teams: Receiver,
    down: Arc<AtomicUsize>,
}

/// Secrets and AlertProviders: `team` (slack, info), `oncall` (msteams, error), `down`
/// (rocket, info, never answers), and a reference to an AlertProvider that does not exist.
/// The dead provider comes first: were alerts sent one after the other, the others would
/// wait for it.
async fn providers(objects: &mut Vec<Value>) -> Result<(Receivers, Value)> {
    let slack = Receiver::start().await?;
    let teams = Receiver::start().await?;
    let (down_url, down) = blackhole().await?;
    objects.extend([
        secret("team-hook", &slack.url("/slack")),
        secret("oncall-hook", &teams.url("/teams")),
        secret("down-hook", &down_url),
        // The Secret's address wins over spec.address.
        provider(
            "team",
            json!({"type": "slack", "channel": "deploys",
                                "address": "http://127.0.0.1:9/wrong",
                                "secretRef": {"name": "team-hook"}}),
        ),
        provider(
            "oncall",
            json!({"type": "msteams", "secretRef": {"name": "oncall-hook"}}),
        ),
        provider(
            "down",
            json!({"type": "rocket", "secretRef": {"name": "down-hook"}}),
        ),
    ]);
    let alerts = json!([
        {"name": "dead", "severity": "info", "providerRef": {"name": "down"}},
        {"name": "team", "severity": "info", "providerRef": {"name": "team"}},
        {"name": "on-call", "severity": "error", "providerRef": {"name": "oncall"}},
        {"name": "nobody", "severity": "info", "providerRef": {"name": "missing"}},
    ]);
    Ok((Receivers { slack, teams, down }, alerts))
}

/// Like [`bootstrap_target`], with `objects` applied first and `args` for the operator.
async fn start(
    cluster: &'static Cluster,
    client: &Client,
    ns: &str,
    objects: &[Value],
    alerts: Option<Value>,
    args: &[String],
) -> Result<Operator> {
    create_namespace(
        client,
        ns,
        &[("appmesh.k8s.aws/sidecarInjectorWebhook", "enabled")],
    )
    .await?;
    for obj in objects {
        apply(client, ns, obj, &ssa()).await?;
    }
    for doc in manifest("manifests/podinfo-deployment.yaml")
        .into_iter()
        .chain(manifest("manifests/podinfo-hpa.yaml"))
    {
        apply(client, ns, &doc, &ssa()).await?;
    }
    let hooks = Receiver::start().await?;
    let mut argv = vec![format!("--namespace={ns}"), "--log-level=info".to_string()];
    argv.extend(args.iter().cloned());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let operator = Operator::start(cluster, ns, &argv)?;
    let mut canary = test_canary(ns, &hooks);
    if let Some(a) = alerts {
        canary["spec"]["analysis"]["alerts"] = a;
    }
    apply(client, ns, &canary, &ssa()).await?;
    wait_phase(client, ns, "Initialized", Duration::from_secs(90))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    Ok(operator)
}

/// The bodies `r` received, once there are `n` of them (or after a few seconds).
async fn bodies(r: &Receiver, n: usize) -> Result<Vec<(String, Value)>> {
    let until = Instant::now() + Duration::from_secs(8);
    loop {
        let calls = r.calls.lock().unwrap().clone();
        if calls.len() >= n || Instant::now() > until {
            return calls
                .into_iter()
                .map(|c| Ok((c.path, serde_json::from_str(&c.body)?)))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn slack_texts(got: &[(String, Value)]) -> Vec<String> {
    got.iter()
        .map(|(_, b)| {
            b["attachments"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// Runs a rollout to `phase` after `image`; how long it took from the image change.
async fn roll(client: &Client, op: &Operator, ns: &str, image: &str, phase: &str) -> Result<f64> {
    let started = Instant::now();
    set_image(client, ns, image).await?;
    wait_phase(client, ns, phase, Duration::from_secs(120))
        .await
        .with_context(|| format!("operator log:\n{}", op.logs()))?;
    Ok(started.elapsed().as_secs_f64())
}

async fn with_providers(cluster: &'static Cluster, ns: &str, fail: bool) -> Result<f64> {
    let client = cluster.client().await?;
    let mut objects = Vec::new();
    let (rx, alerts) = providers(&mut objects).await?;
    let op = start(
        cluster,
        &client,
        ns,
        &objects,
        Some(alerts),
        &["--cluster-name=e2e".to_string()],
    )
    .await?;
    let took = if fail {
        roll(
            &client,
            &op,
            ns,
            "ghcr.io/stefanprodan/podinfo:6.0.2",
            "Failed",
        )
        .await?
    } else {
        roll(
            &client,
            &op,
            ns,
            "ghcr.io/stefanprodan/podinfo:6.0.1",
            "Succeeded",
        )
        .await?
    };
    let last = if fail {
        "Failed checks threshold reached 1"
    } else {
        alert::SUCCEEDED
    };

    // The info provider gets every alert, with Flagger's Slack payload.
    let slack = bodies(&rx.slack, 3).await?;
    assert_eq!(
        slack_texts(&slack),
        [alert::INITIALIZED, alert::NEW_REVISION, last],
        "{ns}: slack"
    );
    let (path, first) = &slack[0];
    assert_eq!(path, "/slack");
    let a = &first["attachments"][0];
    assert_eq!(
        (
            first["channel"].as_str(),
            first["username"].as_str(),
            a["author_name"].as_str()
        ),
        (
            Some("deploys"),
            Some("flagger"),
            Some(format!("podinfo.{ns}").as_str())
        )
    );
    assert_eq!(a["color"], "good");
    assert_eq!(
        a["fields"],
        json!([
            {"title": "Cluster", "value": "e2e", "short": false},
            {"title": "Target", "value": format!("Deployment/podinfo.{ns}"), "short": false},
            {"title": "Failed checks threshold", "value": "1", "short": false},
            {"title": "Progress deadline", "value": "60s", "short": false},
            {"title": "Traffic routing", "value": "Weight step: 50 max: 50", "short": false},
            {"title": "Phase", "value": "Initialized", "short": false},
            {"title": "Canary weight", "value": "0%", "short": false},
        ])
    );
    let (_, final_alert) = &slack[2];
    assert_eq!(
        final_alert["attachments"][0]["color"],
        if fail { "danger" } else { "good" }
    );
    assert_eq!(
        final_alert["attachments"][0]["fields"],
        json!([
            {"title": "Cluster", "value": "e2e", "short": false},
            {"title": "Phase", "value": if fail { "Failed" } else { "Succeeded" }, "short": false},
            {"title": "Canary weight", "value": "0%", "short": false},
        ])
    );

    // The error provider only gets the rollback.
    let teams = bodies(&rx.teams, usize::from(fail)).await?;
    if fail {
        assert_eq!(teams.len(), 1, "{ns}: msteams {teams:?}");
        let (path, card) = &teams[0];
        assert_eq!(path, "/teams");
        assert_eq!(card["@type"], "MessageCard");
        assert_eq!(card["themeColor"], "FF0000");
        assert_eq!(card["summary"], format!("podinfo.{ns}"));
        assert_eq!(card["sections"][0]["activityTitle"], last);
        assert_eq!(
            card["sections"][0]["facts"],
            json!([
                {"name": "Cluster", "value": "e2e"},
                {"name": "Phase", "value": "Failed"},
                {"name": "Canary weight", "value": "0%"},
            ])
        );
    } else {
        assert!(
            teams.is_empty(),
            "{ns}: no error alert in a promotion: {teams:?}"
        );
    }

    // The dead receiver was tried for each alert, one connection each (a timeout is not
    // retried).
    let tried = wait_for(
        "3 connections to the dead receiver",
        Duration::from_secs(5),
        || async { Ok((rx.down.load(Ordering::SeqCst) >= 3).then_some(())) },
    )
    .await;
    tried.with_context(|| format!("{ns}: {} connections", rx.down.load(Ordering::SeqCst)))?;

    // The missing AlertProvider is a Warning Event naming the field.
    let notes: Vec<String> = events(&client, ns, "podinfo")
        .await?
        .into_iter()
        .map(|(_, n)| n)
        .filter(|n| n.starts_with("Alert `"))
        .collect();
    let want = format!(
        "Alert `{}` not sent: spec.analysis.alerts[3].providerRef: AlertProvider missing.{ns} not found; create it, or correct providerRef.name and providerRef.namespace",
        alert::INITIALIZED
    );
    assert!(notes.contains(&want), "{ns}: {notes:#?}");
    Ok(took)
}

async fn with_global_slack(cluster: &'static Cluster, ns: &str) -> Result<f64> {
    let client = cluster.client().await?;
    let global = Receiver::start().await?;
    let op = start(
        cluster,
        &client,
        ns,
        &[],
        None,
        &[
            format!("--slack-url={}", global.url("/global")),
            "--slack-channel=ops".to_string(),
            "--slack-user=fledge".to_string(),
        ],
    )
    .await?;
    let took = roll(
        &client,
        &op,
        ns,
        "ghcr.io/stefanprodan/podinfo:6.0.1",
        "Succeeded",
    )
    .await?;
    let got = bodies(&global, 3).await?;
    assert_eq!(
        slack_texts(&got),
        [alert::INITIALIZED, alert::NEW_REVISION, alert::SUCCEEDED],
        "{ns}: --slack-url"
    );
    let (path, first) = &got[0];
    assert_eq!(path, "/global");
    assert_eq!(
        (first["channel"].as_str(), first["username"].as_str()),
        (Some("ops"), Some("fledge"))
    );
    // Without --cluster-name there is no Cluster field.
    assert_eq!(
        first["attachments"][0]["fields"][0]["title"], "Target",
        "{first}"
    );
    Ok(took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sends_alerts_to_providers_by_severity_and_to_the_global_notifier() -> Result<()> {
    let Some(cluster) =
        world("operator_sends_alerts_to_providers_by_severity_and_to_the_global_notifier")
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    // After the build of the binary (in install_fledge_crds).
    let started = Instant::now();
    super::super::configure_sim(cluster, |config| {
        config.backends.insert(
            "al-rollback/podinfo-canary".into(),
            fledge_e2e::mesh::Behaviour {
                error_ratio: 0.5,
                ..Default::default()
            },
        );
        Ok(())
    })?;
    let (promote, rollback, global) = tokio::join!(
        with_providers(cluster, "al-promote", false),
        with_providers(cluster, "al-rollback", true),
        with_global_slack(cluster, "al-global"),
    );
    let (promote, global) = (promote.context("al-promote")?, global.context("al-global")?);
    let rollback = rollback.context("al-rollback")?;
    println!(
        "image change to Succeeded: {promote:.1}s with a dead provider, {global:.1}s without; \
         to Failed: {rollback:.1}s; all three namespaces {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // Three alerts to a receiver that never answers cost the rollout nothing: not even one
    // send timeout (5 s) more than the same promotion without it.
    assert!(
        promote < global + 5.0,
        "the dead provider slowed the promotion: {promote:.1}s against {global:.1}s"
    );
    Ok(())
}
