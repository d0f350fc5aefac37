// W7: online backup under load. A store is filled with 1 GB (--quick: 100 MB) of 4000-byte values
// (untimed; kestreldb then checkpoints), W1-style writers start — C = 64 concurrent async clients,
// each looping one durable single-record commit of a 256-byte value — and run for a baseline
// period; then, with the writers still running, the store's online backup copies the database.
// Reported: backup MB/s, and the writers' commits/s (and ack latency) during the backup against
// the baseline just before it.
import { dirname } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { openStore } from '../contestants/index.js'
import { diskUsage, MB, valueSource } from '../lib/disk.js'
import { storeStats } from '../lib/stats.js'
import { fmt, mib, ratio, table, unavailableRow, verdict } from '../lib/report.js'

const CLIENTS = 64
const VALUE_BYTES = 256
// 4000 bytes, not 4096: with its few bytes of encoding a 4 KiB value would spill into a second
// 4 KiB page in kestreldb (overflow pages hold 4072 bytes) and in lmdb, doubling the files.
const LOAD_VALUE_BYTES = 4000
/** Load transactions of 250 × 4000 B = 1 MB. */
const LOAD_BATCH = 250
const CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'lmdb', 'better-sqlite3', 'classic-level']
/** Peers without an online backup call: listed in the table, never run. */
const NO_BACKUP_API = { 'classic-level': 'no online backup API (LevelDB has none; classic-level offers snapshots for reading only)' }
const GOAL = 0.7

function window(ends, latencies, from, to) {
  const lat = []
  let maxGapMs = 0
  let last = from
  for (let i = 0; i < ends.length; i++) {
    if (ends[i] < from || ends[i] >= to) continue
    lat.push(latencies[i])
    maxGapMs = Math.max(maxGapMs, ends[i] - last)
    last = ends[i]
  }
  maxGapMs = Math.max(maxGapMs, to - last)
  const sorted = Float64Array.from(lat).sort()
  const q = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : NaN)
  return { commits: lat.length, ms: to - from, commitsPerSec: lat.length / ((to - from) / 1000), p50Ms: q(0.5), p99Ms: q(0.99), maxGapMs }
}

/** Child side; `param` is the number of 4000-byte records loaded before the writers start. */
export async function cell({ contestant, dir, param: records, durationMs, warmupMs }) {
  const store = await openStore(contestant, dir)
  if (!store.backup) throw new Error('no online backup API')
  const big = valueSource(LOAD_VALUE_BYTES, 16 << 20)
  const l0 = performance.now()
  for (let from = 0; from < records; from += LOAD_BATCH) {
    const n = Math.min(LOAD_BATCH, records - from)
    const entries = new Array(n)
    for (let j = 0; j < n; j++) entries[j] = [`k${String(from + j).padStart(7, '0')}`, big(from + j)]
    await store.load(entries, { batch: LOAD_BATCH })
  }
  if (store.checkpoint) await store.checkpoint()
  const loadMs = performance.now() - l0
  // The cell's directory holds this store only (better-sqlite3 writes `db.sqlite` next to `db`).
  const dbBytes = diskUsage(dirname(dir)).bytes
  const small = valueSource(VALUE_BYTES)
  // The writers. A synchronous store (better-sqlite3) yields a turn of the event loop after each
  // commit, or neither the timers below nor its stepwise backup would ever run.
  const yieldTurn = store.synchronous ? () => new Promise((r) => setImmediate(r)) : null
  const ends = []
  const latencies = []
  let stop = false
  let next = 0
  const client = async () => {
    // Bounded by `stop`, set once the backup ends.
    while (!stop) {
      const n = next++
      const start = performance.now()
      await store.commitOne(`w${String(n % 1_000_000).padStart(6, '0')}`, small(n))
      const end = performance.now()
      ends.push(end)
      latencies.push(end - start)
      if (yieldTurn) await yieldTurn()
    }
  }
  const clients = Array.from({ length: CLIENTS }, client)
  let result
  try {
    await sleep(warmupMs)
    const baselineFrom = performance.now()
    // "A few seconds" of baseline: twice the cell duration (2 s with --quick, 6 s in full).
    await sleep(2 * durationMs)
    const backupFrom = performance.now()
    // kestreldb reports its phases: the page store first, then the log.
    let logPhaseFrom = 0
    result = await store.backup(`${dir}-backup`, {
      onProgress: ({ phase }) => {
        if (phase === 'log' && !logPhaseFrom) logPhaseFrom = performance.now()
      },
    })
    const backupTo = performance.now()
    stop = true
    await Promise.all(clients)
    const before = window(ends, latencies, baselineFrom, backupFrom)
    const during = window(ends, latencies, backupFrom, backupTo)
    const s = store.stats?.()
    await store.close()
    return {
      records,
      loadValueBytes: LOAD_VALUE_BYTES,
      loadMs,
      dbBytes,
      backupBytes: result.bytes,
      backupMs: backupTo - backupFrom,
      backupMBPerSec: result.bytes / MB / ((backupTo - backupFrom) / 1000),
      ...(logPhaseFrom ? { pagesPhaseMs: logPhaseFrom - backupFrom, logPhaseMs: backupTo - logPhaseFrom } : {}),
      before,
      during,
      duringVsBefore: during.commitsPerSec / before.commitsPerSec,
      ...(s ? { stats: storeStats(s) } : {}),
    }
  } finally {
    stop = true
  }
}

