'use strict';
/*
 * distsup host library for Node: run thousands of supervised children inside your app.
 *
 * The app attaches to its node's distsupd over the Host stream (docs/hosting.md), says
 * which child kinds it runs, and then runs every child of those kinds the cluster
 * places on that node: one handler instance per child.  distsupd places, names,
 * routes, restarts and moves them as it does process children.
 *
 *   const { Host, CallError } = require('distsup');
 *   const host = new Host('127.0.0.1:50051', { token, name: 'app-1' });
 *   host.register('counter', {
 *     init(info) { this.n = Number(String(info.state || info.init || '0')); },
 *     handleCall(payload, ctx) {               // Buffer in; Buffer, string or nothing out
 *       if (String(payload) === 'get') return String(this.n);   // may be async
 *       throw new CallError(3, 'unknown request');  // the caller gets INVALID_ARGUMENT
 *     },
 *     handleCast(payload) { this.n++; },       // a Cast
 *     handleInfo(payload) {},                  // a Send
 *     getState() { return String(this.n); },   // handed to the next incarnation
 *     terminate(reason) {},
 *   });
 *   await host.start();    // resolves once attached; reconnects with backoff on its own
 *   ...
 *   await host.close();
 *
 * The handler is an object (each child gets a fresh Object.create(handler) as `this`)
 * or a class (each child gets `new Class()`).  The worker helper's names work too:
 * call, cast, info, state (lib/worker.js).  Every handler is optional and may be
 * async.  Per child, the library keeps a queue and runs one handler at a time, in the
 * order the messages came, awaiting each before the next; different children run
 * concurrently.
 *
 * Before init runs, `this` has name, id, node, supervisor, kind and host; during a
 * handler, traceparent and tracestate (also the handler's second argument, ctx, as in
 * the worker helper).  this.stop({ normal, reason }) ends the child after the current
 * handler (called from outside its own handlers, from another child say: after the
 * messages already queued):
 * terminate(reason) runs, its state is sent, then its exit (normal: true by default;
 * false is a crash, restarted under its restart type).  this.saveState()
 * sends getState() now (or this.saveState(bytes) sends those): the daemon keeps the
 * last one and gives it to the next incarnation's init (info.state) after a crash, a
 * lost host or a move.  These names (and alive) are the library's on `this`.
 *
 * Failures mean what they mean for processes: an exception in init, handleCast or
 * handleInfo is an abnormal exit (the child is restarted under its restart type, with
 * the last State it saved); one in handleCall fails only that call (UNKNOWN, or the
 * CallError's code).  On Terminate, terminate(reason) runs, then getState() is sent
 * as its State, then a normal exit.
 */
const { EventEmitter } = require('events');
const { AsyncLocalStorage } = require('async_hooks');
const grpc = require('@grpc/grpc-js');
const { api, apiToken, credentials } = require('./client')._internal;
const { fromGrpcError, Unavailable } = require('./errors');
const { CallError, toBuffer } = require('./worker');

const DEFAULT_ADDRESS = '127.0.0.1:50051';
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;
const BATCH_BYTES = 1024 * 1024; // one HostUp carries about this much at most
const MAX_MESSAGE = 64 * 1024 * 1024;
// Attach failures that retrying does not cure: start() rejects and the host stops.
const FATAL = new Set([grpc.status.INVALID_ARGUMENT, grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED, grpc.status.UNIMPLEMENTED]);
// The child whose handler the running code belongs to (stop() from its own handler).
const current = new AsyncLocalStorage();
const RESERVED = ['name', 'id', 'node', 'supervisor', 'kind', 'traceparent', 'tracestate',
  'stop', 'saveState', 'alive', 'host'];

function describe(e) {
  if (e && e.stack) return e.stack;
  return String(e);
}

function shortReason(e) {
  const s = e && e.message !== undefined ? `${e.name || 'Error'}: ${e.message}` : String(e);
  return s.length > 1000 ? `${s.slice(0, 1000)}...` : s;
}

function method(inst, a, b) {
  if (typeof inst[a] === 'function') return inst[a];
  if (b && typeof inst[b] === 'function') return inst[b];
  return null;
}

