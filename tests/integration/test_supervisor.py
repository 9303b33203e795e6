"""distsupd on one host, driven through grpcio: the Supervisor API end to end."""

import os
import signal
import sqlite3
import threading
import time

import grpc

from harness import COUNTER, DaemonTest, main, pb, pbg, pid_alive, wait_for

SC = grpc.StatusCode


def spec(name="", argv=None, **kw):
    return pb.ChildSpec(name=name, argv=argv or [COUNTER], **kw)


def sh(script, name="", **kw):
    return pb.ChildSpec(name=name, argv=["/bin/sh", "-c", script], protocol=pb.NONE, **kw)


class Watcher:
    """Collects a Watch stream's events in a thread."""

    def __init__(self, stub, **req):
        self.events = []
        self.call = stub.Watch(pb.WatchRequest(**req))
        self.call.initial_metadata()  # the daemon sends it as it subscribes: events from here on arrive
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for ev in self.call:
                self.events.append(ev)
        except grpc.RpcError:
            pass

    def kinds(self, name=None):
        return [pb.EventKind.Name(e.kind) for e in self.events if name is None or e.name == name]

    def close(self):
        self.call.cancel()
        self.thread.join(5)


class SupervisorTest(DaemonTest):
    def test_start_call_cast_send_children_count_terminate(self):
        d = self.daemon()
        s = d.stub
        r = s.StartChild(pb.StartChildRequest(spec=spec("c1", init=b"41")))
        self.assertEqual(r.child.name, "c1")
        self.assertEqual(r.child.state, pb.RUNNING)
        self.assertTrue(r.child.os_pid > 0 and pid_alive(r.child.os_pid))
        self.assertTrue(r.child.node and r.child.id)
        w = s.WhereIs(pb.WhereIsRequest(name="c1")).child
        self.assertEqual((w.os_pid, w.id), (r.child.os_pid, r.child.id))
        self.assertEqual(s.WhoIs(pb.WhoIsRequest(id=r.child.id)).name, "c1")
        self.assertEqual(s.Call(pb.CallRequest(name="c1", payload=b"incr")).payload, b"42")
        s.Cast(pb.CastRequest(name="c1", payload=b"incr"))
        s.Send(pb.SendRequest(name="c1", payload=b"incr"))
        self.assertEqual(s.Call(pb.CallRequest(name="c1", payload=b"get")).payload, b"44")
        s.StartChild(pb.StartChildRequest(spec=spec("c2")))
        names = [c.name for c in s.Children(pb.ChildrenRequest()).children]
        self.assertEqual(names, ["c1", "c2"])
        cnt = s.CountChildren(pb.CountChildrenRequest())
        self.assertEqual((cnt.specs, cnt.active, cnt.workers, cnt.supervisors), (2, 2, 2, 0))
        t = s.TerminateChild(pb.TerminateChildRequest(name="c1"))
        self.assertEqual((t.name, t.exit_code, t.signal), ("c1", 0, 0))
        wait_for(lambda: not pid_alive(r.child.os_pid), what="c1's process to be gone")
        self.assertCode(SC.NOT_FOUND, s.WhereIs, pb.WhereIsRequest(name="c1"))
        self.assertEqual(s.CountChildren(pb.CountChildrenRequest()).specs, 1)
        # by id too
        c2 = s.WhereIs(pb.WhereIsRequest(name="c2")).child
        s.TerminateChild(pb.TerminateChildRequest(id=c2.id))
        self.assertEqual(len(s.Children(pb.ChildrenRequest()).children), 0)

    def test_nodes_node_for_mine_on_one_node(self):
        d = self.daemon(args=["--node-name", "alpha@test"])
        nodes = d.stub.Nodes(pb.NodesRequest()).nodes
        self.assertEqual([(n.name, n.up, n.self) for n in nodes], [("alpha@test", True, True)])
        self.assertEqual(d.stub.NodeFor(pb.NodeForRequest(key="k")).node, "alpha@test")
        m = d.stub.Mine(pb.MineRequest(key="k"))
        self.assertEqual((m.mine, m.node), (True, "alpha@test"))
        self.assertCode(SC.INVALID_ARGUMENT, d.stub.NodeFor, pb.NodeForRequest(key=""))
        self.assertCode(SC.UNAVAILABLE, d.stub.StartChild,
                        pb.StartChildRequest(spec=spec("x"), node="beta@test"))

    def test_generated_names_are_unique(self):
        d = self.daemon()
        names = {d.stub.StartChild(pb.StartChildRequest(spec=spec())).child.name for _ in range(5)}
        self.assertEqual(len(names), 5)
        for n in names:
            self.assertEqual(d.stub.Call(pb.CallRequest(name=n, payload=b"get")).payload, b"0")

    def test_duplicate_name_is_already_exists_and_says_where(self):
        d = self.daemon(args=["--node-name", "n1@here"])
        first = d.stub.StartChild(pb.StartChildRequest(spec=spec("dup"))).child
        msg = self.assertCode(SC.ALREADY_EXISTS, d.stub.StartChild, pb.StartChildRequest(spec=spec("dup")))
        self.assertIn("n1@here", msg)
        self.assertIn(str(first.os_pid), msg)
        self.assertEqual(d.stub.WhereIs(pb.WhereIsRequest(name="dup")).child.os_pid, first.os_pid)

    def test_crash_restarts_with_new_pid_same_name(self):
        d = self.daemon()
        w = Watcher(d.stub)
        old = d.stub.StartChild(pb.StartChildRequest(spec=spec("crashy", init=b"7"))).child
        self.assertCode(SC.UNAVAILABLE, d.stub.Call, pb.CallRequest(name="crashy", payload=b"crash"))
        new = wait_for(lambda: (lambda c: c if c.state == pb.RUNNING and c.os_pid != old.os_pid else None)(
            d.stub.WhereIs(pb.WhereIsRequest(name="crashy")).child), what="restart")
        self.assertEqual(new.name, "crashy")
        self.assertEqual(new.restarts, 1)
        self.assertNotEqual(new.id, old.id)
        self.assertEqual(d.stub.Call(pb.CallRequest(name="crashy", payload=b"get")).payload, b"7")
        wait_for(lambda: w.kinds("crashy") == ["PROCESS_START", "PROCESS_RESTART", "PROCESS_START"],
                 what="events")
        restart = [e for e in w.events if e.kind == pb.PROCESS_RESTART][0]
        self.assertEqual(restart.exit_code, 1)
        w.close()

    def test_transient_exit_zero_is_not_restarted_but_crash_is(self):
        d = self.daemon()
        w = Watcher(d.stub)
        d.stub.StartChild(pb.StartChildRequest(spec=sh("sleep 0.2; exit 0", "t0", restart=pb.TRANSIENT)))
        d.stub.StartChild(pb.StartChildRequest(spec=sh("sleep 0.2; exit 2", "t2", restart=pb.TRANSIENT)))
        wait_for(lambda: "PROCESS_STOP" in w.kinds("t0"), what="t0 stop")
        self.assertCode(SC.NOT_FOUND, d.stub.WhereIs, pb.WhereIsRequest(name="t0"))
        wait_for(lambda: "PROCESS_RESTART" in w.kinds("t2"), what="t2 restart")
        self.assertEqual(w.kinds("t0"), ["PROCESS_START", "PROCESS_STOP"])
        w.close()

    def test_temporary_is_never_restarted(self):
        d = self.daemon()
        w = Watcher(d.stub)
        d.stub.StartChild(pb.StartChildRequest(spec=sh("sleep 0.1; exit 5", "tmp", restart=pb.TEMPORARY)))
        wait_for(lambda: "PROCESS_STOP" in w.kinds("tmp"), what="tmp stop")
        time.sleep(0.3)
        self.assertEqual(w.kinds("tmp"), ["PROCESS_START", "PROCESS_STOP"])
        self.assertEqual(w.events[-1].exit_code, 5)
        self.assertCode(SC.NOT_FOUND, d.stub.WhereIs, pb.WhereIsRequest(name="tmp"))
        w.close()

    def test_child_ignoring_sigterm_is_killed_after_shutdown_ms(self):
        d = self.daemon()
        c = d.stub.StartChild(pb.StartChildRequest(spec=sh(
            "trap '' TERM; echo trap-set >&2; while :; do sleep 0.05; done", "stubborn",
            shutdown_ms=400))).child
        # SIGTERM must not arrive before the shell has installed its trap.
        wait_for(lambda: "stubborn: trap-set" in d.read_log(), what="the child's trap")
        t0 = time.monotonic()
        r = d.stub.TerminateChild(pb.TerminateChildRequest(name="stubborn"))
        self.assertGreaterEqual(time.monotonic() - t0, 0.35)
        self.assertEqual((r.exit_code, r.signal), (-1, signal.SIGKILL))
        self.assertFalse(pid_alive(c.os_pid))
        self.assertIn("did not stop within shutdown_ms=400", d.read_log())

    def test_kill_immediately(self):
        d = self.daemon()
        d.stub.StartChild(pb.StartChildRequest(spec=sh("sleep 30", "k", kill_immediately=True)))
        r = d.stub.TerminateChild(pb.TerminateChildRequest(name="k"))
        self.assertEqual(r.signal, signal.SIGKILL)

    def test_restart_bound_reached_then_failed_event(self):
        d = self.daemon()
        w = Watcher(d.stub)
        d.stub.StartChild(pb.StartChildRequest(spec=sh("exit 3", "flappy")))
        wait_for(lambda: "PROCESS_FAILED" in w.kinds("flappy"), what="failed event")
        self.assertEqual(w.kinds("flappy"), ["PROCESS_START", "PROCESS_RESTART"] * 3 +
                         ["PROCESS_START", "PROCESS_FAILED"])
        failed = w.events[-1]
        self.assertIn("restart bound", failed.reason)
        c = d.stub.WhereIs(pb.WhereIsRequest(name="flappy")).child
        self.assertEqual((c.state, c.os_pid, c.restarts), (pb.FAILED, 0, 3))
        self.assertEqual(d.stub.CountChildren(pb.CountChildrenRequest()).failed, 1)
        time.sleep(0.5)  # nothing spins: no more events
        self.assertEqual(len(w.kinds("flappy")), 8)
        d.stub.TerminateChild(pb.TerminateChildRequest(name="flappy"))
        self.assertCode(SC.NOT_FOUND, d.stub.WhereIs, pb.WhereIsRequest(name="flappy"))
        w.close()

    def test_call_timeout_while_other_calls_proceed(self):
        d = self.daemon()
        d.stub.StartChild(pb.StartChildRequest(spec=spec("slow")))
        d.stub.StartChild(pb.StartChildRequest(spec=spec("fast")))
        done = []

        def others():
            for _ in range(50):
                done.append(d.stub.Call(pb.CallRequest(name="fast", payload=b"incr")).payload)

        th = threading.Thread(target=others)
        t0 = time.monotonic()
        fut = d.stub.Call.future(pb.CallRequest(name="slow", payload=b"sleep:3000", timeout_ms=1500))
        th.start()
        th.join(10)
        self.assertEqual(len(done), 50)
        self.assertFalse(fut.done(), "the slow call should still be waiting while 50 others finished")
        with self.assertRaises(grpc.RpcError) as cm:
            fut.result()
        self.assertEqual(cm.exception.code(), SC.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - t0, 3.0)
        # the client's own deadline counts too
        self.assertCode(SC.DEADLINE_EXCEEDED, d.stub.Call,
                        pb.CallRequest(name="fast", payload=b"sleep:2000"), timeout=0.3)

    def test_child_error_reply_maps_to_status(self):
        d = self.daemon()
        d.stub.StartChild(pb.StartChildRequest(spec=spec("c")))
        msg = self.assertCode(SC.INVALID_ARGUMENT, d.stub.Call, pb.CallRequest(name="c", payload=b"what"))
        self.assertIn("unknown request", msg)

    def test_bad_requests_are_invalid_argument_and_daemon_stays_up(self):
        d = self.daemon()
        raw = d.channel.unary_unary("/distsup.v1.Supervisor/StartChild",
                                    request_serializer=lambda b: b, response_deserializer=lambda b: b)
        msg = self.assertCode(SC.INVALID_ARGUMENT, raw, b"\xff\xff\xff\xff garbage")
        self.assertIn("malformed", msg)
        self.assertCode(SC.INVALID_ARGUMENT, raw, b"\x12\x05\x0a")  # truncated field
        self.assertCode(SC.INVALID_ARGUMENT, d.stub.StartChild, pb.StartChildRequest())
        self.assertIn("argv", self.assertCode(SC.INVALID_ARGUMENT, d.stub.StartChild,
                                              pb.StartChildRequest(spec=pb.ChildSpec(name="x"))))
        self.assertCode(SC.INVALID_ARGUMENT, d.stub.StartChild,
                        pb.StartChildRequest(spec=spec("has space")))
        self.assertCode(SC.INVALID_ARGUMENT, d.stub.StartChild,
                        pb.StartChildRequest(spec=spec("e", env={"A=B": "1"})))
        self.assertIn("not an executable", self.assertCode(
            SC.FAILED_PRECONDITION, d.stub.StartChild,
            pb.StartChildRequest(spec=spec("nx", argv=["no-such-program-xyz"]))))
        self.assertCode(SC.FAILED_PRECONDITION, d.stub.StartChild,
                        pb.StartChildRequest(spec=spec("nx2", argv=["/nonexistent/prog"])))
        d.stub.StartChild(pb.StartChildRequest(spec=spec("c")))
        big = b"x" * (5 * 1024 * 1024)
        self.assertIn("limit", self.assertCode(SC.INVALID_ARGUMENT, d.stub.Call,
                                               pb.CallRequest(name="c", payload=big)))
        self.assertCode(SC.INVALID_ARGUMENT, d.stub.Cast, pb.CastRequest(name="c", payload=big))
        self.assertCode(SC.INVALID_ARGUMENT, d.stub.StartChild,
                        pb.StartChildRequest(spec=spec("bigi", init=big)))
        huge = b"x" * (40 * 1024 * 1024)
        self.assertCode(SC.RESOURCE_EXHAUSTED, d.stub.Call, pb.CallRequest(name="c", payload=huge))
        self.assertCode(SC.NOT_FOUND, d.stub.Call, pb.CallRequest(name="nobody", payload=b"get"))
        self.assertCode(SC.NOT_FOUND, d.stub.Children, pb.ChildrenRequest(supervisor="nosuch"))
        self.assertCode(SC.INVALID_ARGUMENT, d.stub.Call, pb.CallRequest(name="", payload=b"get"))
        unknown = d.channel.unary_unary("/distsup.v1.Supervisor/Nope")
        self.assertCode(SC.UNIMPLEMENTED, unknown, b"")
        # still serving, nothing changed
        self.assertEqual(d.stub.Call(pb.CallRequest(name="c", payload=b"get")).payload, b"0")
        self.assertEqual([c.name for c in d.stub.Children(pb.ChildrenRequest()).children], ["c"])

    def test_protocol_none_child_refuses_calls(self):
        d = self.daemon()
        d.stub.StartChild(pb.StartChildRequest(spec=sh("sleep 30", "plain")))
        self.assertIn("NONE", self.assertCode(SC.FAILED_PRECONDITION, d.stub.Call,
                                              pb.CallRequest(name="plain", payload=b"x")))
        self.assertCode(SC.FAILED_PRECONDITION, d.stub.Cast, pb.CastRequest(name="plain", payload=b"x"))
        self.assertCode(SC.FAILED_PRECONDITION, d.stub.Send, pb.SendRequest(name="plain", payload=b"x"))

    def test_frames_child_that_never_says_ready(self):
        d = self.daemon(config="[supervisor:default]\nstart_timeout_ms = 500\n")
        msg = self.assertCode(SC.DEADLINE_EXCEEDED, d.stub.StartChild,
                              pb.StartChildRequest(spec=pb.ChildSpec(name="mute", argv=["/bin/sleep", "30"])))
        self.assertIn("Ready", msg)
        self.assertCode(SC.NOT_FOUND, d.stub.WhereIs, pb.WhereIsRequest(name="mute"))

    def test_child_writing_garbage_is_killed_and_daemon_keeps_serving(self):
        d = self.daemon()
        w = Watcher(d.stub)
        d.stub.StartChild(pb.StartChildRequest(spec=spec("ok")))
        # a FRAMES child that prints text: the "length" is huge -> protocol error
        self.assertCode(SC.FAILED_PRECONDITION, d.stub.StartChild, pb.StartChildRequest(
            spec=pb.ChildSpec(name="chatty", argv=["/bin/sh", "-c", "yes garbage-garbage"])))
        self.assertIn("protocol error", d.read_log())
        self.assertEqual(d.stub.Call(pb.CallRequest(name="ok", payload=b"incr")).payload, b"1")
        w.close()

    def test_child_flooding_stderr_and_stdout_does_not_stall_daemon(self):
        d = self.daemon()
        d.stub.StartChild(pb.StartChildRequest(spec=spec("ok")))
        d.stub.StartChild(pb.StartChildRequest(spec=sh("yes flood-stderr >&2", "flood1")))
        d.stub.StartChild(pb.StartChildRequest(spec=sh("yes flood-stdout", "flood2")))
        t0 = time.monotonic()
        for i in range(200):
            self.assertEqual(d.stub.Call(pb.CallRequest(name="ok", payload=b"incr")).payload, str(i + 1).encode())
        self.assertLess(time.monotonic() - t0, 20)
        wait_for(lambda: "log lines dropped" in d.read_log(), what="dropped-lines notice")
        for n in ("flood1", "flood2"):
            self.assertEqual(d.stub.WhereIs(pb.WhereIsRequest(name=n)).child.state, pb.RUNNING)
            d.stub.TerminateChild(pb.TerminateChildRequest(name=n))

    def test_mailbox_full_is_resource_exhausted(self):
        d = self.daemon(config="[supervisor:default]\nmailbox = 2\n")
        d.stub.StartChild(pb.StartChildRequest(spec=spec("busy")))
        futs = [d.stub.Call.future(pb.CallRequest(name="busy", payload=b"sleep:800")) for _ in range(2)]
        time.sleep(0.2)
        msg = self.assertCode(SC.RESOURCE_EXHAUSTED, d.stub.Call, pb.CallRequest(name="busy", payload=b"get"))
        self.assertIn("mailbox", msg)
        self.assertEqual([f.result().payload for f in futs], [b"slept", b"slept"])
        self.assertEqual(d.stub.Call(pb.CallRequest(name="busy", payload=b"get")).payload, b"0")

    def test_spec_is_on_disk_when_start_child_answers(self):
        d = self.daemon()
        d.stub.StartChild(pb.StartChildRequest(spec=spec("durable", init=b"5", labels={"team": "a"})))
        db = sqlite3.connect(os.path.join(d.data_dir, "distsup.db"))
        rows = db.execute("SELECT supervisor, name, spec FROM children").fetchall()
        db.close()
        self.assertEqual([(r[0], r[1]) for r in rows], [("default", "durable")])
        stored = pb.ChildSpec.FromString(rows[0][2])
        self.assertEqual((stored.init, dict(stored.labels), list(stored.argv)), (b"5", {"team": "a"}, [COUNTER]))

    def test_children_are_off_disk_when_terminate_child_answers(self):
        # The removals of one reactor turn are committed together, then answered: each
        # answer finds its row gone, a running child's and a FAILED one's alike.
        d = self.daemon()
        names = ["t%02d" % i for i in range(40)]
        for n in names:
            d.stub.StartChild(pb.StartChildRequest(spec=spec(n)))
        d.stub.StartChild(pb.StartChildRequest(spec=sh("exit 1", "bad")))
        wait_for(lambda: d.stub.WhereIs(pb.WhereIsRequest(name="bad")).child.state == pb.FAILED, what="failed")
        db = sqlite3.connect(os.path.join(d.data_dir, "distsup.db"))
        rows = lambda: {r[0] for r in db.execute("SELECT name FROM children").fetchall()}  # noqa: E731
        self.assertEqual(rows(), set(names) | {"bad"})
        futs = [(n, d.stub.TerminateChild.future(pb.TerminateChildRequest(name=n))) for n in names + ["bad"]]
        for n, f in futs:
            self.assertEqual(f.result(timeout=30).name, n)
            self.assertNotIn(n, rows(), "%s answered before its removal was on disk" % n)
        db.close()
        d.kill9()
        d2 = self.daemon("d", start=False)
        d2.data_dir = d.data_dir
        d2.start()
        self.assertEqual(list(d2.stub.Children(pb.ChildrenRequest()).children), [])

    def test_kill9_then_restart_restores_children(self):
        d = self.daemon()
        pids = {}
        for n in ("p1", "p2", "p3"):
            pids[n] = d.stub.StartChild(pb.StartChildRequest(spec=spec(n, init=b"10"))).child.os_pid
        pids["tr"] = d.stub.StartChild(pb.StartChildRequest(spec=spec("tr", restart=pb.TRANSIENT))).child.os_pid
        pids["te"] = d.stub.StartChild(pb.StartChildRequest(spec=spec("te", restart=pb.TEMPORARY))).child.os_pid
        d.stub.StartChild(pb.StartChildRequest(spec=sh("exit 1", "bad")))  # will be FAILED
        wait_for(lambda: d.stub.WhereIs(pb.WhereIsRequest(name="bad")).child.state == pb.FAILED, what="failed")
        d.kill9()
        # children die with their sidecar
        wait_for(lambda: not any(pid_alive(p) for p in pids.values()), what="children to die with the daemon")
        d2 = self.daemon("d", start=False)
        d2.data_dir = d.data_dir
        d2.start()
        kids = {c.name: c for c in d2.stub.Children(pb.ChildrenRequest()).children}
        self.assertEqual(sorted(kids), ["bad", "p1", "p2", "p3", "tr"])
        self.assertEqual(kids["bad"].state, pb.FAILED)
        for n in ("p1", "p2", "p3", "tr"):
            c = wait_for(lambda: (lambda c: c if c.state == pb.RUNNING else None)(
                d2.stub.WhereIs(pb.WhereIsRequest(name=n)).child), what=n)
            self.assertNotEqual(c.os_pid, pids[n])
            self.assertEqual(list(c.spec.argv), [COUNTER])
        self.assertEqual(d2.stub.Call(pb.CallRequest(name="p1", payload=b"get")).payload, b"10")
        self.assertEqual(kids["tr"].spec.restart, pb.TRANSIENT)

    def test_sigterm_stops_children_and_exits_zero(self):
        d = self.daemon()
        c = d.stub.StartChild(pb.StartChildRequest(spec=spec("a"))).child
        p = d.stub.StartChild(pb.StartChildRequest(spec=sh("sleep 60", "b"))).child
        self.assertEqual(d.stop(signal.SIGTERM), 0)
        self.assertFalse(pid_alive(c.os_pid))
        self.assertFalse(pid_alive(p.os_pid))
        self.assertIn("stopped cleanly", d.read_log())
        # specs survive a clean stop too
        d2 = self.daemon("d", start=False)
        d2.data_dir = d.data_dir
        d2.start()
        self.assertEqual(sorted(c.name for c in d2.stub.Children(pb.ChildrenRequest()).children), ["a", "b"])

    def test_named_supervisors_from_config(self):
        d = self.daemon(config="[supervisor:jobs]\nmax_restarts = 0\n")
        d.stub.StartChild(pb.StartChildRequest(supervisor="jobs", spec=sh("exit 1", "once")))
        wait_for(lambda: d.stub.WhereIs(pb.WhereIsRequest(supervisor="jobs", name="once")).child.state == pb.FAILED,
                 what="no restart allowed in jobs")
        self.assertEqual(len(d.stub.Children(pb.ChildrenRequest()).children), 0)
        d.stub.StartChild(pb.StartChildRequest(spec=spec("once")))  # same name, other supervisor
        self.assertEqual(len(d.stub.Children(pb.ChildrenRequest(supervisor="jobs")).children), 1)

    def test_watch_sees_events_in_order(self):
        d = self.daemon()
        w = Watcher(d.stub)
        wall = Watcher(d.stub, supervisor="*", kinds=[pb.PROCESS_STOP])
        time.sleep(0.2)
        d.stub.StartChild(pb.StartChildRequest(spec=spec("ev")))
        self.assertCode(SC.UNAVAILABLE, d.stub.Call, pb.CallRequest(name="ev", payload=b"crash"))
        wait_for(lambda: d.stub.WhereIs(pb.WhereIsRequest(name="ev")).child.state == pb.RUNNING, what="restart")
        d.stub.TerminateChild(pb.TerminateChildRequest(name="ev"))
        wait_for(lambda: len(w.events) >= 4, what="4 events")
        self.assertEqual(w.kinds(), ["PROCESS_START", "PROCESS_RESTART", "PROCESS_START", "PROCESS_STOP"])
        seqs = [e.seq for e in w.events]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(len(set(seqs)), 4)
        wait_for(lambda: wall.kinds() == ["PROCESS_STOP"], what="filtered watch")
        self.assertCode(SC.NOT_FOUND, lambda: list(d.stub.Watch(pb.WatchRequest(supervisor="nosuch"))))
        w.close()
        wall.close()

    def test_slow_watch_subscriber_is_dropped_not_waited_for(self):
        # The restart window is an hour, so each child reaches its bound however slowly
        # this machine restarts it (a 5 s window may never hold 40 restarts under load).
        d = self.daemon(config="[supervisor:default]\nwatch_queue = 5\nmax_restarts = 40\nmax_seconds = 3600\n"
                               "restart_backoff_ms = 0\nrestart_backoff_max_ms = 0\n")
        # A reader that stops reading: with BDP probing off, HTTP/2 flow control holds its
        # window at 64 KiB, so the daemon's sends to it stall and its queue overflows.  The
        # deadline keeps this test from hanging if the daemon never drops it.
        ch = grpc.insecure_channel(d.addr, options=[("grpc.http2.bdp_probe", 0)])
        it = pbg.SupervisorStub(ch).Watch(pb.WatchRequest(), timeout=60)
        d.stub.StartChild(pb.StartChildRequest(spec=sh("exit 1", "storm")))
        first = next(it)
        self.assertEqual(first.kind, pb.PROCESS_START)
        # ~700 events of ~250 bytes: far more than 64 KiB.
        names = ["storm%d-" % i + "x" * 190 for i in range(8)]
        for n in names:
            d.stub.StartChild(pb.StartChildRequest(spec=sh("exit 1", n)))
        for n in names + ["storm"]:
            wait_for(lambda: d.stub.WhereIs(pb.WhereIsRequest(name=n)).child.state == pb.FAILED,
                     timeout=30, what="storm to end")
        got = 1
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in range(100000):
                next(it)
                got += 1
        self.assertEqual(cm.exception.code(), SC.RESOURCE_EXHAUSTED)
        self.assertLess(got, 1600, "the subscriber should have been dropped before the end")
        self.assertTrue("dropping a Watch subscriber" in d.read_log(), "no drop notice in the log")
        # The daemon kept going: every event was still published to a fresh subscriber.
        self.assertEqual(d.stub.Nodes(pb.NodesRequest()).nodes[0].up, True)
        ch.close()

if __name__ == "__main__":
    main()
