/** `open()` and the Database handle. */
import { Collection, checkCollectionName, type CollectionOptions } from './collection.js'
import { KestrelError } from './errors.js'
import { resolveOptions, type OpenOptions } from './options.js'
import { acquire, forget, type Lease } from './registry.js'
import { Transaction, type TransactionHost } from './transaction.js'
import type { CoreStats, EngineName } from './core/types.js'

/** Options of {@link Database.transaction}. */
export interface TransactionOptions {
  /** Re-runs on conflict (conflicts arrive with snapshot isolation); 0 hands them to the caller. */
  retries?: number
}

/** Statistics of a database handle's engine. */
export type DatabaseStats = CoreStats

/**
 * An open database. Several handles of one directory in one process share one engine; each
 * handle is closed on its own, and the engine closes with the last one.
 */
export class Database {
  private lease: Lease | undefined
  private readonly collections = new Map<string, Collection<unknown>>()
  private readonly host: TransactionHost

  /** @internal use {@link open}. */
  constructor(lease: Lease) {
    this.lease = lease
    const self = this
    this.host = {
      get core() { return self.live().core },
      assertOpen: () => { self.live() },
      id: this,
    }
  }

  private live(): Lease {
    if (!this.lease) throw new KestrelError('KESTREL_CLOSED', 'this database handle is closed; open the directory again to use it')
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
  collection<T = unknown>(name: string, options?: CollectionOptions): Collection<T> {
    this.live()
    checkCollectionName(name)
    if (options !== undefined && (typeof options !== 'object' || options === null)) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'collection options must be an object')
    }
    let c = this.collections.get(name)
    if (!c) {
      c = new Collection<unknown>(name, this)
      this.collections.set(name, c)
    }
    return c as Collection<T>
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
    if (options.retries !== undefined && (!Number.isSafeInteger(options.retries) || options.retries < 0)) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'retries must be a non-negative integer')
    }
    const tx = this.begin()
    let result: R
    try {
      result = await fn(tx)
    } catch (err) {
      if (!tx.finished) tx.rollback()
      throw err
    }
    if (!tx.finished) await tx.commit()
    return result
  }

  /** The id of the last visible commit (0n for an empty database). */
  lastCommitId(): bigint {
    return this.live().core.lastCommitId()
  }

  /** Engine statistics: log position, batches, syncs, segments, keys. */
  stats(): DatabaseStats {
    return this.live().core.stats()
  }

  /** Close this handle. Queued commits are written first. Idempotent. */
  async close(): Promise<void> {
    const lease = this.lease
    if (!lease) return
    this.lease = undefined
    await lease.release()
  }

  /**
   * Test-only: simulate power loss (needs `faults` in the open options): unsynced log data is
   * lost except `tearBytes` of the last write. Every handle of the directory is unusable after it.
   */
  async simulateCrash(tearBytes = 0): Promise<void> {
    const lease = this.live()
    this.lease = undefined
    await lease.core.crash(tearBytes)
    await forget(lease.dir, lease.core)
  }
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
  if (typeof path !== 'string' || path.length === 0) {
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'open(path) needs a directory path string')
  }
  const { engine, core } = resolveOptions(options)
  return new Database(await acquire(path, engine, core))
}
