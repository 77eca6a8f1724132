//! The Wasm policy runtime: loads rollout policies (WebAssembly components of
//! the `fledge:policy/rollout-policy` world) and runs one sandboxed decision per
//! analysis step, bounded in time (or fuel) and memory.
//!
//! Lifetimes, from long to short: one [`PolicyRuntime`] per process (engine,
//! epoch ticker when decisions have a deadline, compiled components by
//! digest) → one [`Policy`] per loaded
//! component (imports resolved and type-checked once) → one `Store` and one
//! instance per decision, so no state survives from one decision to the next.
//!
//! - [`validate_decision`]: the checks every decision passes before the core acts on it.
//! - [`NativeJudge`]: the built-in policy without the sandbox, for tests.
mod bindings;
mod bounds;
mod error;
pub mod imports;
mod input;
pub mod journal;
mod limits;
mod native;
pub mod replay;
mod ticker;
pub mod toolchain;

#[cfg(test)]
mod expensive;
#[cfg(test)]
mod tests;

pub use crate::core::validate::{validate_decision, InvalidDecision};
pub use bounds::LoadLimits;
pub use error::PolicyError;
pub use limits::LogLimits;
pub use native::NativeJudge;

use crate::core::text::one_line;
use crate::core::validate::MAX_REASON_BYTES;
use crate::core::{Judge, JudgeError};
use bindings::Exports;
use fledge_policy::{Context, Decision, PolicyInput, RangeQuery};
use limits::{PolicyState, Slots, StepData};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine, PoolingAllocationConfig, Store, Trap};

/// The world every policy must implement (0.1.0 components implement it too:
/// a 0.1.x host serves every earlier 0.1 import).
pub const WORLD: &str = "fledge:policy/rollout-policy@0.1.1";

/// The world of a policy with the `metric-query` capability.
pub const WORLD_WITH_QUERIES: &str = "fledge:policy/rollout-policy-with-queries@0.1.1";

/// The interface a component imports when it reads series of its own.
pub const METRIC_QUERY: &str = "fledge:policy/metric-query";

/// Range queries one decision may ask for.
pub const MAX_QUERIES: usize = 16;
/// Samples one range query may return (window / step + 1).
pub const MAX_POINTS_PER_QUERY: u64 = 1_100;
/// Samples all range queries of one decision may return together.
pub const MAX_POINTS_PER_DECISION: u64 = 11_000;

/// The built-in policy (`policies/flagger`), compiled to a component at build time.
pub static BUILTIN_COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flagger.wasm"));

/// The built-in `statistical` policy (`policies/statistical`): Flagger's
/// analysis plus a Mann-Whitney U comparison of canary and primary series.
pub static STATISTICAL_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/statistical.wasm"));
/// The built-in `change-window` policy (`policies/change-window`): Flagger's
/// analysis, moving forward only inside UTC change windows.
pub static CHANGE_WINDOW_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/change-window.wasm"));

/// The component of the built-in policy `name` (`spec.builtin` of a policy
/// object), if there is one.
pub fn builtin_component(name: &str) -> Option<&'static [u8]> {
    match name {
        "flagger" => Some(BUILTIN_COMPONENT),
        "statistical" => Some(STATISTICAL_COMPONENT),
        "change-window" => Some(CHANGE_WINDOW_COMPONENT),
        _ => None,
    }
}

/// What stops a decision that does not end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Wall-clock time one decision (instantiation included) may take,
    /// enforced by epoch interruption: a check per loop and call, nearly
    /// free. The operator's choice; whether a slow decision makes it depends
    /// on how loaded the machine is.
    Deadline(Duration),
    /// Fuel one decision (instantiation included) may consume: about one
    /// unit per WebAssembly instruction, counted by the compiled code. The
    /// same decision always uses the same fuel, so a run with a virtual
    /// clock (`fledge simulate`) has the same outcome every time; the count
    /// costs some speed, which the simulator can afford.
    Fuel(u64),
}

