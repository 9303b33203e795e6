"""Hosted children at the protocol level, against a real distsupd: hosts written
here with raw grpcio streams, so that they can misbehave in ways no host library
would (docs/hosting.md, docs/security.md "Hosts").  The host libraries' own tests
(tests/clients/*) cover well-behaved hosts."""

import os
import queue
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness as h  # noqa: E402
from harness import pb, wait_for  # noqa: E402

import grpc  # noqa: E402

sys.path.insert(0, os.path.join(h.ROOT, "proto", "py"))
import child_pb2 as cpb  # noqa: E402

HOST_METHOD = "/distsup.v1.Supervisor/Host"


class RawHost:
    """A Host stream whose every message is chosen by the test.  read=False: it never
    reads what the daemon sends (a hung or slow app)."""

    def __init__(self, channel, raw=False):
        self.out = queue.Queue()
        self.down = queue.Queue()
        ser = (lambda b: b) if raw else (lambda m: m.SerializeToString())
        self.call = channel.stream_stream(HOST_METHOD, request_serializer=ser,
                                          response_deserializer=pb.HostDown.FromString)(self._gen())
        self.error = None

    def _gen(self):
        while True:
            m = self.out.get()
            if m is None:
                return
            yield m

    def send(self, m):
        self.out.put(m)

    def start_reader(self, answer=True):
        """Reads in a thread; answers pings, Init (Ready) and Calls (echo) when answer."""
        def run():
            try:
                for d in self.call:
                    self.down.put(d)
                    if not answer:
                        continue
                    if d.HasField("ping"):
                        self.send(pb.HostUp(pong=pb.HostPong(seq=d.ping.seq)))
                    up = []
                    for f in d.frames:
                        k = f.frame.WhichOneof("frame") if f.HasField("frame") else None
                        if k == "init":
                            up.append(pb.HostFrame(child=f.child, frame=cpb.ChildFrame(ready=cpb.Ready())))
                        elif k == "call":
                            up.append(pb.HostFrame(child=f.child, frame=cpb.ChildFrame(
                                reply=cpb.Reply(ref=f.frame.call.ref, payload=f.frame.call.payload))))
                        elif k == "terminate":
                            up.append(pb.HostFrame(child=f.child, exit=pb.HostExit(normal=True)))
                    if up:
                        self.send(pb.HostUp(frames=up))
            except grpc.RpcError as e:
                self.error = e
        self.reader = threading.Thread(target=run, daemon=True)
        self.reader.start()

    def first(self, timeout=10):
        """The first message down (blocking read, for a host that reads only that)."""
        return next(self.call)

    def ended(self, timeout=15):
        """Waits for the stream's end (read on); its status code and details."""
        deadline = time.time() + timeout
        try:
            for _ in self.call:
                if time.time() > deadline:
                    break
        except grpc.RpcError as e:
            return e.code(), e.details()
        return grpc.StatusCode.OK, ""

    def close(self):
        self.out.put(None)
        self.call.cancel()


def hello(*kinds, name="raw"):
    return pb.HostUp(hello=pb.HostHello(kinds=list(kinds), name=name))


