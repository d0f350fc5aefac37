// W6: secondary-index lookups. N records (keys k0000000…, values of about 256 bytes holding a
// unique email-like field whose order is unrelated to the key order) are loaded untimed into a
// store with an index on that field, then looked up by random exact field values through one
// read view, single-threaded: each lookup returns exactly one record, decoded (as W2 does).
// kestreldb: a collection index `{ key: (v) => v.email, unique: true }` and `view.find(c, 'email', x)`;
// better-sqlite3: a column holding the field with CREATE UNIQUE INDEX on it and a prepared
// `SELECT k, v FROM items WHERE x = ?`; js-map: a second Map (the in-memory limit).
// lmdb has no secondary indexes: it is listed as not comparable rather than given an emulation.
import { cellsByRecordCount, throughput, timedCheckpoint } from '../lib/loop.js'
import { KESTREL, openStore } from '../contestants/index.js'
import { percentile } from '../lib/stats.js'
import { fmt, mib, ratio, table, unavailableRow, verdict } from '../lib/report.js'
import { key, randomIndexes } from './reads.js'

const CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'better-sqlite3', 'js-map']
const NOT_COMPARABLE = {
  lmdb: 'not comparable: lmdb has no secondary indexes (an index would be a second DBI kept by the benchmark itself, i.e. a different workload)',
}
const BATCH = 10_000
const INDEX = { field: 'email', unique: true }
// kestreldb keeps every record and index entry in memory (a hot store, as W2 is meant to be).
const CACHE_BYTES = 2 ** 31
const PAD = 'v'.repeat(200)

/** A 32-bit mix of i (so that the emails' order has nothing to do with the keys'). */
function mix(i) {
  let x = Math.imul(i ^ 0x9e3779b9, 0x85ebca6b)
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35)
  return (x ^ (x >>> 16)) >>> 0
}

/** The indexed field of record i: unique (it ends with i), ~28 characters. */
export const email = (i) => `${mix(i).toString(36).padStart(7, '0')}.${i}@example.com`

/** Record i: about 256 bytes encoded (MessagePack in kestreldb, JSON in SQLite). */
const record = (i) => ({ i, email: email(i), pad: PAD })

/** Child side; `param` is the record count. */
export async function cell({ contestant, dir, param: records, durationMs, warmupMs }) {
  const store = await openStore(contestant, dir, { index: INDEX, cacheBytes: CACHE_BYTES })
  const l0 = performance.now()
  for (let from = 0; from < records; from += BATCH) {
    const n = Math.min(BATCH, records - from)
    const entries = new Array(n)
    for (let j = 0; j < n; j++) entries[j] = [key(from + j), record(from + j)]
    await store.load(entries, { batch: BATCH })
  }
  const loadMs = performance.now() - l0
  // A quiet store for the timed loops: no checkpoint left to run meanwhile (native runs its
  // checkpoints on its own threads, which would share the two cores with the lookups).
  const checkpointMs = await timedCheckpoint(store)
  const reader = store.reader()
  const rand = randomIndexes(records)
  const lookup = () => {
    const i = rand()
    const found = reader.find(email(i))
    if (found.length !== 1 || found[0].value.i !== i || found[0].key !== key(i)) {
      throw new Error(`lookup of record ${i} by email found ${found.length} records${found.length ? ` (first: ${JSON.stringify(found[0].key)})` : ''}`)
    }
  }
  const t0 = performance.now()
  while (performance.now() < t0 + warmupMs) for (let i = 0; i < 100; i++) lookup()
  // Throughput, without a clock read per lookup.
  const lookupsPerSec = throughput(lookup, durationMs)
  // Latency: the same loop with each lookup timed (the clock's own cost, ~0.05 µs, included).
  const latencies = []
  const deadline = performance.now() + durationMs
  while (performance.now() < deadline) {
    for (let i = 0; i < 100; i++) {
      const s = performance.now()
      lookup()
      latencies.push(performance.now() - s)
    }
  }
  const sorted = Float64Array.from(latencies).sort()
  const s = store.stats?.()
  reader.close()
  await store.close()
  return {
    records,
    lookupsPerSec,
    p50Us: percentile(sorted, 0.5) * 1000,
    p99Us: percentile(sorted, 0.99) * 1000,
    latencySamples: sorted.length,
    loadMs,
    checkpointMs,
    ...(s
      ? { stats: { keys: s.keys, versions: s.versions, indexEntries: s.indexEntries, recordBytes: s.recordBytes, retired: s.retired, pageCount: s.pageCount } }
      : {}),
  }
}

