#!/bin/sh
# Runs a Python test with Debian's interpreter (python3 on PATH may be another one).
set -eu
script="$1"
shift
exec /usr/bin/python3 -u "$script" "$@"
