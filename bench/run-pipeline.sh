#!/usr/bin/env bash
# The cost of the processing pipeline on trace ingest.
#
# Goal (from the issue): with the full pipeline on (redaction + attributes + tail sampling +
# span metrics), ingest throughput is at least 60% of the pipeline-off figure on the same load;
# publish the per-core figure; memory stays within the num_traces budget plus a stated constant.
#
# The same OTLP/gRPC traces load (pharos-loadgen, as in run-traces.sh) runs against pharos
# several times, each on a fresh data dir:
#   off            no processors (no --config): data goes straight to the trace store
#   full           traces: [redaction, attributes/env, tail_sampling, span_metrics]
#   <processor>    each of the four alone (skipped with ONLY_FULL=1), to see which costs most
# For each run (see the monitor below for the details):
#   - acknowledged spans/s: the load generator's figure (durable in the write-ahead log);
#   - processed spans/s: spans taken in by the first processor (pharos_processor_items_in_total;
#     pipeline off: spans put in the trace store, pharos_traces_spans_stored_total), from load
#     start until the last of them went in;
#   - drained spans/s: the same count over load start .. queue depth 0 (every record committed,
#     i.e. decided by tail sampling and flushed into blocks);
#   - pharos CPU seconds (utime+stime from /proc/PID/stat) over load start .. drained, and
#     processed spans per CPU-second: the per-core figure (the whole server: receive, WAL,
#     processors, stores);
#   - peak RSS (VmRSS every 0.5 s), peak and final pharos_processor_held_bytes of tail_sampling;
#   - seconds spent in each processor (pharos_processor_seconds_total).
# Peer (run `otelcol`, after the others): the OpenTelemetry Collector with the equivalent contrib
# components (bench/collector/pipeline.yaml: redaction, attributes, tail_sampling, batch, the
# spanmetrics connector, sampled spans through a file_storage queue; every difference from
# Pharos's pipeline is listed there) on the same load. Its figures come from its own metrics
# (:OTELCOL_METRICS_PORT): processed = spans taken in by its first processor
# (otelcol_processor_incoming_items{processor="redaction"}, = otelcol_receiver_accepted_spans),
# drained = every new trace decided (otelcol_processor_tail_sampling_global_count_traces_sampled
# + _sampling_trace_dropped_too_early = _new_trace_id_received), the exporter queue empty and the
# sampled spans sent (otelcol_exporter_sent_spans); CPU, spans per CPU-second and peak RSS as for
# pharos. Its tail sampler has as many shards as pharos had queue partitions in the full run,
# NUM_TRACES each. Prints the ratios Pharos full / Collector.
# Prints a table; writes $OUT/pipeline.json (and per-run JSON, samples and logs under $OUT/<run>/).
#
# Usage: bench/run-pipeline.sh [--quick]
# Knobs (environment): DURATION [20] measured seconds of load (QUICK=1 or --quick: 5),
#   WARMUP [2], RATE [0 = as fast as possible; else spans/s], WORKERS [16], BATCH [500],
#   CONNECTIONS [4], NUM_TRACES [100000], DECISION_WAIT [5s], ONLY_FULL [0] (1: off and full only),
#   RUNS [off full redaction attributes tail_sampling span_metrics] (overrides ONLY_FULL),
#   DRAIN_TIMEOUT [180] seconds to wait for the queue to drain after the load,
#   FLUSH_INTERVAL [5s] traces.flush_interval and metrics.flush_interval of every run,
#   PHAROS_SET extra `--set k=v` for `pharos serve`, SKIP_BUILD [0], BENCH_WORK, BENCH_OUT,
#   KEEP_DATA [0] (1: keep the data dirs and the binaries' copies in the work dir),
#   COLLECTOR [1 when the binary exists, else 0; 1 builds it if missing] run the Collector peer,
#   OTELCOL_PIPELINE [$PHAROS_BENCH_CACHE/otelcol-pipeline, built by
#   bench/collector/build-collector.sh pipeline], OTELCOL_FSYNC [true] fsync of its file_storage.
# Everything listens on 127.0.0.1, every step is bounded in time, and every process the
# script started is stopped on exit.
set -euo pipefail

for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
if [[ "${QUICK:-0}" == 1 ]]; then DURATION="${DURATION:-5}"; fi
DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-2}"
RATE="${RATE:-0}"
WORKERS="${WORKERS:-16}"
BATCH="${BATCH:-500}"
CONNECTIONS="${CONNECTIONS:-4}"
NUM_TRACES="${NUM_TRACES:-100000}"
DECISION_WAIT="${DECISION_WAIT:-5s}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-180}"
FLUSH_INTERVAL="${FLUSH_INTERVAL:-5s}"
PHAROS_SET="${PHAROS_SET:-}"
if [[ -z "${RUNS:-}" ]]; then
  if [[ "${ONLY_FULL:-0}" == 1 ]]; then RUNS="off full"
  else RUNS="off full redaction attributes tail_sampling span_metrics"; fi
