/**
 * The shared log on PostgreSQL (docs/FORMAT.md "The PostgreSQL medium"): the tables of one
 * database (a schema), and the statements a replica runs on them. Every statement a commit needs
 * is here, so the commit protocol (core.ts) reads as steps, and a second SQL medium is one file.
 *
 * Tables, in schema `<schema>`:
 * - `kestrel_meta` — one row: the format version, the database's id and `head`, the LSN of the
 *   newest commit. Locking this row (`FOR UPDATE`) is the write lock: LSNs are handed out only
 *   under it, so they are one gap-free order, and a reader without the lock sees a prefix.
 * - `kestrel_log` — one row per commit: its LSN, the id of the batch it came in (outcome
 *   resolution after a lost connection) and its payload (the bytes of a log record's commit).
 *   Trimmed below the newest snapshot once every live replica has applied past it.
 * - `kestrel_snapshot` / `kestrel_snapshot_chunk` — the newest snapshot (a backup of one replica
 *   at an LSN, its files in chunks): a new replica starts from it and the log after it.
 * - `kestrel_replica` — each open replica's applied LSN and when it was last heard of: the log
 *   is never trimmed past what a live one still needs.
 */
import type { Pool, PoolClient } from 'pg'
import { randomUUID } from 'node:crypto'
import { KestrelError } from '../errors.js'

/** The medium's format: a schema written by a newer one is refused. */
export const PG_FORMAT = 1

/** Schema names: also part of a channel name, and spliced into statements (so: checked). */
const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,47}$/

/** Most log rows fetched by one catch-up read (a replica far behind reads in several). */
export const CATCH_UP_ROWS_MAX = 2000

/** Most rows in one INSERT (three parameters each; PostgreSQL allows 65,535). */
const INSERT_ROWS_MAX = 4096

export interface LogRow {
  lsn: number
  payload: Uint8Array
}

export function checkSchemaName(schema: unknown): string {
  if (typeof schema !== 'string' || !SCHEMA_RE.test(schema)) {
    throw new KestrelError(
      'KESTREL_INVALID_ARGUMENT',
      `option postgres.schema must be a lower-case PostgreSQL identifier of at most 48 characters (letters, digits, _; not starting with a digit), got ${JSON.stringify(schema)}`,
    )
  }
  return schema
}

/** The statements of one schema. */
export class PgLog {
  /** NOTIFY channel: a hint that the head moved (the table is the truth). */
  readonly channel: string
  private readonly meta: string
  private readonly log: string
  private readonly snapshot: string
  private readonly chunk: string
  private readonly replica: string

  constructor(readonly schema: string) {
    this.channel = `kestrel_${schema}`
    this.meta = `"${schema}".kestrel_meta`
    this.log = `"${schema}".kestrel_log`
    this.snapshot = `"${schema}".kestrel_snapshot`
    this.chunk = `"${schema}".kestrel_snapshot_chunk`
    this.replica = `"${schema}".kestrel_replica`
  }

