//! The rollout state machine: observations in, actions out. No I/O, no clock,
//! no Kubernetes client, no wasmtime: every judgement goes through [`Judge`].

pub mod judge;

pub use judge::{Judge, JudgeError};
