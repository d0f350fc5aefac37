// W9: memory per cached record. N records (keys k0000000…, values `{ i, pad }` of about 256 bytes
// with a distinct 240-character pad each) are loaded into a store big enough to keep them all in
// memory, then every record is read once, so each store holds all of them in its cache: kestreldb
// in its version store (`cacheBytes: 2 GiB`, after a checkpoint, so they are clean cached records,
// not pending changes), better-sqlite3 in its own page cache (`PRAGMA cache_size` of 2 GiB instead of
// its 2 MB), js-map as decoded objects in a Map (the floor of what JavaScript needs to hold them).
// Bytes per record = (RSS after − RSS at baseline) / N, both measured after forced full GCs, the
// baseline with the store open and empty; V8's heapUsed and external (Buffers included) deltas
// too. GC pauses: every 'gc' performance entry during the load and the read pass.
import { PerformanceObserver } from 'node:perf_hooks'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { cellsByRecordCount, timedCheckpoint } from '../lib/loop.js'
import { KESTREL, openStore } from '../contestants/index.js'
import { percentile } from '../lib/stats.js'
import { fmt, mib, ratio, table, unavailableRow, verdict } from '../lib/report.js'
import { key } from './reads.js'

const CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'better-sqlite3', 'js-map']
const BATCH = 10_000
const CACHE_BYTES = 2 ** 31
const PAD_BYTES = 180 // 240 base64 characters

/** A fresh value per record: distinct, incompressible-looking strings (no sharing between records). */
function recordValue(i, buf) {
  let x = (i * 2654435761) >>> 0 || 1
  for (let j = 0; j < buf.length; j++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    buf[j] = x & 0xff
  }
  return { i, pad: buf.toString('base64') }
}

let gc
/** Full collections on demand without a command-line flag (the cell's command line is the harness's). */
function exposeGc() {
  setFlagsFromString('--expose-gc')
  gc = runInNewContext('gc')
}

const turn = () => new Promise((resolve) => setImmediate(resolve))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function settle() {
  for (let i = 0; i < 3; i++) {
    gc()
    await sleep(50)
  }
  return process.memoryUsage()
}

/** Child side; `param` is the record count. */
export async function cell({ contestant, dir, param: records }) {
  exposeGc()
  const store = await openStore(contestant, dir, { cacheBytes: CACHE_BYTES, pageCacheBytes: CACHE_BYTES, scans: false })
  const before = await settle()
  const pauses = []
  const kinds = { minor: 0, major: 0, other: 0 }
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      pauses.push(e.duration)
      const kind = e.detail?.kind
      // NODE_PERFORMANCE_GC_MINOR = 1, MAJOR = 4 (incremental 8, weak callbacks 16).
      if (kind === 1) kinds.minor++
      else if (kind === 4) kinds.major++
      else kinds.other++
    }
  })
  observer.observe({ entryTypes: ['gc'] })
  const buf = Buffer.alloc(PAD_BYTES)
  const l0 = performance.now()
  for (let from = 0; from < records; from += BATCH) {
    const n = Math.min(BATCH, records - from)
    const entries = new Array(n)
    for (let j = 0; j < n; j++) entries[j] = [key(from + j), recordValue(from + j, buf)]
    await store.load(entries, { batch: BATCH })
    // better-sqlite3 and js-map never yield: let the GC entries be delivered as they come.
    await turn()
  }
  const loadMs = performance.now() - l0
  const checkpointMs = await timedCheckpoint(store)
  // Every record read once (decoded and checked), so the page caches hold them all too.
  const reader = store.reader()
  const r0 = performance.now()
  for (let from = 0; from < records; from += BATCH) {
    for (let i = from; i < Math.min(records, from + BATCH); i++) {
      if (reader.get(key(i))?.i !== i) throw new Error(`record ${i} missing or wrong`)
    }
    await turn()
  }
  const readMs = performance.now() - r0
  reader.close()
  await turn()
  for (const e of observer.takeRecords()) pauses.push(e.duration)
  observer.disconnect()
  // The scavenger's own cycle, so that what it would prune or retire on its timer is done (it
  // must retire nothing: every record is to stay cached).
  if (store.scavenge) await store.scavenge()
  const after = await settle()
  const s = store.stats?.()
  await store.close()
  const sorted = Float64Array.from(pauses).sort()
  const delta = (k) => after[k] - before[k]
  return {
    records,
    rssBytesPerRecord: delta('rss') / records,
    heapBytesPerRecord: delta('heapUsed') / records,
    externalBytesPerRecord: delta('external') / records,
    before: { rss: before.rss, heapTotal: before.heapTotal, heapUsed: before.heapUsed, external: before.external, arrayBuffers: before.arrayBuffers },
    after: { rss: after.rss, heapTotal: after.heapTotal, heapUsed: after.heapUsed, external: after.external, arrayBuffers: after.arrayBuffers },
    gc: {
      count: pauses.length,
      ...kinds,
      p50Ms: percentile(sorted, 0.5),
      p99Ms: percentile(sorted, 0.99),
      maxMs: sorted[sorted.length - 1] ?? NaN,
      totalMs: pauses.reduce((a, b) => a + b, 0),
    },
    loadMs,
    checkpointMs,
    readMs,
    ...(s
      ? {
          stats: {
            keys: s.keys,
            versions: s.versions,
            recordBytes: s.recordBytes,
            retired: s.retired,
            scavengerRetired: s.scavenger?.retired,
            scavengerCycles: s.scavenger?.cycles,
          },
        }
      : {}),
  }
}