  /**
   * Create the schema's tables when missing (one creator at a time: an advisory lock), and
   * return the database's id and head. Refuses a schema of a newer format, or a schema of the
   * same name that is not a kestreldb database.
   */
  async prepare(pool: Pool): Promise<{ databaseId: string; head: number }> {
    const c = await pool.connect()
    try {
      await c.query('BEGIN')
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`kestreldb:${this.schema}`])
      await c.query(`CREATE SCHEMA IF NOT EXISTS "${this.schema}"`)
      const tables = await c.query<{ table_name: string }>('SELECT table_name FROM information_schema.tables WHERE table_schema = $1', [this.schema])
      const names = new Set(tables.rows.map((r) => r.table_name))
      if (!names.has('kestrel_meta')) {
        if (names.size > 0) {
          throw new KestrelError(
            'KESTREL_NOT_A_DATABASE',
            `PostgreSQL schema "${this.schema}" holds tables but no kestreldb database; name an empty or new schema, or the schema of an existing kestreldb database`,
          )
        }
        await c.query(`CREATE TABLE ${this.meta} (id int PRIMARY KEY CHECK (id = 1), format int NOT NULL, database_id text NOT NULL, head bigint NOT NULL)`)
        await c.query(`CREATE TABLE ${this.log} (lsn bigint PRIMARY KEY, batch text NOT NULL, payload bytea NOT NULL)`)
        await c.query(`CREATE TABLE ${this.snapshot} (lsn bigint PRIMARY KEY, bytes bigint NOT NULL, made_at timestamptz NOT NULL DEFAULT now())`)
        await c.query(
          `CREATE TABLE ${this.chunk} (lsn bigint NOT NULL, path text NOT NULL, seq int NOT NULL, data bytea NOT NULL, PRIMARY KEY (lsn, path, seq))`,
        )
        await c.query(`CREATE TABLE ${this.replica} (id text PRIMARY KEY, applied_lsn bigint NOT NULL, seen_at timestamptz NOT NULL DEFAULT now())`)
        await c.query(`INSERT INTO ${this.meta} VALUES (1, $1, $2, 0)`, [PG_FORMAT, randomUUID()])
      }
      const meta = await c.query<{ format: number; database_id: string; head: string }>(`SELECT format, database_id, head FROM ${this.meta} WHERE id = 1`)
      await c.query('COMMIT')
      const row = meta.rows[0]
      if (!row) throw new KestrelError('KESTREL_CORRUPT', `PostgreSQL schema "${this.schema}" lost its kestrel_meta row; restore the schema from a backup`)
      if (row.format > PG_FORMAT) {
        throw new KestrelError(
          'KESTREL_FORMAT_VERSION',
          `PostgreSQL schema "${this.schema}" was written by a newer kestreldb (medium format ${row.format}; this one reads ${PG_FORMAT}); upgrade kestreldb`,
        )
      }
      return { databaseId: row.database_id, head: Number(row.head) }
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {})
      throw err
    } finally {
      c.release()
    }
  }

  /**
   * Begin a commit: take the write lock (the head row) and read what others appended after
   * `after`, in one round trip. The lock is held until `append`'s COMMIT or a ROLLBACK.
   */
  async lockHead(c: PoolClient, after: number): Promise<{ head: number; rows: LogRow[] }> {
    // Integers only are spliced in (checked): the three statements go in one round trip.
    if (!Number.isSafeInteger(after) || after < 0) throw new Error(`bad LSN ${after}`)
    const results = (await c.query(
      `BEGIN; SELECT head FROM ${this.meta} WHERE id = 1 FOR UPDATE; SELECT lsn, payload FROM ${this.log} WHERE lsn > ${after} ORDER BY lsn LIMIT ${CATCH_UP_ROWS_MAX}`,
    )) as unknown as Array<{ rows: Array<Record<string, unknown>> }>
    const head = Number(results[1]!.rows[0]!.head)
    return { head, rows: results[2]!.rows.map(toRow) }
  }

  /** Under the head lock: more of the log, after `after` (a replica far behind). */
  async readAfter(c: PoolClient | Pool, after: number): Promise<LogRow[]> {
    const r = await c.query(`SELECT lsn, payload FROM ${this.log} WHERE lsn > $1 ORDER BY lsn LIMIT ${CATCH_UP_ROWS_MAX}`, [after])
    return r.rows.map(toRow)
  }

  /** The newest LSN (no lock). */
  async head(c: PoolClient | Pool): Promise<number> {
    const r = await c.query<{ head: string }>(`SELECT head FROM ${this.meta} WHERE id = 1`)
    return Number(r.rows[0]!.head)
  }

  /**
   * Under the head lock: append `payloads` as LSNs `head + 1…`, tagged `batch`, move the head and
   * notify listeners (delivered at COMMIT). The caller then sends COMMIT.
   */
  async append(c: PoolClient, head: number, batch: string, payloads: readonly Uint8Array[]): Promise<void> {
    if (payloads.length === 0) throw new Error('append of no commits')
    const newHead = head + payloads.length
    // Bounded: one statement per INSERT_ROWS_MAX commits; the last also moves the head and
    // notifies, so a usual batch costs one round trip before its COMMIT.
    for (let at = 0; at < payloads.length; at += INSERT_ROWS_MAX) {
      const part = payloads.slice(at, at + INSERT_ROWS_MAX)
      const values: string[] = []
      const params: unknown[] = []
      for (let i = 0; i < part.length; i++) {
        values.push(`($${3 * i + 1}::bigint, $${3 * i + 2}, $${3 * i + 3}::bytea)`)
        const p = part[i]!
        params.push(head + at + i + 1, batch, Buffer.from(p.buffer, p.byteOffset, p.byteLength))
      }
      const insert = `INSERT INTO ${this.log} (lsn, batch, payload) VALUES ${values.join(', ')}`
      if (at + INSERT_ROWS_MAX < payloads.length) {
        await c.query(insert, params)
        continue
      }
      const n = params.length
      params.push(newHead, this.channel)
      await c.query(
        `WITH ins AS (${insert}), up AS (UPDATE ${this.meta} SET head = $${n + 1}::bigint WHERE id = 1) SELECT pg_notify($${n + 2}, ($${n + 1}::bigint)::text)`,
        params,
      )
    }
  }

  /**
   * After a lost connection during COMMIT: was batch `batch` (first LSN `firstLsn`) written?
   * Taking the head lock waits until the transaction that sent it has ended one way or the
   * other, so the answer is final.
   */
  async wasWritten(c: PoolClient, firstLsn: number, batch: string): Promise<boolean> {
    await c.query('BEGIN')
    try {
      await c.query(`SELECT head FROM ${this.meta} WHERE id = 1 FOR UPDATE`)
      const r = await c.query<{ batch: string }>(`SELECT batch FROM ${this.log} WHERE lsn = $1`, [firstLsn])
      return r.rows[0]?.batch === batch
    } finally {
      await c.query('ROLLBACK')
    }
  }

  // ---- replicas and snapshots -------------------------------------------------------------

  /** The oldest LSN the log still holds (head + 1 when empty). */
  async firstLsn(c: PoolClient | Pool): Promise<number> {
    const r = await c.query<{ lo: string | null; head: string }>(`SELECT (SELECT min(lsn) FROM ${this.log}) AS lo, head FROM ${this.meta} WHERE id = 1`)
    const row = r.rows[0]!
    return row.lo === null ? Number(row.head) + 1 : Number(row.lo)
  }

  /** Replica `id` is live and has applied up to `lsn` (it holds back the trim until then). */
  async heartbeat(c: PoolClient | Pool, id: string, lsn: number): Promise<void> {
    await c.query(
      `INSERT INTO ${this.replica} (id, applied_lsn, seen_at) VALUES ($1, $2, now()) ON CONFLICT (id) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn, seen_at = now()`,
      [id, lsn],
    )
  }

  /** Replica `id` closed: it holds back nothing any more. */
  async leave(c: PoolClient | Pool, id: string): Promise<void> {
    await c.query(`DELETE FROM ${this.replica} WHERE id = $1`, [id])
  }

  /** The newest snapshot's LSN (0: none). */
  async newestSnapshot(c: PoolClient | Pool): Promise<number> {
    const r = await c.query<{ lsn: string | null }>(`SELECT max(lsn) AS lsn FROM ${this.snapshot}`)
    return Number(r.rows[0]!.lsn ?? 0)
  }

  /** Take the snapshot writer's lock for this session, or false when another holds it. */
  async trySnapshotLock(c: PoolClient): Promise<boolean> {
    const r = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1)) AS ok', [`kestreldb-snapshot:${this.schema}`])
    return r.rows[0]!.ok
  }

  async snapshotUnlock(c: PoolClient): Promise<void> {
    await c.query('SELECT pg_advisory_unlock(hashtext($1))', [`kestreldb-snapshot:${this.schema}`])
  }

  /** Inside the publishing transaction: one chunk of one file of snapshot `lsn`. */
  async putChunk(c: PoolClient, lsn: number, path: string, seq: number, data: Uint8Array): Promise<void> {
    await c.query(`INSERT INTO ${this.chunk} (lsn, path, seq, data) VALUES ($1, $2, $3, $4)`, [
      lsn,
      path,
      seq,
      Buffer.from(data.buffer, data.byteOffset, data.byteLength),
    ])
  }

  /**
   * Inside the publishing transaction, after its chunks: snapshot `lsn` is whole. Older snapshots
   * go, and the log below what both it and every live replica (heard of within `staleMs`) have
   * moves past. Returns the rows trimmed.
   */
  async sealSnapshot(c: PoolClient, lsn: number, bytes: number, staleMs: number): Promise<number> {
    await c.query(`INSERT INTO ${this.snapshot} (lsn, bytes) VALUES ($1, $2)`, [lsn, bytes])
    await c.query(`DELETE FROM ${this.chunk} WHERE lsn < $1`, [lsn])
    await c.query(`DELETE FROM ${this.snapshot} WHERE lsn < $1`, [lsn])
    await c.query(`DELETE FROM ${this.replica} WHERE seen_at < now() - make_interval(secs => $1)`, [staleMs / 1000])
    const r = await c.query(`DELETE FROM ${this.log} WHERE lsn <= LEAST($1::bigint, (SELECT min(applied_lsn) FROM ${this.replica}))`, [lsn])
    return r.rowCount ?? 0
  }

  /** Inside a REPEATABLE READ transaction: the newest snapshot and its files' chunk counts. */
  async snapshotFiles(c: PoolClient): Promise<{ lsn: number; files: Array<{ path: string; chunks: number }> } | undefined> {
    const s = await c.query<{ lsn: string }>(`SELECT lsn FROM ${this.snapshot} ORDER BY lsn DESC LIMIT 1`)
    if (s.rows.length === 0) return undefined
    const lsn = Number(s.rows[0]!.lsn)
    const f = await c.query<{ path: string; chunks: number }>(
      `SELECT path, count(*)::int AS chunks FROM ${this.chunk} WHERE lsn = $1 GROUP BY path ORDER BY path`,
      [lsn],
    )
    return { lsn, files: f.rows }
  }

  async getChunk(c: PoolClient, lsn: number, path: string, seq: number): Promise<Uint8Array> {
    const r = await c.query<{ data: Uint8Array }>(`SELECT data FROM ${this.chunk} WHERE lsn = $1 AND path = $2 AND seq = $3`, [lsn, path, seq])
    if (r.rows.length === 0) throw new KestrelError('KESTREL_CORRUPT', `snapshot ${lsn} of schema "${this.schema}" lacks chunk ${seq} of ${path}`)
    return r.rows[0]!.data
  }
}

function toRow(r: Record<string, unknown>): LogRow {
  return { lsn: Number(r.lsn), payload: r.payload as Uint8Array }
}
