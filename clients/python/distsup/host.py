"""distsup.host: run hosted children inside your Python app (docs/hosting.md).

The app attaches to its node's distsupd over the Host stream, says which child
*kinds* it runs, and then runs, in this process, every child of those kinds that
the cluster places on that node: one object per child, thousands per process.
distsupd still places, names, routes, supervises, restarts and persists them.

A child is a class with the methods of a distsup.worker.Worker (every one optional):

    from distsup.host import Host, Child, CallError

    class Counter(Child):
        def init(self, info):                  # info.name, .id, .node, .init, .state ...
            self.n = int(info.state or info.init or b"0")
        def handle_call(self, payload):        # bytes in; bytes, str or None out
            if payload == b"get":
                return str(self.n)
            raise CallError(3, "unknown request")   # the caller gets INVALID_ARGUMENT
        def handle_cast(self, payload): self.n += 1
        def handle_info(self, payload): self.n += 1  # Send
        def get_state(self): return str(self.n).encode()   # handed to the next incarnation
        def terminate(self, reason): pass

    host = Host("127.0.0.1:50051", name="app-1")   # token=, token_file=, tls ... as Supervisor
    host.register("counter", Counter)
    host.run()        # blocks; or host.start() (a background thread) and host.close()

Then any client starts children of the kind with a spec that names it
(ChildSpec.kind = "counter", no argv) and calls them by name as usual.

What the library keeps for you (docs/hosting.md, "The semantics a hosted child keeps"):

- One message at a time per child, in order: each child has a mailbox; a pool of
  `workers` threads runs children that have mail, never two handlers of one child
  at once.  Different children run concurrently (on the pool, under the GIL).
- An exception in handle_call fails only that call (status UNKNOWN, or the
  CallError's code).  One in init, handle_cast or handle_info ends the child with an
  abnormal exit (the daemon restarts it per its restart type).
- self.stop(normal=True, reason="") ends the child once the current handler returns:
  terminate(reason) runs, its get_state() is handed off, and it exits (normal or
  abnormal).  Called from outside a handler, it is queued behind the child's mail.
- On Terminate (TerminateChild, a move, a shutdown) terminate(reason) runs, then
  get_state() is sent, then the exit.  self.save_state() sends get_state() at once,
  so that a later crash restarts from it.
- When the stream ends, every child of the session is dropped (no more handlers
  run), and the host reconnects with backoff (100 ms doubling to 5 s, reset after a
  successful attach) until close().  The daemon restarts the children (here, or on
  another host of the kind) with the last State each sent.

Inside a handler the child has: self.name, self.id (this incarnation), self.node,
self.supervisor, self.kind, self.host, and, while handle_call/handle_cast/handle_info
runs, self.traceparent and self.tracestate (the caller's W3C trace context, "" when
none).  Handlers run on pool threads: a handler that blocks holds a worker; a child
that keeps its mailbox busy gets at most a burst of messages before others run."""

import collections
import logging
import os
import threading
import time
import traceback
from typing import Callable, Dict, Optional

import grpc

from .client import DEFAULT_ADDRESS, _read, _token
from .v1 import child_pb2 as cpb
from .v1 import supervisor_pb2 as pb
from .v1 import supervisor_pb2_grpc as pbg
from .worker import CallError, InitInfo, callbacks_class

__all__ = ["Host", "Child", "CallError", "InitInfo"]

log = logging.getLogger("distsup.host")

BACKOFF_FIRST = 0.1     # seconds before the first reconnect
BACKOFF_MAX = 5.0
BATCH_FRAMES = 4096     # most frames in one HostUp
BATCH_BYTES = 1 << 20   # about this many bytes in one HostUp (one larger frame goes alone)
BURST = 64              # messages a child handles before the pool worker moves on
NAME_MAX = 200          # bytes in a kind (as in a child name)


