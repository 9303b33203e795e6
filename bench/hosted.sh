#!/usr/bin/env bash
# Hosted children (docs/hosting.md) beside process children and the bare gRPC echo,
# in one run on loopback (docs/performance.md, "Hosted children"):
#   1. StartChild throughput: hosted children (examples/counter_host) against process
#      children (examples/counter), 64 in flight;
#   2. Call latency: the bare C-core echo, a process child, a hosted child;
#   3. distsupd's memory per hosted child, with 100,000 of them on the node.
# Builds, starts bench/echo_server, a distsupd on a scratch data dir and one
# counter_host; everything it starts is stopped and the scratch dir removed on exit,
# also on failure or Ctrl-C.
#
#   bench/hosted.sh                         (two to three minutes)
#   BENCH_SECONDS=5 BENCH_HOSTED_CHILDREN=20000 bench/hosted.sh
#   BAZEL="bazel --output_base=DIR" BAZEL_FLAGS="--symlink_prefix=/" bench/hosted.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BAZEL=${BAZEL:-bazel}
BAZEL_FLAGS=${BAZEL_FLAGS:-}
SECS=${BENCH_SECONDS:-3}
ROUNDS=${BENCH_ROUNDS:-3}                # rounds of the Call runs
N_HOSTED=${BENCH_HOSTED_STARTS:-20000}  # hosted children started (and stopped) for the rate
N_PROC=${BENCH_PROCESS_STARTS:-1000}    # process children started (and stopped) for the rate
N_MEM=${BENCH_HOSTED_CHILDREN:-100000}  # hosted children kept for the memory figure
CONC=64

# shellcheck disable=SC2086
$BAZEL build $BAZEL_FLAGS //bench:echo_server //bench:call_bench //bench:hosted_bench //sidecar:distsupd \
  //examples/counter //examples/counter_host >&2
# shellcheck disable=SC2086
BIN=$($BAZEL info $BAZEL_FLAGS bazel-bin 2>/dev/null)
CB=$BIN/bench/call_bench
HB=$BIN/bench/hosted_bench
COUNTER=$BIN/examples/counter/counter

