#!/usr/bin/env bash
# Build the peer OpenTelemetry Collector for the ingest benchmark, using the
# collector builder (ocb) installed from Go modules. Idempotent: does nothing
# if the binary already exists (set FORCE=1 to rebuild).
#
# Output: $PHAROS_BENCH_CACHE/otelcol (default ~/.cache/pharos-bench/otelcol)
# Prints the binary path on its last line.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${PHAROS_BENCH_CACHE:-$HOME/.cache/pharos-bench}"
BUILDER_VERSION="${OCB_VERSION:-v0.165.0}"
OUT="$CACHE/otelcol"

if [[ -x "$OUT" && "${FORCE:-0}" != 1 ]]; then
  echo "collector already built: $OUT" >&2
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "go not found" >&2; exit 1; }
mkdir -p "$CACHE/gobin"

BUILDER="$CACHE/gobin/builder"
if [[ ! -x "$BUILDER" ]]; then
  echo "installing go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION" >&2
  GOBIN="$CACHE/gobin" go install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION"
fi

cd "$CACHE"
cp "$HERE/builder-config.yaml" "$CACHE/builder-config.yaml"
echo "building collector (this takes several minutes on 2 cores)" >&2
"$BUILDER" --config="$CACHE/builder-config.yaml" >&2
cp "$CACHE/otelcol-src/otelcol-pharos-bench" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
"$OUT" --version >&2 || true
echo "$OUT"
