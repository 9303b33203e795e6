'use strict';
// distsup: Node client of distsupd, the distributed supervisor sidecar.
//
//   const { Supervisor, NotFound } = require('distsup');
//   const sup = new Supervisor('127.0.0.1:50051');
//   await sup.startChild('c1', ['/path/to/worker'], { init: '10' });
//   const reply = await sup.call('c1', 'get');          // a Buffer
//   for await (const ev of await sup.watch({ timeout: 5000 })) console.log(ev.kind, ev.name);
//   sup.close();
//
// require('distsup/worker') helps write the workers themselves; Host runs hosted
// children inside this process (docs/hosting.md):
//
//   const { Host, CallError } = require('distsup');
//   const host = new Host('127.0.0.1:50051', { name: 'app-1' });
//   host.register('counter', { init(info) { ... }, handleCall(payload) { ... } });
//   await host.start();
const client = require('./lib/client');
const errors = require('./lib/errors');
const host = require('./lib/host');

module.exports = {
  Supervisor: client.Supervisor,
  Watch: client.Watch,
  DEFAULT_ADDRESS: client.DEFAULT_ADDRESS,
  DEFAULT_TIMEOUT_MS: client.DEFAULT_TIMEOUT_MS,
  EVENT_KINDS: client.EVENT_KINDS,
  ...errors,
  Host: host.Host,
  CallError: host.CallError,
  get worker() { return require('./worker'); },
};
