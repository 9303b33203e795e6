'use strict';
// The Node client (clients/node) against a real distsupd with real children: the C
// counter and the Node counter (examples/node_counter on the package's worker helper).
const assert = require('node:assert/strict');
const { describe, it, before, after } = require('node:test');
const fs = require('fs');
const path = require('path');
const { spawn, execFileSync } = require('child_process');
const h = require('./harness');

const distsup = require(h.paths.client);
const {
  Supervisor, DistsupError, NotFound, AlreadyExists, DeadlineExceeded, InvalidArgument,
  FailedPrecondition, Unavailable, Unknown, PermissionDenied,
} = distsup;
const worker = require(path.join(h.paths.client, 'worker'));

const NODE = process.execPath;
let d;
let sup;
let n = 0;
const uniq = (p) => `${p}${++n}`;

// Each test: bounded in time; on failure the daemon's log is attached.
function test(name, fn, timeout = 30000) {
  it(name, { timeout }, async () => {
    try {
      await fn();
    } catch (e) {
      e.message += `\n---- daemon log ----\n${d.log().slice(-4000)}`;
      throw e;
    }
  });
}

async function nextEvent(iter, what) {
  const r = await iter.next();
  assert.ok(!r.done, `the watch ended while waiting for ${what}`);
  return r.value;
}

async function rejectsWith(promise, cls, re) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof cls, `${e && e.name}: ${e && e.message} is not a ${cls.name}`);
    assert.ok(e instanceof DistsupError || e instanceof TypeError);
    if (re) assert.match(e.message, re);
    return true;
  });
}

