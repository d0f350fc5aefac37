// WP: several processes on one directory. kestreldb lets many processes open one directory at
// once, each a participant: commits from all of them go to one log under a cross-process write
// lock. The cell process prepares the directory (opens it once, loads W3's keys, closes), then
// spawns P participant processes (lib/wp-child.js) that open it, wait for one start signal, run
// their share of the clients for the cell's warm-up and duration, and print their counts; the
// cell sums them. Measured:
//   - W1 (durable single-record commits, 256-byte values) with C = 64 clients in all, spread
//     over P = 1, 2, 4 processes; kestrel-mixed alternates native and ts processes (at P = 1 it
//     is kestrel-native). Also C = 1 with P = 1, next to W1's own C = 1 cell run in this run.
//   - W3 (read two zipfian keys, write both) with C = 64 in all over P = 1, 2, 4.
//   - Tailing lag: process A commits one record every ~2 ms and notes when each commit's promise
//     resolved; process B polls get() and notes when each record first became visible.
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { openStore } from '../contestants/index.js'
import { percentile } from '../lib/stats.js'
import { fmt, ratio, table, unavailableRow, verdict } from '../lib/report.js'
import w1, { VALUE_BYTES } from './w1.js'
import { KEYS as W3_KEYS } from './w3.js'

const CHILD = join(dirname(fileURLToPath(import.meta.url)), '..', 'lib', 'wp-child.js')
// Exported with the machinery below for WPG (workloads/wpg.js), the same cells over PostgreSQL.
export const CLIENTS = 64
export const PROCESSES = [1, 2, 4]
const W1_CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'kestrel-mixed', 'lmdb']
const W3_CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'lmdb']
const C1_CONTESTANTS = ['kestrel-native', 'kestrel-ts']
// Writer + reader; lmdb's pair is a reference, not a goal.
const TAIL_CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'kestrel-mixed', 'lmdb']
const TAIL_GOAL_MS = 2
const SCALING_GOAL = 0.8
/** How long the participants may take to open before the cell gives up. */
export const OPEN_TIMEOUT_MS = 60_000

// The cell's one numeric parameter carries the part, the process count and the client count.
export const MODE = { w1: 1, w1Own: 2, w3: 3, tail: 4 }
export const encode = (mode, processes, clients) => mode * 100_000 + processes * 1000 + clients
export const decode = (param) => ({ mode: Math.floor(param / 100_000), processes: Math.floor(param / 1000) % 100, clients: param % 1000 })

/** The store process i of P runs: kestrel-mixed alternates native (even) and ts (odd). */
const storeFor = (contestant, i) => (contestant === 'kestrel-mixed' ? (i % 2 === 0 ? 'kestrel-native' : 'kestrel-ts') : contestant)
const engineOf = (store) => (store === 'lmdb' ? 'lmdb' : store.replace('kestrel-', ''))
const pairName = (contestant) => `${engineOf(storeFor(contestant, 0))} + ${engineOf(storeFor(contestant, 1))}`

/** One participant process: `ready` once it has opened the store, `result` its JSON line. */
function participant(args, label) {
  const child = spawn(process.execPath, [CHILD, ...args.map(String)], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000)
  })
  const settle = {}
  const ready = new Promise((resolve, reject) => Object.assign(settle, { ready: resolve, readyFail: reject }))
  const result = new Promise((resolve, reject) => Object.assign(settle, { result: resolve, resultFail: reject }))
  // Both may be rejected before anyone awaits them.
  ready.catch(() => {})
  result.catch(() => {})
  const fail = (message, code) => {
    const err = new Error(`${label}: ${message}`)
    err.code = code ?? 'Error'
    settle.readyFail(err)
    settle.resultFail(err)
  }
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line === 'READY') return settle.ready()
    if (!line.startsWith('{')) return
    const r = JSON.parse(line)
    // The code leads the cell's error line (cell.js): "KESTREL_LOCKED: process 2 of 2 (…): …".
    if (r.error) fail(r.message ?? r.error, r.code)
    else settle.result(r)
  })
  // 'close': after its output has been read, so a result line is never taken for a silent exit.
  child.on('close', (code, signal) => {
    const why = stderr.trim().split('\n').filter(Boolean).pop() ?? ''
    fail(`exited without a result (${signal ? `signal ${signal}` : `exit ${code}`})${why ? `: ${why}` : ''}`)
  })
  child.on('error', (err) => fail(`could not run: ${err.message}`))
  return {
    ready,
    result,
    go: (wallMs) => child.stdin.write(`GO ${wallMs}\n`),
    kill: () => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'),
  }
}

