/**
 * The in-memory index entries (docs/FORMAT.md "Index entries in memory"), twin of
 * `store/overlay.rs`: per collection and index, entry key → the number of in-memory versions (of
 * any chain) holding that pair. A version entering memory adds one per envelope entry
 * (`enter`), a version leaving memory subtracts one (`leave`, `release`), and an entry goes at
 * zero. An entry is never removed by comparing a leaving version with its neighbours: only the
 * count knows whether some staying version, anywhere in the chain, still holds the pair.
 */
import { versionBytes, SortedMap, type Version } from './chain.js'

/** Bytes charged per in-memory index entry on top of its entry key (map node and count). */
export const INDEX_ENTRY_OVERHEAD_BYTES = 48

/** The u16 BE primary-key length that ends an entry key, as two latin1 chars. */
export function lengthSuffix(n: number): string {
  return String.fromCharCode(n >>> 8, n & 0xff)
}

/** The (index key, primary key) parts of an entry key string (see splitIndexEntry); undefined when its length does not fit. */
export function splitEntry(entry: string): { ik: string; pk: string } | undefined {
  if (entry.length < 2) return undefined
  const n = (entry.charCodeAt(entry.length - 2) << 8) | entry.charCodeAt(entry.length - 1)
  const pkStart = entry.length - 2 - n
  if (pkStart < 0) return undefined
  return { ik: entry.slice(0, pkStart), pk: entry.slice(pkStart, entry.length - 2) }
}

/** The reference-counted index entries held by the versions in memory. */
export class Overlay {
  /**
   * Collection → index → entry key → reference count. Invariant: every count ≥ 1 and equals the
   * number of in-memory versions of the collection whose envelope holds that entry.
   */
  private readonly trees = new Map<string, Map<string, SortedMap<number>>>()
  /** Invariant: number of entries (distinct pairs) over all collections and indexes. */
  entries = 0
  /** Entries removed (reference count reached zero) since open. */
  removed = 0

  /** The entries of `index` of `collection`, if any version in memory holds one. */
  tree(collection: string, index: string): SortedMap<number> | undefined {
    return this.trees.get(collection)?.get(index)
  }

  /** A version of `collection` entered memory: one reference per envelope entry. Returns the bytes of the entries that are new. */
  enter(collection: string, v: Version): number {
    if (!v.refs) return 0
    let indexes = this.trees.get(collection)
    if (!indexes) {
      indexes = new Map()
      this.trees.set(collection, indexes)
    }
    let bytes = 0
    for (const r of v.refs) {
      let m = indexes.get(r.index)
      if (!m) {
        m = new SortedMap<number>()
        indexes.set(r.index, m)
      }
      const n = m.map.get(r.entry)
      if (n === undefined) {
        m.insert(r.entry, 1)
        this.entries++
        bytes += r.entry.length + INDEX_ENTRY_OVERHEAD_BYTES
      } else {
        m.map.set(r.entry, n + 1)
      }
    }
    return bytes
  }

  /**
   * A version of `collection` left memory: its references go; an entry no staying version holds
   * goes too. Returns the bytes of the entries removed.
   */
  leave(collection: string, v: Version): number {
    if (!v.refs) return 0
    const indexes = this.trees.get(collection)
    let bytes = 0
    for (const r of v.refs) {
      const m = indexes?.get(r.index)
      const n = m?.map.get(r.entry)
      if (m === undefined || n === undefined) throw new Error(`index entry of ${r.index} missing from memory (bug)`) // assertion
      if (n > 1) {
        m.map.set(r.entry, n - 1)
      } else {
        m.remove(r.entry)
        this.entries--
        this.removed++
        bytes += r.entry.length + INDEX_ENTRY_OVERHEAD_BYTES
      }
    }
    return bytes
  }

  /** A whole version left memory: the bytes it and the entries removed with it held. */
  release(collection: string, v: Version): number {
    return versionBytes(v) + this.leave(collection, v)
  }
}
