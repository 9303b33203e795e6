"""The cluster figures of docs/performance.md, in one run, on loopback.

    bench/cluster.sh            (builds, then runs this with Debian's /usr/bin/python3)

Real distsupd processes with real keys and the C counter worker, default settings
(heartbeat 200 ms, down after 1000 ms), driven with grpcio and bench/call_bench:

1. Call latency to a child on a remote node, against a child on the node called and
   against the bare C-core echo server (bench/echo_server), 3 nodes; and with 256 KiB
   each way (the copies on the remote path).
2. Failover: kill -9 of a node holding about FAILOVER_CHILDREN children (hash-ring
   placement over 3 nodes, 3x that many in all); time until the last of them has
   started elsewhere (its PROCESS_START event on a survivor's cluster Watch) and until
   every one has answered a Call.
3. Keys moved when a 4th node joins, against the ideal 1/4, and the time for the
   moves to finish.
4. A rolling restart of 3 nodes holding ROLLING_CHILDREN (300) children: each node in
   turn is stopped (SIGTERM: a graceful leave) and started again; Calls through the
   other nodes throughout, and how many failed; children whose state was lost.
5. A 5-node cluster started at once (each seeded with the first): time until every
   node sees all 5 up.

Everything it starts is killed on exit, also on failure.  Prints one RESULT line per
figure (as call_bench does) and a table."""

import os
import subprocess
import sys
import tempfile
import threading
import time
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "cluster"))

from cluster import COUNTER, ROOT_BIN, Callers, Node, free_ports, keygen, pb  # noqa: E402

import grpc  # noqa: E402

CALL_BENCH = os.path.join(ROOT_BIN, "bench", "call_bench")
ECHO = os.path.join(ROOT_BIN, "bench", "echo_server")
COUNTER_HOST = os.path.join(ROOT_BIN, "examples", "counter_host", "counter_host")
N_HOSTED = int(os.environ.get("HOSTED_CHILDREN", "10000"))  # per node (hosted failover), per host (host loss)
N_FAIL = int(os.environ.get("FAILOVER_CHILDREN", "1000"))
N_ROLL = int(os.environ.get("ROLLING_CHILDREN", "300"))
SECS = os.environ.get("BENCH_SECONDS", "3")
LARGE = 256 * 1024  # bytes of the large-payload Calls, each way

results = []


def result(section, figure, value, unit):
    results.append((section, figure, value, unit))
    print("RESULT\t%s\t%s\t%s\t%s" % (section, figure, value, unit), flush=True)


def log(msg):
    print("cluster_bench: " + msg, file=sys.stderr, flush=True)


def all_children(stub):
    """Every child, through Children's pages (at most 1,000 a page by default)."""
    out, token = [], ""
    while True:
        r = stub.Children(pb.ChildrenRequest(page_token=token))
        out.extend(r.children)
        token = r.next_page_token
        if not token:
            return out


def calls_result(load, section, what):
    """Stops a cluster.Callers and reports its Calls and failures."""
    load.stop()
    result(section, "Calls during " + what, load.calls + len(load.errors), "")
    result(section, "... of which failed", len(load.errors), "")
    if load.errors:
        log("first failed call: " + load.errors[0])


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.01)
    raise SystemExit("cluster_bench: timed out waiting for " + what)