/** One child this host runs in one session. */
class Child {
  constructor(host, session, num, kind) {
    this.host = host;
    this.session = session;
    this.num = num;
    this.kind = kind;
    this.inst = null;
    this.queue = [];
    this.running = false;
    this.dead = false;
    this.stopReq = null; // stop() inside a handler: after it, before any other message
    this.stopQueued = false; // stop() from outside a handler: queued behind its messages
    this.inHandler = false;
    this.lastState = null; // the bytes the daemon holds for it, as far as we know
  }

  /** Queues a HostFrame for this child, unless it is gone. */
  send(hf) {
    if (this.dead) return;
    hf.child = this.num;
    this.host._push(this.session, hf, hf.frame ? hf.frame : null);
  }

  sendState(bytes) {
    const b = toBuffer(bytes);
    this.lastState = b;
    this.send({ frame: { state: { state: b } } });
  }

  /** Throws away the messages waiting for it. */
  clearQueue() {
    if (!this.queue.length) return;
    this.host._queued -= this.queue.length;
    this.queue = [];
    this.host._maybeResume();
  }

  /** The child is over for us: no handler of it runs again, no frame of it goes up. */
  forget() {
    this.dead = true;
    this.clearQueue();
    this.session.children.delete(this.num);
  }

  exit(normal, reason) {
    this.send({ exit: { normal, reason: reason || '' } });
    this.forget();
  }
}

class Session {
  constructor(call) {
    this.call = call;
    this.children = new Map();
    this.out = [];
    this.pongs = [];
    this.scheduled = false;
    this.blocked = false;
    this.ended = false;
    this.welcome = null;
    this.paused = false;
  }
}

class Host extends EventEmitter {
  /**
   * @param {string} [address] "HOST:PORT" or "unix:/PATH" of this node's distsupd;
   *   default $DISTSUP_ADDR, else 127.0.0.1:50051
   * @param {object} [opts] name: this host's name in the daemon's logs (e.g. the pod);
   *   labels: {k: v}; capacity: the most children this host runs at once (default:
   *   the sum of the kinds' capacities when each has one, else 0, no limit);
   *   token / tokenFile / tls / tlsCaFile / tlsCertFile / tlsKeyFile: as for
   *   Supervisor; maxQueued: messages waiting in the children's queues past which the
   *   host stops reading the stream until they are half gone (default 100000);
   *   log: a function(message) for the library's own lines (default: stderr), or
   *   false.
   */
  constructor(address, opts = {}) {
    super();
    this.address = address || process.env.DISTSUP_ADDR || DEFAULT_ADDRESS;
    this.name = opts.name || '';
    this.labels = opts.labels || {};
    this.capacity = opts.capacity;
    this.maxQueued = opts.maxQueued || 100000;
    if (opts.log === false) this._log = () => {};
    else if (typeof opts.log === 'function') this._log = opts.log;
    else this._log = (m) => process.stderr.write(`distsup host: ${m}\n`);
    const token = apiToken(opts);
    this._metadata = new grpc.Metadata();
    if (token) this._metadata.set('authorization', `Bearer ${token}`);
    const { Service } = api();
    this._client = new Service(this.address, credentials(opts), {
      'grpc.primary_user_agent': 'distsup-node-host/1',
      'grpc.max_receive_message_length': MAX_MESSAGE,
      'grpc.max_send_message_length': MAX_MESSAGE,
    });
    this._kinds = new Map(); // kind -> { handler, capacity, autoSave }
    this._session = null;
    this._started = false;
    this._closed = false;
    this._backoff = BACKOFF_MIN_MS;
    this._timer = null;
    this._queued = 0;
    this.attaches = 0; // sessions that got a welcome
    // Counters since construction: HostDown/HostUp messages, the frames in them, pongs.
    this.stats = { downMessages: 0, downFrames: 0, upMessages: 0, upFrames: 0, pongs: 0 };
  }

