'use strict';
// require('distsup/worker'): see lib/worker.js.
module.exports = require('./lib/worker');
