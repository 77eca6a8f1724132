//! `fledge operator`: the second shell around [`crate::core::step`], a
//! kube-runtime controller over `canaries.flagger.app`.
//!
//! - [`resource`]: the Canary as read from the API server.
//! - [`reconcile`]: one reconcile (validate, observe, step, write the status with
//!   a record of the step, act, clear the record; or finish a recorded step).
//! - [`workload`]: primary Deployment, HPA, configs and Services.
//! - [`router`]: the mesh (App Mesh v1beta2) behind one trait.
//! - [`metrics`], [`webhooks`]: the I/O the core asks for.
//! - [`policies`]: the policy objects and the components they bring into force.
//! - [`status`], [`events`], [`log`]: what users see.
//! - [`telemetry`]: the operator's own metrics on `/metrics`.
//! - [`journal`]: every policy decision as a JSON line, for `fledge policy replay`.
//! - [`crd`]: the CRDs `fledge crds` prints.
//! - [`cache`]: the watched objects reconciles read instead of GETs.
pub mod adopt;
pub mod cache;
pub mod crd;
pub mod events;
pub mod journal;
pub mod log;
pub mod metrics;
pub mod policies;
pub mod reconcile;
pub mod resource;
pub mod router;
pub mod server;
pub mod status;
pub mod switch;
pub mod telemetry;
pub mod webhooks;
pub mod workload;

use crate::policy::{PolicyRuntime, RuntimeConfig};
use anyhow::{Context as _, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::WatchStreamExt;
use kube::runtime::{watcher, Controller};
use kube::Client;
use resource::CanaryObject;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Global notifier settings (`--slack-url`, ...): they receive the alerts of
/// every Canary without `analysis.alerts` ([`crate::notify`]).
#[derive(Debug, Clone, Default)]
pub struct Notifiers {
    pub slack_url: Option<String>,
    pub slack_channel: Option<String>,
    pub slack_user: Option<String>,
    pub slack_proxy_url: Option<String>,
    pub msteams_url: Option<String>,
    pub cluster_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    pub metrics_server: String,
    pub mesh_provider: String,
    pub namespace: Option<String>,
    pub leader_election: bool,
    pub leader_election_namespace: String,
    pub listen_address: String,
    pub policy_deadline: Duration,
    pub event_webhook: Option<String>,
    pub notifiers: Notifiers,
    /// This replica's name in the Lease and in Events' `reportingInstance`.
    pub identity: String,
    /// For tests of crash safety only, zero otherwise: a pause after a step's
    /// status is written and again after its actions are carried out, which
    /// widens the moments a `kill -9` finds a step half done.
    pub step_pause: Duration,
    /// The decision journal (`--decision-journal*`).
    pub journal: journal::Settings,
}

/// How long steps in progress may take to finish after SIGTERM (or a lost
/// Lease) before they are abandoned; a step already recorded in the status
/// is finished by whoever reconciles the Canary next.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: events::Recorder,
    pub routers: Vec<Box<dyn router::Router>>,
    pub http: webhooks::Clients,
    /// Alerts of carried-out steps, sent in the background.
    pub alerts: crate::notify::Alerts,
    /// The policy objects, their components, and the built-in policy.
    pub policies: Arc<policies::Policies>,
    /// The last status written per Canary uid, which wins over a cache that
    /// has not seen the write yet.
    pub memo: Mutex<HashMap<String, status::CanaryStatus>>,
    /// What `/metrics` serves.
    pub telemetry: Arc<telemetry::Telemetry>,
    /// Where every policy decision is recorded; `None` when the journal is off.
    pub journal: Option<crate::policy::journal::Journal>,
    /// Becomes true on SIGTERM or when the Lease is lost.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Deployments, HPAs, Services, configs and mesh objects as the watches see them.
    pub cache: Arc<cache::Cache>,
    /// Routers' kinds (`plural.group/version`) not served at the start and
    /// not seen since: a Canary needing one waits for its CRD.
    pub unserved: Mutex<std::collections::BTreeSet<String>>,
}

