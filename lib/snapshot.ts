/** Read-only views pinned at one commit: `db.snapshot()` and `db.at(commitId)`. */
import { encodeKey, type Key } from './codec/key.js'
import { decodeValue } from './codec/value.js'
import { Collection } from './collection.js'
import { findEntries, scanEntries, type Entry } from './cursor.js'
import { KestrelError } from './errors.js'
import { ended, opened, type Leak } from './leaks.js'
import { scanBounds, type ScanOptions } from './scan.js'
import type { TransactionHost } from './transaction.js'
import { findPlan, type FindQuery } from './txn/indexes.js'

/**
 * A pinned read view: every read sees exactly the commits up to `commitId`, however long the view
 * stays open and across any number of awaits. Close it when done: an open view keeps the versions
 * it can see in memory (one forgotten and garbage-collected is released, with a warning).
 */
export class ReadView {
  private closed = false
  private readonly snap: number
  /** @internal see leaks.ts. */
  leakState: 0 | 1 | 2 = 0

  /** @internal use `db.snapshot()` or `db.at()`. */
  constructor(
    private readonly host: TransactionHost,
    readonly commitId: bigint,
  ) {
    this.snap = Number(commitId)
    host.coordinator.pin(this.snap)
    opened(this)
  }

  private check<T>(collection: Collection<T>): string {
    if (this.closed) throw new KestrelError('KESTREL_CLOSED', 'this read view is closed; take a new one with db.snapshot() or db.at()')
    this.host.assertOpen()
    if (!Collection.is(collection) || collection.owner !== this.host.id) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'expected a collection from this database handle (db.collection(name))')
    }
    return collection.name
  }

  /** The value of `key` at this view's commit, or `undefined`. */
  get<T>(collection: Collection<T>, key: Key): T | undefined {
    const name = this.check(collection)
    const bytes = this.host.coordinator.core.get(name, encodeKey(key), this.snap)
    return bytes === undefined ? undefined : decodeValue<T>(bytes)
  }

  /**
   * Entries at this view's commit, in key order (or reverse), within the bounds; read lazily, in
   * chunks, as the result is iterated (while the view is open).
   */
  scan<T>(collection: Collection<T>, options: ScanOptions = {}): Iterable<Entry<T>> {
    const name = this.check(collection)
    const alive = (): void => {
      this.check(collection)
    }
    return scanEntries<T>(this.host.coordinator.core, name, scanBounds(options), this.snap, alive)
  }

  /**
   * Records whose index key for `index` is `query` (an index key) or lies in the range `query`
   * describes, at this view's commit, in index order (see `Transaction.find`).
   */
  find<T>(collection: Collection<T>, index: string, query: FindQuery): Iterable<Entry<T>> {
    const name = this.check(collection)
    const s = this.host.coordinator.indexes.get(name, index)
    const alive = (): void => {
      this.check(collection)
    }
    return findEntries<T>(this.host.coordinator.core, s, findPlan(query), this.snap, alive)
  }

  /** @internal Still pinning its snapshot (leaks.ts). */
  get pinning(): boolean {
    return !this.closed
  }

  /** @internal see leaks.ts. */
  leak(): Leak {
    return { coordinator: this.host.coordinator, snapshot: this.snap, what: 'read view' }
  }

  /** Release the view (idempotent). */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.host.coordinator.unpin(this.snap)
    ended(this)
  }
}