class HostedProtocolTest(h.DaemonTest):
    def setUp(self):
        super().setUp()
        self.hosts = []

    def tearDown(self):
        for x in self.hosts:
            x.close()
        super().tearDown()

    def host(self, d, raw=False):
        x = RawHost(d.channel, raw=raw)
        self.hosts.append(x)
        return x

    def good_host(self, d, kind="counter"):
        x = self.host(d)
        x.send(hello(kind, name="good"))
        x.start_reader()
        wait_for(lambda: kind in self.kinds(d), what="the good host's kind listed")
        return x

    def kinds(self, d):
        return list(d.stub.Nodes(pb.NodesRequest()).nodes[0].kinds)

    def start(self, d, name, kind="counter"):
        return d.stub.StartChild(pb.StartChildRequest(spec=pb.ChildSpec(name=name, kind=kind)), timeout=10).child

    def test_a_host_that_stops_reading_gets_resource_exhausted_then_is_ended(self):
        # max_hosts = 1: the good host below attaches only once the slow one's session is
        # over, although its last send never finished
        d = self.daemon(config="[daemon]\nhost_ping_ms = 200\nhost_timeout_ms = 1500\nmax_hosts = 1\n")
        x = self.host(d)
        x.send(hello("counter", name="slow"))
        self.assertTrue(x.first().HasField("welcome"))
        # it reads the Init of one child and answers Ready, then reads nothing more
        t = threading.Thread(target=lambda: self.start(d, "s1"), daemon=True)
        t.start()
        init = next(x.call)
        f = init.frames[0]
        self.assertEqual(f.kind, "counter")
        self.assertEqual(f.frame.init.name, "s1")
        x.send(pb.HostUp(frames=[pb.HostFrame(child=f.child, frame=cpb.ChildFrame(ready=cpb.Ready()))]))
        t.join(10)
        self.assertEqual(d.stub.WhereIs(pb.WhereIsRequest(name="s1")).child.state, pb.RUNNING)
        # 1 MiB casts pile up: HTTP/2 holds them, then the daemon's own bound answers
        codes = set()
        for _ in range(64):
            try:
                d.stub.Cast(pb.CastRequest(name="s1", payload=b"x" * (1 << 20)), timeout=5)
            except grpc.RpcError as e:
                codes.add(e.code())
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    self.assertIn("s1", e.details())
                    break
        self.assertIn(grpc.StatusCode.RESOURCE_EXHAUSTED, codes)
        # silent (it answers no ping): taken for gone although its send never finishes
        wait_for(lambda: "counter" not in self.kinds(d), timeout=10, what="the silent host ended")
        wait_for(lambda: d.stub.WhereIs(pb.WhereIsRequest(name="s1")).child.state == pb.SUSPENDED, timeout=5,
                 what="s1 waiting for a host")
        # the daemon serves on, and a good host takes s1 over
        self.good_host(d)
        wait_for(lambda: d.stub.WhereIs(pb.WhereIsRequest(name="s1")).child.state == pb.RUNNING, timeout=10,
                 what="s1 running on the good host")
        self.assertEqual(d.stub.Call(pb.CallRequest(name="s1", payload=b"hi"), timeout=5).payload, b"hi")

    def test_malformed_and_forbidden_messages_end_only_that_host(self):
        d = self.daemon()
        good = self.good_host(d)
        self.start(d, "g1")
        cases = [
            ("not a HostUp", [b"\xff\xff\xff\xff"]),
            ("hello with a kind that is not UTF-8",
             [b"\x0a\x04\x0a\x02\xc3\x28"]),  # HostUp{hello{kinds: [0xc3 0x28]}}
            ("hello with no kind", [pb.HostUp(hello=pb.HostHello(name="x")).SerializeToString()]),
            ("a kind that is not a name", [hello("bad kind").SerializeToString()]),
            ("frames before hello", [pb.HostUp(frames=[pb.HostFrame(child=1, exit=pb.HostExit())]).SerializeToString()]),
            ("a second hello", [hello("counter").SerializeToString(), hello("counter").SerializeToString()]),
            ("a frame for a child never given", [hello("counter").SerializeToString(), pb.HostUp(frames=[
                pb.HostFrame(child=99, frame=cpb.ChildFrame(ready=cpb.Ready()))]).SerializeToString()]),
            ("a frame only the daemon sends", [hello("counter").SerializeToString(), pb.HostUp(frames=[
                pb.HostFrame(child=1, frame=cpb.ChildFrame(call=cpb.CallFrame(ref=1)))]).SerializeToString()]),
        ]
        for what, msgs in cases:
            with self.subTest(what):
                x = self.host(d, raw=True)
                for m in msgs:
                    x.send(m)
                code, details = x.ended()
                self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, "%s: %s" % (what, details))
                self.assertTrue(details, what)
        # a frame only the daemon sends, for a child it does run: ended too, child re-homed
        x = self.host(d)
        x.send(hello("other"))
        self.assertTrue(x.first().HasField("welcome"))
        refused = []

        def start_o1():  # fails: its host is refused before it is ready
            try:
                self.start(d, "o1", kind="other")
            except grpc.RpcError as e:
                refused.append(e.code())
        t = threading.Thread(target=start_o1, daemon=True)
        t.start()
        f = next(x.call).frames[0]
        x.send(pb.HostUp(frames=[pb.HostFrame(child=f.child, frame=cpb.ChildFrame(cast=cpb.CastFrame()))]))
        code, details = x.ended()
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("ready, reply, state and exit", details)
        t.join(10)
        self.assertEqual(refused, [grpc.StatusCode.FAILED_PRECONDITION])
        # the good host and its child were not touched
        self.assertEqual(d.stub.Call(pb.CallRequest(name="g1", payload=b"ok"), timeout=5).payload, b"ok")
        self.assertIsNone(good.error)
        self.assertEqual(self.kinds(d), ["counter"])

    def test_max_hosts(self):
        d = self.daemon(args=["--max-hosts", "2"])
        self.good_host(d, "a")
        self.good_host(d, "b")
        x = self.host(d)
        x.send(hello("c"))
        code, details = x.ended()
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("max_hosts", details)
        self.assertEqual(sorted(self.kinds(d)), ["a", "b"])

    def test_the_host_stream_needs_the_token(self):
        token = h.daemon.write_token(self.workdir, "hosted-secret-token-1234567890")
        d = self.daemon(args=["--api-token-file", token])
        x = self.host(d)
        x.send(hello("counter"))
        code, _ = x.ended()
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        md = [("authorization", "Bearer hosted-secret-token-1234567890")]
        ok = d.channel.stream_stream(HOST_METHOD, request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=pb.HostDown.FromString)(iter([hello("counter")]),
                                                                                    metadata=md)
        self.assertTrue(next(ok).HasField("welcome"))
        ok.cancel()

    def test_metrics_count_hosts_and_hosted_children(self):
        import urllib.request
        port = h.free_ports(1)[0]
        d = self.daemon(args=["--metrics-listen", "127.0.0.1:%d" % port, "--max-hosts", "2"])

        def scrape():
            text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
            return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                    if line and not line.startswith("#")}
        good = self.good_host(d)
        for i in range(3):
            self.start(d, "m%d" % i)
        m = scrape()
        self.assertEqual(m["distsup_hosts"], 1)
        self.assertEqual(m["distsup_hosted_children"], 3)
        self.assertEqual(m["distsup_hosted_waiting"], 0)
        bad = self.host(d, raw=True)  # refused: a frame for a child it was never given
        bad.send(hello("counter").SerializeToString())
        bad.send(pb.HostUp(frames=[pb.HostFrame(child=9, exit=pb.HostExit())]).SerializeToString())
        self.assertEqual(bad.ended()[0], grpc.StatusCode.INVALID_ARGUMENT)
        good.close()  # the app leaves: its children wait for a host
        wait_for(lambda: scrape()["distsup_hosted_waiting"] == 3, what="3 children waiting")
        m = scrape()
        self.assertEqual(m["distsup_hosts"], 0)
        self.assertEqual(m["distsup_hosted_children"], 0)
        self.assertEqual(m['distsup_host_sessions_ended_total{reason="refused"}'], 1)
        self.assertEqual(m['distsup_host_sessions_ended_total{reason="left"}'], 1)
        self.assertEqual(m['distsup_host_sessions_ended_total{reason="timeout"}'], 0)

    def test_hosted_spec_rules(self):
        d = self.daemon()
        bad = [
            (pb.ChildSpec(name="b1", kind="counter", argv=["/bin/true"]), "both"),
            (pb.ChildSpec(name="b2", kind="counter", env={"A": "1"}), "env"),
            (pb.ChildSpec(name="b3", kind="counter", protocol=pb.NONE), "protocol"),
            (pb.ChildSpec(name="b4", kind="no good"), "kind"),
        ]
        for spec, word in bad:
            details = self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, d.stub.StartChild,
                                      pb.StartChildRequest(spec=spec), timeout=5)
            self.assertIn(word, details)
        details = self.assertCode(grpc.StatusCode.UNAVAILABLE, d.stub.StartChild,
                                  pb.StartChildRequest(spec=pb.ChildSpec(name="n1", kind="nobody")), timeout=5)
        self.assertIn("nobody", details)
        self.assertEqual(d.stub.CountChildren(pb.CountChildrenRequest()).specs, 0)


if __name__ == "__main__":
    h.main()