impl Context {
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once the operator is stopping.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.clone();
        if rx.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Readiness as `/readyz` reports it.
#[derive(Default)]
pub struct Health {
    pub ready: AtomicBool,
    pub reason: std::sync::Mutex<String>,
}

impl Health {
    fn not_ready(&self, why: impl Into<String>) {
        self.ready.store(false, Ordering::SeqCst);
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = why.into();
    }
}

async fn client(config: &Config) -> Result<Client> {
    let mut kube_config = match &config.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("loading --kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, or run in a cluster",
        )?,
    };
    // Audit logs and API priority and fairness tell clients apart by this.
    kube_config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("fledge/", env!("CARGO_PKG_VERSION"))),
    ));
    Client::try_from(kube_config).context("building the Kubernetes client")
}

/// `plural.group/version` of a kind, as a CRD is known.
pub fn kind_name(ar: &kube::api::ApiResource) -> String {
    format!("{}.{}/{}", ar.plural, ar.group, ar.version)
}

/// Which of `kinds` the API server serves now.
async fn served(
    client: &Client,
    kinds: &[kube::api::ApiResource],
) -> (Vec<kube::api::ApiResource>, Vec<String>) {
    let mut yes = Vec::new();
    let mut no = Vec::new();
    for ar in kinds {
        let gvk = kube::api::GroupVersionKind::gvk(&ar.group, &ar.version, &ar.kind);
        if kube::discovery::pinned_kind(client, &gvk).await.is_ok() {
            yes.push(ar.clone());
        } else {
            no.push(kind_name(ar));
        }
    }
    (yes, no)
}

