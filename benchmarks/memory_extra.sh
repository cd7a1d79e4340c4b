#!/usr/bin/env bash
# Peak host memory of the example with an SVHN-extra-sized source: writes a synthetic
# extra_32x32.mat of 531,131 random 32x32x3 uint8 images (1.6 GB, numpy + scipy), links the
# train/test files and MNIST from DATA (default ../shared/data), and runs svhn_to_mnist with f
# pretrained on that extra split for a few steps under /usr/bin/time -v. Needs numpy and scipy
# (pip) for writing the file, and /usr/bin/time (Debian's time package).
#   benchmarks/memory_extra.sh [path to svhn_to_mnist] [work dir]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exe=${1:-$root/build/svhn_to_mnist}
work=${2:-/tmp/dtn-memory-extra}
data=${DATA:-$root/../shared/data}
[[ -x /usr/bin/time ]] || { echo "memory_extra.sh: /usr/bin/time not found (apt-get install time)" >&2; exit 2; }
[[ -x $exe ]] || { echo "memory_extra.sh: $exe not found or not executable (build the example first)" >&2; exit 2; }
mkdir -p "$work/source" "$work/mnist"
ln -sf "$data"/synthdigits/train_32x32.mat "$data"/synthdigits/test_32x32.mat "$work/source/"
ln -sf "$data"/mnist/* "$work/mnist/"
if [[ ! -f "$work/source/extra_32x32.mat" ]]; then
  python3 -c 'import numpy, scipy.io' 2> /dev/null || {
    echo "memory_extra.sh: writing the synthetic extra_32x32.mat needs numpy and scipy (python3 -m pip install numpy scipy)" >&2
    exit 2
  }
  python3 - "$work/source/extra_32x32.mat" <<'PY'
import sys, numpy as np, scipy.io as sio
n = 531131
rng = np.random.default_rng(0)
X = np.empty((32, 32, 3, n), dtype=np.uint8, order="F")
for i in range(0, n, 50000):
    k = min(50000, n - i)
    X[:, :, :, i:i + k] = rng.integers(0, 256, size=(32, 32, 3, k), dtype=np.uint8)
y = rng.integers(1, 11, size=(n, 1)).astype(np.float64)
sio.savemat(sys.argv[1], {"X": X, "y": y}, do_compression=False, format="5")
PY
fi
/usr/bin/time -v "$exe" --source-dir "$work/source" --mnist-dir "$work/mnist" --source-name extra-sized \
  --f-split extra --f-steps 5 --clf-steps 5 --dtn-steps 2 --eval-limit 200 --threads 1 --out "$work/out" 2>&1 |
  grep -E "^data:|Maximum resident set size|Elapsed|Exit status"