/// Fuel of a decision in `fledge simulate` unless told otherwise: of the
/// order of the work the operator's 100 ms deadline allows (an endless loop
/// spends it in about 60 ms here; see `benches/decision.rs`), so both judge
/// a slow policy much alike, and orders of magnitude more than the built-in policy uses (about
/// 2 200 units on the guide's step, 130 000 with 400 metrics; see
/// `fuel_of_the_builtin_policy_per_decision`).
pub const DEFAULT_FUEL: u64 = 1_000_000_000;

/// Bounds of the sandbox. The defaults suit the built-in policy with a wide
/// margin: it decides in microseconds within one 64 KiB page of memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// What stops a decision that does not end.
    pub budget: Budget,
    /// Linear memory one decision may use, in bytes.
    pub memory_limit: u64,
    /// Decisions that may run at the same time; sizes the instance pool.
    pub max_concurrent_decisions: u32,
    /// What a decision may log.
    pub log: LogLimits,
    /// What a component may cost to load.
    pub load: LoadLimits,
    /// Largest policy input, in bytes as it lands in the guest's memory (see
    /// [`input::encoded_len`]); a quarter of `memory_limit` if that is less.
    /// A larger input is refused before the policy runs, and blamed on the
    /// input rather than on the policy.
    pub max_input_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            budget: Budget::Deadline(Duration::from_millis(100)),
            memory_limit: 32 << 20,
            max_concurrent_decisions: 16,
            log: LogLimits::default(),
            load: LoadLimits::default(),
            max_input_bytes: 1 << 20,
        }
    }
}

impl RuntimeConfig {
    /// The defaults with a fuel budget instead of a deadline: for runs that
    /// must come out the same every time.
    pub fn deterministic(fuel: u64) -> RuntimeConfig {
        RuntimeConfig {
            budget: Budget::Fuel(fuel),
            ..RuntimeConfig::default()
        }
    }

    /// The input bound in force: `max_input_bytes`, or a quarter of the
    /// memory cap if that is less, so an accepted input always leaves the
    /// policy room to work.
    fn input_limit(&self) -> usize {
        let quarter = usize::try_from(self.memory_limit / 4).unwrap_or(usize::MAX);
        self.max_input_bytes.min(quarter)
    }
}

/// Epoch period for `deadline`: a tenth of it, between 1 and 10 ms. A
/// decision is stopped between `deadline` and `deadline + tick` after it starts.
fn tick(deadline: Duration) -> Duration {
    (deadline / 10).clamp(Duration::from_millis(1), Duration::from_millis(10))
}

/// Epochs to allow: rounded up, plus one because the first tick may come
/// right after the deadline is set.
fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = tick(deadline).as_nanos();
    let ticks = deadline.as_nanos().div_ceil(tick);
    u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
}

/// Linear memory the pool keeps mapped for a slot between decisions, so a
/// fresh instance does not page-fault its stack and heap back in. Resetting a
/// slot costs a `memset` of its first `min(KEEP_RESIDENT, memory size)` bytes
/// (where Linux has `PAGEMAP_SCAN`: of the dirty pages among them) plus an
/// `madvise` of the rest, if any. The built-in policy's whole memory is one
/// wasm page, so it needs no system call at all.
const KEEP_RESIDENT: usize = 128 << 10;
/// Core instances and tables a policy component may have (its main module
/// plus wit-component's shim and fixup modules, with room to spare).
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
const TABLES_PER_COMPONENT: u32 = 4;

/// What the engine and every loaded policy share. Policies keep it alive, so
/// the ticker runs as long as any of them can still decide.
struct Shared {
    engine: Engine,
    config: RuntimeConfig,
    memory_limit: usize,
    linker: Linker<PolicyState>,
    /// Compiled, linked components by sha256 of their bytes: loading the same
    /// bytes twice compiles once.
    cache: Mutex<HashMap<String, Linked>>,
    slots: Slots,
    /// Only with a deadline: fuel needs no clock.
    _ticker: Option<ticker::EpochTicker>,
}

