//! Writing a Fledge rollout policy in Rust.
//!
//! A policy is one function, `fn(&PolicyInput) -> Decision`, compiled to a
//! WebAssembly component that implements the `fledge:policy/rollout-policy`
//! world (`wit/fledge-policy.wit`). This crate gives that function plain Rust
//! types (the same ones the host uses, so a policy can be unit tested and
//! benchmarked natively) and, on `wasm32`, the glue that exports it:
//!
//! ```ignore
//! fn decide(input: &fledge_policy::PolicyInput) -> fledge_policy::Decision {
//!     fledge_policy::Decision::Promote
//! }
//! fledge_policy::export_policy!(decide);
//! ```
//!
//! A policy that reads the step's time or its policy object's `spec.config`
//! takes a [`Context`] too; one that compares series of its own choosing
//! (the `metric-query` capability) also says which range queries it needs,
//! and finds their answers in the context:
//!
//! ```ignore
//! use fledge_policy::{Context, Decision, PolicyInput, RangeQuery};
//!
//! fn queries(input: &PolicyInput, ctx: &Context) -> Vec<RangeQuery> {
//!     vec![RangeQuery::new("errors", "sum(rate(errors_total[1m]))", 300, 30)]
//! }
//! fn decide(input: &PolicyInput, ctx: &Context) -> Decision {
//!     match ctx.series("errors") {
//!         Ok(points) if points.iter().all(|p| p.value == 0.0) => Decision::Promote,
//!         Ok(_) => Decision::failed_check("errors seen"),
//!         Err(why) => Decision::failed_check(why),
//!     }
//! }
//! fledge_policy::export_policy!(decide, queries = queries);
//! ```
//!
//! Every type here mirrors one WIT type of the same name; the WIT file documents
//! the meaning of each field. [`testing`] has inputs and contexts for native
//! unit tests.
// `deny`, not `forbid`: the guest allocator (`guest::bump`) is the one place allowed unsafe code.
#![deny(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub mod calendar;
pub mod format;
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;

/// `strategy` in the WIT contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Canary,
    BlueGreen,
    AbTesting,
}

/// `phase` in the WIT contract; serialised as in the Canary status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Phase {
    #[default]
    Initializing,
    Initialized,
    Waiting,
    Progressing,
    WaitingPromotion,
    Promoting,
    Finalising,
    Succeeded,
    Failed,
    Terminating,
    Terminated,
}

impl Phase {
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Initializing => "Initializing",
            Phase::Initialized => "Initialized",
            Phase::Waiting => "Waiting",
            Phase::Progressing => "Progressing",
            Phase::WaitingPromotion => "WaitingPromotion",
            Phase::Promoting => "Promoting",
            Phase::Finalising => "Finalising",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Terminating => "Terminating",
            Phase::Terminated => "Terminated",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `string-match` in the WIT contract; serialised as the Canary's
/// `{exact: ...}` / `{prefix: ...}` / `{suffix: ...}` / `{regex: ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: StringMatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MatchRule {
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    pub interval_seconds: u32,
    pub threshold: u32,
    #[serde(default)]
    pub max_weight: Option<u32>,
    #[serde(default)]
    pub step_weight: Option<u32>,
    #[serde(default)]
    pub step_weights: Vec<u32>,
    #[serde(default)]
    pub step_weight_promotion: Option<u32>,
    #[serde(default)]
    pub iterations: Option<u32>,
    #[serde(default)]
    pub match_rules: Vec<MatchRule>,
    #[serde(default)]
    pub mirror: bool,
    #[serde(default)]
    pub mirror_weight: Option<u32>,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval_seconds: 60,
            threshold: 1,
            max_weight: None,
            step_weight: None,
            step_weights: Vec::new(),
            step_weight_promotion: None,
            iterations: None,
            match_rules: Vec::new(),
            mirror: false,
            mirror_weight: None,
        }
    }
}

impl Analysis {
    /// The highest canary weight of a weighted rollout: the last of
    /// `stepWeights` when given, else `maxWeight`, else 100 (never above 100).
    pub fn effective_max_weight(&self) -> u32 {
        match self.step_weights.last() {
            Some(last) => (*last).min(100),
            None => match self.max_weight {
                Some(w) if w > 0 => w.min(100),
                _ => 100,
            },
        }
    }

