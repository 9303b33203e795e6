'use strict';
// The distsup Node client: promises over @grpc/grpc-js, the .proto files loaded at run
// time with @grpc/proto-loader.  Times are milliseconds; payloads are Buffer,
// Uint8Array or string (sent as UTF-8); replies are Buffers.
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { protoDir } = require('./protos');
const { DistsupError, errorFor, fromGrpcError, Unavailable } = require('./errors');

const DEFAULT_ADDRESS = '127.0.0.1:50051';
const DEFAULT_TIMEOUT_MS = 10000;

let cached = null;
function api() {
  if (!cached) {
    const dir = protoDir();
    const def = protoLoader.loadSync('distsup/v1/supervisor.proto', {
      includeDirs: [dir],
      keepCase: true,
      longs: Number,
      enums: String,
      bytes: Buffer,
      defaults: true,
      oneofs: true,
    });
    const pkg = grpc.loadPackageDefinition(def).distsup.v1;
    cached = { Service: pkg.Supervisor, def, dir };
  }
  return cached;
}

const ENUMS = {
  restart: ['PERMANENT', 'TRANSIENT', 'TEMPORARY'],
  protocol: ['FRAMES', 'NONE'],
  kind: ['PROCESS_START', 'PROCESS_STOP', 'PROCESS_RESTART', 'PROCESS_FAILED', 'PROCESS_MOVED',
    'NODE_UP', 'NODE_DOWN', 'NODE_TERMINATE'],
};

function enumName(what, value) {
  const names = ENUMS[what];
  const v = typeof value === 'number' ? names[value] : String(value).toUpperCase().replace(/-/g, '_');
  if (!names.includes(v)) {
    throw new TypeError(`${what} must be one of ${names.map((n) => n.toLowerCase()).join(', ')}, not ${value}`);
  }
  return v;
}

function toBuffer(p) {
  if (p === undefined || p === null) return Buffer.alloc(0);
  if (typeof p === 'string') return Buffer.from(p, 'utf8');
  if (Buffer.isBuffer(p)) return p;
  if (p instanceof Uint8Array) return Buffer.from(p.buffer, p.byteOffset, p.byteLength);
  throw new TypeError('a payload is a Buffer, Uint8Array or string');
}

function toChild(c) {
  if (!c) return null;
  const s = c.spec || {};
  return {
    supervisor: c.supervisor,
    name: c.name,
    id: c.id,
    node: c.node,
    osPid: c.os_pid,
    state: c.state,
    restarts: c.restarts,
    startedAtMs: c.started_at_ms,
    incarnation: c.incarnation,
    calls: c.calls, // calls, casts and sends delivered by its node since it started it
    spec: {
      name: s.name,
      argv: s.argv || [],
      env: s.env || {},
      cwd: s.cwd,
      restart: s.restart,
      shutdownMs: s.shutdown_ms,
      killImmediately: s.kill_immediately,
      node: s.node,
      key: s.key,
      init: s.init || Buffer.alloc(0),
      labels: s.labels || {},
      protocol: s.protocol,
      kind: s.kind || '',
    },
  };
}

function toEvent(e) {
  return {
    seq: e.seq,
    kind: e.kind,
    supervisor: e.supervisor,
    name: e.name,
    id: e.id,
    node: e.node,
    osPid: e.os_pid,
    exitCode: e.exit_code,
    signal: e.signal,
    reason: e.reason,
    atMs: e.at_ms,
    restarts: e.restarts,
  };
}

// grpc.health.v1: two one-field messages, coded by hand (no .proto file needed).
function encodeHealthRequest(service) {
  const s = Buffer.from(service || '', 'utf8');
  if (!s.length) return Buffer.alloc(0);
  const len = [];
  let n = s.length;
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    len.push(b);
  } while (n);
  return Buffer.concat([Buffer.from([0x0a, ...len]), s]);
}
const HEALTH = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];
function decodeHealthResponse(buf) {
  let status = 0;
  let i = 0;
  while (i < buf.length) {
    const tag = buf[i++];
    if (tag !== 0x08) throw new Error('unexpected field in HealthCheckResponse');
    let shift = 0;
    let v = 0;
    for (;;) {
      const b = buf[i++];
      v |= (b & 0x7f) << shift;
      shift += 7;
      if (!(b & 0x80)) break;
    }
    status = v;
  }
  return HEALTH[status] || 'UNKNOWN';
}

