/** Collection handles: a name, the value type it holds, and its secondary indexes. */
import { KestrelError } from './errors.js'
import type { Key } from './codec/key.js'

const utf8 = new TextEncoder()

/** A secondary index of a collection. */
export interface IndexDefinition<T = unknown> {
  /**
   * The index key of a value: any key (a tuple for a compound index), or `undefined` to leave
   * the record out of this index. Called when a value is written (`tx.put`), never later: it must
   * be a pure function of the value. Changing what it returns for stored values needs a new index
   * name (an index is built once, under its name).
   */
  key: (value: T) => Key | undefined
  /** At most one record per index key: a commit that would break it fails with `KESTREL_UNIQUE`. */
  unique?: boolean
}

/** Options of `db.collection()`. */
export interface CollectionOptions<T = unknown> {
  /**
   * Merge concurrent writes of one key instead of failing with `ConflictError`:
   * `(ancestor, committed, mine) => merged`; throw `ConflictError` when they cannot be merged.
   * See `orderedMapResolver` for ZODB's BTree rules.
   */
  resolver?: (ancestor: T | undefined, committed: T | undefined, mine: T | undefined) => T | undefined
  /**
   * Secondary indexes by name (1 to 255 UTF-8 bytes, no control characters). An index new to
   * the collection is built online (existing records are rewritten with their index keys while
   * writers go on); `await collection.ready()` waits for it. Lookups are correct meanwhile.
   *
   * @example
   * const users = db.collection<User>('users', {
   *   indexes: { byEmail: { key: (u) => u.email, unique: true }, byTeam: { key: (u) => [u.team, u.name] } },
   * })
   */
  indexes?: Record<string, IndexDefinition<T>>
}

/**
 * A named set of key → value records. Obtained from `db.collection(name)`; passed to a
 * transaction's `get`/`put`/`delete`/`scan`/`find`. `T` is the value type (not checked at run time).
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
    /** @internal resolves when every index of the collection is built. */
    private readonly whenReady: () => Promise<void> = () => Promise.resolve(),
  ) {}

  /**
   * Resolves once every index defined for this collection is built (at once for indexes that
   * were built before); rejects with the error that stopped a build (e.g. `KESTREL_UNIQUE` when
   * existing records break a new unique index).
   */
  ready(): Promise<void> {
    return this.whenReady()
  }

  /** @internal */
  static is(value: unknown): value is Collection<unknown> {
    return typeof value === 'object' && value !== null && #brand in value
  }

  /** Phantom member so `T` takes part in type checking. */
  declare readonly __valueType?: T
}

// Control characters are reserved: 0x00 separates a collection from its index names in the page
// store, and 0x01 starts the engine's own collections.
// biome-ignore lint/suspicious/noControlCharactersInRegex: it finds the control characters a name may not contain
const CONTROL = /[\u0000-\u001f]/

/** Check a collection name: 1 to 255 UTF-8 bytes, no control characters. */
export function checkCollectionName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || utf8.encode(name).length > 255 || CONTROL.test(name)) {
    throw new KestrelError(
      'KESTREL_INVALID_ARGUMENT',
      `a collection name is a string of 1 to 255 UTF-8 bytes without control characters, got ${typeof name === 'string' ? JSON.stringify(name.slice(0, 40)) : typeof name}`,
    )
  }
  return name
}

/** Check an index name: 1 to 255 UTF-8 bytes, no control characters. */
export function checkIndexName(collection: string, name: string): string {
  if (name.length === 0 || utf8.encode(name).length > 255 || CONTROL.test(name)) {
    throw new KestrelError(
      'KESTREL_INVALID_ARGUMENT',
      `index names of ${collection} are 1 to 255 UTF-8 bytes without control characters, got ${JSON.stringify(name.slice(0, 40))}`,
    )
  }
  return name
}
