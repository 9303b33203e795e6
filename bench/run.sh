#!/usr/bin/env bash
# The single-node benchmarks of docs/performance.md, in one run, on loopback:
# builds, starts bench/echo_server and a distsupd on a scratch data dir, runs
# bench/call_bench against both, and prints one table.  Everything it starts is
# stopped and the scratch dir removed on exit, also on failure or Ctrl-C.
#
#   bench/run.sh                       (about a minute)
#   BAZEL="bazel --output_base=DIR" BAZEL_FLAGS="--symlink_prefix=/" bench/run.sh
#   BENCH_SECONDS=5 BENCH_CHILDREN=1000 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BAZEL=${BAZEL:-bazel}
BAZEL_FLAGS=${BAZEL_FLAGS:-}
SECS=${BENCH_SECONDS:-3}
N=${BENCH_CHILDREN:-1000}

# shellcheck disable=SC2086
$BAZEL build $BAZEL_FLAGS //bench:echo_server //bench:call_bench //sidecar:distsupd //examples/counter >&2
# shellcheck disable=SC2086
BIN=$($BAZEL info $BAZEL_FLAGS bazel-bin 2>/dev/null)
CB=$BIN/bench/call_bench
COUNTER=$BIN/examples/counter/counter

work=$(mktemp -d "${TMPDIR:-/tmp}/distsup-bench.XXXXXX")
started=()
cleanup() {
  local rc=$?
  for p in "${started[@]}"; do
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ $rc -ne 0 ]; then
    echo "bench/run.sh failed (exit $rc); last lines of the logs:" >&2
    tail -n 20 "$work"/*.log >&2 2>/dev/null || true
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # file pid
  for _ in $(seq 200); do
    [ -s "$1" ] && { cat "$1"; return 0; }
    kill -0 "$2" 2>/dev/null || { echo "process $2 exited before serving" >&2; return 1; }
    sleep 0.05
  done
  echo "no port in $1 after 10 s" >&2
  return 1
}

# children of 1,000 children: 4 fds each in distsupd
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$BIN/bench/echo_server" --port-file "$work/echo.port" --threads 2 2>"$work/echo.log" &
started+=($!); echo_pid=$!
"$BIN/sidecar/distsupd" --listen 127.0.0.1:0 --port-file "$work/d.port" --data-dir "$work/data" \
  --log-level warn --node-name bench@localhost 2>"$work/distsupd.log" &
started+=($!); d_pid=$!
echo_port=$(wait_port "$work/echo.port" "$echo_pid")
d_port=$(wait_port "$work/d.port" "$d_pid")
sleep 0.5 # let the daemon settle before "idle"

res=$work/results.tsv
: >"$res"
"$CB" rss --pid "$d_pid" --label "idle, just started:" >>"$res"
"$CB" echo "127.0.0.1:$echo_port" --seconds "$SECS" --conc 16,64 --channels 1,4 >>"$res"
"$CB" call "127.0.0.1:$d_port" --counter "$COUNTER" --workers 1 --seconds "$SECS" --conc 16,64 \
  --channels 1,4 >>"$res"
"$CB" call "127.0.0.1:$d_port" --counter "$COUNTER" --workers 4 --seconds "$SECS" --conc 64 \
  --channels 4 >>"$res"
"$CB" rss --pid "$d_pid" --label "idle, after the Call runs:" >>"$res"
"$CB" start "127.0.0.1:$d_port" --counter "$COUNTER" --pid "$d_pid" --seq 200 --n "$N" --conc 16 >>"$res"

grpc_version=$(dpkg-query -W -f='${Version}' libgrpc29 2>/dev/null || echo "?")
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
dirty=$(git status --porcelain -- sidecar proto 2>/dev/null | head -c1)
echo
echo "distsup single-node benchmarks, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), \
$(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
echo "software: grpc $grpc_version, distsup $commit${dirty:+ (with uncommitted changes in sidecar/ or proto/)}"
echo "method: loopback, one C-core client thread, ${SECS} s per timed run after a 0.5 s warm-up;"
echo "        C workers = examples/counter answering \"echo:bench\"; ${N} children for the memory rows"
echo
awk -F'\t' '
  $1 == "RESULT" {
    if ($2 != last) { printf "\n%s\n", $2; last = $2 }
    printf "  %-44s %10s %s\n", $3, $4, $5
    key[$2 "|" $3] = $4
  }
  END {
    e = key["bare C-core echo|sequential p50"]; d = key["distsupd Call, 1 C worker|sequential p50"]
    best = 0
    for (k in key) if (k ~ /^distsupd Call/ && k ~ /calls\/s$/ && key[k] + 0 > best) best = key[k] + 0
    idle = key["distsupd memory|idle, just started: VmRSS"]
    anon = key["distsupd memory|idle, just started: RssAnon"]
    printf "\naims\n"
    printf "  %-44s %10.2f x   (aim: <= 2)\n", "Call p50 / bare echo p50", (e > 0 ? d / e : 0)
    printf "  %-44s %10.0f 1/s (aim: >= 10000)\n", "best distsupd Call calls/s", best
    printf "  %-44s %10.1f MB  (aim: <= 10; of which anonymous %.1f MB)\n", "idle VmRSS", idle, anon
  }' "$res"
