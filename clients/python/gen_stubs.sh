#!/bin/sh
# Regenerates the vendored protobuf/gRPC stubs in clients/python/distsup/v1/ from
# proto/distsup/v1/*.proto.  Run it after changing a .proto; the test
# //tests/clients/python:package_test (test_stubs_are_current) fails while they are stale.
#
#   clients/python/gen_stubs.sh [OUTDIR]     (default: clients/python)
#
# Uses Debian's protoc and grpc_python_plugin (protobuf-compiler, protobuf-compiler-grpc):
# python3-grpc-tools embeds an older protoc whose output needs an older protobuf.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
proto=${PROTO_DIR:-$here/../../proto}
out=${1:-$here}
plugin=${GRPC_PYTHON_PLUGIN:-/usr/bin/grpc_python_plugin}
mkdir -p "$out/distsup/v1"
protoc --proto_path="$proto" --python_out="$out" --grpc_out="$out" \
    --plugin=protoc-gen-grpc="$plugin" \
    distsup/v1/supervisor.proto distsup/v1/child.proto
# child.proto has no service: its empty _grpc module is not shipped.
rm -f "$out/distsup/v1/child_pb2_grpc.py"
