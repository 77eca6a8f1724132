//! One step of a Canary: Flagger's phases, webhook order and promotion, with
//! every judgement asked of the policy.
use super::messages::{self as msg, alert};
use super::rollout::{Rollout, Severity};
use super::text;
use super::validate::{validate_decision, MAX_REASON_BYTES};
use super::{
    Action, Alert, Event, Judge, Observations, Outcome, PostRollout, Request, Status, Tick,
};
use fledge_policy::{
    Context, Decision, MetricResult, Phase, PolicyInput, Readiness, RoutePlan, State, Strategy,
    WebhookKind, WebhookResult,
};

/// Longest Event note: a reason plus the canary's words around it.
const EVENT_BYTES: usize = MAX_REASON_BYTES * 2;

/// Runs one step of `rollout` from `status` with what was observed.
pub fn step(rollout: &Rollout, status: &Status, obs: &Observations, judge: &dyn Judge) -> Outcome {
    let mut t = Step::new(rollout, status, obs);
    if rollout.suspend {
        t.normal("Suspended", msg::suspended());
        return t.done();
    }
    t.actions.push(Action::EnsureObjects);
    match run(&mut t, judge) {
        Ok(()) => t.done(),
        Err(request) => Outcome::Need(request),
    }
}

/// A step in progress. `Err(Request)` from any stage means "ask the shell".
struct Step<'a> {
    r: &'a Rollout,
    obs: &'a Observations,
    old: &'a Status,
    status: Status,
    actions: Vec<Action>,
    post_rollout: Option<PostRollout>,
    /// Index in `actions` from which actions follow the post-rollout hooks.
    ended_at: Option<usize>,
}

type Stage = Result<(), Request>;

impl<'a> Step<'a> {
    fn new(r: &'a Rollout, old: &'a Status, obs: &'a Observations) -> Self {
        Step {
            r,
            obs,
            old,
            status: old.clone(),
            actions: Vec::new(),
            post_rollout: None,
            ended_at: None,
        }
    }

    fn done(mut self) -> Outcome {
        if let (Some(post), Some(at)) = (&mut self.post_rollout, self.ended_at) {
            post.then = self.actions.split_off(at);
        }
        if self.status.phase != self.old.phase {
            self.status.last_transition = self.obs.now;
        }
        Outcome::Done(Tick {
            status: self.status,
            actions: self.actions,
            requeue: self.r.interval(),
            post_rollout: self.post_rollout,
        })
    }

    fn event(&mut self, warning: bool, reason: &'static str, message: String) {
        self.actions.push(Action::Event(Event {
            warning,
            reason,
            message: text::one_line(&message, EVENT_BYTES),
            log: None,
        }));
    }
    fn normal(&mut self, reason: &'static str, message: String) {
        self.event(false, reason, message)
    }
    fn warning(&mut self, reason: &'static str, message: String) {
        self.event(true, reason, message)
    }
    fn alert(&mut self, severity: Severity, message: impl Into<String>, muted: bool) {
        self.actions.push(Action::Alert(Alert {
            severity,
            message: message.into(),
            muted,
        }));
    }

    /// Ends the analysis in `phase`: the post-rollout hooks run once the
    /// step is carried out, and events emitted after this call follow them.
    fn end(&mut self, phase: Phase) {
        self.post_rollout = Some(PostRollout {
            phase,
            then: Vec::new(),
        });
        self.ended_at = Some(self.actions.len());
    }

    fn set_phase(&mut self, phase: Phase) {
        self.status.phase = phase;
    }

