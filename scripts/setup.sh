#!/usr/bin/env bash
# Installs what building Fledge needs besides Rust itself: a standard library
# for wasm32-unknown-unknown, which the policies are compiled for.
#   - with rustup and network access: `rustup target add wasm32-unknown-unknown`;
#   - otherwise, on Debian: rustc-web (a compiler that knows wasm32), its std
#     source and lld (wasm-ld); host/build.rs then builds std from source.
set -euo pipefail

sysroot=$(rustc --print sysroot)
if [ -d "$sysroot/lib/rustlib/wasm32-unknown-unknown" ]; then
  echo "setup: wasm32-unknown-unknown is installed for $(rustc --version)"
  exit 0
fi
if [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust ] && command -v wasm-ld >/dev/null; then
  echo "setup: using Debian's rustc-web ($(/usr/bin/rustc --version)) to build the policies"
  exit 0
fi
if command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing rustc-web cargo-web rust-web-src lld with apt-get"
  $sudo apt-get install -y rustc-web cargo-web rust-web-src lld >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y rustc-web cargo-web rust-web-src lld >/dev/null; }
  exit 0
fi
if command -v rustup >/dev/null; then
  echo "setup: rustup target add wasm32-unknown-unknown"
  exec rustup target add wasm32-unknown-unknown
fi
echo "setup: no way to get a wasm32-unknown-unknown standard library: install it with rustup, or Debian's rustc-web rust-web-src lld" >&2
exit 1