  /**
   * Runs children of this kind here.  handler: an object (each child gets
   * Object.create(handler) as `this`) or a class (each child: new handler()).
   * opts.capacity: this kind's share of the host's capacity (see the constructor);
   * opts.autoSave: after each handler that returns, send getState() as the child's
   * State when it changed, so a crash restarts it from there (default false: State
   * goes up on Terminate and on this.saveState()).
   */
  register(kind, handler, opts = {}) {
    if (this._started) throw new Error('register every kind before start()');
    if (!kind || typeof kind !== 'string') throw new TypeError('a kind is a non-empty string');
    if (!handler || (typeof handler !== 'object' && typeof handler !== 'function')) {
      throw new TypeError('a handler is an object or a class');
    }
    if (this._kinds.has(kind)) throw new Error(`kind ${kind} is registered already`);
    this._kinds.set(kind, { handler, capacity: opts.capacity || 0, autoSave: !!opts.autoSave });
    return this;
  }

  /** The node this host is attached to (null between sessions). */
  get node() { return this._session && this._session.welcome ? this._session.welcome.node : null; }

  /** This session's id from the daemon (null between sessions). */
  get session() { return this._session && this._session.welcome ? this._session.welcome.session : null; }

  /** Is a session attached now? */
  get attached() { return !!(this._session && this._session.welcome && !this._session.ended); }

  /** How many children run here now. */
  get size() { return this._session ? this._session.children.size : 0; }

  /**
   * Attaches.  Resolves once the daemon welcomed this host (the host then keeps
   * itself attached: after the stream ends it reconnects, 100 ms doubling to 5 s).
   * Rejects when the daemon refuses the attach for good (a bad kind, a bad token;
   * the host is then closed), when close() comes first, or, with opts.timeout (ms),
   * when no attach succeeded by then (the host keeps trying: close() it to stop, or
   * call start() again to wait on).
   */
  start(opts = {}) {
    if (this._closed) return Promise.reject(new Error('this host is closed'));
    if (!this._kinds.size) return Promise.reject(new TypeError('register at least one kind before start()'));
    if (this.attached) return Promise.resolve(this);
    const waiting = new Promise((resolve, reject) => {
      let timer = null;
      const done = (err) => {
        if (timer) clearTimeout(timer);
        this.removeListener('attached', onAttached);
        this.removeListener('refused', onRefused);
        if (err) reject(err);
        else resolve(this);
      };
      const onAttached = () => done(null);
      const onRefused = (e) => done(e);
      this.on('attached', onAttached);
      this.on('refused', onRefused);
      if (opts.timeout) {
        timer = setTimeout(() => done(new Unavailable(
          `could not attach to ${this.address} within ${opts.timeout} ms (still trying)`)),
        opts.timeout);
      }
    });
    if (!this._started) {
      this._started = true;
      this._connect();
    }
    return waiting;
  }

  _hello() {
    const kinds = [...this._kinds.keys()];
    let capacity = this.capacity;
    if (capacity === undefined || capacity === null) {
      const caps = [...this._kinds.values()].map((k) => k.capacity);
      capacity = caps.every((c) => c > 0) ? caps.reduce((a, b) => a + b, 0) : 0;
    }
    return { hello: { kinds, capacity, labels: this.labels, name: this.name } };
  }

  _connect() {
    this._timer = null;
    if (this._closed) return;
    const call = this._client.Host(this._metadata.clone());
    const s = new Session(call);
    this._session = s;
    call.on('data', (down) => this._onDown(s, down));
    call.on('drain', () => {
      s.blocked = false;
      this._flush(s);
    });
    call.on('status', (st) => this._ended(s, st));
    call.on('error', (e) => this._ended(s, e)); // a status comes too; whichever is first
    call.on('end', () => {}); // the read side; the status follows
    call.write(this._hello());
  }

  _ended(s, st) {
    if (s.ended) return;
    s.ended = true;
    const code = st && typeof st.code === 'number' ? st.code : grpc.status.UNKNOWN;
    const details = (st && (st.details || st.message)) || '';
    // Every child of the session is dropped: the daemon restarts them as it sees fit.
    for (const c of [...s.children.values()]) c.forget();
    this._queued = 0;
    s.out = [];
    s.pongs = [];
    try { s.call.end(); } catch (e) { /* ended */ }
    if (this._session === s) this._session = null;
    const err = fromGrpcError({ code, details });
    if (s.welcome) this.emit('detached', err);
    if (this._closed) return;
    if (!s.welcome && FATAL.has(code) && this.attaches === 0) {
      // The first attach is refused for a reason retrying does not cure.
      this._log(`attach refused: ${err.message}`);
      this._closed = true;
      this._client.close();
      this.emit('refused', err);
      return;
    }
    this._log(`${s.welcome ? 'session ended' : 'attach failed'}: ${err.message}; ` +
      `reconnecting in ${this._backoff} ms`);
    const wait = this._backoff;
    this._backoff = Math.min(this._backoff * 2, BACKOFF_MAX_MS);
    this._timer = setTimeout(() => this._connect(), wait);
  }

