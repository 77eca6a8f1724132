//! The component glue: WIT bindings, conversions to the plain types, and a
//! panic hook that reports the panic message through the host's `log` import
//! before the guest traps.

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "fledge:policy/rollout-policy-with-queries",
        pub_export_macro: true,
        export_macro_name: "__export_rollout_policy",
        default_bindings_module: "fledge_policy::guest::bindings",
    });
}

use bindings::fledge::policy::types as w;
use bindings::fledge::policy::{clock, config, host, metric_query};

pub fn log(level: crate::LogLevel, message: &str) {
    let level = match level {
        crate::LogLevel::Debug => host::LogLevel::Debug,
        crate::LogLevel::Info => host::LogLevel::Info,
        crate::LogLevel::Warn => host::LogLevel::Warn,
        crate::LogLevel::Error => host::LogLevel::Error,
    };
    host::log(level, message);
}

/// Calls `decide` on the converted input and converts its answer back.
pub fn run(
    input: w::PolicyInput,
    decide: fn(&crate::PolicyInput) -> crate::Decision,
) -> w::Decision {
    report_panics();
    let input = from_wit(input);
    to_wit(decide(&input))
}

/// As [`run`], for a `decide` that takes a context (time and config).
pub fn run_with_context(
    input: w::PolicyInput,
    decide: fn(&crate::PolicyInput, &crate::Context) -> crate::Decision,
) -> w::Decision {
    report_panics();
    let ctx = context();
    let input = from_wit(input);
    to_wit(decide(&input, &ctx))
}

/// As [`run_with_context`], with the answers to the policy's range queries
/// in the context. A function of its own, so that only a component that
/// calls it imports `metric-query` (and needs the capability), however it
/// is optimised: the linker drops what no export reaches.
pub fn run_with_series(
    input: w::PolicyInput,
    decide: fn(&crate::PolicyInput, &crate::Context) -> crate::Decision,
) -> w::Decision {
    report_panics();
    let mut ctx = context();
    ctx.series = metric_query::answers()
        .into_iter()
        .map(|s| crate::Series {
            name: s.name,
            samples: s.samples.map(|points| {
                points
                    .into_iter()
                    .map(|p| crate::Sample {
                        timestamp: p.timestamp,
                        value: p.value,
                    })
                    .collect()
            }),
        })
        .collect();
    let input = from_wit(input);
    to_wit(decide(&input, &ctx))
}

/// Calls a policy's `queries` with the time and config (no series yet).
pub fn queries(
    input: w::PolicyInput,
    queries: fn(&crate::PolicyInput, &crate::Context) -> Vec<crate::RangeQuery>,
) -> Vec<w::RangeQuery> {
    report_panics();
    let input = from_wit(input);
    queries(&input, &context())
        .into_iter()
        .map(|q| w::RangeQuery {
            name: q.name,
            query: q.query,
            window_seconds: q.window_seconds,
            step_seconds: q.step_seconds,
        })
        .collect()
}

/// The step's time and the policy object's config, from the host.
fn context() -> crate::Context {
    crate::Context {
        now: clock::now(),
        config: config::entries().into_iter().collect(),
        series: Vec::new(),
    }
}

fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        // One line, `policy panicked at <file:line:col>: <message>`: the host
        // puts it in the trap error, which ends up in an event.
        let message = info.payload_as_str().unwrap_or("(no message)");
        let text = match info.location() {
            Some(at) => format!("policy panicked at {at}: {message}"),
            None => format!("policy panicked: {message}"),
        };
        host::log(host::LogLevel::Error, &text);
    }));
}

fn string_match(m: w::StringMatch) -> crate::StringMatch {
    match m {
        w::StringMatch::Exact(s) => crate::StringMatch::Exact(s),
        w::StringMatch::Prefix(s) => crate::StringMatch::Prefix(s),
        w::StringMatch::Suffix(s) => crate::StringMatch::Suffix(s),
        w::StringMatch::Regex(s) => crate::StringMatch::Regex(s),
    }
}

fn rules_from(rules: Vec<w::MatchRule>) -> Vec<crate::MatchRule> {
    rules
        .into_iter()
        .map(|r| crate::MatchRule {
            headers: r
                .headers
                .into_iter()
                .map(|h| crate::HeaderMatch {
                    name: h.name,
                    matcher: string_match(h.match_),
                })
                .collect(),
        })
        .collect()
}

