//! One reconcile of one Canary: validate, observe, decide whether an analysis
//! step is due, run the core until it is done (performing its requests),
//! write the step's status with a record of what is left to do, carry out its
//! actions in order, publish its Events, then clear the record.
//!
//! Steps follow `analysis.interval` from `status.lastStepTime`: a watch event
//! takes a step early only for a new revision of the target, or during
//! bootstrap once the primary is ready. Everything else that wakes a Canary
//! (its own status write, label edits, pod churn) finds no step due and only
//! requeues for the time left.
//!
//! A step recorded in the status (`status.pendingStep`, see [`status`]) and
//! not yet finished, because the operator died, lost its Lease or an action
//! failed, is finished by the next reconcile before anything else: its
//! actions are carried out again and its Events not yet published are.
use super::adopt;
use super::events::{self, Delivery};
use super::metrics::Checker;
use super::policies::shadow::{Shadow, Shadowed, Verdict};
use super::policies::{self, Chosen};
use super::resource::CanaryObject;
use super::router::{self, RouteTarget};
use super::status::{self, CanaryStatus, Op, PendingAction, PendingStep, VALID};
use super::switch;
use super::webhooks;
use super::workload::{BadReference, Workload};
use super::Context;
use crate::api::{self, Issue};
use crate::core::rollout::WebhookSpec;
use crate::core::{self, Action, Observations, Outcome, Request, Rollout, Tick};
use fledge_policy::{Phase, Readiness, WebhookKind};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

mod doing;
mod finalizer;
mod refusal;

use doing::Doing;
use finalizer::{finalize, has_finalizer, set_finalizer};
use refusal::{invalid, refuse};

pub const FINALIZER: &str = "finalizer.flagger.app";

#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct Error(#[from] pub anyhow::Error);

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error(e.into())
    }
}

/// What the reconcile reports back to the controller.
pub fn error_policy(obj: Arc<CanaryObject>, err: &Error, ctx: Arc<Context>) -> Requeue {
    // A router catching up (a Gateway controller accepting the latest
    // weights) is a wait, not a failure: no warning, and a look again soon.
    if let Some(wait) = router::NotReady::find(&err.0).filter(|w| w.transient) {
        tracing::info!(canary = %obj.id(), namespace = obj.namespace(), reason = %wait, "waiting for the router");
        return Requeue::requeue(wait.retry);
    }
    tracing::warn!(canary = %obj.id(), namespace = obj.namespace(), error = %err, "reconcile failed");
    ctx.telemetry.reconcile_errors.inc();
    Requeue::requeue(Duration::from_secs(10))
}

