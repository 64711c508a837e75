#!/usr/bin/env bash
# Set up, lint, type-check and run the whole test suite (the command CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# the browser demo's test drives Debian's Chromium: where it can be installed (root with
# apt-get), install it, and make that test fail rather than skip without it
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export VIDSERVE_REQUIRE_BROWSER=${VIDSERVE_REQUIRE_BROWSER:-1}
  if [ ! -x /usr/bin/chromium ]; then
    log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
      tail -n 20 "$log" >&2
      echo "test.sh: could not install chromium; tests/clients/test_web_demo.py needs it" >&2
    fi
    rm -f "$log"
  fi
fi
ruff check .
ruff format --check .
mypy models server clients tests bench
# pytest exits 5 when it collects no test, and set -e turns that into a failure too
python -m pytest "$@"
