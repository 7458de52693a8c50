#!/usr/bin/env bash
# The prepared GPU session (benchmarks/gpu_session.py), in ONE device call: humanoid walk/crawl MLSH
# beside its shared baseline and ant maze MLSH at 1024 slots side by side, then throughput at 1024 and
# 4096 slots; results in at most 8 files in $OUT.
# Usage: OUT=results_dir [WORK=runs/gpu_session_work] [BUDGET_S=560] [PARTS=a,b,c] bash benchmarks/gpu_session.sh [flags]
# BUDGET_S counts from this script's start (wheel install included; the machine's start not): keep it
# under the device tool's 600 s per command. Calling it again continues: complete parts are skipped,
# runs resume from checkpoints, throughput entries not yet measured are measured.
# If a .whl/ folder is present its wheels (brax, mujoco, tensorboardX, ...; not jax) are installed first
# into /tmp/site (for machines without a package index); the project runs from this source tree.
set -u
START=$(date +%s)
OUT=${OUT:-gpu_session_out}; mkdir -p "$OUT"
# The work folder (runs, checkpoints, logs, XLA cache) defaults to runs/ in this tree: git ignores it,
# and the device tool keeps ignored files of the tree between calls on a warm machine.
WORK=${WORK:-$PWD/runs/gpu_session_work}
PYTHON=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  STAMP=/tmp/site/.gpu_session_wheels
  if [ "$(ls .whl/*.whl)" != "$(cat "$STAMP" 2>/dev/null)" ]; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    ls .whl/*.whl > "$STAMP"
  fi
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
exec $PYTHON -m benchmarks.gpu_session --out "$OUT" --work "$WORK" --budget-s "${BUDGET_S:-560}" \
  --spent-s "$(( $(date +%s) - START ))" ${PARTS:+--parts "$PARTS"} "$@"
