// LangGraph checkpoint savers: put (with 2 pending writes each), getTuple (latest of a thread) and
// list (10 newest of a thread) from C concurrent clients, each on its own thread.
import { createRequire } from 'node:module'
import { summarize } from '../lib/stats.js'

const require = createRequire(import.meta.url)
const CHANNEL_VALUE = Array.from({ length: 10 }, (_, i) => `message ${i} ${'x'.repeat(80)}`)

async function openSaver(name, dir) {
  switch (name) {
    case 'kestrel-native':
    case 'kestrel-ts': {
      const { KestrelSaver } = await import('../../dist/langgraph/index.js')
      return KestrelSaver.open(dir, { engine: name === 'kestrel-native' ? 'native' : 'ts' })
    }
    case 'sqlite': {
      const { SqliteSaver } = require('@langchain/langgraph-checkpoint-sqlite')
      return SqliteSaver.fromConnString(`${dir}.sqlite`)
    }
    case 'memory': {
      const { MemorySaver } = require('@langchain/langgraph-checkpoint')
      return new MemorySaver()
    }
    default:
      throw new Error(`unknown saver ${name}`)
  }
}

async function phase(concurrency, durationMs, op) {
  const latenciesMs = []
  const t0 = performance.now()
  const stopAt = t0 + durationMs
  await Promise.all(Array.from({ length: concurrency }, async (_, client) => {
    // Bounded by the deadline.
    for (let i = 0; performance.now() < stopAt; i++) {
      const start = performance.now()
      await op(client, i)
      latenciesMs.push(performance.now() - start)
    }
  }))
  return summarize(latenciesMs, performance.now() - t0)
}

export async function runSaver({ contestant, dir, concurrency, durationMs }) {
  const saver = await openSaver(contestant, dir)
  const { uuid6, emptyCheckpoint } = require('@langchain/langgraph-checkpoint')
  const heads = []
  const put = await phase(concurrency, durationMs, async (client, i) => {
    const thread_id = `thread-${client}`
    const cp = { ...emptyCheckpoint(), id: uuid6(client), channel_values: { messages: CHANNEL_VALUE, step: i }, channel_versions: { messages: i + 1, step: i + 1 } }
    const config = heads[client] ?? { configurable: { thread_id, checkpoint_ns: '' } }
    heads[client] = await saver.put(config, cp, { source: 'loop', step: i, parents: {} }, { messages: i + 1, step: i + 1 })
    await saver.putWrites(heads[client], [['messages', 'next'], ['step', i + 1]], `task-${i}`)
  })
  const get = await phase(concurrency, durationMs, async (client) => {
    const t = await saver.getTuple({ configurable: { thread_id: `thread-${client}`, checkpoint_ns: '' } })
    if (!t) throw new Error('missing checkpoint')
  })
  const list = await phase(concurrency, durationMs, async (client) => {
    let n = 0
    for await (const _ of saver.list({ configurable: { thread_id: `thread-${client}` } }, { limit: 10 })) n++
    if (n === 0) throw new Error('empty list')
  })
  if (typeof saver.close === 'function') await saver.close()
  else saver.db?.close?.()
  return { put, get, list }
}
