#!/usr/bin/env bash
# Installs what is needed, builds, and starts one distsupd on its embedded defaults:
# a single node serving distsup.v1.Supervisor on 127.0.0.1:50051, SQLite state under
# ./data, the built-in strategies beside the binary.  Ctrl-C (SIGINT) stops it
# cleanly; its children stop with it and start again next time.
#
#   tools/start.sh [distsupd options...]     e.g. tools/start.sh --log-level debug
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
bazel build //sidecar:distsupd //clients/c:distsupctl //clients/c:distsup //clients/c:host //examples/counter //strategies/... \
    //proto:all >&2
echo "distsupd: serving on 127.0.0.1:50051 (data in ./data); try:" >&2
echo "  .bazel/bin/clients/c/distsupctl start c1 -- $PWD/.bazel/bin/examples/counter/counter" >&2
echo "  .bazel/bin/clients/c/distsupctl call c1 incr" >&2
exec .bazel/bin/sidecar/distsupd --data-dir ./data "$@"