describe('Supervisor against a real distsupd', () => {
  before(async () => {
    d = await new h.Daemon().start();
    sup = new Supervisor(d.addr, { timeout: 10000 });
  });
  after(async () => {
    if (sup) sup.close();
    if (d) await d.stop();
  });

  test('health, waitReady and the address from $DISTSUP_ADDR', async () => {
    assert.equal(await sup.waitReady(5000), sup);
    assert.equal(await sup.health(), 'SERVING');
    assert.equal(await sup.health('distsup.v1.Supervisor'), 'SERVING');
    const old = process.env.DISTSUP_ADDR;
    process.env.DISTSUP_ADDR = d.addr;
    try {
      const s2 = new Supervisor();
      assert.equal(s2.address, d.addr);
      assert.equal(await s2.health(), 'SERVING');
      s2.close();
    } finally {
      if (old === undefined) delete process.env.DISTSUP_ADDR;
      else process.env.DISTSUP_ADDR = old;
    }
  });

  test('start, call, cast, send (C worker)', async () => {
    const name = uniq('c');
    const c = await sup.startChild(name, [h.paths.counter], {
      init: '10', env: { A: '1' }, labels: { team: 'x' }, restart: 'transient',
    });
    assert.equal(c.name, name);
    assert.equal(c.state, 'RUNNING');
    assert.equal(c.node, d.node);
    assert.ok(c.osPid > 0 && h.pidAlive(c.osPid));
    assert.deepEqual(c.spec.argv, [h.paths.counter]);
    assert.equal(c.spec.restart, 'TRANSIENT');
    assert.deepEqual(c.spec.env, { A: '' }); // values and init only when asked for
    assert.deepEqual(c.spec.labels, { team: 'x' });
    assert.equal(c.spec.init.length, 0);
    const full = await sup.whereis(name, { includeSpecData: true });
    assert.deepEqual(full.spec.env, { A: '1' });
    assert.equal(full.spec.init.toString(), '10');
    assert.equal((await sup.call(name, 'get')).toString(), '10');
    assert.equal((await sup.call(name, Buffer.from('incr'))).toString(), '11');
    await sup.cast(name, 'incr');
    await sup.send(name, new Uint8Array(Buffer.from('incr')));
    assert.equal((await sup.call(name, 'get')).toString(), '13');
    const bin = Buffer.from([0, 0xff, 0x41]);
    assert.deepEqual(await sup.call(name, Buffer.concat([Buffer.from('echo:'), bin])), bin);
    await sup.terminateChild(name);
  });

  test('the Node worker example', async () => {
    const name = uniq('nc');
    const c = await sup.startChild(name, [NODE, h.paths.nodeCounter], { init: '41' });
    assert.equal(c.state, 'RUNNING');
    assert.equal((await sup.call(name, 'incr')).toString(), '42');
    await sup.cast(name, 'incr');
    await sup.send(name, 'incr');
    await sup.cast(name, 'an unknown cast is logged to stderr, not written to the protocol');
    assert.equal((await sup.call(name, 'get')).toString(), '44');
    assert.equal((await sup.call(name, 'echo:h\u00e9')).toString(), 'h\u00e9');
    await rejectsWith(sup.call(name, 'what'), InvalidArgument, /unknown request/);
    await rejectsWith(sup.call(name, 'sleep:3000', { timeout: 200 }), DeadlineExceeded);
    const t = await sup.terminateChild(name);
    assert.equal(t.name, name);
    await rejectsWith(sup.whereis(name), NotFound);
  });

  test('trace context: the Node client sends it, the Node worker gets it', async () => {
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const name = uniq('tr');
    await sup.startChild(name, [NODE, h.paths.nodeCounter]);
    assert.equal((await sup.call(name, 'trace')).toString(), ';');
    assert.equal((await sup.call(name, 'trace', { traceparent: tp })).toString(), `${tp};`);
    assert.equal((await sup.call(name, 'trace', { traceparent: tp, tracestate: 'k=v' })).toString(),
      `${tp};k=v`);
    await sup.cast(name, 'incr', { traceparent: tp });
    assert.equal((await sup.call(name, 'lasttrace')).toString(), `${tp};`);
    await sup.send(name, 'incr', { traceparent: tp, tracestate: 'a=b' });
    assert.equal((await sup.call(name, 'lasttrace')).toString(), `${tp};a=b`);
    // not valid: dropped, its tracestate with it
    assert.equal((await sup.call(name, 'trace', { traceparent: tp.toUpperCase(), tracestate: 'k=v' }))
      .toString(), ';');
    await sup.cast(name, 'incr', { traceparent: 'nope' });
    assert.equal((await sup.call(name, 'lasttrace')).toString(), ';');
    const c = await sup.whereis(name);
    assert.equal(Number(c.calls), 10); // 7 calls, 3 casts and sends
    await sup.terminateChild(name);
  });

  test('whereis, whois, children, countChildren', async () => {
    const a = uniq('a');
    const b = uniq('b');
    const ca = await sup.startChild(a, [h.paths.counter]);
    const cb = await sup.startChild(b, [NODE, h.paths.nodeCounter]);
    const w = await sup.whereis(a);
    assert.deepEqual([w.id, w.osPid, w.node], [ca.id, ca.osPid, ca.node]);
    assert.equal((await sup.whois(cb.id)).name, b);
    const kids = await sup.children();
    assert.deepEqual(kids.map((k) => k.name).sort(), [a, b].sort());
    assert.equal(kids.find((k) => k.name === b).osPid, cb.osPid);
    assert.equal((await sup.children({ node: d.node })).length, 2);
    assert.deepEqual((await sup.children({ pageSize: 1 })).map((k) => k.name), [a, b]); // page by page
    const cnt = await sup.countChildren();
    assert.deepEqual([cnt.specs, cnt.active, cnt.workers, cnt.failed], [2, 2, 2, 0]);
    await sup.terminateChild(a);
    assert.equal((await sup.terminateChild(null, { id: cb.id })).name, b);
    assert.deepEqual(await sup.children(), []);
  });

  test('terminate: the worker leaves on Terminate', async () => {
    const name = uniq('t');
    const c = await sup.startChild(name, [h.paths.counter]);
    const t = await sup.terminateChild(name);
    assert.deepEqual(t, { name, exitCode: 0, signal: 0 });
    await h.waitFor(() => !h.pidAlive(c.osPid), 5000, 'the child to be gone');
    await rejectsWith(sup.whereis(name), NotFound);
    await assert.rejects(sup.terminateChild(''), TypeError);
  });

  test('nodes, nodeFor, mine', async () => {
    const nodes = await sup.nodes();
    assert.equal(nodes.length, 1);
    assert.equal(nodes[0].name, d.node);
    assert.equal(nodes[0].up, true);
    assert.equal(nodes[0].self, true);
    assert.equal(await sup.nodeFor('key'), d.node);
    assert.deepEqual(await sup.mine('key'), { mine: true, node: d.node });
  });

  test('errors: unknown name', async () => {
    for (const f of [() => sup.whereis('ghost'), () => sup.call('ghost', 'x'),
      () => sup.cast('ghost', 'x'), () => sup.send('ghost', 'x'),
      () => sup.terminateChild('ghost'), () => sup.whois('n/1')]) {
      await rejectsWith(f(), NotFound);
    }
    try {
      await sup.whereis('ghost');
    } catch (e) {
      assert.equal(e.code, 5);
      assert.equal(e.status, 'NOT_FOUND');
      assert.match(e.details, /ghost/);
      assert.equal(e.name, 'NotFound');
    }
  });

  test('errors: duplicate name', async () => {
    const name = uniq('dup');
    const first = await sup.startChild(name, [h.paths.counter]);
    await rejectsWith(sup.startChild(name, [h.paths.counter]), AlreadyExists, new RegExp(name));
    assert.equal((await sup.whereis(name)).id, first.id);
    await sup.terminateChild(name);
  });

  test('errors: timeout, worker errors, plain process, bad arguments', async () => {
    const name = uniq('slow');
    await sup.startChild(name, [h.paths.counter]);
    const t0 = Date.now();
    await rejectsWith(sup.call(name, 'sleep:3000', { timeout: 300 }), DeadlineExceeded, /in time/);
    assert.ok(Date.now() - t0 < 2500);
    await rejectsWith(sup.call(name, 'bogus'), InvalidArgument);
    const plain = uniq('plain');
    await sup.startChild(plain, ['sleep', '60'], { protocol: 'none', killImmediately: true });
    await rejectsWith(sup.call(plain, 'x'), FailedPrecondition);
    await assert.rejects(sup.startChild('x', []), TypeError);
    await assert.rejects(sup.startChild('x', [h.paths.counter], { restart: 'sometimes' }), TypeError);
    await assert.rejects(sup.watch({ kinds: ['explode'] }), TypeError);
    await sup.terminateChild(name);
    await sup.terminateChild(plain);
  });

  test('errors: unreachable daemon', async () => {
    const s = new Supervisor(`127.0.0.1:${await h.freePort()}`, { timeout: 3000 });
    await rejectsWith(s.children(), Unavailable);
    await rejectsWith(s.health(), Unavailable);
    await rejectsWith(s.waitReady(300), Unavailable);
    s.close();
  });

  test('watch: events arrive (start, restart, stop)', async () => {
    const w = await sup.watch({ timeout: 20000 });
    const it = w[Symbol.asyncIterator]();
    const name = uniq('w');
    const c = await sup.startChild(name, [NODE, h.paths.nodeCounter]);
    let e = await nextEvent(it, 'PROCESS_START');
    assert.deepEqual([e.kind, e.name, e.osPid, e.node, e.supervisor],
      ['PROCESS_START', name, c.osPid, d.node, 'default']);
    assert.ok(e.seq > 0 && e.atMs > 0);
    await assert.rejects(sup.call(name, 'crash', { timeout: 2000 }), DistsupError);
    e = await nextEvent(it, 'PROCESS_RESTART');
    assert.deepEqual([e.kind, e.name, e.exitCode], ['PROCESS_RESTART', name, 1]);
    e = await nextEvent(it, 'PROCESS_START after the restart');
    assert.deepEqual([e.kind, e.name], ['PROCESS_START', name]);
    assert.notEqual(e.osPid, c.osPid);
    await sup.terminateChild(name);
    e = await nextEvent(it, 'PROCESS_STOP');
    assert.deepEqual([e.kind, e.name], ['PROCESS_STOP', name]);
    w.cancel();
    assert.equal((await it.next()).done, true);
  });

  test('watch: kinds filter, cancel ends iteration, deadline', async () => {
    const w = await sup.watch({ kinds: ['process_stop'], timeout: 20000 });
    const name = uniq('f');
    await sup.startChild(name, [h.paths.counter]);
    await sup.terminateChild(name);
    const e = await w.next();
    assert.deepEqual([e.kind, e.name], ['PROCESS_STOP', name]); // no PROCESS_START first
    setTimeout(() => w.cancel(), 200);
    const rest = [];
    for await (const ev of w) rest.push(ev); // ends quietly once cancelled
    assert.deepEqual(rest, []);
    const w2 = await sup.watch({ timeout: 300 });
    await rejectsWith(w2.next(), DeadlineExceeded);
  });
});

