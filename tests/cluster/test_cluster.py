"""The cluster: several real distsupd on loopback, real workers, grpcio clients."""

import collections
import json
import os
import signal
import socket
import subprocess
import threading
import time

import grpc

from cluster import Callers, ClusterTest, main, pb, spec, wait_for

import daemon  # the shared harness (tests/harness), on the path since cluster's import

SC = grpc.StatusCode


class Watcher:
    def __init__(self, stub, **req):
        self.events = []
        self.call = stub.Watch(pb.WatchRequest(**req))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for ev in self.call:
                self.events.append(ev)
        except grpc.RpcError:
            pass

    def of(self, kind):
        return [e for e in self.events if e.kind == kind]

    def close(self):
        self.call.cancel()
        self.thread.join(5)


class ClusterFormation(ClusterTest):
    def test_forms_from_one_seed_and_every_node_agrees(self):
        nodes = self.make_cluster(3)
        names = [n.node_name for n in nodes]
        for n in nodes:
            listed = n.stub.Nodes(pb.NodesRequest()).nodes
            self.assertEqual([x.name for x in listed], sorted(names))
            self.assertTrue(all(x.up for x in listed))
            self.assertEqual([x.name for x in listed if x.self], [n.node_name])
        # n3 was only given n1 as a seed: it learned n2 from n1
        self.assertIn("learned of node", nodes[2].read_log() + nodes[1].read_log())
        keys = ["key-%d" % i for i in range(60)]
        answers = [[n.stub.NodeFor(pb.NodeForRequest(key=k)).node for k in keys] for n in nodes]
        self.assertEqual(answers[0], answers[1])
        self.assertEqual(answers[0], answers[2])
        self.assertEqual(set(answers[0]), set(names), "60 keys should land on all 3 nodes")
        for k, owner in zip(keys, answers[0]):
            mine = [n.node_name for n in nodes if n.stub.Mine(pb.MineRequest(key=k)).mine]
            self.assertEqual(mine, [owner])

    def test_node_events_on_watch(self):
        nodes = self.make_cluster(3)
        w = Watcher(nodes[0].stub, kinds=[pb.NODE_UP, pb.NODE_DOWN, pb.NODE_TERMINATE])
        time.sleep(0.3)
        nodes[2].kill9()
        wait_for(lambda: w.of(pb.NODE_DOWN), what="NODE_DOWN")
        self.assertEqual(w.of(pb.NODE_DOWN)[0].node, "n3@test")
        nodes[2].start()
        wait_for(lambda: w.of(pb.NODE_UP), what="NODE_UP")
        self.assertEqual(w.of(pb.NODE_UP)[0].node, "n3@test")
        self.assertEqual(nodes[1].stop(signal.SIGTERM), 0)
        wait_for(lambda: w.of(pb.NODE_TERMINATE), what="NODE_TERMINATE (a clean leave)")
        self.assertEqual(w.of(pb.NODE_TERMINATE)[0].node, "n2@test")
        self.assertEqual(len(w.of(pb.NODE_DOWN)), 1, "a clean leave is not a NODE_DOWN")
        w.close()


