#!/usr/bin/env bash
# Runs the Prometheus project's PromQL compliance tester (prometheus/compliance, promql/) with
# Debian's Prometheus as the reference and Pharos as the target, both holding the same samples:
# Prometheus scrapes three demo-like instances (demo_exporter.py) every 5 s and remote-writes
# every sample to Pharos. Prints the tester's score and leaves its text and JSON reports in
# $OUT_DIR.
#
# The tester is a Go module that the Go module proxy reachable from this machine does not serve,
# so it is built from a checkout:
#
#   COMPLIANCE_SRC=/path/to/compliance tests/compliance/promql-compliance.sh
#
# COMPLIANCE_SRC is the repository's top directory (the one holding promql/) or promql/ itself.
# Everything listens on 127.0.0.1 and everything started is stopped on exit. The run takes
# COLLECT_SECONDS (default 21 min) of data collection plus the builds and about a minute of
# queries. See tests/compliance/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

: "${COMPLIANCE_SRC:?set COMPLIANCE_SRC to a checkout of prometheus/compliance (the Go module proxy does not serve it here)}"
COLLECT_SECONDS=${COLLECT_SECONDS:-1260}      # how long Prometheus scrapes before the queries
END_LAG_SECONDS=${END_LAG_SECONDS:-630}       # query end = now - this (>= the list's largest negative offset, 10m)
QUERY_RANGE_SECONDS=${QUERY_RANGE_SECONDS:-600}
QUERY_STEP_SECONDS=${QUERY_STEP_SECONDS:-10}
PARALLELISM=${PARALLELISM:-4}
PROM_PORT=${PROM_PORT:-19090}
PHAROS_PORT=${PHAROS_PORT:-19300}
EXPORTER_PORTS=${EXPORTER_PORTS:-10000,10001,10002}
DEMO_UPTIME_SECONDS=${DEMO_UPTIME_SECONDS:-86400} # the exporter's counters start as after this uptime
PROMETHEUS_BIN=${PROMETHEUS_BIN:-$(command -v prometheus || true)}
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/pharos-promql-compliance.XXXXXX)}
mkdir -p "$OUT_DIR"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ -d "$COMPLIANCE_SRC/promql/cmd/promql-compliance-tester" ]; then
  module="$COMPLIANCE_SRC/promql"
elif [ -d "$COMPLIANCE_SRC/cmd/promql-compliance-tester" ]; then
  module="$COMPLIANCE_SRC"
else
  die "$COMPLIANCE_SRC holds neither promql/cmd/promql-compliance-tester nor cmd/promql-compliance-tester"
fi
queries="$module/promql-test-queries.yml"
[ -f "$queries" ] || die "no query list at $queries"
command -v go >/dev/null || die "go is not installed"
command -v python3 >/dev/null || die "python3 is not installed"
command -v curl >/dev/null || die "curl is not installed"
[ -n "$PROMETHEUS_BIN" ] || die "prometheus is not installed (apt-get install prometheus)"
minimum=$((END_LAG_SECONDS + QUERY_RANGE_SECONDS + 30))
[ "$COLLECT_SECONDS" -ge "$minimum" ] \
  || die "COLLECT_SECONDS=$COLLECT_SECONDS does not cover END_LAG_SECONDS + QUERY_RANGE_SECONDS + 30 s = $minimum"

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building the compliance tester from $module"
(cd "$module" && go build -o "$OUT_DIR/promql-compliance-tester" ./cmd/promql-compliance-tester) \
  || die "building the tester failed (its dependencies come from the Go module proxy)"
"$PROMETHEUS_BIN" --version 2>&1 | head -1 | tee "$OUT_DIR/prometheus-version.txt" >&2

if [ -z "${PHAROS_BIN:-}" ]; then
  log "building pharos"
  (cd "$repo" && cargo build -q -p pharos)
  PHAROS_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/pharos"
fi
[ -x "$PHAROS_BIN" ] || die "no pharos binary at $PHAROS_BIN"

wait_http() { # url, what, seconds
  local i
  for ((i = 0; i < $3 * 2; i++)); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  die "$2 did not answer on $1"
}

log "starting the demo exporter on 127.0.0.1:$EXPORTER_PORTS"
python3 "$here/demo_exporter.py" --listen 127.0.0.1 --ports "$EXPORTER_PORTS" --uptime "$DEMO_UPTIME_SECONDS" >"$OUT_DIR/exporter.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:${EXPORTER_PORTS%%,*}/metrics" "the demo exporter" 10

