#!/usr/bin/env bash
# Prints one SHA-1 over the C++/CUDA sources and build files the GPU programs are built from
# (include, tests, benchmarks, examples, cmake, CMakeLists.txt): scripts/prebuild-gpu.sh records
# it in prebuilt-gpu/SOURCE, and scripts/gpu-check.sh compares it with the tree it runs in, so
# that programs built from other sources are never tested as if they were this tree's. Needs no
# git (the GPU machine's copy of the tree may have none). Run from anywhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
find include tests benchmarks examples cmake CMakeLists.txt -type f \
  \( -name '*.hpp' -o -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' -o -name '*.cmake' \
  -o -name '*.in' -o -name 'CMakeLists.txt' \) -print0 |
  LC_ALL=C sort -z | xargs -0 sha1sum | sha1sum | cut -c1-40
