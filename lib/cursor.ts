/**
 * Lazy ordered reads. A scan or lookup fetches its rows from the engine in chunks as it is
 * iterated — 16 rows first (or its whole `limit`, up to 1024), then 4× more per chunk up to
 * 1024 — each continuing after the last
 * row of the one before, all at one snapshot; a loop that stops early reads little and holds
 * little. A transaction's own writes are merged in as the rows go by.
 */
import { compareBytes } from './codec/bytes.js'
import { decodeKey } from './codec/key.js'
import { decodeValue } from './codec/value.js'
import { indexEntryKey } from './format/envelope.js'
import type { Core, CoreScanOptions } from './core/types.js'
import { KestrelError } from './errors.js'
import { ended, opened, type Leak } from './leaks.js'
import type { Coordinator } from './txn/coordinator.js'
import { indexKeyOf, scanFind, usable, type FindPlan, type FoundRow, type IndexState } from './txn/indexes.js'

/** One entry yielded by `scan` and `find`. */
export interface Entry<T> {
  key: ReturnType<typeof decodeKey>
  value: T
}

/** Rows in the first chunk, the growth factor, the largest chunk. */
export const CHUNK_ROWS_FIRST = 16
const CHUNK_GROWTH = 4
export const CHUNK_ROWS_MAX = 1024

/** Engine rows `[key, value bytes]` (primary key and stored value for lookups). */
type Row = [Uint8Array, Uint8Array]

/**
 * The rows `fetch` returns within `bounds` (and its `limit`), chunk by chunk, each passed through
 * `map` (one generator per read: the common lookup of one record pays for no more). `cursorOf`
 * gives the engine-order key of a row, after which the next chunk starts; `alive` throws when the
 * reader has ended (its snapshot is no longer pinned).
 */
export function* chunked<R>(
  fetch: (bounds: CoreScanOptions) => Row[],
  bounds: CoreScanOptions,
  cursorOf: (row: Row) => Uint8Array,
  alive: () => void,
  map: (row: Row) => R,
): Generator<R> {
  let remaining = bounds.limit ?? Number.POSITIVE_INFINITY
  // A read that says how many rows it wants gets them in one chunk (up to the largest).
  let chunk = bounds.limit !== undefined ? Math.min(bounds.limit, CHUNK_ROWS_MAX) : CHUNK_ROWS_FIRST
  // One object for every chunk's bounds: its lower (or upper) bound moves, its limit changes.
  const b: CoreScanOptions = { gte: bounds.gte, gt: bounds.gt, lte: bounds.lte, lt: bounds.lt, reverse: bounds.reverse, limit: 0 }
  let last: Uint8Array | undefined
  // Bounded: every round yields `want` rows and moves the cursor past them, or ends.
  while (remaining > 0) {
    alive()
    const want = Math.min(chunk, remaining)
    b.limit = want
    const rows = fetch(b)
    for (const row of rows) yield map(row)
    remaining -= rows.length
    // A short chunk is the last; most reads end here, without computing a cursor.
    if (rows.length < want || remaining <= 0) return
    const cursor = cursorOf(rows[rows.length - 1]!)
    // A cursor that does not move would fetch the same rows again (an index key function that
    // is not pure gives a different key for the row than the one it was stored under).
    if (last && compareBytes(cursor, last) * (b.reverse ? -1 : 1) <= 0) {
      throw new KestrelError(
        'KESTREL_CORRUPT',
        'an ordered read did not advance: an index key function must be a pure function of the value (define a new index to change it)',
      )
    }
    last = cursor
    if (b.reverse) {
      b.lte = undefined
      b.lt = cursor
    } else {
      b.gte = undefined
      b.gt = cursor
    }
    chunk = Math.min(chunk * CHUNK_GROWTH, CHUNK_ROWS_MAX)
  }
}

const asRow = (row: Row): Row => row
const asEntry = ([k, v]: Row): Entry<never> => ({ key: decodeKey(k), value: decodeValue(v) as never })

