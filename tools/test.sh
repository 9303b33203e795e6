#!/usr/bin/env bash
# Installs what is needed, then builds and runs every test with Bazel, and prints
# the totals of the tests themselves as the last line: "N passed, N failed".
# Exit status: 0 only when every test target passed.
#
#   tools/test.sh                 the whole suite
#   tools/test.sh --config=asan   the whole suite under ASan + UBSan
#   tools/test.sh //tests/unit/...   some targets (extra args go to bazel test)
#   tools/test.sh //... -//tests/container/...   all but some
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
[ ${#targets[@]} -gt 0 ] || targets=(//...)

log=$(mktemp)
trap 'rm -f "$log"' EXIT
bazel test --test_summary=short --test_output=errors "${args[@]}" -- "${targets[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
/usr/bin/python3 tools/test_totals.py "$log" "$(bazel info "${args[@]}" bazel-testlogs 2>/dev/null)"
trc=$?
[ $rc -eq 0 ] && [ $trc -eq 0 ]