function within(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${Math.round(ms / 1000)} s`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/**
 * Runs `jobs` ([{ job, store, clients, dir? }], one process each) on `dir` (or a job's own
 * directory) from one start signal, each store opened with `options` when given; their JSON
 * results in order, or throws the first failure (after killing the others).
 */
export async function runParticipants(jobs, { dir, durationMs, warmupMs, options }) {
  const extra = options ? [JSON.stringify(options)] : []
  const procs = jobs.map(({ job, store, clients, dir: own }, i) =>
    participant([job, store, own ?? dir, clients, durationMs, warmupMs, i, jobs.length, ...extra], `process ${i + 1} of ${jobs.length} (${store})`),
  )
  try {
    await within(Promise.all(procs.map((p) => p.ready)), OPEN_TIMEOUT_MS, 'opening the directory in every process')
    // A start a little ahead, the same wall time for all: each process waits for it.
    const startWall = performance.timeOrigin + performance.now() + 50
    for (const p of procs) p.go(startWall)
    return await within(Promise.all(procs.map((p) => p.result)), warmupMs + durationMs + 60_000, 'the run')
  } finally {
    for (const p of procs) p.kill()
  }
}

/** Child side: one contestant × one part × one process count. */
export async function cell({ contestant, dir, param, durationMs, warmupMs }) {
  const { mode, processes, clients } = decode(param)
  // W1's own cell, in this process: the reference for C = 1.
  if (mode === MODE.w1Own) return w1.cell({ contestant, dir, param: clients, durationMs, warmupMs })
  // The directory exists before the participants race to open it; W3's records are loaded here.
  const setup = await openStore(storeFor(contestant, 0), dir)
  if (mode === MODE.w3) await setup.load(Array.from({ length: W3_KEYS }, (_, i) => [`k${String(i).padStart(6, '0')}`, { n: 0 }]))
  await setup.close()
  const opts = { dir, durationMs, warmupMs }
  if (mode === MODE.tail) {
    const [writer, reader] = await runParticipants(
      [
        { job: 'tail-writer', store: storeFor(contestant, 0), clients: 1 },
        { job: 'tail-reader', store: storeFor(contestant, 1), clients: 1 },
      ],
      opts,
    )
    return tailSummary(writer, reader)
  }
  if (clients % processes !== 0) throw new Error(`${clients} clients do not split evenly over ${processes} processes`)
  const job = mode === MODE.w3 ? 'w3' : 'w1'
  const jobs = Array.from({ length: processes }, (_, i) => ({ job, store: storeFor(contestant, i), clients: clients / processes }))
  return combine(await runParticipants(jobs, opts), { processes, clients, rmw: mode === MODE.w3 })
}

/** One cell's figures from its processes' results: summed rates, percentiles over all commits. */
export function combine(parts, { processes, clients, rmw }) {
  const sorted = Float64Array.from(parts.flatMap((r) => r.latenciesMs)).sort()
  const commits = parts.reduce((n, r) => n + r.commits, 0)
  const attempts = parts.reduce((n, r) => n + (r.attempts ?? 0), 0)
  return {
    processes,
    clients,
    commits,
    // Each process's rate over its own window (the windows start at one wall time), summed.
    commitsPerSec: parts.reduce((n, r) => n + r.commits / (r.elapsedMs / 1000), 0),
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    ...(rmw ? { retryRate: commits > 0 ? (attempts - commits) / commits : 0 } : {}),
    perProcess: parts.map((r) => ({ store: r.store, clients: r.clients, commitsPerSec: r.commits / (r.elapsedMs / 1000), peakRssBytes: r.peakRssBytes })),
    participantPeakRssBytes: Math.max(...parts.map((r) => r.peakRssBytes)),
  }
}

/** Lag per record measured after the warm-up: seen by the reader − acknowledged to the writer. */
export function tailSummary(writer, reader) {
  const lags = []
  let missed = 0
  const from = writer.measuredFromSeq || writer.ackedAt.length + 1
  for (let seq = from; seq <= writer.ackedAt.length; seq++) {
    const seen = reader.seenAt[seq - 1]
    if (seen === undefined) missed++
    else lags.push(seen - writer.ackedAt[seq - 1])
  }
  const sorted = Float64Array.from(lags).sort()
  const measured = writer.ackedAt.length - from + 1
  return {
    writer: writer.store,
    reader: reader.store,
    records: lags.length,
    missed,
    targetIntervalMs: writer.intervalMs,
    // Between acknowledgements over the measured records: the interval the writer kept.
    meanIntervalMs: measured > 1 ? (writer.ackedAt[writer.ackedAt.length - 1] - writer.ackedAt[from - 1]) / (measured - 1) : NaN,
    minMs: sorted.length > 0 ? sorted[0] : NaN,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    maxMs: sorted.length > 0 ? sorted[sorted.length - 1] : NaN,
    polls: reader.polls,
    participantPeakRssBytes: Math.max(writer.peakRssBytes, reader.peakRssBytes),
  }
}

export const scaleLine = (x) =>
  `${fmt(x.commitsPerSec).padStart(8)} commits/s  p50 ${fmt(x.p50Ms, 2)} ms  p99 ${fmt(x.p99Ms, 2)} ms${x.retryRate === undefined ? '' : `  retries/commit ${fmt(x.retryRate, 2)}`}  per process ${x.perProcess.map((p) => fmt(p.commitsPerSec)).join(' + ')}`

/** Parent side: every part × contestant × process count, each cell in its own process. */
export async function run(ctx) {
  const timeoutMs = ctx.warmupMs + ctx.durationMs + OPEN_TIMEOUT_MS + 90_000
  const w1Results = {}
  const w3Results = {}
  for (const p of PROCESSES) {
    w1Results[p] = {}
    for (const name of W1_CONTESTANTS) {
      // One process of kestrel-mixed is one native process: the same cell as kestrel-native.
      const r =
        name === 'kestrel-mixed' && p === 1
          ? { ...w1Results[1]['kestrel-native'], sameAs: 'kestrel-native' }
          : ctx.cell(name, encode(MODE.w1, p, CLIENTS), { timeoutMs })
      w1Results[p][name] = r
      ctx.log(`W1 P=${p}`, name, r, (x) => (x.sameAs ? `= ${x.sameAs}` : scaleLine(x)))
    }
  }
  const c1 = {}
  for (const name of C1_CONTESTANTS) {
    const shared = ctx.cell(name, encode(MODE.w1, 1, 1), { timeoutMs })
    ctx.log('W1 C=1', name, shared, scaleLine)
    const own = ctx.cell(name, encode(MODE.w1Own, 1, 1), { timeoutMs })
    ctx.log(
      'W1 own',
      name,
      own,
      (x) => `${fmt(x.commitsPerSec).padStart(8)} commits/s  p50 ${fmt(x.p50Ms, 2)} ms  p99 ${fmt(x.p99Ms, 2)} ms  (W1's cell, in the cell process)`,
    )
    c1[name] = { shared, own }
  }
  for (const p of PROCESSES) {
    w3Results[p] = {}
    for (const name of W3_CONTESTANTS) {
      const r = ctx.cell(name, encode(MODE.w3, p, CLIENTS), { timeoutMs })
      w3Results[p][name] = r
      ctx.log(`W3 P=${p}`, name, r, scaleLine)
    }
  }
  const tail = {}
  for (const name of TAIL_CONTESTANTS) {
    const r = ctx.cell(name, encode(MODE.tail, 2, 1), { timeoutMs })
    tail[name] = r
    ctx.log(
      'tail',
      pairName(name),
      r,
      (x) =>
        `lag p50 ${fmt(x.p50Ms, 3)} ms  p99 ${fmt(x.p99Ms, 3)} ms  max ${fmt(x.maxMs, 3)} ms  min ${fmt(x.minMs, 3)} ms  over ${fmt(x.records)} records (${fmt(x.missed)} not seen), one per ${fmt(x.meanIntervalMs, 2)} ms`,
    )
  }
  return {
    valueBytes: VALUE_BYTES,
    clients: CLIENTS,
    processes: PROCESSES,
    w1Contestants: W1_CONTESTANTS,
    w3Contestants: W3_CONTESTANTS,
    c1Contestants: C1_CONTESTANTS,
    tailContestants: TAIL_CONTESTANTS,
    w3Keys: W3_KEYS,
    tailGoalMs: TAIL_GOAL_MS,
    w1: w1Results,
    c1,
    w3: w3Results,
    tail,
  }
}

