/** The CommonJS entry of `kestreldb/testing` (see index.cts): the same module as its `import`. */
import type * as Testing from './testing.js'
import { requireEsm } from './require-esm.cjs'

const testing: typeof Testing = requireEsm(() => require('./testing.js'), 'kestreldb/testing')
export = testing
