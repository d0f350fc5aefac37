// W3: read-modify-write transactions (read 2 keys, write both) from C concurrent clients over
// zipfian-distributed keys; durable commits. Reports commits/s and the retry rate.
import { openStore } from '../contestants/index.js'
import { summarize } from '../lib/stats.js'
import { fmt, ratio, table, unavailableRow, verdict } from '../lib/report.js'

export const KEYS = 10_000
export const THETA = 0.99
const CONCURRENCY = [16, 64]
const CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'lmdb', 'better-sqlite3']

/** A zipfian sampler over [0, n) (Gray et al.'s method), deterministic. */
export function zipf(n, theta, seed) {
  let x = seed
  const rand = () => {
    x = (x * 1103515245 + 12345) & 0x7fffffff
    return x / 0x80000000
  }
  let zetan = 0
  for (let i = 1; i <= n; i++) zetan += 1 / i ** theta
  const zeta2 = 1 + 1 / 2 ** theta
  const alpha = 1 / (1 - theta)
  const eta = (1 - (2 / n) ** (1 - theta)) / (1 - zeta2 / zetan)
  return () => {
    const u = rand()
    const uz = u * zetan
    if (uz < 1) return 0
    if (uz < 1 + 0.5 ** theta) return 1
    return Math.floor(n * (eta * u - eta + 1) ** alpha)
  }
}

/**
 * W3's clients: each loops until `stopAt`, reading two keys drawn from `next` (distinct) and
 * writing both in one transaction; latencies and retries count from `recordFrom` on.
 */
export async function rmwClients(store, next, concurrency, recordFrom, stopAt) {
  const key = (i) => `k${String(i).padStart(6, '0')}`
  const latenciesMs = []
  let attemptsAtStart = -1
  const client = async () => {
    // Bounded by the deadline.
    while (performance.now() < stopAt) {
      const a = next()
      let b = next()
      if (b === a) b = (a + 1) % KEYS
      const start = performance.now()
      if (start >= recordFrom && attemptsAtStart < 0) attemptsAtStart = store.attempts
      await store.rmw(key(a), key(b))
      if (start >= recordFrom) latenciesMs.push(performance.now() - start)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, client))
  return { latenciesMs, attempts: store.attempts - Math.max(0, attemptsAtStart), elapsedMs: performance.now() - recordFrom }
}

/** Child side: one contestant at one concurrency. */
export async function cell({ contestant, dir, param: concurrency, durationMs, warmupMs }) {
  const store = await openStore(contestant, dir)
  const key = (i) => `k${String(i).padStart(6, '0')}`
  await store.load(Array.from({ length: KEYS }, (_, i) => [key(i), { n: 0 }]))
  const recordFrom = performance.now() + warmupMs
  const { latenciesMs, attempts, elapsedMs } = await rmwClients(store, zipf(KEYS, THETA, 42), concurrency, recordFrom, recordFrom + durationMs)
  const commits = latenciesMs.length
  await store.close()
  const s = summarize(latenciesMs, elapsedMs)
  return { commits: s.ops, commitsPerSec: s.opsPerSec, p50Ms: s.p50Ms, p99Ms: s.p99Ms, retryRate: commits > 0 ? (attempts - commits) / commits : 0 }
}

export async function run(ctx) {
  const results = {}
  for (const c of CONCURRENCY) {
    results[c] = {}
    for (const name of CONTESTANTS) {
      const r = ctx.cell(name, c, { timeoutMs: ctx.warmupMs + ctx.durationMs + 90_000 })
      results[c][name] = r
      ctx.log(
        `C=${c}`,
        name,
        r,
        (x) => `${fmt(x.commitsPerSec).padStart(8)} commits/s  p50 ${fmt(x.p50Ms, 2)} ms  p99 ${fmt(x.p99Ms, 2)} ms  retries/commit ${fmt(x.retryRate, 2)}`,
      )
    }
  }
  return { keys: KEYS, theta: THETA, concurrency: CONCURRENCY, contestants: CONTESTANTS, results }
}

export function render(raw) {
  const ops = (c, n) => raw.results[c]?.[n]?.commitsPerSec ?? NaN
  const lines = [
    `Each transaction reads two keys and writes both (durable commit); keys are zipfian (θ = ${raw.theta}) over ${fmt(raw.keys)} records, so a few keys are very hot. kestreldb runs optimistic snapshot-isolation transactions through \`db.transaction\` (retried on conflict); lmdb and better-sqlite3 serialize their write transactions, so they never retry.`,
    '',
  ]
  const headers = ['contestant', 'commits/s', 'p50 ms', 'p99 ms', 'retries per commit', 'vs lmdb']
  for (const c of raw.concurrency) {
    const rows = raw.contestants.map((name) => {
      const r = raw.results[c][name]
      if (r.error) return unavailableRow(name, r.error, headers.length)
      return [name, fmt(r.commitsPerSec), fmt(r.p50Ms, 2), fmt(r.p99Ms, 2), fmt(r.retryRate, 2), ratio(r.commitsPerSec, ops(c, 'lmdb'))]
    })
    lines.push(`### C = ${c}`, '', ...table(headers, 'lrrrrr', rows), '', `native / ts: **${ratio(ops(c, 'kestrel-native'), ops(c, 'kestrel-ts'))}**`, '')
  }
  // BENCHMARKS.md: native ≥ 3× ts on W3; the MVCC issue adds native ≥ 2× lmdb `transaction`.
  const goals = raw.concurrency.flatMap((c) => [
    `- W3 C = ${c}: native ≥ 3× ts — this run: ${ratio(ops(c, 'kestrel-native'), ops(c, 'kestrel-ts'))} → ${verdict(ops(c, 'kestrel-native') / ops(c, 'kestrel-ts'), 3)}`,
    `- W3 C = ${c}: native ≥ 2× lmdb \`transaction\` — this run: ${ratio(ops(c, 'kestrel-native'), ops(c, 'lmdb'))} → ${verdict(ops(c, 'kestrel-native') / ops(c, 'lmdb'), 2)}`,
  ])
  return { lines, goals }
}

export default {
  id: 'W3',
  aliases: ['W3'],
  title: 'W3 — read-modify-write transactions',
  cell,
  run,
  render,
}
