"""Partitions: three real distsupd, each in its own network namespace; one is cut off
from the other two and then healed.  Needs root (it makes the namespaces itself)."""

import collections
import os

import grpc

from netns import NetnsClusterTest
from cluster import main, pb, spec, wait_for
from test_cluster import Watcher

SC = grpc.StatusCode
NAMES = ["p%02d" % i for i in range(30)]


def nodes_running(names):
    """{name: [node of each running copy]} from the processes themselves: one read of
    each /proc/PID/environ (a process may exit, and its pid be reused, between reads)."""
    found = collections.defaultdict(list)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    continue
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        name, node = env.get(b"DISTSUP_NAME", b"").decode(), env.get(b"DISTSUP_NODE", b"").decode()
        if name in names and node:
            found[name].append(node)
    return found


class Partition(NetnsClusterTest):
    def start_children(self, nodes):
        for n in NAMES:
            nodes[0].stub.StartChild(pb.StartChildRequest(spec=spec(n, init=b"5")))
        self.wait_synced(nodes, len(NAMES))
        lone = nodes[2]
        theirs = sorted(k for k, c in nodes[0].children().items() if c.node == lone.node_name)
        self.assertTrue(theirs, "the lone node should run some children")
        return lone, nodes[:2], theirs

    def assert_each_runs_once(self, nodes):
        """After the heal: each name runs once, where the strategy places it now (the
        rejoined node gets its children back by moves), and every node agrees."""
        def settled():
            where = nodes_running(NAMES)
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
                self.assertEqual(node.stub.Call(pb.CallRequest(name=n, payload=b"get")).payload, b"5")

    def test_default_both_sides_run_then_one_copy_survives_the_heal(self):
        nodes = self.make_ns_cluster(3)
        lone, majority, theirs = self.start_children(nodes)
        w = Watcher(lone.stub, supervisor="*", kinds=[pb.PROCESS_STOP])

        self.net.cut(3)
        wait_for(lambda: all(n.up_nodes() == ["n1@test", "n2@test"] for n in majority), timeout=15,
                 what="the majority to see n3 down")
        wait_for(lambda: lone.up_nodes() == ["n3@test"], timeout=15, what="n3 to see the others down")
        # The majority re-homes n3's children; n3 keeps running its own (AP): two copies.
        self.wait_synced(majority, len(NAMES), timeout=30)
        self.assertTrue(all(c.node != "n3@test" for c in majority[0].children().values()))
        where = nodes_running(theirs)
        for n in theirs:
            self.assertIn("n3@test", where[n])
            self.assertEqual(len(where[n]), 2, "%s should run on both sides: %s" % (n, where[n]))
        self.assertEqual(lone.stub.Call(pb.CallRequest(name=theirs[0], payload=b"get")).node, "n3@test")

        self.net.heal(3)
        self.wait_mesh(nodes, timeout=20)
        # The rule: the higher incarnation survives (the re-homed copy), so n3's copies
        # stop, each with an event; then the ring hands n3 its children back by moves.
        wait_for(lambda: sorted(e.name for e in w.events if "duplicate" in e.reason) == theirs, timeout=15,
                 what="a PROCESS_STOP event naming the duplicate for each of n3's copies")
        for e in w.events:
            if "duplicate" in e.reason:
                self.assertIn("(incarnation 2) survives", e.reason)
                self.assertEqual(e.node, "n3@test")
        self.assert_each_runs_once(nodes)
        self.assertIn("runs on node", lone.read_log())
        w.close()

    def test_quorum_the_lone_node_stops_its_children_and_refuses_starts(self):
        nodes = self.make_ns_cluster(3, args=["--quorum", "--cluster-size", "3"])
        lone, majority, theirs = self.start_children(nodes)

        self.net.cut(3)
        wait_for(lambda: "n3@test" not in sum(nodes_running(NAMES).values(), []), timeout=15,
                 what="n3, without quorum, to stop its children")
        details = self.assertCode(SC.UNAVAILABLE, lone.stub.StartChild,
                                  pb.StartChildRequest(spec=spec("while-cut")))
        self.assertIn("quorum", details)
        details = self.assertCode(SC.UNAVAILABLE, lone.stub.Call, pb.CallRequest(name=theirs[0], payload=b"get"))
        self.assertIn("is suspended on node n3@test (the node has no quorum)", details)
        # The majority keeps quorum: it re-homes n3's children and still starts new ones.
        self.wait_synced(majority, len(NAMES), timeout=30)
        majority[0].stub.StartChild(pb.StartChildRequest(spec=spec("p-extra", init=b"5")))
        self.assertEqual(majority[1].stub.Call(pb.CallRequest(name="p-extra", payload=b"get")).payload, b"5")
        majority[0].stub.TerminateChild(pb.TerminateChildRequest(name="p-extra"))
        self.assertIn("no quorum", lone.read_log())

        self.net.heal(3)
        self.wait_mesh(nodes, timeout=20)
        self.assert_each_runs_once(nodes)
        self.assertIn("not starting it here", lone.read_log())
        self.assertIn("quorum is back", lone.read_log())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
