#!/usr/bin/env bash
# One script for the lent GPU machine (H100/H200 with nvcc, cmake, ninja, PyTorch; no network).
# Stages, each under `timeout`; a failing stage does not stop the later ones:
#   1. nvidia-smi
#   2. configure a Release build with the CUDA backend into build-gpu (Ninja, sm_90)
#   3. build everything (-j16)
#   4. ctest: all tests, GPU ones included                      -> $OUT/ctest.log
#   5. with CUDA_TESTS_AGAIN=1, the GPU test binary once more    -> $OUT/cuda_tests.log
#   6. benchmarks/run_gpu.sh, if present                         -> $OUT/bench.log
#   7. examples/svhn_to_mnist/run_gpu.sh, if present             -> $OUT/train.log
# and a summary table at the end (also $OUT/summary.txt). Configure and build output goes to
# $OUT/build.log. Stages 1-5 take about 5 minutes; 6 about 6 more (three bench_dtn_cuda runs,
# PyTorch eager, torch.compile within COMPILE_TIMEOUT, default 100 s, and a TF32 pair of runs that
# TF32=0 leaves out); 7 whatever it takes.
# Within a 15-minute device budget: SKIP_TRAIN=1 (and COMPILE_TIMEOUT=45 for a little room).
# torch.compile's caches come back as $OUT/torch-inductor-cache.tgz: unpacked in the repository
# root (`tar xzf FILE`, giving .torch-inductor-cache/, git-ignored) and named in the device
# tool's carry, they let the next run's compile start warm (same PyTorch image).
# Data: ./shared/data or ../shared/data, exported as DTN_DATA_DIR unless it is already set.
# Environment: OUT (default ./gpu-check-out), BUILD_DIR (default build-gpu), JOBS (default 16),
# T_CONFIGURE, T_BUILD, T_CTEST, T_CUDA, T_BENCH, T_TRAIN (stage time limits in seconds),
# SKIP_BENCH=1 / SKIP_TRAIN=1 to leave out stages 6 / 7; SANITIZE=FILTER (below) adds a stage
# between them: the GPU test cases FILTER names under compute-sanitizer (T_SANITIZE, default 150 s).
# PREBUILT=DIR (relative to the repository root): skip stages 2-4 and use the programs that
# scripts/prebuild-gpu.sh built elsewhere (carried to the GPU machine): the GPU and
# host-emulation test programs run directly (the CPU-only tests too with PREBUILT_CPU_TESTS=1),
# then stage 6 with them; saves the build's minutes of a short lease. Programs built from other
# sources than this tree's (the "sources" hash in DIR/SOURCE, scripts/source-hash.sh) are not
# used: it builds here instead. If they do not start, it retries with CUDA's and the nvidia
# wheels' library folders on LD_LIBRARY_PATH, then builds here. In this mode the stage limits
# default to what fits one 600-second device command: T_CUDA 120, T_BENCH 420 (run_gpu.sh
# leaves out the runs that no longer fit); the host-emulation tests, which need no GPU and run
# in CI, run only with PREBUILT_HOST_TESTS=1.
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
OUT=${OUT:-$root/gpu-check-out}
mkdir -p "$OUT"
build=${BUILD_DIR:-build-gpu}
jobs=${JOBS:-16}

if [[ -z "${DTN_DATA_DIR:-}" ]]; then
  for d in "$root/shared/data" "$root/../shared/data"; do
    if [[ -d "$d" ]]; then
      export DTN_DATA_DIR=$(cd "$d" && pwd)
      break
    fi
  done
fi
echo "gpu-check: repo $root, build dir $build, output $OUT, DTN_DATA_DIR=${DTN_DATA_DIR:-<none>}"

names=()
results=()
secs=()
# stage NAME LIMIT LOG CMD...: runs CMD under timeout, output appended to LOG (and echoed).
stage() {
  local name=$1 limit=$2 log=$3
  shift 3
  echo "=== [$name] $* (limit ${limit}s, log $log)" | tee -a "$log"
  local t0=$SECONDS rc
  timeout --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  local dt=$((SECONDS - t0)) verdict
  case $rc in
    0) verdict=ok ;;
    124 | 137) verdict="TIMEOUT (${limit}s)" ;;
    77) verdict="FAILED (exit 77: no GPU seen)" ;;
    *) verdict="FAILED (exit $rc)" ;;
  esac
  echo "=== [$name] $verdict after ${dt}s" | tee -a "$log"
  names+=("$name")
  results+=("$verdict")
  secs+=("$dt")
  return "$rc"
}
skip() {
  names+=("$1")
  results+=("skipped: $2")
  secs+=(0)
  echo "=== [$1] skipped: $2"
}

stage nvidia-smi 30 "$OUT/build.log" nvidia-smi

