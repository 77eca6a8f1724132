#!/usr/bin/env bash
# Runs the same Canary under Flagger v1.44.0 and under `fledge operator`, each on its own local
# test cluster (tests/cluster) with mesh-sim traffic, and diffs what they did: the specs of the
# generated objects after bootstrap, the Event sequences of a promotion and of a rollback, the
# `msg` of their JSON logs, the webhook payloads they sent, and peak RSS / CPU seconds.
#
#   scripts/flagger-diff.sh [--provider appmesh:v1beta2|gatewayapi:v1] [OUT_DIR]
#
# OUT_DIR defaults to target/flagger-diff (target/flagger-diff-gatewayapi for gatewayapi:v1). With
# gatewayapi:v1 the Canary is examples/podinfo/canary-gatewayapi.yaml, attached to the test cluster's
# Gateway (gateway-system/gateway, played by mesh-sim), and the HTTPRoute each operator writes is diffed.
#
# Not part of .ci/run: the first run builds Flagger from the Go module proxy (about 15 minutes;
# cached in ~/.cache/fledge/flagger-v1.44.0 like the control-plane binaries).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
provider=appmesh:v1beta2
if [[ "${1:-}" == --provider ]]; then
  provider="${2:?--provider needs a value}"
  shift 2
fi
case "$provider" in
  appmesh:v1beta2)
    canary_file=examples/podinfo/canary.yaml
    default_out="$root/target/flagger-diff"
    router_objects="virtualnode/podinfo-primary virtualnode/podinfo-canary virtualrouter/podinfo
      virtualrouter/podinfo-canary virtualservice/podinfo virtualservice/podinfo-canary" ;;
  gatewayapi:v1)
    canary_file=examples/podinfo/canary-gatewayapi.yaml
    default_out="$root/target/flagger-diff-gatewayapi"
    router_objects="httproute/podinfo" ;;
  *) echo "--provider: \`$provider\` is not one of appmesh:v1beta2, gatewayapi:v1" >&2; exit 2 ;;
esac
out="${1:-$default_out}"
flagger_version=v1.44.0
cache="${FLEDGE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fledge}"
flagger_dir="$cache/flagger-$flagger_version"
flagger="$flagger_dir/flagger"

if [[ ! -x "$flagger" ]]; then
  echo "building flagger $flagger_version into $flagger_dir (about 15 minutes the first time)" >&2
  mkdir -p "$flagger_dir"
  GOBIN="$flagger_dir" go install "github.com/fluxcd/flagger/cmd/flagger@$flagger_version"
fi
flagger_crds="$(go env GOMODCACHE)/github.com/fluxcd/flagger@$flagger_version/artifacts/flagger/crd.yaml"
if [[ ! -f "$flagger_crds" ]]; then
  go mod download "github.com/fluxcd/flagger@$flagger_version"
fi

tests/cluster/build.sh
# The workspace's feature set, as `cargo test --workspace` builds it: no second build of the deps.
cargo build --quiet --workspace --bins
target_dir="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
fledge="$target_dir/debug/fledge"
cluster_bin="$target_dir/debug/fledge-cluster"
kubectl_bin="$(ls -d "$cache"/k8s-*/bin | tail -n 1)/kubectl"

rm -rf "$out"
mkdir -p "$out"

