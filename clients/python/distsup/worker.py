"""distsup.worker: write a supervised worker (a child that answers calls) in Python.

A worker is a process distsupd starts; it speaks the child frame protocol on its
stdin and stdout (4-byte big-endian length + a distsup.v1.ChildFrame).  run() owns
both: it reads Init, calls your init, sends Ready, then dispatches Call, Cast, Info
(Send) and Terminate until the sidecar closes stdin or sends Terminate.

    from distsup.worker import run

    def on_call(payload):            # bytes in; bytes, str or None out
        return b"pong:" + payload

    run(on_call=on_call)

or with a class (every method optional):

    from distsup.worker import Worker, CallError, run

    class Counter(Worker):
        def init(self, info):                 # info.name, .node, .init, .state ...
            self.n = int(info.state or info.init or b"0")
        def handle_call(self, payload):
            if payload == b"get":
                return str(self.n)
            raise CallError(3, "unknown request")    # the caller gets INVALID_ARGUMENT
        def handle_cast(self, payload): self.n += 1
        def handle_info(self, payload): self.n += 1   # Send
        def get_state(self):                   # handed to the next incarnation on a move
            return str(self.n).encode()
        def terminate(self, reason): pass

    run(Counter())

While handle_call, handle_cast or handle_info runs, the handler's traceparent and
tracestate attributes hold the caller's W3C trace context ("" when it sent none, or
an invalid one): continue the trace from there (docs/observability.md).  Callbacks
have no handler to read: use a Worker class for them.

An exception in handle_call fails that call (status UNKNOWN, or the CallError's
code); one in handle_cast or handle_info is logged; either way the worker keeps
serving.  sys.exit() ends the worker (a non-zero code is an abnormal exit, which
the sidecar restarts per the child's restart policy).

stdout belongs to the protocol: run() points file descriptor 1 (and so print()) at
stderr, which the sidecar logs under the child's name."""

import os
import struct
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

from .v1 import child_pb2

__all__ = ["Worker", "InitInfo", "CallError", "run", "serve", "MAX_FRAME"]

# The sidecar's ceiling for one frame's body.
MAX_FRAME = 4 * 1024 * 1024 + 64 * 1024


class CallError(Exception):
    """Raise from handle_call to fail the call with a gRPC status code and a message
    (e.g. CallError(3, "bad request") -> the caller sees INVALID_ARGUMENT)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = int(code)
        self.message = message


@dataclass
class InitInfo:
    supervisor: str
    name: str       # the child's name
    id: str         # this incarnation's id
    node: str       # the node it runs on
    init: bytes     # ChildSpec.init
    state: bytes    # the last State sent, after a restart or a move; b"" at first


class Worker:
    """Base class: override what you need.  A call on a worker without handle_call
    fails with UNIMPLEMENTED.  traceparent and tracestate: the trace context of the
    message being handled ("" when none)."""

    traceparent = ""
    tracestate = ""

    def init(self, info: InitInfo) -> None:
        pass

    def handle_call(self, payload: bytes):
        raise CallError(12, "this worker does not handle calls")

    def handle_cast(self, payload: bytes) -> None:
        pass

    def handle_info(self, payload: bytes) -> None:
        pass

    def get_state(self) -> Optional[bytes]:
        return None

    def terminate(self, reason: str) -> None:
        pass


def callbacks_class(base):
    """A handler class over base (Worker, or distsup.host.Child) whose methods call the
    functions it is made with (on_init, on_call, on_cast, on_info, get_state,
    on_terminate); a missing one does what base does."""

    class _Callbacks(base):
        def __init__(self, on_init=None, on_call=None, on_cast=None, on_info=None,
                     get_state=None, on_terminate=None):
            self._f = dict(init=on_init, call=on_call, cast=on_cast, info=on_info,
                           state=get_state, terminate=on_terminate)

        def init(self, info):
            if self._f["init"]:
                self._f["init"](info)

        def handle_call(self, payload):
            if not self._f["call"]:
                return base.handle_call(self, payload)
            return self._f["call"](payload)

        def handle_cast(self, payload):
            if self._f["cast"]:
                self._f["cast"](payload)

        def handle_info(self, payload):
            if self._f["info"]:
                self._f["info"](payload)

        def get_state(self):
            return self._f["state"]() if self._f["state"] else None

        def terminate(self, reason):
            if self._f["terminate"]:
                self._f["terminate"](reason)
    return _Callbacks


_Callbacks = callbacks_class(Worker)


class ProtocolError(Exception):
    pass


class _Conn:
    """Frames over two file descriptors."""

    def __init__(self, rfd: int, wfd: int):
        self.rfd, self.wfd = rfd, wfd
        self.buf = bytearray()

    def read(self) -> Optional[child_pb2.ChildFrame]:
        """The next frame, or None at end of input."""
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if n > MAX_FRAME:
                    raise ProtocolError("frame of %d bytes from the sidecar is too big" % n)
                if len(self.buf) >= 4 + n:
                    body = bytes(self.buf[4:4 + n])
                    del self.buf[:4 + n]
                    f = child_pb2.ChildFrame()
                    try:
                        f.ParseFromString(body)
                    except Exception as e:
                        raise ProtocolError("undecodable frame from the sidecar: %s" % e)
                    if f.WhichOneof("frame") is None:
                        raise ProtocolError("empty frame from the sidecar")
                    return f
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                if self.buf:
                    raise ProtocolError("stdin closed inside a frame")
                return None
            self.buf += chunk

    def write(self, frame: child_pb2.ChildFrame) -> None:
        body = frame.SerializeToString()
        if len(body) > MAX_FRAME:
            raise ProtocolError("frame of %d bytes is too big to send (max %d)"
                                % (len(body), MAX_FRAME))
        data = memoryview(struct.pack(">I", len(body)) + body)
        while data:
            n = os.write(self.wfd, data)
            data = data[n:]


def _as_bytes(v) -> bytes:
    if v is None:
        return b""
    if isinstance(v, str):
        return v.encode("utf-8")
    return bytes(v)


def _log(msg):
    sys.stderr.write("worker: %s\n" % msg)
    sys.stderr.flush()


def _reply(conn, ref, handler, payload):
    r = child_pb2.Reply(ref=ref)
    try:
        r.payload = _as_bytes(handler.handle_call(payload))
    except CallError as e:
        r.error, r.code = e.message or "error", e.code or 2
    except Exception as e:  # a bug in the handler: fail this call, keep serving
        traceback.print_exc(file=sys.stderr)
        r.error, r.code = "%s: %s" % (type(e).__name__, e), 2
    conn.write(child_pb2.ChildFrame(reply=r))


def _set_trace(handler, frame):
    """The message's trace context on the handler, for its handle_* method."""
    try:
        handler.traceparent = frame.traceparent
        handler.tracestate = frame.tracestate
    except AttributeError:  # an object that takes no attributes: it does without
        pass


