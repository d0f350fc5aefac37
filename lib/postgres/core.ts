/**
 * A replica of a database whose log lives in PostgreSQL (docs/ARCHITECTURE.md "Several
 * machines"): wraps this process's engine (native or ts), opened on the replica directory as on
 * one machine, and speaks the same commit protocol as a shared directory's participant
 * (shared/core.ts) with the log in a table instead of a file.
 *
 * Commit: commits submitted in one turn form a batch; one PostgreSQL transaction locks the head
 * row, reads what others appended since this replica's last LSN and applies it locally, re-checks
 * the batch against those foreign writes, inserts the batch's records with the next LSNs and
 * commits. Only then are the records applied locally (same LSNs: every replica applies one log in
 * one order) and the commits acknowledged. A connection lost during COMMIT is resolved by the
 * batch's id once PostgreSQL answers again, never guessed.
 * Reads: local and synchronous, at what this replica has applied. It learns of other hosts'
 * commits from NOTIFY (a hint) and a catch-up read (the truth), and always before validating.
 */
import { randomUUID } from 'node:crypto'
import { existsSync, readdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import type { Client, Pool, PoolClient } from 'pg'
import { KestrelError } from '../errors.js'
import { type QueuedCommit, WrappedCore, stillValid } from '../core/wrapped.js'
import type { CommitCheck, Core, CoreStats, LogTail } from '../core/types.js'
import { type LogRow, PgLog, checkSchemaName } from './log.js'
import { readReplicaMark, writeReplicaMark } from './replica.js'
import { BOOTSTRAP_DIR, fetchSnapshot, publishSnapshot } from './snapshot.js'

/** Where the shared log lives: `open(dir, { postgres: { connectionString, schema } })`. */
export interface PostgresOptions {
  /** A node-postgres connection string, e.g. `postgres://user@host:5432/db`. */
  connectionString: string
  /** The schema holding the database (two schemas are two databases). */
  schema: string
  /**
   * Publish a snapshot for new replicas to start from (and trim the log behind it) once this
   * many commits were made since the newest one. Default 10,000.
   */
  snapshotEveryCommits?: number
}

/** How replicas' connections show in `pg_stat_activity`. */
const APPLICATION_NAME = 'kestreldb'
/** How long a connection attempt may take before PostgreSQL counts as unreachable. */
const CONNECT_TIMEOUT_MS = 3000
/** Connections per replica: commits, catch-up reads, outcome resolution (LISTEN has its own). */
const POOL_SIZE = 3
/** Catch-up read this often even when no notification came (notifications are only hints). */
const POLL_MS = 1000
/** Heartbeat, snapshot and trim checks this often. */
const HOUSEKEEPING_MS = 1000
/** A replica not heard of for this long no longer holds back the trim of the log (it re-bootstraps). */
const REPLICA_STALE_MS = 10 * 60_000
/** Default of `snapshotEveryCommits`. */
const SNAPSHOT_EVERY_COMMITS = 10_000
/** A lost LISTEN connection is made again after this. */
const RELISTEN_MS = 500
/** Most commits in one batch. */
const BATCH_COMMITS_MAX = 4096
/** How long an unknown outcome is resolved for (tries with a growing pause) before giving up. */
const RESOLVE_WAIT_MS = 10 * 60_000
/** Pause between resolution tries: from the first to the last. */
const RESOLVE_PAUSE_MS = [50, 1000] as const
/**
 * Test-only: `pg-commit:<n>` SIGKILLs this process at the n-th batch once its COMMIT is sent,
 * before the answer is read (the outcome is then up to PostgreSQL; the next open learns it).
 */
const KILL_AT = (() => {
  const m = process.env.KESTREL_TEST_KILL_AT?.match(/^pg-commit:(\d+)$/)
  return m ? Number(m[1]) : undefined
})()
let killCount = 0

type Pending = QueuedCommit

type PgModule = { Pool: typeof Pool; Client: typeof Client }

async function loadPg(): Promise<PgModule> {
  try {
    const m = (await import('pg')) as unknown as { default?: PgModule } & PgModule
    return m.default ?? m
  } catch (err) {
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'option postgres needs the pg package: run `npm install pg`', { cause: err })
  }
}

