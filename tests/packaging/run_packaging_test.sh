#!/usr/bin/env bash
# Packaging tests: build and run tests/packaging/find_package_consumer/main.cpp against dtn the
# ways a user would get it. Called by CTest (cmake/packaging.cmake); runnable by hand:
#
#   run_packaging_test.sh install          <dtn source> <work dir>
#       configure dtn alone (tests, examples, benchmarks and CUDA off), `cmake --install` it into
#       <work dir>/prefix, check the installed files, then
#         - find_package(dtn CONFIG REQUIRED) from find_package_consumer/ (build and run),
#         - find_package(dtn <this major>.0) must succeed, find_package(dtn <major + 1>) must fail,
#         - pkg-config --cflags/--libs dtn with PKG_CONFIG_PATH at the install, compile main.cpp
#           with the C++ compiler directly and run it,
#         - `cmake --install --prefix <work dir>/relocated`: dtn.pc and the CMake package follow it.
#   run_packaging_test.sh add_subdirectory <dtn source> <work dir>
#   run_packaging_test.sh fetchcontent     <dtn source> <work dir>
#       subdirectory_consumer/ pulls the dtn source tree in with add_subdirectory() or
#       FetchContent_Declare(dtn SOURCE_DIR ...) (offline), builds and runs the program.
#
# Environment: CMAKE (default cmake), CXX (default c++), JOBS (default 2),
# DTN_CUDA (for the subproject modes; default OFF), DTN_OPENMP (AUTO, ON or OFF; default AUTO):
# with OFF the package must ask for no OpenMP (no -fopenmp from pkg-config either) and the
# consumer builds warning-free without it.
# <work dir> is deleted and recreated. Exit status 0 on success.
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 install|add_subdirectory|fetchcontent <dtn source dir> <work dir>" >&2
  exit 2
fi
mode=$1
src=$(cd "$2" && pwd)
work=$3
cmake_bin=${CMAKE:-cmake}
cxx=${CXX:-c++}
jobs=${JOBS:-2}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

step() { echo "==> $*"; }
run() {
  echo "+ $*"
  "$@"
}
die() {
  echo "run_packaging_test.sh ($mode): FAILED: $*" >&2
  exit 1
}

[[ -f "$src/include/dtn/dtn.hpp" ]] || die "$src is not a dtn source tree"
rm -rf "$work"
mkdir -p "$work/scratch"
work=$(cd "$work" && pwd)

# The project version, where it is written: include/dtn/core/version.hpp (DTN_VERSION_MAJOR,
# _MINOR, _PATCH), which CMakeLists.txt reads for project(VERSION).
part() { sed -n "s/^#define DTN_VERSION_$1 \([0-9][0-9]*\)$/\1/p" "$src/include/dtn/core/version.hpp"; }
version="$(part MAJOR).$(part MINOR).$(part PATCH)"
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "could not read the version from $src/include/dtn/core/version.hpp (got '$version')"
major=${version%%.*}

