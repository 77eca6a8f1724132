//! Fledge: progressive delivery for Kubernetes whose rollout judgements are
//! made by sandboxed WebAssembly policies.
//!
//! - [`core`]: the rollout state machine, a pure function of observations.
//! - [`policy`]: the Wasm policy runtime (wasmtime, component model).
//! - [`api`]: the `flagger.app/v1beta1` Canary and its validation.
//! - [`build_info`]: the version, served CRD versions and policy contract.
//! - [`simulate`]: the in-memory shell around the core, with a virtual clock.
//! - [`metrics`]: metric providers of MetricTemplates, one trait.
//! - [`operator`]: the Kubernetes shell around the core (`fledge operator`).
//! - [`notify`]: alerts to Slack, Teams, Discord, Rocket.Chat and Google Chat.
//! - [`migrate`]: App Mesh Canaries to Gateway API (`fledge migrate`).
//! - [`loadtester`]: flagger-loadtester's API with a built-in hey (`fledge loadtester`).
#![forbid(unsafe_code)]

pub mod api;
pub mod build_info;
pub mod core;
pub mod loadtester;
pub mod metrics;
pub mod migrate;
pub mod notify;
pub mod operator;
pub mod policy;
pub mod simulate;
