#!/usr/bin/env bash
# Builds Helm (used by the install tests to lint and render deploy/charts) from the Go module
# proxy into $FLEDGE_CLUSTER_CACHE/helm-<v>/bin/helm (the cache build.sh uses); about a minute
# or four on 2 cores. A present binary is not rebuilt.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${FLEDGE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fledge}"
dir="$cache/helm-$HELM_VERSION"
[[ -x "$dir/bin/helm" ]] && exit 0
command -v go >/dev/null 2>&1 || { echo "build-helm.sh: Go is required to build Helm" >&2; exit 1; }
echo "build-helm.sh: building Helm $HELM_VERSION into $dir/bin" >&2
mkdir -p "$cache"
exec 9>"$cache/.helm-build.lock"
flock 9
[[ -x "$dir/bin/helm" ]] && exit 0
# Built into a temporary dir and moved into place, so an interrupted build leaves nothing.
tmp="$(mktemp -d "$cache/.helm-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mkdir -p "$dir/bin"
mv -f "$tmp/helm" "$dir/bin/helm"