export async function run(ctx) {
  const out = cellsByRecordCount(
    ctx,
    CONTESTANTS,
    (x) =>
      `RSS ${fmt(x.rssBytesPerRecord).padStart(5)} B/record  heap ${fmt(x.heapBytesPerRecord).padStart(5)}  external ${fmt(x.externalBytesPerRecord).padStart(5)}  GC p99 ${fmt(x.gc.p99Ms, 1)} ms (${x.gc.count} pauses, max ${fmt(x.gc.maxMs, 1)})  (load ${fmt(x.loadMs / 1000, 1)} s, read ${fmt(x.readMs / 1000, 1)} s)  peak RSS ${mib(x.peakRssBytes)} MiB`,
  )
  return { ...out, batch: BATCH, cacheBytes: CACHE_BYTES }
}

export function render(raw) {
  const per = (name) => raw.results[name]?.rssBytesPerRecord ?? NaN
  const native = per('kestrel-native')
  const ts = per('kestrel-ts')
  const headers = [
    'contestant',
    'RSS bytes/record',
    'V8 heap bytes/record',
    'external bytes/record',
    "store's own count bytes/record",
    'GC pauses',
    'GC p50 ms',
    'GC p99 ms',
    'GC max ms',
    'GC total ms',
    'load s',
    'read s',
    'peak RSS MiB',
    'this / native',
  ]
  const rows = raw.contestants.map((name) => {
    const r = raw.results[name]
    if (r.error) return unavailableRow(name, r.error, headers.length)
    const own = r.stats ? fmt(r.stats.recordBytes / r.records) : '—'
    const load = `${fmt(r.loadMs / 1000, 1)}${r.checkpointMs ? ` + ${fmt(r.checkpointMs / 1000, 1)}` : ''}`
    return [
      name,
      fmt(r.rssBytesPerRecord),
      fmt(r.heapBytesPerRecord),
      fmt(r.externalBytesPerRecord),
      own,
      fmt(r.gc.count),
      fmt(r.gc.p50Ms, 2),
      fmt(r.gc.p99Ms, 1),
      fmt(r.gc.maxMs, 1),
      fmt(r.gc.totalMs),
      load,
      fmt(r.readMs / 1000, 1),
      mib(r.peakRssBytes),
      ratio(r.rssBytesPerRecord, native),
    ]
  })
  const lines = [
    `${fmt(raw.records)} records (keys \`k0000000\`…, values \`{ i, pad }\` with a distinct 240-character pad each, about 256 bytes encoded) loaded in transactions of ${fmt(raw.batch)} into a store that keeps them all in memory — kestreldb \`cacheBytes: ${mib(raw.cacheBytes)} MiB\`, \`durability: 'sync'\`, then \`await db.checkpoint()\` (so the records are clean cached records, no longer pending changes) and \`await db.scavenge()\` before measuring; better-sqlite3 \`PRAGMA cache_size\` of ${mib(raw.cacheBytes)} MiB (its page cache) — then every record read once through one read view, so page caches hold them all. js-map holds the decoded values in a \`Map\`: the floor for keeping them as JavaScript objects. **Bytes per record = (RSS after − RSS before) / records**, both taken after forced full GCs (\`gc()\` ×3), "before" with the store open and empty, in the same process; the V8 heap (\`heapUsed\`) and external (\`external\`: Buffers and other memory V8 objects own outside the heap) deltas show where the bytes live. "Store's own count": kestreldb's \`stats().recordBytes\` / records. GC pauses: every \`gc\` performance entry (minor and major) during the load, checkpoint and read pass. Load s: load + checkpoint.`,
    '',
    ...table(headers, 'lrrrrrrrrrrrrr', rows),
    '',
    `ts / native bytes per record: **${ratio(ts, native)}** · better-sqlite3 / native: **${ratio(per('better-sqlite3'), native)}** · js-map / native: **${ratio(per('js-map'), native)}**`,
    '',
    "Where the RSS growth is (MiB, after − before): V8 heap committed (`heapTotal`: the objects in use plus the free space V8 keeps after collecting the load's garbage), external, and the rest — memory outside V8 (SQLite's page cache, the native engine's records, allocator slack):",
    '',
    ...raw.contestants
      .filter((n) => !raw.results[n].error && raw.results[n].after?.heapTotal !== undefined)
      .map((n) => {
        const r = raw.results[n]
        const d = (k) => r.after[k] - r.before[k]
        return `- ${n}: RSS +${mib(d('rss'))} = heap committed +${mib(d('heapTotal'))} (of which in use +${mib(d('heapUsed'))}) + external +${mib(d('external'))} + outside V8 ${mib(d('rss') - d('heapTotal') - d('external'))}`
      }),
    '',
    ...raw.contestants
      .filter((n) => KESTREL.includes(n) && raw.results[n].stats)
      .map((n) => {
        const st = raw.results[n].stats
        return `${n}: ${fmt(st.keys)} keys, ${fmt(st.versions)} versions, ${fmt(st.retired)} records retired from memory (must be 0: every record cached), scavenger cycles ${fmt(st.scavengerCycles)}.`
      }),
    '',
  ]
  const goals = [`- W9: native uses ≥ 2× less memory per cached record than ts (RSS) — this run: ts / native ${ratio(ts, native)} → ${verdict(ts / native, 2)}`]
  return { lines, goals }
}

export default {
  id: 'W9',
  aliases: ['W9', 'MEMORY'],
  title: 'W9 — memory per cached record',
  cell,
  run,
  render,
}
