#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite. Extra arguments go to pytest.
# Two pytest-xdist workers, one test module each at a time (module fixtures run once): most
# tests wait on real processes and clocks, so the slow modules (ordered first in conftest.py) run
# alongside the rest. VIGIL_TEST_WORKERS=0 runs everything in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
workers="${VIGIL_TEST_WORKERS:-2}"
if [ "$workers" = "0" ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