/** Is `err` PostgreSQL (or the way to it) being unreachable or going away, rather than a refusal? */
function isUnreachable(err: unknown): boolean {
  const e = err as { code?: string; message?: string }
  if (typeof e?.code === 'string') {
    if (/^E(CONNREFUSED|CONNRESET|TIMEDOUT|HOSTUNREACH|NETUNREACH|PIPE|NOTFOUND|AI_AGAIN)$/.test(e.code)) return true
    // Connection exceptions, and an administrator's or the server's shutdown.
    if (/^08|^57P0[1-3]$/.test(e.code)) return true
  }
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|not queryable/i.test(
    e?.message ?? '',
  )
}

/** `err` from PostgreSQL as a KestrelError: unreachable → KESTREL_UNAVAILABLE, else KESTREL_IO. */
function pgError(err: unknown, what: string, where: string): KestrelError {
  if (err instanceof KestrelError) return err
  const msg = (err as Error)?.message ?? String(err)
  if (isUnreachable(err)) {
    return new KestrelError(
      'KESTREL_UNAVAILABLE',
      `PostgreSQL (${where}) is unreachable (${msg}): ${what}; reads still serve this replica's last state — retry once PostgreSQL is back`,
      { cause: err },
    )
  }
  return new KestrelError('KESTREL_IO', `PostgreSQL (${where}) refused ${what.replace(/ were not written$/, '')}: ${msg}`, { cause: err })
}

/** Host and port of a connection string, for messages (never the password). */
function describe(connectionString: string): string {
  try {
    const u = new URL(connectionString)
    return `${u.hostname}:${u.port || 5432}${u.pathname}`
  } catch {
    return 'the configured server'
  }
}

export class PgCore extends WrappedCore {
  /** Foreign commits applied, for the coordinator's conflict memory (first LSN, payloads). */
  onForeign: ((firstLsn: number, payloads: Uint8Array[]) => void) | undefined

  private readonly pending: Pending[] = []
  private running = false
  /** Everything that applies records to the engine runs one at a time, in LSN order. */
  private serial: Promise<void> = Promise.resolve()
  private foreignBatches = 0
  private closed = false
  /** Newest head heard of (a notification or a read): the replica's lag is this minus applied. */
  private headSeen = 0
  /** Why PostgreSQL was last found unreachable (cleared by the next success). */
  private unreachable: KestrelError | undefined
  /** A local apply failed after PostgreSQL took the commits: this replica must be reopened. */
  private faultError: KestrelError | undefined
  private listener: Client | undefined
  private pollTimer: NodeJS.Timeout | undefined
  private relistenTimer: NodeJS.Timeout | undefined
  private catchUpQueued = false
  private readonly where: string
  private houseTimer: NodeJS.Timeout | undefined
  /** A snapshot is being published by this replica. */
  private publishing: Promise<unknown> | undefined
  /** Why the last housekeeping (heartbeat or snapshot) failed; tried again a second later. */
  housekeepingError: unknown
  /** Newest snapshot LSN heard of. */
  private snapshotLsn = 0
  /**
   * LSN of the last record handed to the engine (applied, or queued behind what is): what this
   * replica reads the log after. Ahead of `lastCommitId()` while a batch is being applied.
   */
  private queuedLsn = 0
  /** The local apply of this replica's last written batch, while the next batch goes to PostgreSQL. */
  private ownApply: Promise<void> = Promise.resolve()

  private constructor(
    inner: Core,
    private readonly unlock: () => Promise<void>,
    private readonly pg: PgModule,
    private readonly pool: Pool,
    private readonly log: PgLog,
    private readonly options: PostgresOptions,
    /** This replica's row in `kestrel_replica` while it is open. */
    private readonly replicaId: string,
  ) {
    super(inner)
    this.where = describe(options.connectionString)
  }

