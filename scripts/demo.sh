#!/usr/bin/env bash
# Set up (idempotently) and run the local demo: test cameras recorded by vigil-edge.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
