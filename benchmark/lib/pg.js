// PostgreSQL for the benchmark's pg contestants (WPG, SAVER): the server, one fresh schema per
// cell and its removal, and a probe that times a replica's commit protocol from the outside (the
// library reports no per-batch timings, and the benchmark does not change the library).
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { percentile } from './stats.js'

export const PG_URL = process.env.KESTREL_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
/** Every schema a benchmark cell makes starts so: leftovers are easy to find. */
export const SCHEMA_PREFIX = 'kb_'

const ROOT_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
// The pg that dist/ resolves (the root's): the probe must patch the very Client the library uses.
const requireFromDist = createRequire(join(ROOT_DIR, 'dist', 'postgres', 'core.js'))
export const pg = () => requireFromDist('pg')

/** The cell's own schema: cell directories are unique, so are their hashes. */
export const schemaFor = (dir) => `${SCHEMA_PREFIX}${createHash('sha256').update(dir).digest('hex').slice(0, 12)}`

/** Runs `fn(client)` on a short-lived admin connection (not one of a replica's). */
export async function withAdmin(fn) {
  const client = new (pg().Client)({ connectionString: PG_URL, connectionTimeoutMillis: 3000, application_name: 'kestrel-bench' })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end().catch(() => {})
  }
}

export const dropSchema = (schema) => withAdmin((c) => c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`))

/** The benchmark's schemas present now. */
export const benchSchemas = () =>
  withAdmin(async (c) =>
    (await c.query('SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY 1', [SCHEMA_PREFIX])).rows.map((r) => r.nspname),
  )

/**
 * Parent side, around a workload's pg cells: a cell drops its schema itself, but one killed on
 * timeout cannot. `sweep()` drops the benchmark schemas made since `schemaGuard()` was called
 * (run it only between cells, never while one runs).
 */
export async function schemaGuard() {
  const before = new Set(await benchSchemas().catch(() => []))
  return {
    async sweep() {
      const left = (await benchSchemas()).filter((s) => !before.has(s))
      for (const s of left) await dropSchema(s)
      return left
    },
  }
}

/**
 * After a pg cell: the commits after `afterLsn` (from the head), and of the log rows a snapshot
 * did not trim away, how many and in how many batches, with their mean payload bytes.
 */
export async function logStats(schema, afterLsn) {
  return withAdmin(async (c) => {
    const r = await c.query(
      `SELECT (SELECT head FROM "${schema}".kestrel_meta WHERE id = 1) AS head, count(*)::int AS rows, count(DISTINCT batch)::int AS batches, avg(length(payload))::float AS payload_bytes FROM "${schema}".kestrel_log WHERE lsn > $1`,
      [afterLsn],
    )
    const row = r.rows[0]
    return { commits: Number(row.head) - afterLsn, rowsKept: row.rows, batchesKept: row.batches, payloadBytes: row.payload_bytes ?? NaN }
  })
}

export const headOf = (schema) => withAdmin(async (c) => Number((await c.query(`SELECT head FROM "${schema}".kestrel_meta WHERE id = 1`)).rows[0].head))

/**
 * Times the replica's batches by wrapping pg's Client#query in this process: a batch is the
 * statement that takes the head lock (`BEGIN; SELECT head … FOR UPDATE; SELECT lsn, payload …`,
 * lib/postgres/log.ts lockHead), the INSERT that appends it, and COMMIT on the same connection.
 * Client-side times: the lock is taken about half a round trip before its answer arrives and let
 * go about half a round trip before COMMIT's does, so held ≈ COMMIT answered − lock answered.
 * Also the snapshots this replica publishes (lib/postgres/snapshot.ts: from taking the snapshot
 * writer's advisory lock to letting it go; their chunks' bytes).
 */
export function commitProbe() {
  const { Client } = pg()
  const query = Client.prototype.query
  const open = new WeakMap()
  const batches = []
  const snapshots = []
  const publishing = new WeakMap()
  const rowsOf = (res, i) => (Array.isArray(res) ? res[i] : res)?.rows?.length ?? 0
  Client.prototype.query = function (...args) {
    const text = typeof args[0] === 'string' ? args[0] : args[0]?.text
    const sent = performance.now()
    const result = query.apply(this, args)
    if (typeof text !== 'string' || typeof result?.then !== 'function') return result
    const b = open.get(this)
    const after = (fn) =>
      result.then(
        (res) => fn(res, performance.now()),
        () => {},
      )
    const snap = publishing.get(this)
    if (text.startsWith('SELECT pg_try_advisory_lock')) {
      publishing.set(this, { start: sent, bytes: 0, sealed: false })
    } else if (snap && text.includes('kestrel_snapshot_chunk (lsn, path, seq, data)')) {
      snap.bytes += args[1]?.[3]?.length ?? 0
    } else if (snap && text.includes('kestrel_snapshot (lsn, bytes)')) {
      snap.sealed = true
    } else if (snap && text.startsWith('SELECT pg_advisory_unlock')) {
      publishing.delete(this)
      after((_res, t) => snap.sealed && snapshots.push({ ...snap, end: t }))
    } else if (text.startsWith('BEGIN; SELECT head')) {
      const nb = {
        lockSent: sent,
        lockGot: NaN,
        foreign: 0,
        commits: 0,
        appendSent: NaN,
        appendDone: NaN,
        commitSent: NaN,
        commitDone: NaN,
        rolledBack: false,
      }
      open.set(this, nb)
      after((res, t) => {
        nb.lockGot = t
        nb.foreign += rowsOf(res, 2)
      })
    } else if (!b) {
      // Not inside a batch: catch-up reads, outcome resolution.
    } else if (text.startsWith('SELECT lsn, payload')) {
      after((res) => {
        b.foreign += rowsOf(res, 0)
      })
    } else if (text.startsWith('WITH ins AS') || text.startsWith('INSERT INTO')) {
      // Three parameters per row; the last statement also carries the new head and the channel.
      const values = Array.isArray(args[1]) ? args[1].length : 0
      b.commits += (values - (text.startsWith('WITH') ? 2 : 0)) / 3
      if (Number.isNaN(b.appendSent)) b.appendSent = sent
      after((_res, t) => {
        b.appendDone = t
      })
    } else if (text === 'COMMIT' || text === 'ROLLBACK') {
      // A ROLLBACK: the re-check refused every commit (or a statement failed); it held the lock too.
      b.commitSent = sent
      b.rolledBack = text === 'ROLLBACK'
      open.delete(this)
      after((_res, t) => {
        b.commitDone = t
        batches.push(b)
      })
    }
    return result
  }
  return {
    /** The batches whose lock statement went out in [from, to) (performance.now() times). */
    summary(from, to) {
      const all = batches.filter((b) => b.lockSent >= from && b.lockSent < to)
      const written = all.filter((b) => !b.rolledBack)
      const stat = (bs, f) => {
        const xs = Float64Array.from(bs.map(f)).sort()
        return { mean: xs.length > 0 ? xs.reduce((a, x) => a + x, 0) / xs.length : NaN, p50: percentile(xs, 0.5), p99: percentile(xs, 0.99) }
      }
      return {
        batches: written.length,
        commits: written.reduce((n, b) => n + b.commits, 0),
        rolledBack: all.length - written.length,
        windowMs: to - from,
        // Sum of hold times: over the window, the share of time this process held the lock.
        heldSumMs: all.reduce((a, b) => a + (b.commitDone - b.lockGot), 0),
        lockWaitMs: stat(all, (b) => b.lockGot - b.lockSent),
        heldMs: stat(all, (b) => b.commitDone - b.lockGot),
        // Catch-up apply and re-checks: until the INSERT (or the ROLLBACK) goes out.
        applyMs: stat(all, (b) => (b.rolledBack ? b.commitSent : b.appendSent) - b.lockGot),
        insertMs: stat(written, (b) => b.appendDone - b.appendSent),
        commitMs: stat(written, (b) => b.commitDone - b.commitSent),
        foreignRows: stat(all, (b) => b.foreign).mean,
        commitsPerBatch: stat(written, (b) => b.commits).mean,
        // Published snapshots that started in the window.
        snapshots: snapshots.filter((x) => x.start >= from && x.start < to).map((x) => ({ ms: x.end - x.start, bytes: x.bytes })),
      }
    },
  }
}