/// Waits until every kind of `router` (the `--mesh-provider` router) is
/// served; says what is missing.
async fn await_mesh_kinds(
    client: &Client,
    router: &dyn router::Router,
    provider: &str,
    health: &Health,
) {
    let mut said = false;
    loop {
        let (_, missing) = served(client, &router.kinds()).await;
        if missing.is_empty() {
            return;
        }
        let install = if router.providers().contains(&router::gateway_api::PROVIDER) {
            "install the Gateway API CRDs (standard channel)"
        } else {
            "install the App Mesh controller or its CRDs"
        };
        let why = format!(
            "the CRDs of --mesh-provider {provider} are not installed ({}): {install}; Fledge waits for them",
            missing.join(", ")
        );
        if !said {
            tracing::error!("{why}");
            said = true;
        }
        health.not_ready(why);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Runs the operator until SIGTERM/SIGINT (exit 0) or lost leadership (error).
pub async fn run(config: Config) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let global_notifier = crate::notify::alerts::global(&config.notifiers)?;
    let client = client(&config).await?;
    let health = Arc::new(Health::default());
    health.not_ready("starting");
    let telemetry = Arc::new(telemetry::Telemetry::new(
        env!("CARGO_PKG_VERSION"),
        &config.mesh_provider,
    ));
    let server = server::serve(&config.listen_address, health.clone(), telemetry.clone()).await?;
    let server = tokio::spawn(server);

    let runtime = PolicyRuntime::new(RuntimeConfig {
        budget: crate::policy::Budget::Deadline(config.policy_deadline),
        ..RuntimeConfig::default()
    })
    .context("starting the policy runtime")?;
    let judge = runtime.builtin().context("loading the built-in policy")?;
    telemetry.known_policy(&judge);
    let routers: Vec<Box<dyn router::Router>> = vec![
        Box::new(router::appmesh::AppMesh::new(client.clone())),
        Box::new(router::gateway_api::GatewayApi::new(client.clone())),
    ];
    let default_router =
        router::for_provider(&routers, &config.mesh_provider).with_context(|| {
            format!(
                "--mesh-provider {}: no such router; use appmesh:v1beta2 or {}",
                config.mesh_provider,
                router::gateway_api::PROVIDER
            )
        })?;

    // True once SIGTERM/SIGINT arrives (or the Lease is lost, below).
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let stopping_tx = Arc::new(stopping_tx);
    let signalled = Arc::new(AtomicBool::new(false));
    {
        let tx = stopping_tx.clone();
        let signalled = signalled.clone();
        tokio::spawn(async move {
            signal().await;
            tracing::info!("shutting down");
            signalled.store(true, Ordering::SeqCst);
            tx.send_replace(true);
        });
    }
    let until_stopping = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        if rx.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    };

    tokio::select! {
        _ = await_mesh_kinds(&client, default_router, &config.mesh_provider, &health) => {}
        _ = until_stopping(stopping.clone()) => return Ok(()),
    }
    // The other routers' kinds are watched when served; a Canary of a router
    // whose CRDs are missing is told so (reconcile::unserved).
    let all: Vec<_> = routers.iter().flat_map(|r| r.kinds()).collect();
    let (kinds, missing) = served(&client, &all).await;
    if !missing.is_empty() {
        tracing::warn!(
            "not watching {} (CRDs not installed); Canaries of their providers wait for them",
            missing.join(", ")
        );
    }
    let (cache, writers) = cache::Cache::new(&kinds);
    let cache = Arc::new(cache);
    for r in &routers {
        r.use_cache(cache.clone());
    }

    let lease = if config.leader_election {
        let mgr =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "fledge-leader-election")
                .with_namespace(&config.leader_election_namespace)
                .with_identity(&config.identity)
                .with_duration(10)
                .with_grace(4)
                .build()
                .await
                .context("setting up leader election")?;
        let (mut rx, task) = mgr.watch().await;
        // A standby replica is ready: it serves as soon as it leads.
        health.ready.store(true, Ordering::SeqCst);
        tracing::info!(identity = %config.identity, "waiting to lead (Lease {}/fledge-leader-election)", config.leader_election_namespace);
        let leads = tokio::select! {
            r = rx.wait_for(|l| *l) => { r.context("leader election stopped")?; true }
            _ = until_stopping(stopping.clone()) => false,
        };
        if !leads {
            drop(rx);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            return Ok(());
        }
        tracing::info!(identity = %config.identity, "leading");
        Some((rx, task))
    } else {
        None
    };
    telemetry.set_leader(true);

    let recorder = events::Recorder::new(client.clone(), config.identity.clone());
    let alerts = crate::notify::Alerts::start(
        client.clone(),
        recorder.clone(),
        global_notifier,
        config.notifiers.cluster_name.clone(),
        crate::notify::delivery::Delivery::new(Default::default()),
    );
    let (rollout_policies, rollout_writer) = reflector::store();
    let (cluster_policies, cluster_writer) = reflector::store();
    let maximums = crate::api::policy::Maximums {
        deadline: config.policy_deadline,
        memory: runtime.config().memory_limit,
    };
    let policies = Arc::new(policies::Policies::new(
        client.clone(),
        runtime.clone(),
        judge,
        maximums,
        config.leader_election_namespace.clone(),
        config.identity.clone(),
        rollout_policies,
        cluster_policies,
    )?);
    let ctx = Arc::new(Context {
        recorder,
        alerts,
        client: client.clone(),
        http: webhooks::Clients::new()?,
        policies: policies.clone(),
        routers,
        memo: Mutex::default(),
        telemetry: telemetry.clone(),
        journal: journal::open(&config.journal)?,
        config: config.clone(),
        stopping: stopping.clone(),
        cache,
        unserved: Mutex::new(missing.into_iter().collect()),
    });

    if let Some((rx, _)) = &lease {
        let mut rx = rx.clone();
        let tx = stopping_tx.clone();
        tokio::spawn(async move {
            if rx.wait_for(|l| !*l).await.is_ok() {
                tx.send_replace(true);
            }
        });
    }
    health.ready.store(true, Ordering::SeqCst);
    // On stopping the controller takes no new reconciles and waits for those
    // in progress: a step not yet recorded is abandoned at once (its status
    // was not written, so it was not taken), a recorded one is finished.
    let (changed, policy_changes) = futures::channel::mpsc::unbounded();
    let controller = controller(ctx.clone(), writers).reconcile_all_on(policy_changes);
    let canaries = controller.store();
    let watchers = [
        tokio::spawn(watch_policies(
            api::<policies::objects::RolloutPolicyObject>(&client, &config.namespace),
            rollout_writer,
            policies.clone(),
            changed.clone(),
            canaries.clone(),
            |o| {
                policies::select::PolicyKey::namespaced(
                    o.metadata.namespace.as_deref().unwrap_or(""),
                    o.metadata.name.as_deref().unwrap_or(""),
                )
            },
        )),
        tokio::spawn(watch_policies(
            Api::<policies::objects::ClusterRolloutPolicyObject>::all(client.clone()),
            cluster_writer,
            policies.clone(),
            changed,
            canaries.clone(),
            |o| policies::select::PolicyKey::cluster(o.metadata.name.as_deref().unwrap_or("")),
        )),
        tokio::spawn(async move {
            // Analyses end without a policy object changing: look again now and then.
            let mut every = tokio::time::interval(EVICT_EVERY);
            loop {
                every.tick().await;
                policies.evict(&canaries).await;
            }
        }),
    ];
    // Reconciles choose policies from the caches: let them fill first, or a
    // Canary would take the built-in policy for one whose object is not read yet.
    let filled = futures::future::join(
        ctx.policies.namespaced.wait_until_ready(),
        ctx.policies.cluster.wait_until_ready(),
    );
    if tokio::time::timeout(POLICY_CACHE_WAIT, filled)
        .await
        .is_err()
    {
        tracing::warn!("policy objects not listed within {POLICY_CACHE_WAIT:?}; Canaries use the built-in policy until they are");
    }
    let run = controller
        .graceful_shutdown_on(until_stopping(stopping.clone()))
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|_| async {});
    tokio::select! {
        _ = run => {}
        _ = async {
            until_stopping(stopping.clone()).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(
                "steps still in progress {SHUTDOWN_GRACE:?} after the stop are abandoned; \
                 the next leader finishes them from their status"
            );
        }
    }
    let lost =
        !signalled.load(Ordering::SeqCst) && lease.as_ref().is_some_and(|(rx, _)| !*rx.borrow());

    if let Some((rx, task)) = lease {
        if lost {
            anyhow::bail!(
                "lost the leader election Lease; exiting so a restart rejoins as a standby"
            );
        }
        // Dropping the last receiver makes the lease task give the Lease up,
        // so a standby takes over without waiting for it to expire.
        drop(rx);
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    server.abort();
    watchers.iter().for_each(|w| w.abort());
    Ok(())
}

