// Per-operation micro benchmarks of both engines with tinybench (`npm run bench:micro`, or
// `node benchmark/micro.js [--time ms]`): the pieces of a commit's and a read's JavaScript work, to
// set beside the whole-process workloads of run.js (see PROFILE.md). Each task runs for --time ms
// (default 500) after a warm-up; the table gives mean ns per operation, ops/s, and native / ts
// where a task touches an engine. Writes results/micro.json. Commits use durability 'none' here:
// the fdatasync is the disk's, measured by limits/, and would drown the JavaScript work.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Bench } from 'tinybench'

const here = dirname(fileURLToPath(import.meta.url))
const dist = (p) => import(join(here, '..', 'dist', p))
const { open } = await dist('index.js')
const { encodeKey } = await dist('codec/key.js')
const { encodeValue, decodeValue } = await dist('codec/value.js')
const { encodeCommit, OP_PUT } = await dist('format/payload.js')

const timeArg = process.argv.indexOf('--time')
const TIME_MS = timeArg > 0 ? Number(process.argv[timeArg + 1]) : 500
const RECORDS = 10_000
const VALUE = { id: 12345, name: 'a record of about 256 bytes', tags: ['x', 'y', 'z'], body: 'b'.repeat(180) }
const key = (i) => `k${String(i).padStart(6, '0')}`

/** Codec and payload tasks: no engine. */
function codecTasks(bench) {
  const k = encodeKey(key(4242))
  const v = encodeValue(VALUE)
  bench.add('encodeKey (string key)', () => encodeKey(key(4242)))
  bench.add('encodeValue (256-byte object)', () => encodeValue(VALUE))
  bench.add('decodeValue (256-byte object)', () => decodeValue(v))
  bench.add('encodeCommit (one put)', () => encodeCommit([{ kind: OP_PUT, collection: 'items', key: k, value: v }]))
}

/** Engine tasks on a database of RECORDS records; returns a close function. */
async function engineTasks(bench, engine) {
  const dir = mkdtempSync(join(tmpdir(), `kestrel-micro-${engine}-`))
  const db = await open(dir, { engine, durability: 'none' })
  const items = db.collection('items')
  await db.transaction((tx) => {
    for (let i = 0; i < RECORDS; i++) tx.put(items, key(i), VALUE)
  })
  await db.checkpoint()
  let n = 0
  bench.add(`${engine}: db.get (hot key)`, () => db.get(items, key(4242)))
  bench.add(`${engine}: snapshot get (hot key)`, () => {
    const s = db.snapshot()
    s.get(items, key(n++ % RECORDS))
    s.close()
  })
  bench.add(`${engine}: scan of 100 (one op = 100 records)`, () => {
    let c = 0
    for (const _ of db.scan(items, { gte: key(n++ % (RECORDS - 100)), limit: 100 })) c++
    if (c !== 100) throw new Error(`scan returned ${c}`)
  })
  bench.add(`${engine}: begin + put + rollback (no commit)`, () => {
    const tx = db.begin()
    tx.put(items, key(n++ % RECORDS), VALUE)
    tx.rollback()
  })
  bench.add(`${engine}: one-record commit, awaited (durability none)`, async () => {
    const tx = db.begin()
    tx.put(items, key(n++ % RECORDS), VALUE)
    await tx.commit()
  })
  bench.add(`${engine}: 64 one-record commits in one turn, all awaited (per batch of 64)`, async () => {
    const all = []
    for (let i = 0; i < 64; i++) {
      const tx = db.begin()
      tx.put(items, key(n++ % RECORDS), VALUE)
      all.push(tx.commit())
    }
    await Promise.all(all)
  })
  return async () => {
    await db.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

const bench = new Bench({ time: TIME_MS, warmupTime: Math.min(200, TIME_MS) })
codecTasks(bench)
const closers = [await engineTasks(bench, 'native'), await engineTasks(bench, 'ts')]
await bench.run()
for (const close of closers) await close()

const rows = bench.tasks.map((t) => {
  const r = t.result
  const meanNs = r.latency.mean * 1e6
  return { task: t.name, meanNs, opsPerSec: 1e9 / meanNs, samples: r.latency.samplesCount ?? r.latency.samples?.length }
})
const byName = new Map(rows.map((r) => [r.task, r]))
const fmt = (x, d = 0) => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })
const lines = ['| task | mean ns/op | ops/s | native / ts |', '| --- | ---: | ---: | ---: |']
for (const r of rows) {
  let ratio = ''
  if (r.task.startsWith('native: ')) {
    const ts = byName.get(`ts: ${r.task.slice('native: '.length)}`)
    if (ts) ratio = `${fmt(ts.meanNs / r.meanNs, 2)}×`
  }
  lines.push(`| ${r.task} | ${fmt(r.meanNs)} | ${fmt(r.opsPerSec)} | ${ratio} |`)
}
console.log(lines.join('\n'))
const out = join(here, 'results', 'micro.json')
writeFileSync(out, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, timeMs: TIME_MS, rows }, null, 2)}\n`)
console.log(`\nwrote ${out}`)
