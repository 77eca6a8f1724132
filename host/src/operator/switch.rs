//! Moving a Canary's traffic to another router when its `spec.provider`
//! changes, without a new analysis.
//!
//! `status.router` remembers which router carries the traffic (absent: the
//! one `spec.provider` names). When `spec.provider` names another router:
//!
//! 1. an analysis in flight (or the bootstrap) ends on the recorded router,
//!    with the metrics and weights it started with ([`Stage::Deferred`]);
//! 2. otherwise the new router's objects are reconciled with all traffic on
//!    the primary, and analysis steps wait until the new router reports
//!    ready; the old router's objects keep serving meanwhile ([`Stage::Move`]);
//! 3. once ready, the switch is recorded in `status.router`, with the old
//!    provider as `retiring`;
//! 4. from [`RETIRE_AFTER`] later, reconciles retire the old router's
//!    objects ([`Router::retire`]) until none is left ([`Stage::Retire`]);
//!    analysis steps go on meanwhile, on the new router.
//!
//! Each reconcile takes at most one of these transitions, and each is told
//! once, by an Event, and kept in the `RouterSwitch` condition.
use super::router::{self, Ready, RouteTarget, Router};
use super::status::{CanaryStatus, Condition, RouterInUse};
use anyhow::{Context as _, Result};
use fledge_policy::{Phase, RoutePlan};
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

/// The condition that tells where a switch of routers stands.
pub const CONDITION: &str = "RouterSwitch";

const DEFERRED: &str = "Deferred";
const MOVING: &str = "Moving";
const WAITING: &str = "WaitingForRouter";
const INVALID: &str = "InvalidSpec";
const SWITCHED: &str = "Switched";
const RETIRE_PENDING: &str = "RetirePending";
const RETIRE_FAILED: &str = "RetireFailed";
const CANCELLED: &str = "Cancelled";

/// How soon to look again at a router that is not ready yet.
const READY_POLL: Duration = Duration::from_secs(2);
/// How long the old router's objects keep serving after the new router
/// reports ready: a Gateway controller writes `Accepted` before every proxy
/// has the route, and clients of the old data plane need a moment to leave it.
pub const RETIRE_AFTER: Duration = Duration::from_secs(10);
/// How soon to look again at a spec that lacks what the new router needs
/// (a corrected spec wakes the Canary sooner).
const INVALID_POLL: Duration = Duration::from_secs(60);

/// Where a Canary stands between the router recorded in its status and the
/// one its `spec.provider` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// One router, nothing left to retire.
    Settled,
    /// Another router is wanted, but an analysis or the bootstrap is in
    /// flight: it ends on the recorded router first.
    Deferred,
    /// Another router is wanted and nothing is in flight: move to it.
    Move,
    /// Traffic moved; the objects of this provider's router are still there.
    Retire(String),
}

/// Phases in which traffic or objects are being changed by the recorded
/// router: initialization and analysis, up to the end of the promotion.
/// `Waiting` is not among them: the confirm-rollout gate holds before the
/// canary is scaled up and all traffic is still on the primary, so the
/// analysis that follows starts on the new router.
pub fn in_flight(phase: Phase) -> bool {
    use Phase::*;
    matches!(
        phase,
        Initializing
            | Progressing
            | WaitingPromotion
            | Promoting
            | Finalising
            | Terminating
            | Terminated
    )
}

/// The router recorded in `status`, or the wanted one for a Canary with no record.
pub fn recorded(status: &CanaryStatus, wanted: &str) -> RouterInUse {
    status.router.clone().unwrap_or_else(|| RouterInUse {
        provider: wanted.to_string(),
        retiring: None,
        since: None,
        moving: None,
    })
}

/// The stage of a Canary whose recorded router is `record`; `same`: the
/// recorded provider and `spec.provider` name one router.
pub fn stage(record: &RouterInUse, same: bool, phase: Phase, step_pending: bool) -> Stage {
    if !same {
        if in_flight(phase) || step_pending {
            Stage::Deferred
        } else {
            Stage::Move
        }
    } else if let Some(old) = &record.retiring {
        Stage::Retire(old.clone())
    } else {
        Stage::Settled
    }
}

