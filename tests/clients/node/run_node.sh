#!/bin/sh
# Runs a Node test file with the machine's node (its built-in test runner) and prints
# the totals line CI reads: "distsup-tests: N passed, M failed".
#
# The Node client's dependencies are in the repo's clients/node/node_modules (made by
# tools/setup.sh: npm ci), outside Bazel: the runfiles' clients/node/package.json is a
# symlink into the repo, so its real directory is where they are.  Node resolves
# require() from a module's real path, so the client finds them by itself.
set -u
test_file="$1"
pkg=$(dirname "$(readlink -f clients/node/package.json)")
if [ ! -d "$pkg/node_modules/@grpc/grpc-js" ] || [ ! -d "$pkg/node_modules/@grpc/proto-loader" ]; then
  echo "FAIL: $pkg/node_modules is missing: run tools/setup.sh (it runs npm ci in clients/node)" >&2
  echo "distsup-tests: 0 passed, 1 failed"
  exit 1
fi
command -v node >/dev/null || { echo "FAIL: node is not installed" >&2; echo "distsup-tests: 0 passed, 1 failed"; exit 1; }
export DISTSUP_NODE_PKG="$pkg" DISTSUP_BIN="$PWD" DISTSUP_SRC="$PWD"
out="${TEST_TMPDIR:-/tmp}/node-test-output.$$"
node --test --test-reporter=tap "$test_file" >"$out" 2>&1
rc=$?
cat "$out"
pass=$(sed -n 's/^# pass \([0-9][0-9]*\)$/\1/p' "$out" | tail -n 1)
fail=$(sed -n 's/^# fail \([0-9][0-9]*\)$/\1/p' "$out" | tail -n 1)
cancelled=$(sed -n 's/^# cancelled \([0-9][0-9]*\)$/\1/p' "$out" | tail -n 1)
pass=${pass:-0}
fail=$(( ${fail:-0} + ${cancelled:-0} ))
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
rm -f "$out"
echo "distsup-tests: $pass passed, $fail failed"
[ "$rc" -eq 0 ] && [ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