/**
 * An iterator of events from a Watch stream: `for await (const ev of watch)`.
 * Ends when the daemon closes the stream or after cancel(); throws DeadlineExceeded
 * when its timeout passes, or the mapped error when the stream fails.
 */
class Watch {
  constructor(call) {
    this._call = call;
    this._cancelled = false;
    this._failure = null;
    this.opened = new Promise((resolve, reject) => {
      call.once('metadata', () => resolve(this));
      call.once('error', (e) => {
        this._failure = e;
        reject(fromGrpcError(e));
      });
      call.once('end', () => resolve(this));
    });
    this.opened.catch(() => {}); // read by watch(); never an unhandled rejection
  }

  async *[Symbol.asyncIterator]() {
    try {
      for await (const ev of this._call) yield toEvent(ev);
      // An error emitted before iteration began is not seen by the stream's iterator.
      if (this._failure) throw this._failure;
    } catch (e) {
      if (this._cancelled && e.code === grpc.status.CANCELLED) return;
      throw fromGrpcError(e);
    } finally {
      if (!this._cancelled) this.cancel();
    }
  }

  /** The next event, or null when the stream has ended. */
  async next() {
    if (!this._iter) this._iter = this[Symbol.asyncIterator]();
    const r = await this._iter.next();
    return r.done ? null : r.value;
  }

  /** Ends the stream; iteration then stops. */
  cancel() {
    this._cancelled = true;
    this._call.cancel();
  }
}

function readFile(file, what) {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new TypeError(`cannot read ${what} ${file}: ${e.message}`);
  }
}

// The API token: opts.token, else opts.tokenFile's content, else $DISTSUP_TOKEN, else
// the content of the file $DISTSUP_TOKEN_FILE; null when there is none.
function apiToken(opts) {
  let { token, tokenFile } = opts;
  if (!token && !tokenFile) {
    token = process.env.DISTSUP_TOKEN || null;
    if (!token) tokenFile = process.env.DISTSUP_TOKEN_FILE || null;
  }
  if (!token && tokenFile) {
    token = readFile(tokenFile, 'token file').toString('utf8').trim();
    if (!token) throw new TypeError(`token file ${tokenFile} is empty`);
  }
  return token ? String(token).trim() : null;
}

function credentials(opts) {
  if (!opts.tls && !opts.tlsCaFile && !opts.tlsCertFile && !opts.tlsKeyFile) {
    return grpc.credentials.createInsecure();
  }
  if (!opts.tlsCertFile !== !opts.tlsKeyFile) {
    throw new TypeError('a client certificate needs both tlsCertFile and tlsKeyFile');
  }
  return grpc.credentials.createSsl(
    opts.tlsCaFile ? readFile(opts.tlsCaFile, 'TLS CA file') : null,
    opts.tlsKeyFile ? readFile(opts.tlsKeyFile, 'TLS key') : null,
    opts.tlsCertFile ? readFile(opts.tlsCertFile, 'TLS certificate') : null,
  );
}

class Supervisor {
  /**
   * @param {string} [address] "HOST:PORT" or "unix:/PATH"; default $DISTSUP_ADDR, else
   *   127.0.0.1:50051
   * @param {object} [opts] supervisor: the named supervisor to use ("" = default);
   *   timeout: each RPC's deadline in ms (call() adds the child's own timeout);
   *   token / tokenFile: the daemon's API token (its --api-token-file), sent with every
   *   call as "authorization: Bearer TOKEN" (default: $DISTSUP_TOKEN, else the file
   *   $DISTSUP_TOKEN_FILE);
   *   tls: connect with TLS (implied by any file below); tlsCaFile verifies the daemon
   *   (default: Node's roots); tlsCertFile and tlsKeyFile: this client's certificate,
   *   for a daemon with tls_client_ca (mTLS).
   */
  constructor(address, opts = {}) {
    this.address = address || process.env.DISTSUP_ADDR || DEFAULT_ADDRESS;
    this.supervisor = opts.supervisor || '';
    this.timeout = opts.timeout || DEFAULT_TIMEOUT_MS;
    const token = apiToken(opts);
    this._metadata = new grpc.Metadata();
    if (token) this._metadata.set('authorization', `Bearer ${token}`);
    const { Service } = api();
    this.client = new Service(this.address, credentials(opts), {
      'grpc.primary_user_agent': 'distsup-node/1',
    });
  }

