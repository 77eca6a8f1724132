//! `fledge operator` against the shared cluster: the real binary as a child process, one per
//! namespace (`--namespace`), with the harness's Prometheus and mesh simulator. The guide's
//! Canary with a 10 s interval and at most three analysis steps; Canaries run concurrently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fledge_e2e::cluster::{assets_dir, create_namespace, install_crds};
use fledge_e2e::http;
use fledge_e2e::Cluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::Client;
use serde_json::{json, Value};

use super::{apply, manifest, ssa, wait_for, world};

mod alerts;
mod crash;
mod crds;
mod flagger_swap;
mod gateway_api;
mod gateway_sim;
mod image;
mod install;
mod journal;
mod loadtester;
mod loadtester_local;
mod migrate_examples;
mod policies;
mod policy_refusals;
mod provider_switch;
mod shadow;
mod telemetry;
mod tracking;

/// The `fledge` executable, built (or found up to date) once per test process.
fn fledge_binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            // The workspace's feature set, as `cargo test --workspace` builds it, so the
            // dependencies are not rebuilt with another one.
            .args([
                "build",
                "--workspace",
                "--bin",
                "fledge",
                "--message-format=json-render-diagnostics",
            ])
            .current_dir(fledge_e2e::cluster::crate_dir().join(".."))
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running cargo build -p fledge: {e}"))?;
        if !out.status.success() {
            return Err(format!("cargo build -p fledge failed ({})", out.status));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "fledge")
            .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
            .next_back()
            .ok_or_else(|| "cargo build -p fledge named no executable".to_string())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running `fledge operator`; killed (and reaped) when dropped.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
    /// Where `/healthz`, `/readyz` and `/metrics` answer.
    pub port: u16,
}

impl Operator {
    pub fn start(cluster: &Cluster, name: &str, args: &[&str]) -> Result<Operator> {
        let bin = fledge_binary()?;
        let prom = cluster
            .prometheus()
            .context("the cluster has no Prometheus")?;
        let port = free_port()?;
        let log = cluster
            .dir()
            .join("logs")
            .join(format!("fledge-{name}.log"));
        let out = std::fs::File::create(&log)?;
        // A test's own `--metrics-server` (one that cannot answer) wins.
        let own_server = args.iter().any(|a| a.starts_with("--metrics-server"));
        let child = Command::new(bin)
            .arg("operator")
            .arg(format!("--kubeconfig={}", cluster.kubeconfig().display()))
            .args((!own_server).then(|| format!("--metrics-server=http://{prom}")))
            .arg(format!("--listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting fledge operator")?;
        Ok(Operator { child, log, port })
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `within` for the exit; the exit status and how long
    /// it took. Still running after `within` is an error (and the process is killed).
    pub async fn terminate(
        &mut self,
        within: Duration,
    ) -> Result<(std::process::ExitStatus, Duration)> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        let sent = Instant::now();
        // SAFETY: signalling our own child, which has not been reaped (wait is below).
        ensure!(
            unsafe { libc::kill(pid, libc::SIGTERM) } == 0,
            "kill -TERM {pid}"
        );
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, sent.elapsed()));
            }
            if sent.elapsed() > within {
                self.kill();
                anyhow::bail!("fledge operator still running {within:?} after SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `fledge loadtester` on loopback; killed (and reaped) when dropped.
pub struct Loadtester {
    child: Child,
    pub log: PathBuf,
    pub addr: std::net::SocketAddr,
}

impl Loadtester {
    /// Starts it with `args` and waits until `/healthz` answers.
    pub async fn start(cluster: &Cluster, name: &str, args: &[&str]) -> Result<Loadtester> {
        let port = free_port()?;
        let log = cluster
            .dir()
            .join("logs")
            .join(format!("fledge-loadtester-{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(fledge_binary()?)
            .args(["loadtester", "--bind=127.0.0.1", "--log-format=text"])
            .arg(format!("--port={port}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting fledge loadtester")?;
        let lt = Loadtester {
            child,
            log,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let addr = lt.addr;
        wait_for(
            "fledge loadtester /healthz",
            Duration::from_secs(20),
            || async move { Ok(http::get(addr, "/healthz").ok().filter(|r| r.status == 200)) },
        )
        .await
        .with_context(|| format!("loadtester log:\n{}", lt.logs()))?;
        Ok(lt)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Loadtester {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs the CRDs `fledge crds` prints and waits until Canaries are served.
async fn install_fledge_crds(cluster: &Cluster, client: &Client) -> Result<()> {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    let dir = cluster.dir().join("fledge-crds");
    let out = Command::new(fledge_binary()?)
        .args(["crds", "--dir"])
        .arg(&dir)
        .output()?;
    ensure!(
        out.status.success(),
        "fledge crds: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    install_crds(client, &dir).await?;
    let canaries: Api<DynamicObject> = Api::all_with(client.clone(), &canary_resource());
    let policies: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("policies.fledge.dev", "v1alpha1", "RolloutPolicy"),
            "rolloutpolicies",
        ),
    );
    wait_for(
        "the Canary and RolloutPolicy CRDs to be served",
        Duration::from_secs(30),
        || async {
            let served = canaries.list(&ListParams::default().limit(1)).await.is_ok()
                && policies.list(&ListParams::default().limit(1)).await.is_ok();
            Ok(served.then_some(()))
        },
    )
    .await?;
    let _ = DONE.set(());
    Ok(())
}

fn canary_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary"),
        "canaries",
    )
}

fn appmesh(kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_ascii_lowercase());
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("appmesh.k8s.aws", "v1beta2", kind),
        &plural,
    )
}

/// Records what webhooks receive; answers 200.
#[derive(Clone, Default)]
pub struct Receiver {
    pub calls: Arc<Mutex<Vec<http::Request>>>,
    pub addr: Option<std::net::SocketAddr>,
}

impl Receiver {
    pub async fn start() -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let calls: Arc<Mutex<Vec<http::Request>>> = Arc::default();
        let seen = calls.clone();
        tokio::spawn(http::serve(listener, move |req| {
            seen.lock().unwrap().push(req);
            (200, "text/plain", "ok".to_string())
        }));
        Ok(Receiver {
            calls,
            addr: Some(addr),
        })
    }
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.expect("started"))
    }
}

/// The guide's Canary, at the 10 s minimum interval with two weight steps' worth of analysis
/// (50 %, then promotion) and its webhooks pointed at `hooks`.
pub fn test_canary(ns: &str, hooks: &Receiver) -> Value {
    let mut c: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(assets_dir().join("../../examples/podinfo/canary.yaml")).unwrap(),
    )
    .unwrap();
    c["metadata"]["namespace"] = json!(ns);
    let a = &mut c["spec"]["analysis"];
    a["interval"] = json!("10s");
    a["threshold"] = json!(1);
    a["stepWeight"] = json!(50);
    a["maxWeight"] = json!(50);
    a["metrics"][0]["interval"] = json!("30s");
    a["metrics"][1]["interval"] = json!("30s");
    a["webhooks"][0]["url"] = json!(hooks.url("/acceptance"));
    a["webhooks"][1]["url"] = json!(hooks.url("/load"));
    c
}

