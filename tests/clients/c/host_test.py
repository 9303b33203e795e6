"""The C host library (clients/c/host.h) end to end: a real distsupd, the real
examples/counter_host app (built on the library) hosting children of kind
"counter", driven over the API from Python grpcio (//proto:py_stubs).

Checked: 1,000 hosted children start on the host's node and answer Calls; Casts and
Sends reach them, in order before a later Call; a child that stops itself abnormally
is restarted with the State it handed off, normally and TRANSIENT it is not
restarted; handle_call failures fail only that call (UNKNOWN, or the code the child
gave); a failing handle_cast is an abnormal exit without a State; a failing init
fails StartChild; TerminateChild runs terminate; the trace context reaches the
child; the host reattaches after the daemon restarts and after the host itself is
replaced; the kinds and capacity a host registers reach the daemon; its pongs keep
an idle host attached; the API token is sent, and a wrong one makes the host give
up; the host stops on SIGTERM, exiting 0 (under --config=asan: without leaks)."""

import collections
import os
import queue
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import clientharness as h  # noqa: E402

sys.path.insert(0, os.path.join(h.BIN, "proto", "py"))
import grpc  # noqa: E402
import supervisor_pb2 as pb  # noqa: E402

import supervisor_pb2_grpc as pbg  # noqa: E402

COUNTER_HOST = h.bin_path("examples", "counter_host", "counter_host")
N = 1000
IN_FLIGHT = 64
SC = grpc.StatusCode


class Host:
    """A running counter_host: its stdout lines are collected by a thread."""

    def __init__(self, test, addr, *args):
        self.proc = test.popen([COUNTER_HOST, "--target", addr, "--verbose"] + list(args),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.seen = []
        self.err = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    @staticmethod
    def _read(stream, q):
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)

    def _read_err(self):
        for line in self.proc.stderr:
            self.err.append(line)

    def expect(self, prefix, timeout=20.0):
        """The next line starting with prefix (earlier ones are kept in seen)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("counter_host ended (rc %s) before a line %r; stderr: %s"
                                     % (self.proc.poll(), prefix, "".join(self.err)[-3000:]))
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError("no line %r from counter_host within %ss; last lines: %s"
                             % (prefix, timeout, self.seen[-10:]))

    def drain(self):
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return self.seen
            if line is None:
                return self.seen
            self.seen.append(line)

    def stop(self, timeout=30):
        """SIGTERM; returns the exit code (the host must stop on its own)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("counter_host did not stop within %ss after SIGTERM" % timeout)
        time.sleep(0.1)  # the reader threads take the last lines
        self.drain()
        return rc


def spec(name, init=b"", restart=pb.PERMANENT, kind="counter"):
    return pb.ChildSpec(name=name, kind=kind, init=init, restart=restart)


