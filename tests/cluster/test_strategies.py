"""Placement strategies loaded by a real cluster: every built-in by name and the
example rendezvous strategy by path, each a supervisor of one config, on three real
distsupd.  Children must run where the strategy says, and NodeFor must say the same
on every node.  A strategy that cannot load stops the daemon with a clear message."""

import collections
import os
import shutil
import subprocess
import tempfile
import time

import grpc

from cluster import DISTSUPD, ROOT_BIN, ClusterTest, main, pb, spec, wait_for
from test_cluster import Watcher

SC = grpc.StatusCode
RENDEZVOUS = os.path.abspath(os.path.join(ROOT_BIN, "examples", "rendezvous", "rendezvous.so"))
LABELS = {"n1@test": "zone=a", "n2@test": "zone=b", "n3@test": "zone=b"}
M64 = (1 << 64) - 1


def short_link(test, target):
    """A short path to target: a config line holds at most 199 characters, and the
    runfiles paths under Bazel are longer than that."""
    d = tempfile.mkdtemp(prefix="ds-", dir="/tmp")
    test.addCleanup(shutil.rmtree, d, True)
    link = os.path.join(d, os.path.basename(target))
    os.symlink(target, link)
    return link


def config(labels, rendezvous):
    return """
[daemon]
labels = %s

[supervisor:ring]
strategy = hash_ring
strategy_options = vnodes=64

[supervisor:least]
strategy = least_loaded

[supervisor:pin]
strategy = pinned
strategy_options = node=n2@test

[supervisor:zone]
strategy = pinned
strategy_options = label=zone=b

[supervisor:rdv]
strategy = %s

[supervisor:only12]
nodes = n1@test,n2@test
monitor_nodes = false
""" % (labels, rendezvous)


def fnv1a(h, s):
    for b in s.encode():
        h = ((h ^ b) * 0x100000001b3) & M64
    return h


def rendezvous_score(key, node):
    """examples/rendezvous/rendezvous.c's score(), written again from its description."""
    h = fnv1a(0xcbf29ce484222325, key)
    h = ((h ^ 0xff) * 0x100000001b3) & M64
    h = fnv1a(h, node)
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & M64
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & M64
    return h ^ (h >> 33)


