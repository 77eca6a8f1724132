#!/usr/bin/env bash
# Prepares a machine (CI or a developer's) for the cluster tests:
#   1. installs Debian's `prometheus` package when no `prometheus` binary is on PATH;
#   2. builds (or reuses from the cache) Helm with build-helm.sh, for the install tests, and
#      downloads what the image test's load tester image holds (busybox-static, cached in
#      ~/.cache/fledge) with scripts/image.sh --prepare;
#   3. builds (or reuses from the cache) the control-plane binaries with build.sh.
# Safe to run repeatedly; a prepared machine returns within a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v prometheus >/dev/null 2>&1; then
    echo "ci-prepare.sh: installing prometheus with apt-get" >&2
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
prometheus --version 2>&1 | head -n 1 >&2

"$here/build-helm.sh"
"$here/../../scripts/image.sh" --prepare
exec "$here/build.sh"
