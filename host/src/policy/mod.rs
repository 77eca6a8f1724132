//! The Wasm policy runtime.
