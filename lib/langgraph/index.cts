/** The CommonJS entry of `kestreldb/langgraph` (see ../index.cts). */
import type * as KestrelLangGraph from './index.js'
import { requireEsm } from '../require-esm.cjs'

const langgraph: typeof KestrelLangGraph = requireEsm(() => require('./index.js'), 'kestreldb/langgraph')
export = langgraph
