#!/usr/bin/env bash
# Create .venv and install vidserve with its test tools. Safe to run again: when pyproject.toml
# and the torch pin are what the last install used and the packages import, it does nothing.
# CPU-only machines stay on torch 2.13.0 (a CPU wheel; newer releases pull GB of CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_PIN="torch==2.13.0"
STAMP=.venv/.vidserve-install  # the hash of what the last complete install was made from

has_gpu() { command -v nvidia-smi >/dev/null 2>&1; }

# what an install depends on: the project's metadata and which torch this machine pins
install_hash() {
  { cat pyproject.toml; if has_gpu; then echo "torch: the image's own"; else echo "$TORCH_PIN"; fi; } |
    sha256sum | cut -d' ' -f1
}

# -P: the packages must import from the install, not from this folder on sys.path
is_installed() {
  [ "$(cat "$STAMP" 2>/dev/null)" = "$1" ] && python -P -c "import server, models, clients" 2>/dev/null
}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
wanted=$(install_hash)
if is_installed "$wanted"; then
  exit 0
fi
rm -f "$STAMP"
python -m pip install -q --upgrade pip
if ! has_gpu; then
  python -m pip install -q "$TORCH_PIN"
fi
# why the filter: setuptools tells every editable install of a flat layout (packages at the
# root, no src/) in ten lines that same-named folders here take precedence on import; here
# that is the point. Only that notice is dropped; deprecations still show.
PYTHONWARNINGS="ignore:Editable installation" python -m pip install -q -e ".[test]"
echo "$wanted" >"$STAMP"
