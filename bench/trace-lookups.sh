#!/usr/bin/env bash
# Trace lookups and TraceQL scans against the data directory of an earlier bench/run-traces.sh
# run (BENCH_WORK=dir keeps it), with extra --set flags, e.g. traces.compaction_interval=1s to
# measure while the compactor merges blocks. Listens on 127.0.0.1 and stops by itself.
# Usage: bench/trace-lookups.sh DATA_DIR [--set key=value ...]
set -euo pipefail
DATA=$1; shift
PHAROS="${CARGO_TARGET_DIR:-/root/.cache/pharos/target}/release/pharos"
LOG="$(mktemp /tmp/pharos-lookups.XXXXXX.log)"
$PHAROS serve --data-dir "$DATA" --set api.listen=127.0.0.1:0 --set otlp.http.listen=127.0.0.1:0 --set otlp.grpc.listen=127.0.0.1:0 --set traces.max_search_spans=100000000 --set traces.query_timeout=10m "$@" >$LOG 2>&1 &
PID=$!
trap 'kill -9 $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do grep -q "caches loaded" $LOG 2>/dev/null && break; sleep 0.1; done
READY="$(sed 's/\x1b\[[0-9;]*m//g' $LOG | grep -m1 "pharos is ready")"
API="$(sed -E 's/.*api=([^ ]+).*/\1/' <<<"$READY")"
python3 - "$API" <<'PY'
import json, sys, time, urllib.parse, urllib.request
api = sys.argv[1]
def get(path):
    t = time.perf_counter()
    with urllib.request.urlopen(f"http://{api}{path}", timeout=600) as r:
        body = r.read()
    return time.perf_counter() - t, body
now = int(time.time())
_, body = get("/api/search?" + urllib.parse.urlencode({"q": "{ }", "limit": 200, "start": now - 7200, "end": now + 60}))
ids = [t["traceID"] for t in json.loads(body)["traces"]]
lat = []
for i in range(200):
    secs, body = get(f"/api/traces/{ids[i % len(ids)]}")
    lat.append(secs * 1000)
lat.sort()
print("trace by id p50 %.2f p90 %.2f p99 %.2f max %.2f ms over %d traces" % (lat[100], lat[180], lat[198], lat[-1], len(ids)))
for q in ['{ span.http.request.method = "NO-SUCH-METHOD" }', '{ resource.service.name = "no-such-service" && duration > 1s }', '{ span.http.response.status_code = 503 } >> { kind = client }', '{ span.db.query.text = "nothing like this" }']:
    secs, body = get("/api/search?" + urllib.parse.urlencode({"q": q, "limit": 20, "start": now - 7200, "end": now + 60}))
    m = json.loads(body)["metrics"]
    print("%-70s %.3f s, %s spans inspected, %.1fM spans/s, %d traces" % (q, secs, m["inspectedSpans"], int(m["inspectedSpans"]) / secs / 1e6, len(json.loads(body)["traces"])))
PY
