#!/usr/bin/env node
// counter: the example distsup worker in Node (the twin of examples/counter/counter.c).
//
//   init bytes        the starting count, as decimal text (default 0)
//   call "get"        replies the count
//   call "incr"       adds one and replies the new count
//   cast "incr"       adds one (so does a Send of "incr")
//   call "sleep:MS"   waits MS milliseconds (without blocking), then replies "slept"
//   call "echo:X"     replies X
//   call "crash"      exits with code 1 (the sidecar restarts it)
//   call "trace"      replies the call's W3C trace context, "TRACEPARENT;TRACESTATE"
//                     (";" alone without one); "lasttrace": that of the last cast or send
// When it is moved, its count travels as handed-off state.
//
// From the repo root, after `npm ci` in clients/node:
//   distsupctl start nodecounter --init 10 -- node $PWD/examples/node_counter/counter.js
'use strict';
let worker;
try {
  worker = require('distsup/worker');
} catch (e) { // not installed: the package in this repo
  worker = require('../../clients/node/worker');
}
const { run, CallError } = worker;

run({
  init(info) {
    this.count = Number((info.state.length ? info.state : info.init).toString() || 0);
    this.lastTrace = ';';
  },
  async call(payload, ctx) {
    const p = payload.toString();
    if (p === 'get') return String(this.count);
    if (p === 'incr') return String(++this.count);
    if (p.startsWith('sleep:')) {
      await new Promise((r) => setTimeout(r, Number(p.slice(6))));
      return 'slept';
    }
    if (p.startsWith('echo:')) return payload.subarray(5);
    if (p === 'crash') process.exit(1);
    if (p === 'trace') return `${ctx.traceparent};${ctx.tracestate}`;
    if (p === 'lasttrace') return this.lastTrace;
    throw new CallError(3, 'unknown request: try get, incr, sleep:MS, echo:X, crash, trace');
  },
  cast(payload, ctx) {
    this.lastTrace = `${ctx.traceparent};${ctx.tracestate}`;
    if (payload.toString() === 'incr') this.count++;
    else console.log(`counter: ignoring cast of ${payload.length} bytes`); // -> stderr
  },
  info(payload, ctx) { this.cast(payload, ctx); },
  state() { return String(this.count); },
});
