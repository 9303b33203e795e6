#!/usr/bin/env bash
# The cost of metrics on the Call path (docs/performance.md, "Metrics on and off"):
# the same call_bench Call runs against two distsupd on loopback, one without
# --metrics-listen and one with it and scraped once a second (as Prometheus would),
# in alternating rounds so that drift of a shared machine hits both alike.  Prints
# each round and the median of each side.  Everything it starts is stopped and the
# scratch dir removed on exit.
#
#   bench/metrics.sh                      (about a minute)
#   BENCH_SECONDS=3 BENCH_ROUNDS=5 bench/metrics.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BAZEL=${BAZEL:-bazel}
BAZEL_FLAGS=${BAZEL_FLAGS:-}
SECS=${BENCH_SECONDS:-3}
ROUNDS=${BENCH_ROUNDS:-4}

# shellcheck disable=SC2086
$BAZEL build $BAZEL_FLAGS //bench:call_bench //sidecar:distsupd //examples/counter >&2
# shellcheck disable=SC2086
BIN=$($BAZEL info $BAZEL_FLAGS bazel-bin 2>/dev/null)
CB=$BIN/bench/call_bench
COUNTER=$BIN/examples/counter/counter

work=$(mktemp -d "${TMPDIR:-/tmp}/distsup-bench-metrics.XXXXXX")
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
    echo "bench/metrics.sh failed (exit $rc); last lines of the logs:" >&2
    tail -n 20 "$work"/*.log >&2 2>/dev/null || true
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # file pid
  for _ in $(seq 200); do
    [ -s "$1" ] && { head -1 "$1"; return 0; }
    kill -0 "$2" 2>/dev/null || { echo "process $2 exited before serving" >&2; return 1; }
    sleep 0.05
  done
  echo "no port in $1 after 10 s" >&2
  return 1
}

mport=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN/sidecar/distsupd" --listen 127.0.0.1:0 --port-file "$work/off.port" --data-dir "$work/off" \
  --log-level warn --node-name off@localhost 2>"$work/off.log" &
started+=($!); off_pid=$!
"$BIN/sidecar/distsupd" --listen 127.0.0.1:0 --port-file "$work/on.port" --data-dir "$work/on" \
  --log-level warn --node-name on@localhost --metrics-listen "127.0.0.1:$mport" 2>"$work/on.log" &
started+=($!); on_pid=$!
off_port=$(wait_port "$work/off.port" "$off_pid")
on_port=$(wait_port "$work/on.port" "$on_pid")

# The scraper: GET /metrics once a second, as a Prometheus with scrape_interval 1s.
/usr/bin/python3 - "http://127.0.0.1:$mport/metrics" "$work/scrapes" <<'EOF' 2>>"$work/scrape.log" &
import sys, time, urllib.request
n = 0
while True:
    try:
        lines = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode().count("\ndistsup_")
        n += 1
        with open(sys.argv[2], "w") as f:
            f.write("%d %d\n" % (n, lines))
    except OSError:
        pass
    time.sleep(1)
EOF
started+=($!)
sleep 0.5

run() { # label port -> appends "label<TAB>figure<TAB>value" lines
  "$CB" call "127.0.0.1:$2" --counter "$COUNTER" --workers 1 --seconds "$SECS" --conc 1,64 --channels 1 |
    awk -F'\t' -v l="$1" '$1 == "RESULT" && $3 ~ /calls\/s$/ { print l "\t" $3 "\t" $4 }' >>"$work/rounds.tsv"
}
: >"$work/rounds.tsv"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then run off "$off_port"; run on "$on_port"; else run on "$on_port"; run off "$off_port"; fi
  echo "round $r of $ROUNDS done" >&2
done
read -r scrapes lines <"$work/scrapes" || { scrapes=0; lines=0; }

echo
echo "distsup Call throughput, metrics off and on, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), Linux $(uname -r)"
echo "method: loopback, call_bench Call to 1 C worker, ${SECS} s per run, ${ROUNDS} alternating rounds;"
echo "        'on' has --metrics-listen and was scraped once a second ($scrapes scrapes of $lines distsup_ lines)"
/usr/bin/python3 - "$work/rounds.tsv" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, fig, val = line.rstrip("\n").split("\t")
    runs[(fig, side)].append(float(val))
for fig in sorted({f for f, _ in runs}):
    off, on = runs[(fig, "off")], runs[(fig, "on")]
    m_off, m_on = statistics.median(off), statistics.median(on)
    print("\n%s" % fig)
    print("  off: %s  median %.0f" % (", ".join("%.0f" % v for v in off), m_off))
    print("  on:  %s  median %.0f" % (", ".join("%.0f" % v for v in on), m_on))
    print("  on / off: %+.1f%%   (aim: within 3%%)" % (100.0 * (m_on - m_off) / m_off))
EOF
