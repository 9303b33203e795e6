'use strict';
// Test harness for the Node client: starts real distsupd processes on 127.0.0.1 port 0
// and kills every process it started, even when a test fails (and at exit).
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');

const BIN = path.resolve(process.env.DISTSUP_BIN || process.cwd());
const SRC = path.resolve(process.env.DISTSUP_SRC || process.cwd());
const paths = {
  distsupd: path.join(BIN, 'sidecar', 'distsupd'),
  counter: path.join(BIN, 'examples', 'counter', 'counter'),
  nodeCounter: path.join(SRC, 'examples', 'node_counter', 'counter.js'),
  nodeCounterHost: path.join(SRC, 'examples', 'node_counter_host', 'host.js'),
  client: path.join(SRC, 'clients', 'node'),
  proto: path.join(SRC, 'proto'),
  nodePkg: process.env.DISTSUP_NODE_PKG || path.join(SRC, 'clients', 'node'),
};

const live = new Set();
process.on('exit', () => {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch (e) { /* gone */ }
  }
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls fn until it returns a truthy value; throws after timeoutMs. */
async function waitFor(fn, timeoutMs = 10000, what = 'condition') {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch (e) {
    return false;
  }
}

function tmpdir(prefix) {
  return fs.mkdtempSync(path.join(process.env.TEST_TMPDIR || os.tmpdir(), prefix));
}

/** Spawns a process that is killed at exit if still running. */
function track(child) {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

class Daemon {
  constructor(name = 'd', args = []) {
    this.name = name;
    this.args = args;
    this.dir = tmpdir('distsup-node-test-');
    this.portFile = path.join(this.dir, 'port');
    this.logPath = path.join(this.dir, 'daemon.log');
    this.node = `${name}@test`;
  }

  async start(timeoutMs = 10000) {
    const log = fs.openSync(this.logPath, 'a');
    this.proc = track(spawn(paths.distsupd, [
      '--listen', '127.0.0.1:0', '--port-file', this.portFile, '--data-dir',
      path.join(this.dir, 'data'), '--node-name', this.node, '--log-level', 'debug',
      ...this.args,
    ], { stdio: ['ignore', log, log] }));
    fs.closeSync(log);
    let exited = null;
    this.proc.once('exit', (code, sig) => { exited = `exit ${code} signal ${sig}`; });
    await waitFor(() => {
      if (exited) throw new Error(`distsupd ${exited}:\n${this.log()}`);
      try {
        const t = fs.readFileSync(this.portFile, 'utf8').trim();
        if (t.startsWith('unix:')) this.unixAddr = t.split('\n')[0]; // listen unix:PATH
        else if (t) this.port = Number(t);
      } catch (e) { /* not yet */ }
      return this.port || this.unixAddr;
    }, timeoutMs, 'distsupd to write its port');
    this.addr = this.unixAddr || `127.0.0.1:${this.port}`;
    return this;
  }

  log() {
    try { return fs.readFileSync(this.logPath, 'utf8'); } catch (e) { return ''; }
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      const gone = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGTERM');
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
      await gone;
      clearTimeout(t);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A free loopback port (bound, then closed): for "unreachable daemon" tests. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = require('net').createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

module.exports = { paths, Daemon, waitFor, pidAlive, sleep, tmpdir, track, freePort };
