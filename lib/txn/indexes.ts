/**
 * Secondary indexes above the seam: definitions (shared by every handle of an engine), the index
 * keys of a value, the bounds of a lookup, and the brute-force lookup used while an index is not
 * complete at a snapshot. The engines keep the entries (docs/FORMAT.md "Secondary indexes").
 */
import { bytesToOrderedString, compareBytes, orderedStringToBytes } from '../codec/bytes.js'
import { KEY_BYTES_MAX, encodeKey, type Key } from '../codec/key.js'
import { decodeValue } from '../codec/value.js'
import { checkIndexName, type IndexDefinition } from '../collection.js'
import { ENVELOPE_BLOCK_BYTES_MAX, envelopeBlockBytes, type IndexKey } from '../format/envelope.js'
import type { Core, CoreScanOptions } from '../core/types.js'
import { KestrelError } from '../errors.js'
import { prefixEnd, scanBounds, type ScanOptions } from '../scan.js'

/** One index of a collection as the engine's coordinator knows it. */
export interface IndexState {
  readonly collection: string
  readonly name: string
  key: (value: unknown) => Key | undefined
  unique: boolean
  /**
   * The first commit id from which every record's visible version holds its key for this index
   * (lookups at older snapshots scan instead); undefined while the index is being built.
   */
  readyAt: number | undefined
  /** Settles when the build ends (resolves at once for an index built before). */
  built: Promise<void>
  /** Why the build stopped, if it failed. */
  failure: KestrelError | undefined
  /**
   * While a unique index is built: for each index key (as an ordered string), the records that
   * may hold it — those that held it when the build began, and those written with it since (as
   * ordered strings). A superset: checks read each candidate (see holdersWhileBuilding).
   */
  candidates: Map<string, string[]> | undefined
  /** Set while that map is being collected: commits to the collection wait for it. */
  preparing: Promise<void> | undefined
}

/**
 * Bounds of an index lookup over index keys: `gt`/`gte`/`lt`/`lte`/`prefix`, `reverse` (largest
 * index key first) and `limit` — the same options as a scan's, applied to index keys.
 */
export type FindRange = ScanOptions

/** What `find` takes: an index key, or a range object. */
export type FindQuery = Key | FindRange

/** The collection that remembers which indexes are built (control-character names are reserved). */
export const INDEX_MARKERS = '\u0001kestrel:indexes'

/** Index definitions of every collection of one engine. */
export class IndexRegistry {
  private readonly byCollection = new Map<string, IndexState[]>()
  /** Bumped whenever a definition is added: writes made before it recompute their keys. */
  generation = 0

  /** The indexes of `collection` (undefined when it has none). */
  of(collection: string): readonly IndexState[] | undefined {
    return this.byCollection.get(collection)
  }

  /** One index, or `KESTREL_INVALID_ARGUMENT` naming the indexes there are. */
  get(collection: string, index: unknown): IndexState {
    const list = this.byCollection.get(collection)
    const found = typeof index === 'string' ? list?.find((s) => s.name === index) : undefined
    if (!found) {
      const names = list?.map((s) => s.name).join(', ')
      throw new KestrelError(
        'KESTREL_INVALID_ARGUMENT',
        `${collection} has no index ${typeof index === 'string' ? JSON.stringify(index) : `named by a ${typeof index}`}; ${names ? `its indexes are ${names}` : 'it has no indexes'} (define them with db.collection(name, { indexes }))`,
      )
    }
    return found
  }

  /**
   * Add or update definitions; returns the indexes new to this engine (the caller builds them).
   * A definition with a known name replaces its key function (the entries already stored stay).
   */
  define(collection: string, indexes: Record<string, IndexDefinition<unknown>>): IndexState[] {
    if (typeof indexes !== 'object' || indexes === null || Array.isArray(indexes)) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', `the indexes of ${collection} are an object { name: { key: (value) => indexKey, unique? } }`)
    }
    const checked: Array<[string, IndexDefinition<unknown>]> = []
    for (const [name, def] of Object.entries(indexes)) {
      checkIndexName(collection, name)
      if (typeof def !== 'object' || def === null || typeof def.key !== 'function') {
        throw new KestrelError('KESTREL_INVALID_ARGUMENT', `index ${name} of ${collection} needs a key function: { key: (value) => indexKey }`)
      }
      if (def.unique !== undefined && typeof def.unique !== 'boolean') {
        throw new KestrelError('KESTREL_INVALID_ARGUMENT', `index ${name} of ${collection}: unique must be a boolean`)
      }
      checked.push([name, def])
    }
    const list = [...(this.byCollection.get(collection) ?? [])]
    const added: IndexState[] = []
    for (const [name, def] of checked) {
      const known = list.find((s) => s.name === name)
      if (known) {
        known.key = def.key
        known.unique = def.unique === true
        continue
      }
      const state: IndexState = {
        collection,
        name,
        key: def.key,
        unique: def.unique === true,
        readyAt: undefined,
        built: Promise.resolve(),
        failure: undefined,
        candidates: undefined,
        preparing: undefined,
      }
      list.push(state)
      added.push(state)
    }
    if (added.length > 0) {
      this.byCollection.set(collection, list)
      this.generation++
    }
    return added
  }
}

