"""distsup.worker's frame loop, driven through real pipes frame by frame: the exact
frames a worker sends back (Ready, Reply with the call's ref, State on Terminate),
and how it treats bad input.  The end-to-end worker tests with a real distsupd are in
test_client.py."""

import os
import struct
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import clientharness as h  # noqa: E402

sys.path.insert(0, h.PY_CLIENT)
from distsup import worker  # noqa: E402
from distsup.v1 import child_pb2 as cpb  # noqa: E402


def frame(msg):
    body = msg.SerializeToString()
    return struct.pack(">I", len(body)) + body


def read_frames(data):
    out = []
    while data:
        (n,) = struct.unpack(">I", data[:4])
        f = cpb.ChildFrame()
        f.ParseFromString(data[4:4 + n])
        out.append(f)
        data = data[4 + n:]
    return out


class Recorder(worker.Worker):
    def __init__(self):
        self.log = []
        self.n = 0

    def init(self, info):
        self.log.append(("init", info.supervisor, info.name, info.id, info.node, info.init,
                         info.state))
        self.n = int(info.state or info.init or b"0")

    def handle_call(self, payload):
        self.log.append(("call", payload))
        if payload == b"fail":
            raise worker.CallError(9, "not now")
        if payload == b"bug":
            raise KeyError("oops")
        return str(self.n)

    def handle_cast(self, payload):
        self.log.append(("cast", payload))
        self.n += 1

    def handle_info(self, payload):
        self.log.append(("info", payload))
        if payload == b"bug":
            raise ValueError("info handler bug")
        self.n += 10

    def get_state(self):
        return str(self.n).encode()

    def terminate(self, reason):
        self.log.append(("terminate", reason))