class HostTest(h.DaemonTest):
    def setUp(self):
        super().setUp()
        self.channels = []

    def tearDown(self):
        for ch in self.channels:
            ch.close()
        super().tearDown()

    def stub(self, d, token=None):
        ch = grpc.insecure_channel(d.addr)
        self.channels.append(ch)
        s = pbg.SupervisorStub(ch)
        if token is None:
            return s
        md = (("authorization", "Bearer " + token),)

        class Authed:
            def __getattr__(self, name):
                m = getattr(s, name)
                return lambda req, **kw: m(req, metadata=md, **kw)
        return Authed()

    def host(self, d, *args):
        hp = Host(self, d.addr, *args)
        line = hp.expect("attached ")
        self.assertEqual(line.split()[1], d.node, line)
        return hp

    def many(self, fn, requests, timeout=30):
        """fn.future over every request, IN_FLIGHT at a time; the results in order
        (an RpcError where one failed)."""
        def result(f):
            try:
                return f.result()
            except grpc.RpcError as e:
                return e
        out, window = [], collections.deque()
        for r in requests:
            if len(window) >= IN_FLIGHT:
                out.append(result(window.popleft()))
            window.append(fn.future(r, timeout=timeout))
        while window:
            out.append(result(window.popleft()))
        return out

    def call(self, s, name, payload, **kw):
        return s.Call(pb.CallRequest(name=name, payload=payload, timeout_ms=5000), timeout=15, **kw).payload

    def assertCode(self, code, fn, *args, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception

    def wait_restarted(self, s, name, old_id, timeout=20):
        def again():
            try:
                c = s.WhereIs(pb.WhereIsRequest(name=name), timeout=5).child
            except grpc.RpcError:
                return None
            return c if c.state == pb.RUNNING and c.id != old_id else None
        return h.wait_for(again, timeout=timeout, what="%s restarted" % name)

    def test_thousand_children(self):
        d = self.daemon()
        s = self.stub(d)
        hp = self.host(d, "--name", "host-test")
        names = ["hc%04d" % i for i in range(N)]

        # start: each on the host's node, running at once
        res = self.many(s.StartChild, [pb.StartChildRequest(spec=spec(n, str(i).encode()))
                                       for i, n in enumerate(names)])
        errors = [r for r in res if isinstance(r, grpc.RpcError)]
        self.assertEqual(errors, [], errors[:3])
        for r in res:
            self.assertEqual(r.child.state, pb.RUNNING, r)
            self.assertEqual(r.child.node, d.node)
            self.assertEqual(r.child.spec.kind, "counter")
        self.assertEqual(s.CountChildren(pb.CountChildrenRequest(), timeout=10).active, N)

        # every child answers with its own count; Cast and Send come before a later Call
        got = self.many(s.Call, [pb.CallRequest(name=n, payload=b"get") for n in names])
        self.assertEqual([g.payload for g in got], [str(i).encode() for i in range(N)])
        for r in self.many(s.Cast, [pb.CastRequest(name=n, payload=b"incr") for n in names]):
            self.assertNotIsInstance(r, grpc.RpcError)
        for r in self.many(s.Send, [pb.SendRequest(name=n, payload=b"incr") for n in names[:100]]):
            self.assertNotIsInstance(r, grpc.RpcError)
        got = self.many(s.Call, [pb.CallRequest(name=n, payload=b"get") for n in names])
        self.assertEqual([g.payload for g in got], [str(i + (2 if i < 100 else 1)).encode() for i in range(N)])

        # a hundred stop themselves abnormally (stop(normal=false)): restarted, count kept
        crashed = names[:100]
        ids = {n: s.WhereIs(pb.WhereIsRequest(name=n), timeout=5).child.id for n in crashed}
        got = self.many(s.Call, [pb.CallRequest(name=n, payload=b"crash") for n in crashed])
        self.assertEqual({g.payload for g in got}, {b"crashing"})
        for i, n in enumerate(crashed):
            c = self.wait_restarted(s, n, ids[n])
            self.assertEqual(c.restarts, 1, c)
            self.assertEqual(c.node, d.node)
            self.assertEqual(self.call(s, n, b"get"), str(i + 2).encode())
        self.assertEqual(s.CountChildren(pb.CountChildrenRequest(), timeout=10).active, N)

        # TerminateChild: terminate runs on the host for each, and they are gone
        for r in self.many(s.TerminateChild, [pb.TerminateChildRequest(name=n) for n in names]):
            self.assertNotIsInstance(r, grpc.RpcError)
        self.assertEqual(s.CountChildren(pb.CountChildrenRequest(), timeout=10).specs, 0)
        self.assertCode(SC.NOT_FOUND, s.Call, pb.CallRequest(name=names[5], payload=b"get"), timeout=10)
        self.assertEqual(hp.stop(), 0, "".join(hp.err))
        seen = hp.seen
        terminated = {l.split()[1] for l in seen if l.startswith("terminate ")}
        self.assertEqual(terminated, set(names))
        inits = [l.split()[1] for l in seen if l.startswith("init ")]
        self.assertEqual(len(inits), N + len(crashed))
        self.assertEqual(seen[-1], "detached OK stopped by ds_host_stop")

    def test_calls_and_exits(self):
        d = self.daemon()
        s = self.stub(d)
        hp = self.host(d)
        s.StartChild(pb.StartChildRequest(spec=spec("c1", b"5")), timeout=10)
        first = s.WhereIs(pb.WhereIsRequest(name="c1"), timeout=5).child

        # handle_call failures fail that call only
        e = self.assertCode(SC.UNKNOWN, self.call, s, "c1", b"fail")
        self.assertIn("handle_call failed", e.details())
        e = self.assertCode(SC.INVALID_ARGUMENT, self.call, s, "c1", b"what")
        self.assertIn("unknown request", e.details())
        self.assertEqual(self.call(s, "c1", b"incr"), b"6")
        self.assertEqual(self.call(s, "c1", b"whoami"), ("c1 " + first.id).encode())
        self.assertEqual(self.call(s, "c1", b"echo:x"), b"x")

        # the trace context reaches the child
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        got = s.Call(pb.CallRequest(name="c1", payload=b"trace", traceparent=tp, tracestate="k=v"), timeout=10)
        self.assertEqual(got.payload, (tp + ";k=v").encode())
        self.assertEqual(self.call(s, "c1", b"trace"), b";")

        # a failing handle_cast: an abnormal exit without a State (the last State was
        # none, so the count starts from init again)
        s.Cast(pb.CastRequest(name="c1", payload=b"crash"), timeout=10)
        again = self.wait_restarted(s, "c1", first.id)
        self.assertEqual(again.restarts, 1)
        self.assertEqual(self.call(s, "c1", b"get"), b"5")

        # stop(normal=true) of a TRANSIENT child: not restarted
        s.StartChild(pb.StartChildRequest(spec=spec("t1", b"1", restart=pb.TRANSIENT)), timeout=10)
        self.assertEqual(self.call(s, "t1", b"stop"), b"stopping")

        def gone_or_stopped():
            try:
                c = s.WhereIs(pb.WhereIsRequest(name="t1"), timeout=5).child
            except grpc.RpcError as e:
                return e.code() == SC.NOT_FOUND
            return c.state not in (pb.RUNNING, pb.STARTING, pb.RESTARTING)
        h.wait_for(gone_or_stopped, timeout=20, what="t1 stopped for good")
        time.sleep(0.5)
        self.assertTrue(gone_or_stopped())
        self.assertEqual(len([l for l in hp.drain() if l.startswith("init t1 ")]), 1)

        # a failing init fails StartChild
        with self.assertRaises(grpc.RpcError) as cm:
            s.StartChild(pb.StartChildRequest(spec=spec("f1", b"fail", restart=pb.TEMPORARY)), timeout=15)
        self.assertIn("the init says fail", cm.exception.details())

        # a kind no host runs: UNAVAILABLE naming it
        e = self.assertCode(SC.UNAVAILABLE, s.StartChild, pb.StartChildRequest(spec=spec("n1", kind="nobody")),
                            timeout=10)
        self.assertIn("nobody", e.details())
        self.assertEqual(hp.stop(), 0, "".join(hp.err))

    def test_reattach(self):
        d = self.daemon(args=["--listen", "127.0.0.1:%d" % h.free_port()])  # the same port after a restart
        s = self.stub(d)
        hp = self.host(d)
        names = ["r%d" % i for i in range(20)]
        for n in names:
            s.StartChild(pb.StartChildRequest(spec=spec(n, b"7")), timeout=10)
        # the daemon restarts: the host's session ends, it attaches again (backoff),
        # and the permanent children run on it again
        d.stop()
        hp.expect("detached ")
        d.start()
        s = self.stub(d)
        hp.expect("attached ", timeout=30)

        def all_back():
            try:
                return all(self.call(s, n, b"get") == b"7" for n in names)
            except grpc.RpcError:
                return False
        h.wait_for(all_back, timeout=30, what="the children back on the host")

        # the host is killed and another takes its place: the children follow it
        hp.proc.kill()
        hp.proc.wait()
        hp2 = self.host(d)
        h.wait_for(all_back, timeout=30, what="the children on the new host")
        self.assertEqual(hp2.stop(), 0, "".join(hp2.err))

    def test_kinds_and_capacity(self):
        # two hosts: their kinds show in Nodes while they are attached, and the
        # capacity a host registers bounds its children
        d = self.daemon()
        s = self.stub(d)
        hp = self.host(d)
        small = self.host(d, "--kind", "small", "--capacity", "2")

        def kinds():
            return sorted(n.kinds for n in s.Nodes(pb.NodesRequest(), timeout=5).nodes if n.self)[0]
        self.assertEqual(sorted(kinds()), ["counter", "small"])
        for n in ("s1", "s2"):
            s.StartChild(pb.StartChildRequest(spec=spec(n, kind="small")), timeout=10)
        e = self.assertCode(SC.UNAVAILABLE, s.StartChild, pb.StartChildRequest(spec=spec("s3", kind="small")),
                            timeout=10)
        self.assertIn("capacity", e.details())
        self.assertEqual(self.call(s, "s2", b"incr"), b"1")
        self.assertEqual(small.stop(), 0, "".join(small.err))
        h.wait_for(lambda: list(kinds()) == ["counter"], timeout=10, what="kind small gone from Nodes")
        self.assertEqual(hp.stop(), 0, "".join(hp.err))

    def test_pings_keep_the_session(self):
        # the daemon pings every 100 ms and drops a host silent for 300 ms: the
        # library's pongs keep an idle host attached for many such periods
        d = self.daemon(config="[daemon]\nhost_ping_ms = 100\nhost_timeout_ms = 300\n")
        s = self.stub(d)
        hp = self.host(d)
        s.StartChild(pb.StartChildRequest(spec=spec("p1", b"1")), timeout=10)
        first = s.WhereIs(pb.WhereIsRequest(name="p1"), timeout=5).child.id
        time.sleep(2.0)
        self.assertEqual([l for l in hp.drain() if l.startswith("detached ")], [])
        self.assertEqual(self.call(s, "p1", b"incr"), b"2")
        self.assertEqual(s.WhereIs(pb.WhereIsRequest(name="p1"), timeout=5).child.id, first)
        self.assertEqual(hp.stop(), 0, "".join(hp.err))

    def test_token(self):
        token = "s3cret-token-for-hosts"
        path = h.daemon.write_token(self.workdir, token)
        d = self.daemon(args=["--api-token-file", path])
        s = self.stub(d, token)
        hp = self.host(d, "--token-file", path)
        s.StartChild(pb.StartChildRequest(spec=spec("k1", b"3")), timeout=10)
        self.assertEqual(self.call(s, "k1", b"incr"), b"4")
        self.assertEqual(hp.stop(), 0, "".join(hp.err))

        # a wrong token: the daemon refuses the host before welcoming it; it gives up
        bad = h.daemon.write_token(self.workdir, "wrong", name="bad.token")
        p = self.popen([COUNTER_HOST, "--target", d.addr, "--token-file", bad], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 1, out + err)
        self.assertIn("detached UNAUTHENTICATED", out)
        self.assertNotIn("attached ", out.replace("detached ", ""))


    def test_mtls(self):
        # TLS with a client certificate: the options ds_connect takes
        P = h.daemon.make_pki(self.workdir)
        d = self.daemon(args=["--tls-cert", P("server.pem"), "--tls-key", P("server.key"),
                              "--tls-client-ca", P("ca.pem")])
        hp = self.host(d, "--tls-ca", P("ca.pem"), "--tls-cert", P("client.pem"), "--tls-key", P("client.key"))

        def read(name):
            with open(P(name), "rb") as f:
                return f.read()
        ch = grpc.secure_channel(d.addr, grpc.ssl_channel_credentials(read("ca.pem"), read("client.key"),
                                                                      read("client.pem")))
        self.channels.append(ch)
        s = pbg.SupervisorStub(ch)
        s.StartChild(pb.StartChildRequest(spec=spec("m1", b"8")), timeout=10)
        self.assertEqual(self.call(s, "m1", b"incr"), b"9")
        self.assertEqual(hp.stop(), 0, "".join(hp.err))

if __name__ == "__main__":
    h.main()