fi
OTELCOL_PIPELINE="${OTELCOL_PIPELINE:-${PHAROS_BENCH_CACHE:-$HOME/.cache/pharos-bench}/otelcol-pipeline}"
OTELCOL_FSYNC="${OTELCOL_FSYNC:-true}"
if [[ -z "${COLLECTOR:-}" ]]; then
  COLLECTOR=0
  if [[ -x "$OTELCOL_PIPELINE" ]]; then COLLECTOR=1
  else echo "no Collector peer: $OTELCOL_PIPELINE not built (bench/collector/build-collector.sh pipeline)" >&2; fi
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/pharos/target}"
WORK="${BENCH_WORK:-$(mktemp -d /tmp/pharos-pipeline-bench.XXXXXX)}"
OUT="${BENCH_OUT:-$WORK/results}"
mkdir -p "$OUT" "$WORK/bin"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$REPO" && cargo build --release -p pharos --locked)
  (cd "$REPO" && cargo build --release -p pharos-loadgen --locked)
fi
# Private copies: the target dir may be shared with builds that replace the binaries mid-run.
cp "$CARGO_TARGET_DIR/release/pharos" "$CARGO_TARGET_DIR/release/pharos-loadgen" "$WORK/bin/"
PHAROS="$WORK/bin/pharos"
LOADGEN="$WORK/bin/pharos-loadgen"
OTELCOL=""
if [[ "$COLLECTOR" == 1 ]]; then
  [[ -x "$OTELCOL_PIPELINE" ]] || "$HERE/collector/build-collector.sh" pipeline >/dev/null
  # Named `otelcol` so that bench/run's pinning (bench/peers/pin.py, by command name) moves it
  # to the servers' CPU like the other Collector.
  cp "$OTELCOL_PIPELINE" "$WORK/bin/otelcol"
  OTELCOL="$WORK/bin/otelcol"
fi
{
  echo "date: $(date -u +%FT%TZ)"
  echo "git: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "pharos sha256: $(sha256sum "$PHAROS" | cut -d' ' -f1)"
  [[ -n "$OTELCOL" ]] && echo "collector: $("$OTELCOL" --version 2>/dev/null) ($OTELCOL_PIPELINE)"
  echo "cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "memory: $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
} >"$OUT/machine.txt"

PID=""
LOADGEN_PID=""
MONITOR=""
cleanup() {
  [[ -n "$LOADGEN_PID" ]] && kill "$LOADGEN_PID" 2>/dev/null || true
  [[ -n "$MONITOR" ]] && kill "$MONITOR" 2>/dev/null || true
  if [[ -n "$PID" ]]; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PID" 2>/dev/null || true
  fi
  if [[ "${KEEP_DATA:-0}" != 1 ]]; then rm -rf "$WORK"/run-* "$WORK/bin"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The processors' configuration, shared by every "on" run; a run defines only what it uses.
processor_yaml() {
  case "$1" in
    redaction) echo "  redaction: {}" ;;
    attributes/env) cat <<EOF
  attributes/env:
    actions:
      - {key: deployment.environment, value: bench, action: upsert}
      - {key: pharos.tenant, from_context: tenant, action: insert}
EOF
    ;;
    tail_sampling) cat <<EOF
  tail_sampling:
    decision_wait: $DECISION_WAIT
    num_traces: $NUM_TRACES
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: slow, type: latency, latency: {threshold_ms: 500}}
      - {name: rest-10pc, type: probabilistic, probabilistic: {sampling_percentage: 10}}
EOF
    ;;
    span_metrics) echo "  span_metrics: {}" ;;
    *) echo "unknown processor $1" >&2; return 1 ;;
  esac
}

# Writes the config of run $1 to $2 (nothing for `off`); prints the processor keys in order.
write_config() {
  local keys
  case "$1" in
    off) return 0 ;;
    full) keys="redaction attributes/env tail_sampling span_metrics" ;;
    attributes) keys="attributes/env" ;;
    redaction|tail_sampling|span_metrics) keys="$1" ;;
    *) echo "unknown run $1 (off full redaction attributes tail_sampling span_metrics)" >&2; return 1 ;;
  esac
  {
    echo "processors:"
    for k in $keys; do processor_yaml "$k"; done
    echo "pipelines:"
    echo "  traces:"
    echo "    processors: [$(sed 's/ /, /g' <<<"$keys")]"
  } >"$2"
  echo "$keys"
}

# What both monitors read: a server's /metrics (Prometheus text) and its process's CPU and RSS,
# and the machine's busy CPU time.
cat >"$WORK/probe.py" <<'PY'
import os, re, urllib.request

TICK = os.sysconf("SC_CLK_TCK")
LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

class Probe:
    def __init__(self, addr, pid):
        self.addr, self.pid, self.last_text = addr, pid, ""

    def metrics(self):
        """[(name, labels, value)] of every sample; keeps the text as last_text."""
        text = urllib.request.urlopen(f"http://{self.addr}/metrics", timeout=10).read().decode()
        self.last_text = text
        out = []
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            m = LINE.match(line)
            if m:
                out.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
        return out

    def cpu(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    @staticmethod
    def machine_busy():
        """All CPU time but idle and iowait, in CPU-seconds."""
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v) - v[3] - v[4]) / TICK
PY

