#!/usr/bin/env bash
# dtn vs PyTorch on the CPU, one command: builds bench_dtn (Release, -O3 -march=native), runs it at
# 1 and 2 threads and torch_dtn.py at 2 threads, and prints the comparison table.
#   BUILD_DIR   build folder (default <repo>/build-bench)
#   OUT_DIR     where the JSON files go (default $BUILD_DIR/bench-results)
#   DTN_THREADS thread counts for bench_dtn (default 1,2); TORCH_THREADS for PyTorch (default 2)
#   BENCH_ARGS / TORCH_ARGS  extra arguments, e.g. BENCH_ARGS="--reps 3"
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
out=${OUT_DIR:-$build/bench-results}
dtn_threads=${DTN_THREADS:-1,2}
torch_threads=${TORCH_THREADS:-2}
mkdir -p "$out"

echo "== configure + build bench_dtn in $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDTN_NATIVE=ON -DDTN_BUILD_BENCHMARKS=ON >/dev/null
cmake --build "$build" --target bench_dtn -j"$(nproc)"

echo "== machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cores visible, $(date -u '+%F %T UTC')"
echo "== bench_dtn --threads $dtn_threads"
# shellcheck disable=SC2086
"$build/bench_dtn" --threads "$dtn_threads" --json "$out/dtn_cpu.json" ${BENCH_ARGS:-}

torch_files=()
if python3 -c 'import torch' 2>/dev/null; then
  for t in ${torch_threads//,/ }; do
    echo "== torch_dtn.py --device cpu --threads $t"
    # shellcheck disable=SC2086
    python3 "$here/torch_dtn.py" --device cpu --threads "$t" --json "$out/torch_cpu_t$t.json" --quiet ${TORCH_ARGS:-}
    torch_files+=("$out/torch_cpu_t$t.json")
  done
else
  echo "run_cpu.sh: python3 cannot import torch: PyTorch columns left out (pip install torch)" >&2
fi

echo "== comparison (ratio = dtn images/s / PyTorch images/s; > 1 means dtn is faster)"
if ((${#torch_files[@]})); then
  python3 "$here/compare.py" "$out/dtn_cpu.json" --torch "${torch_files[@]}"
else
  python3 -c 'import json,sys; [print(r) for r in json.load(open(sys.argv[1]))["rows"]]' "$out/dtn_cpu.json"
fi
echo "== JSON in $out"
