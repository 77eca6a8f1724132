#!/usr/bin/env bash
# Builds the local test cluster's binaries from the Go module proxy into a cache outside the
# source tree, keyed by version:
#   $FLEDGE_CLUSTER_CACHE/k8s-<v>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
#   $FLEDGE_CLUSTER_CACHE/etcd-<v>/bin/etcd
#   $FLEDGE_CLUSTER_CACHE/kwok-<v>/bin/kwok and kwok-<v>/stages/*.yaml
#   $FLEDGE_CLUSTER_CACHE/gateway-api-<v>/crds/*.yaml (the standard-channel CRDs, no build)
# FLEDGE_CLUSTER_CACHE defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/fledge.
# Idempotent: a component whose binaries are all present is not rebuilt, so a warm run exits at once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${FLEDGE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fledge}"
k8s_dir="$cache/k8s-$KUBERNETES_VERSION"
etcd_dir="$cache/etcd-$ETCD_VERSION"
kwok_dir="$cache/kwok-$KWOK_VERSION"
gateway_api_dir="$cache/gateway-api-$GATEWAY_API_VERSION"

k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
kwok_stages=(
    node/fast/node-initialize.yaml
    node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
    pod/fast/pod-ready.yaml
    pod/fast/pod-complete.yaml
    pod/fast/pod-delete.yaml
)

log() { printf 'build.sh: %s\n' "$*" >&2; }

all_present() {
    local f
    for f in "$@"; do
        [[ -x "$f" || ( "$f" == *.yaml && -f "$f" ) ]] || return 1
    done
}

need_go() {
    if ! command -v go >/dev/null 2>&1; then
        log "Go (>= $GO_MIN_VERSION) is required to build the test cluster binaries; install it and rerun $0"
        exit 1
    fi
}

# Each Go build uses a temporary output dir and is moved into place at the end, so an interrupted
# build never leaves a half-written binary that a later run would take for a finished one.
build_k8s() {
    local want=()
    local b
    for b in "${k8s_bins[@]}"; do want+=("$k8s_dir/bin/$b"); done
    if all_present "${want[@]}"; then return 0; fi
    need_go
    log "building Kubernetes $KUBERNETES_VERSION (${k8s_bins[*]}) into $k8s_dir/bin; a cold build takes about 15 minutes on 2 cores"
    local minor="${KUBERNETES_VERSION#v1.}"
    minor="${minor%%.*}"
    local ldflags="-s -w"
    local p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    local tmp
    tmp="$(mktemp -d "$cache/.k8s-build.XXXXXX")"
    (
        cd "$here/gomod/k8s"
        CGO_ENABLED=0 go build -buildvcs=false -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$tmp/" \
            k8s.io/kubernetes/cmd/kube-apiserver \
            k8s.io/kubernetes/cmd/kube-controller-manager \
            k8s.io/kubernetes/cmd/kube-scheduler \
            k8s.io/kubernetes/cmd/kubectl
    )
    mkdir -p "$k8s_dir/bin"
    for b in "${k8s_bins[@]}"; do mv -f "$tmp/$b" "$k8s_dir/bin/$b"; done
    rm -rf "$tmp"
}

build_etcd() {
    if all_present "$etcd_dir/bin/etcd"; then return 0; fi
    need_go
    log "building etcd $ETCD_VERSION into $etcd_dir/bin"
    local tmp
    tmp="$(mktemp -d "$cache/.etcd-build.XXXXXX")"
    (
        cd "$here/gomod/etcd"
        CGO_ENABLED=0 go build -buildvcs=false -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
    )
    mkdir -p "$etcd_dir/bin"
    mv -f "$tmp/etcd" "$etcd_dir/bin/etcd"
    rm -rf "$tmp"
}

build_kwok() {
    local want=("$kwok_dir/bin/kwok")
    local s
    for s in "${kwok_stages[@]}"; do want+=("$kwok_dir/stages/$(basename "$s")"); done
    if all_present "${want[@]}"; then return 0; fi
    need_go
    log "building kwok $KWOK_VERSION into $kwok_dir/bin"
    local tmp
    tmp="$(mktemp -d "$cache/.kwok-build.XXXXXX")"
    (
        cd "$here/gomod/kwok"
        CGO_ENABLED=0 go build -buildvcs=false -trimpath -ldflags "-s -w" -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok
        # kwok >= v0.8 has no built-in stages: ship the upstream "fast" set next to the binary.
        local moddir
        moddir="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
        mkdir -p "$tmp/stages"
        for s in "${kwok_stages[@]}"; do cp "$moddir/kustomize/stage/$s" "$tmp/stages/"; done
        chmod u+w "$tmp"/stages/*.yaml
    )
    mkdir -p "$kwok_dir/bin" "$kwok_dir/stages"
    mv -f "$tmp"/stages/*.yaml "$kwok_dir/stages/"
    mv -f "$tmp/kwok" "$kwok_dir/bin/kwok"
    rm -rf "$tmp"
}

# The Gateway API CRDs are YAML in the module itself: download it (module proxy, checked against
# the checksum database) and copy the CustomResourceDefinitions of the standard channel (the
# directory also holds a ValidatingAdmissionPolicy, which is not a CRD).
fetch_gateway_api() {
    if all_present "$gateway_api_dir/crds/gateway.networking.k8s.io_httproutes.yaml"; then return 0; fi
    need_go
    log "fetching the Gateway API $GATEWAY_API_VERSION CRDs into $gateway_api_dir/crds"
    local tmp moddir
    tmp="$(mktemp -d "$cache/.gateway-api.XXXXXX")"
    # Outside any module, so the download is not tied to one of ours.
    moddir="$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    if [[ -z "$moddir" || ! -d "$moddir/config/crd/standard" ]]; then
        log "go mod download gave no directory with config/crd/standard for sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION"
        exit 1
    fi
    mkdir -p "$tmp/crds"
    local f
    for f in "$moddir"/config/crd/standard/*.yaml; do
        if grep -q '^kind: CustomResourceDefinition$' "$f"; then cp "$f" "$tmp/crds/"; fi
    done
    chmod u+w "$tmp"/crds/*.yaml
    mkdir -p "$gateway_api_dir/crds"
    mv -f "$tmp"/crds/*.yaml "$gateway_api_dir/crds/"
    rm -rf "$tmp"
}

mkdir -p "$cache"
# One build at a time per cache (concurrent test runs may all find the binaries missing).
exec 9>"$cache/.build.lock"
flock 9
start=$(date +%s)
# Small ones first, so a broken toolchain shows up before the long Kubernetes build.
fetch_gateway_api
build_etcd
build_kwok
build_k8s
elapsed=$(( $(date +%s) - start ))
if (( elapsed > 1 )); then log "done in ${elapsed}s"; fi
