/** Collection handles: a name plus the value type it holds. */
import { KestrelError } from './errors.js'

const utf8 = new TextEncoder()

/** Options of `db.collection()` (secondary indexes arrive with a later version). */
export interface CollectionOptions<T = unknown> {
  /**
   * Merge concurrent writes of one key instead of failing with `ConflictError`:
   * `(ancestor, committed, mine) => merged`; throw `ConflictError` when they cannot be merged.
   * See `orderedMapResolver` for ZODB's BTree rules.
   */
  resolver?: (ancestor: T | undefined, committed: T | undefined, mine: T | undefined) => T | undefined
}

/**
 * A named set of key → value records. Obtained from `db.collection(name)`; passed to a
 * transaction's `get`/`put`/`delete`/`scan`. `T` is the value type (not checked at run time).
 */
export class Collection<T = unknown> {
  /** @internal brand so that a structurally similar object is refused. */
  readonly #brand = true

  /** @internal use `db.collection(name)`. */
  constructor(
    /** The collection's name. */
    readonly name: string,
    /** @internal the id of the database handle that made it. */
    readonly owner: object,
  ) {}

  /** @internal */
  static is(value: unknown): value is Collection<unknown> {
    return typeof value === 'object' && value !== null && #brand in value
  }

  /** Phantom member so `T` takes part in type checking. */
  declare readonly __valueType?: T
}

/** Check a collection name: 1 to 255 UTF-8 bytes. */
export function checkCollectionName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || utf8.encode(name).length > 255) {
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', `a collection name is a string of 1 to 255 UTF-8 bytes, got ${typeof name === 'string' ? JSON.stringify(name.slice(0, 40)) : typeof name}`)
  }
  return name
}
