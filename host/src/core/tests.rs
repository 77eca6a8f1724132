//! Direct tests of the state machine; whole runs are tested through the simulator.
use super::*;
use crate::api;
use crate::policy::NativeJudge;
use fledge_policy::{Decision, PolicyInput};

fn guide() -> Rollout {
    let text = include_str!("../../../examples/podinfo/canary.yaml");
    let doc = api::yaml::documents(text)
        .expect("guide canary parses")
        .remove(0);
    let canary: api::Canary = api::yaml::typed(&doc).expect("guide canary parses");
    api::validate(&canary)
        .expect("guide canary is valid")
        .rollout
}

fn progressing(weight: u32) -> (Status, Observations) {
    let status = Status {
        phase: Phase::Progressing,
        canary_weight: weight,
        last_applied_spec: "rev2".into(),
        last_promoted_spec: "rev1".into(),
        ..Status::default()
    };
    let obs = Observations {
        revision: "rev2".into(),
        routes: Routes {
            primary: 100 - weight,
            canary: weight,
        },
        ..Observations::default()
    };
    (status, obs)
}

#[test]
fn steps_ask_for_webhooks_then_metrics_one_at_a_time() {
    let r = guide();
    let (status, mut obs) = progressing(10);
    let judge = NativeJudge;
    assert_eq!(
        step(&r, &status, &obs, &judge),
        Outcome::Need(Request::Webhooks {
            kind: WebhookKind::Rollout,
            phase: Phase::Progressing
        })
    );
    obs.webhooks.insert(WebhookKind::Rollout, vec![]);
    assert_eq!(
        step(&r, &status, &obs, &judge),
        Outcome::Need(Request::Metric { index: 0 })
    );
    obs.metrics.push(fledge_policy::MetricResult {
        name: "request-success-rate".into(),
        value: fledge_policy::MetricValue::Value(50.0),
        min: Some(99.0),
        max: None,
        unit: fledge_policy::MetricUnit::Percent,
    });
    // Out of range: no further queries; the policy holds.
    let Outcome::Done(tick) = step(&r, &status, &obs, &judge) else {
        panic!("expected done")
    };
    assert_eq!(tick.status.failed_checks, 1);
    let msgs: Vec<_> = tick.events().map(|e| e.message.as_str()).collect();
    assert_eq!(
        msgs,
        ["Halt podinfo.test advancement success rate 50.00% < 99%"]
    );
}

struct Reckless;
impl Judge for Reckless {
    fn decide(&self, _: &PolicyInput) -> Result<Decision, JudgeError> {
        Ok(Decision::Promote)
    }
}

#[test]
fn the_core_refuses_promotion_at_the_threshold_whatever_the_policy_says() {
    let r = guide();
    let (mut status, mut obs) = progressing(10);
    status.failed_checks = 5;
    obs.webhooks.insert(WebhookKind::Rollback, vec![]);
    let Outcome::Done(tick) = step(&r, &status, &obs, &Reckless) else {
        panic!("expected done")
    };
    assert_eq!(tick.status.phase, Phase::Progressing);
    assert!(!tick.actions.contains(&Action::PromoteToPrimary));
    assert_eq!(tick.status.failed_checks, 6);
}

#[test]
fn a_suspended_canary_does_nothing_but_say_so() {
    let mut r = guide();
    r.suspend = true;
    let (status, obs) = progressing(10);
    let Outcome::Done(tick) = step(&r, &status, &obs, &NativeJudge) else {
        panic!()
    };
    assert_eq!(tick.status, status);
    let msgs: Vec<_> = tick.events().map(|e| e.message.as_str()).collect();
    assert_eq!(msgs, ["skipping canary run as object is suspended"]);
    assert_eq!(tick.actions.len(), 1);
}

