#!/usr/bin/env bash
# The main job: builds and runs the bundled SVHN -> MNIST example end to end with short defaults
# that finish on a CPU-only machine in minutes. Arguments are passed to the program
# (e.g. --device cuda --full for the full-length run on a GPU; --help lists them).
#
# Data: $DTN_DATA_DIR (a folder with mnist/ and svhn/ or synthdigits/), else ../shared/data, else
# ./data; download the official files with scripts/download_data.sh ./data (needs internet).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install_deps.sh
if [ -z "${DTN_DATA_DIR:-}" ]; then
  for d in "$root/../shared/data" "$root/data"; do
    if [ -d "$d/mnist" ]; then export DTN_DATA_DIR="$d"; break; fi
  done
fi
if [ -z "${DTN_DATA_DIR:-}" ]; then
  echo "run_example.sh: no data found. Set DTN_DATA_DIR to a folder holding mnist/ and svhn/ (or synthdigits/)," >&2
  echo "or fetch the official MNIST and SVHN files (checksums verified) with: scripts/download_data.sh ./data" >&2
  exit 1
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DDTN_BUILD_EXAMPLES=ON >/dev/null
cmake --build build -j "$(nproc)" --target svhn_to_mnist
exec build/svhn_to_mnist --data-dir "$DTN_DATA_DIR" "$@"