# PREBUILT: programs built off the GPU machine by scripts/prebuild-gpu.sh (carried along), used
# if they start here; otherwise the build below runs as usual.
pre=""
prebuilt_starts() { "$PREBUILT/dtn_cuda_tests" --list-test-cases > /dev/null 2>> "$OUT/build.log"; }
# Where a program built elsewhere may find CUDA's and cuDNN's libraries here if the loader does
# not: CUDA's folders and the pip wheels PyTorch brings (nvidia-cudnn-cu*, nvidia-cublas, ...).
cuda_lib_dirs() {
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do [[ -d $d ]] && printf '%s:' "$d"; done
  python3 -c 'import importlib
for n in ("nvidia.cudnn", "nvidia.cublas", "nvidia.cuda_runtime", "nvidia.cu13"):
    try: print(list(importlib.import_module(n).__path__)[0] + "/lib", end=":")
    except Exception: pass' 2> /dev/null
}
if [[ -n "${PREBUILT:-}" ]]; then
  want=$(bash scripts/source-hash.sh 2> /dev/null)
  have=$(sed -n 's/^sources //p' "$PREBUILT/SOURCE" 2> /dev/null)
  if [[ -z "$want" || "$want" != "$have" ]]; then
    echo "gpu-check: $PREBUILT was built from other sources (${have:-no hash} there, ${want:-none} here); building instead" |
      tee -a "$OUT/build.log"
    PREBUILT=""
  fi
fi
if [[ -n "${PREBUILT:-}" ]]; then
  if [[ -d "$PREBUILT" && -x "$PREBUILT/dtn_cuda_tests" ]] && ! prebuilt_starts; then
    dirs=$(cuda_lib_dirs)
    export LD_LIBRARY_PATH="${dirs%:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "gpu-check: the prebuilt programs did not start; trying LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee -a "$OUT/build.log"
  fi
  if [[ -d "$PREBUILT" && -x "$PREBUILT/dtn_cuda_tests" ]] && prebuilt_starts; then
    pre=$(cd "$PREBUILT" && pwd)
    echo "gpu-check: using the prebuilt programs in $pre: $(tr '\n' ' ' < "$pre/SOURCE" 2> /dev/null)" |
      tee -a "$OUT/build.log"
  else
    echo "gpu-check: PREBUILT=$PREBUILT does not run here; building instead" | tee -a "$OUT/build.log"
  fi
fi

if [[ -n "$pre" ]]; then
  build=$pre
  skip configure "prebuilt programs ($PREBUILT)"
  skip build "prebuilt programs ($PREBUILT)"
  # The test programs themselves, without CTest (which needs the build tree).
  stage cuda-tests "${T_CUDA:-120}" "$OUT/ctest.log" "$pre/dtn_cuda_tests"
  if [[ -n "${PREBUILT_HOST_TESTS:-}" ]]; then
    stage cuda-host-tests 120 "$OUT/ctest.log" "$pre/dtn_cuda_host_tests"
  else
    skip cuda-host-tests "prebuilt mode: no GPU needed, run in CI (PREBUILT_HOST_TESTS=1 runs them here)"
  fi
  if [[ -n "${PREBUILT_CPU_TESTS:-}" ]]; then
    stage cpu-tests "${T_CTEST:-600}" "$OUT/ctest.log" "$pre/dtn_tests"
  else
    skip cpu-tests "prebuilt mode: CPU-only tests run in CI (PREBUILT_CPU_TESTS=1 runs them here)"
  fi
elif stage configure "${T_CONFIGURE:-180}" "$OUT/build.log" \
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDTN_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DDTN_WERROR=OFF; then
  built=0
  stage build "${T_BUILD:-900}" "$OUT/build.log" cmake --build "$build" -j"$jobs" && built=1
  if [[ $built == 1 ]]; then
    stage ctest "${T_CTEST:-600}" "$OUT/ctest.log" \
      ctest --test-dir "$build" --output-on-failure -j8 --timeout 300 ${CTEST_ARGS:-}
  else
    # Run whatever did build, so one broken target does not hide every test result.
    stage ctest-partial "${T_CTEST:-600}" "$OUT/ctest.log" \
      ctest --test-dir "$build" --output-on-failure -j8 --timeout 300 ${CTEST_ARGS:-}
  fi
  if [[ -z "${CUDA_TESTS_AGAIN:-}" ]]; then
    skip cuda-tests "already run by ctest (set CUDA_TESTS_AGAIN=1 for a separate log)"
  elif [[ -x "$build/dtn_cuda_tests" ]]; then
    stage cuda-tests "${T_CUDA:-300}" "$OUT/cuda_tests.log" "$build/dtn_cuda_tests"
  else
    skip cuda-tests "$build/dtn_cuda_tests was not built"
  fi
