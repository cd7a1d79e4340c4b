#!/usr/bin/env bash
# dtn vs PyTorch on the CPU, one command: builds bench_dtn (Release, -O3 -march=native), runs it at
# 1 and 2 threads and torch_dtn.py at 2 threads, and prints the comparison table, then the DTN
# step at the largest batch layer by layer on both sides (--profile-step).
#   BUILD_DIR   build folder (default <repo>/build-bench)
#   OUT_DIR     where the JSON files go (default $BUILD_DIR/bench-results)
#   DTN_THREADS thread counts for bench_dtn (default 1,2); TORCH_THREADS for PyTorch (default 2)
#   BENCH_ARGS / TORCH_ARGS  extra arguments, e.g. BENCH_ARGS="--reps 3"
#   RUNS        alternate dtn and PyTorch runs this many times (default 1); each row then counts
#               with its fastest run. On a machine shared with other work use RUNS=2 STAT=min.
#   STAT        median (default) or min: which time per row the comparison uses
#   ISA         native (default), or avx2: both sides limited to AVX2 + FMA on a CPU with AVX-512,
#               to measure the code paths of AVX2-only hosts (e.g. AMD Zen 3): bench_dtn built
#               with -march=x86-64-v3 in <repo>/build-bench-avx2, PyTorch run with
#               ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2 (its convolutions are oneDNN's);
#               or sse4: both sides without AVX (128-bit vectors, as on CPUs without AVX2): bench_dtn
#               with -march=x86-64-v2 in <repo>/build-bench-sse4 (Eigen's GEMM, dtn's generic
#               paths), PyTorch with ATEN_CPU_CAPABILITY=default and ONEDNN_MAX_CPU_ISA=SSE41
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
isa=${ISA:-native}
case $isa in
  native) build=${BUILD_DIR:-$root/build-bench}
          cmake_isa=(-DDTN_NATIVE=ON) ;;
  avx2)   build=${BUILD_DIR:-$root/build-bench-avx2}
          cmake_isa=(-DDTN_NATIVE=OFF "-DCMAKE_CXX_FLAGS=-march=x86-64-v3")
          export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ;;
  sse4)   build=${BUILD_DIR:-$root/build-bench-sse4}
          cmake_isa=(-DDTN_NATIVE=OFF "-DCMAKE_CXX_FLAGS=-march=x86-64-v2")
          export ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 ;;
  *) echo "run_cpu.sh: ISA must be native, avx2 or sse4, not '$isa'" >&2; exit 2 ;;
esac
out=${OUT_DIR:-$build/bench-results}
dtn_threads=${DTN_THREADS:-1,2}
torch_threads=${TORCH_THREADS:-2}
mkdir -p "$out"

echo "== configure + build bench_dtn in $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "${cmake_isa[@]}" -DDTN_BUILD_BENCHMARKS=ON >/dev/null
cmake --build "$build" --target bench_dtn -j"$(nproc)"

echo "== machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cores visible, $(date -u '+%F %T UTC'), ISA=$isa"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
have_torch=0
if python3 -c 'import torch' 2>/dev/null; then
  have_torch=1
else
  echo "run_cpu.sh: python3 cannot import torch: PyTorch columns left out (pip install torch)" >&2
fi
runs=${RUNS:-1}
dtn_files=()
torch_files=()
for ((run = 1; run <= runs; run++)); do
  echo "== run $run/$runs: bench_dtn --threads $dtn_threads"
  # shellcheck disable=SC2086
  "$build/bench_dtn" --threads "$dtn_threads" --profile-step --json "$out/dtn_cpu_r$run.json" ${BENCH_ARGS:-}
  dtn_files+=("$out/dtn_cpu_r$run.json")
  if ((have_torch)); then
    for t in ${torch_threads//,/ }; do
      echo "== run $run/$runs: torch_dtn.py --device cpu --threads $t"
      # shellcheck disable=SC2086
      python3 "$here/torch_dtn.py" --device cpu --threads "$t" --json "$out/torch_cpu_t${t}_r$run.json" --quiet \
        --profile-step ${TORCH_ARGS:-}
      torch_files+=("$out/torch_cpu_t${t}_r$run.json")
    done
  fi
done
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== comparison (ratio = dtn images/s / PyTorch images/s; > 1 means dtn is faster)"
if ((${#torch_files[@]})); then
  python3 "$here/compare.py" "${dtn_files[@]}" --torch "${torch_files[@]}" --stat "${STAT:-median}"
else
  python3 -c 'import json,sys; [print(r) for r in json.load(open(sys.argv[1]))["rows"]]' "${dtn_files[0]}"
fi
echo "== JSON in $out"
