// W2 (hot point reads, random keys) and W5 (range scans of 100 consecutive records) over N
// records with 256-byte values, after an untimed bulk load. Reads go through one read view,
// single-threaded: this measures the read path, not the disk.
import { cellsByRecordCount, throughput } from '../lib/loop.js'
import { openStore } from '../contestants/index.js'
import { fmt, mib, ratio, table, unavailableRow, verdict } from '../lib/report.js'

const CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'lmdb', 'better-sqlite3', 'js-map']
export const key = (i) => `k${String(i).padStart(7, '0')}`

/** The W2 data set (also W2 cold's): `records` records `{ i, pad }` of about 256 bytes, loaded untimed. */
export async function loadRecords(store, records) {
  const pad = 'v'.repeat(240)
  const entries = Array.from({ length: records }, (_, i) => [key(i), { i, pad }])
  await store.load(entries)
}

/** A deterministic pseudo-random record index in 0 … records − 1 per call. */
export function randomIndexes(records) {
  let x = 12345
  return () => {
    x = (x * 1103515245 + 12345) & 0x7fffffff
    return x % records
  }
}

/** Child side; `param` is the record count. */
export async function cell({ contestant, dir, param: records, durationMs }) {
  const store = await openStore(contestant, dir)
  await loadRecords(store, records)
  const reader = store.reader()
  const rand = randomIndexes(records)
  // Warm up, then measure each phase for durationMs.
  for (let i = 0; i < 20_000; i++) reader.get(key(rand()))
  const readsPerSec = throughput(() => {
    if (reader.get(key(rand())) === undefined) throw new Error('missing record')
  }, durationMs)
  const scansPerSec = throughput(
    () => {
      if (reader.scan100(key(rand() % (records - 100))) !== 100) throw new Error('short scan')
    },
    durationMs,
    50,
  )
  reader.close()
  await store.close()
  return { readsPerSec, scansPerSec }
}

export async function run(ctx) {
  return cellsByRecordCount(
    ctx,
    CONTESTANTS,
    (x) => `${fmt(x.readsPerSec).padStart(10)} reads/s  ${fmt(x.scansPerSec).padStart(8)} scans/s  RSS ${mib(x.peakRssBytes)} MiB`,
  )
}

export function render(raw) {
  const l = raw.results.lmdb ?? {}
  const headers = ['contestant', 'W2 reads/s', 'W5 scans/s', 'peak RSS MiB', 'W2 vs lmdb', 'W5 vs lmdb']
  const rows = raw.contestants.map((name) => {
    const r = raw.results[name]
    if (r.error) return unavailableRow(name, r.error, headers.length)
    return [name, fmt(r.readsPerSec), fmt(r.scansPerSec), mib(r.peakRssBytes), ratio(r.readsPerSec, l.readsPerSec), ratio(r.scansPerSec, l.scansPerSec)]
  })
  const n = raw.results['kestrel-native'] ?? {}
  const lines = [
    `${fmt(raw.records)} records (256-byte values), bulk-loaded untimed, then random point reads (W2) and scans of 100 consecutive records from a random key (W5) through one read view / read transaction, single-threaded. \`js-map\` is the in-memory limit (a \`Map\` and a sorted key array).`,
    '',
    ...table(headers, 'lrrrrr', rows),
    '',
  ]
  const goals = [
    `- W2 hot: native ≥ lmdb — this run: ${ratio(n.readsPerSec, l.readsPerSec)} → ${verdict(n.readsPerSec / l.readsPerSec, 1)}`,
    `- W5 hot: native ≥ lmdb — this run: ${ratio(n.scansPerSec, l.scansPerSec)} → ${verdict(n.scansPerSec / l.scansPerSec, 1)}`,
  ]
  return { lines, goals }
}

export default {
  id: 'READS',
  aliases: ['W2', 'W5', 'READS'],
  title: 'W2 / W5 — hot point reads and range scans',
  cell,
  run,
  render,
}