/// A compiled component with its imports resolved and exports found.
#[derive(Clone)]
struct Linked {
    pre: InstancePre<PolicyState>,
    exports: Exports,
    /// It imports `metric-query`: it may only run with the capability.
    metric_query: bool,
}

/// Loads and runs policy components. One per process; cheap to clone (clones
/// share the engine, the ticker and the compiled components).
#[derive(Clone)]
pub struct PolicyRuntime {
    shared: Arc<Shared>,
}

impl PolicyRuntime {
    pub fn new(config: RuntimeConfig) -> Result<PolicyRuntime, PolicyError> {
        match config.budget {
            Budget::Deadline(d) if d.is_zero() => {
                return Err(PolicyError::Setup(
                    "the decision deadline must be above zero".into(),
                ));
            }
            Budget::Fuel(0) => {
                return Err(PolicyError::Setup(
                    "the decision fuel budget must be above zero".into(),
                ));
            }
            _ => {}
        }
        let memory_limit = usize::try_from(config.memory_limit)
            .ok()
            .filter(|m| *m >= 1 << 20)
            .ok_or_else(|| {
                PolicyError::Setup(format!(
                    "the memory limit must be at least 1 MiB, got {} bytes",
                    config.memory_limit
                ))
            })?;
        if config.max_concurrent_decisions == 0 {
            return Err(PolicyError::Setup(
                "at least one concurrent decision must be allowed".into(),
            ));
        }

        let slots = config.max_concurrent_decisions;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .total_memories(slots)
            .max_memories_per_component(1)
            .total_tables(slots.saturating_mul(TABLES_PER_COMPONENT))
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .max_memory_size(memory_limit)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            // Slots stay affine to the module they last ran, so a decision
            // usually reuses a warm slot of the same policy.
            .max_unused_warm_slots(slots);

        let fuel = matches!(config.budget, Budget::Fuel(_));
        // Compilation runs on one thread (wasmtime's `parallel-compilation`
        // feature is off), so its memory is that of one function at a time;
        // what it may cost is bounded by `LoadLimits` before it starts. The
        // optimisation level stays the default: `OptLevel::None` compiles
        // the costliest accepted input no faster (register allocation and
        // SSA construction dominate), and the code it makes is slower.
        let mut wasm = Config::new();
        wasm.concurrency_support(false)
            // One or the other: the operator's hot path pays for no fuel count.
            .epoch_interruption(!fuel)
            .consume_fuel(fuel)
            .memory_init_cow(true)
            .allocation_strategy(pool);
        let engine = Engine::new(&wasm)
            .map_err(|e| PolicyError::Setup(format!("cannot create the wasm engine: {e:#}")))?;

        let mut linker = Linker::new(&engine);
        bindings::add_to_linker(&mut linker)
            .map_err(|e| PolicyError::Setup(format!("cannot link the host functions: {e:#}")))?;
        let ticker = match config.budget {
            Budget::Deadline(deadline) => Some(
                ticker::EpochTicker::start(engine.clone(), tick(deadline)).map_err(|e| {
                    PolicyError::Setup(format!("cannot start the epoch ticker thread: {e}"))
                })?,
            ),
            Budget::Fuel(_) => None,
        };
        Ok(PolicyRuntime {
            shared: Arc::new(Shared {
                engine,
                config,
                memory_limit,
                linker,
                cache: Mutex::new(HashMap::new()),
                slots: Slots::new(slots),
                _ticker: ticker,
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// The built-in policy, from the component embedded at build time.
    pub fn builtin(&self) -> Result<Policy, PolicyError> {
        self.load(BUILTIN_COMPONENT)
    }

    /// Drops compiled components whose digest `keep` refuses; policies
    /// already loaded from them keep working.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.shared
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|digest, _| keep(digest));
    }

    /// Digests of the compiled components held.
    pub fn cached(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Compiles (once per digest) and links a policy component.
    pub fn load(&self, bytes: &[u8]) -> Result<Policy, PolicyError> {
        let digest = digest(bytes);
        let cached = self
            .shared
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&digest)
            .cloned();
        let pre = match cached {
            Some(pre) => pre,
            None => {
                // Compile outside the lock: it takes milliseconds (at most
                // about a second within the load limits), and other loads
                // should not wait for it. A racing load of the same
                // bytes just compiles twice.
                let component = self.compile(bytes)?;
                let pre = self.link(&component)?;
                self.shared
                    .cache
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .entry(digest.clone())
                    .or_insert(pre)
                    .clone()
            }
        };
        Ok(Policy {
            inner: Arc::new(PolicyInner {
                digest,
                linked: pre,
                shared: Arc::clone(&self.shared),
                deadline: None,
                memory_limit: None,
                config: Arc::default(),
            }),
        })
    }

    /// What a component is, without running it: digest, size, imports,
    /// exports, and whether it implements [`WORLD`].
    pub fn inspect(&self, bytes: &[u8]) -> Result<ComponentInfo, PolicyError> {
        let component = self.compile(bytes)?;
        let (imports, exports) = describe(&self.shared.engine, &component);
        let world = self.link(&component).map(|_| ());
        Ok(ComponentInfo {
            digest: digest(bytes),
            size: bytes.len(),
            imports,
            exports,
            world,
        })
    }

    fn compile(&self, bytes: &[u8]) -> Result<Component, PolicyError> {
        check_is_component(bytes)?;
        // Before Cranelift sees a byte: what it would cost is bounded here.
        bounds::check(bytes, &self.shared.config.load)?;
        Component::new(&self.shared.engine, bytes)
            .map_err(|e| PolicyError::Compile(one_line(&format!("{e:#}"), MAX_ERROR_BYTES)))
    }

    /// Resolves the imports against the host and type-checks the `decide`
    /// (and `queries`) exports; any mismatch means the component targets
    /// another world.
    fn link(&self, component: &Component) -> Result<Linked, PolicyError> {
        let (imports, exports) = describe(&self.shared.engine, component);
        let ty = component.component_type();
        let names: Vec<&str> = ty
            .imports(&self.shared.engine)
            .map(|(name, _)| name)
            .collect();
        let foreign = imports::foreign(names.iter().copied());
        if !foreign.is_empty() {
            return Err(PolicyError::ForbiddenImports(foreign));
        }
        let metric_query = names.iter().any(|n| imports::is_metric_query(n));
        let mismatch = |e: wasmtime::Error| {
            PolicyError::WorldMismatch(one_line(
                &format!(
                    "it exports {} and imports {} ({e:#})",
                    list(&exports),
                    list(&imports)
                ),
                MAX_ERROR_BYTES,
            ))
        };
        let pre = self
            .shared
            .linker
            .instantiate_pre(component)
            .map_err(mismatch)?;
        let found = Exports::find(&pre).map_err(mismatch)?;
        if metric_query && found.queries.is_none() {
            return Err(mismatch(wasmtime::format_err!(
                "it imports {METRIC_QUERY} but does not export `queries` ({WORLD_WITH_QUERIES})"
            )));
        }
        Ok(Linked {
            pre,
            exports: found,
            metric_query,
        })
    }
}

/// The answer of [`PolicyRuntime::inspect`].
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    /// `sha256:<hex>` of the component's bytes.
    pub digest: String,
    pub size: usize,
    /// `<name> (<kind>)` for every import and export.
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// `Ok` when the component implements [`WORLD`].
    pub world: Result<(), PolicyError>,
}

/// A loaded policy. Cheap to clone; every decision runs in a fresh instance.
#[derive(Clone)]
pub struct Policy {
    inner: Arc<PolicyInner>,
}

#[derive(Clone)]
struct PolicyInner {
    digest: String,
    linked: Linked,
    shared: Arc<Shared>,
    /// Tighter bounds than the runtime's, for this policy alone.
    deadline: Option<Duration>,
    memory_limit: Option<usize>,
    /// The policy object's `spec.config`, read through the `config` import.
    config: Arc<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("digest", &self.inner.digest)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// `sha256:<hex>` of the component's bytes.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// This policy with a decision deadline and a memory limit of its own;
    /// each is capped by the runtime's (and a deadline only applies to a
    /// runtime that runs on one, not on fuel).
    pub fn with_limits(&self, deadline: Option<Duration>, memory: Option<u64>) -> Policy {
        let shared = &self.inner.shared;
        let deadline = match (shared.config.budget, deadline) {
            (Budget::Deadline(max), Some(d)) => Some(d.min(max)),
            _ => None,
        };
        let memory_limit = memory
            .and_then(|m| usize::try_from(m).ok())
            .map(|m| m.min(shared.memory_limit));
        self.derive(|inner| {
            inner.deadline = deadline;
            inner.memory_limit = memory_limit;
        })
    }

    /// This policy reading `config` through the `config` import.
    pub fn with_config(&self, config: BTreeMap<String, String>) -> Policy {
        self.derive(|inner| inner.config = Arc::new(config))
    }

    /// A copy of this policy (same compiled component) with `change` made.
    fn derive(&self, change: impl FnOnce(&mut PolicyInner)) -> Policy {
        let mut inner = (*self.inner).clone();
        change(&mut inner);
        Policy {
            inner: Arc::new(inner),
        }
    }

    /// The config the policy reads.
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.inner.config
    }

    /// Whether the component imports `metric-query`: it may only be used by
    /// a policy object granted that capability.
    pub fn needs_metric_query(&self) -> bool {
        self.inner.linked.metric_query
    }

    /// The range queries the policy asks for before it judges `input` at
    /// `ctx.now`, checked against the host's bounds; none unless the
    /// component reads series (imports `metric-query`).
    pub fn queries(
        &self,
        input: &PolicyInput,
        ctx: &Context,
    ) -> Result<Vec<RangeQuery>, PolicyError> {
        let linked = &self.inner.linked;
        let Some(index) = linked.exports.queries.filter(|_| linked.metric_query) else {
            return Ok(Vec::new());
        };
        let wit_input = bindings::input_to_wit(input);
        let queries = self.call_with(
            input,
            ctx,
            |store, instance| {
                let func = instance
                    .get_typed_func::<(&bindings::WitInput,), (Vec<bindings::WitRangeQuery>,)>(
                        &mut *store,
                        index,
                    )?;
                Ok(func.call(&mut *store, (&wit_input,))?.0)
            },
            |_| {},
        )?;
        let queries: Vec<RangeQuery> = queries
            .into_iter()
            .map(bindings::range_query_from_wit)
            .collect();
        check_queries(&queries)?;
        Ok(queries)
    }

    /// Runs one decision in a fresh instance and validates it against
    /// `input`; its reasons come back as single lines without control
    /// characters (see [`crate::core::text`]). The policy reads `ctx.now`
    /// and `ctx.series` through its imports, and its own config (not
    /// `ctx.config`).
    pub fn evaluate_in(&self, input: &PolicyInput, ctx: &Context) -> Result<Decision, PolicyError> {
        let mut decision = self.run(input, ctx)?;
        validate_decision(input, &decision)?;
        clean_reasons(&mut decision);
        Ok(decision)
    }

    /// [`Policy::evaluate_in`] with an empty context (time 0, no series),
    /// for tools and tests that judge an input alone.
    pub fn evaluate(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        self.evaluate_in(input, &Context::default())
    }

    /// Fuel one decision on `input` consumes, when the runtime counts fuel.
    pub fn fuel_used(&self, input: &PolicyInput) -> Result<Option<u64>, PolicyError> {
        self.fuel_used_in(input, &Context::default())
    }

    /// Fuel one decision on `input` in `ctx` (its time and series; the
    /// policy reads its own config, as in [`Policy::evaluate_in`])
    /// consumes, when the runtime counts fuel.
    pub fn fuel_used_in(
        &self,
        input: &PolicyInput,
        ctx: &Context,
    ) -> Result<Option<u64>, PolicyError> {
        let Budget::Fuel(budget) = self.inner.shared.config.budget else {
            return Ok(None);
        };
        let mut left = 0;
        self.run_with(input, ctx, |store| left = store.get_fuel().unwrap_or(0))?;
        Ok(Some(budget - left))
    }

    /// One decision, not yet validated.
    fn run(&self, input: &PolicyInput, ctx: &Context) -> Result<Decision, PolicyError> {
        self.run_with(input, ctx, |_| {})
    }

    /// One decision; `after` sees the store once the call returned.
    fn run_with(
        &self,
        input: &PolicyInput,
        ctx: &Context,
        after: impl FnOnce(&Store<PolicyState>),
    ) -> Result<Decision, PolicyError> {
        let index = self.inner.linked.exports.decide;
        let wit_input = bindings::input_to_wit(input);
        let decision = self.call_with(
            input,
            ctx,
            |store, instance| {
                let func = instance
                    .get_typed_func::<(&bindings::WitInput,), (bindings::WitDecision,)>(
                        &mut *store,
                        index,
                    )?;
                Ok(func.call(&mut *store, (&wit_input,))?.0)
            },
            after,
        )?;
        Ok(bindings::decision_from_wit(decision))
    }

    /// One call of an export in a fresh instance, bounded in time (or fuel)
    /// and memory; `after` sees the store once the call returned.
    fn call_with<R>(
        &self,
        input: &PolicyInput,
        ctx: &Context,
        export: impl FnOnce(
            &mut Store<PolicyState>,
            &wasmtime::component::Instance,
        ) -> wasmtime::Result<R>,
        after: impl FnOnce(&Store<PolicyState>),
    ) -> Result<R, PolicyError> {
        let shared = &*self.inner.shared;
        // Blame an oversized input on the input, before the guest runs out
        // of memory copying it in.
        let size = input::encoded_len(input).saturating_add(input::series_len(&ctx.series));
        let limit = shared.config.input_limit();
        if size > limit {
            return Err(PolicyError::InputTooLarge { size, limit });
        }
        // Declared before the store, so the slot is given back after the
        // store (and its pool slot) is gone.
        let _slot = shared.slots.acquire();
        let mut store = Store::new(
            &shared.engine,
            PolicyState::new(
                self.inner.memory_limit.unwrap_or(shared.memory_limit),
                shared.config.log,
            ),
        );
        store.data_mut().step = StepData {
            now: ctx.now,
            config: Arc::clone(&self.inner.config),
            series: ctx.series.clone(),
        };
        store.limiter(|state| &mut state.memory);
        // Set before instantiation, so start functions are bounded too.
        match shared.config.budget {
            Budget::Deadline(deadline) => {
                let deadline = self.inner.deadline.unwrap_or(deadline);
                store.set_epoch_deadline(deadline_ticks(deadline));
                store.epoch_deadline_trap();
            }
            Budget::Fuel(fuel) => store
                .set_fuel(fuel)
                .map_err(|e| PolicyError::Setup(format!("cannot set the fuel budget: {e}")))?,
        }

        let result = self
            .inner
            .linked
            .pre
            .instantiate(&mut store)
            .and_then(|instance| export(&mut store, &instance));
        after(&store);
        self.emit_log(&input.canary, store.data());
        match result {
            Ok(value) => Ok(value),
            Err(err) => {
                // Errors state the bounds this policy ran under.
                let mut config = shared.config.clone();
                if let (Some(d), Budget::Deadline(_)) = (self.inner.deadline, config.budget) {
                    config.budget = Budget::Deadline(d);
                }
                if let Some(m) = self.inner.memory_limit {
                    config.memory_limit = m as u64;
                }
                Err(classify(err, store.data(), &config))
            }
        }
    }

    /// Forwards what the policy logged to the operator's log, tagged with the
    /// canary and the policy.
    fn emit_log(&self, canary: &str, state: &PolicyState) {
        use bindings::LogLevel;
        let policy = self.digest();
        for line in &state.lines {
            let message = line.message.as_str();
            match line.level {
                LogLevel::Debug => tracing::debug!(canary, policy, "{message}"),
                LogLevel::Info => tracing::info!(canary, policy, "{message}"),
                LogLevel::Warn => tracing::warn!(canary, policy, "{message}"),
                LogLevel::Error => tracing::error!(canary, policy, "{message}"),
            }
        }
        if state.dropped_lines > 0 {
            tracing::warn!(
                canary,
                policy,
                dropped = state.dropped_lines,
                "policy log lines dropped"
            );
        }
    }
}

impl Judge for Policy {
    fn queries(&self, input: &PolicyInput, ctx: &Context) -> Result<Vec<RangeQuery>, JudgeError> {
        Policy::queries(self, input, ctx).map_err(|e| JudgeError(e.to_string()))
    }

