#!/usr/bin/env bash
# Installs everything distsup needs to build and test on Debian 12, from Debian's
# packages and the npm registry only.  Idempotent: quick when all is there already.
# Runs apt-get as root, or through sudo when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  bazel-bootstrap pkg-config gcc g++
  libgrpc-dev protobuf-compiler-grpc protobuf-compiler
  protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev grpc-proto
  libsqlite3-dev sqlite3 libsodium-dev libcmocka-dev libinih-dev
  libmicrohttpd-dev  # the metrics endpoint (sidecar/metrics.c)
  prometheus         # tests/cluster/test_metrics.py scrapes a cluster with a real Prometheus
  python3-grpcio python3-protobuf
  python3-pip python3-setuptools python3-wheel python3-venv python3-yaml
  iproute2 procps openssl util-linux
  clang libclang-rt-dev llvm  # tools/fuzz.sh: libFuzzer (a Recommends of clang), llvm-symbolizer
)

missing=()
# Node: the machine's own when it has one (a newer Node conflicts with Debian's).
command -v node >/dev/null && command -v npm >/dev/null || PACKAGES+=(nodejs npm)
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# The Node client's dependencies (@grpc/grpc-js), for its tests.
if [ -f clients/node/package-lock.json ] && [ ! -d clients/node/node_modules/@grpc/grpc-js ]; then
  echo "setup: npm ci in clients/node" >&2
  (cd clients/node && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
