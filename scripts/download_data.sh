#!/usr/bin/env bash
# Downloads the official MNIST and SVHN (format 2, cropped digits) files and verifies their md5.
#
#   scripts/download_data.sh [--no-extra] [--only mnist|svhn] DIR
#       MNIST -> DIR/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
#       SVHN  -> DIR/svhn/{train,test,extra}_32x32.mat   (extra is 1.3 GB; --no-extra skips it)
#       Then point the library at DIR: DTN_DATA_DIR=DIR, load_mnist(DIR/mnist, ...),
#       load_svhn(DIR/svhn, ...).
#   scripts/download_data.sh --verify-only DIR
#       Checks every known file found in DIR, DIR/mnist or DIR/svhn; downloads nothing.
#   Environment: DTN_MNIST_MIRROR, DTN_SVHN_URL replace the download locations (base URLs).
#
# Checksums: MNIST's are the widely published md5 of the *uncompressed* IDX files (the .gz bytes
# differ between mirrors and re-compressions; the content does not), so a .gz is checked through
# gzip -dc. SVHN's are the md5 of the .mat files as distributed.
# A file already present with the right checksum is skipped. A download goes to a temporary
# file and is moved into place only when its checksum matches; on a mismatch the script removes
# it, says so and exits non-zero. Exit status: 0 all good, 1 a checksum mismatch or failed
# download, 2 usage error.
set -euo pipefail

# name -> md5 (of the uncompressed content for MNIST).
declare -A MD5=(
  [train-images-idx3-ubyte]=6bbc9ace898e44ae57da46a324031adb
  [train-labels-idx1-ubyte]=a25bea736e30d166cdddb491f175f624
  [t10k-images-idx3-ubyte]=2646ac647ad5339dbf082846283269ea
  [t10k-labels-idx1-ubyte]=27ae3e4e09519cfbb04c329615203637
  [train_32x32.mat]=e26dedcc434d2e4c54c9b2d4a06d8373
  [test_32x32.mat]=eb5a983be6a315427106f1b164d9cef3
  [extra_32x32.mat]=a93ce644f1a588dc4d68dda5feec44a7
)
MNIST_FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
# Mirrors tried in order (yann.lecun.com is often unreachable; the S3 mirror is torchvision's).
# DTN_MNIST_MIRROR / DTN_SVHN_URL replace them (a local mirror; file:// URLs work with curl).
if [[ -n ${DTN_MNIST_MIRROR:-} ]]; then
  MNIST_MIRRORS=("$DTN_MNIST_MIRROR")
