//! A real, local, container-free Kubernetes control plane for tests.
//!
//! [`Cluster::start`] runs etcd, kube-apiserver (TLS, RBAC, service-account signing, the default
//! admission chain), kube-controller-manager, kube-scheduler and kwok (which plays the kubelets of
//! a few fake nodes) as child processes on free loopback ports, each cluster in its own directory
//! and its own process group. Optionally it also runs Prometheus scraping the mesh traffic
//! simulator (`mesh-sim`). Dropping the [`Cluster`] kills the process group and removes the
//! directory, also while a test unwinds from a panic. `tests/cluster/up` and `down` use the same
//! code through the `fledge-cluster` binary ([`Cluster::detach`] and [`stop_detached`]).

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde::{Deserialize, Serialize};

use crate::pki;

/// Field manager used for everything the harness applies.
pub const FIELD_MANAGER: &str = "fledge-e2e";

/// Set to `1` to skip every test that needs the cluster (the skip is announced on stderr).
pub const SKIP_ENV: &str = "FLEDGE_SKIP_CLUSTER";

/// Like `eprintln!`, but straight to the process' stderr, so the message shows even when the
/// test harness captures test output (skips and automatic builds must never be silent).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

const VERSIONS_ENV: &str = include_str!("../cluster/versions.env");

/// The pinned component versions from `tests/cluster/versions.env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    pub kubernetes: String,
    pub etcd: String,
    pub kwok: String,
    pub gateway_api: String,
}

impl Versions {
    pub fn pinned() -> Self {
        let vars: BTreeMap<&str, &str> = VERSIONS_ENV
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let get = |k: &str| {
            vars.get(k)
                .unwrap_or_else(|| panic!("versions.env lacks {k}"))
                .to_string()
        };
        Versions {
            kubernetes: get("KUBERNETES_VERSION"),
            etcd: get("ETCD_VERSION"),
            kwok: get("KWOK_VERSION"),
            gateway_api: get("GATEWAY_API_VERSION"),
        }
    }
}

/// `tests/` of the source tree.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/cluster/` of the source tree (scripts, CRDs, manifests).
pub fn assets_dir() -> PathBuf {
    crate_dir().join("cluster")
}

/// The script that builds the control-plane binaries.
pub fn build_script() -> PathBuf {
    assets_dir().join("build.sh")
}

/// Where `build.sh` puts the binaries: `$FLEDGE_CLUSTER_CACHE`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/fledge` (kept in step with build.sh).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = non_empty_env("FLEDGE_CLUSTER_CACHE") {
        return PathBuf::from(dir);
    }
    let base = non_empty_env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(non_empty_env("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache")
        });
    base.join("fledge")
}

/// Where cluster directories live: `$FLEDGE_CLUSTER_RUN_DIR`, else `$TMPDIR/fledge-clusters`.
pub fn runs_dir() -> PathBuf {
    non_empty_env("FLEDGE_CLUSTER_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("fledge-clusters"))
}

fn non_empty_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// Errors that tell the user what to run.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "the test cluster binaries are missing ({missing}); build them with `{script}` \
         (a cold build takes about 15 minutes on 2 cores), or set {SKIP_ENV}=1 to skip the cluster tests"
    )]
    MissingBinaries { missing: String, script: String },
    #[error(
        "`prometheus` is not on PATH; install it with `{script}` (Debian package `prometheus`) \
         or point FLEDGE_PROMETHEUS at a binary"
    )]
    MissingPrometheus { script: String },
    #[error("`{script}` failed ({status}); run it by hand to see why")]
    BuildFailed { script: String, status: String },
}

/// Paths of every executable the cluster needs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
    pub kwok: PathBuf,
    /// kwok stage definitions (node initialise/heartbeat, pod ready/complete/delete).
    pub kwok_stages: Vec<PathBuf>,
    /// The Gateway API standard-channel CRDs (`gateway-api-<v>/crds/*.yaml`).
    pub gateway_api_crds: PathBuf,
}

/// A file [`Binaries::gateway_api_crds`] holds once build.sh has fetched the CRDs.
const GATEWAY_API_MARKER: &str = "gateway.networking.k8s.io_httproutes.yaml";

const KWOK_STAGES: [&str; 5] = [
    "node-initialize.yaml",
    "node-heartbeat-with-lease.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
];

impl Binaries {
    /// The binaries in the cache for the pinned versions, or which ones are missing.
    pub fn locate() -> std::result::Result<Self, SetupError> {
        Self::locate_in(&cache_dir())
    }