/// The Events Fledge published about Canary `name` in `ns`, in the API server's order.
async fn fledge_events(client: &Client, ns: &str, name: &str) -> Result<Vec<Event>> {
    Ok(Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.reporting_controller.as_deref() == Some("fledge")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Canary")
        })
        .collect())
}

/// The Event notes about Canary `name` from Fledge, in the order they were emitted, with the
/// time of each. A repeat that the recorder folded into an Event's series is listed again at
/// the series' last observation (a series of more than two shows its first and last).
async fn events(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Vec<(k8s_openapi::jiff::Timestamp, String)>> {
    let mut out: Vec<_> = fledge_events(client, ns, name)
        .await?
        .into_iter()
        .flat_map(|e| {
            let note = e.note.unwrap_or_default();
            let first = e.event_time.map(|t| (t.0, note.clone()));
            let last = e.series.map(|s| (s.last_observed_time.0, note));
            first.into_iter().chain(last)
        })
        .collect();
    out.sort_by_key(|(t, _)| *t);
    Ok(out)
}

/// Waits-for-readiness lines depend on how fast pods come up; they are left out of
/// comparisons, as are repeats (the Events API folds them into one Event's series).
fn comparable(lines: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in lines {
        if l.contains("rollout to finish") || out.last() == Some(&l) {
            continue;
        }
        out.push(l);
    }
    out
}

/// `fledge simulate --format events` for the same Canary and world.
fn simulated(dir: &Path, canary: &Value, scenario: &str) -> Result<Vec<String>> {
    let canary_file = dir.join("canary.yaml");
    std::fs::write(&canary_file, serde_saphyr::to_string(canary)?)?;
    let scenario_file = dir.join("scenario.yaml");
    std::fs::write(&scenario_file, scenario)?;
    let out = Command::new(fledge_binary()?)
        .arg("simulate")
        .arg("--canary")
        .arg(&canary_file)
        .arg("--scenario")
        .arg(&scenario_file)
        .args(["--format", "events"])
        .output()?;
    ensure!(
        out.status.code().is_some_and(|c| c == 0 || c == 2),
        "fledge simulate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(comparable(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string),
    ))
}

async fn canary_status(client: &Client, ns: &str) -> Result<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &canary_resource());
    Ok(api.get("podinfo").await?.data["status"].clone())
}

/// Waits until the Canary's status shows `phase` from a step that is finished (its actions
/// carried out and its Events published: no `pendingStep` left).
async fn wait_phase(client: &Client, ns: &str, phase: &str, timeout: Duration) -> Result<Value> {
    wait_for(
        &format!("Canary {ns}/podinfo to reach {phase}"),
        timeout,
        || async {
            let s = canary_status(client, ns).await?;
            Ok((s["phase"] == phase && s["pendingStep"].is_null()).then_some(s))
        },
    )
    .await
}