def run_worker(handler, input_bytes, timeout=10.0, **kw):
    """Runs worker.serve on pipes: feeds input_bytes, closes stdin, returns (code, output)."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    result = {}

    def target():
        try:
            result["code"] = worker.serve(handler, rfd=in_r, wfd=out_w, **kw)
        finally:
            os.close(out_w)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    os.write(in_w, input_bytes)
    os.close(in_w)
    chunks = []
    while True:
        c = os.read(out_r, 65536)
        if not c:
            break
        chunks.append(c)
    t.join(timeout)
    os.close(in_r)
    os.close(out_r)
    if t.is_alive():
        raise AssertionError("the worker loop did not end")
    return result.get("code"), b"".join(chunks)


INIT = cpb.ChildFrame(init=cpb.Init(supervisor="default", name="w", id="n1/7", node="n1",
                                    init=b"5"))


class WorkerLoopTest(unittest.TestCase):
    def test_full_conversation(self):
        r = Recorder()
        inp = b"".join(frame(f) for f in [
            INIT,
            cpb.ChildFrame(call=cpb.CallFrame(ref=11, payload=b"get")),
            cpb.ChildFrame(cast=cpb.CastFrame(payload=b"c")),
            cpb.ChildFrame(info=cpb.InfoFrame(payload=b"i")),
            cpb.ChildFrame(call=cpb.CallFrame(ref=12, payload=b"get")),
            cpb.ChildFrame(call=cpb.CallFrame(ref=13, payload=b"fail")),
            cpb.ChildFrame(call=cpb.CallFrame(ref=14, payload=b"bug")),
            cpb.ChildFrame(info=cpb.InfoFrame(payload=b"bug")),
            cpb.ChildFrame(call=cpb.CallFrame(ref=15, payload=b"get")),
            cpb.ChildFrame(terminate=cpb.Terminate(reason="bye")),
            cpb.ChildFrame(call=cpb.CallFrame(ref=99, payload=b"after terminate: unread")),
        ])
        code, out = run_worker(r, inp)
        self.assertEqual(code, 0)
        fs = read_frames(out)
        kinds = [f.WhichOneof("frame") for f in fs]
        self.assertEqual(kinds, ["ready", "reply", "reply", "reply", "reply", "reply", "state"])
        replies = [f.reply for f in fs if f.WhichOneof("frame") == "reply"]
        self.assertEqual([x.ref for x in replies], [11, 12, 13, 14, 15])
        self.assertEqual((replies[0].payload, replies[0].error), (b"5", ""))
        self.assertEqual(replies[1].payload, b"16")
        self.assertEqual((replies[2].code, replies[2].error), (9, "not now"))
        self.assertEqual(replies[3].code, 2)
        self.assertIn("KeyError", replies[3].error)
        self.assertEqual(replies[4].payload, b"16")  # the failing info handler changed nothing
        self.assertEqual(fs[-1].state.state, b"16")
        self.assertEqual(r.log[0], ("init", "default", "w", "n1/7", "n1", b"5", b""))
        self.assertEqual(r.log[-1], ("terminate", "bye"))
        self.assertNotIn(("call", b"after terminate: unread"), r.log)

    def test_state_handed_over_on_init(self):
        r = Recorder()
        init = cpb.ChildFrame(init=cpb.Init(name="w", init=b"5", state=b"70"))
        code, out = run_worker(r, frame(init) + frame(
            cpb.ChildFrame(call=cpb.CallFrame(ref=1, payload=b"get"))))
        self.assertEqual(code, 0)  # stdin closed: a clean end
        self.assertEqual(read_frames(out)[1].reply.payload, b"70")

    def test_callbacks_form_and_no_state(self):
        calls = []
        code, out = run_worker(None, frame(INIT) + frame(
            cpb.ChildFrame(call=cpb.CallFrame(ref=3, payload=b"x"))) + frame(
            cpb.ChildFrame(terminate=cpb.Terminate(reason="r"))),
            on_call=lambda p: calls.append(p) or "ok")
        self.assertEqual(code, 0)
        fs = read_frames(out)
        self.assertEqual([f.WhichOneof("frame") for f in fs], ["ready", "reply"])  # no state
        self.assertEqual(fs[1].reply.payload, b"ok")
        self.assertEqual(calls, [b"x"])

    def test_no_call_handler_is_unimplemented(self):
        code, out = run_worker(worker.Worker(), frame(INIT) + frame(
            cpb.ChildFrame(call=cpb.CallFrame(ref=4, payload=b"x"))))
        self.assertEqual(code, 0)
        self.assertEqual(read_frames(out)[1].reply.code, 12)

    def test_first_frame_not_init(self):
        code, out = run_worker(Recorder(), frame(
            cpb.ChildFrame(call=cpb.CallFrame(ref=1, payload=b"x"))))
        self.assertEqual((code, out), (1, b""))

    def test_garbage_and_oversized_frames(self):
        code, out = run_worker(Recorder(), frame(INIT) + struct.pack(">I", 3) + b"\xff\xff\xff")
        self.assertEqual(code, 1)
        self.assertEqual([f.WhichOneof("frame") for f in read_frames(out)], ["ready"])
        code, out = run_worker(Recorder(), frame(INIT) + struct.pack(">I", worker.MAX_FRAME + 1))
        self.assertEqual(code, 1)
        code, out = run_worker(Recorder(), frame(INIT) + struct.pack(">I", 10) + b"abc")
        self.assertEqual(code, 1)  # stdin closed inside a frame

    def test_empty_input(self):
        self.assertEqual(run_worker(Recorder(), b""), (0, b""))

    def test_init_exception_aborts(self):
        class Bad(worker.Worker):
            def init(self, info):
                raise RuntimeError("cannot start")
        self.assertEqual(run_worker(Bad(), frame(INIT)), (1, b""))  # no Ready

    def test_handler_and_callbacks_exclusive(self):
        with self.assertRaises(TypeError):
            worker.serve(Recorder(), rfd=0, wfd=1, on_call=lambda p: p)


h.main() if __name__ == "__main__" else None
