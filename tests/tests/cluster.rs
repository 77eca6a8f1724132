//! End-to-end tests against a real local control plane (see `tests/src/cluster.rs`).
//!
//! All tests share one cluster, started on first use and stopped when the test process exits;
//! each test works in its own namespace. The binaries come from `tests/cluster/build.sh` (run
//! automatically when missing); `FLEDGE_SKIP_CLUSTER=1` skips these tests and says so.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fledge::operator::metrics::{duration_query, success_rate_query};
use fledge_e2e::cluster::{
    assets_dir, create_namespace, processes_mentioning, read_manifest, shared, skip_requested,
    FIELD_MANAGER,
};
use fledge_e2e::mesh::{SimConfig, StateView};
use fledge_e2e::{http, prometheus, Cluster, ClusterOptions};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::discovery::{pinned_kind, Scope};
use kube::Client;
use serde_json::{json, Value};

mod operator;

fn world(test: &str) -> Option<&'static Cluster> {
    if skip_requested(test) {
        return None;
    }
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_mesh-sim"));
    match shared(Some(sim)) {
        Ok(c) => Some(c),
        Err(e) => panic!("starting the test cluster failed: {e:#}"),
    }
}

fn manifest(name: &str) -> Vec<Value> {
    let path = assets_dir().join(name);
    read_manifest(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

/// Server-side applies any object (kind resolved through discovery) into `namespace` (ignored
/// for cluster-scoped kinds) and returns what the server stored.
async fn apply(
    client: &Client,
    namespace: &str,
    obj: &Value,
    params: &PatchParams,
) -> Result<DynamicObject> {
    let api_version = obj["apiVersion"].as_str().context("apiVersion")?;
    let kind = obj["kind"].as_str().context("kind")?;
    let name = obj["metadata"]["name"].as_str().context("metadata.name")?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let (ar, caps) = pinned_kind(client, &GroupVersionKind::gvk(group, version, kind))
        .await
        .with_context(|| format!("discovering {api_version} {kind}"))?;
    let mut obj = obj.clone();
    let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
        obj["metadata"]["namespace"] = json!(namespace);
        Api::namespaced_with(client.clone(), namespace, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    api.patch(name, params, &Patch::Apply(&obj))
        .await
        .with_context(|| format!("applying {kind} {name}"))
}

/// Runs kubectl with `input` on stdin.
async fn kubectl_with_stdin(
    cluster: &Cluster,
    args: &[&str],
    input: &str,
) -> Result<std::process::Output> {
    use std::io::Write;
    use std::process::Stdio;
    let mut cmd = cluster.kubectl();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let input = input.to_string();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().context("starting kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(input.as_bytes())?;
        child.wait_with_output().context("waiting for kubectl")
    })
    .await?
}

fn ssa() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until a Deployment's latest generation is fully rolled out and available; returns the
/// `availableReplicas` values seen on the way.
async fn wait_rolled_out(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<Vec<i32>> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let d = api.get(name).await?;
        let status = d.status.clone().unwrap_or_default();
        let available = status.available_replicas.unwrap_or(0);
        if seen.last() != Some(&available) {
            seen.push(available);
        }
        if status.observed_generation >= d.metadata.generation
            && status.updated_replicas == Some(replicas)
            && status.replicas == Some(replicas)
            && available == replicas
        {
            return Ok(seen);
        }
        if Instant::now() > deadline {
            bail!("deployment {name} did not roll out within 90 s: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn podinfo_deployment(name: &str, app: &str, replicas: i32) -> Value {
    let mut d = manifest("manifests/podinfo-deployment.yaml").remove(0);
    d["metadata"]["name"] = json!(name);
    d["metadata"]["labels"]["app"] = json!(app);
    d["spec"]["replicas"] = json!(replicas);
    d["spec"]["selector"]["matchLabels"]["app"] = json!(app);
    d["spec"]["template"]["metadata"]["labels"]["app"] = json!(app);
    d
}

async fn pods_of(client: &Client, namespace: &str, selector: &str) -> Result<Vec<Pod>> {
    Ok(Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// (a) The guide's podinfo Deployment rolls out on kwok nodes, and an image change rolls out a
/// new ReplicaSet.
#[tokio::test]
async fn deployment_rolls_out_and_updates() -> Result<()> {
    let Some(cluster) = world("deployment_rolls_out_and_updates") else {
        return Ok(());
    };
    let client = cluster.client().await?;
    let ns = "e2e-rollout";
    create_namespace(&client, ns, &[]).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);

    apply(
        &client,
        ns,
        &podinfo_deployment("podinfo", "podinfo", 2),
        &ssa(),
    )
    .await?;
    let seen = wait_rolled_out(&deployments, "podinfo", 2).await?;
    assert_eq!(seen.last(), Some(&2), "availableReplicas history {seen:?}");
    assert!(
        seen.first().is_some_and(|f| *f < 2),
        "availableReplicas should rise from below 2, saw {seen:?}"
    );

    let pods = pods_of(&client, ns, "app=podinfo").await?;
    assert_eq!(pods.len(), 2);
    for p in &pods {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(node.starts_with("kwok-node-"), "pod scheduled to {node:?}");
        assert!(pod_ready(p), "pod {:?} not Ready", p.metadata.name);
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        assert!(
            ip.starts_with("10.244."),
            "pod IP {ip:?} not from the kwok CIDR"
        );
    }

    // The guide's trigger: `kubectl set image deployment/podinfo podinfod=...:6.0.1`.
    let new_image = "ghcr.io/stefanprodan/podinfo:6.0.1";
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "podinfod", "image": new_image}
    ]}}}});
    deployments
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await?;
    wait_rolled_out(&deployments, "podinfo", 2).await?;

    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let sets = rs_api
        .list(&ListParams::default().labels("app=podinfo"))
        .await?
        .items;
    assert_eq!(sets.len(), 2, "expected the old and the new ReplicaSet");
    let image_of = |rs: &ReplicaSet| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref())
            .map(|s| s.containers[0].image.clone().unwrap_or_default())
            .unwrap_or_default()
    };
    for rs in &sets {
        let want = if image_of(rs) == new_image { 2 } else { 0 };
        assert_eq!(
            rs.spec.as_ref().and_then(|s| s.replicas),
            Some(want),
            "ReplicaSet {:?} ({})",
            rs.metadata.name,
            image_of(rs)
        );
    }
    // Old pods are gone (kwok finishes their deletion) and the new ones run the new image.
    let pods = wait_for("old pods to go away", Duration::from_secs(60), || async {
        let pods = pods_of(&client, ns, "app=podinfo").await?;
        let all_new = pods.iter().all(|p| {
            p.spec.as_ref().map(|s| s.containers[0].image.as_deref()) == Some(Some(new_image))
        });
        Ok((pods.len() == 2 && all_new).then_some(pods))
    })
    .await?;
    assert!(pods.iter().all(pod_ready));
    Ok(())
}

