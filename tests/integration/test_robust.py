"""distsupd on one host under abuse: grandchildren left by a crash, odd names, large
specs, children that flood, many fds, memory after churn, slow starters."""

import os
import signal
import sys
import time
import uuid

import grpc

from harness import COUNTER, DaemonTest, main, pb, pbg, wait_for

SC = grpc.StatusCode


def sh(script, name="", **kw):
    return pb.ChildSpec(name=name, argv=["/bin/sh", "-c", script], protocol=pb.NONE, **kw)


def procs_with_cmdline(argv):
    """Pids of live (not zombie) processes whose command line is exactly argv."""
    want = ("\0".join(argv) + "\0").encode()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if f.read() != want:
                    continue
            with open("/proc/%s/stat" % d) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        found.append(int(d))
    return found


class GrandchildrenTest(DaemonTest):
    def kill_later(self, argv):
        """At the end of the test, whatever it leaves behind goes (its own processes only)."""
        def kill():
            for p in procs_with_cmdline(argv):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        self.addCleanup(kill)

    def test_kill9_leaves_no_duplicate_grandchildren(self):
        # a sleep argument no other process on the machine uses
        arg = "1000.%d" % (uuid.uuid4().int % 10**9)
        sleeps = lambda: procs_with_cmdline(["sleep", arg])  # noqa: E731
        self.kill_later(["sleep", arg])
        d = self.daemon()
        d.stub.StartChild(pb.StartChildRequest(spec=sh("sleep %s & sleep %s & wait" % (arg, arg), "tree")))
        wait_for(lambda: len(sleeps()) == 2, what="two sleeps")
        first = sorted(sleeps())
        d.kill9()
        d2 = self.daemon("d", start=False)
        d2.data_dir = d.data_dir
        d2.start()
        c = wait_for(lambda: (lambda c: c if c.state == pb.RUNNING else None)(
            d2.stub.WhereIs(pb.WhereIsRequest(name="tree")).child), what="tree running again")
        wait_for(lambda: len(set(sleeps()) - set(first)) >= 2, what="the new sleeps")
        time.sleep(0.3)  # a leftover would still be there
        self.assertEqual(len(sleeps()), 2, "sleeps: %r (the first run's: %r)" % (sleeps(), first))
        self.assertIn("left in process group", d2.read_log())
        self.assertGreater(c.os_pid, 0)
        d2.stub.TerminateChild(pb.TerminateChildRequest(name="tree"))
        wait_for(lambda: not sleeps(), timeout=5, what="no sleep after TerminateChild")

    def test_grandchildren_go_when_the_child_exits(self):
        arg = "1000.%d" % (uuid.uuid4().int % 10**9)
        sleeps = lambda: procs_with_cmdline(["sleep", arg])  # noqa: E731
        self.kill_later(["sleep", arg])
        d = self.daemon()
        # the child leaves a background sleep behind and exits; it is not restarted
        d.stub.StartChild(pb.StartChildRequest(spec=sh("sleep %s & exit 0" % arg, "leaver", restart=pb.TEMPORARY)))
        wait_for(lambda: not d.stub.Children(pb.ChildrenRequest()).children, what="the child to exit")
        wait_for(lambda: not sleeps(), timeout=5, what="its grandchild to be killed")


