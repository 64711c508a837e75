#!/usr/bin/env bash
# Create .venv and install vidserve with its test tools. Safe to run again.
# CPU-only machines stay on torch 2.13.0 (a CPU wheel; newer releases pull GB of CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1; then
  python -m pip install -q "torch==2.13.0"
fi
python -m pip install -q -e ".[test]"
