#!/usr/bin/python3
"""counter_host: an app that hosts counters (distsup.host), the hosted twin of
examples/python_counter.  Every child of kind "counter" placed on this node runs
in this process, as one Counter object.

    counter_host.py [--address HOST:PORT] [--name NAME] [--kind KIND] [--workers N]

--address defaults to $DISTSUP_ADDR (else 127.0.0.1:50051); the API token, when the
daemon wants one, comes from $DISTSUP_TOKEN or $DISTSUP_TOKEN_FILE.  It runs until
SIGTERM or SIGINT, reconnecting whenever the stream ends.

A counter (start one with a spec whose kind is "counter"):
    init bytes        the starting count, as decimal text (default 0)
    call "get"        replies the count
    call "incr"       adds one and replies the new count
    cast "incr"       adds one (so does a Send of "incr")
    call "echo:X"     replies X
    call "sleep:MS"   sleeps MS milliseconds, then replies "slept"
    call "whoami"     replies "NAME HOST PID": the child, this app's --name, its pid
    call "trace"      replies this call's trace context, "TRACEPARENT;TRACESTATE"
    call "stop"       replies "stopping", then the counter ends normally
    call "crash"      replies "crashing", then the counter ends abnormally (restarted)
    call "raise"      raises: only this call fails (UNKNOWN)
    cast "raise"      raises: the counter ends abnormally (restarted)
Its count travels as handed-off state: after a restart, a move, a host loss (the
last one it sent: on a stop, a Terminate, or every "save" cast)."""
import argparse
import logging
import os
import signal
import sys
import threading
import time

try:
    from distsup.host import CallError, Child, Host
except ImportError:  # not installed: use the package in this repo
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "..", "clients", "python"))
    from distsup.host import CallError, Child, Host

HOST_NAME = ""


class Counter(Child):
    def init(self, info):
        self.count = int(info.state or info.init or b"0")

    def handle_call(self, payload):
        if payload == b"get":
            return str(self.count)
        if payload == b"incr":
            self.count += 1
            return str(self.count)
        if payload.startswith(b"echo:"):
            return payload[5:]
        if payload.startswith(b"sleep:"):
            time.sleep(int(payload[6:]) / 1000.0)
            return b"slept"
        if payload == b"whoami":
            return "%s %s %d" % (self.name, HOST_NAME, os.getpid())
        if payload == b"trace":
            return "%s;%s" % (self.traceparent, self.tracestate)
        if payload == b"stop":
            self.stop(normal=True, reason="asked to stop")
            return b"stopping"
        if payload == b"crash":
            self.stop(normal=False, reason="asked to crash")
            return b"crashing"
        if payload == b"raise":
            raise RuntimeError("raised on request")
        raise CallError(3, "unknown request: try get, incr, echo:X, sleep:MS, whoami, trace, "
                           "stop, crash, raise")

    def handle_cast(self, payload):
        if payload == b"incr":
            self.count += 1
        elif payload == b"save":
            self.save_state()
        elif payload == b"raise":
            raise RuntimeError("cast raised on request")

    handle_info = handle_cast

    def get_state(self):
        return str(self.count).encode()

    def terminate(self, reason):
        sys.stderr.write("counter %s terminating: %s\n" % (self.name, reason))


def main():
    global HOST_NAME
    ap = argparse.ArgumentParser(description="hosts distsup counters in this process")
    ap.add_argument("--address", default=None)
    ap.add_argument("--name", default="counter-host-%d" % os.getpid())
    ap.add_argument("--kind", default="counter")
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    HOST_NAME = args.name
    # distsup.host logs its attaches, stream ends and handler exceptions here (stderr)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    host = Host(args.address, name=args.name, workers=args.workers)
    host.register(args.kind, Counter)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    host.start()
    while not done.wait(1.0):
        pass
    host.close()


if __name__ == "__main__":
    main()