    /// The results of this step's webhooks of `kind`, calling them first if needed.
    fn hooks(&self, kind: WebhookKind, phase: Phase) -> Result<&'a [WebhookResult], Request> {
        self.results(kind).ok_or(Request::Webhooks { kind, phase })
    }

    /// This step's results of the webhooks of `kind`: none when the Canary
    /// has none, `None` when they have not been called yet.
    fn results(&self, kind: WebhookKind) -> Option<&'a [WebhookResult]> {
        if !self.r.has_webhooks(kind) {
            return Some(&[]);
        }
        self.obs.webhooks.get(&kind).map(Vec::as_slice)
    }

    /// Whether the webhook `name` of `kind` has `muteAlert` set.
    fn muted(&self, kind: WebhookKind, name: &str) -> bool {
        self.r
            .webhooks_of(kind)
            .any(|w| w.name == name && w.mute_alert)
    }

    /// Emits `<Type> check <hook> passed` for each passed hook of a gate.
    fn passed_events(&mut self, results: &[WebhookResult]) {
        for h in results.iter().filter(|h| h.passed) {
            self.normal("Synced", msg::check_passed(h.kind, &h.name));
        }
    }
}

fn first_failed(results: &[WebhookResult]) -> Option<&WebhookResult> {
    results.iter().find(|h| !h.passed)
}

fn run(t: &mut Step<'_>, judge: &dyn Judge) -> Stage {
    let phase = t.old.phase;
    if phase == Phase::Initializing {
        return initialize(t);
    }
    let active = matches!(
        phase,
        Phase::Progressing
            | Phase::Waiting
            | Phase::WaitingPromotion
            | Phase::Promoting
            | Phase::Finalising
    );
    let changed = revision_changed(t.old, &t.obs.revision);
    if !active && !changed {
        return Ok(());
    }
    let analysing = matches!(
        phase,
        Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting
    );
    // In the analysis phases the policy judges readiness; before them the
    // host only waits for a healthy primary, and a primary past its
    // deadline fails the rollout.
    if !analysing && !t.r.skip_analysis {
        let obs = t.obs;
        if let Some(stage) = unless_ready(t, &obs.primary_ready) {
            return stage;
        }
    }
    if !active || phase == Phase::Waiting {
        return start(t);
    }
    if matches!(phase, Phase::Progressing | Phase::WaitingPromotion) {
        if changed {
            t.normal("Restart", msg::restart(t.r));
            t.actions.push(Action::SetRoutes(RoutePlan::weighted(0)));
            t.status = Status {
                phase: Phase::Progressing,
                canary_weight: 0,
                failed_checks: 0,
                iterations: 0,
                last_applied_spec: t.obs.revision.clone(),
                ..t.old.clone()
            };
            return Ok(());
        }
        // Back at the promoted revision (a manual rollback of the target):
        // not a new revision, so no restart; what gets promoted is what runs.
        t.status.last_applied_spec = t.obs.revision.clone();
        // A progress deadline is not a judgement: past it the canary cannot
        // become healthy in time, whatever a policy would say.
        if let Readiness::DeadlineExceeded(why) = &t.obs.canary_ready {
            return deadline_rollback(t, why);
        }
    }
    if t.r.skip_analysis {
        return skip_analysis(t);
    }
    if phase == Phase::Finalising {
        return finalise(t);
    }
    analyse(t, judge)
}

/// `lastAppliedSpec` empty, or a revision that is neither the applied nor the
/// promoted one. Returning to the promoted revision is not a change.
fn revision_changed(s: &Status, revision: &str) -> bool {
    s.last_applied_spec.is_empty()
        || (revision != s.last_applied_spec && revision != s.last_promoted_spec)
}

fn initialize(t: &mut Step<'_>) -> Stage {
    match &t.obs.primary_ready {
        Readiness::Ready => {}
        Readiness::NotReady(why) => {
            t.warning("NotReady", why.clone());
            return Ok(());
        }
        Readiness::DeadlineExceeded(why) => {
            // The primary never became healthy: initialization fails. The
            // target keeps running, as it is the only healthy copy.
            let why = why.clone();
            t.warning("NotReady", why.clone());
            t.alert(Severity::Error, why, false);
            t.warning("Rollback", msg::initialization_failed(t.r));
            t.status = Status {
                phase: Phase::Failed,
                last_applied_spec: t.obs.revision.clone(),
                ..Status::default()
            };
            t.end(Phase::Failed);
            return Ok(());
        }
    }
    t.actions.push(Action::ScaleCanaryToZero);
    t.status = Status {
        phase: Phase::Initialized,
        last_applied_spec: t.obs.revision.clone(),
        last_promoted_spec: t.obs.revision.clone(),
        ..Status::default()
    };
    t.normal("Initialized", msg::initialized(t.r));
    t.alert(Severity::Info, alert::INITIALIZED, false);
    Ok(())
}

