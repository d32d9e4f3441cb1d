#!/usr/bin/env bash
# Logs end to end: OTLP/gRPC log records from pharos-loadgen into durable Parquet log blocks.
# Prints (and writes to $OUT/logs.json):
#   - acknowledged lines/s (durable in the write-ahead log); lines/s in the store (decoded by
#     the processors into the log store's head, queryable: until the last line is there) and
#     stored lines/s (until the last is in a block: the queue has nothing uncommitted, which
#     may wait up to logs.flush_interval, 5 s, for the last flush); the server's CPU time
#     (user + system) per line until the last is in the store;
#   - stored size: block bytes against the raw bytes of the lines (and of lines plus
#     structured metadata);
#   - peak resident memory of pharos during ingest;
#   - a line filter that matches nothing (`|= "needle"`) over everything: bytes of lines
#     scanned per second, and per second of the server's CPU (per core);
#   - `sum by (severity_text) (count_over_time({service_name="checkout"} |= "failed" [1m]))` over
#     the whole range, and the same over every stream: seconds.
# No peer runs here (Loki is not installable on this machine); see docs/benchmarks.md.
# Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
DURATION="${DURATION:-20}"       # measured seconds of load
RATE="${RATE:-0}"                # lines/s; 0 = as fast as possible
WORKERS="${WORKERS:-16}"
BATCH="${BATCH:-1000}"
LINE_BYTES="${LINE_BYTES:-150}"  # log lines padded to this size (the issue's ~150-byte lines)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/pharos/target}"
PHAROS="$CARGO_TARGET_DIR/release/pharos"
LOADGEN="$CARGO_TARGET_DIR/release/pharos-loadgen"
WORK="${BENCH_WORK:-$(mktemp -d /tmp/pharos-logs-bench.XXXXXX)}"
OUT="${BENCH_OUT:-$WORK/results}"
mkdir -p "$OUT"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$REPO" && cargo build --release -p pharos --locked)
  (cd "$REPO" && cargo build --release -p pharos-loadgen --locked)
fi

PID=""
SAMPLER=""
cleanup() {
  [[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null || true
  [[ -n "$PID" ]] && kill -9 "$PID" 2>/dev/null || true
}
trap cleanup EXIT

"$PHAROS" serve --data-dir "$WORK/data" \
  --set api.listen=127.0.0.1:0 --set otlp.http.listen=127.0.0.1:0 --set otlp.grpc.listen=127.0.0.1:0 \
  --set logs.flush_interval=5s --set logs.query_timeout=10m "$@" \
  >"$OUT/pharos.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do
  grep -q "pharos is ready" "$OUT/pharos.log" 2>/dev/null && break
  sleep 0.1
done
READY="$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/pharos.log" | grep -m1 "pharos is ready")"
GRPC="$(sed -E 's/.*otlp_grpc=([^ ]+).*/\1/' <<<"$READY")"
API="$(sed -E 's/.*api=([^ ]+).*/\1/' <<<"$READY")"
echo "pharos ready: grpc=$GRPC api=$API (data in $WORK/data)"

( peak=0; while kill -0 "$PID" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status" 2>/dev/null || echo 0)
    (( rss > peak )) && peak=$rss && echo "$peak" >"$OUT/rss_peak_kib"
    sleep 0.5
  done ) &
SAMPLER=$!

START_NS=$(date +%s%N)
"$LOADGEN" --protocol grpc --signal logs --endpoint "$GRPC" --duration "$DURATION" --warmup 2 \
  --workers "$WORKERS" --batch "$BATCH" --rate "$RATE" --log-body-size "$LINE_BYTES" \
  --label pharos-logs | tee "$OUT/loadgen.txt"
tail -1 "$OUT/loadgen.txt" >"$OUT/loadgen.json"

python3 - "$API" "$OUT" "$START_NS" "$WORK/data" "$PID" <<'PY'
import json, os, re, sys, time, urllib.parse, urllib.request
api, out, start_ns, data_dir, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]

def cpu_seconds():
    # utime + stime of the server: less sensitive than rates to what else the host runs.
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def metrics():
    text = urllib.request.urlopen(f"http://{api}/metrics", timeout=30).read().decode()
    vals = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = re.split(r"[{ ]", line, 1)[0]
        vals[name] = vals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return vals

def get(path):
    t = time.perf_counter()
    with urllib.request.urlopen(f"http://{api}{path}", timeout=900) as r:
        body = r.read()
    return time.perf_counter() - t, json.loads(body)

