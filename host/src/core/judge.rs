use fledge_policy::{Decision, PolicyInput};

/// Why a policy gave no usable decision (trap, timeout, memory cap, invalid
/// decision, ...), phrased for a person. The core counts it as a failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JudgeError(pub String);

/// Where the core asks for every rollout judgement. Implemented by the Wasm
/// policy runtime, and natively by the built-in policy for tests.
pub trait Judge {
    /// One decision for one analysis step. The implementation validates the
    /// decision against `input` before returning it.
    fn decide(&self, input: &PolicyInput) -> Result<Decision, JudgeError>;
}
