// W2 cold: W2's random point reads, but on a reopened store whose records are mostly not in the
// store's own memory. N records (256-byte values, as in W2) are loaded untimed, the store is
// closed and reopened — kestreldb with `cacheBytes: 16 MiB`, so most reads go to the page store
// (pages.kdb) — and then read single-threaded through one read view. The OS page cache still
// holds the files (they were just written): this measures the stores' read paths over their
// on-disk formats, not the disk.
import { cellsByRecordCount, throughput } from '../lib/loop.js'
import { openStore } from '../contestants/index.js'
import { fmt, mib, ratio, table, unavailableRow } from '../lib/report.js'
import { key, loadRecords, randomIndexes } from './reads.js'

const CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'lmdb', 'better-sqlite3']
const CACHE_BYTES = 16 << 20
const FIRST_READS = 10_000

/** Child side; `param` is the record count. */
export async function cell({ contestant, dir, param: records, durationMs }) {
  let store = await openStore(contestant, dir)
  await loadRecords(store, records)
  await store.close()
  const o0 = performance.now()
  store = await openStore(contestant, dir, { cacheBytes: CACHE_BYTES })
  const reopenMs = performance.now() - o0
  const reader = store.reader()
  const rand = randomIndexes(records)
  const read = () => {
    const i = rand()
    if (reader.get(key(i))?.i !== i) throw new Error(`record ${i} missing or wrong after reopen`)
  }
  // No warm-up: the first reads after the reopen are the cold ones, shown apart.
  const t0 = performance.now()
  for (let i = 0; i < FIRST_READS; i++) read()
  const firstReadsPerSec = FIRST_READS / ((performance.now() - t0) / 1000)
  const readsPerSec = throughput(read, durationMs)
  const s = store.stats?.()
  reader.close()
  await store.close()
  return {
    readsPerSec,
    firstReadsPerSec,
    reopenMs,
    ...(s
      ? { stats: { recordBytes: s.recordBytes, retired: s.retired, versions: s.versions, pageCount: s.pageCount, checkpointLsn: Number(s.checkpointLsn) } }
      : {}),
  }
}

export async function run(ctx) {
  const out = cellsByRecordCount(
    ctx,
    CONTESTANTS,
    (x) =>
      `${fmt(x.readsPerSec).padStart(10)} reads/s  (first ${fmt(FIRST_READS)}: ${fmt(x.firstReadsPerSec)}/s, reopen ${fmt(x.reopenMs, 1)} ms)${x.stats ? `  records in memory ${mib(x.stats.recordBytes)} MiB` : ''}  RSS ${mib(x.peakRssBytes)} MiB`,
  )
  return { ...out, cacheBytes: CACHE_BYTES, firstReads: FIRST_READS }
}

export function render(raw) {
  const l = raw.results.lmdb ?? {}
  const headers = [
    'contestant',
    'reads/s',
    `first ${fmt(raw.firstReads)} reads/s`,
    'reopen ms',
    'records in memory MiB (stats.recordBytes)',
    'peak RSS MiB',
    'vs lmdb',
  ]
  const rows = raw.contestants.map((name) => {
    const r = raw.results[name]
    if (r.error) return unavailableRow(name, r.error, headers.length)
    return [
      name,
      fmt(r.readsPerSec),
      fmt(r.firstReadsPerSec),
      fmt(r.reopenMs, 1),
      r.stats ? mib(r.stats.recordBytes) : '—',
      mib(r.peakRssBytes),
      ratio(r.readsPerSec, l.readsPerSec),
    ]
  })
  const n = raw.results['kestrel-native'] ?? {}
  const t = raw.results['kestrel-ts'] ?? {}
  const lines = [
    `${fmt(raw.records)} records (256-byte values), loaded untimed, the store closed and **reopened** — kestreldb with \`cacheBytes: ${mib(raw.cacheBytes)} MiB\`, so most records are read from the page store — then random point reads through one read view, single-threaded, with no warm-up (the first ${fmt(raw.firstReads)} reads are shown apart, then the rate over the measured duration). kestreldb's own caches after the reopen: the records retired past \`cacheBytes\` and an LRU of decoded pages bounded by it (the page cache is not counted in \`stats.recordBytes\`). lmdb reads its memory map; better-sqlite3 keeps its default page cache (2 MB). **The OS page cache stays warm** (the files were just written): this is the cost of each store's on-disk read path, not of the disk.`,
    '',
    ...table(headers, 'lrrrrrr', rows),
    '',
    `native / ts: **${ratio(n.readsPerSec, t.readsPerSec)}** · native / lmdb: **${ratio(n.readsPerSec, l.readsPerSec)}** · native / better-sqlite3: **${ratio(n.readsPerSec, raw.results['better-sqlite3']?.readsPerSec)}**`,
    '',
  ]
  // BENCHMARKS.md sets a goal for hot reads only (W2 / W5 above).
  return { lines, goals: [] }
}

export default {
  id: 'W2C',
  aliases: ['W2C', 'W2-COLD', 'COLD'],
  title: 'W2 cold — point reads on a reopened store',
  cell,
  run,
  render,
}
