#!/usr/bin/env bash
# Set up (idempotently) and run the local demo (vigil-demo): test cameras, broker, S3, edge and hub.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/vigil-demo "$@"
