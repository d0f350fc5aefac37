/** `open()` and the Database handle. */
import { setTimeout as sleep } from 'node:timers/promises'
import { Collection, checkCollectionName, type CollectionOptions } from './collection.js'
import { ConflictError, KestrelError } from './errors.js'
import { resolveOptions, type OpenOptions } from './options.js'
import { acquire, forget, type Lease } from './registry.js'
import { ReadView } from './snapshot.js'
import { findEntries, latestEntries, scanEntries, type Entry } from './cursor.js'
import { encodeKey, type Key } from './codec/key.js'
import { decodeValue } from './codec/value.js'
import { scanBounds, type ScanOptions } from './scan.js'
import { findPlan, type FindQuery } from './txn/indexes.js'
import { Transaction, type Resolver, type TransactionHost } from './transaction.js'
import type { CoreStats, EngineName, FaultOptions } from './core/types.js'
import { backupCore, type BackupOptions, type BackupResult } from './backup.js'
import { verifyFiles, type VerifyReport } from './verify.js'
import { buildIndex, loadMarker } from './txn/build.js'
import type { IndexState } from './txn/indexes.js'
import type { ScavengerStats } from './scavenger/policy.js'

/** Options of {@link Database.transaction}. */
export interface TransactionOptions {
  /**
   * How many times to re-run `fn` after a `ConflictError` (default 8); 0 hands the first conflict
   * to the caller. A retry waits for the winning commit to become visible when it is still in
   * flight, and backs off exponentially with jitter after repeated conflicts.
   */
  retries?: number
}

/** Statistics of a database handle's engine. */
export interface DatabaseStats extends Omit<CoreStats, 'durableLsn' | 'checkpointLsn' | 'flow'> {
  /** The last acknowledged commit (0n when the log is empty). */
  durableLsn: bigint
  /** The commit id of the last checkpoint (0n = none): a reopen replays the log after it. */
  checkpointLsn: bigint
  /** The gopher and flusher; `appliedLsn`: the last commit handed to the checkpoint writer. */
  flow: Omit<CoreStats['flow'], 'appliedLsn'> & { appliedLsn: bigint }
  /** Snapshots pinned by open transactions, read views and running one-shot iterations. */
  pinnedSnapshots: number
  /** The oldest commit id still readable (`db.at` below it is `KESTREL_HISTORY_GONE`). */
  horizon: bigint
  /** The scavenger: cycles, age groups, what it pruned and retired (`recordBytes` is the memory it keeps). */
  scavenger: ScavengerStats
}

const RETRIES_DEFAULT = 8
const BACKOFF_BASE_MS = 1
const BACKOFF_MAX_MS = 100
/** Retries queue per contended key at once; past this many attempts they also back off. */
const BACKOFF_AFTER_ATTEMPTS = 4

/**
 * An open database. Several handles of one directory in one process share one engine; each
 * handle is closed on its own, and the engine closes with the last one.
 */
export class Database {
  private lease: Lease | undefined
  private readonly collections = new Map<string, Collection<unknown>>()
  private readonly resolvers = new Map<string, Resolver>()
  private readonly host: TransactionHost

  /** Set by close(): from then on the handle starts nothing new. */
  private closing: Promise<void> | undefined
  /** Commits started on this handle and not settled yet: close() waits for them. */
  private commitsInFlight = 0
  /** Set while close() waits for the commits in flight. */
  private commitsDrained: (() => void) | undefined

  /** @internal use {@link open}. */
  constructor(lease: Lease) {
    this.lease = lease
    this.host = {
      // The engine's coordinator for the handle's whole life: what was started on the handle
      // (a commit in flight, a rollback, a view's close) finishes there also after close().
      coordinator: lease.coordinator,
      assertOpen: () => {
        this.live()
      },
      id: this,
      resolverOf: (name) => this.resolvers.get(name),
      commitStarted: () => {
        this.commitsInFlight++
      },
      commitSettled: () => {
        if (--this.commitsInFlight === 0) this.commitsDrained?.()
      },
    }
  }

  private live(): Lease {
    if (!this.lease || this.closing) throw new KestrelError('KESTREL_CLOSED', 'this database handle is closed; open the directory again to use it')
    return this.lease
  }

  /** The engine actually running: `'native'` or `'ts'`. */
  get engine(): EngineName {
    return this.live().core.engine
  }

  /** The database directory (absolute, symlinks resolved). */
  get path(): string {
    return this.live().dir
  }

