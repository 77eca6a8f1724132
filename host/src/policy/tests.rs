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
        policy.decide(&guide_input(), &fledge_policy::Context::default()),
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
        budget: Budget::Deadline(Duration::from_secs(30)),
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
    let judged = fixture("panic")
        .decide(&guide_input(), &fledge_policy::Context::default())
        .unwrap_err();
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
    let judged = policy
        .decide(&guide_input(), &fledge_policy::Context::default())
        .unwrap_err();
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
        text.starts_with("this component does not implement fledge:policy/rollout-policy@0.1.1"),
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
        budget: Budget::Deadline(Duration::ZERO),
        ..RuntimeConfig::default()
    };
    assert!(matches!(
        PolicyRuntime::new(zero),
        Err(PolicyError::Setup(_))
    ));
    assert!(PolicyRuntime::new(RuntimeConfig::deterministic(0))
        .err()
        .is_some_and(|e| e.to_string().contains("fuel budget must be above zero")));
    let tiny = RuntimeConfig {
        memory_limit: 4096,
        ..RuntimeConfig::default()
    };
    assert!(PolicyRuntime::new(tiny)
        .err()
        .is_some_and(|e| e.to_string().contains("at least 1 MiB")));

    let deadline = Duration::from_millis(100);
    assert_eq!(RuntimeConfig::default().budget, Budget::Deadline(deadline));
    assert_eq!(tick(deadline), Duration::from_millis(10));
    assert_eq!(deadline_ticks(deadline), 11);
    // 2.5 ms ticks: 10 of them, plus one.
    assert_eq!(deadline_ticks(Duration::from_millis(25)), 11);
}

#[test]
fn a_smaller_deadline_and_cap_are_honoured() {
    let rt = PolicyRuntime::new(RuntimeConfig {
        budget: Budget::Deadline(Duration::from_millis(20)),
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

/// The runtime `fledge simulate` uses: fuel, not a clock.
fn fuel_runtime() -> &'static PolicyRuntime {
    static RUNTIME: OnceLock<PolicyRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        PolicyRuntime::new(RuntimeConfig::deterministic(DEFAULT_FUEL)).expect("runtime starts")
    })
}

#[test]
fn endless_loop_exhausts_its_fuel_the_same_way_every_time() {
    let policy = fuel_runtime()
        .load(&fixture_bytes("endless-loop"))
        .expect("fixture loads");
    let first = policy.evaluate(&guide_input()).unwrap_err();
    assert_eq!(
        first,
        PolicyError::FuelExhausted {
            budget: DEFAULT_FUEL
        }
    );
    assert_eq!(
        first.to_string(),
        "policy used up its fuel budget of 1000000000 units without deciding and was stopped; \
         look for an endless loop or raise the budget (fledge simulate --policy-fuel)"
    );
    // Distinct from a deadline miss, and the same on every run.
    assert!(!matches!(first, PolicyError::Timeout { .. }));
    for _ in 0..3 {
        assert_eq!(policy.evaluate(&guide_input()).unwrap_err(), first);
    }
}

#[test]
fn fuel_of_the_builtin_policy_per_decision() {
    let policy = fuel_runtime().builtin().unwrap();
    // The guide's step, and a large one: 400 metrics with long names.
    let mut large = guide_input();
    large.metrics = (0..400)
        .map(|i| MetricResult {
            name: format!("{}-{i}", "template-metric".repeat(8)),
            value: MetricValue::Value(f64::from(i)),
            min: None,
            max: Some(1000.0),
            unit: MetricUnit::None,
        })
        .collect();
    // Orders of magnitude below the default budget: 100 000 times on the
    // guide's step (about 2 200 units), 1 000 times with 400 metrics (130 000).
    for (what, input, margin) in [
        ("guide step", guide_input(), 100_000),
        ("400 metrics", large, 1_000),
    ] {
        let fuel = policy.fuel_used(&input).unwrap().expect("fuel is counted");
        println!("built-in policy, {what}: {fuel} units of fuel");
        // Deterministic: the same input, the same fuel.
        assert_eq!(policy.fuel_used(&input).unwrap(), Some(fuel));
        assert!(fuel > 0 && fuel < DEFAULT_FUEL / margin, "{what}: {fuel}");
        // Counting fuel changes nothing about the decision.
        assert_eq!(
            policy.evaluate(&input).unwrap(),
            builtin().evaluate(&input).unwrap()
        );
    }
    // The operator's runtime does not count.
    assert_eq!(builtin().fuel_used(&guide_input()).unwrap(), None);
}

