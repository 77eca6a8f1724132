#!/usr/bin/env bash
# Runs every test of the workspace: unit and property tests of the core and the
# policy runtime (through Wasm), the simulator's guide walkthroughs, and the
# tests against a local Kubernetes control plane (tests/cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace "$@"
# The example policy is a crate of its own, as a policy author's would be.
cargo test --manifest-path examples/policies/strict/Cargo.toml "$@"
