#!/usr/bin/env bash
# The GPU run of issue 16 in one call, under 8 minutes, on a bare GPU machine holding a copy
# of this repository and the wheels bench/gpu_wheels.sh put in .whl/ (carried). It installs
# those wheels into /tmp/site, records the device, then runs bench/gpu_run.py's parts, each
# under its own time limit, going on when one fails or times out:
#   env    the GPU, driver, torch/CUDA/cuDNN, the packages and where they came from
#   ort    which ONNX Runtime providers exist, and which load for a RIFE 4.6 ONNX engine
#   rife   RIFE 4.6 and 4.26 at 2x on 1080p streams and at 4K (fp16 against fp32), on CUDA
#   xmem   16 XMem streams at 480p batched through step_batch, on CUDA
#   tests  the tests whose engines run on the GPU there
# and writes into $OUT:
#   gpu.md    the BENCHMARKS.md section, ready to paste (or, back here:
#             python bench/gpu_run.py render --json gpu.json --write BENCHMARKS.md)
#   gpu.json  every number, and how each step ended
#   gpu.log   everything printed
#
# Usage, from the repository root:
#   bash bench/gpu.sh           on the GPU machine; refuses where there is no GPU
#   bash bench/gpu.sh --quick   the same with tiny sizes (a smoke run, a minute or two)
#   bash bench/gpu.sh --cpu     a dry run on this machine's CPU: tiny sizes, this environment's
#                               packages (no wheels installed), the tests collected, not run
#   --only ort,rife,xmem,tests  only these parts (env and the report always run): a second
#                               call for what the first one ran out of time for
# Environment: OUT (default out/gpu), PYTHON (default python3: on the GPU machine, the one
# that holds torch).
set -uo pipefail # no -e: a failing step is recorded and the next one runs

cpu=0 quick=0 only=ort,rife,xmem,tests expect=
for arg in "$@"; do
  if [[ $expect == only ]]; then
    only=$arg expect=
    continue
  fi
  case $arg in
    --cpu) cpu=1 quick=1 ;;
    --quick) quick=1 ;;
    --only) expect=only ;;
    --only=*) only=${arg#--only=} ;;
    -h | --help)
      while IFS= read -r line; do
        [[ $line == '#!'* ]] && continue
        [[ $line == '#'* ]] || break
        line=${line#\#}
        echo "${line# }"
      done <"${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "gpu.sh: unknown argument '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done
if [[ $expect == only ]]; then
  echo "gpu.sh: --only needs a list of parts (ort,rife,xmem,tests)" >&2
  exit 2
fi
for name in ${only//,/ }; do
  case $name in
    ort | rife | xmem | tests) ;;
    *)
      echo "gpu.sh: --only takes ort, rife, xmem and tests, not '$name'" >&2
      exit 2
      ;;
  esac
done

# why builtins only up to here: the refusal must be clear even where PATH holds nothing
if ((!cpu)) && ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu.sh: no GPU here (nvidia-smi not found). Run it on the GPU machine" \
    "(README, 'Run on a GPU host'), or pass --cpu for a dry run with tiny sizes on this CPU." >&2
  exit 2
fi

