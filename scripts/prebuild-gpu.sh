#!/usr/bin/env bash
# Builds, on a machine without a GPU, the programs scripts/gpu-check.sh runs on the GPU machine,
# so that the device time goes to tests and benchmarks rather than to the build (~3-5 minutes of a
# 15-minute lease). Release, sm_90, not -march=native (the GPU machine's CPU may lack this one's
# instructions). Result: prebuilt-gpu/ (git-ignored) with dtn_tests, dtn_cuda_tests,
# dtn_cuda_host_tests, bench_dtn_cuda, svhn_to_mnist and a SOURCE file naming the commit they
# were built from and the hash of their sources (scripts/source-hash.sh), which gpu-check.sh
# checks: rebuild after any change to the sources, or gpu-check builds on the GPU machine.
# Then, on the device tool: carry ["prebuilt-gpu"] and run `PREBUILT=prebuilt-gpu SKIP_TRAIN=1
# scripts/gpu-check.sh` (gpu-check builds there as usual if the prebuilt programs do not start).
#   BUILD_DIR (default build-gpu-prebuilt), JOBS (default: all cores)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${BUILD_DIR:-build-gpu-prebuilt}
targets=(dtn_tests dtn_cuda_tests dtn_cuda_host_tests bench_dtn_cuda svhn_to_mnist)
generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DDTN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DDTN_NATIVE=OFF -DDTN_WERROR=ON
cmake --build "$build" -j"${JOBS:-$(nproc)}" --target "${targets[@]}"
rm -rf prebuilt-gpu
mkdir prebuilt-gpu
for t in "${targets[@]}"; do cp "$build/$t" prebuilt-gpu/; done
{
  changed=$(git status --porcelain -- include tests benchmarks examples CMakeLists.txt cmake)
  echo "commit $(git rev-parse HEAD)${changed:+ + uncommitted changes}"
  echo "sources $(scripts/source-hash.sh)"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(nvcc --version | tail -1)"
} > prebuilt-gpu/SOURCE
du -sh prebuilt-gpu
cat prebuilt-gpu/SOURCE