fn spec_of(obj: &DynamicObject) -> Value {
    obj.data["spec"].clone()
}

async fn mesh_object(client: &Client, ns: &str, kind: &str, name: &str) -> Result<DynamicObject> {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &appmesh(kind))
        .get(name)
        .await
        .with_context(|| format!("reading {kind} {ns}/{name}"))
}

/// The live split of the apex router: (canary, primary).
async fn live_weights(client: &Client, ns: &str) -> Result<(u64, u64)> {
    let vr = mesh_object(client, ns, "VirtualRouter", "podinfo").await?;
    let t = &vr.data["spec"]["routes"][0]["httpRoute"]["action"]["weightedTargets"];
    Ok((
        t[0]["weight"].as_u64().unwrap_or(999),
        t[1]["weight"].as_u64().unwrap_or(999),
    ))
}

/// Every generated object, read back and compared with what the guide's Canary implies.
async fn check_bootstrap(client: &Client, ns: &str, uid: &str) -> Result<()> {
    let owner = json!([{"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
                        "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let primary = serde_json::to_value(deployments.get("podinfo-primary").await?)?;
    let target = serde_json::to_value(deployments.get("podinfo").await?)?;
    assert_eq!(primary["metadata"]["ownerReferences"], owner);
    assert_eq!(
        primary["metadata"]["labels"],
        json!({"app": "podinfo-primary"})
    );
    assert_eq!(
        primary["spec"]["selector"],
        json!({"matchLabels": {"app": "podinfo-primary"}})
    );
    assert_eq!(
        primary["spec"]["template"]["metadata"]["labels"],
        json!({"app": "podinfo-primary"})
    );
    let ann = &primary["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert!(
        ann["flagger-id"].as_str().is_some_and(|id| id.len() == 36),
        "flagger-id {ann}"
    );
    assert_eq!(
        primary["spec"]["template"]["spec"],
        target["spec"]["template"]["spec"]
    );
    for f in [
        "minReadySeconds",
        "progressDeadlineSeconds",
        "revisionHistoryLimit",
        "strategy",
    ] {
        assert_eq!(primary["spec"][f], target["spec"][f], "primary {f}");
    }
    assert_eq!(primary["spec"]["replicas"], 2);
    assert_eq!(
        target["spec"]["replicas"], 0,
        "the target is scaled to zero"
    );

    // The guide's autoscalerRef says autoscaling/v2beta2; the copy is read through v2.
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let hpa = serde_json::to_value(hpas.get("podinfo-primary").await?)?;
    let source = serde_json::to_value(hpas.get("podinfo").await?)?;
    assert_eq!(hpa["metadata"]["ownerReferences"], owner);
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo-primary"})
    );
    for f in ["minReplicas", "maxReplicas", "metrics"] {
        assert_eq!(hpa["spec"][f], source["spec"][f], "primary HPA {f}");
    }

    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    for (name, selects) in [
        ("podinfo", "podinfo-primary"),
        ("podinfo-canary", "podinfo"),
        ("podinfo-primary", "podinfo-primary"),
    ] {
        let s = serde_json::to_value(services.get(name).await?)?;
        assert_eq!(s["metadata"]["ownerReferences"], owner, "Service {name}");
        assert_eq!(
            s["metadata"]["labels"],
            json!({"app": name}),
            "Service {name}"
        );
        assert_eq!(
            s["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/reconcile"],
            "disabled"
        );
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(
            s["spec"]["selector"],
            json!({"app": selects}),
            "Service {name}"
        );
        assert_eq!(
            s["spec"]["ports"],
            json!([{"name": "http", "port": 9898, "protocol": "TCP", "targetPort": 9898}]),
            "Service {name}"
        );
    }

    let timeout = json!({"unit": "ms", "value": 15000});
    for (name, selects) in [
        ("podinfo-primary", "podinfo-primary"),
        ("podinfo-canary", "podinfo"),
    ] {
        let vn = mesh_object(client, ns, "VirtualNode", name).await?;
        assert_eq!(serde_json::to_value(&vn.metadata.owner_references)?, owner);
        assert_eq!(
            spec_of(&vn),
            json!({
                "podSelector": {"matchLabels": {"app": selects}},
                "listeners": [{"portMapping": {"port": 9898, "protocol": "http"},
                               "timeout": {"http": {"perRequest": timeout}}}],
                "serviceDiscovery": {"dns": {"hostname": format!("{name}.{ns}.svc.cluster.local.")}}
            }),
            "VirtualNode {name}"
        );
    }
    let route = |name: &str, canary: u32, primary: u32| {
        json!({"name": name, "httpRoute": {
            "match": {"prefix": "/"},
            "timeout": {"perRequest": timeout},
            "retryPolicy": {"maxRetries": 3, "perRetryTimeout": {"unit": "ms", "value": 5000},
                            "httpRetryEvents": ["gateway-error", "client-error", "stream-error"]},
            "action": {"weightedTargets": [
                {"virtualNodeRef": {"name": "podinfo-canary"}, "weight": canary},
                {"virtualNodeRef": {"name": "podinfo-primary"}, "weight": primary}
            ]}
        }})
    };
    for (name, canary, primary) in [("podinfo", 0, 100), ("podinfo-canary", 100, 0)] {
        let vr = mesh_object(client, ns, "VirtualRouter", name).await?;
        assert_eq!(serde_json::to_value(&vr.metadata.owner_references)?, owner);
        assert_eq!(
            spec_of(&vr),
            json!({"listeners": [{"portMapping": {"port": 9898, "protocol": "http"}}],
                   "routes": [route(name, canary, primary)]}),
            "VirtualRouter {name}"
        );
        let vs = mesh_object(client, ns, "VirtualService", name).await?;
        assert_eq!(serde_json::to_value(&vs.metadata.owner_references)?, owner);
        assert_eq!(
            spec_of(&vs),
            json!({"provider": {"virtualRouter": {"virtualRouterRef": {"name": name}}}})
        );
    }
    assert_eq!(
        live_weights(client, ns).await?,
        (0, 100),
        "traffic 100 % primary"
    );
    Ok(())
}

/// Deploys the guide's podinfo and HPA into `ns`, starts an operator for it, applies the
/// test Canary and waits for Initialized; returns the operator, Canary and webhook receiver.
async fn bootstrap(
    cluster: &'static Cluster,
    client: &Client,
    ns: &str,
) -> Result<(Operator, Value, Receiver)> {
    bootstrap_with(cluster, client, ns, &|c| c, true).await
}

/// [`bootstrap`] of `edit(test_canary)`; `check` compares every generated object with the
/// guide's (weighted canary) shapes.
async fn bootstrap_with(
    cluster: &'static Cluster,
    client: &Client,
    ns: &str,
    edit: &(dyn Fn(Value) -> Value + Sync),
    check: bool,
) -> Result<(Operator, Value, Receiver)> {
    bootstrap_target(cluster, client, ns, &[], &|d| d, edit, check).await
}

/// [`bootstrap_with`] where `objects` (ConfigMaps, Secrets) are applied first and the guide's
/// Deployment is applied as `target(deployment)`.
async fn bootstrap_target(
    cluster: &'static Cluster,
    client: &Client,
    ns: &str,
    objects: &[Value],
    target: &(dyn Fn(Value) -> Value + Sync),
    edit: &(dyn Fn(Value) -> Value + Sync),
    check: bool,
) -> Result<(Operator, Value, Receiver)> {
    create_namespace(
        client,
        ns,
        &[("appmesh.k8s.aws/sidecarInjectorWebhook", "enabled")],
    )
    .await?;
    for obj in objects {
        apply(client, ns, obj, &ssa()).await?;
    }
    for doc in manifest("manifests/podinfo-deployment.yaml") {
        apply(client, ns, &target(doc), &ssa()).await?;
    }
    for doc in manifest("manifests/podinfo-hpa.yaml") {
        apply(client, ns, &doc, &ssa()).await?;
    }
    let hooks = Receiver::start().await?;
    let operator = Operator::start(
        cluster,
        ns,
        &[&format!("--namespace={ns}"), "--log-level=info"],
    )?;
    let canary = edit(test_canary(ns, &hooks));
    let started = Instant::now();
    let stored = apply(client, ns, &canary, &ssa()).await?;
    let status = wait_phase(client, ns, "Initialized", Duration::from_secs(90))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    println!(
        "{ns}: Initialized {:.1}s after the Canary was applied",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(status["canaryWeight"], 0);
    let promoted = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Promoted"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (promoted["status"].as_str(), promoted["reason"].as_str()),
        (Some("True"), Some("Initialized"))
    );
    let uid = stored.metadata.uid.clone().unwrap_or_default();
    if check {
        check_bootstrap(client, ns, &uid).await?;
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], operator.port));
    let ready = http::get(addr, "/readyz")?;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ok"), "/readyz");
    assert_eq!(http::get(addr, "/healthz")?.status, 200, "/healthz");
    let metrics = http::get(addr, "/metrics")?.body;
    assert!(
        metrics.contains("fledge_info{") && metrics.contains("fledge_analysis_steps_total "),
        "{metrics}"
    );
    Ok((operator, canary, hooks))
}

