"""Harness of the client tests: starts real distsupd processes, finds the built
clients and examples, and always cleans up.

It imports no generated stubs (the Python client package ships its own, and two
copies of one .proto cannot live in one process), so any client test may use it.

Paths: under Bazel the test's working directory is the runfiles tree, where both
built files and sources sit at their package paths.  By hand, DISTSUP_BIN names the
bazel-bin directory and DISTSUP_SRC the repo (default: the working directory)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BIN = os.path.abspath(os.environ.get("DISTSUP_BIN", os.getcwd()))
SRC = os.path.abspath(os.environ.get("DISTSUP_SRC", os.getcwd()))
PYTHON = "/usr/bin/python3"  # Debian's, with grpcio and protobuf


def bin_path(*parts):
    return os.path.join(BIN, *parts)


def src_path(*parts):
    return os.path.join(SRC, *parts)


DISTSUPD = bin_path("sidecar", "distsupd")
DISTSUPCTL = bin_path("clients", "c", "distsupctl")
COUNTER = bin_path("examples", "counter", "counter")
PY_COUNTER = src_path("examples", "python_counter", "counter.py")
PY_CLIENT = src_path("clients", "python")


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    """Polls pred until it returns a truthy value; fails after timeout seconds."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def free_port():
    """A loopback port nothing listens on (bound, then closed: for 'unreachable' tests)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    """One distsupd on 127.0.0.1, port 0 (read back from its --port-file)."""

    def __init__(self, workdir, name="d", args=()):
        self.workdir = workdir
        self.name = name
        self.data_dir = os.path.join(workdir, name + "-data")
        self.log_path = os.path.join(workdir, name + ".log")
        self.port_file = os.path.join(workdir, name + ".port")
        self.args = list(args)
        self.proc = None
        self.port = None
        self.log = None

    def start(self, timeout=10.0):
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        cmd = [DISTSUPD, "--listen", "127.0.0.1:0", "--port-file", self.port_file,
               "--data-dir", self.data_dir, "--node-name", self.name + "@test",
               "--log-level", "debug"] + self.args
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError("distsupd exited with %d:\n%s"
                                     % (self.proc.returncode, self.read_log()))
            try:
                with open(self.port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise AssertionError("distsupd did not start within %ss:\n%s" % (timeout, self.read_log()))

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    @property
    def node(self):
        return self.name + "@test"

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Sends sig and waits; returns the exit code."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("distsupd did not stop within %ss" % timeout)

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.log and not self.log.closed:
            self.log.close()


class DaemonTest(unittest.TestCase):
    """A test with a scratch dir; its daemons and processes are killed at tearDown,
    and their logs printed when the test failed."""

    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="distsup-client-test-",
                                        dir=os.environ.get("TEST_TMPDIR"))
        self.daemons = []
        self.procs = []

    def tearDown(self):
        result = getattr(self._outcome, "result", None)
        failed = any(t is self for t, _ in
                     getattr(result, "failures", []) + getattr(result, "errors", []))
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        for d in self.daemons:
            d.cleanup()
            if failed:
                sys.stderr.write("---- log of %s ----\n%s\n" % (d.log_path, d.read_log()[-6000:]))
        shutil.rmtree(self.workdir, ignore_errors=True)

    def daemon(self, name="d", args=(), start=True):
        d = Daemon(self.workdir, name, args)
        self.daemons.append(d)
        return d.start() if start else d

    def popen(self, cmd, **kw):
        """subprocess.Popen whose process is killed at tearDown."""
        p = subprocess.Popen(cmd, **kw)
        self.procs.append(p)
        return p


def main():
    """Runs the calling module's tests (filtered by argv substrings) and prints the
    line the CI totals read: distsup-tests: N passed, M failed."""
    import __main__
    suite = unittest.defaultTestLoader.loadTestsFromModule(__main__)
    if len(sys.argv) > 1:
        suite = unittest.TestSuite(t for t in _flatten(suite)
                                   if any(a in t.id() for a in sys.argv[1:]))
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stderr).run(suite)
    failed = len(result.failures) + len(result.errors)
    sys.stderr.flush()
    skipped = len(result.skipped)
    print("distsup-tests: %d passed, %d failed, %d skipped" % (result.testsRun - failed - skipped, failed, skipped),
          flush=True)
    sys.exit(0 if failed == 0 and result.testsRun > 0 else 1)


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t
