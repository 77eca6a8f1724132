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
//! Every type here mirrors one WIT type of the same name; the WIT file documents
//! the meaning of each field.
// `deny`, not `forbid`: the guest allocator (`guest::bump`) is the one place allowed unsafe code.
#![deny(unsafe_code)]

use serde::{Deserialize, Serialize};

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

/// Exports `fn(&PolicyInput) -> Decision` as the component's `decide`.
/// On targets other than `wasm32` it expands to nothing, so the same crate
/// builds natively for tests and benchmarks.
#[macro_export]
macro_rules! export_policy {
    ($decide:path) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct FledgePolicyExport;
            impl $crate::guest::bindings::Guest for FledgePolicyExport {
                fn decide(
                    input: $crate::guest::bindings::fledge::policy::types::PolicyInput,
                ) -> $crate::guest::bindings::fledge::policy::types::Decision {
                    $crate::guest::run(input, $decide)
                }
            }
            $crate::guest::bindings::__export_rollout_policy!(
                FledgePolicyExport with_types_in $crate::guest::bindings
            );
        };
    };
}
