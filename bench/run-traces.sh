#!/usr/bin/env bash
# Traces end to end: OTLP/gRPC spans from pharos-loadgen into durable Parquet blocks.
# Prints (and writes to $OUT/traces.json):
#   - acknowledged spans/s (durable in the write-ahead log) and stored spans/s (decoded by the
#     processors into the trace store, measured until the queue is empty);
#   - bytes on disk per span in blocks, beside the raw OTLP protobuf bytes per span;
#   - peak resident memory of pharos during ingest, and after the queries;
#   - trace-by-id latency (p50/p99 over 200 lookups of traces in blocks);
#   - TraceQL search scan rates (spans inspected per second; a search reads one block at a
#     time, so about one core), for queries on a dedicated attribute column, on intrinsics, on
#     an attribute without a column, and a structural query.
# No peer runs here: Tempo is not installable on this machine; see docs/benchmarks.md.
# Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
DURATION="${DURATION:-20}"       # measured seconds of load
RATE="${RATE:-0}"                # spans/s; 0 = as fast as possible
WORKERS="${WORKERS:-16}"
BATCH="${BATCH:-500}"
LOOKUPS="${LOOKUPS:-200}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/pharos/target}"
PHAROS="$CARGO_TARGET_DIR/release/pharos"
LOADGEN="$CARGO_TARGET_DIR/release/pharos-loadgen"
WORK="${BENCH_WORK:-$(mktemp -d /tmp/pharos-traces-bench.XXXXXX)}"
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
  --set traces.flush_interval=5s --set traces.max_search_spans=100000000 --set traces.query_timeout=10m \
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

# Peak RSS, sampled every half second.
( peak=0; while kill -0 "$PID" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status" 2>/dev/null || echo 0)
    (( rss > peak )) && peak=$rss && echo "$peak" >"$OUT/rss_peak_kib"
    sleep 0.5
  done ) &
SAMPLER=$!

START_NS=$(date +%s%N)
"$LOADGEN" --protocol grpc --signal traces --endpoint "$GRPC" --duration "$DURATION" --warmup 2 \
  --workers "$WORKERS" --batch "$BATCH" --rate "$RATE" --label pharos-traces | tee "$OUT/loadgen.txt"
tail -1 "$OUT/loadgen.txt" >"$OUT/loadgen.json"

python3 - "$API" "$OUT" "$START_NS" "$LOOKUPS" "$WORK/data" "$PID" <<'PY'
import json, os, re, sys, time, urllib.parse, urllib.request
api, out, start_ns, lookups, data_dir, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]

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
    with urllib.request.urlopen(f"http://{api}{path}", timeout=600) as r:
        body = r.read()
    return time.perf_counter() - t, body

# Stored rate: until every record in the queue has been processed.
while True:
    m = metrics()
    if m.get("pharos_queue_depth_records", 1) == 0:
        break
    time.sleep(0.2)
done_ns = time.time_ns()
def rss_peak():
    return int(open(f"{out}/rss_peak_kib").read()) if os.path.exists(f"{out}/rss_peak_kib") else 0
rss_ingest = rss_peak()
stored = m.get("pharos_traces_spans_stored_total", 0)
loadgen = json.load(open(f"{out}/loadgen.json"))
# Let every processor flush its head into blocks (flush_interval 5s) before the lookups.
while True:
    m = metrics()
    time.sleep(6)
    if metrics().get("pharos_traces_blocks_flushed_total", 0) == m.get("pharos_traces_blocks_flushed_total", 0):
        break
now = int(time.time())
_, body = get("/api/search?" + urllib.parse.urlencode({"q": "{ }", "limit": lookups, "start": now - 3600, "end": now + 60}))
ids = [t["traceID"] for t in json.loads(body)["traces"]]
lat = []
for i in range(lookups):
    secs, _ = get(f"/api/traces/{ids[i % len(ids)]}")
    lat.append(secs * 1000)
lat.sort()
# TraceQL searches that match nothing, so that each inspects every span of the range; the
# prefilter scans the columns each one tests (see docs/traces.md, Searches).
scans = {
    # a span attribute with a dedicated column
    "dedicated_attribute": '{ span.http.request.method = "NO-SUCH-METHOD" }',
    # intrinsic columns and the service name
    "intrinsics": '{ resource.service.name = "no-such-service" && duration > 1s }',
    # an attribute without a column of its own: the encoded attributes' bytes are searched
    "generic_attribute": '{ span.db.query.text = "no such statement" }',
    # a structural query: spans of both sides are needed
    "structural": '{ span.http.response.status_code = 599 } >> { kind = client }',
}
scan_results = {}
for label, q in scans.items():
    secs, body = get("/api/search?" + urllib.parse.urlencode({"q": q, "limit": 20, "start": now - 3600, "end": now + 60}))
    n = int(json.loads(body)["metrics"]["inspectedSpans"])
    scan_results[label] = {"query": q, "spans": n, "seconds": round(secs, 3), "spans_per_s": round(n / secs)}
blocks = []
for root, _, files in os.walk(os.path.join(data_dir, "blocks", "traces")):
    if "meta.json" in files:
        blocks.append(json.load(open(os.path.join(root, "meta.json"))))
block_spans = sum(b["spans"] for b in blocks)
block_bytes = sum(b["size_bytes"] for b in blocks)
rss = rss_peak()
result = {
    "acked_spans_per_s": loadgen["items_per_sec"],
    "stored_spans": int(stored),
    "stored_spans_per_s": round(stored / ((done_ns - start_ns) / 1e9)),
    "raw_otlp_bytes_per_span": round(loadgen["request_bytes_avg"] / loadgen["batch"], 1),
    "blocks": len(blocks),
    "block_spans": block_spans,
    "block_bytes_per_span": round(block_bytes / max(block_spans, 1), 1),
    "rss_peak_ingest_mib": round(rss_ingest / 1024),
    "rss_peak_with_queries_mib": round(rss / 1024),
    "trace_by_id_ms": {"p50": round(lat[len(lat) // 2], 2), "p99": round(lat[int(len(lat) * 0.99)], 2), "traces": len(ids)},
    "search_scans": scan_results,
}
json.dump(result, open(f"{out}/traces.json", "w"), indent=1)
print(json.dumps(result, indent=1))
PY
kill -TERM "$PID"; wait "$PID" || true; PID=""
echo "results in $OUT"
