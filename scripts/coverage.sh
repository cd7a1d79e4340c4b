#!/usr/bin/env bash
# Line coverage of the library (include/dtn) by the CPU and data tests, for finding code that no
# test runs (not in CI). GCC --coverage build in build-coverage/, every CTest entry except the
# packaging ones and the example's smoke runs (too slow at -O1 with counters), then gcov's counts
# merged over template instantiations: a line counts as run when any instantiation ran it (a
# plain gcovr report lists each instantiation's lines separately, so templates look uncovered).
# Writes build-coverage/uncovered.txt (each unexecuted line with its text) and prints a summary.
# Needs gcovr (pip install gcovr). The GPU backend is not covered: it needs a GPU to run. Read
# the list knowing what this build leaves out: lines only the example runs (its smoke tests are
# not run here), and the generic loops a -march=native build replaces by AVX2/AVX-512 ones (CI's
# portable build runs those). On 2026-12-05: 3725 of 3889 lines run (95.8%); on 2026-12-07 (AMD
# EPYC, AVX-512): 4376 of 4548 (96.2%). Most of the rest are failures of the OS or of
# libpng/libmatio (fsync, close, encode), the > 2 GiB .mat path, the generic im2col that AVX-512
# replaces, and lambda bodies gcov reports unrun although their tests run them (winograd_s2k3's
# forward and data pass: tests/cpu/test_backend_reference.cpp and test_gradcheck.cpp call them).
#   scripts/coverage.sh            build, test, report
#   DTN_DATA_DIR=...               also the real-data cases (default: ../shared/data when present)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v gcovr >/dev/null || { echo "coverage.sh: gcovr not found (pip install gcovr)" >&2; exit 2; }
if [ -z "${DTN_DATA_DIR:-}" ] && [ -d "$root/../shared/data/mnist" ]; then export DTN_DATA_DIR="$root/../shared/data"; fi
build=build-coverage
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DDTN_CUDA=OFF -DDTN_BUILD_EXAMPLES=ON -DDTN_BUILD_BENCHMARKS=OFF \
  -DCMAKE_CXX_FLAGS="-O1 --coverage -fprofile-update=atomic" -DCMAKE_EXE_LINKER_FLAGS="--coverage"
cmake --build "$build" -j "${DTN_JOBS:-$(nproc)}"
find "$build" -name '*.gcda' -delete
ctest --test-dir "$build" -j "${DTN_JOBS:-$(nproc)}" -E '^(packaging/|examples/)' ||
  echo "coverage.sh: some tests failed (above); the report covers what ran" >&2
gcovr -r "$root" --filter 'include/dtn/' --object-directory "$build" -j "${DTN_JOBS:-$(nproc)}" \
  --gcov-ignore-errors=no_working_dir_found --gcov-ignore-parse-errors=suspicious_hits.warn_once_per_file \
  --json "$build/coverage.json" 2>/dev/null
python3 - "$build/coverage.json" "$build/uncovered.txt" <<'EOF'
import collections, json, sys
report = json.load(open(sys.argv[1]))
total = run = 0
with open(sys.argv[2], "w") as out:
    for f in sorted(report["files"], key=lambda f: f["file"]):
        count = collections.defaultdict(int)
        for line in f["lines"]:
            if line.get("gcovr/noncode"):
                continue
            count[line["line_number"]] = max(count[line["line_number"]], line["count"])
        missed = sorted(n for n, c in count.items() if c == 0)
        total += len(count)
        run += len(count) - len(missed)
        if missed:
            text = open(f["file"]).read().split("\n")
            out.write(f"== {f['file']}: {len(missed)} of {len(count)} lines not run\n")
            for n in missed:
                out.write(f"{n:5d}: {text[n - 1]}\n")
            print(f"{f['file']}: {len(count) - len(missed)}/{len(count)} lines run")
print(f"coverage.sh: {run}/{total} lines of include/dtn (CPU side) run by the tests ({100.0 * run / max(total, 1):.1f}%);"
      f" the others, with their text: {sys.argv[2]}")
EOF
