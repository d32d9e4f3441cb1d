#!/usr/bin/env bash
# Cross-check of Pharos's load generator against telemetrygen, the OpenTelemetry project's.
#
# One Pharos (pinned to SERVER_CPU [0]); then, one after the other, for each signal, both tools
# against it at the same fixed rate for the same time (pinned to LOAD_CPU [1]):
#   pharos-loadgen --protocol grpc --signal S --rate RATE --duration DURATION --warmup 0
#   telemetrygen S --rate RATE/TG_WORKERS --workers TG_WORKERS --duration DURATION
# and compares what each tool says it delivered (pharos-loadgen: items acknowledged;
# telemetrygen: items generated, summed over the "traces generated" / "logs generated" lines,
# a trace being 1 + --child-spans spans) with what Pharos counted for it
# (pharos_ingest_items_accepted_total on its /metrics, before and after), and the two tools'
# rates with each other.
#
# Prints a line per signal on stderr and JSON lines (bench/aggregate.py's form) on stdout.
# Exits 1 when a ratio is off by more than TOLERANCE [0.10]: a tool's count against Pharos's,
# or pharos-loadgen's rate against telemetrygen's.
#
# Knobs (environment): RATE [10000] items/s, DURATION [10] s, WORKERS [4] (pharos-loadgen),
# TG_WORKERS [RATE/250, at least 4] (telemetrygen), SIGNALS
# ["traces logs"], TOLERANCE, PHAROS, LOADGEN, TELEMETRYGEN (default: the release build and
# the cached peer from bench/peers/install.sh), BENCH_WORK.
# Listens on 127.0.0.1 only; every run is bounded in time; stops what it started.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RATE="${RATE:-10000}"
DURATION="${DURATION:-10}"
WORKERS="${WORKERS:-4}"
# telemetrygen waits on a rate limiter (no burst) before each item, which one worker cannot do
# much more than ~1,500 times a second here, and its logs workers stop generating while they
# export each batch of 100: time lost from the rate. 250 items/s per worker keeps that small.
TG_WORKERS="${TG_WORKERS:-$(( RATE / 250 > 4 ? RATE / 250 : 4 ))}"
SIGNALS="${SIGNALS:-traces logs}"
TOLERANCE="${TOLERANCE:-0.10}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
(($(nproc) < 2)) && SERVER_CPU=0 LOAD_CPU=0
TARGET="${CARGO_TARGET_DIR:-/root/.cache/pharos/target}/release"
PHAROS="${PHAROS:-$TARGET/pharos}"
LOADGEN="${LOADGEN:-$TARGET/pharos-loadgen}"
TELEMETRYGEN="${TELEMETRYGEN:-${PHAROS_BENCH_CACHE:-$HOME/.cache/pharos-bench}/gobin/telemetrygen}"
WORK="${BENCH_WORK:-$(mktemp -d /tmp/pharos-crosscheck.XXXXXX)}"
mkdir -p "$WORK"
for b in "$PHAROS" "$LOADGEN" "$TELEMETRYGEN"; do
  [[ -x "$b" ]] || { echo "missing $b (cargo build --release -p pharos -p pharos-loadgen; bench/peers/install.sh telemetrygen)" >&2; exit 2; }
done

PID=""
cleanup() {
  if [[ -n "$PID" ]]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  [[ "${KEEP_WORK:-0}" == 1 ]] || rm -rf "$WORK/data"
}
trap cleanup EXIT

rm -rf "$WORK/data"
taskset -c "$SERVER_CPU" "$PHAROS" serve --data-dir "$WORK/data" --set api.listen=127.0.0.1:0 \
  --set otlp.http.listen=127.0.0.1:0 --set otlp.grpc.listen=127.0.0.1:0 >"$WORK/pharos.log" 2>&1 &
PID=$!
READY=""
for _ in $(seq 1 300); do
  READY="$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/pharos.log" | grep -m1 'pharos is ready' || true)"
  [[ -n "$READY" ]] && break
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$READY" ]] || { tail -20 "$WORK/pharos.log" >&2; echo "pharos did not start" >&2; exit 2; }
GRPC="$(sed -E 's/.*otlp_grpc=([^ ]+).*/\1/' <<<"$READY")"
API="$(sed -E 's/.*api=([^ ]+).*/\1/' <<<"$READY")"

accepted() { # signal: Pharos's own count of accepted items
  curl -s --max-time 5 "http://$API/metrics" |
    awk -v s="signal=\"$1\"" '/^pharos_ingest_items_accepted_total/ && index($0, s) { t += $NF } END { printf "%d\n", t }'
}

