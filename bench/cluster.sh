#!/usr/bin/env bash
# The cluster benchmarks of docs/performance.md, in one run, on loopback: builds, then
# runs bench/cluster_bench.py (remote Call latency against local and the bare echo,
# failover time of a node holding 1,000 children, moves on a join, a rolling restart,
# 5-node convergence).
#
#   bench/cluster.sh                          (about two minutes)
#   FAILOVER_CHILDREN=300 BENCH_SECONDS=2 bench/cluster.sh
#   BENCH_ONLY=failover_and_join BENCH_LOG_LEVEL=info BENCH_KEEP=1 bench/cluster.sh
#       (one section; the daemons' logs at info, their directory kept and named)
set -euo pipefail
cd "$(dirname "$0")/.."
bazel build //bench:echo_server //bench:call_bench //sidecar:distsupd //examples/counter //examples/counter_host \
  //strategies/... \
  //proto:py_stubs >&2
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
DISTSUP_BIN=$(bazel info bazel-bin 2>/dev/null) exec /usr/bin/python3 -u bench/cluster_bench.py
