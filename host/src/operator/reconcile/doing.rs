//! Carrying out a step's actions, in order, from the record written before them.

use super::*;

/// What carrying out a step's actions needs.
pub(super) struct Doing<'a> {
    pub(super) ctx: &'a Context,
    pub(super) api: &'a Api<CanaryObject>,
    pub(super) rollout: &'a Rollout,
    pub(super) router: &'a dyn router::Router,
    pub(super) target: &'a RouteTarget<'a>,
    pub(super) workload: &'a Workload<'a>,
    pub(super) observed: &'a crate::operator::workload::Observed,
    pub(super) obj: &'a CanaryObject,
}

impl Doing<'_> {
    /// The record of a step taken at `step`: its actions as data, each Event
    /// with the Event object it goes to.
    pub(super) async fn record(&self, step: &str, tick: &Tick) -> PendingStep {
        let mut n = 0;
        let actions = self.plan(step, &tick.actions, &mut n).await;
        let post_rollout = match &tick.post_rollout {
            Some(post) => Some(status::PendingPostRollout {
                phase: post.phase.as_str().to_string(),
                then: self.plan(step, &post.then, &mut n).await,
            }),
            None => None,
        };
        PendingStep {
            step: step.to_string(),
            revision: self.observed.revision.clone(),
            actions,
            post_rollout,
        }
    }

    /// `actions` as data; Events are named `<step>/<n>`, counting on from `n`.
    pub(super) async fn plan(
        &self,
        step: &str,
        actions: &[Action],
        n: &mut usize,
    ) -> Vec<PendingAction> {
        let mut out = Vec::with_capacity(actions.len());
        for a in actions {
            let planned = match a {
                Action::Event(e) => {
                    let fresh = events::event_name(self.obj, step, &n.to_string());
                    *n += 1;
                    Some(
                        self.ctx
                            .recorder
                            .plan(self.obj, e.warning, e.reason, &e.message, fresh)
                            .await,
                    )
                }
                _ => None,
            };
            let mut action = PendingAction::record(a, &mut |_| planned.clone().unwrap_or_default());
            if let Some(e) = action.event.as_mut() {
                // Stamped with the step's time; Events planned after the
                // step (post-rollout) are stamped when they are written.
                e.at = status::parse_time(step).map(|t| {
                    status::format_time_micros(t + SignedDuration::from_micros(*n as i64))
                });
            }
            out.push(action);
        }
        out
    }

    /// The test pause of [`crate::operator::Config::step_pause`]; cut short by stopping.
    pub(super) async fn pause(&self) {
        let pause = self.ctx.config.step_pause;
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.ctx.stopped() => {}
            }
        }
    }

    /// Writes `pending` as the status' record (clearing it with `None`).
    pub(super) async fn save(
        &self,
        status: &mut CanaryStatus,
        pending: Option<PendingStep>,
    ) -> anyhow::Result<()> {
        status.pending_step = pending;
        let patch = status::pending_patch(status.pending_step.as_ref());
        status::write(self.api, self.obj.name(), &patch).await?;
        let uid = self.obj.metadata.uid.clone().unwrap_or_default();
        self.ctx.memo.lock().await.insert(uid, status.clone());
        Ok(())
    }

    /// Finishes the step recorded in `status`: its actions, its Events, its
    /// post-rollout hooks, then clears the record. `again`: the step may have
    /// been partly carried out before. On an error the record stays, and the
    /// next reconcile goes on from it.
    pub(super) async fn finish(&self, status: &mut CanaryStatus, again: bool) -> Result<(), Error> {
        let Some(mut pending) = status.pending_step.clone() else {
            return Ok(());
        };
        let outcome = async {
            self.carry_out(&pending, status, again).await?;
            if let Some(post) = pending.post_rollout.take() {
                if self.ctx.is_stopping() {
                    // The hooks have not been called: the next leader calls them.
                    return Ok(false);
                }
                // At most once: from here on the record says they were called.
                pending.actions = post.then;
                self.save(status, Some(pending.clone())).await?;
                let results = webhooks::call_all(
                    &self.ctx.http,
                    WebhookKind::PostRollout,
                    self.rollout.webhooks_of(WebhookKind::PostRollout),
                    &self.rollout.name,
                    &self.rollout.namespace,
                    status::parse_phase(&post.phase).unwrap_or(Phase::Succeeded),
                    &status.last_applied_spec,
                )
                .await;
                let said: Vec<Action> = core::post_rollout_events(&results)
                    .into_iter()
                    .map(Action::Event)
                    .collect();
                let mut n = 0;
                let mut actions = self
                    .plan(&format!("{}/post-rollout", pending.step), &said, &mut n)
                    .await;
                actions.append(&mut pending.actions);
                pending.actions = actions;
                self.save(status, Some(pending.clone())).await?;
                self.carry_out(&pending, status, false).await?;
            }
            Ok::<bool, anyhow::Error>(true)
        }
        .await;
        match outcome {
            Ok(true) => {
                self.pause().await;
                self.save(status, None).await?;
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                let msg = format!("{e:#}");
                self.ctx
                    .recorder
                    .publish(self.obj, true, "Synced", &msg)
                    .await;
                events::log(self.obj, true, &msg);
                Err(e.into())
            }
        }
    }

    /// Carries out a recorded step's actions in order, then publishes its
    /// Events and alerts. Stops at the first action that fails.
    pub(super) async fn carry_out(
        &self,
        pending: &PendingStep,
        status: &CanaryStatus,
        again: bool,
    ) -> anyhow::Result<()> {
        let mut said = Vec::new();
        for (index, action) in pending.actions.iter().enumerate() {
            let op = match action.op() {
                Ok(op) => op,
                Err(e) => {
                    tracing::warn!(canary = %self.obj.id(), namespace = self.obj.namespace(), "skipping an unreadable recorded action: {e}");
                    continue;
                }
            };
            match op {
                Op::EnsureObjects => {
                    // App Mesh's sidecar injector refuses pods no VirtualNode
                    // selects: the mesh objects come before the primary.
                    self.router.reconcile(self.target).await?;
                    self.workload.ensure(self.observed).await?;
                }
                Op::SetRoutes(plan) => {
                    self.router.set_routes(self.target, &plan).await?;
                    let routes = core::Routes {
                        primary: plan.primary_weight,
                        canary: plan.canary_weight,
                    };
                    self.ctx.telemetry.set_weight(self.rollout, routes);
                }
                Op::ScaleCanaryUp => self.workload.scale_up(self.observed).await?,
                Op::ScaleCanaryToZero => self.workload.scale_target(0).await?,
                Op::PromoteToPrimary if self.observed.revision != pending.revision => {
                    // The target changed since the step: what it runs now
                    // was not analysed. The next step sees the new revision.
                    tracing::warn!(canary = %self.obj.id(), namespace = self.obj.namespace(), "not promoting: the target is no longer the revision the step analysed");
                }
                Op::PromoteToPrimary => self.workload.promote(self.observed).await?,
                Op::Event(_) | Op::Alert(_) => said.push((index, op)),
            }
        }
        let phase = status.phase();
        let standing = crate::notify::alerts::Standing {
            phase,
            canary_weight: u32::try_from(status.canary_weight).unwrap_or(0),
        };
        for (index, op) in said {
            match op {
                Op::Event(e) => {
                    match self.ctx.recorder.deliver(self.obj, e, again).await {
                        Ok(Delivery::AlreadyThere) => continue,
                        Ok(Delivery::Published) => {}
                        // An Event that cannot be written must not stop a rollout.
                        Err(err) => {
                            tracing::warn!(canary = %self.obj.id(), namespace = self.obj.namespace(), error = %err, "writing an Event failed")
                        }
                    }
                    events::log_decision(self.obj, e.warning, e.log_message(), e.policy.as_ref());
                    forward_event(self.ctx, self.rollout, phase, status, e.warning, &e.message)
                        .await;
                }
                Op::Alert(a) => {
                    // Queued, never awaited. Once per step and process; a
                    // step finished again after a restart sends its alerts
                    // again (at-least-once, see notify::alerts).
                    tracing::debug!(canary = %self.obj.id(), namespace = self.obj.namespace(), severity = ?a.severity, muted = a.muted, again, "alert: {}", a.message);
                    self.ctx
                        .alerts
                        .post(self.obj, self.rollout, &pending.step, index, a, standing);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Sends an Event to the Canary's `event` webhooks, or the global one.
pub(super) async fn forward_event(
    ctx: &Context,
    r: &Rollout,
    phase: Phase,
    status: &CanaryStatus,
    warning: bool,
    message: &str,
) {
    let ms = Timestamp::now().as_millisecond();
    // An event webhook is retried as its `retries` say, as Flagger does.
    let mut targets: Vec<WebhookSpec> = r.webhooks_of(WebhookKind::Event).cloned().collect();
    if targets.is_empty() {
        if let Some(url) = &ctx.config.event_webhook {
            targets.push(WebhookSpec {
                name: "event".into(),
                kind: WebhookKind::Event,
                url: url.clone(),
                timeout: Duration::from_secs(10),
                retries: 0,
                mute_alert: false,
                disable_tls: false,
                metadata: Default::default(),
            });
        }
    }
    for h in targets {
        let md = webhooks::event_metadata(&h.metadata, message, warning, ms);
        let body = webhooks::payload(&r.name, &r.namespace, phase, &status.last_applied_spec, &md);
        let url = h.url;
        if let Err(err) =
            webhooks::post(&ctx.http, &url, &body, h.timeout, h.retries, h.disable_tls).await
        {
            tracing::warn!(canary = %r.id(), namespace = %r.namespace, error = %err, "event webhook {url} failed");
        }
    }
}
