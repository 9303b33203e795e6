"""Hostile peers against real daemons: untrusted keys, garbage, and a trusted key
whose holder tampers with, replays or reorders sealed packets, or breaks the fragment
framing inside them (tests/cluster/evilpeer.c)."""

import os
import subprocess

from cluster import ROOT_BIN, ClusterTest, keygen, main, pb, spec, wait_for

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


if __name__ == "__main__":
    main()
