'use strict';
// The Node host library (clients/node/lib/host.js) against a real distsupd: hosted
// children run in this test process (a Host here) and in real host app processes
// (examples/node_counter_host, spawned, killed with SIGKILL).
const assert = require('node:assert/strict');
const { describe, it, before, after } = require('node:test');
const fs = require('fs');
const path = require('path');
const { spawn, execFileSync } = require('child_process');
const h = require('./harness');

const distsup = require(h.paths.client);
const {
  Supervisor, Host, CallError, DistsupError, InvalidArgument, Unknown, Unimplemented,
  Unauthenticated, NotFound,
} = distsup;

const NODE = process.execPath;
const HOST_APP = h.paths.nodeCounterHost;
let d;
let sup;
let n = 0;
const uniq = (p) => `${p}${++n}`;
const quiet = { log: false };
const hosts = new Set(); // closed after each test, even when it fails
const apps = new Set();

// The daemon's host timing, short so that a lost host is noticed quickly.
const DAEMON_INI = '[daemon]\nhost_ping_ms = 200\nhost_timeout_ms = 2000\nhost_grace_ms = 200\n';

function test(name, fn, timeout = 60000) {
  it(name, { timeout }, async () => {
    try {
      await fn();
    } catch (e) {
      e.message += `\n---- daemon log ----\n${d.log().slice(-6000)}`;
      for (const a of apps) e.message += `\n---- host app ${a.pid} ----\n${a.out.slice(-3000)}`;
      throw e;
    } finally {
      for (const x of hosts) await x.close({ timeout: 1000 }).catch(() => {});
      hosts.clear();
      for (const a of apps) await a.kill();
      apps.clear();
    }
  });
}

function newHost(addr, opts = {}) {
  const x = new Host(addr, { ...quiet, ...opts });
  hosts.add(x);
  return x;
}

async function rejectsWith(promise, cls, re) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof cls, `${e && e.name}: ${e && e.message} is not a ${cls.name}`);
    if (re) assert.match(e.message, re);
    return true;
  });
}

/** Runs fn over items with at most `width` in flight; resolves to the results. */
async function pool(items, width, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return out;
}