work=$(mktemp -d "${TMPDIR:-/tmp}/distsup-hosted-bench.XXXXXX")
started=()
cleanup() {
  local rc=$?
  # the host first (its children go with its session), then the daemon and the echo
  for p in "${started[@]}"; do
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ $rc -ne 0 ]; then
    echo "bench/hosted.sh failed (exit $rc); last lines of the logs:" >&2
    tail -n 20 "$work"/*.log >&2 2>/dev/null || true
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # file pid
  for _ in $(seq 200); do
    [ -s "$1" ] && { head -n1 "$1"; return 0; }
    kill -0 "$2" 2>/dev/null || { echo "process $2 exited before serving" >&2; return 1; }
    sleep 0.05
  done
  echo "no port in $1 after 10 s" >&2
  return 1
}

# process children: 4 fds each in distsupd
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$BIN/sidecar/distsupd" --listen 127.0.0.1:0 --port-file "$work/d.port" --data-dir "$work/data" \
  --log-level warn --node-name bench@localhost 2>"$work/distsupd.log" &
d_pid=$!
"$BIN/bench/echo_server" --port-file "$work/echo.port" --threads 2 2>"$work/echo.log" &
echo_pid=$!
d_port=$(wait_port "$work/d.port" "$d_pid")
echo_port=$(wait_port "$work/echo.port" "$echo_pid")
"$BIN/examples/counter_host/counter_host" --target "127.0.0.1:$d_port" --name bench-host \
  >"$work/host.out" 2>"$work/host.log" &
host_pid=$!
started=("$host_pid" "$d_pid" "$echo_pid")
for _ in $(seq 200); do
  grep -q '^attached ' "$work/host.out" && break
  kill -0 "$host_pid" 2>/dev/null || { echo "counter_host exited" >&2; exit 1; }
  sleep 0.05
done
grep -q '^attached ' "$work/host.out" || { echo "counter_host did not attach within 10 s" >&2; exit 1; }
sleep 0.5

D=127.0.0.1:$d_port
res=$work/results.tsv
{
  "$HB" rss --pid "$d_pid" --label "distsupd idle, one host attached:"
  # 2. Call latency: echo, a process child, a hosted child (the same payload each),
  # in alternating rounds (the medians go into the table)
  "$HB" start "$D" --kind counter --n 1 --conc 1 --prefix bench-hc- --label "the hosted child for Call" --keep >/dev/null
  for _ in $(seq "$ROUNDS"); do
    "$CB" echo "127.0.0.1:$echo_port" --seconds "$SECS" --conc "$CONC" --channels 1
    "$CB" call "$D" --counter "$COUNTER" --workers 1 --seconds "$SECS" --conc "$CONC" --channels 1
    "$HB" call "$D" --name bench-hc-0 --seconds "$SECS" --conc "1,$CONC" --label "1 hosted child"
  done
  # 1. StartChild: process children, then hosted children (each stopped again)
  "$HB" start "$D" --argv "$COUNTER" --n "$N_PROC" --conc "$CONC" --label "process children"
  "$HB" start "$D" --kind counter --n "$N_HOSTED" --conc "$CONC" --label "hosted children"
  # 3. memory: N_MEM hosted children kept
  "$HB" rss --pid "$host_pid" --label "counter_host before:"
  "$HB" start "$D" --kind counter --n "$N_MEM" --conc "$CONC" --prefix bench-mem- --label "$N_MEM hosted children" \
    --pid "$d_pid" --host-pid "$host_pid" --keep
} >"$res"

grpc_version=$(dpkg-query -W -f='${Version}' libgrpc29 2>/dev/null || echo "?")
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
echo
echo "distsup hosted children, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), \
$(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
echo "software: grpc $grpc_version, distsup $commit"
echo "method: loopback, one C-core client thread and channel; Call: ${SECS} s per run after a 0.5 s warm-up,"
echo "        payload \"echo:bench\" answered \"bench\", $ROUNDS alternating rounds: median [lowest-highest];"
echo "        StartChild: $CONC in flight, $N_PROC process / $N_HOSTED hosted children"
echo
awk -F'\t' '
  function median(k,   n, i, j, t, v) {
    n = split(vals[k], v, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    lo[k] = v[1]; hi[k] = v[n]
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  $1 == "RESULT" {
    k = $2 "|" $3
    if (!(k in vals)) { order[++n_keys] = k; unit[k] = $5 }
    vals[k] = vals[k] " " $4
  }
  END {
    for (i = 1; i <= n_keys; i++) {
      k = order[i]
      split(k, part, "|")
      if (part[1] != last) { printf "\n%s\n", part[1]; last = part[1] }
      m[k] = median(k)
      range = lo[k] != hi[k] ? sprintf("  [%s-%s]", lo[k], hi[k]) : ""
      printf "  %-52s %10.*f %s%s\n", part[2], (m[k] >= 100 ? 0 : 2), m[k], unit[k], range
    }
    e = m["bare C-core echo|sequential p50"]
    p = m["distsupd Call, 1 C worker|sequential p50"]
    hc = m["Call, 1 hosted child|sequential: p50"]
    hs = m["StartChild, hosted children|" N_HOSTED " children, " CONC " in flight: per second"]
    ps = m["StartChild, process children|" N_PROC " children, " CONC " in flight: per second"]
    mem = m["distsupd memory, " N_MEM " hosted children|per child: VmRSS"]
    printf "\naims\n"
    printf "  %-52s %10.0f 1/s (aim: >= 5000; process children: %.0f/s)\n", "hosted StartChild, " CONC " in flight", hs, ps
    printf "  %-52s %10.2f x   (aim: <= 1.5; a process child: %.2f x)\n", "hosted Call p50 / bare echo p50 (medians)", \
      (e > 0 ? hc / e : 0), (e > 0 ? p / e : 0)
    printf "  %-52s %10.0f B   (aim: <= 2048)\n", "distsupd VmRSS per hosted child", mem
  }' N_HOSTED="$N_HOSTED" N_PROC="$N_PROC" N_MEM="$N_MEM" CONC="$CONC" "$res"