  _onDown(s, down) {
    if (s.ended) return;
    this.stats.downMessages++;
    this.stats.downFrames += (down.frames || []).length;
    if (down.welcome) {
      s.welcome = {
        node: down.welcome.node, session: down.welcome.session,
        pingMs: down.welcome.ping_ms, timeoutMs: down.welcome.timeout_ms,
      };
      this._backoff = BACKOFF_MIN_MS;
      this.attaches++;
      this.emit('attached', s.welcome);
    }
    for (const hf of down.frames || []) this._onFrame(s, hf);
    if (down.ping) {
      s.pongs.push(down.ping.seq);
      this._schedule(s);
    }
    if (this._queued >= this.maxQueued && !s.paused) {
      s.paused = true;
      s.call.pause();
    }
  }

  _onFrame(s, hf) {
    const num = hf.child;
    if (hf.drop) {
      const c = s.children.get(num);
      if (c) c.forget();
      return;
    }
    const f = hf.frame;
    if (!f || !f.frame) return;
    if (f.frame === 'init') {
      if (s.children.has(num)) {
        this._log(`ignoring a second init for child ${num}`);
        return;
      }
      const c = new Child(this, s, num, hf.kind);
      s.children.set(num, c);
      this._enqueue(c, f);
      return;
    }
    const c = s.children.get(num);
    if (!c) return; // it exited or was dropped: the daemon fails what it sent it
    if (f.frame === 'call' || f.frame === 'cast' || f.frame === 'info' || f.frame === 'terminate') {
      this._enqueue(c, f);
    } else {
      this._log(`ignoring an unexpected ${f.frame} frame for child ${num}`);
    }
  }

  _enqueue(c, f) {
    c.queue.push(f);
    this._queued++;
    if (!c.running) this._pump(c);
  }

  _dequeued() {
    this._queued--;
    this._maybeResume();
  }

  _maybeResume() {
    const s = this._session;
    if (s && s.paused && this._queued <= this.maxQueued / 2) {
      s.paused = false;
      s.call.resume();
    }
  }

  async _pump(c) {
    c.running = true;
    try {
      while (!c.dead) {
        if (c.stopReq) {
          const { normal, reason } = c.stopReq;
          c.clearQueue();
          await this._shutdown(c, reason, normal, reason);
          break;
        }
        const f = c.queue.shift();
        if (!f) break;
        this._dequeued();
        c.inHandler = true;
        try {
          await current.run(c, () => this._handle(c, f));
        } finally {
          c.inHandler = false;
        }
      }
    } catch (e) {
      // Only a bug of the library gets here: the child cannot go on.
      this._log(`child ${c.inst && c.inst.name}: ${describe(e)}`);
      c.exit(false, `host library error: ${shortReason(e)}`);
    } finally {
      c.running = false;
    }
  }

