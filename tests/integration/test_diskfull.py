"""distsupd when its disk fills up: its data dir on a small tmpfs the test mounts (and
unmounts), so it needs a real root and runs outside Bazel's sandbox (local).

What must hold: nothing is acknowledged that is not on disk (a commit that fails loses
its whole batch, and later answers must not pretend otherwise); a StartChild that cannot
be saved fails INTERNAL and leaves nothing running; once there is room again the store
is written whole from memory, and a restart brings back exactly the children that were
acknowledged and not terminated."""

import os
import sqlite3
import subprocess
import time

import grpc

from harness import COUNTER, DaemonTest, main, pb, wait_for

SC = grpc.StatusCode
INIT = b"x" * 2000  # each spec takes a few KiB of the database and its WAL


class DiskFullTest(DaemonTest):
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs needs root")
        self.disk = os.path.join(self.workdir, "disk")
        os.mkdir(self.disk)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", self.disk], capture_output=True,
                           text=True)
        if r.returncode != 0:
            self.skipTest("cannot mount a tmpfs here: %s" % r.stderr.strip())
        self.addCleanup(subprocess.run, ["umount", "-l", self.disk], capture_output=True)
        # room the test gives back later
        self.ballast = os.path.join(self.disk, "ballast")
        with open(self.ballast, "wb") as f:
            f.write(b"\0" * (96 << 10))

    def rows(self, d):
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(d.data_dir, "distsup.db"), uri=True)
        try:
            return {r[0] for r in db.execute("SELECT name FROM children").fetchall()}
        finally:
            db.close()

    def test_nothing_is_acknowledged_that_is_not_on_disk(self):
        d = self.daemon(start=False)
        d.data_dir = os.path.join(self.disk, "data")
        d.start()
        acked, failed = [], None
        for i in range(500):
            name = "c%03d" % i
            try:
                d.stub.StartChild(pb.StartChildRequest(spec=pb.ChildSpec(name=name, argv=[COUNTER], init=INIT)),
                                  timeout=20)
                acked.append(name)
            except grpc.RpcError as e:
                failed = (name, e.code(), e.details())
                break
        self.assertIsNotNone(failed, "the disk never filled up")
        self.assertEqual(failed[1], SC.INTERNAL, failed)
        self.assertIn("cannot save the spec", failed[2])
        self.assertTrue(acked, "the first starts fit")
        # everything acknowledged is on disk; the refused one does not run
        self.assertTrue(set(acked) <= self.rows(d), sorted(set(acked) - self.rows(d)))
        wait_for(lambda: failed[0] not in {c.name for c in d.stub.Children(pb.ChildrenRequest()).children},
                 what="the refused child to be gone")
        self.assertIn("its spec is not on disk", d.read_log())

        # room again: the daemon writes its children again, and answers as before
        os.unlink(self.ballast)
        late = []

        def start_one():
            name = "late%02d" % len(late)
            try:
                d.stub.StartChild(pb.StartChildRequest(spec=pb.ChildSpec(name=name, argv=[COUNTER])), timeout=20)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), SC.INTERNAL, e.details())
                time.sleep(0.3)
                return False
            late.append(name)
            return True
        wait_for(start_one, timeout=20, interval=0, what="a StartChild to succeed once there is room")
        self.assertIn("holds this node's", d.read_log())
        gone = acked[0]
        d.stub.TerminateChild(pb.TerminateChildRequest(name=gone), timeout=20)
        self.assertNotIn(gone, self.rows(d))
        want = (set(acked) - {gone}) | set(late)
        self.assertEqual(self.rows(d), want)

        d.kill9()
        d.start()
        self.assertEqual({c.name for c in d.stub.Children(pb.ChildrenRequest()).children}, want)


if __name__ == "__main__":
    main()