#[test]
fn a_target_change_mid_analysis_restarts_it_at_weight_zero() {
    let r = guide();
    let (status, mut obs) = progressing(25);
    obs.revision = "rev3".into();
    let Outcome::Done(tick) = step(&r, &status, &obs, &NativeJudge) else {
        panic!()
    };
    assert_eq!(tick.status.last_applied_spec, "rev3");
    assert_eq!(tick.status.canary_weight, 0);
    assert!(tick
        .actions
        .contains(&Action::SetRoutes(fledge_policy::RoutePlan::weighted(0))));
    let msgs: Vec<_> = tick.events().map(|e| e.message.as_str()).collect();
    assert_eq!(
        msgs,
        ["New revision detected! Restarting analysis for podinfo.test"]
    );
}

#[test]
fn returning_to_the_promoted_revision_after_a_failure_is_not_a_new_rollout() {
    let r = guide();
    let status = Status {
        phase: Phase::Failed,
        last_applied_spec: "bad".into(),
        last_promoted_spec: "good".into(),
        ..Status::default()
    };
    let obs = Observations {
        revision: "good".into(),
        ..Observations::default()
    };
    let Outcome::Done(tick) = step(&r, &status, &obs, &NativeJudge) else {
        panic!()
    };
    assert_eq!(tick.status, status);
    assert_eq!(tick.events().count(), 0);
}

/// The core stays a pure function: no Kubernetes client, no wasmtime, no
/// async runtime, no HTTP. Policies are reached only through `Judge`.
#[test]
fn the_core_imports_no_effects() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let forbidden = [
        "kube",
        "k8s_openapi",
        "wasmtime",
        "tokio",
        "reqwest",
        "hyper",
        "crate::policy",
        "crate::simulate",
        "std::fs",
        "std::net",
        "std::time::SystemTime",
        "std::time::Instant",
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("core dir") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n == "tests.rs")
            || path.extension().is_none_or(|e| e != "rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        for word in forbidden {
            let used = text.lines().any(|l| {
                let l = l.trim_start();
                (l.starts_with("use ") || l.contains("::"))
                    && !l.starts_with("//")
                    && l.contains(&format!("{word}::"))
                    || l.starts_with(&format!("use {word}"))
            });
            assert!(!used, "{} uses {word}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} core files found");
}

/// Counts the decisions it is asked for.
struct Counting(std::cell::Cell<u32>);
impl Judge for Counting {
    fn decide(&self, input: &PolicyInput) -> Result<Decision, JudgeError> {
        self.0.set(self.0.get() + 1);
        NativeJudge.decide(input)
    }
}

#[test]
fn a_gate_after_the_decision_does_not_ask_the_policy_twice() {
    let mut r = guide();
    r.webhooks.push(rollout::WebhookSpec {
        name: "approve".into(),
        kind: WebhookKind::ConfirmTrafficIncrease,
        ..r.webhooks[0].clone()
    });
    let (status, mut obs) = progressing(10);
    let judge = Counting(std::cell::Cell::new(0));
    let tick = loop {
        match step(&r, &status, &obs, &judge) {
            Outcome::Need(Request::Webhooks { kind, .. }) => {
                obs.webhooks.insert(kind, vec![]);
            }
            Outcome::Need(Request::Metric { index }) => {
                obs.metrics.push(fledge_policy::MetricResult {
                    name: r.metrics[index].name.clone(),
                    value: fledge_policy::MetricValue::Value(100.0),
                    min: r.metrics[index].min,
                    max: r.metrics[index].max,
                    unit: r.metrics[index].unit,
                });
            }
            Outcome::Need(Request::Gate { kind, decision, .. }) => {
                assert_eq!(kind, WebhookKind::ConfirmTrafficIncrease);
                obs.webhooks.insert(kind, vec![]);
                obs.decision = Some(decision);
            }
            Outcome::Done(tick) => break tick,
        }
    };
    assert_eq!(judge.0.get(), 1);
    assert!(tick
        .actions
        .contains(&Action::SetRoutes(fledge_policy::RoutePlan::weighted(15))));
}
