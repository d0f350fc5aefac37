// WPG: WP's multi-process cells with the log in PostgreSQL instead of a shared directory. Each
// participant process opens a replica directory of its own (<cell dir>/p<i>) of one database:
// the cell's fresh schema (kb_<hash of the cell dir>), made by a setup replica in the cell process
// (which also loads W3's keys) and dropped when the cell ends. kestrel-native on one directory is
// the reference: WP's own cell, run again in this run. Measured:
//   - W1 (C = 64 in all) over P = 1, 2, 4: kestrel-native (directory), kestrel-native-pg,
//     kestrel-ts-pg, kestrel-mixed-pg (processes alternating native and ts replicas)
//   - W3 over P = 1, 2, 4: kestrel-native, kestrel-native-pg
//   - the tailing lag (WP's writer/reader pair): directory native + native, pg native + native,
//     pg native + ts
//   - per pg cell, its batches: log rows ÷ distinct batch ids over the rows no snapshot trimmed,
//     and each process's batches timed from outside (lib/pg.js: lock wait, lock held and its
//     parts), with the snapshots it published (the library's defaults: one per 10,000 commits)
//   - pg-protocol: the commit protocol's own statements (PgLog from dist/) on one connection, one
//     W1-sized commit per batch, no engine: what PostgreSQL and the round trips alone allow
import { randomUUID } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { openStore } from '../contestants/index.js'
import { PG_URL, dropSchema, headOf, logStats, pg, schemaFor, schemaGuard, withAdmin } from '../lib/pg.js'
import { percentile } from '../lib/stats.js'
import { fmt, ratio, table, unavailableRow } from '../lib/report.js'
import { VALUE_BYTES } from './w1.js'
import { KEYS as W3_KEYS } from './w3.js'
import {
  CLIENTS,
  MODE,
  OPEN_TIMEOUT_MS,
  PROCESSES,
  cellError,
  combine,
  decode,
  encode,
  rate,
  runParticipants,
  scaleLine,
  tailSummary,
  cell as wpCell,
} from './wp.js'

const DIRECTORY = 'kestrel-native'
const W1_CONTESTANTS = [DIRECTORY, 'kestrel-native-pg', 'kestrel-ts-pg', 'kestrel-mixed-pg']
const W3_CONTESTANTS = [DIRECTORY, 'kestrel-native-pg']
const TAIL_CONTESTANTS = [DIRECTORY, 'kestrel-native-pg', 'kestrel-mixed-pg']
const PROTOCOL = 'pg-protocol'
/** One W1 commit's payload when no pg W1 cell measured it (W1's record size, README). */
const DEFAULT_PAYLOAD_BYTES = 305
const RTT_PROBES = 200

/** The store process i of P runs: kestrel-mixed-pg alternates native (even) and ts (odd) replicas. */
const storeFor = (contestant, i) => (contestant === 'kestrel-mixed-pg' ? (i % 2 === 0 ? 'kestrel-native-pg' : 'kestrel-ts-pg') : contestant)
const engineOf = (store) => store.replace('kestrel-', '').replace('-pg', '')
const pairName = (contestant) => `${engineOf(storeFor(contestant, 0))} + ${engineOf(storeFor(contestant, 1))}`
const mediumOf = (contestant) => (contestant === DIRECTORY ? 'directory' : 'PostgreSQL')

/** Child side. kestrel-native is WP's cell; the others run on the cell's own schema, dropped after. */
export async function cell(opts) {
  if (opts.contestant === DIRECTORY) return wpCell(opts)
  const schema = schemaFor(opts.dir)
  try {
    if (opts.contestant === PROTOCOL) return await protocolFloor(schema, opts)
    return await pgCell(schema, opts)
  } finally {
    await dropSchema(schema)
  }
}