/// How long the start waits for the policy objects to be listed.
const POLICY_CACHE_WAIT: Duration = Duration::from_secs(10);

/// How often components no one refers to any more are dropped.
const EVICT_EVERY: Duration = Duration::from_secs(30);

/// Keeps a cache of policy objects of one kind; loads the component of each
/// that changed and then requeues every Canary, so their next analysis uses
/// it. A write of the object's own status loads nothing and requeues nothing.
async fn watch_policies<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    policies: Arc<policies::Policies>,
    changed: futures::channel::mpsc::UnboundedSender<()>,
    canaries: Store<CanaryObject>,
    key: fn(&K) -> policies::select::PolicyKey,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let store = writer.as_reader();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    futures::pin_mut!(stream);
    let mut said = false;
    while let Some(event) = stream.next().await {
        match event {
            // Listed objects reach the cache at InitDone, below.
            Ok(watcher::Event::InitApply(_) | watcher::Event::Init) => {}
            Ok(watcher::Event::Apply(o)) => {
                if policies.refresh(&key(&o)).await {
                    let _ = changed.unbounded_send(());
                }
            }
            Ok(watcher::Event::Delete(_)) => {
                policies.evict(&canaries).await;
                let _ = changed.unbounded_send(());
            }
            Ok(watcher::Event::InitDone) => {
                // The cache holds a (re)list only from here on: load what it holds.
                let mut changed_any = false;
                for o in store.state() {
                    changed_any |= policies.refresh(&key(&o)).await;
                }
                policies.evict(&canaries).await;
                if changed_any {
                    let _ = changed.unbounded_send(());
                }
            }
            Err(e) => {
                // Without the policy CRDs every Canary falls back to the
                // built-in policy; say so once.
                if !said {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "cannot watch policy objects (are the policies.fledge.dev CRDs installed?); Canaries use the built-in policy until they can be read");
                    said = true;
                }
            }
        }
    }
}

