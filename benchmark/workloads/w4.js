// W4: bulk load of N records (keys k0000000…, 256-byte values that do not compress) in durable
// transactions of 1000 records each, awaited one after the other, into an empty store. Timed from
// the first commit to the last acknowledgement — for kestreldb also through a final
// `db.checkpoint()`, so that its figure includes writing the page store, not just the log.
// Then close (timed separately) and the on-disk size of everything the store left behind.
import { dirname, join } from 'node:path'
import { KESTREL, openStore } from '../contestants/index.js'
import { diskUsage, valueSource } from '../lib/disk.js'
import { storeStats } from '../lib/stats.js'
import { fmt, mib, ratio, table, unavailableRow, verdict } from '../lib/report.js'

const VALUE_BYTES = 256
const BATCH = 1000
const CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'lmdb', 'better-sqlite3', 'classic-level']
const key = (i) => `k${String(i).padStart(7, '0')}`

/** Child side; `param` is the record count. */
export async function cell({ contestant, dir, param: records }) {
  const value = valueSource(VALUE_BYTES)
  const store = await openStore(contestant, dir)
  const t0 = performance.now()
  for (let from = 0; from < records; from += BATCH) {
    const n = Math.min(BATCH, records - from)
    const entries = new Array(n)
    for (let j = 0; j < n; j++) entries[j] = [key(from + j), value(from + j)]
    await store.load(entries, { batch: BATCH })
  }
  const committedMs = performance.now() - t0
  let checkpointMs = 0
  if (store.checkpoint) {
    await store.checkpoint()
    checkpointMs = performance.now() - t0 - committedMs
  }
  const elapsedMs = performance.now() - t0
  const s = store.stats?.()
  const c0 = performance.now()
  await store.close()
  const closeMs = performance.now() - c0
  // The cell's directory holds this store only (better-sqlite3 writes `db.sqlite` next to `db`).
  const disk = diskUsage(dirname(dir))
  // kestreldb: the page store and what is left of the log (the segment being written is kept
  // whole, checkpointed or not; its preallocated zeros count in the apparent size).
  const parts = store.checkpoint ? { pagesBytes: diskUsage(join(dir, 'pages.kdb')).bytes, logBytes: diskUsage(join(dir, 'log')).bytes } : {}
  return {
    records,
    recordsPerSec: records / (elapsedMs / 1000),
    elapsedMs,
    committedMs,
    checkpointMs,
    closeMs,
    diskBytes: disk.bytes,
    allocatedBytes: disk.allocatedBytes,
    files: disk.files,
    ...parts,
    ...(s ? { stats: storeStats(s) } : {}),
  }
}

export async function run(ctx) {
  const records = ctx.quick ? 100_000 : 1_000_000
  const results = {}
  for (const name of CONTESTANTS) {
    const r = ctx.cell(name, records, { timeoutMs: ctx.quick ? 180_000 : 900_000 })
    results[name] = r
    ctx.log(
      '',
      name,
      r,
      (x) =>
        `${fmt(x.recordsPerSec).padStart(9)} records/s  (${fmt(x.elapsedMs / 1000, 2)} s${x.checkpointMs ? `, checkpoint ${fmt(x.checkpointMs / 1000, 2)} s` : ''}; close ${fmt(x.closeMs / 1000, 2)} s)  on disk ${mib(x.diskBytes)} MiB  RSS ${mib(x.peakRssBytes)} MiB`,
    )
  }
  return { records, valueBytes: VALUE_BYTES, batch: BATCH, contestants: CONTESTANTS, results }
}

export function render(raw) {
  const rate = (name) => raw.results[name]?.recordsPerSec ?? NaN
  const native = rate('kestrel-native')
  const headers = ['contestant', 'records/s', 'load s', 'of which checkpoint s', 'close s', 'on disk MiB', 'bytes/record', 'peak RSS MiB', 'native / this']
  const rows = raw.contestants.map((name) => {
    const r = raw.results[name]
    if (r.error) return unavailableRow(name, r.error, headers.length)
    return [
      name,
      fmt(r.recordsPerSec),
      fmt(r.elapsedMs / 1000, 2),
      KESTREL.includes(name) ? fmt(r.checkpointMs / 1000, 2) : '—',
      fmt(r.closeMs / 1000, 2),
      mib(r.diskBytes),
      fmt(r.diskBytes / r.records),
      mib(r.peakRssBytes),
      ratio(native, r.recordsPerSec),
    ]
  })
  const lines = [
    `${fmt(raw.records)} records (keys \`k0000000\`…, ${raw.valueBytes}-byte random values, so LevelDB's compression gains nothing) into an empty store, in durable transactions of ${fmt(raw.batch)} records each (kestreldb \`durability: 'sync'\`, lmdb \`transaction()\`, better-sqlite3 one \`BEGIN…COMMIT\` with \`synchronous=FULL\`, classic-level one \`batch(…, { sync: true })\`), each awaited before the next. **For kestreldb the time includes a final \`await db.checkpoint()\`** (the page store written and the log trimmed) — the peers' figures stop at their last commit. Close is timed apart (better-sqlite3 checkpoints its WAL there; kestreldb has nothing left to checkpoint). On disk: the apparent size of every file the store left after close.`,
    '',
    ...table(headers, 'lrrrrrrrr', rows),
    '',
    ...raw.contestants
      .filter((n) => KESTREL.includes(n) && raw.results[n].pagesBytes !== undefined)
      .map(
        (n) =>
          `${n} on disk: page store ${mib(raw.results[n].pagesBytes)} MiB, log ${mib(raw.results[n].logBytes)} MiB (the segment being written stays whole after a checkpoint, with its preallocated zeros).`,
      ),
    '',
    `native / ts: **${ratio(native, rate('kestrel-ts'))}** · ${raw.contestants
      .filter((n) => !KESTREL.includes(n))
      .map((n) => `native / ${n}: **${ratio(native, rate(n))}**`)
      .join(' · ')}`,
    '',
  ]
  const goals = [`- W4: native ≥ 3× ts — this run: ${ratio(native, rate('kestrel-ts'))} → ${verdict(native / rate('kestrel-ts'), 3)}`]
  return { lines, goals }
}

export default {
  id: 'W4',
  aliases: ['W4', 'LOAD'],
  title: 'W4 — bulk load',
  cell,
  run,
  render,
}
