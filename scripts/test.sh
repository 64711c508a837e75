#!/usr/bin/env bash
# Set up, lint, type-check and run the whole test suite (the command CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# the browser demo's test drives Debian's Chromium, the proxy's tests Debian's nginx and the
# state store's Debian's redis-server: where they can be installed (root with apt-get), install
# the missing ones in one apt-get call, and make those tests fail rather than skip without them
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export VIDSERVE_REQUIRE_BROWSER=${VIDSERVE_REQUIRE_BROWSER:-1}
  export VIDSERVE_REQUIRE_PROXY=${VIDSERVE_REQUIRE_PROXY:-1}
  export VIDSERVE_REQUIRE_REDIS=${VIDSERVE_REQUIRE_REDIS:-1}
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/sbin/nginx ] || missing+=(nginx)
  [ -x /usr/bin/redis-server ] || missing+=(redis-server)
  if [ ${#missing[@]} -gt 0 ]; then
    log=$(mktemp)
    # why a policy-rc.d while installing: the packages would start system nginx and redis-server
    # daemons (ports 80 and 6379); the tests start their own, on free ports
    policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    fi
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
      tail -n 20 "$log" >&2
      echo "test.sh: could not install ${missing[*]}; tests/clients/test_web_demo.py (chromium), tests/deploy/test_proxy.py (nginx) and the state store's tests (redis-server) need them" >&2
    fi
    [ -z "$policy" ] || rm -f "$policy"
    rm -f "$log"
  fi
fi
ruff check .
ruff format --check .
mypy models server clients tests bench
# pytest exits 5 when it collects no test, and set -e turns that into a failure too
python -m pytest "$@"
