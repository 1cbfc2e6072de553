#!/usr/bin/env bash
# The kit's GPU path, checked in one command on a fresh machine with one CUDA GPU, from the repository
# root. It installs the kit from the lock file, runs the CUDA-only tests and the bitwise-resume tests on
# the GPU, checks graphed against eager on the paper's models and times the official loop as shipped
# against the kit (benchmarks/speed.py gpu). Every step runs under `timeout` (limits below: 11 minutes
# in all at the very worst; expected well under 10). It prints a summary of about ten lines and
# writes it, with each step's full log, to the output folder.
#
#   bash benchmarks/gpu_check.sh                      # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run            # anywhere: every step but the CUDA ones
#
# Options: --out DIR (default gpu-check-<UTC time>), --dry-run (or GPU_CHECK_DRY=1).
# GPU_CHECK_PYTHON=python3 uses that interpreter as it is and installs nothing (a machine that has the
# packages, or no network); otherwise a virtual environment is made in GPU_CHECK_VENV (.venv-gpu).
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # this checkout's kit, installed or not

OUT="gpu-check-$(date -u +%Y%m%d-%H%M%S)"
DRY="${GPU_CHECK_DRY:-0}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="${2:?--out needs a folder}"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1'; use --dry-run or --out DIR" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0

note() { echo "$*" >> "$SUMMARY"; }

# step NAME SECONDS COMMAND...: COMMAND under `timeout`, its output in $OUT/NAME.log; one summary line.
step() {
  local name="$1" limit="$2" log="$OUT/$1.log" began=$SECONDS rc
  shift 2
  echo "\$ $*" > "$log"
  timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    STATUS="ok"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    STATUS="TIMED OUT after $limit s"; FAILED=$((FAILED + 1))
  else
    STATUS="FAILED (exit $rc)"; FAILED=$((FAILED + 1))
  fi
  STATUS="$STATUS, $((SECONDS - began)) s"
  return "$rc"
}

# --- the interpreter and the install --------------------------------------------------------------
LOCK=requirements.lock
VENV="${GPU_CHECK_VENV:-.venv-gpu}"
if [ "$DRY" = 1 ]; then
  PY="${GPU_CHECK_PYTHON:-python3}"
  step install 60 test -r "$LOCK"
  note "install: dry run, would run: pip install -r $LOCK, then pip install -e . ($STATUS)"
elif [ -n "${GPU_CHECK_PYTHON:-}" ]; then
  PY="$GPU_CHECK_PYTHON"
  step install 60 "$PY" -c "import pytest, torch, rslad_kit.cli"   # the kit and every package it imports
  note "install: none, GPU_CHECK_PYTHON=$PY as it is: $STATUS"
else
  DEPS="--require-hashes -r $LOCK"; KIT="--no-deps -e ."   # as the Makefile installs it
  BASE="$(command -v python3.11 || command -v python3)"   # the lock is resolved for Python 3.11
  # set -f: the words of $DEPS and $KIT are split, never globbed
  step install 200 env BASE="$BASE" VENV="$VENV" DEPS="$DEPS" KIT="$KIT" bash -c 'set -f
    "$BASE" -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check $DEPS \
      && "$VENV/bin/pip" install -q --disable-pip-version-check $KIT \
      && "$VENV/bin/python" -c "import pytest, torch, rslad_kit.cli"'
  note "install: from $LOCK into $VENV ($("$BASE" --version 2>&1)): $STATUS"
  PY="$VENV/bin/python"
fi
if [ "$FAILED" -gt 0 ]; then
  note "stopped: the install failed (see $OUT/install.log); GPU_CHECK_PYTHON=python3 skips it"
  cat "$SUMMARY"; exit 1
fi

# --- the machine ------------------------------------------------------------------------------------
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$DRY" = 1 ]; then
  step machine 60 "$PY" -c "import torch; print('torch', torch.__version__, '(dry run: no GPU needed)')"
  note "machine: dry run on $(uname -m), commit $COMMIT: $STATUS"
else
  step machine 60 "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; \
print(torch.cuda.get_device_name(), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
  note "machine: $(tail -n 1 "$OUT/machine.log"), commit $COMMIT: $STATUS"
  if [ "$FAILED" -gt 0 ]; then
    note "stopped: no usable CUDA device (see $OUT/machine.log); on a CPU, pass --dry-run"
    cat "$SUMMARY"; exit 1
  fi
fi

# --- the tests: every CUDA-only test, and the bitwise-resume tests, on the GPU ----------------------
TESTS=(tests/test_gpu.py
       "tests/test_train.py::test_resume_after_interrupt_is_bitwise_exact"
       "tests/test_train.py::test_kill_9_mid_run_then_resume_gives_the_same_weights")
PYTEST=("$PY" -m pytest -o addopts= -ra -q -p no:cacheprovider)   # addopts: no notebooks here
if [ "$DRY" = 1 ]; then
  step tests 120 "${PYTEST[@]}" --collect-only "${TESTS[@]}"
  note "tests: dry run, $(grep -E 'collected' "$OUT/tests.log" | tail -n 1 | xargs), not run: $STATUS"
else
  # cuBLAS reads its workspace setting when CUDA starts: set before Python starts, for every test
  step tests 180 env CUBLAS_WORKSPACE_CONFIG=:4096:8 "${PYTEST[@]}" "${TESTS[@]}"
  note "tests: $(grep -E '(passed|failed|error)' "$OUT/tests.log" | tail -n 1 | tr -d '=' | xargs): $STATUS"
fi

# --- graphed against eager, and the speeds (benchmarks/speed.py gpu) --------------------------------
if [ "$DRY" = 1 ]; then
  step speed 60 "$PY" benchmarks/speed.py --help
  grep -qE '\{[a-z,]*agree[a-z,]*gpu' "$OUT/speed.log" || { STATUS="FAILED (no agree or gpu part)"; FAILED=$((FAILED + 1)); }
  note "speed: dry run, speed.py has its agree and gpu parts, not run: $STATUS"
else
  step speed 240 env CUBLAS_WORKSPACE_CONFIG=:4096:8 PYTHONUNBUFFERED=1 "$PY" benchmarks/speed.py gpu
  grep '^=> ' "$OUT/speed.log" | sed 's/^=> /speed: /' >> "$SUMMARY"
  note "speed: $STATUS"
fi

if [ "$FAILED" -eq 0 ]; then
  note "result: every step passed; details in $OUT"
else
  note "result: $FAILED step(s) failed; details in $OUT"
fi
cat "$SUMMARY"
[ "$FAILED" -eq 0 ]