# The monitor: samples pharos every 0.5 s from load start until the queue is drained (or
# DRAIN_TIMEOUT after the load), then writes the run's figures to $RUN/run.json.
cat >"$WORK/monitor.py" <<'PY'
import json, os, sys, time
from probe import Probe

api, pid, run_dir, name, first, drain_timeout = sys.argv[1:7]
drain_timeout = float(drain_timeout)
first = first or None          # the first processor's key; None: pipeline off
probe = Probe(api, pid)
metrics, proc_cpu, proc_rss_kib, machine_busy = probe.metrics, probe.cpu, probe.rss_kib, probe.machine_busy

def total(ms, name, **want):
    return sum(v for n, l, v in ms if n == name and all(l.get(k) == x for k, x in want.items()))

def by_label(ms, name, label, **want):
    out = {}
    for n, l, v in ms:
        if n == name and all(l.get(k) == x for k, x in want.items()):
            out[l.get(label, "")] = out.get(l.get(label, ""), 0) + v
    return out

def processed(ms):
    if first:
        return total(ms, "pharos_processor_items_in_total", pipeline="traces", processor=first)
    # Pipeline off, every span goes to the trace store. (pharos_pipeline_items_total is
    # counted only when the counting stage commits, in steps of seconds, so it is not used.)
    return total(ms, "pharos_traces_spans_stored_total")

start = time.time()
cpu0, busy0 = proc_cpu(), machine_busy()
samples, errors = [], 0
rss_peak = held_peak = 0
load_end = None
last_count, last_change = None, start
drained_at = None
ms = []
while True:
    now = time.time()
    try:
        ms = metrics()
    except Exception as e:  # a slow scrape under load: count it, keep going
        errors += 1
        ms = ms or []
    try:
        rss, cpu = proc_rss_kib(), proc_cpu()
    except OSError:
        print(f"{name}: pharos exited during the run", file=sys.stderr)
        break
    rss_peak = max(rss_peak, rss)
    count = processed(ms)
    held = total(ms, "pharos_processor_held_bytes", processor="tail_sampling")
    held_spans = total(ms, "pharos_processor_held_items", processor="tail_sampling")
    held_peak = max(held_peak, held)
    depth = total(ms, "pharos_queue_depth_records")
    if count != last_count:
        last_count, last_change = count, now
    samples.append({"t": round(now - start, 2), "rss_kib": rss, "cpu_s": round(cpu - cpu0, 2),
                    "processed": int(count), "queue_depth": int(depth), "held_bytes": int(held),
                    "held_spans": int(held_spans),
                    "stored": int(total(ms, "pharos_traces_spans_stored_total"))})
    if load_end is None and os.path.exists(f"{run_dir}/load.done"):
        load_end = float(open(f"{run_dir}/load.done").read())
        busy_load, cpu_load = machine_busy(), cpu
        lg = json.loads(open(f"{run_dir}/loadgen.json").read())
    if load_end is not None:
        if ms and depth == 0 and held == 0 and now > load_end:
            drained_at = now
            break
        if now - load_end > drain_timeout:
            print(f"{name}: queue not drained {drain_timeout:.0f}s after the load (depth {depth:.0f})",
                  file=sys.stderr)
            break
    time.sleep(max(0.0, 0.5 - (time.time() - now)))

if load_end is None:
    sys.exit(f"{name}: the load did not finish")
end = drained_at or time.time()
cpu_s = samples[-1]["cpu_s"]   # the last sample is the drained one
count = processed(ms)
# The processed count reaches its final value at last_change (0.5 s resolution); if the
# processors kept up, that is about when the load ended.
processed_secs = max(last_change - start, 1e-9)
loadgen_cpu = lg.get("loadgen_cpu_s", 0.0)
load_secs = max(load_end - start, 1e-9)
# CPU of everything but pharos and the load generator during the load (2 cores = 200%).
pharos_cpu_load = cpu_load - cpu0
other_cpu_pct = round(100 * max(0.0, (busy_load - busy0) - pharos_cpu_load - loadgen_cpu) / load_secs, 1)
seconds = by_label(ms, "pharos_processor_seconds_total", "processor", pipeline="traces")
items_in = by_label(ms, "pharos_processor_items_in_total", "processor", pipeline="traces")
events = {f"{p}:{w}": int(v) for (p, w), v in
          {(l.get("processor"), l.get("what")): v for n, l, v in ms
           if n == "pharos_processor_events_total"}.items()}
dropped = {f"{l.get('processor')}:{l.get('reason')}": int(v) for n, l, v in ms
           if n == "pharos_processor_items_dropped_total"}
