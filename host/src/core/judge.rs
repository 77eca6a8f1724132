use fledge_policy::{Context, Decision, PolicyInput, RangeQuery};

/// Why a policy gave no usable decision (trap, timeout, memory cap, invalid
/// decision, ...), phrased for a person. The core counts it as a failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JudgeError(pub String);

/// Where the core asks for every rollout judgement. Implemented by the Wasm
/// policy runtime, and natively by the built-in policy for tests.
pub trait Judge {
    /// The range queries to answer before [`Judge::decide`] judges `input`
    /// (a policy with the `metric-query` capability); `ctx` has the step's
    /// time and no series yet. Most policies need none.
    fn queries(&self, input: &PolicyInput, ctx: &Context) -> Result<Vec<RangeQuery>, JudgeError> {
        let _ = (input, ctx);
        Ok(Vec::new())
    }

    /// One decision for one analysis step, at `ctx.now`, with the answers to
    /// [`Judge::queries`] in `ctx.series`. The implementation validates the
    /// decision against `input` before returning it.
    fn decide(&self, input: &PolicyInput, ctx: &Context) -> Result<Decision, JudgeError>;
}
