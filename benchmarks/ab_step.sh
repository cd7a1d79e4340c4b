#!/usr/bin/env bash
# Compares the DTN step of two bench_dtn builds (e.g. before and after a change) on a noisy
# machine: runs them alternately, N rounds, and prints each side's best time and its per-round
# medians. Build the "before" side from a worktree, e.g.
#   git worktree add /tmp/base <rev> && cmake -S /tmp/base -B /tmp/base/build -DCMAKE_BUILD_TYPE=Release \
#     -DDTN_BUILD_BENCHMARKS=ON && cmake --build /tmp/base/build --target bench_dtn
#   benchmarks/ab_step.sh /tmp/base/build/bench_dtn build-bench/bench_dtn
# Environment: N rounds (default 8), T threads (2), B batch (64), R timed steps per round (2).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BENCH_DTN_A BENCH_DTN_B" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for ((r = 1; r <= ${N:-8}; r++)); do
  for side in a b; do
    bin=$1
    [ "$side" = b ] && bin=$2
    "$bin" --threads "${T:-2}" --batches "${B:-64}" --rows dtn_step --no-layers --step-reps "${R:-2}" --warmup 1 \
      --json "$out/${side}_$r.json" >/dev/null
  done
done
python3 - "$out" "$1" "$2" <<'PY'
import glob, json, statistics, sys
out, names = sys.argv[1], {"a": sys.argv[2], "b": sys.argv[3]}
for side in "ab":
    rows = [next(r for r in json.load(open(f))["rows"] if r["name"] == "dtn_step")
            for f in sorted(glob.glob(f"{out}/{side}_*.json"))]
    med = [r["median_ms"] for r in rows]
    print(f"{side} {names[side]}: best {min(r['min_ms'] for r in rows):.1f} ms, median of round medians "
          f"{statistics.median(med):.1f} ms; rounds: {' '.join(f'{m:.0f}' for m in med)}")
PY