    fn decide(&self, input: &PolicyInput, ctx: &Context) -> Result<Decision, JudgeError> {
        self.evaluate_in(input, ctx)
            .map_err(|e| JudgeError(e.to_string()))
    }
}

/// The host's bounds on what a policy may ask for in one step: at most
/// [`MAX_QUERIES`] queries with unique, non-empty names, a step of at least
/// a second, and [`MAX_POINTS_PER_QUERY`] / [`MAX_POINTS_PER_DECISION`]
/// samples. Counted before any query runs.
pub fn check_queries(queries: &[RangeQuery]) -> Result<(), PolicyError> {
    let refuse = |why: String| Err(PolicyError::InvalidQueries(one_line(&why, MAX_ERROR_BYTES)));
    if queries.len() > MAX_QUERIES {
        return refuse(format!(
            "{} range queries, at most {MAX_QUERIES} per decision",
            queries.len()
        ));
    }
    let mut total = 0u64;
    for (i, q) in queries.iter().enumerate() {
        if q.name.trim().is_empty() {
            return refuse(format!("range query {i} has no name"));
        }
        if queries[..i].iter().any(|other| other.name == q.name) {
            return refuse(format!("two range queries are named {}", q.name));
        }
        if q.query.trim().is_empty() {
            return refuse(format!("range query {} has no query", q.name));
        }
        if q.step_seconds == 0 || q.window_seconds == 0 {
            return refuse(format!(
                "range query {}: window and step must be at least 1 second",
                q.name
            ));
        }
        if q.points() > MAX_POINTS_PER_QUERY {
            return refuse(format!(
                "range query {} asks for {} samples ({} s / {} s), at most {MAX_POINTS_PER_QUERY}",
                q.name,
                q.points(),
                q.window_seconds,
                q.step_seconds
            ));
        }
        total += q.points();
    }
    if total > MAX_POINTS_PER_DECISION {
        return refuse(format!(
            "the range queries ask for {total} samples, at most {MAX_POINTS_PER_DECISION} per decision"
        ));
    }
    Ok(())
}

/// Turns a failed instantiation or call into the error a person can act on:
/// one line naming the cause. The wasm backtrace goes to the debug log.
fn classify(err: wasmtime::Error, state: &PolicyState, config: &RuntimeConfig) -> PolicyError {
    if let Some(backtrace) = err.downcast_ref::<wasmtime::WasmBacktrace>() {
        tracing::debug!(%backtrace, "policy stopped");
    }
    // The limiter's flag comes first: its error surfaces as a plain trap.
    if state.memory.exceeded {
        return PolicyError::MemoryLimit {
            limit: config.memory_limit,
        };
    }
    let log = state.log_text();
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => match config.budget {
            Budget::Deadline(limit) => PolicyError::Timeout { limit },
            // Epochs only tick with a deadline; nothing else interrupts.
            Budget::Fuel(_) => PolicyError::Trap {
                message: "interrupted".into(),
                log,
            },
        },
        Some(Trap::OutOfFuel) => PolicyError::FuelExhausted {
            // Only a fuel budget can run out; 0 would say "no fuel at all".
            budget: match config.budget {
                Budget::Fuel(fuel) => fuel,
                Budget::Deadline(_) => 0,
            },
        },
        Some(trap) => {
            // The SDK's panic hook logs the panic message just before the
            // guest aborts: that line says far more than the trap code.
            let panic = state
                .lines
                .iter()
                .rev()
                .find(|l| l.message.starts_with("policy panicked"));
            let cause = trap_cause(*trap);
            let message = match panic {
                // Log lines are single lines already.
                Some(line) => format!("{} ({cause})", line.message),
                None => cause,
            };
            PolicyError::Trap {
                message: one_line(&message, MAX_ERROR_BYTES),
                log,
            }
        }
        None if err
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some() =>
        {
            PolicyError::Instantiate(format!(
                "more than {} decisions at once; raise max_concurrent_decisions ({err})",
                config.max_concurrent_decisions
            ))
        }
        None => {
            // The root cause, without the contexts wasmtime adds (the
            // backtrace among them).
            tracing::debug!(error = ?err, "policy failed");
            PolicyError::Trap {
                message: one_line(&err.root_cause().to_string(), MAX_ERROR_BYTES),
                log,
            }
        }
    }
}