    /// [`Binaries::locate`] in a given cache directory.
    pub fn locate_in(cache: &Path) -> std::result::Result<Self, SetupError> {
        let v = Versions::pinned();
        let k8s = cache.join(format!("k8s-{}", v.kubernetes)).join("bin");
        let kwok = cache.join(format!("kwok-{}", v.kwok));
        let b = Binaries {
            etcd: cache.join(format!("etcd-{}", v.etcd)).join("bin/etcd"),
            kube_apiserver: k8s.join("kube-apiserver"),
            kube_controller_manager: k8s.join("kube-controller-manager"),
            kube_scheduler: k8s.join("kube-scheduler"),
            kubectl: k8s.join("kubectl"),
            kwok: kwok.join("bin/kwok"),
            kwok_stages: KWOK_STAGES
                .iter()
                .map(|s| kwok.join("stages").join(s))
                .collect(),
            gateway_api_crds: cache
                .join(format!("gateway-api-{}", v.gateway_api))
                .join("crds"),
        };
        let gateway_marker = b.gateway_api_crds.join(GATEWAY_API_MARKER);
        let mut all = vec![
            &b.etcd,
            &b.kube_apiserver,
            &b.kube_controller_manager,
            &b.kube_scheduler,
            &b.kubectl,
            &b.kwok,
        ];
        all.extend(b.kwok_stages.iter());
        all.push(&gateway_marker);
        let missing: Vec<String> = all
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            Ok(b)
        } else {
            Err(SetupError::MissingBinaries {
                missing: missing.join(", "),
                script: build_script().display().to_string(),
            })
        }
    }

    /// [`Binaries::locate`], running `build.sh` first when something is missing (it says so on
    /// stderr). Set `FLEDGE_CLUSTER_NO_BUILD=1` to fail with the build command instead.
    pub fn ensure() -> Result<Self> {
        match Self::locate() {
            Ok(b) => Ok(b),
            Err(missing) if non_empty_env("FLEDGE_CLUSTER_NO_BUILD").is_some() => {
                Err(missing.into())
            }
            Err(missing) => {
                let script = build_script();
                say!("fledge-e2e: {missing}");
                say!(
                    "fledge-e2e: running {} now (FLEDGE_CLUSTER_NO_BUILD=1 disables this)",
                    script.display()
                );
                let status = Command::new(&script)
                    .stdin(Stdio::null())
                    .status()
                    .with_context(|| format!("running {}", script.display()))?;
                if !status.success() {
                    return Err(SetupError::BuildFailed {
                        script: script.display().to_string(),
                        status: status.to_string(),
                    }
                    .into());
                }
                Ok(Self::locate()?)
            }
        }
    }
}

/// The Prometheus executable: `$FLEDGE_PROMETHEUS` or `prometheus` on PATH.
pub fn prometheus_binary() -> std::result::Result<PathBuf, SetupError> {
    if let Some(p) = non_empty_env("FLEDGE_PROMETHEUS") {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
        .ok_or_else(|| SetupError::MissingPrometheus {
            script: assets_dir().join("ci-prepare.sh").display().to_string(),
        })
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Directory name under [`runs_dir`]; `None` picks a unique one. A named cluster refuses to
    /// start while a directory of that name exists.
    pub name: Option<String>,
    /// Number of kwok nodes.
    pub nodes: usize,
    /// Install the App Mesh CRDs from `tests/cluster/crds/`.
    pub appmesh_crds: bool,
    /// Install the Gateway API CRDs (standard channel, [`Binaries::gateway_api_crds`]) and
    /// create GatewayClass `fledge-sim` and Gateway `gateway-system/gateway` from
    /// `examples/gatewayapi/gateway.yaml`.
    pub gateway_api: bool,
    /// Start Prometheus and the traffic simulator at this path.
    pub mesh_simulator: Option<PathBuf>,
    /// Build missing binaries with build.sh instead of failing.
    pub build_if_missing: bool,
    /// Write an audit log (`<dir>/audit.log`, JSON, one line per request at Metadata level)
    /// so a benchmark can count an operator's API requests by its user agent.
    pub audit: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            name: None,
            nodes: 2,
            appmesh_crds: true,
            gateway_api: true,
            mesh_simulator: None,
            build_if_missing: true,
            audit: false,
        }
    }
}

/// Written to `<dir>/state.json`; lets `down` (or a later run cleaning up after a killed test
/// process) find and stop the processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    pub name: String,
    pub dir: PathBuf,
    pub pgid: i32,
    pub pids: Vec<u32>,
    /// The process that owns the cluster; `None` once detached (`up`).
    pub owner_pid: Option<u32>,
    pub kubeconfig: PathBuf,
    pub api_server: String,
    pub prometheus: Option<String>,
    pub simulator: Option<String>,
}

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A running cluster. Dropping it stops everything and removes its directory.
pub struct Cluster {
    name: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    api_server: String,
    binaries: Binaries,
    prometheus: Option<SocketAddr>,
    simulator: Option<SocketAddr>,
    pgid: Mutex<i32>,
    procs: Mutex<Vec<Proc>>,
    stopped: AtomicBool,
}

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