result = {
    "run": name,
    "first_processor": first,
    "partitions": sum(1 for n, l, v in ms if n == "pharos_queue_depth_records"),
    "acked_spans_per_s": lg["items_per_sec"],
    "acked_spans_measured": lg["items_accepted"],
    "loadgen_errors": lg.get("errors", {}),
    "latency_ms": lg.get("latency"),
    "processed_spans": int(count),
    "processed_seconds": round(processed_secs, 2),
    "processed_spans_per_s": round(count / processed_secs),
    "drained": drained_at is not None,
    "drained_seconds": round(end - start, 2),
    "drained_spans_per_s": round(count / (end - start)),
    "stored_spans": int(total(ms, "pharos_traces_spans_stored_total")),
    # span_metrics output (emitted every metrics_flush_interval, 15 s by default)
    "metrics_samples_appended": int(total(ms, "pharos_metrics_samples_appended_total")),
    "metrics_samples_rejected": by_label(ms, "pharos_metrics_samples_rejected_total", "reason"),
    "pharos_cpu_s": round(cpu_s, 2),
    "pharos_cpu_s_during_load": round(pharos_cpu_load, 2),
    "spans_per_cpu_s": round(count / max(cpu_s, 1e-9)),
    "loadgen_cpu_s": loadgen_cpu,
    "other_cpu_pct_during_load": other_cpu_pct,
    "rss_peak_mib": round(rss_peak / 1024, 1),
    "tail_sampling_held_bytes_peak": int(held_peak),
    "tail_sampling_held_bytes_end": int(total(ms, "pharos_processor_held_bytes", processor="tail_sampling")),
    "processor_seconds": {k: round(v, 3) for k, v in seconds.items()},
    "processor_ns_per_span": {k: round(1e9 * v / items_in[k]) for k, v in seconds.items() if items_in.get(k)},
    "processor_events": events,
    "processor_dropped": dropped,
    "metrics_scrape_errors": errors,
}
json.dump(samples, open(f"{run_dir}/samples.json", "w"))
open(f"{run_dir}/metrics-end.txt", "w").write(probe.last_text)
json.dump(result, open(f"{run_dir}/run.json", "w"), indent=1)
PY

# load_and_stop <name> <grpc endpoint> <run dir> <data dir>: the load generator against the
# server started as $PID (its monitor running as $MONITOR), then waits for the monitor, stops
# the server and removes its data (unless KEEP_DATA=1).
load_and_stop() {
  local name=$1 endpoint=$2 run=$3 data=$4
  "$LOADGEN" --protocol grpc --signal traces --endpoint "$endpoint" --duration "$DURATION" --warmup "$WARMUP" \
    --workers "$WORKERS" --connections "$CONNECTIONS" --batch "$BATCH" --rate "$RATE" \
    --label "pharos-pipeline-$name" >"$run/loadgen.txt" 2>"$run/loadgen.err" &
  LOADGEN_PID=$!
  wait "$LOADGEN_PID" || { echo "[$name] the load generator failed:" >&2; cat "$run/loadgen.err" >&2; }
  LOADGEN_PID=""
  tail -1 "$run/loadgen.txt" >"$run/loadgen.json"
  date +%s.%N >"$run/load.done"
  sed -n '2,4p' "$run/loadgen.txt" | sed "s/^/[$name] /" >&2
  wait "$MONITOR" || true
  MONITOR=""
  kill -TERM "$PID" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
  if [[ "${KEEP_DATA:-0}" != 1 ]]; then rm -rf "$data"; fi
}

run_one() {
  local name="$1" run="$OUT/$1" data="$WORK/run-$1/data" keys first="" cfg=()
  mkdir -p "$run" "$data"
  rm -f "$run/load.done" "$run/run.json"
  keys="$(write_config "$name" "$run/config.yaml")"
  if [[ -n "$keys" ]]; then first="${keys%% *}"; cfg=(--config "$run/config.yaml"); fi
  # shellcheck disable=SC2086 # PHAROS_SET is a list of flags
  "$PHAROS" serve "${cfg[@]}" --data-dir "$data" \
    --set api.listen=127.0.0.1:0 --set otlp.http.listen=127.0.0.1:0 --set otlp.grpc.listen=127.0.0.1:0 \
    --set traces.flush_interval="$FLUSH_INTERVAL" --set metrics.flush_interval="$FLUSH_INTERVAL" \
    $PHAROS_SET >"$run/pharos.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do
    grep -q "pharos is ready" "$run/pharos.log" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q "pharos is ready" "$run/pharos.log"; then
    echo "[$name] pharos did not start; its log:" >&2; tail -20 "$run/pharos.log" >&2; return 1
  fi
  local ready grpc api
  ready="$(sed 's/\x1b\[[0-9;]*m//g' "$run/pharos.log" | grep -m1 "pharos is ready")"
  grpc="$(sed -E 's/.*otlp_grpc=([^ ]+).*/\1/' <<<"$ready")"
  api="$(sed -E 's/.*api=([^ ]+).*/\1/' <<<"$ready")"
  echo "[$name] pharos pid $PID grpc=$grpc api=$api processors: ${keys:-none} (load avg $(cut -d' ' -f1-3 /proc/loadavg))" >&2

  python3 "$WORK/monitor.py" "$api" "$PID" "$run" "$name" "$first" "$DRAIN_TIMEOUT" &
  MONITOR=$!
  load_and_stop "$name" "$grpc" "$run" "$data"
  grep -E " (WARN|ERROR) " "$run/pharos.log" | head -5 | sed "s/^/[$name] pharos log: /" >&2 || true
  [[ -f "$run/run.json" ]] || { echo "[$name] no figures (see $run)" >&2; return 1; }
}

