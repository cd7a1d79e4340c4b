#!/usr/bin/env bash
# Tests scripts/download_data.sh without a network: --verify-only on the real MNIST files, and the
# download path through a file:// "mirror" (curl reads file:// URLs) holding good or bad copies.
# Needs DTN_DATA_DIR (a folder with mnist/); exits 77 (skipped) without it.
#   usage: tests/data/download_data_test.sh [path/to/download_data.sh]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
script=${1:-$here/../../scripts/download_data.sh}
if [[ -z ${DTN_DATA_DIR:-} ]]; then
  echo "SKIPPED: DTN_DATA_DIR not set"
  exit 77
fi
command -v curl >/dev/null || { echo "SKIPPED: curl not installed"; exit 77; }
real=$DTN_DATA_DIR/mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
expect() {  # expect WANT_RC DESCRIPTION -- command...
  local want=$1 what=$2
  shift 3
  "$@" >"$tmp/out" 2>&1
  local rc=$?
  if [[ $rc == "$want" ]]; then
    echo "pass: $what"
  else
    echo "FAIL: $what (exit $rc, expected $want)"
    sed 's/^/    /' "$tmp/out"
    fails=$((fails + 1))
  fi
}
has() {  # has PATTERN DESCRIPTION: the last output contains PATTERN
  if grep -q -- "$1" "$tmp/out"; then echo "pass: $2"; else echo "FAIL: $2"; sed 's/^/    /' "$tmp/out"; fails=$((fails + 1)); fi
}

expect 0 "verify-only accepts the real MNIST .gz files" -- "$script" --verify-only "$real"
has "4 file(s) checked, 0 mismatch" "all four checked"

# A bad mirror: labels with one byte changed (still a valid gzip), images truncated.
mkdir -p "$tmp/bad" "$tmp/good"
cp "$real"/*.gz "$tmp/good/"
cp "$real"/*.gz "$tmp/bad/"
gzip -dc "$real/t10k-labels-idx1-ubyte.gz" | python3 -c "
import sys; b = bytearray(sys.stdin.buffer.read()); b[100] = (b[100] + 1) % 10; sys.stdout.buffer.write(b)" |
  gzip -c >"$tmp/bad/t10k-labels-idx1-ubyte.gz"
head -c 100000 "$real/t10k-images-idx3-ubyte.gz" >"$tmp/bad/t10k-images-idx3-ubyte.gz"
expect 1 "verify-only rejects a changed and a truncated file" -- "$script" --verify-only "$tmp/bad"
has "MISMATCH.*t10k-labels" "names the changed file"
has "MISMATCH.*t10k-images" "names the truncated file"
has "4 file(s) checked, 2 mismatch" "counts the mismatches"

# Raw (uncompressed) files are checked as they are.
mkdir -p "$tmp/raw"
gzip -dc "$real/t10k-labels-idx1-ubyte.gz" >"$tmp/raw/t10k-labels-idx1-ubyte"
expect 0 "verify-only accepts an uncompressed file" -- "$script" --verify-only "$tmp/raw"
mkdir -p "$tmp/empty"
expect 1 "verify-only with nothing to check fails" -- "$script" --verify-only "$tmp/empty"

# Downloads through file:// mirrors.
out=$tmp/dl
expect 0 "download from a good mirror" -- env DTN_MNIST_MIRROR="file://$tmp/good" "$script" --only mnist "$out"
expect 0 "the downloaded files verify" -- "$script" --verify-only "$out/mnist"
has "4 file(s) checked, 0 mismatch" "four files in DIR/mnist"
expect 0 "a second run skips present files" -- env DTN_MNIST_MIRROR="file:///nonexistent" "$script" --only mnist "$out"
has "present, skipped" "says it skipped"
cp "$tmp/bad/t10k-labels-idx1-ubyte.gz" "$out/mnist/"
expect 0 "a present file with a wrong checksum is fetched again" -- env DTN_MNIST_MIRROR="file://$tmp/good" "$script" --only mnist "$out"
has "checksum is wrong" "says why"
expect 0 "... and is right afterwards" -- "$script" --verify-only "$out/mnist"
out2=$tmp/dl2
expect 1 "a bad mirror is refused" -- env DTN_MNIST_MIRROR="file://$tmp/bad" "$script" --only mnist "$out2"
has "refusing t10k-labels-idx1-ubyte.gz: checksum mismatch" "names the refused file"
if [[ -e $out2/mnist/t10k-labels-idx1-ubyte.gz || -n $(find "$out2" -name '*.part.*') ]]; then
  echo "FAIL: a refused download was left behind"
  fails=$((fails + 1))
else
  echo "pass: nothing of a refused download is left"
fi
expect 2 "usage error without a directory" -- "$script"

echo "$fails failure(s)"
[[ $fails == 0 ]]