async fn set_image(client: &Client, ns: &str, image: &str) -> Result<k8s_openapi::jiff::Timestamp> {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "podinfod", "image": image}]}}}});
    let at = k8s_openapi::jiff::Timestamp::now();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await?;
    Ok(at)
}

async fn image_of(client: &Client, ns: &str, name: &str) -> Result<String> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    Ok(d.spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
        .unwrap_or_default())
}

async fn replicas_of(client: &Client, ns: &str, name: &str) -> Result<i32> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    Ok(d.spec.and_then(|s| s.replicas).unwrap_or(-1))
}

/// The events after `since`, as comparable lines.
async fn events_since(
    client: &Client,
    ns: &str,
    since: k8s_openapi::jiff::Timestamp,
) -> Result<Vec<String>> {
    Ok(comparable(
        events(client, ns, "podinfo")
            .await?
            .into_iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, m)| m),
    ))
}

/// The events after `since` once they match `expected` (a step's Events are published right
/// after its status is written), or whatever is there after a few seconds.
async fn settled_events(
    client: &Client,
    ns: &str,
    since: k8s_openapi::jiff::Timestamp,
    expected: &[String],
) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = events_since(client, ns, since).await?;
        if got.len() >= expected.len() || Instant::now() > deadline {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const PROMOTE: &str = "trigger:\n  image: ghcr.io/stefanprodan/podinfo:6.0.1\nrollout:\n  canaryReadyAfter: 0\n  primaryReadyAfter: 0\n";
const ROLLBACK: &str = "trigger:\n  image: ghcr.io/stefanprodan/podinfo:6.0.2\nrollout:\n  canaryReadyAfter: 0\n  primaryReadyAfter: 0\nmetrics:\n  request-success-rate: 50\n";

async fn promotion(cluster: &'static Cluster, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let (operator, canary, hooks) = bootstrap(cluster, &client, ns).await?;
    let expected = simulated(
        &cluster.dir().join("logs").join(ns).tap_mkdir()?,
        &canary,
        PROMOTE,
    )?;

    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    let detected = wait_for(
        "New revision detected!",
        Duration::from_secs(30),
        || async {
            Ok(events(&client, ns, "podinfo")
                .await?
                .into_iter()
                .find(|(t, m)| *t >= triggered && m.starts_with("New revision detected!"))
                .map(|(t, _)| t))
        },
    )
    .await?;
    println!(
        "{ns}: set image -> `New revision detected!` in {:.0} ms",
        detected.duration_since(triggered).as_secs_f64() * 1000.0
    );
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(150))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let got = settled_events(&client, ns, triggered, &expected).await?;
    assert_eq!(
        got, expected,
        "Events differ from `fledge simulate --format events`"
    );
    assert!(
        got.contains(&format!("Advance podinfo.{ns} canary weight 50")),
        "{got:#?}"
    );
    assert!(
        got.last()
            .is_some_and(|l| l.starts_with("Promotion completed!")),
        "{got:#?}"
    );
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    assert_eq!(replicas_of(&client, ns, "podinfo").await?, 0, "canary at 0");
    assert_eq!(
        live_weights(&client, ns).await?,
        (0, 100),
        "routes back to 100/0"
    );
    // The webhooks got Flagger's payload.
    let calls = hooks.calls.lock().unwrap().clone();
    let pre = calls
        .iter()
        .find(|c| c.path == "/acceptance")
        .context("the pre-rollout hook was not called")?;
    let body: Value = serde_json::from_str(&pre.body)?;
    assert_eq!(
        (
            body["name"].as_str(),
            body["namespace"].as_str(),
            body["phase"].as_str()
        ),
        (Some("podinfo"), Some(ns), Some("Progressing"))
    );
    assert_eq!(body["metadata"]["type"], "bash");
    assert!(body["checksum"].as_str().is_some_and(|c| !c.is_empty()));
    Ok(())
}

