"""The Python client package (clients/python, `import distsup`) against a real distsupd
with real children: the C counter and the Python counter (distsup.worker)."""

import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import clientharness as h  # noqa: E402

sys.path.insert(0, h.PY_CLIENT)
import grpc  # noqa: E402

import distsup  # noqa: E402
from distsup import (AlreadyExists, ChildSpec, DeadlineExceeded, DistsupError,  # noqa: E402
                     FailedPrecondition, InvalidArgument, NotFound, Supervisor, Unavailable)


def next_event(watch, what):
    """The next event from a watch (its own deadline bounds the wait)."""
    try:
        return next(watch)
    except StopIteration:
        raise AssertionError("the watch ended while waiting for %s" % what)


class ClientTest(h.DaemonTest):
    def setUp(self):
        super().setUp()
        self.assertTrue(distsup.__file__.startswith(os.path.realpath(h.PY_CLIENT))
                        or distsup.__file__.startswith(h.PY_CLIENT), distsup.__file__)
        self.d = self.daemon()
        self.sup = Supervisor(self.d.addr, timeout=10)
        self.addCleanup(self.sup.close)

    def start_counter(self, name, init=b"", python=False, **kw):
        argv = [h.PYTHON, h.PY_COUNTER] if python else [h.COUNTER]
        return self.sup.start_child(name, argv, init=init, **kw)

    # -- basics
    def test_health_and_wait_ready(self):
        self.assertIs(self.sup.wait_ready(5), self.sup)
        self.assertEqual(self.sup.health(), "SERVING")
        self.assertEqual(self.sup.health("distsup.v1.Supervisor"), "SERVING")

    def test_address_from_environment(self):
        old = os.environ.get("DISTSUP_ADDR")
        os.environ["DISTSUP_ADDR"] = self.d.addr
        try:
            with Supervisor() as s:
                self.assertEqual(s.address, self.d.addr)
                self.assertEqual(s.health(), "SERVING")
        finally:
            if old is None:
                del os.environ["DISTSUP_ADDR"]
            else:
                os.environ["DISTSUP_ADDR"] = old

    def test_start_call_cast_send_c_worker(self):
        c = self.start_counter("c1", b"10", env={"A": "1"}, labels={"team": "x"},
                               restart="transient")
        self.assertEqual(c.name, "c1")
        self.assertEqual(c.state, "RUNNING")
        self.assertEqual(c.node, self.d.node)
        self.assertGreater(c.os_pid, 0)
        self.assertTrue(h.pid_alive(c.os_pid))
        self.assertEqual(c.spec.argv, [h.COUNTER])
        self.assertEqual(c.spec.restart, "TRANSIENT")
        self.assertEqual(c.spec.env, {"A": ""})   # values and init only when asked for
        self.assertEqual(c.spec.labels, {"team": "x"})
        self.assertEqual(c.spec.init, b"")
        full = self.sup.whereis("c1", include_spec_data=True)
        self.assertEqual((full.spec.env, full.spec.init), ({"A": "1"}, b"10"))
        self.assertEqual(self.sup.children(include_spec_data=True)[0].spec.init, b"10")
        self.assertEqual(self.sup.call("c1", b"get"), b"10")
        self.assertEqual(self.sup.call("c1", "incr"), b"11")   # str payloads are UTF-8
        self.sup.cast("c1", b"incr")
        self.sup.send("c1", b"incr")
        # cast and send are asynchronous, but the child reads its frames in order.
        self.assertEqual(self.sup.call("c1", b"get"), b"13")
        self.assertEqual(self.sup.call("c1", b"echo:\x00\xffbin"), b"\x00\xffbin")

    def test_generated_name_and_spec_object(self):
        c = self.sup.start_child(ChildSpec(argv=["sleep", "60"], protocol="none",
                                           kill_immediately=True))
        self.assertTrue(c.name)
        self.assertEqual(c.spec.protocol, "NONE")
        self.assertEqual(self.sup.whereis(c.name).os_pid, c.os_pid)
        with self.assertRaises(FailedPrecondition):
            self.sup.call(c.name, b"get")
        with self.assertRaises(FailedPrecondition):
            self.sup.cast(c.name, b"x")

    def test_whereis_whois_children_count(self):
        a = self.start_counter("a")
        b = self.start_counter("b", python=True)
        w = self.sup.whereis("a")
        self.assertEqual((w.id, w.os_pid, w.node), (a.id, a.os_pid, a.node))
        self.assertEqual(self.sup.whois(b.id).name, "b")
        kids = {c.name: c for c in self.sup.children()}
        self.assertEqual(set(kids), {"a", "b"})
        self.assertEqual(kids["b"].os_pid, b.os_pid)
        self.assertEqual({c.name for c in self.sup.children(node=self.d.node)}, {"a", "b"})
        self.assertEqual([c.name for c in self.sup.children(page_size=1)], ["a", "b"])  # page by page
        with self.assertRaises(DistsupError):  # a node the cluster does not know
            self.sup.children(node="elsewhere@test")
        n = self.sup.count_children()
        self.assertEqual((n.specs, n.active, n.workers, n.failed), (2, 2, 2, 0))

    def test_terminate(self):
        c = self.start_counter("t1")
        t = self.sup.terminate_child("t1")
        self.assertEqual(t.name, "t1")
        # The counter leaves by itself on the Terminate frame (exit 0).
        self.assertEqual((t.exit_code, t.signal), (0, 0))
        h.wait_for(lambda: not h.pid_alive(c.os_pid), 5, what="the child to be gone")
        with self.assertRaises(NotFound):
            self.sup.whereis("t1")
        c2 = self.start_counter("t2")
        self.assertEqual(self.sup.terminate_child(id=c2.id).name, "t2")
        self.assertEqual(self.sup.children(), [])
        with self.assertRaises(ValueError):
            self.sup.terminate_child()

    def test_nodes_node_for_mine(self):
        nodes = self.sup.nodes()
        self.assertEqual(len(nodes), 1)
        self.assertEqual(nodes[0].name, self.d.node)
        self.assertTrue(nodes[0].up)
        self.assertTrue(nodes[0].is_self)
        self.assertEqual(self.sup.node_for("some-key"), self.d.node)
        m = self.sup.mine("some-key")
        self.assertTrue(m)
        self.assertEqual(m.node, self.d.node)

    # -- error paths
    def test_unknown_name(self):
        for fn, args in ((self.sup.whereis, ("ghost",)), (self.sup.call, ("ghost", b"get")),
                         (self.sup.cast, ("ghost", b"x")), (self.sup.send, ("ghost", b"x")),
                         (self.sup.terminate_child, ("ghost",)), (self.sup.whois, ("n/1",))):
            with self.assertRaises(NotFound) as cm:
                fn(*args)
            e = cm.exception
            self.assertIsInstance(e, LookupError)
            self.assertIsInstance(e, DistsupError)
            self.assertEqual(e.code, grpc.StatusCode.NOT_FOUND)
            self.assertTrue(e.details, fn)

    def test_duplicate(self):
        first = self.start_counter("dup")
        with self.assertRaises(AlreadyExists) as cm:
            self.start_counter("dup")
        self.assertIn("dup", cm.exception.details)
        self.assertEqual(cm.exception.code, grpc.StatusCode.ALREADY_EXISTS)
        self.assertEqual(self.sup.whereis("dup").id, first.id)

    def test_call_timeout(self):
        self.start_counter("slow")
        t0 = time.monotonic()
        with self.assertRaises(DeadlineExceeded) as cm:
            self.sup.call("slow", b"sleep:3000", timeout=0.3)
        self.assertIsInstance(cm.exception, TimeoutError)
        self.assertLess(time.monotonic() - t0, 2.5)
        self.assertIn("slow", cm.exception.details)

    def test_worker_error_reply(self):
        self.start_counter("e1")
        with self.assertRaises(InvalidArgument) as cm:
            self.sup.call("e1", b"bogus")
        self.assertIn("unknown request", cm.exception.details)
        self.assertEqual(self.sup.call("e1", b"get"), b"0")  # still serving

    def test_local_argument_errors(self):
        with self.assertRaises(ValueError):
            self.sup.start_child("x", [])
        with self.assertRaises(ValueError):
            self.sup.start_child("x", [h.COUNTER], restart="sometimes")
        with self.assertRaises(TypeError):
            self.sup.start_child("x")
        with self.assertRaises(ValueError):
            self.sup.watch(kinds=["no_such_kind"])

    def test_unreachable_daemon(self):
        with Supervisor("127.0.0.1:%d" % h.free_port(), timeout=3) as s:
            with self.assertRaises(Unavailable) as cm:
                s.children()
            self.assertIsInstance(cm.exception, ConnectionError)
            with self.assertRaises(Unavailable):
                s.wait_ready(0.5)

    def test_invalid_argument_from_daemon(self):
        with self.assertRaises(InvalidArgument):
            self.sup.start_child("bad/name\n", [h.COUNTER])

    # -- watch
    def test_watch_events_arrive(self):
        with self.sup.watch(timeout=20) as w:
            c = self.start_counter("w1", python=True)
            e = next_event(w, "PROCESS_START")
            self.assertEqual((e.kind, e.name, e.os_pid, e.node), ("PROCESS_START", "w1",
                                                                    c.os_pid, self.d.node))
            self.assertEqual(e.supervisor, "default")
            self.assertGreater(e.seq, 0)
            with self.assertRaises(DistsupError):
                self.sup.call("w1", b"crash", timeout=2)  # the worker exits 1
            e = next_event(w, "PROCESS_RESTART")
            self.assertEqual((e.kind, e.name, e.exit_code), ("PROCESS_RESTART", "w1", 1))
            e = next_event(w, "PROCESS_START after the restart")
            self.assertEqual((e.kind, e.name), ("PROCESS_START", "w1"))
            self.assertNotEqual(e.os_pid, c.os_pid)
            self.assertEqual(self.sup.call("w1", b"get"), b"0")
            self.sup.terminate_child("w1")
            e = next_event(w, "PROCESS_STOP")
            self.assertEqual((e.kind, e.name), ("PROCESS_STOP", "w1"))

    def test_watch_kinds_filter_cancel_and_deadline(self):
        w = self.sup.watch(kinds=["process_stop"], timeout=20)
        self.start_counter("f1")
        self.sup.terminate_child("f1")
        e = next_event(w, "PROCESS_STOP")
        self.assertEqual((e.kind, e.name), ("PROCESS_STOP", "f1"))  # no PROCESS_START first
        threading.Timer(0.3, w.cancel).start()
        t0 = time.monotonic()
        self.assertEqual(list(w), [])  # ends quietly once cancelled
        self.assertLess(time.monotonic() - t0, 10)
        w2 = self.sup.watch(timeout=0.5)
        with self.assertRaises(DeadlineExceeded):
            next(w2)

    def test_watch_unknown_supervisor(self):
        with self.assertRaises(NotFound):
            w = self.sup.watch(supervisor="no-such-supervisor", timeout=5)
            next(w)


