"""Network faults.  Partitions: three real distsupd, each in its own network namespace;
one is cut off from the other two and then healed.  Broken links: every peer TCP
connection of a loopback cluster destroyed while a child restarts.  Needs root (it
makes the namespaces, and ss -K needs CAP_NET_ADMIN)."""

import os
import signal
import subprocess
import time

import grpc

from netns import NetnsClusterTest
from cluster import ClusterTest, main, pb, spec, wait_for
from test_cluster import Watcher
from test_hosted import CONFIG as HOSTED_CONFIG, HostApps, hspec

SC = grpc.StatusCode
NAMES = ["p%02d" % i for i in range(30)]


def call_retrying(node, name, tries=20):
    """A Call as a client should make one: UNAVAILABLE (a link replaced just after the
    heal fails the requests in flight on it) is retried."""
    for i in range(tries):
        try:
            return node.stub.Call(pb.CallRequest(name=name, payload=b"get")).payload
        except grpc.RpcError as e:
            if e.code() != SC.UNAVAILABLE or i == tries - 1:
                raise
            time.sleep(0.1)


class Partition(NetnsClusterTest):
    def start_children(self, nodes):
        for n in NAMES:
            nodes[0].stub.StartChild(pb.StartChildRequest(spec=spec(n, init=b"5")))
        self.wait_synced(nodes, len(NAMES))
        for n in NAMES:  # state 6: a copy restarted from its init (5) has lost it
            nodes[0].stub.Cast(pb.CastRequest(name=n, payload=b"incr"))
        for n in NAMES:
            self.assertEqual(nodes[0].stub.Call(pb.CallRequest(name=n, payload=b"get")).payload, b"6")
        lone = nodes[2]
        theirs = sorted(k for k, c in nodes[0].children().items() if c.node == lone.node_name)
        self.assertTrue(theirs, "the lone node should run some children")
        return lone, nodes[:2], theirs

    def assert_each_runs_once(self, nodes, state=b"6"):
        """After the heal: each name runs once, where the strategy places it now (the
        rejoined node gets its children back by moves, with their state), and every
        node agrees; every child still has the state it had before the cut."""
        def settled():
            where = self.nodes_running(NAMES)
            if len(where) != len(NAMES) or any(len(v) != 1 for v in where.values()):
                return False
            for node in nodes:
                kids = node.children()
                if len(kids) != len(NAMES) or any(
                        c.state != pb.RUNNING or c.node != where[n][0] for n, c in kids.items()):
                    return False
            return all(nodes[0].stub.NodeFor(pb.NodeForRequest(key=n)).node == where[n][0] for n in NAMES)
        wait_for(settled, timeout=30, interval=0.2,
                 what="every name to run exactly once, where the strategy says, agreed by every node")
        for node in nodes:
            for n in NAMES:
                if state is not None:
                    self.assertEqual(call_retrying(node, n), state, "%s through %s" % (n, node.node_name))

    def test_default_both_sides_run_then_one_copy_survives_the_heal(self):
        nodes = self.make_ns_cluster(3)
        lone, majority, theirs = self.start_children(nodes)
        ours = sorted(set(NAMES) - set(theirs))
        w = Watcher(lone.stub, supervisor="*", kinds=[pb.PROCESS_STOP])
        wm = [Watcher(n.stub, supervisor="*", kinds=[pb.PROCESS_STOP]) for n in majority]

        self.net.cut(3)
        wait_for(lambda: all(n.up_nodes() == ["n1@test", "n2@test"] for n in majority), timeout=15,
                 what="the majority to see n3 down")
        wait_for(lambda: lone.up_nodes() == ["n3@test"], timeout=15, what="n3 to see the others down")
        # The majority re-homes n3's children; n3 keeps running its own (AP): two copies.
        wait_for(lambda: all(all(c.node != "n3@test" for c in n.children().values()) for n in majority),
                 timeout=30, what="the majority to re-home every child of n3")
        self.wait_synced(majority, len(NAMES), timeout=30)
        where = self.nodes_running(theirs)
        for n in theirs:
            self.assertIn("n3@test", where[n])
            self.assertEqual(len(where[n]), 2, "%s should run on both sides: %s" % (n, where[n]))
        self.assertEqual(lone.stub.Call(pb.CallRequest(name=theirs[0], payload=b"get")).node, "n3@test")

        # n3, alone, re-homed the majority's children onto itself too
        self.assertEqual(sorted(k for k, c in lone.children().items() if c.node == "n3@test"), NAMES)

        self.net.heal(3)
        self.wait_mesh(nodes, timeout=20)
        # The rule: a copy that kept running on its own node survives its failover copy,
        # so every side keeps its originals (and their state); each failover copy stops
        # with an event: on n3 those of the majority's children, on the majority those
        # of n3's.
        wait_for(lambda: sorted(e.name for e in w.events if "duplicate" in e.reason) == ours, timeout=15,
                 what="n3 to stop its failover copy of each of the majority's children")
        wait_for(lambda: sorted(e.name for x in wm for e in x.events if "duplicate" in e.reason) == theirs,
                 timeout=15, what="the majority to stop its failover copy of each of n3's children")
        for e in w.events + [e for x in wm for e in x.events]:
            if "duplicate" in e.reason:
                self.assertIn("(incarnation 1) survives", e.reason)
        self.assert_each_runs_once(nodes)
        self.assertIn("runs on node", lone.read_log())
        w.close()
        for x in wm:
            x.close()

    def test_quorum_the_lone_node_stops_its_children_and_refuses_starts(self):
        nodes = self.make_ns_cluster(3, args=["--quorum", "--cluster-size", "3"])
        lone, majority, theirs = self.start_children(nodes)
        ids = {k: c.id for k, c in majority[0].children().items() if c.node != lone.node_name}

        self.net.cut(3)
        wait_for(lambda: "n3@test" not in sum(self.nodes_running(NAMES).values(), []), timeout=15,
                 what="n3, without quorum, to stop its children")
        details = self.assertCode(SC.UNAVAILABLE, lone.stub.StartChild,
                                  pb.StartChildRequest(spec=spec("while-cut")))
        self.assertIn("quorum", details)
        details = self.assertCode(SC.UNAVAILABLE, lone.stub.Call, pb.CallRequest(name=theirs[0], payload=b"get"))
        self.assertIn("is suspended on node n3@test (the node has no quorum)", details)
        # The majority keeps quorum: it re-homes n3's children and still starts new ones.
        wait_for(lambda: all(n.up_nodes() == ["n1@test", "n2@test"] for n in majority), timeout=15,
                 what="the majority to see n3 down")
        wait_for(lambda: all(all(c.node != "n3@test" for c in n.children().values()) for n in majority),
                 timeout=30, what="the majority to re-home every child of n3")
        self.wait_synced(majority, len(NAMES), timeout=30)
        majority[0].stub.StartChild(pb.StartChildRequest(spec=spec("p-extra", init=b"5")))
        self.assertEqual(majority[1].stub.Call(pb.CallRequest(name="p-extra", payload=b"get")).payload, b"5")
        majority[0].stub.TerminateChild(pb.TerminateChildRequest(name="p-extra"))
        self.assertIn("no quorum", lone.read_log())

        self.net.heal(3)
        self.wait_mesh(nodes, timeout=20)
        # n3's children ran on the majority meanwhile, from their init: they come back to
        # n3 by moves with that state; the majority's own children never stopped.
        self.assert_each_runs_once(nodes, state=None)
        for k, i in ids.items():
            c = majority[0].children()[k]
            self.assertEqual(c.id, i, "%s ran on the majority all along: never replaced" % k)
            self.assertEqual(call_retrying(lone, k), b"6", k)
        for k in theirs:
            self.assertEqual(call_retrying(lone, k), b"5", k)
        self.assertIn("not starting it here", lone.read_log())
        self.assertIn("quorum is back", lone.read_log())


