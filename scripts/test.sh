#!/usr/bin/env bash
# Runs every test: unit and property tests of the core and the policy runtime
# (through Wasm), the simulator's guide walkthroughs, the CLI, the example
# policy, and the tests against a local Kubernetes control plane (tests/cluster).
#
# First it installs what those need and a fresh machine lacks: a wasm32
# standard library (scripts/setup.sh), Prometheus (apt) and the control-plane
# binaries (built once into ~/.cache/fledge by tests/cluster/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
tests/cluster/ci-prepare.sh
cargo test --workspace "$@"
# The example policy is a crate of its own, as a policy author's would be.
cargo test --manifest-path examples/custom-policy/Cargo.toml "$@"