/** A scan's rows: keys and values at `snapshot`, in chunks. */
export function scanRows(core: Core, collection: string, bounds: CoreScanOptions, snapshot: number, alive: () => void): Generator<Row> {
  return chunked(
    (b) => core.scan(collection, b, snapshot),
    bounds,
    (row) => row[0],
    alive,
    asRow,
  )
}

/** A scan's entries, decoded, at `snapshot`, in chunks. */
export function scanEntries<T>(core: Core, collection: string, bounds: CoreScanOptions, snapshot: number, alive: () => void): Generator<Entry<T>> {
  return chunked(
    (b) => core.scan(collection, b, snapshot),
    bounds,
    (row) => row[0],
    alive,
    asEntry as (row: Row) => Entry<T>,
  )
}

/** The entry key (index key, primary key) of a lookup row, to continue after it. */
function entryCursor(s: IndexState): (row: Row) => Uint8Array {
  return ([pk, bytes]) => {
    const ik = indexKeyOf(s, decodeValue(bytes), pk)
    if (!ik)
      throw new KestrelError(
        'KESTREL_CORRUPT',
        `index ${s.name} of ${s.collection} found a record whose value has no key for it: its key function must be a pure function of the value`,
      )
    return indexEntryKey(ik, pk)
  }
}

/** A lookup's rows through the engine's index entries at `snapshot`, in chunks. */
export function findRows(core: Core, s: IndexState, plan: FindPlan, snapshot: number, alive: () => void): Generator<Row> {
  return chunked((b) => core.find(s.collection, s.name, b, snapshot), plan.entries, entryCursor(s), alive, asRow)
}

/** A transaction's own write of one key, as a read sees it: `value` undefined = deleted. */
export interface OwnRow {
  key: Uint8Array
  value: unknown
  /** For lookups: the index key the write gives the record (undefined: not in this index). */
  indexKey?: Uint8Array
}

/**
 * Scan rows merged with a transaction's own writes (`own`: in scan order, within the bounds):
 * an own write replaces the engine's row of its key, a deletion removes it. `limit` counts what
 * is yielded.
 */
export function* mergeScan<T>(rows: Iterator<Row>, own: readonly OwnRow[], reverse: boolean, limit: number): Generator<Entry<T>> {
  const dir = reverse ? -1 : 1
  let next = rows.next()
  let i = 0
  let yielded = 0
  // Bounded: each round consumes an engine row or an own write.
  while (yielded < limit && (!next.done || i < own.length)) {
    const o = own[i]
    const c = next.done ? 1 : o === undefined ? -1 : compareBytes(next.value[0], o.key) * dir
    if (c < 0) {
      yield { key: decodeKey(next.value[0]), value: decodeValue(next.value[1]) as T }
      yielded++
      next = rows.next()
      continue
    }
    if (c === 0) next = rows.next()
    i++
    if (o!.value !== undefined) {
      yield { key: decodeKey(o!.key), value: o!.value as T }
      yielded++
    }
  }
  // Stop the engine rows early: a generator's finally (a released pin) runs now.
  if (!next.done) rows.return?.(undefined)
}

/**
 * Lookup rows merged with a transaction's own writes: engine rows of records the transaction
 * wrote are dropped (their own version counts instead), own puts whose index key lies in the
 * lookup's range (`own`: sorted in lookup order) are merged in by (index key, key).
 */
