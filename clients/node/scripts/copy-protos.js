'use strict';
// prepack: copies the repo's proto/distsup/v1/{supervisor,child}.proto into this
// package's proto/ so a packed or installed copy finds them.  --clean removes them
// (postpack).  The source is $DISTSUP_PROTO_SRC, else ../../../proto from here.
const fs = require('fs');
const path = require('path');
const { FILES } = require('../lib/protos');

const pkg = path.join(__dirname, '..');
const dest = path.join(pkg, 'proto');
if (process.argv.includes('--clean')) {
  fs.rmSync(dest, { recursive: true, force: true });
  process.exit(0);
}
const src = process.env.DISTSUP_PROTO_SRC || path.join(pkg, '..', '..', 'proto');
for (const f of FILES) {
  const from = path.join(src, f);
  if (!fs.existsSync(from)) {
    console.error('copy-protos: missing ' + from + ' (set DISTSUP_PROTO_SRC)');
    process.exit(1);
  }
  fs.mkdirSync(path.dirname(path.join(dest, f)), { recursive: true });
  fs.copyFileSync(from, path.join(dest, f));
}