case "$mode" in
  install)
    prefix="$work/prefix"
    step "configure dtn alone into $work/dtn-build (install prefix $prefix)"
    run "$cmake_bin" -S "$src" -B "$work/dtn-build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_INSTALL_PREFIX="$prefix" \
      -DDTN_BUILD_TESTS=OFF -DDTN_BUILD_EXAMPLES=OFF -DDTN_BUILD_BENCHMARKS=OFF -DDTN_CUDA=OFF \
      -DDTN_OPENMP="${DTN_OPENMP:-AUTO}"
    step "install"
    run "$cmake_bin" --install "$work/dtn-build"

    step "check the installed files"
    for f in include/dtn/dtn.hpp include/dtn/train/domain_transfer.hpp include/dtn/io/checkpoint.hpp \
      lib/cmake/dtn/dtnConfig.cmake lib/cmake/dtn/dtnConfigVersion.cmake lib/cmake/dtn/dtnTargets.cmake \
      share/pkgconfig/dtn.pc; do
      [[ -f "$prefix/$f" ]] || die "missing $prefix/$f"
      echo "   ok $f"
    done
    grep -q "PACKAGE_VERSION \"$version\"" "$prefix/lib/cmake/dtn/dtnConfigVersion.cmake" ||
      die "dtnConfigVersion.cmake does not carry version $version"
    # Every installed header must come from include/dtn of the source tree, nothing else.
    n_src=$(cd "$src/include" && find dtn -type f | wc -l)
    n_inst=$(cd "$prefix/include" && find dtn -type f | wc -l)
    [[ "$n_src" == "$n_inst" ]] || die "installed $n_inst headers, the source tree has $n_src"
    echo "   ok $n_inst headers, version $version"

    step "find_package(dtn CONFIG REQUIRED) from an outside project"
    run "$cmake_bin" -S "$here/find_package_consumer" -B "$work/consumer-build" -DCMAKE_CXX_COMPILER="$cxx" \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON | tee "$work/consumer-configure.log"
    grep -q "consumer: dtn $version from $prefix/lib/cmake/dtn" "$work/consumer-configure.log" ||
      die "the consumer did not find dtn $version in $prefix"
    run "$cmake_bin" --build "$work/consumer-build" -j "$jobs"
    run "$work/consumer-build/dtn_consumer" "$work/scratch"

    step "version checks: dtn $major.0 is accepted, dtn $((major + 1)) is refused"
    run "$cmake_bin" -S "$here/find_package_consumer" -B "$work/version-ok" -DCMAKE_CXX_COMPILER="$cxx" \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON -DDTN_REQUIRE_VERSION="$major.0" >/dev/null
    echo "   ok find_package(dtn $major.0)"
    if "$cmake_bin" -S "$here/find_package_consumer" -B "$work/version-bad" -DCMAKE_CXX_COMPILER="$cxx" \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON \
      -DDTN_REQUIRE_VERSION="$((major + 1))" >"$work/version-bad.log" 2>&1; then
      die "find_package(dtn $((major + 1))) succeeded against dtn $version"
    fi
    grep -q "not compatible\|not suitable\|Could not find a configuration file\|compatible version" "$work/version-bad.log" ||
      die "find_package(dtn $((major + 1))) failed for another reason: $(tail -5 "$work/version-bad.log")"
    echo "   ok find_package(dtn $((major + 1))) refused"

    step "pkg-config"
    command -v pkg-config >/dev/null || die "pkg-config is not installed"
    export PKG_CONFIG_PATH="$prefix/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    pc_version=$(pkg-config --modversion dtn)
    [[ "$pc_version" == "$version" ]] || die "pkg-config says dtn $pc_version, the project is $version"
    cflags=$(pkg-config --cflags dtn)
    libs=$(pkg-config --libs dtn)
    echo "   cflags: $cflags"
    echo "   libs:   $libs"
    if [[ "${DTN_OPENMP:-AUTO}" == OFF ]]; then
      [[ "$cflags $libs" != *openmp* ]] || die "dtn was configured without OpenMP, yet pkg-config gives $cflags $libs"
      if ! grep -B1 "find_dependency(OpenMP" "$prefix/lib/cmake/dtn/dtnConfig.cmake" | grep -q 'if("OFF")'; then
        die "dtn was configured without OpenMP, yet its dtnConfig.cmake looks for OpenMP"
      fi
      echo "   ok no OpenMP asked for"
    fi
    # The include directory dtn.pc names (relative to the .pc file's own folder), resolved.
    pc_include=$(pkg-config --variable=includedir dtn)
    [[ "$(cd "$pc_include" && pwd -P)" == "$(cd "$prefix/include" && pwd -P)" ]] ||
      die "dtn.pc's includedir $pc_include is not $prefix/include"
    found_include=no
    for flag in $cflags; do
      if [[ "$flag" == -I* && -d "${flag#-I}" && "$(cd "${flag#-I}" && pwd -P)" == "$(cd "$prefix/include" && pwd -P)" ]]; then
        found_include=yes
      fi
    done
    [[ "$found_include" == yes ]] || die "pkg-config --cflags dtn ($cflags) has no -I for $prefix/include"
    # shellcheck disable=SC2086  # the flags are meant to split into words
    run "$cxx" $cflags -Wall -Wextra -Werror "$here/find_package_consumer/main.cpp" -o "$work/dtn_consumer_pc" $libs
    run "$work/dtn_consumer_pc" "$work/scratch"

    step "relocation: cmake --install --prefix $work/relocated (another prefix than configured)"
    run "$cmake_bin" --install "$work/dtn-build" --prefix "$work/relocated" >/dev/null
    reloc_include=$(PKG_CONFIG_PATH="$work/relocated/share/pkgconfig" pkg-config --variable=includedir dtn)
    [[ "$(cd "$reloc_include" && pwd -P)" == "$(cd "$work/relocated/include" && pwd -P)" ]] ||
      die "the relocated dtn.pc names $reloc_include, not $work/relocated/include"
    echo "   ok pkg-config includedir follows the install ($reloc_include)"
    run "$cmake_bin" -S "$here/find_package_consumer" -B "$work/relocated-consumer" -DCMAKE_CXX_COMPILER="$cxx" \
      -DCMAKE_PREFIX_PATH="$work/relocated" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON >"$work/relocated.log"
    grep -q "consumer: dtn $version from $work/relocated/lib/cmake/dtn" "$work/relocated.log" ||
      die "find_package(dtn) did not take the relocated install"
    echo "   ok find_package(dtn) from the relocated install"
    ;;

  add_subdirectory | fetchcontent)
    step "$mode: build subdirectory_consumer with dtn from $src"
    run "$cmake_bin" -S "$here/subdirectory_consumer" -B "$work/consumer-build" -DCMAKE_CXX_COMPILER="$cxx" \
      -DDTN_SOURCE_DIR="$src" -DDTN_CONSUMER_MODE="$mode" -DDTN_CUDA="${DTN_CUDA:-OFF}" \
      -DDTN_OPENMP="${DTN_OPENMP:-AUTO}" |
      tee "$work/consumer-configure.log"
    grep -q "consumer: dtn $version from $src ($mode)" "$work/consumer-configure.log" ||
      die "the consumer did not take dtn $version from $src"
    run "$cmake_bin" --build "$work/consumer-build" -j "$jobs"
    run "$work/consumer-build/dtn_consumer" "$work/scratch"
    ;;

  *)
    die "unknown mode \"$mode\" (install, add_subdirectory or fetchcontent)"
    ;;
esac
step "$mode: OK"