  /** A collection handle; the collection exists once something is written to it. */
  collection<T = unknown>(name: string, options?: CollectionOptions<T>): Collection<T> {
    this.live()
    checkCollectionName(name)
    if (options !== undefined && (typeof options !== 'object' || options === null)) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'collection options must be an object')
    }
    if (options?.resolver !== undefined) {
      if (typeof options.resolver !== 'function')
        throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'a collection resolver must be a function (ancestor, committed, mine) => merged')
      this.resolvers.set(name, options.resolver as Resolver)
    }
    if (options?.indexes !== undefined) {
      const coordinator = this.live().coordinator
      for (const s of coordinator.indexes.define(name, options.indexes as Record<string, never>)) this.startBuild(s)
    }
    let c = this.collections.get(name)
    if (!c) {
      c = new Collection<unknown>(name, this, () => this.indexesBuilt(name))
      this.collections.set(name, c)
    }
    return c as Collection<T>
  }

  /** Build an index new to the engine, in the background (or note that it was built before). */
  private startBuild(s: IndexState): void {
    const coordinator = this.live().coordinator
    if (loadMarker(coordinator, s)) return
    s.built = buildIndex(coordinator, () => this.begin(), s).catch((err: unknown) => {
      s.failure =
        err instanceof KestrelError ? err : new KestrelError('KESTREL_IO', `building index ${s.name} of ${s.collection} failed: ${String(err)}`, { cause: err })
      throw s.failure
    })
    // Reported through collection.ready(); not an unhandled rejection meanwhile.
    s.built.catch(() => undefined)
  }

  /** Resolves when every index of `name` is built; rejects with the first build failure. */
  private async indexesBuilt(name: string): Promise<void> {
    const states = this.live().coordinator.indexes.of(name) ?? []
    await Promise.all(states.map((st) => st.built))
  }

  /** Start a transaction you commit or roll back yourself. */
  begin(): Transaction {
    this.live()
    return new Transaction(this.host)
  }

  /**
   * Run `fn` in a transaction and commit its writes; resolves with `fn`'s result once the commit
   * is acknowledged. If `fn` throws, the transaction is rolled back and the error rethrown.
   */
  async transaction<R>(fn: (tx: Transaction) => R | Promise<R>, options: TransactionOptions = {}): Promise<R> {
    if (typeof fn !== 'function') throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'db.transaction(fn) needs a function')
    const retries = options.retries ?? RETRIES_DEFAULT
    if (!Number.isSafeInteger(retries) || retries < 0) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'retries must be a non-negative integer')
    }
    // The slot this transaction queued on after a conflict (at most one at a time).
    let queued: { slot: string; release: () => void } | undefined
    try {
      // Bounded by `retries`.
      for (let attempt = 0; ; attempt++) {
        const tx = new Transaction(this.host, true)
        tx.retriedOnConflict = attempt < retries
        try {
          const result = await fn(tx)
          // A commit the body started is this attempt's commit: report its outcome, never commit
          // again. A body that rolled back returns its result.
          if (tx.commitOutcome) await tx.commitOutcome
          else if (!tx.finished) await tx.commit()
          return result
        } catch (err) {
          if (!tx.finished) tx.rollback()
          // The body may have thrown with its own commit in flight: once that lands, running the
          // body again would commit twice.
          if (
            tx.commitOutcome &&
            (await tx.commitOutcome.then(
              () => true,
              () => false,
            ))
          )
            throw err
          if (!(err instanceof ConflictError) || attempt >= retries) throw err
          if (err.slot !== undefined && queued?.slot !== err.slot) {
            queued?.release()
            queued = undefined
            queued = { slot: err.slot, release: await this.live().coordinator.queueForSlot(err.slot) }
          }
          // The winner may still be committing: retrying before it is visible collides again.
          if (err.retryAfter) await err.retryAfter
          if (attempt >= BACKOFF_AFTER_ATTEMPTS) {
            // Exponential backoff with full jitter for contention the queue does not cover.
            await sleep(Math.random() * Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (attempt - BACKOFF_AFTER_ATTEMPTS)))
          }
        }
      }
    } finally {
      queued?.release()
    }
  }

  /**
   * The value of `key` in `collection` at the newest visible commit, or `undefined`: one read,
   * no transaction, nothing pinned.
   */
  get<T>(collection: Collection<T>, key: Key): T | undefined {
    const name = this.own(collection)
    const core = this.live().core
    const bytes = core.get(name, encodeKey(key), Number(core.lastCommitId()))
    return bytes === undefined ? undefined : decodeValue<T>(bytes)
  }

  /**
   * Entries of `collection` in key order (or reverse) within the bounds, at the newest commit
   * visible when the iteration starts; read lazily in chunks. The snapshot is pinned only while
   * the iteration runs — a loop that ends or breaks releases it — and each iteration of the
   * result reads afresh.
   *
   * @example
   * for (const { key, value } of db.scan(users, { prefix: 'u', limit: 10 })) console.log(key, value)
   */
  scan<T>(collection: Collection<T>, options: ScanOptions = {}): Iterable<Entry<T>> {
    const name = this.own(collection)
    const bounds = scanBounds(options)
    const coordinator = this.live().coordinator
    const alive = (): void => {
      this.live()
    }
    return latestEntries<T>(coordinator, 'scan', (snapshot) => scanEntries<T>(coordinator.core, name, bounds, snapshot, alive))
  }

  /**
   * Records of `collection` whose index key for `index` is `query` (an index key) or lies in the
   * range `query` describes, at the newest commit visible when the iteration starts, in index
   * order; pinned only while the iteration runs (see {@link Database.scan}).
   */
  find<T>(collection: Collection<T>, index: string, query: FindQuery): Iterable<Entry<T>> {
    const name = this.own(collection)
    const coordinator = this.live().coordinator
    const s = coordinator.indexes.get(name, index)
    const plan = findPlan(query)
    const alive = (): void => {
      this.live()
    }
    return latestEntries<T>(coordinator, 'lookup', (snapshot) => findEntries<T>(coordinator.core, s, plan, snapshot, alive)[Symbol.iterator]())
  }

  /** The name of a collection of this handle, or `KESTREL_INVALID_ARGUMENT`. */
  private own<T>(collection: Collection<T>): string {
    this.live()
    if (!Collection.is(collection) || collection.owner !== this) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'expected a collection from this database handle (db.collection(name))')
    }
    return collection.name
  }

  /** A read view pinned at the last visible commit; usable across awaits until `close()`. */
  snapshot(): ReadView {
    const lease = this.live()
    return new ReadView(this.host, lease.core.lastCommitId())
  }

  /**
   * A read view of the database as it was right after commit `commitId`, inside the
   * `retainHistory` window; `KESTREL_HISTORY_GONE` when those versions were already pruned.
   */
  at(commitId: bigint | number): ReadView {
    const lease = this.live()
    if ((typeof commitId !== 'bigint' && typeof commitId !== 'number') || Number(commitId) < 0 || !Number.isSafeInteger(Number(commitId))) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', `db.at() needs a commit id (bigint), got ${String(commitId)}`)
    }
    const id = BigInt(commitId)
    const last = lease.core.lastCommitId()
    if (id > last) throw new KestrelError('KESTREL_INVALID_ARGUMENT', `commit ${id} does not exist yet (the last commit is ${last})`)
    const view = new ReadView(this.host, id) // pin first, so that the horizon cannot pass it meanwhile
    const horizon = lease.core.horizon()
    if (Number(id) < horizon) {
      view.close()
      throw new KestrelError(
        'KESTREL_HISTORY_GONE',
        `commit ${id} is older than the retained history (the oldest readable commit is ${horizon}); open the database with a larger retainHistory: { commits, ms } to travel further back`,
      )
    }
    return view
  }

  /** The id of the last visible commit (0n for an empty database). */
  lastCommitId(): bigint {
    return this.live().core.lastCommitId()
  }

  /** Engine statistics: log position, batches, syncs, segments, keys. */
  stats(): DatabaseStats {
    const lease = this.live()
    const s = lease.core.stats()
    // Commit ids are bigints in the public API, as `commitId` is.
    return {
      ...s,
      durableLsn: BigInt(s.durableLsn),
      checkpointLsn: BigInt(s.checkpointLsn),
      flow: { ...s.flow, appliedLsn: BigInt(s.flow.appliedLsn) },
      pinnedSnapshots: lease.coordinator.pinned,
      horizon: BigInt(lease.core.horizon()),
      scavenger: lease.coordinator.scavenger.stats(),
    }
  }

  /**
   * Run a scavenger cycle now (maintenance, tests): prune versions no snapshot can see (and the
   * index entries only they held), then — when the record memory is over the scavenger's
   * threshold — retire the least recently used checkpointed records down to its floor. The
   * scavenger also runs on its own, by allocation volume and on a timer.
   */
  async scavenge(): Promise<ScavengerStats> {
    const coordinator = this.live().coordinator
    await this.track(coordinator.scavenger.run())
    return coordinator.scavenger.stats()
  }

  /**
   * Write a checkpoint of every commit visible now — except the last `retainHistory.commits`
   * ones, which no checkpoint covers — and trim the log behind it (the flusher also does this on
   * its own, by size and age). Resolves with the checkpoint's commit id: every commit up to it is
   * in the page store.
   */
  async checkpoint(): Promise<{ commitId: bigint }> {
    const core = this.live().core
    await this.track(core.checkpoint())
    return { commitId: BigInt(core.stats().checkpointLsn) }
  }

  /**
   * Copy a consistent database into directory `dir` (missing or empty) while writers go on.
   * The copy holds every commit acknowledged before the call, whole transactions only, and
   * opens with either engine; `commitId` is the last commit it holds.
   *
   * @example
   * const { commitId, bytes } = await db.backup('/backups/today', {
   *   onProgress: ({ bytesCopied, bytesTotal }) => console.log(`${bytesCopied}/${bytesTotal}`),
   *   signal: AbortSignal.timeout(60_000),
   * })
   */
  backup(dir: string, options: BackupOptions = {}): Promise<BackupResult> {
    return this.track(backupCore(this.live().core, dir, options))
  }

  /**
   * Check the files of this database while it runs: page checksums, B+tree order and fill,
   * free-list accounting and the log's continuity up to the last acknowledged commit.
   */
  async verify(): Promise<VerifyReport> {
    const core = this.live().core
    await this.track(core.suspendFlusher())
    try {
      const plan = core.backupPlan()
      return verifyFiles(core.dir, plan.segments)
    } finally {
      core.resumeFlusher()
    }
  }

  private readonly running = new Set<Promise<unknown>>()

  /** Keep `p` (a backup, check or scavenge) until it settles, so that close() waits for it. */
  private track<T>(p: Promise<T>): Promise<T> {
    this.running.add(p)
    const done = (): void => {
      this.running.delete(p)
    }
    p.then(done, done)
    return p
  }

  /**
   * Close this handle. From the call on it starts nothing new (`KESTREL_CLOSED`); it resolves
   * once every commit started on it before has settled — resolved and durable, or rejected and
   * not written — and its backups and checks have ended. The engine closes with the last handle
   * of its directory; other handles and their commits go on. Idempotent.
   */
  close(): Promise<void> {
    if (!this.closing) {
      const lease = this.lease
      if (!lease) return Promise.resolve()
      const closing = this.shutdown(lease)
      this.closing = closing
      // A later call after the end resolves (the handle is closed, whatever release reported).
      const ended = (): void => {
        this.closing = Promise.resolve()
      }
      closing.then(ended, ended)
    }
    return this.closing
  }

  private async shutdown(lease: Lease): Promise<void> {
    // Bounded: `closing` is set, so every later commit or backup fails at once (KESTREL_CLOSED).
    while (this.commitsInFlight + this.running.size > 0) {
      if (this.commitsInFlight > 0)
        await new Promise<void>((resolve) => {
          this.commitsDrained = resolve
        })
      await Promise.allSettled([...this.running])
    }
    this.commitsDrained = undefined
    this.lease = undefined
    await lease.release()
  }
}

