// W2 (hot point reads, random keys) and W5 (range scans of 100 consecutive records) over N
// records with 256-byte values, after an untimed bulk load. Reads go through one read view.
import { openStore } from '../contestants/stores.js'

const key = (i) => `k${String(i).padStart(7, '0')}`

export async function runReads({ contestant, dir, records, durationMs }) {
  const store = await openStore(contestant, dir)
  const pad = 'v'.repeat(240)
  const entries = Array.from({ length: records }, (_, i) => [key(i), { i, pad }])
  await store.load(entries)
  entries.length = 0
  const reader = store.reader()
  let x = 12345
  const rand = () => ((x = (x * 1103515245 + 12345) & 0x7fffffff) % records)
  // Warm up, then measure each phase for durationMs.
  for (let i = 0; i < 20_000; i++) reader.get(key(rand()))
  let reads = 0
  let t0 = performance.now()
  let deadline = t0 + durationMs
  while (performance.now() < deadline) {
    for (let i = 0; i < 1000; i++) {
      if (reader.get(key(rand())) === undefined) throw new Error('missing record')
    }
    reads += 1000
  }
  const readsPerSec = reads / ((performance.now() - t0) / 1000)
  let scans = 0
  t0 = performance.now()
  deadline = t0 + durationMs
  while (performance.now() < deadline) {
    for (let i = 0; i < 50; i++) {
      if (reader.scan100(key(rand() % (records - 100))) !== 100) throw new Error('short scan')
    }
    scans += 50
  }
  const scansPerSec = scans / ((performance.now() - t0) / 1000)
  reader.close()
  await store.close()
  return { readsPerSec, scansPerSec }
}