/** The index key of `value` for one index, encoded; undefined when the key function says so. */
export function indexKeyOf(s: IndexState, value: unknown, primaryKey: Uint8Array): Uint8Array | undefined {
  let k: Key | undefined
  try {
    k = s.key(value)
  } catch (err) {
    throw new KestrelError(
      'KESTREL_INVALID_ARGUMENT',
      `the key function of index ${s.name} of ${s.collection} threw: ${(err as Error)?.message ?? String(err)}; it must return a key or undefined for every value written`,
      { cause: err },
    )
  }
  if (k === undefined) return undefined
  let bytes: Uint8Array
  try {
    bytes = encodeKey(k)
  } catch (err) {
    const e = err as KestrelError
    throw new KestrelError(
      e.code ?? 'KESTREL_INVALID_KEY',
      `the key function of index ${s.name} of ${s.collection} returned something that is not a key: ${e.message}`,
      { cause: err },
    )
  }
  if (bytes.length + primaryKey.length + 2 > KEY_BYTES_MAX) {
    throw new KestrelError(
      'KESTREL_KEY_TOO_LARGE',
      `index ${s.name} of ${s.collection}: the index key (${bytes.length} bytes) and the record's key (${primaryKey.length} bytes) together exceed ${KEY_BYTES_MAX - 2} bytes; use a shorter index key`,
    )
  }
  return bytes
}

/** The index keys of `value` for every index of its collection. */
export function indexKeysOf(states: readonly IndexState[], value: unknown, primaryKey: Uint8Array): IndexKey[] {
  const out: IndexKey[] = []
  for (const s of states) {
    const key = indexKeyOf(s, value, primaryKey)
    if (key) out.push({ index: s.name, key })
  }
  if (out.length > 0 && envelopeBlockBytes(out) > ENVELOPE_BLOCK_BYTES_MAX) {
    throw new KestrelError(
      'KESTREL_KEY_TOO_LARGE',
      `the index keys of one record of ${states[0]!.collection} take more than ${ENVELOPE_BLOCK_BYTES_MAX} bytes together; use shorter index keys`,
    )
  }
  return out
}

/** Is `q` a range object rather than an index key? */
function isRange(q: FindQuery): q is FindRange {
  return typeof q === 'object' && q !== null && !Array.isArray(q) && !(q instanceof Uint8Array)
}

/** A lookup's bounds on index keys, on index-tree entry keys, and its direction and limit. */
export interface FindPlan {
  /** Bounds on the encoded index key. */
  keys: CoreScanOptions
  /** Bounds on the index-tree entry keys (`ik ‖ pk ‖ len`), for the engine. */
  entries: CoreScanOptions
}

/** Translate a query into bounds. Throws `KESTREL_INVALID_ARGUMENT` / `KESTREL_INVALID_KEY` on bad ones. */
export function findPlan(query: FindQuery): FindPlan {
  let keys: CoreScanOptions
  if (isRange(query)) {
    keys = scanBounds(query)
  } else {
    const k = encodeKey(query as Key)
    keys = { gte: k, lte: k, reverse: false }
  }
  // Encoded keys are prefix-free, so ik ≥ a ⇔ ik‖pk‖len ≥ a, and ik ≤ b ⇔ ik‖pk‖len < end(b).
  const entries: CoreScanOptions = { reverse: keys.reverse === true }
  if (keys.limit !== undefined) entries.limit = keys.limit
  if (keys.gte) entries.gte = keys.gte
  else if (keys.gt) {
    const e = prefixEnd(keys.gt)
    if (e) entries.gte = e
    else entries.lt = new Uint8Array(0) // nothing is above the largest string
  }
  if (keys.lt) entries.lt = keys.lt
  else if (keys.lte) {
    const e = prefixEnd(keys.lte)
    if (e) entries.lt = e
  }
  return { keys, entries }
}