class Child:
    """Base class of a hosted child: override what you need.  A call on a child without
    handle_call fails with UNIMPLEMENTED.  The library sets name, id, node, supervisor,
    kind and host before init runs."""

    name = ""
    id = ""
    node = ""
    supervisor = ""
    kind = ""
    host = None
    traceparent = ""
    tracestate = ""

    def init(self, info: InitInfo) -> None:
        pass

    def handle_call(self, payload: bytes):
        raise CallError(12, "this child does not handle calls")

    def handle_cast(self, payload: bytes) -> None:
        pass

    def handle_info(self, payload: bytes) -> None:
        pass

    def get_state(self) -> Optional[bytes]:
        return None

    def terminate(self, reason: str) -> None:
        pass

    def stop(self, normal: bool = True, reason: str = "") -> None:
        """Ends this child after the current handler (or, from outside a handler, after
        the mail already queued): terminate(reason), its state handed off, then an
        exit, normal or abnormal (the daemon restarts an abnormal one, and a normal
        one of a PERMANENT child)."""
        slot = self.__dict__.get("_distsup_slot")
        if slot is None:
            raise RuntimeError("stop(): this child is not running under a Host")
        slot.host._request(slot, ("stop", bool(normal), str(reason or "")))

    def save_state(self) -> None:
        """Sends get_state() to the daemon now: the next incarnation starts from it,
        even after a crash (from outside a handler: after the mail already queued)."""
        slot = self.__dict__.get("_distsup_slot")
        if slot is None:
            raise RuntimeError("save_state(): this child is not running under a Host")
        slot.host._request(slot, ("save",))


# register(kind, on_call=...): one set of functions for every child of a kind.
_Callbacks = callbacks_class(Child)


_CALLBACKS = ("on_init", "on_call", "on_cast", "on_info", "get_state", "on_terminate")


def _as_bytes(v) -> bytes:
    if v is None:
        return b""
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError("a handler returned %s; give bytes, str or None" % type(v).__name__)


def _describe(e: BaseException) -> str:
    s = "%s: %s" % (type(e).__name__, e)
    return s[:1000]


def _check_kind(kind):
    if not isinstance(kind, str):
        raise TypeError("a kind is a str")
    b = kind.encode("utf-8")
    if not b or len(b) > NAME_MAX:
        raise ValueError("a kind is 1 to %d bytes long: %r" % (NAME_MAX, kind))
    for ch in kind:
        o = ord(ch)
        if o <= 0x20 or o == 0x7F or 0x80 <= o <= 0x9F:
            raise ValueError("a kind has no spaces or control characters: %r" % kind)


class _Kind:
    __slots__ = ("name", "factory", "capacity", "count")

    def __init__(self, name, factory, capacity):
        self.name, self.factory, self.capacity, self.count = name, factory, capacity, 0


class _Slot:
    """One child of one session: its mailbox and whether a pool worker has it."""

    __slots__ = ("host", "session", "num", "kind", "child", "mail", "scheduled", "dead",
                 "dropped", "runner", "stop_req", "counted")

    def __init__(self, host, session, num, kind):
        self.host, self.session, self.num, self.kind = host, session, num, kind
        self.child = None
        self.mail = collections.deque()
        self.scheduled = False   # queued on the pool or being run by a worker
        self.dead = False        # exited or dropped: run nothing more
        self.dropped = False     # dropped: send nothing more either
        self.runner = None       # the thread running its handler, while one runs
        self.stop_req = None     # (normal, reason) asked for by the running handler
        self.counted = False     # counts against its kind's capacity


class _Pong:
    __slots__ = ("seq",)

    def __init__(self, seq):
        self.seq = seq


_END = object()


