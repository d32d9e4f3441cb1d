#!/usr/bin/env bash
# Installs the peers of `bench/run` (idempotent: whatever is already there is kept).
#
#   bench/peers/install.sh [all | apt | otelcol | rotel | telemetrygen]...
#
#   apt           Prometheus and VictoriaMetrics from the Debian packages `prometheus` and
#                 `victoria-metrics` (apt-get; needs root). Their services are not used:
#                 bench/run starts each binary itself on 127.0.0.1.
#   otelcol       the OpenTelemetry Collector built with its builder from Go modules
#                 (bench/collector/build-collector.sh: OTLP receiver, nop and debug exporters,
#                 file_storage extension), and the pipeline benchmark's Collector with the contrib
#                 processors (bench/collector/build-collector.sh pipeline: otelcol-pipeline).
#   rotel         rotel, a Rust OpenTelemetry collector packaged as a Python wheel, installed
#                 with pip into a virtual environment of its own.
#   telemetrygen  the OpenTelemetry load generator, `go install`ed from its Go module.
#
# Everything goes under $PHAROS_BENCH_CACHE (default ~/.cache/pharos-bench). At the end the
# script writes $PHAROS_BENCH_CACHE/peers.env, one NAME=path line per peer found (empty when
# it could not be installed), which bench/run reads. A peer that fails to install is reported
# and left out; the script fails only when asked for that one peer alone.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${PHAROS_BENCH_CACHE:-$HOME/.cache/pharos-bench}"
ROTEL_VERSION="${ROTEL_VERSION:-0.0.1a15}"
TELEMETRYGEN_VERSION="${TELEMETRYGEN_VERSION:-v0.161.0}"  # the newest version the Go proxy served
TELEMETRYGEN_MODULE=github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen
mkdir -p "$CACHE"

log() { printf 'peers: %s\n' "$*" >&2; }

install_apt() {
  local missing=()
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
  if ((${#missing[@]} == 0)); then
    log "prometheus and victoria-metrics already installed"
    return 0
  fi
  if [[ "$(id -u)" != 0 ]]; then
    log "not root: cannot apt-get install ${missing[*]}"
    return 1
  fi
  # One `apt-get update` per day at most: the package lists live in /var/lib/apt/lists.
  local stamp="$CACHE/apt-updated"
  if [[ ! -f "$stamp" || -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]]; then
    log "apt-get update"
    apt-get update -q >&2 && touch "$stamp"
  fi
  log "apt-get install ${missing[*]}"
  # The packages' services are not wanted (and there may be no init system): policy-rc.d
  # tells the maintainer scripts not to start them.
  local rc=0 had_policy=0
  [[ -e /usr/sbin/policy-rc.d ]] && had_policy=1
  if ((had_policy == 0)); then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || rc=$?
  if ((had_policy == 0)); then rm -f /usr/sbin/policy-rc.d; fi
  return "$rc"
}

install_otelcol() {
  local rc=0
  "$HERE/../collector/build-collector.sh" >/dev/null || rc=1
  "$HERE/../collector/build-collector.sh" pipeline >/dev/null || rc=1
  return "$rc"
}

# The wheel ships the collector as a binary inside the Python package (rotel/rotel-agent) and
# exposes no command of its own; `rotel-agent start --exporter blackhole ...` runs it.
rotel_agent() {
  "$CACHE/rotel-venv/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))' 2>/dev/null
}

install_rotel() {
  local venv="$CACHE/rotel-venv"
  # (pip's output is read whole: grep -q would stop reading early and, under pipefail, fail.)
  if [[ -x "$(rotel_agent)" && "$("$venv/bin/pip" show rotel 2>/dev/null)" == *"Version: $ROTEL_VERSION"* ]]; then
    log "rotel $ROTEL_VERSION already installed in $venv"
    return 0
  fi
  log "pip install rotel==$ROTEL_VERSION into $venv"
  python3 -m venv "$venv" >&2 || return 1
  "$venv/bin/pip" install -q "rotel==$ROTEL_VERSION" >&2 || return 1
  [[ -x "$(rotel_agent)" ]] || { log "the rotel wheel has no rotel-agent binary"; return 1; }
}

install_telemetrygen() {
  local bin="$CACHE/gobin/telemetrygen" stamp="$CACHE/gobin/telemetrygen.version"
  if [[ -x "$bin" && "$(cat "$stamp" 2>/dev/null)" == "$TELEMETRYGEN_VERSION" ]]; then
    log "telemetrygen $TELEMETRYGEN_VERSION already installed"
    return 0
  fi
  command -v go >/dev/null || { log "go not found"; return 1; }
  mkdir -p "$CACHE/gobin"
  log "go install $TELEMETRYGEN_MODULE@$TELEMETRYGEN_VERSION (a few minutes the first time)"
  GOBIN="$CACHE/gobin" go install "$TELEMETRYGEN_MODULE@$TELEMETRYGEN_VERSION" >&2 || return 1
  echo "$TELEMETRYGEN_VERSION" >"$stamp"
}

what=("$@")
((${#what[@]} == 0)) && what=(all)
[[ " ${what[*]} " == *" all "* ]] && what=(apt otelcol rotel telemetrygen)
failed=()
for w in "${what[@]}"; do
  case "$w" in
    apt | otelcol | rotel | telemetrygen) "install_$w" || { failed+=("$w"); log "could not install $w"; } ;;
    *) echo "unknown peer $w (all apt otelcol rotel telemetrygen)" >&2; exit 2 ;;
  esac
done

{
  echo "PROMETHEUS=$(command -v prometheus || true)"
  echo "VICTORIA_METRICS=$(command -v victoria-metrics || true)"
  [[ -x "$CACHE/otelcol" ]] && echo "OTELCOL=$CACHE/otelcol" || echo "OTELCOL="
  echo "ROTEL=$(r="$(rotel_agent)"; [[ -x "$r" ]] && echo "$r")"
  [[ -x "$CACHE/gobin/telemetrygen" ]] && echo "TELEMETRYGEN=$CACHE/gobin/telemetrygen" || echo "TELEMETRYGEN="
} >"$CACHE/peers.env"
log "peers: $(tr '\n' ' ' <"$CACHE/peers.env")"
if ((${#failed[@]} > 0)); then
  log "not installed: ${failed[*]}"
  ((${#what[@]} == 1)) && exit 1
fi
exit 0
