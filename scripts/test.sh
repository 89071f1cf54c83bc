#!/usr/bin/env bash
# Set up (idempotently, with the browser) and run the whole test suite against a real
# PostGIS: the private cluster, or GRIDBRANCH_TEST_DATABASE_URL when set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest -n 2 -p no:cacheprovider "$@"
