//! The operator's own metrics on `/metrics` (OpenMetrics text): Flagger's
//! series with Flagger's names, labels and values (`pkg/metrics/recorder.go`),
//! so its dashboards and alerts keep working, and Fledge's own about policy
//! decisions and metric queries.
use super::resource::CanaryObject;
use crate::core::{Judge, JudgeError, Rollout, Routes};
use crate::policy::{Policy, PolicyError};
use fledge_policy::{
    Context, Decision, MetricResult, MetricUnit, MetricValue, Phase, PolicyInput, RangeQuery,
    Strategy,
};
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Go client's `prometheus.DefBuckets`, which Flagger's duration histogram uses.
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The policy's name in `fledge_policy_*`: the operator runs the built-in one.
pub const BUILTIN_POLICY: &str = "builtin";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: String,
    mesh_provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

/// Flagger's `name` is the target's name (`spec.targetRef.name`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CanaryLabels {
    name: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadLabels {
    workload: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabels {
    name: String,
    namespace: String,
    metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    name: String,
    namespace: String,
    deployment_strategy: String,
    analysis_status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
    digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    policy: String,
    digest: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    policy: String,
    digest: String,
    enforced: String,
    shadow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

type Seconds = Family<CanaryLabels, Histogram, fn() -> Histogram>;
type Timings<L> = Family<L, Histogram, fn() -> Histogram>;

fn flagger_duration() -> Histogram {
    Histogram::new(DEFAULT_BUCKETS)
}

/// 0.1 ms to ~3.3 s: a decision takes well under a millisecond, a deadline
/// (default 100 ms) or a slow Prometheus much longer.
fn fine_duration() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The operator's metrics, registered once and shared by every reconcile.
pub struct Telemetry {
    registry: Registry,
    // Flagger's.
    total: Family<NamespaceLabels, Gauge>,
    status: Family<CanaryLabels, Gauge>,
    weight: Family<WorkloadLabels, Gauge>,
    duration: Seconds,
    analysis: Family<MetricLabels, Gauge<f64, AtomicU64>>,
    successes: Family<ResultLabels, Counter>,
    failures: Family<ResultLabels, Counter>,
    // Fledge's.
    decisions: Family<DecisionLabels, Counter>,
    decision_seconds: Timings<PolicyLabels>,
    policy_errors: Family<ErrorLabels, Counter>,
    shadow_decisions: Family<PolicyLabels, Counter>,
    shadow_disagreements: Family<ShadowLabels, Counter>,
    query_seconds: Timings<ProviderLabels>,
    leader: Gauge,
    pub reconciles: Counter,
    pub steps: Counter,
    pub reconcile_errors: Counter,
    /// The controller's cache of Canaries, for `flagger_canary_total`.
    canaries: OnceLock<Store<CanaryObject>>,
    /// One scrape at a time: `flagger_canary_total` is rebuilt for each.
    scrape: Mutex<()>,
}

impl Telemetry {
    pub fn new(version: &str, mesh_provider: &str) -> Telemetry {
        let mut registry = Registry::default();
        let info = Family::<InfoLabels, Gauge>::default();
        let labels = InfoLabels {
            version: version.to_string(),
            mesh_provider: mesh_provider.to_string(),
        };
        info.get_or_create(&labels).set(1);
        registry.register(
            "flagger_info",
            "Flagger version and mesh provider information",
            info.clone(),
        );
        let fledge_info = Family::<InfoLabels, Gauge>::default();
        fledge_info.get_or_create(&labels).set(1);
        registry.register(
            "fledge_info",
            "Fledge version and mesh provider information",
            fledge_info,
        );
        // Version, CRD API versions and policy contract: what an upgrade changes.
        let build = Family::<Vec<(String, String)>, Gauge>::default();
        build
            .get_or_create(&crate::build_info::BuildInfo::current().labels())
            .set(1);
        registry.register(
            "fledge_build_info",
            "Fledge version, served CRD API versions and policy contract (WIT package)",
            build,
        );
        let t = Telemetry {
            total: Family::default(),
            status: Family::default(),
            weight: Family::default(),
            duration: Family::new_with_constructor(flagger_duration),
            analysis: Family::default(),
            successes: Family::default(),
            failures: Family::default(),
            decisions: Family::default(),
            decision_seconds: Family::new_with_constructor(fine_duration),
            policy_errors: Family::default(),
            shadow_decisions: Family::default(),
            shadow_disagreements: Family::default(),
            query_seconds: Family::new_with_constructor(fine_duration),
            leader: Gauge::default(),
            reconciles: Counter::default(),
            steps: Counter::default(),
            reconcile_errors: Counter::default(),
            canaries: OnceLock::new(),
            scrape: Mutex::new(()),
            registry: Registry::default(),
        };
        // Counters are registered without `_total`: the encoder appends it.
        let r = &mut registry;
        r.register(
            "flagger_canary_duration_seconds",
            "Seconds spent performing canary analysis.",
            t.duration.clone(),
        );
        r.register(
            "flagger_canary_total",
            "Total number of canary object",
            t.total.clone(),
        );
        r.register(
            "flagger_canary_status",
            "Last canary analysis result",
            t.status.clone(),
        );
        r.register(
            "flagger_canary_weight",
            "The virtual service destination weight current value",
            t.weight.clone(),
        );
        r.register(
            "flagger_canary_metric_analysis",
            "Last canary analysis result per metric",
            t.analysis.clone(),
        );
        r.register(
            "flagger_canary_successes",
            "Total number of canary successes",
            t.successes.clone(),
        );
        r.register(
            "flagger_canary_failures",
            "Total number of canary failures",
            t.failures.clone(),
        );
        r.register(
            "fledge_policy_decisions",
            "Decisions of the rollout policy, by policy, component digest and decision",
            t.decisions.clone(),
        );
        r.register(
            "fledge_policy_decision_seconds",
            "Seconds one policy decision took, including the failed ones",
            t.decision_seconds.clone(),
        );
        r.register(
            "fledge_policy_errors",
            "Policy decisions that gave no usable decision, by cause",
            t.policy_errors.clone(),
        );
        r.register(
            "fledge_policy_shadow_decisions",
            "Decisions of shadow-mode policies, by policy and component digest",
            t.shadow_decisions.clone(),
        );
        r.register(
            "fledge_policy_shadow_disagreements",
            "Shadow-mode decisions that differ from the enforced one, by the decision kind \
             enforced and the shadow's (error: the shadow gave no usable decision)",
            t.shadow_disagreements.clone(),
        );
        r.register(
            "fledge_metric_query_seconds",
            "Seconds one metric query took, by provider",
            t.query_seconds.clone(),
        );
        r.register(
            "fledge_leader",
            "1 while this replica leads (or runs without leader election)",
            t.leader.clone(),
        );
        r.register(
            "fledge_reconciles",
            "Reconciles of Canaries",
            t.reconciles.clone(),
        );
        r.register(
            "fledge_analysis_steps",
            "Analysis steps taken (their status written)",
            t.steps.clone(),
        );
        r.register(
            "fledge_reconcile_errors",
            "Reconciles that failed and were requeued",
            t.reconcile_errors.clone(),
        );
        // Known label values start at zero, so `rate` and `increase` see the
        // first query or error instead of a series that appears already counted.
        t.query_seconds.get_or_create_owned(&ProviderLabels {
            provider: "prometheus".into(),
        });
        for kind in ERROR_KINDS {
            t.policy_errors.get_or_create_owned(&ErrorLabels {
                kind: kind.to_string(),
            });
        }
        Telemetry { registry, ..t }
    }

    /// Starts the decision series of `policy` at zero (see [`Telemetry::new`]).
    pub fn known_policy(&self, policy: &Policy) {
        let labels = PolicyLabels {
            policy: BUILTIN_POLICY.to_string(),
            digest: policy.digest().to_string(),
        };
        self.decision_seconds.get_or_create_owned(&labels);
        for decision in DECISIONS {
            self.decisions.get_or_create_owned(&DecisionLabels {
                policy: labels.policy.clone(),
                digest: labels.digest.clone(),
                decision: decision.to_string(),
            });
        }
    }

    /// `flagger_canary_total` counts the Canaries in this cache at each scrape.
    pub fn count_canaries(&self, store: Store<CanaryObject>) {
        let _ = self.canaries.set(store);
    }

    pub fn set_leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// The OpenMetrics text of every series.
    pub fn encode(&self) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = self.canaries.get() {
            let mut per_namespace: BTreeMap<String, i64> = BTreeMap::new();
            for c in store.state() {
                *per_namespace.entry(c.namespace().to_string()).or_default() += 1;
            }
            self.total.clear();
            for (namespace, n) in per_namespace {
                self.total
                    .get_or_create(&NamespaceLabels { namespace })
                    .set(n);
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Flagger's `SetStatus`: 0 Progressing, 2 Failed, 1 anything else.
    pub fn set_status(&self, r: &Rollout, phase: Phase) {
        let value = match phase {
            Phase::Progressing => 0,
            Phase::Failed => 2,
            _ => 1,
        };
        self.status.get_or_create(&canary_labels(r)).set(value);
    }

    /// Flagger's `SetWeight`: the primary as `<target>-primary`, the canary as `<target>`.
    pub fn set_weight(&self, r: &Rollout, routes: Routes) {
        for (workload, w) in [
            (r.primary(), routes.primary),
            (r.target.clone(), routes.canary),
        ] {
            self.weight
                .get_or_create(&WorkloadLabels {
                    workload,
                    namespace: r.namespace.clone(),
                })
                .set(i64::from(w));
        }
    }

    /// Flagger's `SetDuration`: the time one analysis step took.
    pub fn observe_analysis(&self, r: &Rollout, took: Duration) {
        self.duration
            .get_or_create(&canary_labels(r))
            .observe(took.as_secs_f64());
    }

    /// Flagger's `SetAnalysis` for each metric that has a value; the builtin
    /// `request-duration` in seconds, as Flagger records it.
    pub fn set_analysis(&self, r: &Rollout, results: &[MetricResult]) {
        for m in results {
            let MetricValue::Value(v) = m.value else {
                continue;
            };
            let v = match m.unit {
                MetricUnit::Milliseconds => v / 1000.0,
                _ => v,
            };
            self.analysis
                .get_or_create(&MetricLabels {
                    name: r.target.clone(),
                    namespace: r.namespace.clone(),
                    metric: m.name.clone(),
                })
                .set(v);
        }
    }

    /// Flagger's `IncSuccesses` / `IncFailures` for a step that moved the
    /// Canary from `from` to `to`.
    pub fn count_result(&self, r: &Rollout, from: Phase, to: Phase) {
        if from == to {
            return;
        }
        let counter = match to {
            Phase::Succeeded => &self.successes,
            Phase::Failed => &self.failures,
            _ => return,
        };
        let status = if to == Phase::Succeeded && r.skip_analysis {
            "skipped"
        } else {
            "completed"
        };
        counter
            .get_or_create(&ResultLabels {
                name: r.target.clone(),
                namespace: r.namespace.clone(),
                deployment_strategy: strategy(r.strategy).to_string(),
                analysis_status: status.to_string(),
            })
            .inc();
    }

    /// Counts one decision of the shadow policy `policy` (see
    /// [`policy_label`]) and, when it differs from the enforced one,
    /// `disagreement`: the enforced decision's kind and the shadow's.
    pub fn count_shadow(&self, policy: &str, digest: &str, disagreement: Option<(&str, &str)>) {
        self.shadow_decisions
            .get_or_create(&PolicyLabels {
                policy: policy.to_string(),
                digest: digest.to_string(),
            })
            .inc();
        if let Some((enforced, shadow)) = disagreement {
            self.shadow_disagreements
                .get_or_create(&ShadowLabels {
                    policy: policy.to_string(),
                    digest: digest.to_string(),
                    enforced: enforced.to_string(),
                    shadow: shadow.to_string(),
                })
                .inc();
        }
    }

    /// Times one metric query for `fledge_metric_query_seconds`.
    pub fn observe_query(&self, provider: &str, took: Duration) {
        self.query_seconds
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The policy as a [`Judge`] whose decisions are counted and timed under
    /// `name` (see [`policy_label`]).
    pub fn judge<'a>(&'a self, policy: &'a Policy, name: &'a str) -> Recorded<'a> {
        Recorded {
            policy,
            name,
            telemetry: self,
        }
    }

    fn decided(
        &self,
        policy: &Policy,
        name: &str,
        result: &Result<Decision, PolicyError>,
        took: Duration,
    ) {
        let labels = PolicyLabels {
            policy: name.to_string(),
            digest: policy.digest().to_string(),
        };
        self.decision_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        match result {
            Ok(d) => {
                self.decisions
                    .get_or_create(&DecisionLabels {
                        policy: labels.policy,
                        digest: labels.digest,
                        decision: decision(d).to_string(),
                    })
                    .inc();
            }
            Err(e) => {
                self.policy_errors
                    .get_or_create(&ErrorLabels {
                        kind: error_kind(e).to_string(),
                    })
                    .inc();
            }
        }
    }
}

fn canary_labels(r: &Rollout) -> CanaryLabels {
    CanaryLabels {
        name: r.target.clone(),
        namespace: r.namespace.clone(),
    }
}

/// Flagger's `deployment_strategy` values.
fn strategy(s: Strategy) -> &'static str {
    match s {
        Strategy::Canary => "canary",
        Strategy::BlueGreen => "blue-green",
        Strategy::AbTesting => "ab-testing",
    }
}

const DECISIONS: [&str; 5] = ["advance", "hold", "promote", "rollback", "wait"];

const ERROR_KINDS: [&str; 10] = [
    "deadline",
    "memory",
    "fuel",
    "input_too_large",
    "trap",
    "invalid_decision",
    "invalid_queries",
    "instantiate",
    "setup",
    "load",
];

/// The decision's case in the WIT contract.
pub fn decision(d: &Decision) -> &'static str {
    match d {
        Decision::Advance(_) => "advance",
        Decision::Hold(_) => "hold",
        Decision::Promote => "promote",
        Decision::Rollback(_) => "rollback",
        Decision::Wait(_) => "wait",
    }
}

/// The `kind` of `fledge_policy_errors_total`.
pub fn error_kind(e: &PolicyError) -> &'static str {
    match e {
        PolicyError::Timeout { .. } => "deadline",
        PolicyError::MemoryLimit { .. } => "memory",
        PolicyError::FuelExhausted { .. } => "fuel",
        PolicyError::InputTooLarge { .. } => "input_too_large",
        PolicyError::Trap { .. } => "trap",
        PolicyError::InvalidDecision(_) => "invalid_decision",
        PolicyError::InvalidQueries(_) => "invalid_queries",
        PolicyError::Instantiate(_) => "instantiate",
        PolicyError::Setup(_) => "setup",
        // Loading errors: a loaded policy does not meet them when deciding.
        PolicyError::WorldMismatch(_)
        | PolicyError::ForbiddenImports(_)
        | PolicyError::TooExpensive { .. }
        | PolicyError::NotAComponent(_)
        | PolicyError::Compile(_) => "load",
    }
}

