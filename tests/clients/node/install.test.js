'use strict';
// The Node package installed into an app of one's own the way clients/node/README.md
// says (its sh lines that name /path/to/distsup, run in a scratch app with a copy of
// the repo there), then required from the app for a real call.  (A plain
// `npm install /path/to/distsup/clients/node`, as the docs said before, makes a
// symlink without the package's dependencies: require('distsup') then fails to find
// '@grpc/grpc-js'.)  Dependencies come from the npm registry, with a cache of the
// test's own.
const assert = require('node:assert/strict');
const { describe, it, before, after } = require('node:test');
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const h = require('./harness');

let d;
let tmp;

describe('the package installed from its npm pack tarball', () => {
  before(async () => {
    d = await new h.Daemon().start();
    tmp = h.tmpdir('distsup-npm-');
  });
  after(async () => {
    if (d) await d.stop();
  });

  it('requires and calls a worker from a scratch app', { timeout: 240000 }, async () => {
    // a copy of the package as a checkout has it (no node_modules), beside the protos
    const repo = path.join(tmp, 'repo');
    fs.cpSync(h.paths.client, path.join(repo, 'clients', 'node'), {
      recursive: true,
      dereference: true,
      filter: (src) => path.basename(src) !== 'node_modules' && path.basename(src) !== 'BUILD',
    });
    fs.cpSync(h.paths.proto, path.join(repo, 'proto'), { recursive: true, dereference: true });
    const readme = fs.readFileSync(path.join(h.paths.client, 'README.md'), 'utf8');
    const commands = [];
    for (const m of readme.matchAll(/```sh\n([\s\S]*?)```/g)) {
      for (let line of m[1].split('\n')) {
        if (!line.includes('/path/to/distsup')) continue;
        if (line.includes('# or:')) line = line.slice(line.indexOf('# or:') + 5);
        commands.push(line.trim().replaceAll('/path/to/distsup', repo));
      }
    }
    assert.ok(commands.length > 0, 'README.md says how to install the package into an app');

    const app = path.join(tmp, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    const env = {
      ...process.env, npm_config_cache: path.join(tmp, 'npm-cache'), npm_config_update_notifier: 'false',
      npm_config_audit: 'false', npm_config_fund: 'false', npm_config_loglevel: 'error',
    };
    for (const cmd of commands) execFileSync('bash', ['-ec', cmd], { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });

    const script = `
      const { Supervisor } = require('distsup');
      (async () => {
        const sup = new Supervisor(process.argv[1], { timeout: 10000 });
        await sup.startChild('installed', [process.argv[2]], { init: '41' });
        console.log((await sup.call('installed', 'incr')).toString());
        await sup.terminateChild('installed');
        sup.close();
      })().catch((e) => { console.error(e); process.exit(1); });`;
    // run from the app, with nothing of the repo on the way: its own node_modules only
    const out = execFileSync(process.execPath, ['-e', script, d.addr, h.paths.counter],
      { cwd: app, env: { PATH: process.env.PATH, HOME: tmp }, encoding: 'utf8' });
    assert.equal(out.trim(), '42');
  });
});