/// A new revision: confirm-rollout gate, then scale the canary up.
fn start(t: &mut Step<'_>) -> Stage {
    let gate = t.hooks(WebhookKind::ConfirmRollout, t.old.phase)?;
    if let Some(closed) = first_failed(gate) {
        if t.old.phase != Phase::Waiting {
            let text = msg::waiting_approval(t.r, &closed.name);
            let muted = t.muted(WebhookKind::ConfirmRollout, &closed.name);
            t.warning("Halt", text);
            t.alert(Severity::Warn, alert::WAITING_APPROVAL, muted);
            t.set_phase(Phase::Waiting);
        }
        return Ok(());
    }
    t.passed_events(gate);
    t.actions.push(Action::Event(Event {
        warning: false,
        reason: "NewRevision",
        message: msg::new_revision_event(t.r),
        log: Some(msg::new_revision_log(t.r)),
    }));
    t.alert(Severity::Info, alert::NEW_REVISION, false);
    t.actions.push(Action::ScaleCanaryUp);
    t.status = Status {
        phase: Phase::Progressing,
        canary_weight: 0,
        failed_checks: 0,
        iterations: 0,
        last_applied_spec: t.obs.revision.clone(),
        ..t.old.clone()
    };
    Ok(())
}

fn skip_analysis(t: &mut Step<'_>) -> Stage {
    // Skipping the analysis never skips the deadline.
    let obs = t.obs;
    if let Some(stage) = unless_ready(t, &obs.canary_ready) {
        return stage;
    }
    t.actions.push(Action::SetRoutes(RoutePlan::weighted(0)));
    t.normal("Promote", msg::copying(t.r));
    t.actions.push(Action::PromoteToPrimary);
    t.actions.push(Action::ScaleCanaryToZero);
    succeed(t, msg::promotion_skipped(t.r), alert::SKIPPED)
}

fn finalise(t: &mut Step<'_>) -> Stage {
    t.actions.push(Action::ScaleCanaryToZero);
    succeed(t, msg::promotion_completed(t.r), alert::SUCCEEDED)
}

fn succeed(t: &mut Step<'_>, text: String, alert_text: &str) -> Stage {
    // failedChecks keeps its count (Flagger resets it only for a new revision).
    t.status = Status {
        phase: Phase::Succeeded,
        canary_weight: 0,
        iterations: 0,
        last_promoted_spec: t.old.last_applied_spec.clone(),
        ..t.old.clone()
    };
    t.end(Phase::Succeeded);
    t.normal("Succeeded", text);
    t.alert(Severity::Info, alert_text, false);
    Ok(())
}

