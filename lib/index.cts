/**
 * The CommonJS entry: `require('kestreldb')` returns the same module as `import('kestreldb')`
 * (one instance: one engine per directory, `instanceof KestrelError` holds across both). kestreldb
 * is written as ES modules, so this needs a Node.js that can `require()` them (20.19+ or 22.12+);
 * on an older one it fails with a message saying so instead of `ERR_REQUIRE_ESM`.
 */
import type * as Kestrel from './index.js'
import { requireEsm } from './require-esm.cjs'

const kestrel: typeof Kestrel = requireEsm(() => require('./index.js'), 'kestreldb')
export = kestrel
