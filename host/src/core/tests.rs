//! Direct tests of the state machine; whole runs are tested through the simulator.
use super::*;
use crate::api;
use crate::policy::NativeJudge;
use fledge_policy::{Decision, PolicyInput, Readiness};

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
fn steps_ask_for_webhooks_then_metrics_in_one_request() {
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
    obs.webhooks.insert(WebhookKind::Rollback, vec![]);
    assert_eq!(
        step(&r, &status, &obs, &judge),
        Outcome::Need(Request::Metrics)
    );
    let rate = r.query_order().next().expect("a metric");
    let result = rate.result(&r, rollout::QueryOutcome::Value(50.0));
    // Out of range: the shell queries no further; the policy holds.
    assert!(rate.stops(&result));
    obs.metrics = Some(vec![result]);
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
    fn decide(&self, _: &PolicyInput, _: &fledge_policy::Context) -> Result<Decision, JudgeError> {
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
    // At the threshold the host rolls back before a policy could promote.
    assert_eq!(tick.status.phase, Phase::Failed);
    assert!(!tick.actions.contains(&Action::PromoteToPrimary));
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
    fn decide(
        &self,
        input: &PolicyInput,
        _: &fledge_policy::Context,
    ) -> Result<Decision, JudgeError> {
        self.0.set(self.0.get() + 1);
        NativeJudge.decide(input, &fledge_policy::Context::default())
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
            Outcome::Need(Request::Metrics) => {
                let healthy = |m: &rollout::MetricSpec| {
                    m.result(&r, rollout::QueryOutcome::Value(m.min.unwrap_or(0.0)))
                };
                obs.metrics = Some(r.query_order().map(healthy).collect());
            }
            Outcome::Need(Request::Gate { kind, decision, .. }) => {
                assert_eq!(kind, WebhookKind::ConfirmTrafficIncrease);
                obs.webhooks.insert(kind, vec![]);
                obs.decision = Some(decision);
            }
            Outcome::Need(Request::Series(q)) => panic!("the built-in asked for series {q:?}"),
            Outcome::Done(tick) => break tick,
        }
    };
    assert_eq!(judge.0.get(), 1);
    assert!(tick
        .actions
        .contains(&Action::SetRoutes(fledge_policy::RoutePlan::weighted(15))));
}

/// Answers every request of `r`'s step with passing webhooks and healthy
/// metrics, recording each request.
fn run_step(
    r: &Rollout,
    status: &Status,
    mut obs: Observations,
    judge: &dyn Judge,
) -> (Tick, Vec<Request>) {
    let mut asked = Vec::new();
    let tick = loop {
        match step(r, status, &obs, judge) {
            Outcome::Need(request) => {
                match &request {
                    Request::Webhooks { kind, .. } => {
                        let passed = *kind != WebhookKind::Rollback;
                        let results = r
                            .webhooks_of(*kind)
                            .map(|w| fledge_policy::WebhookResult {
                                name: w.name.clone(),
                                kind: *kind,
                                passed,
                                message: String::new(),
                            })
                            .collect();
                        obs.webhooks.insert(*kind, results);
                    }
                    Request::Gate { kind, decision, .. } => {
                        obs.webhooks.insert(*kind, vec![]);
                        obs.decision = Some(decision.clone());
                    }
                    Request::Metrics => {
                        let healthy = |m: &rollout::MetricSpec| {
                            m.result(r, rollout::QueryOutcome::Value(m.min.unwrap_or(0.0)))
                        };
                        obs.metrics = Some(r.query_order().map(healthy).collect());
                    }
                    // One sample per query, at the step's time, valued by its
                    // position among the queries.
                    Request::Series(queries) => {
                        let answers = queries
                            .iter()
                            .enumerate()
                            .map(|(i, q)| fledge_policy::Series {
                                name: q.name.clone(),
                                samples: Ok(vec![fledge_policy::Sample {
                                    timestamp: obs.now,
                                    value: i as f64,
                                }]),
                            })
                            .collect();
                        obs.series = Some(answers);
                    }
                }
                asked.push(request);
            }
            Outcome::Done(tick) => break tick,
        }
    };
    (tick, asked)
}

