#!/usr/bin/env bash
# Sets Legato up and runs a real workflow end to end on the embedded default (one SQLite
# file): seed 002's customer onboarding, whose steps call a local stand-in billing service.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p .legato
exec .venv/bin/python -m examples.billing.demo --db .legato/demo.db "$@"