  _makeInstance(c, init) {
    const { handler } = this._kinds.get(c.kind);
    const inst = typeof handler === 'function' ? new handler() : Object.create(handler);
    const fixed = {
      name: init.name, id: init.id, node: init.node, supervisor: init.supervisor, kind: c.kind,
    };
    for (const [k, v] of Object.entries(fixed)) {
      Object.defineProperty(inst, k, { value: v, writable: true, configurable: true, enumerable: false });
    }
    for (const k of ['traceparent', 'tracestate']) {
      Object.defineProperty(inst, k, { value: '', writable: true, configurable: true, enumerable: false });
    }
    Object.defineProperty(inst, 'host', {
      value: this, writable: true, configurable: true, enumerable: false,
    });
    Object.defineProperty(inst, 'alive', {
      get: () => !c.dead && !c.stopReq && !c.stopQueued, configurable: true,
    });
    Object.defineProperty(inst, 'stop', {
      value: (o = {}) => {
        if (c.dead || c.stopReq || c.stopQueued) return;
        const req = { normal: o.normal === undefined ? true : !!o.normal, reason: o.reason || '' };
        if (c.inHandler && current.getStore() === c) {
          c.stopReq = req;
        } else {
          c.stopQueued = true;
          this._enqueue(c, { frame: 'stop', stop: req });
        }
      },
      writable: true, configurable: true, enumerable: false,
    });
    Object.defineProperty(inst, 'saveState', {
      value: (bytes) => {
        if (c.dead) return;
        if (bytes === undefined) {
          const fn = method(inst, 'getState', 'state');
          if (!fn) throw new Error('saveState() without bytes needs getState');
          bytes = fn.call(inst);
          if (bytes && typeof bytes.then === 'function') {
            throw new Error('getState returned a promise: pass the bytes to saveState(bytes)');
          }
          if (bytes === undefined || bytes === null) return;
        }
        c.sendState(bytes);
      },
      writable: true, configurable: true, enumerable: false,
    });
    return inst;
  }

  async _handle(c, f) {
    const kind = f.frame;
    if (kind === 'init') {
      const i = f.init;
      if (!this._kinds.has(c.kind)) {
        c.exit(false, `this host does not run kind ${c.kind}`);
        return;
      }
      const state = i.state && i.state.length ? Buffer.from(i.state) : null;
      c.lastState = state || Buffer.alloc(0);
      try {
        c.inst = this._makeInstance(c, i);
        const fn = method(c.inst, 'init');
        if (fn) {
          await fn.call(c.inst, {
            supervisor: i.supervisor, name: i.name, id: i.id, node: i.node, kind: c.kind,
            init: Buffer.from(i.init || []), state,
          });
        }
      } catch (e) {
        this._log(`child ${i.name}: init failed: ${describe(e)}`);
        c.exit(false, `init failed: ${shortReason(e)}`);
        return;
      }
      c.send({ frame: { ready: {} } });
      await this._autoSave(c);
      return;
    }
    const inst = c.inst;
    if (kind === 'terminate') {
      await this._shutdown(c, f.terminate.reason, true, '');
      return;
    }
    if (kind === 'stop') {
      await this._shutdown(c, f.stop.reason, f.stop.normal, f.stop.reason);
      return;
    }
    const m = f[kind];
    const payload = Buffer.from(m.payload || []);
    const ctx = { traceparent: m.traceparent || '', tracestate: (m.traceparent && m.tracestate) || '' };
    inst.traceparent = ctx.traceparent;
    inst.tracestate = ctx.tracestate;
    try {
      if (kind === 'call') {
        const reply = { ref: m.ref };
        try {
          const fn = method(inst, 'handleCall', 'call');
          if (!fn) throw new CallError(12, 'this child does not handle calls');
          reply.payload = toBuffer(await fn.call(inst, payload, ctx));
        } catch (e) {
          if (e instanceof CallError) {
            reply.error = e.message || 'error';
            reply.code = e.code || 2;
          } else {
            this._log(`child ${inst.name}: call failed: ${describe(e)}`);
            reply.error = shortReason(e);
            reply.code = 2;
          }
        }
        c.send({ frame: { reply } });
      } else {
        const fn = kind === 'cast' ? method(inst, 'handleCast', 'cast') : method(inst, 'handleInfo', 'info');
        if (fn) {
          try {
            await fn.call(inst, payload, ctx);
          } catch (e) {
            const what = kind === 'cast' ? 'handleCast' : 'handleInfo';
            this._log(`child ${inst.name}: ${what} failed: ${describe(e)}`);
            c.exit(false, `${what} failed: ${shortReason(e)}`);
            return;
          }
        }
      }
    } finally {
      inst.traceparent = '';
      inst.tracestate = '';
    }
    await this._autoSave(c);
  }