fn rules_to(rules: Vec<crate::MatchRule>) -> Vec<w::MatchRule> {
    rules
        .into_iter()
        .map(|r| w::MatchRule {
            headers: r
                .headers
                .into_iter()
                .map(|h| w::HeaderMatch {
                    name: h.name,
                    match_: match h.matcher {
                        crate::StringMatch::Exact(s) => w::StringMatch::Exact(s),
                        crate::StringMatch::Prefix(s) => w::StringMatch::Prefix(s),
                        crate::StringMatch::Suffix(s) => w::StringMatch::Suffix(s),
                        crate::StringMatch::Regex(s) => w::StringMatch::Regex(s),
                    },
                })
                .collect(),
        })
        .collect()
}

fn readiness(r: w::Readiness) -> crate::Readiness {
    match r {
        w::Readiness::Ready => crate::Readiness::Ready,
        w::Readiness::NotReady(s) => crate::Readiness::NotReady(s),
        w::Readiness::DeadlineExceeded(s) => crate::Readiness::DeadlineExceeded(s),
    }
}

fn from_wit(i: w::PolicyInput) -> crate::PolicyInput {
    let a = i.analysis;
    let s = i.state;
    crate::PolicyInput {
        canary: i.canary,
        strategy: match i.strategy {
            w::Strategy::Canary => crate::Strategy::Canary,
            w::Strategy::BlueGreen => crate::Strategy::BlueGreen,
            w::Strategy::AbTesting => crate::Strategy::AbTesting,
        },
        analysis: crate::Analysis {
            interval_seconds: a.interval_seconds,
            threshold: a.threshold,
            max_weight: a.max_weight,
            step_weight: a.step_weight,
            step_weights: a.step_weights,
            step_weight_promotion: a.step_weight_promotion,
            iterations: a.iterations,
            match_rules: rules_from(a.match_rules),
            mirror: a.mirror,
            mirror_weight: a.mirror_weight,
        },
        state: crate::State {
            phase: match s.phase {
                w::Phase::Initializing => crate::Phase::Initializing,
                w::Phase::Initialized => crate::Phase::Initialized,
                w::Phase::Waiting => crate::Phase::Waiting,
                w::Phase::Progressing => crate::Phase::Progressing,
                w::Phase::WaitingPromotion => crate::Phase::WaitingPromotion,
                w::Phase::Promoting => crate::Phase::Promoting,
                w::Phase::Finalising => crate::Phase::Finalising,
                w::Phase::Succeeded => crate::Phase::Succeeded,
                w::Phase::Failed => crate::Phase::Failed,
                w::Phase::Terminating => crate::Phase::Terminating,
                w::Phase::Terminated => crate::Phase::Terminated,
            },
            canary_weight: s.canary_weight,
            primary_weight: s.primary_weight,
            iteration: s.iteration,
            failed_checks: s.failed_checks,
            seconds_in_phase: s.seconds_in_phase,
        },
        metrics: i
            .metrics
            .into_iter()
            .map(|m| crate::MetricResult {
                name: m.name,
                value: match m.value {
                    Ok(v) => crate::MetricValue::Value(v),
                    Err(e) => crate::MetricValue::Error(e),
                },
                min: m.min,
                max: m.max,
                unit: match m.unit {
                    w::MetricUnit::Percent => crate::MetricUnit::Percent,
                    w::MetricUnit::Milliseconds => crate::MetricUnit::Milliseconds,
                    w::MetricUnit::None => crate::MetricUnit::None,
                },
            })
            .collect(),
        webhooks: i
            .webhooks
            .into_iter()
            .map(|h| crate::WebhookResult {
                name: h.name,
                kind: match h.kind {
                    w::WebhookKind::ConfirmRollout => crate::WebhookKind::ConfirmRollout,
                    w::WebhookKind::PreRollout => crate::WebhookKind::PreRollout,
                    w::WebhookKind::Rollout => crate::WebhookKind::Rollout,
                    w::WebhookKind::ConfirmTrafficIncrease => {
                        crate::WebhookKind::ConfirmTrafficIncrease
                    }
                    w::WebhookKind::ConfirmPromotion => crate::WebhookKind::ConfirmPromotion,
                    w::WebhookKind::PostRollout => crate::WebhookKind::PostRollout,
                    w::WebhookKind::Rollback => crate::WebhookKind::Rollback,
                    w::WebhookKind::Event => crate::WebhookKind::Event,
                },
                passed: h.passed,
                message: h.message,
            })
            .collect(),
        canary_ready: readiness(i.canary_ready),
        primary_ready: readiness(i.primary_ready),
    }
}