async function pgCell(schema, { contestant, dir, param, durationMs, warmupMs }) {
  const { mode, processes, clients } = decode(param)
  const options = { postgres: { connectionString: PG_URL, schema } }
  mkdirSync(dir, { recursive: true })
  // The setup replica makes the schema (and W3's records) before the participants open theirs.
  const setup = await openStore(storeFor(contestant, 0), join(dir, 'setup'), options)
  if (mode === MODE.w3) await setup.load(Array.from({ length: W3_KEYS }, (_, i) => [`k${String(i).padStart(6, '0')}`, { n: 0 }]))
  await setup.close()
  const setupHead = await headOf(schema)
  const run = (jobs) =>
    runParticipants(
      jobs.map((j, i) => ({ ...j, dir: join(dir, `p${i}`) })),
      { dir, durationMs, warmupMs, options },
    )
  if (mode === MODE.tail) {
    const [writer, reader] = await run([
      { job: 'tail-writer', store: storeFor(contestant, 0), clients: 1 },
      { job: 'tail-reader', store: storeFor(contestant, 1), clients: 1 },
    ])
    return tailSummary(writer, reader)
  }
  if (clients % processes !== 0) throw new Error(`${clients} clients do not split evenly over ${processes} processes`)
  const job = mode === MODE.w3 ? 'w3' : 'w1'
  const parts = await run(Array.from({ length: processes }, (_, i) => ({ job, store: storeFor(contestant, i), clients: clients / processes })))
  const log = await logStats(schema, setupHead)
  return { ...combine(parts, { processes, clients, rmw: mode === MODE.w3 }), pg: batchFigures(parts, log) }
}

/** A cell's batches: from the log table (rows left after trims, warm-up included) and the probes. */
function batchFigures(parts, log) {
  const probes = parts.map((r) => ({ store: r.store, ...r.pg }))
  const snapshots = probes.flatMap((p) => p.snapshots)
  return {
    log,
    commitsPerBatch: log.batchesKept > 0 ? log.rowsKept / log.batchesKept : NaN,
    snapshots: { count: snapshots.length, ms: snapshots.reduce((n, x) => n + x.ms, 0), bytes: snapshots.reduce((n, x) => n + x.bytes, 0) },
    batchesPerSec: probes.reduce((n, p) => n + p.batches / (p.windowMs / 1000), 0),
    // Σ hold times ÷ window: near 1 means some process held the head lock nearly all the time.
    lockBusy: probes.reduce((n, p) => n + p.heldSumMs / p.windowMs, 0),
    perProcess: probes,
  }
}

/** The commit protocol's statements alone, serially on one connection: the medium's own floor. */
async function protocolFloor(schema, { param: payloadBytes, durationMs, warmupMs }) {
  // Not a public entry point, but the statements replicas run, so the floor is exact.
  const { PgLog } = await import('../../dist/postgres/log.js')
  const pool = new (pg().Pool)({ connectionString: PG_URL, max: 1 })
  try {
    const log = new PgLog(schema)
    let { head } = await log.prepare(pool)
    const c = await pool.connect()
    try {
      const rtt = []
      for (let i = 0; i < RTT_PROBES; i++) {
        const s = performance.now()
        await c.query('SELECT 1')
        rtt.push(performance.now() - s)
      }
      const payload = new Uint8Array(payloadBytes).map((_, i) => (i * 131) & 0xff)
      const cycles = []
      const held = []
      const commits = []
      const recordFrom = performance.now() + warmupMs
      const stopAt = recordFrom + durationMs
      let measuredFrom = 0
      // Bounded by the deadline.
      while (performance.now() < stopAt) {
        const start = performance.now()
        const locked = await log.lockHead(c, head)
        const got = performance.now()
        await log.append(c, locked.head, randomUUID(), [payload])
        const sent = performance.now()
        await c.query('COMMIT')
        const end = performance.now()
        head = locked.head + 1
        if (start < recordFrom) continue
        if (measuredFrom === 0) measuredFrom = start
        cycles.push(end - start)
        held.push(end - got)
        commits.push(end - sent)
      }
      const p50 = (xs) => percentile(Float64Array.from(xs).sort(), 0.5)
      return {
        payloadBytes,
        batchesPerSec: cycles.length / ((performance.now() - measuredFrom) / 1000),
        rttP50Ms: p50(rtt),
        cycleP50Ms: p50(cycles),
        heldP50Ms: p50(held),
        commitP50Ms: p50(commits),
      }
    } finally {
      c.release()
    }
  } finally {
    await pool.end()
  }
}