# The Collector's monitor: the same sampling as pharos's (0.5 s), from the Collector's own
# metrics; writes $RUN/run.json with the keys of pharos's runs that apply, and its own.
cat >"$WORK/otelcol_monitor.py" <<'PY'
import json, os, sys, time
from probe import Probe

metrics_addr, pid, run_dir, drain_timeout, shards = sys.argv[1:6]
drain_timeout = float(drain_timeout)
probe = Probe(metrics_addr, pid)
metrics, proc_cpu, proc_rss_kib, machine_busy = probe.metrics, probe.cpu, probe.rss_kib, probe.machine_busy

def total(ms, name, **want):
    # Counters are exported with or without the `_total` suffix depending on the version.
    return sum(v for n, l, v in ms if n in (name, name + "_total")
               and all(l.get(k) == x for k, x in want.items()))

TS = "otelcol_processor_tail_sampling_"
def processed(ms):
    # Spans taken in by the first processor (the pipeline is synchronous up to the tail
    # sampler: the same as the receiver's accepted spans).
    return total(ms, "otelcol_processor_incoming_items", processor="redaction", otel_signal="traces")

def decided(ms):
    return (total(ms, TS + "global_count_traces_sampled")
            + total(ms, TS + "sampling_trace_dropped_too_early"))

start = time.time()
cpu0, busy0 = proc_cpu(), machine_busy()
samples, errors = [], 0
rss_peak = on_memory_peak = 0
load_end = None
last_count, last_change = None, start
last_sent = None
drained_at = None
ms = []
while True:
    now = time.time()
    try:
        ms = metrics()
    except Exception:
        errors += 1
        ms = ms or []
    try:
        rss, cpu = proc_rss_kib(), proc_cpu()
    except OSError:
        print("otelcol: the Collector exited during the run", file=sys.stderr)
        break
    rss_peak = max(rss_peak, rss)
    count = processed(ms)
    received = total(ms, TS + "new_trace_id_received")
    dec = decided(ms)
    on_memory = total(ms, TS + "sampling_traces_on_memory")
    on_memory_peak = max(on_memory_peak, on_memory)
    queue = total(ms, "otelcol_exporter_queue_size", exporter="debug")
    sent = total(ms, "otelcol_exporter_sent_spans", exporter="debug")
    if count != last_count:
        last_count, last_change = count, now
    samples.append({"t": round(now - start, 2), "rss_kib": rss, "cpu_s": round(cpu - cpu0, 2),
                    "processed": int(count), "traces_received": int(received), "traces_decided": int(dec),
                    "traces_on_memory": int(on_memory), "queue_size": int(queue), "sent": int(sent)})
    if load_end is None and os.path.exists(f"{run_dir}/load.done"):
        load_end = float(open(f"{run_dir}/load.done").read())
        busy_load, cpu_load = machine_busy(), cpu
        lg = json.loads(open(f"{run_dir}/loadgen.json").read())
    if load_end is not None:
        # Drained: every trace decided, the exporter queue empty, and nothing more sent since
        # the previous sample (the batch processor flushed what the sampler released).
        if ms and now > load_end and received > 0 and dec >= received and queue == 0 and sent == last_sent:
            drained_at = now
            break
        if now - load_end > drain_timeout:
            print(f"otelcol: not drained {drain_timeout:.0f}s after the load (decided {dec:.0f} of "
                  f"{received:.0f} traces, queue {queue:.0f})", file=sys.stderr)
            break
    last_sent = sent
    time.sleep(max(0.0, 0.5 - (time.time() - now)))

if load_end is None:
    sys.exit("otelcol: the load did not finish")
end = drained_at or time.time()
cpu_s = samples[-1]["cpu_s"]
count = processed(ms)
processed_secs = max(last_change - start, 1e-9)
loadgen_cpu = lg.get("loadgen_cpu_s", 0.0)
load_secs = max(load_end - start, 1e-9)
cpu_load_s = cpu_load - cpu0
other_cpu_pct = round(100 * max(0.0, (busy_load - busy0) - cpu_load_s - loadgen_cpu) / load_secs, 1)
sampled = {l.get("sampled", ""): int(v) for n, l, v in ms
           if n in (TS + "global_count_traces_sampled", TS + "global_count_traces_sampled_total")}
