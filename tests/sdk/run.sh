#!/usr/bin/env bash
# Real OpenTelemetry SDK clients against a real pharos:
#   python/  the OpenTelemetry Python SDK, OTLP/gRPC and OTLP/HTTP protobuf exporters (pytest)
#   node/    @opentelemetry/sdk-node with the OTLP/HTTP JSON exporters (node:test)
# Each test starts its own `pharos serve` on ephemeral loopback ports.
#
# Needs Python 3.11+ with pip, Node 20+ with npm, and either PHAROS_BIN pointing at a built pharos
# or cargo (then the binary is built here, into $CARGO_TARGET_DIR).
# Usage: tests/sdk/run.sh            (from anywhere)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

if [[ -z "${PHAROS_BIN:-}" ]]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pharos/target}"
  echo "==> building pharos (cargo build -p pharos, target dir $CARGO_TARGET_DIR)"
  (cd "$repo" && cargo build -p pharos) || { echo "building pharos failed" >&2; exit 1; }
  export PHAROS_BIN="$CARGO_TARGET_DIR/debug/pharos"
fi
if [[ ! -x "$PHAROS_BIN" ]]; then
  echo "PHAROS_BIN=$PHAROS_BIN is not an executable" >&2
  exit 1
fi
echo "==> pharos binary: $PHAROS_BIN"

echo "==> installing Python requirements"
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r python/requirements.txt \
  || { echo "pip install failed" >&2; exit 1; }

echo "==> installing Node packages (npm ci)"
(cd node && npm ci --no-audit --no-fund --loglevel=error) || { echo "npm ci failed" >&2; exit 1; }

status=0

echo "==> Python SDK tests"
python3 -m pytest -q python || status=1

echo "==> Node SDK tests"
node --test node/ || status=1

if [[ $status -ne 0 ]]; then
  echo "==> SDK tests FAILED" >&2
else
  echo "==> SDK tests passed"
fi
exit $status
