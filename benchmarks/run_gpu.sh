#!/usr/bin/env bash
# dtn vs PyTorch on the GPU machine, about 5 minutes in all. Assumes build-gpu was configured and built
# by scripts/gpu-check.sh (bench_dtn_cuda is built here if it is missing) and that python3 has torch.
#   BUILD_DIR  (default <repo>/build-gpu)   OUT_DIR (default $BUILD_DIR/bench-results)
#   COMPILE_BATCHES  batches for torch.compile (default 128: each batch size compiles anew)
#   COMPILE_TIMEOUT  seconds allowed for the torch.compile run (default 100), then skipped
#   TF32             1 (default): also time both sides with TF32 tensor-core math allowed (dtn
#                    autotuned, PyTorch eager; rows labelled +tf32, compared only with each other);
#                    0 leaves that pair out (about a minute)
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD_DIR:-$root/build-gpu}
out=${OUT_DIR:-$build/bench-results}
mkdir -p "$out"
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if [[ ! -x "$build/bench_dtn_cuda" ]]; then
  echo "== building bench_dtn_cuda in $build"
  timeout 240 cmake --build "$build" --target bench_dtn_cuda -j"$(nproc)" || status=1
fi

dtn_files=()
if [[ -x "$build/bench_dtn_cuda" ]]; then
  echo "== bench_dtn_cuda"
  if timeout 75 "$build/bench_dtn_cuda" --json "$out/dtn_cuda.json" --reps 20 --step-reps 10 --profile-step; then
    dtn_files+=("$out/dtn_cuda.json")
  else
    echo "run_gpu.sh: bench_dtn_cuda failed or timed out" >&2; status=1
  fi
  # The same rows with cuDNN's algorithms chosen by timing them (dtn::cuda::set_conv_autotune,
  # like torch.backends.cudnn.benchmark), the GEMM engine timed beside them: rows labelled tuned
  # and tuned+graph, then the choice per layer and pass.
  echo "== bench_dtn_cuda --conv-autotune"
  if timeout 90 "$build/bench_dtn_cuda" --conv-autotune --no-layers --json "$out/dtn_cuda_tuned.json" --reps 20 \
       --step-reps 10 --profile-step; then
    dtn_files+=("$out/dtn_cuda_tuned.json")
  else
    echo "run_gpu.sh: bench_dtn_cuda --conv-autotune failed or timed out" >&2; status=1
  fi
  # Every convolution pass on the GEMM engine (im2col / gather kernels + cuBLAS;
  # dtn::cuda::set_conv_gemm, off by default until measured): rows labelled dtn+gemm and
  # graph+gemm, and the per-layer table, to set beside the plain run's pass by pass.
  echo "== bench_dtn_cuda --conv-gemm"
  if timeout 90 "$build/bench_dtn_cuda" --conv-gemm --json "$out/dtn_cuda_gemm.json" --reps 20 --step-reps 10 \
       --profile-step; then
    dtn_files+=("$out/dtn_cuda_gemm.json")
  else
    echo "run_gpu.sh: bench_dtn_cuda --conv-gemm failed or timed out" >&2; status=1
  fi
fi

torch_files=()
echo "== torch_dtn.py --device cuda --modes eager"
if timeout 60 python3 "$here/torch_dtn.py" --device cuda --modes eager --reps 20 --step-reps 10 \
     --json "$out/torch_cuda_eager.json" --quiet; then
  torch_files+=("$out/torch_cuda_eager.json")
else
  echo "run_gpu.sh: torch_dtn.py eager failed or timed out" >&2; status=1
fi
ct=${COMPILE_TIMEOUT:-100}
echo "== torch_dtn.py --device cuda --modes compile (batches ${COMPILE_BATCHES:-128}, timeout ${ct} s)"
# torch_dtn.py runs torch.compile in a child under --compile-timeout and keeps the rows it finished.
if timeout $((ct + 30)) python3 "$here/torch_dtn.py" --device cuda --modes compile --reps 20 --step-reps 10 \
     --batches "${COMPILE_BATCHES:-128}" --compile-timeout "$ct" --json "$out/torch_cuda_compile.json" --quiet; then
  torch_files+=("$out/torch_cuda_compile.json")
else
  echo "run_gpu.sh: torch_dtn.py compile failed or timed out" >&2
fi

# TF32 on both sides: exact FP32 caps the step near cuBLAS's SGEMM rate (RESULTS.md), TF32 does
# not; dtn's is opt-in (dtn::cuda::set_tf32), PyTorch's allow_tf32 flags.
if [[ ${TF32:-1} != 0 ]]; then
  if [[ -x "$build/bench_dtn_cuda" ]]; then
    echo "== bench_dtn_cuda --tf32 --conv-autotune"
    if timeout 75 "$build/bench_dtn_cuda" --tf32 --conv-autotune --no-layers --json "$out/dtn_cuda_tf32.json" --reps 20 \
         --step-reps 10; then
      dtn_files+=("$out/dtn_cuda_tf32.json")
    else
      echo "run_gpu.sh: bench_dtn_cuda --tf32 failed or timed out" >&2; status=1
    fi
  fi
  echo "== torch_dtn.py --device cuda --modes eager --tf32"
  if timeout 60 python3 "$here/torch_dtn.py" --device cuda --modes eager --tf32 --reps 20 --step-reps 10 \
       --json "$out/torch_cuda_eager_tf32.json" --quiet; then
    torch_files+=("$out/torch_cuda_eager_tf32.json")
  else
    echo "run_gpu.sh: torch_dtn.py eager --tf32 failed or timed out" >&2; status=1
  fi
fi

echo "== comparison (ratio = dtn images/s / PyTorch images/s; > 1 means dtn is faster)"
if ((${#torch_files[@]})); then
  python3 "$here/compare.py" ${dtn_files[@]+"${dtn_files[@]}"} --torch "${torch_files[@]}"
elif ((${#dtn_files[@]})); then
  python3 -c 'import json,sys; [print(r) for r in json.load(open(sys.argv[1]))["rows"]]' "${dtn_files[0]}"
fi
echo "== JSON in $out"
exit $status
