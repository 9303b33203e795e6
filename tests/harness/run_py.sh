#!/bin/sh
# Runs a Python test with Debian's interpreter, which has grpcio and protobuf
# (python3 on PATH may be another one): run_py.sh SCRIPT [ARGS...]
exec /usr/bin/python3 -u "$@"
