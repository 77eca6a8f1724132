//! What can go wrong loading or running a policy, phrased so the person reading
//! the event or the CLI output knows what to change.
use crate::core::validate::InvalidDecision;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The decision did not finish within the deadline (epoch interruption).
    #[error(
        "policy did not decide within its deadline of {} ms and was stopped; \
         look for an endless loop or raise the deadline",
        limit.as_millis()
    )]
    Timeout { limit: Duration },
    /// The guest tried to grow its memory beyond the cap.
    #[error(
        "policy tried to use more than its memory cap of {} and was stopped; \
         reduce its allocations or raise the cap",
        mib(*limit)
    )]
    MemoryLimit { limit: u64 },
    /// The decision used up its fuel (the deterministic budget of the
    /// simulator) without deciding.
    #[error(
        "policy used up its fuel budget of {budget} units without deciding and was stopped; \
         look for an endless loop or raise the budget (fledge simulate --policy-fuel)"
    )]
    FuelExhausted { budget: u64 },
    /// The input is beyond what a policy is given: the Canary's fault, not
    /// the policy's.
    #[error(
        "policy input is {size} bytes, over the {limit}-byte limit: the Canary has too many \
         metrics, webhooks or match rules, or too long names; the policy was not run"
    )]
    InputTooLarge { size: usize, limit: usize },
    /// The guest trapped (a panic, `unreachable`, out-of-bounds access, ...).
    /// `log` holds what the policy logged during the decision, where the SDK
    /// writes the panic message.
    #[error("policy trapped: {message}")]
    Trap { message: String, log: Vec<String> },
    /// The decision came back but breaks the contract.
    // Not `#[from]`: that would make the inner error the source too, and
    // error chains would print it twice.
    #[error("policy returned an invalid decision: {0}")]
    InvalidDecision(InvalidDecision),
    /// The range queries a policy asked for break the host's bounds.
    #[error("policy asked for range queries beyond the host's bounds: {0}")]
    InvalidQueries(String),
    /// A component, but for another world.
    #[error(
        "this component does not implement fledge:policy/rollout-policy@0.1.1: {0}; \
         build it against wit/fledge-policy.wit"
    )]
    WorldMismatch(String),
    /// The component imports what the world does not provide.
    #[error(
        "the component imports {}, which no policy may import: \
         the world allows only fledge:policy's host, config, clock and metric-query; \
         remove the dependency that needs it (WASI, a JavaScript binding, a host function)",
        some(.0)
    )]
    ForbiddenImports(Vec<String>),
    /// Refused before compiling: beyond a bound on what loading may cost.
    #[error(
        "policy component refused before compiling: {at} has {value} {what}, \
         over the limit of {limit}"
    )]
    TooExpensive {
        at: String,
        what: &'static str,
        value: u64,
        limit: u64,
    },
    /// Not a component at all (a core module, or not WebAssembly).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// A component wasmtime could not compile.
    #[error("cannot compile the policy component: {0}")]
    Compile(String),
    /// The guest failed while being instantiated (e.g. its start function).
    #[error("cannot instantiate the policy: {0}")]
    Instantiate(String),
    /// The runtime itself could not be set up (configuration, ticker thread).
    #[error("cannot set up the policy runtime: {0}")]
    Setup(String),
}

/// The first names of a list, and how many more there are.
fn some(names: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut text = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

impl From<InvalidDecision> for PolicyError {
    fn from(e: InvalidDecision) -> Self {
        PolicyError::InvalidDecision(e)
    }
}
