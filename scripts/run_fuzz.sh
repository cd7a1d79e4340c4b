#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/*_fuzz.cpp) with clang + ASan + UBSan in build-fuzz/ and runs
# each for a bounded time on a scratch copy of its seed corpus (fuzz/corpus/<name>/, the committed
# seeds are never modified). Prints the executions per harness; exits non-zero if any harness
# found a crash (reproducer in build-fuzz/artifacts/) or failed to build.
#
#   scripts/run_fuzz.sh [seconds per harness, default 60] [harness name ...]
set -euo pipefail

seconds="${1:-60}"
shift || true
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${DTN_FUZZ_BUILD_DIR:-$root/build-fuzz}"
cc="${CC_FUZZ:-clang}"
cxx="${CXX_FUZZ:-clang++}"
jobs="${DTN_FUZZ_JOBS:-2}"

if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "run_fuzz.sh: the time per harness must be a positive number of seconds, got '$seconds'" >&2
  exit 2
fi
command -v "$cxx" >/dev/null || { echo "run_fuzz.sh: $cxx not found (libFuzzer needs clang)" >&2; exit 2; }
mkdir -p "$build"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" -DDTN_FUZZ=ON -DDTN_CUDA=OFF \
  -DDTN_BUILD_TESTS=OFF -DDTN_BUILD_EXAMPLES=OFF -DDTN_BUILD_BENCHMARKS=OFF >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log" >&2; echo "run_fuzz.sh: configure failed" >&2; exit 1; }

harnesses=()
if [ "$#" -gt 0 ]; then
  harnesses=("$@")
else
  for src in "$root"/fuzz/*_fuzz.cpp; do
    [ -e "$src" ] || continue
    harnesses+=("$(basename "$src" .cpp)")
  done
fi
[ "${#harnesses[@]}" -gt 0 ] || { echo "run_fuzz.sh: no fuzz/*_fuzz.cpp" >&2; exit 2; }

status=0
mkdir -p "$build/artifacts"
summary=()
for h in "${harnesses[@]}"; do
  if ! cmake --build "$build" --target "$h" -j "$jobs" >"$build/$h.build.log" 2>&1; then
    tail -n 30 "$build/$h.build.log" >&2
    summary+=("$h: BUILD FAILED (see $build/$h.build.log)")
    status=1
    continue
  fi
  corpus_src="$root/fuzz/corpus/${h%_fuzz}"
  work="$(mktemp -d "${TMPDIR:-/tmp}/dtn_fuzz_${h}.XXXXXX")"
  if [ -d "$corpus_src" ]; then cp -r "$corpus_src/." "$work/"; fi
  echo "== $h: ${seconds}s on $(ls "$work" | wc -l) seed inputs (copy in $work)"
  log="$build/$h.fuzz.log"
  rc=0
  "$build/$h" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$build/artifacts/$h-" "$work" >"$log" 2>&1 || rc=$?
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1 || true)"
  if [ "$rc" -ne 0 ]; then
    grep -E 'ERROR|SUMMARY|Test unit written|runtime error' "$log" | head -n 20 >&2 || true
    summary+=("$h: FAILED (exit $rc) after ${execs:-?} executions; log $log, reproducer in $build/artifacts/")
    status=1
  else
    summary+=("$h: ok, ${execs:-?} executions in ${seconds}s, corpus grew to $(ls "$work" | wc -l) inputs")
  fi
  rm -rf "$work"
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit "$status"
