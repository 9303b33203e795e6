"""distsupctl end to end: a real distsupd, real children (examples/counter), the real
binary.  Checks the human tables, the --json output (parsed with json.loads), the
exit codes scripts test, --help on every subcommand, the address from the flag and
from $DISTSUP_ADDR, and that watch follows events."""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import clientharness as h  # noqa: E402

COMMANDS = ["start", "stop", "ls", "whereis", "whois", "call", "cast", "send", "count",
            "nodes", "node-for", "mine", "watch", "health", "top"]
ALIASES = {"children": "ls", "terminate": "stop"}
UPTIME = re.compile(r"^(\d+ms|\d+s|\d+m\d\ds|\d+h\d\dm|\d+d\d\dh)$")


class Result:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    def json(self):
        try:
            return json.loads(self.out)
        except ValueError as e:
            raise AssertionError("not JSON (%s): %r" % (e, self.out))

    def __repr__(self):
        return "rc=%d\nstdout: %s\nstderr: %s" % (self.rc, self.out, self.err)


def table(text):
    """Parses an aligned table: a list of dicts keyed by the header's words.  Columns
    start where the header's words start."""
    lines = [l for l in text.split("\n") if l.strip()]
    assert lines, "no table in %r" % text
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = []
        for i, s in enumerate(starts):
            e = starts[i + 1] if i + 1 < len(starts) else len(line)
            cells.append(line[s:e].strip())
        rows.append(dict(zip(names, cells)))
    return rows


class LineReader:
    """Reads a child process's stdout line by line, each read bounded in time."""

    def __init__(self, proc):
        self.proc, self.buf = proc, b""

    def line(self, timeout=10.0):
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("no line within %ss (have %r)" % (timeout, self.buf))
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError("the process closed its output (rc %s, have %r)"
                                         % (self.proc.poll(), self.buf))
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def until(self, pred, timeout=10.0, limit=100):
        """Lines until pred(line) holds; returns that line (bounded in count and time)."""
        end = time.monotonic() + timeout
        seen = []
        for _ in range(limit):
            line = self.line(max(0.01, end - time.monotonic()))
            seen.append(line)
            if pred(line):
                return line
        raise AssertionError("no matching line in %r" % seen)


