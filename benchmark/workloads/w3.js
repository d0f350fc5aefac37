// W3: read-modify-write transactions (read 2 keys, write both) from C concurrent clients over
// zipfian-distributed keys; durable commits. Reports commits/s and the retry rate.
import { openStore } from '../contestants/stores.js'
import { summarize } from '../lib/stats.js'

const KEYS = 10_000
const THETA = 0.99

/** A zipfian sampler over [0, n) (Gray et al.'s method), deterministic. */
function zipf(n, theta, seed) {
  let x = seed
  const rand = () => ((x = (x * 1103515245 + 12345) & 0x7fffffff) / 0x80000000)
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

export async function runW3({ contestant, dir, concurrency, durationMs, warmupMs }) {
  const store = await openStore(contestant, dir)
  const key = (i) => `k${String(i).padStart(6, '0')}`
  await store.load(Array.from({ length: KEYS }, (_, i) => [key(i), { n: 0 }]))
  const next = zipf(KEYS, THETA, 42)
  const latenciesMs = []
  let commits = 0
  const t0 = performance.now()
  const recordFrom = t0 + warmupMs
  const stopAt = recordFrom + durationMs
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
      if (start >= recordFrom) {
        latenciesMs.push(performance.now() - start)
        commits++
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, client))
  const elapsedMs = performance.now() - recordFrom
  const attempts = store.attempts - Math.max(0, attemptsAtStart)
  await store.close()
  return { ...summarize(latenciesMs, elapsedMs), retryRate: commits > 0 ? (attempts - commits) / commits : 0 }
}