class NamesTest(DaemonTest):
    def raw_start(self, d, spec, replace=None):
        """StartChild with the request's bytes edited (grpcio would refuse to send them)."""
        data = pb.StartChildRequest(spec=spec).SerializeToString()
        if replace:
            old, new = replace
            self.assertEqual(len(old), len(new))
            self.assertIn(old, data)
            data = data.replace(old, new)
        call = d.channel.unary_unary("/distsup.v1.Supervisor/StartChild", request_serializer=lambda b: b,
                                     response_deserializer=pb.StartChildResponse.FromString)
        return call(data, timeout=10)

    def test_nul_in_a_name_is_invalid_argument(self):
        d = self.daemon()
        msg = self.assertCode(SC.INVALID_ARGUMENT, self.raw_start, d, sh("sleep 30", "nulXtail"),
                              (b"nulXtail", b"nul\0tail"))
        self.assertIn("NUL", msg)
        self.assertEqual(list(d.stub.Children(pb.ChildrenRequest()).children), [])

    def test_name_that_is_not_utf8_is_refused_and_listings_stay_readable(self):
        d = self.daemon()
        self.assertIn("UTF-8", self.assertCode(SC.INVALID_ARGUMENT, self.raw_start, d, sh("sleep 30", "badXY"),
                                               (b"badXY", b"bad\xff\xfe")))
        self.assertCode(SC.INVALID_ARGUMENT, self.raw_start, d, sh("sleep 30", "lab", labels={"k": "vX"}),
                        (b"vX", b"v\xc3"))
        self.assertCode(SC.INVALID_ARGUMENT, d.stub.StartChild,
                        pb.StartChildRequest(spec=sh("sleep 30", "c1\u0085x")))
        self.assertCode(SC.INVALID_ARGUMENT, d.stub.StartChild,
                        pb.StartChildRequest(spec=sh("sleep 30", "lab2", labels={"k": "bell\a"})))
        d.stub.StartChild(pb.StartChildRequest(spec=sh("sleep 30", "caf\u00e9-\u20ac")))
        self.assertEqual([c.name for c in d.stub.Children(pb.ChildrenRequest()).children], ["caf\u00e9-\u20ac"])

    def test_nul_in_a_supervisor_name_is_invalid_argument(self):
        d = self.daemon()
        data = pb.ChildrenRequest(supervisor="defaultXx").SerializeToString().replace(b"defaultXx", b"default\0x")
        call = d.channel.unary_unary("/distsup.v1.Supervisor/Children", request_serializer=lambda b: b,
                                     response_deserializer=pb.ChildrenResponse.FromString)
        self.assertCode(SC.INVALID_ARGUMENT, call, data, timeout=10)


