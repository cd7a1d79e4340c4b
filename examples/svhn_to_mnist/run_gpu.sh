#!/usr/bin/env bash
# The DTN experiment on the GPU machine within a fixed time budget (scripts/gpu-check.sh stage 7).
# Assumes BUILD_DIR (default build-gpu) holds a CUDA build of svhn_to_mnist and DTN_DATA_DIR the data.
# Copies the results, the last sample grid, the loss plot and the metrics into $OUT when set.
#   F_STEPS, CLF_STEPS (default 1500, 1000), DTN_MINUTES (default 2), BATCH (default 128)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${BUILD_DIR:-$root/build-gpu}
run=${EXAMPLE_OUT:-$root/runs/gpu}
if [[ ! -x "$build/svhn_to_mnist" ]]; then
  timeout 300 cmake --build "$build" --target svhn_to_mnist -j"$(nproc)"
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
status=0
"$build/svhn_to_mnist" --device cuda --data-dir "${DTN_DATA_DIR:?set DTN_DATA_DIR}" --out "$run" \
  --batch "${BATCH:-128}" --f-steps "${F_STEPS:-1500}" --clf-steps "${CLF_STEPS:-1000}" --dtn-steps 100000 \
  --time-limit-min "${DTN_MINUTES:-2}" --sample-every 2000 --ckpt-every 5000 --log-every 100 --seed 1 || status=$?
if [[ -n "${OUT:-}" ]]; then
  cp "$run/results.txt" "$OUT/train_results.txt" 2>/dev/null || true
  cp "$run/metrics.csv" "$OUT/train_metrics.csv" 2>/dev/null || true
  cp "$run/validation.csv" "$OUT/train_validation.csv" 2>/dev/null || true
  last=$(ls "$run"/samples_*.png 2>/dev/null | tail -1)
  [[ -n "$last" ]] && cp "$last" "$OUT/train_samples.png"
fi
exit $status
