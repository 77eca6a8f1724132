//! One reconcile of one Canary: validate, observe, decide whether an analysis
//! step is due, run the core until it is done (performing its requests),
//! carry out its actions in order, write the status once, then publish the
//! step's Events.
//!
//! Steps follow `analysis.interval` from `status.lastStepTime`: a watch event
//! takes a step early only for a new revision of the target, or during
//! bootstrap once the primary is ready. Everything else that wakes a Canary
//! (its own status write, label edits, pod churn) finds no step due and only
//! requeues for the time left.
use super::events;
use super::metrics::Checker;
use super::resource::CanaryObject;
use super::router::{self, RouteTarget};
use super::status::{self, CanaryStatus, VALID};
use super::webhooks;
use super::workload::{BadReference, Workload};
use super::Context;
use crate::api::{self, Issue};
use crate::core::{self, Action, Observations, Outcome, Request, Rollout};
use fledge_policy::{Phase, Readiness, WebhookKind};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

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
    tracing::warn!(canary = %obj.id(), namespace = obj.namespace(), error = %err, "reconcile failed");
    ctx.stats
        .errors
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Requeue::requeue(Duration::from_secs(10))
}

pub async fn reconcile(obj: Arc<CanaryObject>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    ctx.stats
        .reconciles
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let api: Api<CanaryObject> = Api::namespaced(ctx.client.clone(), obj.namespace());
    let stored = CanaryStatus::from_object(&obj);
    // The cache may not have seen our last write yet: what we wrote wins.
    let status = match ctx.memo.lock().await.get(&uid) {
        Some(m) if m.last_step() > stored.last_step() => m.clone(),
        _ => stored,
    };
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
    let rollout = validated.rollout;
    let Some(router) = router::for_provider(&ctx.routers, &rollout.provider) else {
        let issue = Issue {
            field: "spec.provider".into(),
            problem: format!("`{}` has no router in this operator", rollout.provider),
            fix: "use provider: appmesh:v1beta2".into(),
        };
        return invalid(&obj, &ctx, &api, &status, vec![issue], now).await;
    };

    if obj.metadata.deletion_timestamp.is_some() {
        return finalize(&obj, &ctx, &api, &rollout, router).await;
    }
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
    let routes = router.get_routes(&target).await?.unwrap_or_default();
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
    let old = status.to_core();

    let interval = rollout.interval();
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
        let wait = next_step
            .map(|at| at.duration_since(now))
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(interval);
        return Ok(Requeue::requeue(wait + Duration::from_millis(20)));
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
    };
    let tick = loop {
        match core::step(&rollout, &old, &o, &ctx.judge) {
            Outcome::Done(tick) => break tick,
            Outcome::Need(request) => {
                perform(&ctx, &rollout, &old, &checker, request, &mut o).await
            }
        }
    };

    let mut notes = Vec::new();
    let doing = Doing {
        router,
        target: &target,
        workload: &workload,
        observed: &observed,
        obj: &obj,
    };
    if let Err(e) = doing.carry_out(&tick.actions, &mut notes).await {
        // The step stops here and is taken again after the backoff; its
        // status is not written, so it is not counted as taken.
        let msg = format!("{e:#}");
        ctx.recorder.publish(&obj, true, "Synced", &msg).await;
        events::log(&obj, true, &msg);
        return Err(e.into());
    }

    let kind = spec
        .target_ref
        .as_ref()
        .and_then(|t| t.kind.clone())
        .unwrap_or_else(|| "Deployment".into());
    let mut next = status.after_step(&tick.status, &observed.configs, now, &kind);
    if next.condition(VALID).is_some_and(|c| c.status != "True") {
        next.set_condition(VALID, "True", "Valid", "", now);
    }
    ctx.memo.lock().await.insert(uid.clone(), next.clone());
    let patch = status::merge_patch(&status, &next);
    status::write(&api, obj.name(), &patch).await?;
    ctx.stats
        .steps
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    // The step's Events carry its time, a microsecond apart in their order.
    let mut at = now;
    publish(
        &ctx,
        &obj,
        &rollout,
        tick.status.phase,
        &next,
        &notes,
        &mut at,
    )
    .await;

    // The end of an analysis: post-rollout hooks see the outcome carried out
    // and the status written; what the core reports after them comes last.
    if let Some(post) = &tick.post_rollout {
        let checksum = next.last_applied_spec.clone();
        let results = webhooks::call_all(
            &ctx.http,
            WebhookKind::PostRollout,
            rollout.webhooks_of(WebhookKind::PostRollout),
            &rollout.name,
            &rollout.namespace,
            post.phase,
            &checksum,
        )
        .await;
        let mut after: Vec<Action> = core::post_rollout_events(&results)
            .into_iter()
            .map(Action::Event)
            .collect();
        after.extend(post.then.iter().cloned());
        let mut notes = Vec::new();
        let outcome = doing.carry_out(&after, &mut notes).await;
        publish(
            &ctx,
            &obj,
            &rollout,
            tick.status.phase,
            &next,
            &notes,
            &mut at,
        )
        .await;
        outcome?;
    }
    Ok(Requeue::requeue(tick.requeue))
}