/// An Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What one reconcile of the switch decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub stage: Stage,
    /// `status.router` from now on.
    pub router: RouterInUse,
    /// The `RouterSwitch` condition from now on: (status, reason, message);
    /// `None` leaves it as it is.
    pub condition: Option<(&'static str, &'static str, String)>,
    /// Events for what changed (nothing is told twice).
    pub notes: Vec<Note>,
    /// `Some`: take no analysis step now; look again after this long.
    pub hold: Option<Duration>,
    /// `Some`: look again no later than this (analysis steps go on).
    pub wake: Option<Duration>,
}

impl Moved {
    /// `status` with this reconcile's record and condition.
    pub fn apply(&self, status: &mut CanaryStatus, now: Timestamp) {
        status.router = Some(self.router.clone());
        if let Some((s, reason, message)) = &self.condition {
            status.set_condition(CONDITION, s, reason, message, now);
        }
    }
}

struct Telling<'a> {
    prev: Option<&'a Condition>,
    condition: Option<(&'static str, &'static str, String)>,
    notes: Vec<Note>,
}

impl Telling<'_> {
    /// Sets the condition; the Event goes out when the reason is new, or,
    /// with `by_message`, when the message is.
    fn say(
        &mut self,
        status: &'static str,
        reason: &'static str,
        message: String,
        warning: bool,
        by_message: bool,
    ) {
        let new = match self.prev {
            None => true,
            Some(c) => c.reason != reason || (by_message && c.message != message),
        };
        if new {
            self.notes.push(Note {
                warning,
                reason,
                message: message.clone(),
            });
        }
        self.condition = Some((status, reason, message));
    }
}