result = {
    "run": "otelcol",
    "server": "otelcol",
    "first_processor": "redaction",
    "partitions": int(shards),
    "tail_sampling_shards": int(shards),
    "acked_spans_per_s": lg["items_per_sec"],
    "acked_spans_measured": lg["items_accepted"],
    "loadgen_errors": lg.get("errors", {}),
    "latency_ms": lg.get("latency"),
    "receiver_accepted_spans": int(total(ms, "otelcol_receiver_accepted_spans")),
    "receiver_refused_spans": int(total(ms, "otelcol_receiver_refused_spans")),
    "processed_spans": int(count),
    "processed_seconds": round(processed_secs, 2),
    "processed_spans_per_s": round(count / processed_secs),
    "drained": drained_at is not None,
    "drained_seconds": round(end - start, 2),
    "drained_spans_per_s": round(count / (end - start)),
    # Spans the tail sampler emitted that went through the file_storage queue to the exporter:
    # the counterpart of pharos's spans put in its trace store.
    "stored_spans": int(total(ms, "otelcol_exporter_sent_spans", exporter="debug")),
    "exporter_send_failed_spans": int(total(ms, "otelcol_exporter_send_failed_spans", exporter="debug")),
    "traces_received": int(total(ms, TS + "new_trace_id_received")),
    "traces_sampled": sampled.get("true", 0),
    "traces_not_sampled": sampled.get("false", 0),
    "traces_dropped_too_early": int(total(ms, TS + "sampling_trace_dropped_too_early")),
    "traces_on_memory_peak": int(on_memory_peak),
    "pharos_cpu_s": round(cpu_s, 2),   # the server's CPU (the Collector's here): same key as pharos's runs
    "server_cpu_s": round(cpu_s, 2),
    "server_cpu_s_during_load": round(cpu_load_s, 2),
    "spans_per_cpu_s": round(count / max(cpu_s, 1e-9)),
    "loadgen_cpu_s": loadgen_cpu,
    "other_cpu_pct_during_load": other_cpu_pct,
    "rss_peak_mib": round(rss_peak / 1024, 1),
    "metrics_scrape_errors": errors,
}
json.dump(samples, open(f"{run_dir}/samples.json", "w"))
open(f"{run_dir}/metrics-end.txt", "w").write(probe.last_text)
json.dump(result, open(f"{run_dir}/run.json", "w"), indent=1)
PY

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The Collector peer on the same load. Its tail sampler gets as many shards as pharos had queue
# partitions in the full run (each pharos partition runs its own tail sampler), NUM_TRACES each.
run_otelcol() {
  local run="$OUT/otelcol" data="$WORK/run-otelcol/storage" shards gp hp mp
  mkdir -p "$run" "$data"
  rm -f "$run/load.done" "$run/run.json"
  shards="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["partitions"])' \
    "$OUT/full/run.json" 2>/dev/null || python3 -c 'import os; print(len(os.sched_getaffinity(0)))')"
  ((shards >= 1)) || shards=1
  gp="$(free_port)"; hp="$(free_port)"; mp="$(free_port)"
  OTELCOL_GRPC_ENDPOINT="127.0.0.1:$gp" OTELCOL_HTTP_ENDPOINT="127.0.0.1:$hp" OTELCOL_METRICS_PORT="$mp" \
    OTELCOL_STORAGE_DIR="$data" OTELCOL_FSYNC="$OTELCOL_FSYNC" OTELCOL_DECISION_WAIT="$DECISION_WAIT" \
    OTELCOL_NUM_TRACES="$((NUM_TRACES * shards))" OTELCOL_NUM_SHARDS="$shards" \
    "$OTELCOL" --config "$HERE/collector/pipeline.yaml" >"$run/otelcol.log" 2>&1 &
  PID=$!
  local up=0
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$gp") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$mp") 2>/dev/null; then
      up=1; break
    fi
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  if ((up == 0)); then
    echo "[otelcol] the Collector did not start; its log:" >&2; tail -20 "$run/otelcol.log" >&2; return 1
  fi
  echo "[otelcol] collector pid $PID grpc=127.0.0.1:$gp metrics=127.0.0.1:$mp tail_sampling shards $shards," \
    "num_traces $((NUM_TRACES * shards)), file_storage fsync $OTELCOL_FSYNC (load avg $(cut -d' ' -f1-3 /proc/loadavg))" >&2

  python3 "$WORK/otelcol_monitor.py" "127.0.0.1:$mp" "$PID" "$run" "$DRAIN_TIMEOUT" "$shards" &
  MONITOR=$!
  load_and_stop otelcol "127.0.0.1:$gp" "$run" "$data"
  grep -iE "\berror\b" "$run/otelcol.log" | head -5 | sed "s/^/[otelcol] log: /" >&2 || true
  [[ -f "$run/run.json" ]] || { echo "[otelcol] no figures (see $run)" >&2; return 1; }
}

for r in $RUNS; do run_one "$r"; done
ALL_RUNS="$RUNS"
if [[ -n "$OTELCOL" ]]; then
  if run_otelcol; then ALL_RUNS="$RUNS otelcol"; else echo "[otelcol] no Collector figures" >&2; fi
fi

python3 - "$OUT" "$NUM_TRACES" "$DECISION_WAIT" "$DURATION" "$RATE" "$WORKERS" "$BATCH" $ALL_RUNS <<'PY'
import json, re, sys
out, num_traces, decision_wait, duration, rate, workers, batch, *runs = sys.argv[1:]
num_traces = int(num_traces)
R = {r: json.load(open(f"{out}/{r}/run.json")) for r in runs}

def fmt(n):
    return f"{n/1e3:.1f}K" if n >= 1e3 else f"{n:.0f}"

print()
print(f"traces over OTLP/gRPC, {duration}s + warm-up, rate {rate or 'max'}, {workers} workers, "
      f"batch {batch}; NUM_TRACES={num_traces}, decision_wait={decision_wait}")
