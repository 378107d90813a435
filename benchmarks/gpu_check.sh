#!/usr/bin/env bash
# The GPU check (python -m benchmarks.gpu_check) as a GPU machine runs it, unchanged, with or without network:
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--budget SECONDS] [--wheels DIR] [--no-tests] [--cpu-dry-run]
#
#   1. dependencies: kept when they import; else installed from a folder of wheels (--wheels, $CAMI2V_WHEELS,
#      ./wheels, ./shared/tools/gpu_check/wheels, ../shared/tools/gpu_check/wheels) with --no-index; else from
#      PyPI when reachable. torch is never installed or replaced: the machine's own CUDA build is what is checked.
#   2. python -m benchmarks.gpu_check under a hard timeout: one table, gpu_check.json / gpu_check.txt.
#   3. with what is left of --budget (default 470 s, under 8 minutes in all) and pytest installed: the device-aware
#      tests on the GPU in fp16 (tests/conftest.py --device / --dtype), their summary in pytest.txt.
#
# Output folder: --out, else $OUT (set on the lent GPU machines), else ./gpu_check_out; gpu_check.log there holds
# everything printed. Exit status 0 when the check ran (its rows say what passed), 2 when it could not start.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
OUTDIR="${OUT:-gpu_check_out}"
BUDGET=470
WHEELS="${CAMI2V_WHEELS:-}"
TESTS=1
DRY=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUTDIR="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    --no-tests) TESTS=0 ;;
    --cpu-dry-run) DRY=(--cpu-dry-run) ;;
    -h|--help) sed -n 2,15p "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-python3}"
mkdir -p "$OUTDIR" || exit 2
OUTDIR="$(cd "$OUTDIR" && pwd)"
LOG="$OUTDIR/gpu_check.log"
: > "$LOG"
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1 TOKENIZERS_PARALLELISM=false
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
say() { echo "$*" | tee -a "$LOG"; }

# -- 1. dependencies ------------------------------------------------------------------------------------------------
DEPS='import torch, einops, safetensors, numpy, PIL, regex, ftfy'
if ! "$PY" -c "$DEPS" >> "$LOG" 2>&1; then
  if ! "$PY" -c 'import torch' >> "$LOG" 2>&1; then
    say "torch does not import with $PY: install the machine's CUDA build of torch first"; exit 2
  fi
  if [ -z "$WHEELS" ]; then
    for d in wheels shared/tools/gpu_check/wheels ../shared/tools/gpu_check/wheels; do
      if [ -d "$d" ]; then WHEELS="$d"; break; fi
    done
  fi
  if [ -n "$WHEELS" ]; then
    say "installing missing dependencies from $WHEELS (no network)"
    # one package set at a time: omegaconf needs PyYAML from the machine, ftfy must not wait on it
    for set in "einops safetensors regex" "ftfy wcwidth" "omegaconf antlr4-python3-runtime"; do
      # shellcheck disable=SC2086
      timeout 60 "$PY" -m pip install -q --no-index --find-links "$WHEELS" $set >> "$LOG" 2>&1 || true
    done
  fi
  if ! "$PY" -c "$DEPS" >> "$LOG" 2>&1; then
    say "installing the rest from PyPI (needs network)"
    timeout 90 "$PY" -m pip install -q --retries 0 --timeout 10 -r requirements.txt >> "$LOG" 2>&1 || true
  fi
  if ! "$PY" -c "$DEPS" >> "$LOG" 2>&1; then
    say "dependencies missing (see $LOG): pass --wheels with einops, safetensors, regex, ftfy, wcwidth wheels"; exit 2
  fi
fi

# -- 2. the check ---------------------------------------------------------------------------------------------------
CHECK_BUDGET=$(( $(left) - 60 ))   # a minute kept for the tests
[ "$CHECK_BUDGET" -gt 420 ] && CHECK_BUDGET=420
[ "${#DRY[@]}" -gt 0 ] && CHECK_BUDGET=55
if [ "$CHECK_BUDGET" -lt 30 ]; then say "only $(left) s of --budget left for the check; give more"; exit 2; fi
say "python -m benchmarks.gpu_check ${DRY[*]} --budget $CHECK_BUDGET --out $OUTDIR"
timeout -k 10 $(( CHECK_BUDGET + 45 )) "$PY" -m benchmarks.gpu_check "${DRY[@]}" --budget "$CHECK_BUDGET" \
  --out "$OUTDIR" 2>> "$LOG" | tee -a "$LOG"
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || say "the check exited with $rc (rows written so far are in $OUTDIR)"

# -- 3. the device-aware tests --------------------------------------------------------------------------------------
if [ "$TESTS" = 1 ]; then
  T=$(( $(left) - 5 ))
  if ! "$PY" -c 'import pytest, hypothesis' >> "$LOG" 2>&1; then
    say "tests skipped: pytest / hypothesis are not installed"
  elif [ "$T" -lt 30 ]; then
    say "tests skipped: $(left) s of --budget left"
  else
    if [ "${#DRY[@]}" -gt 0 ]; then
      ARGS=(--device cpu --dtype bf16 tests/test_attention.py)
    else
      ARGS=(--device cuda --dtype fp16 tests/test_attention.py tests/test_epipolar_sparse.py tests/test_unet.py
            tests/test_vae.py tests/test_camera_encoder.py)
    fi
    say "python -m pytest ${ARGS[*]} (timeout ${T}s)"
    timeout -k 5 "$T" "$PY" -m pytest -q -p no:cacheprovider -rfE "${ARGS[@]}" > "$OUTDIR/pytest.txt" 2>&1
    say "pytest exited with $? ($(tail -1 "$OUTDIR/pytest.txt"))"
  fi
fi
say "done in $(( $(date +%s) - START )) s; results in $OUTDIR (gpu_check.txt, gpu_check.json, pytest.txt)"
exit 0
