#!/usr/bin/env bash
# Set up, lint, type-check and run the whole test suite (the command CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .
mypy models server clients tests bench
# pytest exits 5 when it collects no test, and set -e turns that into a failure too
python -m pytest "$@"