pub async fn reconcile(obj: Arc<CanaryObject>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    ctx.telemetry.reconciles.inc();
    let began = std::time::Instant::now();
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let api: Api<CanaryObject> = Api::namespaced(ctx.client.clone(), obj.namespace());
    let status = CanaryStatus::newest(
        CanaryStatus::from_object(&obj),
        ctx.memo.lock().await.get(&uid),
    );
    let now = Timestamp::now();

    let mut canary = match obj.to_api() {
        Ok(c) => c,
        Err(issue) => return invalid(&obj, &ctx, &api, &status, vec![issue], now).await,
    };
    let spec = canary.spec.get_or_insert_with(Default::default);
    if spec.provider.as_deref().unwrap_or("").is_empty() {
        spec.provider = Some(ctx.config.mesh_provider.clone());
    }
    let spec = spec.clone();
    let validated = match api::validate(&canary) {
        Ok(v) => v,
        Err(issues) => return invalid(&obj, &ctx, &api, &status, issues, now).await,
    };
    let mut rollout = validated.rollout;
    let Some(wanted_router) = router::for_provider(&ctx.routers, &rollout.provider) else {
        let issue = Issue {
            field: "spec.provider".into(),
            problem: format!("`{}` has no router in this operator", rollout.provider),
            fix: format!(
                "use provider: appmesh:v1beta2 or {}",
                router::gateway_api::PROVIDER
            ),
        };
        return invalid(&obj, &ctx, &api, &status, vec![issue], now).await;
    };
    let wanted = rollout.provider.clone();
    // The router that carries the traffic: the one recorded in the status
    // until a switch to spec.provider's has been made (see [`switch`]).
    let carrier = switch::recorded(&status, &wanted).provider;
    let router = router::for_provider(&ctx.routers, &carrier).unwrap_or(wanted_router);
    if !router::same(router, wanted_router)
        && (switch::in_flight(status.phase()) || status.pending_step.is_some())
    {
        // The analysis in flight ends as it began: its metrics and weights
        // are the recorded router's.
        rollout.provider = carrier;
    }

    if obj.metadata.deletion_timestamp.is_some() {
        return finalize(&obj, &ctx, &api, &rollout, router).await;
    }
    // The router moved to must be served before anything moves to it.
    if let Some(issue) = unserved(&ctx, wanted_router, &wanted).await {
        return refuse(
            &obj,
            &ctx,
            &api,
            &status,
            vec![issue],
            now,
            "CRDNotInstalled",
        )
        .await;
    }
    // The policy in force now; an analysis in flight may keep its own (below).
    let selected = match policies::select::select(obj.namespace(), spec.policy.as_ref(), |k| {
        ctx.policies.mode(k)
    }) {
        Ok(s) => s,
        Err(issue) => return invalid(&obj, &ctx, &api, &status, vec![issue], now).await,
    };
    let current = match ctx.policies.current(&selected).await {
        Ok(c) => c,
        Err(problem) => {
            let issue = Issue {
                field: "spec.policy".into(),
                problem,
                fix: "fix the policy object, or choose another in spec.policy".into(),
            };
            return invalid(&obj, &ctx, &api, &status, vec![issue], now).await;
        }
    };
    let revert = spec.revert_on_deletion.unwrap_or(false);
    if revert != has_finalizer(&obj) {
        set_finalizer(&api, &obj, revert).await?;
    }

    let service = serde_json::to_value(&spec.service).unwrap_or(Value::Null);
    let workload = Workload {
        client: &ctx.client,
        canary: &obj,
        rollout: &rollout,
        service: &service,
        primary_scaler_replicas: spec
            .autoscaler_ref
            .as_ref()
            .and_then(|a| a.primary_scaler_replicas.as_ref())
            .map(|r| json!({"minReplicas": r.min_replicas, "maxReplicas": r.max_replicas})),
        cache: &ctx.cache,
    };
    let observed = match workload.observe().await {
        Ok(o) => o,
        Err(e) => match e.downcast::<BadReference>() {
            Ok(bad) => {
                let issue = Issue {
                    field: bad.field,
                    problem: bad.problem,
                    fix: bad.fix,
                };
                return invalid(&obj, &ctx, &api, &status, vec![issue], now).await;
            }
            Err(e) => return Err(e.into()),
        },
    };
    let annotations = obj.metadata.annotations.clone().unwrap_or_default();
    let target = RouteTarget {
        rollout: &rollout,
        service: &service,
        annotations: &annotations,
        label: (&observed.label.0, &observed.label.1),
        owner: obj.owner_reference(),
    };
    let doing = Doing {
        ctx: &ctx,
        api: &api,
        rollout: &rollout,
        router,
        target: &target,
        workload: &workload,
        observed: &observed,
        obj: &obj,
    };
    let interval = rollout.interval();
    let mut status = status;

    if let Some(p) = &status.pending_step {
        // A step recorded but not (known to be) finished: finish it first.
        tracing::info!(canary = %obj.id(), namespace = obj.namespace(), step = %p.step, "finishing the step recorded in the status");
        doing.finish(&mut status, true).await?;
        ctx.telemetry.set_status(&rollout, status.phase());
        return Ok(Requeue::requeue(until_next(
            &status,
            interval,
            Timestamp::now(),
        )));
    }

    let moved = switch::advance(&ctx.routers, &wanted, &target, &status, now).await?;
    // The retiring router's objects may go before the next step is due.
    let wake = moved.wake;
    let soonest = |d: Duration| wake.map_or(d, |w| w.min(d));
    save_switch(&ctx, &obj, &api, &mut status, &moved, now).await?;
    if let Some(after) = moved.hold {
        // Moving routers: no analysis step until the new one carries the traffic.
        ctx.telemetry.set_status(&rollout, status.phase());
        return Ok(Requeue::requeue(after));
    }

    let routes = router.get_routes(&target).await?.unwrap_or_default();
    ctx.telemetry.set_weight(&rollout, routes);
    let primary_ready = workload.readiness(
        observed.primary.as_ref(),
        &rollout.primary(),
        rollout.primary_ready_threshold,
    );
    let canary_ready = workload.readiness(
        Some(&observed.target),
        &rollout.target,
        rollout.canary_ready_threshold,
    );
    let foreign = adopt::status_could_be_foreign(&status, &observed.revision, &observed.configs)
        && {
            let primary_template = observed
                .primary
                .as_ref()
                .and_then(|p| serde_json::to_value(p).ok())
                .map(|mut p| p["spec"]["template"].take());
            adopt::is_foreign_promotion(
                &status,
                &observed.revision,
                &observed.configs,
                &workload.promoted_template(&observed),
                primary_template.as_ref(),
            )
        };
    if foreign {
        // Flagger's hashes are not Fledge's: its promotion of this revision is
        // recorded in Fledge's terms, and the primary keeps running untouched.
        let next = adopt::adopted(&status, &observed.revision);
        status::write(&api, obj.name(), &status::merge_patch(&status, &next)).await?;
        tracing::info!(canary = %obj.id(), namespace = obj.namespace(), revision = %observed.revision, previous = %status.last_applied_spec, "adopted the promoted revision of a status Fledge did not write");
        status = next;
    }
    let old = status.to_core();

    let next_step = status
        .last_step()
        .map(|t| t + SignedDuration::try_from(interval).unwrap_or_default());
    // Before initialization there is no revision to compare with.
    let new_revision = !old.last_applied_spec.is_empty()
        && observed.revision != old.last_applied_spec
        && observed.revision != old.last_promoted_spec;
    let bootstrapped = old.phase == Phase::Initializing && primary_ready == Readiness::Ready;
    let due = match next_step {
        None => true,
        Some(at) => now >= at || new_revision || bootstrapped,
    };
    if !due {
        ctx.telemetry.set_status(&rollout, old.phase);
        return Ok(Requeue::requeue(soonest(until_next(
            &status, interval, now,
        ))));
    }

    let mut o = Observations {
        now: now.as_second(),
        revision: observed.revision.clone(),
        canary_ready,
        primary_ready,
        routes,
        ..Default::default()
    };
    let checker = Checker {
        client: &ctx.client,
        http: &ctx.http,
        default_server: spec
            .metrics_server
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(&ctx.config.metrics_server),
        telemetry: &ctx.telemetry,
    };
    let chosen = pin_policy(&ctx, &obj, &status, old.phase, new_revision, current).await;
    let policy_label = super::telemetry::policy_label(&chosen.record, obj.namespace());
    // The enforcing policy's decisions are counted and journaled; shadows
    // judge beside it and are only reported.
    let enforcing = ctx.telemetry.judge(&chosen.policy, &policy_label);
    let enforcing = super::journal::judge(&ctx, enforcing, &policy_label, &chosen.policy);
    let shadows = ctx.policies.shadows(obj.namespace()).await;
    let judge = Shadowed::new(
        &enforcing,
        shadows
            .iter()
            .map(|c| Shadow {
                label: super::telemetry::policy_label(&c.record, obj.namespace()),
                record: c.record.clone(),
                judge: &c.policy,
            })
            .collect(),
    );
    let decide = async {
        loop {
            match core::step(&rollout, &old, &o, &judge) {
                Outcome::Done(tick) => break tick,
                Outcome::Need(request) => {
                    perform(&ctx, &rollout, &old, &checker, request, &mut o).await
                }
            }
        }
    };
    // Until its status is written a step has changed nothing but the calls
    // to webhooks and metric stores: stopping abandons it, and the next
    // leader takes it from the start.
    let tick = tokio::select! {
        biased;
        _ = ctx.stopped() => {
            tracing::info!(canary = %obj.id(), namespace = obj.namespace(), "stopping: the step in progress is abandoned before it changed anything");
            return Ok(Requeue::await_change());
        }
        tick = decide => tick,
    };

    let kind = spec
        .target_ref
        .as_ref()
        .and_then(|t| t.kind.clone())
        .unwrap_or_else(|| "Deployment".into());
    let mut next = status.after_step(&tick.status, &observed.configs, now, &kind);
    if next.condition(VALID).is_some_and(|c| c.status != "True") {
        next.set_condition(VALID, "True", "Valid", "", now);
    }
    next.policy = Some(chosen.record.clone());
    let step = next.last_step_time.clone().unwrap_or_default();
    let mut pending = doing.record(&step, &tick).await;
    pending.attribute(&chosen.record);
    next.pending_step = Some(pending);
    let patch = status::merge_patch(&status, &next);
    status::write(&api, obj.name(), &patch).await?;
    ctx.memo.lock().await.insert(uid, next.clone());
    ctx.telemetry.steps.inc();
    // The phase is in the status from now on: so is it on /metrics, before
    // anyone can see the step finished.
    record_result(&ctx, &rollout, old.phase, tick.status.phase);
    doing.pause().await;
    doing.finish(&mut next, false).await?;
    record_duration(&ctx, &rollout, old.phase, tick.status.phase, began);
    report_shadows(&ctx, &obj, judge.take_verdicts()).await;
    // The core's `requeue` is the interval: counted from the step, not from
    // the end of its actions.
    Ok(Requeue::requeue(soonest(until_next(
        &next,
        interval,
        Timestamp::now(),
    ))))
}

