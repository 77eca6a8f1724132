//! The core's view of a Canary: validated, defaults applied, names derived.
use super::messages;
use fledge_policy::{Analysis, MetricResult, MetricUnit, MetricValue, Strategy, WebhookKind};
use std::collections::BTreeMap;
use std::time::Duration;

/// A validated Canary, as the state machine uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub name: String,
    pub namespace: String,
    /// `targetRef.name`: the Deployment users edit.
    pub target: String,
    /// `service.name`, else the target name: the apex of the mesh objects.
    pub apex: String,
    pub provider: String,
    pub autoscaler: Option<String>,
    pub service_port: i32,
    pub analysis: Analysis,
    pub strategy: Strategy,
    pub metrics: Vec<MetricSpec>,
    pub webhooks: Vec<WebhookSpec>,
    pub alerts: Vec<AlertSpec>,
    pub progress_deadline: Duration,
    pub skip_analysis: bool,
    pub suspend: bool,
    pub canary_ready_threshold: u32,
    pub primary_ready_threshold: u32,
}

impl Rollout {
    /// `<canary>.<namespace>`, as messages name the Canary.
    pub fn id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
    /// `<target>.<namespace>`, as messages name the target Deployment.
    pub fn target_id(&self) -> String {
        format!("{}.{}", self.target, self.namespace)
    }
    /// `<target>-primary`.
    pub fn primary(&self) -> String {
        format!("{}-primary", self.target)
    }
    pub fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.analysis.interval_seconds))
    }
    pub fn webhooks_of(&self, kind: WebhookKind) -> impl Iterator<Item = &WebhookSpec> {
        self.webhooks.iter().filter(move |w| w.kind == kind)
    }
    pub fn has_webhooks(&self, kind: WebhookKind) -> bool {
        self.webhooks_of(kind).next().is_some()
    }

    /// The metrics in the order they are queried, as Flagger checks them:
    /// the built-in ones and inline `query`s in spec order, then templates.
    pub fn query_order(&self) -> impl Iterator<Item = &MetricSpec> {
        let templated = |m: &&MetricSpec| matches!(m.source, MetricSource::Template { .. });
        let first = self.metrics.iter().filter(move |m| !templated(m));
        first.chain(self.metrics.iter().filter(templated))
    }
}

/// What a metric query came back with, before the core words it.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryOutcome {
    Value(f64),
    /// The query ran and returned no sample (or NaN); the provider's error text.
    NoValues(String),
    /// The query could not be run or answered: the provider's error text.
    Failed(String),
    /// The metric's template, Secret or provider could not be set up: the
    /// whole message, already worded (`Metric template <name>.<ns> ... error: ...`).
    Refused(String),
}

/// Where a metric's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricSource {
    /// `request-success-rate` / `request-duration`, from the mesh's Envoy statistics.
    Builtin,
    /// A deprecated inline `query`.
    Query(String),
    /// A `templateRef` to a MetricTemplate.
    Template { name: String, namespace: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    pub name: String,
    pub interval: Duration,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub unit: MetricUnit,
    pub source: MetricSource,
    pub variables: BTreeMap<String, String>,
}

impl MetricSpec {
    /// Whether `value` is inside the declared range. The host uses it only to
    /// stop querying after the first out-of-range metric, as Flagger does; the
    /// pass/fail judgement itself is the policy's.
    pub fn in_range(&self, value: f64) -> bool {
        fledge_policy::format::within(value, self.min, self.max)
    }

    /// The result the policy sees for `outcome`, errors worded as Flagger words them.
    pub fn result(&self, r: &Rollout, outcome: QueryOutcome) -> MetricResult {
        let value = match outcome {
            QueryOutcome::Value(v) => MetricValue::Value(v),
            QueryOutcome::NoValues(err) => {
                MetricValue::Error(messages::metric_no_values(r, self, &err))
            }
            QueryOutcome::Failed(err) => {
                MetricValue::Error(messages::metric_query_failed(self, &err))
            }
            QueryOutcome::Refused(message) => MetricValue::Error(message),
        };
        MetricResult {
            name: self.name.clone(),
            value,
            min: self.min,
            max: self.max,
            unit: self.unit,
        }
    }

    /// Whether querying stops after this result, as Flagger's does: at the
    /// first error or value out of range.
    pub fn stops(&self, result: &MetricResult) -> bool {
        match result.value {
            MetricValue::Value(v) => !self.in_range(v),
            MetricValue::Error(_) => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSpec {
    pub name: String,
    pub kind: WebhookKind,
    pub url: String,
    pub timeout: Duration,
    pub retries: u32,
    pub mute_alert: bool,
    pub disable_tls: bool,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertSpec {
    pub name: String,
    /// Alerts of this severity and above are sent.
    pub severity: Severity,
    pub provider: String,
    pub provider_namespace: String,
}
