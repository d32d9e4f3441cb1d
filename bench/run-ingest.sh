#!/usr/bin/env bash
# Pharos ingestion benchmark: OTLP/gRPC and OTLP/HTTP, traces and logs, into the
# WAL with fsync group commit; optional peer comparison with the OpenTelemetry
# Collector and an optional memory soak. See bench/README.md.
#
# Every server listens on 127.0.0.1 only, every load run is bounded in time
# (the load generator also has a hard deadline of its own), and every process
# this script starts is stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

# ---- knobs (environment) ---------------------------------------------------
DURATION="${DURATION:-20}"            # measured seconds per run
WARMUP="${WARMUP:-3}"                 # unmeasured seconds before each run
PROTOCOLS="${PROTOCOLS:-grpc http}"
SIGNALS="${SIGNALS:-traces logs}"
BATCH="${BATCH:-500}"                 # items per request
WORKERS="${WORKERS:-16}"              # concurrent requests in flight
CONNECTIONS="${CONNECTIONS:-4}"       # gRPC HTTP/2 connections (HTTP: one per worker)
LG_THREADS="${LG_THREADS:-2}"         # load generator tokio threads
TARGET_RATE="${TARGET_RATE:-250000}"  # the goal, items/s
HALF_RATE="${HALF_RATE:-$((TARGET_RATE / 2))}"  # rate of the p99 run
MAX_RUNS="${MAX_RUNS:-1}"             # 0: skip the max-rate runs
HALF_RUNS="${HALF_RUNS:-1}"           # 0: skip the half-rate runs
COLLECTOR="${COLLECTOR:-1}"           # 1: build and run the collector variants
# nop | file_storage (fsync: true) | file_storage_nofsync (file_storage's default fsync: false)
COLLECTOR_VARIANTS="${COLLECTOR_VARIANTS:-nop file_storage}"
PHAROS_RUNS="${PHAROS_RUNS:-1}"       # 0: skip Pharos in the matrix (e.g. peers only)
SOAK="${SOAK:-0}"                     # seconds of soak (e.g. 300); 0 = no soak
SOAK_RATE="${SOAK_RATE:-0}"          # items/s per soak stream; 0 = as fast as possible
SOAK_STREAMS="${SOAK_STREAMS:-grpc:traces http:logs}"  # concurrent protocol:signal streams
SOAK_SAMPLE="${SOAK_SAMPLE:-5}"       # RSS sample period, seconds
PHAROS_SET="${PHAROS_SET:-}"          # extra "--set k=v" args for pharos serve
PERF="${PERF:-0}"                     # 1: perf record pharos during the max-rate runs
# Other work on the machine depresses the numbers. Before each run wait (up to
# QUIET_WAIT s) until the machine is idle (< 20% of one core busy), and redo a
# run (up to RETRIES times) when other processes used more than MAX_OTHER_CPU %
# of one core during it. The last attempt is kept either way.
QUIET_WAIT="${QUIET_WAIT:-120}"
MAX_OTHER_CPU="${MAX_OTHER_CPU:-30}"
RETRIES="${RETRIES:-2}"
# SKIP_BUILD=1: do not run cargo build (use the binaries already built)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/pharos/target}"
PHAROS="$CARGO_TARGET_DIR/release/pharos"
LOADGEN="$CARGO_TARGET_DIR/release/pharos-loadgen"
WORK="${BENCH_WORK:-$(mktemp -d /tmp/pharos-bench.XXXXXX)}"
OUT="${BENCH_OUT:-$WORK/results}"
mkdir -p "$WORK" "$OUT/logs"
RUN_ID=0
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

