"""Test harness: starts real distsupd processes and talks to them with grpcio.

Paths come from the Bazel runfiles tree (the test's working directory) or, when
run by hand, from DISTSUP_BIN (the bazel-bin directory, e.g. .bazel/bin).
Every daemon started here is killed at tearDown, even when the test fails."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.environ.get("DISTSUP_BIN", os.getcwd())
sys.path.insert(0, os.path.join(ROOT, "proto", "py"))

import grpc  # noqa: E402
import supervisor_pb2 as pb  # noqa: E402,F401
import supervisor_pb2_grpc as pbg  # noqa: E402

DISTSUPD = os.path.abspath(os.path.join(ROOT, "sidecar", "distsupd"))
COUNTER = os.path.abspath(os.path.join(ROOT, "examples", "counter", "counter"))


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


class Daemon:
    def __init__(self, workdir, name="d", config=None, args=()):
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, name + "-data")
        self.log_path = os.path.join(workdir, name + ".log")
        self.port_file = os.path.join(workdir, name + ".port")
        self.config_path = None
        if config is not None:
            self.config_path = os.path.join(workdir, name + ".ini")
            with open(self.config_path, "w") as f:
                f.write(config)
        self.args = list(args)
        self.proc = None
        self.port = None
        self.channel = None
        self.stub = None

    def start(self, timeout=10.0):
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        # prefix: a command that runs distsupd elsewhere (e.g. `ip netns exec NS`);
        # host: where its API is reached (the cluster's network-namespace nodes)
        cmd = list(getattr(self, "prefix", ())) + [DISTSUPD, "--listen", "127.0.0.1:0", "--port-file", self.port_file,
               "--data-dir", self.data_dir, "--log-level", "debug"] + self.args
        if self.config_path:
            cmd += ["--config", self.config_path]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError("distsupd exited with %d:\n%s" % (self.proc.returncode, self.read_log()))
            if os.path.exists(self.port_file):
                lines = open(self.port_file).read().split()
                self.port = int(lines[0])  # a second line is the peer port (cluster mode)
                break
            time.sleep(0.02)
        else:
            raise AssertionError("distsupd did not start:\n" + self.read_log())
        self.channel = grpc.insecure_channel("%s:%d" % (getattr(self, "host", "127.0.0.1"), self.port))
        self.stub = pbg.SupervisorStub(self.channel)
        return self

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Sends sig and waits; returns the exit code."""
        if self.channel:
            self.channel.close()
            self.channel = None
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("distsupd did not stop within %ss after signal %d" % (timeout, sig))
        finally:
            self.log.close()

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.channel:
            self.channel.close()
        if getattr(self, "log", None) and not self.log.closed:
            self.log.close()


class DaemonTest(unittest.TestCase):
    """A test case with a scratch dir and daemons that are always cleaned up."""

    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="distsup-test-", dir=os.environ.get("TEST_TMPDIR"))
        self.daemons = []

    def tearDown(self):
        result = getattr(self._outcome, "result", None)
        failed = any(t is self for t, _ in getattr(result, "failures", []) + getattr(result, "errors", []))
        for d in self.daemons:
            rc = d.proc.poll() if d.proc else None  # before cleanup kills it: did it die on its own?
            d.cleanup()
            if failed:
                sys.stderr.write("---- log of %s%s ----\n%s\n" % (
                    d.log_path, "" if rc is None else " (it had exited with %d)" % rc, d.read_log()[-6000:]))
        shutil.rmtree(self.workdir, ignore_errors=True)

    def daemon(self, name="d", config=None, args=(), start=True):
        d = Daemon(self.workdir, name, config, args)
        self.daemons.append(d)
        return d.start() if start else d

    def assertCode(self, code, fn, *args, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception.details()


def main():
    """Runs the module's tests; prints the line .ci/run counts."""
    import __main__
    suite = unittest.defaultTestLoader.loadTestsFromModule(__main__)
    if len(sys.argv) > 1:
        suite = unittest.TestSuite(t for t in _flatten(suite) if any(a in t.id() for a in sys.argv[1:]))
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stderr).run(suite)
    failed = len(result.failures) + len(result.errors)
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