async fn rollback(cluster: &'static Cluster, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let (operator, canary, _hooks) = bootstrap(cluster, &client, ns).await?;
    let expected = simulated(
        &cluster.dir().join("logs").join(ns).tap_mkdir()?,
        &canary,
        ROLLBACK,
    )?;
    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.2").await?;
    wait_phase(&client, ns, "Failed", Duration::from_secs(150))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    // Prometheus extrapolates rates at the window's edges, and new pods start at zero: 50 %
    // errors read as 50-53 %.
    let rate = regex::Regex::new(r"success rate (\d+\.\d+)% <")?;
    let measured: Vec<f64> = events_since(&client, ns, triggered)
        .await?
        .iter()
        .filter_map(|l| rate.captures(l).and_then(|c| c[1].parse().ok()))
        .collect();
    assert!(
        measured.len() == 1 && (measured[0] - 50.0).abs() < 10.0,
        "success rates in the Events: {measured:?}"
    );
    let expected = about_half(expected);
    let got = about_half(settled_events(&client, ns, triggered, &expected).await?);
    assert_eq!(
        got, expected,
        "Events differ from `fledge simulate --format events`"
    );
    assert!(
        got.contains(&format!(
            "Halt podinfo.{ns} advancement success rate ~50% < 99%"
        )),
        "{got:#?}"
    );
    assert_eq!(
        live_weights(&client, ns).await?,
        (0, 100),
        "routes back to 100/0"
    );
    assert_eq!(replicas_of(&client, ns, "podinfo").await?, 0, "canary at 0");
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.0"
    );
    Ok(())
}

/// Events with a measured success rate of the rollback's 50 % errors written as `~50%`:
/// Prometheus extrapolates rates at the window's edges, so they read 50-53 %.
fn about_half(lines: Vec<String>) -> Vec<String> {
    let rate = regex::Regex::new(r"success rate (\d+\.\d+)% <").expect("a valid regex");
    lines
        .into_iter()
        .map(|l| rate.replace(&l, "success rate ~50% <").to_string())
        .collect()
}