class HostedPartition(HostApps, NetnsClusterTest):
    """Hosted children (docs/hosting.md) across a partition: each node has a host app
    (in the test's namespace, on the node's API link, which the cut leaves alone)."""

    def test_hosted_children_rehome_on_the_majority_and_run_once_after_the_heal(self):
        nodes = self.make_ns_cluster(3, config=HOSTED_CONFIG)
        for i, node in enumerate(nodes):
            self.host_app(node, "app%d" % (i + 1))
        for node in nodes:
            self.wait_kind(nodes, node.node_name, "counter")
        for n in NAMES:
            nodes[0].stub.StartChild(pb.StartChildRequest(spec=hspec(n, init=b"5")), timeout=10)
        self.wait_synced(nodes, len(NAMES))
        for n in NAMES:  # 6, handed off as State ("save"): a copy started from init (5) lost it
            nodes[0].stub.Cast(pb.CastRequest(name=n, payload=b"incr"))
            nodes[0].stub.Cast(pb.CastRequest(name=n, payload=b"save"))
        for n in NAMES:
            self.assertEqual(call_retrying(nodes[0], n), b"6")
        lone, majority = nodes[2], nodes[:2]
        theirs = sorted(k for k, c in nodes[0].children().items() if c.node == lone.node_name)
        self.assertTrue(theirs, "the lone node should run some children")

        self.net.cut(3)
        wait_for(lambda: all(n.up_nodes() == ["n1@test", "n2@test"] for n in majority), timeout=15,
                 what="the majority to see n3 down")
        # the majority re-homes n3's hosted children onto its own hosts; n3 keeps its own
        wait_for(lambda: all(all(c.node != "n3@test" for c in n.children().values()) for n in majority),
                 timeout=30, what="the majority to re-home every child of n3")
        self.wait_synced(majority, len(NAMES), timeout=30)
        for n in theirs:
            self.assertIn(b" app1 " if majority[0].children()[n].node == "n1@test" else b" app2 ",
                          majority[0].stub.Call(pb.CallRequest(name=n, payload=b"whoami")).payload)
            self.assertIn(b" app3 ", lone.stub.Call(pb.CallRequest(name=n, payload=b"whoami")).payload)

        self.net.heal(3)
        self.wait_mesh(nodes, timeout=20)

        def settled():  # one RUNNING copy of each name, on a node every node agrees on
            views = [{k: (c.node, c.state) for k, c in n.children().items()} for n in nodes]
            if any(len(v) != len(NAMES) or any(st != pb.RUNNING for _, st in v.values()) for v in views):
                return False
            if any(v != views[0] for v in views):
                return False
            # and each node runs exactly the ones all say it runs (its own count)
            for node in nodes:
                mine = sum(1 for nd, _ in views[0].values() if nd == node.node_name)
                local = node.stub.Nodes(pb.NodesRequest()).nodes
                if [x.children for x in local if x.self] != [mine]:
                    return False
            return True
        wait_for(settled, timeout=30, interval=0.2, what="every hosted name to run once, agreed by every node")
        for n in NAMES:  # the copy that kept running survived, with its state
            self.assertEqual(call_retrying(nodes[1], n), b"6", n)


