/**
 * The ts engine's version store, twin of `crates/kestrel-core/src/store.rs`: per (collection, key)
 * a chain of versions, oldest first, stamped with the commit id that wrote them. Keys are held as
 * latin1 strings (one char per byte), so `<` on them is unsigned byte order.
 */
import { bytesToOrderedString, orderedStringToBytes } from '../../codec/bytes.js'
import type { CoreScanOptions } from '../types.js'
import { OP_APPEND, OP_DELETE, OP_INCREMENT, type WriteOp } from '../payload.js'
import { mergeAppend, mergeIncrement } from './merge.js'

/** One version of a record. */
interface Version {
  commitId: number
  /** undefined = tombstone. */
  value: Uint8Array | undefined
}

function visible(chain: Version[], snapshot: number): Version | undefined {
  for (let i = chain.length - 1; i >= 0; i--) if (chain[i]!.commitId <= snapshot) return chain[i]
  return undefined
}

/** Drop versions hidden from every snapshot ≥ horizon; returns how many were dropped. */
function prune(chain: Version[], horizon: number): number {
  let keepFrom = -1
  for (let i = chain.length - 1; i >= 0; i--) if (chain[i]!.commitId <= horizon) { keepFrom = i; break }
  if (keepFrom <= 0) return 0
  chain.splice(0, keepFrom)
  return keepFrom
}

class Collection {
  readonly map = new Map<string, Version[]>()
  /** Sorted keys; may hold removed keys (skipped on read) until the next rebuild. */
  private sorted: string[] = []
  /** Keys added since `sorted` was built. */
  private added: string[] = []
  private removed = 0

  chain(key: string): Version[] {
    let c = this.map.get(key)
    if (!c) {
      c = []
      this.map.set(key, c)
      this.added.push(key)
    }
    return c
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
        if (b === undefined || (a !== undefined && a < b)) { next = a!; i++ }
        else if (a === undefined || b < a) { next = b; j++ }
        else { next = a; i++; j++ }
        if (this.map.has(next) && merged[merged.length - 1] !== next) merged.push(next)
      }
      this.sorted = merged
      this.added = []
      this.removed = 0
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

/** Version chains for every collection. */
export class VersionStore {
  private readonly collections = new Map<string, Collection>()
  /** Never decreases; see Core.setHorizon. */
  horizon = 0
  /** Invariant: number of keys whose newest version is not a tombstone. */
  liveKeys = 0
  /** Invariant: total number of versions held. */
  versions = 0

  private collection(name: string): Collection {
    let c = this.collections.get(name)
    if (!c) {
      c = new Collection()
      this.collections.set(name, c)
    }
    return c
  }

  /** Install one commit's ops in order (in LSN order, after the commit is acknowledged). */
  apply(commitId: number, ops: readonly WriteOp[]): void {
    for (const op of ops) {
      const chain = this.collection(op.collection).chain(bytesToOrderedString(op.key))
      const base = chain[chain.length - 1]?.value
      let value: Uint8Array | undefined
      switch (op.kind) {
        case OP_DELETE: value = undefined; break
        case OP_APPEND: value = mergeAppend(base, op.value!); break
        case OP_INCREMENT: value = mergeIncrement(base, op.value!); break
        default: value = op.value!.slice()
      }
      chain.push({ commitId, value })
      this.versions += 1 - prune(chain, this.horizon)
      this.liveKeys += (value !== undefined ? 1 : 0) - (base !== undefined ? 1 : 0)
    }
  }

  /** Raise the horizon (never lowers it). With `sweep`, prune every chain now. */
  setHorizon(horizon: number, sweep: boolean): void {
    this.horizon = Math.max(this.horizon, horizon)
    if (!sweep) return
    for (const c of this.collections.values()) {
      for (const [key, chain] of c.map) {
        this.versions -= prune(chain, this.horizon)
        // A lone tombstone at or below the horizon hides nothing from anyone.
        if (chain.length === 1 && chain[0]!.value === undefined && chain[0]!.commitId <= this.horizon) {
          c.remove(key)
          this.versions--
        }
      }
    }
  }

  get(collection: string, key: Uint8Array, snapshot: number): Uint8Array | undefined {
    const chain = this.collections.get(collection)?.map.get(bytesToOrderedString(key))
    return chain && visible(chain, snapshot)?.value
  }

  scan(collection: string, o: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
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
    // Bounded by the key range; removed keys still in `keys` are skipped.
    for (let i = o.reverse ? end - 1 : start; i >= start && i < end && out.length < limit; i += step) {
      const k = keys[i]!
      const chain = c.map.get(k)
      const v = chain && visible(chain, snapshot)?.value
      if (v) out.push([orderedStringToBytes(k), v])
    }
    return out
  }
}