/// (b) Every App Mesh kind is accepted with a valid object and stored unchanged; a misspelled
/// field is pruned (or, with strict validation as kubectl uses, rejected), and a misspelled
/// required field is rejected.
#[tokio::test]
async fn appmesh_crds_accept_valid_objects_and_prune_typos() -> Result<()> {
    let Some(cluster) = world("appmesh_crds_accept_valid_objects_and_prune_typos") else {
        return Ok(());
    };
    let client = cluster.client().await?;
    let ns = "e2e-appmesh";
    create_namespace(&client, ns, &[("fledge.example/mesh", "fledge-e2e")]).await?;

    let docs = manifest("fixtures/appmesh-all-kinds.yaml");
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "GatewayRoute",
            "Mesh",
            "VirtualGateway",
            "VirtualNode",
            "VirtualRouter",
            "VirtualService"
        ])
    );
    for doc in &docs {
        let stored = apply(&client, ns, doc, &ssa().validation_strict()).await?;
        assert_eq!(
            stored.data["spec"], doc["spec"],
            "{} {}: the server changed the spec",
            doc["kind"], doc["metadata"]["name"]
        );
    }

    // A typo inside spec: `backendDefault` instead of `backendDefaults`.
    let mut typo = docs
        .iter()
        .find(|d| d["kind"] == "VirtualNode")
        .cloned()
        .context("fixture has a VirtualNode")?;
    typo["metadata"]["name"] = json!("typo-node");
    typo["spec"]["backendDefault"] = json!({"clientPolicy": {}});
    typo["spec"]["listeners"][0]["portMapping"]["prot"] = json!(9898);

    // kubectl create sends fieldValidation=Strict: the API server refuses, naming both fields.
    let out =
        kubectl_with_stdin(cluster, &["create", "-n", ns, "-f", "-"], &typo.to_string()).await?;
    assert!(
        !out.status.success(),
        "a typo must not be created in strict mode"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"unknown field "spec.backendDefault""#)
            && stderr.contains(r#"unknown field "spec.listeners[0].portMapping.prot""#),
        "{stderr}"
    );

    // Without strict validation the object is stored with the unknown fields pruned. (Server-side
    // apply prunes them even when asked for strict validation: the root of every App Mesh
    // schema preserves unknown fields, so the apply path does not see them as unknown.)
    let stored = apply(&client, ns, &typo, &ssa().validation_ignore()).await?;
    let spec = &stored.data["spec"];
    assert!(spec.get("backendDefault").is_none(), "not pruned: {spec}");
    assert!(
        spec["listeners"][0]["portMapping"].get("prot").is_none(),
        "not pruned: {spec}"
    );
    assert_eq!(spec["listeners"][0]["portMapping"]["port"], 9898);
    assert_eq!(spec["podSelector"], typo["spec"]["podSelector"]);

    // As upstream, only the root preserves unknown keys: a key next to `spec` is kept.
    let mut sibling = docs
        .iter()
        .find(|d| d["kind"] == "VirtualService")
        .cloned()
        .context("fixture has a VirtualService")?;
    sibling["metadata"]["name"] = json!("typo-service");
    sibling["specs"] = json!({"provider": {}});
    let stored = apply(&client, ns, &sibling, &ssa()).await?;
    assert_eq!(stored.data["specs"], json!({"provider": {}}));

    // A misspelled required field leaves the required one missing: rejected.
    let mut router = docs
        .iter()
        .find(|d| d["kind"] == "VirtualRouter")
        .cloned()
        .context("fixture has a VirtualRouter")?;
    router["metadata"]["name"] = json!("typo-router");
    let target = &mut router["spec"]["routes"][1]["httpRoute"]["action"]["weightedTargets"][0];
    let weight = target["weight"].take();
    target.as_object_mut().context("target")?.remove("weight");
    target["wieght"] = weight;
    let err = apply(&client, ns, &router, &ssa().validation_ignore())
        .await
        .expect_err("a missing required field must be rejected");
    let err = format!("{err:#}");
    assert!(err.contains("weight") && err.contains("Required"), "{err}");

    // Bounds and enums from the reference are enforced.
    let mut bad = docs
        .iter()
        .find(|d| d["kind"] == "VirtualRouter")
        .cloned()
        .context("fixture has a VirtualRouter")?;
    bad["metadata"]["name"] = json!("bad-router");
    bad["spec"]["routes"][0]["httpRoute"]["retryPolicy"]["httpRetryEvents"] = json!(["5xx"]);
    bad["spec"]["routes"][0]["httpRoute"]["action"]["weightedTargets"][0]["weight"] = json!(101);
    let err = format!(
        "{:#}",
        apply(&client, ns, &bad, &ssa())
            .await
            .expect_err("out-of-range values must be rejected")
    );
    assert!(err.contains("5xx") && err.contains("101"), "{err}");
    Ok(())
}