/// The policy that judges this step. An analysis in flight (and not
/// restarted by a new revision) keeps the digest it pinned in
/// `status.policy`; any other step takes the policy in force now. When the
/// pinned component can no longer be had (its bytes changed in place and the
/// operator restarted) the analysis goes on under the current policy, and a
/// Warning Event says so.
async fn pin_policy(
    ctx: &Context,
    obj: &CanaryObject,
    status: &CanaryStatus,
    phase: Phase,
    new_revision: bool,
    current: Chosen,
) -> Chosen {
    let in_flight = matches!(
        phase,
        Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
    ) && !new_revision;
    let Some(pinned) = status.policy.as_ref().filter(|_| in_flight) else {
        return current;
    };
    if pinned.digest == current.record.digest && pinned.name == current.record.name {
        return current;
    }
    if let Some(policy) = ctx.policies.pinned(pinned).await {
        return Chosen {
            record: pinned.clone(),
            policy,
        };
    }
    let text = format!(
        "Policy component {} of {} {} is no longer available; the analysis of {} goes on under {} {} ({})",
        pinned.digest,
        pinned.kind,
        pinned.name,
        obj.id(),
        current.record.kind,
        current.record.name,
        current.record.digest
    );
    ctx.recorder
        .publish(obj, true, "PolicyUnavailable", &text)
        .await;
    events::log(obj, true, &text);
    current
}