impl Cluster {
    /// Starts a cluster and waits until it is usable: API server ready, nodes Ready, the
    /// `default` service account created by the controller manager, CRDs established, and
    /// Prometheus and the simulator answering (when asked for).
    pub fn start(opts: ClusterOptions) -> Result<Cluster> {
        let binaries = if opts.build_if_missing {
            Binaries::ensure()?
        } else {
            Binaries::locate()?
        };
        let prometheus_bin = match opts.mesh_simulator {
            Some(_) => Some(prometheus_binary()?),
            None => None,
        };

        let runs = runs_dir();
        fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        reap_stale(&runs);
        let name = opts.name.clone().unwrap_or_else(|| {
            format!(
                "run-{}-{}",
                std::process::id(),
                UNIQUE.fetch_add(1, Ordering::SeqCst)
            )
        });
        let dir = runs.join(&name);
        if dir.exists() {
            bail!(
                "{} exists: a cluster named {name:?} is running or was not cleaned up; \
                 stop it with `tests/cluster/down {name}`",
                dir.display()
            );
        }
        fs::create_dir_all(dir.join("logs"))?;
        let dir = dir.canonicalize()?;

        // Hold every listener until all ports are chosen, so one run never picks a port twice.
        let listeners = (0..5)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()
            .context("reserving loopback ports")?;
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<_>>()?;
        drop(listeners);
        let [etcd_port, peer_port, api_port, prom_port, sim_port] = ports[..] else {
            unreachable!()
        };

        let api_server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        let mut cluster = Cluster {
            name,
            dir: dir.clone(),
            kubeconfig: kubeconfig.clone(),
            api_server: api_server.clone(),
            binaries: binaries.clone(),
            prometheus: prometheus_bin
                .as_ref()
                .map(|_| SocketAddr::from(([127, 0, 0, 1], prom_port))),
            simulator: opts
                .mesh_simulator
                .as_ref()
                .map(|_| SocketAddr::from(([127, 0, 0, 1], sim_port))),
            pgid: Mutex::new(0),
            procs: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        };

        let pki = pki::generate(&dir.join("pki"))?;
        write_kubeconfig(&kubeconfig, &api_server, &pki)?;

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        cluster.spawn(
            "etcd",
            Command::new(&binaries.etcd).args([
                "--name=default".to_string(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".to_string(),
                "--log-level=warn".to_string(),
            ]),
        )?;

        if let (Some(prom), Some(addr)) = (&prometheus_bin, cluster.prometheus) {
            let config = dir.join("prometheus.yml");
            fs::create_dir_all(dir.join(SCRAPE_TARGETS))?;
            fs::write(
                &config,
                prometheus_config(sim_port, &dir.join(SCRAPE_TARGETS)),
            )?;
            cluster.spawn(
                "prometheus",
                Command::new(prom).args([
                    format!("--config.file={}", config.display()),
                    format!("--storage.tsdb.path={}", dir.join("prometheus").display()),
                    format!("--web.listen-address={addr}"),
                    "--storage.tsdb.retention.time=2h".to_string(),
                    "--log.level=warn".to_string(),
                ]),
            )?;
        }

        cluster.wait_until("etcd to report healthy", Duration::from_secs(30), || {
            Ok(
                crate::http::get(SocketAddr::from(([127, 0, 0, 1], etcd_port)), "/health")
                    .map(|r| r.status == 200 && r.body.contains("true"))
                    .unwrap_or(false),
            )
        })?;

        let sa_key = pki.service_account_key.display().to_string();
        let mut audit_args = Vec::new();
        if opts.audit {
            let policy = dir.join("audit-policy.yaml");
            fs::write(
                &policy,
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n",
            )?;
            audit_args = vec![
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", dir.join("audit.log").display()),
                "--audit-log-format=json".to_string(),
                "--audit-log-mode=batch".to_string(),
            ];
        }
        cluster.spawn(
            "kube-apiserver",
            Command::new(&binaries.kube_apiserver)
                .args(audit_args)
                .args([
                    format!("--etcd-servers={etcd_url}"),
                    "--bind-address=127.0.0.1".to_string(),
                    "--advertise-address=127.0.0.1".to_string(),
                    format!("--secure-port={api_port}"),
                    "--endpoint-reconciler-type=none".to_string(),
                    format!("--tls-cert-file={}", pki.apiserver_cert.display()),
                    format!("--tls-private-key-file={}", pki.apiserver_key.display()),
                    format!("--client-ca-file={}", pki.ca_cert.display()),
                    "--authorization-mode=Node,RBAC".to_string(),
                    "--allow-privileged=true".to_string(),
                    "--service-cluster-ip-range=10.96.0.0/16".to_string(),
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local"
                        .to_string(),
                    format!(
                        "--service-account-key-file={}",
                        pki.service_account_pub.display()
                    ),
                    format!("--service-account-signing-key-file={sa_key}"),
                    format!("--cert-dir={}", pki.dir.display()),
                ]),
        )?;

        let client = cluster.block_on({
            let kubeconfig = kubeconfig.clone();
            async move { wait_api_ready(&kubeconfig).await }
        });
        let client = match client {
            Ok(c) => c,
            Err(e) => return Err(cluster.explain(e, "kube-apiserver")),
        };
        drop(client);

        let kubeconfig_arg = format!("--kubeconfig={}", kubeconfig.display());
        cluster.spawn(
            "kube-controller-manager",
            Command::new(&binaries.kube_controller_manager).args([
                kubeconfig_arg.clone(),
                "--leader-elect=false".to_string(),
                "--bind-address=127.0.0.1".to_string(),
                "--secure-port=0".to_string(),
                format!("--service-account-private-key-file={sa_key}"),
                format!("--root-ca-file={}", pki.ca_cert.display()),
                "--service-cluster-ip-range=10.96.0.0/16".to_string(),
                "--controllers=*".to_string(),
            ]),
        )?;
        cluster.spawn(
            "kube-scheduler",
            Command::new(&binaries.kube_scheduler).args([
                kubeconfig_arg.clone(),
                "--leader-elect=false".to_string(),
                "--bind-address=127.0.0.1".to_string(),
                "--secure-port=0".to_string(),
            ]),
        )?;
        let mut kwok_args = vec![
            kubeconfig_arg.clone(),
            "--manage-all-nodes=true".to_string(),
            "--node-lease-duration-seconds=40".to_string(),
            "--cidr=10.244.0.0/16".to_string(),
            "--node-ip=10.0.0.1".to_string(),
        ];
        kwok_args.extend(
            binaries
                .kwok_stages
                .iter()
                .map(|s| format!("--config={}", s.display())),
        );
        cluster.spawn("kwok", Command::new(&binaries.kwok).args(kwok_args))?;

        if let Some(sim) = &opts.mesh_simulator {
            let addr = cluster.simulator.expect("simulator address");
            cluster.spawn(
                "mesh-sim",
                Command::new(sim).args([kubeconfig_arg.clone(), format!("--listen={addr}")]),
            )?;
        }

        let nodes = opts.nodes;
        let crds = opts.appmesh_crds;
        let gateway_api = opts.gateway_api.then(|| binaries.gateway_api_crds.clone());
        let settle = cluster.block_on({
            let kubeconfig = kubeconfig.clone();
            async move { settle(&kubeconfig, nodes, crds, gateway_api).await }
        });
        if let Err(e) = settle {
            return Err(cluster.explain(e, "kube-controller-manager"));
        }

        if let Some(addr) = cluster.prometheus {
            cluster.wait_until("Prometheus to be ready", Duration::from_secs(30), || {
                Ok(crate::http::get(addr, "/-/ready")
                    .map(|r| r.status == 200)
                    .unwrap_or(false))
            })?;
        }
        if let Some(addr) = cluster.simulator {
            cluster.wait_until(
                "the mesh simulator to answer",
                Duration::from_secs(30),
                || {
                    Ok(crate::http::get(addr, "/healthz")
                        .map(|r| r.status == 200)
                        .unwrap_or(false))
                },
            )?;
        }
        cluster.write_state(Some(std::process::id()))?;
        Ok(cluster)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster's directory (PKI, data, logs, kubeconfig).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Admin kubeconfig (client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn api_server(&self) -> &str {
        &self.api_server
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// Prometheus' address, when started with a simulator.
    pub fn prometheus(&self) -> Option<SocketAddr> {
        self.prometheus
    }

    /// The traffic simulator's address, when started with one.
    /// Makes Prometheus scrape `GET http://{addr}/metrics` every second (job `fledge`, label
    /// `target="{name}"`), from its next file_sd refresh (at most a second) on.
    pub fn add_scrape_target(&self, name: &str, addr: SocketAddr) -> Result<()> {
        let dir = self.dir.join(SCRAPE_TARGETS);
        let body = serde_json::json!([{"targets": [addr.to_string()], "labels": {"target": name}}]);
        // Written whole, then renamed: Prometheus never reads half a file.
        let tmp = dir.join(format!(".{name}.json.tmp"));
        fs::write(&tmp, body.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, dir.join(format!("{name}.json")))
            .with_context(|| format!("adding scrape target {name}"))
    }

    pub fn simulator(&self) -> Option<SocketAddr> {
        self.simulator
    }

    /// PIDs of the processes the cluster started.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.procs).iter().map(|p| p.child.id()).collect()
    }

    /// A client for the admin user. Create one per tokio runtime (one per test).
    pub async fn client(&self) -> Result<Client> {
        client_for(&self.kubeconfig).await
    }

    /// `kubectl` bound to this cluster's kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.binaries.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// The last `lines` lines of a component's log (`etcd`, `kube-apiserver`, ...).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        tail(
            &self.dir.join("logs").join(format!("{component}.log")),
            lines,
        )
    }

    /// Stops every process (SIGTERM to the process group, SIGKILL after 3 s) and removes the
    /// directory (kept when `FLEDGE_CLUSTER_KEEP=1`). Idempotent.
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let pgid = *lock(&self.pgid);
        let mut procs = lock(&self.procs);
        if pgid > 0 {
            signal_group(pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline
            && procs
                .iter_mut()
                .any(|p| matches!(p.child.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if pgid > 0 {
            signal_group(pgid, libc::SIGKILL);
        }
        for p in procs.iter_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        procs.clear();
        remove_dir(&self.dir);
    }

    /// Leaves the processes running after this value is gone (for `tests/cluster/up`); stop them
    /// later with [`stop_detached`].
    pub fn detach(self) -> Result<ClusterState> {
        let state = self.write_state(None)?;
        self.stopped.store(true, Ordering::SeqCst);
        Ok(state)
    }

    fn state(&self, owner_pid: Option<u32>) -> ClusterState {
        ClusterState {
            name: self.name.clone(),
            dir: self.dir.clone(),
            pgid: *lock(&self.pgid),
            pids: self.pids(),
            owner_pid,
            kubeconfig: self.kubeconfig.clone(),
            api_server: self.api_server.clone(),
            prometheus: self.prometheus.map(|a| format!("http://{a}")),
            simulator: self.simulator.map(|a| format!("http://{a}")),
        }
    }

    fn write_state(&self, owner_pid: Option<u32>) -> Result<ClusterState> {
        let state = self.state(owner_pid);
        let path = self.dir.join("state.json");
        fs::write(&path, serde_json::to_vec_pretty(&state)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(state)
    }

    /// Starts a child in the cluster's process group (the first child founds the group), with
    /// stdout and stderr going to `<dir>/logs/<name>.log`.
    fn spawn(&mut self, name: &'static str, cmd: &mut Command) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let pgid = *lock(&self.pgid);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .current_dir(&self.dir)
            .process_group(pgid);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        if pgid == 0 {
            *lock(&self.pgid) = child.id() as i32;
        }
        lock(&self.procs).push(Proc { name, child, log });
        // Recorded after every start, so a later run can clean up after a killed owner.
        self.write_state(Some(std::process::id()))?;
        Ok(())
    }

    /// Fails early (with the log) when a child has exited.
    fn check_children(&self) -> Result<()> {
        let mut procs = lock(&self.procs);
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!(
                    "{} exited during startup ({status}); last lines of {}:\n{}",
                    p.name,
                    p.log.display(),
                    tail(&p.log, 30)
                );
            }
        }
        Ok(())
    }

    fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_children()?;
            if ready()? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `fut` on a private runtime in a helper thread (so `start` works from sync and async
    /// callers alike) while watching for children that die.
    fn block_on<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let handle = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a tokio runtime")?
                .block_on(fut)
        });
        while !handle.is_finished() {
            self.check_children()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        handle
            .join()
            .map_err(|_| anyhow!("cluster startup helper thread panicked"))?
    }

    fn explain(&self, err: anyhow::Error, component: &str) -> anyhow::Error {
        if format!("{err:#}").contains("exited during startup") {
            return err.context(format!("cluster {} did not come up", self.name));
        }
        err.context(format!(
            "cluster {} did not come up; last lines of {component}.log:\n{}",
            self.name,
            self.log_tail(component, 20)
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn remove_dir(dir: &Path) {
    if non_empty_env("FLEDGE_CLUSTER_KEEP").is_some() {
        say!(
            "fledge-e2e: keeping {} (FLEDGE_CLUSTER_KEEP)",
            dir.display()
        );
        return;
    }
    let _ = fs::remove_dir_all(dir);
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// True while `pid` exists and is not a zombie (a killed process stays a zombie until its parent
/// or init reaps it).
fn pid_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Live (non-zombie) members of a process group whose command line mentions `dir`; this guards
/// against signalling an unrelated group after PID reuse.
fn group_members(pgid: i32, dir: &Path) -> Vec<u32> {
    live_processes_mentioning(dir)
        .into_iter()
        .filter(|(_, pgrp)| *pgrp == pgid)
        .map(|(pid, _)| pid)
        .collect()
}

/// Live processes whose command line mentions `dir` (every process a cluster starts gets paths
/// inside its directory as arguments).
pub fn processes_mentioning(dir: &Path) -> Vec<u32> {
    live_processes_mentioning(dir)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// `(pid, process group)` of every live (non-zombie) process whose command line mentions `dir`.
fn live_processes_mentioning(dir: &Path) -> Vec<(u32, i32)> {
    let needle = dir.display().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the parenthesised command: state, ppid, pgrp, ...
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.first() == Some(&"Z") {
                return None;
            }
            let pgrp = fields.get(2)?.parse::<i32>().ok()?;
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&needle)
                .then_some((pid, pgrp))
        })
        .collect()
}

/// Stops a cluster left running by [`Cluster::detach`] (or by a test process that was killed)
/// and removes its directory.
pub fn stop_detached(dir: &Path) -> Result<()> {
    let path = dir.join("state.json");
    let state: ClusterState = serde_json::from_slice(
        &fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    if state.pgid > 0 && !group_members(state.pgid, &state.dir).is_empty() {
        signal_group(state.pgid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && !group_members(state.pgid, &state.dir).is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !group_members(state.pgid, &state.dir).is_empty() {
            signal_group(state.pgid, libc::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && !group_members(state.pgid, &state.dir).is_empty() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let left = group_members(state.pgid, &state.dir);
    if !left.is_empty() {
        bail!("processes {left:?} of {} survived SIGKILL", state.name);
    }
    remove_dir(&state.dir);
    Ok(())
}

/// Stops clusters whose owning test process is gone (killed before it could clean up).
fn reap_stale(runs: &Path) {
    let Ok(entries) = fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(bytes) = fs::read(entry.path().join("state.json")) else {
            continue;
        };
        let Ok(state) = serde_json::from_slice::<ClusterState>(&bytes) else {
            continue;
        };
        if let Some(owner) = state.owner_pid {
            if !pid_alive(owner) {
                say!(
                    "fledge-e2e: stopping stale cluster {} (owner {owner} is gone)",
                    state.name
                );
                let _ = stop_detached(&entry.path());
            }
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn write_kubeconfig(path: &Path, server: &str, pki: &pki::Pki) -> Result<()> {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fledge-test\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    \
         client-key: {key}\ncontexts:\n- name: fledge-test\n  context:\n    cluster: fledge-test\n    \
         user: admin\n    namespace: default\ncurrent-context: fledge-test\n",
        ca = pki.ca_cert.display(),
        cert = pki.admin_cert.display(),
        key = pki.admin_key.display(),
    );
    fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))
}

/// Where [`Cluster::add_scrape_target`] writes its file_sd target files, in the cluster's directory.
const SCRAPE_TARGETS: &str = "scrape-targets";

fn prometheus_config(sim_port: u16, targets: &Path) -> String {
    // `honor_labels` keeps the simulator's kubernetes_namespace / kubernetes_pod_name labels,
    // which a real setup derives from pod service discovery. Job `fledge` scrapes whatever
    // `add_scrape_target` lists (operators started by tests).
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n\
         - job_name: appmesh-envoy\n  honor_labels: true\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  \
         metrics_path: /metrics\n  static_configs:\n  - targets: ['127.0.0.1:{sim_port}']\n\
         - job_name: fledge\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  metrics_path: /metrics\n  \
         file_sd_configs:\n  - refresh_interval: 1s\n    files: ['{}/*.json']\n",
        targets.display()
    )
}

/// A client for the kubeconfig at `path`.
pub async fn client_for(path: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    Client::try_from(config).context("building a Kubernetes client")
}

async fn wait_api_ready(kubeconfig: &Path) -> Result<Client> {
    let client = client_for(kubeconfig).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let req = http_get_request("/readyz")?;
        let last = match client.request_text(req).await {
            Ok(body) if body.trim() == "ok" => return Ok(client),
            Ok(body) => body,
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("kube-apiserver not ready after 60 s: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn http_get_request(path: &str) -> Result<http::Request<Vec<u8>>> {
    http::Request::get(path)
        .body(Vec::new())
        .context("building a request")
}

/// `examples/gatewayapi/gateway.yaml`: the GatewayClass and Gateway every cluster starts with.
pub fn gateway_manifest() -> PathBuf {
    crate_dir().join("../examples/gatewayapi/gateway.yaml")
}

/// After the API server is up: create the nodes, install the CRDs, and wait for nodes Ready, the
/// CRDs established and the `default` service account (proof the controller manager works);
/// then create the Gateway API objects of [`gateway_manifest`].
async fn settle(
    kubeconfig: &Path,
    nodes: usize,
    crds: bool,
    gateway_api: Option<PathBuf>,
) -> Result<()> {
    let client = client_for(kubeconfig).await?;
    let node_api: Api<Node> = Api::all(client.clone());
    for i in 0..nodes {
        let name = format!("kwok-node-{i}");
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok"
                }
            },
            "spec": {"providerID": format!("kwok://{name}")}
        }))?;
        node_api
            .create(&PostParams::default(), &node)
            .await
            .with_context(|| format!("creating node {name}"))?;
    }
    let mut crd_names = if crds {
        install_crds(&client, &assets_dir().join("crds")).await?
    } else {
        Vec::new()
    };
    if let Some(dir) = &gateway_api {
        crd_names.extend(install_crds(&client, dir).await?);
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut waiting_for: String;
    loop {
        let ready_nodes = node_api
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|n| node_ready(n))
            .count();
        let sa = Api::<ServiceAccount>::namespaced(client.clone(), "default")
            .get_opt("default")
            .await?;
        let mut unestablished = Vec::new();
        let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for name in &crd_names {
            let crd = crd_api.get(name).await?;
            if !crd_established(&crd) {
                unestablished.push(name.clone());
            }
        }
        waiting_for = format!(
            "{ready_nodes}/{nodes} nodes ready, default service account {}, CRDs not established: {unestablished:?}",
            if sa.is_some() { "present" } else { "missing" }
        );
        if ready_nodes >= nodes && sa.is_some() && unestablished.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("cluster did not settle within 60 s: {waiting_for}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if gateway_api.is_some() {
        apply_manifest(&client, &gateway_manifest()).await?;
    }
    Ok(())
}

/// Server-side-applies every object of a manifest (core `v1` and CRD kinds alike; cluster-scoped
/// unless the object names a namespace).
pub async fn apply_manifest(client: &Client, file: &Path) -> Result<()> {
    for doc in read_manifest(file)? {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default();
        let name = doc["metadata"]["name"]
            .as_str()
            .with_context(|| format!("{}: a {kind} without a name", file.display()))?;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            group, version, kind,
        ));
        let api: Api<kube::api::DynamicObject> = match doc["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&doc),
        )
        .await
        .with_context(|| format!("applying {kind} {name} from {}", file.display()))?;
    }
    Ok(())
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn crd_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Reads every YAML document of every `*.yaml` file in `dir`, in name order.
pub fn read_manifests(dir: &Path) -> Result<Vec<serde_json::Value>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        docs.extend(read_manifest(&file)?);
    }
    Ok(docs)
}

/// Every non-empty YAML document of one file, as JSON values.
pub fn read_manifest(file: &Path) -> Result<Vec<serde_json::Value>> {
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("parsing {}", file.display()))?;
    Ok(docs.into_iter().filter(|v| !v.is_null()).collect())
}