class SpecDataTest(DaemonTest):
    """Answers leave init and env values out unless asked, and Children comes in pages,
    so that big inits cannot make them too large for a default client (4 MiB)."""

    def test_start_child_with_a_4mib_init_answers_a_default_client(self):
        d = self.daemon()
        init = b"i" * (4 * 1024 * 1024 - 200)  # the request fits; the whole answer would not
        r = d.stub.StartChild(pb.StartChildRequest(spec=sh("sleep 60", "big", init=init, env={"SECRET": "s"})),
                              timeout=30)
        self.assertEqual((r.child.state, r.child.spec.init), (pb.RUNNING, b""))
        self.assertEqual(dict(r.child.spec.env), {"SECRET": ""})
        w = d.stub.WhereIs(pb.WhereIsRequest(name="big")).child
        self.assertEqual((w.spec.init, list(w.spec.argv)), (b"", ["/bin/sh", "-c", "sleep 60"]))
        self.assertEqual(d.stub.WhoIs(pb.WhoIsRequest(id=w.id)).child.spec.init, b"")
        big = grpc.insecure_channel(d.addr, options=[("grpc.max_receive_message_length", 16 * 2**20)])
        self.addCleanup(big.close)
        full = pbg.SupervisorStub(big).WhereIs(pb.WhereIsRequest(name="big", include_spec_data=True)).child.spec
        self.assertEqual((len(full.init), dict(full.env)), (len(init), {"SECRET": "s"}))

    def test_children_with_5_mib_of_inits_page_through(self):
        d = self.daemon()
        for i in range(5):
            d.stub.StartChild(pb.StartChildRequest(spec=sh("sleep 60", "c%d" % i, init=bytes([65 + i]) * 2**20)),
                              timeout=30)
        kids = d.stub.Children(pb.ChildrenRequest()).children
        self.assertEqual([c.name for c in kids], ["c%d" % i for i in range(5)])
        self.assertTrue(all(c.spec.init == b"" for c in kids))
        # with the data: pages under 4 MiB each, all five in the end, in start order
        names, token, pages = [], "", 0
        while True:
            r = d.stub.Children(pb.ChildrenRequest(include_spec_data=True, page_token=token))
            self.assertLess(r.ByteSize(), 4 * 2**20)
            names += [c.name for c in r.children]
            self.assertTrue(all(len(c.spec.init) == 2**20 for c in r.children))
            pages += 1
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(names, ["c%d" % i for i in range(5)])
        self.assertGreater(pages, 1)

    def test_children_page_size(self):
        d = self.daemon()
        for i in range(7):
            d.stub.StartChild(pb.StartChildRequest(spec=sh("sleep 60", "p%d" % i)))
        r = d.stub.Children(pb.ChildrenRequest(page_size=3))
        self.assertEqual([c.name for c in r.children], ["p0", "p1", "p2"])
        d.stub.TerminateChild(pb.TerminateChildRequest(name="p2"))  # the token's child is gone: goes on after it
        r2 = d.stub.Children(pb.ChildrenRequest(page_size=3, page_token=r.next_page_token))
        self.assertEqual([c.name for c in r2.children], ["p3", "p4", "p5"])
        r3 = d.stub.Children(pb.ChildrenRequest(page_size=3, page_token=r2.next_page_token))
        self.assertEqual(([c.name for c in r3.children], r3.next_page_token), (["p6"], ""))
        self.assertCode(SC.INVALID_ARGUMENT, d.stub.Children, pb.ChildrenRequest(page_token="junk"))


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FloodTest(DaemonTest):
    def test_a_child_flooding_stdout_is_slowed_and_others_answer(self):
        d = self.daemon()
        d.stub.StartChild(pb.StartChildRequest(spec=pb.ChildSpec(name="ok", argv=[COUNTER])))
        d.stub.StartChild(pb.StartChildRequest(spec=sh("exec yes", "flood")))
        time.sleep(0.5)  # the flood is under way
        t0, c0 = time.monotonic(), cpu_seconds(d.proc.pid)
        worst = 0.0
        while time.monotonic() - t0 < 4:
            t = time.monotonic()
            d.stub.Call(pb.CallRequest(name="ok", payload=b"incr"), timeout=5)
            worst = max(worst, time.monotonic() - t)
            time.sleep(0.05)
        used = cpu_seconds(d.proc.pid) - c0
        elapsed = time.monotonic() - t0
        sys.stderr.write("distsupd: %.2fs of CPU in %.2fs; slowest Call %.3fs\n" % (used, elapsed, worst))
        # unthrottled, reading and splitting `yes` keeps distsupd on a whole core
        self.assertLess(used, 0.3 * elapsed, "distsupd used %.2fs of CPU in %.2fs" % (used, elapsed))
        self.assertLess(worst, 1.0)
        self.assertIn("reading it is slowed", d.read_log())
        self.assertEqual(d.read_log().count("reading it is slowed"), 1)  # said once
        self.assertEqual(d.stub.WhereIs(pb.WhereIsRequest(name="flood")).child.state, pb.RUNNING)


class LimitsTest(DaemonTest):
    def test_open_file_limit_is_raised_to_the_hard_limit(self):
        d = self.daemon(start=False)
        d.prefix = ("prlimit", "--nofile=1024:4096", "--")
        d.start()
        with open("/proc/%d/limits" % d.proc.pid) as f:
            row = [line.split() for line in f if line.startswith("Max open files")][0]
        self.assertEqual(row[3:5], ["4096", "4096"])
        self.assertIn("open files: 4096", d.read_log())


class SlowStartTest(DaemonTest):
    def test_start_child_answers_before_a_short_client_deadline(self):
        # start_timeout_ms is 10 s (the default); the client waits 2 s
        d = self.daemon()
        arg = "31.%d" % (uuid.uuid4().int % 10**9)
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            d.stub.StartChild(pb.StartChildRequest(spec=pb.ChildSpec(name="mute", argv=["/bin/sleep", arg])),
                              timeout=2)
        took = time.monotonic() - t0
        e = cm.exception
        self.assertEqual(e.code(), SC.DEADLINE_EXCEEDED)
        # the daemon's answer, not the client's own deadline
        self.assertIn("no Ready", e.details())
        self.assertIn("protocol NONE", e.details())
        self.assertLess(took, 2.0)
        self.assertCode(SC.NOT_FOUND, d.stub.WhereIs, pb.WhereIsRequest(name="mute"))
        self.assertEqual(procs_with_cmdline(["/bin/sleep", arg]), [])


if __name__ == "__main__":
    main()