/** A host app process (examples/node_counter_host); resolves once it attached. */
async function startApp(addr, env = {}) {
  const p = h.track(spawn(NODE, [HOST_APP], {
    env: { ...process.env, DISTSUP_ADDR: addr, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
  const app = {
    pid: p.pid, proc: p, out: '', exited: null,
    async kill(sig = 'SIGKILL') {
      if (this.exited) return;
      const gone = new Promise((r) => p.once('exit', r));
      p.kill(sig);
      await gone;
    },
  };
  apps.add(app);
  p.stdout.on('data', (b) => { app.out += b; });
  p.stderr.on('data', (b) => { app.out += b; });
  p.once('exit', (code, sig) => { app.exited = `exit ${code} signal ${sig}`; });
  await h.waitFor(() => {
    if (app.exited) throw new Error(`host app ${app.exited}:\n${app.out}`);
    return app.out.includes('attached to ');
  }, 15000, 'the host app to attach');
  return app;
}

/** Calls until the child answers (it may be restarting); resolves to the reply. */
async function callWhenUp(name, payload, timeoutMs = 20000, s = sup) {
  let last = null;
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      return await s.call(name, payload, { timeout: 2000 });
    } catch (e) {
      if (!(e instanceof DistsupError)) throw e;
      last = e;
      await h.sleep(50);
    }
  }
  throw new Error(`${name} did not answer ${payload} within ${timeoutMs} ms (last: ${last && last.message})`);
}

const kindOf = (k) => ({ kind: k });

describe('Host against a real distsupd', () => {
  before(async () => {
    const ini = path.join(h.tmpdir('distsup-host-ini-'), 'd.ini');
    fs.writeFileSync(ini, DAEMON_INI);
    d = await new h.Daemon('h', ['--config', ini]).start();
    sup = new Supervisor(d.addr, { timeout: 20000 });
  });
  after(async () => {
    if (sup) sup.close();
    if (d) await d.stop();
  });

  test('a hosted child: init, calls, casts, sends, its identity and trace context', async () => {
    const seen = [];
    const host = newHost(d.addr, { name: 'basic' });
    host.register('basic', {
      init(info) {
        this.n = Number(String(info.state || info.init || '0'));
        seen.push({ info, name: this.name, id: this.id, node: this.node, supervisor: this.supervisor });
      },
      async handleCall(payload, ctx) {
        const p = String(payload);
        if (p === 'get') return String(this.n);
        if (p === 'incr') return String(++this.n);
        if (p === 'who') return `${this.name} ${this.id} ${this.node} ${this.supervisor} ${this.kind}`;
        if (p === 'trace') return `${this.traceparent}|${ctx.traceparent}|${ctx.tracestate}`;
        if (p === 'bin') return Buffer.from([0, 0xff, 1]);
        if (p === 'nothing') return undefined;
        if (p === 'bad') throw new CallError(3, 'a bad request');
        if (p === 'boom') throw new Error('a bug in handleCall');
        return payload;
      },
      handleCast(payload) { if (String(payload) === 'incr') this.n++; },
      handleInfo(payload) { if (String(payload) === 'incr') this.n += 10; },
    });
    const w = await host.start();
    assert.equal(w, host);
    assert.ok(host.attached);
    assert.equal(host.node, d.node);
    assert.ok(host.session);

    const name = uniq('b');
    const c = await sup.startChild(name, null, { kind: 'basic', init: '41' });
    assert.equal(c.state, 'RUNNING');
    assert.equal(c.spec.kind, 'basic');
    assert.equal(host.size, 1);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].info.init.toString(), '41');
    assert.equal(seen[0].info.state, null); // no State yet
    assert.equal(seen[0].info.name, name);
    assert.equal(seen[0].info.kind, 'basic');
    assert.equal(seen[0].name, name);
    assert.equal(seen[0].id, c.id);
    assert.equal(seen[0].node, d.node);

    assert.equal((await sup.call(name, 'incr')).toString(), '42');
    await sup.cast(name, 'incr');
    await sup.send(name, 'incr');
    assert.equal((await sup.call(name, 'get')).toString(), '53');
    assert.equal((await sup.call(name, 'who')).toString(), `${name} ${c.id} ${d.node} default basic`);
    assert.deepEqual(await sup.call(name, 'bin'), Buffer.from([0, 0xff, 1]));
    assert.equal((await sup.call(name, 'nothing')).length, 0);
    const big = Buffer.alloc(1024 * 1024, 7);
    assert.ok((await sup.call(name, big)).equals(big));
    const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    assert.equal((await sup.call(name, 'trace', { traceparent: tp, tracestate: 'k=v' })).toString(),
      `${tp}|${tp}|k=v`);
    assert.equal((await sup.call(name, 'trace')).toString(), '||');
    // An exception in handleCall fails that call only.
    await rejectsWith(sup.call(name, 'bad'), InvalidArgument, /a bad request/);
    await rejectsWith(sup.call(name, 'boom'), Unknown, /a bug in handleCall/);
    assert.equal((await sup.call(name, 'get')).toString(), '53');
    assert.equal((await sup.whereis(name)).id, c.id);
    await sup.terminateChild(name);
    await h.waitFor(() => host.size === 0, 10000, 'the child to leave the host');
  });

  test('nodes() lists the kinds hosted on a node while a host of them is attached', async () => {
    const self = async () => (await sup.nodes()).find((x) => x.self);
    assert.deepEqual((await self()).kinds, []);
    const host = newHost(d.addr).register('listed1', {}).register('listed2', {});
    await host.start();
    assert.deepEqual([...(await self()).kinds].sort(), ['listed1', 'listed2']);
    await host.close();
    await h.waitFor(async () => (await self()).kinds.length === 0, 10000, 'the kinds to go');
  });

  test('a class handler, worker-style names, a call without a handler', async () => {
    class Echo {
      init(info) { this.prefix = String(info.init); }
      call(payload) { return this.prefix + payload; } // the worker helper's name
    }
    class Mute {}
    const host = newHost(d.addr).register('echo', Echo).register('mute', Mute);
    await host.start();
    const a = uniq('e');
    const b = uniq('e');
    await sup.startChild(a, null, { kind: 'echo', init: 'A:' });
    await sup.startChild(b, null, { kind: 'echo', init: 'B:' });
    // a fresh instance each: no state shared between children
    assert.equal((await sup.call(a, 'x')).toString(), 'A:x');
    assert.equal((await sup.call(b, 'y')).toString(), 'B:y');
    const m = uniq('m');
    await sup.startChild(m, null, { kind: 'mute' });
    await rejectsWith(sup.call(m, 'x'), Unimplemented);
    await sup.cast(m, 'ignored');
    await rejectsWith(sup.call(m, 'x'), Unimplemented);
    for (const x of [a, b, m]) await sup.terminateChild(x);
  });

  test('one handler at a time per child, in order, even when handlers are async', async () => {
    const CHILDREN = 20;
    const CASTS = 40;
    let active = 0;
    let maxActive = 0;
    const host = newHost(d.addr).register('seq', {
      init() {
        this.seen = [];
        this.busy = false;
        this.overlaps = 0;
      },
      async handleCast(payload) {
        if (this.busy) this.overlaps++;
        this.busy = true;
        active++;
        maxActive = Math.max(maxActive, active);
        // a random wait: without the per-child queue, later casts would overtake
        await h.sleep(Math.floor(Math.random() * 4));
        this.seen.push(Number(String(payload)));
        active--;
        this.busy = false;
      },
      async handleCall(payload) {
        if (this.busy) this.overlaps++;
        if (String(payload) === 'seen') return JSON.stringify({ seen: this.seen, overlaps: this.overlaps });
        await h.sleep(Math.floor(Math.random() * 4));
        this.seen.push(`call${payload}`);
        return 'ok';
      },
    });
    await host.start();
    const names = Array.from({ length: CHILDREN }, () => uniq('s'));
    await pool(names, 8, (nm) => sup.startChild(nm, null, kindOf('seq')));
    // Each child: its casts in order (one client, each awaited), a call in the middle.
    await Promise.all(names.map(async (nm) => {
      for (let i = 0; i < CASTS; i++) {
        await sup.cast(nm, String(i));
        if (i === CASTS / 2) assert.equal((await sup.call(nm, 'x')).toString(), 'ok');
      }
    }));
    const want = [];
    for (let i = 0; i < CASTS; i++) {
      want.push(i);
      if (i === CASTS / 2) want.push('callx');
    }
    for (const nm of names) {
      const r = JSON.parse(String(await sup.call(nm, 'seen')));
      assert.deepEqual(r.seen, want, `${nm} saw its messages out of order`);
      assert.equal(r.overlaps, 0, `${nm} ran two handlers at once`);
    }
    assert.ok(maxActive > 1, 'different children never ran concurrently');
    for (const nm of names) await sup.terminateChild(nm);
  });

  test('different children run concurrently; one blocked child holds back only its own queue', async () => {
    let release;
    const released = new Promise((r) => { release = r; });
    const log = [];
    const host = newHost(d.addr).register('gate', {
      async handleCall(payload) {
        const p = String(payload);
        log.push(`${this.name}:${p}`);
        if (p === 'wait') await released; // resolved only by another child's call
        if (p === 'open') release();
        return p;
      },
      handleCast(payload) { log.push(`${this.name}:cast:${payload}`); },
    });
    await host.start();
    const a = uniq('g');
    const b = uniq('g');
    await sup.startChild(a, null, kindOf('gate'));
    await sup.startChild(b, null, kindOf('gate'));
    const waiting = sup.call(a, 'wait');
    await h.waitFor(() => log.includes(`${a}:wait`), 10000, 'a to be waiting');
    await sup.cast(a, 'behind');  // queued behind the waiting call
    // b runs while a waits (the same process, the same event loop)
    assert.equal((await sup.call(b, 'hello')).toString(), 'hello');
    assert.ok(!log.includes(`${a}:cast:behind`), 'a cast ran while its child was in a handler');
    assert.equal((await sup.call(b, 'open')).toString(), 'open');
    assert.equal((await waiting).toString(), 'wait');
    assert.equal((await sup.call(a, 'after')).toString(), 'after');
    const la = log.filter((x) => x.startsWith(`${a}:`));
    assert.deepEqual(la, [`${a}:wait`, `${a}:cast:behind`, `${a}:after`]);
    await sup.terminateChild(a);
    await sup.terminateChild(b);
  });

  test('a crash in handleCast restarts the child with its last saved State', async () => {
    const app = await startApp(d.addr);
    const name = uniq('k');
    const c = await sup.startChild(name, null, { kind: 'counter', init: '5' });
    await sup.cast(name, 'incr');
    await sup.cast(name, 'incr');
    assert.equal((await sup.call(name, 'save')).toString(), '7'); // State = 7
    await sup.cast(name, 'incr');
    assert.equal((await sup.call(name, 'get')).toString(), '8'); // not saved
    const w = await sup.watch({ kinds: ['process_restart'], timeout: 20000 });
    await sup.cast(name, 'crash');
    let ev = null;
    for await (const e of w) {
      if (e.name === name) {
        ev = e;
        break;
      }
    }
    assert.ok(ev, 'no PROCESS_RESTART event');
    assert.match(ev.reason, /abnormal/);
    assert.match(ev.reason, /crash requested/); // the exception, as the exit's reason
    const again = await h.waitFor(async () => {
      const w = await sup.whereis(name).catch(() => null);
      return w && w.id !== c.id && w.state === 'RUNNING' ? w : null;
    }, 20000, 'the crashed child to be restarted');
    assert.ok(again.restarts >= 1);
    assert.equal((await callWhenUp(name, 'get')).toString(), '7');
    assert.equal((await sup.call(name, 'whoami')).toString().split(' ')[3], String(app.pid));
    await sup.terminateChild(name);
  });

  test('autoSave: the State follows every message, so a crash loses nothing', async () => {
    await startApp(d.addr, { HOST_AUTOSAVE: '1' });
    const name = uniq('as');
    await sup.startChild(name, null, { kind: 'counter', init: '1' });
    for (let i = 0; i < 5; i++) await sup.cast(name, 'incr');
    assert.equal((await sup.call(name, 'get')).toString(), '6');
    await sup.cast(name, 'crash');
    await h.waitFor(async () => ((await sup.whereis(name)).restarts >= 1), 20000, 'a restart');
    assert.equal((await callWhenUp(name, 'get')).toString(), '6');
    await sup.terminateChild(name);
  });

  test('exits: init raising, this.stop() normal and abnormal, handleInfo raising', async () => {
    const inits = {};
    const terms = [];
    const host = newHost(d.addr).register('ex', {
      init(info) {
        inits[info.name] = (inits[info.name] || 0) + 1;
        if (String(info.init) === 'fail') throw new Error('init refuses');
        this.mode = String(info.init);
      },
      handleCall(payload) {
        const p = String(payload);
        if (p === 'stop-normal') this.stop({ normal: true, reason: 'done' });
        if (p === 'stop-crash') this.stop({ normal: false, reason: 'gave up' });
        return `${p}:${inits[this.name]}`;
      },
      handleInfo() { throw new Error('info raises'); },
      terminate(reason) { terms.push(`${this.name}:${reason}`); },
    });
    await host.start();

    // init raising: an abnormal exit, so a temporary child is gone and StartChild fails.
    const f = uniq('f');
    await assert.rejects(sup.startChild(f, null, { kind: 'ex', init: 'fail', restart: 'temporary' }),
      DistsupError);
    assert.equal(inits[f], 1);

    // stop normal, transient: not restarted; terminate ran with the reason
    const t = uniq('t');
    await sup.startChild(t, null, { kind: 'ex', init: 'x', restart: 'transient' });
    assert.equal((await sup.call(t, 'stop-normal')).toString(), 'stop-normal:1');
    await h.waitFor(async () => {
      try { await sup.whereis(t); return false; } catch (e) { return e instanceof NotFound; }
    }, 10000, 'the normally stopped transient child to be gone');
    assert.ok(terms.includes(`${t}:done`), JSON.stringify(terms));
    assert.equal(inits[t], 1);

    // stop abnormal, transient: restarted
    const r = uniq('r');
    await sup.startChild(r, null, { kind: 'ex', init: 'x', restart: 'transient' });
    assert.equal((await sup.call(r, 'stop-crash')).toString(), 'stop-crash:1');
    assert.equal((await callWhenUp(r, 'again')).toString(), 'again:2');
    assert.ok(terms.includes(`${r}:gave up`), JSON.stringify(terms));

    // handleInfo raising: an abnormal exit, restarted
    await sup.send(r, 'x');
    await h.waitFor(() => inits[r] === 3, 20000, 'the restart after handleInfo raised');
    assert.equal((await callWhenUp(r, 'q')).toString(), 'q:3');
    await sup.terminateChild(r);
  });

  test('this.stop(): inside a handler it comes next; from outside, behind the queued messages', async () => {
    const log = [];
    const kids = {};
    let open;
    const gate = new Promise((r) => { open = r; });
    let open2;
    const gate2 = new Promise((r) => { open2 = r; });
    const host = newHost(d.addr).register('stopper', {
      init() { kids[this.name] = this; },
      async handleCall(p) {
        const q = String(p);
        log.push(`${this.name}:${q}`);
        if (q === 'wait') await gate;
        if (q === 'stop-now') {
          this.stop({ normal: true, reason: 'asked' });
          await gate2;
        }
        if (q.startsWith('stop-other:')) kids[q.slice(11)].stop({ normal: true, reason: 'from outside' });
        return `${q}:${this.alive}`;
      },
      handleCast(p) { log.push(`${this.name}:cast:${p}`); },
      terminate(reason) { log.push(`${this.name}:terminate:${reason}`); },
    });
    await host.start();
    const a = uniq('st');
    const b = uniq('st');
    await sup.startChild(a, null, { kind: 'stopper', restart: 'transient' });
    await sup.startChild(b, null, { kind: 'stopper', restart: 'transient' });
    // a waits in a handler; a cast queues behind; b stops a from outside its handler.
    const waiting = sup.call(a, 'wait');
    await h.waitFor(() => log.includes(`${a}:wait`), 10000, 'a to wait');
    let down = host.stats.downFrames;
    await sup.cast(a, 'queued');
    await h.waitFor(() => host.stats.downFrames > down, 10000, 'the cast to reach the host');
    assert.equal((await sup.call(b, `stop-other:${a}`)).toString(), `stop-other:${a}:true`);
    assert.equal(kids[a].alive, false);
    open();
    assert.equal((await waiting).toString(), 'wait:false');
    await h.waitFor(() => log.includes(`${a}:terminate:from outside`), 10000, 'a to stop');
    assert.deepEqual(log.filter((x) => x.startsWith(`${a}:`)),
      [`${a}:wait`, `${a}:cast:queued`, `${a}:terminate:from outside`]);
    // Inside a handler: the stop comes right after it; what queued behind never runs.
    const slow = sup.call(b, 'stop-now');
    await h.waitFor(() => log.includes(`${b}:stop-now`), 10000, 'b to be in its handler');
    down = host.stats.downFrames;
    await sup.cast(b, 'behind');
    await h.waitFor(() => host.stats.downFrames > down, 10000, 'the cast to reach the host');
    open2();
    await h.waitFor(async () => {
      try { await sup.whereis(b); return false; } catch (e) { return e instanceof NotFound; }
    }, 10000, 'b to be gone');
    assert.equal((await slow).toString(), 'stop-now:false');
    assert.deepEqual(log.filter((x) => x.startsWith(`${b}:`)),
      [`${b}:stop-other:${a}`, `${b}:stop-now`, `${b}:terminate:asked`]);
    await h.waitFor(async () => {
      try { await sup.whereis(a); return false; } catch (e) { return e instanceof NotFound; }
    }, 10000, 'a to be gone');
  });

  test('TerminateChild runs terminate, then the child is gone from the host', async () => {
    const terms = [];
    const host = newHost(d.addr).register('term', {
      init(info) { this.v = String(info.init); },
      async terminate(reason) {
        await h.sleep(20);
        terms.push({ name: this.name, reason, v: this.v });
      },
      getState() { return this.v; },
      handleCall() { return 'up'; },
    });
    await host.start();
    const names = [uniq('tt'), uniq('tt'), uniq('tt')];
    for (const nm of names) await sup.startChild(nm, null, { kind: 'term', init: `v-${nm}` });
    assert.equal(host.size, 3);
    const r = await sup.terminateChild(names[1]);
    assert.equal(r.name, names[1]);
    assert.equal(terms.length, 1);
    assert.equal(terms[0].name, names[1]);
    assert.equal(terms[0].v, `v-${names[1]}`);
    assert.equal(typeof terms[0].reason, 'string');
    assert.ok(terms[0].reason.length > 0, 'terminate got no reason');
    await rejectsWith(sup.whereis(names[1]), NotFound);
    assert.equal(host.size, 2);
    assert.equal((await sup.call(names[0], 'x')).toString(), 'up');
    for (const nm of [names[0], names[2]]) await sup.terminateChild(nm);
    assert.deepEqual(terms.map((x) => x.name).sort(), [...names].sort());
    assert.equal(host.size, 0);
  });

  test('a terminate slower than shutdown_ms: the child is dropped; the session lives on', async () => {
    let finished = 0;
    const host = newHost(d.addr).register('slow', {
      async terminate() {
        await h.sleep(1500);
        finished++;
      },
      getState() { return 'late'; }, // would go up after the drop: the library must not send it
      handleCall(p) { return p; },
    });
    await host.start();
    const session = host.session;
    const s = uniq('sl');
    const o = uniq('sl');
    await sup.startChild(s, null, { kind: 'slow', shutdownMs: 300 });
    await sup.startChild(o, null, kindOf('slow'));
    await sup.terminateChild(s);
    await rejectsWith(sup.whereis(s), NotFound);
    // drop: forgotten at once, while its terminate still runs
    await h.waitFor(() => host.size === 1, 10000, 'the dropped child to be forgotten');
    assert.equal(finished, 0, 'the child was forgotten only once its terminate ended');
    const up = host.stats.upFrames;
    await h.waitFor(() => finished === 1, 10000, 'the slow terminate to finish');
    await h.sleep(300); // whatever it would send is sent by now
    assert.equal(host.stats.upFrames, up, 'frames went up for a dropped child');
    assert.equal((await sup.call(o, 'still')).toString(), 'still');
    assert.equal(host.session, session, 'the session was ended');
    assert.equal(host.attaches, 1);
    assert.equal(host.size, 1);
    await sup.terminateChild(o);
  });

  test('a host process runs 2,000 children, each answering calls', async () => {
    const N = 2000;
    const app = await startApp(d.addr);
    const names = Array.from({ length: N }, (_, i) => `many${i}`);
    await pool(names, 32, (nm, i) => sup.startChild(nm, null, { kind: 'counter', init: String(i) }));
    assert.equal((await sup.countChildren()).active, N);
    assert.equal(app.exited, null);
    const replies = await pool(names, 64, (nm) => sup.call(nm, 'incr'));
    replies.forEach((r, i) => assert.equal(r.toString(), String(i + 1), names[i]));
    const who = await pool(names.filter((_, i) => i % 100 === 0), 8, (nm) => sup.call(nm, 'whoami'));
    for (const w of who) assert.equal(w.toString().split(' ')[3], String(app.pid));
    await pool(names, 32, (nm) => sup.terminateChild(nm));
  }, 180000);

  test('kill -9 of the host app: its children come back once a host attaches again', async () => {
    const K = 50;
    const a = await startApp(d.addr);
    const names = Array.from({ length: K }, () => uniq('kk'));
    await pool(names, 16, (nm, i) => sup.startChild(nm, null, { kind: 'counter', init: String(i * 10) }));
    await pool(names, 16, async (nm) => {
      await sup.cast(nm, 'incr');
      await sup.call(nm, 'save');
    });
    await a.kill('SIGKILL');
    // No host of the kind anywhere: the children wait, SUSPENDED, for one.
    await h.waitFor(async () => (await sup.whereis(names[0])).state === 'SUSPENDED', 15000,
      'the children of the lost host to wait for another');
    const b = await startApp(d.addr);
    const got = await pool(names, 16, (nm) => callWhenUp(nm, 'get', 30000));
    got.forEach((r, i) => assert.equal(r.toString(), String(i * 10 + 1), names[i]));
    const who = await pool(names, 16, (nm) => sup.call(nm, 'whoami'));
    for (const w of who) assert.equal(w.toString().split(' ')[3], String(b.pid));
    await pool(names, 16, (nm) => sup.terminateChild(nm));
  }, 120000);

  test('kill -9 of one of two host apps: its children restart on the other at once', async () => {
    const a = await startApp(d.addr);
    const K = 20;
    const names = Array.from({ length: K }, () => uniq('two'));
    await pool(names, 8, (nm) => sup.startChild(nm, null, { kind: 'counter', init: '3' }));
    const b = await startApp(d.addr);
    for (const nm of names) {
      assert.equal((await sup.call(nm, 'whoami')).toString().split(' ')[3], String(a.pid));
    }
    await a.kill('SIGKILL');
    const who = await pool(names, 8, (nm) => callWhenUp(nm, 'whoami', 30000));
    for (const w of who) assert.equal(w.toString().split(' ')[3], String(b.pid));
    await pool(names, 8, (nm) => sup.terminateChild(nm));
  }, 120000);

  test('the host reconnects by itself when the daemon restarts; the old session is dropped', async () => {
    // A daemon of its own on a fixed port, restarted with its data dir.
    const port = await h.freePort();
    const dir = h.tmpdir('distsup-host-restart-');
    const ini = path.join(dir, 'd.ini');
    fs.writeFileSync(ini, DAEMON_INI);
    const args = ['--config', ini, '--listen', `127.0.0.1:${port}`];
    const d2 = new h.Daemon('rs', args);
    d2.dir = dir;
    d2.portFile = path.join(dir, 'port');
    d2.logPath = path.join(dir, 'daemon.log');
    const s2 = new Supervisor(`127.0.0.1:${port}`, { timeout: 20000 });
    const inits = [];
    const casts = [];
    let open;
    const gate = new Promise((r) => { open = r; });
    let blocking = false;
    try {
      await d2.start();
      const host = newHost(`127.0.0.1:${port}`).register('re', {
        init(info) { inits.push(`${info.name}@${String(info.state || '')}`); this.n = 0; },
        async handleCall(p) {
          if (String(p) === 'block') {
            blocking = true;
            await gate;
          }
          return String(++this.n);
        },
        handleCast(p) { casts.push(String(p)); },
      });
      const events = [];
      host.on('attached', () => events.push('attached'));
      host.on('detached', () => events.push('detached'));
      await host.start();
      const name = uniq('re');
      await s2.startChild(name, null, kindOf('re'));
      assert.equal((await s2.call(name, 'x')).toString(), '1');
      // A call in its handler, a cast queued behind it, then the daemon dies.
      const blocked = s2.call(name, 'block').catch((e) => e);
      await h.waitFor(() => blocking, 10000, 'the call to be in its handler');
      const down = host.stats.downFrames;
      await s2.cast(name, 'late');
      await h.waitFor(() => host.stats.downFrames >= down + 1, 10000, 'the cast to arrive');
      d2.proc.kill('SIGKILL');
      await new Promise((r) => d2.proc.once('exit', r));
      await h.waitFor(() => !host.attached, 10000, 'the host to see the stream end');
      assert.equal(host.size, 0, 'children of the ended session were kept');
      assert.ok((await blocked) instanceof DistsupError);
      open(); // the handler ends; what was queued behind it must not run
      await h.sleep(100);
      assert.deepEqual(casts, [], 'a message of the ended session ran');
      fs.rmSync(d2.portFile, { force: true });
      d2.port = null;
      await d2.start();
      await h.waitFor(() => host.attached && host.attaches === 2, 20000, 'the host to re-attach');
      // The child is durable: the daemon starts it again in the new session.
      assert.equal((await callWhenUp(name, 'x', 20000, s2)).toString(), '1');
      assert.deepEqual(events.slice(0, 3), ['attached', 'detached', 'attached']);
      assert.equal(inits.filter((x) => x.startsWith(`${name}@`)).length, 2);
      await s2.terminateChild(name);
    } finally {
      s2.close();
      await d2.stop();
    }
  }, 90000);

  test('pings are answered: the session outlives host_timeout_ms many times over', async () => {
    const host = newHost(d.addr).register('idle', { handleCall: (p) => p });
    await host.start();
    const session = host.session;
    const name = uniq('idle');
    await sup.startChild(name, null, kindOf('idle'));
    await h.sleep(5000); // host_timeout_ms is 2000: a host that does not pong is gone by now
    assert.equal(host.session, session);
    assert.equal(host.attaches, 1);
    assert.equal((await sup.call(name, 'alive')).toString(), 'alive');
    await sup.terminateChild(name);
  });

  test('replies of many children go up batched, several frames per HostUp', async () => {
    // Every call waits until all 100 are in their handlers: their replies are then
    // made in one turn of the event loop, and go up together.
    const N = 100;
    let inside = 0;
    let open;
    const gate = new Promise((r) => { open = r; });
    const host = newHost(d.addr).register('batch', {
      async handleCall(p) {
        if (++inside === N) open();
        await gate;
        return p;
      },
    });
    await host.start();
    const names = Array.from({ length: N }, () => uniq('bt'));
    await pool(names, 16, (nm) => sup.startChild(nm, null, kindOf('batch')));
    const before = { ...host.stats };
    await Promise.all(names.map((nm) => sup.call(nm, nm)));
    const frames = host.stats.upFrames - before.upFrames;
    // (a pong may go up alone meanwhile)
    const msgs = host.stats.upMessages - before.upMessages - (host.stats.pongs - before.pongs);
    assert.equal(frames, N);
    assert.ok(msgs <= 2, `${msgs} HostUp messages for ${frames} replies made in one turn: no batching`);
    await pool(names, 16, (nm) => sup.terminateChild(nm));
  });

  test('close hands the State off: the children restart on the next host with it', async () => {
    const h1 = newHost(d.addr).register('ho', {
      init(info) { this.n = Number(String(info.state || info.init || '0')); },
      handleCall(p) { if (String(p) === 'incr') this.n++; return String(this.n); },
      getState() { return String(this.n); },
    });
    await h1.start();
    const name = uniq('ho');
    await sup.startChild(name, null, { kind: 'ho', init: '100' });
    assert.equal((await sup.call(name, 'incr')).toString(), '101');
    await h1.close();
    assert.ok(!h1.attached);
    const h2 = newHost(d.addr).register('ho', {
      init(info) { this.n = Number(String(info.state || info.init || '0')); },
      handleCall() { return `h2:${this.n}`; },
    });
    await h2.start();
    assert.equal((await callWhenUp(name, 'get')).toString(), 'h2:101');
    await sup.terminateChild(name);
  });

  test('capacity: the host says how many children it takes (the kinds\' capacities summed)', async () => {
    const host = newHost(d.addr)
      .register('capa', { handleCall: () => 'a' }, { capacity: 1 })
      .register('capb', { handleCall: () => 'b' }, { capacity: 1 });
    await host.start();
    const names = [uniq('cp'), uniq('cp'), uniq('cp')];
    await sup.startChild(names[0], null, kindOf('capa'));
    await sup.startChild(names[1], null, kindOf('capb'));
    await rejectsWith(sup.startChild(names[2], null, kindOf('capa')), distsup.Unavailable, /capacity/);
    assert.equal(host.size, 2);
    for (const nm of names.slice(0, 2)) await sup.terminateChild(nm);
    const one = newHost(d.addr, { capacity: 1 }).register('capc', {});
    await one.start();
    await sup.startChild(names[2], null, kindOf('capc'));
    await rejectsWith(sup.startChild(uniq('cp'), null, kindOf('capc')), distsup.Unavailable, /capacity/);
    await sup.terminateChild(names[2]);
  });

  test('register and start: bad input, and a refused attach rejects start()', async () => {
    const x = newHost(d.addr);
    await assert.rejects(x.start(), TypeError); // no kind
    assert.throws(() => x.register('', {}), TypeError);
    assert.throws(() => x.register('k', null), TypeError);
    x.register('k', {});
    assert.throws(() => x.register('k', {}), /registered already/);
    // A kind that is not a valid name: the daemon refuses, start() rejects for good.
    const bad = newHost(d.addr).register('no such/kind', {});
    await rejectsWith(bad.start(), InvalidArgument);
    // Nobody listening: start() keeps waiting (the host retries); timeout and close end it.
    const port = await h.freePort();
    const away = newHost(`127.0.0.1:${port}`).register('k', {});
    await rejectsWith(away.start({ timeout: 500 }), distsup.Unavailable, /still trying/);
    const pending = away.start();
    await away.close();
    await rejectsWith(pending, distsup.Unavailable, /closed before it attached/);
  });
});

