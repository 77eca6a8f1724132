//! The Wasm policy runtime: loads rollout policies (WebAssembly components of
//! the `fledge:policy/rollout-policy` world) and runs one sandboxed decision per
//! analysis step, bounded in time and memory.
//!
//! Lifetimes, from long to short: one [`PolicyRuntime`] per process (engine,
//! epoch ticker, compiled components by digest) → one [`Policy`] per loaded
//! component (imports resolved and type-checked once) → one `Store` and one
//! instance per decision, so no state survives from one decision to the next.
//!
//! - [`validate_decision`]: the checks every decision passes before the core acts on it.
//! - [`NativeJudge`]: the built-in policy without the sandbox, for tests.
mod bindings;
mod error;
mod limits;
mod native;
mod ticker;
pub mod toolchain;

#[cfg(test)]
mod tests;

pub use crate::core::validate::{validate_decision, InvalidDecision};
pub use error::PolicyError;
pub use limits::LogLimits;
pub use native::NativeJudge;

use crate::core::{Judge, JudgeError};
use bindings::RolloutPolicyPre;
use fledge_policy::{Decision, PolicyInput};
use limits::{PolicyState, Slots};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, PoolingAllocationConfig, Store, Trap};

/// The world every policy must implement.
pub const WORLD: &str = "fledge:policy/rollout-policy@0.1.0";

/// The built-in policy (`policies/flagger`), compiled to a component at build time.
pub static BUILTIN_COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flagger.wasm"));

/// Bounds of the sandbox. The defaults suit the built-in policy with a wide
/// margin: it decides in microseconds within one 64 KiB page of memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Wall-clock time one decision (instantiation included) may take.
    pub deadline: Duration,
    /// Linear memory one decision may use, in bytes.
    pub memory_limit: u64,
    /// Decisions that may run at the same time; sizes the instance pool.
    pub max_concurrent_decisions: u32,
    /// What a decision may log.
    pub log: LogLimits,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            deadline: Duration::from_millis(100),
            memory_limit: 32 << 20,
            max_concurrent_decisions: 16,
            log: LogLimits::default(),
        }
    }
}

impl RuntimeConfig {
    /// Epoch period: a tenth of the deadline, between 1 and 10 ms. A decision
    /// is stopped between `deadline` and `deadline + tick` after it starts.
    fn tick(&self) -> Duration {
        (self.deadline / 10).clamp(Duration::from_millis(1), Duration::from_millis(10))
    }

    /// Epochs to allow: rounded up, plus one because the first tick may come
    /// right after the deadline is set.
    fn deadline_ticks(&self) -> u64 {
        let tick = self.tick().as_nanos();
        let ticks = self.deadline.as_nanos().div_ceil(tick);
        u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
    }
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
    cache: Mutex<HashMap<String, RolloutPolicyPre<PolicyState>>>,
    slots: Slots,
    _ticker: ticker::EpochTicker,
}

/// Loads and runs policy components. One per process; cheap to clone (clones
/// share the engine, the ticker and the compiled components).
#[derive(Clone)]
pub struct PolicyRuntime {
    shared: Arc<Shared>,
}

impl PolicyRuntime {
    pub fn new(config: RuntimeConfig) -> Result<PolicyRuntime, PolicyError> {
        if config.deadline.is_zero() {
            return Err(PolicyError::Setup(
                "the decision deadline must be above zero".into(),
            ));
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

        let mut wasm = Config::new();
        wasm.concurrency_support(false)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .allocation_strategy(pool);
        let engine = Engine::new(&wasm)
            .map_err(|e| PolicyError::Setup(format!("cannot create the wasm engine: {e:#}")))?;

        let mut linker = Linker::new(&engine);
        bindings::add_to_linker(&mut linker)
            .map_err(|e| PolicyError::Setup(format!("cannot link the host functions: {e:#}")))?;
        let ticker = ticker::EpochTicker::start(engine.clone(), config.tick()).map_err(|e| {
            PolicyError::Setup(format!("cannot start the epoch ticker thread: {e}"))
        })?;
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
                // Compile outside the lock: it takes milliseconds, and other
                // loads should not wait for it. A racing load of the same
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
                pre,
                shared: Arc::clone(&self.shared),
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
        Component::new(&self.shared.engine, bytes)
            .map_err(|e| PolicyError::Compile(format!("{e:#}")))
    }

    /// Resolves the imports against the host and type-checks the `decide`
    /// export; any mismatch means the component targets another world.
    fn link(&self, component: &Component) -> Result<RolloutPolicyPre<PolicyState>, PolicyError> {
        let mismatch = |e: wasmtime::Error| {
            let (imports, exports) = describe(&self.shared.engine, component);
            PolicyError::WorldMismatch(format!(
                "it exports {} and imports {} ({e:#})",
                list(&exports),
                list(&imports)
            ))
        };
        let pre = self
            .shared
            .linker
            .instantiate_pre(component)
            .map_err(mismatch)?;
        RolloutPolicyPre::new(pre).map_err(mismatch)
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

struct PolicyInner {
    digest: String,
    pre: RolloutPolicyPre<PolicyState>,
    shared: Arc<Shared>,
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

    /// Runs one decision in a fresh instance and validates it against `input`.
    pub fn evaluate(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let decision = self.run(input)?;
        validate_decision(input, &decision)?;
        Ok(decision)
    }

    /// One decision, not yet validated.
    fn run(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let shared = &*self.inner.shared;
        // Declared before the store, so the slot is given back after the
        // store (and its pool slot) is gone.
        let _slot = shared.slots.acquire();
        let mut store = Store::new(
            &shared.engine,
            PolicyState::new(shared.memory_limit, shared.config.log),
        );
        store.limiter(|state| &mut state.memory);
        // Set before instantiation, so start functions are bounded too.
        store.set_epoch_deadline(shared.config.deadline_ticks());
        store.epoch_deadline_trap();

        let wit_input = bindings::input_to_wit(input);
        let result = self
            .inner
            .pre
            .instantiate(&mut store)
            .and_then(|policy| policy.call_decide(&mut store, &wit_input));
        self.emit_log(&input.canary, store.data());
        match result {
            Ok(decision) => Ok(bindings::decision_from_wit(decision)),
            Err(err) => Err(classify(err, store.data(), &shared.config)),
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
    fn decide(&self, input: &PolicyInput) -> Result<Decision, JudgeError> {
        self.evaluate(input).map_err(|e| JudgeError(e.to_string()))
    }
}

/// Turns a failed instantiation or call into the error a person can act on.
fn classify(err: wasmtime::Error, state: &PolicyState, config: &RuntimeConfig) -> PolicyError {
    // The limiter's flag comes first: its error surfaces as a plain trap.
    if state.memory.exceeded {
        return PolicyError::MemoryLimit {
            limit: config.memory_limit,
        };
    }
    let log = state.log_text();
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PolicyError::Timeout {
            limit: config.deadline,
        },
        Some(trap) => {
            // The SDK's panic hook logs the panic message just before the
            // guest aborts: that line says far more than the trap code.
            let panic = state
                .lines
                .iter()
                .rev()
                .find(|l| l.message.starts_with("policy panicked"));
            let message = match panic {
                // One line: it ends up in an event.
                Some(line) => format!("{} ({trap})", line.message.replace('\n', " ")),
                None => trap.to_string(),
            };
            PolicyError::Trap { message, log }
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
        None => PolicyError::Trap {
            message: format!("{err:#}"),
            log,
        },
    }
}

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