export function* mergeFind<T>(
  s: IndexState,
  rows: Iterator<Row>,
  own: readonly OwnRow[],
  written: (pk: Uint8Array) => boolean,
  reverse: boolean,
  limit: number,
): Generator<Entry<T>> {
  const dir = reverse ? -1 : 1
  let yielded = 0
  let i = 0
  let pending: { ik: Uint8Array; pk: Uint8Array; value: unknown } | undefined
  const pull = (): void => {
    pending = undefined
    // Bounded by the engine rows: records this transaction wrote are skipped.
    for (let r = rows.next(); !r.done; r = rows.next()) {
      const [pk, bytes] = r.value
      if (written(pk)) continue
      const value = decodeValue(bytes)
      pending = { ik: indexKeyOf(s, value, pk)!, pk, value }
      return
    }
  }
  pull()
  // Bounded: each round consumes an engine row or an own write.
  while (yielded < limit && (pending || i < own.length)) {
    const o = own[i]
    const c = !pending ? 1 : o === undefined ? -1 : (compareBytes(pending.ik, o.indexKey!) || compareBytes(pending.pk, o.key)) * dir
    if (c < 0) {
      yield { key: decodeKey(pending!.pk), value: pending!.value as T }
      pull()
    } else {
      yield { key: decodeKey(o!.key), value: o!.value as T }
      i++
    }
    yielded++
  }
  rows.return?.(undefined)
}

/** Entries of rows already decoded (the lookup by scan, own writes). */
export function* foundEntries<T>(rows: readonly FoundRow[]): Generator<Entry<T>> {
  for (const r of rows) yield { key: decodeKey(r.key), value: r.value as T }
}

/**
 * A lookup's entries at `snapshot`: from the engine's index entries, lazily, when the index is
 * complete there; else by reading and keying every record now.
 */
export function findEntries<T>(core: Core, s: IndexState, plan: FindPlan, snapshot: number, alive: () => void): Iterable<Entry<T>> {
  if (usable(s, snapshot))
    return chunked((b) => core.find(s.collection, s.name, b, snapshot), plan.entries, entryCursor(s), alive, asEntry as (row: Row) => Entry<T>)
  return foundEntries<T>(scanFind(core, s, plan, snapshot))
}

/**
 * One iteration of a one-shot read (`db.scan`, `db.find`): it takes its snapshot — the newest
 * visible commit — at the first `next()`, pins it while it runs, and releases it when it ends:
 * exhausted, stopped (`break`, `return`), failed, or garbage-collected unfinished.
 */
class LatestIterator<T> implements IterableIterator<Entry<T>> {
  private inner: Iterator<Entry<T>> | undefined
  private snapshot: number | undefined
  /** @internal see leaks.ts. */
  leakState: 0 | 1 | 2 = 0

  constructor(
    private readonly coordinator: Coordinator,
    private readonly what: string,
    private readonly read: (snapshot: number) => Iterator<Entry<T>>,
  ) {}

  next(): IteratorResult<Entry<T>> {
    if (!this.inner) {
      if (this.snapshot !== undefined) return { done: true, value: undefined }
      const snapshot = Number(this.coordinator.core.lastCommitId())
      this.coordinator.pin(snapshot)
      this.snapshot = snapshot
      opened(this)
      this.inner = this.read(snapshot)
    }
    let r: IteratorResult<Entry<T>>
    try {
      r = this.inner.next()
    } catch (err) {
      this.end()
      throw err
    }
    if (r.done) this.end()
    return r
  }

  return(): IteratorResult<Entry<T>> {
    this.inner?.return?.(undefined)
    this.end()
    return { done: true, value: undefined }
  }

  private end(): void {
    if (!this.inner) return
    this.inner = undefined
    this.coordinator.unpin(this.snapshot!)
    ended(this)
  }

  /** @internal Still pinning its snapshot (leaks.ts). */
  get pinning(): boolean {
    return this.inner !== undefined
  }

  /** @internal see leaks.ts. */
  leak(): Leak {
    return { coordinator: this.coordinator, snapshot: this.snapshot!, what: this.what }
  }

  [Symbol.iterator](): IterableIterator<Entry<T>> {
    return this
  }
}

/** Entries of a one-shot read: each iteration reads the newest commit visible when it starts. */
export function latestEntries<T>(coordinator: Coordinator, what: string, read: (snapshot: number) => Iterator<Entry<T>>): Iterable<Entry<T>> {
  return { [Symbol.iterator]: () => new LatestIterator<T>(coordinator, what, read) }
}