export const atMost = (value, threshold) => (Number.isFinite(value) ? (value <= threshold ? '**met**' : '**not met**') : '**not measured**')
export const rate = (r) => (r && !r.error ? r.commitsPerSec : NaN)
export const cellError = (r) => (r ? r.error : 'not run')

/**
 * Commits/s by process count with the ratios, then p50 / p99 by process count. A row whose cells
 * all failed says why once; single failed cells show — and are listed under the table.
 */
function scalingTables(results, contestants, processes, { retries = false } = {}) {
  const base = (name) => rate(results[1]?.[name])
  const lmdbAt = (p) => rate(results[p]?.lmdb)
  const headers = [
    'contestant',
    ...processes.map((p) => `P = ${p}`),
    ...processes.filter((p) => p > 1).map((p) => `P = ${p} / P = 1`),
    ...processes.map((p) => `vs lmdb, P = ${p}`),
  ]
  const rows = []
  const latencyRows = []
  const notes = []
  for (const name of contestants) {
    const rs = processes.map((p) => results[p]?.[name])
    const errors = rs.map(cellError)
    if (errors.every(Boolean)) {
      rows.push(unavailableRow(name, errors[0], headers.length))
      latencyRows.push(unavailableRow(name, errors[0], processes.length + 1))
      continue
    }
    processes.forEach((p, i) => {
      if (errors[i]) notes.push(`${name}, P = ${p}: not available: ${errors[i]}`)
    })
    rows.push([
      name,
      ...rs.map((r) => (r.sameAs ? `${fmt(rate(r))} (= ${r.sameAs})` : fmt(rate(r)))),
      ...processes.filter((p) => p > 1).map((p) => ratio(rate(results[p][name]), base(name))),
      ...processes.map((p) => (name === 'lmdb' ? '1.00×' : ratio(rate(results[p][name]), lmdbAt(p)))),
    ])
    latencyRows.push([name, ...rs.map((r) => (r.error ? '—' : `${fmt(r.p50Ms, 2)} / ${fmt(r.p99Ms, 2)}${retries ? ` · ${fmt(r.retryRate, 2)}` : ''}`))])
  }
  return [
    ...table(headers, `l${'r'.repeat(headers.length - 1)}`, rows),
    '',
    ...(notes.length > 0 ? [...notes.map((n) => `- ${n.replaceAll('|', '\\|')}`), ''] : []),
    `Ack latency, p50 / p99 ms over every process's commits${retries ? ' · retries per commit' : ''}:`,
    '',
    ...table(['contestant', ...processes.map((p) => `P = ${p}`)], `l${'r'.repeat(processes.length)}`, latencyRows),
    '',
  ]
}