/// Progressing, WaitingPromotion and Promoting: gather this step's checks, ask
/// the policy, apply its decision.
fn analyse(t: &mut Step<'_>, judge: &dyn Judge) -> Stage {
    let phase = t.old.phase;
    let r = t.r;
    let ready = matches!(t.obs.canary_ready, Readiness::Ready)
        && matches!(t.obs.primary_ready, Readiness::Ready);
    let mut webhooks: Vec<WebhookResult> = Vec::new();
    let mut metrics: &[MetricResult] = &[];
    // I/O is gated the way Flagger gates it: nothing while a Deployment is
    // rolling out, nothing once the threshold is reached, nothing after the
    // first failure. Judging what was gathered is the policy's job.
    let judging = ready && phase != Phase::Promoting;
    if judging {
        let rollback_hooks = t.hooks(WebhookKind::Rollback, phase)?;
        if rollback_hook_fired(t, rollback_hooks) {
            // A person asked for it: not a judgement, so no policy can veto it.
            t.warning("Rollback", msg::manual_rollback(r));
            t.alert(Severity::Warn, alert::MANUAL_ROLLBACK, false);
            return rollback(t);
        }
        webhooks.extend_from_slice(rollback_hooks);
        if t.old.failed_checks < r.analysis.threshold {
            let first_step = t.obs.routes.canary == 0 && t.old.iterations == 0;
            let kind = if first_step {
                WebhookKind::PreRollout
            } else {
                WebhookKind::Rollout
            };
            let hooks = t.hooks(kind, Phase::Progressing)?;
            webhooks.extend_from_slice(hooks);
            if first_step {
                t.passed_events(hooks);
            } else if first_failed(hooks).is_none() && !r.metrics.is_empty() {
                metrics = t.obs.metrics.as_deref().ok_or(Request::Metrics)?;
            }
        }
    }

    // Asked once per step: a gate's answer brings the decision back.
    if let Some(decided) = &t.obs.decision {
        return apply(t, decided.clone());
    }
    // The policy says what counts as a failed check; the Canary's threshold
    // says how many are too many. At the threshold the host rolls back, so a
    // policy that keeps holding (or keeps failing) cannot keep a bad canary alive.
    if t.old.failed_checks >= r.analysis.threshold && phase != Phase::Promoting {
        return apply(
            t,
            Decision::Rollback(format!(
                "failed checks threshold reached {}",
                t.old.failed_checks
            )),
        );
    }
    let input = policy_input(t, webhooks, metrics.to_vec());
    let mut ctx = Context::at(t.obs.now);
    match &t.obs.series {
        Some(series) => ctx.series = series.clone(),
        // A policy with the metric-query capability says what it needs; the
        // shell runs it and asks again with the answers.
        None => match judge.queries(&input, &ctx) {
            Ok(queries) if queries.is_empty() => {}
            Ok(queries) => return Err(Request::Series(queries)),
            Err(e) => return apply(t, Decision::failed_check(msg::policy_failed(&e.0))),
        },
    }
    let decision = match judge.decide(&input, &ctx) {
        Ok(d) => guard(&input, d),
        Err(e) => Decision::failed_check(msg::policy_failed(&e.0)),
    };
    apply(t, decision)
}

/// Emits Flagger's event for each rollback hook called; true when one fired.
fn rollback_hook_fired(t: &mut Step<'_>, results: &[WebhookResult]) -> bool {
    for h in results {
        if h.passed {
            t.warning("Rollback", msg::check_passed(h.kind, &h.name));
            return true;
        }
        t.normal("Synced", msg::rollback_not_signaled(&h.name));
    }
    false
}

fn policy_input(
    t: &Step<'_>,
    webhooks: Vec<WebhookResult>,
    metrics: Vec<MetricResult>,
) -> PolicyInput {
    PolicyInput {
        canary: t.r.id(),
        strategy: t.r.strategy,
        analysis: t.r.analysis.clone(),
        state: State {
            phase: t.old.phase,
            canary_weight: t.obs.routes.canary,
            primary_weight: t.obs.routes.primary,
            iteration: t.old.iterations,
            failed_checks: t.old.failed_checks,
            seconds_in_phase: (t.obs.now - t.old.last_transition).max(0) as u64,
        },
        metrics,
        webhooks,
        canary_ready: t.obs.canary_ready.clone(),
        primary_ready: t.obs.primary_ready.clone(),
    }
}

/// The rules every decision must meet, whatever judged it (never promote at
/// or above the failed-check threshold, never exceed the maximum weight,
/// weights adding up to 100, ...): a decision that breaks one is a failed check.
fn guard(input: &PolicyInput, d: Decision) -> Decision {
    match validate_decision(input, &d) {
        Ok(()) => d,
        Err(e) => Decision::failed_check(msg::policy_failed(&format!("invalid decision: {e}"))),
    }
}