/// One reconcile of the switch for the Canary `t`, whose `spec.provider` is
/// `wanted` and whose stored status is `status`, at `now`.
pub async fn advance(
    routers: &[Box<dyn Router>],
    wanted: &str,
    t: &RouteTarget<'_>,
    status: &CanaryStatus,
    now: Timestamp,
) -> Result<Moved> {
    let mut record = recorded(status, wanted);
    let new = router::for_provider(routers, wanted)
        .with_context(|| format!("no router serves provider `{wanted}`"))?;
    // A recorded provider this operator has no router for cannot be moved
    // away from: the wanted router takes over as it is.
    let old = router::for_provider(routers, &record.provider);
    let same = old.is_none_or(|o| router::same(o, new));
    if old.is_none() {
        record.provider = wanted.to_string();
    }
    let stage = stage(&record, same, status.phase(), status.pending_step.is_some());
    let id = t.rollout.id();
    let mut tell = Telling {
        prev: status.condition(CONDITION),
        condition: None,
        notes: Vec::new(),
    };
    let mut hold = None;
    let mut wake = None;
    match &stage {
        Stage::Settled => {
            // A move given up before it happened leaves the objects made for
            // it: they are retired like a router moved away from.
            let abandoned = record.moving.take().filter(|m| {
                router::for_provider(routers, m).is_some_and(|r| !router::same(r, new))
            });
            if tell
                .prev
                .is_some_and(|c| [DEFERRED, MOVING, WAITING, INVALID].contains(&c.reason.as_str()))
                || abandoned.is_some()
            {
                let removing = abandoned
                    .as_ref()
                    .map(|m| format!("; removing the {m} objects made for the move"))
                    .unwrap_or_default();
                tell.say(
                    "False",
                    CANCELLED,
                    format!(
                        "spec.provider is {wanted} again: {id} stays on {}{removing}",
                        record.provider
                    ),
                    false,
                    false,
                );
            }
            if let Some(m) = abandoned {
                record.retiring = Some(m);
                record.since = None;
                wake = Some(Duration::from_millis(100));
            }
        }
        Stage::Deferred => tell.say(
            "Unknown",
            DEFERRED,
            format!(
                "spec.provider changed from {} to {wanted} during the analysis of {id}: it \
                 finishes on {} with the metrics and weights it started with; traffic moves \
                 to {wanted} when it has ended",
                record.provider, record.provider
            ),
            false,
            false,
        ),
        Stage::Move => {
            let issues = new.needs(t);
            if !issues.is_empty() {
                let text = issues
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                tell.say(
                    "False",
                    INVALID,
                    format!(
                        "{id} cannot move to {wanted}: {text}; {} keeps carrying the traffic",
                        record.provider
                    ),
                    true,
                    true,
                );
                hold = Some(INVALID_POLL);
            } else {
                let entering =
                    !matches!(tell.prev, Some(c) if c.reason == MOVING || c.reason == WAITING);
                // The new router starts with everything on the primary,
                // whatever the old one holds: the primary is what is promoted.
                // The split first, so no object of the new router ever
                // routes elsewhere; then the rest, keeping that split.
                let all_primary = RoutePlan {
                    primary_weight: 100,
                    canary_weight: 0,
                    match_rules: Vec::new(),
                };
                // Remembered before anything is made, so a move given up
                // later retires what this reconcile creates.
                record.moving = Some(wanted.to_string());
                new.set_routes(t, &all_primary)
                    .await
                    .with_context(|| format!("routing {id} to its primary through {wanted}"))?;
                new.reconcile(t)
                    .await
                    .with_context(|| format!("creating the {wanted} objects of {id}"))?;
                if entering {
                    tell.notes.push(Note {
                        warning: false,
                        reason: MOVING,
                        message: format!(
                            "Moving {id} from {} to {wanted}: its {wanted} objects route all \
                             traffic to the primary; {} keeps serving until {wanted} is ready",
                            record.provider, record.provider
                        ),
                    });
                }
                match new.ready(t).await? {
                    Ready::No(why) => {
                        tell.say(
                            "Unknown",
                            WAITING,
                            format!("waiting for {wanted} to carry the traffic of {id}: {why}"),
                            false,
                            false,
                        );
                        hold = Some(READY_POLL);
                    }
                    Ready::Yes => {
                        let from = std::mem::replace(&mut record.provider, wanted.to_string());
                        // One router is retired at a time: moving back to the one
                        // being retired retires the one moved away from instead.
                        record.retiring = Some(from.clone());
                        record.since = Some(super::status::format_time(now));
                        record.moving = None;
                        tell.say(
                            "True",
                            SWITCHED,
                            format!(
                                "{wanted} carries the traffic of {id}; the {from} objects are \
                                 retired in {}s",
                                RETIRE_AFTER.as_secs()
                            ),
                            false,
                            false,
                        );
                        // Look again at once: the record is written first, then the old
                        // objects go.
                        hold = Some(Duration::from_millis(100));
                    }
                }
            }
        }
        Stage::Retire(from) => match router::for_provider(routers, from) {
            None => {
                record.retiring = None;
                record.since = None;
            }
            Some(old) => match draining(&record, now) {
                left @ Some(_) => wake = left,
                None => match old.retire(t).await {
                    Err(e) => tell.say(
                        "True",
                        RETIRE_FAILED,
                        format!("removing the {from} objects of {id} failed: {e:#}; retrying"),
                        true,
                        false,
                    ),
                    Ok(r) => {
                        if !r.deleted.is_empty() {
                            tell.notes.push(Note {
                                warning: false,
                                reason: "Retired",
                                message: format!(
                                    "Deleted the {from} objects of {id}: {}",
                                    r.deleted.join(", ")
                                ),
                            });
                        }
                        if r.done() && tell.prev.is_some_and(|c| c.reason == CANCELLED) {
                            record.retiring = None;
                            tell.say(
                                "False",
                                CANCELLED,
                                format!(
                                    "spec.provider is {p} again: {id} stays on {p}; the {from} \
                                 objects made for the move are gone",
                                    p = record.provider
                                ),
                                false,
                                false,
                            );
                        } else if r.done() {
                            record.retiring = None;
                            record.since = None;
                            tell.say(
                                "True",
                                SWITCHED,
                                format!(
                                    "{} carries the traffic of {id}; the {from} objects are gone",
                                    record.provider
                                ),
                                false,
                                true,
                            );
                        } else {
                            tell.say(
                                "True",
                                RETIRE_PENDING,
                                format!("{} kept for {id}: {}", r.kept.join(", "), r.why),
                                true,
                                true,
                            );
                        }
                    }
                },
            },
        },
    }
    Ok(Moved {
        stage,
        router: record,
        condition: tell.condition,
        notes: tell.notes,
        hold,
        wake,
    })
}

/// How much longer the retiring router's objects stay, if at all (see
/// [`RETIRE_AFTER`]). A record without a time (written before it was kept)
/// is past it.
pub fn draining(record: &RouterInUse, now: Timestamp) -> Option<Duration> {
    let since: Timestamp = record.since.as_deref()?.parse().ok()?;
    let elapsed = Duration::try_from(now.duration_since(since)).unwrap_or_default();
    RETIRE_AFTER
        .checked_sub(elapsed)
        .filter(|left| !left.is_zero())
}

#[cfg(test)]
mod tests;
