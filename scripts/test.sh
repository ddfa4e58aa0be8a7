#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite. Extra arguments go to pytest.
# Four pytest-xdist workers (on 2 cores: most tests wait on real processes and clocks, not on
# the CPU), one test module each at a time (module fixtures run once); the slow modules go first,
# longest first (SLOW_MODULES in conftest.py; --no-loadscope-reorder keeps that order), so the
# other workers run the rest alongside the longest (test_sync.py, about 3.5 minutes).
# VIGIL_TEST_WORKERS=N sets the number of workers; 0 runs everything in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
workers="${VIGIL_TEST_WORKERS:-4}"
if [ "$workers" = "0" ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