log "starting pharos (API on 127.0.0.1:$PHAROS_PORT)"
PHAROS_LOG_LEVEL=${PHAROS_LOG_LEVEL:-warn} "$PHAROS_BIN" serve --data-dir "$OUT_DIR/pharos-data" \
  --set "api.listen=127.0.0.1:$PHAROS_PORT" \
  --set otlp.http.listen=127.0.0.1:0 --set otlp.grpc.listen=127.0.0.1:0 \
  >"$OUT_DIR/pharos.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$PHAROS_PORT/api/v1/status/buildinfo" "pharos" 60

# The query list names the instances demo.promlabs.com:<port>; relabelling gives our local
# instances those names, so the list runs unchanged.
targets=$(printf "'127.0.0.1:%s'," ${EXPORTER_PORTS//,/ })
cat >"$OUT_DIR/prometheus.yml" <<EOF
global:
  scrape_interval: 5s
  evaluation_interval: 5s
scrape_configs:
  - job_name: demo
    static_configs:
      - targets: [${targets%,}]
    relabel_configs:
      - source_labels: [__address__]
        regex: '[^:]+:([0-9]+)'
        target_label: instance
        replacement: 'demo.promlabs.com:\$1'
remote_write:
  - url: http://127.0.0.1:$PHAROS_PORT/api/v1/write
    queue_config:
      batch_send_deadline: 1s
EOF
log "starting prometheus on 127.0.0.1:$PROM_PORT"
"$PROMETHEUS_BIN" --config.file="$OUT_DIR/prometheus.yml" --storage.tsdb.path="$OUT_DIR/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$OUT_DIR/prometheus.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" "prometheus" 60
first_scrape=$(date +%s)

log "collecting for ${COLLECT_SECONDS}s"
deadline=$((first_scrape + COLLECT_SECONDS))
while [ "$(date +%s)" -lt "$deadline" ]; do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a process died (pid $pid); logs in $OUT_DIR"
  done
  left=$((deadline - $(date +%s)))
  if [ $((left % 60)) -lt 5 ]; then log "${left}s of collection left"; fi
  sleep 5
done

# Wait until Pharos has what Prometheus has up to a moment ago (remote write lags by a batch).
# The probe has no arithmetic, whose rounding differs between Prometheus 2.42 and 3 (Kahan sums).
probe_answer() { # base url, time
  curl -fsS "$1/api/v1/query" --data-urlencode "query=timestamp(demo_num_cpus)" -d "time=$2" \
    | python3 -c 'import json,sys; print(sorted((sorted(r["metric"].items()), r["value"]) for r in json.load(sys.stdin)["data"]["result"]))'
}
at=$(($(date +%s) - 10))
for ((i = 0; ; i++)); do
  want=$(probe_answer "http://127.0.0.1:$PROM_PORT" "$at")
  got=$(probe_answer "http://127.0.0.1:$PHAROS_PORT" "$at" || true)
  [ "$want" = "$got" ] && break
  [ "$i" -lt 60 ] || die "pharos did not catch up with prometheus: $want vs $got"
  sleep 1
done

# Half a second off the whole seconds, like the tester's own default end (now - 12m, to the
# nanosecond): with a query step dividing the subquery step grid, a whole end would put
# subquery windows' left ends on evaluation points, where Prometheus 2.42 (closed windows)
# and 3 (left-open windows) differ by design.
end=$(($(date +%s) - END_LAG_SECONDS))
cat >"$OUT_DIR/targets.yml" <<EOF
reference_target_config:
  query_url: http://127.0.0.1:$PROM_PORT
test_target_config:
  query_url: http://127.0.0.1:$PHAROS_PORT
query_time_parameters:
  end_time: '$end.5'
  range_in_seconds: $QUERY_RANGE_SECONDS
  resolution_in_seconds: $QUERY_STEP_SECONDS
EOF
log "queries from $(date -u -d "@$((end - QUERY_RANGE_SECONDS))" +%H:%M:%S) to $(date -u -d "@$end" +%H:%M:%S) every ${QUERY_STEP_SECONDS}s (data since $(date -u -d "@$first_scrape" +%H:%M:%S))"

cd "$module"
tester=(timeout 900 "$OUT_DIR/promql-compliance-tester" -config-file "$queries" -config-file "$OUT_DIR/targets.yml" -query-parallelism "$PARALLELISM")
status=0
"${tester[@]}" -output-format text >"$OUT_DIR/result.txt" 2>"$OUT_DIR/tester.log" || status=$?
"${tester[@]}" -output-format json >"$OUT_DIR/result.json" 2>>"$OUT_DIR/tester.log" || true
score=$(grep '^Total:' "$OUT_DIR/result.txt" || true)
[ -n "$score" ] || { cat "$OUT_DIR/tester.log" >&2; die "the tester printed no score (exit status $status)"; }
grep '^QUERY:' "$OUT_DIR/result.txt" | sed 's/^QUERY: /failed: /' || true
echo "$score"
log "reports: $OUT_DIR/result.txt (failures with diffs), $OUT_DIR/result.json"
