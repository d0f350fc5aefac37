/**
 * A key's versions in memory (twin of `store/chain.rs`): `Version`, `Chain`, visibility at a
 * snapshot, and the memory charged for versions and keys. Keys are held as latin1 strings (one
 * char per byte), so `<` on them is unsigned byte order; `SortedMap` keeps them in that order.
 */

/** Bytes charged per version and per key on top of their payload bytes (an estimate). */
export const VERSION_OVERHEAD_BYTES = 40
export const KEY_OVERHEAD_BYTES = 64

/** One index entry a version holds: the index, and the entry key `ik ‖ pk ‖ u16 BE |pk|` as a latin1 string. */
export interface IndexRef {
  index: string
  entry: string
}

/** One version of a record. */
export interface Version {
  commitId: number
  /** Stored bytes (plain or envelope); undefined = tombstone. */
  value: Uint8Array | undefined
  /** The index entries of its envelope; undefined when it has none. */
  refs: IndexRef[] | undefined
}

/** A key's versions, oldest first (never empty while in a map), and its age group. */
export interface Chain {
  versions: Version[]
  /** The age group when the chain was last installed, loaded or read (the scavenger's LRU clock). */
  age: number
}

/** The newest version at or below `snapshot`. */
export function visible(versions: Version[], snapshot: number): Version | undefined {
  for (let i = versions.length - 1; i >= 0; i--) if (versions[i]!.commitId <= snapshot) return versions[i]
  return undefined
}

export function versionBytes(v: Version): number {
  return (v.value?.length ?? 0) + VERSION_OVERHEAD_BYTES
}

/**
 * A map with string keys and a lazily sorted key array: `keys()` rebuilds it when keys were added
 * or many were removed (removed keys are skipped by readers until then).
 */
export class SortedMap<V> {
  readonly map = new Map<string, V>()
  /** Sorted keys; may hold removed keys (skipped on read) until the next rebuild. */
  private sorted: string[] = []
  /** Keys added since `sorted` was built. */
  private added: string[] = []
  private removed = 0

  /** Add a key that is not in the map. */
  insert(key: string, value: V): void {
    this.map.set(key, value)
    this.added.push(key)
  }

  remove(key: string): void {
    if (this.map.delete(key)) this.removed++
  }

  /** The sorted key array, rebuilt when keys were added or many were removed. */
  keys(): string[] {
    if (this.added.length > 0 || this.removed > this.sorted.length / 2) {
      const fresh = this.added.sort()
      const merged: string[] = []
      let i = 0
      let j = 0
      // Merge two sorted arrays, dropping removed keys and duplicates (a key removed and re-added).
      while (i < this.sorted.length || j < fresh.length) {
        const a = this.sorted[i]
        const b = fresh[j]
        let next: string
        if (b === undefined || (a !== undefined && a < b)) {
          next = a!
          i++
        } else if (a === undefined || b < a) {
          next = b
          j++
        } else {
          next = a
          i++
          j++
        }
        if (this.map.has(next) && merged[merged.length - 1] !== next) merged.push(next)
      }
      this.sorted = merged
      this.added = []
      this.removed = 0
    }
    return this.sorted
  }
}

/** First index in sorted `keys` whose key ≥ `target`. */
export function lowerBound(keys: string[], target: string): number {
  let lo = 0
  let hi = keys.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (keys[mid]! < target) lo = mid + 1
    else hi = mid
  }
  return lo
}
