#!/usr/bin/env bash
# End-to-end smoke test of examples/svhn_to_mnist on the real data (a few steps per stage):
# every stage runs, every output file is written, --reuse loads f as it was trained (the same
# accuracy), and --resume continues from the checkpoint, the average of g's weights included
# (or starting again where the checkpoint has none).
# It checks the pipeline, not the method's accuracy (examples/svhn_to_mnist/RESULTS.md does that).
# Exit 77 (CTest: skipped) when DTN_DATA_DIR does not hold mnist/ and synthdigits/ (or svhn/).
set -euo pipefail
exe="$1"
out="$2"
data="${DTN_DATA_DIR:-}"
if [ -z "$data" ] || [ ! -d "$data/mnist" ] || { [ ! -d "$data/synthdigits" ] && [ ! -d "$data/svhn" ]; }; then
  echo "skipped: DTN_DATA_DIR does not point at a folder with mnist/ and synthdigits/ (or svhn/)"
  exit 77
fi
rm -rf "$out"
mkdir -p "$out"
fail() { echo "FAIL: $*" >&2; exit 1; }
common=(--data-dir "$data" --out "$out" --batch 16 --eval-batch 64 --eval-limit 128 --threads 2 --seed 3
        --val-size 64 --val-every 2)
"$exe" "${common[@]}" --f-steps 8 --clf-steps 8 --dtn-steps 4 --sample-every 2 --ckpt-every 2 --log-every 1 \
  --g-updates 2 --d-lr 1e-4 >"$out/run1.log" 2>&1 || { rc=$?; cat "$out/run1.log"; fail "the first run exited with $rc"; }
for f in f.safetensors mnist_classifier.safetensors dtn.safetensors dtn_best.safetensors metrics.csv \
         validation.csv validation_g_average.csv results.txt losses.svg samples_000002.png samples_000004.png; do
  [ -s "$out/$f" ] || fail "missing or empty output $out/$f"
done
grep -q '^(a) f: .* test accuracy' "$out/results.txt" || fail "no stage (a) line in results.txt"
grep -q '^(b) MNIST classifier: MNIST test accuracy' "$out/results.txt" || fail "no stage (b) line"
grep -q '^(c) DTN: 4 steps' "$out/results.txt" || fail "stage (c) did not report 4 steps"
grep -q 'MNIST classifier on G(x)' "$out/results.txt" || fail "no stage (d) line"
[ "$(grep -c '^[0-9]' "$out/metrics.csv")" = 4 ] || fail "metrics.csv should hold 4 step rows"
[ "$(grep -c '^[0-9]' "$out/validation.csv")" = 2 ] || fail "validation.csv should hold steps 2 and 4"
grep -q 'held out for validation' "$out/run1.log" || fail "no validation split was reported"
grep -q '^(d) best-validation model (step [24],' "$out/results.txt" || fail "no best-validation evaluation"
grep -q "^(d) the average of g's weights (exponential, decay 0.99, over 4 updates)" "$out/results.txt" ||
  fail "no evaluation of the average of g's weights over 4 updates"
[ "$(grep -c '^[0-9]' "$out/validation_g_average.csv")" = 2 ] || fail "validation_g_average.csv should hold 2 rows"
f_trained=$(sed -n 's/^(a) f: .* test accuracy \([0-9.]*%\) (after .*/\1/p' "$out/results.txt")
[ -n "$f_trained" ] || fail "no accuracy of the trained f"
# Resume: f and the classifier are reused, the DTN continues from step 4 to step 6 (with joint
# batches: one pass per network and update, the same method).
"$exe" "${common[@]}" --reuse --resume --dtn-steps 6 --sample-every 2 --ckpt-every 2 --log-every 1 \
  --g-updates 2 --d-lr 1e-4 --joint-batches >"$out/run2.log" 2>&1 || { rc=$?; cat "$out/run2.log"; fail "the resumed run exited with $rc"; }
grep -q 'resumed DTN from .* at step 4' "$out/run2.log" || { cat "$out/run2.log"; fail "no resume at step 4"; }
grep -q '(a) f loaded from' "$out/run2.log" || fail "f was not reused"
# The loaded f is the trained one, evaluated the same way (evaluation mode: running statistics).
f_loaded=$(sed -n 's/^(a) f: .* test accuracy \([0-9.]*%\) (loaded from .*/\1/p' "$out/results.txt")
[ "$f_loaded" = "$f_trained" ] || fail "f reloaded scores $f_loaded, trained $f_trained"
# The average of g's weights was restored from the checkpoint: 6 updates in all, not 2.
grep -q "^(d) the average of g's weights (exponential, decay 0.99, over 6 updates)" "$out/results.txt" ||
  fail "the average of g's weights was not resumed (expected 6 updates)"
[ "$(grep -c '^[0-9]' "$out/validation_g_average.csv")" = 3 ] || fail "validation_g_average.csv should hold 3 rows after resuming"
grep -q '^(c) DTN: 6 steps' "$out/results.txt" || fail "the resumed run did not reach step 6"
[ -s "$out/samples_000006.png" ] || fail "no sample grid at step 6"
[ "$(grep -c '^[0-9]' "$out/metrics.csv")" = 6 ] || fail "metrics.csv should hold 6 step rows after resuming"
[ "$(grep -c '^[0-9]' "$out/validation.csv")" = 3 ] || fail "validation.csv should hold 3 rows after resuming"
grep -q '^(d) best-validation model (step [246],' "$out/results.txt" || fail "no best-validation evaluation after resuming"
# A checkpoint written without the average (--g-average 0) resumes with one that starts again.
"$exe" "${common[@]}" --reuse --resume --dtn-steps 7 --g-average 0 >"$out/run3.log" 2>&1 ||
  { rc=$?; cat "$out/run3.log"; fail "the run without the average exited with $rc"; }
if grep -q "the average of g's weights" "$out/results.txt"; then fail "--g-average 0 still evaluated an average"; fi
"$exe" "${common[@]}" --reuse --resume --dtn-steps 9 >"$out/run4.log" 2>&1 ||
  { rc=$?; cat "$out/run4.log"; fail "the run resuming without an average exited with $rc"; }
grep -q 'holds no average of g.s weights: the average starts again from step 7' "$out/run4.log" ||
  { cat "$out/run4.log"; fail "no note that the average starts again"; }
grep -q "^(d) the average of g's weights (exponential, decay 0.99, over 2 updates)" "$out/results.txt" ||
  fail "the restarted average should hold 2 updates"
echo "svhn_to_mnist smoke test passed: $(grep -c . "$out/results.txt") result lines"