/// What the shadow policies would have done this step: each decision
/// counted, each disagreement a Normal Event (annotated with the shadow
/// policy) and a log line. Reported once the step's actions are carried out;
/// nothing here changes them.
async fn report_shadows(ctx: &Context, obj: &CanaryObject, verdicts: Vec<Verdict>) {
    for v in verdicts {
        let disagreement = (!v.agrees()).then(|| (v.enforced_kind(), v.shadow_kind()));
        ctx.telemetry
            .count_shadow(&v.label, &v.record.digest, disagreement);
        tracing::debug!(canary = %obj.id(), namespace = obj.namespace(), policy = %v.label, took_us = v.took.as_micros() as u64, agrees = v.agrees(), "shadow decision");
        if disagreement.is_none() {
            continue;
        }
        let note = v.note();
        ctx.recorder
            .publish_by(obj, false, SHADOW_DISAGREEMENT, &note, Some(&v.record))
            .await;
        events::log_decision(obj, false, &note, Some(&v.record));
    }
}

/// The reason of a shadow policy's disagreement Event.
pub const SHADOW_DISAGREEMENT: &str = "ShadowDisagreement";

/// Flagger's series of a step whose status is written: the phase as
/// `flagger_canary_status`, and a success or failure counted.
fn record_result(ctx: &Context, r: &Rollout, from: Phase, to: Phase) {
    ctx.telemetry.set_status(r, to);
    ctx.telemetry.count_result(r, from, to);
}

/// The time a finished analysis step took, as Flagger times it: from the
/// reconcile's start to the end of its actions, for steps in Progressing or
/// WaitingPromotion that do not roll back.
fn record_duration(ctx: &Context, r: &Rollout, from: Phase, to: Phase, began: std::time::Instant) {
    if matches!(from, Phase::Progressing | Phase::WaitingPromotion) && to != Phase::Failed {
        ctx.telemetry.observe_analysis(r, began.elapsed());
    }
}

