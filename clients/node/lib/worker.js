'use strict';
/*
 * distsup worker helper for Node: a supervised child that answers calls in a few lines.
 *
 * A worker is a process distsupd starts; it speaks the child frame protocol on stdin
 * and stdout (4-byte big-endian length + a distsup.v1.ChildFrame).  run() owns both: it
 * reads Init, calls init, sends Ready, then hands Call, Cast, Info (Send) and Terminate
 * to the handler, one frame at a time, in order, until stdin ends or Terminate comes.
 *
 *   const { run, CallError } = require('distsup/worker');
 *   run({
 *     init(info) { this.n = Number(info.init.toString() || 0); },   // info.name, .node ...
 *     call(payload) {                      // Buffer in; Buffer, string or nothing out
 *       if (payload.toString() === 'get') return String(this.n);    // may return a Promise
 *       throw new CallError(3, 'unknown request');   // the caller gets INVALID_ARGUMENT
 *     },
 *     cast(payload, ctx) { this.n++; },     // ctx.traceparent, ctx.tracestate: below
 *     info(payload) { this.n++; },          // Send
 *     state() { return String(this.n); },   // handed to the next incarnation on a move
 *     terminate(reason) {},
 *   });
 *
 * call, cast and info get a second argument, the message's context: ctx.traceparent
 * and ctx.tracestate are the caller's W3C trace context ('' when it sent none, or an
 * invalid one; docs/observability.md).
 *
 * Every handler is optional (a call without `call` fails with UNIMPLEMENTED).  An
 * exception in `call` fails that call (UNKNOWN, or the CallError's code); one in
 * `cast` or `info` is logged; the worker keeps serving.  An exception in `init` ends
 * the worker with exit code 1.  stdout belongs to the protocol: run() sends
 * console.log and friends to stderr, which the sidecar logs under the child's name.
 */
const fs = require('fs');
const path = require('path');
const protobuf = require('protobufjs');
const { protoDir } = require('./protos');

const MAX_FRAME = 4 * 1024 * 1024 + 64 * 1024;

class CallError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

let ChildFrame = null;
function frameType() {
  if (!ChildFrame) {
    const root = protobuf.loadSync(path.join(protoDir(), 'distsup/v1/child.proto'));
    ChildFrame = root.lookupType('distsup.v1.ChildFrame');
  }
  return ChildFrame;
}

function toBuffer(v) {
  if (v === undefined || v === null) return Buffer.alloc(0);
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return Buffer.from(String(v), 'utf8');
}

function encodeFrame(obj) {
  const T = frameType();
  const body = T.encode(T.create(obj)).finish();
  if (body.length > MAX_FRAME) throw new Error(`frame of ${body.length} bytes is too big`);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

/**
 * Splits whole frames off the front of buf: { frames, rest, error }.  error (a
 * message) is set when a bad frame stops the split; frames holds the good ones before it.
 */
function splitFrames(buf) {
  const T = frameType();
  const frames = [];
  let off = 0;
  while (buf.length - off >= 4) {
    const n = buf.readUInt32BE(off);
    if (n > MAX_FRAME) {
      return { frames, rest: buf.subarray(off), error: `frame of ${n} bytes from the sidecar is too big` };
    }
    if (buf.length - off - 4 < n) break;
    let msg;
    try {
      msg = T.decode(buf.subarray(off + 4, off + 4 + n));
    } catch (e) {
      return { frames, rest: buf.subarray(off), error: `undecodable frame from the sidecar: ${e.message}` };
    }
    if (!msg.frame) return { frames, rest: buf.subarray(off), error: 'empty frame from the sidecar' };
    frames.push(msg);
    off += 4 + n;
  }
  return { frames, rest: buf.subarray(off), error: null };
}

function sleepMs(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      sleepMs(1);
    }
  }
}

function log(msg) {
  process.stderr.write(`worker: ${msg}\n`);
}

/**
 * Runs the worker loop on the given streams (default: stdin and fd 1).  Resolves to
 * the exit code: 0 on a clean end, 1 on a protocol error or a failed init.
 */