export async function run(ctx) {
  const out = cellsByRecordCount(
    ctx,
    CONTESTANTS,
    (x) =>
      `${fmt(x.lookupsPerSec).padStart(10)} lookups/s  p50 ${fmt(x.p50Us, 1)} µs  p99 ${fmt(x.p99Us, 1)} µs  (load ${fmt(x.loadMs / 1000, 1)} s${x.checkpointMs ? `, checkpoint ${fmt(x.checkpointMs / 1000, 1)} s` : ''})  RSS ${mib(x.peakRssBytes)} MiB`,
  )
  for (const [name, why] of Object.entries(NOT_COMPARABLE)) ctx.log('', name, { error: why }, () => '')
  return { ...out, batch: BATCH, index: INDEX, cacheBytes: CACHE_BYTES, notComparable: NOT_COMPARABLE }
}

export function render(raw) {
  const rate = (name) => raw.results[name]?.lookupsPerSec ?? NaN
  const native = rate('kestrel-native')
  const sqlite = rate('better-sqlite3')
  const headers = ['contestant', 'lookups/s', 'p50 µs', 'p99 µs', 'load s (untimed)', 'peak RSS MiB', 'native / this']
  const rows = raw.contestants.map((name) => {
    const r = raw.results[name]
    if (r.error) return unavailableRow(name, r.error, headers.length)
    const load = `${fmt(r.loadMs / 1000, 1)}${r.checkpointMs ? ` + checkpoint ${fmt(r.checkpointMs / 1000, 1)}` : ''}`
    return [name, fmt(r.lookupsPerSec), fmt(r.p50Us, 1), fmt(r.p99Us, 1), load, mib(r.peakRssBytes), ratio(native, r.lookupsPerSec)]
  })
  for (const [name, why] of Object.entries(raw.notComparable ?? {})) rows.push([name, why, ...Array(headers.length - 2).fill('')])
  const lines = [
    `${fmt(raw.records)} records (keys \`k0000000\`…, values \`{ i, email, pad }\` of about 256 bytes) with a **unique** index on \`email\` (\`<hash>.<i>@example.com\`, so index order is unrelated to key order), loaded untimed in transactions of ${fmt(raw.batch)} records with the index maintained by each store (kestreldb \`durability: 'sync'\` then \`await db.checkpoint()\`, so no checkpoint runs during the lookups; \`cacheBytes: ${mib(raw.cacheBytes)} MiB\`, so every record and index entry stays in memory). Then random exact-match lookups through one read view, single-threaded, each returning exactly one record, decoded and checked: kestreldb \`view.find(items, 'email', x)\` on an index \`{ key: (v) => v.email, unique: true }\`; better-sqlite3 a column with \`CREATE UNIQUE INDEX\` and a prepared \`SELECT k, v FROM items WHERE x = ?\` (WAL, default 2 MB page cache, the OS page cache warm); js-map a second \`Map\` from email to key, the in-memory limit. Lookups/s come from a loop without clock reads; p50/p99 from a second loop timing each lookup.`,
    '',
    ...table(headers, 'lrrrrrr', rows),
    '',
    `native / better-sqlite3: **${ratio(native, sqlite)}** · native / ts: **${ratio(native, rate('kestrel-ts'))}**`,
    '',
    ...raw.contestants
      .filter((n) => KESTREL.includes(n) && raw.results[n].stats)
      .map((n) => {
        const st = raw.results[n].stats
        return `${n} after the lookups: ${fmt(st.keys)} keys, ${fmt(st.indexEntries)} index entries, records in memory ${mib(st.recordBytes)} MiB (${fmt(st.recordBytes / raw.records)} bytes/record), ${fmt(st.retired)} retired.`
      }),
    '',
  ]
  const goals = [
    `- W6: native ≥ better-sqlite3 (secondary-index lookups) — this run: ${ratio(native, sqlite)} → ${verdict(native / sqlite, 1)}`,
    '- W6 hot: native ≥ lmdb — **not comparable**: lmdb has no secondary indexes (only an index emulated by the benchmark in a second DBI could stand in, which measures that emulation, not lmdb)',
  ]
  return { lines, goals }
}

export default {
  id: 'W6',
  aliases: ['W6', 'INDEX'],
  title: 'W6 — secondary-index lookups',
  cell,
  run,
  render,
}