hdr = ["run", "acked/s", "processed/s", "drained/s", "stored", "CPU s", "spans/CPU-s", "peak RSS",
       "held gauge", "other CPU"]
rows = []
for r in runs:
    x = R[r]
    rows.append([r, fmt(x["acked_spans_per_s"]), fmt(x["processed_spans_per_s"]),
                 fmt(x["drained_spans_per_s"]) + ("" if x["drained"] else "!"),
                 f'{x["stored_spans"]}/{x["processed_spans"]}', f'{x["pharos_cpu_s"]:.1f}',
                 fmt(x["spans_per_cpu_s"]), f'{x["rss_peak_mib"]:.0f} MiB',
                 f'{x["traces_on_memory_peak"]} traces' if r == "otelcol" else
                 f'{x["tail_sampling_held_bytes_peak"]/2**20:.0f} MiB' if x["first_processor"] and
                 "tail_sampling" in x["processor_seconds"] else "-",
                 f'{x["other_cpu_pct_during_load"]:.0f}%'])
w = [max(len(str(c)) for c in col) for col in zip(hdr, *rows)]
for row in [hdr] + rows:
    print("  ".join(str(c).ljust(n) for c, n in zip(row, w)))
print("  (stored = spans in the trace store / spans processed; '!' = queue not drained in time;"
      " other CPU = other processes during the load, % of one core)")
if "otelcol" in R:
    print("  (otelcol: the OpenTelemetry Collector, bench/collector/pipeline.yaml; processed = spans into its"
          " first processor, stored = sampled spans sent through its file_storage queue, CPU s = the"
          " Collector's, held gauge = traces in its tail sampler's memory at the peak)")
busy = [r for r in runs if R[r]["other_cpu_pct_during_load"] > 30]
if busy:
    print(f"  WARNING: other processes used more than 30% of a core during {', '.join(busy)}: "
          "those figures are not reliable; rerun on a quiet machine")

summary = {"noisy_runs": busy, "config": {"duration_s": float(duration), "rate": int(rate), "workers": int(workers),
                      "batch": int(batch), "num_traces": num_traces, "decision_wait": decision_wait},
           "runs": R}
if "off" in R and "full" in R:
    off, on = R["off"], R["full"]
    def ratio(k):
        return round(on[k] / off[k], 3) if off[k] else None
    # What the server sustains: it cannot go on acknowledging faster than it processes.
    sustained = {r: min(R[r]["acked_spans_per_s"], R[r]["processed_spans_per_s"]) for r in ("off", "full")}
    ratios = {
        "acked": ratio("acked_spans_per_s"),
        "processed": ratio("processed_spans_per_s"),
        "drained": ratio("drained_spans_per_s"),
        "sustained": round(sustained["full"] / sustained["off"], 3),
        "per_core": ratio("spans_per_cpu_s"),
    }
    # pharos_processor_held_bytes and _held_items are per partition (each partition runs its
    # own tail sampler, num_traces each): their sums are the totals.
    parts = max(on["partitions"], 1)
    held_gauge = on["tail_sampling_held_bytes_peak"]
    held = held_gauge
    samples = json.load(open(f"{out}/full/samples.json"))
    peak = max(samples, key=lambda s: s["held_bytes"])
    spans_held = peak.get("held_spans", 0)
    traces_waiting = spans_held / 8  # pharos-loadgen: 8 spans per trace
    bytes_per_trace = held / traces_waiting if traces_waiting else None
    # Resident memory per held trace: the RSS the full run has above the off run, per trace
    # waiting, and a one-point model RSS = C + held traces x b, C = the off run's peak.
    extra_kib = (on["rss_peak_mib"] - off["rss_peak_mib"]) * 1024
    rss_per_trace = extra_kib * 1024 / traces_waiting if traces_waiting else None
    memory = {
        "partitions": parts,
        "rss_peak_off_mib": off["rss_peak_mib"],
        "rss_peak_full_mib": on["rss_peak_mib"],
        "rss_full_minus_off_mib": round(on["rss_peak_mib"] - off["rss_peak_mib"], 1),
        "held_bytes_gauge_peak": held_gauge,
        "held_bytes_total_est": held,
        "held_bytes_end": on["tail_sampling_held_bytes_end"],
        "traces_waiting_at_peak_est": round(traces_waiting),
        "held_bytes_per_trace_est": round(bytes_per_trace) if bytes_per_trace else None,
        "rss_bytes_per_held_trace_est": round(rss_per_trace) if rss_per_trace else None,
        "num_traces": num_traces,
        "max_traces_held": num_traces * parts,
        "budget_held_bytes_mib": round(num_traces * parts * bytes_per_trace / 2**20, 1) if bytes_per_trace else None,
        "budget_rss_mib": round(off["rss_peak_mib"] + num_traces * parts * rss_per_trace / 2**20, 1) if rss_per_trace else None,
        "constant_mib": off["rss_peak_mib"],
        "evicted_traces": sum(v for k, v in on["processor_events"].items() if k.endswith(":evicted")),
    }
    summary["ratio_full_over_off"] = ratios
    summary["target_ratio"] = 0.60
    summary["meets_target"] = ratios["sustained"] >= 0.60
    summary["memory"] = memory
    print()
    print(f"full / off: sustained {ratios['sustained']:.2f} (target >= 0.60: "
          f"{'met' if summary['meets_target'] else 'NOT met'}); acked {ratios['acked']:.2f}, "
          f"processed {ratios['processed']:.2f}, drained {ratios['drained']:.2f}")
    print(f"per core (processed spans per pharos CPU-second): off {fmt(off['spans_per_cpu_s'])}, "
          f"full {fmt(on['spans_per_cpu_s'])} ({ratios['per_core']:.2f})")
    print(f"memory: peak RSS off {off['rss_peak_mib']:.0f} MiB, full {on['rss_peak_mib']:.0f} MiB "
          f"(+{memory['rss_full_minus_off_mib']:.0f} MiB) with ~{traces_waiting:.0f} traces waiting at the peak "
          f"({memory['evicted_traces']} evicted); held_bytes peak {held_gauge/2**20:.0f} MiB "
          f"(all {parts} partitions, {spans_held} spans), {on['tail_sampling_held_bytes_end']} B at the end")
    if bytes_per_trace and rss_per_trace:
        print(f"        per held trace: ~{bytes_per_trace/1024:.1f} KiB counted as held, ~{rss_per_trace/1024:.1f} KiB "
              f"of RSS; num_traces {num_traces} x {parts} partitions -> held budget "
              f"{memory['budget_held_bytes_mib']:.0f} MiB, RSS model {off['rss_peak_mib']:.0f} MiB + "
              f"{num_traces * parts} x {rss_per_trace/1024:.1f} KiB = {memory['budget_rss_mib']:.0f} MiB")
