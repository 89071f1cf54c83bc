#!/usr/bin/env bash
# Set up (idempotently), start the private PostGIS, load the Jinshui demo district if
# missing, and serve it at http://127.0.0.1:8000/map (GRIDBRANCH_PORT to change).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/gridbranch demo "$@"