# ---- process hygiene ---------------------------------------------------------
PIDS=()
stop_pid() { # pid [grace-seconds]
  local pid="$1" grace="${2:-15}"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "  (pid $pid did not stop in ${grace}s: SIGKILL)" >&2
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid" 5; done
  [[ "${KEEP_WORK:-0}" == 1 ]] || rm -rf "$WORK/data" "$WORK/otelcol-data" "$WORK/bin"
  rmdir "$WORK" 2>/dev/null || true # only if empty (results may live in it)
}
trap cleanup EXIT
trap 'log "stopped by a signal: partial results in $OUT"; exit 130' INT TERM HUP

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { # utime+stime of pid in clock ticks
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
sys_busy_ticks() { # all CPUs: user+nice+system+irq+softirq, in clock ticks
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat
}
wait_quiet() { # wait until the machine is idle, at most QUIET_WAIT seconds
  local waited=0 a b
  while ((waited < QUIET_WAIT)); do
    a="$(sys_busy_ticks)"; sleep 2; b="$(sys_busy_ticks)"
    # ticks over 2 s; 20% of one core = 40 ticks
    ((b - a < 40)) && return 0
    waited=$((waited + 2))
    ((waited % 20 == 0)) && log "  machine busy ($(( (b - a) / 2 ))% of a core), waiting"
  done
  log "  machine still busy after ${QUIET_WAIT}s, running anyway"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---- builds ------------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
  log "SKIP_BUILD=1: using the binaries already in $CARGO_TARGET_DIR/release"
else
  log "building pharos (release) and the load generator"
  (cd "$REPO" && cargo build --release -q -p pharos)
  (cd "$REPO" && cargo build --release -q -p pharos-loadgen)
fi
[[ -x "$PHAROS" && -x "$LOADGEN" ]] || { echo "missing $PHAROS or $LOADGEN" >&2; exit 1; }
# The target directory may be shared with other builds: run private copies so
# the binaries cannot change in the middle of the benchmark.
mkdir -p "$WORK/bin"
PHAROS_BUILT="$(date -u -r "$PHAROS" +%Y-%m-%dT%H:%M:%SZ)"
cp "$PHAROS" "$WORK/bin/pharos"
cp "$LOADGEN" "$WORK/bin/pharos-loadgen"
PHAROS="$WORK/bin/pharos"
LOADGEN="$WORK/bin/pharos-loadgen"
OTELCOL=""
if [[ "$COLLECTOR" == 1 ]]; then
  log "building the OpenTelemetry Collector (skipped if cached)"
  OTELCOL="$("$HERE/collector/build-collector.sh" | tail -n1)"
fi

# ---- servers -----------------------------------------------------------------
SERVER_PID=""
GRPC_ADDR=""
HTTP_ADDR=""
API_ADDR=""
SERVER_KIND=""

start_pharos() {
  rm -rf "$WORK/data"
  mkdir -p "$WORK/data"
  RUN_ID=$((RUN_ID + 1))
  local logf="$OUT/logs/pharos-$RUN_ID.log"
  # shellcheck disable=SC2086
  "$PHAROS" serve --data-dir "$WORK/data" \
    --set api.listen=127.0.0.1:0 --set otlp.http.listen=127.0.0.1:0 --set otlp.grpc.listen=127.0.0.1:0 \
    $PHAROS_SET 2>"$logf" >/dev/null &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  SERVER_KIND=pharos
  local line=""
  for ((i = 0; i < 300; i++)); do
    line="$(grep -m1 'pharos is ready' "$logf" || true)"
    [[ -n "$line" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$logf" >&2; echo "pharos exited" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n "$line" ]] || { cat "$logf" >&2; echo "pharos not ready in 30s" >&2; exit 1; }
  GRPC_ADDR="$(sed -E 's/.*otlp_grpc=([0-9.:]+).*/\1/' <<<"$line")"
  HTTP_ADDR="$(sed -E 's/.*otlp_http=([0-9.:]+).*/\1/' <<<"$line")"
  API_ADDR="$(sed -E 's/.*api=([0-9.:]+).*/\1/' <<<"$line")"
}

start_otelcol() { # variant
  local variant="$1" cfg fsync=true
  case "$variant" in
    nop) cfg="$HERE/collector/nop.yaml" ;;
    file_storage) cfg="$HERE/collector/file_storage.yaml" ;;
    file_storage_nofsync) cfg="$HERE/collector/file_storage.yaml"; fsync=false ;;
    *) echo "unknown collector variant $variant" >&2; exit 2 ;;
  esac
  rm -rf "$WORK/otelcol-data"
  mkdir -p "$WORK/otelcol-data"
  RUN_ID=$((RUN_ID + 1))
  local gp hp mp
  gp="$(free_port)"; hp="$(free_port)"; mp="$(free_port)"
  GRPC_ADDR="127.0.0.1:$gp"
  HTTP_ADDR="127.0.0.1:$hp"
  API_ADDR="127.0.0.1:$mp"
  OTELCOL_GRPC_ENDPOINT="$GRPC_ADDR" OTELCOL_HTTP_ENDPOINT="$HTTP_ADDR" OTELCOL_METRICS_PORT="$mp" \
    OTELCOL_STORAGE_DIR="$WORK/otelcol-data" OTELCOL_FSYNC="$fsync" \
    "$OTELCOL" --config "$cfg" 2>"$OUT/logs/otelcol-$RUN_ID.log" >/dev/null &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  SERVER_KIND="otelcol-$variant"
  for ((i = 0; i < 300; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$gp") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$hp") 2>/dev/null; then
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$OUT/logs/otelcol-$RUN_ID.log" >&2; echo "collector exited" >&2; exit 1; }
    sleep 0.1
  done
  cat "$OUT/logs/otelcol-$RUN_ID.log" >&2
  echo "collector not listening in 30s" >&2
  exit 1
}

stop_server() {
  [[ -n "$SERVER_PID" ]] && stop_pid "$SERVER_PID" 30
  SERVER_PID=""
}

# Items the server says it accepted for a signal (cross-check of the client count).
server_accepted() { # signal
  local sig="$1"
  if [[ "$SERVER_KIND" == pharos ]]; then
    curl -s --max-time 5 "http://$API_ADDR/metrics" |
      awk -v s="signal=\"$sig\"" '/^pharos_ingest_items_accepted_total/ && index($0, s) { t += $NF } END { printf "%d\n", t }'
  else
    local m=spans
    [[ "$sig" == logs ]] && m=log_records
    curl -s --max-time 5 "http://$API_ADDR/metrics" |
      awk -v m="otelcol_receiver_accepted_${m}" 'index($1, m) == 1 { t += $NF } END { printf "%d\n", t }'
  fi
}

# ---- one measured run ----------------------------------------------------------
# run_load server-label mode(max|half) protocol signal rate
run_load() {
  local label="$1" mode="$2" proto="$3" sig="$4" rate="$5"
  local addr="$GRPC_ADDR"
  [[ "$proto" == http ]] && addr="$HTTP_ADDR"
  local la_before c0 c1 rss_end out perf_pid=""
  la_before="$(loadavg)"
  c0="$(cpu_ticks "$SERVER_PID")"
  local s0 s1
  s0="$(sys_busy_ticks)"
  if [[ "$PERF" == 1 && "$SERVER_KIND" == pharos && "$mode" == max ]] && command -v perf >/dev/null; then
    perf record -F 499 -g -p "$SERVER_PID" -o "$OUT/perf-$proto-$sig.data" -- sleep "$((WARMUP + ${DURATION%.*}))" \
      >/dev/null 2>"$OUT/perf-$proto-$sig.log" &
    perf_pid=$!
    PIDS+=("$perf_pid")
  fi
  local t0 t1
  t0="$(date +%s.%N)"
  out="$("$LOADGEN" --protocol "$proto" --signal "$sig" --endpoint "$addr" --batch "$BATCH" \
    --workers "$WORKERS" --connections "$CONNECTIONS" --threads "$LG_THREADS" --rate "$rate" \
    --duration "$DURATION" --warmup "$WARMUP" --label "$label" 2>>"$OUT/logs/loadgen.log")" || true
  t1="$(date +%s.%N)"
  c1="$(cpu_ticks "$SERVER_PID")"
  s1="$(sys_busy_ticks)"
  rss_end="$(rss_kib "$SERVER_PID")"
  [[ -n "$perf_pid" ]] && wait "$perf_pid" 2>/dev/null || true
  printf '%s\n' "$out" | grep -v '^{' >&2 || true
  local json
  json="$(printf '%s\n' "$out" | grep '^{"kind":"pharos-loadgen"' || true)"
  if [[ -z "$json" ]]; then
    log "  load generator produced no result (see $OUT/logs/loadgen.log)"
    return 0
  fi
  local srv_acc
  srv_acc="$(server_accepted "$sig" || echo 0)"
  python3 - "$json" "$label" "$mode" "$la_before" "$(loadavg)" "$c0" "$c1" "$t0" "$t1" "$rss_end" "$srv_acc" "$s0" "$s1" >>"$RESULTS" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
label, mode, la0, la1, c0, c1, t0, t1, rss, acc, s0, s1 = sys.argv[2:14]
wall = float(t1) - float(t0)
# CPU used by anything but the server and the load generator (other processes,
# plus kernel softirq work not charged to either), % of one core.
other = (int(s1) - int(s0)) / 100.0 - (int(c1) - int(c0)) / 100.0 - j.get("loadgen_cpu_s", 0)
j["other_cpu_pct"] = round(max(other, 0) / wall * 100, 1) if wall > 0 else None
j.update(server=label, mode=mode, loadavg_before=la0, loadavg_after=la1,
         server_cpu_pct=round((int(c1) - int(c0)) / 100.0 / wall * 100, 1) if wall > 0 else None,
         loadgen_cpu_pct=round(j.get("loadgen_cpu_s", 0) / wall * 100, 1) if wall > 0 else None,
         server_rss_mib_end=round(int(rss) / 1024, 1), server_accepted_total=int(acc))
print(json.dumps(j))
PY
  log "  load average before/after: $la_before / $(loadavg); other CPU % (not server/loader): $(tail -n1 "$RESULTS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["other_cpu_pct"])'); server accepted (its own counter): $srv_acc"
}

