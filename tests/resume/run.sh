#!/usr/bin/env bash
# N steps in one process == k steps, save, load in a fresh process, N - k steps (bitwise).
set -euo pipefail
tool=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$tool" run 7 "$dir/full.safetensors"
"$tool" run 3 "$dir/part.safetensors"
"$tool" resume "$dir/part.safetensors" 7 "$dir/resumed.safetensors"
"$tool" compare "$dir/full.safetensors" "$dir/resumed.safetensors"
