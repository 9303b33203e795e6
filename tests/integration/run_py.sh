#!/bin/sh
# Runs a Python integration test with Debian's interpreter (which has grpcio).
exec /usr/bin/python3 -u "$@"