# measured label mode proto signal rate description start-command...
measured() {
  local label="$1" mode="$2" proto="$3" sig="$4" rate="$5" what="$6"; shift 6
  local attempt other
  for ((attempt = 0; attempt <= RETRIES; attempt++)); do
    wait_quiet
    log "[$label] $proto $sig: $what for ${DURATION}s$( ((attempt > 0)) && echo " (attempt $((attempt + 1)))")"
    local before
    before="$(wc -l <"$RESULTS")"
    "$@"; run_load "$label" "$mode" "$proto" "$sig" "$rate"; stop_server
    (($(wc -l <"$RESULTS") > before)) || return 0
    other="$(tail -n1 "$RESULTS" | python3 -c 'import json,sys; print(int(json.load(sys.stdin).get("other_cpu_pct") or 0))')"
    if ((other <= MAX_OTHER_CPU || attempt == RETRIES)); then
      return 0
    fi
    log "  other processes used ${other}% of a core during the run: discarding it and running again"
    sed -i '$d' "$RESULTS"
  done
}

# ---- the matrix -----------------------------------------------------------------
run_matrix() { # server-label start-command...
  local label="$1"; shift
  local proto sig
  for proto in $PROTOCOLS; do
    for sig in $SIGNALS; do
      if [[ "$MAX_RUNS" == 1 ]]; then
        measured "$label" max "$proto" "$sig" 0 "max rate" "$@"
      fi
      if [[ "$HALF_RUNS" == 1 ]]; then
        measured "$label" half "$proto" "$sig" "$HALF_RATE" "${HALF_RATE}/s (p99)" "$@"
      fi
    done
  done
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  lscpu | head -n 20
  free -h | head -n 2
  echo "kernel: $(uname -r)"
  echo "git HEAD: $(cd "$REPO" && git log -1 --format='%h %ci %s' 2>/dev/null || echo '?')"
  echo "work tree changes outside bench/: $(cd "$REPO" && git status --porcelain -- . ':!bench' 2>/dev/null | wc -l) files"
  echo "pharos binary: built $PHAROS_BUILT, sha256 $(sha256sum "$PHAROS" | cut -c1-16)"
  if [[ -n "$OTELCOL" ]]; then echo "collector: $("$OTELCOL" --version 2>/dev/null)"; fi
  echo "loadavg at start: $(loadavg)"
} >"$OUT/machine.txt"
log "machine: $(nproc) cores, load average $(loadavg); results in $OUT"