describe('Host flow control', () => {
  let dq;
  before(async () => { dq = await new h.Daemon('fc').start(); }); // default host timing
  after(async () => { if (dq) await dq.stop(); });

  it('past maxQueued waiting messages the host stops reading; it resumes as they drain', {
    timeout: 60000,
  }, async () => {
    const N = 1000;
    let open;
    const gate = new Promise((r) => { open = r; });
    const seen = [];
    const host = new Host(dq.addr, { ...quiet, maxQueued: 50 }).register('fc', {
      async handleCast(p) {
        await gate;
        seen.push(Number(String(p)));
      },
      handleCall: () => String(seen.length),
    });
    const s = new Supervisor(dq.addr, { timeout: 20000 });
    try {
      await host.start();
      await s.startChild('fc1', null, kindOf('fc'));
      const before = host.stats.downFrames;
      await pool(Array.from({ length: N }, (_, i) => i), 1, (i) => s.cast('fc1', String(i)));
      await h.sleep(300);
      const read = host.stats.downFrames - before;
      assert.ok(read < N / 2, `the host read ${read} of ${N} frames while its child was stuck`);
      open();
      await h.waitFor(async () => String(await s.call('fc1', 'n')) === String(N), 30000,
        'the casts to drain');
      assert.deepEqual(seen, Array.from({ length: N }, (_, i) => i));
      assert.equal(host.attaches, 1);
      await s.terminateChild('fc1');
    } finally {
      await host.close();
      s.close();
    }
  });
});