/// A policy whose decisions go into [`Telemetry`].
pub struct Recorded<'a> {
    policy: &'a Policy,
    name: &'a str,
    telemetry: &'a Telemetry,
}

/// The `policy` label of a policy in force: `builtin` without a policy
/// object, else `RolloutPolicy/<namespace>/<name>` or
/// `ClusterRolloutPolicy/<name>`.
pub fn policy_label(record: &crate::operator::status::PolicyInForce, namespace: &str) -> String {
    match record.kind.as_str() {
        "RolloutPolicy" => format!("RolloutPolicy/{namespace}/{}", record.name),
        "ClusterRolloutPolicy" => format!("ClusterRolloutPolicy/{}", record.name),
        _ => BUILTIN_POLICY.to_string(),
    }
}

impl Judge for Recorded<'_> {
    fn queries(&self, input: &PolicyInput, ctx: &Context) -> Result<Vec<RangeQuery>, JudgeError> {
        self.policy.queries(input, ctx).map_err(|e| {
            self.telemetry
                .policy_errors
                .get_or_create(&ErrorLabels {
                    kind: error_kind(&e).to_string(),
                })
                .inc();
            JudgeError(e.to_string())
        })
    }

    fn decide(&self, input: &PolicyInput, ctx: &Context) -> Result<Decision, JudgeError> {
        let started = Instant::now();
        let result = self.policy.evaluate_in(input, ctx);
        self.telemetry
            .decided(self.policy, self.name, &result, started.elapsed());
        result.map_err(|e| JudgeError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api;
    use crate::policy::{PolicyRuntime, RuntimeConfig};
    use crate::simulate::{self, scenario};

    const GUIDE: &str = include_str!("../../../examples/podinfo/canary.yaml");
    const PROMOTE: &str = include_str!("../../../examples/scenarios/promote.yaml");
    const ROLLBACK: &str = include_str!("../../../examples/scenarios/rollback.yaml");

    /// The guide's Canary in `namespace`.
    fn rollout(namespace: &str) -> Rollout {
        let mut canary: api::Canary = api::yaml::from_str(GUIDE).unwrap();
        canary.metadata.namespace = Some(namespace.into());
        api::validate(&canary).unwrap().rollout
    }

    /// The value of the sample `series` (name and labels, exactly as encoded).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn simulate(policy: &dyn Judge, scenario: &str) -> simulate::Report {
        let inputs = simulate::load::load("canary.yaml", GUIDE, &[]).unwrap();
        simulate::run(&inputs, scenario::parse(scenario).unwrap(), policy)
    }

    /// What the reconcile records for one step, as `reconcile::record_result` and `record_duration` do.
    fn step(t: &Telemetry, r: &Rollout, from: Phase, to: Phase, weight: u32, took_ms: u64) {
        t.set_weight(
            r,
            Routes {
                primary: 100 - weight,
                canary: weight,
            },
        );
        t.set_status(r, to);
        t.count_result(r, from, to);
        if matches!(from, Phase::Progressing | Phase::WaitingPromotion) && to != Phase::Failed {
            t.observe_analysis(r, Duration::from_millis(took_ms));
        }
    }

    fn metric(name: &str, unit: MetricUnit, v: f64) -> MetricResult {
        MetricResult {
            name: name.into(),
            value: MetricValue::Value(v),
            min: None,
            max: None,
            unit,
        }
    }

    #[test]
    fn flaggers_series_keep_flaggers_names_labels_and_values() {
        let t = Telemetry::new("1.2.3", "appmesh:v1beta2");
        let (up, down) = (rollout("up"), rollout("down"));
        // The controller's cache: two Canaries in `up`, one in `down`.
        let (store, mut writer) = kube::runtime::reflector::store::<CanaryObject>();
        for (name, namespace) in [("a", "up"), ("b", "up"), ("podinfo", "down")] {
            let mut c = CanaryObject::default();
            c.metadata.name = Some(name.into());
            c.metadata.namespace = Some(namespace.into());
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(c));
        }
        t.count_canaries(store);
        // A promotion: one analysis step at 50 %, then promotion back to 100/0.
        step(&t, &up, Phase::Initialized, Phase::Progressing, 0, 3);
        t.set_analysis(
            &up,
            &[
                metric("request-success-rate", MetricUnit::Percent, 99.5),
                metric("request-duration", MetricUnit::Milliseconds, 48.75),
            ],
        );
        step(&t, &up, Phase::Progressing, Phase::Progressing, 50, 30);
        step(&t, &up, Phase::Progressing, Phase::Promoting, 50, 700);
        step(&t, &up, Phase::Promoting, Phase::Finalising, 0, 2);
        step(&t, &up, Phase::Finalising, Phase::Succeeded, 0, 2);
        // A rollback: a failed check, then Failed; the error has no value.
        step(&t, &down, Phase::Initialized, Phase::Progressing, 0, 3);
        t.set_analysis(
            &down,
            &[MetricResult {
                value: MetricValue::Error("Prometheus query failed: boom".into()),
                ..metric("request-success-rate", MetricUnit::Percent, 0.0)
            }],
        );
        step(&t, &down, Phase::Progressing, Phase::Failed, 0, 4);
        let text = t.encode();

        let exact = [
            ("flagger_info{version=\"1.2.3\",mesh_provider=\"appmesh:v1beta2\"}", 1.0),
            ("flagger_canary_status{name=\"podinfo\",namespace=\"up\"}", 1.0),
            ("flagger_canary_status{name=\"podinfo\",namespace=\"down\"}", 2.0),
            ("flagger_canary_weight{workload=\"podinfo-primary\",namespace=\"up\"}", 100.0),
            ("flagger_canary_weight{workload=\"podinfo\",namespace=\"up\"}", 0.0),
            ("flagger_canary_weight{workload=\"podinfo-primary\",namespace=\"down\"}", 100.0),
            ("flagger_canary_weight{workload=\"podinfo\",namespace=\"down\"}", 0.0),
            (
                "flagger_canary_metric_analysis{name=\"podinfo\",namespace=\"up\",metric=\"request-success-rate\"}",
                99.5,
            ),
            // Flagger records the P99 in seconds.
            (
                "flagger_canary_metric_analysis{name=\"podinfo\",namespace=\"up\",metric=\"request-duration\"}",
                0.04875,
            ),
            (
                "flagger_canary_successes_total{name=\"podinfo\",namespace=\"up\",deployment_strategy=\"canary\",analysis_status=\"completed\"}",
                1.0,
            ),
            (
                "flagger_canary_failures_total{name=\"podinfo\",namespace=\"down\",deployment_strategy=\"canary\",analysis_status=\"completed\"}",
                1.0,
            ),
            // The two steps of `up` taken in Progressing (30 ms, 700 ms); not `down`'s rollback.
            ("flagger_canary_duration_seconds_count{name=\"podinfo\",namespace=\"up\"}", 2.0),
            ("flagger_canary_duration_seconds_sum{name=\"podinfo\",namespace=\"up\"}", 0.73),
            (
                "flagger_canary_duration_seconds_bucket{le=\"0.05\",name=\"podinfo\",namespace=\"up\"}",
                1.0,
            ),
            (
                "flagger_canary_duration_seconds_bucket{le=\"1.0\",name=\"podinfo\",namespace=\"up\"}",
                2.0,
            ),
            ("flagger_canary_total{namespace=\"up\"}", 2.0),
            ("flagger_canary_total{namespace=\"down\"}", 1.0),
            ("fledge_leader", 0.0),
        ];
        for (series, value) in exact {
            let got = sample(&text, series);
            assert!(
                got.is_some_and(|g| (g - value).abs() < 1e-9),
                "{series} is {got:?}, expected {value}, in\n{text}"
            );
        }
        for absent in [
            "flagger_canary_metric_analysis{name=\"podinfo\",namespace=\"down\"",
            "flagger_canary_duration_seconds_count{name=\"podinfo\",namespace=\"down\"}",
            "flagger_canary_successes_total{name=\"podinfo\",namespace=\"down\"",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
        // The types Flagger declares; counters with OpenMetrics' `_total` only once.
        for line in [
            "# TYPE flagger_info gauge",
            "# TYPE flagger_canary_total gauge",
            "# TYPE flagger_canary_status gauge",
            "# TYPE flagger_canary_weight gauge",
            "# TYPE flagger_canary_metric_analysis gauge",
            "# TYPE flagger_canary_duration_seconds histogram",
            "# TYPE flagger_canary_successes counter",
            "# TYPE flagger_canary_failures counter",
            "# TYPE fledge_leader gauge",
            "# TYPE fledge_reconciles counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("_total_total") && !text.contains("_info_info"));
        assert!(text.ends_with("# EOF\n"), "{text}");

        let text = t.encode();
        assert!(text.contains("# TYPE fledge_metric_query_seconds histogram\n"));
        assert_eq!(
            sample(
                &text,
                "fledge_metric_query_seconds_count{provider=\"prometheus\"}"
            ),
            Some(0.0)
        );
        t.observe_query("prometheus", Duration::from_millis(3));
        let text = t.encode();
        assert_eq!(
            sample(
                &text,
                "fledge_metric_query_seconds_count{provider=\"prometheus\"}"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn policy_decisions_and_errors_are_counted_by_policy_digest_and_kind() {
        let runtime = PolicyRuntime::new(RuntimeConfig::default()).unwrap();
        let builtin = runtime.builtin().unwrap();
        let t = Telemetry::new("1.2.3", "appmesh");
        t.known_policy(&builtin);
        let zero = t.encode();
        let digest = builtin.digest();
        for d in DECISIONS {
            let series = format!("fledge_policy_decisions_total{{policy=\"builtin\",digest=\"{digest}\",decision=\"{d}\"}}");
            assert_eq!(sample(&zero, &series), Some(0.0), "{series} in\n{zero}");
        }
        assert_eq!(
            sample(&zero, "fledge_policy_errors_total{kind=\"trap\"}"),
            Some(0.0)
        );
        let promoted = simulate(&t.judge(&builtin, BUILTIN_POLICY), PROMOTE);
        assert_eq!(promoted.phase, Phase::Succeeded);
        let after_promotion = t.encode();
        let rolled_back = simulate(&t.judge(&builtin, BUILTIN_POLICY), ROLLBACK);
        assert_eq!(rolled_back.phase, Phase::Failed);
        let text = t.encode();
        for line in [
            "# TYPE fledge_policy_decisions counter",
            "# TYPE fledge_policy_decision_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }

        let count = |text: &str, decision: &str| {
            sample(
                text,
                &format!("fledge_policy_decisions_total{{policy=\"builtin\",digest=\"{digest}\",decision=\"{decision}\"}}"),
            )
            .unwrap_or(0.0)
        };
        // One promotion, no rollback from the promotion; the rollback adds holds
        // (failed checks) and no promotion.
        assert_eq!(count(&after_promotion, "promote"), 1.0, "{after_promotion}");
        assert_eq!(count(&after_promotion, "rollback"), 0.0);
        assert!(count(&after_promotion, "advance") >= 1.0);
        assert_eq!(count(&text, "promote"), 1.0, "{text}");
        let holds = rolled_back
            .records
            .iter()
            .filter(|r| r.event.starts_with("Halt "))
            .count() as f64;
        assert_eq!(
            count(&text, "hold") - count(&after_promotion, "hold"),
            holds
        );
        let decided: f64 = DECISIONS.iter().map(|d| count(&text, d)).sum();
        let timed = sample(
            &text,
            &format!(
                "fledge_policy_decision_seconds_count{{policy=\"builtin\",digest=\"{digest}\"}}"
            ),
        );
        assert_eq!(timed, Some(decided), "every decision is timed");

        // Hostile policies: each failure counted under its kind.
        for (fixture, kind) in [
            ("endless-loop", "deadline"),
            ("panic", "trap"),
            ("bad-weight", "invalid_decision"),
            ("memory-bomb", "memory"),
        ] {
            let path =
                std::path::Path::new(env!("FLEDGE_FIXTURE_DIR")).join(format!("{fixture}.wasm"));
            let policy = runtime.load(&std::fs::read(&path).unwrap()).unwrap();
            let report = simulate(&t.judge(&policy, "RolloutPolicy/test/hostile"), PROMOTE);
            assert_eq!(report.phase, Phase::Failed, "{fixture}");
            let text = t.encode();
            let failed = report
                .records
                .iter()
                .filter(|r| r.event.contains("policy failed: "))
                .count() as f64;
            assert_eq!(
                sample(
                    &text,
                    &format!("fledge_policy_errors_total{{kind=\"{kind}\"}}")
                ),
                Some(failed),
                "{fixture}: {text}"
            );
            // Timed under the policy object's label, not the builtin's.
            let series = format!(
                "fledge_policy_decision_seconds_count{{policy=\"RolloutPolicy/test/hostile\",digest=\"{}\"}}",
                policy.digest()
            );
            assert!(
                sample(&text, &series).is_some_and(|n| n >= failed),
                "{series} in\n{text}"
            );
        }
    }

    #[test]
    fn shadow_decisions_and_disagreements_are_counted_by_kind() {
        let t = Telemetry::new("1.2.3", "appmesh");
        let p = "RolloutPolicy/team-a/strict-v2";
        t.count_shadow(p, "sha256:0a", None);
        t.count_shadow(p, "sha256:0a", Some(("hold", "rollback")));
        t.count_shadow(p, "sha256:0a", Some(("hold", "rollback")));
        t.count_shadow(p, "sha256:0a", Some(("advance", "error")));
        let text = t.encode();
        let labels = "policy=\"RolloutPolicy/team-a/strict-v2\",digest=\"sha256:0a\"";
        let decisions = format!("fledge_policy_shadow_decisions_total{{{labels}}}");
        assert_eq!(sample(&text, &decisions), Some(4.0), "{text}");
        let disagreed = |enforced: &str, shadow: &str| {
            sample(
                &text,
                &format!("fledge_policy_shadow_disagreements_total{{{labels},enforced=\"{enforced}\",shadow=\"{shadow}\"}}"),
            )
        };
        assert_eq!(disagreed("hold", "rollback"), Some(2.0), "{text}");
        assert_eq!(disagreed("advance", "error"), Some(1.0), "{text}");
        assert_eq!(
            disagreed("hold", "hold"),
            None,
            "agreeing is not a disagreement"
        );
    }

    #[test]
    fn policy_labels_name_the_object_in_force() {
        use crate::operator::status::PolicyInForce;
        let record = |kind: &str, name: &str| PolicyInForce {
            kind: kind.into(),
            name: name.into(),
            digest: "sha256:00".into(),
        };
        assert_eq!(
            policy_label(&record("RolloutPolicy", "default"), "team-a"),
            "RolloutPolicy/team-a/default"
        );
        assert_eq!(
            policy_label(&record("ClusterRolloutPolicy", "default"), "team-a"),
            "ClusterRolloutPolicy/default"
        );
        assert_eq!(
            policy_label(&record("Builtin", "flagger"), "team-a"),
            "builtin"
        );
    }
}
