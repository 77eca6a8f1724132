//! The Wasm policy runtime: loads rollout policies (WebAssembly components of
//! the `fledge:policy/rollout-policy` world) and runs one sandboxed decision per
//! analysis step, bounded in time and memory.
//!
//! - [`validate`]: the checks every decision passes before the core acts on it.
//! - [`NativeJudge`]: the built-in policy without the sandbox, for tests.
mod error;
mod native;
pub mod validate;

pub use error::PolicyError;
pub use native::NativeJudge;
pub use validate::{validate_decision, InvalidDecision};
