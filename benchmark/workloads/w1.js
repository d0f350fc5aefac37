// W1: durable single-record commits from C concurrent async clients (keys k000000…, 256-byte
// values). Each client loops: one commit, await its acknowledgement, record the latency.
import { openStore } from '../contestants/stores.js'
import { summarize } from '../lib/stats.js'

const VALUE_BYTES = 256
const KEYS = 1_000_000

export async function runW1({ contestant, dir, concurrency, durationMs, warmupMs }) {
  const store = await openStore(contestant, dir)
  const value = new Uint8Array(VALUE_BYTES).map((_, i) => (i * 131) & 0xff)
  let next = 0
  const latenciesMs = []
  const t0 = performance.now()
  // Time-based, not timer-based: a synchronous peer never yields to the timer queue.
  const recordFrom = t0 + warmupMs
  const stopAt = recordFrom + durationMs
  let measuredFrom = 0
  const client = async () => {
    // Bounded by the deadline.
    while (performance.now() < stopAt) {
      const key = `k${String(next++ % KEYS).padStart(6, '0')}`
      const start = performance.now()
      await store.commitOne(key, value)
      const end = performance.now()
      if (start >= recordFrom) {
        if (measuredFrom === 0) measuredFrom = start
        latenciesMs.push(end - start)
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, client))
  const elapsedMs = performance.now() - (measuredFrom || t0)
  await store.close()
  return summarize(latenciesMs, elapsedMs)
}
