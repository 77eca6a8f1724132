//! The finalizer and `revertOnDeletion`.

use super::*;

pub(super) fn has_finalizer(obj: &CanaryObject) -> bool {
    obj.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

pub(super) async fn set_finalizer(
    api: &Api<CanaryObject>,
    obj: &CanaryObject,
    on: bool,
) -> Result<(), Error> {
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
pub(super) async fn finalize(
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
