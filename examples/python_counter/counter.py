#!/usr/bin/python3
"""counter: the example distsup worker in Python (the twin of examples/counter/counter.c).

    init bytes        the starting count, as decimal text (default 0)
    call "get"        replies the count
    call "incr"       adds one and replies the new count
    cast "incr"       adds one (so does a Send of "incr")
    call "sleep:MS"   sleeps MS milliseconds, then replies "slept"
    call "echo:X"     replies X
    call "crash"      exits with code 1 (the sidecar restarts it)
    call "trace"      replies the W3C trace context of this call, "TRACEPARENT;TRACESTATE"
                      (";" alone without one); call "lasttrace" replies that of the
                      last cast or send instead
When it is moved, its count travels as handed-off state.

Start it with distsupctl (from the repo root):
    distsupctl start pycounter --init 10 -- /usr/bin/python3 $PWD/examples/python_counter/counter.py
"""
import os
import sys
import time

try:
    from distsup.worker import CallError, Worker, run
except ImportError:  # not installed: use the package in this repo
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "..", "clients", "python"))
    from distsup.worker import CallError, Worker, run


class Counter(Worker):
    def init(self, info):
        self.count = int(info.state or info.init or b"0")
        self.last_trace = ";"

    def handle_call(self, payload):
        if payload == b"get":
            return str(self.count)
        if payload == b"incr":
            self.count += 1
            return str(self.count)
        if payload.startswith(b"sleep:"):
            time.sleep(int(payload[6:]) / 1000.0)
            return b"slept"
        if payload.startswith(b"echo:"):
            return payload[5:]
        if payload == b"crash":
            sys.exit(1)
        if payload == b"trace":
            return "%s;%s" % (self.traceparent, self.tracestate)
        if payload == b"lasttrace":
            return self.last_trace
        raise CallError(3, "unknown request: try get, incr, sleep:MS, echo:X, crash, trace")

    def handle_cast(self, payload):
        self.last_trace = "%s;%s" % (self.traceparent, self.tracestate)
        if payload == b"incr":
            self.count += 1
        else:
            print("counter: ignoring cast of %d bytes" % len(payload))  # goes to stderr

    handle_info = handle_cast

    def get_state(self):
        return str(self.count).encode()


if __name__ == "__main__":
    run(Counter())