async function serverInfo() {
  return withAdmin(async (c) => {
    const show = async (name) => (await c.query(`SHOW ${name}`)).rows[0][name]
    return {
      version: await show('server_version'),
      synchronousCommit: await show('synchronous_commit'),
      fsync: await show('fsync'),
      walSyncMethod: await show('wal_sync_method'),
    }
  })
}

const tailLine = (x) =>
  `lag p50 ${fmt(x.p50Ms, 3)} ms  p99 ${fmt(x.p99Ms, 3)} ms  max ${fmt(x.maxMs, 3)} ms  min ${fmt(x.minMs, 3)} ms  over ${fmt(x.records)} records (${fmt(x.missed)} not seen), one per ${fmt(x.meanIntervalMs, 2)} ms`
const batchLine = (x) =>
  x.pg ? `  | ${fmt(x.pg.batchesPerSec)} batches/s, ${fmt(x.pg.commitsPerBatch, 1)} commits/batch, lock busy ${fmt(100 * x.pg.lockBusy)}%` : ''

/** Parent side: every part × contestant × process count, each cell in its own process. */
export async function run(ctx) {
  const timeoutMs = ctx.warmupMs + ctx.durationMs + OPEN_TIMEOUT_MS + 90_000
  let server
  try {
    server = await serverInfo()
  } catch (err) {
    server = { error: `PostgreSQL at ${PG_URL} is unreachable: ${err.message}` }
    console.error(`warning: ${server.error}`)
  }
  const guard = await schemaGuard()
  const swept = []
  const cellOf = async (name, param) => {
    const r = ctx.cell(name, param, { timeoutMs })
    // A cell killed on timeout could not drop its schema.
    if (r.error && name !== DIRECTORY && !server.error) swept.push(...(await guard.sweep()))
    return r
  }
  const w1 = {}
  for (const p of PROCESSES) {
    w1[p] = {}
    for (const name of W1_CONTESTANTS) {
      // One process of kestrel-mixed-pg is one native replica: the same cell as kestrel-native-pg.
      const r =
        name === 'kestrel-mixed-pg' && p === 1
          ? { ...w1[1]['kestrel-native-pg'], sameAs: 'kestrel-native-pg' }
          : await cellOf(name, encode(MODE.w1, p, CLIENTS))
      w1[p][name] = r
      ctx.log(`W1 P=${p}`, name, r, (x) => (x.sameAs ? `= ${x.sameAs}` : `${scaleLine(x)}${batchLine(x)}`))
    }
  }
  const w3 = {}
  for (const p of PROCESSES) {
    w3[p] = {}
    for (const name of W3_CONTESTANTS) {
      const r = await cellOf(name, encode(MODE.w3, p, CLIENTS))
      w3[p][name] = r
      ctx.log(`W3 P=${p}`, name, r, (x) => `${scaleLine(x)}${batchLine(x)}`)
    }
  }
  const tail = {}
  for (const name of TAIL_CONTESTANTS) {
    const r = await cellOf(name, encode(MODE.tail, 2, 1))
    tail[name] = r
    ctx.log('tail', `${pairName(name)} ${name === DIRECTORY ? 'dir' : 'pg'}`, r, tailLine)
  }
  // The floor with the payload size W1's replicas wrote.
  const payloadBytes = Math.round(w1[1]['kestrel-native-pg']?.pg?.log.payloadBytes || DEFAULT_PAYLOAD_BYTES)
  const protocol = await cellOf(PROTOCOL, payloadBytes)
  ctx.log(
    'floor',
    PROTOCOL,
    protocol,
    (x) =>
      `${fmt(x.batchesPerSec)} batches/s of one ${fmt(x.payloadBytes)}-byte commit, cycle p50 ${fmt(x.cycleP50Ms, 2)} ms, lock held p50 ${fmt(x.heldP50Ms, 2)} ms (COMMIT ${fmt(x.commitP50Ms, 2)} ms), round trip p50 ${fmt(x.rttP50Ms, 3)} ms`,
  )
  // Every cell dropped its schema, or the sweep above did: anything left is reported.
  const leftover = server.error ? [] : await guard.sweep()
  if (leftover.length > 0) console.error(`warning: dropped schemas the cells left: ${leftover.join(', ')}`)
  return {
    valueBytes: VALUE_BYTES,
    clients: CLIENTS,
    processes: PROCESSES,
    w1Contestants: W1_CONTESTANTS,
    w3Contestants: W3_CONTESTANTS,
    tailContestants: TAIL_CONTESTANTS,
    w3Keys: W3_KEYS,
    server,
    w1,
    w3,
    tail,
    protocol,
    schemasSwept: [...swept, ...leftover],
  }
}