fn hook(name: &str, kind: WebhookKind) -> rollout::WebhookSpec {
    rollout::WebhookSpec {
        name: name.into(),
        kind,
        url: format!("http://{name}.test/"),
        timeout: std::time::Duration::from_secs(10),
        retries: 0,
        mute_alert: false,
        disable_tls: false,
        metadata: Default::default(),
    }
}

#[test]
fn post_rollout_hooks_wait_until_the_step_is_carried_out() {
    let mut r = guide();
    r.webhooks.push(hook("notify", WebhookKind::PostRollout));
    let (mut status, obs) = progressing(0);
    status.phase = Phase::Finalising;
    let (tick, asked) = run_step(&r, &status, obs, &NativeJudge);
    assert!(
        !asked.iter().any(|q| matches!(
            q,
            Request::Webhooks {
                kind: WebhookKind::PostRollout,
                ..
            }
        )),
        "{asked:?}"
    );
    assert!(tick.actions.contains(&Action::ScaleCanaryToZero));
    assert_eq!(tick.status.phase, Phase::Succeeded);
    let post = tick.post_rollout.expect("post-rollout hooks to call");
    assert_eq!(post.phase, Phase::Succeeded);
    // The promotion is reported after the hooks, as Flagger reports it.
    let then: Vec<_> = post
        .then
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some(e.message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(then, ["Promotion completed! Scaling down podinfo.test"]);
}

#[test]
fn webhook_payloads_carry_flaggers_phase() {
    let mut r = guide();
    r.webhooks = vec![
        hook("abort", WebhookKind::Rollback),
        hook("ship", WebhookKind::ConfirmPromotion),
        hook("load", WebhookKind::Rollout),
    ];
    // Waiting for promotion approval at the maximum weight.
    let (mut status, obs) = progressing(50);
    status.phase = Phase::WaitingPromotion;
    let (_, asked) = run_step(&r, &status, obs, &NativeJudge);
    assert!(asked.contains(&Request::Webhooks {
        kind: WebhookKind::Rollback,
        phase: Phase::WaitingPromotion
    }));
    assert!(
        asked.iter().any(|q| matches!(
            q,
            Request::Gate {
                kind: WebhookKind::ConfirmPromotion,
                phase: Phase::Progressing,
                ..
            }
        )),
        "{asked:?}"
    );
    let (status, obs) = progressing(10);
    let (_, asked) = run_step(&r, &status, obs, &NativeJudge);
    assert!(asked.contains(&Request::Webhooks {
        kind: WebhookKind::Rollout,
        phase: Phase::Progressing
    }));
}

#[test]
fn ab_promotion_shifts_only_the_matching_requests() {
    let text = include_str!("../../../examples/podinfo/canary-ab-header.yaml");
    let mut canary: api::Canary = api::yaml::from_str(text).expect("parses");
    if let Some(a) = canary.spec.as_mut().and_then(|s| s.analysis.as_mut()) {
        a.step_weight_promotion = Some(50);
    }
    let r = api::validate(&canary).expect("valid").rollout;
    let status = Status {
        phase: Phase::Promoting,
        iterations: 10,
        last_applied_spec: "rev2".into(),
        last_promoted_spec: "rev1".into(),
        ..Status::default()
    };
    let obs = Observations {
        revision: "rev2".into(),
        routes: Routes {
            primary: 0,
            canary: 100,
        },
        ..Observations::default()
    };
    let (tick, _) = run_step(&r, &status, obs, &NativeJudge);
    let plan = tick
        .actions
        .iter()
        .find_map(|a| match a {
            Action::SetRoutes(p) => Some(p.clone()),
            _ => None,
        })
        .expect("a route change");
    assert_eq!((plan.primary_weight, plan.canary_weight), (50, 50));
    assert_eq!(plan.match_rules, r.analysis.match_rules);
    assert!(!plan.match_rules.is_empty());
}

/// Always promotes, whatever it sees.
struct Promoter;
impl Judge for Promoter {
    fn decide(&self, _: &PolicyInput, _: &fledge_policy::Context) -> Result<Decision, JudgeError> {
        Ok(Decision::Promote)
    }
}

#[test]
fn a_fired_rollback_hook_or_a_missed_deadline_rolls_back_whatever_the_policy_says() {
    let mut r = guide();
    r.webhooks = vec![hook("abort", WebhookKind::Rollback)];
    let (status, mut obs) = progressing(10);
    obs.webhooks.insert(
        WebhookKind::Rollback,
        vec![fledge_policy::WebhookResult {
            name: "abort".into(),
            kind: WebhookKind::Rollback,
            passed: true,
            message: String::new(),
        }],
    );
    let Outcome::Done(tick) = step(&r, &status, &obs, &Promoter) else {
        panic!("expected done")
    };
    assert_eq!(tick.status.phase, Phase::Failed);
    assert!(!tick.actions.contains(&Action::PromoteToPrimary));

    let (status, mut obs) = progressing(10);
    obs.canary_ready =
        Readiness::DeadlineExceeded("deployment \"podinfo\" exceeded its progress deadline".into());
    let (tick, _) = run_step(&guide(), &status, obs, &Promoter);
    assert_eq!(tick.status.phase, Phase::Failed);
    assert!(tick.actions.contains(&Action::ScaleCanaryToZero));
}

#[test]
fn promote_during_promotion_finishes_it_instead_of_stalling() {
    let r = guide();
    let (mut status, obs) = progressing(50);
    status.phase = Phase::Promoting;
    let (tick, _) = run_step(&r, &status, obs, &Promoter);
    assert_eq!(tick.status.phase, Phase::Finalising);
    assert!(tick
        .actions
        .contains(&Action::SetRoutes(fledge_policy::RoutePlan::weighted(0))));
    assert_eq!(
        tick.events()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        ["Routing all traffic to primary"]
    );
}

#[test]
fn event_texts_are_single_safe_lines() {
    struct Forger;
    impl Judge for Forger {
        fn decide(
            &self,
            _: &PolicyInput,
            _: &fledge_policy::Context,
        ) -> Result<Decision, JudgeError> {
            Ok(Decision::halt(
                "ok\nPromotion completed! \u{1b}[31mforged\u{202e}",
            ))
        }
    }
    let (status, obs) = progressing(10);
    let (tick, _) = run_step(&guide(), &status, obs, &Forger);
    let msgs: Vec<_> = tick.events().map(|e| e.message.as_str()).collect();
    assert_eq!(
        msgs,
        ["Halt podinfo.test advancement ok Promotion completed! \\u{1b}[31mforged\\u{202e}"]
    );
}

#[test]
fn status_keeps_the_real_weight_and_moves_its_transition_time_only_on_a_phase_change() {
    let mut r = guide();
    r.webhooks.push(hook("ship", WebhookKind::ConfirmPromotion));
    // A step that advances: Fledge's reason, no transition.
    let (mut status, mut obs) = progressing(10);
    status.last_transition = 100;
    obs.now = 1_000;
    let (tick, _) = run_step(&r, &status, obs, &NativeJudge);
    let reasons: Vec<_> = tick.events().map(|e| e.reason).collect();
    assert_eq!(reasons, ["Advance"]);
    assert_eq!(tick.status.last_transition, 100);
    // At the maximum weight with the promotion gate closed: WaitingPromotion
    // at the weight traffic really has, and a transition.
    let (mut status, mut obs) = progressing(50);
    status.last_transition = 100;
    obs.now = 1_000;
    obs.webhooks.insert(WebhookKind::Rollout, vec![]);
    obs.metrics = Some(vec![]);
    obs.webhooks.insert(
        WebhookKind::ConfirmPromotion,
        vec![fledge_policy::WebhookResult {
            name: "ship".into(),
            kind: WebhookKind::ConfirmPromotion,
            passed: false,
            message: "closed".into(),
        }],
    );
    obs.decision = Some(Decision::Promote);
    let Outcome::Done(tick) = step(&r, &status, &obs, &NativeJudge) else {
        panic!("expected done")
    };
    assert_eq!(tick.status.phase, Phase::WaitingPromotion);
    assert_eq!(tick.status.canary_weight, 50);
    assert_eq!(tick.status.last_transition, 1_000);
    let reasons: Vec<_> = tick.events().map(|e| e.reason).collect();
    assert_eq!(reasons, ["Halt"]);
}

#[test]
fn at_the_threshold_the_host_rolls_back_a_policy_that_only_holds() {
    struct Holder;
    impl Judge for Holder {
        fn decide(
            &self,
            _: &PolicyInput,
            _: &fledge_policy::Context,
        ) -> Result<Decision, JudgeError> {
            Ok(Decision::failed_check("never satisfied"))
        }
    }
    let r = guide();
    let (mut status, obs) = progressing(10);
    status.failed_checks = r.analysis.threshold;
    let (tick, _) = run_step(&r, &status, obs, &Holder);
    assert_eq!(tick.status.phase, Phase::Failed);
    assert_eq!(
        tick.events()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        [
            "Rolling back podinfo.test failed checks threshold reached 5",
            "Canary failed! Scaling down podinfo.test"
        ]
    );
}

/// Asks for two series, then advances only if it got both, with the time
/// of the step.
struct Querying;

impl Judge for Querying {
    fn queries(
        &self,
        input: &PolicyInput,
        ctx: &fledge_policy::Context,
    ) -> Result<Vec<fledge_policy::RangeQuery>, JudgeError> {
        assert!(ctx.series.is_empty(), "queries come before answers");
        Ok(vec![
            fledge_policy::RangeQuery::new("a", format!("up{{c=\"{}\"}}", input.canary), 60, 10),
            fledge_policy::RangeQuery::new("b", "down", 60, 10),
        ])
    }

    fn decide(
        &self,
        _: &PolicyInput,
        ctx: &fledge_policy::Context,
    ) -> Result<Decision, JudgeError> {
        let a = ctx.series("a").map_err(JudgeError)?;
        let b = ctx.series("b").map_err(JudgeError)?;
        if a[0].timestamp != ctx.now || b[0].value != 1.0 {
            return Err(JudgeError(format!(
                "wrong answers {a:?} {b:?} at {}",
                ctx.now
            )));
        }
        Ok(Decision::Advance(fledge_policy::Advance {
            route: fledge_policy::RoutePlan::weighted(15),
            iteration: 0,
        }))
    }
}

#[test]
fn a_policys_range_queries_are_asked_for_once_and_answered_before_it_decides() {
    let r = guide();
    let (status, obs) = progressing(10);
    let now = obs.now;
    let (tick, asked) = run_step(&r, &status, obs, &Querying);
    let series: Vec<_> = asked
        .iter()
        .filter_map(|q| match q {
            Request::Series(q) => Some(q),
            _ => None,
        })
        .collect();
    assert_eq!(series.len(), 1, "{asked:?}");
    assert_eq!(series[0][0].query, "up{c=\"podinfo.test\"}");
    // Asked after the metrics: the policy's input is complete.
    let metrics_at = asked.iter().position(|q| *q == Request::Metrics).unwrap();
    let series_at = asked
        .iter()
        .position(|q| matches!(q, Request::Series(_)))
        .unwrap();
    assert!(metrics_at < series_at, "{asked:?}");
    assert!(
        tick.actions
            .contains(&Action::SetRoutes(fledge_policy::RoutePlan::weighted(15))),
        "{:?} at {now}",
        tick.actions
    );
}
