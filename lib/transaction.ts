/**
 * Transactions: a private write set in TypeScript; `commit()` turns it into one log record.
 * Reads see the latest committed data plus the transaction's own writes (snapshot isolation
 * arrives with the MVCC version store).
 */
import { bytesToOrderedString, compareBytes } from './codec/bytes.js'
import { decodeKey, encodeKey, type Key } from './codec/key.js'
import { decodeValue, encodeValue } from './codec/value.js'
import { Collection } from './collection.js'
import { KestrelError } from './errors.js'
import { encodeCommit, type WriteOp } from './core/payload.js'
import type { Core, CoreScanOptions } from './core/types.js'
import { scanBounds, type ScanOptions } from './scan.js'

/** What `commit()` resolves with. */
export interface CommitInfo {
  /** The commit's id: its log sequence number. Ids grow with commit order. */
  commitId: bigint
}

/** One entry yielded by `scan`. */
export interface Entry<T> {
  key: Key
  value: T
}

interface Write {
  collection: string
  key: Uint8Array
  /** Encoded value; undefined = delete. */
  value: Uint8Array | undefined
}

/** The owner of a transaction: checks that the database handle is still open. */
export interface TransactionHost {
  readonly core: Core
  assertOpen(): void
  readonly id: object
}

/**
 * A read-write transaction. Create one with `db.begin()` or let `db.transaction(fn)` manage it.
 * Writes stay private until `commit()` resolves; after `commit()` or `rollback()` every method
 * throws `KESTREL_TRANSACTION_DONE`.
 */
export class Transaction {
  private done: 'commit' | 'rollback' | undefined
  /** collection → ordered-string key → write. The last write of a key wins. */
  private readonly writes = new Map<string, Map<string, Write>>()

  /** @internal use `db.begin()`. */
  constructor(private readonly host: TransactionHost) {}

  private check<T>(collection: Collection<T>): string {
    if (this.done) {
      throw new KestrelError('KESTREL_TRANSACTION_DONE', `this transaction was already ${this.done === 'commit' ? 'committed' : 'rolled back'}; start a new one with db.begin()`)
    }
    this.host.assertOpen()
    if (!Collection.is(collection)) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'expected a collection from db.collection(name)')
    }
    if (collection.owner !== this.host.id) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', `collection ${collection.name} belongs to another database handle; get it from this one with db.collection('${collection.name}')`)
    }
    return collection.name
  }

  /** The value of `key`, or `undefined`: the transaction's own write if any, else the latest committed. */
  get<T>(collection: Collection<T>, key: Key): T | undefined {
    const name = this.check(collection)
    const k = encodeKey(key)
    const own = this.writes.get(name)?.get(bytesToOrderedString(k))
    const bytes = own ? own.value : this.host.core.get(name, k)
    return bytes === undefined ? undefined : decodeValue<T>(bytes)
  }

  /** Set `key` to `value` when the transaction commits. The value is encoded now. */
  put<T>(collection: Collection<T>, key: Key, value: T): void {
    const name = this.check(collection)
    this.record(name, encodeKey(key), encodeValue(value))
  }

  /** Remove `key` when the transaction commits (no error if it does not exist). */
  delete<T>(collection: Collection<T>, key: Key): void {
    const name = this.check(collection)
    this.record(name, encodeKey(key), undefined)
  }

  private record(collection: string, key: Uint8Array, value: Uint8Array | undefined): void {
    let m = this.writes.get(collection)
    if (!m) {
      m = new Map()
      this.writes.set(collection, m)
    }
    m.set(bytesToOrderedString(key), { collection, key, value })
  }

  /**
   * Entries of `collection` in key order (or reverse), within the bounds, with the transaction's
   * own writes applied. The result is computed when called.
   */
  scan<T>(collection: Collection<T>, options: ScanOptions = {}): Iterable<Entry<T>> {
    const name = this.check(collection)
    const bounds: CoreScanOptions = scanBounds(options)
    const own = this.writes.get(name)
    const limit = bounds.limit
    let rows: Array<[Uint8Array, Uint8Array | undefined]>
    if (!own || own.size === 0) {
      rows = this.host.core.scan(name, bounds)
    } else {
      // Overlay the write set on the committed rows (without the limit: own deletes may remove some).
      const merged = new Map<string, [Uint8Array, Uint8Array | undefined]>()
      for (const row of this.host.core.scan(name, { ...bounds, limit: undefined })) merged.set(bytesToOrderedString(row[0]), row)
      for (const [s, w] of own) if (inBounds(w.key, bounds)) merged.set(s, [w.key, w.value])
      rows = [...merged.values()].filter((r) => r[1] !== undefined)
      rows.sort((a, b) => compareBytes(a[0], b[0]) * (bounds.reverse ? -1 : 1))
      if (limit !== undefined) rows = rows.slice(0, limit)
    }
    return (function* () {
      for (const [k, v] of rows) yield { key: decodeKey(k), value: decodeValue<T>(v!) }
    })()
  }

  /**
   * Make the writes durable and visible. Resolves with the commit id once the log record is
   * acknowledged (fdatasync'd in `durability: 'sync'`); rejects with a `KestrelError` otherwise.
   * A transaction without writes resolves with the current last commit id and logs nothing.
   */
  async commit(): Promise<CommitInfo> {
    this.assertActive()
    this.host.assertOpen()
    this.done = 'commit'
    const ops: WriteOp[] = []
    for (const m of this.writes.values()) for (const w of m.values()) ops.push(w)
    this.writes.clear()
    if (ops.length === 0) return { commitId: this.host.core.lastCommitId() }
    const commitId = await this.host.core.commit(encodeCommit(ops))
    return { commitId }
  }

  /** Discard the writes. Calling it again, or after a failed commit, does nothing. */
  rollback(): void {
    if (this.done === 'commit') {
      throw new KestrelError('KESTREL_TRANSACTION_DONE', 'this transaction was already committed; rollback() is only for transactions not committed yet')
    }
    this.done = 'rollback'
    this.writes.clear()
  }

  /** Has `commit()` or `rollback()` been called? */
  get finished(): boolean {
    return this.done !== undefined
  }

  private assertActive(): void {
    if (this.done) {
      throw new KestrelError('KESTREL_TRANSACTION_DONE', `this transaction was already ${this.done === 'commit' ? 'committed' : 'rolled back'}; start a new one with db.begin()`)
    }
  }
}

function inBounds(key: Uint8Array, b: CoreScanOptions): boolean {
  if (b.gte && compareBytes(key, b.gte) < 0) return false
  if (b.gt && compareBytes(key, b.gt) <= 0) return false
  if (b.lte && compareBytes(key, b.lte) > 0) return false
  if (b.lt && compareBytes(key, b.lt) >= 0) return false
  return true
}
