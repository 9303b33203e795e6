#!/usr/bin/env node
// A host app: runs every "counter" child (a hosted child, kind "counter") that the
// cluster places on this node, in this one process (docs/hosting.md).  The hosted
// twin of examples/node_counter.
//
//   init bytes        the starting count, as decimal text (default 0); after a restart
//                     or a move, the last saved count (State) instead
//   call "get"        replies the count
//   call "incr"       adds one and replies the new count
//   call "sleep:MS"   waits MS milliseconds (without blocking other children), then
//                     replies "slept"
//   call "echo:X"     replies X
//   call "save"       saves the count now as the child's State, replies it
//   call "whoami"     replies "NAME ID NODE PID" (PID: this host process)
//   call "trace"      replies the call's W3C trace context, "TRACEPARENT;TRACESTATE"
//   call "stop"       replies "stopping", then the child stops normally
//   cast "incr"       adds one (so does a Send of "incr")
//   cast "crash"      throws: the child crashes and is restarted from its last State
// Its count travels as State on a stop or a move.
//
// From the repo root, after `npm ci` in clients/node, with distsupd running:
//   node examples/node_counter_host/host.js          # DISTSUP_ADDR, DISTSUP_TOKEN(_FILE)
// then, from any client: sup.startChild('c1', null, { kind: 'counter', init: '10' }),
// or `distsupctl start c1 --kind counter --init 10`.
// It prints "attached to NODE (session ID)" once attached; SIGTERM or SIGINT closes the
// host (each child's count is handed off as its State) and exits.
// Options (environment): HOST_NAME (the name in the daemon's logs), HOST_CAPACITY,
// HOST_AUTOSAVE=1 (save the count after every message).
'use strict';
let distsup;
try {
  distsup = require('distsup');
} catch (e) { // not installed: the package in this repo
  distsup = require('../../clients/node');
}
const { Host, CallError } = distsup;

class Counter {
  init(info) {
    this.count = Number(String(info.state || info.init || '0')) || 0;
  }

  async handleCall(payload, ctx) {
    const p = payload.toString();
    if (p === 'get') return String(this.count);
    if (p === 'incr') return String(++this.count);
    if (p.startsWith('sleep:')) {
      await new Promise((r) => setTimeout(r, Number(p.slice(6))));
      return 'slept';
    }
    if (p.startsWith('echo:')) return payload.subarray(5);
    if (p === 'save') {
      this.saveState();
      return String(this.count);
    }
    if (p === 'whoami') return `${this.name} ${this.id} ${this.node} ${process.pid}`;
    if (p === 'trace') return `${ctx.traceparent};${ctx.tracestate}`;
    if (p === 'stop') {
      this.stop({ normal: true });
      return 'stopping';
    }
    throw new CallError(3, 'unknown request: try get, incr, sleep:MS, echo:X, save, whoami, trace, stop');
  }

  handleCast(payload) {
    const p = payload.toString();
    if (p === 'incr') this.count++;
    else if (p === 'crash') throw new Error('crash requested');
  }

  handleInfo(payload) {
    this.handleCast(payload);
  }

  getState() {
    return String(this.count);
  }
}

const host = new Host(process.env.DISTSUP_ADDR, {
  name: process.env.HOST_NAME || `counter-host-${process.pid}`,
});
host.register('counter', Counter, {
  capacity: Number(process.env.HOST_CAPACITY || 0),
  autoSave: process.env.HOST_AUTOSAVE === '1',
});
host.on('attached', (w) => console.log(`attached to ${w.node} (session ${w.session})`));
host.on('detached', (e) => console.log(`detached: ${e.message}`));

let closing = false;
async function shutdown() {
  if (closing) return;
  closing = true;
  await host.close();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

host.start().catch((e) => {
  console.error(`cannot attach: ${e.message}`);
  process.exit(1);
});