/** The plan of an exact lookup of an encoded index key. */
export function exactPlan(indexKey: Uint8Array): FindPlan {
  const entries: CoreScanOptions = { gte: indexKey, reverse: false }
  const e = prefixEnd(indexKey)
  if (e) entries.lt = e
  return { keys: { gte: indexKey, lte: indexKey, reverse: false }, entries }
}

/** Does the encoded index key lie within the bounds? */
export function inKeyBounds(key: Uint8Array, b: CoreScanOptions): boolean {
  if (b.gte && compareBytes(key, b.gte) < 0) return false
  if (b.gt && compareBytes(key, b.gt) <= 0) return false
  if (b.lte && compareBytes(key, b.lte) > 0) return false
  if (b.lt && compareBytes(key, b.lt) >= 0) return false
  return true
}

/** A lookup result before decoding: the index key it was found under, the record key, its value. */
export interface FoundRow {
  indexKey: Uint8Array
  key: Uint8Array
  /** The decoded value. */
  value: unknown
}

/** Order of rows in an index: index key, then record key. */
export function compareRows(a: FoundRow, b: FoundRow): number {
  return compareBytes(a.indexKey, b.indexKey) || compareBytes(a.key, b.key)
}

/**
 * The lookup without the index: every record at `snapshot`, its key computed now. Used at
 * snapshots older than the index (it was built later) and while it is being built. Key functions
 * that fail on a stored value leave that record out, as `undefined` does.
 */
export function scanFind(core: Core, s: IndexState, plan: FindPlan, snapshot: number): FoundRow[] {
  const rows: FoundRow[] = []
  // Bounded by the collection's size at the snapshot.
  for (const [k, v] of core.scan(s.collection, {}, snapshot)) {
    const value = decodeValue(v)
    let ik: Uint8Array | undefined
    try {
      ik = indexKeyOf(s, value, k)
    } catch {
      ik = undefined
    }
    if (ik && inKeyBounds(ik, plan.keys)) rows.push({ indexKey: ik, key: k, value })
  }
  rows.sort(compareRows)
  if (plan.keys.reverse) rows.reverse()
  return plan.keys.limit === undefined ? rows : rows.slice(0, plan.keys.limit)
}

/** Is the index complete at `snapshot` (so the engine's entries can answer)? */
export function usable(s: IndexState, snapshot: number): boolean {
  return s.readyAt !== undefined && snapshot >= s.readyAt
}

/**
 * The records holding unique index key `indexKey` at `latest` while `s` is being built (it has a
 * candidates map), without a scan. A record holding it either is unchanged since the build began
 * — then it held the key then, and the map lists it — or was written since by a commit validated
 * after the index was defined, which carried the key and added the record to the map
 * (noteWritten). Each candidate is read at `latest` and kept if its value still has the key;
 * those that do not are dropped from the map. Candidates `skip` names are neither read nor returned.
 */
export function holdersWhileBuilding(core: Core, s: IndexState, indexKey: Uint8Array, latest: number, skip: (primaryKey: string) => boolean): Uint8Array[] {
  const key = bytesToOrderedString(indexKey)
  const listed = s.candidates?.get(key)
  if (!listed) return []
  const holders: Uint8Array[] = []
  const still: string[] = []
  // Bounded by the records listed under the key (one, unless they break the index).
  for (const held of listed) {
    if (skip(held)) {
      // Rewritten by the commit asking (it holds no key against itself): kept, not read.
      still.push(held)
      continue
    }
    const pk = orderedStringToBytes(held)
    const bytes = core.get(s.collection, pk, latest)
    let ik: Uint8Array | undefined
    try {
      ik = bytes === undefined ? undefined : indexKeyOf(s, decodeValue(bytes), pk)
    } catch {
      ik = undefined
    }
    if (ik && compareBytes(ik, indexKey) === 0) {
      holders.push(pk)
      still.push(held)
    }
  }
  if (still.length > 0) s.candidates!.set(key, still)
  else s.candidates!.delete(key)
  return holders
}

/** A commit validated now writes record `primaryKey` with unique key `indexKey` of `s`: list it while `s` is built. */
export function noteWritten(s: IndexState, indexKey: Uint8Array, primaryKey: Uint8Array): void {
  if (!s.candidates) return
  const key = bytesToOrderedString(indexKey)
  const pk = bytesToOrderedString(primaryKey)
  const listed = s.candidates.get(key)
  if (!listed) s.candidates.set(key, [pk])
  else if (!listed.includes(pk)) listed.push(pk)
}