/** Markdown: W1 and W3 scaling tables, C = 1, tailing lag; the goals of the multi-process issue. */
export function render(raw) {
  const lines = [
    `Several processes open one directory at once: a cell spawns P participant processes (\`lib/wp-child.js\`) that open the same directory, start on one signal, run their share of C = ${raw.clients} clients in all for the cell's duration and report their counts; commits/s is the sum over the processes (each over its own window, the windows starting at one wall time). kestreldb's participants commit to one log under a cross-process write lock; lmdb's share one environment. \`kestrel-mixed\` alternates native and ts processes (one process of it is kestrel-native). Ratios: against one process of the same contestant, and against lmdb with the same number of processes.`,
    '',
    `### W1 — durable single-record commits, C = ${raw.clients} in all`,
    '',
    `${raw.valueBytes}-byte values, each client committing one record and awaiting it; process i of P writes only keys ≡ i (mod P). Commits/s:`,
    '',
    ...scalingTables(raw.w1, raw.w1Contestants, raw.processes),
    '### W1, C = 1, one process',
    '',
    "One client in one participant process next to W1's own C = 1 cell (the store opened in the cell process itself), both in this run.",
    '',
  ]
  const c1Headers = ['contestant', 'commits/s (WP, 1 process)', 'p50 / p99 ms', "W1's own cell commits/s", 'p50 / p99 ms', 'WP / W1']
  lines.push(
    ...table(
      c1Headers,
      'lrrrrr',
      raw.c1Contestants.map((name) => {
        const { shared, own } = raw.c1[name]
        if (shared.error && own.error) return unavailableRow(name, shared.error, c1Headers.length)
        const cellOf = (r) =>
          r.error ? [`not available: ${String(r.error).replaceAll('|', '\\|')}`, ''] : [fmt(r.commitsPerSec), `${fmt(r.p50Ms, 2)} / ${fmt(r.p99Ms, 2)}`]
        return [name, ...cellOf(shared), ...cellOf(own), ratio(rate(shared), rate(own))]
      }),
    ),
    '',
    `### W3 — read-modify-write transactions, C = ${raw.clients} in all`,
    '',
    `Each transaction reads two zipfian keys (over ${fmt(raw.w3Keys)} records, loaded before the processes start) and writes both; kestreldb retries on conflict, now also against the other processes' commits. Commits/s:`,
    '',
    ...scalingTables(raw.w3, raw.w3Contestants, raw.processes, { retries: true }),
    '### Tailing lag',
    '',
    `Two processes on one directory: A commits one record every ~${raw.tail[raw.tailContestants[0]]?.targetIntervalMs ?? 2} ms (value = a sequence number) and notes the wall time at which each commit's promise resolved; B polls \`get()\` between event-loop turns (\`setImmediate\`) and notes the wall time at which each sequence number first became visible. Lag = seen − acknowledged, per record after the warm-up; it can be slightly negative (B may see a record before A's promise callback runs). lmdb is a reference only: lmdb-js's default overlapping sync lets readers see a commit before its sync (and so its acknowledgement) is done, hence its negative lags.`,
    '',
  )
  const tailHeaders = ['writer + reader', 'records', 'not seen', 'ms between commits', 'lag p50 ms', 'p99 ms', 'max ms', 'min ms', `p99 ≤ ${raw.tailGoalMs} ms`]
  lines.push(
    ...table(
      tailHeaders,
      'lrrrrrrrl',
      raw.tailContestants.map((name) => {
        const r = raw.tail[name]
        const label = `${pairName(name)}${name === 'lmdb' ? '' : ' (kestreldb)'}`
        if (r.error) return unavailableRow(label, r.error, tailHeaders.length)
        return [
          label,
          fmt(r.records),
          fmt(r.missed),
          fmt(r.meanIntervalMs, 2),
          fmt(r.p50Ms, 3),
          fmt(r.p99Ms, 3),
          fmt(r.maxMs, 3),
          fmt(r.minMs, 3),
          name === 'lmdb' ? '—' : atMost(r.p99Ms, raw.tailGoalMs).replaceAll('**', ''),
        ]
      }),
    ),
    '',
  )
  const kestrel = raw.w1Contestants.filter((n) => n !== 'lmdb')
  const w1At = (p, name) => rate(raw.w1[p]?.[name])
  // kestrel-mixed's one-process figure is kestrel-native's.
  const oneProcess = (name) => w1At(1, name === 'kestrel-mixed' ? 'kestrel-native' : name)
  const tailNames = raw.tailContestants.filter((n) => n !== 'lmdb')
  const goals = [
    `- WP W1 C = ${raw.clients}, 2 processes: aggregate ≥ ${SCALING_GOAL}× one process — this run: ${kestrel.map((n) => `${n} ${ratio(w1At(2, n), oneProcess(n))} → ${verdict(w1At(2, n) / oneProcess(n), SCALING_GOAL)}`).join('; ')}`,
    `- WP W1 C = ${raw.clients}, 2 processes: kestreldb ≥ lmdb with 2 processes — this run: ${kestrel.map((n) => `${n} ${ratio(w1At(2, n), w1At(2, 'lmdb'))} → ${verdict(w1At(2, n) / w1At(2, 'lmdb'), 1)}`).join('; ')}`,
    `- WP tailing lag p99 ≤ ${raw.tailGoalMs} ms — this run: ${tailNames.map((n) => `${pairName(n)} ${fmt(raw.tail[n]?.p99Ms, 3)} ms → ${atMost(raw.tail[n]?.error ? NaN : raw.tail[n]?.p99Ms, raw.tailGoalMs)}`).join('; ')}`,
  ]
  return { lines, goals }
}

export default {
  id: 'WP',
  aliases: ['WP'],
  title: 'WP — many processes, one directory',
  cell,
  run,
  render,
}
