#!/usr/bin/env bash
# Builds a peer OpenTelemetry Collector with the collector builder (ocb) installed from Go
# modules. Idempotent: does nothing if the binary already exists (FORCE=1 rebuilds).
#
#   build-collector.sh            the ingest benchmark's Collector (builder-config.yaml: OTLP
#                                 receiver, nop and debug exporters, file_storage extension)
#                                 -> $PHAROS_BENCH_CACHE/otelcol
#   build-collector.sh pipeline   the pipeline benchmark's Collector (builder-pipeline.yaml: also
#                                 batch, memory_limiter, redaction, attributes and tail_sampling
#                                 processors, the spanmetrics connector)
#                                 -> $PHAROS_BENCH_CACHE/otelcol-pipeline
#
# PHAROS_BENCH_CACHE defaults to ~/.cache/pharos-bench. Prints the binary path on its last line.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${PHAROS_BENCH_CACHE:-$HOME/.cache/pharos-bench}"
# The builder's version must be the manifests' release (it generates code for that API).
BUILDER_VERSION="${OCB_VERSION:-v0.165.0}"
case "${1:-plain}" in
  plain) MANIFEST=builder-config.yaml; SRC=otelcol-src/otelcol-pharos-bench; OUT="$CACHE/otelcol" ;;
  pipeline) MANIFEST=builder-pipeline.yaml; SRC=otelcol-pipeline-src/otelcol-pharos-pipeline; OUT="$CACHE/otelcol-pipeline" ;;
  *) echo "usage: $0 [pipeline]" >&2; exit 2 ;;
esac

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
cp "$HERE/$MANIFEST" "$CACHE/$MANIFEST"
echo "building $OUT from $MANIFEST (several minutes on 2 cores; more for the pipeline one)" >&2
nice -n 10 "$BUILDER" --config="$CACHE/$MANIFEST" >&2
cp "$CACHE/$SRC" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
"$OUT" --version >&2 || true
echo "$OUT"
