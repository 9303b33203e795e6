"""The Python tests' daemon harness: starts real distsupd processes on scratch data
dirs, waits until they serve, stops them, and always cleans up (printing their logs
when a test failed).  The integration and cluster tests (tests/integration/harness.py)
and the client tests (tests/clients/clientharness.py) add their own few pieces on top.

It imports no generated stubs (the Python client package ships its own, and two
copies of one .proto cannot live in one process), so any Python test may use it.

Paths: under Bazel the test's working directory is the runfiles tree, where both
built files and sources sit at their package paths.  By hand, DISTSUP_BIN names the
bazel-bin directory (e.g. .bazel/bin) and DISTSUP_SRC the repo (default: the working
directory).

Run the tests with /usr/bin/python3 (PYTHON), Debian's interpreter, which has grpcio
and protobuf; `python3` on PATH may be another one (docs/build.md)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

PYTHON = "/usr/bin/python3"  # Debian's, with grpcio and protobuf

BIN = os.path.abspath(os.environ.get("DISTSUP_BIN", os.getcwd()))
SRC = os.path.abspath(os.environ.get("DISTSUP_SRC", os.getcwd()))


def bin_path(*parts):
    return os.path.join(BIN, *parts)


def src_path(*parts):
    return os.path.join(SRC, *parts)


DISTSUPD = bin_path("sidecar", "distsupd")
DISTSUPCTL = bin_path("clients", "c", "distsupctl")
COUNTER = bin_path("examples", "counter", "counter")
PY_COUNTER = src_path("examples", "python_counter", "counter.py")
PY_CLIENT = src_path("clients", "python")

if os.path.realpath(sys.executable) != os.path.realpath(PYTHON):
    sys.stderr.write("warning: the distsup tests expect %s (with Debian's grpcio), not %s\n"
                     % (PYTHON, sys.executable))


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


def free_ports(n):
    """n distinct loopback ports nothing listens on (bound together, then released: a
    small race, fine here; also for 'unreachable' tests)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def free_port():
    return free_ports(1)[0]


def make_pki(workdir):
    """Certificates for TLS tests, made with the openssl CLI in workdir/pki: a CA
    (ca.pem, ca.key), a server certificate for 127.0.0.1 and localhost (server.pem,
    server.key), a client certificate of that CA (client.pem, client.key), and one
    of another CA (evil-client.pem, evil-client.key, from evil-ca.pem).  Returns a
    function from a file name to its path."""
    pki = os.path.join(workdir, "pki")
    os.mkdir(pki)

    def ossl(*args):
        subprocess.run(["openssl"] + list(args), cwd=pki, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    for ca in ("ca", "evil-ca"):
        ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=%s" % ca,
             "-keyout", ca + ".key", "-out", ca + ".pem")
    with open(os.path.join(pki, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    with open(os.path.join(pki, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for name, ca, ext in (("server", "ca", "server.ext"), ("client", "ca", "client.ext"),
                          ("evil-client", "evil-ca", "client.ext")):
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % name, "-keyout", name + ".key",
             "-out", name + ".csr")
        ossl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
             "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", name + ".pem")
    return lambda name: os.path.join(pki, name)


def write_token(workdir, token, name="api.token", mode=0o600):
    """A token file for --api-token-file (mode 0600 unless told)."""
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(token + "\n")
    os.chmod(path, mode)
    return path


class Daemon:
    """One distsupd listening on 127.0.0.1, port 0 (read back from its --port-file).

    name names its files in workdir (NAME-data/, NAME.log, NAME.port, NAME.ini);
    config, when given, is written to NAME.ini and passed with --config; node_name,
    when given, is passed with --node-name; args come last (a later flag wins).
    Subclasses may set prefix (a command that runs distsupd elsewhere, e.g.
    `ip netns exec NS`).  start() may be called again after stop().  The daemon runs
    with TMPDIR = workdir, which its children inherit (an allowlisted variable): the
    processes of one test are told apart from another's running at the same time by
    it (cluster.ClusterTest.running_copies)."""

    prefix = ()

    def __init__(self, workdir, name="d", config=None, args=(), node_name=None):
        self.workdir = workdir
        self.name = name
        self.node_name = node_name
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
        self.log = None

    def command(self):
        cmd = list(self.prefix) + [DISTSUPD, "--listen", "127.0.0.1:0", "--port-file", self.port_file,
                                   "--data-dir", self.data_dir]
        if self.node_name:
            cmd += ["--node-name", self.node_name]
        cmd += ["--log-level", "debug"] + self.args
        if self.config_path:
            cmd += ["--config", self.config_path]
        return cmd

    def start(self, timeout=10.0):
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, TMPDIR=self.workdir))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError("distsupd exited with %d:\n%s" % (self.proc.returncode, self.read_log()))
            try:
                with open(self.port_file) as f:
                    words = f.read().split()
                if words and words[0].startswith("unix:"):  # listen = unix:PATH
                    self.unix_address = words[0]
                    self.port = 0
                    self.started()
                    return self
                if words:
                    self.port = int(words[0])  # a second line is the peer port (cluster mode)
                    self.started()
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise AssertionError("distsupd did not start within %ss:\n%s" % (timeout, self.read_log()))

    def started(self):
        """Called once the daemon serves (its port is known); for subclasses."""

    unix_address = None  # "unix:/PATH" when the daemon listens on a unix socket

    @property
    def addr(self):
        return self.unix_address or "127.0.0.1:%d" % self.port

    @property
    def node(self):
        return self.node_name

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
            raise AssertionError("distsupd did not stop within %ss after signal %d" % (timeout, sig))
        finally:
            self.log.close()

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.log and not self.log.closed:
            self.log.close()