export async function run(ctx) {
  const records = ctx.quick ? 25_000 : 250_000
  const results = {}
  for (const name of CONTESTANTS) {
    const r = NO_BACKUP_API[name] ? { error: NO_BACKUP_API[name], noBackupApi: true } : ctx.cell(name, records, { timeoutMs: ctx.quick ? 300_000 : 1_200_000 })
    results[name] = r
    ctx.log(
      '',
      name,
      r,
      (x) =>
        `backup ${mib(x.backupBytes)} MiB in ${fmt(x.backupMs / 1000, 2)} s = ${fmt(x.backupMBPerSec)} MB/s; writers ${fmt(x.before.commitsPerSec)} → ${fmt(x.during.commitsPerSec)} commits/s (${fmt(x.duringVsBefore * 100)}%), p99 ${fmt(x.before.p99Ms, 1)} → ${fmt(x.during.p99Ms, 1)} ms, longest gap ${fmt(x.during.maxGapMs)} ms  RSS ${mib(x.peakRssBytes)} MiB`,
    )
  }
  return { records, loadValueBytes: LOAD_VALUE_BYTES, clients: CLIENTS, valueBytes: VALUE_BYTES, contestants: CONTESTANTS, results }
}

export function render(raw) {
  const headers = [
    'contestant',
    'backup MiB',
    'backup s',
    'backup MB/s',
    'commits/s before',
    'commits/s during',
    'during / before',
    'p99 ms before → during',
    'longest stall ms during',
    'peak RSS MiB',
  ]
  const rows = raw.contestants.map((name) => {
    const r = raw.results[name]
    if (r.noBackupApi) return [name, r.error, ...Array(headers.length - 2).fill('')]
    if (r.error) return unavailableRow(name, r.error, headers.length)
    return [
      name,
      mib(r.backupBytes),
      fmt(r.backupMs / 1000, 2),
      fmt(r.backupMBPerSec),
      fmt(r.before.commitsPerSec),
      fmt(r.during.commitsPerSec),
      `**${fmt(r.duringVsBefore * 100)}%**`,
      `${fmt(r.before.p99Ms, 1)} → ${fmt(r.during.p99Ms, 1)}`,
      fmt(r.during.maxGapMs),
      mib(r.peakRssBytes),
    ]
  })
  const n = raw.results['kestrel-native'] ?? {}
  const t = raw.results['kestrel-ts'] ?? {}
  const lines = [
    `The store is filled with ${fmt(raw.records)} records of ${fmt(raw.loadValueBytes)} bytes (${fmt((raw.records * raw.loadValueBytes) / MB)} MB of values; random bytes, in durable transactions of 1 MB, untimed; kestreldb then \`await db.checkpoint()\`), then W1-style writers start: C = ${raw.clients} async clients, each looping one durable single-record commit of a ${raw.valueBytes}-byte value to new keys. After a warm-up and a baseline of twice the cell duration, the store's online backup runs while the writers go on: kestreldb \`db.backup(dir)\` (with its defaults: the checkpoint's pages plus the log, asynchronous 1 MiB reads and writes paced at 48 MiB/s and synced every 2 MiB; the flusher is suspended meanwhile), lmdb \`backup(path)\` (\`mdb_env_copy2\` from a read transaction, off the main thread), better-sqlite3 \`backup(file)\` (SQLite's online backup API, 100 pages per event-loop turn; its synchronous writers yield a turn after each commit here, so its baseline is below its W1 figure). "Before" is the baseline window, "during" the backup itself; the longest stall is the longest time without any commit completing during the backup. Backup MB/s = bytes written / backup seconds (MB = 10⁶ bytes).`,
    '',
    ...table(headers, 'lrrrrrrrrr', rows),
    '',
    ...raw.contestants
      .filter((name) => raw.results[name].pagesPhaseMs !== undefined)
      .map((name) => {
        const r = raw.results[name]
        return `${name}: pages copied in ${fmt(r.pagesPhaseMs / 1000, 2)} s, then the log in ${fmt(r.logPhaseMs / 1000, 2)} s; store before the backup ${mib(r.dbBytes)} MiB on disk.`
      }),
    '',
    `native / ts backup MB/s: **${ratio(n.backupMBPerSec, t.backupMBPerSec)}** · native / lmdb backup MB/s: **${ratio(n.backupMBPerSec, raw.results.lmdb?.backupMBPerSec)}** · native / ts commits/s during the backup: **${ratio(n.during?.commitsPerSec, t.during?.commitsPerSec)}**`,
    '',
  ]
  const pct = (r) => (r?.duringVsBefore ? `${fmt(r.duringVsBefore * 100)}%` : '—')
  const goals = [
    `- W7: writers keep ≥ ${GOAL * 100}% of their throughput while a backup runs — this run: native ${pct(n)} → ${verdict(n.duringVsBefore, GOAL)}; ts ${pct(t)} → ${verdict(t.duringVsBefore, GOAL)}`,
  ]
  return { lines, goals }
}

export default {
  id: 'W7',
  aliases: ['W7', 'BACKUP'],
  title: 'W7 — online backup under load',
  cell,
  run,
  render,
}
