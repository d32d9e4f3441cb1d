#!/usr/bin/env bash
# Metrics at rest and under query, side by side: Pharos, Prometheus (Debian, with
# --web.enable-remote-write-receiver) and VictoriaMetrics (Debian), one after the other on
# the same load, written by pharos-loadgen's remote-write history mode (past samples, in time
# order per series).
#
# 1. Query: QUERY_SERIES integer counters (10 jobs) over the last 65 minutes at 15 s; then
#    `sum by (job) (rate(bench_requests_total[5m]))` as a range query over the last hour at
#    15 s step, QUERY_RUNS times after two warm-up runs, once the server is idle (under 5% of a
#    core over 2 s): median and p90 latency, and the largest difference of each server's
#    answer from Prometheus's.
# 2. Disk: DISK_SERIES series shaped like a node's scrape (counters, counters of seconds,
#    gauges, constants; see `--values typical` in crates/pharos-loadgen) over the last DISK_HOURS
#    hours at 15 s; then each server compacts as it does by itself (VictoriaMetrics is asked
#    to merge at once) and the bytes of its compacted data are divided by the samples in it:
#    Pharos's blocks on the object store, Prometheus's blocks (not its head or WAL), all of
#    VictoriaMetrics's data directory.
#
# Every server listens on 127.0.0.1, every wait is bounded, every process this script starts
# is stopped on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
QUERY_SERIES="${QUERY_SERIES:-10000}"
QUERY_RUNS="${QUERY_RUNS:-20}"
DISK_SERIES="${DISK_SERIES:-10000}"
DISK_HOURS="${DISK_HOURS:-24}"
PHASES="${PHASES:-query disk}"
SERVERS="${SERVERS:-prometheus pharos victoria-metrics}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/pharos/target}"
WORK="${BENCH_WORK:-$(mktemp -d /tmp/pharos-mh-bench.XXXXXX)}"
mkdir -p "$WORK"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$REPO" && cargo build --release -p pharos --locked)
  (cd "$REPO" && cargo build --release -p pharos-loadgen --locked)
fi
for bin in prometheus victoria-metrics; do
  [[ " $SERVERS " == *" $bin "* ]] && ! command -v "$bin" >/dev/null && { echo "install $bin (apt-get install $bin)" >&2; exit 1; }
done
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

metric_sum() { # url, awk regex of the sample lines
  curl -s "$1" | awk -v re="$2" '$0 ~ re {s+=$NF} END {printf "%d", s}'
}

# start <server> <data dir>: sets PID, WRITE_PORT (remote write) and QUERY_URL
start() {
  local server=$1 data=$2
  rm -rf "$data" && mkdir -p "$data"
  case "$server" in
    pharos)
      "$PHAROS" serve --data-dir "$data" --set api.listen=127.0.0.1:13900 --set otlp.http.listen=127.0.0.1:14900 \
        --set otlp.grpc.listen=127.0.0.1:14901 --set metrics.max_series_per_tenant=1000000 \
        --set metrics.compaction_interval=10s --set metrics.flush_interval=10s >"$data.log" 2>&1 &
      PID=$!; WRITE_PORT=14900; QUERY_URL=http://127.0.0.1:13900 ;;
    prometheus)
      printf 'global:\n  scrape_interval: 1h\n' >"$data/prometheus.yml"
      prometheus --config.file="$data/prometheus.yml" --storage.tsdb.path="$data/tsdb" \
        --web.listen-address=127.0.0.1:19900 --web.enable-remote-write-receiver >"$data.log" 2>&1 &
      PID=$!; WRITE_PORT=19900; QUERY_URL=http://127.0.0.1:19900 ;;
    victoria-metrics)
      victoria-metrics -storageDataPath="$data/vm" -httpListenAddr=127.0.0.1:18900 -retentionPeriod=1y \
        -search.disableCache >"$data.log" 2>&1 &
      PID=$!; WRITE_PORT=18900; QUERY_URL=http://127.0.0.1:18900 ;;
  esac
  wait_port "$WRITE_PORT"
  wait_port "${QUERY_URL##*:}"
}

