#!/usr/bin/env bash
# Installs what is needed, then builds and runs every test with Bazel, then the fuzz
# targets for a few seconds each (tools/fuzz.sh; each counts as one test), and prints
# the totals of the tests themselves as the last line: "N passed, N failed".
# Exit status: 0 only when every test target passed.
#
#   tools/test.sh                 the whole suite
#   tools/test.sh --config=asan   the whole suite under ASan + UBSan
#   tools/test.sh //tests/unit/...   some targets (extra args go to bazel test)
#   tools/test.sh //... -//tests/container/...   all but some
#
# The fuzz targets run with the whole suite only (not when Bazel targets are named),
# FUZZ_SECONDS (default 3) each; FUZZ_SECONDS=0 skips them.  Without clang they are
# skipped, and the output says so.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }

args=() targets=()
for a in "$@"; do
  case "$a" in
    //*|:*|-//*) targets+=("$a") ;;
    *) args+=("$a") ;;
  esac
done
whole=0
[ ${#targets[@]} -gt 0 ] || { targets=(//...); whole=1; }

log=$(mktemp) fuzzlog=$(mktemp)
trap 'rm -f "$log" "$fuzzlog"' EXIT
bazel test --test_summary=short --test_output=errors "${args[@]}" -- "${targets[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

fuzz=()
fuzz_seconds=${FUZZ_SECONDS:-3}
if [ $whole -eq 0 ]; then
  echo "fuzz: skipped (Bazel targets were named; the fuzz targets run with the whole suite)"
elif [ "$fuzz_seconds" = 0 ]; then
  echo "fuzz: skipped (FUZZ_SECONDS=0)"
elif ! command -v clang >/dev/null; then
  echo "fuzz: skipped: clang is not installed (tools/setup.sh installs it); the fuzz targets are not counted"
else
  echo "fuzz: tools/fuzz.sh $fuzz_seconds (each target ${fuzz_seconds}s)"
  tools/fuzz.sh "$fuzz_seconds" 2>&1 | tee "$fuzzlog"
  fuzz=(--fuzz "$fuzzlog")
fi

/usr/bin/python3 tools/test_totals.py "$log" "$(bazel info "${args[@]}" bazel-testlogs 2>/dev/null)" "${fuzz[@]}"
trc=$?
[ $rc -eq 0 ] && [ $trc -eq 0 ]