describe('Host with an API token, and over mTLS', () => {
  let dt;
  let tokenFile;
  let dir;
  before(async () => {
    dir = h.tmpdir('distsup-host-sec-');
    tokenFile = path.join(dir, 'token');
    fs.writeFileSync(tokenFile, 'sekrit-host-token\n', { mode: 0o600 });
    dt = await new h.Daemon('tok', ['--api-token-file', tokenFile]).start();
  });
  after(async () => {
    if (dt) await dt.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('attaches with the token; without it start() rejects Unauthenticated', { timeout: 30000 }, async () => {
    const none = new Host(dt.addr, quiet).register('t', {});
    await rejectsWith(none.start(), Unauthenticated);
    const wrong = new Host(dt.addr, { ...quiet, token: 'nope' }).register('t', {});
    await rejectsWith(wrong.start(), Unauthenticated);
    const ok = new Host(dt.addr, { ...quiet, tokenFile }).register('t', { handleCall: (p) => `t:${p}` });
    const s = new Supervisor(dt.addr, { tokenFile });
    try {
      await ok.start();
      await s.startChild('tc', null, kindOf('t'));
      assert.equal((await s.call('tc', 'x')).toString(), 't:x');
      await s.terminateChild('tc');
    } finally {
      await ok.close();
      s.close();
    }
  });

  it('attaches over TLS with a client certificate (mTLS); without one it is refused', {
    timeout: 60000,
  }, async () => {
    const ossl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=ca',
      '-keyout', 'ca.key', '-out', 'ca.pem');
    fs.writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    fs.writeFileSync(path.join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
    for (const [name, ext] of [['server', 'server.ext'], ['client', 'client.ext']]) {
      ossl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`,
        '-out', `${name}.csr`);
      ossl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
        '-days', '2', '-extfile', ext, '-out', `${name}.pem`);
    }
    const P = (x) => path.join(dir, x);
    const dm = await new h.Daemon('mtls', ['--tls-cert', P('server.pem'), '--tls-key', P('server.key'),
      '--tls-client-ca', P('ca.pem')]).start();
    const tls = { tlsCaFile: P('ca.pem'), tlsCertFile: P('client.pem'), tlsKeyFile: P('client.key') };
    const noCert = new Host(dm.addr, { ...quiet, tlsCaFile: P('ca.pem') }).register('m', {});
    const ok = new Host(dm.addr, { ...quiet, ...tls }).register('m', { handleCall: (p) => `m:${p}` });
    const s = new Supervisor(dm.addr, tls);
    try {
      // No certificate: the handshake fails, which a host retries (it may be transient).
      await rejectsWith(noCert.start({ timeout: 2000 }), distsup.Unavailable, /still trying/);
      assert.equal(noCert.attached, false);
      await ok.start();
      await s.startChild('mc', null, kindOf('m'));
      assert.equal((await s.call('mc', 'x')).toString(), 'm:x');
      await s.terminateChild('mc');
    } finally {
      await noCert.close();
      await ok.close();
      s.close();
      await dm.stop();
    }
  });
});