function serve(handler = {}, opts = {}) {
  const input = opts.input || process.stdin;
  const outFd = opts.outFd === undefined ? 1 : opts.outFd;
  const send = (obj) => writeAll(outFd, encodeFrame(obj));
  let buf = Buffer.alloc(0);
  const queue = [];
  let ended = false;
  let started = false;
  let busy = false;
  let broken = false;

  return new Promise((resolve) => {
    let done = false;
    const finish = (code) => {
      if (done) return;
      done = true;
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      if (input.pause) input.pause();
      resolve(code);
    };

    // The context a handler gets with a message: its trace context.
    function context(m) {
      return { traceparent: m.traceparent || '', tracestate: (m.traceparent && m.tracestate) || '' };
    }

    async function handle(f) {
      switch (f.frame) {
        case 'init': {
          if (started) return log('ignoring a second Init');
          started = true;
          const i = f.init;
          const info = {
            supervisor: i.supervisor, name: i.name, id: i.id, node: i.node,
            init: Buffer.from(i.init || []), state: Buffer.from(i.state || []),
          };
          try {
            if (handler.init) await handler.init(info);
          } catch (e) {
            log(`init failed: ${e && e.stack ? e.stack : e}`);
            return finish(1);
          }
          send({ ready: {} });
          return undefined;
        }
        case 'call': {
          const reply = { ref: f.call.ref };
          const payload = Buffer.from(f.call.payload || []);
          try {
            if (!handler.call) throw new CallError(12, 'this worker does not handle calls');
            reply.payload = toBuffer(await handler.call(payload, context(f.call)));
          } catch (e) {
            if (e instanceof CallError) {
              reply.error = e.message || 'error';
              reply.code = e.code || 2;
            } else {
              process.stderr.write(`worker: call failed: ${e && e.stack ? e.stack : e}\n`);
              reply.error = `${e && e.name ? e.name : 'Error'}: ${e && e.message ? e.message : e}`;
              reply.code = 2;
            }
          }
          send({ reply });
          return undefined;
        }
        case 'cast':
        case 'info': {
          const fn = handler[f.frame];
          if (!fn) return undefined;
          try {
            await fn.call(handler, Buffer.from(f[f.frame].payload || []), context(f[f.frame]));
          } catch (e) {
            log(`${f.frame} failed: ${e && e.stack ? e.stack : e}`);
          }
          return undefined;
        }
        case 'terminate': {
          if (handler.state) {
            const st = await handler.state();
            if (st !== undefined && st !== null) send({ state: { state: toBuffer(st) } });
          }
          if (handler.terminate) await handler.terminate(f.terminate.reason);
          return finish(0);
        }
        default:
          log(`ignoring unexpected ${f.frame} frame`);
          return undefined;
      }
    }

    async function pump() {
      if (busy) return;
      busy = true;
      try {
        while (queue.length && !done) {
          const f = queue.shift();
          if (!started && f.frame !== 'init') {
            log('the first frame from the sidecar is not Init');
            finish(1);
            break;
          }
          await handle(f);
        }
        if (ended && !queue.length) finish(broken || buf.length ? 1 : 0);
      } catch (e) {
        log(String(e && e.stack ? e.stack : e));
        finish(1);
      } finally {
        busy = false;
      }
    }

    function onData(chunk) {
      if (broken) return;
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      const r = splitFrames(buf);
      buf = Buffer.from(r.rest);
      queue.push(...r.frames);
      if (r.error) {
        // Serve the good frames before it, then stop with exit code 1.
        log(r.error);
        broken = true;
        ended = true;
      }
      pump();
    }

    function onEnd() {
      ended = true;
      if (buf.length) log('stdin closed inside a frame');
      pump();
    }

    input.on('data', onData);
    input.on('end', onEnd);
  });
}

/** serve() on stdin/stdout with console output sent to stderr, then exits the process. */
function run(handler = {}) {
  for (const m of ['log', 'info', 'debug', 'dir', 'table']) console[m] = console.error;
  serve(handler).then((code) => process.exit(code));
}

module.exports = { run, serve, CallError, MAX_FRAME, encodeFrame, splitFrames, toBuffer };
