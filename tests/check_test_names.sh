#!/usr/bin/env bash
# CTest registers one entry per doctest TEST_CASE (doctest_discover_tests), keyed by the case's
# name; CMake splits a name that contains ';' into several entries, whose --test-case filters
# match no test case, so they "pass" having run nothing (two data tests did, unnoticed, until
# 2026-12-03). This check fails on any TEST_CASE name with a ';' in it, or with unbalanced
# square brackets (below).
# usage: check_test_names.sh REPO_ROOT
set -euo pipefail
root=${1:?usage: check_test_names.sh REPO_ROOT}
if grep -rnE 'TEST_CASE\("[^"]*;' "$root/tests" --include='*.cpp' --include='*.cu' --include='*.cuh' --include='*.hpp'; then
  echo "check_test_names: the TEST_CASE names above contain ';', which splits them into CTest entries" \
       "that run no test: use ',' instead" >&2
  exit 1
fi
# CMake reads '[' and ']' in a list element as brackets that protect the ';' between elements:
# a name with more '[' than ']' (e.g. "in [0, 1)") merged the entries after it into one
# malformed entry, and ctest failed to load the test list (2026-12-05).
unbalanced=$(grep -rhoE 'TEST_CASE\("[^"]*"' "$root/tests" --include='*.cpp' --include='*.cu' --include='*.cuh' \
  --include='*.hpp' | awk '{ o = gsub(/\[/, "["); c = gsub(/\]/, "]"); if (o != c) print }')
if [ -n "$unbalanced" ]; then
  printf '%s\n' "$unbalanced"
  echo "check_test_names: the TEST_CASE names above have unbalanced '[' and ']', which CMake's list" \
       "parsing reads as brackets: balance them or avoid them" >&2
  exit 1
fi
echo "check_test_names: no TEST_CASE name contains ';' or unbalanced brackets"
