#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite. Extra arguments go to pytest.
# Four pytest-xdist workers (on 2 cores: most tests wait on real processes and clocks, not on
# the CPU), one test module each at a time (module fixtures run once); the slow modules go first,
# longest first (SLOW_MODULES in conftest.py; --no-loadscope-reorder keeps that order), so the
# other workers run the rest alongside the longest (test_sync.py, about 3.5 minutes).
# VIGIL_TEST_WORKERS=N sets the number of workers; 0 runs everything in one process.
# Two passes: everything with the hub catalogs in SQLite files (as a one-box hub ships), then the
# modules that run a hub (HUB_MODULES in conftest.py) with each hub's catalog in PostgreSQL.
# VIGIL_TEST_CATALOG=sqlite or postgres runs only that pass.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
workers="${VIGIL_TEST_WORKERS:-4}"
run() {
  if [ "$workers" = "0" ]; then
    .venv/bin/python -m pytest "$@"
  else
    .venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
  fi
}
status=0
for engine in ${VIGIL_TEST_CATALOG:-sqlite postgres}; do
  echo "== tests with the hub catalog in $engine"
  rc=0
  VIGIL_TEST_CATALOG=$engine run "$@" || rc=$?
  [ "$rc" = 0 ] || [ "$rc" = 5 ] || status=$rc     # 5: nothing selected in this pass (e.g. -k)
done
exit $status