/// Reads the simulator's view of the mesh.
fn sim_state(cluster: &Cluster) -> Result<StateView> {
    let sim = cluster.simulator().context("simulator not started")?;
    let resp = http::get(sim, "/state")?;
    ensure!(resp.status == 200, "GET /state: {}", resp.status);
    Ok(serde_json::from_str(&resp.body)?)
}

/// Edits the simulator's configuration (`GET` then `PUT /config`), one test at a time, so
/// tests running at once do not undo each other's entries.
fn configure_sim(cluster: &Cluster, edit: impl FnOnce(&mut SimConfig) -> Result<()>) -> Result<()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let sim = cluster.simulator().context("simulator not started")?;
    let mut config: SimConfig = serde_json::from_str(&http::get(sim, "/config")?.body)?;
    edit(&mut config)?;
    let resp = http::request(
        sim,
        "PUT",
        "/config",
        Some(&serde_json::to_string(&config)?),
    )?;
    ensure!(
        (200..300).contains(&resp.status),
        "PUT /config: {} {}",
        resp.status,
        resp.body
    );
    Ok(())
}

/// The canary's latency in `prometheus_sees_canary_success_rate`: uniform between these (ms).
const LATENCY_MS: (f64, f64) = (5.0, 30.0);

/// What Prometheus' `histogram_quantile(0.99, ...)` gives over Envoy's buckets for latencies
/// uniform in `[min, max]` ms: the bucket the rank falls in, interpolated linearly inside it.
fn uniform_p99_over_envoy_buckets(min: f64, max: f64) -> f64 {
    let cdf = |le: f64| ((le - min) / (max - min)).clamp(0.0, 1.0);
    let rank = 0.99;
    let mut lower = (0.0, 0.0);
    for le in fledge_e2e::mesh::LATENCY_BUCKETS_MS {
        let upper = (le, cdf(le));
        if upper.1 >= rank {
            return lower.0 + (upper.0 - lower.0) * (rank - lower.1) / (upper.1 - lower.1);
        }
        lower = upper;
    }
    unreachable!("the last bucket holds every latency below {max} ms")
}

