/**
 * The ts engine's version store, twin of `crates/kestrel-core/src/store.rs`: per (collection, key)
 * a chain of versions, oldest first, stamped with the commit id that wrote them. Keys are held as
 * latin1 strings (one char per byte), so `<` on them is unsigned byte order.
 */
import { bytesToOrderedString, orderedStringToBytes } from '../../codec/bytes.js'
import type { CoreScanOptions } from '../types.js'
import { OP_APPEND, OP_DELETE, OP_INCREMENT, type WriteOp } from '../payload.js'
import { mergeAppend, mergeIncrement } from './merge.js'
import type { Bound, PageEntry, PageStore } from './pages/store.js'

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

/** Bytes charged per version and per key on top of their payload bytes (an estimate). */
export const VERSION_OVERHEAD_BYTES = 40
export const KEY_OVERHEAD_BYTES = 64
/** Entries per page-store read while merging a scan. */
const SCAN_CHUNK_ENTRIES = 256

/** What one installed write left as the key's newest version: the flusher's input. */
export interface Written {
  collection: string
  key: Uint8Array
  commitId: number
  /** undefined = deleted. */
  value: Uint8Array | undefined
}

/** Memory a write holds while queued, deferred or dirty. */
export function writtenBytes(w: Written): number {
  return w.collection.length + w.key.length + (w.value?.length ?? 0) + VERSION_OVERHEAD_BYTES
}

function versionBytes(v: Version): number {
  return (v.value?.length ?? 0) + VERSION_OVERHEAD_BYTES
}

/**
 * Version chains for every collection (the record cache). A key is either in memory — its chain
 * then answers every snapshot ≥ the horizon — or only in the page store, whose version is then its
 * only one. Writing a key that is only in the page store loads that version first (merges build on
 * it, older snapshots read it). Chains are retired from memory only when they are a single
 * version already in a checkpoint.
 */
export class VersionStore {
  private readonly collections = new Map<string, Collection>()
  /** Never decreases; see Core.setHorizon. */
  horizon = 0
  /** The published checkpoint's LSN. Never decreases. */
  checkpointedLsn = 0
  /** Invariant: number of keys whose newest version is not a tombstone (memory and page store). */
  liveKeys = 0
  /** Invariant: total number of versions held in memory. */
  versions = 0
  /** Invariant: estimated bytes of the chains in memory. */
  recordBytes = 0
  /** Chains dropped from memory since open. */
  retired = 0

  constructor(private readonly pages: PageStore, checkpointLsn = 0, records = 0) {
    this.checkpointedLsn = checkpointLsn
    this.horizon = checkpointLsn
    this.liveKeys = records
  }

  private collection(name: string): Collection {
    let c = this.collections.get(name)
    if (!c) {
      c = new Collection()
      this.collections.set(name, c)
    }
    return c
  }

  private pruneChain(chain: Version[], horizon: number): number {
    let keepFrom = -1
    for (let i = chain.length - 1; i >= 0; i--) if (chain[i]!.commitId <= horizon) { keepFrom = i; break }
    if (keepFrom <= 0) return 0
    for (let i = 0; i < keepFrom; i++) this.recordBytes -= versionBytes(chain[i]!)
    return prune(chain, horizon)
  }

  /**
   * Install one commit's ops in order (in LSN order, after the commit is acknowledged). Returns
   * what each op left as its key's newest version.
   */
  apply(commitId: number, ops: readonly WriteOp[]): Written[] {
    const out: Written[] = []
    for (const op of ops) {
      const c = this.collection(op.collection)
      const k = bytesToOrderedString(op.key)
      let chain = c.map.get(k)
      if (!chain) {
        chain = c.chain(k)
        const onDisk = this.pages.get(op.collection, op.key)
        if (onDisk) {
          const v: Version = { commitId: onDisk.commitId, value: onDisk.value }
          chain.push(v)
          this.versions++
          this.recordBytes += versionBytes(v)
        }
        this.recordBytes += op.key.length + KEY_OVERHEAD_BYTES
      }
      const base = chain[chain.length - 1]?.value
      let value: Uint8Array | undefined
      switch (op.kind) {
        case OP_DELETE: value = undefined; break
        case OP_APPEND: value = mergeAppend(base, op.value!); break
        case OP_INCREMENT: value = mergeIncrement(base, op.value!); break
        default: value = op.value!.slice()
      }
      const v: Version = { commitId, value }
      chain.push(v)
      this.recordBytes += versionBytes(v)
      this.versions += 1 - this.pruneChain(chain, this.horizon)
      this.liveKeys += (value !== undefined ? 1 : 0) - (base !== undefined ? 1 : 0)
      out.push({ collection: op.collection, key: op.key, commitId, value })
    }
    return out
  }

  /** Raise the horizon (never lowers it). With `sweep`, prune every chain now. */
  setHorizon(horizon: number, sweep: boolean): void {
    this.horizon = Math.max(this.horizon, horizon)
    if (!sweep) return
    for (const c of this.collections.values()) {
      for (const [key, chain] of c.map) {
        this.versions -= this.pruneChain(chain, this.horizon)
        // A lone tombstone at or below the horizon hides nothing from any snapshot — once a
        // checkpoint has removed the key from the page store too.
        const only = chain[0]!
        if (chain.length === 1 && only.value === undefined && only.commitId <= this.horizon && only.commitId <= this.checkpointedLsn) {
          c.remove(key)
          this.versions--
          this.recordBytes -= versionBytes(only) + key.length + KEY_OVERHEAD_BYTES
        }
      }
    }
  }

