// One participant process of WP (workloads/wp.js): several processes open one directory at once.
//   node wp-child.js <job> <store> <dir> <clients> <durationMs> <warmupMs> <index> <processes> [<options>]
// <store> is kestrel-native, kestrel-ts or lmdb (WPG: kestrel-native-pg, kestrel-ts-pg), opened
// through benchmark/contestants; <index> is this process's place among <processes>; <options>,
// JSON, are the store's open options (WPG: { postgres }). Jobs:
//   w1           W1's clients: commit one 256-byte record, await its acknowledgement, repeat;
//                process i writes only keys ≡ i (mod processes), so processes never touch one key
//   w3           W3's clients: read two zipfian keys, write both (the parent loaded the keys)
//   tail-writer  one record every ~2 ms under one key, value = its sequence number (1, 2, …);
//                the wall time at which each commit's promise resolved
//   tail-reader  polls get() of that key, yielding with setImmediate between polls; the wall
//                time at which each sequence number was first visible (a jump from 5 to 7 makes
//                6 visible at the same moment), until the window's end plus a grace period
// Prints READY once open, waits for "GO <wall ms>" on stdin and starts at that wall time, so the
// processes' windows line up; runs the warm-up and the duration as W1 does, closes, and prints
// one JSON line (its counts, latencies and peak RSS), or { error, code, message } when anything
// failed. A PostgreSQL replica's result also has `pg`: its batches timed from outside (lib/pg.js).
// Wall times are performance.timeOrigin + performance.now(), comparable between processes.
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { openStore } from '../contestants/index.js'
import { KEYS as W1_KEYS, VALUE_BYTES } from '../workloads/w1.js'
import { KEYS as W3_KEYS, THETA, rmwClients, zipf } from '../workloads/w3.js'

const TAIL_KEY = 'tail'
const TAIL_INTERVAL_MS = 2
/** How long the tailing reader keeps polling after the writer's window closed. */
const TAIL_GRACE_MS = 250

const [job, storeName, dir, clientsArg, durationArg, warmupArg, indexArg, processesArg, optionsArg] = process.argv.slice(2)
const storeOptions = optionsArg ? JSON.parse(optionsArg) : {}
const clients = Number(clientsArg)
const durationMs = Number(durationArg)
const warmupMs = Number(warmupArg)
const index = Number(indexArg)
const processes = Number(processesArg)
const wallNow = () => performance.timeOrigin + performance.now()
// Latencies go to the parent in full (it takes percentiles over every process): µs precision.
const micros = (ms) => Math.round(ms * 1000) / 1000

/** Resolves with the start wall time of the parent's "GO <ms>" line; exits if stdin closes first. */
function startSignal() {
  const lines = createInterface({ input: process.stdin })
  return new Promise((resolve) => {
    let started = false
    lines.on('line', (line) => {
      if (!line.startsWith('GO ')) return
      started = true
      resolve(Number(line.slice(3)))
    })
    // The parent died (or gave up) before the start: nothing to run.
    lines.on('close', () => started || process.exit(1))
  })
}

async function w1(store, t0) {
  const value = new Uint8Array(VALUE_BYTES).map((_, i) => (i * 131) & 0xff)
  let next = 0
  const latenciesMs = []
  const recordFrom = t0 + warmupMs
  const stopAt = recordFrom + durationMs
  let measuredFrom = 0
  const client = async () => {
    // Bounded by the deadline.
    while (performance.now() < stopAt) {
      const key = `k${String((next++ * processes + index) % W1_KEYS).padStart(6, '0')}`
      const start = performance.now()
      await store.commitOne(key, value)
      const end = performance.now()
      if (start >= recordFrom) {
        if (measuredFrom === 0) measuredFrom = start
        latenciesMs.push(micros(end - start))
      }
    }
  }
  await Promise.all(Array.from({ length: clients }, client))
  const elapsedMs = performance.now() - (measuredFrom || t0)
  return { commits: latenciesMs.length, elapsedMs, latenciesMs }
}

async function w3(store, t0) {
  const recordFrom = t0 + warmupMs
  // Process 0 draws W3's own sequence; the others their own, so they do not move in lockstep.
  const r = await rmwClients(store, zipf(W3_KEYS, THETA, 42 + 7919 * index), clients, recordFrom, recordFrom + durationMs)
  return { commits: r.latenciesMs.length, attempts: r.attempts, elapsedMs: r.elapsedMs, latenciesMs: r.latenciesMs.map(micros) }
}

async function tailWriter(store, t0) {
  const recordFrom = t0 + warmupMs
  const stopAt = recordFrom + durationMs
  const ackedAt = []
  let measuredFromSeq = 0
  let due = performance.now()
  // Bounded by the deadline.
  while (performance.now() < stopAt) {
    const seq = ackedAt.length + 1
    if (measuredFromSeq === 0 && performance.now() >= recordFrom) measuredFromSeq = seq
    await store.commitOne(TAIL_KEY, seq)
    ackedAt.push(wallNow())
    due += TAIL_INTERVAL_MS
    const wait = due - performance.now()
    if (wait > 0) await sleep(wait)
    // Behind (a slow commit): the next one goes at once, without a burst to catch up.
    else due = performance.now()
  }
  return { commits: ackedAt.length, intervalMs: TAIL_INTERVAL_MS, measuredFromSeq, ackedAt }
}

async function tailReader(store, t0) {
  const until = t0 + warmupMs + durationMs + TAIL_GRACE_MS
  const seenAt = []
  let polls = 0
  // Bounded by the deadline.
  while (performance.now() < until) {
    const v = store.get(TAIL_KEY)
    polls++
    if (typeof v === 'number' && v > seenAt.length) {
      const t = wallNow()
      while (seenAt.length < v) seenAt.push(t)
    }
    await new Promise(setImmediate)
  }
  return { polls, seenAt }
}

const JOBS = { w1, w3, 'tail-writer': tailWriter, 'tail-reader': tailReader }

async function main() {
  const run = JOBS[job]
  if (!run) throw new Error(`unknown job ${job}`)
  const go = startSignal()
  // Before the store opens: the probe wraps the pg client the replica is about to use.
  const probe = storeOptions.postgres ? (await import('./pg.js')).commitProbe() : undefined
  const store = await openStore(storeName, dir, storeOptions)
  process.stdout.write('READY\n')
  const startWall = await go
  // The start as a performance.now() time; every process waits for the same wall time.
  const t0 = startWall - performance.timeOrigin
  const wait = t0 - performance.now()
  if (wait > 0) await sleep(wait)
  const start = Math.max(t0, performance.now())
  const result = await run(store, start)
  await store.close()
  const pg = probe?.summary(start + warmupMs, start + warmupMs + durationMs)
  return { job, store: storeName, index, clients, ...result, ...(pg ? { pg } : {}), peakRssBytes: process.resourceUsage().maxRSS * 1024 }
}

let out
try {
  out = await main()
} catch (err) {
  const message = String(err.message).split('\n')[0]
  out = { error: `${err.code ?? err.name}: ${message}`, code: err.code ?? err.name, message }
}
// Exit explicitly: stdin (the start signal) and a store's handles would keep the process alive.
process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(out.error ? 1 : 0))
