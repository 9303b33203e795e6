"""The client tests' harness: the shared daemon harness (tests/harness/daemon.py),
whose daemons here are named NAME@test, and the paths of the built clients and
examples.  It imports no generated stubs, so any client test may use it."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))

import daemon  # noqa: E402
from daemon import (BIN, COUNTER, DISTSUPCTL, DISTSUPD, PY_CLIENT, PY_COUNTER, PYTHON, SRC, Daemon,  # noqa: E402,F401
                    bin_path, free_port, main, pid_alive, src_path, wait_for)


class DaemonTest(daemon.DaemonTest):
    """A test with a scratch dir; its daemons (named NAME@test) and processes are
    killed at tearDown, and their logs printed when the test failed."""

    node_suffix = "@test"
    tmp_prefix = "distsup-client-test-"
