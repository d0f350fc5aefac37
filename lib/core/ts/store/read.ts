/**
 * Scans and index lookups at a snapshot (twin of `store/read.rs`): the keys in memory merged with
 * the page store's, memory answering for every key it holds. An index candidate is returned only
 * if the version of its record visible at the snapshot holds exactly that entry, so stale entries
 * are never returned and no visible record is missed.
 */
import { bytesToOrderedString, orderedStringToBytes } from '../../../codec/bytes.js'
import { KestrelError } from '../../../errors.js'
import { ENVELOPE_TAG, envelopeValue, indexTreeName } from '../../../format/envelope.js'
import { storedKeys } from '../../../format/stored.js'
import type { CoreScanOptions } from '../../types.js'
import type { Bound, PageEntry } from '../pages/index.js'
import { lowerBound, visible, type SortedMap } from './chain.js'
import { DiskCursor } from './disk_cursor.js'
import type { Store } from './index.js'
import { splitEntry } from './overlay.js'

/** Bounds in latin1-string form: `incl` = the bound itself is in range. */
interface StrBound {
  k: string
  incl: boolean
}

/**
 * Walk the keys of `mem` (in memory) merged with the page-store tree `tree` within the bounds,
 * in order (or reverse). `visit(key, inMemory, disk)` gets each key once — `inMemory` when `mem`
 * holds it, `disk` its page-store entry when the tree holds it (and `mem` does not) — and
 * returns false to stop.
 */
function walkMerged(
  store: Store,
  mem: SortedMap<unknown> | undefined,
  tree: string,
  o: CoreScanOptions,
  visit: (key: string, inMemory: boolean, disk: PageEntry | undefined) => boolean,
): void {
  const lower: StrBound | undefined = o.gte ? { k: bytesToOrderedString(o.gte), incl: true } : o.gt ? { k: bytesToOrderedString(o.gt), incl: false } : undefined
  const upper: StrBound | undefined = o.lte ? { k: bytesToOrderedString(o.lte), incl: true } : o.lt ? { k: bytesToOrderedString(o.lt), incl: false } : undefined
  if (lower && upper && (lower.k > upper.k || (lower.k === upper.k && !(lower.incl && upper.incl)))) return
  const keys = mem ? mem.keys() : []
  let start = lower ? lowerBound(keys, lower.k) : 0
  if (lower && !lower.incl && keys[start] === lower.k) start++
  let end = upper ? lowerBound(keys, upper.k) : keys.length
  if (upper?.incl && keys[end] === upper.k) end++
  const step = o.reverse ? -1 : 1
  let i = o.reverse ? end - 1 : start
  // Memory side: the next key (still in the map) within range, or undefined.
  const nextMem = (): string | undefined => {
    while (i >= start && i < end) {
      const k = keys[i]!
      if (mem!.map.has(k)) return k
      i += step
    }
    return undefined
  }
  // Page-store side, read in chunks.
  const lo: Bound = o.gte ? { key: o.gte, inclusive: true } : o.gt ? { key: o.gt, inclusive: false } : undefined
  const hi: Bound = o.lte ? { key: o.lte, inclusive: true } : o.lt ? { key: o.lt, inclusive: false } : undefined
  const disk = new DiskCursor(store.pages, tree, lo, hi, o.reverse === true)
  /** The page-store entry `disk.peek()` returned, as a latin1 string (decoded once). */
  let dk: string | undefined
  // Bounded: each pass consumes a memory key or a page-store entry.
  for (;;) {
    const mk = nextMem()
    const d = disk.peek()
    if (mk === undefined && d === undefined) return
    if (d !== undefined && dk === undefined) dk = bytesToOrderedString(d.key)
    let takeMem: boolean
    if (mk === undefined) takeMem = false
    else if (d === undefined) takeMem = true
    else takeMem = o.reverse ? mk >= dk! : mk <= dk!
    let go: boolean
    if (takeMem) {
      if (d !== undefined && dk === mk) {
        disk.pop()
        dk = undefined
      } // memory answers for a key it holds
      i += step
      go = visit(mk!, true, undefined)
    } else {
      disk.pop()
      const key = dk!
      dk = undefined
      go = visit(key, false, d)
    }
    if (!go) return
  }
}

/** The chains in memory merged with the page store's keys that are not in memory. */
export function scan(store: Store, collection: string, o: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
  const c = store.collections.get(collection)
  const limit = o.limit ?? Infinity
  const out: Array<[Uint8Array, Uint8Array]> = []
  if (!(limit > 0)) return out
  walkMerged(store, c, collection, o, (k, inMemory, d) => {
    if (inMemory) {
      const chain = c!.map.get(k)!
      chain.age = store.ageGroup
      const v = visible(chain.versions, snapshot)?.value
      if (v) out.push([orderedStringToBytes(k), envelopeValue(v)])
    } else if (d!.commitId <= snapshot) {
      out.push([d!.key, envelopeValue(d!.value)])
    }
    return out.length < limit
  })
  return out
}

/**
 * Index lookup (see Core.find): the in-memory entries of `index` merged with the page-store
 * index tree (an entry in both counts once); each candidate is kept only if the version of its
 * primary key visible at `snapshot` holds exactly that entry.
 */
export function find(store: Store, collection: string, index: string, o: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
  const c = store.collections.get(collection)
  const limit = o.limit ?? Infinity
  const out: Array<[Uint8Array, Uint8Array]> = []
  if (!(limit > 0)) return out
  walkMerged(store, store.overlay.tree(collection, index), indexTreeName(collection, index), o, (entry) => {
    const split = splitEntry(entry)
    if (!split) {
      // Memory only holds entries it made: this one comes from the page store.
      throw new KestrelError(
        'KESTREL_CORRUPT',
        `an entry of index ${JSON.stringify(index)} of collection ${JSON.stringify(collection)} (${entry.length} bytes) has a primary-key length that does not fit; restore from a backup (kestrel restore <backup> <dir>)`,
      )
    }
    const { ik, pk } = split
    const chain = c?.map.get(pk)
    if (chain) {
      chain.age = store.ageGroup
      const v = visible(chain.versions, snapshot)
      if (v?.value !== undefined && v.refs?.some((r) => r.index === index && r.entry === entry)) {
        out.push([orderedStringToBytes(pk), envelopeValue(v.value)])
      }
    } else {
      const pkBytes = orderedStringToBytes(pk)
      const onDisk = store.pages.get(collection, pkBytes)
      if (onDisk && onDisk.commitId <= snapshot && onDisk.value[0] === ENVELOPE_TAG) {
        const keys = storedKeys(onDisk.value, pkBytes.length)
        if (typeof keys === 'string') {
          throw new KestrelError(
            'KESTREL_CORRUPT',
            `a stored value of key ${Buffer.from(pkBytes).toString('hex')} in collection ${JSON.stringify(collection)} is a malformed index envelope (${keys}); restore from a backup (kestrel restore <backup> <dir>)`,
          )
        }
        if (keys.some((e) => e.index === index && bytesToOrderedString(e.key) === ik)) out.push([pkBytes, envelopeValue(onDisk.value)])
      }
    }
    return out.length < limit
  })
  return out
}