class _Session:
    """One attach: the outgoing queue (batched into HostUp messages) and the children."""

    def __init__(self, host):
        self.host = host
        self.out = collections.deque()
        self.out_cv = threading.Condition(threading.Lock())
        self.ended = False
        self.slots: Dict[int, _Slot] = {}
        self.welcome = None
        self.call = None

    # -- up
    def put(self, item):
        with self.out_cv:
            if self.ended:
                return
            self.out.append(item)
            if len(self.out) == 1:
                self.out_cv.notify()

    def close_out(self):
        with self.out_cv:
            self.ended = True
            self.out.append(_END)
            self.out_cv.notify()

    def requests(self, hello):
        """The HostUp messages: hello, then batches of whatever is queued."""
        yield pb.HostUp(hello=hello)
        out, cv = self.out, self.out_cv
        while True:
            with cv:
                while not out:
                    cv.wait()
                items = []
                nframes = nbytes = 0
                pongs = 0
                while out and nframes < BATCH_FRAMES and nbytes < BATCH_BYTES:
                    it = out[0]
                    if it is _END:
                        break
                    if isinstance(it, _Pong):
                        if pongs:
                            break
                        pongs = 1
                    else:
                        nframes += len(it)
                        nbytes += sum(f.ByteSize() for f in it)
                    items.append(out.popleft())
                end = not items and out and out[0] is _END
            if end:
                return
            up = pb.HostUp()
            for it in items:
                if isinstance(it, _Pong):
                    up.pong.seq = it.seq
                else:
                    up.frames.extend(it)
            yield up


