#!/usr/bin/env bash
# Ant-family throughput on one GPU, as measured for docs/benchmarks.md ("Ant family", GPU row).
# Usage: OUT=results_dir bash benchmarks/ant_gpu.sh
# If a .whl/ folder is present its wheels are installed first (for machines without a package index).
set -u
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
$PYTHON -c "import jax, brax; print('jax', jax.__version__, 'brax', brax.__version__, jax.devices())" >> "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
timeout ${SMALL_S:-300} $PYTHON -m benchmarks.throughput --family ant --slots 256 --repeats 3 \
  --kinds brax_ant ant_maze mlsh_ant_maze brax_ppo_ant_maze > "$OUT/ant_gpu_256.json" 2> "$OUT/ant_gpu_256.err"
grep '^#' "$OUT/ant_gpu_256.err"; tail -3 "$OUT/ant_gpu_256.err"
timeout ${LARGE_S:-170} $PYTHON -m benchmarks.throughput --family ant --slots 1024 --repeats 2 \
  --kinds ant_maze mlsh_ant_maze > "$OUT/ant_gpu_1024.json" 2> "$OUT/ant_gpu_1024.err"
grep '^#' "$OUT/ant_gpu_1024.err"; tail -3 "$OUT/ant_gpu_1024.err"