if "full" in R:
    f = R["full"]
    print()
    print(f"span metrics samples written to the metrics store by the end: {f['metrics_samples_appended']}"
          f", rejected: {f['metrics_samples_rejected'] or 0}")
    print("time in each processor (full run): " + ", ".join(
        f"{k} {v:.2f} s ({f['processor_ns_per_span'].get(k, 0)} ns/span)" for k, v in f["processor_seconds"].items()))
if "full" in R and "otelcol" in R:
    p, c = R["full"], R["otelcol"]
    def sus(x):
        return min(x["acked_spans_per_s"], x["processed_spans_per_s"])
    def over(a, b):
        return round(a / b, 3) if b else None
    # Pharos / Collector on the same load: above 1 means Pharos is faster (or, for RSS, bigger).
    vs = {
        "sustained": over(sus(p), sus(c)),
        "acked": over(p["acked_spans_per_s"], c["acked_spans_per_s"]),
        "processed": over(p["processed_spans_per_s"], c["processed_spans_per_s"]),
        "drained": over(p["drained_spans_per_s"], c["drained_spans_per_s"]),
        "per_core": over(p["spans_per_cpu_s"], c["spans_per_cpu_s"]),
        "rss_peak": over(p["rss_peak_mib"], c["rss_peak_mib"]),
    }
    summary["pharos_over_otelcol"] = vs
    summary["otelcol"] = {"sustained_spans_per_s": sus(c), "processed_spans_per_s": c["processed_spans_per_s"],
                          "emitted_spans": c["stored_spans"], "traces_sampled": c["traces_sampled"],
                          "spans_per_cpu_s": c["spans_per_cpu_s"], "rss_peak_mib": c["rss_peak_mib"]}
    print()
    print(f"Pharos full / Collector (same load, same processors): sustained {vs['sustained']:.2f} "
          f"({fmt(sus(p))} vs {fmt(sus(c))} spans/s), processed {vs['processed']:.2f}, drained {vs['drained']:.2f}; "
          f"per core {vs['per_core']:.2f} ({fmt(p['spans_per_cpu_s'])} vs {fmt(c['spans_per_cpu_s'])} spans per "
          f"CPU-second); peak RSS {vs['rss_peak']:.2f} ({p['rss_peak_mib']:.0f} vs {c['rss_peak_mib']:.0f} MiB)")
    print(f"Collector: receiver accepted {c['receiver_accepted_spans']} spans (refused "
          f"{c['receiver_refused_spans']}), tail sampling kept {c['traces_sampled']} of {c['traces_received']} "
          f"traces ({c['traces_dropped_too_early']} dropped early) and emitted {c['stored_spans']} spans; "
          f"pharos stored {p['stored_spans']} of {p['processed_spans']}")
    print(json.dumps({"scenario": "ingest, full pipeline", "pharos": sus(p), "otelcol": sus(c),
                      "pharos_over_otelcol": vs}))
solo = [r for r in runs if r not in ("off", "full", "otelcol")]
if solo and "off" in R:
    print("each processor alone, processed spans/s relative to off: " + ", ".join(
        f"{r} {R[r]['processed_spans_per_s'] / R['off']['processed_spans_per_s']:.2f}" for r in solo))
json.dump(summary, open(f"{out}/pipeline.json", "w"), indent=1)
print(f"\nresults in {out}/pipeline.json")
PY
