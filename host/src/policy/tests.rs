//! The runtime end to end: the built-in policy through Wasm on the App Mesh
//! guide's configuration, and hostile components that must be contained.
use super::*;
use fledge_policy::testing::{self, duration, success_rate, webhook};
use fledge_policy::*;
use std::sync::OnceLock;
use std::time::Instant;

/// One runtime for every test, as in the operator: tests then also check that
/// hostile decisions leave it usable for the next ones.
fn runtime() -> &'static PolicyRuntime {
    static RUNTIME: OnceLock<PolicyRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| match PolicyRuntime::new(RuntimeConfig::default()) {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    })
}

fn builtin() -> Policy {
    runtime().builtin().expect("the built-in policy loads")
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("FLEDGE_FIXTURE_DIR")).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture(name: &str) -> Policy {
    runtime()
        .load(&fixture_bytes(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The guide's Canary mid-step, with passing metrics and load test.
fn guide_input() -> PolicyInput {
    PolicyInput {
        metrics: vec![success_rate(99.9), duration(120.0)],
        webhooks: vec![webhook("load-test", WebhookKind::Rollout, true)],
        ..testing::guide_input()
    }
}

fn header(name: &str, matcher: StringMatch) -> MatchRule {
    MatchRule {
        headers: vec![HeaderMatch {
            name: name.into(),
            matcher,
        }],
    }
}

/// Applies decisions until one is not an advance; returns the advances and that decision.
fn walk(policy: &Policy, mut input: PolicyInput) -> (Vec<Advance>, Decision) {
    let mut advances = vec![];
    for _ in 0..100 {
        let decision = policy.evaluate(&input).expect("a valid decision");
        // The sandboxed and the native build must agree, step by step.
        assert_eq!(decision, fledge_policy_flagger::decide(&input));
        match decision {
            Decision::Advance(a) => {
                input.state.canary_weight = a.route.canary_weight;
                input.state.primary_weight = a.route.primary_weight;
                input.state.iteration = a.iteration;
                advances.push(a);
            }
            other => return (advances, other),
        }
    }
    panic!("no end after 100 steps");
}

#[test]
fn builtin_steps_the_guide_canary_by_five_to_fifty_then_promotes() {
    let (advances, end) = walk(&builtin(), guide_input());
    let weights: Vec<u32> = advances.iter().map(|a| a.route.canary_weight).collect();
    assert_eq!(weights, (1..=10).map(|i| i * 5).collect::<Vec<_>>());
    assert!(advances
        .iter()
        .all(|a| a.route.primary_weight + a.route.canary_weight == 100));
    assert_eq!(end, Decision::Promote);
}

#[test]
fn builtin_holds_on_a_failing_success_rate() {
    let mut input = guide_input();
    input.state.canary_weight = 10;
    input.state.primary_weight = 90;
    input.metrics = vec![success_rate(69.17), duration(120.0)];
    assert_eq!(
        builtin().evaluate(&input),
        Ok(Decision::Hold(Hold {
            reason: "success rate 69.17% < 99%".into(),
            failed_check: true,
        }))
    );
}

#[test]
fn builtin_rolls_back_at_five_failed_checks() {
    let mut input = guide_input();
    input.state.canary_weight = 10;
    input.state.primary_weight = 90;
    input.state.failed_checks = 5;
    input.metrics = vec![success_rate(69.17)];
    assert_eq!(
        builtin().evaluate(&input),
        Ok(Decision::Rollback(
            "failed checks threshold reached 5".into()
        ))
    );
}

#[test]
fn builtin_ab_test_iterates_ten_times_with_the_guide_match_rules() {
    let rules = vec![
        header("x-canary", StringMatch::Exact("insider".into())),
        header(
            "cookie",
            StringMatch::Regex("^(.*?;)?(canary=insider)(;.*)?$".into()),
        ),
    ];
    let mut input = guide_input();
    input.strategy = Strategy::AbTesting;
    input.analysis.max_weight = None;
    input.analysis.step_weight = None;
    input.analysis.iterations = Some(10);
    input.analysis.match_rules = rules.clone();

    let (advances, end) = walk(&builtin(), input);
    let iterations: Vec<u32> = advances.iter().map(|a| a.iteration).collect();
    assert_eq!(iterations, (1..=10).collect::<Vec<_>>());
    for a in &advances {
        // Every rule, the regex included, survives the trip into the guest and back.
        assert_eq!(a.route.match_rules, rules);
        assert_eq!((a.route.primary_weight, a.route.canary_weight), (0, 100));
    }
    assert_eq!(end, Decision::Promote);
}

#[test]
fn builtin_judges_through_the_judge_trait() {
    let policy: &dyn Judge = &builtin();
    assert_eq!(
        policy.decide(&guide_input()),
        Ok(Decision::Advance(Advance {
            route: RoutePlan::weighted(5),
            iteration: 0,
        }))
    );
}

#[test]
fn endless_loop_is_stopped_by_the_deadline() {
    let policy = fixture("endless-loop");
    let started = Instant::now();
    let err = policy.evaluate(&guide_input()).unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(
        err,
        PolicyError::Timeout {
            limit: Duration::from_millis(100)
        }
    );
    assert!(
        err.to_string()
            .starts_with("policy did not decide within its deadline of 100 ms"),
        "{err}"
    );
    assert!(
        // Not a speed check: a loop that was not interrupted never returns.
        elapsed >= Duration::from_millis(90) && elapsed < Duration::from_secs(10),
        "stopped after {elapsed:?}"
    );
}

/// A runtime whose deadline cannot fire before a memory cap does, however
/// loaded the machine is.
fn patient_runtime(memory_limit: u64) -> PolicyRuntime {
    PolicyRuntime::new(RuntimeConfig {
        deadline: Duration::from_secs(30),
        memory_limit,
        max_concurrent_decisions: 2,
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

#[test]
fn memory_bomb_is_stopped_by_the_cap() {
    let err = patient_runtime(32 << 20)
        .load(&fixture_bytes("memory-bomb"))
        .expect("fixture loads")
        .evaluate(&guide_input())
        .unwrap_err();
    assert_eq!(err, PolicyError::MemoryLimit { limit: 32 << 20 });
    assert!(
        err.to_string()
            .contains("more than its memory cap of 32 MiB"),
        "{err}"
    );
}

#[test]
fn panic_is_a_trap_that_carries_the_panic_message() {
    let err = fixture("panic").evaluate(&guide_input()).unwrap_err();
    let PolicyError::Trap { message, log } = &err else {
        panic!("expected a trap, got {err:?}");
    };
    assert!(
        message.contains("fixture policy gave up on podinfo.test"),
        "{message}"
    );
    assert!(
        message.starts_with("policy panicked at panic/src/lib.rs:"),
        "{message}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("error: policy panicked at ")),
        "{log:?}"
    );
    // What the core sees.
    let judged = fixture("panic").decide(&guide_input()).unwrap_err();
    assert!(
        judged.0.contains("fixture policy gave up on podinfo.test"),
        "{judged}"
    );
}

#[test]
fn weight_150_is_refused_by_validation() {
    let policy = fixture("bad-weight");
    assert_eq!(
        policy.evaluate(&guide_input()),
        Err(PolicyError::InvalidDecision(
            InvalidDecision::WeightOutOfRange {
                which: "canary",
                weight: 150
            }
        ))
    );
    let judged = policy.decide(&guide_input()).unwrap_err();
    assert_eq!(
        judged.0,
        "policy returned an invalid decision: canary weight 150 is outside 0..=100"
    );
}

#[test]
fn wrong_world_fails_to_load_with_a_clear_error() {
    let err = runtime().load(&fixture_bytes("wrong-world")).unwrap_err();
    let PolicyError::WorldMismatch(detail) = &err else {
        panic!("expected a world mismatch, got {err:?}");
    };
    assert!(detail.starts_with("it exports run (func)"), "{detail}");
    let text = err.to_string();
    assert!(
        text.starts_with("this component does not implement fledge:policy/rollout-policy@0.1.0"),
        "{text}"
    );
    assert!(
        text.ends_with("build it against wit/fledge-policy.wit"),
        "{text}"
    );

    let info = runtime().inspect(&fixture_bytes("wrong-world")).unwrap();
    assert_eq!(info.exports, vec!["run (func)".to_string()]);
    assert!(info.world.is_err());
}

#[test]
fn not_a_component_fails_to_load_with_a_clear_error() {
    let err = runtime().load(b"not wasm at all").unwrap_err();
    assert!(matches!(err, PolicyError::NotAComponent(_)), "{err:?}");
    // The smallest core module: magic and version 1.
    let err = runtime().load(b"\0asm\x01\0\0\0").unwrap_err();
    assert!(err.to_string().contains("core WebAssembly module"), "{err}");
}

#[test]
fn decisions_share_no_state() {
    let policy = fixture("stateful");
    for _ in 0..3 {
        assert_eq!(
            policy.evaluate(&guide_input()),
            Ok(Decision::Wait("call 1".into()))
        );
    }
}

#[test]
fn runtime_stays_usable_after_hostile_decisions() {
    for name in ["memory-bomb", "panic", "bad-weight"] {
        let _ = fixture(name).evaluate(&guide_input()).unwrap_err();
        let (advances, end) = walk(&builtin(), guide_input());
        assert_eq!(advances.len(), 10);
        assert_eq!(end, Decision::Promote);
    }
}

#[test]
fn loading_the_same_bytes_compiles_once() {
    let a = builtin();
    let b = runtime().load(BUILTIN_COMPONENT).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.digest(), digest(BUILTIN_COMPONENT));
    assert!(a.digest().starts_with("sha256:") && a.digest().len() == 7 + 64);
    let cache = runtime().shared.cache.lock().unwrap();
    assert_eq!(cache.keys().filter(|k| k.as_str() == a.digest()).count(), 1);
}

#[test]
fn policies_decide_concurrently_from_many_threads() {
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
    assert_send_sync_clone::<Policy>();

    let policy = builtin();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let policy = policy.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let (advances, end) = walk(&policy, guide_input());
                    assert_eq!((advances.len(), end), (10, Decision::Promote));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no decision thread panics");
    }
}

#[test]
fn config_is_checked_and_the_deadline_rounds_up() {
    let zero = RuntimeConfig {
        deadline: Duration::ZERO,
        ..RuntimeConfig::default()
    };
    assert!(matches!(
        PolicyRuntime::new(zero),
        Err(PolicyError::Setup(_))
    ));
    let tiny = RuntimeConfig {
        memory_limit: 4096,
        ..RuntimeConfig::default()
    };
    assert!(PolicyRuntime::new(tiny)
        .err()
        .is_some_and(|e| e.to_string().contains("at least 1 MiB")));

    let config = RuntimeConfig::default();
    assert_eq!(config.tick(), Duration::from_millis(10));
    assert_eq!(config.deadline_ticks(), 11);
    let odd = RuntimeConfig {
        deadline: Duration::from_millis(25),
        ..RuntimeConfig::default()
    };
    // 2.5 ms ticks: 10 of them, plus one.
    assert_eq!(odd.deadline_ticks(), 11);
}

#[test]
fn a_smaller_deadline_and_cap_are_honoured() {
    let rt = PolicyRuntime::new(RuntimeConfig {
        deadline: Duration::from_millis(20),
        memory_limit: 8 << 20,
        max_concurrent_decisions: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let looping = rt.load(&fixture_bytes("endless-loop")).unwrap();
    let started = Instant::now();
    let err = looping.evaluate(&guide_input()).unwrap_err();
    assert_eq!(
        err,
        PolicyError::Timeout {
            limit: Duration::from_millis(20)
        }
    );
    // Not a speed check: only that the loop was interrupted at all.
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = patient_runtime(8 << 20)
        .load(&fixture_bytes("memory-bomb"))
        .unwrap()
        .evaluate(&guide_input())
        .unwrap_err();
    assert_eq!(err, PolicyError::MemoryLimit { limit: 8 << 20 });
    // The built-in policy fits comfortably in the smaller sandbox.
    assert!(rt.builtin().unwrap().evaluate(&guide_input()).is_ok());
}

#[test]
fn decisions_beyond_the_pool_wait_for_a_slot_instead_of_failing() {
    let rt = PolicyRuntime::new(RuntimeConfig {
        max_concurrent_decisions: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let policy = rt.builtin().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let policy = policy.clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| policy.evaluate(&guide_input()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        let results = t.join().expect("no decision thread panics");
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    }
}

#[test]
fn inputs_far_larger_than_the_guest_arena_round_trip() {
    // Hundreds of metrics and long names: the guest allocator must grow
    // memory past its arena, and realloc large strings and lists.
    let mut input = guide_input();
    input.metrics = (0..400)
        .map(|i| MetricResult {
            name: format!("{}-{i}", "template-metric".repeat(8)),
            value: MetricValue::Value(f64::from(i)),
            min: None,
            max: Some(1000.0),
            unit: MetricUnit::None,
        })
        .collect();
    input.metrics.push(MetricResult {
        name: "x".repeat(300),
        value: MetricValue::Value(2.5),
        min: None,
        max: Some(1.0),
        unit: MetricUnit::None,
    });
    let decision = builtin().evaluate(&input).unwrap();
    assert_eq!(decision, fledge_policy_flagger::decide(&input));
    assert_eq!(
        decision,
        Decision::failed_check(format!("{} 2.50 > 1", "x".repeat(300)))
    );

    let mut ab = guide_input();
    ab.strategy = Strategy::AbTesting;
    ab.analysis.iterations = Some(3);
    ab.analysis.match_rules = (0..32)
        .map(|i| {
            header(
                &format!("x-canary-{i}"),
                StringMatch::Prefix("v".repeat(900)),
            )
        })
        .collect();
    let decision = builtin().evaluate(&ab).unwrap();
    assert_eq!(decision, fledge_policy_flagger::decide(&ab));
}

mod agreement {
    //! The sandboxed built-in decides exactly as the native one on any input:
    //! conversions both ways, float formatting and the guest allocator
    //! included.
    use super::*;
    use proptest::prelude::*;
    // Explicit, so it wins over `fledge_policy::Strategy` from the glob above.
    use proptest::strategy::Strategy;

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 .%:;=-]{0,40}"
    }

    fn string_match() -> impl Strategy<Value = StringMatch> {
        prop_oneof![
            text().prop_map(StringMatch::Exact),
            text().prop_map(StringMatch::Prefix),
            text().prop_map(StringMatch::Suffix),
            text().prop_map(StringMatch::Regex),
        ]
    }

    fn match_rules() -> impl Strategy<Value = Vec<MatchRule>> {
        prop::collection::vec(
            prop::collection::vec(
                ("[a-z-]{1,12}", string_match())
                    .prop_map(|(name, matcher)| HeaderMatch { name, matcher }),
                0..3,
            )
            .prop_map(|headers| MatchRule { headers }),
            0..3,
        )
    }

    fn metric() -> impl Strategy<Value = MetricResult> {
        let value = prop_oneof![
            4 => (-1e6f64..1e6).prop_map(MetricValue::Value),
            1 => Just(MetricValue::Value(f64::NAN)),
            1 => text().prop_map(MetricValue::Error),
        ];
        let unit = prop_oneof![
            Just(MetricUnit::Percent),
            Just(MetricUnit::Milliseconds),
            Just(MetricUnit::None)
        ];
        let name = prop_oneof![
            Just("request-success-rate".to_string()),
            Just("request-duration".to_string()),
            "[a-z-]{1,20}",
        ];
        (
            name,
            value,
            prop::option::of(-1e3f64..1e3),
            prop::option::of(-1e3f64..1e3),
            unit,
        )
            .prop_map(|(name, value, min, max, unit)| MetricResult {
                name,
                value,
                min,
                max,
                unit,
            })
    }

    fn webhook() -> impl Strategy<Value = WebhookResult> {
        let kind = prop::sample::select(vec![
            WebhookKind::ConfirmRollout,
            WebhookKind::PreRollout,
            WebhookKind::Rollout,
            WebhookKind::ConfirmTrafficIncrease,
            WebhookKind::ConfirmPromotion,
            WebhookKind::PostRollout,
            WebhookKind::Rollback,
            WebhookKind::Event,
        ]);
        ("[a-z-]{1,12}", kind, any::<bool>(), text()).prop_map(|(name, kind, passed, message)| {
            WebhookResult {
                name,
                kind,
                passed,
                message,
            }
        })
    }

    fn readiness() -> impl Strategy<Value = Readiness> {
        prop_oneof![
            4 => Just(Readiness::Ready),
            1 => text().prop_map(Readiness::NotReady),
            1 => text().prop_map(Readiness::DeadlineExceeded),
        ]
    }

    fn input() -> impl Strategy<Value = PolicyInput> {
        let phase = prop::sample::select(vec![
            Phase::Initializing,
            Phase::Initialized,
            Phase::Waiting,
            Phase::Progressing,
            Phase::WaitingPromotion,
            Phase::Promoting,
            Phase::Finalising,
            Phase::Succeeded,
            Phase::Failed,
            Phase::Terminating,
            Phase::Terminated,
        ]);
        let strategy = prop::sample::select(vec![
            fledge_policy::Strategy::Canary,
            fledge_policy::Strategy::BlueGreen,
            fledge_policy::Strategy::AbTesting,
        ]);
        let analysis = (
            (
                1u32..7,
                prop::option::of(0u32..=100),
                prop::option::of(0u32..=60),
            ),
            (
                prop::collection::vec(0u32..=100, 0..4),
                prop::option::of(0u32..=100),
                prop::option::of(0u32..12),
            ),
            match_rules(),
        )
            .prop_map(
                |(
                    (threshold, max_weight, step_weight),
                    (mut steps, promotion, iterations),
                    rules,
                )| {
                    steps.sort_unstable();
                    Analysis {
                        interval_seconds: 60,
                        threshold,
                        max_weight,
                        step_weight,
                        step_weights: steps,
                        step_weight_promotion: promotion,
                        iterations,
                        match_rules: rules,
                        mirror: false,
                        mirror_weight: None,
                    }
                },
            );
        let state = (phase, 0u32..=100, 0u32..14, 0u32..8, any::<u64>()).prop_map(
            |(phase, canary, iteration, failed_checks, seconds_in_phase)| State {
                phase,
                canary_weight: canary,
                primary_weight: 100 - canary,
                iteration,
                failed_checks,
                seconds_in_phase,
            },
        );
        (
            (text(), strategy, analysis, state),
            prop::collection::vec(metric(), 0..6),
            prop::collection::vec(webhook(), 0..4),
            readiness(),
            readiness(),
        )
            .prop_map(
                |(
                    (canary, strategy, analysis, state),
                    metrics,
                    webhooks,
                    canary_ready,
                    primary_ready,
                )| {
                    PolicyInput {
                        canary,
                        strategy,
                        analysis,
                        state,
                        metrics,
                        webhooks,
                        canary_ready,
                        primary_ready,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn wasm_and_native_builtin_agree(input in input()) {
            let sandboxed = builtin().run(&input).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(sandboxed, fledge_policy_flagger::decide(&input));
        }
    }
}