trait MkDir {
    fn tap_mkdir(self) -> Result<PathBuf>;
}
impl MkDir for PathBuf {
    fn tap_mkdir(self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self)?;
        Ok(self)
    }
}

/// The guide's A/B test by header (two iterations): while it runs, the canary receives exactly
/// the requests with `x-canary: insider` (a tenth of the apex router's traffic), then it is
/// promoted.
async fn ab_testing(cluster: &'static Cluster, ns: &str) -> Result<()> {
    let client = cluster.client().await?;
    let edit = |mut c: Value| {
        let a = c["spec"]["analysis"].as_object_mut().expect("analysis");
        a.remove("stepWeight");
        a.remove("maxWeight");
        a.insert("iterations".into(), json!(2));
        a.insert(
            "match".into(),
            json!([{"headers": {"x-canary": {"exact": "insider"}}}]),
        );
        c
    };
    let (operator, _canary, _hooks) = bootstrap_with(cluster, &client, ns, &edit, false).await?;
    let vr = mesh_object(&client, ns, "VirtualRouter", "podinfo").await?;
    let routes = &vr.data["spec"]["routes"];
    assert_eq!(
        (
            routes[0]["name"].as_str(),
            routes[0]["priority"].as_i64(),
            routes[1]["name"].as_str(),
            routes[1]["priority"].as_i64()
        ),
        (Some("podinfo-a"), Some(10), Some("podinfo-b"), Some(20))
    );
    assert_eq!(
        routes[0]["httpRoute"]["match"]["headers"],
        json!([{"name": "x-canary", "match": {"exact": "insider"}}])
    );
    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    let iteration = format!("Advance podinfo.{ns} canary iteration 1/2");
    wait_for(
        "the first A/B iteration",
        Duration::from_secs(60),
        || async {
            Ok(events_since(&client, ns, triggered)
                .await?
                .contains(&iteration)
                .then_some(()))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let canary_key = format!("{ns}/podinfo-canary");
    let primary_key = format!("{ns}/podinfo-primary");
    let totals = || -> Result<(u64, u64)> {
        let st = super::sim_state(cluster)?;
        let get = |k: &str| st.totals.get(k).map(|t| t.requests).unwrap_or(0);
        Ok((get(&canary_key), get(&primary_key)))
    };
    // Routes -a then sends insiders to the canary; give the simulator a refresh to see it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = totals()?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = totals()?;
    let (canary, primary) = (after.0 - before.0, after.1 - before.1);
    let share = canary as f64 / (canary + primary).max(1) as f64 * 100.0;
    println!(
        "{ns}: canary share during the A/B iterations {share:.1}% of {} requests",
        canary + primary
    );
    assert!(
        canary + primary > 100,
        "too little traffic: {canary} + {primary}"
    );
    assert!(
        (share - 10.0).abs() <= 3.0,
        "only the insiders (10 %) may reach the canary: {share:.1}%"
    );
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(150))
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert_eq!(
        image_of(&client, ns, "podinfo-primary").await?,
        "ghcr.io/stefanprodan/podinfo:6.0.1"
    );
    Ok(())
}

/// Deleting a Canary: without `revertOnDeletion` the garbage collector removes every generated
/// object and the target stays at zero; with it, the target gets its replicas back first.
async fn deletion(cluster: &'static Cluster, ns: &str, revert: bool) -> Result<()> {
    let client = cluster.client().await?;
    let edit = move |mut c: Value| {
        if revert {
            c["spec"]["revertOnDeletion"] = json!(true);
        }
        c
    };
    let (operator, _canary, _hooks) = bootstrap_with(cluster, &client, ns, &edit, false).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &canary_resource());
    if revert {
        let c = api.get("podinfo").await?;
        assert_eq!(
            c.metadata.finalizers,
            Some(vec!["finalizer.flagger.app".to_string()])
        );
    }
    api.delete("podinfo", &Default::default()).await?;
    wait_for("the Canary to go", Duration::from_secs(60), || async {
        Ok(api.get_opt("podinfo").await?.is_none().then_some(()))
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    wait_for(
        "the garbage collector to remove the generated objects",
        Duration::from_secs(60),
        || async {
            let mut left = 0;
            left += usize::from(deployments.get_opt("podinfo-primary").await?.is_some());
            left += services.list(&ListParams::default()).await?.items.len();
            for kind in ["VirtualNode", "VirtualRouter", "VirtualService"] {
                left += Api::<DynamicObject>::namespaced_with(client.clone(), ns, &appmesh(kind))
                    .list(&ListParams::default())
                    .await?
                    .items
                    .len();
            }
            Ok((left == 0).then_some(()))
        },
    )
    .await?;
    let replicas = replicas_of(&client, ns, "podinfo").await?;
    if revert {
        assert_eq!(
            replicas, 2,
            "revertOnDeletion gives the target the primary's replicas"
        );
        let notes: Vec<String> = events(&client, ns, "podinfo")
            .await?
            .into_iter()
            .map(|e| e.1)
            .collect();
        for m in [
            format!("Terminating canary podinfo.{ns}"),
            format!("Terminated canary podinfo.{ns}"),
        ] {
            assert!(notes.contains(&m), "{m} missing from {notes:#?}");
        }
    } else {
        assert_eq!(
            replicas, 0,
            "without revertOnDeletion the target stays at zero"
        );
    }
    Ok(())
}

/// Bootstrap, promotion, rollback, A/B testing and deletion of the guide's Canaries,
/// concurrently in namespaces of the shared cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_bootstraps_promotes_and_rolls_back() -> Result<()> {
    let Some(cluster) = world("operator_bootstraps_promotes_and_rolls_back") else {
        return Ok(());
    };
    let started = Instant::now();
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    // The simulator's traffic, set once before anything runs: half the rollback canary's
    // requests fail; the A/B apex router gets one insider in ten requests, and nothing goes
    // into its `-canary` router, so only header-matched requests can reach the canary.
    super::configure_sim(cluster, |config| {
        config.backends.insert(
            "op-rollback/podinfo-canary".into(),
            fledge_e2e::mesh::Behaviour {
                error_ratio: 0.5,
                ..Default::default()
            },
        );
        let plain = fledge_e2e::mesh::RequestClass {
            weight: 9.0,
            ..Default::default()
        };
        let insider = fledge_e2e::mesh::RequestClass {
            weight: 1.0,
            headers: [("x-canary".to_string(), "insider".to_string())].into(),
            ..Default::default()
        };
        config.routers.insert(
            "op-ab/podinfo".into(),
            fledge_e2e::mesh::RouterTraffic {
                rps: 100.0,
                requests: Some(vec![plain, insider]),
            },
        );
        config.routers.insert(
            "op-ab/podinfo-canary".into(),
            fledge_e2e::mesh::RouterTraffic {
                rps: 0.0,
                requests: None,
            },
        );
        Ok(())
    })?;

    let (p, r, ab, gc, revert) = tokio::join!(
        promotion(cluster, "op-promote"),
        rollback(cluster, "op-rollback"),
        ab_testing(cluster, "op-ab"),
        deletion(cluster, "op-delete", false),
        deletion(cluster, "op-revert", true),
    );
    p.context("promotion")?;
    r.context("rollback")?;
    ab.context("A/B testing")?;
    gc.context("deletion")?;
    revert.context("deletion with revertOnDeletion")?;
    println!(
        "operator scenarios: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The `Valid` condition of Canary `name`: (status, message).
async fn valid_condition(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<(String, String)>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &canary_resource());
    let c = api.get(name).await?;
    Ok(c.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Valid"))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        }))
}

/// Invalid Canaries get a `Valid=False` condition and a Warning Event naming the field and the
/// fix, from the validator the simulator uses; nothing is created; a corrected spec proceeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_rejects_invalid_canaries() -> Result<()> {
    let Some(cluster) = world("operator_rejects_invalid_canaries") else {
        return Ok(());
    };
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    let ns = "op-invalid";
    create_namespace(&client, ns, &[]).await?;
    for file in [
        "manifests/podinfo-deployment.yaml",
        "manifests/podinfo-hpa.yaml",
    ] {
        for doc in manifest(file) {
            apply(&client, ns, &doc, &ssa()).await?;
        }
    }
    let hooks = Receiver::start().await?;
    let operator = Operator::start(cluster, ns, &[&format!("--namespace={ns}")])?;
    let good = test_canary(ns, &hooks);
    let variant = |name: &str, edit: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        c["metadata"]["name"] = json!(name);
        edit(&mut c);
        c
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            variant("max-weight", &|c| {
                c["spec"]["analysis"]["maxWeight"] = json!(150)
            }),
            "spec.analysis.maxWeight",
        ),
        (
            variant("no-target", &|c| {
                c["spec"]["targetRef"]["name"] = json!("nowhere")
            }),
            "spec.targetRef.name",
        ),
        (
            variant("provider", &|c| c["spec"]["provider"] = json!("traefik")),
            "spec.provider",
        ),
        (
            variant("bad-regex", &|c| {
                c["spec"]["analysis"]["iterations"] = json!(2);
                c["spec"]["analysis"].as_object_mut().map(|a| {
                    a.remove("stepWeight");
                    a.remove("maxWeight")
                });
                c["spec"]["analysis"]["match"] =
                    json!([{"headers": {"x-canary": {"regex": "(unclosed"}}}]);
            }),
            "spec.analysis.match[0].headers",
        ),
    ];
    for (c, _) in &cases {
        apply(&client, ns, c, &ssa()).await?;
    }
    for (c, field) in &cases {
        let name = c["metadata"]["name"].as_str().unwrap_or_default();
        let (status, message) = wait_for(
            &format!("Canary {name} to be marked invalid"),
            Duration::from_secs(30),
            || async { valid_condition(&client, ns, name).await },
        )
        .await
        .with_context(|| format!("operator log:\n{}", operator.logs()))?;
        assert_eq!(status, "False", "{name}: {message}");
        assert!(
            message.contains(field),
            "{name}: the condition should name {field}: {message}"
        );
        let warned = wait_for(
            &format!("a Warning Event for {name}"),
            Duration::from_secs(10),
            || async {
                Ok(events(&client, ns, name)
                    .await?
                    .into_iter()
                    .find(|(_, m)| m.contains(field)))
            },
        )
        .await?;
        assert!(
            warned.1.contains(';'),
            "the Event says the fix too: {}",
            warned.1
        );
    }
    // Nothing was created for any of them.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let names: Vec<String> = deployments
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect();
    assert_eq!(names, ["podinfo"]);
    assert!(Api::<Service>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .is_empty());
    for kind in ["VirtualNode", "VirtualRouter", "VirtualService"] {
        let objs = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &appmesh(kind))
            .list(&ListParams::default())
            .await?;
        assert!(objs.items.is_empty(), "{kind}s were created");
    }
    assert_eq!(
        replicas_of(&client, ns, "podinfo").await?,
        2,
        "the target is untouched"
    );

    // Correcting the spec lets it proceed.
    let mut fixed = good.clone();
    fixed["metadata"]["name"] = json!("max-weight");
    apply(&client, ns, &fixed, &ssa()).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &canary_resource());
    wait_for(
        "the corrected Canary to initialize",
        Duration::from_secs(60),
        || async {
            let c = api.get("max-weight").await?;
            Ok((c.data["status"]["phase"] == "Initialized").then_some(()))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", operator.logs()))?;
    assert_eq!(
        valid_condition(&client, ns, "max-weight")
            .await?
            .map(|c| c.0)
            .as_deref(),
        Some("True")
    );
    Ok(())
}

/// The holder of the leader election Lease in `ns`.
async fn lease_holder(client: &Client, ns: &str) -> Result<Option<String>> {
    let api: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), ns);
    Ok(api
        .get_opt("fledge-leader-election")
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity))
}

