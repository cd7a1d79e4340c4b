#!/usr/bin/env bash
# The CPU and data tests built for 64-bit ARM (aarch64: ARM laptops and servers) with a cross
# compiler and run under qemu-user, on an x86-64 Debian/Ubuntu machine. Not part of CI (it needs
# a foreign architecture's packages; the build and the emulated run take ~3 min on 2 cores). It
# checks what an x86 build cannot: the generic code paths on another CPU, where char is unsigned
# and memory ordering is weaker.
#
#   scripts/cross-test.sh [BUILD_DIR]       (default build-aarch64)
#
# Needs (it says which are missing; adding a foreign architecture is left to you):
#   apt-get install g++-aarch64-linux-gnu qemu-user
#   dpkg --add-architecture arm64 && apt-get update && apt-get install zlib1g-dev:arm64 libpng-dev:arm64
# Eigen, doctest and nlohmann-json are header-only: the host's packages serve (scripts/install_deps.sh).
# libmatio is not needed: without an arm64 libmatio the build reads .mat files with dtn's own reader.
# Real-data cases read $DTN_DATA_DIR (default ../shared/data where it exists), as in scripts/test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${1:-build-aarch64}"
triple=aarch64-linux-gnu
sysroot=/usr/$triple

missing=()
command -v $triple-g++ >/dev/null || missing+=("g++-$triple (apt-get)")
command -v qemu-aarch64 >/dev/null || missing+=("qemu-user (apt-get)")
[ -e /usr/lib/$triple/libz.so ] || missing+=("zlib1g-dev:arm64")
[ -e /usr/lib/$triple/libpng.so ] || missing+=("libpng-dev:arm64")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "cross-test.sh: missing: ${missing[*]} (see the top of this script)" >&2
  exit 1
fi
if [ -z "${DTN_DATA_DIR:-}" ] && [ -d "$root/../shared/data/mnist" ]; then
  export DTN_DATA_DIR="$root/../shared/data"
fi

mkdir -p "$build"
cat > "$build/toolchain.cmake" <<EOF
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER $triple-gcc)
set(CMAKE_CXX_COMPILER $triple-g++)
set(CMAKE_LIBRARY_ARCHITECTURE $triple)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64;-L;$sysroot)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
EOF
# pkg-config of the target only, so that the host's libmatio is not taken for an arm64 one.
PKG_CONFIG_LIBDIR=/usr/lib/$triple/pkgconfig:/usr/share/pkgconfig \
  cmake -S . -B "$build" -DCMAKE_TOOLCHAIN_FILE="$build/toolchain.cmake" -DCMAKE_BUILD_TYPE=Release \
  -DDTN_CUDA=OFF -DDTN_NATIVE=OFF -DDTN_WERROR=ON -DDTN_BUILD_EXAMPLES=OFF -DDTN_BUILD_BENCHMARKS=OFF \
  -DCMAKE_CXX_FLAGS="-Wno-psabi"
cmake --build "$build" -j "${DTN_JOBS:-$(nproc)}" --target dtn_tests dtn_data_tests

# A case that starts a thread where qemu cannot would hang: each program gets 15 minutes.
run() {
  local rc=0
  timeout 900 qemu-aarch64 -L "$sysroot" "$@" || rc=$?
  [ "$rc" != 124 ] || echo "cross-test.sh: $1 ran out of its 15 minutes (a case that starts threads under a qemu that cannot?)" >&2
  return "$rc"
}
# ELF e_machine (2 bytes at offset 18) is 0xb7 for aarch64.
[ "$(od -An -tx1 -j18 -N2 "$build/dtn_tests" | tr -d ' ')" = b700 ] ||
  { echo "cross-test.sh: $build/dtn_tests is not an aarch64 program" >&2; exit 1; }

# qemu-user cannot start threads or child processes in some sandboxes (a guest clone() never
# returns). Probe with a program that starts one thread; where that hangs, run single-threaded
# and leave out, by name, the cases that start threads or fork whatever OMP_NUM_THREADS says.
cat > "$build/thread_probe.cpp" <<'EOF'
#include <thread>
int main() { int x = 0; std::thread t([&] { x = 1; }); t.join(); return x == 1 ? 0 : 1; }
EOF
$triple-g++ -O1 -pthread "$build/thread_probe.cpp" -o "$build/thread_probe"
exclude=""
if timeout 20 qemu-aarch64 -L "$sysroot" "$build/thread_probe"; then
  echo "cross-test.sh: threads run under qemu here: every case runs, on 2 threads"
  export OMP_NUM_THREADS=2
else
  echo "cross-test.sh: qemu cannot start a thread on this machine: single-threaded, and the cases"
  echo "  that start threads or processes themselves are left out:"
  export OMP_NUM_THREADS=1
  exclude="*file size limit*,*blocks of channels gives the bits*,*small classifier learns*,*layer hooks are per thread*,*set_num_threads gives OpenMP*,*SIGKILL in the middle*,*killed at any moment*"
  echo "  $exclude"
fi
echo "cross-test.sh: dtn_tests (aarch64, qemu)"
run "$build/dtn_tests" ${exclude:+"-tce=$exclude"}
# A real-data case without data exits with 77 (CTest's 'skipped'), which would end the run here.
[ -n "${DTN_DATA_DIR:-}" ] || exclude="${exclude:+$exclude,}real data:*"
echo "cross-test.sh: dtn_data_tests (aarch64, qemu; DTN_DATA_DIR=${DTN_DATA_DIR:-<unset: real-data cases left out>})"
run "$build/dtn_data_tests" ${exclude:+"-tce=$exclude"}
echo "cross-test.sh: passed"