if [[ "$MAX_RUNS" == 1 || "$HALF_RUNS" == 1 ]]; then
  [[ "${PHAROS_RUNS:-1}" == 1 ]] && run_matrix pharos start_pharos
  if [[ "$COLLECTOR" == 1 ]]; then
    for v in $COLLECTOR_VARIANTS; do
      run_matrix "otelcol-$v" start_otelcol "$v"
    done
  fi
fi

# ---- soak: flat memory over a long run -------------------------------------------
if [[ "$SOAK" != 0 ]]; then
  log "[soak] pharos, ${SOAK}s of ${SOAK_STREAMS} at ${SOAK_RATE}/s each, RSS every ${SOAK_SAMPLE}s"
  start_pharos
  SOAK_CSV="$OUT/soak-rss.csv"
  echo "t_s,rss_kib,cpu_ticks,spans_accepted,logs_accepted,wal_bytes,loadavg1" >"$SOAK_CSV"
  lg_pids=()
  n=0
  for spec in $SOAK_STREAMS; do
    proto="${spec%%:*}"; sig="${spec##*:}"
    addr="$GRPC_ADDR"; [[ "$proto" == http ]] && addr="$HTTP_ADDR"
    "$LOADGEN" --protocol "$proto" --signal "$sig" --endpoint "$addr" --batch "$BATCH" \
      --workers "$WORKERS" --connections "$CONNECTIONS" --threads "$LG_THREADS" --rate "$SOAK_RATE" \
      --duration "$SOAK" --warmup 0 --label "soak" >"$OUT/soak-$proto-$sig.txt" 2>>"$OUT/logs/loadgen.log" &
    lg_pids+=($!)
    PIDS+=($!)
    n=$((n + 1))
  done
  start_s="$(date +%s)"
  while :; do
    now="$(date +%s)"
    t=$((now - start_s))
    sp="$(server_accepted traces || echo 0)"; lo="$(server_accepted logs || echo 0)"
    wal="$(du -sb "$WORK/data" 2>/dev/null | cut -f1 || echo 0)"
    echo "$t,$(rss_kib "$SERVER_PID"),$(cpu_ticks "$SERVER_PID"),$sp,$lo,$wal,$(cut -d' ' -f1 /proc/loadavg)" >>"$SOAK_CSV"
    alive=0
    for p in "${lg_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ "$alive" == 1 && "$t" -lt $((SOAK + 60)) ]] || break
    sleep "$SOAK_SAMPLE"
  done
  for p in "${lg_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for spec in $SOAK_STREAMS; do
    proto="${spec%%:*}"; sig="${spec##*:}"
    grep -v '^{' "$OUT/soak-$proto-$sig.txt" >&2 || true
    grep '^{"kind":"pharos-loadgen"' "$OUT/soak-$proto-$sig.txt" |
      python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); j.update(server="pharos", mode="soak"); print(json.dumps(j))' >>"$RESULTS" || true
  done
  stop_server
fi

python3 "$HERE/report.py" "$OUT" | tee "$OUT/report.md"
log "results: $OUT (results.jsonl, report.md, machine.txt)"
