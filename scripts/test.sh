#!/usr/bin/env bash
# Set up (idempotently, with the browser) and run the whole test suite against a real
# PostGIS: the private cluster, or GRIDBRANCH_TEST_DATABASE_URL when set.
#
# The suite reads the present from one frozen clock (tests/conftest.py), so it passes at
# any wall-clock instant. Without arguments it then runs the tests that depend on the
# present (marker `clock`) again at each instant of CLOCK_INSTANTS — a weekday morning, a
# weekday night, a public holiday, the last working hour before a long holiday (the
# suite's own instant is a Saturday) — each with its own demo built up to that instant. With arguments, only
# `pytest ARGS` runs (e.g. `bash scripts/test.sh tests/layers -k events`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
pytest=(.venv/bin/python -m pytest -n 2 --dist loadgroup -p no:cacheprovider)
if [ $# -gt 0 ]; then
  exec "${pytest[@]}" "$@"
fi
"${pytest[@]}"
instants=$(.venv/bin/python -c 'from tests.conftest import CLOCK_INSTANTS; print(" ".join(CLOCK_INSTANTS))')
for instant in $instants; do
  printf '\n[test] the tests marked clock, at %s\n' "$instant"
  "${pytest[@]}" -q -m clock --clock-at "$instant"
done
