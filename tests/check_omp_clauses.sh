#!/usr/bin/env bash
# No OpenMP directive in dtn has both a num_threads and an if clause: with Clang's OpenMP a false
# if leaves the num_threads count for the thread's next parallel region, dtn's or the caller's
# (llvm/llvm-project#63197; include/dtn/backend/cpu/parallel.hpp). The runtime test
# ("... leave no thread count behind") sees it only in a Clang build and on the passes it runs;
# this check reads every directive (DTN_OMP(...) and #pragma omp, one line each) in every build.
# usage: check_omp_clauses.sh REPO_ROOT
set -euo pipefail
root=${1:?usage: check_omp_clauses.sh REPO_ROOT}
directives=$(grep -rnE 'DTN_OMP\(|#[[:space:]]*pragma[[:space:]]+omp|_Pragma\("omp' "$root/include" "$root/examples" \
  "$root/benchmarks" "$root/tests" --include='*.hpp' --include='*.cpp' --include='*.cuh' --include='*.cu' --include='*.h' |
  grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true)
# a clause, not a call such as dtn::num_threads() or a name ending in _if
both=$(printf '%s\n' "$directives" | grep -E '(^|[^:_[:alnum:]])num_threads[[:space:]]*\(' |
  grep -E '(^|[^_[:alnum:]])if[[:space:]]*\(' || true)
if [ -n "$both" ]; then
  printf '%s\n' "$both" >&2
  echo "check_omp_clauses: the directives above have both num_threads and if: write num_threads(cond ? n : 1)" \
       "or the if alone (include/dtn/backend/cpu/parallel.hpp)" >&2
  exit 1
fi
count=$(printf '%s\n' "$directives" | grep -c . || true)
echo "check_omp_clauses: $count OpenMP directives, none with both num_threads and if"
