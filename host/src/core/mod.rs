//! The rollout state machine: observations in, actions out.
//!
//! No I/O, no clock, no Kubernetes client, no wasmtime: time arrives as
//! `Observations::now`, every judgement goes through [`Judge`], and the I/O a
//! step needs (webhook calls, metric queries) is asked for with
//! [`Outcome::Need`]. The shell performs it, records the answer in the
//! observations, and calls [`step`] again; the same observations always give
//! the same outcome. The operator and the simulator are two such shells.
//!
//! ```text
//!   shell: observe ──► core::step ──► Need(request) ──► shell performs it ─┐
//!                          ▲                                                │
//!                          └──────────── observations + answer ◄────────────┘
//!                      Done(Tick { status, actions }) ──► shell executes actions, writes status once
//! ```

pub mod agree;
pub mod judge;
mod machine;
pub mod messages;
pub mod readiness;
pub mod revision;
pub mod rollout;
pub mod text;
pub mod validate;

pub use agree::agree;
pub use judge::{Judge, JudgeError};
pub use machine::step;
pub use rollout::Rollout;

use fledge_policy::{
    Decision, MetricResult, Phase, RangeQuery, Readiness, RoutePlan, Series, WebhookKind,
    WebhookResult,
};
use rollout::Severity;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the core remembers between steps: the Canary's status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    pub phase: Phase,
    pub canary_weight: u32,
    pub failed_checks: u32,
    pub iterations: u32,
    /// Revision of the target under analysis (or last analysed).
    pub last_applied_spec: String,
    /// Revision currently running as the primary.
    pub last_promoted_spec: String,
    /// Unix seconds of the last phase change.
    pub last_transition: i64,
}

/// The live traffic split, as read from the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routes {
    pub primary: u32,
    pub canary: u32,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            primary: 100,
            canary: 0,
        }
    }
}

/// Everything the shell observed for this step, plus the answers to the
/// requests of this step so far.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Unix seconds.
    pub now: i64,
    /// [`revision::revision`] of the target now.
    pub revision: String,
    pub canary_ready: Readiness,
    pub primary_ready: Readiness,
    pub routes: Routes,
    /// Results of the webhooks called this step, by type, in spec order; a
    /// type that is absent has not been called yet.
    pub webhooks: BTreeMap<WebhookKind, Vec<WebhookResult>>,
    /// Metrics queried this step, in [`Rollout::query_order`]; `None` until
    /// a [`Request::Metrics`] was answered.
    pub metrics: Option<Vec<MetricResult>>,
    /// Answers to the policy's range queries of this step, in the order of
    /// [`Request::Series`]; `None` until asked for and answered.
    pub series: Option<Vec<Series>>,
    /// The policy's decision of this step, once a [`Request::Gate`] brought
    /// it back, so the policy is asked once per step.
    pub decision: Option<Decision>,
}

/// I/O the core needs before it can finish a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Call the webhooks of this type in spec order, sending `phase` in the
    /// payload, until [`hooks_stop`] says so, and record their results under
    /// `Observations::webhooks`.
    Webhooks { kind: WebhookKind, phase: Phase },
    /// Query the metrics in [`Rollout::query_order`], stopping after the first
    /// result that [`rollout::MetricSpec::stops`] the analysis, and record them
    /// in `Observations::metrics`. One request per step, however many metrics.
    Metrics,
    /// Run the policy's range queries (the `metric-query` capability), each
    /// over the window ending at `Observations::now`, and record one
    /// [`Series`] per query, in order and under its name, in
    /// `Observations::series`. A query that fails is answered with its error:
    /// the policy judges what that means.
    Series(Vec<RangeQuery>),
    /// A confirm-* gate before acting on `decision`: call the webhooks as for
    /// [`Request::Webhooks`], and record `decision` in `Observations::decision`.
    Gate {
        kind: WebhookKind,
        phase: Phase,
        decision: Decision,
    },
}

/// Whether a shell calling webhooks of `kind` in spec order stops after
/// `result`: gates and checks stop at the first failure; rollback hooks at the
/// first that signals a rollback (that is, passes), as in Flagger.
pub fn hooks_stop(kind: WebhookKind, result: &WebhookResult) -> bool {
    match kind {
        WebhookKind::Rollback => result.passed,
        _ => !result.passed,
    }
}

/// The Events for the results of post-rollout hooks, which the shell calls
/// after carrying out a step's actions and writing its status
/// ([`Tick::post_rollout`]).
pub fn post_rollout_events(results: &[WebhookResult]) -> Vec<Event> {
    results
        .iter()
        .map(|h| {
            let (warning, message) = if h.passed {
                (false, messages::check_passed(h.kind, &h.name))
            } else {
                (true, messages::post_rollout_failed(&h.name, &h.message))
            };
            Event {
                warning,
                reason: "Synced",
                message: text::one_line(&message, validate::MAX_REASON_BYTES * 2),
                log: None,
            }
        })
        .collect()
}

/// An effect for the shell to carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create or update the primary Deployment and HPA, the Services and the
    /// mesh objects (idempotent; done every step, as drift is repaired).
    EnsureObjects,
    /// Apply a traffic split to the mesh.
    SetRoutes(RoutePlan),
    /// Scale the target (canary) Deployment up from zero.
    ScaleCanaryUp,
    /// Scale the target (canary) Deployment to zero.
    ScaleCanaryToZero,
    /// Copy the target's pod template (and its ConfigMaps/Secrets) to the primary.
    PromoteToPrimary,
    Event(Event),
    Alert(Alert),
}

/// A Kubernetes Event (and log line) about the Canary.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub warning: bool,
    /// Stable CamelCase reason (`Advance`, `Halt`, `Rollback`, ...).
    pub reason: &'static str,
    /// The Event note.
    pub message: String,
    /// The log line, when it words things differently from the Event.
    pub log: Option<String>,
}

impl Event {
    pub fn log_message(&self) -> &str {
        self.log.as_deref().unwrap_or(&self.message)
    }
}

/// A notification for the Canary's alert providers.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub severity: Severity,
    pub message: String,
    /// Webhook-triggered alerts can be muted per webhook.
    pub muted: bool,
}

/// The result of a finished step.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// The complete new status: the shell writes it once.
    pub status: Status,
    pub actions: Vec<Action>,
    /// When to run the next step.
    pub requeue: Duration,
    /// The step ended the analysis: see [`PostRollout`].
    pub post_rollout: Option<PostRollout>,
}

/// The end of an analysis (Succeeded or Failed). Once the step's actions are
/// carried out and its status is written, the shell calls the post-rollout
/// hooks with `phase` in the payload, emits [`post_rollout_events`] for their
/// results, then carries out `then` (as Flagger reports a promotion only
/// after its post-rollout hooks).
#[derive(Debug, Clone, PartialEq)]
pub struct PostRollout {
    pub phase: Phase,
    pub then: Vec<Action>,
}

impl Tick {
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.actions.iter().filter_map(|a| match a {
            Action::Event(e) => Some(e),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Need(Request),
    Done(Tick),
}

#[cfg(test)]
mod tests;