const esc = (s) => String(s).replaceAll('|', '\\|')
const isPg = (name) => name !== DIRECTORY

/** Commits/s by P with the scaling and pg ÷ directory ratios; latencies; per-process rates. */
function scalingTables(results, contestants, processes, { retries = false } = {}) {
  const at = (p, name) => rate(results[p]?.[name])
  const headers = [
    'contestant',
    'medium',
    ...processes.map((p) => `P = ${p}`),
    ...processes.filter((p) => p > 1).map((p) => `P = ${p} / P = 1`),
    ...processes.map((p) => `÷ directory, P = ${p}`),
  ]
  const rows = []
  const latencyRows = []
  const perProcessRows = []
  const notes = []
  for (const name of contestants) {
    const rs = processes.map((p) => results[p]?.[name])
    const errors = rs.map(cellError)
    if (errors.every(Boolean)) {
      rows.push(unavailableRow(name, errors[0], headers.length))
      continue
    }
    processes.forEach((p, i) => {
      if (errors[i]) notes.push(`${name}, P = ${p}: not available: ${errors[i]}`)
    })
    rows.push([
      name,
      mediumOf(name),
      ...rs.map((r) => (r.sameAs ? `${fmt(rate(r))} (= ${r.sameAs})` : fmt(rate(r)))),
      ...processes.filter((p) => p > 1).map((p) => ratio(at(p, name), at(1, name))),
      ...processes.map((p) => (isPg(name) ? ratio(at(p, name), at(p, DIRECTORY)) : '1.00×')),
    ])
    latencyRows.push([name, ...rs.map((r) => (r.error ? '—' : `${fmt(r.p50Ms, 2)} / ${fmt(r.p99Ms, 2)}${retries ? ` · ${fmt(r.retryRate, 2)}` : ''}`))])
    perProcessRows.push([name, ...rs.map((r) => (r.error ? '—' : r.perProcess.map((x) => fmt(x.commitsPerSec)).join(' + ')))])
  }
  const byP = (rowsOf) => table(['contestant', ...processes.map((p) => `P = ${p}`)], `l${'r'.repeat(processes.length)}`, rowsOf)
  return [
    ...table(headers, `ll${'r'.repeat(headers.length - 2)}`, rows),
    '',
    ...(notes.length > 0 ? [...notes.map((n) => `- ${esc(n)}`), ''] : []),
    `Ack latency, p50 / p99 ms over every process's commits${retries ? ' · retries per commit' : ''}:`,
    '',
    ...byP(latencyRows),
    '',
    'Commits/s of each process (process 1 first; kestrel-mixed-pg: native, ts, native, ts):',
    '',
    ...byP(perProcessRows),
    '',
  ]
}

/** The pg cells with their batch figures, in report order. */
function pgCells(raw) {
  const cells = []
  for (const [part, results, contestants] of [
    ['W1', raw.w1, raw.w1Contestants],
    ['W3', raw.w3, raw.w3Contestants],
  ]) {
    for (const name of contestants.filter(isPg)) {
      for (const p of raw.processes) {
        const r = results[p]?.[name]
        if (r && !r.error && !r.sameAs && r.pg) cells.push({ part, name, p, r })
      }
    }
  }
  return cells
}

