// LangGraph checkpoint savers: put (with 2 pending writes each), getTuple (latest of a thread) and
// list (10 newest of a thread) from C concurrent clients, each on its own thread. The PostgreSQL
// contestants (a KestrelSaver replica, LangGraph's PostgresSaver) use a fresh schema per cell,
// dropped when the cell ends.
import { createRequire } from 'node:module'
import { summarize } from '../lib/stats.js'
import { fmt, table, unavailableRow } from '../lib/report.js'
import { PG_URL, dropSchema, schemaFor, schemaGuard } from '../lib/pg.js'

const require = createRequire(import.meta.url)
const CHANNEL_VALUE = Array.from({ length: 10 }, (_, i) => `message ${i} ${'x'.repeat(80)}`)
const CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'kestrel-native-pg', 'sqlite', 'postgres', 'memory']
const PG_CONTESTANTS = ['kestrel-native-pg', 'postgres']
const CONCURRENCY = 8

async function openSaver(name, dir) {
  switch (name) {
    case 'kestrel-native':
    case 'kestrel-ts': {
      const { KestrelSaver } = await import('../../dist/langgraph/index.js')
      return KestrelSaver.open(dir, { engine: name === 'kestrel-native' ? 'native' : 'ts' })
    }
    case 'kestrel-native-pg': {
      const { KestrelSaver } = await import('../../dist/langgraph/index.js')
      return KestrelSaver.open(dir, { engine: 'native', postgres: { connectionString: PG_URL, schema: schemaFor(dir) } })
    }
    case 'postgres': {
      const { PostgresSaver } = require('@langchain/langgraph-checkpoint-postgres')
      const saver = PostgresSaver.fromConnString(PG_URL, { schema: schemaFor(dir) })
      await saver.setup()
      return saver
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
  await Promise.all(
    Array.from({ length: concurrency }, async (_, client) => {
      // Bounded by the deadline.
      for (let i = 0; performance.now() < stopAt; i++) {
        const start = performance.now()
        await op(client, i)
        latenciesMs.push(performance.now() - start)
      }
    }),
  )
  return summarize(latenciesMs, performance.now() - t0)
}

/** Child side; `param` is the number of concurrent clients. */
export async function cell({ contestant, dir, param: concurrency, durationMs }) {
  if (!PG_CONTESTANTS.includes(contestant)) return measure(contestant, dir, concurrency, durationMs)
  try {
    return await measure(contestant, dir, concurrency, durationMs)
  } finally {
    await dropSchema(schemaFor(dir))
  }
}

async function measure(contestant, dir, concurrency, durationMs) {
  const saver = await openSaver(contestant, dir)
  const { uuid6, emptyCheckpoint } = require('@langchain/langgraph-checkpoint')
  const heads = []
  const put = await phase(concurrency, durationMs, async (client, i) => {
    const thread_id = `thread-${client}`
    const cp = {
      ...emptyCheckpoint(),
      id: uuid6(client),
      channel_values: { messages: CHANNEL_VALUE, step: i },
      channel_versions: { messages: i + 1, step: i + 1 },
    }
    const config = heads[client] ?? { configurable: { thread_id, checkpoint_ns: '' } }
    heads[client] = await saver.put(config, cp, { source: 'loop', step: i, parents: {} }, { messages: i + 1, step: i + 1 })
    await saver.putWrites(
      heads[client],
      [
        ['messages', 'next'],
        ['step', i + 1],
      ],
      `task-${i}`,
    )
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
  else if (typeof saver.end === 'function') await saver.end()
  else saver.db?.close?.()
  return { put, get, list }
}

export async function run(ctx) {
  const results = {}
  const guard = await schemaGuard()
  for (const name of CONTESTANTS) {
    const r = ctx.cell(name, CONCURRENCY, { timeoutMs: 3 * ctx.durationMs + 90_000 })
    // A cell killed on timeout could not drop its schema.
    if (r.error && PG_CONTESTANTS.includes(name)) await guard.sweep().catch(() => [])
    results[name] = r
    ctx.log(
      '',
      name,
      r,
      (x) =>
        `put ${fmt(x.put.opsPerSec)}/s p99 ${fmt(x.put.p99Ms, 2)} ms  getTuple ${fmt(x.get.opsPerSec)}/s p99 ${fmt(x.get.p99Ms, 2)} ms  list ${fmt(x.list.opsPerSec)}/s p99 ${fmt(x.list.p99Ms, 2)} ms`,
    )
  }
  return { concurrency: CONCURRENCY, contestants: CONTESTANTS, results }
}

export function render(raw) {
  const headers = ['saver', 'put ops/s', 'put p99 ms', 'getTuple ops/s', 'getTuple p99 ms', 'list ops/s', 'list p99 ms']
  const rows = raw.contestants.map((name) => {
    const r = raw.results[name]
    if (r.error) return unavailableRow(name, r.error, headers.length)
    return [name, fmt(r.put.opsPerSec), fmt(r.put.p99Ms, 2), fmt(r.get.opsPerSec), fmt(r.get.p99Ms, 2), fmt(r.list.opsPerSec), fmt(r.list.p99Ms, 2)]
  })
  const lines = [
    `${raw.concurrency} concurrent clients, each on its own thread: \`put\` (a checkpoint with two channels, then \`putWrites\` of two pending writes), then \`getTuple\` of the latest checkpoint, then \`list\` of the 10 newest. KestrelSaver commits durably (\`durability: 'sync'\`); kestrel-native-pg is KestrelSaver on a replica directory whose log is a PostgreSQL table (\`open(dir, { postgres })\`: each commit one PostgreSQL transaction, then applied locally); postgres is LangGraph's PostgresSaver (\`@langchain/langgraph-checkpoint-postgres\`, its defaults: a pool of up to 10 connections) on the same local server — both on a fresh schema per cell, with the server's \`synchronous_commit\`; the SQLite saver runs with its own defaults; MemorySaver keeps nothing on disk.`,
    '',
    ...table(headers, 'lrrrrrr', rows),
    '',
  ]
  return { lines, goals: [] }
}

export default {
  id: 'SAVER',
  aliases: ['SAVER', 'LANGGRAPH'],
  title: 'LangGraph checkpoint savers',
  cell,
  run,
  render,
}
