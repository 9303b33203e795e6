"""Hosted children across a cluster (docs/hosting.md): placement by kind, a host app
that dies, a host that comes back, a node that dies.  Real distsupd nodes on
loopback, real host apps (examples/python_counter_host, on clients/python's
distsup.host), grpcio clients."""

import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster import ClusterTest, main, pb, wait_for  # noqa: E402
from daemon import PY_CLIENT, PYTHON, src_path  # noqa: E402

import grpc  # noqa: E402

HOST_APP = src_path("examples", "python_counter_host", "counter_host.py")
CLIENTS_PY = PY_CLIENT

# Short grace and ping times so that the tests do not wait for the defaults.
CONFIG = """
[daemon]
host_grace_ms = 300
host_ping_ms = 200
host_timeout_ms = 2000
[supervisor:default]
max_moves = 64
"""


def hspec(name, kind="counter", **kw):
    return pb.ChildSpec(name=name, kind=kind, **kw)


class HostApps:
    """Host apps for a cluster test (a mixin): each a real process, killed at tearDown."""

    def setUp(self):
        super().setUp()
        self.apps = []

    def tearDown(self):
        for p in self.apps:
            if p.poll() is None:
                p.kill()
            p.wait()
        super().tearDown()

    def host_app(self, node, name, kind="counter"):
        """A host app attached to node's API; waits until the node lists its kind."""
        env = dict(os.environ, PYTHONPATH=CLIENTS_PY)
        log = open(os.path.join(self.workdir, "%s.log" % name), "ab")
        p = subprocess.Popen([PYTHON, HOST_APP, "--address", node.addr, "--name", name, "--kind", kind],
                             env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.apps.append(p)
        return p

    def kinds_of(self, asker, node_name):
        for n in asker.stub.Nodes(pb.NodesRequest()).nodes:
            if n.name == node_name:
                return list(n.kinds)
        return None

    def wait_kind(self, nodes, node_name, kind, present=True, timeout=15):
        for asker in nodes:
            wait_for(lambda: (kind in (self.kinds_of(asker, node_name) or [])) == present, timeout=timeout,
                     what="%s to see %s %s kind %s" % (asker.node_name, node_name,
                                                       "host" if present else "no longer host", kind))

    def call(self, node, name, payload, timeout=10):
        return node.stub.Call(pb.CallRequest(name=name, payload=payload), timeout=timeout).payload

    def answering(self, node, names, payload=b"get"):
        """Names whose Call answers now (through node)."""
        ok = set()
        for n in names:
            try:
                self.call(node, n, payload, timeout=5)
                ok.add(n)
            except grpc.RpcError:
                pass
        return ok


class HostedTest(HostApps, ClusterTest):
    pass


class Placement(HostedTest):
    def test_children_go_only_to_nodes_with_a_host_of_their_kind(self):
        n1, n2, n3 = self.make_cluster(3, config=CONFIG)
        self.host_app(n1, "app1")
        self.host_app(n2, "app2")
        self.wait_kind([n1, n2, n3], n1.node_name, "counter")
        self.wait_kind([n1, n2, n3], n2.node_name, "counter")
        self.assertEqual(self.kinds_of(n1, n3.node_name), [])
        names = ["h%d" % i for i in range(60)]
        for name in names:  # through the node without a host
            r = n3.stub.StartChild(pb.StartChildRequest(spec=hspec(name)), timeout=10)
            self.assertIn(r.child.node, (n1.node_name, n2.node_name))
            self.assertEqual(r.child.os_pid, 0)
        where = {c.name: c.node for c in n3.children().values()}
        self.assertEqual(set(where), set(names))
        # n3 runs none of them, yet counts them all as running (they have no pid)
        wait_for(lambda: n3.stub.CountChildren(pb.CountChildrenRequest()).active == len(names), timeout=10,
                 what="n3 to count the hosted children of n1 and n2 as active")
        self.assertNotIn(n3.node_name, where.values())
        self.assertTrue(any(v == n1.node_name for v in where.values()), where)
        self.assertTrue(any(v == n2.node_name for v in where.values()), where)
        for name in names:
            self.assertEqual(self.call(n3, name, b"incr"), b"1")
            host = self.call(n3, name, b"whoami").split()[1].decode()
            self.assertEqual(host, "app1" if where[name] == n1.node_name else "app2")

    def test_a_kind_no_node_hosts_is_refused_with_its_name(self):
        n1, n2 = self.make_cluster(2, config=CONFIG)
        self.host_app(n1, "app1")
        self.wait_kind([n1, n2], n1.node_name, "counter")
        with self.assertRaises(grpc.RpcError) as e:
            n2.stub.StartChild(pb.StartChildRequest(spec=hspec("x", kind="nokind")), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("nokind", e.exception.details())
        self.assertEqual(n1.children(), {})
        # pinned to a node without a host of the kind: refused too, and nothing kept
        with self.assertRaises(grpc.RpcError) as e:
            n1.stub.StartChild(pb.StartChildRequest(spec=hspec("y", node=n2.node_name)), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("counter", e.exception.details())
        self.assertEqual(n1.children(), {})


class Join(HostedTest):
    def test_a_joining_node_with_a_host_takes_a_share_with_state(self):
        nodes = self.make_cluster(3, config=CONFIG, start=2)
        n1, n2, n3 = nodes
        self.host_app(n1, "app1")
        self.host_app(n2, "app2")
        for node in (n1, n2):
            self.wait_kind([n1, n2], node.node_name, "counter")
        names = ["j%d" % i for i in range(60)]
        for name in names:
            n1.stub.StartChild(pb.StartChildRequest(spec=hspec(name)), timeout=10)
        for name in names:  # 3, handed off as State
            for _ in range(3):
                n1.stub.Cast(pb.CastRequest(name=name, payload=b"incr"))
            n1.stub.Cast(pb.CastRequest(name=name, payload=b"save"))
        wait_for(lambda: all(self.call(n1, n, b"get") == b"3" for n in names), timeout=10, what="counts of 3")
        time.sleep(0.3)
        n3.start()
        self.wait_mesh(nodes)
        # no host on n3 yet: nothing moves there
        time.sleep(1.5)
        self.assertFalse(any(c.node == n3.node_name for c in n1.children().values()))
        self.host_app(n3, "app3")
        self.wait_kind(nodes, n3.node_name, "counter")

        def share():
            kids = n1.children()
            on3 = [k for k, c in kids.items() if c.node == n3.node_name and c.state == pb.RUNNING]
            return len(kids) == len(names) and len(on3) >= len(names) // 6
        wait_for(share, timeout=30, what="n3 to take a share of the hosted children")
        self.wait_synced(nodes, len(names), timeout=30)
        for name in names:  # every one answers, with its State, wherever it went
            self.assertEqual(self.call(n2, name, b"get"), b"3", name)

    def test_concurrent_starts_of_one_name_start_it_once(self):
        nodes = self.make_cluster(3, config=CONFIG)
        for i, node in enumerate(nodes):
            self.host_app(node, "app%d" % (i + 1))
        for node in nodes:
            self.wait_kind(nodes, node.node_name, "counter")
        results = {}

        def start(i, name):
            try:
                r = nodes[i].stub.StartChild(pb.StartChildRequest(spec=hspec(name)), timeout=10)
                results[(i, name)] = ("ok", r.child.node)
            except grpc.RpcError as e:
                results[(i, name)] = (e.code(), e.details())
        names = ["c%d" % k for k in range(20)]
        threads = [threading.Thread(target=start, args=(i, n)) for n in names for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        for name in names:
            oks = [results[(i, name)] for i in range(3) if results[(i, name)][0] == "ok"]
            others = [results[(i, name)] for i in range(3) if results[(i, name)][0] != "ok"]
            self.assertEqual(len(oks), 1, "%s: %s" % (name, [results[(i, name)] for i in range(3)]))
            for code, _ in others:
                self.assertEqual(code, grpc.StatusCode.ALREADY_EXISTS, name)
        self.wait_synced(nodes, len(names))
        # each node counts only what runs there: together, each name once
        own = [x.children for n in nodes for x in n.stub.Nodes(pb.NodesRequest()).nodes if x.self]
        self.assertEqual(sum(own), len(names))


class HostLoss(HostedTest):
    def test_killed_host_app_its_children_move_to_a_node_with_a_host_with_state_and_come_back(self):
        n1, n2 = self.make_cluster(2, config=CONFIG)
        app1 = self.host_app(n1, "app1")
        self.host_app(n2, "app2")
        self.wait_kind([n1, n2], n1.node_name, "counter")
        self.wait_kind([n1, n2], n2.node_name, "counter")
        names = ["m%d" % i for i in range(40)]
        for name in names:
            n2.stub.StartChild(pb.StartChildRequest(spec=hspec(name)), timeout=10)
        on1 = sorted(c.name for c in n1.children().values() if c.node == n1.node_name)
        self.assertTrue(on1, "the hash put no child on n1")
        for name in on1:  # a count of 5 each, handed off as State ("save")
            for _ in range(5):
                self.call(n2, name, b"incr")
            n2.stub.Cast(pb.CastRequest(name=name, payload=b"save"), timeout=5)
        wait_for(lambda: all(self.call(n2, n, b"get") == b"5" for n in on1), timeout=10, what="counts of 5")
        time.sleep(0.3)  # the State frames that follow each save reach the daemon

        app1.kill()  # kill -9 of the app: its stream ends, its children wait, then move
        app1.wait()
        self.wait_kind([n1, n2], n1.node_name, "counter", present=False)

        def moved():
            kids = n2.children()
            return all(kids[n].node == n2.node_name and kids[n].state == pb.RUNNING for n in on1)
        wait_for(moved, timeout=20, what="n1's hosted children to move to n2")
        for name in on1:
            self.assertEqual(self.call(n1, name, b"get"), b"5", "state of %s after the move" % name)
            self.assertIn(b" app2 ", self.call(n1, name, b"whoami"))
        self.assertEqual(len(n1.children()), len(names))

        # a host comes back on n1: children move back there (rebalancing, bounded)
        self.host_app(n1, "app1b")
        self.wait_kind([n1, n2], n1.node_name, "counter")
        wait_for(lambda: any(c.node == n1.node_name and c.state == pb.RUNNING for c in n2.children().values()),
                 timeout=20, what="some children back on n1")
        wait_for(lambda: self.answering(n2, names) == set(names), timeout=20, what="every child answering")

    def test_a_silent_host_is_taken_for_gone(self):
        n1, = self.make_cluster(1, config=CONFIG)
        app = self.host_app(n1, "app1")
        self.wait_kind([n1], n1.node_name, "counter")
        n1.stub.StartChild(pb.StartChildRequest(spec=hspec("s1")), timeout=10)
        self.assertEqual(self.call(n1, "s1", b"incr"), b"1")
        app.send_signal(signal.SIGSTOP)  # hung: the stream stays open, nothing answers
        try:
            self.wait_kind([n1], n1.node_name, "counter", present=False, timeout=10)
            # restarted at once (RESTARTING for a tick), then waiting for a host
            wait_for(lambda: n1.stub.WhereIs(pb.WhereIsRequest(name="s1")).child.state == pb.SUSPENDED,
                     timeout=5, what="s1 waiting for a host (SUSPENDED)")
        finally:
            app.send_signal(signal.SIGCONT)
        # the app notices its stream ended, reconnects as a new session, and runs s1 again
        self.wait_kind([n1], n1.node_name, "counter", timeout=15)
        wait_for(lambda: self.answering(n1, ["s1"]) == {"s1"}, timeout=15, what="s1 answering again")


class NodeLoss(HostedTest):
    def test_kill9_of_a_node_rehomes_its_hosted_children_to_a_node_with_a_host(self):
        n1, n2, n3 = self.make_cluster(3, config=CONFIG)
        for node, name in ((n1, "app1"), (n2, "app2")):
            self.host_app(node, name)
        for node in (n1, n2):
            self.wait_kind([n1, n2, n3], node.node_name, "counter")
        names = ["k%d" % i for i in range(60)]
        for name in names:
            n3.stub.StartChild(pb.StartChildRequest(spec=hspec(name)), timeout=10)
        on1 = [c.name for c in n3.children().values() if c.node == n1.node_name]
        self.assertTrue(on1)
        n1.kill9()
        wait_for(lambda: all(c.node == n2.node_name and c.state == pb.RUNNING for c in n3.children().values())
                 and len(n3.children()) == len(names), timeout=30, what="every child running on n2")
        self.assertEqual(self.answering(n3, names, b"incr"), set(names))
        for name in on1:
            self.assertIn(b" app2 ", self.call(n3, name, b"whoami"))


if __name__ == "__main__":
    main()