  _md() {
    return this._metadata.clone();
  }

  close() {
    this.client.close();
  }

  _sup(o) {
    return o && o.supervisor !== undefined ? o.supervisor : this.supervisor;
  }

  _unary(method, req, timeoutMs, opts) {
    const deadline = new Date(Date.now() + (timeoutMs || this.timeout));
    const md = this._md();
    if (opts && opts.traceparent) {
      md.set('traceparent', String(opts.traceparent));
      if (opts.tracestate) md.set('tracestate', String(opts.tracestate));
    }
    return new Promise((resolve, reject) => {
      this.client[method](req, md, { deadline }, (err, resp) => {
        if (err) reject(fromGrpcError(err));
        else resolve(resp);
      });
    });
  }

  /** Resolves once the channel is connected; Unavailable after timeoutMs. */
  waitReady(timeoutMs = DEFAULT_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(new Date(Date.now() + timeoutMs), (err) => {
        if (err) reject(new Unavailable(`cannot connect to ${this.address} within ${timeoutMs} ms`));
        else resolve(this);
      });
    });
  }

  /**
   * Starts a child; resolves to it once it runs (a worker: once it sent Ready).
   *   await sup.startChild('c1', ['./counter'], { init: '10', restart: 'transient' })
   * opts: env, cwd, restart, shutdownMs, killImmediately, node, key, init, labels,
   * protocol ('frames' | 'none'), supervisor.  name '' or null: generated.
   * A hosted child (docs/hosting.md) names opts.kind instead of argv:
   *   await sup.startChild('c2', null, { kind: 'counter', init: '10' })
   * The child resolved has no spec.init and empty env values unless
   * opts.includeSpecData (they can be large: the answer stays small).
   */
  async startChild(name, argv, opts = {}) {
    if (opts.kind) {
      if (argv && (!Array.isArray(argv) || argv.length)) {
        throw new TypeError('a hosted child (opts.kind) has no argv: pass null');
      }
      argv = [];
    } else if (!Array.isArray(argv) || argv.length === 0) {
      throw new TypeError('argv must be a non-empty array (program and arguments), or opts.kind set');
    }
    const spec = {
      name: name || '',
      kind: opts.kind ? String(opts.kind) : '',
      argv: argv.map(String),
      env: opts.env || {},
      cwd: opts.cwd || '',
      restart: enumName('restart', opts.restart || 'PERMANENT'),
      shutdown_ms: opts.shutdownMs || 0,
      kill_immediately: !!opts.killImmediately,
      node: opts.node || '',
      key: opts.key || '',
      init: toBuffer(opts.init),
      labels: opts.labels || {},
      protocol: enumName('protocol', opts.protocol || 'FRAMES'),
    };
    const r = await this._unary('StartChild', {
      supervisor: this._sup(opts), spec, include_spec_data: !!opts.includeSpecData,
    });
    return toChild(r.child);
  }

  /** Stops a child by name (or { id }); resolves to { name, exitCode, signal }. */
  async terminateChild(name, opts = {}) {
    if (!name && !opts.id) throw new TypeError('terminateChild needs a name or { id }');
    const r = await this._unary('TerminateChild', {
      supervisor: this._sup(opts), name: name || '', id: name ? '' : opts.id,
    });
    return { name: r.name || name, exitCode: r.exit_code, signal: r.signal };
  }

  /**
   * Every child, cluster-wide (or on opts.node), fetched page by page
   * (opts.pageSize a page; 0: the daemon's default).  Without opts.includeSpecData
   * their specs have no init and empty env values.
   */
  async children(opts = {}) {
    const out = [];
    let token = '';
    for (;;) {
      const r = await this._unary('Children', {
        supervisor: this._sup(opts), node: opts.node || '', page_size: opts.pageSize || 0,
        page_token: token, include_spec_data: !!opts.includeSpecData,
      });
      for (const c of r.children || []) out.push(toChild(c));
      token = r.next_page_token || '';
      if (!token) return out;
    }
  }

  async countChildren(opts = {}) {
    return this._unary('CountChildren', { supervisor: this._sup(opts), node: opts.node || '' });
  }

  /** The child called name; rejects with NotFound when there is none. */
  async whereis(name, opts = {}) {
    return toChild((await this._unary('WhereIs', {
      supervisor: this._sup(opts), name, include_spec_data: !!opts.includeSpecData,
    })).child);
  }

  /** The child whose current incarnation has this id. */
  async whois(id, opts = {}) {
    const r = await this._unary('WhoIs', {
      supervisor: this._sup(opts), id, include_spec_data: !!opts.includeSpecData,
    });
    const c = toChild(r.child) || { id };
    if (!c.name) c.name = r.name;
    return c;
  }

  /**
   * Calls the worker; resolves to its reply (a Buffer).  opts.timeout: the worker's
   * time to answer in ms (default: the daemon's, 5000); past it DeadlineExceeded.
   * opts.traceparent (and opts.tracestate): a W3C trace context the worker receives
   * with the message, sent as gRPC metadata; the daemon drops one that is not valid.
   */
  async call(name, payload, opts = {}) {
    const t = opts.timeout || 0;
    const r = await this._unary('Call', {
      supervisor: this._sup(opts), name, payload: toBuffer(payload), timeout_ms: t,
    }, (t || 5000) + this.timeout, opts);
    return r.payload;
  }

  /** Fire and forget (a Cast frame).  opts.traceparent, opts.tracestate: as in call(). */
  async cast(name, payload, opts = {}) {
    await this._unary('Cast', { supervisor: this._sup(opts), name, payload: toBuffer(payload) },
      undefined, opts);
  }

  /** A plain message (an Info frame).  opts.traceparent, opts.tracestate: as in call(). */
  async send(name, payload, opts = {}) {
    await this._unary('Send', { supervisor: this._sup(opts), name, payload: toBuffer(payload) },
      undefined, opts);
  }

  async nodes(opts = {}) {
    const r = await this._unary('Nodes', { supervisor: this._sup(opts) });
    return (r.nodes || []).map((n) => ({
      name: n.name, address: n.address, up: n.up, self: n.self, children: n.children,
      labels: n.labels || {}, kinds: n.kinds || [],
    }));
  }

  /** The node a key is placed on. */
  async nodeFor(key, opts = {}) {
    return (await this._unary('NodeFor', { supervisor: this._sup(opts), key })).node;
  }

  /** { mine, node }: is key placed on this daemon's node, and the key's node. */
  async mine(key, opts = {}) {
    const r = await this._unary('Mine', { supervisor: this._sup(opts), key });
    return { mine: r.mine, node: r.node };
  }

  /** grpc.health.v1 Check: 'SERVING', 'NOT_SERVING', 'UNKNOWN' or 'SERVICE_UNKNOWN'. */
  health(service = '', opts = {}) {
    const deadline = new Date(Date.now() + (opts.timeout || this.timeout));
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest('/grpc.health.v1.Health/Check', encodeHealthRequest,
        decodeHealthResponse, service, this._md(), { deadline }, (err, s) => {
          if (err) reject(fromGrpcError(err));
          else resolve(s);
        });
    });
  }

  /**
   * Follows lifecycle events.  Resolves to a Watch (an async iterator of events) once
   * the daemon has subscribed the stream, so every later event is delivered.
   * opts: kinds (['process_start', ...]; default every kind), supervisor ('*' = every
   * supervisor), timeout (the stream's deadline in ms; default none), cluster (every
   * node's events, cluster mode).
   */
  async watch(opts = {}) {
    const req = {
      supervisor: this._sup(opts),
      kinds: (opts.kinds || []).map((k) => enumName('kind', k)),
    };
    if (opts.cluster) req.cluster = true;
    const callOpts = opts.timeout ? { deadline: new Date(Date.now() + opts.timeout) } : {};
    const w = new Watch(this.client.Watch(req, this._md(), callOpts));
    await w.opened;
    return w;
  }
}

module.exports = {
  Supervisor, Watch, DEFAULT_ADDRESS, DEFAULT_TIMEOUT_MS, EVENT_KINDS: ENUMS.kind,
  _internal: { api, apiToken, credentials, encodeHealthRequest, decodeHealthResponse, toBuffer, path },
};
