#!/usr/bin/env bash
# Installs what dtn needs on Debian/Ubuntu (apt-get; as root, or through sudo) and, for the
# Python interop tests, numpy + safetensors + pytest from PyPI. The CUDA toolkit and cuDNN are
# not installed here: where nvcc and cuDNN exist the GPU backend is built, elsewhere it is skipped.
set -euo pipefail
packages=(build-essential cmake pkg-config clang libomp-dev libc++-dev libc++abi-dev libeigen3-dev doctest-dev
          nlohmann-json3-dev zlib1g-dev libpng-dev libmatio-dev curl python3 python3-pip)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "install_deps.sh: apt-get not found; install these yourself: ${missing[*]}" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install_deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "install_deps.sh: installing ${missing[*]}"
  $sudo apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >/dev/null
fi
# Python packages for the interop tests (optional: those tests report 'skipped' without them).
py=$(command -v python3 || true)
if [ -n "$py" ] && ! "$py" -c "import numpy, safetensors, pytest" 2>/dev/null; then
  "$py" -m pip install -q numpy safetensors pytest 2>/dev/null ||
    "$py" -m pip install -q --break-system-packages numpy safetensors pytest 2>/dev/null ||
    echo "install_deps.sh: could not pip-install numpy/safetensors/pytest; the Python interop tests will be skipped" >&2
fi
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "install_deps.sh: nvcc found: the CUDA backend will be built"
else
  echo "install_deps.sh: no nvcc: the CUDA backend and its tests are not built (install the CUDA toolkit and cuDNN to build them)"
fi