#[test]
fn p99_of_uniform_5_to_30_ms_over_envoy_buckets() {
    // 80 % below 25 ms, all below 50 ms: 25 + 25 * (0.99 - 0.8) / 0.2.
    assert!((uniform_p99_over_envoy_buckets(5.0, 30.0) - 48.75).abs() < 1e-9);
}

/// (c) Prometheus, scraping the simulator behind a 90/10 router split with 5 % errors on the
/// canary, answers Flagger's builtin success-rate query for the canary with 95 % (±1 point).
#[tokio::test]
async fn prometheus_sees_canary_success_rate() -> Result<()> {
    let Some(cluster) = world("prometheus_sees_canary_success_rate") else {
        return Ok(());
    };
    let client = cluster.client().await?;
    let prom = cluster.prometheus().context("prometheus not started")?;
    let ns = "e2e-metrics";
    create_namespace(
        &client,
        ns,
        &[("appmesh.k8s.aws/sidecarInjectorWebhook", "enabled")],
    )
    .await?;

    // Behaviour first, so the canary's error series start with its traffic.
    configure_sim(cluster, |config| {
        config.routers.insert(
            format!("{ns}/podinfo"),
            serde_json::from_value(json!({"rps": 1000}))?,
        );
        config.backends.insert(
            format!("{ns}/podinfo-canary"),
            serde_json::from_value(json!({"error_ratio": 0.05, "latency": [
                {"weight": 1.0, "min_ms": LATENCY_MS.0, "max_ms": LATENCY_MS.1}
            ]}))?,
        );
        Ok(())
    })?;

    // Flagger's objects for canary `podinfo`: canary and primary workloads, one virtual node
    // each, the apex router at 90/10 and its virtual service.
    apply(
        &client,
        ns,
        &podinfo_deployment("podinfo", "podinfo", 2),
        &ssa(),
    )
    .await?;
    apply(
        &client,
        ns,
        &podinfo_deployment("podinfo-primary", "podinfo-primary", 2),
        &ssa(),
    )
    .await?;
    for (node, app) in [
        ("podinfo-canary", "podinfo"),
        ("podinfo-primary", "podinfo-primary"),
    ] {
        let vn = json!({
            "apiVersion": "appmesh.k8s.aws/v1beta2",
            "kind": "VirtualNode",
            "metadata": {"name": node},
            "spec": {
                "podSelector": {"matchLabels": {"app": app}},
                "listeners": [{"portMapping": {"port": 9898, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": format!("{node}.{ns}.svc.cluster.local.")}}
            }
        });
        apply(&client, ns, &vn, &ssa().validation_strict()).await?;
    }
    let router = json!({
        "apiVersion": "appmesh.k8s.aws/v1beta2",
        "kind": "VirtualRouter",
        "metadata": {"name": "podinfo"},
        "spec": {
            "listeners": [{"portMapping": {"port": 9898, "protocol": "http"}}],
            "routes": [{"name": "podinfo", "httpRoute": {
                "match": {"prefix": "/"},
                "action": {"weightedTargets": [
                    {"virtualNodeRef": {"name": "podinfo-canary"}, "weight": 10},
                    {"virtualNodeRef": {"name": "podinfo-primary"}, "weight": 90}
                ]}
            }}]
        }
    });
    apply(&client, ns, &router, &ssa().validation_strict()).await?;
    let service = json!({
        "apiVersion": "appmesh.k8s.aws/v1beta2",
        "kind": "VirtualService",
        "metadata": {"name": "podinfo"},
        "spec": {"provider": {"virtualRouter": {"virtualRouterRef": {"name": "podinfo"}}}}
    });
    apply(&client, ns, &service, &ssa().validation_strict()).await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_rolled_out(&deployments, "podinfo", 2).await?;
    wait_rolled_out(&deployments, "podinfo-primary", 2).await?;
    let canary_pods: BTreeSet<String> = pods_of(&client, ns, "app=podinfo")
        .await?
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();

    // The simulator routes to the real pods behind each virtual node.
    let canary_key = format!("{ns}/podinfo-canary");
    let primary_key = format!("{ns}/podinfo-primary");
    wait_for(
        "the simulator to route to every pod",
        Duration::from_secs(30),
        || async {
            let st = sim_state(cluster)?;
            let pods = |k: &str| st.backends.get(k).map(|v| v.len()).unwrap_or(0);
            let canary_requests = st.totals.get(&canary_key).map(|t| t.requests).unwrap_or(0);
            Ok(
                (pods(&canary_key) == 2 && pods(&primary_key) == 2 && canary_requests > 0)
                    .then_some(()),
            )
        },
    )
    .await?;
    let st = sim_state(cluster)?;
    assert_eq!(
        st.backends[&canary_key]
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        canary_pods
    );

    // Give Prometheus a few scrapes of steady traffic, then ask as Flagger would.
    let success_query = success_rate_query(ns, "podinfo", "1m");
    let success = wait_for(
        "a canary success rate from Prometheus",
        Duration::from_secs(60),
        || {
            let q = success_query.clone();
            async move {
                let requests = prometheus::query_value(
                    prom,
                    &format!(
                        "sum(envoy_cluster_upstream_rq{{kubernetes_namespace=\"{ns}\", \
                     envoy_cluster_name=\"cds_ingress_global_podinfo-canary_{ns}_http_9898\"}})"
                    ),
                )?
                .unwrap_or(0.0);
                if requests < 600.0 {
                    return Ok(None);
                }
                prometheus::query_value(prom, &q)
            }
        },
    )
    .await?;
    println!("canary success rate from Prometheus: {success:.3}%");
    assert!(
        (success - 95.0).abs() <= 1.0,
        "canary success rate {success:.3}% is not within 1 point of 95%"
    );

    // The same query for the primary selects only primary pods: no errors there.
    let primary = prometheus::query_value(prom, &success_rate_query(ns, "podinfo-primary", "1m"))?
        .context("no primary success rate")?;
    assert!(
        (primary - 100.0).abs() < 1e-9,
        "primary success rate {primary}"
    );

    // The canary pods named in the metrics are exactly the Deployment's pods.
    let samples = prometheus::query(
        prom,
        &format!(
            "sum by (kubernetes_pod_name) (envoy_cluster_upstream_rq{{kubernetes_namespace=\"{ns}\", \
             kubernetes_pod_name=~\"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)\"}})"
        ),
    )?;
    let named: BTreeSet<String> = samples
        .iter()
        .filter_map(|s| s.labels.get("kubernetes_pod_name").cloned())
        .collect();
    assert_eq!(named, canary_pods);

    // The router's 90/10 split shows in the request counts: the growth of each counter over
    // the last 20 s, read from the same scrapes (a rate over a window the young series only
    // partly cover would be extrapolated, and skewed when scrapes run late).
    let canary_rq = format!(
        "envoy_cluster_upstream_rq{{kubernetes_namespace=\"{ns}\", \
         kubernetes_pod_name=~\"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)\"}}"
    );
    let all_rq = format!("envoy_cluster_upstream_rq{{kubernetes_namespace=\"{ns}\"}}");
    let share_query = format!(
        "(sum({canary_rq}) - sum({canary_rq} offset 20s)) / \
         (sum({all_rq}) - sum({all_rq} offset 20s)) * 100"
    );
    let share = wait_for(
        "20 s of counters in Prometheus",
        Duration::from_secs(60),
        || async { prometheus::query_value(prom, &share_query) },
    )
    .await?;
    println!("canary share of the router's traffic: {share:.3}%");
    assert!(
        (share - 10.0).abs() <= 1.0,
        "canary traffic share {share:.2}%"
    );

    // Flagger's request-duration query reads the latency histogram: its P99 is what
    // histogram_quantile interpolates in Envoy's buckets for the configured distribution.
    let p99 = prometheus::query_value(prom, &duration_query(ns, "podinfo", "1m"))?
        .context("no canary request duration")?;
    let expected = uniform_p99_over_envoy_buckets(LATENCY_MS.0, LATENCY_MS.1);
    println!("canary P99 from the latency histogram: {p99:.3} ms (expected {expected:.3} ms)");
    assert!(
        (p99 - expected).abs() <= 0.5,
        "canary P99 {p99} ms, expected {expected} ms"
    );

    // The simulator follows the router: shift to 50/50 as a rollout step would.
    let mut step = router.clone();
    step["spec"]["routes"][0]["httpRoute"]["action"]["weightedTargets"][0]["weight"] = json!(50);
    step["spec"]["routes"][0]["httpRoute"]["action"]["weightedTargets"][1]["weight"] = json!(50);
    apply(&client, ns, &step, &ssa().validation_strict()).await?;
    let router_key = format!("{ns}/podinfo");
    wait_for(
        "the simulator to see 50/50",
        Duration::from_secs(30),
        || async {
            let st = sim_state(cluster)?;
            let weights: Vec<u32> = st.routers[&router_key]["podinfo"]
                .iter()
                .map(|t| t.1)
                .collect();
            Ok((weights == [50, 50]).then_some(()))
        },
    )
    .await?;
    let totals = |st: &StateView| {
        let get = |k: &str| st.totals.get(k).map(|t| t.requests).unwrap_or(0);
        (get(&canary_key), get(&primary_key))
    };
    let before = totals(&sim_state(cluster)?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = totals(&sim_state(cluster)?);
    let (canary, primary) = (after.0 - before.0, after.1 - before.1);
    let canary_share = canary as f64 / (canary + primary) as f64 * 100.0;
    println!(
        "canary share after the 50/50 step: {canary_share:.2}% of {} requests",
        canary + primary
    );
    assert!(
        canary + primary > 1000,
        "too little traffic: {canary} + {primary}"
    );
    assert!(
        (canary_share - 50.0).abs() <= 1.0,
        "canary share {canary_share:.2}%"
    );
    Ok(())
}

/// (d) The guide's manifests apply with kubectl (which validates fields strictly).
#[tokio::test]
async fn kubectl_applies_the_guide_manifests() -> Result<()> {
    let Some(cluster) = world("kubectl_applies_the_guide_manifests") else {
        return Ok(());
    };
    let dir = assets_dir().join("manifests");
    let mut cmd = cluster.kubectl();
    cmd.arg("apply");
    // Namespace before the objects in it.
    for f in [
        "mesh.yaml",
        "namespace.yaml",
        "podinfo-deployment.yaml",
        "podinfo-hpa.yaml",
        "gatewayroute.yaml",
    ] {
        cmd.arg("-f").arg(dir.join(f));
    }
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "kubectl apply failed:\n{stdout}\n{stderr}"
    );
    for expect in [
        "mesh.appmesh.k8s.aws/global",
        "namespace/test",
        "deployment.apps/podinfo",
        "horizontalpodautoscaler.autoscaling/podinfo",
        "gatewayroute.appmesh.k8s.aws/podinfo",
    ] {
        assert!(stdout.contains(expect), "missing {expect} in:\n{stdout}");
    }
    assert!(!stderr.to_lowercase().contains("warning"), "{stderr}");

    let mut rollout = cluster.kubectl();
    rollout.args([
        "-n",
        "test",
        "rollout",
        "status",
        "deployment/podinfo",
        "--timeout=90s",
    ]);
    let out = tokio::task::spawn_blocking(move || rollout.output()).await??;
    assert!(
        out.status.success(),
        "rollout status: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let client = cluster.client().await?;
    let mesh_ar =
        ApiResource::from_gvk(&GroupVersionKind::gvk("appmesh.k8s.aws", "v1beta2", "Mesh"));
    let mesh = Api::<DynamicObject>::all_with(client.clone(), &mesh_ar)
        .get("global")
        .await?;
    assert_eq!(
        mesh.data["spec"]["namespaceSelector"]["matchLabels"]
            ["appmesh.k8s.aws/sidecarInjectorWebhook"],
        "enabled"
    );
    Ok(())
}

/// Service-account tokens are signed and verified (TokenRequest), RBAC denies what is not bound
/// and allows it once bound, and deleting a Deployment garbage-collects its ReplicaSets and Pods.
#[tokio::test]
async fn service_accounts_rbac_and_garbage_collection() -> Result<()> {
    let Some(cluster) = world("service_accounts_rbac_and_garbage_collection") else {
        return Ok(());
    };
    let client = cluster.client().await?;
    let ns = "e2e-rbac";
    create_namespace(&client, ns, &[]).await?;

    let kubectl = |args: Vec<String>, as_admin: bool| {
        let mut cmd = cluster.kubectl();
        if !as_admin {
            // No kubeconfig: only the token below identifies the caller.
            cmd.env("KUBECONFIG", cluster.dir().join("no-such-kubeconfig"));
        }
        cmd.args(args);
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
            anyhow::Ok((
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let (ok, token, err) = kubectl(args(&["create", "token", "default", "-n", ns]), true).await?;
    assert!(ok && token.split('.').count() == 3, "create token: {err}");
    let as_sa = |extra: &[&str]| {
        let mut a = vec![
            format!("--server={}", cluster.api_server()),
            format!(
                "--certificate-authority={}",
                cluster.dir().join("pki/ca.crt").display()
            ),
            format!("--token={token}"),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (ok, user, err) = kubectl(
        as_sa(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ]),
        false,
    )
    .await?;
    assert!(ok, "whoami with the token: {err}");
    assert_eq!(user, format!("system:serviceaccount:{ns}:default"));

    let (ok, _, err) = kubectl(as_sa(&["get", "pods", "-n", ns]), false).await?;
    assert!(!ok && err.contains("forbidden"), "RBAC must deny: {err}");
    let (ok, _, err) = kubectl(
        args(&[
            "create",
            "rolebinding",
            "default-view",
            "--clusterrole=view",
            &format!("--serviceaccount={ns}:default"),
            "-n",
            ns,
        ]),
        true,
    )
    .await?;
    assert!(ok, "create rolebinding: {err}");
    let (ok, _, err) = kubectl(as_sa(&["get", "pods", "-n", ns]), false).await?;
    assert!(ok, "RBAC must allow after binding: {err}");

    // Owner references: deleting the Deployment removes its ReplicaSet and Pods.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    apply(
        &client,
        ns,
        &podinfo_deployment("podinfo", "podinfo", 2),
        &ssa(),
    )
    .await?;
    wait_rolled_out(&deployments, "podinfo", 2).await?;
    deployments.delete("podinfo", &Default::default()).await?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    wait_for("garbage collection", Duration::from_secs(60), || async {
        let sets = rs_api.list(&ListParams::default()).await?.items.len();
        let pods = pods_of(&client, ns, "app=podinfo").await?.len();
        Ok((sets == 0 && pods == 0).then_some(()))
    })
    .await?;
    Ok(())
}

/// A second, concurrent cluster does not collide with the shared one, and dropping it while a
/// panic unwinds kills all of its processes and removes its directory.
#[test]
fn dropping_a_cluster_during_a_panic_cleans_up() {
    if skip_requested("dropping_a_cluster_during_a_panic_cleans_up") {
        return;
    }
    let mut seen: Option<(PathBuf, Vec<u32>, String)> = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = Cluster::start(ClusterOptions {
            nodes: 1,
            appmesh_crds: false,
            ..ClusterOptions::default()
        })
        .expect("starting a second cluster");
        seen = Some((
            cluster.dir().to_path_buf(),
            cluster.pids(),
            cluster.api_server().to_string(),
        ));
        assert!(!processes_mentioning(cluster.dir()).is_empty());
        panic!("deliberate panic with a running cluster");
    }));
    assert!(result.is_err());
    let (dir, pids, server) = seen.expect("cluster started");
    assert_eq!(
        pids.len(),
        5,
        "etcd, apiserver, controller manager, scheduler, kwok"
    );
    assert!(server.starts_with("https://127.0.0.1:"));
    assert!(!dir.exists(), "{} left behind", dir.display());
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "processes {left:?} survived");
}