  /** A checkpoint at `lsn` is published: chains at or below it may be retired. */
  setCheckpointed(lsn: number): void {
    this.checkpointedLsn = Math.max(this.checkpointedLsn, lsn)
  }

  /**
   * Drop single-version chains already in the checkpoint, in collection and key order, until the
   * record memory is at most `targetBytes`. Returns how many were dropped.
   */
  retire(targetBytes: number): number {
    if (this.recordBytes <= targetBytes) return 0
    let retired = 0
    const names = [...this.collections.keys()].sort()
    for (const name of names) {
      const c = this.collections.get(name)!
      for (const [key, chain] of c.map) {
        if (this.recordBytes <= targetBytes) break
        const only = chain[0]!
        if (chain.length === 1 && only.commitId <= this.checkpointedLsn && (only.value !== undefined || only.commitId <= this.horizon)) {
          c.remove(key)
          this.versions--
          this.recordBytes -= versionBytes(only) + key.length + KEY_OVERHEAD_BYTES
          retired++
        }
      }
      if (this.recordBytes <= targetBytes) break
    }
    this.retired += retired
    return retired
  }

  get(collection: string, key: Uint8Array, snapshot: number): Uint8Array | undefined {
    const chain = this.collections.get(collection)?.map.get(bytesToOrderedString(key))
    if (chain) return visible(chain, snapshot)?.value
    const onDisk = this.pages.get(collection, key)
    return onDisk && onDisk.commitId <= snapshot ? onDisk.value : undefined
  }

  /** The chains in memory merged with the page store's keys that are not in memory. */
  scan(collection: string, o: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    const c = this.collections.get(collection)
    const keys = c ? c.keys() : []
    const lower = o.gte ? { k: bytesToOrderedString(o.gte), incl: true } : o.gt ? { k: bytesToOrderedString(o.gt), incl: false } : undefined
    const upper = o.lte ? { k: bytesToOrderedString(o.lte), incl: true } : o.lt ? { k: bytesToOrderedString(o.lt), incl: false } : undefined
    if (lower && upper && (lower.k > upper.k || (lower.k === upper.k && !(lower.incl && upper.incl)))) return []
    let start = lower ? lowerBound(keys, lower.k) : 0
    if (lower && !lower.incl && keys[start] === lower.k) start++
    let end = upper ? lowerBound(keys, upper.k) : keys.length
    if (upper && upper.incl && keys[end] === upper.k) end++
    const limit = o.limit ?? Infinity
    const out: Array<[Uint8Array, Uint8Array]> = []
    const step = o.reverse ? -1 : 1
    let i = o.reverse ? end - 1 : start
    // Memory side: the next key (still in the map) within range, or undefined.
    const nextMem = (): string | undefined => {
      while (i >= start && i < end) {
        const k = keys[i]!
        if (c!.map.has(k)) return k
        i += step
      }
      return undefined
    }
    // Page-store side, read in chunks.
    let disk: PageEntry[] = []
    let di = 0
    let diskDone = false
    let diskCursor: string | undefined
    const lo: Bound = o.gte ? { key: o.gte, inclusive: true } : o.gt ? { key: o.gt, inclusive: false } : undefined
    const hi: Bound = o.lte ? { key: o.lte, inclusive: true } : o.lt ? { key: o.lt, inclusive: false } : undefined
    const nextDisk = (): PageEntry | undefined => {
      if (di < disk.length) return disk[di]
      if (diskDone) return undefined
      const cursor: Bound = diskCursor === undefined ? undefined : { key: orderedStringToBytes(diskCursor), inclusive: false }
      disk = this.pages.range(collection, o.reverse ? lo : (cursor ?? lo), o.reverse ? (cursor ?? hi) : hi, o.reverse === true, SCAN_CHUNK_ENTRIES)
      di = 0
      diskDone = disk.length < SCAN_CHUNK_ENTRIES
      if (disk.length > 0) diskCursor = bytesToOrderedString(disk[disk.length - 1]!.key)
      return disk[0]
    }
    // Bounded: each pass consumes a memory key or a page-store entry.
    while (out.length < limit) {
      const mk = nextMem()
      const d = nextDisk()
      if (mk === undefined && d === undefined) break
      const dk = d === undefined ? undefined : bytesToOrderedString(d.key)
      let takeMem: boolean
      if (mk === undefined) takeMem = false
      else if (dk === undefined) takeMem = true
      else takeMem = o.reverse ? mk >= dk : mk <= dk
      if (takeMem) {
        if (dk !== undefined && dk === mk) di++ // memory answers for a key it holds
        const v = visible(c!.map.get(mk!)!, snapshot)?.value
        if (v) out.push([orderedStringToBytes(mk!), v])
        i += step
      } else {
        di++
        if (d!.commitId <= snapshot) out.push([d!.key, d!.value])
      }
    }
    return out
  }
}
