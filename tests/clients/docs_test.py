"""The quickstarts (docs/quickstart-*.md) run as written: every ```sh block of a page,
in order, in one bash with `set -e`, from a scratch copy of the repo whose .bazel/bin
holds the built files, against a real distsupd that stands in for `tools/start.sh`
(its address in $DISTSUP_ADDR, which every client honours).  The outputs the pages
promise are checked.  grpcurl is not packaged in Debian 12: its page is checked
against the proto (every method and request field it uses exists)."""

import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clientharness as h  # noqa: E402

# docs/ is no Bazel package: the pages are read through this file's real path (Bazel's
# runfiles link into the repo), and the test is tagged "external" so edits rerun it.
DOCS = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "docs")
SKIP = (re.compile(r"^tools/start\.sh$"),
        # the real repo's node_modules are used (tools/setup.sh ran npm ci)
        re.compile(r"^\(cd clients/node && npm ci\b.*\)$"))


def sh_blocks(page):
    text = open(os.path.join(DOCS, page)).read()
    return re.findall(r"```sh\n(.*?)```", text, re.S)


class DocsTest(h.DaemonTest):
    def setUp(self):
        super().setUp()
        self.d = self.daemon()
        self.repo = os.path.join(self.workdir, "repo")
        os.makedirs(os.path.join(self.repo, ".bazel"))
        # Built files: the runfiles tree has them at their package paths.
        os.symlink(h.BIN, os.path.join(self.repo, ".bazel", "bin"))
        for d in ("examples", "proto"):
            os.symlink(h.src_path(d), os.path.join(self.repo, d))
        # Sources the sessions install or build from: real copies (pip builds in-tree).
        shutil.copytree(h.src_path("clients"), os.path.join(self.repo, "clients"),
                        ignore=shutil.ignore_patterns("node_modules", "build", "*.egg-info",
                                                      "__pycache__"))
        nm = os.path.join(os.path.dirname(os.path.realpath(h.src_path("clients", "node",
                                                                      "package.json"))),
                          "node_modules")
        if os.path.isdir(nm):
            os.symlink(nm, os.path.join(self.repo, "clients", "node", "node_modules"))

    def session(self, page, timeout=240):
        lines = []
        for block in sh_blocks(page):
            for line in block.splitlines():
                if any(p.match(line.strip()) for p in SKIP):
                    continue
                lines.append(line)
        script = "set -e\n" + "\n".join(lines) + "\n"
        with open("/proc/%d/maps" % self.d.proc.pid) as f:
            if "libasan" in f.read():  # the sanitizer build: the session links with its libraries
                script = 'gcc() { command gcc -fsanitize=address,undefined "$@"; }\n' + script
        env = dict(os.environ, DISTSUP_ADDR=self.d.addr, HOME=self.workdir, PIP_NO_INDEX="1",
                   PIP_DISABLE_PIP_VERSION_CHECK="1", npm_config_offline="true")
        env.pop("PYTHONPATH", None)
        r = subprocess.run(["bash", "-c", script], cwd=self.repo, env=env, capture_output=True,
                           text=True, timeout=timeout)
        self.assertEqual(r.returncode, 0, "%s failed:\n--- stdout\n%s\n--- stderr\n%s"
                         % (page, r.stdout[-6000:], r.stderr[-6000:]))
        return r.stdout

    def test_distsupctl(self):
        out = self.session("quickstart-distsupctl.md")
        lines = out.splitlines()
        self.assertEqual(lines[0], "SERVING")
        self.assertTrue(lines[1].startswith("started counter1 on "), lines[1])
        self.assertEqual(lines[2:4], ["11", "ok"])
        self.assertEqual(lines[4], "12")
        self.assertIn("exit 15", out)
        self.assertIn("exit 16", out)
        self.assertIn("exit 14", out)
        js = [json.loads(l) for l in lines if l.startswith("{")]
        self.assertEqual(js[0]["children"][0]["name"], "counter1")
        self.assertEqual(js[1]["error"]["status"], "NOT_FOUND")
        self.assertRegex(out, r"PROCESS_RESTART\s+default\s+counter1")
        top_at = next(i for i, l in enumerate(lines) if l.startswith("top: "))
        last_ls = [l for l in lines[:top_at] if l.startswith("counter1 ")][-1].split()
        self.assertEqual(last_ls[4], "1")  # RESTARTS
        self.assertEqual(lines[top_at + 1].split(), ["NAME", "NODE", "STATE", "RESTARTS", "+RESTARTS",
                                                     "CALLS", "CALLS/S"])
        top = lines[top_at + 2].split()
        self.assertEqual((top[0], top[2], top[3], top[4], top[6]), ("counter1", "RUNNING", "1", "0", "0.0"))
        self.assertIn("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01;", lines)
        self.assertIn("stopped counter1", out)

    def test_python(self):
        out = self.session("quickstart-python.md")
        for want in ("SERVING", "b'11'", "b'12'", "taken:", "timeout:", "not found:",
                     "crash:", "PROCESS_RESTART pycounter 1", "PROCESS_START pycounter 0",
                     "Terminated(name='pycounter'", "b'echo:hello'",
                     # Host children in your app (distsup.host)
                     "hosting 1000", "b'8'", "b'crashing'", "after restart b'8'",
                     "terminate hc7: asked to"):
            self.assertIn(want, out)

    def test_node(self):
        out = self.session("quickstart-node.md")
        for want in ("SERVING", "\n11\n", "\n12\n", "taken:", "timeout:", "not found:",
                     "crash:", "PROCESS_RESTART nodecounter 1", "PROCESS_START nodecounter 0",
                     "name: 'nodecounter'", "echo:hello"):
            self.assertIn(want, out)

    def test_c(self):
        out = self.session("quickstart-c.md")
        for want in ("started ccounter on ", "incr -> 11", "get -> 12", "taken:", "timeout:",
                     "not found:", "ccounter %s RUNNING" % self.d.node, "stopped ccounter",
                     "PROCESS_START ccounter", "PROCESS_STOP ccounter"):
            self.assertIn(want, out)
        # Host children in your app: the page's app, built from the page, hosts hc1
        lines = out.splitlines()
        at = next(i for i, l in enumerate(lines) if l.startswith("started hc1 on "))
        self.assertEqual(lines[at + 1:at + 6], ["ok", "11", "11", "11", "exit 13"])
        self.assertTrue(any(l.startswith("stopped hc1") for l in lines[at + 6:]), lines[at + 6:])

    def test_grpcurl_page_matches_the_api(self):
        text = open(os.path.join(DOCS, "quickstart-grpcurl.md")).read()
        proto = open(h.src_path("proto", "distsup", "v1", "supervisor.proto")).read()
        methods = re.findall(r"distsup\.v1\.Supervisor/(\w+)", text)
        self.assertGreaterEqual(len(set(methods)), 8)
        for m in methods:
            rm = re.search(r"rpc %s\((\w+)\)" % m, proto)
            self.assertTrue(rm, "no rpc %s" % m)
            body = re.search(r"message %s \{(.*?)\}" % rm.group(1), proto, re.S).group(1)
            fields = set(re.findall(r"(\w+) = \d+;", body))
            for call in re.findall(r"-d '(\{[^']*\})' localhost:50051 distsup\.v1\.Supervisor/%s\b"
                                   % m, text):
                for k in json.loads(call):
                    self.assertIn(k, fields, "%s has no field %s" % (rm.group(1), k))
        self.assertIn("grpc.health.v1.Health/Check", text)
        for t in ("describe distsup.v1.ChildSpec", "-plaintext localhost:50051 list"):
            self.assertIn(t, text)


h.main() if __name__ == "__main__" else None
