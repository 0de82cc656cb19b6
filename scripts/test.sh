#!/usr/bin/env bash
# Sets everything up and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,postgres,bench
scripts/services.sh
exec .venv/bin/python -m pytest "$@"