class CtlTest(h.DaemonTest):
    def setUp(self):
        super().setUp()
        self.d = self.daemon()

    def ctl(self, *args, addr=True, env=None, input=None, timeout=30):
        cmd = [h.DISTSUPCTL] + (["--addr", self.d.addr] if addr else []) + list(args)
        e = dict(os.environ)
        e.pop("DISTSUP_ADDR", None)
        e.update(env or {})
        r = subprocess.run(cmd, capture_output=True, env=e, input=input, timeout=timeout)
        return Result(r.returncode, r.stdout.decode("utf-8", "replace"),
                      r.stderr.decode("utf-8", "replace"))

    def ok(self, *args, **kw):
        r = self.ctl(*args, **kw)
        self.assertEqual(r.rc, 0, r)
        return r

    def start_counter(self, name, init=None):
        args = ["start", name] + (["--init", init] if init else []) + ["--", h.COUNTER]
        return self.ok(*args)

    # -- help and usage
    def test_help_on_every_subcommand(self):
        for cmd in COMMANDS + list(ALIASES):
            real = ALIASES.get(cmd, cmd)
            for args in ([cmd, "--help"], [cmd, "-h"], ["help", cmd], ["--json", cmd, "--help"]):
                r = self.ctl(*args, addr=False)
                self.assertEqual(r.rc, 0, (args, r))
                self.assertTrue(r.out.startswith("usage: distsupctl %s" % real), (args, r.out))
                self.assertIn("--addr HOST:PORT", r.out)
                self.assertEqual(r.err, "")
        r = self.ok("--help", addr=False)
        for cmd in COMMANDS:
            self.assertRegex(r.out, r"\n  %s\b" % re.escape(cmd))
        self.assertIn("Exit codes:", r.out)
        self.assertEqual(self.ok("help", addr=False).out, r.out)

    def test_usage_errors_exit_1(self):
        for args, hint in ((["frobnicate"], "distsupctl --help"),
                           ([], "distsupctl --help"),
                           (["ls", "--bogus"], "distsupctl ls --help"),
                           (["start", "x"], "distsupctl start --help"),
                           (["call", "c1"], "distsupctl call --help"),
                           (["watch", "--kind", "nope"], "distsupctl watch --help")):
            r = self.ctl(*args)
            self.assertEqual(r.rc, 1, (args, r))
            self.assertEqual(r.out, "")
            self.assertIn(hint, r.err)

    # -- start, ls, whereis
    def test_start_and_ls_table_and_json(self):
        r = self.start_counter("alpha", "5")
        m = re.match(r"started alpha on (\S+) \(pid (\d+), id (\S+)\)\n$", r.out)
        self.assertTrue(m, r.out)
        self.assertEqual(m.group(1), self.d.node)
        pid_alpha = int(m.group(2))
        self.assertTrue(h.pid_alive(pid_alpha))
        j = self.ok("start", "beta", "--json", "--spec-data", "--env", "K=V", "--label", "tier=web",
                    "--restart", "transient", "--", h.COUNTER).json()
        self.assertEqual((j["name"], j["node"], j["state"], j["restarts"]),
                         ("beta", self.d.node, "RUNNING", 0))
        self.assertEqual(j["spec"]["env"], {"K": "V"})
        self.assertEqual(j["spec"]["labels"], {"tier": "web"})
        self.assertEqual(j["spec"]["restart"], "TRANSIENT")
        self.assertEqual(j["spec"]["argv"], [h.COUNTER])

        rows = table(self.ok("ls").out)
        self.assertEqual(list(rows[0]), ["NAME", "NODE", "PID", "STATE", "RESTARTS", "UPTIME"])
        by = {r["NAME"]: r for r in rows}
        self.assertEqual(set(by), {"alpha", "beta"})
        self.assertEqual(by["alpha"]["PID"], str(pid_alpha))
        self.assertEqual(by["beta"]["PID"], str(j["os_pid"]))
        for r in rows:
            self.assertEqual((r["NODE"], r["STATE"], r["RESTARTS"]), (self.d.node, "RUNNING", "0"))
            self.assertRegex(r["UPTIME"], UPTIME)

        js = self.ok("ls", "--json").json()
        kids = {c["name"]: c for c in js["children"]}
        self.assertEqual(set(kids), {"alpha", "beta"})
        self.assertEqual(kids["alpha"]["os_pid"], pid_alpha)
        self.assertEqual(kids["alpha"]["spec"]["init"], "")  # left out unless --spec-data
        js = self.ok("ls", "--json", "--spec-data").json()
        kids = {c["name"]: c for c in js["children"]}
        self.assertEqual(kids["alpha"]["spec"]["init"], "5")
        self.assertEqual(kids["alpha"]["spec"]["init_base64"], "NQ==")
        self.assertGreaterEqual(kids["alpha"]["uptime_ms"], 0)
        self.assertGreater(kids["alpha"]["started_at_ms"], 0)
        # children is ls; --node filters.
        self.assertEqual({c["name"] for c in self.ok("children", "--json", "--node",
                                                     self.d.node).json()["children"]},
                         {"alpha", "beta"})

    def test_ls_shows_restarts(self):
        self.start_counter("crashy")
        pid0 = self.ok("whereis", "crashy", "--json").json()["os_pid"]
        r = self.ctl("call", "crashy", "crash", "--timeout-ms", "2000")
        self.assertNotEqual(r.rc, 0, r)
        h.wait_for(lambda: self.ok("whereis", "crashy", "--json").json()["restarts"] == 1 and
                   self.ok("whereis", "crashy", "--json").json()["state"] == "RUNNING",
                   10, what="the restart")
        row = table(self.ok("ls").out)[0]
        self.assertEqual((row["NAME"], row["RESTARTS"], row["STATE"]), ("crashy", "1", "RUNNING"))
        self.assertNotEqual(row["PID"], str(pid0))

    def test_whereis_whois(self):
        self.start_counter("w1")
        rows = table(self.ok("whereis", "w1").out)
        self.assertEqual(len(rows), 1)
        self.assertEqual(list(rows[0]), ["NAME", "NODE", "PID", "STATE", "RESTARTS", "UPTIME",
                                         "ID"])
        j = self.ok("whereis", "w1", "--json").json()
        self.assertEqual((rows[0]["ID"], rows[0]["PID"]), (j["id"], str(j["os_pid"])))
        self.assertEqual(self.ok("whois", j["id"], "--json").json()["name"], "w1")
        self.assertEqual(table(self.ok("whois", j["id"]).out)[0]["NAME"], "w1")

    # -- messages
    def test_call_cast_send(self):
        self.start_counter("c1", "10")
        self.assertEqual(self.ok("call", "c1", "incr").out, "11\n")
        self.assertEqual(self.ok("call", "c1", "get", "--raw").out, "11")
        self.assertEqual(self.ok("cast", "c1", "incr").out, "ok\n")
        self.assertEqual(self.ok("send", "c1", "incr", "--json").json(), {"ok": True})
        self.assertEqual(self.ok("cast", "c1", "incr", "--json").json(), {"ok": True})
        j = self.ok("call", "c1", "get", "--json").json()
        self.assertEqual(j, {"name": "c1", "node": self.d.node, "payload": "14",
                             "payload_base64": "MTQ="})
        # Payload from stdin, binary reply: base64 only in JSON, bytes as they are raw.
        r = self.ctl("call", "c1", "--payload-file", "-", "--json", input=b"echo:\xff\x00A")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.json(), {"name": "c1", "node": self.d.node, "payload_base64": "/wBB"})
        r = subprocess.run([h.DISTSUPCTL, "--addr", self.d.addr, "call", "c1", "echo:\xe9t\xe9",
                            "--raw"], capture_output=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout), (0, "\xe9t\xe9".encode()))
        path = os.path.join(self.workdir, "payload")
        with open(path, "wb") as f:
            f.write(b"echo:from a file")
        self.assertEqual(self.ok("call", "c1", "--payload-file", path).out, "from a file\n")

    def test_traceparent_reaches_the_child(self):
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        self.start_counter("t1")
        self.assertEqual(self.ok("call", "t1", "trace").out, ";\n")
        self.assertEqual(self.ok("call", "t1", "trace", "--traceparent", tp).out, tp + ";\n")
        self.assertEqual(self.ok("call", "t1", "trace", "--traceparent", tp, "--tracestate", "k=v").out,
                         tp + ";k=v\n")
        self.assertEqual(self.ok("cast", "t1", "incr", "--traceparent", tp).out, "ok\n")
        self.assertEqual(self.ok("call", "t1", "lasttrace").out, tp + ";\n")
        self.assertEqual(self.ok("send", "t1", "incr", "--traceparent", tp, "--tracestate", "a=b").out, "ok\n")
        self.assertEqual(self.ok("call", "t1", "lasttrace").out, tp + ";a=b\n")
        # not valid: the child sees none
        self.assertEqual(self.ok("call", "t1", "trace", "--traceparent", tp[:-1], "--tracestate", "k=v").out,
                         ";\n")
        self.ok("cast", "t1", "incr", "--traceparent", "00-" + "0" * 32 + "-00f067aa0ba902b7-01")
        self.assertEqual(self.ok("call", "t1", "lasttrace").out, ";\n")
        r = self.ctl("ls", "--traceparent", tp)
        self.assertEqual(r.rc, 1, r)

    # -- top
    def top_once(self, *args):
        r = self.ok("top", "--once", *args)
        lines = r.out.split("\n")
        self.assertRegex(lines[0], r"^top: \d\d:\d\d:\d\d, \d+ children, every \d+\.\d s$")
        rows = table("\n".join(lines[1:]))
        self.assertEqual(list(rows[0]), ["NAME", "NODE", "STATE", "RESTARTS", "+RESTARTS", "CALLS",
                                         "CALLS/S"])
        return {r["NAME"]: r for r in rows}

    def test_top(self):
        for n in ("idle", "busy", "crashy"):
            self.start_counter(n)
        for _ in range(5):
            self.ok("call", "idle", "incr")
        self.ok("cast", "idle", "incr")
        self.ok("send", "idle", "incr")
        # the first table: the counts so far, no rates (nothing moved between the polls)
        by = self.top_once("--interval", "0.3")
        self.assertEqual(set(by), {"idle", "busy", "crashy"})
        self.assertEqual({k: (r["NODE"], r["STATE"], r["RESTARTS"], r["+RESTARTS"]) for k, r in by.items()},
                         {k: (self.d.node, "RUNNING", "0", "0") for k in by})
        self.assertEqual((by["idle"]["CALLS"], by["idle"]["CALLS/S"]), ("7", "0.0"))
        self.assertEqual((by["busy"]["CALLS"], by["busy"]["CALLS/S"]), ("0", "0.0"))
        # the second: busy is called and crashy restarts while top waits between its polls
        stop = [False]
        made = [0]

        def caller():
            while not stop[0]:
                self.ok("call", "busy", "incr")
                made[0] += 1

        import threading
        t = threading.Thread(target=caller, daemon=True)
        t.start()
        time.sleep(0.3)
        top = subprocess.Popen([h.DISTSUPCTL, "--addr", self.d.addr, "top", "--once", "--interval", "1.5"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        self.assertNotEqual(self.ctl("call", "crashy", "crash", "--timeout-ms", "2000").rc, 0)
        out, err = top.communicate(timeout=30)
        stop[0] = True
        t.join(30)
        self.assertEqual(top.returncode, 0, err)
        rows = table("\n".join(out.decode().split("\n")[1:]))
        by = {r["NAME"]: r for r in rows}
        self.assertEqual(list(by)[0], "busy", out)  # busiest first
        self.assertGreater(float(by["busy"]["CALLS/S"]), 0.5, by)
        self.assertGreater(int(by["busy"]["CALLS"]), 0)
        self.assertLessEqual(int(by["busy"]["CALLS"]), made[0] + 1)
        self.assertEqual((by["crashy"]["RESTARTS"], by["crashy"]["+RESTARTS"]), ("1", "1"), by)
        self.assertEqual((by["idle"]["CALLS"], by["idle"]["CALLS/S"], by["idle"]["+RESTARTS"]), ("7", "0.0", "0"))
        # --json: one object, the same numbers
        j = self.ok("top", "--once", "--interval", "0.2", "--json").json()
        kids = {c["name"]: c for c in j["children"]}
        self.assertEqual(kids["idle"]["calls"], 7)
        self.assertEqual(kids["idle"]["calls_per_s"], 0.0)
        self.assertEqual(kids["crashy"]["restarts"], 1)
        self.assertEqual(kids["busy"]["calls"], made[0])
        self.assertGreaterEqual(j["interval_ms"], 200)
        # usage
        self.assertEqual(self.ctl("top", "--interval", "0").rc, 1)
        self.assertEqual(self.ctl("top", "--interval", "x").rc, 1)

    def test_stop(self):
        self.start_counter("s1")
        pid = self.ok("whereis", "s1", "--json").json()["os_pid"]
        self.assertEqual(self.ok("stop", "s1").out, "stopped s1 (exit 0)\n")
        self.assertFalse(h.pid_alive(pid))
        self.assertEqual(self.ctl("whereis", "s1").rc, 15)
        self.start_counter("s2")
        cid = self.ok("whereis", "s2", "--json").json()["id"]
        self.assertEqual(self.ok("stop", "--id", cid, "--json").json(),
                         {"name": "s2", "exit_code": 0, "signal": 0})
        self.assertEqual(self.ok("ls", "--json").json(), {"children": []})
        self.assertEqual(table(self.ok("ls").out), [])  # header only

    # -- exit codes of failures
    def test_exit_codes(self):
        self.start_counter("e1")
        for args in (["whereis", "nope"], ["call", "nope", "x"], ["cast", "nope", "x"],
                     ["send", "nope", "x"], ["stop", "nope"], ["whois", "n/1"]):
            r = self.ctl(*args)
            self.assertEqual(r.rc, 15, (args, r))
            self.assertEqual(r.out, "")
            self.assertIn("NOT_FOUND", r.err)
            rj = self.ctl(*args, "--json")
            self.assertEqual(rj.rc, 15)
            e = rj.json()["error"]
            self.assertEqual((e["code"], e["status"]), (5, "NOT_FOUND"))
            self.assertIn("nope" if args[0] != "whois" else "n/1", e["message"])
        # duplicate name
        r = self.ctl("start", "e1", "--json", "--", h.COUNTER)
        self.assertEqual(r.rc, 16, r)
        self.assertEqual(r.json()["error"]["status"], "ALREADY_EXISTS")
        self.assertIn("e1", r.json()["error"]["message"])
        # the child does not answer in time
        t0 = time.monotonic()
        r = self.ctl("call", "e1", "sleep:3000", "--timeout-ms", "200")
        self.assertEqual(r.rc, 14, r)
        self.assertIn("DEADLINE_EXCEEDED", r.err)
        self.assertLess(time.monotonic() - t0, 2.8)
        # the child's own error (the counter answers INVALID_ARGUMENT)
        self.assertEqual(self.ctl("call", "e1", "bogus").rc, 13)
        # call on a plain process
        self.ok("start", "plain", "--protocol", "none", "--kill-immediately", "--", "sleep", "60")
        self.assertEqual(self.ctl("call", "plain", "x").rc, 19)
        # unreachable daemon
        dead = "127.0.0.1:%d" % h.free_port()
        for args in (["health"], ["ls"], ["--json", "ls"]):
            r = self.ctl("--addr", dead, "--deadline-ms", "3000", *args, addr=False)
            self.assertEqual(r.rc, 24, (args, r))
            self.assertIn("UNAVAILABLE", r.err)
        # local failure: unreadable payload file
        r = self.ctl("call", "e1", "--payload-file", os.path.join(self.workdir, "missing"))
        self.assertEqual(r.rc, 2, r)

    def test_address_from_flag_and_env(self):
        dead = "127.0.0.1:%d" % h.free_port()
        r = self.ctl("health", addr=False, env={"DISTSUP_ADDR": self.d.addr})
        self.assertEqual((r.rc, r.out), (0, "SERVING\n"), r)
        r = self.ctl("--addr", self.d.addr, "health", addr=False, env={"DISTSUP_ADDR": dead})
        self.assertEqual((r.rc, r.out), (0, "SERVING\n"), r)
        r = self.ctl("health", "--addr", self.d.addr, addr=False, env={"DISTSUP_ADDR": dead})
        self.assertEqual(r.rc, 0, r)
        r = self.ctl("health", "--deadline-ms", "3000", addr=False, env={"DISTSUP_ADDR": dead})
        self.assertEqual(r.rc, 24, r)

    # -- cluster views
    def test_nodes_node_for_mine_count_health(self):
        self.start_counter("n1")
        rows = table(self.ok("nodes").out)
        self.assertEqual(len(rows), 1)
        self.assertEqual((rows[0]["NAME"], rows[0]["UP"], rows[0]["SELF"], rows[0]["CHILDREN"]),
                         (self.d.node, "yes", "*", "1"))
        nj = self.ok("nodes", "--json").json()["nodes"]
        self.assertEqual([(n["name"], n["up"], n["self"], n["children"]) for n in nj],
                         [(self.d.node, True, True, 1)])
        self.assertEqual(self.ok("node-for", "k").out, self.d.node + "\n")
        self.assertEqual(self.ok("node-for", "k", "--json").json(), {"key": "k", "node": self.d.node})
        self.assertEqual(self.ok("mine", "k").out, "true %s\n" % self.d.node)
        self.assertEqual(self.ok("mine", "k", "--json").json(),
                         {"key": "k", "mine": True, "node": self.d.node})
        rows = table(self.ok("count").out)
        self.assertEqual(rows, [{"SPECS": "1", "ACTIVE": "1", "WORKERS": "1", "SUPERVISORS": "0",
                                 "FAILED": "0"}])
        self.assertEqual(self.ok("count", "--json").json(),
                         {"specs": 1, "active": 1, "supervisors": 0, "workers": 1, "failed": 0})
        self.assertEqual(self.ok("health").out, "SERVING\n")
        self.assertEqual(self.ok("health", "--json").json(), {"status": "SERVING"})

    # -- watch
    def test_watch_follows_events_table(self):
        p = self.popen([h.DISTSUPCTL, "--addr", self.d.addr, "watch"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
        rd = LineReader(p)
        header = rd.line(10)  # printed once the daemon has subscribed the stream
        self.assertEqual(header.split(), ["TIME", "SEQ", "KIND", "SUPERVISOR", "NAME", "NODE",
                                          "PID", "DETAIL"])
        pid = self.ok("start", "wt", "--json", "--", h.COUNTER).json()["os_pid"]
        line = rd.until(lambda l: "PROCESS_START" in l and " wt " in l)
        cols = line.split()
        self.assertRegex(cols[0], r"^\d\d:\d\d:\d\d\.\d{3}$")
        self.assertEqual(cols[2:7], ["PROCESS_START", "default", "wt", self.d.node, str(pid)])
        self.ok("stop", "wt")
        line = rd.until(lambda l: "PROCESS_STOP" in l and " wt " in l)
        self.assertIn("exit=0", line)
        p.send_signal(signal.SIGINT)  # interrupted: a clean end
        self.assertEqual(p.wait(10), 0)

    def test_watch_json_count_kind_and_timeout(self):
        p = self.popen([h.DISTSUPCTL, "--addr", self.d.addr, "--json", "watch", "--kind",
                        "process_stop", "--count", "1"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
        rd = LineReader(p)
        # The JSON stream prints no header: start and stop probes until one is seen
        # (bounded), which also shows that PROCESS_START is filtered out.
        first = None
        for i in range(50):
            self.start_counter("probe%d" % i)
            self.ok("stop", "probe%d" % i)
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if r:
                first = rd.line(5)
                break
        self.assertIsNotNone(first, "watch printed nothing")
        ev = json.loads(first)
        self.assertEqual(ev["kind"], "PROCESS_STOP")
        self.assertTrue(ev["name"].startswith("probe"))
        self.assertEqual(ev["node"], self.d.node)
        self.assertEqual(set(ev), {"seq", "kind", "supervisor", "name", "id", "node", "os_pid",
                                   "exit_code", "signal", "reason", "at_ms", "restarts"})
        self.assertEqual(p.wait(10), 0)  # --count 1 reached
        self.assertEqual(p.stdout.read(), b"")
        r = self.ctl("watch", "--timeout-ms", "300")
        self.assertEqual(r.rc, 14, r)
        r = self.ctl("watch", "--cluster", "--timeout-ms", "300")  # accepted, single node too
        self.assertEqual(r.rc, 14, r)



class CtlSecurityTest(h.DaemonTest):
    """distsupctl against a daemon with a token, on a unix socket, and with TLS/mTLS."""

    TOKEN = "ctl-T0ken.42"

    def ctl(self, *args, env=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("DISTSUP_")}
        e.update(env or {})
        r = subprocess.run([h.DISTSUPCTL] + list(args), capture_output=True, env=e, timeout=30)
        return Result(r.returncode, r.stdout.decode(), r.stderr.decode())

    def test_token_from_flag_and_environment(self):
        tok = h.daemon.write_token(self.workdir, self.TOKEN)
        d = self.daemon(args=["--api-token-file", tok])
        r = self.ctl("--addr", d.addr, "ls")
        self.assertEqual(r.rc, 10 + 16, r)  # UNAUTHENTICATED
        self.assertIn("authorization", r.err)
        self.assertEqual(self.ctl("--addr", d.addr, "--token-file", tok, "ls").rc, 0)
        self.assertEqual(self.ctl("--addr", d.addr, "ls", env={"DISTSUP_TOKEN": self.TOKEN}).rc, 0)
        self.assertEqual(self.ctl("--addr", d.addr, "ls", env={"DISTSUP_TOKEN_FILE": tok}).rc, 0)
        bad = h.daemon.write_token(self.workdir, "wrong", name="bad.token")
        r = self.ctl("--addr", d.addr, "--token-file", bad, "ls", env={"DISTSUP_TOKEN": self.TOKEN})
        self.assertEqual(r.rc, 26, r)  # the flag wins over the environment
        self.assertIn("invalid bearer token", r.err)
        r = self.ctl("--addr", d.addr, "--token-file", os.path.join(self.workdir, "missing"), "ls")
        self.assertEqual(r.rc, 10 + 3, r)
        self.assertIn("missing", r.err)
        r = self.ctl("--addr", d.addr, "--token-file", tok, "start", "t1", "--protocol", "none", "--",
                     "/bin/sleep", "60")
        self.assertEqual(r.rc, 0, r)

    def test_unix_socket_address(self):
        sockdir = tempfile.mkdtemp(prefix="ds-", dir="/tmp")
        self.addCleanup(shutil.rmtree, sockdir, True)
        d = self.daemon(args=["--listen", "unix:" + os.path.join(sockdir, "api.sock")])
        self.assertTrue(d.addr.startswith("unix:/"))
        r = self.ctl("--addr", d.addr, "--json", "nodes")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.json()["nodes"][0]["address"], d.addr)
        self.assertEqual(self.ctl("health", env={"DISTSUP_ADDR": d.addr}).rc, 0)

    def test_tls_and_mtls(self):
        P = h.daemon.make_pki(self.workdir)
        d = self.daemon(args=["--tls-cert", P("server.pem"), "--tls-key", P("server.key"),
                              "--tls-client-ca", P("ca.pem")])
        self.assertNotEqual(self.ctl("--addr", d.addr, "ls").rc, 0)  # plaintext
        self.assertNotEqual(self.ctl("--addr", d.addr, "--tls-ca", P("ca.pem"), "ls").rc, 0)  # no client cert
        r = self.ctl("--addr", d.addr, "--tls-ca", P("ca.pem"), "--tls-cert", P("evil-client.pem"), "--tls-key",
                     P("evil-client.key"), "ls")
        self.assertNotEqual(r.rc, 0, r)
        r = self.ctl("--addr", d.addr, "--tls-ca", P("ca.pem"), "--tls-cert", P("client.pem"), "--tls-key",
                     P("client.key"), "health")
        self.assertEqual(r.rc, 0, r)


h.main() if __name__ == "__main__" else None
