/**
 * Transactions: snapshot isolation over the engine's version store. A transaction reads one
 * snapshot (the last visible commit when it began) plus its own writes, however long it stays
 * open; its writes stay in a private write set until `commit()`, which validates them (first
 * committer wins, merges never conflict with merges), turns them into one log record and resolves
 * once that record is durable and visible.
 */
import { bytesToOrderedString, compareBytes } from './codec/bytes.js'
import { decodeKey, encodeKey, type Key } from './codec/key.js'
import { decodeValue, encodeValue } from './codec/value.js'
import { Collection } from './collection.js'
import { ConflictError, KestrelError, UniqueError } from './errors.js'
import { OP_APPEND, OP_DELETE, OP_INCREMENT, OP_PUT, encodeCommit, isMerge, type OpKind, type WriteOp } from './format/payload.js'
import { encodeEnvelope, type IndexKey } from './format/envelope.js'
import type { CoreScanOptions } from './core/types.js'
import { scanBounds, type ScanOptions } from './scan.js'
import { slotOf, uniqueSlotOf, type Coordinator } from './txn/coordinator.js'
import {
  compareRows,
  exactPlan,
  findPlan,
  holdersWhileBuilding,
  inKeyBounds,
  indexKeysOf,
  noteWritten,
  scanFind,
  usable,
  type FindQuery,
  type FoundRow,
} from './txn/indexes.js'
import { ended, opened, type Leak } from './leaks.js'
import { findEntries, findRows, foundEntries, mergeFind, mergeScan, scanEntries, scanRows, type Entry, type OwnRow } from './cursor.js'

/** What `commit()` resolves with. */
export interface CommitInfo {
  /** The commit's id: its log sequence number. Ids grow with commit order. */
  commitId: bigint
}

export type { Entry } from './cursor.js'

/** A pending write. Immutable: savepoints share these objects. */
interface Write {
  kind: OpKind
  collection: string
  key: Uint8Array
  /** PUT: the encoded value. */
  value?: Uint8Array
  /** APPEND: the items, in order. */
  items?: readonly unknown[]
  /** INCREMENT: the sum of the deltas. */
  delta?: number
  /** PUT into a collection with indexes: the value's index keys … */
  index?: readonly IndexKey[]
  /** … computed under this generation of index definitions. */
  gen?: number
}

type WriteSet = Map<string, Map<string, Write>>

/** The owner of a transaction: the engine, its coordinator, and the handle's open state. */
export interface TransactionHost {
  /** The engine's coordinator; usable after the handle closed (to finish what was started). */
  readonly coordinator: Coordinator
  /** Throws `KESTREL_CLOSED` once the handle's close() was called. */
  assertOpen(): void
  readonly id: object
  /** The collection's conflict resolver, if it has one. */
  resolverOf(collection: string): Resolver | undefined
  /** A commit was started on the handle: its close() waits for the matching commitSettled(). */
  commitStarted(): void
  /** That commit's outcome is known (resolved and durable, or rejected and not written). */
  commitSettled(): void
}

/**
 * A per-collection conflict resolver (ZODB-style): given the value at this transaction's snapshot
 * (`ancestor`), the value committed since (`committed`) and this transaction's value (`mine`),
 * return the merged value, or throw `ConflictError` when the changes cannot be merged.
 * `undefined` stands for "absent" in all three places (return `undefined` to delete).
 */
export type Resolver = (ancestor: unknown, committed: unknown, mine: unknown) => unknown

/** A savepoint handle from `tx.savepoint()`. */
export interface Savepoint {
  /** @internal */ readonly id: number
}

/** Most validation passes a commit makes while waiting out in-flight writes to resolve them. */
const RESOLVE_PASSES_MAX = 64

function cloneWrites(w: WriteSet): WriteSet {
  const out: WriteSet = new Map()
  for (const [c, m] of w) out.set(c, new Map(m))
  return out
}

/**
 * A read-write transaction. Create one with `db.begin()` or let `db.transaction(fn)` manage it.
 * Reads are synchronous and see the snapshot plus the transaction's own writes. Once `commit()`
 * or `rollback()` is called — while the commit is in flight too — every method throws
 * `KESTREL_TRANSACTION_DONE`.
 */
