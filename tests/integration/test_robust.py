"""distsupd on one host under abuse: grandchildren left by a crash, odd names, large
specs, children that flood, many fds, memory after churn, slow starters."""

import os
import signal
import time
import uuid

import grpc

from harness import DaemonTest, main, pb, wait_for

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


if __name__ == "__main__":
    main()
