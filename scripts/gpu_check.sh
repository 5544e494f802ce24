#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in at most 8 minutes on one H100/H200 (the limits below
# add up to 460 s), in one go:
#   1. tests: cuDNN == scan and the GPU engines == plain autodiff at their stated tolerances
#      (tests/test_gpu.py), and the engine/parity/precision property tests on the GPU with
#      float32 matmuls (TF32 off);
#   2. the training-step benchmark on the GPU: ours (scan, vjp, vjp_hoisted, cudnn), Flax and
#      torch (cuDNN), float32 and bfloat16, at the four default sizes, (64, 512, 128, 1024)
#      and T = 4096; the LSTM carries the comparison (cudnn is LSTM-only);
#   3. K seeds vmapped against K sequential steps (sets `--seeds_mode=auto` on GPU).
# Needs jax with CUDA (`pip install "jax[cuda12]"`) and, for its rows, torch with CUDA.
# Usage: scripts/gpu_check.sh [OUT_DIR]   (tables land in OUT_DIR, default gpu_check/)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check}"
mkdir -p "$out"
python3 -c "import jax; b = jax.default_backend(); print(jax.devices()); assert b == 'gpu', b" \
  || { echo "no GPU backend: nothing to check"; exit 2; }
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its output, note failures
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt" || { echo "!! $name failed"; status=1; }
}
step tests 120 env JAX_DEFAULT_MATMUL_PRECISION=highest python3 -m pytest -p no:cacheprovider \
  -n 0 -q -m "not slow" tests/test_gpu.py tests/test_engine.py tests/test_cudnn.py \
  tests/test_precision.py tests/test_interop.py
for dtype in float32 bfloat16; do
  engines=scan,vjp,vjp_hoisted,cudnn
  [ "$dtype" = bfloat16 ] && engines=scan,vjp,vjp_hoisted  # jax's cuDNN LSTM is float32-only
  step "benchmark_lstm_$dtype" 120 python3 scripts/benchmark.py --workload=train --cells=lstm \
    --sizes=gpu --engines=$engines --dtype=$dtype --reps=5
done
step benchmark_gru_rnn 50 python3 scripts/benchmark.py --workload=train --cells=gru,rnn \
  --sizes='32,128,64,128;64,512,128,1024' --engines=scan,vjp,vjp_hoisted --reps=5
step seeds 50 python3 scripts/seeds_benchmark.py --cells=lstm --hidden=32,128 --seeds=1,8,32
exit $status
