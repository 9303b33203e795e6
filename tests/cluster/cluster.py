"""Cluster harness: several real distsupd processes on loopback, with real keys.

Each node gets its own key pair (distsupd keygen), every node trusts every key in
one trust file, and fixed peer/API ports so that a node restarted after kill -9
comes back at the address its peers know.  Node i seeds from node 0 only, so the
rest of the mesh is learned by gossip (all_seeds: every node lists every other one,
as in the example configuration).  Every process is killed at tearDown."""

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from harness import (COUNTER, DISTSUPD, ROOT as ROOT_BIN, Daemon, DaemonTest, free_ports, main, pb,  # noqa: E402,F401
                     pbg, pid_alive, wait_for)

import grpc  # noqa: E402


class Callers:
    """Threads that Call names in turn (a read: "get") through the nodes in a list the
    caller may change meanwhile (take_out: a node about to stop leaves the list and its
    Calls in flight end first, as a load balancer drains a backend), counting the Calls
    and keeping every error: a planned move must show the callers none.  Used by the
    cluster tests and bench/cluster_bench.py."""

    def __init__(self, nodes, names, threads=2):
        self.via, self.names = list(nodes), sorted(names)
        self.calls, self.errors = 0, []
        self.lock = threading.Lock()
        self.busy = {}  # node -> Calls in flight through it
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, k):
        i = k
        while not self.stopping.is_set():
            with self.lock:
                node, name = self.via[i % len(self.via)], self.names[(i * 7919) % len(self.names)]
                self.busy[node] = self.busy.get(node, 0) + 1
            i += 1
            try:
                node.stub.Call(pb.CallRequest(name=name, payload=b"get"), timeout=10)
                self.calls += 1
            except grpc.RpcError as e:
                self.errors.append("%s via %s: %s %s" % (name, node.node_name, e.code(), e.details()))
            with self.lock:
                self.busy[node] -= 1

    def take_out(self, node):
        """No new Calls through node, and none left in flight through it."""
        with self.lock:
            self.via.remove(node)
        wait_for(lambda: self.busy.get(node, 0) == 0, timeout=20, what="the Calls through %s to end" % node.node_name)

    def running(self, n=10, timeout=10):
        """Waits until n Calls have been answered: the threads are under way.  Returns
        the count then (compare it with .calls later: calls made in between)."""
        wait_for(lambda: self.calls >= n or self.errors, timeout=timeout, what="%d Calls answered" % n)
        return self.calls

    def put_back(self, node):
        with self.lock:
            self.via.append(node)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(20)


def keygen(path):
    out = subprocess.run([DISTSUPD, "keygen", path], check=True, capture_output=True, text=True)
    return out.stdout.strip()


class Node(Daemon):
    """A cluster member; start() can be called again after a stop (same ports, same data)."""

    def __init__(self, workdir, name, api_port, peer_port, key, trust, seeds=(), config=None, args=(),
                 host="127.0.0.1"):
        self.api_port, self.peer_port = api_port, peer_port
        self.host = host
        cluster_args = ["--listen", "%s:%d" % (host, api_port),
                        "--peer-listen", "%s:%d" % (host, peer_port), "--key-file", key,
                        "--trust-file", trust]
        if seeds:
            cluster_args += ["--seeds", ",".join(seeds)]
        super().__init__(workdir, name.split("@")[0], config, cluster_args + list(args), node_name=name)

    @property
    def peer_addr(self):
        return "%s:%d" % (self.host, self.peer_port)

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def children(self, sup=""):
        """Every child, through Children's pages."""
        out, token = {}, ""
        while True:
            r = self.stub.Children(pb.ChildrenRequest(supervisor=sup, page_token=token))
            out.update((c.name, c) for c in r.children)
            token = r.next_page_token
            if not token:
                return out

    def up_nodes(self):
        return sorted(n.name for n in self.stub.Nodes(pb.NodesRequest()).nodes if n.up)


class ClusterTest(DaemonTest):
    """A test case that builds clusters; everything it starts is cleaned up."""

    def children_processes(self, names=None):
        """[(name, supervisor, node, pid)] of every live process some distsupd of this test
        started (one read of each /proc/PID/environ: the DISTSUP_* variables it got, and
        TMPDIR, the test's workdir), so that a copy nobody admits to (an orphan of a
        killed daemon) is found too, and another test's processes are not."""
        out, mine = [], self.workdir.encode()
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
            if b"DISTSUP_NAME" not in env or env.get(b"TMPDIR") != mine:
                continue
            name = env[b"DISTSUP_NAME"].decode()
            if names is None or name in names:
                out.append((name, env.get(b"DISTSUP_SUPERVISOR", b"").decode(), env.get(b"DISTSUP_NODE", b"").decode(),
                            int(pid)))
        return out

    def running_copies(self, names=None):
        """{(supervisor, name): [pid...]} of the live processes of names (all: None)."""
        found = {}
        for name, sup, _, pid in self.children_processes(names):
            found.setdefault((sup, name), []).append(pid)
        return found

    def nodes_running(self, names):
        """{name: [node of each running copy]}."""
        found = {}
        for name, _, node, _ in self.children_processes(names):
            found.setdefault(name, []).append(node)
        return found

    def make_cluster(self, n, config=None, args=(), start=True, names=None, keys_trusted=None, all_seeds=False):
        """n nodes n1@test..nN@test, all with keys in the trust file; node 0 is the seed
        of the others (all_seeds: every node has every other one as a seed).  start:
        True (all), False (none) or how many to start."""
        self.keys = []
        self.trust = os.path.join(self.workdir, "trusted")
        names = names or ["n%d@test" % (i + 1) for i in range(n)]
        ports = free_ports(2 * n)
        with open(self.trust, "w") as t:
            for i in range(n):
                key = os.path.join(self.workdir, "n%d.key" % (i + 1))
                pub = keygen(key)
                self.keys.append(key)
                if keys_trusted is None or i in keys_trusted:
                    t.write("%s %s\n" % (pub, names[i]))
        nodes = []
        for i in range(n):
            if all_seeds:
                seeds = ["127.0.0.1:%d" % ports[2 * k + 1] for k in range(n) if k != i]
            else:
                seeds = ["127.0.0.1:%d" % ports[1]] if i > 0 else []
            node = Node(self.workdir, names[i], ports[2 * i], ports[2 * i + 1], self.keys[i], self.trust,
                        seeds, config, args)
            self.daemons.append(node)
            nodes.append(node)
        k = n if start is True else int(start)
        for node in nodes[:k]:
            node.start()
        if k:
            self.wait_mesh(nodes[:k])
        return nodes

    def wait_mesh(self, nodes, timeout=15):
        """Every node in nodes sees exactly those nodes up."""
        want = sorted(n.node_name for n in nodes)
        for node in nodes:
            wait_for(lambda: node.up_nodes() == want, timeout=timeout,
                     what="%s to see %s up" % (node.node_name, want))

    def wait_synced(self, nodes, count, sup="", timeout=20):
        """Every node lists count children, all RUNNING, and they agree."""
        def ok():
            views = [{k: (c.node, c.state) for k, c in n.children(sup).items()} for n in nodes]
            return all(len(v) == count and all(st == pb.RUNNING for _, st in v.values()) for v in views) and \
                all(v == views[0] for v in views)
        wait_for(ok, timeout=timeout, what="%d RUNNING children agreed on by every node" % count)


def spec(name="", argv=None, **kw):
    return pb.ChildSpec(name=name, argv=argv or [COUNTER], **kw)
