/**
 * `npm start`: the main job on an embedded default directory (./kestrel-data, or the first
 * argument). Runs concurrent durable transactions, reads them back, reopens the directory, checks
 * that every acknowledged commit is there and prints what it measured.
 */
import { rm } from 'node:fs/promises'
import { open, type Database } from '../index.js'

interface Visit {
  user: string
  visits: number
  lastSeen: number
}

const CLIENTS = 64
const COMMITS_PER_CLIENT = 50

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US')
}

async function workload(db: Database): Promise<{ commits: number; ms: number; p50: number; p99: number }> {
  const visits = db.collection<Visit>('visits')
  const latencies: number[] = []
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, client) => {
      for (let i = 0; i < COMMITS_PER_CLIENT; i++) {
        const start = performance.now()
        await db.transaction((tx) => {
          const key = ['user', client]
          const prev = tx.get(visits, key)
          tx.put(visits, key, { user: `u${client}`, visits: (prev?.visits ?? 0) + 1, lastSeen: Date.now() })
          tx.put(db.collection<number>('log'), ['event', client, i], client * 1000 + i)
        })
        latencies.push(performance.now() - start)
      }
    }),
  )
  const ms = performance.now() - t0
  latencies.sort((a, b) => a - b)
  const at = (q: number): number => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!
  return { commits: CLIENTS * COMMITS_PER_CLIENT, ms, p50: at(0.5), p99: at(0.99) }
}

async function main(): Promise<void> {
  const dir = process.argv.slice(2).find((a) => !a.startsWith('--')) ?? './kestrel-data'
  const fresh = process.argv.includes('--fresh')
  if (fresh) await rm(dir, { recursive: true, force: true })

  let db = await open(dir, { durability: 'sync' })
  const before = db.lastCommitId()
  console.log(`kestreldb demo: ${dir} (engine: ${db.engine}, durability: sync, last commit before this run: ${before})`)

  const r = await workload(db)
  const stats = db.stats()
  console.log(
    `  ${fmt(r.commits)} durable transactions from ${CLIENTS} concurrent clients in ${fmt(r.ms)} ms: ` +
      `${fmt(r.commits / (r.ms / 1000))} commits/s, ack latency p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`,
  )
  console.log(
    `  group commit: ${fmt(stats.syncs)} fdatasyncs for ${fmt(r.commits)} commits (${(r.commits / Math.max(1, stats.syncs)).toFixed(1)} commits per fsync)`,
  )

  const visits = db.collection<Visit>('visits')
  const events = db.collection<number>('log')
  // One read view, so both reads see the same commit; closed once read.
  const view = db.snapshot()
  const totalVisits = [...view.scan(visits, { prefix: ['user'] })].reduce((s, e) => s + e.value.visits, 0)
  const sample = [...view.scan(events, { prefix: ['event', 7], reverse: true, limit: 3 })].map((e) => JSON.stringify(e.key))
  view.close()
  console.log(`  read back: ${fmt(totalVisits)} visits over ${CLIENTS} users; newest events of client 7: ${sample.join(', ')}`)
  const lastId = db.lastCommitId()
  await db.close()

  const t0 = performance.now()
  db = await open(dir)
  const reopenMs = performance.now() - t0
  const reread = [...db.scan(db.collection<Visit>('visits'), { prefix: ['user'] })].reduce((s, e) => s + e.value.visits, 0)
  const ok = db.lastCommitId() === lastId && reread === totalVisits
  const { checkpointLsn } = db.stats()
  const replayed = Number(db.lastCommitId() - checkpointLsn)
  console.log(
    `  reopened in ${reopenMs.toFixed(1)} ms (close wrote a checkpoint at commit ${checkpointLsn}; ${fmt(replayed)} commits replayed from the log): last commit ${db.lastCommitId()}, ${fmt(reread)} visits — ${ok ? 'everything acknowledged is there' : 'MISMATCH'}`,
  )
  await db.close()
  if (!ok) process.exitCode = 1
  console.log(`  run again to add to it, or pass --fresh to start over; data lives in ${dir}`)
}

main().catch((err: unknown) => {
  const e = err as { code?: string; message?: string }
  console.error(`kestreldb demo failed: ${e.code ?? 'Error'}: ${e.message ?? String(err)}`)
  process.exitCode = 1
})