else
  MNIST_MIRRORS=(https://ossci-datasets.s3.amazonaws.com/mnist http://yann.lecun.com/exdb/mnist)
fi
SVHN_URL=${DTN_SVHN_URL:-http://ufldl.stanford.edu/housenumbers}

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# md5 of a file's content; with GZ=1, of its decompressed content.
content_md5() {
  local f=$1 gz=$2
  if [[ $gz == 1 ]]; then
    gzip -dc -- "$f" | md5sum | cut -d' ' -f1
  else
    md5sum -- "$f" | cut -d' ' -f1
  fi
}

# verify FILE [NAME]: checks FILE against the checksum of NAME (default: FILE's own name; a
# name ending in .gz is checked decompressed). Prints OK / MISMATCH, returns 0 / 1. A corrupt or
# truncated .gz is a mismatch.
verify() {
  local f=$1 name key want got gz=0
  name=$(basename -- "${2:-$1}")
  [[ $name == *.gz ]] && gz=1
  key=${name%.gz}
  want=${MD5[$key]:-}
  if [[ -z $want ]]; then
    echo "unknown file $f" >&2
    return 1
  fi
  if ! got=$(content_md5 "$f" "$gz" 2>/dev/null); then got="(unreadable or corrupt)"; fi
  if [[ $got == "$want" ]]; then
    echo "OK        $f"
    return 0
  fi
  echo "MISMATCH  $f: expected md5 $want, found $got" >&2
  return 1
}

fetch() {  # fetch URL OUT
  if command -v curl >/dev/null 2>&1; then
    curl -fL --retry 3 --connect-timeout 30 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q --tries=3 -O "$2" "$1"
  else
    echo "neither curl nor wget found" >&2
    return 1
  fi
}

# get DEST_DIR FILE_NAME URL...: skip if present and verified, else download to a temporary
# file, verify, move into place.
get() {
  local dir=$1 name=$2
  shift 2
  local dest=$dir/$name
  if [[ -f $dest ]]; then
    if verify "$dest" 2>/dev/null; then
      echo "          (present, skipped)"
      return 0
    fi
    echo "$dest is present but its checksum is wrong: downloading it again" >&2
  fi
  local tmp=$dest.part.$$
  local url ok=0
  for url in "$@"; do
    echo "downloading $url"
    if fetch "$url" "$tmp"; then
      ok=1
      break
    fi
    echo "failed: $url" >&2
  done
  if [[ $ok != 1 ]]; then
    rm -f -- "$tmp"
    echo "could not download $name" >&2
    return 1
  fi
  if verify "$tmp" "$name" >/dev/null; then
    mv -- "$tmp" "$dest"
    echo "OK        $dest"
  else
    rm -f -- "$tmp"
    echo "refusing $name: checksum mismatch (the download was removed)" >&2
    return 1
  fi
}

verify_only() {
  local root=$1 found=0 bad=0 d key f
  [[ -d $root ]] || { echo "no such directory: $root" >&2; exit 2; }
  for d in "$root" "$root/mnist" "$root/svhn"; do
    [[ -d $d ]] || continue
    for key in "${!MD5[@]}"; do
      for f in "$d/$key" "$d/$key.gz"; do
        [[ -f $f ]] || continue
        found=$((found + 1))
        verify "$f" || bad=$((bad + 1))
      done
    done
  done
  if [[ $found == 0 ]]; then
    echo "no MNIST or SVHN files found in $root (or its mnist/, svhn/)" >&2
    exit 1
  fi
  echo "$found file(s) checked, $bad mismatch(es)"
  [[ $bad == 0 ]]
}

main() {
  local verify_dir="" dir="" extra=1 only=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      --verify-only) [[ $# -ge 2 ]] || usage; verify_dir=$2; shift 2 ;;
      --no-extra) extra=0; shift ;;
      --only) [[ $# -ge 2 && ($2 == mnist || $2 == svhn) ]] || usage; only=$2; shift 2 ;;
      -h|--help) usage ;;
      -*) echo "unknown option $1" >&2; usage ;;
      *) [[ -z $dir ]] || usage; dir=$1; shift ;;
    esac
  done
  if [[ -n $verify_dir ]]; then
    [[ -z $dir ]] || usage
    verify_only "$verify_dir"
    return
  fi
  [[ -n $dir ]] || usage
  local failed=0 f
  if [[ $only != svhn ]]; then
    mkdir -p -- "$dir/mnist"
    for f in "${MNIST_FILES[@]}"; do
      local urls=()
      local m
      for m in "${MNIST_MIRRORS[@]}"; do urls+=("$m/$f.gz"); done
      get "$dir/mnist" "$f.gz" "${urls[@]}" || failed=1
    done
  fi
  if [[ $only != mnist ]]; then
    mkdir -p -- "$dir/svhn"
    local splits=(train test)
    [[ $extra == 1 ]] && splits+=(extra)
    for f in "${splits[@]}"; do
      get "$dir/svhn" "${f}_32x32.mat" "$SVHN_URL/${f}_32x32.mat" || failed=1
    done
  fi
  if [[ $failed != 0 ]]; then
    echo "some files are missing or failed verification (see above)" >&2
    exit 1
  fi
  echo "all files present and verified in $dir"
}

main "$@"