function batchTables(raw) {
  const cells = pgCells(raw)
  const cellHeaders = [
    'cell',
    'commits/s',
    'batches/s',
    'commits per batch (log table)',
    'log rows kept / commits',
    'commits per batch (probes)',
    'head lock busy',
    'snapshots published (s, MB)',
  ]
  const cellRows = cells.map(({ part, name, p, r }) => {
    const probeCommits = r.pg.perProcess.reduce((n, x) => n + x.commits, 0)
    const probeBatches = r.pg.perProcess.reduce((n, x) => n + x.batches, 0)
    return [
      `${part} ${name}, P = ${p}`,
      fmt(r.commitsPerSec),
      fmt(r.pg.batchesPerSec),
      fmt(r.pg.commitsPerBatch, 1),
      `${fmt(r.pg.log.rowsKept)} / ${fmt(r.pg.log.commits)}`,
      fmt(probeBatches > 0 ? probeCommits / probeBatches : NaN, 1),
      `${fmt(100 * r.pg.lockBusy)}%`,
      r.pg.snapshots.count > 0 ? `${fmt(r.pg.snapshots.count)} (${fmt(r.pg.snapshots.ms / 1000, 2)} s, ${fmt(r.pg.snapshots.bytes / 2 ** 20, 1)} MB)` : '0',
    ]
  })
  const procHeaders = [
    'cell, process',
    'batches/s',
    'commits per batch',
    'lock wait ms',
    'lock held ms (mean / p50 / p99)',
    'of it: catch-up + checks',
    'INSERT',
    'COMMIT',
    'others’ rows per batch',
    'rolled back',
    'share of window holding the lock',
  ]
  const procRows = cells.flatMap(({ part, name, p, r }) =>
    r.pg.perProcess.map((x, i) => [
      `${part} ${name}, P = ${p}: ${i + 1} (${engineOf(x.store)})`,
      fmt(x.batches / (x.windowMs / 1000)),
      fmt(x.commitsPerBatch, 1),
      fmt(x.lockWaitMs.mean, 2),
      `${fmt(x.heldMs.mean, 2)} / ${fmt(x.heldMs.p50, 2)} / ${fmt(x.heldMs.p99, 2)}`,
      fmt(x.applyMs.mean, 2),
      fmt(x.insertMs.mean, 2),
      fmt(x.commitMs.mean, 2),
      fmt(x.foreignRows, 1),
      fmt(x.rolledBack),
      `${fmt((100 * x.heldSumMs) / x.windowMs)}%`,
    ]),
  )
  return [
    ...table(cellHeaders, `l${'r'.repeat(cellHeaders.length - 1)}`, cellRows),
    '',
    'Per process, its batches over the measured window (means unless stated; lock wait = the first round trip, `BEGIN; SELECT head … FOR UPDATE; SELECT` the log after this replica, including any wait for another holder; rolled back = batches whose every commit the re-check refused after catching up, W3 conflicts — they held the lock too):',
    '',
    ...table(procHeaders, `l${'r'.repeat(procHeaders.length - 1)}`, procRows),
    '',
  ]
}

