"""The Python package as shipped: its committed stubs are what the .proto files
generate today, and `pip install` of clients/python works with Debian's
/usr/bin/python3 (offline: --no-deps --no-build-isolation into a target dir), and the
installed copy talks to a real distsupd."""

import filecmp
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import clientharness as h  # noqa: E402

STUBS = ["supervisor_pb2.py", "supervisor_pb2_grpc.py", "child_pb2.py"]


def copy_tree(src, dst):
    """Copies a (runfiles) tree following symlinks, so the copy is writable."""
    shutil.copytree(src, dst, symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))


class PackageTest(h.DaemonTest):
    def test_stubs_are_current(self):
        out = os.path.join(self.workdir, "gen")
        env = dict(os.environ, PROTO_DIR=h.src_path("proto"))
        r = subprocess.run(["sh", os.path.join(h.PY_CLIENT, "gen_stubs.sh"), out], env=env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        for name in STUBS:
            committed = os.path.join(h.PY_CLIENT, "distsup", "v1", name)
            fresh = os.path.join(out, "distsup", "v1", name)
            self.assertTrue(filecmp.cmp(committed, fresh, shallow=False),
                            "clients/python/distsup/v1/%s is stale: run clients/python/gen_stubs.sh"
                            % name)
        self.assertEqual(sorted(os.listdir(os.path.join(out, "distsup", "v1"))), sorted(STUBS))

    def test_pip_install_and_use(self):
        r = subprocess.run([h.PYTHON, "-m", "pip", "--version"], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0,
                         "pip is missing for /usr/bin/python3 (Debian package python3-pip): "
                         + r.stderr)
        src = os.path.join(self.workdir, "src")
        target = os.path.join(self.workdir, "site")
        copy_tree(h.PY_CLIENT, src)
        env = dict(os.environ, HOME=self.workdir, PIP_NO_CACHE_DIR="1",
                   PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1",
                   TMPDIR=self.workdir)
        env.pop("PYTHONPATH", None)
        r = subprocess.run([h.PYTHON, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                            "--target", target, src], env=env, capture_output=True, text=True,
                           timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for rel in ["distsup/__init__.py", "distsup/client.py", "distsup/worker.py",
                    "distsup/errors.py", "distsup/v1/supervisor_pb2.py",
                    "distsup/v1/supervisor_pb2_grpc.py", "distsup/v1/child_pb2.py"]:
            self.assertTrue(os.path.isfile(os.path.join(target, rel)), rel)
        dist = [n for n in os.listdir(target) if n.startswith("distsup-") and
                n.endswith(".dist-info")]
        self.assertEqual(len(dist), 1, os.listdir(target))

        d = self.daemon()
        # The installed copy, from a directory without the sources, with a worker written
        # against the installed distsup.worker.
        worker = os.path.join(self.workdir, "echo_worker.py")
        with open(worker, "w") as f:
            f.write("from distsup.worker import run\nrun(on_call=lambda p: b'echo:' + p)\n")
        prog = (
            "import distsup, sys\n"
            "assert distsup.__file__.startswith(%r), distsup.__file__\n"
            "s = distsup.Supervisor(%r)\n"
            "assert s.health() == 'SERVING'\n"
            "s.start_child('inst', [%r, %r], env={'PYTHONPATH': %r})\n"
            "print(s.call('inst', b'hi').decode())\n"
            "try:\n"
            "    s.whereis('nope')\n"
            "except distsup.NotFound:\n"
            "    print('not found')\n"
            % (target, d.addr, h.PYTHON, worker, target))
        r = subprocess.run([h.PYTHON, "-c", prog], cwd=self.workdir, capture_output=True,
                           text=True, timeout=60, env=dict(env, PYTHONPATH=target))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.split(), ["echo:hi", "not", "found"])


h.main() if __name__ == "__main__" else None