async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Canaries in `ns` that target `deployment`, or own it.
fn canaries_of_deployment(
    store: &Store<CanaryObject>,
    d: &Deployment,
) -> Vec<ObjectRef<CanaryObject>> {
    let ns = d.metadata.namespace.as_deref().unwrap_or("");
    let name = d.metadata.name.as_deref().unwrap_or("");
    store
        .state()
        .iter()
        .filter(|c| {
            c.namespace() == ns
                && (c.target_name() == Some(name) || c.owns(d.metadata.owner_references.as_ref()))
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Canaries in `ns` whose status tracks `key` (`configmap/<name>`).
fn canaries_tracking(
    store: &Store<CanaryObject>,
    ns: &str,
    key: &str,
) -> Vec<ObjectRef<CanaryObject>> {
    store
        .state()
        .iter()
        .filter(|c| {
            c.namespace() == ns
                && c.status
                    .as_ref()
                    .and_then(|s| s.pointer("/trackedConfigs"))
                    .and_then(|t| t.get(key))
                    .is_some()
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Canaries reconciled at once (Flagger runs two workers). With 100 Canaries
/// (`scripts/bench-operator.sh fledge 100`, one run each): peak RSS 39 MiB
/// against 58 MiB unbounded, promotion of all 159 s against 155 s; a bound of
/// 8 gave 38 MiB but 209 s.
const RECONCILE_CONCURRENCY: u16 = 16;

fn controller(ctx: Arc<Context>, writers: cache::Writers) -> Controller<CanaryObject> {
    let client = &ctx.client;
    let writes = &ctx.cache.writes;
    let ns = &ctx.config.namespace;
    let wc = watcher::Config::default;
    // Reconciles are I/O-bound; a bounded number in flight keeps what they
    // hold (observed Deployments, routes, the step) from piling up when many
    // Canaries wake at once, as after a restart. Others wait in the queue.
    let mut c = Controller::new(api::<CanaryObject>(client, ns), wc()).with_config(
        kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
    );
    let store = c.store();
    ctx.telemetry.count_canaries(store.clone());
    c = c
        .watches_stream(
            cache::reflect(
                api::<Deployment>(client, ns),
                writers.deployments,
                writes.clone(),
                "Deployment".into(),
                cache::strip_last_applied,
            ),
            {
                let store = store.clone();
                move |d| canaries_of_deployment(&store, &d)
            },
        )
        .watches_stream(
            cache::reflect(
                api::<ConfigMap>(client, ns),
                writers.configmaps,
                writes.clone(),
                "ConfigMap".into(),
                cache::strip_configmap,
            ),
            {
                let store = store.clone();
                move |cm: ConfigMap| {
                    let ns = cm.metadata.namespace.clone().unwrap_or_default();
                    let key = format!("configmap/{}", cm.metadata.name.as_deref().unwrap_or(""));
                    canaries_tracking(&store, &ns, &key)
                }
            },
        )
        .watches_stream(
            cache::reflect(
                api::<Secret>(client, ns),
                writers.secrets,
                writes.clone(),
                "Secret".into(),
                cache::strip_secret,
            ),
            {
                let store = store.clone();
                move |s: Secret| {
                    let ns = s.metadata.namespace.clone().unwrap_or_default();
                    let key = format!("secret/{}", s.metadata.name.as_deref().unwrap_or(""));
                    canaries_tracking(&store, &ns, &key)
                }
            },
        )
        .owns_stream(cache::reflect(
            api::<Service>(client, ns),
            writers.services,
            writes.clone(),
            "Service".into(),
            cache::keep,
        ))
        .owns_stream(cache::reflect(
            api::<HorizontalPodAutoscaler>(client, ns),
            writers.hpas,
            writes.clone(),
            "HorizontalPodAutoscaler".into(),
            cache::strip_last_applied,
        ));
    for (ar, writer) in writers.mesh {
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let kind = ar.kind.clone();
        c = c.owns_stream_with(
            cache::reflect(api, writer, writes.clone(), kind, cache::keep),
            ar,
        );
    }
    c
}