def _guarded(handler, method, payload):
    fn = getattr(handler, method, None)
    if fn is None:
        return
    try:
        fn(payload)
    except Exception:  # logged; the worker keeps serving (sys.exit() to stop on purpose)
        traceback.print_exc(file=sys.stderr)


def serve(handler: Optional[Worker] = None, *, rfd: int = 0, wfd: Optional[int] = None,
          **callbacks: Callable) -> int:
    """Runs the worker loop and returns the exit code (0 on a clean end).  handler is
    a Worker (or any object with its methods); or give callbacks: on_init, on_call,
    on_cast, on_info, get_state, on_terminate."""
    if handler is None:
        handler = _Callbacks(**callbacks)
    elif callbacks:
        raise TypeError("give a handler or callbacks, not both")
    if wfd is None:
        # Keep the protocol's stdout for ourselves; fd 1 (print, subprocesses) -> stderr.
        sys.stdout.flush()
        wfd = os.dup(1)
        os.dup2(2, 1)
    conn = _Conn(rfd, wfd)
    try:
        first = conn.read()
        if first is None:
            return 0
        if first.WhichOneof("frame") != "init":
            _log("the first frame from the sidecar is not Init")
            return 1
        i = first.init
        info = InitInfo(supervisor=i.supervisor, name=i.name, id=i.id, node=i.node,
                        init=bytes(i.init), state=bytes(i.state))
        if hasattr(handler, "init"):
            try:
                handler.init(info)
            except Exception:  # start-up failed: no Ready, exit 1
                traceback.print_exc(file=sys.stderr)
                return 1
        conn.write(child_pb2.ChildFrame(ready=child_pb2.Ready()))
        while True:
            f = conn.read()
            if f is None:
                return 0
            kind = f.WhichOneof("frame")
            if kind == "call":
                _set_trace(handler, f.call)
                _reply(conn, f.call.ref, handler, bytes(f.call.payload))
            elif kind == "cast":
                _set_trace(handler, f.cast)
                _guarded(handler, "handle_cast", bytes(f.cast.payload))
            elif kind == "info":
                _set_trace(handler, f.info)
                _guarded(handler, "handle_info", bytes(f.info.payload))
            elif kind == "terminate":
                state = handler.get_state() if hasattr(handler, "get_state") else None
                if state is not None:
                    conn.write(child_pb2.ChildFrame(state=child_pb2.StateFrame(
                        state=_as_bytes(state))))
                if hasattr(handler, "terminate"):
                    handler.terminate(f.terminate.reason)
                return 0
            else:
                _log("ignoring unexpected %s frame" % kind)
    except ProtocolError as e:
        _log(str(e))
        return 1
    except (BrokenPipeError, KeyboardInterrupt):
        return 1


def run(handler: Optional[Worker] = None, **callbacks: Callable) -> None:
    """serve(), then exits the process with its code."""
    sys.exit(serve(handler, **callbacks))