stop() {
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}

# backfill <server> <series> <seconds> <values>: prints the loadgen's JSON line
backfill() {
  "$LOADGEN" --protocol remote-write --signal metrics --series "$2" --history "$3" --step 15 --values "$4" \
    --batch 2000 --workers 4 --threads 2 --endpoint "127.0.0.1:$WRITE_PORT" --duration 1800 --timeout 30 \
    --label "$1" 2>"$WORK/$1.loadgen.log" | grep '^{' | tail -1
}

# until_stored <server> <samples>: waits (at most 5 minutes) until the server stores them
until_stored() {
  local target=$2 n=0
  for _ in $(seq 1 3000); do
    case "$1" in
      pharos) n="$(metric_sum "$QUERY_URL/metrics" '^pharos_metrics_samples_appended_total')" ;;
      prometheus) n="$(metric_sum "$QUERY_URL/metrics" '^prometheus_tsdb_head_samples_appended_total\\{type="float"\\}')" ;;
      victoria-metrics) n="$(metric_sum "$QUERY_URL/metrics" '^vm_rows_added_to_storage_total')" ;;
    esac
    [[ "$n" -ge "$target" ]] && return 0
    sleep 0.1
  done
  echo "$1 stored $n of $target samples" >&2
  return 1
}

# wait_idle: waits (at most 60 s) until the server used under 5% of a core over 2 s, so that
# no server's queries overlap the background work its ingest left (flushing, merging)
wait_idle() {
  local ticks before after hz
  hz="$(getconf CLK_TCK)"
  for _ in $(seq 1 30); do
    before="$(awk '{print $14 + $15}' "/proc/$PID/stat")"
    sleep 2
    after="$(awk '{print $14 + $15}' "/proc/$PID/stat")"
    ticks=$(( after - before ))
    (( ticks * 100 < hz * 2 * 5 )) && return 0
  done
  echo "server $PID still busy after 60 s" >&2
}

if [[ " $PHASES " == *" query "* ]]; then
  echo "## Query: sum by (job) (rate(bench_requests_total[5m])), $QUERY_SERIES series, 1 h at 15 s step"
  echo
  echo "| server | backfill samples/s | median ms | p90 ms | max relative difference from Prometheus |"
  echo "|---|---|---|---|---|"
  # One end time for every server, so the answers can be compared.
  end=$(( $(date +%s) / 15 * 15 ))
  for server in $SERVERS; do
    start "$server" "$WORK/query-$server"
    json="$(backfill "$server" "$QUERY_SERIES" 3900 counter)"
    printf '%s\n' "$json" >>"$WORK/results.jsonl"
    total="$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items_accepted"])')"
    rate="$(printf '%s' "$json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["items_per_sec"]))')"
    until_stored "$server" "$total"
    [[ "$server" == victoria-metrics ]] && curl -s "$QUERY_URL/internal/force_flush" >/dev/null
    wait_idle
    python3 - "$server" "$QUERY_URL" "$end" "$QUERY_RUNS" "$WORK" "$rate" <<'EOF'
import json, sys, time, urllib.parse, urllib.request
server, url, end, runs, work, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
form = urllib.parse.urlencode({"query": "sum by (job) (rate(bench_requests_total[5m]))",
                               "start": end - 3600, "end": end, "step": 15}).encode()