class PythonWorkerTest(h.DaemonTest):
    """distsup.worker end to end, through the example examples/python_counter."""

    def setUp(self):
        super().setUp()
        self.d = self.daemon()
        self.sup = Supervisor(self.d.addr)
        self.addCleanup(self.sup.close)

    def test_counter(self):
        c = self.sup.start_child("py", [h.PYTHON, h.PY_COUNTER], init=b"41")
        self.assertEqual(c.state, "RUNNING")
        self.assertEqual(self.sup.call("py", b"incr"), b"42")
        self.sup.cast("py", b"incr")
        self.sup.send("py", b"incr")
        self.sup.cast("py", b"unknown cast: printed to stderr, not to the protocol")
        self.assertEqual(self.sup.call("py", b"get"), b"44")
        self.assertEqual(self.sup.call("py", b"echo:h\xc3\xa9"), "hé".encode())
        with self.assertRaises(InvalidArgument):
            self.sup.call("py", b"what")
        with self.assertRaises(DeadlineExceeded):
            self.sup.call("py", b"sleep:2000", timeout=0.2)
        t = self.sup.terminate_child("py")
        self.assertIn(t.exit_code, (0, -1))

    def test_trace_context_reaches_the_worker(self):
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        tp2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        self.sup.start_child("tr", [h.PYTHON, h.PY_COUNTER])
        # none sent, none received
        self.assertEqual(self.sup.call("tr", b"trace"), b";")
        # a call's traceparent (gRPC metadata), with and without tracestate
        self.assertEqual(self.sup.call("tr", b"trace", traceparent=tp), (tp + ";").encode())
        self.assertEqual(self.sup.call("tr", b"trace", traceparent=tp, tracestate="congo=t61rcWkgMzE"),
                         (tp + ";congo=t61rcWkgMzE").encode())
        # cast and send carry theirs
        self.sup.cast("tr", b"incr", traceparent=tp2)
        self.assertEqual(self.sup.call("tr", b"lasttrace"), (tp2 + ";").encode())
        self.sup.send("tr", b"incr", traceparent=tp, tracestate="a=1")
        self.assertEqual(self.sup.call("tr", b"lasttrace"), (tp + ";a=1").encode())
        # invalid ones are dropped, their tracestate with them
        for bad in ["00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   # upper case
                    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   # zero trace id
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   # zero parent id
                    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   # version ff
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",    # 54 chars
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  # too long
                    "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   # separator
                    "garbage"]:
            self.assertEqual(self.sup.call("tr", b"trace", traceparent=bad, tracestate="a=1"), b";", bad)
            self.sup.cast("tr", b"incr", traceparent=bad)
            self.assertEqual(self.sup.call("tr", b"lasttrace"), b";", bad)
        # the request's own field wins over the metadata; an invalid one is dropped too
        req = distsup.v1.supervisor_pb2.CallRequest(name="tr", payload=b"trace", traceparent=tp2)
        r = self.sup.stub.Call(req, metadata=(("traceparent", tp),), timeout=10)
        self.assertEqual(r.payload, (tp2 + ";").encode())
        req = distsup.v1.supervisor_pb2.CallRequest(name="tr", payload=b"trace", traceparent="nope")
        self.assertEqual(self.sup.stub.Call(req, timeout=10).payload, b";")
        # calls, casts and sends are counted: 5 calls, a cast and a send, 8 * 3, 2
        self.assertEqual(self.sup.whereis("tr").calls, 5 + 2 + 8 * 3 + 2)

    def test_inline_worker_callbacks_and_exceptions(self):
        script = os.path.join(self.workdir, "inline.py")
        with open(script, "w") as f:
            f.write(
                "import sys\n"
                "sys.path.insert(0, %r)\n"
                "from distsup.worker import run, CallError\n"
                "seen = []\n"
                "def on_init(info):\n"
                "    seen.append(info.name + '@' + info.node + ':' + info.init.decode())\n"
                "def on_call(p):\n"
                "    print('noise on stdout must not break the protocol')\n"
                "    if p == b'boom': raise RuntimeError('kaput')\n"
                "    if p == b'denied': raise CallError(7, 'no way')\n"
                "    if p == b'seen': return ','.join(seen)\n"
                "    return None\n"
                "def on_info(p):\n"
                "    seen.append('info:' + p.decode())\n"
                "run(on_init=on_init, on_call=on_call, on_info=on_info)\n" % h.PY_CLIENT)
        self.sup.start_child("inl", [h.PYTHON, script], init=b"hello")
        self.assertEqual(self.sup.call("inl", b"x"), b"")
        with self.assertRaises(distsup.Unknown) as cm:
            self.sup.call("inl", b"boom")
        self.assertIn("RuntimeError: kaput", cm.exception.details)
        with self.assertRaises(distsup.PermissionDenied) as cm:
            self.sup.call("inl", b"denied")
        self.assertIn("no way", cm.exception.details)
        self.sup.send("inl", b"ping")
        self.assertEqual(self.sup.call("inl", b"seen"),
                         ("inl@%s:hello,info:ping" % self.d.node).encode())
        self.assertEqual(self.sup.whereis("inl").restarts, 0)