/// A trap's cause in the words a policy author searches for.
fn trap_cause(trap: Trap) -> String {
    match trap {
        Trap::StackOverflow => {
            "stack overflow (call stack exhausted: look for unbounded recursion)".into()
        }
        other => other.to_string(),
    }
}

/// A decision's reasons as single lines without control characters, within
/// the length the validator allows.
pub(crate) fn clean_reasons(decision: &mut Decision) {
    let reason = match decision {
        Decision::Hold(hold) => &mut hold.reason,
        Decision::Rollback(reason) | Decision::Wait(reason) => reason,
        Decision::Advance(_) | Decision::Promote => return,
    };
    *reason = one_line(reason, MAX_REASON_BYTES);
}

/// Longest error detail kept from wasmtime or a trap: enough for any real
/// message, short enough for an event.
const MAX_ERROR_BYTES: usize = 1024;

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Refuses what is not a component before wasmtime does, with a hint.
fn check_is_component(bytes: &[u8]) -> Result<(), PolicyError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(PolicyError::NotAComponent(
            "the file does not start with the WebAssembly magic bytes".into(),
        ));
    }
    // Bytes 4..8: version 1 of a core module, or layer 1 of a component.
    if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        return Err(PolicyError::NotAComponent(
            "it is a core WebAssembly module; turn it into a component with \
             `wasm-tools component new` (or build it with the fledge-policy SDK)"
                .into(),
        ));
    }
    Ok(())
}

fn describe(engine: &Engine, component: &Component) -> (Vec<String>, Vec<String>) {
    use wasmtime::component::types::ComponentItem;
    let kind = |item: &ComponentItem| match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    };
    let ty = component.component_type();
    let imports = ty
        .imports(engine)
        .map(|(name, item)| format!("{name} ({})", kind(&item.ty)))
        .collect();
    let exports = ty
        .exports(engine)
        .map(|(name, item)| format!("{name} ({})", kind(&item.ty)))
        .collect();
    (imports, exports)
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".into()
    } else {
        items.join(", ")
    }
}
