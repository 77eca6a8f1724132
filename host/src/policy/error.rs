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
    /// A component, but for another world.
    #[error(
        "this component does not implement fledge:policy/rollout-policy@0.1.0: {0}; \
         build it against wit/fledge-policy.wit"
    )]
    WorldMismatch(String),
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
