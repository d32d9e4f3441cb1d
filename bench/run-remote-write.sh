#!/usr/bin/env bash
# Prometheus remote-write ingest, side by side: Pharos, Prometheus (Debian, with
# --web.enable-remote-write-receiver) and VictoriaMetrics (Debian), one after the
# other on the same load from pharos-loadgen (--protocol remote-write): SERIES active
# series, each written once per cycle, BATCH samples per request.
#
# For each server it reports: samples/s acknowledged; the time until the server has
# stored every acknowledged sample (Pharos acknowledges once the write-ahead log is
# durable and stores afterwards; the peers store before answering); resident memory
# after the run and per active series; bytes on disk per sample.
#
# Every server listens on 127.0.0.1, every run is bounded in time, and every process
# this script starts is stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
SERIES="${SERIES:-1000000}"
DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-2}"
BATCH="${BATCH:-2000}"
WORKERS="${WORKERS:-8}"
SERVERS="${SERVERS:-pharos prometheus victoria-metrics}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/pharos/target}"
WORK="${BENCH_WORK:-$(mktemp -d /tmp/pharos-rw-bench.XXXXXX)}"
mkdir -p "$WORK"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$REPO" && cargo build --release -p pharos --locked)
  (cd "$REPO" && cargo build --release -p pharos-loadgen --locked)
fi
command -v prometheus >/dev/null || { echo "install prometheus (apt-get install prometheus)" >&2; exit 1; }
command -v victoria-metrics >/dev/null || { echo "install victoria-metrics (apt-get install victoria-metrics)" >&2; exit 1; }
PHAROS="$CARGO_TARGET_DIR/release/pharos"
LOADGEN="$CARGO_TARGET_DIR/release/pharos-loadgen"

PID=""
cleanup() { [[ -n "$PID" ]] && kill -9 "$PID" 2>/dev/null || true; }
trap cleanup EXIT

wait_port() { # port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

# stored samples according to the server's own metrics
stored() { # server
  case "$1" in
    pharos) curl -s 127.0.0.1:13900/metrics | awk '/^pharos_metrics_samples_appended_total/ {s+=$2} END {printf "%d", s}' ;;
    prometheus) curl -s 127.0.0.1:19900/metrics | awk '/^prometheus_tsdb_head_samples_appended_total\{type="float"\}/ {printf "%d", $2}' ;;
    victoria-metrics) curl -s 127.0.0.1:18900/metrics | awk '/^vm_rows_added_to_storage_total/ {printf "%d", $2}' ;;
  esac
}

echo "| server | samples/s acknowledged | p99 ms | stored all after | RSS after | RSS per series | disk per sample | loadgen CPU s |"
echo "|---|---|---|---|---|---|---|---|"
for server in $SERVERS; do
  data="$WORK/$server"
  rm -rf "$data" && mkdir -p "$data"
  case "$server" in
    pharos)
      "$PHAROS" serve --data-dir "$data" --set api.listen=127.0.0.1:13900 --set otlp.http.listen=127.0.0.1:14900 \
        --set otlp.grpc.listen=127.0.0.1:14901 --set metrics.max_series_per_tenant=$((SERIES * 2)) >"$WORK/$server.log" 2>&1 &
      PID=$!; port=14900 ;;
    prometheus)
      printf 'global:\n  scrape_interval: 1h\n' >"$data/prometheus.yml"
      prometheus --config.file="$data/prometheus.yml" --storage.tsdb.path="$data/tsdb" \
        --web.listen-address=127.0.0.1:19900 --web.enable-remote-write-receiver >"$WORK/$server.log" 2>&1 &
      PID=$!; port=19900 ;;
    victoria-metrics)
      victoria-metrics -storageDataPath="$data/vm" -httpListenAddr=127.0.0.1:18900 -retentionPeriod=1y \
        >"$WORK/$server.log" 2>&1 &
      PID=$!; port=18900 ;;
  esac
  wait_port "$port"
  before="$(stored "$server")"; before="${before:-0}"
  out="$("$LOADGEN" --protocol remote-write --signal metrics --series "$SERIES" --batch "$BATCH" \
    --workers "$WORKERS" --threads 2 --endpoint "127.0.0.1:$port" --duration "$DURATION" --warmup "$WARMUP" \
    --label "$server" 2>"$WORK/$server.loadgen.log")"
  json="$(printf '%s\n' "$out" | grep '^{' | tail -1)"
  printf '%s\n' "$json" >>"$WORK/results.jsonl"
  rate="$(printf '%s' "$json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["items_per_sec"]))')"
  p99="$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["latency"]["p99_ms"])')"
  lgcpu="$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loadgen_cpu_s"])')"
  if [[ "$server" == pharos ]]; then
    # Pharos answers once the samples are durable in its log; its processors store them after.
    acked="$(curl -s 127.0.0.1:13900/metrics | awk '/^pharos_ingest_items_accepted_total\{signal="metrics"/ {s+=$2} END {printf "%d", s}')"
    t0=$(date +%s.%N); caught="not within 60 s"
    for _ in $(seq 1 600); do
      if [[ "$(stored pharos)" -ge "$acked" ]]; then
        caught="$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f} s later')")"; break
      fi
      sleep 0.1
    done
  else
    caught="when answered"
  fi
  rss_kib="$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")"
  total="$(( $(stored "$server") - before ))"
  sync
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  disk="$(du -sb "$data" | cut -f1)"
  python3 - "$server" "$rate" "$p99" "$caught" "$rss_kib" "$SERIES" "$disk" "$total" "$lgcpu" <<'EOF'
import sys
server, rate, p99, caught, rss_kib, series, disk, total, lgcpu = sys.argv[1:]
rss = int(rss_kib) / 1024
per_series = int(rss_kib) * 1024 / int(series)
per_sample = int(disk) / max(int(total), 1)
print(f"| {server} | {int(rate):,} | {p99} | {caught} | {rss:.0f} MiB | {per_series:,.0f} B | {per_sample:.2f} B | {lgcpu} |")
EOF
done
echo
echo "SERIES=$SERIES BATCH=$BATCH WORKERS=$WORKERS DURATION=${DURATION}s (+${WARMUP}s warm-up); results in $WORK"
