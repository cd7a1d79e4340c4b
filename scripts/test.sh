#!/usr/bin/env bash
# The test command: installs dependencies, builds everything (the CUDA code is compiled wherever
# nvcc is present, even with no GPU; its tests then report 'skipped'), and runs every test
# through CTest. Real-data tests read $DTN_DATA_DIR (default: ../shared/data when present) and
# are skipped with a message otherwise.
#
#   scripts/test.sh          build + all tests
#   scripts/test.sh --all    also the AddressSanitizer/UBSan build of the CPU tests (and, where nvcc
#                            is, of the host-emulated GPU kernels), the CPU tests built for plain
#                            x86-64 (the paths CPUs without AVX2 take), a Clang + libc++ build
#                            without OpenMP, a Clang build of the CPU tests, a ThreadSanitizer
#                            build of them and the fuzzers (what CI runs; CI=true implies --all)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
all=0
[ "${1:-}" = "--all" ] && all=1
[ "${CI:-}" = "true" ] && all=1
jobs="${DTN_JOBS:-$(nproc)}"

scripts/install_deps.sh
# Disk: the build trees of --all (seven of them) took 2.2 GiB at their peak in CI on 2026-12-07,
# the default run's one tree about 0.3 GiB. Too little space shows up late, as tests failing with
# 'No space left on device' (checkpoints the tests write), so it is said here first.
need_gib=1
[ "$all" = 1 ] && need_gib=3
free_kib=$(df -Pk "$root" 2>/dev/null | awk 'NR == 2 { print $4 }' || true)
if [[ "$free_kib" =~ ^[0-9]+$ ]]; then
  echo "test.sh: $(awk -v k="$free_kib" 'BEGIN { printf "%.1f", k / 1048576 }') GiB free on the disk of $root"
  if (( free_kib < need_gib * 1048576 )); then
    echo "test.sh: WARNING: the build trees need about $need_gib GiB; with less, tests will fail with 'No space left on device'" >&2
  fi
fi
if [ -z "${DTN_DATA_DIR:-}" ] && [ -d "$root/../shared/data/mnist" ]; then
  export DTN_DATA_DIR="$root/../shared/data"
fi
echo "test.sh: DTN_DATA_DIR=${DTN_DATA_DIR:-<unset: real-data tests will be skipped>}"

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DDTN_WERROR=ON -DDTN_BUILD_TESTS=ON -DDTN_BUILD_EXAMPLES=ON -DDTN_BUILD_BENCHMARKS=ON
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

