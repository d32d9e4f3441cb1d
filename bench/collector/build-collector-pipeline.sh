#!/usr/bin/env bash
# Build the peer OpenTelemetry Collector of the pipeline benchmark (bench/run-pipeline.sh): the
# components of builder-pipeline.yaml (OTLP receiver; batch, memory_limiter, redaction,
# attributes and tail_sampling processors; spanmetrics connector; nop and debug exporters;
# file_storage extension), with the collector builder (ocb) installed from Go modules.
# Idempotent: does nothing if the binary already exists (FORCE=1 rebuilds). The first build
# takes a long time on 2 cores (many contrib modules).
#
# Output: $PHAROS_BENCH_CACHE/otelcol-pipeline (default ~/.cache/pharos-bench/otelcol-pipeline)
# Prints the binary path on its last line.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${PHAROS_BENCH_CACHE:-$HOME/.cache/pharos-bench}"
# The builder's version must be the manifest's release (it generates code for that API).
BUILDER_VERSION="${OCB_VERSION:-v0.165.0}"
OUT="$CACHE/otelcol-pipeline"

if [[ -x "$OUT" && "${FORCE:-0}" != 1 ]]; then
  echo "pipeline collector already built: $OUT" >&2
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "go not found" >&2; exit 1; }
mkdir -p "$CACHE/gobin"

# Shared with build-collector.sh (same release).
BUILDER="$CACHE/gobin/builder"
if [[ ! -x "$BUILDER" ]]; then
  echo "installing go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION" >&2
  GOBIN="$CACHE/gobin" go install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION"
fi

cd "$CACHE"
cp "$HERE/builder-pipeline.yaml" "$CACHE/builder-pipeline.yaml"
echo "building the pipeline collector (ten minutes or more on 2 cores)" >&2
nice -n 10 "$BUILDER" --config="$CACHE/builder-pipeline.yaml" >&2
cp "$CACHE/otelcol-pipeline-src/otelcol-pharos-pipeline" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
"$OUT" --version >&2 || true
echo "$OUT"
