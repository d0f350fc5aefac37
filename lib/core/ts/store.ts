/**
 * The ts engine's store: per collection, latest value bytes by key, with ordered scans.
 * Keys are held as latin1 strings (one char per byte), so `<` on them is unsigned byte order.
 */
import { bytesToOrderedString, orderedStringToBytes } from '../../codec/bytes.js'
import type { CoreScanOptions } from '../types.js'
import type { WriteOp } from '../payload.js'

class Collection {
  readonly map = new Map<string, Uint8Array>()
  /** Sorted keys; may hold deleted keys (skipped on read) until the next rebuild. */
  private sorted: string[] = []
  /** Keys added since `sorted` was built. */
  private added: string[] = []
  private deleted = 0

  put(key: string, value: Uint8Array): void {
    if (!this.map.has(key)) this.added.push(key)
    this.map.set(key, value)
  }

  delete(key: string): void {
    if (this.map.delete(key)) this.deleted++
  }

  /** The sorted key array, rebuilt when keys were added or many were deleted. */
  keys(): string[] {
    if (this.added.length > 0 || this.deleted > this.sorted.length / 2) {
      const fresh = this.added.sort()
      const merged: string[] = []
      let i = 0
      let j = 0
      // Merge two sorted arrays, dropping deleted keys and duplicates (a key deleted and re-added).
      while (i < this.sorted.length || j < fresh.length) {
        const a = this.sorted[i]
        const b = fresh[j]
        let next: string
        if (b === undefined || (a !== undefined && a < b)) { next = a!; i++ }
        else if (a === undefined || b < a) { next = b; j++ }
        else { next = a; i++; j++ }
        if (this.map.has(next) && merged[merged.length - 1] !== next) merged.push(next)
      }
      this.sorted = merged
      this.added = []
      this.deleted = 0
    }
    return this.sorted
  }
}

function lowerBound(keys: string[], target: string): number {
  let lo = 0
  let hi = keys.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (keys[mid]! < target) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** Latest-value maps for every collection. */
export class MemStore {
  private readonly collections = new Map<string, Collection>()
  keyCount = 0

  private collection(name: string): Collection {
    let c = this.collections.get(name)
    if (!c) {
      c = new Collection()
      this.collections.set(name, c)
    }
    return c
  }

  /** Apply one commit's ops, in order. */
  apply(ops: readonly WriteOp[]): void {
    for (const op of ops) {
      const c = this.collection(op.collection)
      const key = bytesToOrderedString(op.key)
      const before = c.map.size
      if (op.value) c.put(key, op.value.slice())
      else c.delete(key)
      this.keyCount += c.map.size - before
    }
  }

  get(collection: string, key: Uint8Array): Uint8Array | undefined {
    return this.collections.get(collection)?.map.get(bytesToOrderedString(key))
  }

  scan(collection: string, o: CoreScanOptions): Array<[Uint8Array, Uint8Array]> {
    const c = this.collections.get(collection)
    if (!c) return []
    const keys = c.keys()
    const lower = o.gte ? { k: bytesToOrderedString(o.gte), incl: true } : o.gt ? { k: bytesToOrderedString(o.gt), incl: false } : undefined
    const upper = o.lte ? { k: bytesToOrderedString(o.lte), incl: true } : o.lt ? { k: bytesToOrderedString(o.lt), incl: false } : undefined
    let start = lower ? lowerBound(keys, lower.k) : 0
    if (lower && !lower.incl && keys[start] === lower.k) start++
    let end = upper ? lowerBound(keys, upper.k) : keys.length
    if (upper && upper.incl && keys[end] === upper.k) end++
    const limit = o.limit ?? Infinity
    const out: Array<[Uint8Array, Uint8Array]> = []
    const step = o.reverse ? -1 : 1
    // Bounded by the key range; deleted keys still in `keys` are skipped.
    for (let i = o.reverse ? end - 1 : start; i >= start && i < end && out.length < limit; i += step) {
      const k = keys[i]!
      const v = c.map.get(k)
      if (v) out.push([orderedStringToBytes(k), v])
    }
    return out
  }
}