/// Server-side-applies the CRDs in `dir` (all at once) and returns their names. Server-side,
/// because client-side apply keeps the whole object in an annotation, which the larger Gateway
/// API CRDs (HTTPRoute: 0.4 MB) exceed.
pub async fn install_crds(client: &Client, dir: &Path) -> Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    let mut applies = tokio::task::JoinSet::new();
    for doc in read_manifests(dir)? {
        let crd: CustomResourceDefinition =
            serde_json::from_value(doc).context("decoding a CustomResourceDefinition")?;
        let name = crd
            .metadata
            .name
            .clone()
            .context("CustomResourceDefinition without a name")?;
        names.push(name.clone());
        let api = api.clone();
        applies.spawn(async move {
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("applying CRD {name}"))
            .map(drop)
        });
    }
    while let Some(done) = applies.join_next().await {
        done.context("a CRD apply panicked")??;
    }
    Ok(names)
}

/// Creates a namespace (with labels) and waits until its `default` service account exists, so
/// pods can be created in it right away.
pub async fn create_namespace(client: &Client, name: &str, labels: &[(&str, &str)]) -> Result<()> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sa.get_opt("default").await?.is_none() {
        if Instant::now() > deadline {
            bail!("namespace {name} got no default service account within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// True (after saying so on stderr) when `FLEDGE_SKIP_CLUSTER=1`.
pub fn skip_requested(test: &str) -> bool {
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        say!("SKIPPED {test}: {SKIP_ENV}=1 (the cluster tests did not run)");
        true
    } else {
        false
    }
}

static SHARED: OnceLock<std::result::Result<Cluster, String>> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    if let Some(Ok(cluster)) = SHARED.get() {
        cluster.stop();
    }
}

/// One cluster shared by all tests of a test binary, started on first use (with Prometheus and
/// the simulator at `simulator`) and stopped when the process exits. Statics are never dropped,
/// so an `atexit` hook stops it; if the process is killed outright, the next run's startup
/// reaps it.
pub fn shared(simulator: Option<PathBuf>) -> Result<&'static Cluster> {
    let result = SHARED.get_or_init(|| {
        let started = Instant::now();
        let cluster = Cluster::start(ClusterOptions {
            mesh_simulator: simulator,
            ..ClusterOptions::default()
        })
        .map_err(|e| format!("{e:#}"))?;
        say!(
            "fledge-e2e: cluster {} up in {:.1}s at {} (kubeconfig {})",
            cluster.name(),
            started.elapsed().as_secs_f64(),
            cluster.api_server(),
            cluster.kubeconfig().display()
        );
        // SAFETY: registering a plain extern "C" function without captured state.
        unsafe {
            libc::atexit(stop_shared_at_exit);
        }
        Ok(cluster)
    });
    result.as_ref().map_err(|e| anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_pinned_consistently() {
        let v = Versions::pinned();
        assert!(v.kubernetes.starts_with("v1.34."), "{v:?}");
        // The Rust client types must match the server's minor version.
        let cargo = include_str!("../../Cargo.toml");
        assert!(
            cargo.contains(r#"k8s-openapi = { version = "0.29", features = ["v1_34"] }"#),
            "k8s-openapi's feature is out of step with KUBERNETES_VERSION"
        );
    }

    /// Walks a schema: every node has a type, nothing below the root preserves unknown fields,
    /// and nothing defaults (the App Mesh schemas have neither).
    fn check_schema(path: &str, node: &serde_json::Value, errors: &mut Vec<String>) {
        if node.get("type").and_then(|t| t.as_str()).is_none() {
            errors.push(format!("{path}: no type"));
        }
        for banned in [
            "x-kubernetes-preserve-unknown-fields",
            "default",
            "x-kubernetes-validations",
        ] {
            if path != "$" && node.get(banned).is_some() {
                errors.push(format!("{path}: has {banned}"));
            }
        }
        if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
            for (k, v) in props {
                check_schema(&format!("{path}.{k}"), v, errors);
            }
        }
        if let Some(items) = node.get("items") {
            check_schema(&format!("{path}[]"), items, errors);
        }
        if let Some(ap) = node.get("additionalProperties").filter(|a| a.is_object()) {
            check_schema(&format!("{path}{{}}"), ap, errors);
        }
    }

    #[test]
    fn appmesh_crds_are_structural() {
        let docs = read_manifests(&assets_dir().join("crds")).unwrap();
        let mut kinds = Vec::new();
        let mut errors = Vec::new();
        for doc in &docs {
            let crd: CustomResourceDefinition = serde_json::from_value(doc.clone()).unwrap();
            assert_eq!(crd.spec.group, "appmesh.k8s.aws");
            assert_eq!(crd.spec.versions.len(), 1);
            let v = &crd.spec.versions[0];
            assert!(v.name == "v1beta2" && v.served && v.storage);
            assert!(v.subresources.as_ref().is_some_and(|s| s.status.is_some()));
            let schema = serde_json::to_value(
                v.schema
                    .as_ref()
                    .unwrap()
                    .open_api_v3_schema
                    .as_ref()
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(schema["x-kubernetes-preserve-unknown-fields"], true);
            check_schema("$", &schema, &mut errors);
            kinds.push(crd.spec.names.kind.clone());
        }
        assert!(errors.is_empty(), "{errors:#?}");
        kinds.sort();
        assert_eq!(
            kinds,
            [
                "GatewayRoute",
                "Mesh",
                "VirtualGateway",
                "VirtualNode",
                "VirtualRouter",
                "VirtualService"
            ]
        );
    }

    #[test]
    fn missing_binaries_error_names_the_build_command() {
        let err = Binaries::locate_in(Path::new("/nonexistent/fledge-cache"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tests/cluster/build.sh"), "{err}");
        assert!(err.contains("kube-apiserver"), "{err}");
    }
}
