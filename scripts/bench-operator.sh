#!/usr/bin/env bash
# Many Canaries at once: bootstraps N copies of the guide's podinfo Canary (one namespace each,
# kwok pods, mesh-sim traffic) on a local test cluster, promotes them all together, and reports
# the operator's peak RSS, CPU seconds and Kubernetes API requests (from the API server's audit
# log, by user agent) per analysis step.
#
#   scripts/bench-operator.sh [fledge|flagger] [N]      # defaults: fledge 100
#
# FLEDGE_BENCH_PROFILE=debug benches the debug build instead of an optimised one (the release
# build takes long; the request counts are the same, CPU seconds are not comparable).
# FLEDGE_BIN=<path> benches that fledge binary as it is (e.g. a copy of an older build) and
# builds nothing (the cluster binaries must be built). FLEDGE_BENCH_TAG=<tag> names the output
# directory target/bench-operator/<op>-<N>-<tag>.
# Flagger is the binary scripts/flagger-diff.sh builds. Not part of .ci/run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
op="${1:-fledge}"
n="${2:-100}"
cache="${FLEDGE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fledge}"
flagger="$cache/flagger-v1.44.0/flagger"
profile="${FLEDGE_BENCH_PROFILE:-release}"
out="$root/target/bench-operator/$op-$n${FLEDGE_BENCH_TAG:+-$FLEDGE_BENCH_TAG}"

tests/cluster/build.sh
target_dir="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
if [[ -n "${FLEDGE_BIN:-}" ]]; then
  fledge_bin="$FLEDGE_BIN"
  profile="given"
else
  cargo build --quiet --workspace --bins
  # The operator as users run it: optimised, unless asked for the debug build.
  if [[ "$op" != flagger && "$profile" != debug ]]; then
    cargo build --quiet --release -p fledge --bin fledge
  fi
  fledge_bin="$target_dir/$profile/fledge"
fi
cluster_bin="$target_dir/debug/fledge-cluster"
kubectl_bin="$(ls -d "$cache"/k8s-*/bin | tail -n 1)/kubectl"
rm -rf "$out"
mkdir -p "$out"
name="bench-$op"
"$cluster_bin" down "$name" >/dev/null 2>&1 || true
"$cluster_bin" up "$name" --audit >"$out/cluster.env"
trap '"$cluster_bin" down "$name" >/dev/null 2>&1 || true' EXIT
KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' "$out/cluster.env")"
PROMETHEUS_URL="$(sed -n 's/^PROMETHEUS_URL=//p' "$out/cluster.env")"
[[ "$PROMETHEUS_URL" == http* ]] || PROMETHEUS_URL="http://$PROMETHEUS_URL"
audit="$(dirname "$KUBECONFIG")/audit.log"
k=("$kubectl_bin" --kubeconfig "$KUBECONFIG")

if [[ "$op" == flagger ]]; then
  "${k[@]}" apply --server-side -f "$(go env GOMODCACHE)/github.com/fluxcd/flagger@v1.44.0/artifacts/flagger/crd.yaml" >/dev/null
else
  "${k[@]}" apply --server-side -f deploy/crds/ >/dev/null
fi
"${k[@]}" wait --for=condition=Established crd/canaries.flagger.app --timeout=60s >/dev/null

# The guide's Canary: 10 s interval, three weight steps, no webhooks (nothing to call here).
yq -y '.spec.autoscalerRef.apiVersion = "autoscaling/v2"
  | del(.spec.analysis.webhooks)
  | .spec.analysis |= (.interval = "10s" | .threshold = 2 | .maxWeight = 30 | .stepWeight = 10
      | .metrics[].interval = "30s")' examples/podinfo/canary.yaml >"$out/canary.yaml"