/// Publishes a step's Events, logs them and forwards them to event webhooks.
/// Each Event is stamped `at`, which then moves on by a microsecond.
async fn publish(
    ctx: &Context,
    obj: &CanaryObject,
    rollout: &Rollout,
    phase: Phase,
    status: &CanaryStatus,
    notes: &[core::Event],
    at: &mut Timestamp,
) {
    for e in notes {
        ctx.recorder
            .publish_at(obj, e.warning, e.reason, &e.message, *at)
            .await;
        *at += SignedDuration::from_micros(1);
        events::log(obj, e.warning, e.log_message());
        forward_event(ctx, rollout, phase, status, e).await;
    }
}

/// What carrying out a step's actions needs.
struct Doing<'a> {
    router: &'a dyn router::Router,
    target: &'a RouteTarget<'a>,
    workload: &'a Workload<'a>,
    observed: &'a super::workload::Observed,
    obj: &'a CanaryObject,
}

impl Doing<'_> {
    /// Carries out `actions` in order; Events are collected in `notes`, to be
    /// published once the status is written. Stops at the first failure.
    async fn carry_out(
        &self,
        actions: &[Action],
        notes: &mut Vec<core::Event>,
    ) -> anyhow::Result<()> {
        for action in actions {
            match action {
                Action::EnsureObjects => {
                    // App Mesh's sidecar injector refuses pods no VirtualNode
                    // selects: the mesh objects come before the primary.
                    self.router.reconcile(self.target).await?;
                    self.workload.ensure(self.observed).await?;
                }
                Action::SetRoutes(plan) => self.router.set_routes(self.target, plan).await?,
                Action::ScaleCanaryUp => self.workload.scale_up(self.observed).await?,
                Action::ScaleCanaryToZero => self.workload.scale_target(0).await?,
                Action::PromoteToPrimary => self.workload.promote(self.observed).await?,
                Action::Event(e) => notes.push(e.clone()),
                Action::Alert(a) => {
                    // Delivery to alert providers comes with the notifiers.
                    tracing::debug!(canary = %self.obj.id(), namespace = self.obj.namespace(), severity = ?a.severity, muted = a.muted, "alert: {}", a.message);
                }
            }
        }
        Ok(())
    }
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
            o.metrics = Some(checker.check_all(r).await);
        }
    }
}

/// Sends an Event to the Canary's `event` webhooks, or the global one.
async fn forward_event(
    ctx: &Context,
    r: &Rollout,
    phase: Phase,
    status: &CanaryStatus,
    e: &core::Event,
) {
    let ms = Timestamp::now().as_millisecond();
    let mut targets: Vec<(
        String,
        std::collections::BTreeMap<String, String>,
        Duration,
        bool,
    )> = r
        .webhooks_of(WebhookKind::Event)
        .map(|h| (h.url.clone(), h.metadata.clone(), h.timeout, h.disable_tls))
        .collect();
    if targets.is_empty() {
        if let Some(url) = &ctx.config.event_webhook {
            targets.push((
                url.clone(),
                Default::default(),
                Duration::from_secs(10),
                false,
            ));
        }
    }
    for (url, md, timeout, insecure) in targets {
        let md = webhooks::event_metadata(&md, &e.message, e.warning, ms);
        let body = webhooks::payload(&r.name, &r.namespace, phase, &status.last_applied_spec, &md);
        if let Err(err) = webhooks::post(&ctx.http, &url, &body, timeout, 0, insecure).await {
            tracing::warn!(canary = %r.id(), namespace = %r.namespace, error = %err, "event webhook {url} failed");
        }
    }
}