class SecurityClientTest(h.DaemonTest):
    """token=, token_file=, the environment's token, unix: targets and TLS/mTLS."""

    TOKEN = "py-T0ken/42"

    def setUp(self):
        super().setUp()
        self.saved = {k: os.environ.pop(k) for k in ("DISTSUP_TOKEN", "DISTSUP_TOKEN_FILE", "DISTSUP_ADDR")
                      if k in os.environ}
        self.addCleanup(self.restore_env)

    def restore_env(self):
        for k in ("DISTSUP_TOKEN", "DISTSUP_TOKEN_FILE"):
            os.environ.pop(k, None)
        os.environ.update(self.saved)

    def client(self, *args, **kw):
        kw.setdefault("timeout", 10)
        s = Supervisor(*args, **kw)
        self.addCleanup(s.close)
        return s

    def test_token_argument_file_and_environment(self):
        tok = h.daemon.write_token(self.workdir, self.TOKEN)
        d = self.daemon(args=["--api-token-file", tok])
        with self.assertRaises(distsup.Unauthenticated) as cm:
            self.client(d.addr).start_child("x", ["/bin/sleep", "60"], protocol="none")
        self.assertIn("authorization", str(cm.exception))
        with self.assertRaises(distsup.Unauthenticated):
            self.client(d.addr, token="wrong").children()
        self.assertEqual(self.client(d.addr, token=self.TOKEN).health(), "SERVING")
        s = self.client(d.addr, token_file=tok)
        s.start_child("x", ["/bin/sleep", "60"], protocol="none")
        w = s.watch(timeout=10)  # the stream carries the token too
        s.terminate_child("x")
        self.assertEqual(next_event(w, "x's stop").name, "x")
        w.cancel()
        os.environ["DISTSUP_TOKEN"] = self.TOKEN
        self.assertEqual(len(self.client(d.addr).children()), 0)
        del os.environ["DISTSUP_TOKEN"]
        os.environ["DISTSUP_TOKEN_FILE"] = tok
        self.assertEqual(len(self.client(d.addr).children()), 0)
        with self.assertRaises(ValueError):
            self.client(d.addr, token_file=os.path.join(self.workdir, "missing"))

    def test_unix_target(self):
        sockdir = tempfile.mkdtemp(prefix="ds-", dir="/tmp")
        self.addCleanup(shutil.rmtree, sockdir, True)
        d = self.daemon(args=["--listen", "unix:" + os.path.join(sockdir, "api.sock")])
        s = self.client(d.addr)
        self.assertEqual(s.nodes()[0].address, d.addr)
        self.assertEqual(s.start_child("u", ["/bin/sleep", "60"], protocol="none").name, "u")

    def test_tls_and_mtls(self):
        P = h.daemon.make_pki(self.workdir)
        d = self.daemon(args=["--tls-cert", P("server.pem"), "--tls-key", P("server.key"),
                              "--tls-client-ca", P("ca.pem")])
        with self.assertRaises(Unavailable):
            self.client(d.addr, timeout=3).children()
        with self.assertRaises(Unavailable):
            self.client(d.addr, tls_ca_file=P("ca.pem")).children()
        with self.assertRaises(Unavailable):
            self.client(d.addr, tls_ca_file=P("ca.pem"), tls_cert_file=P("evil-client.pem"),
                        tls_key_file=P("evil-client.key")).children()
        s = self.client(d.addr, tls_ca_file=P("ca.pem"), tls_cert_file=P("client.pem"),
                        tls_key_file=P("client.key"))
        self.assertEqual(s.health(), "SERVING")
        with self.assertRaises(ValueError):
            self.client(d.addr, tls_cert_file=P("client.pem"))

h.main() if __name__ == "__main__" else None