fail=0
for sig in $SIGNALS; do
  # pharos-loadgen: RATE items/s in batches of 500 over WORKERS workers.
  a0="$(accepted "$sig")"
  taskset -c "$LOAD_CPU" "$LOADGEN" --protocol grpc --signal "$sig" --endpoint "$GRPC" --rate "$RATE" \
    --duration "$DURATION" --warmup 0 --workers "$WORKERS" --batch 500 --threads 1 --label crosscheck \
    >"$WORK/loadgen-$sig.txt" 2>"$WORK/loadgen-$sig.err" || true
  a1="$(accepted "$sig")"
  # telemetrygen: its --rate is per worker, in spans or log records (a trace is 1 + --child-spans
  # spans; the limiter counts spans).
  per_unit=1 child=()
  if [[ "$sig" == traces ]]; then per_unit=2 child=(--child-spans 1); fi
  tg_rate="$(python3 -c "print($RATE / $TG_WORKERS)")"
  timeout $((${DURATION%.*} + 60)) taskset -c "$LOAD_CPU" "$TELEMETRYGEN" "$sig" --otlp-endpoint "$GRPC" \
    --otlp-insecure --rate "$tg_rate" --workers "$TG_WORKERS" --duration "${DURATION}s" "${child[@]}" \
    >"$WORK/telemetrygen-$sig.txt" 2>&1 || true
  a2="$(accepted "$sig")"
  python3 - "$sig" "$RATE" "$DURATION" "$TOLERANCE" "$per_unit" "$a0" "$a1" "$a2" \
    "$WORK/loadgen-$sig.txt" "$WORK/telemetrygen-$sig.txt" <<'PY' || fail=1
import json, re, sys
sig, rate, duration, tol, per_unit, a0, a1, a2, lg_out, tg_out = sys.argv[1:]
rate, duration, tol, per_unit = float(rate), float(duration), float(tol), int(per_unit)
a0, a1, a2 = int(a0), int(a1), int(a2)
lg = next((json.loads(l) for l in open(lg_out) if l.startswith('{"kind":"pharos-loadgen"')), None)
unit = "traces" if sig == "traces" else "logs"
generated = [int(m.group(1)) for m in re.finditer(rf'{unit} generated\s+\{{[^}}]*"{unit}": (\d+)', open(tg_out).read())]
lg_sent = lg["items_accepted"] if lg else 0
tg_sent = sum(generated) * per_unit
lg_server, tg_server = a1 - a0, a2 - a1
def ratio(a, b):
    return round(a / b, 3) if b else None
checks = {
    "pharos-loadgen / Pharos's count": ratio(lg_sent, lg_server),
    "telemetrygen / Pharos's count": ratio(tg_sent, tg_server),
    "pharos-loadgen / telemetrygen (as counted by Pharos)": ratio(lg_server, tg_server),
    "pharos-loadgen / telemetrygen (as reported by each)": ratio(lg_sent, tg_sent),
}
bad = [k for k, v in checks.items() if v is None or abs(v - 1) > tol]
print(f"[crosscheck] {sig} at {rate:.0f}/s for {duration:.0f}s: pharos-loadgen reported {lg_sent} "
      f"(Pharos counted {lg_server}), telemetrygen reported {tg_sent} from {len(generated)} workers "
      f"(Pharos counted {tg_server})", file=sys.stderr)
for k, v in checks.items():
    print(f"[crosscheck]   {k}: {v}{'  <-- off by more than %d%%' % (tol * 100) if k in bad else ''}", file=sys.stderr)
print(json.dumps({"scenario": "load generator cross-check", "item": sig, "server": "pharos-loadgen",
                  "value": checks["pharos-loadgen / telemetrygen (as counted by Pharos)"], "unit": "ratio",
                  "better": "one", "checks": checks, "ok": not bad, "rate": rate, "duration_s": duration,
                  "pharos_loadgen": {"reported": lg_sent, "pharos_counted": lg_server,
                                     "errors": lg.get("errors") if lg else "no result"},
                  "telemetrygen": {"reported": tg_sent, "pharos_counted": tg_server}}))
sys.exit(1 if bad else 0)
PY
done
if ((fail)); then
  echo "[crosscheck] FAILED: the counts disagree by more than ${TOLERANCE} (see above; outputs in $WORK)" >&2
  exit 1
fi
echo "[crosscheck] ok: within ${TOLERANCE}" >&2