export class Transaction {
  /**
   * Where the transaction stands. It is done from the moment commit() or rollback() is called:
   * `committing` until the engine reports the commit's outcome, then `committed`, or `rolledBack`
   * (also after a failed commit: its writes were discarded).
   */
  private state: 'active' | 'committing' | 'committed' | 'rolledBack' = 'active'
  /** @internal see leaks.ts. */
  leakState: 0 | 1 | 2 = 0
  /** The outcome of the one commit() call, once made. */
  private outcome: Promise<CommitInfo> | undefined
  /** collection → ordered-string key → write. The last write of a key wins. */
  private writes: WriteSet = new Map()
  private readonly savepoints: Array<{ id: number; writes: WriteSet }> = []
  private nextSavepoint = 1
  /** The commit id this transaction reads at. */
  readonly snapshot: bigint
  private readonly snap: number

  /**
   * The engine's coordinator, bound for the transaction's life: once a commit is handed to the
   * engine, its outcome is the engine's, whatever happens to the handle meanwhile.
   */
  private readonly coordinator: Coordinator

  /**
   * @internal use `db.begin()`. `managed`: `db.transaction` runs it and reports the outcome of
   * its commit, also of one the body started without awaiting it.
   */
  /**
   * @internal `db.transaction` will retry a conflict of this attempt: its ConflictError is
   * normally never seen by the caller (only by a body that commits and catches it itself), so it
   * is made without a stack trace (capturing one is most of its cost).
   */
  retriedOnConflict = false

  constructor(
    private readonly host: TransactionHost,
    private readonly managed = false,
  ) {
    host.assertOpen()
    this.coordinator = host.coordinator
    this.snap = Number(this.coordinator.core.lastCommitId())
    this.snapshot = BigInt(this.snap)
    this.coordinator.pin(this.snap)
    opened(this)
  }

  /** The end of the transaction: its writes go and its snapshot is released (once). */
  private finish(how: 'committed' | 'rolledBack'): void {
    if (this.state === 'committed' || this.state === 'rolledBack') return
    this.state = how
    this.writes = new Map()
    this.savepoints.length = 0
    this.coordinator.unpin(this.snap)
    ended(this)
  }