class Host:
    """Hosts children of the kinds registered, on the distsupd at address.

    address: "HOST:PORT" or "unix:/PATH" (default: $DISTSUP_ADDR, else 127.0.0.1:50051).
    token / token_file / tls / tls_ca_file / tls_cert_file / tls_key_file: as for
    distsup.Supervisor (default token: $DISTSUP_TOKEN, else the file $DISTSUP_TOKEN_FILE).
    name: this host's name in the daemon's logs (e.g. the pod name); labels: its labels.
    workers: threads that run handlers (default 4).  max_pending: messages waiting in
    mailboxes before the host stops reading from the daemon until some are handled
    (then the daemon's own bounds apply: its callers see RESOURCE_EXHAUSTED; and a
    host whose handlers stay stuck past the daemon's host_timeout_ms answers no
    pings meanwhile, and is taken for gone)."""

    def __init__(self, address: Optional[str] = None, *, token: Optional[str] = None,
                 token_file: Optional[str] = None, tls: bool = False,
                 tls_ca_file: Optional[str] = None, tls_cert_file: Optional[str] = None,
                 tls_key_file: Optional[str] = None, name: str = "",
                 labels: Optional[Dict[str, str]] = None, workers: int = 4,
                 max_pending: int = 65536, channel: Optional[grpc.Channel] = None):
        if int(workers) < 1:
            raise ValueError("workers must be at least 1")
        if int(max_pending) < 1:
            raise ValueError("max_pending must be at least 1")
        self.address = address or os.environ.get("DISTSUP_ADDR") or DEFAULT_ADDRESS
        self.name = name or ""
        self.labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self.workers = int(workers)
        self.max_pending = int(max_pending)
        tok = _token(token, token_file)
        self._md = (("authorization", "Bearer " + tok),) if tok else None
        options = [("grpc.primary_user_agent", "distsup-python-host/1"),
                   ("grpc.max_receive_message_length", -1),
                   ("grpc.max_send_message_length", -1),
                   # reconnect to a restarted daemon as fast as our own backoff asks
                   ("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 5000)]
        self._own_channel = channel is None
        if channel is None and (tls or tls_ca_file or tls_cert_file or tls_key_file):
            if bool(tls_cert_file) != bool(tls_key_file):
                raise ValueError("a client certificate needs both tls_cert_file and tls_key_file")
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca_file, "TLS CA file") if tls_ca_file else None,
                private_key=_read(tls_key_file, "TLS key") if tls_key_file else None,
                certificate_chain=_read(tls_cert_file, "TLS certificate") if tls_cert_file else None)
            channel = grpc.secure_channel(self.address, creds, options=options)
        self.channel = channel or grpc.insecure_channel(self.address, options=options)
        self._stub = pbg.SupervisorStub(self.channel)

        self._kinds: Dict[str, _Kind] = {}
        self._lock = threading.Lock()             # mailboxes, slots, counts, sessions
        self._room = threading.Condition(self._lock)  # pending fell below max_pending
        self._pending = 0
        self._ready = collections.deque()          # slots with mail, for the pool
        self._ready_cv = threading.Condition(self._lock)
        self._pool = []
        self._session: Optional[_Session] = None
        self._attached = threading.Condition(self._lock)
        self._closed = threading.Event()
        self._running = False
        self._frozen = False                       # run() or start() was called: kinds fixed
        self._thread: Optional[threading.Thread] = None
        self._tls = threading.local()
        self.sessions = 0                          # attaches so far

    def __repr__(self):
        return "Host(%r, kinds=%r)" % (self.address, sorted(self._kinds))

    # -- set-up
    def register(self, kind: str, factory: Optional[Callable[[], Child]] = None, *,
                 capacity: int = 0, **callbacks: Callable) -> "Host":
        """Hosts children of kind: factory() makes one (a Child subclass, or any callable
        returning an object with its methods); or give callbacks (on_init, on_call,
        on_cast, on_info, get_state, on_terminate), shared by every child of the kind.
        capacity: at most this many children of the kind at once (0: no limit).  The
        daemon counts a host's children as a whole: the hello carries the sum of the
        capacities, or 0 when a kind has none.  Register before run()/start()."""
        _check_kind(kind)
        if self._frozen:
            raise RuntimeError("register() before run() or start(): kinds go in the hello")
        if kind in self._kinds:
            raise ValueError("kind %r is registered already" % kind)
        unknown = set(callbacks) - set(_CALLBACKS)
        if unknown:
            raise TypeError("unknown callbacks: %s" % ", ".join(sorted(unknown)))
        if factory is None:
            if not callbacks:
                raise TypeError("register() needs a factory (a Child class) or callbacks")
            cbs = dict(callbacks)
            factory = lambda: _Callbacks(**cbs)  # noqa: E731
        elif callbacks:
            raise TypeError("give a factory or callbacks, not both")
        elif not callable(factory):
            raise TypeError("factory must be callable (a Child subclass)")
        if int(capacity) < 0:
            raise ValueError("capacity must be 0 or more")
        if len(self._kinds) >= 64:
            raise ValueError("a host runs at most 64 kinds")
        self._kinds[kind] = _Kind(kind, factory, int(capacity))
        return self

    def _hello(self):
        caps = [k.capacity for k in self._kinds.values()]
        cap = 0 if not caps or 0 in caps else min(sum(caps), 0xFFFFFFFF)
        return pb.HostHello(kinds=list(self._kinds), capacity=cap, labels=self.labels,
                            name=self.name)

    # -- state
    @property
    def attached(self) -> bool:
        with self._lock:
            return self._session is not None and self._session.welcome is not None

    @property
    def node(self) -> str:
        """The node of the current session ("" while not attached)."""
        with self._lock:
            s = self._session
            return s.welcome.node if s is not None and s.welcome is not None else ""

    @property
    def session(self) -> str:
        """The current session's id ("" while not attached)."""
        with self._lock:
            s = self._session
            return s.welcome.session if s is not None and s.welcome is not None else ""

    @property
    def child_count(self) -> int:
        """Children running now."""
        with self._lock:
            return sum(k.count for k in self._kinds.values())

    def wait_attached(self, timeout: Optional[float] = None) -> bool:
        """Blocks until a session is attached (True), or timeout seconds (False)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not (self._session is not None and self._session.welcome is not None):
                if self._closed.is_set():
                    return False
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._attached.wait(left if left is not None else 1.0)
            return True

    # -- running
    def run(self) -> None:
        """Attaches and serves until close(); reconnects with backoff when the stream
        ends.  Blocks."""
        if not self._kinds:
            raise RuntimeError("register at least one kind before run()")
        with self._lock:
            if self._running:
                raise RuntimeError("this Host runs already")
            if self._closed.is_set():
                raise RuntimeError("this Host is closed")
            self._running = self._frozen = True
        try:
            self._start_pool()
            backoff = BACKOFF_FIRST
            while not self._closed.is_set():
                attached = self._run_session()
                if self._closed.is_set():
                    break
                if attached:
                    backoff = BACKOFF_FIRST
                log.info("host %s: reconnecting in %.1fs", self.name or self.address, backoff)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            self._stop_pool()
            with self._lock:
                self._running = False
            if self._closed.is_set() and self._own_channel:
                self.channel.close()

    def start(self) -> "Host":
        """run() on a background (daemon) thread; returns self.  close() ends it."""
        if not self._kinds:
            raise RuntimeError("register at least one kind before start()")
        if self._thread is not None:
            raise RuntimeError("this Host was started already")
        self._frozen = True
        self._thread = threading.Thread(target=self.run, name="distsup-host", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Ends the stream and run(); the daemon restarts this host's children elsewhere
        (another host of their kind) with the last State each sent.  Waits up to
        timeout seconds for start()'s thread.  Safe from any thread, more than once."""
        self._closed.set()
        with self._lock:
            s = self._session
            self._attached.notify_all()
            self._room.notify_all()
        if s is not None and s.call is not None:
            s.call.cancel()
        t = self._thread
        me = threading.current_thread()
        if t is not None and t is not me and me not in self._pool:  # not from a handler
            t.join(timeout)
        with self._lock:
            idle = not self._running and t is None
        if idle and self._own_channel:  # never ran (run() closes it when it ends)
            self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- one session
    def _run_session(self) -> bool:
        s = _Session(self)
        with self._lock:
            if self._closed.is_set():
                return False
            self._session = s
        attached = False
        try:
            s.call = self._stub.Host(s.requests(self._hello()), metadata=self._md)
            if self._closed.is_set():
                s.call.cancel()
            for down in s.call:
                if s.welcome is None:
                    if not down.HasField("welcome"):
                        log.error("host %s: the first message from distsupd has no welcome",
                                  self.name or self.address)
                        s.call.cancel()
                        break
                    with self._lock:
                        s.welcome = down.welcome
                        self._attached.notify_all()
                    attached = True
                    self.sessions += 1
                    log.info("host %s: attached to node %s (session %s)", self.name or self.address,
                             down.welcome.node, down.welcome.session)
                if down.HasField("ping"):
                    s.put(_Pong(down.ping.seq))
                if down.frames:
                    self._dispatch(s, down.frames)
            else:
                log.warning("host %s: distsupd ended the stream", self.name or self.address)
        except grpc.RpcError as e:
            if not self._closed.is_set():
                lvl = logging.ERROR if e.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                                    grpc.StatusCode.UNAUTHENTICATED,
                                                    grpc.StatusCode.PERMISSION_DENIED) \
                    else logging.WARNING
                log.log(lvl, "host %s: stream ended: %s: %s", self.name or self.address,
                        e.code().name, e.details())
        finally:
            self._end_session(s)
        return attached

    def _end_session(self, s: _Session):
        """The stream ended: forget every child of the session; send nothing more."""
        s.close_out()
        if s.call is not None:
            s.call.cancel()
        with self._lock:
            for slot in s.slots.values():
                self._kill(slot, dropped=True)
            s.slots.clear()
            if self._session is s:
                self._session = None

    # -- down: frames to mailboxes (the stream's thread)
    def _dispatch(self, s: _Session, frames):
        with self._lock:
            for hf in frames:
                num = hf.child
                slot = s.slots.get(num)
                if hf.drop:
                    if slot is not None:
                        self._kill(slot, dropped=True)
                        del s.slots[num]
                    continue
                if not hf.HasField("frame"):
                    continue
                f = hf.frame
                if f.WhichOneof("frame") == "init":
                    if slot is not None:
                        log.error("host %s: a second init for child %d: ignored", self.name, num)
                        continue
                    k = self._kinds.get(hf.kind)
                    refusal = None
                    if k is None:
                        refusal = "this host does not run kind %r" % hf.kind
                    elif k.capacity and k.count >= k.capacity:
                        refusal = ("this host is at its capacity of %d for kind %s"
                                   % (k.capacity, k.name))
                    if refusal is not None:
                        s.put([pb.HostFrame(child=num, exit=pb.HostExit(normal=False,
                                                                        reason=refusal))])
                        continue
                    slot = _Slot(self, s, num, k)
                    s.slots[num] = slot
                    k.count += 1
                    slot.counted = True
                elif slot is None or slot.dead:
                    continue  # an exited (or exiting) child's number: its frames are void
                self._push(slot, f)
            while self._pending >= self.max_pending and self._session is s \
                    and not self._closed.is_set():
                self._room.wait(1.0)

    def _push(self, slot: _Slot, item):
        """With the lock: mail for a child; schedules it on the pool if it is idle."""
        slot.mail.append(item)
        self._pending += 1
        if not slot.scheduled:
            slot.scheduled = True
            self._ready.append(slot)
            self._ready_cv.notify()

    def _kill(self, slot: _Slot, dropped: bool = False):
        """With the lock: the child runs nothing more (and, dropped, sends nothing more)."""
        slot.dead = True
        if slot.counted:
            slot.counted = False
            slot.kind.count -= 1
        if dropped:
            slot.dropped = True
        n = len(slot.mail)
        if n:
            slot.mail.clear()
            self._pending -= n
            self._room.notify_all()

    def _request(self, slot: _Slot, item):
        """Child.stop() / save_state(): noted for the running handler, else mailed."""
        if slot.runner is threading.current_thread():
            if item[0] == "stop":
                if slot.stop_req is None:
                    slot.stop_req = (item[1], item[2])
            else:
                self._save(slot)
            return
        with self._lock:
            if not slot.dead:
                self._push(slot, item)

    # -- the pool
    def _start_pool(self):
        self._pool = [threading.Thread(target=self._worker, name="distsup-host-%d" % i,
                                       daemon=True) for i in range(self.workers)]
        for t in self._pool:
            t.start()

    def _stop_pool(self):
        with self._lock:
            for _ in self._pool:
                self._ready.append(None)
            self._ready_cv.notify_all()
        for t in self._pool:
            if t is not threading.current_thread():
                t.join(5.0)
        self._pool = []

    def _worker(self):
        lock, ready = self._lock, self._ready
        me = threading.current_thread()
        while True:
            with lock:
                while not ready:
                    self._ready_cv.wait()
                slot = ready.popleft()
            if slot is None:
                return
            for _ in range(BURST):
                with lock:
                    if slot.dead or not slot.mail:
                        slot.scheduled = False
                        break
                    item = slot.mail.popleft()
                    self._pending -= 1
                    if self._pending == self.max_pending - 1:
                        self._room.notify_all()
                slot.runner = me
                try:
                    self._handle(slot, item)
                except Exception:  # a bug here, not in a handler: end the child
                    log.exception("host %s: internal error on child %d", self.name, slot.num)
                    self._exit(slot, False, "internal error in distsup.host", run_terminate=False)
                finally:
                    slot.runner = None
            else:
                with lock:
                    if slot.dead or not slot.mail:
                        slot.scheduled = False
                    else:
                        ready.append(slot)  # more mail: behind the others
                        self._ready_cv.notify()

    # -- one message of one child (a pool thread; never two at once for one child)
    def _send(self, slot: _Slot, frames):
        if not slot.dropped:
            slot.session.put(frames)

    def _frame(self, slot, **kw):
        return pb.HostFrame(child=slot.num, frame=cpb.ChildFrame(**kw))

    def _exit(self, slot: _Slot, normal: bool, reason: str, run_terminate: bool = True,
              hand_off: bool = True):
        """Ends the child: terminate(reason), its State, then Exit."""
        with self._lock:
            if slot.dead:
                return
            self._kill(slot)  # it stays in the session's table until its Exit: a drop finds it
        try:
            self._finish(slot, normal, reason, run_terminate, hand_off)
        finally:
            with self._lock:
                if slot.session.slots.get(slot.num) is slot:
                    del slot.session.slots[slot.num]

    def _finish(self, slot: _Slot, normal: bool, reason: str, run_terminate: bool, hand_off: bool):
        child = slot.child
        frames = []
        if child is not None:
            if run_terminate:
                fn = getattr(child, "terminate", None)
                if fn is not None:
                    try:
                        fn(reason)
                    except Exception:
                        log.exception("host %s: terminate of %s raised", self.name,
                                      getattr(child, "name", slot.num))
            if slot.dropped:  # dropped while terminate ran (its shutdown_ms ran out)
                return
            if hand_off:
                st = self._get_state(slot)
                if st is not None:
                    frames.append(self._frame(slot, state=cpb.StateFrame(state=st)))
        frames.append(pb.HostFrame(child=slot.num, exit=pb.HostExit(normal=normal,
                                                                     reason=reason[:1000])))
        self._send(slot, frames)

    def _get_state(self, slot: _Slot) -> Optional[bytes]:
        fn = getattr(slot.child, "get_state", None)
        if fn is None:
            return None
        try:
            st = fn()
            return None if st is None else _as_bytes(st)
        except Exception:
            log.exception("host %s: get_state of %s raised", self.name,
                          getattr(slot.child, "name", slot.num))
            return None

    def _save(self, slot: _Slot):
        st = self._get_state(slot)
        if st is not None:
            self._send(slot, [self._frame(slot, state=cpb.StateFrame(state=st))])

    def _handle(self, slot: _Slot, item):
        if isinstance(item, tuple):  # stop() or save_state() from outside a handler
            if item[0] == "stop":
                self._exit(slot, item[1], item[2] or ("stopped" if item[1] else "asked to stop"))
            else:
                self._save(slot)
            return
        which = item.WhichOneof("frame")
        if which == "init":
            self._init(slot, item.init)
            return
        child = slot.child
        if child is None:
            return
        if which == "call":
            c = item.call
            r = cpb.Reply(ref=c.ref)
            self._trace(child, c)
            try:
                r.payload = _as_bytes(child.handle_call(bytes(c.payload)))
            except CallError as e:
                r.error, r.code = e.message or "error", e.code or 2
            except Exception as e:  # a bug in the handler: fail this call, keep the child
                log.warning("host %s: handle_call of %s raised:\n%s", self.name, child.name,
                            traceback.format_exc())
                r.error, r.code = _describe(e), 2
            finally:
                self._trace(child, None)
            self._send(slot, [self._frame(slot, reply=r)])
        elif which in ("cast", "info"):
            m = item.cast if which == "cast" else item.info
            self._trace(child, m)
            try:
                fn = getattr(child, "handle_" + which, None)
                if fn is not None:
                    fn(bytes(m.payload))
            except Exception as e:  # an abnormal exit, as a crash of a process worker
                log.warning("host %s: handle_%s of %s raised:\n%s", self.name, which, child.name,
                            traceback.format_exc())
                self._trace(child, None)
                self._exit(slot, False, "handle_%s raised %s" % (which, _describe(e)),
                           hand_off=False)
                return
            self._trace(child, None)
        elif which == "terminate":
            self._exit(slot, True, item.terminate.reason)
            return
        else:
            log.warning("host %s: ignoring a %s frame for %s", self.name, which, child.name)
        if slot.stop_req is not None:
            normal, reason = slot.stop_req
            self._exit(slot, normal, reason or ("stopped" if normal else "asked to stop"))

    @staticmethod
    def _trace(child, m):
        try:
            child.traceparent = m.traceparent if m is not None else ""
            child.tracestate = m.tracestate if m is not None else ""
        except AttributeError:  # an object that takes no attributes: it does without
            pass

    def _init(self, slot: _Slot, i):
        kind = slot.kind
        info = InitInfo(supervisor=i.supervisor, name=i.name, id=i.id, node=i.node,
                        init=bytes(i.init), state=bytes(i.state))
        try:
            child = kind.factory()
            for k, v in (("name", i.name), ("id", i.id), ("node", i.node),
                         ("supervisor", i.supervisor), ("kind", kind.name), ("host", self),
                         ("_distsup_slot", slot)):
                try:
                    setattr(child, k, v)
                except AttributeError:
                    pass
            slot.child = child
            fn = getattr(child, "init", None)
            if fn is not None:
                fn(info)
        except Exception as e:  # start-up failed: no Ready, an abnormal exit
            log.warning("host %s: init of %s (kind %s) raised:\n%s", self.name, i.name, kind.name,
                        traceback.format_exc())
            self._exit(slot, False, "init raised %s" % _describe(e), run_terminate=False,
                       hand_off=False)
            return
        if slot.stop_req is not None:  # init asked to stop: no Ready
            normal, reason = slot.stop_req
            self._exit(slot, normal, reason or ("stopped" if normal else "asked to stop"),
                       hand_off=False)
            return
        self._send(slot, [self._frame(slot, ready=cpb.Ready())])