else
  skip build "configure failed"
  skip ctest "configure failed"
fi

if [[ -n "${SKIP_BENCH:-}" ]]; then
  skip bench "SKIP_BENCH is set"
elif [[ -f benchmarks/run_gpu.sh ]]; then
  t_bench=${T_BENCH:-900}
  [[ -n "$pre" ]] && t_bench=${T_BENCH:-420}
  stage bench "$t_bench" "$OUT/bench.log" env BUILD_DIR="$(cd "$build" && pwd)" BENCH_BUDGET=$((t_bench - 10)) \
    bash benchmarks/run_gpu.sh
  # The rows as JSON (run_gpu.sh writes them in the build folder), for RESULTS.md and compare.py.
  [[ -d "$build/bench-results" ]] && tar czf "$OUT/bench-json.tgz" -C "$build" bench-results 2> /dev/null
  # torch.compile's caches, which run_gpu.sh keeps in .torch-inductor-cache: brought back, unpacked
  # into the checkout and carried next time, they spare the next run the Inductor build (a file
  # back from the device may be 16 MiB at most).
  if [[ -d .torch-inductor-cache ]] && [[ -n "$(ls -A .torch-inductor-cache)" ]]; then
    tar czf "$OUT/torch-inductor-cache.tgz" .torch-inductor-cache 2> /dev/null
    if (($(stat -c %s "$OUT/torch-inductor-cache.tgz") > 16 * 1024 * 1024 - 4096)); then
      echo "gpu-check: the torch.compile cache is over 16 MiB packed: not brought back" | tee -a "$OUT/bench.log"
      rm -f "$OUT/torch-inductor-cache.tgz"
    fi
  fi
else
  skip bench "benchmarks/run_gpu.sh not present"
fi

# SANITIZE=FILTER: the GPU test cases that doctest's -tc FILTER names (wildcards, commas), run
# under compute-sanitizer (SANITIZE_TOOL: memcheck by default; racecheck for the kernels' shared
# memory), after the benchmarks so that they keep their time; output appended to ctest.log (the
# device tool brings back at most 8 files). "all" runs every case. CUDA API errors are not
# reported: the tests provoke some on purpose, and libraries probe with failing calls; accesses
# out of bounds, misaligned or to freed memory are, and fail the stage. compute-sanitizer does not
# work on every runtime these machines have (KINDS.md of the device tool): then the stage fails
# with its message, and the stages before it stand.
if [[ -n "${SANITIZE:-}" ]]; then
  sanitizer=$(command -v compute-sanitizer)
  for s in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [[ -z "$sanitizer" && -x $s ]] && sanitizer=$s
  done
  if [[ -z "$sanitizer" ]]; then
    skip sanitizer "compute-sanitizer is neither on the PATH nor in /usr/local/cuda"
  elif [[ ! -x "$build/dtn_cuda_tests" ]]; then
    skip sanitizer "$build/dtn_cuda_tests was not built"
  else
    tc=()
    [[ $SANITIZE != all ]] && tc=("-tc=$SANITIZE")
    # --duration: each case's name and time as it ends, so that a stage stopped by its limit
    # (the cases that autotune every convolution are slow under memcheck) still says which cases
    # ran to their end under the sanitizer.
    stage sanitizer "${T_SANITIZE:-150}" "$OUT/ctest.log" "$sanitizer" --tool "${SANITIZE_TOOL:-memcheck}" \
      --report-api-errors no --error-exitcode 1 "$build/dtn_cuda_tests" --duration=true ${tc[@]+"${tc[@]}"}
  fi
fi

if [[ -n "${SKIP_TRAIN:-}" ]]; then
  skip train "SKIP_TRAIN is set"
elif [[ -f examples/svhn_to_mnist/run_gpu.sh ]]; then
  stage train "${T_TRAIN:-1800}" "$OUT/train.log" env BUILD_DIR="$(cd "$build" && pwd)" bash examples/svhn_to_mnist/run_gpu.sh
else
  skip train "examples/svhn_to_mnist/run_gpu.sh not present"
fi

{
  echo
  echo "gpu-check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  printf '%-14s %-28s %8s\n' stage result seconds
  for i in "${!names[@]}"; do printf '%-14s %-28s %8s\n' "${names[$i]}" "${results[$i]}" "${secs[$i]}"; done
  if [[ -f "$OUT/ctest.log" ]]; then
    grep -E "tests passed|tests failed|Total Test time|^\[doctest\] (test cases|Status)" "$OUT/ctest.log" | tail -8
  fi
} | tee "$OUT/summary.txt"
failed=0
for r in "${results[@]}"; do [[ $r == ok || $r == skipped* ]] || failed=1; done
exit $failed