class ClusterRegistry(ClusterTest):
    def test_300_children_spread_and_every_node_finds_and_calls_them(self):
        nodes = self.make_cluster(3)
        names = ["w%03d" % i for i in range(300)]
        for i, n in enumerate(names):
            c = nodes[0].stub.StartChild(pb.StartChildRequest(spec=spec(n, init=str(i).encode()))).child
            self.assertEqual(c.state, pb.RUNNING)
        self.wait_synced(nodes, 300)
        per_node = collections.Counter(c.node for c in nodes[0].children().values())
        for n in nodes:
            share = per_node[n.node_name] / 300
            self.assertTrue(0.20 <= share <= 0.45, "node %s has %.0f%% of the children: %s" %
                            (n.node_name, 100 * share, dict(per_node)))
        views = [n.children() for n in nodes]
        for name in names:
            where = {n.stub.WhereIs(pb.WhereIsRequest(name=name)).child.node for n in nodes}
            self.assertEqual(len(where), 1)
            self.assertEqual(where, {views[0][name].node})
        for n in nodes:
            for i, name in enumerate(names):
                r = n.stub.Call(pb.CallRequest(name=name, payload=b"get"))
                self.assertEqual(r.payload, str(i).encode())
                self.assertEqual(r.node, views[0][name].node)
        cnt = [n.stub.CountChildren(pb.CountChildrenRequest()) for n in nodes]
        self.assertEqual({(x.specs, x.active) for x in cnt}, {(300, 300)})
        only = nodes[1].stub.Children(pb.ChildrenRequest(node=nodes[2].node_name)).children
        self.assertEqual(len(only), per_node[nodes[2].node_name])
        # one process per name, cluster-wide
        copies = self.running_copies(set(names))
        self.assertEqual(len(copies), 300)
        self.assertTrue(all(len(p) == 1 for p in copies.values()))

    def test_cast_send_terminate_whois_reach_any_node(self):
        nodes = self.make_cluster(3)
        for i in range(12):
            nodes[0].stub.StartChild(pb.StartChildRequest(spec=spec("x%d" % i)))
        self.wait_synced(nodes, 12)
        for i in range(12):
            via = nodes[i % 3].stub
            via.Cast(pb.CastRequest(name="x%d" % i, payload=b"incr"))
            via.Send(pb.SendRequest(name="x%d" % i, payload=b"incr"))
            self.assertEqual(via.Call(pb.CallRequest(name="x%d" % i, payload=b"get")).payload, b"2")
            info = via.WhereIs(pb.WhereIsRequest(name="x%d" % i)).child
            self.assertEqual(nodes[(i + 1) % 3].stub.WhoIs(pb.WhoIsRequest(id=info.id)).name, "x%d" % i)
        # terminate from a node that does not run it
        c = nodes[0].children()["x5"]
        other = next(n for n in nodes if n.node_name != c.node)
        other.stub.TerminateChild(pb.TerminateChildRequest(name="x5"))
        for n in nodes:
            wait_for(lambda: "x5" not in n.children(), what="x5 gone everywhere")
        self.assertEqual(self.running_copies({"x5"}), {})
        # errors from afar are the same errors
        err = self.assertCode(SC.ALREADY_EXISTS, other.stub.StartChild, pb.StartChildRequest(spec=spec("x3")))
        self.assertIn(nodes[0].children()["x3"].node, err)
        self.assertCode(SC.NOT_FOUND, other.stub.Call, pb.CallRequest(name="nobody", payload=b"get"))
        target = nodes[0].children()["x4"].node
        far = next(n for n in nodes if n.node_name != target)
        self.assertCode(SC.DEADLINE_EXCEEDED, far.stub.Call,
                        pb.CallRequest(name="x4", payload=b"sleep:3000", timeout_ms=300))
        self.assertCode(SC.INVALID_ARGUMENT, far.stub.Call, pb.CallRequest(name="x4", payload=b"bogus"))
        # explicit node: there, or UNAVAILABLE
        c = nodes[1].stub.StartChild(pb.StartChildRequest(spec=spec("pinned"), node="n3@test")).child
        self.assertEqual(c.node, "n3@test")
        self.assertCode(SC.UNAVAILABLE, nodes[1].stub.StartChild,
                        pb.StartChildRequest(spec=spec("nowhere"), node="n9@test"))

    def test_trace_context_travels_with_forwarded_messages(self):
        nodes = self.make_cluster(2)
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        tp2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        for n in nodes:  # one child pinned to each node
            nodes[0].stub.StartChild(pb.StartChildRequest(spec=spec("t-" + n.node_name), node=n.node_name))
        self.wait_synced(nodes, 2)
        md = (("traceparent", tp), ("tracestate", "congo=t61rcWkgMzE"))
        for via in nodes:
            for n in nodes:  # local and forwarded
                name = "t-" + n.node_name
                r = via.stub.Call(pb.CallRequest(name=name, payload=b"trace"), metadata=md, timeout=10)
                self.assertEqual(r.payload, (tp + ";congo=t61rcWkgMzE").encode(), (via.node_name, name))
                self.assertEqual(r.node, n.node_name)
                via.stub.Cast(pb.CastRequest(name=name, payload=b"incr"), metadata=(("traceparent", tp2),))
                self.assertEqual(via.stub.Call(pb.CallRequest(name=name, payload=b"lasttrace")).payload,
                                 (tp2 + ";").encode())
                via.stub.Send(pb.SendRequest(name=name, payload=b"incr", traceparent=tp))
                self.assertEqual(via.stub.Call(pb.CallRequest(name=name, payload=b"lasttrace")).payload,
                                 (tp + ";").encode())
                # invalid: dropped, through forwarding too
                bad = (("traceparent", tp.upper()), ("tracestate", "a=1"))
                r = via.stub.Call(pb.CallRequest(name=name, payload=b"trace"), metadata=bad, timeout=10)
                self.assertEqual(r.payload, b";")
                via.stub.Cast(pb.CastRequest(name=name, payload=b"incr", traceparent="00-zz"))
                self.assertEqual(via.stub.Call(pb.CallRequest(name=name, payload=b"lasttrace")).payload, b";")
                self.assertEqual(via.stub.Call(pb.CallRequest(name=name, payload=b"trace")).payload, b";")
        # the node that runs a child counts what it delivered: 9 messages from each node
        for n in nodes:
            info = n.stub.WhereIs(pb.WhereIsRequest(name="t-" + n.node_name)).child
            self.assertEqual(info.calls, 18)
        # distsupctl top shows the counts of the node it asks only (the others' are not live there)
        for n in nodes:
            r = subprocess.run([daemon.DISTSUPCTL, "--addr", n.addr, "top", "--once", "--interval", "0.2", "--json"],
                               capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            kids = {c["name"]: c for c in json.loads(r.stdout)["children"]}
            self.assertEqual(set(kids), {"t-" + m.node_name for m in nodes})
            for m in nodes:
                k = kids["t-" + m.node_name]
                self.assertEqual(k["node"], m.node_name)
                if m is n:
                    self.assertEqual((k["calls"], k["calls_per_s"], k["restarts_delta"]), (18, 0.0, 0))
                else:
                    self.assertEqual((k["calls"], k["calls_per_s"], k["restarts_delta"]), (None, None, 0))

    def test_concurrent_start_of_the_same_50_names_starts_each_once(self):
        nodes = self.make_cluster(3)
        names = ["same%02d" % i for i in range(50)]
        results = collections.defaultdict(list)
        barrier = threading.Barrier(3)

        def starter(node):
            barrier.wait(10)
            for name in names:
                try:
                    node.stub.StartChild(pb.StartChildRequest(spec=spec(name)))
                    results[name].append("ok")
                except grpc.RpcError as e:
                    results[name].append(e.code())

        threads = [threading.Thread(target=starter, args=(n,)) for n in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for name in names:
            self.assertEqual(sorted(map(str, results[name])),
                             sorted(["ok", str(SC.ALREADY_EXISTS), str(SC.ALREADY_EXISTS)]), name)
        self.wait_synced(nodes, 50)
        copies = self.running_copies(set(names))
        self.assertEqual(sorted(k[1] for k in copies), names)
        self.assertEqual([k for k, p in copies.items() if len(p) != 1], [])


class BigChildren(ClusterTest):
    def test_a_snapshot_of_big_children_reaches_a_new_node(self):
        # 20 children with 4 MB of init each: 80 MB of ChildInfo, more than one peer
        # message may hold, must reach a node that joins, in several Snapshot chunks.
        nodes = self.make_cluster(3, start=2)
        names = ["big%02d" % i for i in range(20)]
        for n in names:
            nodes[0].stub.StartChild(pb.StartChildRequest(spec=spec(
                n, argv=["/bin/sleep", "3600"], protocol=pb.NONE, node="n1@test", init=b"7" * 4000000)),
                                     timeout=60)
        # (Children would answer 80 MB, over a default client's 4 MiB: count and look up.)
        count = lambda node: node.stub.CountChildren(pb.CountChildrenRequest())
        wait_for(lambda: count(nodes[1]).active == len(names), timeout=60, what="n2 to know all 20")
        nodes[2].start()
        self.wait_mesh(nodes)
        wait_for(lambda: count(nodes[2]).active == len(names), timeout=60, what="the new node to know all 20")
        for n in names:
            c = nodes[2].stub.WhereIs(pb.WhereIsRequest(name=n, include_spec_data=True)).child
            self.assertEqual((c.node, c.state, len(c.spec.init)), ("n1@test", pb.RUNNING, 4000000))
        self.assertNotIn("dropping", nodes[0].read_log() + nodes[2].read_log())


class Failover(ClusterTest):
    def test_a_killed_node_is_down_when_every_link_to_it_closes_not_after_its_silence(self):
        # down_after_ms of 30 s: only the closed links can take n3 down within the wait
        nodes = self.make_cluster(3, config="[daemon]\ndown_after_ms = 30000\n")
        n1, n2, n3 = nodes
        n1.stub.StartChild(pb.StartChildRequest(spec=spec("k1", node=n3.node_name)))
        self.wait_synced(nodes, 1)
        n3.kill9()
        for n in (n1, n2):
            wait_for(lambda: n.up_nodes() == ["n1@test", "n2@test"], timeout=10,
                     what="%s to take n3 down from its closed links" % n.node_name)
            self.assertIn("its link closed, and the 1 other nodes asked lost it too", n.read_log())
        # and its child is re-homed on a survivor
        wait_for(lambda: n1.stub.WhereIs(pb.WhereIsRequest(name="k1")).child.node in ("n1@test", "n2@test")
                 and n1.stub.WhereIs(pb.WhereIsRequest(name="k1")).child.state == pb.RUNNING, timeout=15,
                 what="k1 re-homed")

    def test_kill9_rehomes_once_and_the_restarted_node_runs_nothing_twice(self):
        nodes = self.make_cluster(3)
        restart = {}
        for i in range(100):
            r = pb.PERMANENT if i < 80 else pb.TRANSIENT if i < 90 else pb.TEMPORARY
            name = "f%03d" % i
            restart[name] = r
            nodes[0].stub.StartChild(pb.StartChildRequest(spec=spec(name, restart=r, init=b"7")))
        self.wait_synced(nodes, 100)
        per = collections.defaultdict(list)
        for c in nodes[0].children().values():
            per[c.node].append(c.name)
        victim = max(nodes, key=lambda n: len(per[n.node_name]))
        lost = per[victim.node_name]
        survivors = [n for n in nodes if n is not victim]
        temporary = [n for n in lost if restart[n] == pb.TEMPORARY]
        self.assertTrue(lost and temporary, "the victim should run some of each kind")
        victim.kill9()
        expect = 100 - len(temporary)
        # (the temporary ones are dropped at once; the others are re-homed a moment later)
        wait_for(lambda: all(all(c.node != victim.node_name for c in s.children().values()) for s in survivors),
                 timeout=30, what="every child of the victim re-homed")
        self.wait_synced(survivors, expect, timeout=30)
        for s in survivors:
            kids = s.children()
            self.assertTrue(all(kids[n].node != victim.node_name for n in kids))
            for n in temporary:
                self.assertNotIn(n, kids)
        for n in lost:
            if restart[n] == pb.TEMPORARY:
                continue
            r = survivors[0].stub.Call(pb.CallRequest(name=n, payload=b"get"))
            self.assertEqual(r.payload, b"7")
            self.assertNotEqual(r.node, victim.node_name)
        copies = self.running_copies(set(restart))
        self.assertEqual(len(copies), expect)
        self.assertEqual([k for k, p in copies.items() if len(p) != 1], [])
        # each lost child is re-homed by one node (its directory), once: one node asks
        # (it may have to ask again while the target has not yet seen the owner down),
        # one start succeeds
        askers, done = collections.defaultdict(set), collections.Counter()
        for s in survivors:
            for ln in s.read_log().splitlines():
                if "re-homing child " in ln:
                    askers[ln.split("re-homing child ")[1].split()[0]].add(s.node_name)
                if "re-homed child " in ln:
                    done[ln.split("re-homed child ")[1].split()[0]] += 1
        want = sorted(n for n in lost if restart[n] != pb.TEMPORARY)
        self.assertEqual(sorted(askers), want)
        self.assertEqual([n for n, a in askers.items() if len(a) != 1], [], "one node re-homes each")
        self.assertEqual(sorted(done), want)
        self.assertEqual([n for n, k in done.items() if k != 1], [], "each is re-homed once")
        # the killed node comes back with its old database: it syncs first, runs nothing twice
        victim.start()
        self.wait_mesh(nodes)
        self.wait_synced(nodes, expect, timeout=30)
        time.sleep(1.0)  # moves back to it (hash ring) settle
        self.wait_synced(nodes, expect, timeout=30)
        copies = self.running_copies(set(restart))
        self.assertEqual(len(copies), expect)
        self.assertEqual([k for k, p in copies.items() if len(p) != 1], [])
        self.assertIn("not starting it here", victim.read_log())
        # what the restarted node said of the children it held back (SUSPENDED, no id yet)
        # is taken, not refused as a peer's bad message
        for s in survivors:
            self.assertEqual([ln for ln in s.read_log().splitlines() if "refused" in ln and " WARN " in ln], [])
        for n in lost:
            if restart[n] != pb.TEMPORARY:
                self.assertEqual(victim.stub.Call(pb.CallRequest(name=n, payload=b"get")).payload, b"7")

    def test_a_pinned_child_is_rehomed_then_goes_back_to_its_node(self):
        nodes = self.make_cluster(3)
        home = nodes[2]
        nodes[0].stub.StartChild(pb.StartChildRequest(node=home.node_name, spec=spec("pinned", init=b"3")))
        nodes[0].stub.Cast(pb.CastRequest(name="pinned", payload=b"incr"))
        self.assertEqual(nodes[1].stub.WhereIs(pb.WhereIsRequest(name="pinned")).child.spec.node, "n3@test")
        home.kill9()
        where = lambda n: n.stub.WhereIs(pb.WhereIsRequest(name="pinned")).child
        wait_for(lambda: where(nodes[0]).node in ("n1@test", "n2@test") and where(nodes[0]).state == pb.RUNNING,
                 timeout=20, what="the pinned child re-homed while its node is down")
        home.start()
        self.wait_mesh(nodes)
        wait_for(lambda: all(where(n).node == "n3@test" and where(n).state == pb.RUNNING for n in nodes),
                 timeout=20, what="the pinned child back on its node")
        self.assertEqual(len(self.running_copies({"pinned"})), 1)
        self.assertIn("back to the node its spec pins it to", nodes[0].read_log() + nodes[1].read_log())

    def test_a_failed_child_is_not_restarted_by_failover(self):
        nodes = self.make_cluster(3)
        victim = nodes[2]
        nodes[0].stub.StartChild(pb.StartChildRequest(node=victim.node_name, spec=spec(
            "crasher", argv=["/bin/sh", "-c", "exit 3"], protocol=pb.NONE)))
        nodes[0].stub.StartChild(pb.StartChildRequest(node=victim.node_name, spec=spec("fine")))
        wait_for(lambda: all(n.children().get("crasher") and n.children()["crasher"].state == pb.FAILED
                             for n in nodes), timeout=20, what="crasher FAILED on every node's view")
        victim.kill9()
        survivors = nodes[:2]
        wait_for(lambda: all(n.children().get("fine") and n.children()["fine"].node != victim.node_name and
                             n.children()["fine"].state == pb.RUNNING for n in survivors),
                 timeout=20, what="the healthy child re-homed")
        for n in survivors:
            self.assertNotIn("crasher", n.children())
        self.assertTrue(any("failed child crasher went down with node n3@test; dropped" in n.read_log()
                            for n in survivors))
        self.assertEqual(len(self.running_copies({"crasher"})), 0)

    def test_graceful_leave_hands_children_over_with_their_state(self):
        nodes = self.make_cluster(3)
        for i in range(30):
            nodes[0].stub.StartChild(pb.StartChildRequest(spec=spec("g%02d" % i, init=b"100")))
        self.wait_synced(nodes, 30)
        for i in range(30):
            nodes[0].stub.Cast(pb.CastRequest(name="g%02d" % i, payload=b"incr"))
        leaving = nodes[2]
        theirs = [c.name for c in nodes[0].children().values() if c.node == leaving.node_name]
        self.assertTrue(theirs)
        w = Watcher(nodes[0].stub, supervisor="*", cluster=True)
        time.sleep(0.2)
        rest = nodes[:2]
        # the callers call every child (the leaving node's move) through the others; they
        # are under way before the leave begins, and answer throughout it
        callers = Callers(rest, ["g%02d" % i for i in range(30)])
        warm = callers.running()
        self.assertEqual(leaving.stop(signal.SIGTERM), 0)
        during = callers.calls
        self.wait_synced(rest, 30)
        callers.stop()
        self.assertGreater(during, warm, "no Call was answered while the node left")
        self.assertEqual(callers.errors, [], "a graceful leave must fail no Call through the other nodes")
        for i in range(30):
            self.assertEqual(nodes[1].stub.Call(pb.CallRequest(name="g%02d" % i, payload=b"get")).payload, b"101",
                             "g%02d lost its count" % i)
        # (the Watch stream brings the last events a moment after the children run)
        wait_for(lambda: sorted(e.name for e in w.of(pb.PROCESS_MOVED)) == sorted(theirs), timeout=10,
                 what="a PROCESS_MOVED event for each child of the leaving node")
        self.assertTrue(all(e.node == leaving.node_name for e in w.of(pb.PROCESS_MOVED)))
        self.assertEqual(len(self.running_copies({"g%02d" % i for i in range(30)})), 30)
        w.close()


def rehomes_in_flight_at_return(log, victim):
    """Of one survivor's log (from the kill on): the re-homes of victim's children it had
    begun and not finished when it saw victim come back."""
    begun, done = set(), set()
    for ln in log.splitlines():
        if "node %s is up" % victim in ln:
            return begun - done
        if "re-homing child " in ln and "of down node %s" % victim in ln:
            begun.add(ln.split("re-homing child ")[1].split()[0])
        elif "re-homed child " in ln:
            done.add(ln.split("re-homed child ")[1].split()[0])
    return set()


class RestartDuringRehome(ClusterTest):
    def test_a_node_restarted_while_its_children_are_rehomed_runs_none_twice(self):
        # Issue 10 item 4: a node killed with -9 comes back while the survivors are still
        # re-homing its children (every node lists the others as seeds, as in the example
        # configuration, so it reaches both at once).  A re-home Place that left its
        # directory node before that node saw the victim back, and reaches a target that
        # already sent the victim its snapshot, must not start a copy there: the victim
        # starts its own.  On the daemon before the fix 170-odd names ran twice each time.
        nodes = self.make_cluster(3, all_seeds=True)
        victim = nodes[2]
        names = ["r%04d" % i for i in range(1000)]
        errors = []

        def starter(part):
            for n in part:
                try:
                    nodes[0].stub.StartChild(pb.StartChildRequest(spec=spec(n, init=b"5")), timeout=30)
                except grpc.RpcError as e:
                    errors.append("%s: %s %s" % (n, e.code(), e.details()))
        threads = [threading.Thread(target=starter, args=(names[k::4],)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        self.wait_synced(nodes, len(names), timeout=90)
        twice, samples = {}, [0]
        stop = threading.Event()

        def sampler():  # every process of a name, however briefly two ran
            end = time.monotonic() + 300
            while not stop.is_set() and time.monotonic() < end:
                for k, pids in self.running_copies(set(names)).items():
                    if len(pids) > 1:
                        twice.setdefault(k[1], sorted(pids))
                samples[0] += 1
        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        # The window is a race of the restart against the re-homes: up to 3 rounds until
        # one restart lands while re-homes are in flight (in practice the first).
        hit = 0
        try:
            for _ in range(3):
                lost = [k for k, c in nodes[0].children().items() if c.node == victim.node_name]
                self.assertGreater(len(lost), len(names) // 5)
                marks = [len(d.read_log()) for d in nodes]
                victim.kill9()
                wait_for(lambda: any("of down node %s" % victim.node_name in s.read_log()[m:]
                                     for s, m in zip(nodes[:2], marks)),
                         timeout=20, interval=0.002, what="a survivor to begin re-homing")
                victim.start()  # at once: it comes up while they re-home
                self.wait_mesh(nodes, timeout=30)
                self.wait_synced(nodes, len(names), timeout=90)
                time.sleep(1.0)  # moves back to it (hash ring) settle
                self.wait_synced(nodes, len(names), timeout=90)
                logs = [d.read_log()[m:] for d, m in zip(nodes, marks)]
                dups = [ln for lg in logs for ln in lg.splitlines() if "too; duplicate" in ln]
                self.assertFalse(dups, "%d copies stopped as duplicates (two ran at once), first: %s" % (
                    len(dups), dups[:3]))
                # nothing of this is a peer's bad message: no warning (refusals are warnings)
                # but the victim's loss
                self.assertEqual([ln for lg in logs for ln in lg.splitlines()
                                  if ln.split(" ")[1:2] in (["WARN"], ["ERROR"]) and "is down" not in ln], [])
                inflight = set().union(*(rehomes_in_flight_at_return(lg, victim.node_name) for lg in logs[:2]))
                if inflight:
                    hit += 1
                    break
        finally:
            stop.set()
            th.join(30)
        self.assertEqual(hit, 1, "no restart landed while re-homes were in flight")
        self.assertGreater(samples[0], 5)
        self.assertEqual(twice, {}, "names that ran on two nodes at once")
        copies = self.running_copies(set(names))
        self.assertEqual(len(copies), len(names))
        self.assertEqual([k for k, p in copies.items() if len(p) != 1], [])
        for n in names[:: 50]:
            self.assertEqual(nodes[0].stub.Call(pb.CallRequest(name=n, payload=b"get")).payload, b"5", n)


class HeldNames(ClusterTest):
    def test_a_restarting_nodes_held_children_are_known_to_its_peers_while_it_syncs(self):
        # A node that restarts holds its stored children back (SUSPENDED, no process, no
        # id yet) until it is in sync.  Its snapshot says so; the peers must take that
        # and keep answering for those names (before: they refused every such entry for
        # its empty id and dropped the names, so WhereIs said NOT_FOUND).  n1 is stopped
        # while n2 is killed and restarted (so n1 re-homes nothing: it sees a restart),
        # and n2 also lists a seed that accepts TCP and never answers, which holds its
        # sync open (sync_timeout_ms 20 s) until the test closes that seed.  Calls and
        # casts to those children meanwhile wait for them (before: UNAVAILABLE at once).
        nodes = self.make_cluster(2)
        a, b = nodes
        names = ["h%02d" % i for i in range(10)]
        for n in names:
            a.stub.StartChild(pb.StartChildRequest(spec=spec(n, init=b"3"), node=b.node_name))
        self.wait_synced(nodes, len(names))
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        try:
            os.kill(a.proc.pid, signal.SIGSTOP)
            try:
                b.kill9()
                bmark = len(b.read_log())
                b.args += ["--seeds", "%s,127.0.0.1:%d" % (a.peer_addr, hole.getsockname()[1]),
                           "--sync-timeout-ms", "20000"]
                b.start()
                time.sleep(0.3)
                mark = len(a.read_log())
            finally:
                os.kill(a.proc.pid, signal.SIGCONT)
            wait_for(lambda: "synced with node n2@test" in a.read_log()[mark:], timeout=10,
                     what="n1 to have n2's snapshot")
            self.assertNotIn("in sync with the cluster", b.read_log()[bmark:], "n2 should still hold its children")
            for n in names:
                c = a.stub.WhereIs(pb.WhereIsRequest(name=n)).child
                self.assertEqual((c.node, c.state), (b.node_name, pb.SUSPENDED), n)
            with self.assertRaises(grpc.RpcError) as cm:
                a.stub.StartChild(pb.StartChildRequest(spec=spec(names[0])), timeout=10)
            self.assertEqual(cm.exception.code(), SC.ALREADY_EXISTS, cm.exception.details())
            # a Call (through either node) and a Cast wait for the child instead of failing
            calls = [n.stub.Call.future(pb.CallRequest(name=names[1], payload=b"get"), timeout=15) for n in (a, b)]
            cast = a.stub.Cast.future(pb.CastRequest(name=names[2], payload=b"incr"), timeout=15)
            time.sleep(0.5)
            self.assertFalse(any(f.done() for f in calls + [cast]),
                             [f.exception() for f in calls + [cast] if f.done()])
            self.assertEqual([ln for ln in a.read_log()[mark:].splitlines() if "refused" in ln and " WARN " in ln],
                             [])
        finally:
            hole.close()
        # the unanswering seed is closed: n2 has tried every seed, is in sync, starts them
        self.assertEqual([f.result().payload for f in calls], [b"3", b"3"])
        cast.result()
        self.wait_synced(nodes, len(names), timeout=30)
        for n in names:
            self.assertEqual(a.stub.Call(pb.CallRequest(name=n, payload=b"get")).payload,
                             b"4" if n == names[2] else b"3", n)
            self.assertEqual(a.stub.WhereIs(pb.WhereIsRequest(name=n)).child.node, b.node_name)


class LeaveOrder(ClusterTest):
    def test_a_child_that_could_not_move_stops_before_the_peers_hear_leave(self):
        # A child that is starting again when its node leaves (it crashed just before)
        # does not move; it stops with its node.  The peers re-home it once they hear
        # Leave, so that must come after it is gone: here it ignores SIGTERM and lives
        # its whole shutdown_ms (2 s), and a copy elsewhere must not start meanwhile.
        nodes = self.make_cluster(2)
        a, b = nodes
        slow = os.path.join(self.workdir, "slow-start")
        script = 'trap "" TERM; if [ -e %s ]; then sleep 30; fi; exec %s' % (slow, daemon.COUNTER)
        a.stub.StartChild(pb.StartChildRequest(spec=spec("lv", argv=["sh", "-c", script], shutdown_ms=2000),
                                               node=a.node_name))
        self.wait_synced(nodes, 1)
        open(slow, "w").close()  # from now on it takes 30 s to be ready
        with self.assertRaises(grpc.RpcError):
            a.stub.Call(pb.CallRequest(name="lv", payload=b"crash"))
        wait_for(lambda: a.stub.WhereIs(pb.WhereIsRequest(name="lv")).child.state == pb.STARTING, timeout=10,
                 what="lv to be starting again on n1")
        most, stopped = [0], threading.Event()

        def sample():
            end = time.monotonic() + 30
            while not stopped.is_set() and time.monotonic() < end:
                # (each copy is sh and its sleep: count the nodes that started one)
                most[0] = max(most[0], len(set(self.nodes_running({"lv"}).get("lv", []))))
                time.sleep(0.01)
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            self.assertEqual(a.stop(signal.SIGTERM), 0)
            wait_for(lambda: b.up_nodes() == [b.node_name], timeout=10, what="n2 to see n1 gone")
            wait_for(lambda: self.running_copies({"lv"}), timeout=10, what="lv re-homed on n2")
            time.sleep(0.5)
        finally:
            stopped.set()
            th.join(10)
        self.assertIn("could not move", a.read_log())
        self.assertEqual(most[0], 1, "lv ran on both nodes while n1 stopped it")
        self.assertEqual(set(self.nodes_running({"lv"})["lv"]), {b.node_name})
        os.unlink(slow)


class Pause(ClusterTest):
    def test_a_paused_node_does_not_declare_its_healthy_peers_down_when_it_resumes(self):
        # n1 is stopped (SIGSTOP, as a VM freeze or a long stall) for longer than
        # down_after_ms plus the indirect check: n2 declares it down and re-homes its
        # children.  When n1 resumes, the silence its ticker would measure is its own:
        # it must not declare n2 down and re-home n2's children over the copies that
        # ran on n2 all along (their state would be lost).
        nodes = self.make_cluster(2)
        a, b = nodes
        for i in range(20):
            a.stub.StartChild(pb.StartChildRequest(spec=spec("p%02d" % i, init=b"7")))
        self.wait_synced(nodes, 20)
        kids = a.children()
        on_b = sorted(k for k, c in kids.items() if c.node == b.node_name)
        self.assertTrue(on_b and len(on_b) < 20, "the ring should put some children on each node")
        ids = {k: kids[k].id for k in on_b}
        for k in on_b:
            b.stub.Cast(pb.CastRequest(name=k, payload=b"incr"))  # state 8: lost if restarted from init
        for k in on_b:
            self.assertEqual(b.stub.Call(pb.CallRequest(name=k, payload=b"get")).payload, b"8")
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: "node n1@test is down" in b.read_log(), timeout=15, what="n2 to declare n1 down")
            time.sleep(1.5)  # n1 stays stopped well past its own down_after_ms + indirect check
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        self.wait_mesh(nodes, timeout=20)
        self.wait_synced(nodes, 20, timeout=30)
        self.assertIn("did not run for", a.read_log())
        self.assertNotIn("node n2@test is down", a.read_log())
        for k in on_b:
            c = b.children()[k]
            self.assertEqual((c.node, c.id), (b.node_name, ids[k]), "%s ran on n2 all along: never replaced" % k)
            self.assertEqual(a.stub.Call(pb.CallRequest(name=k, payload=b"get")).payload, b"8", k)
        copies = self.running_copies({"p%02d" % i for i in range(20)})
        self.assertEqual([k for k, p in copies.items() if len(p) != 1], [])
        self.assertEqual(len(copies), 20)


class Redistribution(ClusterTest):
    def test_a_fourth_node_takes_about_a_quarter_with_state(self):
        nodes = self.make_cluster(4, start=3)
        names = ["r%03d" % i for i in range(200)]
        for n in names:
            nodes[0].stub.StartChild(pb.StartChildRequest(spec=spec(n, init=b"10")))
        self.wait_synced(nodes[:3], 200)
        for n in names:
            nodes[1].stub.Cast(pb.CastRequest(name=n, payload=b"incr"))
        before = {k: c.node for k, c in nodes[0].children().items()}
        w = Watcher(nodes[0].stub, cluster=True, kinds=[pb.PROCESS_MOVED])
        time.sleep(0.2)
        callers = Callers(nodes[:3], names)
        warm = callers.running()
        nodes[3].start()
        self.wait_mesh(nodes)

        # The strategy now says these belong to the new node: wait until they run there.
        theirs = {k for k in names if nodes[3].stub.NodeFor(pb.NodeForRequest(key=k)).node == "n4@test"}

        def settled():
            kids = nodes[3].children()
            return len(kids) == 200 and all(c.state == pb.RUNNING for c in kids.values()) and \
                {k for k, c in kids.items() if c.node == "n4@test"} == theirs
        wait_for(settled, timeout=30, what="moves to the 4th node to finish")
        during = callers.calls
        self.wait_synced(nodes, 200)
        callers.stop()
        self.assertGreater(during, warm, "no Call was answered while the children moved")
        self.assertEqual(callers.errors, [], "a join's moves must fail no Call")
        after = {k: c.node for k, c in nodes[0].children().items()}
        moved = [k for k in names if before[k] != after[k]]
        self.assertTrue(all(after[k] == "n4@test" for k in moved), "children move only to the new node")
        frac = len(moved) / 200
        print("moved to the 4th node: %d of 200 (%.1f%%; ideal 25%%)" % (len(moved), 100 * frac))
        self.assertTrue(0.15 <= frac <= 0.35, "moved %.0f%%" % (100 * frac))
        for k in names:
            self.assertEqual(nodes[3].stub.Call(pb.CallRequest(name=k, payload=b"get")).payload, b"11",
                             "%s lost its state in the move" % k)
        self.assertEqual(sorted(e.name for e in w.events), sorted(moved))
        copies = self.running_copies(set(names))
        self.assertEqual([k for k, p in copies.items() if len(p) != 1], [])
        self.assertEqual(len(copies), 200)
        w.close()


class Links(ClusterTest):
    def test_a_replaced_link_fails_no_request_in_flight(self):
        # Every node lists every other one as a seed (the example configuration): at
        # start both ends of a pair dial, and both keep the link the smaller-named node
        # dialed.  Requests in flight on the other one must not fail: it is closed only
        # once both ends have drained it, and the core is told nothing.  Counted as
        # failures: UNAVAILABLE "... lost its link before answering" or "... cannot be
        # reached now" for calls made after every node sees all three up (before that,
        # "no usable node" and the like are the cluster forming, not this).
        nodes = self.make_cluster(3, start=False, all_seeds=True)
        formed = [None]
        stop = threading.Event()
        calls, lock = [], threading.Lock()  # (sent, node, op, name, code, details)

        def watch_formed():
            end = time.monotonic() + 60
            want = sorted(n.node_name for n in nodes)
            while formed[0] is None and not stop.is_set() and time.monotonic() < end:
                try:
                    if all(n.stub and n.up_nodes() == want for n in nodes):
                        formed[0] = time.monotonic()
                except (grpc.RpcError, AttributeError):
                    pass
                time.sleep(0.005)

        def client(k):
            node, i = nodes[k], 0
            end = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < end:
                name = "l%d-%04d" % (k, i)
                i += 1
                for op in ("start", "terminate") if i % 3 == 0 else ("start",):
                    sent = time.monotonic()
                    try:
                        if op == "start":
                            node.stub.StartChild(pb.StartChildRequest(spec=spec(name)), timeout=15)
                        else:
                            nodes[(k + 1) % 3].stub.TerminateChild(pb.TerminateChildRequest(name=name), timeout=15)
                        code, details = SC.OK, ""
                    except grpc.RpcError as e:
                        code, details = e.code(), e.details() or ""
                    with lock:
                        calls.append((sent, node.node_name, op, name, code, details))
                    if code != SC.OK:
                        time.sleep(0.01)
                        break
        for n in nodes:
            n.start()
        threads = [threading.Thread(target=watch_formed, daemon=True)]
        threads += [threading.Thread(target=client, args=(k,), daemon=True) for k in range(3)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: formed[0] is not None, timeout=30, what="every node to see the other two up")
            time.sleep(3.0)  # links are replaced about a second after start; go on well past it
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        after = [c for c in calls if c[0] >= formed[0]]
        self.assertGreater(len(after), 30, "the clients should make calls after the cluster formed")
        lost = [c for c in after if c[4] == SC.UNAVAILABLE and
                ("lost its link before answering" in c[5] or "cannot be reached now" in c[5])]
        self.assertEqual(lost, [], "calls failed because a link was replaced")
        logs = "".join(n.read_log() for n in nodes)
        self.assertTrue("replaced by a link dialed by the smaller-named node" in logs or
                        "a link to this node exists already" in logs, "no link was replaced in this run")
        started = {c[3] for c in calls if c[2] == "start" and c[4] == SC.OK}
        terminated = {c[3] for c in calls if c[2] == "terminate" and c[4] == SC.OK}
        running = started - terminated
        names = {c[3] for c in calls}

        def agreed():
            views = [{k: c.state for k, c in n.children().items() if k in names} for n in nodes]
            return all(v == views[0] for v in views) and set(running) <= set(views[0]) and \
                all(st == pb.RUNNING for st in views[0].values())
        wait_for(agreed, timeout=30, what="every node to agree on the children")
        copies = self.running_copies(names)
        self.assertEqual([k for k, p in copies.items() if len(p) != 1], [], "names running twice")
        self.assertEqual(sorted(running - {k[1] for k in copies}), [], "acknowledged children not running")
        self.assertEqual(sorted(k[1] for k in copies if k[1] in terminated), [], "terminated children running")


class Trust(ClusterTest):
    def test_an_untrusted_node_never_joins_and_learns_nothing(self):
        nodes = self.make_cluster(4, start=3, keys_trusted={0, 1, 2})
        nodes[0].stub.StartChild(pb.StartChildRequest(spec=spec("secret")))
        intruder = nodes[3]
        intruder.start()
        wait_for(lambda: "is not in the trust file" in nodes[0].read_log(), what="the refusal in the log")
        time.sleep(1.5)
        for n in nodes[:3]:
            self.assertEqual(n.up_nodes(), ["n1@test", "n2@test", "n3@test"])
        self.assertEqual(intruder.up_nodes(), ["n4@test"])
        self.assertEqual(intruder.children(), {})
        self.assertNotIn("secret", intruder.read_log())
        self.assertNotIn("n2@test", intruder.read_log())

    def test_a_node_with_another_cluster_key_is_refused(self):
        keyfile = lambda name, text: (open(os.path.join(self.workdir, name), "w").write(text),
                                      os.path.join(self.workdir, name))[1]
        good = keyfile("ck", "the cluster cookie, long enough")
        bad = keyfile("ck2", "another cookie, also long enough")
        nodes = self.make_cluster(3, start=False)
        for n in nodes[:2]:
            n.args += ["--cluster-key-file", good]
            n.start()
        self.wait_mesh(nodes[:2])
        nodes[2].args += ["--cluster-key-file", bad]
        nodes[2].start()
        wait_for(lambda: "another cluster key" in nodes[0].read_log() + nodes[2].read_log(),
                 what="the refusal")
        time.sleep(1.0)
        self.assertEqual(nodes[0].up_nodes(), ["n1@test", "n2@test"])
        self.assertEqual(nodes[2].up_nodes(), ["n3@test"])

    def test_bad_cluster_settings_are_clear_errors(self):
        nodes = self.make_cluster(1, start=False)
        d = nodes[0]
        os.chmod(self.keys[0], 0o644)
        with self.assertRaises(AssertionError) as cm:
            d.start(timeout=5)
        self.assertIn("readable by others", str(cm.exception))
        os.chmod(self.keys[0], 0o600)
        d.args = [a if a != self.trust else "/nonexistent/trust" for a in d.args]
        with self.assertRaises(AssertionError) as cm:
            d.start(timeout=5)
        self.assertIn("trust file /nonexistent/trust", str(cm.exception))


if __name__ == "__main__":
    main()