  /**
   * Open the replica in `dir` of the database in `options.schema`. `openLocal` opens this
   * process's engine on `dir` as on one machine (taking the directory lock) and says how to
   * let go of the lock after closing it.
   */
  static async open(dir: string, options: PostgresOptions, openLocal: () => Promise<{ core: Core; unlock: () => Promise<void> }>): Promise<PgCore> {
    checkSchemaName(options.schema)
    const pg = await loadPg()
    const where = describe(options.connectionString)
    const pool = new pg.Pool({
      connectionString: options.connectionString,
      max: POOL_SIZE,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      application_name: APPLICATION_NAME,
    })
    // A connection that drops is reported here (idle) or on the client (in use); whoever uses it
    // next finds out for itself.
    pool.on('error', () => {})
    pool.on('connect', (client) => client.on('error', () => {}))
    const log = new PgLog(options.schema)
    try {
      const mark = readReplicaMark(dir)
      let meta: { databaseId: string; head: number } | undefined
      let down: KestrelError | undefined
      try {
        meta = await log.prepare(pool)
      } catch (err) {
        if (!isUnreachable(err)) throw pgError(err, 'opening the database', where)
        // A replica that exists opens without PostgreSQL (its reads serve what it holds); a new
        // one has nothing to serve.
        down = pgError(err, 'commits are refused until it is back', where)
        if (!mark) throw pgError(err, `${dir} cannot be made a replica now`, where)
      }
      if (mark && meta && mark.databaseId !== meta.databaseId) {
        throw new KestrelError(
          'KESTREL_INVALID_ARGUMENT',
          `${dir} is a replica of another database (schema "${mark.schema}", id ${mark.databaseId}) than PostgreSQL schema "${options.schema}" at ${where} holds (id ${meta.databaseId}); open it with that schema, or give this schema a new directory`,
        )
      }
      const replicaId = randomUUID()
      let marked = mark !== undefined
      const markIt = (): void => {
        if (!marked) writeReplicaMark(dir, { format: 1, schema: options.schema, databaseId: meta!.databaseId })
        marked = true
      }
      // A bootstrap cut short (its staging directory is still there) is done again from the start.
      if (!mark && existsSync(join(dir, BOOTSTRAP_DIR))) wipe(dir)
      if (!mark) {
        if (readdirSync(dir).length > 0) {
          // A database with no commit (a replica cut short before its mark) is taken over;
          // anything else is refused.
          const probe = await openLocal()
          const commits = Number(probe.core.lastCommitId())
          await probe.core.close()
          await probe.unlock()
          if (commits > 0) {
            throw new KestrelError(
              'KESTREL_INVALID_ARGUMENT',
              `${dir} holds a database that is not a PostgreSQL replica (it has no REPLICA file); open it without the postgres option, or move its records with kestrel export and kestrel import`,
            )
          }
          wipe(dir)
        }
        // A new replica starts from the newest snapshot (then it is marked before its engine
        // first opens, and only then is the staging directory removed), or from an empty
        // database (marked once the engine has made it).
        if ((await bootstrap(pool, log, replicaId, dir)) > 0) {
          markIt()
          rmSync(join(dir, BOOTSTRAP_DIR), { recursive: true, force: true })
        }
      }
      let local = await openLocal()
      try {
        // One too far behind the log (gone long enough for the log it needs to be trimmed)
        // starts again from the newest snapshot.
        if (mark && meta && Number(local.core.lastCommitId()) + 1 < (await log.firstLsn(pool))) {
          await local.core.close()
          await local.unlock()
          wipe(dir)
          if ((await bootstrap(pool, log, replicaId, dir)) === 0) throw new Error('unreachable: the log was trimmed, so a snapshot exists')
          writeReplicaMark(dir, mark)
          rmSync(join(dir, BOOTSTRAP_DIR), { recursive: true, force: true })
          local = await openLocal()
        }
      } catch (err) {
        await local.core.close().catch(() => {})
        await local.unlock().catch(() => {})
        throw err
      }
      try {
        markIt()
        const applied = Number(local.core.lastCommitId())
        if (meta && applied > meta.head) {
          throw new KestrelError(
            'KESTREL_CORRUPT',
            `${dir} holds commits up to ${applied} but PostgreSQL schema "${options.schema}" only up to ${meta.head} (was the schema restored from an older backup?); remove the directory to bootstrap the replica again`,
          )
        }
        const core = new PgCore(local.core, local.unlock, pg, pool, log, options, replicaId)
        core.queuedLsn = applied
        core.headSeen = meta?.head ?? applied
        core.unreachable = down
        if (meta) {
          await log.heartbeat(pool, replicaId, applied)
          await core.exclusive(() => core.catchUpOnce(true))
        }
        core.start()
        return core
      } catch (err) {
        await local.core.close().catch(() => {})
        await local.unlock().catch(() => {})
        throw err
      }
    } catch (err) {
      await pool.end().catch(() => {})
      throw err
    }
  }