    /// The strategy Flagger derives from this configuration.
    pub fn strategy(&self) -> Strategy {
        match self.iterations {
            Some(n) if n > 0 && !self.match_rules.is_empty() => Strategy::AbTesting,
            Some(n) if n > 0 => Strategy::BlueGreen,
            _ => Strategy::Canary,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub phase: Phase,
    pub canary_weight: u32,
    pub primary_weight: u32,
    pub iteration: u32,
    pub failed_checks: u32,
    #[serde(default)]
    pub seconds_in_phase: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetricUnit {
    Percent,
    Milliseconds,
    #[default]
    None,
}

/// A measured value, or the reason there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricValue {
    Value(f64),
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    pub name: String,
    pub value: MetricValue,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub unit: MetricUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookKind {
    ConfirmRollout,
    PreRollout,
    Rollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
    PostRollout,
    Rollback,
    Event,
}

impl WebhookKind {
    /// The value of `webhooks[].type` in a Canary (`""` means rollout).
    pub fn parse(s: &str) -> Option<WebhookKind> {
        Some(match s {
            "" | "rollout" => WebhookKind::Rollout,
            "confirm-rollout" => WebhookKind::ConfirmRollout,
            "pre-rollout" => WebhookKind::PreRollout,
            "confirm-traffic-increase" => WebhookKind::ConfirmTrafficIncrease,
            "confirm-promotion" => WebhookKind::ConfirmPromotion,
            "post-rollout" => WebhookKind::PostRollout,
            "rollback" => WebhookKind::Rollback,
            "event" => WebhookKind::Event,
            _ => return None,
        })
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            WebhookKind::ConfirmRollout => "confirm-rollout",
            WebhookKind::PreRollout => "pre-rollout",
            WebhookKind::Rollout => "rollout",
            WebhookKind::ConfirmTrafficIncrease => "confirm-traffic-increase",
            WebhookKind::ConfirmPromotion => "confirm-promotion",
            WebhookKind::PostRollout => "post-rollout",
            WebhookKind::Rollback => "rollback",
            WebhookKind::Event => "event",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookResult {
    pub name: String,
    pub kind: WebhookKind,
    pub passed: bool,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    #[default]
    Ready,
    NotReady(String),
    DeadlineExceeded(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInput {
    pub canary: String,
    pub strategy: Strategy,
    pub analysis: Analysis,
    pub state: State,
    #[serde(default)]
    pub metrics: Vec<MetricResult>,
    #[serde(default)]
    pub webhooks: Vec<WebhookResult>,
    #[serde(default)]
    pub canary_ready: Readiness,
    #[serde(default)]
    pub primary_ready: Readiness,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutePlan {
    pub primary_weight: u32,
    pub canary_weight: u32,
    #[serde(default)]
    pub match_rules: Vec<MatchRule>,
}

impl RoutePlan {
    /// A plain weighted split: `canary` percent to the canary, the rest to the primary.
    pub fn weighted(canary: u32) -> RoutePlan {
        let canary = canary.min(100);
        RoutePlan {
            primary_weight: 100 - canary,
            canary_weight: canary,
            match_rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Advance {
    pub route: RoutePlan,
    pub iteration: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    pub reason: String,
    pub failed_check: bool,
}

/// The one answer of a policy for one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Advance(Advance),
    Hold(Hold),
    Promote,
    Rollback(String),
    Wait(String),
}

impl Decision {
    /// A hold that counts as a failed check.
    pub fn failed_check(reason: impl Into<String>) -> Decision {
        Decision::Hold(Hold {
            reason: reason.into(),
            failed_check: true,
        })
    }

    /// A hold that does not count as a failed check.
    pub fn halt(reason: impl Into<String>) -> Decision {
        Decision::Hold(Hold {
            reason: reason.into(),
            failed_check: false,
        })
    }
}

/// `sample` in the WIT contract: one point of a range query's answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix time in seconds.
    pub timestamp: i64,
    pub value: f64,
}

/// `range-query` in the WIT contract: a range query a policy with the
/// `metric-query` capability needs answered before it decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeQuery {
    /// How the policy finds the answer ([`Context::series`]); unique per step.
    pub name: String,
    /// PromQL for Prometheus; the host fills in MetricTemplate variables
    /// (`{{ namespace }}`, `{{ target }}`, `{{ interval }}`, ...).
    pub query: String,
    /// The range ends at the step's time and starts this long before it.
    pub window_seconds: u32,
    pub step_seconds: u32,
}

impl RangeQuery {
    pub fn new(
        name: impl Into<String>,
        query: impl Into<String>,
        window_seconds: u32,
        step_seconds: u32,
    ) -> RangeQuery {
        RangeQuery {
            name: name.into(),
            query: query.into(),
            window_seconds,
            step_seconds,
        }
    }

    /// Samples the answer has at most: one per step, both ends included.
    pub fn points(&self) -> u64 {
        u64::from(self.window_seconds) / u64::from(self.step_seconds.max(1)) + 1
    }
}

/// `series` in the WIT contract: the answer to one range query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    pub name: String,
    /// The samples in time order, or why there are none.
    #[serde(with = "series_result")]
    pub samples: Result<Vec<Sample>, String>,
}

/// `{"ok": [...]}` or `{"error": "..."}`: readable in a decision journal.
mod series_result {
    use super::Sample;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Answer<T> {
        Ok(T),
        Error(String),
    }

    pub fn serialize<S: Serializer>(
        value: &Result<Vec<Sample>, String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Ok(points) => Answer::Ok(points).serialize(s),
            Err(why) => Answer::<&Vec<Sample>>::Error(why.clone()).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Result<Vec<Sample>, String>, D::Error> {
        Ok(match Answer::<Vec<Sample>>::deserialize(d)? {
            Answer::Ok(points) => Ok(points),
            Answer::Error(why) => Err(why),
        })
    }
}

/// What a policy may know beside its [`PolicyInput`]: the step's time, its
/// policy object's `spec.config`, and the answers to its range queries.
/// The host fills it in through the `clock`, `config` and `metric-query`
/// imports; tests build one with [`Context::at`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    /// The step's time, Unix seconds (UTC).
    pub now: i64,
    /// The policy object's `spec.config`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Answers to this step's range queries, in the order they were asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<Series>,
}

impl Context {
    /// A context at `now` with no config and no series.
    pub fn at(now: i64) -> Context {
        Context {
            now,
            ..Context::default()
        }
    }

    /// This context with `spec.config[key] = value`.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Context {
        self.config.insert(key.into(), value.into());
        self
    }

    /// This context with the answer `samples` to the range query `name`.
    pub fn with_series(mut self, name: impl Into<String>, samples: Vec<Sample>) -> Context {
        self.series.push(Series {
            name: name.into(),
            samples: Ok(samples),
        });
        self
    }

    /// `spec.config[key]`, if set.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config.get(key).map(String::as_str)
    }

    /// The answer to the range query `name`: its samples, or why there are
    /// none (the query failed, was over the host's bounds, or was not asked).
    pub fn series(&self, name: &str) -> Result<&[Sample], String> {
        match self.series.iter().find(|s| s.name == name) {
            Some(Series {
                samples: Ok(points),
                ..
            }) => Ok(points),
            Some(Series {
                samples: Err(why), ..
            }) => Err(format!("series {name}: {why}")),
            None => Err(format!(
                "series {name}: not answered (return it from the policy's queries)"
            )),
        }
    }
}

/// Log levels of the host's `log` import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes a line to the operator's log. Natively (tests, benchmarks) it is a no-op.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    guest::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// Exports a policy's functions as the component's `decide` (and
/// `queries`). On targets other than `wasm32` it expands to nothing, so the
/// same crate builds natively for tests and benchmarks.
///
/// - `export_policy!(decide)`: `fn(&PolicyInput) -> Decision`.
/// - `export_policy!(decide, with_context)`: `fn(&PolicyInput, &Context) ->
///   Decision`; the context has the step's time and `spec.config`.
/// - `export_policy!(decide, queries = queries)`: also `fn(&PolicyInput,
///   &Context) -> Vec<RangeQuery>`, asked first; `decide`'s context then has
///   the answers. Needs the `metric-query` capability on the policy object.
#[macro_export]
macro_rules! export_policy {
    ($decide:path) => {
        $crate::export_policy!(@export
            |input| $crate::guest::run(input, $decide),
            |_input| ::std::vec::Vec::new());
    };
    ($decide:path, with_context) => {
        $crate::export_policy!(@export
            |input| $crate::guest::run_with_context(input, $decide),
            |_input| ::std::vec::Vec::new());
    };
    ($decide:path, queries = $queries:path) => {
        $crate::export_policy!(@export
            |input| $crate::guest::run_with_series(input, $decide),
            |input| $crate::guest::queries(input, $queries));
    };
    (@export $decide:expr, $queries:expr) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::guest::bindings::fledge::policy::types as wit;
            struct FledgePolicyExport;
            impl $crate::guest::bindings::Guest for FledgePolicyExport {
                fn decide(input: wit::PolicyInput) -> wit::Decision {
                    let run: fn(wit::PolicyInput) -> wit::Decision = $decide;
                    run(input)
                }
                fn queries(input: wit::PolicyInput) -> ::std::vec::Vec<wit::RangeQuery> {
                    let run: fn(wit::PolicyInput) -> ::std::vec::Vec<wit::RangeQuery> = $queries;
                    run(input)
                }
            }
            $crate::guest::bindings::__export_rollout_policy!(
                FledgePolicyExport with_types_in $crate::guest::bindings
            );
        };
    };
}
