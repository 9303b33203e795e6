"""Metrics scraped by a real Prometheus: a 3-node cluster with --metrics-listen on
loopback, Debian's /usr/bin/prometheus scraping it every second (its config and its
TSDB in the test's scratch dir), and the numbers read back through Prometheus's HTTP
API (/api/v1/query) until they match what the test did: children started, a
restart, calls, a node killed with SIGKILL and the failover counted by the
survivors.  Skipped where /usr/bin/prometheus is missing."""

import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import grpc

from cluster import ClusterTest, free_ports, main, pb, spec, wait_for

import daemon  # noqa: E402 (tests/harness, on the path once cluster is imported)

PROMETHEUS = "/usr/bin/prometheus"
N_CHILDREN = 6
N_ECHO = 5


class Metrics(ClusterTest):
    def setUp(self):
        if not os.access(PROMETHEUS, os.X_OK):
            self.skipTest("%s is missing (Debian package prometheus; tools/setup.sh installs it)" % PROMETHEUS)
        super().setUp()

    def start_prometheus(self, targets, port):
        conf = os.path.join(self.workdir, "prometheus.yml")
        scrape = [{"targets": ["127.0.0.1:%d" % p], "labels": {"node": name}} for name, p in targets]
        with open(conf, "w") as f:  # JSON is YAML
            json.dump({"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                       "scrape_configs": [{"job_name": "distsup", "static_configs": scrape}]}, f)
        log = open(os.path.join(self.workdir, "prometheus.log"), "wb")
        self.addCleanup(log.close)
        self.popen([PROMETHEUS, "--config.file", conf,
                    "--storage.tsdb.path", os.path.join(self.workdir, "tsdb"),
                    "--web.listen-address", "127.0.0.1:%d" % port], stdout=log, stderr=subprocess.STDOUT)
        self.prom = "http://127.0.0.1:%d" % port

        def ready():
            try:
                with urllib.request.urlopen(self.prom + "/-/ready", timeout=2) as r:
                    return r.status == 200
            except (OSError, urllib.error.URLError):
                return False
        wait_for(ready, timeout=30, interval=0.2, what="prometheus ready")

    def raw_query(self, q):
        url = self.prom + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            return json.load(e)

    def query(self, q):
        """{node label: value} of an instant query (one series per node), or {} on error."""
        url = self.prom + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.load(r)
        except (OSError, urllib.error.URLError, ValueError):
            return {}
        if body.get("status") != "success":
            return {}
        return {s["metric"].get("node", ""): float(s["value"][1]) for s in body["data"]["result"]}

    def wait_query(self, q, want, what, timeout=30):
        """Waits until the query gives want ({node: value}); bounded."""
        got = {}

        def ok():
            got.clear()
            got.update(self.query(q))
            return got == want
        try:
            wait_for(ok, timeout=timeout, interval=0.5, what=what)
        except AssertionError:
            raise AssertionError("%s: %s gave %s, want %s" % (what, q, got, want))

    def test_prometheus_sees_starts_restart_calls_and_failover(self):
        nodes = self.make_cluster(3, start=False, args=["--down-after-ms", "1500", "--heartbeat-ms", "200"])
        mports = free_ports(4)
        for node, p in zip(nodes, mports):
            node.args += ["--metrics-listen", "127.0.0.1:%d" % p]
            node.start()
        self.wait_mesh(nodes)
        self.start_prometheus([(n.node_name, p) for n, p in zip(nodes, mports)], mports[3])
        names = [n.node_name for n in nodes]
        self.wait_query("up", {n: 1.0 for n in names}, "every node scraped")
        self.wait_query("distsup_peer_links_up", {n: 2.0 for n in names}, "two links up on every node")
        # each node measures its round trip to each of the two others (loopback: > 0, < 1 s)
        self.wait_query("count by (node) (distsup_peer_rtt_seconds > 0 < 1)", {n: 2.0 for n in names},
                        "a round trip to each of the two other nodes, on every node")

        # Children: started through n1, spread by placement; one of them crashes once.
        for i in range(N_CHILDREN):
            nodes[0].stub.StartChild(pb.StartChildRequest(spec=spec("m%d" % i, restart=pb.PERMANENT)))
        self.wait_synced(nodes, N_CHILDREN)
        where = {c.name: c.node for c in nodes[0].children().values()}
        per = {n: sum(1 for v in where.values() if v == n) for n in names}
        for i in range(N_ECHO):
            self.assertEqual(nodes[0].stub.Call(pb.CallRequest(name="m0", payload=b"echo:x")).payload, b"x")
        with self.assertRaises(grpc.RpcError):  # it exits before replying
            nodes[0].stub.Call(pb.CallRequest(name="m1", payload=b"crash"))
        self.wait_synced(nodes, N_CHILDREN)
        crashed_on = where["m1"]
        nodes[0].stub.Cast(pb.CastRequest(name="m2", payload=b"incr"))

        running = {n: float(per[n]) for n in names if per[n]}
        self.wait_query('sum by (node) (distsup_children{state="RUNNING"}) > 0', running, "children by state")
        self.wait_query("sum by (node) (distsup_child_restarts_total) > 0", {crashed_on: 1.0}, "the restart")
        self.wait_query('sum by (node) (distsup_child_exits_total{reason="abnormal"}) > 0', {crashed_on: 1.0},
                        "the abnormal exit")
        starts = dict(running)
        starts[crashed_on] += 1  # the restart is another start
        self.wait_query("sum by (node) (distsup_child_starts_total) > 0", starts, "starts")
        self.wait_query("sum(distsup_call_duration_seconds_count{node=%s})" % json.dumps(names[0]),
                        {"": float(N_ECHO + 1)}, "the calls' latency histogram on n1")
        self.wait_query("sum(distsup_casts_total)", {"": 1.0}, "the cast")
        cast_loc = "local" if where["m2"] == names[0] else "forwarded"
        self.wait_query('sum(distsup_cast_duration_seconds_count{node=%s, location="%s"})'
                        % (json.dumps(names[0]), cast_loc), {"": 1.0}, "the cast's latency histogram on n1")
        # A call the child holds for 8 s is in its node's mailbox, and only there.
        slow = nodes[0].stub.Call.future(pb.CallRequest(name="m2", payload=b"sleep:8000", timeout_ms=20000),
                                         timeout=30)
        self.wait_query("sum by (node) (distsup_mailbox_calls) > 0", {where["m2"]: 1.0}, "the mailbox depth")
        self.wait_query("max(distsup_mailbox_calls_max)", {"": 1.0}, "the fullest mailbox")
        self.assertEqual(slow.result(timeout=30).payload, b"slept")
        self.wait_query("sum(distsup_mailbox_calls)", {"": 0.0}, "the mailbox emptied")

        # kill -9 a node that is not n1 (the survivors' failover counters go up).
        victim = next(n for n in nodes[1:] if n.node_name != crashed_on)
        survivors = [n for n in nodes if n is not victim]
        lost = per[victim.node_name]
        victim.kill9()
        self.wait_synced(survivors, N_CHILDREN, timeout=30)
        alive = {n.node_name: 1.0 for n in survivors}
        # (the victim's series went stale with its last failed scrape: only the survivors answer)
        self.wait_query("distsup_failovers_total", alive, "the failover counted on each survivor", timeout=30)
        self.wait_query("distsup_nodes_up", {n: 2.0 for n in alive}, "nodes up on the survivors")
        self.wait_query("distsup_nodes_down", {n: 1.0 for n in alive}, "nodes down on the survivors")
        self.wait_query("sum(distsup_children_rehomed_total)", {"": float(lost)}, "children re-homed")
        self.wait_query('sum(distsup_children{state="RUNNING"})', {"": float(N_CHILDREN)}, "every child running")
        self.wait_query("distsup_quorum", {n: 1.0 for n in alive}, "quorum")
        self.wait_query("up", dict(alive, **{victim.node_name: 0.0}), "the victim's target down")
        for n in survivors:
            self.assertGreater(self.query("process_resident_memory_bytes").get(n.node_name, 0), 0)
            self.assertGreater(self.query("process_open_fds").get(n.node_name, 0), 0)

        # Every query of the Grafana dashboard is valid PromQL over these metrics, and
        # each panel shows something for this cluster.
        with open(daemon.src_path("deploy", "grafana", "distsup.json")) as f:
            dash = json.load(f)
        for panel in dash["panels"]:
            series = 0
            for t in panel["targets"]:
                q = t["expr"]
                for var, val in (("$__rate_interval", "1m"), ("$supervisor", ".*"), ("$instance", ".*"),
                                 ("$job", ".*")):
                    q = q.replace(var, val)
                body = self.raw_query(q)
                self.assertEqual(body.get("status"), "success", "%s: %s: %s" % (panel["title"], q, body))
                series += len(body["data"]["result"])
            self.assertGreater(series, 0, "panel %r shows nothing" % panel["title"])


if __name__ == "__main__":
    main()