  async _autoSave(c) {
    if (c.dead || c.stopReq || !this._kinds.get(c.kind).autoSave) return;
    const fn = method(c.inst, 'getState', 'state');
    if (!fn) return;
    let st;
    try {
      st = await fn.call(c.inst);
    } catch (e) {
      this._log(`child ${c.inst.name}: getState failed: ${describe(e)}`);
      c.exit(false, `getState failed: ${shortReason(e)}`);
      return;
    }
    if (st === undefined || st === null || c.dead) return;
    const b = toBuffer(st);
    if (!c.lastState || !b.equals(c.lastState)) c.sendState(Buffer.from(b));
  }

  /** terminate(reason), State from getState(), then the exit (unless exitNormal is null). */
  async _shutdown(c, reason, exitNormal, exitReason) {
    const inst = c.inst;
    const term = inst && method(inst, 'terminate');
    if (term) {
      try {
        await term.call(inst, reason || '');
      } catch (e) {
        this._log(`child ${inst.name}: terminate failed: ${describe(e)}`);
      }
    }
    const get = inst && method(inst, 'getState', 'state');
    if (get && !c.dead) {
      try {
        const st = await get.call(inst);
        if (st !== undefined && st !== null) c.sendState(st);
      } catch (e) {
        this._log(`child ${inst.name}: getState failed: ${describe(e)}`);
      }
    }
    if (exitNormal === null) c.forget();
    else c.exit(exitNormal, exitReason);
  }

  _push(s, hf) {
    if (s.ended) return;
    s.out.push(hf);
    this._schedule(s);
  }

  _schedule(s) {
    if (s.scheduled || s.ended) return;
    s.scheduled = true;
    setImmediate(() => {
      s.scheduled = false;
      this._flush(s);
    });
  }

  /** Writes what waits, several frames per HostUp (about BATCH_BYTES each). */
  _flush(s, force = false) {
    if (s.ended || (s.blocked && !force)) return;
    while (s.out.length || s.pongs.length) {
      const up = {};
      if (s.pongs.length) {
        up.pong = { seq: s.pongs.shift() };
        this.stats.pongs++;
      }
      let n = 0;
      let bytes = 0;
      while (n < s.out.length && (n === 0 || bytes < BATCH_BYTES)) {
        const f = s.out[n].frame;
        const m = f && (f.reply || f.state);
        bytes += 24 + (m ? (m.payload || m.state || '').length + ((m.error && m.error.length) || 0) : 0);
        n++;
      }
      if (n) up.frames = s.out.splice(0, n);
      this.stats.upMessages++;
      this.stats.upFrames += n;
      if (!s.call.write(up)) {
        s.blocked = true;
        if (!force) return;
      }
    }
  }

  /**
   * Detaches.  Each child's terminate runs (after the handler it is in, if any) and
   * its getState is sent as its State, then the stream ends: the daemon restarts the
   * children elsewhere (on another host of their kind, or once one attaches) with that
   * State.  opts.timeout (ms, default 5000) bounds the wait for running handlers.
   */
  async close(opts = {}) {
    if (this._closed && !this._session) return;
    this._closed = true;
    // A start() still waiting for its first attach fails now (no-op once attached).
    this.emit('refused', new Unavailable('the host was closed before it attached'));
    if (this._timer) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    const s = this._session;
    if (s && !s.ended) {
      s.call.pause();
      const timeout = opts.timeout === undefined ? 5000 : opts.timeout;
      const end = Date.now() + timeout;
      const children = [...s.children.values()];
      for (const c of children) c.clearQueue();
      while (children.some((c) => c.running && !c.dead) && Date.now() < end && !s.ended) {
        await new Promise((r) => setTimeout(r, 10));
      }
      await Promise.all(children.filter((c) => !c.dead && !c.running && c.inst)
        .map((c) => this._shutdown(c, 'host closing', null, '')));
      this._flush(s, true);
      const gone = new Promise((r) => {
        if (s.ended) r();
        else s.call.once('status', r);
      });
      s.call.end();
      const t = setTimeout(() => s.call.cancel(), Math.max(100, end - Date.now()));
      await gone;
      clearTimeout(t);
    }
    this._session = null;
    this._client.close();
  }
}

module.exports = { Host, CallError, _internal: { RESERVED, BATCH_BYTES } };