class Bench:
    def __init__(self):
        self.work = tempfile.mkdtemp(prefix="distsup-cbench-")
        self.nodes = []
        self.procs = []

    def close(self):
        for n in self.nodes:
            n.cleanup()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            log("kept " + self.work)

    def cluster(self, n, tag, start=True):
        """n nodes named TAGi@bench, every key trusted, every node a seed of the others
        (so a node that joins later finds the cluster whichever node was killed)."""
        trust = os.path.join(self.work, tag + ".trusted")
        ports = free_ports(2 * n)
        names = ["%s%d@bench" % (tag, i + 1) for i in range(n)]
        keys = []
        with open(trust, "w") as t:
            for name in names:
                key = os.path.join(self.work, name.split("@")[0] + ".key")
                t.write("%s %s\n" % (keygen(key), name))
                keys.append(key)
        nodes = []
        for i in range(n):
            seeds = ["127.0.0.1:%d" % ports[2 * j + 1] for j in range(n) if j != i]
            node = Node(self.work, names[i], ports[2 * i], ports[2 * i + 1], keys[i], trust, seeds,
                        args=["--log-level", os.environ.get("BENCH_LOG_LEVEL", "warn")])
            self.nodes.append(node)
            nodes.append(node)
        if start:
            for node in nodes:
                node.start()
            self.mesh(nodes)
        return nodes

    def mesh(self, nodes, timeout=30):
        want = sorted(n.node_name for n in nodes)
        for node in nodes:
            wait_for(lambda: sorted(x.name for x in node.stub.Nodes(pb.NodesRequest()).nodes if x.up) == want,
                     timeout, "%s to see %d nodes up" % (node.node_name, len(nodes)))

    def start_children(self, node, names, conc=16):
        """StartChild of every name through node, conc at a time."""
        futs = []
        errors = []
        for name in names:
            futs.append(node.stub.StartChild.future(
                pb.StartChildRequest(spec=pb.ChildSpec(name=name, argv=[COUNTER], init=b"7")), timeout=120))
            if len(futs) >= conc:
                f = futs.pop(0)
                if f.exception():
                    errors.append(f.exception())
        for f in futs:
            if f.exception():
                errors.append(f.exception())
        if errors:
            raise SystemExit("cluster_bench: %d starts failed, first: %s" % (len(errors), errors[0]))

    # ---------------------------------------------------------------- figures

    def latency(self):
        nodes = self.cluster(3, "l")
        echo_port = os.path.join(self.work, "echo.port")
        p = subprocess.Popen([ECHO, "--port-file", echo_port, "--threads", "2"], stderr=subprocess.DEVNULL)
        self.procs.append(p)
        wait_for(lambda: os.path.exists(echo_port) and os.path.getsize(echo_port) > 0, 10, "echo_server")
        port = open(echo_port).read().split()[0]
        runs = [
            ([CALL_BENCH, "echo", "127.0.0.1:" + port], "bare C-core echo"),
            ([CALL_BENCH, "call", nodes[0].addr, "--counter", COUNTER, "--node", nodes[0].node_name],
             "Call, child on the node called"),
            ([CALL_BENCH, "call", nodes[0].addr, "--counter", COUNTER, "--node", nodes[1].node_name],
             "Call, child on a remote node"),
            ([CALL_BENCH, "call", nodes[0].addr, "--counter", COUNTER, "--node", nodes[0].node_name,
              "--payload", str(LARGE)], "Call, child on the node called, %d KiB each way" % (LARGE // 1024)),
            ([CALL_BENCH, "call", nodes[0].addr, "--counter", COUNTER, "--node", nodes[1].node_name,
              "--payload", str(LARGE)], "Call, child on a remote node, %d KiB each way" % (LARGE // 1024)),
        ]
        for cmd, section in runs:
            out = subprocess.run(cmd + ["--seconds", SECS, "--conc", "16", "--channels", "1"],
                                 capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                raise SystemExit("cluster_bench: %s failed:\n%s" % (" ".join(cmd), out.stderr))
            for line in out.stdout.splitlines():
                f = line.split("\t")
                if f[0] == "RESULT":
                    result("latency (3 nodes): " + section, f[2], f[3], f[4])
        for n in nodes:
            n.stop()

    def failover_and_join(self):
        nodes = self.cluster(4, "f", start=False)
        for n in nodes[:3]:
            n.start()
        self.mesh(nodes[:3])
        names = ["c%04d" % i for i in range(3 * N_FAIL)]
        t0 = time.monotonic()
        self.start_children(nodes[0], names)
        wait_for(lambda: nodes[2].stub.CountChildren(pb.CountChildrenRequest()).active == len(names), 120,
                 "every start to be known cluster-wide")
        result("failover", "StartChild through one node, %d children over 3 nodes" % len(names),
               "%.0f" % (len(names) / (time.monotonic() - t0)), "1/s")

        where = {c.name: c.node for c in all_children(nodes[0].stub)}
        victim = max(nodes[:3], key=lambda n: sum(1 for v in where.values() if v == n.node_name))
        lost = {k for k, v in where.items() if v == victim.node_name}
        survivor = nodes[0] if victim is not nodes[0] else nodes[1]
        started, done, watch = self.follow_starts(survivor, lost)
        # the survivor's API while it takes over: sequential Calls to a child that ran on
        # it all along, from the kill until the last lost child has started elsewhere
        steady = next(k for k, v in where.items() if v == survivor.node_name)
        probe_lat = []

        def probe():
            while not done.is_set():
                t = time.monotonic()
                try:
                    survivor.stub.Call(pb.CallRequest(name=steady, payload=b"get"), timeout=10)
                except (grpc.RpcError, ValueError):  # ValueError: the bench is ending
                    return
                probe_lat.append(time.monotonic() - t)
        time.sleep(0.2)
        log("killing %s, which holds %d children" % (victim.node_name, len(lost)))
        t_kill = time.monotonic()
        victim.kill9()
        pt = threading.Thread(target=probe, daemon=True)
        pt.start()
        if not done.wait(60):
            raise SystemExit("cluster_bench: only %d of %d children started again" % (len(started), len(lost)))
        pt.join(15)
        t_started = max(started.values()) - t_kill
        probe_lat.sort()
        if probe_lat:
            q = lambda f: probe_lat[min(len(probe_lat) - 1, int(f * len(probe_lat)))] * 1e3  # noqa: E731
            result("failover", "survivor's Call to an unrelated child meanwhile: calls", len(probe_lat), "")
            result("failover", "survivor's Call to an unrelated child meanwhile: p50", "%.1f" % q(0.50), "ms")
            result("failover", "survivor's Call to an unrelated child meanwhile: p99", "%.1f" % q(0.99), "ms")
            result("failover", "survivor's Call to an unrelated child meanwhile: max", "%.1f" % (probe_lat[-1] * 1e3),
                   "ms")
        answering = set()
        pending = sorted(lost)
        while pending and time.monotonic() - t_kill < 120:
            futs = [(k, survivor.stub.Call.future(pb.CallRequest(name=k, payload=b"get"), timeout=10)) for k in pending]
            pending = []
            for k, f in futs:
                try:
                    if f.result().payload == b"7":
                        answering.add(k)
                        continue
                except grpc.RpcError:
                    pass
                pending.append(k)
        t_answer = time.monotonic() - t_kill
        watch.cancel()
        if pending:
            raise SystemExit("cluster_bench: %d children never answered" % len(pending))
        result("failover", "children on the killed node", len(lost), "")
        result("failover", "kill -9 to the last one started elsewhere", "%.2f" % t_started, "s")
        result("failover", "kill -9 to every one answering a Call", "%.2f" % t_answer, "s")

        # the 4th node joins the 2 survivors: how many of all children move to it
        rest = [n for n in nodes[:3] if n is not victim]
        before = {c.name: c.node for c in all_children(rest[0].stub)}
        new = nodes[3]
        # clients keep calling children through the two nodes throughout the join
        load = Callers(rest, before)
        t_join = time.monotonic()
        new.start()
        self.mesh(rest + [new])
        target = {k for k in before if new.stub.NodeFor(pb.NodeForRequest(key=k)).node == new.node_name}

        def settled():
            kids = all_children(new.stub)
            return sum(1 for c in kids if c.node == new.node_name and c.state == pb.RUNNING) == len(target)
        wait_for(settled, 120, "the moves to the new node")
        t_moved = time.monotonic() - t_join
        after = {c.name: c.node for c in all_children(new.stub)}
        moved = sum(1 for k in before if after.get(k) != before[k])
        n = len(before)
        result("join", "children before the join (on 2 nodes)", n, "")
        result("join", "moved to the new node", moved, "")
        result("join", "moved fraction (ideal 1/3 with 2 -> 3 nodes)", "%.3f" % (moved / n), "")
        result("join", "join to the last move done", "%.2f" % t_moved, "s")
        calls_result(load, "join", "the join")
        for node in nodes:
            node.cleanup()

    def rolling_restart(self):
        """Each of 3 nodes in turn: SIGTERM (a graceful leave hands its children over
        with their state), restarted with its data, back in the mesh and the moves back
        to it done; clients call every child throughout, through the nodes not being
        restarted."""
        nodes = self.cluster(3, "r")
        names = ["r%04d" % i for i in range(N_ROLL)]
        self.start_children(nodes[0], names)
        wait_for(lambda: all(n.stub.CountChildren(pb.CountChildrenRequest()).active == len(names) for n in nodes),
                 120, "every start to be known cluster-wide")
        for k in names:  # state 8, where a child started again from its init would say 7
            nodes[0].stub.Call(pb.CallRequest(name=k, payload=b"incr"))
        load = Callers(nodes, names)
        t0 = time.monotonic()
        for node in nodes:
            load.take_out(node)
            node.stop()
            node.start()
            self.mesh(nodes)
            load.put_back(node)

            def settled():  # all running, and the node has its share back
                kids = all_children(node.stub)
                mine = sum(1 for c in kids if c.node == node.node_name)
                return len(kids) == len(names) and all(c.state == pb.RUNNING for c in kids) and mine > 0
            wait_for(settled, 120, "%s to have children again" % node.node_name)
        t = time.monotonic() - t0
        result("rolling restart", "children (3 nodes)", len(names), "")
        result("rolling restart", "the 3 nodes restarted one after another", "%.2f" % t, "s")
        calls_result(load, "rolling restart", "the rolling restart")
        state = [k for k in names if nodes[0].stub.Call(pb.CallRequest(name=k, payload=b"get")).payload != b"8"]
        result("rolling restart", "children whose state was lost", len(state), "")
        for node in nodes:
            node.cleanup()

    # ------------------------------------------------------- hosted children

    def host_app(self, node, name):
        """A C counter host (examples/counter_host) attached to node; waits for it."""
        out = os.path.join(self.work, name + ".out")
        p = subprocess.Popen([COUNTER_HOST, "--target", node.addr, "--name", name], stdout=open(out, "w"),
                             stderr=subprocess.STDOUT)
        self.procs.append(p)
        wait_for(lambda: "attached" in open(out).read(), 10, name + " to attach")
        return p

    def start_hosted(self, node, names, conc=64, init=b"7"):
        futs, errors = [], []
        for name in names:
            futs.append(node.stub.StartChild.future(
                pb.StartChildRequest(spec=pb.ChildSpec(name=name, kind="counter", init=init)), timeout=120))
            if len(futs) >= conc:
                f = futs.pop(0)
                if f.exception():
                    errors.append(f.exception())
        for f in futs:
            if f.exception():
                errors.append(f.exception())
        if errors:
            raise SystemExit("cluster_bench: %d hosted starts failed, first: %s" % (len(errors), errors[0]))

    def follow_starts(self, node, names):
        """A Watch (cluster-wide) on node: the time each of names starts (Ready) again.
        Returns (started dict, done event, the call to cancel)."""
        started, done = {}, threading.Event()
        watch = node.stub.Watch(pb.WatchRequest(cluster=True, kinds=[pb.PROCESS_START]))

        def follow():
            try:
                for ev in watch:
                    if ev.name in names and ev.name not in started:
                        started[ev.name] = time.monotonic()
                        if len(started) == len(names):
                            done.set()
            except grpc.RpcError:
                pass
        threading.Thread(target=follow, daemon=True).start()
        time.sleep(0.3)  # subscribed before the kill
        return started, done, watch

    def answer_all(self, node, names, t0, limit=120, conc=256):
        """Seconds from t0 until every name has answered a Call "get" through node (each
        asked again until it does), and how many Calls failed meanwhile."""
        pending, failed = sorted(names), 0
        while pending and time.monotonic() - t0 < limit:
            nxt = []
            for i in range(0, len(pending), conc):
                batch = [(k, node.stub.Call.future(pb.CallRequest(name=k, payload=b"get"), timeout=10))
                         for k in pending[i:i + conc]]
                for k, f in batch:
                    try:
                        f.result()
                    except grpc.RpcError:
                        failed += 1
                        nxt.append(k)
            pending = nxt
        if pending:
            raise SystemExit("cluster_bench: %d hosted children never answered" % len(pending))
        return time.monotonic() - t0, failed

    def hosted_failover(self):
        """kill -9 of a node whose host app runs N_HOSTED hosted children (3 nodes, a
        host app on each): until every one of them answers through a survivor."""
        nodes = self.cluster(3, "h")
        for i, n in enumerate(nodes):
            self.host_app(n, "happ%d" % (i + 1))
        for n in nodes:
            wait_for(lambda: all("counter" in x.kinds for x in n.stub.Nodes(pb.NodesRequest()).nodes), 15,
                     "every node to list every node's kind")
        names = ["hc%05d" % i for i in range(3 * N_HOSTED)]
        t0 = time.monotonic()
        self.start_hosted(nodes[0], names)
        result("hosted failover", "StartChild through one node, %d hosted children over 3 nodes" % len(names),
               "%.0f" % (len(names) / (time.monotonic() - t0)), "1/s")
        wait_for(lambda: nodes[2].stub.CountChildren(pb.CountChildrenRequest()).active == len(names), 120,
                 "every hosted start to be known cluster-wide")
        where = {c.name: c.node for c in all_children(nodes[0].stub)}
        victim = max(nodes, key=lambda n: sum(1 for v in where.values() if v == n.node_name))
        lost = {k for k, v in where.items() if v == victim.node_name}
        survivor = nodes[0] if victim is not nodes[0] else nodes[1]
        time.sleep(0.5)
        started, done, watch = self.follow_starts(survivor, lost)
        log("killing %s, whose host runs %d hosted children" % (victim.node_name, len(lost)))
        t_kill = time.monotonic()
        victim.kill9()
        if not done.wait(60):
            raise SystemExit("cluster_bench: only %d of %d hosted children started again" % (len(started), len(lost)))
        t_started = max(started.values()) - t_kill
        t_answer, failed = self.answer_all(survivor, lost, t_kill)
        watch.cancel()
        result("hosted failover", "hosted children on the killed node", len(lost), "")
        result("hosted failover", "kill -9 to the last one running again on a survivor (aim: 2 s)",
               "%.2f" % t_started, "s")
        result("hosted failover", "kill -9 to every one having answered a Call (a sweep of Calls)",
               "%.2f" % t_answer, "s")
        for n in nodes:
            n.cleanup()

    def hosted_host_loss(self):
        """kill -9 of a host app running N_HOSTED children while another host of the kind
        is attached to the node: until every one of them answers again."""
        node, = self.cluster(1, "g")
        a = self.host_app(node, "gapp1")
        names = ["gc%05d" % i for i in range(N_HOSTED)]
        self.start_hosted(node, names)  # all on gapp1: the only host yet
        self.host_app(node, "gapp2")
        time.sleep(0.5)
        started, done, watch = self.follow_starts(node, set(names))
        log("killing the host app that runs %d hosted children" % len(names))
        t_kill = time.monotonic()
        a.kill()
        a.wait()
        if not done.wait(60):
            raise SystemExit("cluster_bench: only %d of %d hosted children started again" % (len(started), len(names)))
        t_started = max(started.values()) - t_kill
        t_answer, failed = self.answer_all(node, names, t_kill)
        watch.cancel()
        result("hosted host loss", "hosted children of the killed host app", len(names), "")
        result("hosted host loss", "kill -9 to the last one running again on the other host (aim: 1 s)",
               "%.2f" % t_started, "s")
        result("hosted host loss", "kill -9 to every one having answered a Call (a sweep of Calls)",
               "%.2f" % t_answer, "s")
        node.cleanup()

    def four_to_one_quarter(self):
        """Keys moved when a 4th node joins 3: placement alone, through NodeFor."""
        nodes = self.cluster(4, "k", start=False)
        for n in nodes[:3]:
            n.start()
        self.mesh(nodes[:3])
        keys = ["key-%05d" % i for i in range(10000)]
        before = {k: nodes[0].stub.NodeFor(pb.NodeForRequest(key=k)).node for k in keys}
        nodes[3].start()
        self.mesh(nodes)
        after = {k: nodes[0].stub.NodeFor(pb.NodeForRequest(key=k)).node for k in keys}
        moved = [k for k in keys if before[k] != after[k]]
        result("join", "keys re-placed when a 4th node joins 3 (10,000 keys)", "%.3f" % (len(moved) / len(keys)), "")
        result("join", "... of which to the new node", "%.3f" % (
            sum(1 for k in moved if after[k] == nodes[3].node_name) / max(1, len(moved))), "")
        for n in nodes:
            n.cleanup()

    def convergence(self):
        nodes = self.cluster(5, "c", start=False)
        t0 = time.monotonic()
        for n in nodes:
            n.start()
        self.mesh(nodes, timeout=60)
        result("convergence", "5 nodes started at once to all seeing 5 up", "%.2f" % (time.monotonic() - t0), "s")
        for n in nodes:
            n.cleanup()


def main():
    b = Bench()
    only = os.environ.get("BENCH_ONLY", "")  # e.g. BENCH_ONLY=failover_and_join
    try:
        for section in ("latency", "failover_and_join", "rolling_restart", "four_to_one_quarter", "convergence",
                        "hosted_failover", "hosted_host_loss"):
            if not only or section in only.split(","):
                getattr(b, section)()
    finally:
        b.close()
    print()
    last = None
    for section, figure, value, unit in results:
        if section != last:
            print("\n" + section)
            last = section
        print("  %-58s %10s %s" % (figure, value, unit))


if __name__ == "__main__":
    main()
