//! `fledge operator`: runs the controller, with Flagger's flag names. Every
//! flag can also come from the environment (`FLEDGE_METRICS_SERVER`, ...).
use anyhow::Context;
use fledge::operator::{self, log::LogFormat, Config, Notifiers};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kubeconfig to use; otherwise in-cluster, then $KUBECONFIG, then ~/.kube/config.
    #[arg(long, env = "FLEDGE_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Prometheus for the builtin metrics of Canaries without spec.metricsServer.
    #[arg(
        long,
        env = "FLEDGE_METRICS_SERVER",
        default_value = "http://prometheus:9090"
    )]
    metrics_server: String,
    /// Provider of Canaries without spec.provider; the operator waits for its CRDs at start-up.
    #[arg(
        long,
        env = "FLEDGE_MESH_PROVIDER",
        default_value = "appmesh:v1beta2",
        value_parser = ["appmesh:v1beta2", "appmesh", "gatewayapi:v1"]
    )]
    mesh_provider: String,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "FLEDGE_NAMESPACE")]
    namespace: Option<String>,
    /// Run only while holding the Lease `fledge-leader-election` (default: on in a cluster).
    #[arg(long, env = "FLEDGE_LEADER_ELECTION", num_args = 0..=1, default_missing_value = "true")]
    leader_election: Option<bool>,
    /// Namespace of the leader election Lease (default: the pod's namespace, else kube-system).
    #[arg(long, env = "FLEDGE_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "FLEDGE_LISTEN_ADDRESS", default_value = ":8080")]
    listen_address: String,
    /// error, warn, info, debug or a tracing filter.
    #[arg(long, env = "FLEDGE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[arg(long, env = "FLEDGE_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Wall-clock deadline of one policy decision, in milliseconds.
    #[arg(long, env = "FLEDGE_POLICY_DEADLINE_MS", default_value_t = 100)]
    policy_deadline_ms: u64,
    /// Slack incoming webhook for the alerts of Canaries without analysis.alerts.
    #[arg(long, env = "FLEDGE_SLACK_URL")]
    slack_url: Option<String>,
    #[arg(long, env = "FLEDGE_SLACK_CHANNEL")]
    slack_channel: Option<String>,
    #[arg(long, env = "FLEDGE_SLACK_USER", default_value = "flagger")]
    slack_user: String,
    #[arg(long, env = "FLEDGE_SLACK_PROXY_URL")]
    slack_proxy_url: Option<String>,
    /// Microsoft Teams webhook (wins over Slack).
    #[arg(long, env = "FLEDGE_MSTEAMS_URL")]
    msteams_url: Option<String>,
    /// Receives every Event of Canaries without `event` webhooks.
    #[arg(long, env = "FLEDGE_EVENT_WEBHOOK")]
    event_webhook: Option<String>,
    /// Added to every alert as `Cluster`.
    #[arg(long, env = "FLEDGE_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// Writes every decision asked of a policy as one JSON line on stdout
    /// (`"msg":"policy decision"`), for `fledge policy replay`.
    #[arg(long, env = "FLEDGE_DECISION_JOURNAL", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    decision_journal: bool,
    /// Longest journal line, in bytes: over it the range-query answers are
    /// dropped from the record, then its input (the record says so).
    #[arg(long, env = "FLEDGE_DECISION_JOURNAL_MAX_BYTES",
          default_value_t = fledge::policy::journal::DEFAULT_MAX_BYTES)]
    decision_journal_max_bytes: usize,
    /// Also appends the journal to this file.
    #[arg(long, env = "FLEDGE_DECISION_JOURNAL_FILE", value_name = "PATH")]
    decision_journal_file: Option<PathBuf>,
    /// Testing only (keep 0): pause this many milliseconds after writing a
    /// step's status and again after carrying out its actions, so a crash
    /// test can kill the operator in between.
    #[arg(long, env = "FLEDGE_STEP_PAUSE_MS", default_value_t = 0)]
    step_pause_ms: u64,
}

const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// `<hostname>_<random>`, as Flagger names its Lease holders.
fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "fledge".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!("{host}/{}/{nanos}", std::process::id());
    let digest = sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), seed));
    format!("{host}_{}", hex::encode(&digest[..6]))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    limit_malloc_arenas();
    operator::log::init(&args.log_level, args.log_format)?;
    let min = fledge::policy::journal::MIN_MAX_BYTES;
    if args.decision_journal_max_bytes < min {
        anyhow::bail!(
            "--decision-journal-max-bytes {}: below the smallest line bound; give at least {min}",
            args.decision_journal_max_bytes
        );
    }
    let leader_election = args
        .leader_election
        .unwrap_or(in_cluster() && args.kubeconfig.is_none());
    let leader_election_namespace = args.leader_election_namespace.unwrap_or_else(|| {
        std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "kube-system".into())
    });
    let config = Config {
        kubeconfig: args.kubeconfig,
        metrics_server: args.metrics_server,
        mesh_provider: args.mesh_provider,
        namespace: args.namespace,
        leader_election,
        leader_election_namespace,
        listen_address: args.listen_address,
        policy_deadline: Duration::from_millis(args.policy_deadline_ms),
        event_webhook: args.event_webhook,
        notifiers: Notifiers {
            slack_url: args.slack_url,
            slack_channel: args.slack_channel,
            slack_user: Some(args.slack_user),
            slack_proxy_url: args.slack_proxy_url,
            msteams_url: args.msteams_url,
            cluster_name: args.cluster_name,
        },
        identity: identity(),
        step_pause: Duration::from_millis(args.step_pause_ms),
        journal: operator::journal::Settings {
            enabled: args.decision_journal,
            max_bytes: args.decision_journal_max_bytes,
            file: args.decision_journal_file,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(operator::run(config))?;
    Ok(ExitCode::SUCCESS)
}

/// glibc gives every thread that allocates its own arena (up to eight per
/// core), and each keeps freed memory it rarely returns; a controller whose
/// work hops between runtime threads pays for all of them. With 100 Canaries
/// and no bound on concurrent reconciles, two arenas (`MALLOC_ARENA_MAX=2`)
/// gave a peak RSS of 52 MiB against 55 MiB (one run each of
/// `scripts/bench-operator.sh fledge 100`).
/// Called before the runtime starts its threads.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no memory is touched.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