/// A Canary that cannot be acted on: a `Valid=False` condition and one
/// Warning Event per problem, once per distinct set of problems. Nothing is
/// created or changed; a corrected spec triggers a new reconcile.
async fn invalid(
    obj: &CanaryObject,
    ctx: &Context,
    api: &Api<CanaryObject>,
    status: &CanaryStatus,
    issues: Vec<Issue>,
    now: Timestamp,
) -> Result<Requeue, Error> {
    let message = issues
        .iter()
        .map(Issue::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let mut next = status.clone();
    next.set_condition(VALID, "False", "InvalidSpec", &message, now);
    if status.condition(VALID) != next.condition(VALID) {
        for i in &issues {
            let text = format!("Invalid {}: {i}", obj.id());
            ctx.recorder.publish(obj, true, "InvalidSpec", &text).await;
            events::log(obj, true, &text);
        }
        let patch = status::merge_patch(status, &next);
        status::write(api, obj.name(), &patch).await?;
    }
    // A target that does not exist yet may appear: look again later.
    Ok(Requeue::requeue(Duration::from_secs(60)))
}

fn has_finalizer(obj: &CanaryObject) -> bool {
    obj.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

async fn set_finalizer(api: &Api<CanaryObject>, obj: &CanaryObject, on: bool) -> Result<(), Error> {
    // The list is replaced as a whole: read it fresh and write it with its
    // resourceVersion, so a finalizer someone else adds meanwhile is not lost.
    let fresh = api.get(obj.name()).await?;
    let mut list: Vec<String> = fresh.metadata.finalizers.clone().unwrap_or_default();
    list.retain(|f| f != FINALIZER);
    if on {
        list.push(FINALIZER.into());
    }
    let patch = json!({"metadata": {"finalizers": list, "resourceVersion": fresh.metadata.resource_version}});
    api.patch(obj.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// `revertOnDeletion`: give the target its replicas back, route to it again,
/// then let the Canary (and with it every generated object) go.
async fn finalize(
    obj: &CanaryObject,
    ctx: &Context,
    api: &Api<CanaryObject>,
    r: &Rollout,
    router: &dyn router::Router,
) -> Result<Requeue, Error> {
    if !has_finalizer(obj) {
        return Ok(Requeue::await_change());
    }
    let term = format!("Terminating canary {}", r.id());
    ctx.recorder.publish(obj, false, "Terminating", &term).await;
    events::log(obj, false, &term);
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(ctx.client.clone(), &r.namespace);
    let primary_replicas = deployments
        .get_opt(&r.primary())
        .await?
        .and_then(|d| d.spec)
        .and_then(|s| s.replicas)
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let patch = json!({"spec": {"replicas": primary_replicas}});
    if deployments.get_opt(&r.target).await?.is_some() {
        deployments
            .patch(&r.target, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    // The apex Service goes with the Canary; the target's own pods serve again.
    let service = Value::Null;
    let annotations = Default::default();
    let t = RouteTarget {
        rollout: r,
        service: &service,
        annotations: &annotations,
        label: ("app", &r.target),
        owner: obj.owner_reference(),
    };
    router.finalize(&t).await?;
    set_finalizer(api, obj, false).await?;
    let done = format!("Terminated canary {}", r.id());
    ctx.recorder.publish(obj, false, "Terminated", &done).await;
    events::log(obj, false, &done);
    ctx.memo
        .lock()
        .await
        .remove(obj.metadata.uid.as_deref().unwrap_or(""));
    Ok(Requeue::await_change())
}