fn to_wit(d: crate::Decision) -> w::Decision {
    match d {
        crate::Decision::Advance(a) => w::Decision::Advance(w::Advance {
            route: w::RoutePlan {
                primary_weight: a.route.primary_weight,
                canary_weight: a.route.canary_weight,
                match_rules: rules_to(a.route.match_rules),
            },
            iteration: a.iteration,
        }),
        crate::Decision::Hold(h) => w::Decision::Hold(w::Hold {
            reason: h.reason,
            failed_check: h.failed_check,
        }),
        crate::Decision::Promote => w::Decision::Promote,
        crate::Decision::Rollback(r) => w::Decision::Rollback(r),
        crate::Decision::Wait(r) => w::Decision::Wait(r),
    }
}

/// The guest's allocator: a bump allocator over a static arena.
///
/// Every instance lives for exactly one decision, so memory is never worth
/// reclaiming, and a general-purpose allocator only costs time: its first
/// `memory.grow` and the page faults after it were most of a fresh instance's
/// first call. The arena is zero-initialised, so it is part of the initial
/// linear memory (no data segment) and pages the host keeps resident between
/// instances; only larger demands grow memory.
#[allow(unsafe_code)]
mod bump {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::{Cell, UnsafeCell};

    /// Several times what the built-in policy allocates on a large step, and
    /// small: every page of initial memory is reset after each decision.
    /// Allocations beyond it grow memory, which only costs time.
    const ARENA_BYTES: usize = 24 << 10;
    const PAGE: usize = 64 << 10;

    #[repr(C, align(16))]
    struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

    // SAFETY: wasm32-unknown-unknown without the atomics feature has a single
    // thread; nothing else can touch the arena or the cursor.
    unsafe impl Sync for Arena {}

    static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));

    /// `[next, end)` is the free region; both zero until the first allocation.
    pub struct Bump {
        next: Cell<usize>,
        end: Cell<usize>,
    }

    // SAFETY: as for `Arena`: one thread.
    unsafe impl Sync for Bump {}

    #[global_allocator]
    static ALLOCATOR: Bump = Bump {
        next: Cell::new(0),
        end: Cell::new(0),
    };

    impl Bump {
        /// Carves `layout` out of the free region, growing memory if needed.
        fn carve(&self, layout: Layout) -> *mut u8 {
            if self.end.get() == 0 {
                let start = ARENA.0.get() as usize;
                self.next.set(start);
                self.end.set(start + ARENA_BYTES);
            }
            let align = layout.align();
            let size = layout.size();
            if let Some(ptr) = fit(self.next.get(), self.end.get(), size, align) {
                self.next.set(ptr + size);
                return ptr as *mut u8;
            }
            // Out of room: continue in fresh pages (the rest of the current
            // region is abandoned; it is never worth tracking).
            let pages = (size + align).div_ceil(PAGE);
            let old = core::arch::wasm32::memory_grow(0, pages);
            if old == usize::MAX {
                return core::ptr::null_mut();
            }
            let start = old * PAGE;
            self.end.set(start + pages * PAGE);
            match fit(start, self.end.get(), size, align) {
                Some(ptr) => {
                    self.next.set(ptr + size);
                    ptr as *mut u8
                }
                None => core::ptr::null_mut(),
            }
        }
    }

    /// The aligned start of a `size`-byte block in `[next, end)`, if it fits.
    fn fit(next: usize, end: usize, size: usize, align: usize) -> Option<usize> {
        let ptr = next.checked_add(align - 1)? & !(align - 1);
        (ptr.checked_add(size)? <= end).then_some(ptr)
    }

    // SAFETY: blocks never overlap: each comes from the free region, which
    // only moves forward except when its last block is given back or resized.
    unsafe impl GlobalAlloc for Bump {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.carve(layout)
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // Give back only the most recent block (cheap, and common for
            // temporaries); everything else dies with the instance.
            if ptr as usize + layout.size() == self.next.get() {
                self.next.set(ptr as usize);
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let start = ptr as usize;
            // The most recent block grows or shrinks in place when it fits.
            if start + layout.size() == self.next.get() {
                if let Some(end) = start.checked_add(new_size) {
                    if end <= self.end.get() {
                        self.next.set(end);
                        return ptr;
                    }
                }
            }
            if new_size <= layout.size() {
                return ptr;
            }
            // SAFETY: the caller guarantees `layout.align()` with `new_size` is a valid layout.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            let new = self.carve(new_layout);
            if !new.is_null() {
                // SAFETY: both blocks are live, distinct and at least `layout.size()` long.
                unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size()) };
            }
            new
        }
    }
}