/// How long until the next step is due, counted from the last one (plus a
/// moment, so the cache catches up with the status just written).
fn until_next(status: &CanaryStatus, interval: Duration, now: Timestamp) -> Duration {
    let wait = status
        .last_step()
        .map(|t| t + SignedDuration::try_from(interval).unwrap_or_default())
        .map(|at| Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
        .unwrap_or(interval);
    wait + Duration::from_millis(20)
}

/// Performs one request of the core and records the answer.
async fn perform(
    ctx: &Context,
    r: &Rollout,
    old: &core::Status,
    checker: &Checker<'_>,
    request: Request,
    o: &mut Observations,
) {
    let checksum = if old.last_applied_spec.is_empty() {
        o.revision.clone()
    } else {
        old.last_applied_spec.clone()
    };
    match request {
        Request::Webhooks { kind, phase } => {
            let results = webhooks::call_all(
                &ctx.http,
                kind,
                r.webhooks_of(kind),
                &r.name,
                &r.namespace,
                phase,
                &checksum,
            )
            .await;
            o.webhooks.insert(kind, results);
        }
        Request::Gate {
            kind,
            phase,
            decision,
        } => {
            let results = webhooks::call_all(
                &ctx.http,
                kind,
                r.webhooks_of(kind),
                &r.name,
                &r.namespace,
                phase,
                &checksum,
            )
            .await;
            o.webhooks.insert(kind, results);
            o.decision = Some(decision);
        }
        Request::Metrics => {
            let results = checker.check_all(r).await;
            ctx.telemetry.set_analysis(r, &results);
            o.metrics = Some(results);
        }
        Request::Series(queries) => {
            o.series = Some(checker.series(r, &queries, o.now).await);
        }
    }
}

/// Why `router`'s kinds cannot be used yet, when a CRD is missing. Kinds
/// missing at the start are looked up again, so a CRD installed later is
/// used (without a watch until the operator restarts).
async fn unserved(ctx: &Context, router: &dyn router::Router, provider: &str) -> Option<Issue> {
    let mut unserved = ctx.unserved.lock().await;
    let mut missing = Vec::new();
    for ar in router.kinds() {
        let name = super::kind_name(&ar);
        if !unserved.contains(&name) {
            continue;
        }
        let gvk = kube::api::GroupVersionKind::gvk(&ar.group, &ar.version, &ar.kind);
        if kube::discovery::pinned_kind(&ctx.client, &gvk)
            .await
            .is_ok()
        {
            tracing::info!(
                "{name} is served now; Fledge reads it without a watch until it restarts"
            );
            unserved.remove(&name);
        } else {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        return None;
    }
    let install = if router.providers().contains(&router::gateway_api::PROVIDER) {
        "install the Gateway API CRDs (standard channel, which serves HTTPRoute v1)"
    } else {
        "install the App Mesh controller or its CRDs"
    };
    Some(Issue {
        field: "spec.provider".into(),
        problem: format!(
            "`{provider}` needs the CRD {}, which the cluster does not serve; no traffic is changed",
            missing.join(", ")
        ),
        fix: format!("{install}, or use another provider"),
    })
}

/// Writes what a reconcile of the router switch changed in the status, then
/// publishes its Events (after the write: a failed write tells nothing, and
/// the next reconcile decides again).
async fn save_switch(
    ctx: &Context,
    obj: &CanaryObject,
    api: &Api<CanaryObject>,
    status: &mut CanaryStatus,
    moved: &switch::Moved,
    now: Timestamp,
) -> Result<(), Error> {
    let mut next = status.clone();
    moved.apply(&mut next, now);
    if next != *status {
        let mut patch = status::merge_patch(status, &next);
        // A cleared `retiring` must be written as null to go.
        patch["status"]["router"] = status::router_patch(&moved.router);
        status::write(api, obj.name(), &patch).await?;
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        ctx.memo.lock().await.insert(uid, next.clone());
        *status = next;
    }
    for n in &moved.notes {
        ctx.recorder
            .publish(obj, n.warning, n.reason, &n.message)
            .await;
        events::log(obj, n.warning, &n.message);
    }
    Ok(())
}