class Strategies(ClusterTest):
    def setUp(self):
        super().setUp()
        rendezvous = short_link(self, RENDEZVOUS)
        self.nodes = self.make_cluster(3, config=config("", rendezvous), start=False)
        for n in self.nodes:  # each node its own labels
            with open(n.config_path, "w") as f:
                f.write(config(LABELS[n.node_name], rendezvous))
            n.start()
        self.wait_mesh(self.nodes)

    def start_all(self, sup, names, node_for=True):
        for name in names:
            self.nodes[0].stub.StartChild(pb.StartChildRequest(supervisor=sup, spec=spec(name)))
        self.wait_synced(self.nodes, len(names), sup=sup)
        where = {k: c.node for k, c in self.nodes[0].children(sup).items()}
        for node in self.nodes:  # NodeFor names the same node everywhere
            for name in names if node_for else ():
                self.assertEqual(node.stub.NodeFor(pb.NodeForRequest(supervisor=sup, key=name)).node,
                                 where[name], "%s/%s on %s" % (sup, name, node.node_name))
        return where

    def test_hash_ring_spreads_over_every_node(self):
        where = self.start_all("ring", ["h%02d" % i for i in range(60)])
        counts = collections.Counter(where.values())
        self.assertEqual(sorted(counts), sorted(LABELS), counts)
        self.assertTrue(all(8 <= v <= 35 for v in counts.values()), counts)

    def test_least_loaded_balances(self):
        # NodeFor follows today's loads, not where a child went when it started
        where = self.start_all("least", ["l%02d" % i for i in range(30)], node_for=False)
        counts = collections.Counter(where.values())
        answers = {n.stub.NodeFor(pb.NodeForRequest(supervisor="least", key="next")).node for n in self.nodes}
        self.assertEqual(len(answers), 1, "every node names the same least loaded node")
        self.assertEqual(sorted(counts), sorted(LABELS), counts)
        self.assertLessEqual(max(counts.values()) - min(counts.values()), 2, counts)

    def test_pinned_to_a_node_and_to_a_label(self):
        where = self.start_all("pin", ["pn%02d" % i for i in range(10)])
        self.assertEqual(set(where.values()), {"n2@test"})
        where = self.start_all("zone", ["z%02d" % i for i in range(20)])
        self.assertEqual(set(where.values()), {"n2@test", "n3@test"}, "zone=b is n2 and n3")

    def test_a_running_name_is_never_started_twice_wherever_the_strategy_points(self):
        # Started on n1 by StartChild's node, so least_loaded (which never moves a running
        # child) now points at n2 or n3 for every one of them: a second StartChild of the
        # name (through any node) must not start it there too, whichever node is the
        # name's directory (n1 runs it itself for about a third of them).
        names = ["twice%02d" % i for i in range(12)]
        for n in names:
            c = self.nodes[0].stub.StartChild(pb.StartChildRequest(supervisor="least", node="n1@test",
                                                                   spec=spec(n))).child
            self.assertEqual(c.node, "n1@test")
        self.assertNotEqual(self.nodes[0].stub.NodeFor(pb.NodeForRequest(supervisor="least", key="x")).node,
                            "n1@test")
        for node in self.nodes:
            for n in names:
                details = self.assertCode(SC.ALREADY_EXISTS, node.stub.StartChild,
                                          pb.StartChildRequest(supervisor="least", spec=spec(n)))
                self.assertIn("on node n1@test", details)
        self.wait_synced(self.nodes, len(names), sup="least")
        copies = self.running_copies(set(names))
        self.assertEqual(sorted(k[1] for k in copies), names)
        self.assertEqual([k for k, p in copies.items() if len(p) != 1], [])

    def test_nodes_option_limits_placement_and_monitor_nodes_false_hides_node_events(self):
        names = ["o%02d" % i for i in range(20)]
        for n in names:  # started through the node that is not eligible
            self.nodes[2].stub.StartChild(pb.StartChildRequest(supervisor="only12", spec=spec(n)))
        self.wait_synced(self.nodes, len(names), sup="only12")
        where = {k: c.node for k, c in self.nodes[0].children("only12").items()}
        self.assertEqual(set(where.values()), {"n1@test", "n2@test"})
        details = self.assertCode(SC.UNAVAILABLE, self.nodes[0].stub.StartChild,
                                  pb.StartChildRequest(supervisor="only12", node="n3@test", spec=spec("o-n3")))
        self.assertIn("not eligible", details)
        quiet = Watcher(self.nodes[0].stub, supervisor="only12", cluster=True)
        loud = Watcher(self.nodes[0].stub, cluster=True)
        time.sleep(0.3)
        self.nodes[2].kill9()
        wait_for(lambda: loud.of(pb.NODE_DOWN), timeout=15, what="NODE_DOWN on the default supervisor's Watch")
        time.sleep(0.5)
        self.assertEqual([e for e in quiet.events if e.kind in (pb.NODE_UP, pb.NODE_DOWN, pb.NODE_TERMINATE)], [])
        quiet.close()
        loud.close()

    def test_pinned_node_down_is_unavailable_without_fallback(self):
        self.nodes[1].kill9()
        wait_for(lambda: self.nodes[0].up_nodes() == ["n1@test", "n3@test"], timeout=10, what="n2 down")
        details = self.assertCode(SC.UNAVAILABLE, self.nodes[0].stub.StartChild,
                                  pb.StartChildRequest(supervisor="pin", spec=spec("nowhere")))
        self.assertIn("n2@test", details)

    def test_example_rendezvous_loaded_by_path_places_where_it_says(self):
        names = ["rv%02d" % i for i in range(40)]
        where = self.start_all("rdv", names)
        for name in names:
            want = max(LABELS, key=lambda node: rendezvous_score(name, node))
            self.assertEqual(where[name], want, name)
        self.assertEqual(len(set(where.values())), 3)
        self.assertIn("rendezvous.so", self.nodes[0].read_log())


class LoadErrors(ClusterTest):
    def run_daemon(self, strategy, options=""):
        ini = os.path.join(self.workdir, "bad.ini")
        with open(ini, "w") as f:
            f.write("[supervisor:s]\nstrategy = %s\nstrategy_options = %s\n" % (strategy, options))
        r = subprocess.run([DISTSUPD, "--listen", "127.0.0.1:0", "--data-dir", os.path.join(self.workdir, "d"),
                            "--config", ini], capture_output=True, text=True, timeout=20)
        self.assertNotEqual(r.returncode, 0)
        return r.stderr

    def test_missing_file_wrong_symbol_and_rejected_options_stop_start_up(self):
        missing = os.path.join(os.path.dirname(short_link(self, DISTSUPD)), "nope.so")
        err = self.run_daemon(missing)
        self.assertIn(missing, err)
        err = self.run_daemon("no_such_builtin")
        self.assertIn("no_such_builtin", err)
        not_a_strategy = short_link(self, DISTSUPD)  # an ELF without the symbol
        err = self.run_daemon(not_a_strategy)
        self.assertIn(not_a_strategy, err)
        err = self.run_daemon("hash_ring", "vnodes=0")
        self.assertIn("options rejected: vnodes=0", err)
        err = self.run_daemon(short_link(self, RENDEZVOUS), "x=1")
        self.assertIn("rendezvous takes no options", err)
        err = self.run_daemon("/" + "x" * 250 + ".so")
        self.assertIn("bad.ini:2: the line is longer than 199 characters", err)


if __name__ == "__main__":
    main()