fn apply(t: &mut Step<'_>, decision: Decision) -> Stage {
    let r = t.r;
    let phase = t.old.phase;
    match decision {
        Decision::Wait(why) => {
            t.warning("NotReady", why);
            Ok(())
        }
        Decision::Hold(h) => {
            // A metric error is worded by the shell in Flagger's words; a hold
            // that points at it is shown as that text.
            let metric_error = t.obs.metrics.iter().flatten().any(
                |m| matches!(&m.value, fledge_policy::MetricValue::Error(e) if *e == h.reason),
            );
            let text = if metric_error {
                h.reason.clone()
            } else {
                msg::halt(r, &h.reason)
            };
            t.warning("Halt", text);
            if h.failed_check {
                t.status.failed_checks = t.old.failed_checks.saturating_add(1);
            }
            Ok(())
        }
        Decision::Rollback(reason) if phase == Phase::Promoting => promotion_failed(t, &reason),
        Decision::Rollback(reason) => {
            t.warning("Rollback", msg::rolling_back(r, &reason));
            if let Some(n) = reason.strip_prefix("failed checks threshold reached ") {
                t.alert(
                    Severity::Error,
                    format!("Failed checks threshold reached {n}"),
                    false,
                );
            } else {
                t.alert(Severity::Error, format!("Rolling back: {reason}"), false);
            }
            rollback(t)
        }
        // Promote while promoting means "finish it": all traffic to the
        // primary, rather than a step that changes nothing.
        Decision::Promote if phase == Phase::Promoting => apply(
            t,
            Decision::Advance(fledge_policy::Advance {
                route: RoutePlan::weighted(0),
                iteration: t.old.iterations,
            }),
        ),
        Decision::Promote => {
            // A weighted canary asks for a traffic increase before every
            // step, the one that promotes at maxWeight included.
            let decided = Decision::Promote;
            if r.strategy == Strategy::Canary
                && phase == Phase::Progressing
                && !gate(t, WebhookKind::ConfirmTrafficIncrease, &decided)?
            {
                return Ok(());
            }
            if !gate(t, WebhookKind::ConfirmPromotion, &decided)? {
                return Ok(());
            }
            t.normal("Promote", msg::copying(r));
            t.actions.push(Action::PromoteToPrimary);
            t.set_phase(Phase::Promoting);
            Ok(())
        }
        Decision::Advance(a) if phase == Phase::Promoting => {
            let primary = a.route.primary_weight;
            let stepped = r.analysis.step_weight_promotion.is_some_and(|s| s > 0);
            t.actions.push(Action::SetRoutes(a.route.clone()));
            if stepped {
                t.normal("Advance", msg::advance_primary(r, primary));
            } else if primary == 100 {
                t.normal("Advance", msg::routing_all_to_primary());
            }
            t.status.canary_weight = a.route.canary_weight;
            if primary == 100 {
                t.set_phase(Phase::Finalising);
                t.status.canary_weight = 0;
            }
            Ok(())
        }
        Decision::Advance(a) => {
            let decided = Decision::Advance(a.clone());
            match r.strategy {
                Strategy::Canary => {
                    if a.route.canary_weight > t.obs.routes.canary
                        && phase == Phase::Progressing
                        && !gate(t, WebhookKind::ConfirmTrafficIncrease, &decided)?
                    {
                        return Ok(());
                    }
                    let w = a.route.canary_weight;
                    t.actions.push(Action::SetRoutes(a.route));
                    t.status.canary_weight = w;
                    t.normal("Advance", msg::advance_weight(r, w));
                    Ok(())
                }
                Strategy::AbTesting | Strategy::BlueGreen => {
                    let of = r.analysis.iterations.unwrap_or(0);
                    if a.iteration > of {
                        // Blue/green after its iterations: the traffic switch is
                        // the promotion's first step, behind its gate.
                        if !gate(t, WebhookKind::ConfirmPromotion, &decided)? {
                            return Ok(());
                        }
                        t.normal("Advance", msg::routing_all_to_canary());
                    } else {
                        t.normal("Advance", msg::advance_iteration(r, a.iteration, of));
                    }
                    t.actions.push(Action::SetRoutes(a.route));
                    t.status.iterations = a.iteration;
                    Ok(())
                }
            }
        }
    }
}

