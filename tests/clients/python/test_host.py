"""distsup.host (clients/python) against a real distsupd: hosted children run by
real host apps (examples/python_counter_host, in their own processes) and by Hosts
running in this test's process (where the children's own records can be checked).
Hosted children are started with the generated stubs (ChildSpec.kind)."""

import collections
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import clientharness as h  # noqa: E402

sys.path.insert(0, h.PY_CLIENT)
import grpc  # noqa: E402

from distsup import (InvalidArgument, NotFound, Supervisor, Unknown)  # noqa: E402
from distsup.host import CallError, Child, Host  # noqa: E402
from distsup.v1 import child_pb2 as cpb  # noqa: E402
from distsup.v1 import supervisor_pb2 as pb  # noqa: E402

COUNTER_HOST = h.src_path("examples", "python_counter_host", "counter_host.py")
KIND = "counter"

# What the in-process children saw, by child name: a list of (event, ...) tuples.
RECORD = collections.defaultdict(list)
RECORD_LOCK = threading.Lock()


def record(name, *event):
    with RECORD_LOCK:
        RECORD[name].append(event)


def events(name, what=None):
    with RECORD_LOCK:
        return [e for e in RECORD[name] if what is None or e[0] == what]


class Probe(Child):
    """An in-process counter that records what happens to it."""

    barrier = None   # set by a test: handlers of different children meet there

    def init(self, info):
        record(self.name, "init", info.init, info.state, self.id, self.node, self.supervisor)
        if info.init == b"fail-init":
            raise ValueError("init failed on request")
        self.n = int(info.state or info.init or b"0")
        self.seen = []
        self.busy = False
        self.overlaps = 0

    def handle_call(self, payload):
        if self.busy:
            self.overlaps += 1
        self.busy = True
        try:
            return self._call(payload)
        finally:
            self.busy = False

    def _call(self, payload):
        if payload == b"get":
            return str(self.n)
        if payload == b"incr":
            self.n += 1
            return str(self.n)
        if payload == b"seen":
            return ",".join(self.seen)
        if payload == b"overlaps":
            return str(self.overlaps)
        if payload.startswith(b"slow:"):
            time.sleep(int(payload[5:]) / 1000.0)
            return b"slow"
        if payload == b"barrier":
            Probe.barrier.wait()
            return b"met"
        if payload == b"trace":
            return "%s;%s" % (self.traceparent, self.tracestate)
        if payload == b"bug":
            raise KeyError("handler bug")
        if payload == b"refuse":
            raise CallError(9, "not now")
        if payload == b"crash":
            self.stop(normal=False, reason="asked to crash")
            return b"crashing"
        if payload == b"stop":
            self.stop(normal=True, reason="asked to stop")
            return b"stopping"
        if payload == b"bad-return":
            return 42
        raise CallError(3, "unknown request")

    def handle_cast(self, payload):
        if self.busy:
            self.overlaps += 1
        if payload.startswith(b"add:"):
            self.seen.append(payload[4:].decode())
        elif payload.startswith(b"slowadd:"):
            time.sleep(0.002)
            self.seen.append(payload[8:].decode())
        elif payload == b"incr":
            self.n += 1
        elif payload == b"save":
            self.save_state()
        elif payload == b"bug":
            raise ValueError("cast bug")

    def handle_info(self, payload):
        if payload == b"bug":
            raise ValueError("info bug")
        self.handle_cast(payload)

    def get_state(self):
        record(self.name, "get_state", self.n)
        return str(self.n).encode()

    def terminate(self, reason):
        record(self.name, "terminate", reason, self.n)
        if self.n == 999:  # a slow terminate: longer than its shutdown_ms
            time.sleep(1.5)
            record(self.name, "terminate-done")


def hosted(name, init=b"", restart="PERMANENT", shutdown_ms=0, kind=KIND):
    return pb.ChildSpec(name=name, kind=kind, init=init, shutdown_ms=shutdown_ms,
                        restart=pb.RestartType.Value(restart))