  private check<T>(collection: Collection<T>): string {
    // A closed handle is the cause to report first (a commit tried after close() ended this
    // transaction with KESTREL_CLOSED too).
    this.host.assertOpen()
    this.assertActive()
    if (!Collection.is(collection)) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'expected a collection from db.collection(name)')
    }
    if (collection.owner !== this.host.id) {
      throw new KestrelError(
        'KESTREL_INVALID_ARGUMENT',
        `collection ${collection.name} belongs to another database handle; get it from this one with db.collection('${collection.name}')`,
      )
    }
    return collection.name
  }

  private assertActive(): void {
    if (this.state !== 'active') throw this.doneError()
  }

  private doneError(): KestrelError {
    switch (this.state) {
      case 'committing':
        return new KestrelError(
          'KESTREL_TRANSACTION_DONE',
          "this transaction's commit is in flight: a transaction commits once; await the promise its first commit() returned, and start a new one with db.begin() for more work",
        )
      case 'committed':
        return new KestrelError('KESTREL_TRANSACTION_DONE', 'this transaction was already committed; start a new one with db.begin()')
      default:
        return new KestrelError('KESTREL_TRANSACTION_DONE', 'this transaction was already rolled back (or its commit failed); start a new one with db.begin()')
    }
  }

  /** The value bytes at the snapshot (no own writes). */
  private base(collection: string, key: Uint8Array): Uint8Array | undefined {
    return this.coordinator.core.get(collection, key, this.snap)
  }

  /** The value a read sees: own write applied over the snapshot value. */
  private resolveRead(w: Write | undefined, base: Uint8Array | undefined): unknown {
    if (!w) return base === undefined ? undefined : decodeValue(base)
    switch (w.kind) {
      case OP_PUT:
        return decodeValue(w.value!)
      case OP_DELETE:
        return undefined
      case OP_APPEND: {
        const prev = base === undefined ? [] : decodeValue(base)
        return Array.isArray(prev) ? [...prev, ...w.items!] : [prev, ...w.items!]
      }
      default: {
        const prev = base === undefined ? 0 : decodeValue(base)
        return (typeof prev === 'number' ? prev : 0) + w.delta!
      }
    }
  }

  private own(collection: string, key: Uint8Array): Write | undefined {
    return this.writes.get(collection)?.get(bytesToOrderedString(key))
  }

  /** The value of `key` at the snapshot with this transaction's writes applied, or `undefined`. */
  get<T>(collection: Collection<T>, key: Key): T | undefined {
    const name = this.check(collection)
    const k = encodeKey(key)
    const w = this.own(name, k)
    if (w && (w.kind === OP_PUT || w.kind === OP_DELETE)) return this.resolveRead(w, undefined) as T | undefined
    return this.resolveRead(w, this.base(name, k)) as T | undefined
  }

  /**
   * Set `key` to `value` when the transaction commits. The value is encoded, and its index keys
   * computed, now: bad values and failing key functions throw here, not at commit.
   */
  put<T>(collection: Collection<T>, key: Key, value: T): void {
    const name = this.check(collection)
    const k = encodeKey(key)
    const bytes = encodeValue(value)
    const registry = this.coordinator.indexes
    const states = registry.of(name)
    if (!states) {
      this.record({ kind: OP_PUT, collection: name, key: k, value: bytes })
      return
    }
    this.record({ kind: OP_PUT, collection: name, key: k, value: bytes, index: indexKeysOf(states, value, k), gen: registry.generation })
  }

  /** @internal Re-put a stored value (MessagePack bytes) with fresh index keys: index builds. */
  rewrite(collection: string, key: Uint8Array, bytes: Uint8Array): void {
    this.assertActive()
    const registry = this.coordinator.indexes
    const states = registry.of(collection) ?? []
    this.record({ kind: OP_PUT, collection, key, value: bytes, index: indexKeysOf(states, decodeValue(bytes), key), gen: registry.generation })
  }

  /** Merges cannot compute index keys (the merged value exists only at install). */
  private refuseMergeOnIndexes(name: string, key: Key, what: string): void {
    if (this.coordinator.indexes.of(name)) {
      throw new KestrelError(
        'KESTREL_INVALID_ARGUMENT',
        `cannot ${what} ${name} ${String(key)}: ${name} has secondary indexes, whose keys must be computed from the whole value; use tx.get and tx.put instead`,
      )
    }
  }

  /** Remove `key` when the transaction commits (no error if it does not exist). */
  delete<T>(collection: Collection<T>, key: Key): void {
    const name = this.check(collection)
    this.record({ kind: OP_DELETE, collection: name, key: encodeKey(key) })
  }

  /**
   * Append `item` to the list stored at `key` (a missing key is an empty list). Appends from any
   * number of concurrent transactions never conflict with each other and all take effect, in
   * commit order. A concurrent plain write of the key does conflict.
   */
  append<T>(collection: Collection<T[]>, key: Key, item: T): void {
    const name = this.check(collection)
    this.refuseMergeOnIndexes(name, key, 'append to')
    const k = encodeKey(key)
    encodeValue([item]) // refuse what cannot be stored now, not at commit
    const w = this.own(name, k)
    if (w?.kind === OP_APPEND) {
      this.record({ ...w, items: [...w.items!, item] })
      return
    }
    if (w?.kind === OP_INCREMENT) throw this.mixed(name, key, 'append to', 'incremented')
    const current = w ? this.resolveRead(w, undefined) : this.resolveRead(undefined, this.base(name, k))
    if (current !== undefined && !Array.isArray(current)) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', `cannot append to ${name} ${String(key)}: it holds a ${typeof current}, not a list; put a list first`)
    }
    if (w) {
      this.record({ kind: OP_PUT, collection: name, key: k, value: encodeValue([...((current as unknown[] | undefined) ?? []), item]) })
      return
    }
    this.record({ kind: OP_APPEND, collection: name, key: k, items: [item] })
  }

  /**
   * Add `delta` to the number stored at `key` (a missing key counts as 0). Increments from any
   * number of concurrent transactions never conflict with each other and all take effect.
   */
  increment<T>(collection: Collection<T>, key: Key, delta = 1): void {
    const name = this.check(collection)
    this.refuseMergeOnIndexes(name, key, 'increment')
    if (typeof delta !== 'number' || !Number.isFinite(delta)) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', `increment needs a finite number delta, got ${String(delta)}`)
    }
    const k = encodeKey(key)
    const w = this.own(name, k)
    if (w?.kind === OP_INCREMENT) {
      this.record({ ...w, delta: w.delta! + delta })
      return
    }
    if (w?.kind === OP_APPEND) throw this.mixed(name, key, 'increment', 'appended to')
    const current = w ? this.resolveRead(w, undefined) : this.resolveRead(undefined, this.base(name, k))
    if (current !== undefined && typeof current !== 'number') {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', `cannot increment ${name} ${String(key)}: it holds a ${typeof current}, not a number`)
    }
    if (w) {
      this.record({ kind: OP_PUT, collection: name, key: k, value: encodeValue(((current as number | undefined) ?? 0) + delta) })
      return
    }
    this.record({ kind: OP_INCREMENT, collection: name, key: k, delta })
  }

  private mixed(collection: string, key: Key, doing: string, done: string): KestrelError {
    return new KestrelError(
      'KESTREL_INVALID_ARGUMENT',
      `cannot ${doing} ${collection} ${String(key)}: this transaction already ${done} it; use one merge operator per key per transaction`,
    )
  }

  private record(w: Write): void {
    let m = this.writes.get(w.collection)
    if (!m) {
      m = new Map()
      this.writes.set(w.collection, m)
    }
    m.set(bytesToOrderedString(w.key), w)
  }

  /** Mark the current write set; `rollbackTo` returns to it, `release` forgets it. Nestable. */
  savepoint(): Savepoint {
    this.assertActive()
    const sp = { id: this.nextSavepoint++, writes: cloneWrites(this.writes) }
    this.savepoints.push(sp)
    return { id: sp.id }
  }

  private findSavepoint(sp: Savepoint, verb: string): number {
    this.assertActive()
    const i = this.savepoints.findIndex((s) => s.id === sp?.id)
    if (i < 0)
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', `cannot ${verb} this savepoint: it was released, rolled past, or belongs to another transaction`)
    return i
  }

  /** Undo every write made since `sp` (which stays usable); later savepoints are discarded. */
  rollbackTo(sp: Savepoint): void {
    const i = this.findSavepoint(sp, 'roll back to')
    this.writes = cloneWrites(this.savepoints[i]!.writes)
    this.savepoints.length = i + 1
  }

  /** Forget `sp` and every later savepoint, keeping the writes. */
  release(sp: Savepoint): void {
    const i = this.findSavepoint(sp, 'release')
    this.savepoints.length = i
  }

  /**
   * Entries of `collection` at the snapshot with the transaction's own writes applied, in key
   * order (or reverse), within the bounds. Read lazily, in chunks, as the result is iterated
   * (while the transaction is active); own writes count as they were when `scan` was called.
   */
  scan<T>(collection: Collection<T>, options: ScanOptions = {}): Iterable<Entry<T>> {
    const name = this.check(collection)
    const bounds: CoreScanOptions = scanBounds(options)
    const alive = (): void => {
      this.check(collection)
    }
    const own = this.ownScanRows(name, bounds)
    if (own.length === 0) return scanEntries<T>(this.coordinator.core, name, bounds, this.snap, alive)
    // Without the limit below: own deletions may remove rows.
    const rows = scanRows(this.coordinator.core, name, { ...bounds, limit: undefined }, this.snap, alive)
    return mergeScan<T>(rows, own, bounds.reverse === true, bounds.limit ?? Number.POSITIVE_INFINITY)
  }

  /** This transaction's writes of `collection` within `bounds`, as reads see them, in scan order. */
  private ownScanRows(name: string, bounds: CoreScanOptions): OwnRow[] {
    const own = this.writes.get(name)
    if (!own || own.size === 0) return []
    const rows: OwnRow[] = []
    for (const w of own.values()) {
      if (!inKeyBounds(w.key, bounds)) continue
      const value = w.kind === OP_PUT || w.kind === OP_DELETE ? this.resolveRead(w, undefined) : this.resolveRead(w, this.base(name, w.key))
      rows.push({ key: w.key, value })
    }
    rows.sort((a, b) => compareBytes(a.key, b.key) * (bounds.reverse ? -1 : 1))
    return rows
  }

  /**
   * Validate and commit. Resolves with the commit id once the log record is acknowledged
   * (fdatasync'd in `durability: 'sync'`) and visible; rejects with `ConflictError` when another
   * transaction committed a write to one of the keys after this snapshot (first committer wins),
   * or with another `KestrelError`; the transaction is then rolled back. A transaction without
   * writes resolves with its snapshot. A transaction commits once: from this call on, another
   * `commit()` rejects and `rollback()` throws, with `KESTREL_TRANSACTION_DONE`.
   */
  commit(): Promise<CommitInfo> {
    if (this.state !== 'active') return Promise.reject(this.doneError())
    this.state = 'committing'
    // The handle's close() waits until this outcome is known.
    this.host.commitStarted()
    const outcome = this.commitOnce()
    this.outcome = outcome
    // db.transaction reports it (also when the body did not wait for it).
    if (this.managed) outcome.catch(ignore)
    return outcome
  }

  private async commitOnce(): Promise<CommitInfo> {
    let commitId: bigint
    let bytes = 0
    try {
      let submitted = this.submit()
      if (submitted instanceof Promise) submitted = await submitted
      if (submitted === null) {
        this.finish('committed')
        this.host.commitSettled()
        return { commitId: this.snapshot }
      }
      bytes = submitted.bytes
      // From here on the outcome is the engine's.
      commitId = await submitted.done
    } catch (err) {
      this.finish('rolledBack')
      this.host.commitSettled()
      throw err
    }
    this.finish('committed')
    this.coordinator.published(Number(commitId), bytes)
    this.host.commitSettled()
    return { commitId }
  }

  /**
   * Validate the writes and hand them to the engine (null: nothing to write). Synchronous unless
   * it must wait — for the scavenger's admission, an index getting ready, or an in-flight commit
   * a resolver must see settled — and then a promise.
   */
  private submit(): Submitted | null | Promise<Submitted | null> {
    this.host.assertOpen()
    const writes: Write[] = []
    for (const m of this.writes.values()) for (const w of m.values()) writes.push(w)
    if (writes.length === 0) return null
    // Over the record-memory budget, wait for the scavenger first (bounded: one cycle).
    const admitted = this.coordinator.scavenger.admission()
    if (admitted) return admitted.then(() => this.submitFrom(writes, 0, true))
    return this.submitFrom(writes, 0, false)
  }

  /** Validation passes from `first` on; `waited`: the handle may have closed meanwhile. */
  private submitFrom(writes: Write[], pass: number, waited: boolean): Submitted | Promise<Submitted> {
    if (waited) this.host.assertOpen()
    // Bounded: every wait below comes back here with the next pass.
    if (pass >= RESOLVE_PASSES_MAX) {
      throw new ConflictError(
        writes[0]!.collection,
        decodeKey(writes[0]!.key),
        'write conflict: the keys stayed contended while resolving; retry the transaction',
      )
    }
    const preparing = this.preparingIndex()
    if (preparing) return preparing.then(() => this.submitFrom(writes, pass + 1, true))
    const slots: Array<{ slot: string; merge: boolean; since?: number }> = []
    const opIndex: Array<readonly IndexKey[] | undefined> = []
    const ops = this.validate(writes, slots, opIndex)
    if (!Array.isArray(ops)) return ops.then(() => this.submitFrom(writes, pass + 1, true))
    const writeSlots = slots.length
    this.checkUnique(ops, opIndex, slots, false)
    // Validation and submission happen in one synchronous step: no other commit of this
    // process can slip in between (I1/I3 rely on it). Commits of other processes that arrive
    // before the record is written are checked for under the write lock.
    const payload = encodeCommit(ops)
    const done = this.coordinator.core.commit(payload, () => this.recheck(ops, opIndex, slots.slice(0, writeSlots)))
    this.coordinator.track(slots, done)
    return { done, bytes: payload.length }
  }

  /**
   * Shared directories: the same rules as validate and checkUnique, against writes of other
   * processes that became visible after validation (own ones were in flight then, and counted).
   */
  private recheck(
    ops: readonly WriteOp[],
    opIndex: ReadonlyArray<readonly IndexKey[] | undefined>,
    slots: ReadonlyArray<{ slot: string; merge: boolean; since?: number }>,
  ): Error | undefined {
    for (let i = 0; i < slots.length; i++) {
      const s = slots[i]!
      const newer = this.coordinator.newer(s.slot, s.since ?? this.snap)
      if (s.merge ? newer === 2 : newer !== 0) {
        const op = ops[i]!
        const err = this.conflictError(op.collection, op.key)
        err.slot = s.slot
        return err
      }
    }
    try {
      this.checkUnique(ops, opIndex, [], true)
    } catch (err) {
      return err as Error
    }
    return undefined
  }

  /** A write conflict on (`collection`, `key`): without a stack when `db.transaction` retries it. */
  private conflictError(collection: string, key: Uint8Array): ConflictError {
    if (!this.retriedOnConflict) return new ConflictError(collection, decodeKey(key))
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    try {
      return new ConflictError(collection, decodeKey(key))
    } finally {
      Error.stackTraceLimit = limit
    }
  }

  /** A unique index of a collection this transaction writes that is getting ready for its build, if any. */
  private preparingIndex(): Promise<void> | undefined {
    const registry = this.coordinator.indexes
    // Bounded by the collections written and their indexes.
    for (const name of this.writes.keys()) {
      for (const s of registry.of(name) ?? []) if (s.preparing) return s.preparing
    }
    return undefined
  }

  /**
   * First committer wins: a plain write conflicts with any write installed or in flight after the
   * snapshot; a merge conflicts only with plain writes. A collection resolver may turn a plain
   * conflict into a merged write. Returns the ops to log, or a promise to wait on (an in-flight
   * commit a resolver must see settled) before validating again. Synchronous by design.
   */
  private validate(
    writes: Write[],
    slots: Array<{ slot: string; merge: boolean; since?: number }>,
    opIndex: Array<readonly IndexKey[] | undefined>,
  ): WriteOp[] | Promise<void> {
    const coordinator = this.coordinator
    const ops: WriteOp[] = []
    opIndex.length = 0
    for (const w of writes) {
      const merge = w.kind === OP_APPEND || w.kind === OP_INCREMENT
      if (merge && coordinator.indexes.of(w.collection)) {
        // Recorded before the collection had indexes: the merged value would carry no index keys.
        throw new KestrelError(
          'KESTREL_INVALID_ARGUMENT',
          `cannot commit the ${w.kind === OP_APPEND ? 'append to' : 'increment of'} ${w.collection} ${String(decodeKey(w.key))}: ${w.collection} has secondary indexes now (defined after the ${w.kind === OP_APPEND ? 'append' : 'increment'} was recorded), whose keys need the whole value; redo it with tx.get and tx.put`,
        )
      }
      const slot = slotOf(w.collection, bytesToOrderedString(w.key))
      const newer = coordinator.newer(slot, this.snap)
      const flight = coordinator.inFlight(slot)
      const conflict = merge ? newer === 2 || (flight?.plain ?? 0) > 0 : newer !== 0 || flight !== undefined
      let keys = w.kind === OP_PUT ? this.keysOf(w) : undefined
      let op = toOp(w, keys)
      if (conflict) {
        const resolver = merge ? undefined : this.host.resolverOf(w.collection)
        if (!resolver) {
          const err = this.conflictError(w.collection, w.key)
          err.slot = slot
          if (flight) err.retryAfter = flight.settled
          throw err
        }
        if (flight) return flight.settled
        ;[op, keys] = this.resolve(resolver, w)
      }
      ops.push(op)
      opIndex.push(keys)
      // The slot of the op actually submitted: a resolver may turn a merge into a plain write
      // (checked again only against what came after the value it merged with).
      slots.push(conflict ? { slot, merge: isMerge(op.kind), since: Number(coordinator.core.lastCommitId()) } : { slot, merge: isMerge(op.kind) })
    }
    return ops
  }

  /** The index keys of a PUT under the current definitions (recomputed if indexes were added since). */
  private keysOf(w: Write): readonly IndexKey[] | undefined {
    const registry = this.coordinator.indexes
    const states = registry.of(w.collection)
    if (!states) return undefined
    if (w.index && w.gen === registry.generation) return w.index
    return indexKeysOf(states, decodeValue(w.value!), w.key)
  }

  /**
   * Unique indexes: no index key of this commit may be held by another record at the newest
   * commit (unless this commit rewrites that record too), by another record of this commit, or
   * by a commit still in flight. Adds the claimed keys to `slots`, so that commits validated
   * after this one see them in flight. Synchronous, like validation.
   */
  private checkUnique(
    ops: readonly WriteOp[],
    opIndex: ReadonlyArray<readonly IndexKey[] | undefined>,
    slots: Array<{ slot: string; merge: boolean }>,
    recheck: boolean,
  ): void {
    const coordinator = this.coordinator
    const registry = coordinator.indexes
    let written: Set<string> | undefined
    let latest: number | undefined
    const claimed = new Map<string, Uint8Array>()
    for (let i = 0; i < ops.length; i++) {
      const keys = opIndex[i]
      if (!keys || keys.length === 0) continue
      const op = ops[i]!
      const states = registry.of(op.collection)
      for (const ik of keys) {
        const s = states?.find((x) => x.name === ik.index)
        if (!s?.unique) continue
        const slot = uniqueSlotOf(op.collection, s.name, bytesToOrderedString(ik.key))
        const other = claimed.get(slot)
        if (other) throw new UniqueError(op.collection, s.name, decodeKey(ik.key), decodeKey(op.key), decodeKey(other), false)
        claimed.set(slot, op.key)
        if (!recheck && coordinator.inFlight(slot)) throw new UniqueError(op.collection, s.name, decodeKey(ik.key), decodeKey(op.key), undefined, true)
        latest ??= Number(coordinator.core.lastCommitId())
        if (!written) {
          written = new Set()
          for (const o of ops) written.add(slotOf(o.collection, bytesToOrderedString(o.key)))
        }
        // While the index is built, through the build's map of candidates; a scan only if that
        // map is missing (the build could not collect it).
        const holders = usable(s, latest)
          ? coordinator.core.find(op.collection, s.name, exactPlan(ik.key).entries, latest).map(([k]) => k)
          : s.candidates
            ? holdersWhileBuilding(coordinator.core, s, ik.key, latest, (pk) => written!.has(slotOf(op.collection, pk)))
            : scanFind(coordinator.core, s, exactPlan(ik.key), latest).map((r) => r.key)
        for (const pk of holders) {
          if (written.has(slotOf(op.collection, bytesToOrderedString(pk)))) continue
          throw new UniqueError(op.collection, s.name, decodeKey(ik.key), decodeKey(op.key), decodeKey(pk), false)
        }
        if (recheck) continue
        noteWritten(s, ik.key, op.key)
        slots.push({ slot, merge: false })
      }
    }
  }

  /**
   * Records of `collection` whose index key for `index` is `query` (an index key) or lies in the
   * range `query` describes (`{ gte, gt, lte, lt, prefix, reverse, limit }`), at the snapshot with
   * this transaction's writes applied: `{ key, value }` in index-key order, then key order.
   *
   * @example
   * for (const { key, value } of tx.find(users, 'byEmail', 'ada@example.com')) console.log(key, value)
   * const teamA = [...tx.find(users, 'byTeam', { prefix: ['a'] })]
   */
  find<T>(collection: Collection<T>, index: string, query: FindQuery): Iterable<Entry<T>> {
    const name = this.check(collection)
    const s = this.coordinator.indexes.get(name, index)
    const plan = findPlan(query)
    const core = this.coordinator.core
    const alive = (): void => {
      this.check(collection)
    }
    const own = this.writes.get(name)
    if (!own || own.size === 0) return findEntries<T>(core, s, plan, this.snap, alive)
    // Records this transaction wrote are taken from its writes: their puts with a key in range.
    const mine: OwnRow[] = []
    for (const w of own.values()) {
      if (w.kind !== OP_PUT) continue
      const ik = this.keysOf(w)?.find((x) => x.index === s.name)?.key
      if (ik && inKeyBounds(ik, plan.keys)) mine.push({ indexKey: ik, key: w.key, value: decodeValue(w.value!) })
    }
    const dir = plan.keys.reverse ? -1 : 1
    mine.sort((a, b) => (compareBytes(a.indexKey!, b.indexKey!) || compareBytes(a.key, b.key)) * dir)
    const written = (pk: Uint8Array): boolean => own.has(bytesToOrderedString(pk))
    const limit = plan.keys.limit ?? Number.POSITIVE_INFINITY
    const unlimited = { keys: { ...plan.keys, limit: undefined }, entries: { ...plan.entries, limit: undefined } }
    if (usable(s, this.snap)) return mergeFind<T>(s, findRows(core, s, unlimited, this.snap, alive), mine, written, plan.keys.reverse === true, limit)
    // The index is not complete at this snapshot: every record is read and keyed now.
    const rows: FoundRow[] = mine.map((o) => ({ indexKey: o.indexKey!, key: o.key, value: o.value }))
    for (const r of scanFind(core, s, unlimited, this.snap)) if (!written(r.key)) rows.push(r)
    rows.sort(compareRows)
    if (plan.keys.reverse) rows.reverse()
    return foundEntries<T>(rows.slice(0, limit))
  }

  /** Run a resolver against the newest committed value; its result becomes a plain write. */
  private resolve(resolver: Resolver, w: Write): [WriteOp, readonly IndexKey[] | undefined] {
    const core = this.coordinator.core
    const latest = Number(core.lastCommitId())
    // Decode each read before the next one: the core may reuse its read buffer.
    const read = (snapshot: number): unknown => {
      const bytes = core.get(w.collection, w.key, snapshot)
      return bytes === undefined ? undefined : decodeValue(bytes)
    }
    const ancestor = read(this.snap)
    const committed = read(latest)
    const mine = this.resolveRead(w, undefined)
    let merged: unknown
    try {
      merged = resolver(ancestor, committed, mine)
    } catch (err) {
      if (err instanceof KestrelError) throw err
      throw new KestrelError(
        'KESTREL_INVALID_ARGUMENT',
        `the resolver of ${w.collection} threw ${(err as Error)?.message ?? String(err)}; a resolver returns the merged value or throws ConflictError`,
        { cause: err },
      )
    }
    if (merged === undefined) return [{ kind: OP_DELETE, collection: w.collection, key: w.key, value: undefined }, undefined]
    let value: Uint8Array
    try {
      value = encodeValue(merged)
    } catch (err) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', `the resolver of ${w.collection} returned a value that cannot be stored (${(err as Error).message})`, {
        cause: err,
      })
    }
    const states = this.coordinator.indexes.of(w.collection)
    const keys = states ? indexKeysOf(states, merged, w.key) : undefined
    return [{ kind: OP_PUT, collection: w.collection, key: w.key, value: keys ? encodeEnvelope(value, keys) : value }, keys]
  }

  /**
   * Discard the writes. Calling it again, or after a failed commit, does nothing. Refused with
   * `KESTREL_TRANSACTION_DONE` once committed, and while the commit is in flight (its outcome is
   * the engine's; await the promise `commit()` returned).
   */
  rollback(): void {
    if (this.state === 'committing') {
      throw new KestrelError(
        'KESTREL_TRANSACTION_DONE',
        "this transaction's commit is in flight: rollback() cannot stop it; await the promise commit() returned for its outcome",
      )
    }
    if (this.state === 'committed') {
      throw new KestrelError('KESTREL_TRANSACTION_DONE', 'this transaction was already committed; rollback() is only for transactions not committed yet')
    }
    this.finish('rolledBack')
  }

  /** @internal Pins its snapshot and nothing else refers to it for a commit in flight (leaks.ts). */
  get pinning(): boolean {
    return this.state === 'active'
  }

  /** @internal see leaks.ts. */
  leak(): Leak {
    return { coordinator: this.coordinator, snapshot: this.snap, what: 'transaction' }
  }

  /** Has `commit()` or `rollback()` been called? */
  get finished(): boolean {
    return this.state !== 'active'
  }

  /** @internal The outcome of the commit() call made on this transaction, if one was. */
  get commitOutcome(): Promise<CommitInfo> | undefined {
    return this.outcome
  }
}

const DELTA = new DataView(new ArrayBuffer(8))

/** A commit handed to the engine: its outcome, and the payload's size. */
interface Submitted {
  done: Promise<bigint>
  bytes: number
}

function ignore(): void {}

function toOp(w: Write, keys?: readonly IndexKey[]): WriteOp {
  switch (w.kind) {
    case OP_APPEND:
      return { kind: OP_APPEND, collection: w.collection, key: w.key, value: encodeValue(w.items) }
    case OP_INCREMENT: {
      DELTA.setFloat64(0, w.delta!, true)
      return { kind: OP_INCREMENT, collection: w.collection, key: w.key, value: new Uint8Array(DELTA.buffer.slice(0)) }
    }
    default:
      return { kind: w.kind, collection: w.collection, key: w.key, value: keys && keys.length > 0 ? encodeEnvelope(w.value!, keys) : w.value }
  }
}