[[ -n ${OUT:-} && $OUT != /* ]] && OUT=$PWD/$OUT # as given, from where it was run
here=${BASH_SOURCE[0]%/*}
[[ $here == "${BASH_SOURCE[0]}" ]] && here=.
cd "$here/.." || exit 2

OUT=${OUT:-$PWD/out/gpu}
PY=${PYTHON:-python3}
DEADLINE=450 # seconds: the steps end by DEADLINE - REPORT_S, the report by DEADLINE (a step
REPORT_S=40  # killed at its limit takes up to 10 s more): well inside 8 minutes
mkdir -p "$OUT" || exit 2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vidserve-gpu.XXXXXX") || exit 2
export PYTHONUNBUFFERED=1
device=cuda mode="GPU run"
((cpu)) && device=cpu mode="dry run on the CPU"
((quick && !cpu)) && mode="quick GPU run"
failed=0

record() { # NAME STATUS RC SECONDS LIMIT [WHY]: one line of steps.jsonl, read by the report
  printf '{"step": "%s", "status": "%s", "rc": %s, "seconds": %s, "timeout_s": %s, "why": "%s"}\n' \
    "$1" "$2" "$3" "$4" "$5" "${6:-}" >>"$WORK/steps.jsonl"
}

limit_for() { # LIMIT: the step's limit, or less where the run's deadline is nearer
  local left=$((DEADLINE - REPORT_S - SECONDS))
  echo $(($1 < left ? $1 : left))
}

step() { # NAME LIMIT COMMAND...: run it under timeout and record how it ended
  local name=$1 limit=$2 began=$SECONDS rc status=ok
  shift 2
  if ((limit < 10)); then
    echo "== $name: skipped, the run's time is spent"
    record "$name" skipped null 0 0 "the run's time was spent"
    failed=$((failed + 1))
    return 1
  fi
  echo "== $name (limit ${limit} s): $*"
  timeout -k 10 "$limit" "$@"
  rc=$?
  if ((rc == 124 || rc == 137)); then
    status="timed out"
  elif ((rc != 0)); then
    status=failed
  fi
  record "$name" "$status" "$rc" $((SECONDS - began)) "$limit"
  echo "== $name: $status (exit $rc) after $((SECONDS - began)) s"
  ((rc == 0)) || failed=$((failed + 1))
  return "$rc"
}

part() { # NAME LIMIT [FLAGS...]: one part of bench/gpu_run.py, told its own time budget
  local name=$1 limit
  limit=$(limit_for "$2")
  shift 2
  local flags=(--work "$WORK" --device "$device" --budget-s $((limit > 25 ? limit - 15 : 10)))
  ((quick)) && flags+=(--quick)
  step "$name" "$limit" "$PY" bench/gpu_run.py "$name" "${flags[@]}" "$@"
}

wanted() { # PART: whether --only names it
  [[ ,$only, == *,$1,* ]]
}

install_wheels() {
  if ((cpu)); then
    echo "== wheels: not installed in a dry run (this environment's packages are used)"
  elif compgen -G ".whl/*.whl" >/dev/null; then
    step wheels "$(limit_for 90)" "$PY" -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "== wheels: none in .whl/ (run bash bench/gpu_wheels.sh where pip reaches PyPI, and carry" \
      ".whl): what needs pydantic, fastapi or av will fail"
    record wheels skipped null 0 0 "no .whl folder was carried"
    failed=$((failed + 1))
  fi
}

run_tests() {
  # why a link: the tests read the conformance vectors from ../shared beside the repository
  if ((!cpu)) && [[ ! -e ../shared/conformance && -d .whl/shared/conformance ]]; then
    ln -sfn "$PWD/.whl/shared" ../shared && echo "== linked ../shared to the carried conformance vectors"
  fi
  if ! "$PY" -c 'import fastapi, av, pydantic_settings, websockets, pycocotools, python_multipart' 2>/dev/null; then
    echo "== tests: skipped, the server's packages do not import (fastapi, av, ...: see wheels)"
    record tests skipped null 0 0 "the server's packages do not import"
    failed=$((failed + 1))
    return
  fi
  if ((cpu)); then
    part tests 150 --collect-only
  else
    part tests 150
  fi
}

main() {
  echo "== gpu.sh: $mode, $(date -u '+%F %T UTC'); results into $OUT, parts into $WORK"
  install_wheels
  if ((!cpu)); then
    nvidia-smi
  fi
  if part env 60; then
    wanted ort && part ort 60
    wanted rife && part rife 170
    wanted xmem && part xmem 110
    wanted tests && run_tests
  else
    echo "== env failed: torch sees no CUDA device (or the environment is broken); no GPU parts run"
  fi
  local flag=false
  ((quick)) && flag=true
  printf '{"command": "bash bench/gpu.sh%s", "date": "%s", "quick": %s, "seconds": %s, "mode": "%s"}\n' \
    "${ARGS:+ $ARGS}" "$(date -u '+%F %H:%M UTC')" "$flag" "$SECONDS" "$mode" >"$WORK/run.json"
  if ! timeout -k 5 "$REPORT_S" "$PY" bench/gpu_run.py report --work "$WORK" --out "$OUT"; then
    echo "== report failed: the parts' own JSON files go into $OUT instead"
    cp "$WORK"/*.json "$WORK"/steps.jsonl "$OUT"/ 2>/dev/null
    failed=$((failed + 1))
  fi
  echo "== gpu.sh: done in $SECONDS s; $failed step(s) failed or were skipped; results in $OUT:" \
    "gpu.md, gpu.json, gpu.log"
  ((failed == 0))
}

ARGS="$*"
main 2>&1 | tee "$OUT/gpu.log"
exit "${PIPESTATUS[0]}"