describe('worker helper over pipes', () => {
  // Drives examples/node_counter frame by frame: the exact frames it sends back.
  function runWorker(frames, { closeStdin = true } = {}) {
    return new Promise((resolve, reject) => {
      const p = h.track(spawn(NODE, [h.paths.nodeCounter], { stdio: ['pipe', 'pipe', 'pipe'] }));
      const out = [];
      let err = '';
      p.stdout.on('data', (c) => out.push(c));
      p.stderr.on('data', (c) => { err += c; });
      const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`worker hung: ${err}`)); }, 10000);
      p.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, frames: worker.splitFrames(Buffer.concat(out)), err });
      });
      for (const f of frames) p.stdin.write(Buffer.isBuffer(f) ? f : worker.encodeFrame(f));
      if (closeStdin) p.stdin.end();
    });
  }
  const INIT = { init: { supervisor: 'default', name: 'w', id: 'n1/7', node: 'n1', init: Buffer.from('5') } };

  it('answers in order, with refs, and hands over its state on Terminate', { timeout: 20000 }, async () => {
    const r = await runWorker([
      INIT,
      { call: { ref: 11, payload: Buffer.from('get') } },
      { cast: { payload: Buffer.from('incr') } },
      { info: { payload: Buffer.from('incr') } },
      { cast: { payload: Buffer.from('noise') } },
      { call: { ref: 12, payload: Buffer.from('sleep:50') } },
      { call: { ref: 13, payload: Buffer.from('get') } },
      { call: { ref: 14, payload: Buffer.from('nope') } },
      { terminate: { reason: 'bye' } },
      { call: { ref: 99, payload: Buffer.from('get') } },
    ], { closeStdin: false });
    assert.equal(r.code, 0, r.err);
    const fs2 = r.frames.frames;
    assert.deepEqual(fs2.map((f) => f.frame), ['ready', 'reply', 'reply', 'reply', 'reply', 'state']);
    const replies = fs2.filter((f) => f.frame === 'reply').map((f) => f.reply);
    assert.deepEqual(replies.map((x) => Number(x.ref)), [11, 12, 13, 14]);
    assert.equal(Buffer.from(replies[0].payload).toString(), '5');
    assert.equal(Buffer.from(replies[1].payload).toString(), 'slept');
    assert.equal(Buffer.from(replies[2].payload).toString(), '7');
    assert.equal(replies[3].code, 3);
    assert.match(replies[3].error, /unknown request/);
    assert.equal(Buffer.from(fs2[5].state.state).toString(), '7');
    assert.match(r.err, /ignoring cast of 5 bytes/); // console.log went to stderr
    assert.equal(r.frames.rest.length, 0);
  });

  it('uses handed-over state; ends cleanly when stdin closes', { timeout: 20000 }, async () => {
    const r = await runWorker([
      { init: { name: 'w', init: Buffer.from('5'), state: Buffer.from('70') } },
      { call: { ref: 1, payload: Buffer.from('get') } },
    ]);
    assert.equal(r.code, 0, r.err);
    assert.equal(Buffer.from(r.frames.frames[1].reply.payload).toString(), '70');
  });

  it('rejects a first frame that is not Init, and garbage', { timeout: 20000 }, async () => {
    let r = await runWorker([{ call: { ref: 1, payload: Buffer.from('get') } }]);
    assert.equal(r.code, 1);
    assert.deepEqual(r.frames.frames, []);
    const junk = Buffer.from([0, 0, 0, 3, 0xff, 0xff, 0xff]);
    r = await runWorker([INIT, junk]);
    assert.equal(r.code, 1);
    assert.deepEqual(r.frames.frames.map((f) => f.frame), ['ready']);
    const huge = Buffer.alloc(4);
    huge.writeUInt32BE(worker.MAX_FRAME + 1);
    r = await runWorker([INIT, huge]);
    assert.equal(r.code, 1);
  });

  it('maps handler exceptions to call errors and keeps serving', { timeout: 20000 }, async () => {
    const dir = h.tmpdir('distsup-node-worker-');
    const script = path.join(dir, 'w.js');
    fs.writeFileSync(script, `
      const { run, CallError } = require(${JSON.stringify(path.join(h.paths.client, 'worker'))});
      run({
        call(p) {
          if (p.toString() === 'boom') throw new RangeError('kaput');
          if (p.toString() === 'denied') throw new CallError(7, 'no way');
          return undefined;
        },
      });`);
    const d2 = await new h.Daemon('w2').start();
    const s = new Supervisor(d2.addr);
    try {
      await s.startChild('inl', [NODE, script]);
      assert.equal((await s.call('inl', 'x')).length, 0);
      await rejectsWith(s.call('inl', 'boom'), Unknown, /RangeError: kaput/);
      await rejectsWith(s.call('inl', 'denied'), PermissionDenied, /no way/);
      assert.equal((await s.whereis('inl')).restarts, 0);
    } finally {
      s.close();
      await d2.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the packed package', () => {
  it('npm pack ships the protos; the unpacked copy works against a daemon', { timeout: 120000 }, async () => {
    const dir = h.tmpdir('distsup-node-pack-');
    const src = path.join(dir, 'src');
    fs.cpSync(h.paths.client, src, { recursive: true, dereference: true,
      filter: (f) => !f.includes('node_modules') });
    const env = { ...process.env, DISTSUP_PROTO_SRC: h.paths.proto, HOME: dir,
      npm_config_cache: path.join(dir, 'npm-cache'), npm_config_offline: 'true',
      npm_config_update_notifier: 'false' };
    const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', dir],
      { cwd: src, env, encoding: 'utf8', timeout: 60000 }));
    const files = packed[0].files.map((f) => f.path);
    for (const f of ['index.js', 'worker.js', 'lib/client.js', 'lib/worker.js', 'package.json',
      'proto/distsup/v1/supervisor.proto', 'proto/distsup/v1/child.proto']) {
      assert.ok(files.includes(f), `${f} not in the package: ${files}`);
    }
    assert.ok(!fs.existsSync(path.join(src, 'proto')), 'postpack left proto/ behind');
    const unpack = path.join(dir, 'unpacked');
    fs.mkdirSync(unpack);
    execFileSync('tar', ['-xzf', path.join(dir, packed[0].filename), '-C', unpack]);
    const pkg = path.join(unpack, 'package');
    const d2 = await new h.Daemon('pk').start();
    try {
      // The unpacked copy must find its own protos: no repo proto/ beside it.
      const prog = `
        const { Supervisor, NotFound } = require(${JSON.stringify(pkg)});
        (async () => {
          const s = new Supervisor(${JSON.stringify(d2.addr)});
          if (await s.health() !== 'SERVING') throw new Error('not serving');
          await s.startChild('pk', [process.execPath, ${JSON.stringify(path.join(pkg, 'w.js'))}],
            { env: { NODE_PATH: process.env.NODE_PATH } });
          console.log((await s.call('pk', 'hi')).toString());
          try { await s.whereis('nope'); } catch (e) { if (e instanceof NotFound) console.log('not found'); }
          s.close();
        })().catch((e) => { console.error(e); process.exit(1); });`;
      fs.writeFileSync(path.join(pkg, 'w.js'),
        "require('./worker').run({ call: (p) => 'echo:' + p });\n");
      const childEnv = { ...process.env, NODE_PATH: path.join(h.paths.nodePkg, 'node_modules') };
      delete childEnv.DISTSUP_PROTO_DIR;
      const out = execFileSync(NODE, ['-e', prog], { cwd: dir, env: childEnv, encoding: 'utf8',
        timeout: 60000 });
      assert.deepEqual(out.trim().split('\n'), ['echo:hi', 'not found']);
    } finally {
      await d2.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('security: token, unix socket, TLS and mTLS', () => {
  const TOKEN = 'node-T0ken=42';
  const dirs = [];
  const daemons = [];
  const clients = [];
  const scratch = (prefix, base) => {
    const dir = fs.mkdtempSync(path.join(base || h.tmpdir('distsup-node-sec-'), prefix));
    dirs.push(dir);
    return dir;
  };
  const client = (addr, opts = {}) => {
    const s = new Supervisor(addr, { timeout: 10000, ...opts });
    clients.push(s);
    return s;
  };
  const daemon = async (args) => {
    const dd = await new h.Daemon('sec', args).start();
    daemons.push(dd);
    return dd;
  };
  after(async () => {
    for (const s of clients) s.close();
    for (const dd of daemons) await dd.stop();
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('sends the token from opts, a file or the environment, Watch included', { timeout: 30000 }, async () => {
    const dir = scratch('tok-');
    const tok = path.join(dir, 'api.token');
    fs.writeFileSync(tok, `${TOKEN}\n`, { mode: 0o600 });
    const dd = await daemon(['--api-token-file', tok]);
    const saved = { t: process.env.DISTSUP_TOKEN, f: process.env.DISTSUP_TOKEN_FILE };
    delete process.env.DISTSUP_TOKEN;
    delete process.env.DISTSUP_TOKEN_FILE;
    try {
      await rejectsWith(client(dd.addr).children(), distsup.Unauthenticated, /authorization/);
      await rejectsWith(client(dd.addr, { token: 'wrong' }).children(), distsup.Unauthenticated,
        /invalid bearer token/);
      assert.equal(await client(dd.addr, { token: TOKEN }).health(), 'SERVING');
      const s = client(dd.addr, { tokenFile: tok });
      const w = await s.watch({ timeout: 10000 });
      await s.startChild('nt', ['/bin/sleep', '60'], { protocol: 'none' });
      assert.equal((await nextEvent(w[Symbol.asyncIterator](), 'nt start')).name, 'nt');
      w.cancel();
      process.env.DISTSUP_TOKEN = TOKEN;
      assert.equal((await client(dd.addr).children()).length, 1);
      delete process.env.DISTSUP_TOKEN;
      process.env.DISTSUP_TOKEN_FILE = tok;
      assert.equal((await client(dd.addr).children()).length, 1);
      assert.throws(() => client(dd.addr, { tokenFile: path.join(dir, 'missing') }), TypeError);
    } finally {
      for (const [k, v] of [['DISTSUP_TOKEN', saved.t], ['DISTSUP_TOKEN_FILE', saved.f]]) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it('reaches a daemon on a unix socket', { timeout: 30000 }, async () => {
    const dir = scratch('ds-', '/tmp');
    const dd = await daemon(['--listen', `unix:${path.join(dir, 'api.sock')}`]);
    assert.match(dd.addr, /^unix:\//);
    const s = client(dd.addr);
    assert.equal((await s.nodes())[0].address, dd.addr);
    assert.equal((await s.startChild('nu', ['/bin/sleep', '60'], { protocol: 'none' })).name, 'nu');
  });

  it('speaks TLS, with a client certificate under mTLS', { timeout: 60000 }, async () => {
    const dir = scratch('pki-');
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
    const P = (n) => path.join(dir, n);
    const dd = await daemon(['--tls-cert', P('server.pem'), '--tls-key', P('server.key'),
      '--tls-client-ca', P('ca.pem')]);
    await rejectsWith(client(dd.addr, { timeout: 3000, tlsCaFile: P('ca.pem') }).children(), Unavailable);
    const s = client(dd.addr, { tlsCaFile: P('ca.pem'), tlsCertFile: P('client.pem'), tlsKeyFile: P('client.key') });
    assert.equal(await s.health(), 'SERVING');
    assert.throws(() => client(dd.addr, { tlsCertFile: P('client.pem') }), TypeError);
  });
});