  // ---- catching up -------------------------------------------------------------------------

  /** Run `task` after every earlier one: records reach the engine one batch at a time, in order. */
  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.serial.then(task)
    this.serial = run.then(
      () => {},
      () => {},
    )
    return run
  }

  private start(): void {
    this.listen()
    this.houseTimer = setInterval(() => this.housekeeping(), HOUSEKEEPING_MS)
    this.houseTimer.unref()
    const poll = (): void => {
      this.pollTimer = undefined
      if (this.closed) return
      this.scheduleCatchUp()
      this.pollTimer = setTimeout(poll, POLL_MS)
      this.pollTimer.unref()
    }
    this.pollTimer = setTimeout(poll, POLL_MS)
    this.pollTimer.unref()
  }

  /**
   * Tell PostgreSQL how far this replica is (it holds back the trim of the log), and publish a
   * snapshot when enough commits were made since the newest one (one replica at a time).
   */
  private housekeeping(): void {
    if (this.closed || this.publishing) return
    const applied = Number(this.inner.lastCommitId())
    const every = this.options.snapshotEveryCommits ?? SNAPSHOT_EVERY_COMMITS
    this.publishing = (async () => {
      await this.log.heartbeat(this.pool, this.replicaId, applied)
      if (applied - this.snapshotLsn < every) return
      this.snapshotLsn = Math.max(this.snapshotLsn, await this.log.newestSnapshot(this.pool))
      if (applied - this.snapshotLsn < every || this.closed) return
      const made = await publishSnapshot(this.pool, this.log, this.inner, this.replicaId, REPLICA_STALE_MS)
      if (made) this.snapshotLsn = made.lsn
      this.housekeepingError = undefined
    })()
      .catch((err: unknown) => {
        if (!(err instanceof KestrelError && err.code === 'KESTREL_CLOSED')) this.housekeepingError = err
      })
      .finally(() => {
        this.publishing = undefined
      })
  }

  /** Publish a snapshot now (tests, tools): its LSN, or undefined when another replica is publishing one. */
  async snapshot(): Promise<number | undefined> {
    await this.publishing
    const made = await publishSnapshot(this.pool, this.log, this.inner, this.replicaId, REPLICA_STALE_MS)
    if (made) this.snapshotLsn = made.lsn
    return made?.lsn
  }

  /** LISTEN for head moves on a connection of its own; made again when it drops. */
  private listen(): void {
    if (this.closed) return
    const client = new this.pg.Client({
      connectionString: this.options.connectionString,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      application_name: APPLICATION_NAME,
    })
    this.listener = client
    const again = (): void => {
      if (this.listener !== client) return
      this.listener = undefined
      client.end().catch(() => {})
      if (this.closed) return
      this.relistenTimer = setTimeout(() => this.listen(), RELISTEN_MS)
      this.relistenTimer.unref()
    }
    client.on('error', again)
    client.on('end', again)
    client.on('notification', (msg) => {
      const head = Number(msg.payload)
      if (Number.isSafeInteger(head) && head > this.headSeen) this.headSeen = head
      if (this.headSeen > Number(this.inner.lastCommitId())) this.scheduleCatchUp()
    })
    client
      .connect()
      .then(() => client.query(`LISTEN ${this.log.channel}`))
      .then(() => {
        // What was appended while no one listened.
        this.scheduleCatchUp()
      })
      .catch(again)
    // The LISTEN connection never keeps the process alive.
    const stream = (client as unknown as { connection?: { stream?: { unref?: () => void } } }).connection?.stream
    stream?.unref?.()
  }

  /** Catch up soon (one read queued at a time; commits catch up on their own). */
  private scheduleCatchUp(): void {
    if (this.catchUpQueued || this.closed) return
    this.catchUpQueued = true
    void this.exclusive(async () => {
      this.catchUpQueued = false
      if (this.closed) return
      try {
        await this.catchUpOnce(false)
      } catch {
        // Unreachable or failing: the next commit reports it; reads serve what is applied.
      }
    })
  }

  /**
   * Read and apply what others appended after this replica's last LSN, without the head lock
   * (a reader sees a prefix of the log). `all`: until caught up; else one read's worth.
   */
  private async catchUpOnce(all: boolean): Promise<void> {
    try {
      const target = all ? await this.log.head(this.pool) : 0
      // Bounded: every read applies at least one record; with `all`, up to the head read first.
      do {
        const rows = await this.log.readAfter(this.pool, this.queuedLsn)
        this.unreachable = undefined
        if (rows.length === 0) return
        await this.applyRows(rows)
      } while (this.queuedLsn < target)
    } catch (err) {
      const e = pgError(err, 'catching up', this.where)
      if (e.code === 'KESTREL_UNAVAILABLE') this.unreachable = e
      throw e
    }
  }

  /**
   * Apply others' records (the next LSNs after this replica's last) to the engine as one batch,
   * and note their writes for validation.
   */
  private async applyRows(rows: readonly LogRow[]): Promise<void> {
    const first = this.queuedLsn + 1
    if (rows[0]!.lsn > first && (await this.log.firstLsn(this.pool)) > first) {
      this.faultError ??= new KestrelError(
        'KESTREL_BEHIND',
        `this replica fell behind the log PostgreSQL keeps (it was not heard of for ${REPLICA_STALE_MS / 60_000} minutes and the log it needs was trimmed); close the database and open it again: it starts again from the newest snapshot`,
      )
      throw this.faultError
    }
    if (rows[0]!.lsn !== first) {
      throw new KestrelError(
        'KESTREL_CORRUPT',
        `the PostgreSQL log of schema "${this.log.schema}" continues at LSN ${rows[0]!.lsn} where this replica expects ${first}; remove the replica directory to bootstrap it again`,
      )
    }
    const payloads = rows.map((r) => r.payload)
    await this.applyLocally(payloads, first)
    this.foreignBatches++
    const last = first + rows.length - 1
    if (last > this.headSeen) this.headSeen = last
    this.onForeign?.(first, payloads)
  }

  /**
   * Hand `payloads` to the engine as one batch, behind what it was handed before; they must take
   * LSNs `first…` (asserted). Resolves once they are applied (durable and visible here).
   */
  private async applyLocally(payloads: readonly Uint8Array[], first: number): Promise<bigint[]> {
    if (first !== this.queuedLsn + 1) throw new Error(`records handed to the engine out of order: LSN ${first} after ${this.queuedLsn}`)
    this.queuedLsn += payloads.length
    this.inner.holdWriter(true)
    let done: Array<Promise<bigint>>
    try {
      done = payloads.map((p) => this.inner.commit(p))
    } finally {
      this.inner.holdWriter(false)
    }
    const lsns = await Promise.all(done)
    for (let i = 0; i < lsns.length; i++) {
      if (Number(lsns[i]) !== first + i) {
        throw new KestrelError(
          'KESTREL_CORRUPT',
          `this replica applied a record as LSN ${lsns[i]} that the PostgreSQL log holds as ${first + i}; remove the replica directory to bootstrap it again`,
        )
      }
    }
    return lsns
  }

  // ---- commits -----------------------------------------------------------------------------

  commit(payload: Uint8Array, check?: CommitCheck): Promise<bigint> {
    if (this.closed) return Promise.reject(new KestrelError('KESTREL_CLOSED', 'the database is closed; open it again to use it'))
    return new Promise<bigint>((resolve, reject) => {
      this.pending.push({ payload, check, foreignAt: this.foreignBatches, resolve, reject })
      if (!this.running) {
        this.running = true
        setImmediate(() => void this.run())
      }
    })
  }

  private async run(): Promise<void> {
    try {
      // Bounded: every pass takes at least one pending commit.
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, BATCH_COMMITS_MAX)
        if (this.faultError) {
          for (const p of batch) p.reject(this.faultError)
          continue
        }
        await this.exclusive(() => this.writeBatch(batch))
      }
    } finally {
      this.running = false
    }
  }

  /** One batch: one PostgreSQL transaction, then applied here; every commit settles. */
  private async writeBatch(batch: Pending[]): Promise<void> {
    const notWritten = 'these commits were not written'
    let c: PoolClient
    try {
      c = await this.pool.connect()
    } catch (err) {
      const e = pgError(err, notWritten, this.where)
      if (e.code === 'KESTREL_UNAVAILABLE') this.unreachable = e
      for (const p of batch) p.reject(e)
      return
    }
    let go: Pending[]
    let head: number
    const id = randomUUID()
    try {
      const locked = await this.log.lockHead(c, this.queuedLsn)
      head = locked.head
      this.unreachable = undefined
      if (head > this.headSeen) this.headSeen = head
      let rows = locked.rows
      // Bounded: every read applies at least one record, up to `head`.
      while (rows.length > 0) {
        await this.applyRows(rows)
        if (this.queuedLsn >= head) break
        rows = await this.log.readAfter(c, this.queuedLsn)
      }
      if (this.queuedLsn !== head) {
        throw new KestrelError(
          'KESTREL_CORRUPT',
          `the PostgreSQL log of schema "${this.log.schema}" ends before its head (LSN ${head}); restore the schema from a backup`,
        )
      }
      go = stillValid(batch, this.foreignBatches)
      if (go.length === 0) {
        await c.query('ROLLBACK')
        c.release()
        return
      }
      await this.log.append(
        c,
        head,
        id,
        go.map((p) => p.payload),
      )
    } catch (err) {
      // Nothing was committed: COMMIT was not sent.
      const e = pgError(err, notWritten, this.where)
      if (e.code === 'KESTREL_UNAVAILABLE') this.unreachable = e
      const alive = !isUnreachable(err)
      if (alive) await c.query('ROLLBACK').catch(() => {})
      c.release(alive ? undefined : (err as Error))
      // (Those the re-check refused are settled already: a second reject changes nothing.)
      for (const p of batch) p.reject(e)
      return
    }
    let written: boolean
    try {
      const committing = c.query('COMMIT')
      if (KILL_AT !== undefined && ++killCount === KILL_AT) process.kill(process.pid, 'SIGKILL')
      await committing
      written = true
      c.release()
    } catch (err) {
      // The outcome is PostgreSQL's to tell: ask it (under the head lock) once it answers.
      c.release(err as Error)
      try {
        written = await this.resolve(head + 1, id)
      } catch (unknown) {
        for (const p of go) p.reject(unknown)
        return
      }
      if (!written) {
        const e = pgError(err, notWritten, this.where)
        for (const p of go) p.reject(e)
        return
      }
    }
    // Written: applied here under the same LSNs, then acknowledged. The next batch may go to
    // PostgreSQL meanwhile (it reads the log after these); at most one batch is applied behind it.
    const previous = this.ownApply
    await previous
    if (head + go.length > this.headSeen) this.headSeen = head + go.length
    this.ownApply = this.applyLocally(
      go.map((p) => p.payload),
      head + 1,
    ).then(
      (lsns) => {
        for (let i = 0; i < go.length; i++) go[i]!.resolve(lsns[i]!)
      },
      (err: unknown) => {
        // The commits are durable in PostgreSQL (and other replicas will see them), but this
        // replica could not apply them: it serves no more commits until reopened.
        this.faultError ??= new KestrelError(
          'KESTREL_IO',
          `this replica could not apply commits PostgreSQL holds (${(err as Error).message}); close the database and open it again`,
          { cause: err },
        )
        for (let i = 0; i < go.length; i++) go[i]!.resolve(BigInt(head + 1 + i))
      },
    )
  }

  /**
   * Was batch `id` (first LSN `firstLsn`) written? Asked until PostgreSQL answers — bounded by
   * RESOLVE_WAIT_MS, after which the commits reject saying the outcome is unknown.
   */
  private async resolve(firstLsn: number, id: string): Promise<boolean> {
    const until = Date.now() + RESOLVE_WAIT_MS
    let pause: number = RESOLVE_PAUSE_MS[0]
    let last: unknown
    // Bounded by the deadline.
    while (Date.now() < until) {
      try {
        const c = await this.pool.connect()
        try {
          const written = await this.log.wasWritten(c, firstLsn, id)
          c.release()
          this.unreachable = undefined
          return written
        } catch (err) {
          c.release(err as Error)
          throw err
        }
      } catch (err) {
        last = err
        if (!isUnreachable(err)) break
      }
      await new Promise((r) => setTimeout(r, pause))
      pause = Math.min(pause * 2, RESOLVE_PAUSE_MS[1])
    }
    const e = new KestrelError(
      'KESTREL_UNAVAILABLE',
      `the connection to PostgreSQL (${this.where}) was lost while committing and PostgreSQL did not answer for ${RESOLVE_WAIT_MS / 60_000} minutes, so whether these commits were written is unknown; reopen the database once PostgreSQL is back and read them to find out`,
      { cause: last },
    )
    this.unreachable = e
    throw e
  }

  // ---- what differs from the engine (reads and the rest are forwarded by WrappedCore) ------

  override stats(): CoreStats {
    const applied = Number(this.inner.lastCommitId())
    return {
      ...this.inner.stats(),
      replica: {
        schema: this.log.schema,
        headLsn: Math.max(this.headSeen, applied),
        lagCommits: Math.max(0, this.headSeen - applied),
        reachable: this.unreachable === undefined,
      },
    }
  }

  override adoptCheckpoint(): boolean {
    return false
  }

  override leaveSharing(): void {}

  override catchUp(_tail: LogTail, _adopt: boolean): Uint8Array[] {
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'catchUp() is for a shared directory, not a PostgreSQL replica')
  }

  private stopTimers(): void {
    this.closed = true
    if (this.pollTimer) clearTimeout(this.pollTimer)
    if (this.relistenTimer) clearTimeout(this.relistenTimer)
    if (this.houseTimer) clearInterval(this.houseTimer)
    const l = this.listener
    this.listener = undefined
    l?.end().catch(() => {})
  }

  async close(): Promise<void> {
    if (this.closed) return
    // Commits already queued are written (or refused) first; nothing new is queued once closed.
    // Bounded: the committer ends once the queue is empty.
    while (this.running) await new Promise<void>((r) => setImmediate(r))
    this.stopTimers()
    await this.serial
    await this.ownApply
    await this.publishing
    try {
      // It holds back the trim no more (a replica that is gone is dropped after a while anyway).
      if (!this.unreachable) await this.log.leave(this.pool, this.replicaId).catch(() => {})
      await this.inner.close()
    } finally {
      await this.pool.end().catch(() => {})
      await this.unlock()
    }
  }

  async crash(tearBytes?: number): Promise<void> {
    this.stopTimers()
    for (const p of this.pending.splice(0)) p.reject(new KestrelError('KESTREL_CLOSED', 'the database crashed (simulated) before this commit was acknowledged'))
    try {
      await this.inner.crash(tearBytes)
    } finally {
      void this.pool.end().catch(() => {})
      await this.unlock()
    }
  }
}

/**
 * Fill the empty directory `dir` from the newest snapshot: its LSN, or 0 (nothing done) when
 * there is none. The replica's row goes in first, at the snapshot's LSN, so that no trim takes
 * the log after it while it downloads.
 */
async function bootstrap(pool: Pool, log: PgLog, replicaId: string, dir: string): Promise<number> {
  const newest = await log.newestSnapshot(pool)
  if (newest === 0) return 0
  await log.heartbeat(pool, replicaId, newest)
  return fetchSnapshot(pool, log, dir)
}

/** Empty a replica directory that is to start again from a snapshot (everything in it is in PostgreSQL). */
function wipe(dir: string): void {
  // Bounded: the entries of one directory.
  for (const name of readdirSync(dir)) rmSync(join(dir, name), { recursive: true, force: true })
}