class DaemonTest(unittest.TestCase):
    """A test with a scratch dir; its daemons and processes are killed at tearDown,
    and the daemons' logs printed when the test failed.

    Suites set daemon_class (a Daemon subclass), node_suffix (when set, daemon NAME
    gets the node name NAME + node_suffix) and tmp_prefix."""

    daemon_class = Daemon
    node_suffix = None
    tmp_prefix = "distsup-test-"

    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix=self.tmp_prefix, dir=os.environ.get("TEST_TMPDIR"))
        self.daemons = []
        self.procs = []

    def tearDown(self):
        result = getattr(self._outcome, "result", None)
        failed = any(t is self for t, _ in getattr(result, "failures", []) + getattr(result, "errors", []))
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        for d in self.daemons:
            rc = d.proc.poll() if d.proc else None  # before cleanup kills it: did it die on its own?
            d.cleanup()
            if failed:
                log = d.read_log()
                # the peer links' lines in full (a cluster's story), then the tail
                peer = [ln for ln in log.splitlines() if " peer: " in ln][:400]
                sys.stderr.write("---- log of %s%s: its peer lines ----\n%s\n---- its last lines ----\n%s\n" % (
                    d.log_path, "" if rc is None else " (it had exited with %d)" % rc, "\n".join(peer),
                    log[-6000:]))
        keep = os.environ.get("DISTSUP_KEEP_LOGS")  # a directory: every daemon's log is copied there
        if keep:
            dest = os.path.join(keep, self.id().split(".", 1)[-1])
            os.makedirs(dest, exist_ok=True)
            for d in self.daemons:
                if os.path.exists(d.log_path):
                    shutil.copy(d.log_path, dest)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def daemon(self, name="d", config=None, args=(), start=True):
        node_name = name + self.node_suffix if self.node_suffix else None
        d = self.daemon_class(self.workdir, name, config, args, node_name=node_name)
        self.daemons.append(d)
        return d.start() if start else d

    def popen(self, cmd, **kw):
        """subprocess.Popen whose process is killed at tearDown."""
        p = subprocess.Popen(cmd, **kw)
        self.procs.append(p)
        return p


def main():
    """Runs the calling module's tests (only those whose id contains one of the
    arguments, when there are any) and prints the line tools/test_totals.py reads:
    distsup-tests: N passed, M failed, K skipped."""
    import __main__
    suite = unittest.defaultTestLoader.loadTestsFromModule(__main__)
    if len(sys.argv) > 1:
        suite = unittest.TestSuite(t for t in _flatten(suite) if any(a in t.id() for a in sys.argv[1:]))
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
