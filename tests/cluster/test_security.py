"""Hostile peers against real daemons: untrusted keys, garbage, and a trusted key
whose holder tampers with, replays or reorders sealed packets, or breaks the fragment
framing inside them; a trusted member that forges cluster messages (a Place it may
not send, another node's child, an unstartable spec, a flood of members); strangers
that flood the handshake slots or send huge first packets; keys that claim names the
trust file gives to others (tests/cluster/evilpeer.c).  docs/security.md ("Peers")
lists each attack with its test."""

import os
import socket
import stat
import subprocess
import threading
import time

from cluster import DISTSUPD, ROOT_BIN, ClusterTest, keygen, main, pb, pid_alive, spec, wait_for

import grpc  # noqa: E402

EVILPEER = os.path.join(ROOT_BIN, "tests", "cluster", "evilpeer")


class HostilePeers(ClusterTest):
    def evil(self, node, key, mode, name="n4@test"):
        out = subprocess.run([EVILPEER, node.peer_addr, key, mode, name], capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        return dict(kv.split("=") for kv in out.stdout.split())

    def refusals(self, node):
        return node.read_log().count("failed authentication")

    def test_untrusted_garbage_tampered_replayed_reordered_are_refused_and_the_cluster_goes_on(self):
        # The 4th key is trusted but no daemon runs it: the evil peer uses it.
        nodes = self.make_cluster(4, start=3)
        live, trusted_evil = nodes[:3], self.keys[3]
        stranger = os.path.join(self.workdir, "stranger.key")
        keygen(stranger)
        target = live[1]

        r = self.evil(target, stranger, "handshake")
        self.assertEqual(r, {"handshake": "refused", "received": "0", "closed": "yes"})
        self.assertIn("is not in the trust file", target.read_log())

        r = self.evil(target, stranger, "garbage")
        self.assertEqual(r, {"handshake": "refused", "received": "0", "closed": "yes"})
        self.assertIn("not a distsup peer handshake", target.read_log())

        # a trusted node of an older release (link protocol 1) is refused before anything
        # else, with a reason a person can act on
        r = self.evil(target, trusted_evil, "oldversion")
        self.assertEqual(r, {"handshake": "refused", "received": "0", "closed": "yes"})
        self.assertIn("it speaks peer link protocol 1, this node 2", target.read_log())

        # control: the same tool with a trusted key, its own name and honest packets is accepted
        r = self.evil(target, trusted_evil, "handshake")
        self.assertEqual(r["handshake"], "ok")
        wait_for(lambda: "node n4@test is up" in target.read_log(), what="the honest peer taken as n4@test")
        self.assertNotIn("it calls itself", target.read_log())
        self.assertGreater(int(r["received"]), 0, "an accepted peer hears the daemon's Join")
        self.assertEqual(self.refusals(target), 0)

        # a trusted key that claims another node's name (the trust file binds n4's key
        # to n4@test) is cut after its Join, and the real n1 stays up
        r = self.evil(target, trusted_evil, "handshake", name="n1@test")
        self.assertEqual(r["closed"], "yes", "an impostor must lose its link")
        self.assertIn("it calls itself n1@test, but the trust file gives its key", target.read_log())
        self.assertEqual(target.up_nodes(), ["n1@test", "n2@test", "n3@test"])

        for i, mode in enumerate(["tamper", "replay", "reorder"]):
            r = self.evil(target, trusted_evil, mode)
            self.assertEqual(r["handshake"], "ok", mode)
            self.assertEqual(r["closed"], "yes", "%s: the daemon must drop the link" % mode)
            wait_for(lambda: self.refusals(target) == i + 1, what="the %s refusal in the log" % mode)

        # a packet that opens but breaks the fragment framing (a middle fragment of a
        # message that never began) is cut too
        r = self.evil(target, trusted_evil, "fragment")
        self.assertEqual((r["handshake"], r["closed"]), ("ok", "yes"))
        wait_for(lambda: "a fragment out of place" in target.read_log(), what="the fragment refusal in the log")

        # The cluster keeps working: the mesh heals, starts and calls go everywhere.
        self.wait_mesh(live)
        for k in range(6):
            live[k % 3].stub.StartChild(pb.StartChildRequest(spec=spec("after%d" % k)))
        self.wait_synced(live, 6)
        for n in live:
            for k in range(6):
                self.assertEqual(n.stub.Call(pb.CallRequest(name="after%d" % k, payload=b"incr")).payload,
                                 str(live.index(n) + 1).encode())


MASK = (1 << 64) - 1


def _fnv_add(h, s):
    for b in s.encode():
        h = ((h ^ b) * 1099511628211) & MASK
    return h


def _mix(h):
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & MASK
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & MASK
    return h ^ (h >> 33)


def directory(name, nodes, sup="default"):
    """The directory node of a name over nodes (sidecar/fnv.h's fnv_directory)."""
    base = _fnv_add(1469598103934665603, sup)
    base = _fnv_add(((base ^ 0xff) * 1099511628211) & MASK, name)
    base = ((base ^ 0xfe) * 1099511628211) & MASK
    return max(nodes, key=lambda n: (_mix(_fnv_add(base, n)), [-ord(c) for c in n]))


def name_with_directory(prefix, want, nodes):
    for k in range(10000):
        name = "%s%d" % (prefix, k)
        if directory(name, nodes) == want:
            return name
    raise AssertionError("no name")


def vm_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


NO_MOVES = "[supervisor:default]\nmonitor_nodes = false\n"


class ForgedClusterMessages(ClusterTest):
    """A trusted member (n4's key, its own name) that says what it has no right to say."""

    def setUp(self):
        super().setUp()
        self.nodes = self.make_cluster(4, start=3, config=NO_MOVES)
        self.live = self.nodes[:3]
        self.target = self.live[1]  # n2
        # v1 runs on the target, v3 on n3: each pinned, so nothing moves them
        for name, node in (("v1", "n2@test"), ("v3", "n3@test")):
            self.live[0].stub.StartChild(pb.StartChildRequest(spec=spec(name, node=node)))
        self.wait_synced(self.live, 2)
        self.pids = {n: self.live[0].stub.WhereIs(pb.WhereIsRequest(name=n)).child.os_pid for n in ("v1", "v3")}

    def evil(self, mode, *args, node=None, name="n4@test"):
        node = node or self.target
        out = subprocess.run([EVILPEER, node.peer_addr, self.keys[3], mode, name] + list(args),
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        print("evilpeer %s: %s %s" % (mode, out.stdout.strip(), out.stderr.strip()))
        return dict(kv.split("=") for kv in out.stdout.split())

    def assert_unharmed(self, calls_from=None):
        """v1 and v3 run where they ran, with the same processes, and Calls from every
        node reach them."""
        for n in self.live:
            self.assertTrue(pid_alive(n.proc.pid), "%s must stay up" % n.node_name)
        for name, node in (("v1", "n2@test"), ("v3", "n3@test")):
            for n in calls_from or self.live:
                c = n.stub.WhereIs(pb.WhereIsRequest(name=name)).child
                self.assertEqual((c.node, c.os_pid, c.state), (node, self.pids[name], pb.RUNNING),
                                 "%s as %s sees it" % (name, n.node_name))
                n.stub.Call(pb.CallRequest(name=name, payload=b"incr"))

    def test_a_place_from_a_node_that_is_not_the_names_directory_is_refused(self):
        all4 = [n.node_name for n in self.nodes]
        name = name_with_directory("forged", "n1@test", all4)
        mark = os.path.join(self.workdir, "placed")
        r = self.evil("place", name, mark)
        self.assertEqual(r["handshake"], "ok")
        self.assertFalse(os.path.exists(mark), "the forged argv must not run")
        self.assertEqual(r.get("reply"), "7", "the forged Place must be refused (PERMISSION_DENIED)")
        self.assertIn("refused a Place", self.target.read_log())
        self.assertNotIn(name, self.target.children())
        self.assert_unharmed()

    def test_a_forwarded_start_that_skips_the_names_directory_is_refused(self):
        # A StartChild forwarded as the public op (nodes send DIR_START), or a DIR_START
        # to a node that is not the name's directory node, pinned to that node: either
        # would start the argv there without the name's reservation.
        all4 = [n.node_name for n in self.nodes]
        for mode in ("startchild", "dirstart"):
            name = name_with_directory("fwd-" + mode, "n1@test", all4)
            mark = os.path.join(self.workdir, "started-" + mode)
            r = self.evil(mode, name, mark, self.target.node_name)
            self.assertEqual(r["handshake"], "ok")
            self.assertFalse(os.path.exists(mark), "%s: the forwarded argv must not run" % mode)
            self.assertEqual(r.get("reply"), "14", "%s must be refused (UNAVAILABLE)" % mode)
            self.assertNotIn(name, self.target.children())
        self.assertIn("refused a forwarded StartChild", self.target.read_log())
        self.assertIn("refused a directory StartChild", self.target.read_log())
        self.assert_unharmed()

    def test_a_childinfo_under_another_nodes_id_is_refused(self):
        # An id borrowed from another node would divert WhoIs and TerminateChild by id
        # to the sender; an id of any size would cost memory (and disk, in the cache).
        v1 = self.target.stub.WhereIs(pb.WhereIsRequest(name="v1")).child
        r = self.evil("badid", "borrowed", v1.id)
        self.assertEqual(r["handshake"], "ok")
        r = self.evil("badid", "long", "n4@test/" + "x" * 900)
        self.assertEqual(r["handshake"], "ok")
        # no id at all passes only for a child with no process (SUSPENDED or FAILED)
        r = self.evil("badid", "noid", "")
        self.assertEqual(r["handshake"], "ok")
        wait_for(lambda: self.target.read_log().count("its id is not one of node n4@test's") >= 3,
                 what="the three refusals in the log")
        self.assertNotIn("borrowed", self.target.children())
        self.assertNotIn("long", self.target.children())
        self.assertNotIn("noid", self.target.children())
        self.assertEqual(self.target.stub.WhoIs(pb.WhoIsRequest(id=v1.id)).name, "v1")
        self.assert_unharmed()

    def test_a_forged_childinfo_with_a_huge_incarnation_takes_over_nothing(self):
        r = self.evil("childinfo", "v1")  # the target's own child
        self.assertEqual(r["handshake"], "ok")
        r = self.evil("childinfo", "v3")  # a third node's child, as the target sees it
        self.assertEqual(r["handshake"], "ok")
        self.assertNotIn("duplicate: the copy on node n4@test", self.target.read_log())
        self.assert_unharmed()
        self.assertGreaterEqual(self.target.read_log().count("refused a ChildInfo"), 2)

    def test_node_kinds_too_many_or_not_names_are_refused_and_place_nothing(self):
        # hosted children (docs/hosting.md): what a peer says it hosts is checked
        for args in (["5000"], ["1", "bad kind"], ["1", "x" * 300]):
            r = self.evil("kinds", *args)
            self.assertEqual(r["handshake"], "ok")
        self.assertGreaterEqual(self.target.read_log().count("NodeKinds"), 3)
        self.assertIn("NodeKinds with 5000 kinds (the limit is 4096)", self.target.read_log())
        # nothing was learned: the target knows no node that hosts a kind, so a hosted
        # start is refused rather than placed on the peer
        details = self.assertCode(grpc.StatusCode.UNAVAILABLE, self.target.stub.StartChild,
                                  pb.StartChildRequest(spec=pb.ChildSpec(name="h1", kind="k0")))
        self.assertIn("k0", details)
        self.assert_unharmed()
        # a valid NodeKinds is taken, but only about its sender
        r = self.evil("kinds", "2")
        self.assertEqual(r["handshake"], "ok")
        self.assertIn("node n4@test hosts 2 kinds", self.target.read_log())

    def test_a_childgone_for_another_nodes_child_erases_nothing(self):
        r = self.evil("gone", "v3", "n3@test")
        self.assertEqual(r["handshake"], "ok")
        self.assertIn("v3", self.target.children())
        self.assert_unharmed()
        self.assertIn("refused a ChildGone", self.target.read_log())

    def test_a_spec_without_argv_is_refused_and_nothing_crashes_now_or_at_restart(self):
        live3 = [n.node_name for n in self.live]
        # ghosts the target re-homes when n4 leaves: some the strategy puts on the target itself
        names = [name_with_directory("ghost%d-" % k, self.target.node_name, live3) for k in range(12)]
        r = self.evil("emptyargv", *names)
        self.assertEqual(r["handshake"], "ok")
        time.sleep(1.0)  # what would have re-homed the ghost ran by now
        self.assertTrue(pid_alive(self.target.proc.pid), "the target must not crash")
        self.assertIn("node n4@test left", self.target.read_log())
        self.assertIn("refused a ChildInfo", self.target.read_log())
        for n in self.live:
            self.assertFalse(set(names) & set(n.children()))
        self.target.stop()
        self.target.start()
        self.wait_mesh(self.live)
        self.assertFalse(set(names) & set(self.target.children()))
        self.wait_synced(self.live, 2)

    def test_twenty_thousand_gossiped_members_are_refused_and_the_node_stays_up(self):
        done = []
        t = threading.Thread(target=lambda: done.append(self.evil("gossip", "20000")))
        t.start()
        end = time.monotonic() + 4
        while time.monotonic() < end:  # nobody declares the target down meanwhile
            for n in (self.live[0], self.live[2]):
                self.assertIn(self.target.node_name, n.up_nodes())
            time.sleep(0.1)
        t.join(60)
        self.assertEqual(done[0]["handshake"], "ok")
        self.assertIn("refused a Members message", self.target.read_log())
        self.assertNotIn("fake000001@evil", self.target.read_log())
        for n in self.live:
            self.assertNotIn("node %s is down" % self.target.node_name, n.read_log())
        self.assert_unharmed()


    def test_gossiped_names_the_trust_file_does_not_bind_are_not_learned(self):
        # Under the per-message cap, but names no key of the trust file has: learning
        # them would fill the member table (1,024) for good and keep a real new node out.
        r = self.evil("gossip", "1000")
        self.assertEqual(r["handshake"], "ok")
        self.assertNotIn("learned of node fake", self.target.read_log())
        self.assertFalse([n for n in self.target.up_nodes() if "evil" in n])
        self.assert_unharmed()


class PreAuthentication(ClusterTest):
    """Before a key is proven: slots, sizes, our own key, names the trust file binds."""

    def evil(self, node, key, mode, *args, name="n4@test"):
        out = subprocess.run([EVILPEER, node.peer_addr, key, mode, name] + list(args), capture_output=True,
                             text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        return dict(kv.split("=") for kv in out.stdout.split())

    def test_huge_first_packets_are_dropped_before_they_are_buffered(self):
        if "ASAN_OPTIONS" in os.environ:  # ASan's quarantine keeps what was freed: RSS says nothing
            self.skipTest("resident memory is not the daemon's own under ASan")
        nodes = self.make_cluster(2)
        target = nodes[1]
        stranger = os.path.join(self.workdir, "stranger.key")
        keygen(stranger)
        before = vm_kib(target.proc.pid, "VmRSS")
        procs = [subprocess.Popen([EVILPEER, target.peer_addr, stranger, "bigfirst", "60"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
        for p in procs:
            out, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, err)
            self.assertIn("handshake=refused", out)
        peak = vm_kib(target.proc.pid, "VmHWM")
        self.assertLess(peak - before, 64 * 1024, "8 huge first packets grew the node by %d KiB" % (peak - before))
        self.wait_mesh(nodes)

    def test_a_flood_of_silent_handshakes_from_one_address_does_not_keep_a_peer_out(self):
        nodes = self.make_cluster(3, start=2)
        stranger = os.path.join(self.workdir, "stranger.key")
        keygen(stranger)
        flood = subprocess.Popen([EVILPEER, nodes[0].peer_addr, stranger, "flood", "100", "12"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(flood)
        time.sleep(1.5)  # the slots are full by now
        nodes[2].start()
        self.wait_mesh(nodes, timeout=10)
        out, err = flood.communicate(timeout=60)
        self.assertEqual(flood.returncode, 0, err)
        self.assertGreater(int(out.split("=")[1]), 1000, "the flood went on")
        self.assertIn("replaced the oldest handshake", nodes[0].read_log())

    def test_a_peer_presenting_our_own_key_is_refused(self):
        nodes = self.make_cluster(2)
        target = nodes[1]
        r = self.evil(target, self.keys[1], "handshake")
        self.assertEqual(r["handshake"], "refused")
        self.assertIn("presented this node's own key", target.read_log())
        self.wait_mesh(nodes)

    def test_a_dial_redirected_back_to_this_node_is_not_taken_for_this_node_forever(self):
        nodes = self.make_cluster(2, start=1)
        n1, n2 = nodes
        # n2's seed is a relay that first sends n2's dial back to n2 itself (an attacker
        # on the path needs no key for that), then to n1, as it should
        relay = socket.socket()
        relay.bind(("127.0.0.1", 0))
        relay.listen(16)
        where = {"port": n2.peer_port}

        def pipe(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    b.sendall(d)
            except OSError:
                pass
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def serve():
            while True:
                try:
                    c, _ = relay.accept()
                except OSError:
                    return
                try:
                    u = socket.create_connection(("127.0.0.1", where["port"]))
                except OSError:
                    c.close()
                    continue
                for a, b in ((c, u), (u, c)):
                    threading.Thread(target=pipe, args=(a, b), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        self.addCleanup(relay.close)
        n2.args += ["--seeds", "127.0.0.1:%d" % relay.getsockname()[1]]
        n2.start()
        wait_for(lambda: "presented this node's own key" in n2.read_log(), what="n2 refusing its own key")
        where["port"] = n1.peer_port
        self.wait_mesh(nodes, timeout=10)

    def test_names_are_bound_both_ways_in_the_trust_file(self):
        nodes = self.make_cluster(3)
        target = nodes[1]
        unnamed = os.path.join(self.workdir, "unnamed.key")
        pub = keygen(unnamed)
        with open(self.trust, "a") as f:
            f.write("%s\n" % pub)
        # the trust file is read at start: restart the target with the new line
        target.stop()
        target.start()
        self.wait_mesh(nodes)
        # an unnamed key may not take a name the trust file gives to another key ...
        r = self.evil(target, unnamed, "handshake", name="n3@test")
        self.assertEqual(r["closed"], "yes")
        self.assertIn("refused the link", target.read_log())
        # ... nor any name, without trust_unnamed = true
        r = self.evil(target, unnamed, "handshake", name="n9@test")
        self.assertEqual(r["closed"], "yes")
        self.assertIn("trust_unnamed", target.read_log())
        # a name that is not a valid node name is refused too
        r = self.evil(target, self.keys[2], "handshake", name="bad name")
        self.assertEqual(r["closed"], "yes")
        self.assertEqual(target.up_nodes(), ["n1@test", "n2@test", "n3@test"])
        self.wait_mesh(nodes)


class IdentityFiles(ClusterTest):
    def run_daemon(self, key, trust, psk=None):
        args = [DISTSUPD, "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir",
                os.path.join(self.workdir, "d"), "--node-name", "x@test", "--key-file", key, "--trust-file", trust]
        if psk:
            args += ["--cluster-key-file", psk]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(p)
        try:
            out, _ = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            return None, out
        return p.returncode, out

    def test_trust_and_cluster_key_files_writable_by_others_are_refused(self):
        key = os.path.join(self.workdir, "k.key")
        pub = keygen(key)
        trust = os.path.join(self.workdir, "trusted")
        with open(trust, "w") as f:
            f.write("%s x@test\n" % pub)
        os.chmod(trust, 0o664)
        rc, out = self.run_daemon(key, trust)
        self.assertNotEqual(rc, None, "the daemon must refuse to start")
        self.assertNotEqual(rc, 0)
        self.assertIn("writable by others", out)
        os.chmod(trust, 0o644)
        psk = os.path.join(self.workdir, "cluster.key")
        with open(psk, "w") as f:
            f.write("a cluster key of more than sixteen bytes\n")
        os.chmod(psk, 0o622)
        rc, out = self.run_daemon(key, trust, psk)
        self.assertNotEqual(rc, None, "the daemon must refuse to start")
        self.assertIn("writable by others", out)
        # a symbolic link to a key file is refused (O_NOFOLLOW)
        os.chmod(psk, 0o600)
        link = os.path.join(self.workdir, "link.key")
        os.symlink(key, link)
        rc, out = self.run_daemon(link, trust)
        self.assertNotEqual(rc, None, "the daemon must refuse to start")
        self.assertIn("symbolic link", out)


class StoredSpecs(ClusterTest):
    def test_a_bad_stored_spec_is_skipped_and_deleted_not_crashed_on(self):
        d = self.daemon("s")
        d.stub.StartChild(pb.StartChildRequest(spec=spec("good")))
        d.stop()
        bad = pb.ChildSpec(name="bad").SerializeToString().hex()  # no argv
        db = os.path.join(d.data_dir, "distsup.db")
        self.assertTrue(os.path.exists(db), os.listdir(d.data_dir))
        subprocess.run(["sqlite3", db, "INSERT INTO children (supervisor, name, spec, state, restarts, incarnation) "
                        "VALUES ('default', 'bad', X'%s', 0, 0, 1)" % bad], check=True)
        d.start()
        wait_for(lambda: "good" in {c.name for c in d.stub.Children(pb.ChildrenRequest()).children},
                 what="the good child back")
        time.sleep(0.5)
        self.assertTrue(pid_alive(d.proc.pid))
        self.assertNotIn("bad", {c.name for c in d.stub.Children(pb.ChildrenRequest()).children})
        self.assertIn("stored spec of child bad is invalid", d.read_log())
        d.stop()
        rows = subprocess.run(["sqlite3", db, "SELECT name FROM children"], check=True, capture_output=True,
                              text=True).stdout.split()
        self.assertEqual(rows, ["good"])


if __name__ == "__main__":
    main()