all="$out/objects.yaml"
: >"$all"
for i in $(seq 1 "$n"); do
  ns="b$i"
  printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels:\n    appmesh.k8s.aws/sidecarInjectorWebhook: enabled\n' "$ns" >>"$all"
  for f in tests/cluster/manifests/podinfo-deployment.yaml tests/cluster/manifests/podinfo-hpa.yaml "$out/canary.yaml"; do
    printf -- '---\n' >>"$all"
    yq -y --arg ns "$ns" '.metadata.namespace = $ns' "$f" >>"$all"
  done
done
"${k[@]}" apply -f "$all" >/dev/null

started=$SECONDS
if [[ "$op" == flagger ]]; then
  "$flagger" -kubeconfig "$KUBECONFIG" -metrics-server "$PROMETHEUS_URL" \
    -mesh-provider appmesh:v1beta2 -log-level info >"$out/operator.log" 2>&1 &
else
  "$fledge_bin" operator --kubeconfig "$KUBECONFIG" --metrics-server "$PROMETHEUS_URL" \
    --leader-election=false --listen-address 127.0.0.1:0 >"$out/operator.log" 2>&1 &
fi
pid=$!
trap 'kill $pid 2>/dev/null || true; "$cluster_bin" down "$name" >/dev/null 2>&1 || true' EXIT

phases() { "${k[@]}" get canaries -A -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' 2>/dev/null; }
wait_all() {
  local want="$1" deadline=$((SECONDS + $2)) count
  while ((SECONDS < deadline)); do
    count="$(phases | grep -cx "$want" || true)"
    ((count == n)) && return 0
    sleep 2
  done
  echo "only $count of $n Canaries $want after $2 s" >&2
  phases | sort | uniq -c >&2
  return 1
}
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$pid/stat"; }
requests() {
  jq -Rr 'fromjson? | .userAgent' "$audit" 2>/dev/null |
    grep -c -i -E "^(kube-rs|fledge|flagger)" || true
}

wait_all Initialized 600
bootstrap_s=$((SECONDS - started))
cpu0="$(cpu)"
req0="$(requests)"
t0=$SECONDS
for i in $(seq 1 "$n"); do
  "${k[@]}" -n "b$i" set image deployment/podinfo podinfod=ghcr.io/stefanprodan/podinfo:6.0.1 >/dev/null
done
wait_all Succeeded 900
promote_s=$((SECONDS - t0))
sleep 2
cpu1="$(cpu)"
req1="$(requests)"
hwm="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
# Analysis steps taken: per Canary the revision step, three weight steps and the promotion
# steps Fledge and Flagger both take (copy, route back, finalise).
advances="$("${k[@]}" get events -A --field-selector involvedObject.kind=Canary -o json |
  jq '[.items[] | select(.message | test("Advance .* canary weight")) | (.series.count // .count // 1)] | add // 0')"
steps=$((n * 6))
{
  build=""
  [[ "$op" == flagger ]] || build=", $profile build $fledge_bin"
  echo "# $op, $n Canaries ($(git rev-parse --short HEAD)$build)"
  echo "bootstrap of all: ${bootstrap_s} s; set image to all Succeeded: ${promote_s} s"
  echo "peak RSS: $((hwm / 1024)) MiB"
  echo "CPU during the promotion: $(echo "$cpu1 - $cpu0" | bc) s over ~$steps steps ($advances weight advances seen):" \
    "$(echo "scale=4; ($cpu1 - $cpu0) / $steps" | bc) s per step"
  echo "API requests during the promotion: $((req1 - req0)), $(echo "scale=1; ($req1 - $req0) / $steps" | bc) per step"
  echo "the operator's API requests over the whole run, by verb and resource:"
  jq -Rr 'fromjson? | select(.userAgent // "" | test("^(fledge|flagger)"; "i"))
    | "\(.verb) \(.objectRef.resource // "-")\(if .objectRef.subresource then "/" + .objectRef.subresource else "" end)"' \
    "$audit" | sort | uniq -c | sort -rn | head -15
  echo "API requests by user agent over the whole run:"
  jq -Rr 'fromjson? | .userAgent' "$audit" | sed 's#/.*##' | sort | uniq -c | sort -rn | head -8
} | tee "$out/report.txt"
