//! Whether a Deployment has finished rolling out, judged from its status the
//! way Flagger does, with the guide's wording.
use fledge_policy::Readiness;
use std::time::Duration;

/// What the readiness check reads of a Deployment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentView {
    /// `<name>.<namespace>` for the message.
    pub id: String,
    pub name: String,
    pub generation: i64,
    pub observed_generation: i64,
    pub replicas: i32,
    pub updated_replicas: i32,
    pub available_replicas: i32,
    /// Total pods, old and new (`status.replicas`).
    pub total_replicas: i32,
    /// The Deployment's own `Progressing` condition says `ProgressDeadlineExceeded`.
    pub progress_deadline_exceeded: bool,
    /// Seconds since pods became unavailable (`Available=False`,
    /// `MinimumReplicasUnavailable`), when they are.
    pub unavailable_for: Option<Duration>,
}

/// Readiness of a primary Deployment that does not exist yet: the step that
/// observed its absence creates it, and a Deployment just created is one whose
/// controller has not observed its first generation — what Flagger reports at
/// that point, as it checks right after creating it.
pub fn not_created_yet(id: &str) -> Readiness {
    Readiness::NotReady(format!(
        "Waiting for {id} rollout to finish: observed deployment generation less than desired generation"
    ))
}

/// Readiness of `d`: `threshold` is the percentage of updated replicas that
/// must be available; `deadline` is the Canary's `progressDeadlineSeconds`.
pub fn assess(d: &DeploymentView, threshold: u32, deadline: Duration) -> Readiness {
    let waiting = |what: String| format!("Waiting for {} rollout to finish: {what}", d.id);
    if d.generation > d.observed_generation {
        return Readiness::NotReady(waiting(
            "observed deployment generation less than desired generation".into(),
        ));
    }
    if d.progress_deadline_exceeded || d.unavailable_for.is_some_and(|t| t > deadline) {
        return Readiness::DeadlineExceeded(format!(
            "deployment \"{}\" exceeded its progress deadline",
            d.name
        ));
    }
    if d.updated_replicas < d.replicas {
        return Readiness::NotReady(waiting(format!(
            "{} out of {} new replicas have been updated",
            d.updated_replicas, d.replicas
        )));
    }
    if d.total_replicas > d.updated_replicas {
        return Readiness::NotReady(waiting(format!(
            "{} old replicas are pending termination",
            d.total_replicas - d.updated_replicas
        )));
    }
    let needed = (i64::from(d.updated_replicas) * i64::from(threshold)) / 100;
    if i64::from(d.available_replicas) < needed || (d.replicas > 0 && d.available_replicas == 0) {
        return Readiness::NotReady(waiting(format!(
            "{} of {} updated replicas are available",
            d.available_replicas, d.updated_replicas
        )));
    }
    Readiness::Ready
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep() -> DeploymentView {
        DeploymentView {
            id: "podinfo.test".into(),
            name: "podinfo".into(),
            generation: 2,
            observed_generation: 2,
            replicas: 2,
            updated_replicas: 2,
            available_replicas: 2,
            total_replicas: 2,
            ..Default::default()
        }
    }

    #[test]
    fn ready_when_all_updated_replicas_are_available() {
        assert_eq!(
            assess(&dep(), 100, Duration::from_secs(600)),
            Readiness::Ready
        );
    }

    #[test]
    fn waiting_texts_follow_the_guide() {
        let d = DeploymentView {
            replicas: 1,
            updated_replicas: 1,
            total_replicas: 1,
            available_replicas: 0,
            ..dep()
        };
        assert_eq!(
            assess(&d, 100, Duration::from_secs(600)),
            Readiness::NotReady(
                "Waiting for podinfo.test rollout to finish: 0 of 1 updated replicas are available"
                    .into()
            )
        );
        let d = DeploymentView {
            generation: 3,
            ..dep()
        };
        assert!(
            matches!(assess(&d, 100, Duration::from_secs(600)), Readiness::NotReady(m) if m.ends_with("less than desired generation"))
        );
    }

    #[test]
    fn a_rollout_stuck_past_the_deadline_is_not_retriable() {
        let d = DeploymentView {
            available_replicas: 0,
            unavailable_for: Some(Duration::from_secs(61)),
            ..dep()
        };
        assert!(matches!(
            assess(&d, 100, Duration::from_secs(60)),
            Readiness::DeadlineExceeded(_)
        ));
        assert!(matches!(
            assess(&d, 100, Duration::from_secs(120)),
            Readiness::NotReady(_)
        ));
    }

    #[test]
    fn threshold_allows_partial_availability() {
        let d = DeploymentView {
            replicas: 4,
            updated_replicas: 4,
            total_replicas: 4,
            available_replicas: 2,
            ..dep()
        };
        assert_eq!(assess(&d, 50, Duration::from_secs(600)), Readiness::Ready);
        assert!(matches!(
            assess(&d, 100, Duration::from_secs(600)),
            Readiness::NotReady(_)
        ));
    }
}