def ask():
    t = time.perf_counter()
    with urllib.request.urlopen(url + "/api/v1/query_range", data=form, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - t, json.loads(body)
for _ in range(2):
    ask()
times = []
for _ in range(runs):
    dt, answer = ask()
    times.append(dt * 1000)
times.sort()
got = {tuple(sorted(s["metric"].items())): {float(t): float(v) for t, v in s["values"]}
       for s in answer["data"]["result"]}
points = sum(len(v) for v in got.values())
json.dump({"series": [[list(k), v] for k, v in got.items()]}, open(f"{work}/answer-{server}.json", "w"))
diff = "reference"
if server != "prometheus":
    try:
        ref = {tuple(tuple(x) for x in k): {float(t): v for t, v in vals.items()}
               for k, vals in json.load(open(f"{work}/answer-prometheus.json"))["series"]}
        worst, missing = 0.0, 0
        for k, vals in ref.items():
            for t, v in vals.items():
                w = got.get(k, {}).get(t)
                if w is None:
                    missing += 1
                    continue
                worst = max(worst, abs(w - v) / max(abs(v), 1e-12))
        diff = f"{worst:.1e}" + (f", {missing} points missing" if missing else "")
    except FileNotFoundError:
        diff = "no Prometheus answer in this run"
p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
print(f"| {server} | {int(rate):,} | {p(0.5):.0f} | {p(0.9):.0f} | {diff} ({len(got)} series, {points} points) |")
EOF
    stop
  done
  echo
fi

if [[ " $PHASES " == *" disk "* ]]; then
  echo "## Disk: $DISK_SERIES series shaped like a node's scrape, $DISK_HOURS h at 15 s, after compaction"
  echo
  echo "| server | backfill samples/s | samples compacted | bytes compacted | bytes per sample | whole data directory |"
  echo "|---|---|---|---|---|---|"
  for server in $SERVERS; do
    data="$WORK/disk-$server"
    start "$server" "$data"
    json="$(backfill "$server" "$DISK_SERIES" $((DISK_HOURS * 3600)) typical)"
    printf '%s\n' "$json" >>"$WORK/results.jsonl"
    total="$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items_accepted"])')"
    rate="$(printf '%s' "$json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["items_per_sec"]))')"
    until_stored "$server" "$total"
    # Let the server compact by itself until nothing changes for a while (at most 10 minutes).
    last=""; same=0
    for _ in $(seq 1 120); do
      case "$server" in
        pharos)
          now="$(curl -s "$QUERY_URL/metrics" | awk '/^pharos_metrics_blocks |^pharos_metrics_block_bytes |^pharos_metrics_block_samples / {printf "%s ", $2}')" ;;
        prometheus)
          now="$(ls "$data/tsdb" | grep -c '^01' || true) $(metric_sum "$QUERY_URL/metrics" '^prometheus_tsdb_compactions_total')" ;;
        victoria-metrics)
          [[ -z "$last" ]] && { curl -s "$QUERY_URL/internal/force_flush" >/dev/null; curl -s "$QUERY_URL/internal/force_merge" >/dev/null; }
          now="$(du -sb "$data/vm" | cut -f1) $(metric_sum "$QUERY_URL/metrics" '^vm_active_merges')" ;;
      esac
      if [[ "$now" == "$last" ]]; then same=$((same + 1)); else same=0; fi
      last="$now"
      [[ $same -ge 6 ]] && break
      sleep 5
    done
    case "$server" in
      pharos)
        m="$(curl -s "$QUERY_URL/metrics")"
        samples="$(printf '%s\n' "$m" | awk '/^pharos_metrics_block_samples / {printf "%d", $2}')"
        bytes="$(printf '%s\n' "$m" | awk '/^pharos_metrics_block_bytes / {printf "%d", $2}')" ;;
      prometheus)
        read -r samples bytes < <(python3 - "$data/tsdb" <<'EOF'
import json, os, sys
root = sys.argv[1]; samples = size = 0
for d in os.listdir(root):
    meta = os.path.join(root, d, "meta.json")
    if os.path.exists(meta):
        samples += json.load(open(meta))["stats"]["numSamples"]
        for dirpath, _, files in os.walk(os.path.join(root, d)):
            size += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
print(samples, size)
EOF
        ) ;;
      victoria-metrics)
        samples="$total"
        bytes="$(du -sb "$data/vm" | cut -f1)" ;;
    esac
    stop
    whole="$(du -sb "$data" | cut -f1)"
    python3 -c "
s, b, w, r = $samples, $bytes, $whole, $rate
print(f'| $server | {r:,} | {s:,} | {b:,} | {b / max(s, 1):.2f} | {w / 1048576:.0f} MiB |')"
  done
  echo
fi
echo "results in $WORK"
