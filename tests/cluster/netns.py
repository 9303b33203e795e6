"""Test hosts in network namespaces, so that a partition can really be cut.

    root ns (the test)              <p>br (a bridge: the hosts' network)
      <p>a1 10.N.1.1/30 ---veth---+   +--- br0 ---+--- <p>n1: eth0 10.N.0.1/24
      <p>a2 10.N.2.1/30 ---veth---|---|-----------+--- <p>n2: eth0 10.N.0.2/24
      ...                         |   |           +--- <p>n3: eth0 10.N.0.3/24
                                  +-- each <p>nI also has api0 10.N.I.2/30

Peer links run over the bridge; the test reaches each node's API over a link of its
own, so cutting a node's bridge port (cut) partitions it from the other nodes while
the test can still ask it what it thinks.  Every name carries the test's pid and a
count of the Nets it made, so that neither two runs nor two tests of one run share a
name.  N (200..249) is one no address of the root namespace uses yet, chosen and taken
under a lock file (two runs at once, as with --runs_per_test, once drew the same N
from their pids and routed each other's traffic); it starts from the pid and the count
(the kernel may take a while to free a deleted namespace's veths).  remove() kills
what still runs in the namespaces and deletes them, which deletes every veth with them,
and waits until they are gone.  Needs root and iproute2.  Addresses stay inside
namespaces this test made itself."""

import fcntl
import os
import re
import subprocess
import time

from cluster import ClusterTest, Node, keygen

API_PORT, PEER_PORT = 7100, 7101
LOCK = "/tmp/distsup-netns.lock"  # held while a Net picks its N and makes its root-ns addresses


def ip(*args, ns=None):
    cmd = ["ip"] + (["-n", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("%s: %s" % (" ".join(cmd), r.stderr.strip()))


class Net:
    made_here = 0  # Nets this process made: names and addresses differ from each earlier one

    def __init__(self, n):
        Net.made_here += 1
        self.p = "ds%x%c" % (os.getpid() & 0xfffff, ord("a") + Net.made_here % 26)
        self.n = n
        self.made = []
        with open(LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
            used = {int(m) for m in re.findall(r"inet 10\.(\d+)\.", out)}
            first = (os.getpid() + Net.made_here) % 50
            free = [200 + (first + k) % 50 for k in range(50) if 200 + (first + k) % 50 not in used]
            if not free:
                raise AssertionError("no free 10.N.0.0/16 (N in 200..249) for a test network: %s" % sorted(used))
            self.net = free[0]
            try:
                self._make()
            except BaseException:
                self.remove()
                raise

    def ns(self, i):
        return "%sn%d" % (self.p, i)

    def peer_ip(self, i):
        return "10.%d.0.%d" % (self.net, i)

    def api_ip(self, i):
        return "10.%d.%d.2" % (self.net, i)

    def _netns(self, name):
        ip("netns", "add", name)
        self.made.append(name)
        ip("link", "set", "lo", "up", ns=name)

    def _make(self):
        br = self.p + "br"
        self._netns(br)
        ip("link", "add", "br0", "type", "bridge", ns=br)
        ip("link", "set", "br0", "up", ns=br)
        for i in range(1, self.n + 1):
            ns = self.ns(i)
            self._netns(ns)
            # the hosts' network: eth0 in the node, pI on the bridge
            ip("link", "add", "eth0", "type", "veth", "peer", "name", "p%d" % i, ns=ns)
            ip("link", "set", "p%d" % i, "netns", br, ns=ns)
            ip("link", "set", "p%d" % i, "master", "br0", ns=br)
            ip("link", "set", "p%d" % i, "up", ns=br)
            ip("addr", "add", self.peer_ip(i) + "/24", "dev", "eth0", ns=ns)
            ip("link", "set", "eth0", "up", ns=ns)
            # the test's own line to the node's API
            root_end = "%sa%d" % (self.p, i)
            ip("link", "add", root_end, "type", "veth", "peer", "name", "api0", "netns", ns)
            ip("addr", "add", "10.%d.%d.1/30" % (self.net, i), "dev", root_end)
            ip("link", "set", root_end, "up")
            ip("addr", "add", self.api_ip(i) + "/30", "dev", "api0", ns=ns)
            ip("link", "set", "api0", "up", ns=ns)

    def cut(self, i):
        """Node i loses the hosts' network (its API link stays)."""
        ip("link", "set", "p%d" % i, "down", ns=self.p + "br")

    def heal(self, i):
        ip("link", "set", "p%d" % i, "up", ns=self.p + "br")

    def remove(self):
        for name in reversed(self.made):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.made = []
        # a namespace (and its veths) goes when its last process has gone
        for _ in range(100):
            links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
            if not any(line.startswith(self.p + "a") for line in links.splitlines()):  # pa1, pa2...
                return
            time.sleep(0.05)


class NsNode(Node):
    """A cluster member running in network namespace net.ns(i)."""

    def __init__(self, net, i, workdir, name, key, trust, seeds, config=None, args=()):
        # The API listens on the namespace's addresses, reachable only from this test's
        # own namespaces: no token here (docs/security.md), said explicitly.
        super().__init__(workdir, name, API_PORT, PEER_PORT, key, trust, seeds, config,
                         list(args) + ["--listen", "0.0.0.0:%d" % API_PORT, "--insecure-api"], host=net.peer_ip(i))
        self.prefix = ["ip", "netns", "exec", net.ns(i)]
        self.peer_host, self.host = net.peer_ip(i), net.api_ip(i)

    @property
    def peer_addr(self):
        return "%s:%d" % (self.peer_host, self.peer_port)


class NetnsClusterTest(ClusterTest):
    def make_ns_cluster(self, n, config=None, args=()):
        """n nodes n1@test..nN@test, each in its own namespace, node 1 the seed."""
        if os.geteuid() != 0:
            raise AssertionError("partition tests make network namespaces: they need root")
        self.net = Net(n)
        self.addCleanup(self.net.remove)  # after tearDown has killed every daemon
        self.trust = os.path.join(self.workdir, "trusted")
        names = ["n%d@test" % (i + 1) for i in range(n)]
        nodes = []
        with open(self.trust, "w") as t:
            for i in range(n):
                key = os.path.join(self.workdir, "n%d.key" % (i + 1))
                t.write("%s %s\n" % (keygen(key), names[i]))
                seeds = ["%s:%d" % (self.net.peer_ip(1), PEER_PORT)] if i > 0 else []
                nodes.append(NsNode(self.net, i + 1, self.workdir, names[i], key, self.trust, seeds, config, args))
        self.daemons.extend(nodes)
        for node in nodes:
            node.start()
        self.wait_mesh(nodes)
        return nodes