/** The paragraph on what limits the medium, from this run's figures. */
function limitsParagraph(raw) {
  const [one, two, four] = [1, 2, 4].map((p) => raw.w1[p]?.['kestrel-native-pg'])
  const floor = raw.protocol
  if (!one?.pg || !two?.pg || !four?.pg || !floor || floor.error) return ['Not enough pg cells ran to say what limits the medium.', '']
  const x1 = one.pg.perProcess[0]
  const batches1 = x1.batches / (x1.windowMs / 1000)
  const cycle1 = 1000 / batches1
  const outside1 = cycle1 - x1.lockWaitMs.mean - x1.heldMs.mean
  // Means over a cell's processes, two decimals; "a / b" for P = 2 and P = 4.
  const both = (f, digits = 2) => [two, four].map((c) => fmt(c.pg.perProcess.reduce((n, x) => n + f(x), 0) / c.pg.perProcess.length, digits)).join(' / ')
  const snaps = [one, two, four].map((c) => c.pg.snapshots)
  const snapText = snaps.some((x) => x.count > 0)
    ? ` With the library's default of one snapshot per 10,000 commits, replicas published ${snaps.map((x) => fmt(x.count)).join(' / ')} snapshots in the windows of P = 1 / 2 / 4 (each a local backup uploaded in chunks in one PostgreSQL transaction while commits go on: ${snaps.map((x) => `${fmt(x.ms / 1000, 2)} s, ${fmt(x.bytes / 2 ** 20, 1)} MB`).join(' / ')} in all), competing with the commits for the two cores, the disk and PostgreSQL's WAL.`
    : ''
  const verdictText =
    four.pg.lockBusy >= 0.8
      ? 'The head lock is busy nearly all the time: the medium is bound by the serial hold (catch-up apply, INSERT and COMMIT under one row lock), not by any one process, so more processes mostly shrink the batches.'
      : 'The head lock is not saturated: each replica’s own serial cycle (one batch in flight) bounds the medium more than the lock does.'
  return [
    `Each batch is one PostgreSQL transaction of **3 round trips** (lock + read: \`BEGIN; SELECT head … FOR UPDATE; SELECT\` the log after this replica; insert + head + notify; \`COMMIT\`), and a replica has one batch in flight at a time. This run's round trip to the server is ${fmt(floor.rttP50Ms, 3)} ms (p50 of \`SELECT 1\`). Those statements alone, on one connection with one ${fmt(floor.payloadBytes)}-byte commit per batch and no engine (\`pg-protocol\`), make ${fmt(floor.batchesPerSec)} batches/s, holding the head lock ${fmt(floor.heldP50Ms, 2)} ms per batch (p50), ${fmt(floor.commitP50Ms, 2)} ms of it in \`COMMIT\` (PostgreSQL's WAL flush, \`synchronous_commit = ${raw.server?.synchronousCommit ?? '?'}\`).`,
    '',
    `One native replica (W1, P = 1) made ${fmt(batches1)} batches/s of ${fmt(x1.commitsPerBatch, 1)} commits (log table: ${fmt(one.pg.commitsPerBatch, 1)}), ${fmt(one.commitsPerSec)} commits/s: a cycle of ${fmt(cycle1, 2)} ms per batch = ${fmt(x1.lockWaitMs.mean, 2)} ms to lock and read + ${fmt(x1.heldMs.mean, 2)} ms holding the lock (INSERT ${fmt(x1.insertMs.mean, 2)}, COMMIT ${fmt(x1.commitMs.mean, 2)}) + ${fmt(outside1, 2)} ms outside it (a pooled connection, the local durable apply of its own batch, the next batch's queueing), ${ratio(cycle1, 1000 / floor.batchesPerSec)} the protocol floor's cycle. Throughput is batch size ÷ that cycle, and the batch is what the clients queued during the previous cycle (here all ${fmt(raw.clients)}).${snapText}`,
    '',
    `With P = 2 (${ratio(rate(two), rate(one))} P = 1) and P = 4 (${ratio(rate(four), rate(one))}) the processes take turns at the head lock: it was held ${fmt(100 * two.pg.lockBusy)}% and ${fmt(100 * four.pg.lockBusy)}% of the window (Σ hold times ÷ window, client-side, so slightly over-counted). Batches had ${both((x) => x.commitsPerBatch, 1)} commits, and each first applied the ${both((x) => x.foreignRows, 1)} rows others appended since its last turn, locally and durably, while holding the lock: ${both((x) => x.applyMs.mean)} ms per batch (${fmt(x1.applyMs.mean, 2)} ms alone), of ${both((x) => x.heldMs.mean)} ms held. ${verdictText}`,
    '',
  ]
}