class BrokenLinks(ClusterTest):
    """Links broken while their nodes stay up (ss -K destroys the TCP connections, which
    needs the real CAP_NET_ADMIN this unsandboxed target has)."""

    def test_news_lost_while_links_were_broken_is_made_good_when_they_reopen(self):
        nodes = self.make_cluster(3)
        c = nodes[0].stub.StartChild(pb.StartChildRequest(node="n2@test", spec=spec("lossy"))).child
        self.wait_synced(nodes, 1)
        ports = [n.peer_port for n in nodes]

        def cut():  # destroy every peer TCP connection (both ends), as a network fault would
            killed = ""
            for p in ports:
                killed += subprocess.run(["ss", "-K", "-t", "(", "dport", "=", ":%d" % p, "or", "sport", "=",
                                          ":%d" % p, ")"], capture_output=True, text=True, check=True).stdout
            return killed
        # Links cut, then the child crashes on n2 and n2 restarts it: its broadcast of
        # the new pid is lost.  Links are cut again until the restart is done, for well
        # under down_after_ms, so nobody is declared down.
        self.assertIn("ESTAB", cut(), "ss -K destroyed no peer connection (it needs CAP_NET_ADMIN)")
        os.kill(c.os_pid, signal.SIGKILL)
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            cut()
            kid = nodes[1].children().get("lossy")
            if kid and kid.restarts == 1 and kid.state == pb.RUNNING and kid.os_pid != c.os_pid:
                break
        cut()
        new_pid = nodes[1].children()["lossy"].os_pid
        self.assertNotEqual(new_pid, c.os_pid)
        # The reopened links exchange snapshots: the others learn the new pid.
        for n in (nodes[0], nodes[2]):
            wait_for(lambda: n.children()["lossy"].os_pid == new_pid and n.children()["lossy"].restarts == 1,
                     timeout=10, what="%s to learn the restart it missed" % n.node_name)
        logs = nodes[0].read_log() + nodes[2].read_log()
        self.assertIn("link with node n2@test open again; resyncing", logs)
        self.assertNotIn("node n2@test is down", logs, "the links were cut, the node never went down")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
