#!/usr/bin/env bash
# Pharos's block storage on a real S3-compatible server (moto's server): needs a pharos built
# with `--features s3` (PHAROS_BIN, or built here into $CARGO_TARGET_DIR).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
if [[ -z "${PHAROS_BIN:-}" ]]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pharos/target}"
  (cd "$repo" && cargo build -p pharos --features s3 --locked)
  export PHAROS_BIN="$CARGO_TARGET_DIR/debug/pharos"
fi
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r "$here/requirements.txt"
cd "$here"
python3 -m pytest -q -p no:cacheprovider .
