'use strict';
// Where the .proto files are: $DISTSUP_PROTO_DIR, else the package's own proto/ (an
// installed package: `npm pack` copies them there), else the repo's proto/ (in-repo use).
const fs = require('fs');
const path = require('path');

const FILES = ['distsup/v1/supervisor.proto', 'distsup/v1/child.proto'];

function protoDir() {
  const candidates = [
    process.env.DISTSUP_PROTO_DIR,
    path.join(__dirname, '..', 'proto'),
    path.join(__dirname, '..', '..', '..', 'proto'),
  ].filter(Boolean);
  for (const dir of candidates) {
    if (FILES.every((f) => fs.existsSync(path.join(dir, f)))) return dir;
  }
  throw new Error('distsup: cannot find distsup/v1/*.proto in ' + candidates.join(', ') +
                  ' (set DISTSUP_PROTO_DIR)');
}

module.exports = { protoDir, FILES };
