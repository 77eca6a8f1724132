//! A Canary Fledge refuses to act on: the `Valid` condition and its Events.

use super::*;

/// A Canary that cannot be acted on: a `Valid=False` condition and one
/// Warning Event per problem, once per distinct set of problems. Nothing is
/// created or changed; a corrected spec triggers a new reconcile.
pub(super) async fn invalid(
    obj: &CanaryObject,
    ctx: &Context,
    api: &Api<CanaryObject>,
    status: &CanaryStatus,
    issues: Vec<Issue>,
    now: Timestamp,
) -> Result<Requeue, Error> {
    refuse(obj, ctx, api, status, issues, now, "InvalidSpec").await
}

/// Sets the Valid condition to False with `reason`, and publishes one
/// Warning Event per issue when it changes.
pub(super) async fn refuse(
    obj: &CanaryObject,
    ctx: &Context,
    api: &Api<CanaryObject>,
    status: &CanaryStatus,
    issues: Vec<Issue>,
    now: Timestamp,
    reason: &str,
) -> Result<Requeue, Error> {
    let message = issues
        .iter()
        .map(Issue::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let mut next = status.clone();
    next.set_condition(VALID, "False", reason, &message, now);
    if status.condition(VALID) != next.condition(VALID) {
        for i in &issues {
            let text = format!("Invalid {}: {i}", obj.id());
            ctx.recorder.publish(obj, true, reason, &text).await;
            events::log(obj, true, &text);
        }
        let patch = status::merge_patch(status, &next);
        status::write(api, obj.name(), &patch).await?;
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        ctx.memo.lock().await.insert(uid, next);
    }
    // A target that does not exist yet may appear: look again later.
    Ok(Requeue::requeue(Duration::from_secs(60)))
}