if [ "$all" = 1 ]; then
  echo "test.sh: AddressSanitizer + UndefinedBehaviorSanitizer build of the CPU tests"
  # On a CPU with AVX2 and FMA the sanitizers also cover dtn's AVX2 paths (the packed float GEMM,
  # the vectorised unfold/fold and 2x2 pool); the native build (-march=native) may take AVX-512 ones.
  simd=""
  if grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo 2>/dev/null; then simd="-mavx2 -mfma"; fi
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DDTN_CUDA=OFF -DDTN_WERROR=ON -DDTN_BUILD_EXAMPLES=OFF \
    -DDTN_BUILD_BENCHMARKS=OFF -DDTN_NATIVE=OFF \
    -DCMAKE_CXX_FLAGS="-O1 -g $simd -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined"
  cmake --build build-asan -j "$jobs"
  ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j "$jobs"
  if [ "$(uname -m)" = x86_64 ]; then
    # The generic code paths: what a CPU without AVX2 runs (ARM laptops, older x86): Eigen's
    # GEMM instead of dtn's packed kernel, the scalar unfold/fold and pooling. The native build
    # above and the sanitizer build take the AVX-512 or AVX2 paths, so without this build the
    # generic ones would go untested here (-march=x86-64: SSE2 only).
    echo "test.sh: portable build of the CPU tests (-march=x86-64, no AVX)"
    cmake -S . -B build-portable -DCMAKE_BUILD_TYPE=Release -DDTN_CUDA=OFF -DDTN_WERROR=ON -DDTN_BUILD_EXAMPLES=OFF \
      -DDTN_BUILD_BENCHMARKS=OFF -DDTN_NATIVE=OFF -DCMAKE_CXX_FLAGS="-march=x86-64"
    cmake --build build-portable -j "$jobs" --target dtn_tests dtn_resume_tool
    ctest --test-dir build-portable --output-on-failure -j "$jobs" -R '^cpu/'
  fi
  if command -v clang++ >/dev/null; then
    # macOS's toolchain as far as Linux has it: Clang with libc++ (whose headers include less of
    # each other than libstdc++'s, so a missing #include shows) and no OpenMP (Apple's clang has
    # none unless libomp is installed; -DDTN_OPENMP=OFF): the library, its tests, examples and
    # benchmarks build warning-free and run on one thread, and the installed package asks for no
    # OpenMP (the packaging tests). Without libc++ (libc++-dev), Clang's usual library.
    stdlib=""
    if echo 'int main() {}' | clang++ -stdlib=libc++ -x c++ - -o /dev/null 2>/dev/null; then
      stdlib="-stdlib=libc++"
    else
      echo "test.sh: libc++ not found (apt-get install libc++-dev libc++abi-dev): the build without OpenMP uses libstdc++"
    fi
    echo "test.sh: Clang ${stdlib:+with libc++ }build without OpenMP (one thread) of the CPU library, tests, examples and benchmarks"
    CC=clang CXX=clang++ cmake -S . -B build-noomp-clang -DCMAKE_BUILD_TYPE=Release -DDTN_CUDA=OFF -DDTN_OPENMP=OFF \
      -DDTN_WERROR=ON -DDTN_BUILD_TESTS=ON -DDTN_BUILD_EXAMPLES=ON -DDTN_BUILD_BENCHMARKS=ON \
      -DCMAKE_CXX_FLAGS="$stdlib" -DCMAKE_EXE_LINKER_FLAGS="$stdlib"
    cmake --build build-noomp-clang -j "$jobs"
    ctest --test-dir build-noomp-clang --output-on-failure -j "$jobs" -E '^python/'
    # The second compiler users build with (and the one macOS has): Clang reads C++17 more
    # strictly in places GCC lets pass, and contracts a * b + c into an FMA by default
    # (-ffp-contract=on), which bitwise expectations must survive. CPU build, every CPU test.
    echo "test.sh: Clang build of the CPU library, tests, examples and benchmarks"
    CC=clang CXX=clang++ cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=Release -DDTN_CUDA=OFF -DDTN_WERROR=ON \
      -DDTN_BUILD_TESTS=ON -DDTN_BUILD_EXAMPLES=ON -DDTN_BUILD_BENCHMARKS=ON
    cmake --build build-clang -j "$jobs"
    ctest --test-dir build-clang --output-on-failure -j "$jobs"
    # ThreadSanitizer over the CPU and data tests: data races in dtn's OpenMP code (the GEMM's
    # per-thread packing buffers, the split convolution passes, the reductions). Needs Archer
    # (libarcher.so, in libomp-dev), which tells TSan about OpenMP's own synchronisation; without
    # it every parallel region would be reported, so the build is skipped, saying why. The probe
    # runs with the tests' TSAN_OPTIONS: without ignore_noninstrumented_modules, TSan reports a
    # race inside the (uninstrumented) OpenMP runtime in about half the runs of even this program.
    # libomp loads Archer by name (libarcher.so, in /usr/lib/llvm-N/lib): that stopped working
    # here once an apt-get install had rebuilt the dynamic linker's cache (2026-12-06; libomp.so.5
    # then came through its /lib/<triple> link, and every parallel region was reported as a race),
    # so OMP_TOOL_LIBRARIES names it with its full path, clang's own, for the probe and the tests.
    archer=$(clang++ -print-file-name=libarcher.so)
    [[ -f "$archer" ]] || archer=libarcher.so
    probe=$(mktemp -d)
    printf '#include <cstdio>\nint main() {\n#pragma omp parallel num_threads(2)\n  {}\n  std::puts("ok");\n}\n' > "$probe/p.cpp"
    if clang++ -fopenmp -fsanitize=thread "$probe/p.cpp" -o "$probe/p" 2>/dev/null &&
       probe_out=$(OMP_TOOL_LIBRARIES="$archer" TSAN_OPTIONS=ignore_noninstrumented_modules=1 ARCHER_OPTIONS=verbose=1 \
                   "$probe/p" 2>&1) &&
       [[ "$probe_out" == *"Archer detected"* ]]; then
      echo "test.sh: ThreadSanitizer (with Archer) build of the CPU tests"
      CC=clang CXX=clang++ cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DDTN_CUDA=OFF -DDTN_WERROR=ON \
        -DDTN_BUILD_EXAMPLES=OFF -DDTN_BUILD_BENCHMARKS=OFF -DDTN_NATIVE=ON \
        -DCMAKE_CXX_FLAGS="-O1 -g -fsanitize=thread" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread"
      cmake --build build-tsan -j "$jobs"
      OMP_TOOL_LIBRARIES="$archer" TSAN_OPTIONS="ignore_noninstrumented_modules=1 halt_on_error=1 exitcode=66" \
        ctest --test-dir build-tsan --output-on-failure -j "$jobs" -E '^packaging/'
    else
      echo "test.sh: ThreadSanitizer build SKIPPED: clang's OpenMP runtime has no Archer (libarcher.so), without which TSan reports OpenMP's own synchronisation as races"
    fi
    rm -rf "$probe"
  fi
  if [ -x build/dtn_cuda_host_tests ]; then
    # The GPU kernels' per-thread index code, run on the host (tests/cuda_host), under the same
    # sanitizers: an index that strays outside a tensor is a heap overflow here, caught without
    # a GPU even where the values it reads would not change a result.
    echo "test.sh: AddressSanitizer + UndefinedBehaviorSanitizer build of the host-emulated GPU kernels"
    cmake -S . -B build-asan-cuda -DCMAKE_BUILD_TYPE=Debug -DDTN_CUDA=ON -DDTN_WERROR=ON -DDTN_BUILD_EXAMPLES=OFF \
      -DDTN_BUILD_BENCHMARKS=OFF -DDTN_NATIVE=OFF \
      -DCMAKE_CUDA_FLAGS="-Xcompiler=-O1,-g,-fsanitize=address,-fsanitize=undefined,-fno-sanitize-recover=undefined,-fno-omit-frame-pointer" \
      -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined"
    cmake --build build-asan-cuda -j "$jobs" --target dtn_cuda_host_tests
    ASAN_OPTIONS=detect_leaks=1 build-asan-cuda/dtn_cuda_host_tests
  fi
  echo "test.sh: fuzzing each parser for ${DTN_FUZZ_SECONDS:-60} s"
  scripts/run_fuzz.sh "${DTN_FUZZ_SECONDS:-60}"
fi
