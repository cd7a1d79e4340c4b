#!/usr/bin/env bash
# dtn vs PyTorch on the GPU machine, about 5 minutes in all. Assumes build-gpu was configured and built
# by scripts/gpu-check.sh (bench_dtn_cuda is built here if it is missing) and that python3 has torch.
#   BUILD_DIR  (default <repo>/build-gpu)   OUT_DIR (default $BUILD_DIR/bench-results)
#   COMPILE_BATCHES  batches for torch.compile (default 128: each batch size compiles anew)
#   COMPILE_ROWS     rows for torch.compile (default dtn_step, the row the targets name: the
#                    others would spend the compile budget's seconds on their own warm-up)
#   COMPILE_TIMEOUT  seconds allowed for the torch.compile run (default 100), then skipped
#   TF32             1 (default): also time both sides with TF32 tensor-core math allowed (dtn
#                    autotuned, PyTorch eager; rows labelled +tf32, compared only with each other);
#                    0 leaves that pair out (about a minute)
#   BENCH_BUDGET     seconds for the whole script (default: none): a run whose time limit would
#                    end past it is left out (said in the log), so that the comparison at the end
#                    always runs. The runs go most important first: dtn plain, PyTorch eager,
#                    dtn autotuned, torch.compile, the TF32 pair, dtn with joint batches (TF32),
#                    with conv overlap (TF32, TF32 with joint batches), torch.compile in its
#                    reduce-overhead mode (CUDA graphs), then FP32 with joint batches and with
#                    conv overlap, TF32 with both under a 64 MiB convolution workspace limit;
#                    last the runs that repeat earlier sessions'
#                    comparisons: dtn autotuned with non-deterministic cuDNN algorithms allowed,
#                    dtn on cuDNN's heuristic algorithms, dtn with batch norm and its activation
#                    unfused.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD_DIR:-$root/build-gpu}
out=${OUT_DIR:-$build/bench-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1  # a run stopped by its time limit still leaves what it printed
# torch.compile's caches (FX graphs, AOTAutograd, Triton kernels) in the checkout, which
# scripts/gpu-check.sh brings back: carried to a later run on the same image, they cut the
# compile (over 45 s on 2026-11-26) to loading what was built, within COMPILE_TIMEOUT.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$root/.torch-inductor-cache}
mkdir -p "$TORCHINDUCTOR_CACHE_DIR"
status=0

# fits LIMIT NAME: whether a run of at most LIMIT seconds ends within BENCH_BUDGET (with 15 s
# kept for the comparison).
fits() {
  [[ -z "${BENCH_BUDGET:-}" ]] && return 0
  if ((SECONDS + $1 + 15 > BENCH_BUDGET)); then
    echo "run_gpu.sh: $2 left out: its limit of $1 s would end past BENCH_BUDGET=$BENCH_BUDGET s (now ${SECONDS} s)"
    return 1
  fi
}
dtn_files=()
torch_files=()
# dtn NAME LIMIT JSON ARGS...: one bench_dtn_cuda run
dtn() {
  local name=$1 limit=$2 json=$3
  shift 3
  [[ -x "$build/bench_dtn_cuda" ]] || return 0
  fits "$limit" "$name" || return 0
  echo "== $name"
  if timeout "$limit" "$build/bench_dtn_cuda" --json "$out/$json" --reps 20 --step-reps 10 "$@"; then
    dtn_files+=("$out/$json")
  else
    echo "run_gpu.sh: $name failed or timed out" >&2
    status=1
  fi
}
# torch NAME LIMIT JSON ARGS...: one torch_dtn.py run
torch() {
  local name=$1 limit=$2 json=$3
  shift 3
  fits "$limit" "$name" || return 0
  echo "== $name"
  rm -f "$out/$json"
  if timeout "$limit" python3 "$here/torch_dtn.py" --device cuda --reps 20 --step-reps 10 --json "$out/$json" \
       --quiet "$@"; then
    torch_files+=("$out/$json")
  else
    echo "run_gpu.sh: $name failed or timed out" >&2
    [[ $name == *compile* ]] || status=1
    # torch_dtn.py saves its rows before the layer profile: what it timed before failing still counts.
    if [[ -s "$out/$json" ]]; then
      echo "run_gpu.sh: using the rows $name saved before it stopped" >&2
      torch_files+=("$out/$json")
    fi
  fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if [[ ! -x "$build/bench_dtn_cuda" ]]; then
  echo "== building bench_dtn_cuda in $build"
  timeout 240 cmake --build "$build" --target bench_dtn_cuda -j"$(nproc)" || status=1
fi

dtn "bench_dtn_cuda" 75 dtn_cuda.json --profile-step
# --profile-step: the eager step at batch 128 layer by layer (torch.profiler), which compare.py
# sets beside each dtn run's --profile-step pass by pass.
torch "torch_dtn.py --modes eager" 75 torch_cuda_eager.json --modes eager --profile-step
# The same rows with cuDNN's algorithms chosen by timing them (dtn::cuda::set_conv_autotune,
# like torch.backends.cudnn.benchmark), the GEMM engine timed beside them: rows labelled tuned
# and tuned+graph, then the choice per layer and pass.
dtn "bench_dtn_cuda --conv-autotune" 90 dtn_cuda_tuned.json --conv-autotune --no-layers --profile-step
ct=${COMPILE_TIMEOUT:-100}
# torch_dtn.py runs torch.compile in a child under --compile-timeout and keeps the rows it finished.
torch "torch_dtn.py --modes compile (batches ${COMPILE_BATCHES:-128}, rows ${COMPILE_ROWS:-dtn_step}, compile timeout ${ct} s)" \
  $((ct + 30)) torch_cuda_compile.json --modes compile --batches "${COMPILE_BATCHES:-128}" \
  --rows "${COMPILE_ROWS:-dtn_step}" --compile-timeout "$ct"
# TF32 on both sides: exact FP32 caps the step near cuBLAS's SGEMM rate (RESULTS.md), TF32 does
# not; dtn's is opt-in (dtn::cuda::set_tf32), PyTorch's allow_tf32 flags.
if [[ ${TF32:-1} != 0 ]]; then
  dtn "bench_dtn_cuda --tf32 --conv-autotune" 75 dtn_cuda_tf32.json --tf32 --conv-autotune --no-layers
  torch "torch_dtn.py --modes eager --tf32" 60 torch_cuda_eager_tf32.json --modes eager --tf32
fi
# DtnConfig::joint_batches: g once on both batches, D once per update on all of its batches
# (batch norm per batch): fewer, larger passes. Rows labelled +joint, to set beside the runs above.
if [[ ${TF32:-1} != 0 ]]; then
  dtn "bench_dtn_cuda --tf32 --conv-autotune --joint-batches" 60 dtn_cuda_tf32_joint.json --tf32 --conv-autotune \
    --joint-batches --no-layers --rows dtn_step --profile-step
fi
# dtn::cuda::set_conv_overlap: each convolution's weight gradient on a second stream beside its
# input gradient (rows labelled +overlap), alone and with joint batches; its graph's forks are
# printed with the node counts.
if [[ ${TF32:-1} != 0 ]]; then
  dtn "bench_dtn_cuda --tf32 --conv-autotune --conv-overlap" 60 dtn_cuda_tf32_overlap.json --tf32 --conv-autotune \
    --conv-overlap --no-layers --rows dtn_step
  dtn "bench_dtn_cuda --tf32 --conv-autotune --joint-batches --conv-overlap" 60 dtn_cuda_tf32_joint_overlap.json \
    --tf32 --conv-autotune --joint-batches --conv-overlap --no-layers --rows dtn_step --batches 128
  # PyTorch eager's step is bound by its host side and moved by up to half between runs on these
  # machines (RESULTS.md): a second sample, taken after the dtn runs above; compare.py counts
  # PyTorch's faster one.
  torch "torch_dtn.py --modes eager --tf32 (second sample)" 45 torch_cuda_eager_tf32_2.json --modes eager --tf32 \
    --rows dtn_step --batches 128
fi
# torch.compile's reduce-overhead mode: Inductor's code replayed as CUDA graphs (cudagraph trees),
# PyTorch's answer for a host-bound step like this one, the peer of dtn's one-graph step. Rows
# labelled compile:reduce-overhead; compare.py prints its graphs and any CUDA-graph skips. The
# Triton kernels are those of the default-mode run above (found in the Inductor cache).
torch "torch_dtn.py --modes compile --compile-mode reduce-overhead (compile timeout ${ct} s)" \
  $((ct + 30)) torch_cuda_compile_ro.json --modes compile --compile-mode reduce-overhead \
  --batches "${COMPILE_BATCHES:-128}" --rows "${COMPILE_ROWS:-dtn_step}" --compile-timeout "$ct"
dtn "bench_dtn_cuda --joint-batches" 45 dtn_cuda_joint.json --joint-batches --no-layers --rows dtn_step --batches 128
dtn "bench_dtn_cuda --conv-overlap" 45 dtn_cuda_overlap.json --conv-overlap --no-layers --rows dtn_step --batches 128
# Joint batches and overlap together were estimated at about 1,000 MiB at batch 128 (RESULTS.md,
# "Waiting for a GPU run"), at the 1 GiB target's edge; the lever is a smaller workspace per
# convolution pass and lane (dtn::cuda::set_conv_workspace_limit): the same run under 64 MiB
# (rows labelled +ws64), its peak and time beside the unlimited run's.
if [[ ${TF32:-1} != 0 ]]; then
  dtn "bench_dtn_cuda --tf32 --conv-autotune --joint-batches --conv-overlap --conv-workspace-mib 64" 60 \
    dtn_cuda_tf32_joint_overlap_ws64.json --tf32 --conv-autotune --joint-batches --conv-overlap \
    --conv-workspace-mib 64 --no-layers --rows dtn_step --batches 128
fi
# The runs below repeat comparisons of earlier GPU sessions (RESULTS.md): they go last, so that a
# tight BENCH_BUDGET leaves them out before the joint-batch and overlap runs above.
# Autotuned with cuDNN's non-deterministic algorithms allowed, as PyTorch allows them (rows
# tuned+nondet): what dtn's deterministic default costs, layer by layer.
dtn "bench_dtn_cuda --conv-autotune --conv-nondeterministic" 60 dtn_cuda_nondet.json --conv-autotune \
  --conv-nondeterministic --no-layers --rows dtn_step --batches 128 --profile-step
# Convolutions on cuDNN's heuristic algorithms (dtn::cuda::set_conv_gemm(false)) instead of the
# GEMM engine, the default since the H200 run of 2026-12-04: rows labelled dtn+cudnn and
# graph+cudnn, and the per-layer table, to set beside the plain run's pass by pass.
dtn "bench_dtn_cuda --conv-cudnn" 90 dtn_cuda_cudnn.json --conv-cudnn --profile-step
# Batch norm and its activation as two passes (the plain run fuses them): what fusion is worth
# on this card. Rows labelled dtn+unfused / graph+unfused.
dtn "bench_dtn_cuda --no-fusion" 60 dtn_cuda_unfused.json --no-fusion --no-layers --rows dtn_step --batches 128

echo "== comparison (ratio = dtn images/s / PyTorch images/s; > 1 means dtn is faster)"
if ((${#torch_files[@]})); then
  python3 "$here/compare.py" ${dtn_files[@]+"${dtn_files[@]}"} --torch "${torch_files[@]}"
elif ((${#dtn_files[@]})); then
  python3 -c 'import json,sys; [print(r) for r in json.load(open(sys.argv[1]))["rows"]]' "${dtn_files[0]}"
fi
echo "== JSON in $out"
exit $status