/// Two replicas with leader election: one leads, the other waits; `kill -9` of the leader in
/// the middle of an analysis hands the Lease over within 15 s, and the run ends as
/// `fledge simulate` says, every step once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_leader_failover() -> Result<()> {
    let Some(cluster) = world("operator_leader_failover") else {
        return Ok(());
    };
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    let ns = "op-leader";
    create_namespace(&client, ns, &[]).await?;
    for file in [
        "manifests/podinfo-deployment.yaml",
        "manifests/podinfo-hpa.yaml",
    ] {
        for doc in manifest(file) {
            apply(&client, ns, &doc, &ssa()).await?;
        }
    }
    let args = [
        format!("--namespace={ns}"),
        "--leader-election".to_string(),
        format!("--leader-election-namespace={ns}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = Operator::start(cluster, "op-leader-a", &args)?;
    let leader = wait_for("a leader", Duration::from_secs(30), || async {
        lease_holder(&client, ns).await
    })
    .await
    .with_context(|| format!("operator log:\n{}", first.logs()))?;
    let second = Operator::start(cluster, "op-leader-b", &args)?;
    let hooks = Receiver::start().await?;
    let canary = test_canary(ns, &hooks);
    apply(&client, ns, &canary, &ssa()).await?;
    wait_phase(&client, ns, "Initialized", Duration::from_secs(90))
        .await
        .with_context(|| format!("operator log:\n{}", first.logs()))?;
    assert_eq!(
        lease_holder(&client, ns).await?.as_deref(),
        Some(leader.as_str()),
        "the first replica still leads"
    );
    assert!(
        !second.logs().contains("\"msg\":\"leading\""),
        "the second replica must wait:\n{}",
        second.logs()
    );

    let expected = simulated(
        &cluster.dir().join("logs").join(ns).tap_mkdir()?,
        &canary,
        PROMOTE,
    )?;
    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    let advanced = format!("Advance podinfo.{ns} canary weight 50");
    wait_for("the first weight step", Duration::from_secs(60), || async {
        Ok(events_since(&client, ns, triggered)
            .await?
            .contains(&advanced)
            .then_some(()))
    })
    .await
    .with_context(|| format!("operator log:\n{}", first.logs()))?;
    first.kill();
    let killed = Instant::now();
    let next = wait_for(
        "the standby to take the Lease",
        Duration::from_secs(30),
        || async { Ok(lease_holder(&client, ns).await?.filter(|h| *h != leader)) },
    )
    .await?;
    let failover = killed.elapsed();
    println!(
        "{ns}: Lease moved from {leader} to {next} {:.1}s after kill -9",
        failover.as_secs_f64()
    );
    assert!(
        failover < Duration::from_secs(15),
        "failover took {failover:?}"
    );
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(120))
        .await
        .with_context(|| format!("second operator log:\n{}", second.logs()))?;
    let got = settled_events(&client, ns, triggered, &expected).await?;
    assert_eq!(
        got, expected,
        "Events differ from `fledge simulate --format events`"
    );
    Ok(())
}