#[test]
fn fuel_budget_walks_the_guide_like_the_deadline() {
    let (advances, end) = walk(&fuel_runtime().builtin().unwrap(), guide_input());
    assert_eq!(advances.len(), 10);
    assert_eq!(end, Decision::Promote);
}

#[test]
fn a_tiny_fuel_budget_stops_even_the_builtin() {
    let rt = PolicyRuntime::new(RuntimeConfig::deterministic(50)).unwrap();
    assert_eq!(
        rt.builtin().unwrap().evaluate(&guide_input()),
        Err(PolicyError::FuelExhausted { budget: 50 })
    );
}

#[test]
fn stack_overflow_says_so_in_one_line() {
    let err = patient_runtime(32 << 20)
        .load(&fixture_bytes("stack-overflow"))
        .unwrap()
        .evaluate(&guide_input())
        .unwrap_err();
    let PolicyError::Trap { message, .. } = &err else {
        panic!("expected a trap, got {err:?}");
    };
    assert!(message.starts_with("stack overflow"), "{message}");
    let text = err.to_string();
    assert!(
        !text.contains('\n') && !text.contains("backtrace"),
        "{text}"
    );
}

/// What a terminal or log reader must never be handed raw.
fn assert_clean(text: &str) {
    assert!(
        !text
            .chars()
            .any(|c| c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')),
        "{text:?}"
    );
}

fn hostile_input(answer: &str) -> PolicyInput {
    PolicyInput {
        canary: format!("{answer}.test"),
        ..guide_input()
    }
}

#[test]
fn hostile_reasons_come_back_as_clean_single_lines() {
    let policy = fixture("hostile-text");
    let expected = "checks\\u{1b}[2J\\u{1b}]8;;https://evil.example\\u{7}click\\u{1b}]8;;\\u{7} \
                    \\u{202e}kcabllor\\u{202c}\\u{0} forged: line  ";
    let hold = policy.evaluate(&hostile_input("hold")).unwrap();
    assert_eq!(hold, Decision::failed_check(expected));
    assert_eq!(
        policy.evaluate(&hostile_input("rollback")).unwrap(),
        Decision::Rollback(expected.into())
    );
    assert_eq!(
        policy.evaluate(&hostile_input("wait")).unwrap(),
        Decision::Wait(expected.into())
    );
    // What the core sees through the Judge trait is clean too.
    let Decision::Hold(hold) = policy
        .decide(&hostile_input("hold"), &fledge_policy::Context::default())
        .unwrap()
    else {
        panic!("expected a hold");
    };
    assert_clean(&hold.reason);
}

#[test]
fn hostile_log_lines_and_panic_messages_are_clean_single_lines() {
    let err = fixture("hostile-text")
        .evaluate(&hostile_input("panic"))
        .unwrap_err();
    let PolicyError::Trap { message, log } = &err else {
        panic!("expected a trap, got {err:?}");
    };
    assert!(
        message.starts_with("policy panicked at hostile-text/src/lib.rs:"),
        "{message}"
    );
    assert!(message.contains("gave up\\u{1b}[2J"), "{message}");
    assert_clean(message);
    assert_clean(&err.to_string());
    assert!(log[0].starts_with("warn: judging\\u{1b}[2J"), "{log:?}");
    for line in log {
        assert_clean(line);
    }
}

#[test]
fn imports_beyond_the_world_are_named() {
    let err = runtime().load(&fixture_bytes("extra-imports")).unwrap_err();
    let PolicyError::ForbiddenImports(names) = &err else {
        panic!("expected forbidden imports, got {err:?}");
    };
    let mut names = names.clone();
    names.sort();
    assert_eq!(names, ["host-time", "wasi:clocks/wall-clock@0.2.0"]);
    let text = err.to_string();
    assert!(
        text.contains("which no policy may import: the world allows only fledge:policy's host"),
        "{text}"
    );
    let info = runtime().inspect(&fixture_bytes("extra-imports")).unwrap();
    assert!(matches!(info.world, Err(PolicyError::ForbiddenImports(_))));
    // A long list is cut in the message.
    let many = PolicyError::ForbiddenImports((0..10).map(|i| format!("f{i}")).collect());
    assert!(
        many.to_string()
            .starts_with("the component imports f0, f1, f2, f3, f4, f5, f6, f7 and 2 more, which"),
        "{many}"
    );
    // The built-in policy imports only what the world has.
    assert!(runtime().inspect(BUILTIN_COMPONENT).unwrap().world.is_ok());
}

#[test]
fn core_module_imports_beyond_the_world_are_named() {
    use wasm_encoder::{EntityType, ImportSection, Module, TypeSection};
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut imports = ImportSection::new();
    imports.import("fledge:policy/host@0.1.0", "log", EntityType::Function(0));
    imports.import("env", "clock_ms", EntityType::Function(0));
    imports.import(
        "wasi_snapshot_preview1",
        "fd_write",
        EntityType::Function(0),
    );
    let mut module = Module::new();
    module.section(&types).section(&imports);
    assert_eq!(
        imports::foreign_in_core_module(module.as_slice()),
        ["env::clock_ms", "wasi_snapshot_preview1::fd_write"]
    );
}

#[test]
fn an_input_too_large_is_blamed_on_the_input() {
    // 40 MB of metric names: more than the guest's whole memory.
    let mut input = guide_input();
    input.metrics = (0..40_000)
        .map(|i| MetricResult {
            name: format!("{i}-{}", "m".repeat(1000)),
            value: MetricValue::Value(1.0),
            min: None,
            max: Some(2.0),
            unit: MetricUnit::None,
        })
        .collect();
    let size = input::encoded_len(&input);
    assert!(size > 40_000_000, "{size}");
    // The endless loop never runs: the input is refused first.
    let err = fixture("endless-loop").evaluate(&input).unwrap_err();
    assert_eq!(
        err,
        PolicyError::InputTooLarge {
            size,
            limit: 1 << 20
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "policy input is {size} bytes, over the 1048576-byte limit: the Canary has too many \
             metrics, webhooks or match rules, or too long names; the policy was not run"
        )
    );
    assert!(matches!(
        builtin().evaluate(&input),
        Err(PolicyError::InputTooLarge { .. })
    ));
    // A smaller memory cap lowers the bound to a quarter of it.
    let small = PolicyRuntime::new(RuntimeConfig {
        memory_limit: 2 << 20,
        max_concurrent_decisions: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let mut medium = guide_input();
    medium.metrics = input.metrics[..600].to_vec();
    assert_eq!(
        small.builtin().unwrap().evaluate(&medium),
        Err(PolicyError::InputTooLarge {
            size: input::encoded_len(&medium),
            limit: 512 << 10
        })
    );
}

mod loading {
    //! The bounds on what a component may cost to compile.
    use super::super::expensive::{self, Shape};
    use super::*;

    /// The shapes the issue measured: 1.75 MB and 7 MB built to be slow.
    fn expensive_1_75_mb() -> Vec<u8> {
        expensive::component(&Shape::filling(1_750_000, 20_000, 4_000))
    }

    #[test]
    fn a_component_over_the_size_limit_is_refused_before_compiling() {
        let bytes = expensive::component(&Shape::filling(7_000_000, 20_000, 4_000));
        assert!(bytes.len() > 6_500_000, "{}", bytes.len());
        let err = runtime().load(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "policy component refused before compiling: the component has {} bytes, \
                 over the limit of 4194304",
                bytes.len()
            )
        );
        // inspect compiles too, so it is bounded the same way.
        assert!(matches!(
            runtime().inspect(&bytes),
            Err(PolicyError::TooExpensive { .. })
        ));
    }

    #[test]
    fn an_expensive_component_within_the_size_limit_is_refused_before_compiling() {
        let bytes = expensive_1_75_mb();
        assert!(bytes.len() < LoadLimits::default().max_component_bytes);
        let err = runtime().load(&bytes).unwrap_err();
        let PolicyError::TooExpensive {
            at, what, limit, ..
        } = &err
        else {
            panic!("expected a refusal, got {err:?}");
        };
        assert_eq!(
            (at.as_str(), *what, *limit),
            ("the component", "bytes of code", 320 << 10)
        );
        // One such function alone is refused for its locals.
        let one = expensive::component(&Shape {
            functions: 1,
            locals: 20_000,
            blocks: 4_000,
        });
        assert_eq!(
            runtime().load(&one).unwrap_err(),
            PolicyError::TooExpensive {
                at: "function 0 of core module 0".into(),
                what: "bytes of code",
                value: 160_246,
                limit: 64 << 10,
            }
        );
        let err = runtime()
            .load(&expensive::component(&Shape {
                functions: 1,
                locals: 1_500,
                blocks: 10,
            }))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy component refused before compiling: function 0 of core module 0 has \
             1500 locals, over the limit of 1000"
        );
        // Many locals in a large body: each within its bound, not both.
        let err = runtime()
            .load(&expensive::component(&Shape {
                functions: 1,
                locals: 500,
                blocks: 500,
            }))
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("locals times bytes of code, over the limit of 2500000"),
            "{err}"
        );
    }

    /// Limits small enough to trip on small generated components.
    fn small() -> LoadLimits {
        LoadLimits {
            max_component_bytes: 1 << 20,
            max_core_modules: 1,
            max_functions: 10,
            max_function_bytes: 2_000,
            max_locals_per_function: 50,
            max_locals_times_bytes: u64::MAX,
            max_code_bytes: 10_000,
            max_component_items: 10,
            max_types_per_module: 1,
        }
    }

    fn refusal(shape: Shape) -> (String, &'static str, u64, u64) {
        match bounds::check(&expensive::component(&shape), &small()) {
            Err(PolicyError::TooExpensive {
                at,
                what,
                value,
                limit,
            }) => (at, what, value, limit),
            other => panic!("{shape:?}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn each_bound_is_named_with_its_limit() {
        let ok = Shape {
            functions: 2,
            locals: 10,
            blocks: 10,
        };
        assert_eq!(bounds::check(&expensive::component(&ok), &small()), Ok(()));
        assert_eq!(
            refusal(Shape {
                functions: 11,
                ..ok
            }),
            ("the component".into(), "functions", 11, 10)
        );
        assert_eq!(
            refusal(Shape { locals: 51, ..ok }),
            ("function 0 of core module 0".into(), "locals", 51, 50)
        );
        let (at, what, _, limit) = refusal(Shape { blocks: 200, ..ok });
        assert_eq!(
            (at.as_str(), what, limit),
            ("function 0 of core module 0", "bytes of code", 2_000)
        );
        let (at, what, _, limit) = refusal(Shape {
            functions: 10,
            blocks: 90,
            ..ok
        });
        assert_eq!(
            (at.as_str(), what, limit),
            ("the component", "bytes of code", 10_000)
        );
        // Two modules where one is allowed.
        let module = expensive::core_module(&ok);
        let mut component = wasm_encoder::Component::new();
        component
            .section(&wasm_encoder::ModuleSection(&module))
            .section(&wasm_encoder::ModuleSection(&module));
        assert_eq!(
            bounds::check(&component.finish(), &small()),
            Err(PolicyError::TooExpensive {
                at: "the component".into(),
                what: "core modules",
                value: 2,
                limit: 1
            })
        );
        let err = bounds::check(
            &[0; 100],
            &LoadLimits {
                max_component_bytes: 99,
                ..small()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy component refused before compiling: the component has 100 bytes, \
             over the limit of 99"
        );
    }

    #[test]
    fn component_level_items_are_bounded() {
        // Two items (an import and its lowering) per function, plus a few.
        let within = expensive::lowered_imports(400);
        assert_eq!(bounds::check(&within, &LoadLimits::default()), Ok(()));
        let err =
            bounds::check(&expensive::lowered_imports(600), &LoadLimits::default()).unwrap_err();
        let PolicyError::TooExpensive { what, limit, .. } = &err else {
            panic!("expected a refusal, got {err:?}");
        };
        assert!(what.starts_with("component-level items"), "{err}");
        assert_eq!(*limit, 1_000);
    }

    #[test]
    fn the_builtin_passes_the_bounds_with_a_wide_margin() {
        let d = LoadLimits::default();
        // A quarter of every default is still enough.
        let quarter = LoadLimits {
            max_component_bytes: d.max_component_bytes / 4,
            max_core_modules: d.max_core_modules / 2,
            max_functions: d.max_functions / 4,
            max_function_bytes: d.max_function_bytes / 4,
            max_locals_per_function: d.max_locals_per_function / 4,
            max_locals_times_bytes: d.max_locals_times_bytes / 4,
            max_code_bytes: d.max_code_bytes / 4,
            max_component_items: d.max_component_items / 4,
            max_types_per_module: d.max_types_per_module / 4,
        };
        assert_eq!(bounds::check(BUILTIN_COMPONENT, &quarter), Ok(()));
        for fixture in ["panic", "hostile-text", "stack-overflow", "wrong-world"] {
            assert_eq!(
                bounds::check(&fixture_bytes(fixture), &quarter),
                Ok(()),
                "{fixture}"
            );
        }
    }

    #[test]
    fn the_worst_accepted_shape_passes_the_bounds() {
        let worst = worst_accepted();
        let bytes = expensive::component(&worst);
        assert_eq!(bounds::check(&bytes, &LoadLimits::default()), Ok(()));
        // And it is at the limits: one more block per function, or twice
        // the functions, is refused.
        let longer = Shape {
            blocks: worst.blocks + 1,
            ..worst
        };
        assert!(bounds::check(&expensive::component(&longer), &LoadLimits::default()).is_err());
        let more = Shape {
            functions: worst.functions * 2,
            ..worst
        };
        assert!(bounds::check(&expensive::component(&more), &LoadLimits::default()).is_err());
    }

    /// The costliest component the default limits let through, as measured
    /// in `benches/compile.rs`: 250 locals per function, bodies as large as
    /// the locals-times-bytes bound allows, as many as the code bound takes.
    pub fn worst_accepted() -> Shape {
        let d = LoadLimits::default();
        expensive::worst_accepted(
            250,
            d.max_function_bytes,
            d.max_locals_times_bytes,
            d.max_code_bytes,
            d.max_functions,
        )
    }
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
            let sandboxed = builtin().run(&input, &fledge_policy::Context::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(sandboxed, fledge_policy_flagger::decide(&input));
        }
    }
}

/// The built-in policy as Fledge built it for `fledge:policy@0.1.0`
/// (policies/fixtures/v0.1.0).
const BUILTIN_0_1_0: &[u8] = include_bytes!("../../../policies/fixtures/v0.1.0/flagger-0.1.0.wasm");

#[test]
fn a_component_built_for_0_1_0_loads_and_decides_as_the_builtin() {
    let old = runtime()
        .load(BUILTIN_0_1_0)
        .expect("a 0.1.0 component loads");
    assert!(!old.needs_metric_query());
    let info = runtime().inspect(BUILTIN_0_1_0).unwrap();
    assert!(
        info.imports
            .iter()
            .any(|i| i.starts_with("fledge:policy/host@0.1.0")),
        "{:?}",
        info.imports
    );
    let mut input = guide_input();
    for (weight, rate) in [(0, 99.9), (10, 99.9), (25, 50.0), (50, 99.9)] {
        input.state.canary_weight = weight;
        input.state.primary_weight = 100 - weight;
        input.metrics = vec![success_rate(rate), duration(120.0)];
        assert_eq!(
            old.evaluate(&input).unwrap(),
            builtin().evaluate(&input).unwrap(),
            "at {weight}% and {rate}%"
        );
    }
}

#[test]
fn a_policy_reads_the_time_and_its_config_without_any_capability() {
    let policy =
        fixture("clock-reader").with_config([("greeting".to_string(), "hi".to_string())].into());
    assert!(!policy.needs_metric_query());
    let info = runtime().inspect(&fixture_bytes("clock-reader")).unwrap();
    assert!(
        !info.imports.iter().any(|i| i.contains("metric-query")),
        "{:?}",
        info.imports
    );
    let d = policy
        .evaluate_in(&guide_input(), &Context::at(1_764_600_000))
        .unwrap();
    assert_eq!(d, Decision::halt("at 1764600000: hi"));
    // Another policy object's config, same module.
    let bare = fixture("clock-reader");
    assert_eq!(
        bare.evaluate_in(&guide_input(), &Context::at(5)).unwrap(),
        Decision::halt("at 5: none")
    );
    // No queries to answer for a policy that reads no series.
    assert!(policy
        .queries(&guide_input(), &Context::at(5))
        .unwrap()
        .is_empty());
}

#[test]
fn a_policy_with_metric_query_asks_then_reads_the_answers() {
    let config: BTreeMap<String, String> = [
        ("queries", "canary,primary"),
        ("query.canary", "sum(rate(x{pod=~\"{{ target }}-.*\"}[1m]))"),
        (
            "query.primary",
            "sum(rate(x{pod=~\"{{ target }}-primary-.*\"}[1m]))",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let policy = fixture("series-reader").with_config(config);
    assert!(policy.needs_metric_query());
    let ctx = Context::at(1_000);
    let queries = policy.queries(&guide_input(), &ctx).unwrap();
    assert_eq!(
        queries,
        [
            RangeQuery::new(
                "canary",
                "sum(rate(x{pod=~\"{{ target }}-.*\"}[1m]))",
                60,
                10
            ),
            RangeQuery::new(
                "primary",
                "sum(rate(x{pod=~\"{{ target }}-primary-.*\"}[1m]))",
                60,
                10
            ),
        ]
    );
    let points = |v: &[f64]| {
        v.iter()
            .enumerate()
            .map(|(i, v)| Sample {
                timestamp: 940 + 10 * i as i64,
                value: *v,
            })
            .collect::<Vec<_>>()
    };
    let mut answered = ctx.clone().with_series("canary", points(&[1.0, 2.0, 3.0]));
    answered.series.push(Series {
        name: "primary".into(),
        samples: Err("connection refused".into()),
    });
    assert_eq!(
        policy.evaluate_in(&guide_input(), &answered).unwrap(),
        Decision::halt("at 1000 with 3 config entries: canary=3x6 primary!connection refused")
    );
}

#[test]
fn range_queries_beyond_the_bounds_are_refused_before_any_runs() {
    let q = |name: &str, window: u32, step: u32| RangeQuery::new(name, "up", window, step);
    assert!(check_queries(&[q("a", 600, 10), q("b", 600, 10)]).is_ok());
    let refused = |qs: &[RangeQuery]| check_queries(qs).unwrap_err().to_string();
    assert!(refused(&[q("a", 60, 10), q("a", 60, 10)]).contains("two range queries are named a"));
    assert!(refused(&[q("", 60, 10)]).contains("range query 0 has no name"));
    assert!(refused(&[q("a", 60, 0)]).contains("at least 1 second"));
    assert!(
        refused(&[q("a", 86_400, 10)])
            .contains("asks for 8641 samples (86400 s / 10 s), at most 1100"),
        "{}",
        refused(&[q("a", 86_400, 10)])
    );
    let many: Vec<_> = (0..17).map(|i| q(&format!("q{i}"), 60, 10)).collect();
    assert!(refused(&many).contains("17 range queries, at most 16"));
    let heavy: Vec<_> = (0..11).map(|i| q(&format!("q{i}"), 10_800, 10)).collect();
    assert!(
        refused(&heavy).contains("at most 11000 per decision"),
        "{}",
        refused(&heavy)
    );
}

#[test]
fn the_builtin_imports_nothing_new() {
    let info = runtime().inspect(BUILTIN_COMPONENT).unwrap();
    let mut names: Vec<_> = info
        .imports
        .iter()
        .map(|i| i.split(' ').next().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["fledge:policy/host@0.1.1", "fledge:policy/types@0.1.1"]
    );
}