/// A confirm-* gate: `Ok(true)` when open. When closed the canary holds (and
/// for confirm-promotion waits in WaitingPromotion); no failed check.
fn gate(t: &mut Step<'_>, kind: WebhookKind, decided: &Decision) -> Result<bool, Request> {
    let results = t.results(kind).ok_or_else(|| Request::Gate {
        kind,
        phase: Phase::Progressing,
        decision: decided.clone(),
    })?;
    if let Some(closed) = first_failed(results) {
        let name = closed.name.clone();
        let muted = t.muted(kind, &name);
        match kind {
            WebhookKind::ConfirmPromotion => {
                if t.old.phase != Phase::WaitingPromotion {
                    t.warning("Halt", msg::waiting_promotion(t.r, &name));
                    t.alert(Severity::Warn, alert::WAITING_PROMOTION, muted);
                }
                t.set_phase(Phase::WaitingPromotion);
            }
            _ => {
                t.warning("Halt", msg::waiting_traffic_increase(t.r, &name));
                t.alert(Severity::Warn, alert::WAITING_TRAFFIC, muted);
            }
        }
        return Ok(false);
    }
    t.passed_events(results);
    Ok(true)
}

/// The primary cannot take the new version. The canary, which passed its
/// analysis, keeps serving its share and is not scaled down; unlike Flagger,
/// it is not given all traffic, so the canary never carries more than the
/// maximum weight the Canary allows.
fn promotion_failed(t: &mut Step<'_>, reason: &str) -> Stage {
    t.warning("Rollback", msg::promotion_failed(t.r, reason));
    t.alert(
        Severity::Error,
        format!("Promotion failed, primary not ready: {reason}"),
        false,
    );
    t.status = Status {
        phase: Phase::Failed,
        canary_weight: t.obs.routes.canary,
        failed_checks: 0,
        iterations: 0,
        ..t.old.clone()
    };
    t.end(Phase::Failed);
    Ok(())
}

/// `None` when `ready`; otherwise the step ends here: waiting with a
/// `NotReady` event, or rolling back past the progress deadline.
fn unless_ready(t: &mut Step<'_>, ready: &Readiness) -> Option<Stage> {
    match ready {
        Readiness::Ready => None,
        Readiness::NotReady(why) => {
            t.warning("NotReady", why.clone());
            Some(Ok(()))
        }
        Readiness::DeadlineExceeded(why) => Some(deadline_rollback(t, why)),
    }
}

/// A Deployment missed its progress deadline: Flagger's readiness error, then
/// the rollback; the alert says what the Event says.
fn deadline_rollback(t: &mut Step<'_>, why: &str) -> Stage {
    t.warning("NotReady", why.to_string());
    t.alert(Severity::Error, why.to_string(), false);
    rollback(t)
}

/// All traffic back to the primary, the canary scaled to zero, Failed.
fn rollback(t: &mut Step<'_>) -> Stage {
    t.actions.push(Action::SetRoutes(RoutePlan::weighted(0)));
    t.warning("Rollback", msg::canary_failed(t.r));
    t.actions.push(Action::ScaleCanaryToZero);
    t.status = Status {
        phase: Phase::Failed,
        canary_weight: 0,
        failed_checks: 0,
        iterations: 0,
        ..t.old.clone()
    };
    t.end(Phase::Failed);
    Ok(())
}