/** Markdown: W1 and W3 tables with the ratios, tailing lag, the batches and what limits them. */
export function render(raw) {
  const srv = raw.server?.error
    ? `PostgreSQL: ${raw.server.error}.`
    : `PostgreSQL ${raw.server.version} on the same machine (\`synchronous_commit = ${raw.server.synchronousCommit}\`, \`fsync = ${raw.server.fsync}\`, \`wal_sync_method = ${raw.server.walSyncMethod}\`).`
  const lines = [
    `WP's cells with the log in PostgreSQL: each participant process opens **its own replica directory** of one database, the cell's fresh schema (made by a setup replica in the cell process, which also loads W3's keys; dropped when the cell ends). A commit is one PostgreSQL transaction (lock the head row, read and apply others' new rows, insert its own, \`COMMIT\`), then applied locally; replicas learn of others' commits by LISTEN/NOTIFY and a catch-up read. \`kestrel-mixed-pg\` alternates native and ts replicas (at P = 1 it is kestrel-native-pg). The reference is \`kestrel-native\` on one shared directory (WP's cell, rerun in this run). ${srv} Ratios: against the same contestant with one process, and against the directory medium with the same number of processes.`,
    '',
    `### W1 — durable single-record commits, C = ${raw.clients} in all`,
    '',
    `${raw.valueBytes}-byte values, each client committing one record and awaiting it; process i of P writes only keys ≡ i (mod P). Commits/s:`,
    '',
    ...scalingTables(raw.w1, raw.w1Contestants, raw.processes),
    `### W3 — read-modify-write transactions, C = ${raw.clients} in all`,
    '',
    `Each transaction reads two zipfian keys (over ${fmt(raw.w3Keys)} records, loaded before the processes start) and writes both, retried on conflict — with PostgreSQL, a conflict with another host's commit is found when the batch's replica catches up under the head lock. Commits/s:`,
    '',
    ...scalingTables(raw.w3, raw.w3Contestants, raw.processes, { retries: true }),
    '### Tailing lag between hosts',
    '',
    "WP's pair: A commits one record every ~2 ms and notes when each commit's promise resolved; B polls `get()` between event-loop turns and notes when each sequence number first became visible. Lag = seen − acknowledged, per record after the warm-up. On PostgreSQL, B learns of A's commits by NOTIFY and then a catch-up read (with a read every second as a fallback); a negative lag means B, through PostgreSQL, applied the record before A's own local apply acknowledged it.",
    '',
  ]
  const tailHeaders = ['writer + reader', 'medium', 'records', 'not seen', 'ms between commits', 'lag p50 ms', 'p99 ms', 'max ms', 'min ms']
  lines.push(
    ...table(
      tailHeaders,
      'llrrrrrrr',
      raw.tailContestants.map((name) => {
        const r = raw.tail[name]
        if (r.error) return unavailableRow(pairName(name), r.error, tailHeaders.length)
        return [
          pairName(name),
          mediumOf(name),
          fmt(r.records),
          fmt(r.missed),
          fmt(r.meanIntervalMs, 2),
          fmt(r.p50Ms, 3),
          fmt(r.p99Ms, 3),
          fmt(r.maxMs, 3),
          fmt(r.minMs, 3),
        ]
      }),
    ),
    '',
    '### What limits the PostgreSQL medium',
    '',
    "The library reports no per-batch timings, so these are measured from outside: commits per batch = the log table's rows ÷ their distinct batch ids after the cell (warm-up included; only the rows no snapshot trimmed away — the library's default publishes a snapshot of one replica, a backup uploaded in chunks, once 10,000 commits were made since the last, and trims the log below it), and each participant process wraps its `pg` client (`lib/pg.js`) to time every batch's statements on the connection that holds the head lock (client-side times: the lock is taken about half a round trip before its answer arrives and let go about half a round trip before COMMIT's does).",
    '',
    ...batchTables(raw),
    ...limitsParagraph(raw),
  )
  if (raw.protocol?.error) lines.push(`- pg-protocol: not available: ${esc(raw.protocol.error)}`, '')
  if (raw.schemasSwept?.length > 0) lines.push(`Schemas left by failed cells, dropped by the harness: ${raw.schemasSwept.join(', ')}.`, '')
  return { lines, goals: [] }
}

export default {
  id: 'WPG',
  aliases: ['WPG'],
  title: 'WPG — many processes, one PostgreSQL database',
  cell,
  run,
  render,
}