# Every line is in the store (its head) when the count stops moving; in blocks when the queue
# has nothing uncommitted (the processors commit behind blocks, flushed every flush_interval).
in_store = (-1.0, 0, 0.0)
while True:
    m = metrics()
    count = m.get("pharos_logs_entries_stored_total", 0)
    if count != in_store[0]:
        in_store = (count, time.time_ns(), cpu_seconds())
    if m.get("pharos_queue_depth_records", 1) == 0:
        break
    time.sleep(0.1)
done_ns = time.time_ns()
m = metrics()
stored = m.get("pharos_logs_entries_stored_total", 0)
rss_ingest = int(open(f"{out}/rss_peak_kib").read()) if os.path.exists(f"{out}/rss_peak_kib") else 0
loadgen = json.load(open(f"{out}/loadgen.json"))
# Every processor flushes its head (flush_interval 5s) before the queries: they read blocks.
while True:
    before = metrics().get("pharos_logs_blocks_flushed_total", 0)
    time.sleep(6)
    if metrics().get("pharos_logs_blocks_flushed_total", 0) == before:
        break
blocks = []
for root, _, files in os.walk(os.path.join(data_dir, "blocks", "logs")):
    if "meta.json" in files:
        blocks.append(json.load(open(os.path.join(root, "meta.json"))))
block_bytes = sum(b["size_bytes"] for b in blocks)
line_bytes = sum(s["bytes"] for b in blocks for s in b["streams"])
raw_bytes = sum(b["raw_bytes"] for b in blocks)
entries = sum(b["entries"] for b in blocks)
start = min(b["min_time"] for b in blocks) - 1
end = max(b["max_time"] for b in blocks) + 1

def query_range(q, **extra):
    # Metric steps end a minute after the newest entry so that its window is counted.
    params = {"query": q, "start": start, "end": end + (60 * 10**9 if "step" in extra else 0), **extra}
    return get("/loki/api/v1/query_range?" + urllib.parse.urlencode(params))

cpu_before = cpu_seconds()
secs, body = query_range('{service_name=~".+"} |= "no-such-needle"', limit=100)
cpu = cpu_seconds() - cpu_before
summary = body["data"]["stats"]["summary"]
# Per core: the bytes over the server's CPU time for the query (blocks are read in parallel).
scan = {"seconds": round(secs, 3), "bytes": summary["totalBytesProcessed"], "lines": summary["totalLinesProcessed"],
        "mb_per_s": round(summary["totalBytesProcessed"] / secs / 1e6, 1),
        "cpu_seconds": round(cpu, 2),
        "mb_per_cpu_s": round(summary["totalBytesProcessed"] / max(cpu, 0.01) / 1e6, 1)}
counts = {}
for label, q in {
    "one_service": 'sum by (severity_text) (count_over_time({service_name="checkout"} |= "failed" [1m]))',
    "every_stream": 'sum by (severity_text) (count_over_time({service_name=~".+"} |= "failed" [1m]))',
}.items():
    cpu_before = cpu_seconds()
    secs, body = query_range(q, step="60s")
    cpu = cpu_seconds() - cpu_before
    s = body["data"]["stats"]["summary"]
    counts[label] = {"query": q, "seconds": round(secs, 3), "bytes": s["totalBytesProcessed"],
                     "cpu_seconds": round(cpu, 2), "series": len(body["data"]["result"])}
rss = int(open(f"{out}/rss_peak_kib").read()) if os.path.exists(f"{out}/rss_peak_kib") else 0
result = {
    "acked_lines_per_s": loadgen["items_per_sec"],
    "stored_lines": int(stored),
    "stored_lines_per_s": round(stored / ((done_ns - start_ns) / 1e9)),
    "in_store_lines_per_s": round(stored / ((in_store[1] - start_ns) / 1e9)),
    "server_cpu_us_per_line_in_store": round(in_store[2] * 1e6 / max(stored, 1), 2),
    "raw_otlp_bytes_per_line": round(loadgen["request_bytes_avg"] / loadgen["batch"], 1),
    "blocks": len(blocks),
    "block_entries": entries,
    "line_bytes": line_bytes,
    "line_and_metadata_bytes": raw_bytes,
    "block_bytes": block_bytes,
    "stored_pct_of_line_bytes": round(100 * block_bytes / max(line_bytes, 1), 1),
    "stored_pct_of_line_and_metadata_bytes": round(100 * block_bytes / max(raw_bytes, 1), 1),
    "rss_peak_ingest_mib": round(rss_ingest / 1024),
    "rss_peak_with_queries_mib": round(rss / 1024),
    "line_filter_scan": scan,
    "count_queries": counts,
}
json.dump(result, open(f"{out}/logs.json", "w"), indent=1)
print(json.dumps(result, indent=1))
PY
kill -TERM "$PID"; wait "$PID" || true; PID=""
echo "results in $OUT"
