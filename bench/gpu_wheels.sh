#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the wheels the GPU machine lacks, for bench/gpu.sh to
# install there: that machine reaches no registry, and its Python is 3.12 on manylinux
# x86_64 with torch, onnx, onnxruntime (the CPU build), numpy, pillow, httpx, anyio, h11,
# click, safetensors, pytest and tqdm already installed (.library/device/KINDS.md lists them),
# but none of the server's web, settings and video packages. Run it here, where pip reaches
# PyPI, from anywhere in the repository:
#   bash bench/gpu_wheels.sh
# then name .whl in the device call's carry. The versions are the ones this project's CPU
# machines test with (within pyproject.toml's ranges); each wheel's own requirements are
# checked against these pins and the machine's packages, so nothing is left out.
#
# What cannot travel: onnxruntime-gpu and TensorRT (their wheels are hundreds of MB against
# the 64 MiB a call carries), so the GPU run reports those providers as unavailable.
# Also copied when it fits: the XMem conformance vectors (../shared/conformance/xmem, 7.7 MB),
# which the server's segmentation tests compare against; ../shared itself does not travel.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS_MAX_MIB=45 # the wheels alone
CARRY_MAX_MIB=60  # everything that travels: the working tree and .whl (the limit is 64)

PINS=(
  fastapi==0.165.0
  starlette==1.10.0
  uvicorn==0.54.0
  pydantic==2.14.4
  pydantic-core==2.50.5
  pydantic-settings==2.16.3
  python-dotenv==1.2.4
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0 # why carried though the machine has one: pydantic-core needs >= 4.16
  opentelemetry-api==1.45.2 # fastapi imports it at start
  python-multipart==0.0.34
  websockets==17.4
  av==18.1.0 # PyAV bundles FFmpeg: the largest wheel by far (34 MiB)
  pycocotools==2.0.11
)
# what the pinned wheels need and the GPU machine already has (KINDS.md, "Python packages
# already there"); a requirement that is neither pinned nor here fails the check below
PRESENT="anyio click h11 idna numpy annotated-doc"

if ! git check-ignore -q .whl/x.whl; then
  echo "gpu_wheels.sh: .whl/ is not git-ignored; add /.whl/ to .gitignore first" >&2
  exit 1
fi
mkdir -p .whl

for pin in "${PINS[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d .whl "$pin" 2>&1 |
    grep -v "is ignored: it is neither a file nor a directory" || true
done

# one version of each, and only the pinned ones: two versions of a package stop the install
"$PY" - "${PINS[@]}" <<'EOF'
import re
import sys
from pathlib import Path

def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()

pins = {norm(p.split("==")[0]): p.split("==")[1] for p in sys.argv[1:]}
for wheel in sorted(Path(".whl").glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    if pins.get(norm(name)) != version:
        print(f"removing {wheel.name}: not one of the pins")
        wheel.unlink()
missing = sorted(set(pins) - {norm(w.name.split("-")[0]) for w in Path(".whl").glob("*.whl")})
if missing:
    sys.exit(f"gpu_wheels.sh: no wheel for {missing}")
EOF

# every requirement of every wheel, as it applies on Python 3.12 on Linux, is pinned or present
"$PY" - "$PRESENT" <<'EOF'
import re
import sys
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # why: pip vendors packaging where the environment has none of its own
    from pip._vendor.packaging.requirements import Requirement

def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()

target = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
wheels = sorted(Path(".whl").glob("*.whl"))
have = {norm(w.name.split("-")[0]) for w in wheels} | {norm(n) for n in sys.argv[1].split()}
unmet = []
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if (req.marker is None or req.marker.evaluate(target)) and norm(req.name) not in have:
            unmet.append(f"{wheel.name} needs {req}")
if unmet:
    sys.exit("gpu_wheels.sh: requirements neither carried nor on the GPU machine:\n  " + "\n  ".join(unmet))
print(f"requirements checked: {len(wheels)} wheels, each need pinned or on the GPU machine")
EOF

mib() { # PATH...: their total size in MiB, rounded up
  local bytes
  bytes=$(du -cb "$@" 2>/dev/null | tail -1 | cut -f1)
  echo $(((bytes + 1048575) / 1048576))
}

echo
ls -l .whl/*.whl | awk '{printf "%8.1f MiB  %s\n", $5 / 1048576, $9}'
wheels=$(mib .whl/*.whl)
echo "wheels: $wheels MiB in all (at most $WHEELS_MAX_MIB)"
if ((wheels > WHEELS_MAX_MIB)); then
  echo "gpu_wheels.sh: the wheels take $wheels MiB, over $WHEELS_MAX_MIB" >&2
  exit 1
fi

# what travels besides .whl: tracked files and untracked ones git does not ignore
tree=0
while IFS= read -r -d '' f; do
  [[ -f $f ]] && tree=$((tree + $(stat -c %s "$f")))
done < <(git ls-files -z --cached --others --exclude-standard)
tree=$(((tree + 1048575) / 1048576))

vectors=../shared/conformance/xmem
rm -rf .whl/shared
if [[ -d $vectors ]]; then
  if ((tree + wheels + $(mib "$vectors") <= CARRY_MAX_MIB)); then
    mkdir -p .whl/shared/conformance
    cp -r "$vectors" .whl/shared/conformance/
    echo "copied $vectors into .whl/shared/conformance ($(mib .whl/shared) MiB)"
  else
    echo "left out $vectors: it would take the call over $CARRY_MAX_MIB MiB; the tests that need it are deselected there"
  fi
fi
total=$((tree + $(mib .whl)))
echo "the call carries about $total MiB: the working tree $tree MiB, .whl $(mib .whl) MiB (the limit is 64)"
if ((total > CARRY_MAX_MIB)); then
  echo "gpu_wheels.sh: over $CARRY_MAX_MIB MiB" >&2
  exit 1
fi