# One run: $1 = flagger | fledge. Writes $out/$1/.
run() {
  local op="$1" dir="$out/$1" name="diff-$1"
  mkdir -p "$dir"
  "$cluster_bin" down "$name" >/dev/null 2>&1 || true
  "$cluster_bin" up "$name" >"$dir/cluster.env"
  local KUBECONFIG PROMETHEUS_URL MESH_SIM_URL
  KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' "$dir/cluster.env")"
  PROMETHEUS_URL="$(sed -n 's/^PROMETHEUS_URL=//p' "$dir/cluster.env")"
  MESH_SIM_URL="$(sed -n 's/^MESH_SIM_URL=//p' "$dir/cluster.env")"
  [[ "$PROMETHEUS_URL" == http* ]] || PROMETHEUS_URL="http://$PROMETHEUS_URL"
  [[ "$MESH_SIM_URL" == http* ]] || MESH_SIM_URL="http://$MESH_SIM_URL"
  local k=("$kubectl_bin" --kubeconfig "$KUBECONFIG")

  # A webhook receiver that answers 200 and records each payload.
  local hook_port
  hook_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  python3 - "$hook_port" "$dir/webhooks.jsonl" >"$dir/receiver.log" 2>&1 <<'EOF' &
import http.server, json, sys
port, path = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(path, "a") as f:
            f.write(json.dumps({"path": self.path, "body": json.loads(body or b"null")}) + "\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
  local receiver=$!

  if [[ "$op" == flagger ]]; then
    "${k[@]}" apply --server-side -f "$flagger_crds" >/dev/null
  else
    "${k[@]}" apply --server-side -k deploy/crds >/dev/null
  fi
  "${k[@]}" wait --for=condition=Established crd/canaries.flagger.app --timeout=60s >/dev/null
  for f in namespace podinfo-deployment podinfo-hpa; do
    "${k[@]}" apply -f "tests/cluster/manifests/$f.yaml" >/dev/null
  done

  if [[ "$op" == flagger ]]; then
    "$flagger" -kubeconfig "$KUBECONFIG" -metrics-server "$PROMETHEUS_URL" \
      -mesh-provider "$provider" -namespace test -log-level info \
      >"$dir/operator.log" 2>&1 &
  else
    "$fledge" operator --kubeconfig "$KUBECONFIG" --metrics-server "$PROMETHEUS_URL" \
      --mesh-provider "$provider" --namespace test --leader-election=false --listen-address 127.0.0.1:0 \
      >"$dir/operator.log" 2>&1 &
  fi
  local pid=$!

  # The guide's Canary at the 10 s minimum interval, three weight steps, webhooks to the receiver.
  yq -y --arg url "http://127.0.0.1:$hook_port/" '
    .spec.autoscalerRef.apiVersion = "autoscaling/v2"
    | .spec.analysis |= (.interval = "10s" | .threshold = 2 | .maxWeight = 30 | .stepWeight = 10
        | .metrics[].interval = "30s" | .webhooks[].url = $url)' \
    "$canary_file" >"$dir/canary.yaml"
  "${k[@]}" apply -f "$dir/canary.yaml" >/dev/null

  wait_phase() {
    local want="$1" deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
      [[ "$("${k[@]}" -n test get canary podinfo -o jsonpath='{.status.phase}' 2>/dev/null)" == "$want" ]] && return 0
      sleep 1
    done
    echo "$op: canary not $want after $2 s" >&2
    return 1
  }
  local ok=1
  wait_phase Initialized 120 || ok=0

  # Generated objects, without what the API server fills in.
  local clean='del(.metadata.uid, .metadata.resourceVersion, .metadata.creationTimestamp,
    .metadata.managedFields, .metadata.generation, .metadata.ownerReferences[]?.uid,
    .metadata.annotations["deployment.kubernetes.io/revision"], .status,
    .spec.clusterIP, .spec.clusterIPs)
    | if .spec.template.metadata.annotations["flagger-id"] then .spec.template.metadata.annotations["flagger-id"] = "<id>" else . end
    | {kind, metadata: {name: .metadata.name, labels: .metadata.labels,
    annotations: .metadata.annotations, ownerReferences: .metadata.ownerReferences}, spec}'
  for obj in deployment/podinfo-primary hpa/podinfo-primary service/podinfo service/podinfo-canary \
    service/podinfo-primary $router_objects; do
    "${k[@]}" -n test get "$obj" -o json 2>/dev/null | jq -S "$clean" >"$dir/${obj/\//-}.json" ||
      echo "missing" >"$dir/${obj/\//-}.json"
  done
  "${k[@]}" -n test get deployment podinfo -o jsonpath='{.spec.replicas}' >"$dir/target-replicas.txt"

  if ((ok)); then
    "${k[@]}" -n test set image deployment/podinfo podinfod=ghcr.io/stefanprodan/podinfo:6.0.1 >/dev/null
    wait_phase Progressing 60 || ok=0
    ((ok)) && wait_phase Succeeded 240 || ok=0
  fi
  if ((ok)); then
    curl -fsS -X PUT "$MESH_SIM_URL/backends/test/podinfo-canary" \
      -d '{"error_ratio": 0.5, "error_code": 500}' >/dev/null
    "${k[@]}" -n test set image deployment/podinfo podinfod=ghcr.io/stefanprodan/podinfo:6.0.2 >/dev/null
    wait_phase Progressing 60 || ok=0
    ((ok)) && wait_phase Failed 240 || ok=0
  fi
  sleep 2

  # Peak RSS and CPU seconds of the operator process over the whole run.
  local hwm cpu
  hwm="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
  cpu="$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$pid/stat")"
  echo "$op: peak RSS $((hwm / 1024)) MiB, CPU $cpu s" >"$dir/resources.txt"

  # Events about the Canary, oldest first, with how often each was repeated.
  "${k[@]}" -n test get events --field-selector involvedObject.kind=Canary -o json |
    jq -r '.items | sort_by(.firstTimestamp // .eventTime) | .[] |
      (.series.count // .count // 1) as $n | "\(.type) \(.message)" + (if $n > 1 then " (x\($n))" else "" end)' \
      >"$dir/events.txt"
  # The `msg` of each JSON log line about the Canary, repeats collapsed.
  jq -Rr 'fromjson? | select(.canary != null) | .msg' "$dir/operator.log" | uniq >"$dir/log-msgs.txt"
  # Webhook payloads without the per-run checksum.
  jq -Sc '.body | del(.checksum)' "$dir/webhooks.jsonl" 2>/dev/null | sort | uniq -c >"$dir/webhooks.txt" || true

  kill "$pid" "$receiver" 2>/dev/null || true
  wait "$pid" "$receiver" 2>/dev/null || true
  "$cluster_bin" down "$name" >/dev/null 2>&1 || true
  ((ok)) || echo "$op: the run did not finish; see $dir/operator.log" >&2
  return 0
}

run flagger &
run fledge &
wait

report="$out/report.txt"
{
  echo "# Flagger $flagger_version against fledge operator ($(git rev-parse --short HEAD)), $provider"
  cat "$out/flagger/resources.txt" "$out/fledge/resources.txt"
  echo
  echo "## generated objects after bootstrap (flagger <, fledge >)"
  for f in "$out"/flagger/*.json; do
    b="$(basename "$f")"
    if ! diff -u "$f" "$out/fledge/$b" >/dev/null; then
      echo "### $b"
      diff -u "$f" "$out/fledge/$b" | tail -n +3 || true
    fi
  done
  echo "target replicas: flagger $(cat "$out/flagger/target-replicas.txt"), fledge $(cat "$out/fledge/target-replicas.txt")"
  echo
  echo "## Events (flagger <, fledge >)"
  diff "$out/flagger/events.txt" "$out/fledge/events.txt" && echo "identical"
  echo
  echo "## log msg (flagger <, fledge >)"
  diff "$out/flagger/log-msgs.txt" "$out/fledge/log-msgs.txt" && echo "identical"
  echo
  echo "## webhook payloads (count, payload; flagger <, fledge >)"
  diff "$out/flagger/webhooks.txt" "$out/fledge/webhooks.txt" && echo "identical"
} >"$report" 2>&1 || true
cat "$report"