class HostTest(h.DaemonTest):
    daemon_args = ()

    def setUp(self):
        super().setUp()
        with RECORD_LOCK:
            RECORD.clear()
        self.d = self.daemon(args=self.daemon_args)
        self.sup = Supervisor(self.d.addr, timeout=15)
        self.addCleanup(self.sup.close)
        self.apps = []
        self.hosts = []

    def own(self, hst):
        """hst is closed at tearDown, before the daemons stop."""
        self.hosts.append(hst)
        return hst

    def tearDown(self):
        for hst in self.hosts:
            hst.close()
        result = getattr(self._outcome, "result", None)
        failed = any(t is self for t, _ in getattr(result, "failures", []) + getattr(result, "errors", []))
        if failed:
            for path in self.apps:
                try:
                    with open(path, "rb") as f:
                        sys.stderr.write("---- log of host app %s ----\n%s\n" % (
                            path, f.read()[-6000:].decode("utf-8", "replace")))
                except OSError:
                    pass
        super().tearDown()

    # -- helpers
    def start(self, spec):
        return self.sup.stub.StartChild(pb.StartChildRequest(spec=spec), timeout=15).child

    def host(self, workers=4, name="in-process", **kw):
        """A Host in this process, running Probe children; closed at cleanup."""
        hst = self.own(Host(self.d.addr, name=name, workers=workers, **kw))
        hst.register(KIND, Probe)
        hst.start()
        self.assertTrue(hst.wait_attached(10), "the host did not attach")
        return hst

    def app(self, name, addr=None, wait=True):
        """A host app process (examples/python_counter_host); killed at tearDown."""
        log = os.path.join(self.workdir, name + ".log")
        self.apps.append(log)
        with open(log, "ab") as f:
            p = self.popen([h.PYTHON, COUNTER_HOST, "--address", addr or self.d.addr,
                            "--name", name], stdout=subprocess.DEVNULL, stderr=f)
        p.log_path = log
        if wait:
            self.wait_app_attached(p, 1)
        return p

    def attaches(self, p):
        with open(p.log_path, "rb") as f:
            return f.read().count(b"attached to node")

    def wait_app_attached(self, p, n, timeout=15):
        def ok():
            if p.poll() is not None:
                raise AssertionError("host app exited with %s" % p.returncode)
            return self.attaches(p) >= n
        h.wait_for(ok, timeout, what="the host app's attach number %d" % n)

    def call_until(self, name, payload, timeout=20, want=None):
        """Calls until the call succeeds (and its answer is want, when given)."""
        last = []

        def attempt():
            try:
                r = self.sup.call(name, payload, timeout=2)
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last[:] = [e]
                return None
            last[:] = [r]
            return (r,) if want is None or r == want else None
        return h.wait_for(attempt, timeout, interval=0.05,
                          what="%s to answer %r (last: %r)" % (name, want, last))[0]

    def parallel(self, fn, items, threads=4):
        """fn(item) for every item on a few threads; the first exception is raised."""
        items = list(items)
        errors, out = [], {}
        lock = threading.Lock()

        def run(chunk):
            for it in chunk:
                try:
                    r = fn(it)
                except Exception as e:  # noqa: BLE001 - re-raised below
                    with lock:
                        errors.append((it, e))
                    return
                with lock:
                    out[it] = r
        ts = [threading.Thread(target=run, args=(items[i::threads],)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        if errors:
            raise AssertionError("%d failed; first: %r: %r" % (len(errors), errors[0][0], errors[0][1]))
        self.assertEqual(len(out), len(items))
        return out


class HostAppTest(HostTest):
    """Host apps in their own processes."""

    def test_thousands_of_children_in_one_host_app(self):
        app = self.app("app-1")
        n = 2000
        names = ["c%d" % i for i in range(n)]
        infos = self.parallel(lambda nm: self.start(hosted(nm, init=nm[1:].encode())), names)
        self.assertEqual({i.state for i in infos.values()}, {pb.RUNNING})
        self.assertEqual({i.node for i in infos.values()}, {self.d.node})
        replies = self.parallel(lambda nm: self.sup.call(nm, b"get"), names)
        self.assertEqual(replies, {nm: nm[1:].encode() for nm in names})
        who = self.sup.call("c1234", b"whoami").split()
        self.assertEqual(who, [b"c1234", b"app-1", str(app.pid).encode()])
        cnt = self.sup.count_children()
        self.assertEqual((cnt.specs, cnt.active, cnt.failed), (n, n, 0))
        # every child keeps its own state: a few increments land where they were sent
        for nm in ("c0", "c999", "c1999"):
            self.sup.cast(nm, b"incr")
        self.assertEqual(self.sup.call("c999", b"incr"), b"1001")
        self.assertEqual(self.sup.call("c0", b"get"), b"1")
        self.assertEqual(self.sup.call("c1998", b"get"), b"1998")
        self.assertEqual(self.attaches(app), 1)

    def test_kill9_of_a_host_app_moves_its_children_to_the_other(self):
        a = self.app("app-1")
        b = self.app("app-2")
        names = ["k%d" % i for i in range(200)]
        self.parallel(lambda nm: self.start(hosted(nm, init=b"5")), names)
        where = self.parallel(lambda nm: self.sup.call(nm, b"whoami").split()[1], names)
        on_a = [nm for nm in names if where[nm] == b"app-1"]
        self.assertTrue(on_a, "no child was placed on app-1: %r" % collections.Counter(where.values()))
        self.assertTrue(len(on_a) < len(names), "every child went to app-1")
        for nm in on_a:  # state that app-1's children hand off before the kill
            self.sup.cast(nm, b"incr")
            self.sup.cast(nm, b"save")
        self.assertEqual(self.sup.call(on_a[0], b"get"), b"6")  # the casts before it were handled
        before = {nm: self.sup.whereis(nm).id for nm in on_a}
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        for nm in names:
            who = self.call_until(nm, b"whoami").split()
            self.assertEqual(who[1], b"app-2", nm)
            self.assertEqual(who[2], str(b.pid).encode())
        for nm in on_a:
            c = self.sup.whereis(nm)
            self.assertNotEqual(c.id, before[nm])
            self.assertGreaterEqual(c.restarts, 1)
            self.assertEqual(self.sup.call(nm, b"get"), b"6", nm)  # its last State came along
        self.assertEqual(self.attaches(b), 1)

    def test_the_only_host_app_killed_and_started_again(self):
        a = self.app("app-1")
        names = ["r%d" % i for i in range(50)]
        self.parallel(lambda nm: self.start(hosted(nm, init=b"1")), names)
        for nm in names[:10]:
            self.sup.cast(nm, b"incr")
            self.sup.cast(nm, b"save")
        for nm in names[:10]:
            self.assertEqual(self.sup.call(nm, b"get"), b"2")
        a.send_signal(signal.SIGKILL)
        a.wait(10)

        def gone():
            try:
                self.sup.call(names[0], b"get", timeout=1)
                return False
            except Exception:  # noqa: BLE001 - any failure: not served
                return True
        h.wait_for(gone, 15, what="the children to stop answering")
        b = self.app("app-2")
        for nm in names:
            who = self.call_until(nm, b"whoami").split()
            self.assertEqual(who[1:], [b"app-2", str(b.pid).encode()])
            self.assertEqual(self.sup.call(nm, b"get"), b"2" if nm in names[:10] else b"1", nm)

    def test_daemon_restart_host_reconnects_and_children_come_back(self):
        port = h.free_port()
        d2 = self.daemon("d2", args=["--listen", "127.0.0.1:%d" % port])
        self.assertEqual(d2.port, port)
        sup2 = Supervisor(d2.addr, timeout=15)
        self.addCleanup(sup2.close)
        app = self.app("app-1", addr=d2.addr)
        names = ["p%d" % i for i in range(30)]
        for nm in names:
            sup2.stub.StartChild(pb.StartChildRequest(spec=hosted(nm, init=b"7")), timeout=15)
        self.assertEqual(sup2.call(names[0], b"incr"), b"8")
        d2.stop()
        d2.start()
        self.assertEqual(d2.port, port)
        self.wait_app_attached(app, 2, timeout=30)
        for nm in names:
            r = self.call_until_on(sup2, nm, b"get")
            # the spec came back from SQLite; the state is the daemon's memory's: it
            # starts from init, or from the State handed off at the daemon's shutdown
            self.assertIn(r, (b"7", b"8") if nm == names[0] else (b"7",), nm)
        self.assertEqual(len(sup2.children()), len(names))
        # and once more after a kill -9 of the daemon
        d2.kill9()
        d2.start()
        self.assertEqual(d2.port, port)
        self.wait_app_attached(app, 3, timeout=30)
        for nm in names:
            self.assertEqual(self.call_until_on(sup2, nm, b"get"), b"7", nm)
        self.assertIsNone(app.poll())

    def call_until_on(self, sup, name, payload, timeout=30):
        def attempt():
            try:
                return (sup.call(name, payload, timeout=2),)
            except Exception:  # noqa: BLE001 - retried until the deadline
                return None
        return h.wait_for(attempt, timeout, interval=0.1, what="%s to answer" % name)[0]


class InProcessHostTest(HostTest):
    """Hosts in this process: the children's records are checked directly."""

    def test_call_cast_send_and_init_info(self):
        hst = self.host()
        c = self.start(hosted("a", init=b"10"))
        self.assertEqual(c.state, pb.RUNNING)
        self.assertEqual(self.sup.call("a", b"get"), b"10")
        self.sup.cast("a", b"incr")
        self.sup.send("a", b"incr")
        self.assertEqual(self.sup.call("a", b"incr"), b"13")
        init = events("a", "init")
        self.assertEqual(init, [("init", b"10", b"", c.id, self.d.node, "default")])
        self.assertEqual(hst.node, self.d.node)
        self.assertTrue(hst.session)
        self.assertEqual(hst.child_count, 1)
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        self.assertEqual(self.sup.call("a", b"trace", traceparent=tp, tracestate="k=v"),
                         ("%s;k=v" % tp).encode())
        self.assertEqual(self.sup.call("a", b"trace"), b";")

    def test_exception_in_handle_call_fails_only_that_call(self):
        self.host()
        c = self.start(hosted("e", init=b"3"))
        with self.assertRaises(Unknown) as cm:
            self.sup.call("e", b"bug")
        self.assertIn("KeyError", cm.exception.details)
        with self.assertRaises(Unknown) as cm:  # a reply that is not bytes, str or None
            self.sup.call("e", b"bad-return")
        self.assertIn("TypeError", cm.exception.details)
        with self.assertRaises(InvalidArgument):  # CallError(3, ...)
            self.sup.call("e", b"nonsense")
        try:
            self.sup.call("e", b"refuse")
            self.fail("the call did not fail")
        except Exception as e:  # noqa: BLE001 - its status is checked
            self.assertEqual(e.code, grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("not now", e.details)
        self.assertEqual(self.sup.call("e", b"incr"), b"4")
        w = self.sup.whereis("e")
        self.assertEqual((w.id, w.restarts), (c.id, 0))
        self.assertEqual(len(events("e", "init")), 1)

    def test_exception_in_cast_or_info_is_an_abnormal_exit(self):
        self.host()
        c = self.start(hosted("x", init=b"1"))
        self.sup.cast("x", b"incr")
        self.sup.cast("x", b"save")      # State "2" kept by the daemon
        self.sup.cast("x", b"incr")      # 3, never saved
        self.sup.cast("x", b"bug")
        w = h.wait_for(lambda: (lambda w: w if w.restarts == 1 and w.state == "RUNNING" else None)(
            self.sup.whereis("x")), 15, what="x to be restarted")
        self.assertNotEqual(w.id, c.id)
        # a crash hands off nothing: the new incarnation has the last State it sent
        self.assertEqual(self.sup.call("x", b"get"), b"2")
        inits = events("x", "init")
        self.assertEqual([(e[1], e[2]) for e in inits], [(b"1", b""), (b"1", b"2")])
        self.assertEqual(len(events("x", "terminate")), 1)  # terminate ran on the crash
        self.sup.send("x", b"bug")
        h.wait_for(lambda: self.sup.whereis("x").restarts == 2, 15, what="x to be restarted again")
        self.assertEqual(self.call_until("x", b"get"), b"2")

    def test_stop_abnormal_restarts_with_the_last_state(self):
        self.host()
        c = self.start(hosted("s", init=b"0"))
        for _ in range(3):
            self.sup.call("s", b"incr")
        self.assertEqual(self.sup.call("s", b"crash"), b"crashing")  # the reply comes first
        w = h.wait_for(lambda: (lambda w: w if w.restarts == 1 and w.state == "RUNNING" else None)(
            self.sup.whereis("s")), 15, what="s to be restarted")
        self.assertNotEqual(w.id, c.id)
        self.assertEqual(self.sup.call("s", b"get"), b"3")
        self.assertEqual(events("s", "init")[1][1:3], (b"0", b"3"))
        self.assertEqual(events("s", "terminate"), [("terminate", "asked to crash", 3)])

    def test_stop_normal_ends_a_transient_child(self):
        hst = self.host()
        self.start(hosted("n", restart="TRANSIENT"))
        with self.sup.watch(kinds=["process_stop", "process_restart"], timeout=15) as ev:
            self.assertEqual(self.sup.call("n", b"stop"), b"stopping")
            e = next(ev)
        self.assertEqual((e.kind, e.name), ("PROCESS_STOP", "n"))
        h.wait_for(lambda: hst.child_count == 0, 10, what="the host to forget the child")
        self.assertEqual(len(events("n", "init")), 1)

    def test_init_exception_is_an_abnormal_exit(self):
        self.host()
        with self.assertRaises(Exception) as cm:  # noqa: B017 - the start fails, whatever its status
            self.start(hosted("bad", init=b"fail-init", restart="TEMPORARY"))
        self.assertIn("ValueError", str(cm.exception))
        self.assertEqual(events("bad", "init")[0][1], b"fail-init")

    def test_terminate_child_runs_terminate_and_ends_the_child(self):
        hst = self.host()
        self.start(hosted("t", init=b"41"))
        self.assertEqual(self.sup.call("t", b"incr"), b"42")
        self.assertEqual(hst.child_count, 1)
        r = self.sup.terminate_child("t")
        self.assertEqual(r.name, "t")
        self.assertEqual(events("t", "terminate"), [("terminate", events("t", "terminate")[0][1], 42)])
        with self.assertRaises(NotFound):
            self.sup.whereis("t")
        with self.assertRaises(NotFound):
            self.sup.call("t", b"get")
        h.wait_for(lambda: hst.child_count == 0, 10, what="the host to forget the child")

    def test_drop_after_shutdown_ms_runs_nothing_more(self):
        hst = self.host()
        session = hst.session
        self.start(hosted("slow", init=b"999", shutdown_ms=200))
        self.start(hosted("other", init=b"1"))
        self.sup.terminate_child("slow")  # terminate sleeps 1.5 s: the daemon drops it
        h.wait_for(lambda: events("slow", "terminate-done"), 10, what="the slow terminate to end")
        time.sleep(0.3)  # what runs after terminate would have run by now
        # dropped while its terminate ran: nothing more of it runs (no get_state)
        self.assertEqual(events("slow", "get_state"), [])
        self.assertEqual(hst.session, session)
        self.assertEqual(hst.sessions, 1)
        self.assertEqual(self.sup.call("other", b"incr"), b"2")
        self.assertEqual(hst.child_count, 1)

    def test_one_message_at_a_time_in_order(self):
        self.host(workers=4)
        self.start(hosted("q"))
        for i in range(300):
            self.sup.cast("q", "add:%d" % i)
        self.assertEqual(self.sup.call("q", b"seen"), ",".join(str(i) for i in range(300)).encode())
        # concurrent calls to one child: its handler never runs twice at once
        self.parallel(lambda i: self.sup.call("q", b"slow:20"), range(16), threads=8)
        self.assertEqual(self.sup.call("q", b"overlaps"), b"0")

    def test_a_small_max_pending_holds_the_stream_back_and_loses_nothing(self):
        hst = self.host(workers=2, max_pending=3)
        names = ["b%d" % i for i in range(3)]
        for nm in names:
            self.start(hosted(nm))
        for i in range(150):
            for nm in names:
                self.sup.cast(nm, "slowadd:%d" % i)
        want = ",".join(str(i) for i in range(150)).encode()
        for nm in names:
            self.assertEqual(self.sup.call(nm, b"seen"), want)
        self.assertEqual(hst.sessions, 1)

    def test_different_children_run_concurrently(self):
        self.host(workers=4)
        names = ["m%d" % i for i in range(4)]
        for nm in names:
            self.start(hosted(nm))
        Probe.barrier = threading.Barrier(4, timeout=10)
        try:
            # each handler waits for the other three: only concurrent handlers meet
            out = self.parallel(lambda nm: self.sup.call(nm, b"barrier", timeout=15), names, threads=4)
        finally:
            Probe.barrier = None
        self.assertEqual(set(out.values()), {b"met"})

    def test_close_ends_the_session_and_a_new_host_gets_the_children(self):
        h1 = self.host(name="first")
        for nm in ("h1", "h2"):
            self.start(hosted(nm, init=b"5"))
        self.sup.cast("h1", b"incr")
        self.sup.cast("h1", b"save")
        self.assertEqual(self.sup.call("h1", b"get"), b"6")
        h1.close()
        self.assertEqual(h1.child_count, 0)
        self.assertFalse(h1.attached)
        h2 = self.host(name="second")
        self.assertEqual(self.call_until("h1", b"get"), b"6")
        self.assertEqual(self.call_until("h2", b"get"), b"5")
        self.assertEqual(h2.child_count, 2)

    def test_pings_keep_an_idle_host_attached(self):
        # a daemon that pings every 100 ms and gives up on a host silent for 500 ms
        d = self.daemon("fast", config="[daemon]\nhost_ping_ms = 100\nhost_timeout_ms = 500\n")
        hst = self.own(Host(d.addr, name="idle"))
        hst.register(KIND, Probe)
        hst.start()
        self.assertTrue(hst.wait_attached(10))
        session = hst.session
        with Supervisor(d.addr) as sup:
            sup.stub.StartChild(pb.StartChildRequest(spec=hosted("idle1", init=b"3")), timeout=15)
            time.sleep(2.0)  # four timeouts' worth of silence but for the pongs
            self.assertEqual(sup.call("idle1", b"get"), b"3")
            self.assertEqual(sup.whereis("idle1").restarts, 0)
        self.assertEqual((hst.session, hst.sessions), (session, 1))

    def test_token(self):
        tok = h.daemon.write_token(self.workdir, "s3cret-token")
        d = self.daemon("auth", args=["--api-token-file", tok])
        bad = self.own(Host(d.addr, name="no-token", token="wrong"))
        bad.register(KIND, Probe)
        bad.start()
        self.assertFalse(bad.wait_attached(1.5))
        bad.close()
        good = self.own(Host(d.addr, name="with-token", token_file=tok))
        good.register(KIND, Probe)
        good.start()
        self.assertTrue(good.wait_attached(10))
        with Supervisor(d.addr, token="s3cret-token") as sup:
            sup.stub.StartChild(pb.StartChildRequest(spec=hosted("tk", init=b"8")),
                                timeout=15, metadata=sup._md)
            self.assertEqual(sup.call("tk", b"get"), b"8")

    def test_capacity_goes_in_the_hello(self):
        hst = self.own(Host(self.d.addr, name="small"))
        hst.register(KIND, Probe, capacity=2)
        hst.start()
        self.assertTrue(hst.wait_attached(10))
        with self.assertRaises(RuntimeError):  # kinds are fixed once it runs
            hst.register("late", Probe)
        self.start(hosted("cap1"))
        self.start(hosted("cap2"))
        with self.assertRaises(grpc.RpcError) as cm:
            self.start(hosted("cap3"))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("capacity", cm.exception.details())
        self.sup.terminate_child("cap1")
        self.start(hosted("cap4"))  # room again
        self.assertEqual(hst.child_count, 2)

    def test_tls_and_mtls(self):
        P = h.daemon.make_pki(self.workdir)
        d = self.daemon("tls", args=["--tls-cert", P("server.pem"), "--tls-key", P("server.key"),
                                     "--tls-client-ca", P("ca.pem")])
        anon = self.own(Host(d.addr, name="no-cert", tls_ca_file=P("ca.pem")))
        anon.register(KIND, Probe)
        anon.start()
        self.assertFalse(anon.wait_attached(1.5))
        anon.close()
        hst = self.own(Host(d.addr, name="mtls", tls_ca_file=P("ca.pem"),
                            tls_cert_file=P("client.pem"), tls_key_file=P("client.key")))
        hst.register(KIND, Probe)
        hst.start()
        self.assertTrue(hst.wait_attached(10))
        with Supervisor(d.addr, tls_ca_file=P("ca.pem"), tls_cert_file=P("client.pem"),
                        tls_key_file=P("client.key")) as sup:
            sup.stub.StartChild(pb.StartChildRequest(spec=hosted("sec", init=b"4")), timeout=15)
            self.assertEqual(sup.call("sec", b"incr"), b"5")
        with self.assertRaises(ValueError):
            Host(d.addr, tls_cert_file=P("client.pem"))

    def test_garbage_from_a_host_is_refused_and_harms_no_one_else(self):
        good = self.host(name="good")
        session = good.session
        self.start(hosted("g1", init=b"1"))
        self.assertEqual(self.sup.call("g1", b"incr"), b"2")

        hello = pb.HostUp(hello=pb.HostHello(kinds=["junk"], name="garbage"))
        bad_ones = {
            "a frame for a child it was never given": [
                hello, pb.HostUp(frames=[pb.HostFrame(child=12345, frame=cpb.ChildFrame(
                    reply=cpb.Reply(ref=1, payload=b"x")))])],
            "a second hello": [hello, hello],
            "no hello first": [pb.HostUp(pong=pb.HostPong(seq=1))],
            "a frame only the daemon sends": [
                hello, pb.HostUp(frames=[pb.HostFrame(child=1, frame=cpb.ChildFrame(
                    call=cpb.CallFrame(ref=1)))])],
        }
        for what, msgs in bad_ones.items():
            with self.subTest(what):
                code, details = self.raw_host(msgs)
                self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, "%s: %s" % (what, details))
                self.assertTrue(details)
        # the well-behaved host is unharmed: same session, its child as it was
        self.assertEqual((good.session, good.sessions), (session, 1))
        self.assertEqual(self.sup.call("g1", b"incr"), b"3")
        self.assertEqual(self.sup.whereis("g1").restarts, 0)
        self.start(hosted("g2", init=b"9"))
        self.assertEqual(self.sup.call("g2", b"get"), b"9")

    def raw_host(self, msgs):
        """A Host stream that sends msgs (then waits for the daemon's answer): the status
        it ends with."""
        stop = threading.Event()

        def gen():
            for m in msgs:
                yield m
            stop.wait(20)  # keep the stream open until the daemon ends it

        call = self.sup.stub.Host(gen(), timeout=20)
        try:
            for _ in call:
                pass
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()
        finally:
            stop.set()
            call.cancel()


class HostUnitTest(h.DaemonTest):
    """What the library checks before it talks to a daemon."""

    def test_register_checks(self):
        hst = Host("127.0.0.1:1")
        self.addCleanup(hst.close)
        for bad in ("", "has space", "x" * 201, "ctl\x01"):
            with self.assertRaises(ValueError, msg=repr(bad)):
                hst.register(bad, Probe)
        with self.assertRaises(TypeError):
            hst.register("k")
        with self.assertRaises(TypeError):
            hst.register("k", Probe, on_call=print)
        with self.assertRaises(TypeError):
            hst.register("k", on_nothing=print)
        hst.register("k", Probe)
        with self.assertRaises(ValueError):
            hst.register("k", Probe)
        with self.assertRaises(RuntimeError):
            Host("127.0.0.1:1").run()  # no kinds
        with self.assertRaises(RuntimeError):
            Probe().stop()  # not under a Host

    def test_callbacks_form_against_a_daemon(self):
        d = self.daemon()
        hst = Host(d.addr, name="callbacks")
        hst.register("echo", on_call=lambda p: b"echo:" + p)
        self.addCleanup(hst.close)
        hst.start()
        self.assertTrue(hst.wait_attached(10))
        with Supervisor(d.addr) as sup:
            sup.stub.StartChild(pb.StartChildRequest(spec=hosted("e1", kind="echo")), timeout=15)
            self.assertEqual(sup.call("e1", b"hi"), b"echo:hi")
        hst.close()

    def test_frames_queued_together_travel_in_one_message(self):
        from distsup import host as hostmod
        s = hostmod._Session(None)
        f = [pb.HostFrame(child=i, frame=cpb.ChildFrame(ready=cpb.Ready())) for i in (1, 2, 3)]
        s.put([f[0]])
        s.put([f[1], f[2]])
        s.put(hostmod._Pong(4))
        s.put(hostmod._Pong(5))   # one pong a message: the second goes in the next
        s.close_out()
        ups = list(s.requests(pb.HostHello(kinds=["k"])))
        self.assertEqual([list(u.hello.kinds) for u in ups], [["k"], [], []])
        self.assertEqual([u.child for u in ups[1].frames], [1, 2, 3])
        self.assertEqual((ups[1].pong.seq, ups[2].pong.seq, len(ups[2].frames)), (4, 5, 0))
        n = len(s.out)
        s.put([f[0]])             # after the end: nothing more is queued
        self.assertEqual(len(s.out), n)


h.main() if __name__ == "__main__" else None