/** @internal For kestreldb/testing: the engine lease of an open handle. */
export function leaseOf(db: Database): Lease {
  // biome-ignore lint/complexity/useLiteralKeys: a private member, reached only from kestreldb/testing
  return db['live']()
}

/** @internal For kestreldb/testing: the handle lets go of its engine, which was crashed on purpose. */
export async function detachCrashed(db: Database): Promise<void> {
  const lease = leaseOf(db)
  // biome-ignore lint/complexity/useLiteralKeys: a private member, reached only from kestreldb/testing
  db['lease'] = undefined
  await forget(lease.dir, lease.core)
}

/**
 * Open (or create) the database in directory `path`.
 *
 * @example
 * const db = await open('./data', { durability: 'sync' })
 * const items = db.collection<{ n: number }>('items')
 * await db.transaction((tx) => tx.put(items, 'a', { n: 1 }))
 * await db.close()
 */
export async function open(path: string, options?: OpenOptions): Promise<Database> {
  return openWith(path, options, undefined)
}

/** @internal `open`, with the test-only fault layer when `faults` is given (kestreldb/testing). */
export async function openWith(path: string, options: OpenOptions | undefined, faults: FaultOptions | undefined): Promise<Database> {
  if (typeof path !== 'string' || path.length === 0) {
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'open(path) needs a directory path string')
  }
  const { engine, core, retain, postgres } = resolveOptions(options)
  if (faults) core.faults = faults
  return new Database(await acquire(path, engine, core, retain, postgres))
}
