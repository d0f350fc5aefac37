/**
 * The ts engine's version store, twin of `crates/kestrel-core/src/store.rs`: per (collection, key)
 * a chain of versions, oldest first, stamped with the commit id that wrote them. Keys are held as
 * latin1 strings (one char per byte), so `<` on them is unsigned byte order.
 *
 * Versions hold *stored* bytes: plain MessagePack or an index envelope (docs/FORMAT.md "Index
 * envelope"); reads return the MessagePack part. Next to the chains, per collection and index, the
 * in-memory index entries (docs/FORMAT.md "Index entries in memory"): entry key → the number of
 * in-memory versions (of any chain) holding that pair. A version entering a chain adds one per
 * envelope entry, a version leaving memory subtracts one, and an entry goes at zero — never by
 * comparing a leaving version with a neighbour (Falcon bug #40801, seed 004).
 */
import { bytesToOrderedString, orderedStringToBytes } from '../../codec/bytes.js'
import { KestrelError } from '../../errors.js'
import type { CoreScanOptions, CoreScavengeOptions, CoreScavengeStep } from '../types.js'
import { ENVELOPE_TAG, envelopeValue, indexTreeName } from '../envelope.js'
import { OP_APPEND, OP_DELETE, OP_INCREMENT, type WriteOp } from '../payload.js'
import { mergeAppend, mergeIncrement } from './merge.js'
import { storedKeys } from './stored.js'
import type { Bound, PageEntry, PageStore } from './pages/store.js'
import { PAGE_FILE } from './pages/layout.js'

/**
 * The most pinned snapshots the store tells apart (a bound on the list's memory and on the cost
 * of a prune), as in the Rust twin. Past it the oldest `PINNED_MAX` are kept and every version
 * above the newest of them stays: the snapshots cut off still read theirs, the store keeps more.
 */
export const PINNED_MAX = 1 << 16

/** One index entry a version holds: the index, and the entry key `ik ‖ pk ‖ u16 BE |pk|` as a latin1 string. */
interface IndexRef {
  index: string
  entry: string
}

/** One version of a record. */
interface Version {
  commitId: number
  /** Stored bytes (plain or envelope); undefined = tombstone. */
  value: Uint8Array | undefined
  /** The index entries of its envelope; undefined when it has none. */
  refs: IndexRef[] | undefined
}

/** A key's versions, oldest first (never empty while in a map), and its age group. */
interface Chain {
  versions: Version[]
  /** The age group when the chain was last installed, loaded or read (the scavenger's LRU clock). */
  age: number
}

function visible(versions: Version[], snapshot: number): Version | undefined {
  for (let i = versions.length - 1; i >= 0; i--) if (versions[i]!.commitId <= snapshot) return versions[i]
  return undefined
}

/** The u16 BE primary-key length that ends an entry key, as two latin1 chars. */
function lengthSuffix(n: number): string {
  return String.fromCharCode(n >>> 8, n & 0xff)
}

/** The (index key, primary key) parts of an entry key string (see splitIndexEntry); undefined when its length does not fit. */
function splitEntry(entry: string): { ik: string; pk: string } | undefined {
  if (entry.length < 2) return undefined
  const n = (entry.charCodeAt(entry.length - 2) << 8) | entry.charCodeAt(entry.length - 1)
  const pkStart = entry.length - 2 - n
  if (pkStart < 0) return undefined
  return { ik: entry.slice(0, pkStart), pk: entry.slice(pkStart, entry.length - 2) }
}

/**
 * A map with string keys and a lazily sorted key array: `keys()` rebuilds it when keys were added
 * or many were removed (removed keys are skipped by readers until then).
 */
class SortedMap<V> {
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

class Collection {
  readonly chains = new SortedMap<Chain>()
  /** Index name → in-memory entries (entry key → reference count ≥ 1). */
  readonly indexes = new Map<string, SortedMap<number>>()
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
/** Bytes charged per in-memory index entry on top of its entry key (map node and count). */
export const INDEX_ENTRY_OVERHEAD_BYTES = 48
/** Entries per page-store read while merging a scan or an index lookup. */
const SCAN_CHUNK_ENTRIES = 256
/** The first page-store read of a scan or lookup (most are short). */
const SCAN_FIRST_CHUNK_ENTRIES = 16

/** What one installed write left as the key's newest version: the flusher's input. */
export interface Written {
  collection: string
  key: Uint8Array
  commitId: number
  /** Stored bytes (plain or envelope); undefined = deleted. */
  value: Uint8Array | undefined
}

/** Memory a write holds while queued, deferred or dirty. */
export function writtenBytes(w: Written): number {
  return w.collection.length + w.key.length + (w.value?.length ?? 0) + VERSION_OVERHEAD_BYTES
}

function versionBytes(v: Version): number {
  return (v.value?.length ?? 0) + VERSION_OVERHEAD_BYTES
}

/** Bounds in latin1-string form: `incl` = the bound itself is in range. */
interface StrBound { k: string; incl: boolean }

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
  /** Open snapshots below the horizon, ascending and distinct, at most PINNED_MAX: each keeps the version it sees. */
  pinned: number[] = []
  /**
   * Every version above it stays: the horizon, or the newest of the PINNED_MAX oldest pinned
   * snapshots when more were handed over. Invariant: ≤ horizon, ≥ every pinned snapshot.
   */
  private above = 0
  /** The published checkpoint's LSN. Never decreases. */
  checkpointedLsn = 0
  /** Invariant: number of keys whose newest version is not a tombstone (memory and page store). */
  liveKeys = 0
  /** Invariant: total number of versions held in memory. */
  versions = 0
  /** Invariant: estimated bytes of the chains and the index entries in memory. */
  recordBytes = 0
  /** Chains dropped from memory since open. */
  retired = 0
  /** Invariant: number of in-memory index entries (distinct pairs) over all collections and indexes. */
  indexEntries = 0
  /** The current age group; never decreases. */
  ageGroup = 0
  /** In-memory index entries removed (reference count reached zero) since open. */
  private entriesRemoved = 0
  /**
   * Where the scavenge pass stands: live iterators over the collections and over the current
   * collection's chains (Map iteration follows insertion order and tolerates deletion), plus a
   * chain looked at but not visited yet (to tell whether the pass is done).
   */
  private cursor: {
    collections: Iterator<Collection>
    chains: Iterator<[string, Chain]> | undefined
    collection: Collection | undefined
    pending: [string, Chain] | undefined
  } | undefined

  constructor(private readonly pages: PageStore, checkpointLsn = 0, records = 0) {
    this.checkpointedLsn = checkpointLsn
    this.horizon = checkpointLsn
    this.above = checkpointLsn
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

  /** A version of `key` (latin1 `k`, `keyBytes` long) with its index entries parsed. */
  private version(commitId: number, value: Uint8Array | undefined, k: string, keyBytes: number, fromPages: boolean): Version {
    if (value === undefined || value[0] !== ENVELOPE_TAG) return { commitId, value, refs: undefined }
    const keys = storedKeys(value, keyBytes)
    if (typeof keys === 'string') {
      // Commits are checked before they are installed, so only a page-store value gets here.
      throw new KestrelError(fromPages ? 'KESTREL_CORRUPT' : 'KESTREL_INVALID_ARGUMENT', `a stored value of key ${Buffer.from(orderedStringToBytes(k)).toString('hex')} is a malformed index envelope (${keys})${fromPages ? '; restore from a backup (kestrel restore <backup> <dir>)' : ''}`)
    }
    const suffix = k + lengthSuffix(keyBytes)
    return { commitId, value, refs: keys.map((e) => ({ index: e.index, entry: bytesToOrderedString(e.key) + suffix })) }
  }

  /** A version enters memory: one reference per envelope entry. */
  private addRefs(c: Collection, v: Version): void {
    if (!v.refs) return
    for (const r of v.refs) {
      let m = c.indexes.get(r.index)
      if (!m) {
        m = new SortedMap<number>()
        c.indexes.set(r.index, m)
      }
      const n = m.map.get(r.entry)
      if (n === undefined) {
        m.insert(r.entry, 1)
        this.indexEntries++
        this.recordBytes += r.entry.length + INDEX_ENTRY_OVERHEAD_BYTES
      } else {
        m.map.set(r.entry, n + 1)
      }
    }
  }

  /** A version leaves memory: its references go; an entry no staying version holds goes too. */
  private dropRefs(c: Collection, v: Version): void {
    if (!v.refs) return
    for (const r of v.refs) {
      const m = c.indexes.get(r.index)
      const n = m?.map.get(r.entry)
      if (m === undefined || n === undefined) throw new Error(`index entry of ${r.index} missing from memory (bug)`) // assertion
      if (n > 1) {
        m.map.set(r.entry, n - 1)
      } else {
        m.remove(r.entry)
        this.indexEntries--
        this.entriesRemoved++
        this.recordBytes -= r.entry.length + INDEX_ENTRY_OVERHEAD_BYTES
      }
    }
  }

  /**
   * Drop the versions no allowed snapshot can see; returns how many were dropped. A version stays
   * iff it is newer than `above` (the horizon, unless more than PINNED_MAX snapshots are pinned),
   * or the newest at or below it, or the newest at or below one of the pinned snapshots (older
   * readers still open). Leaving versions may sit in the middle of the chain; their index entries
   * go only if no staying version holds them (counts).
   */
  private pruneChain(c: Collection, chain: Chain): number {
    const vs = chain.versions
    const above = this.above
    let atHorizon = -1
    for (let i = vs.length - 1; i >= 0; i--) if (vs[i]!.commitId <= above) { atHorizon = i; break }
    if (atHorizon <= 0) return 0
    // Versions 0 … atHorizon-1 leave unless a pinned snapshot reads one of them. Bounded by the
    // chain and by the pins (both short; pins are deduplicated and below the horizon).
    const pins = this.pinned
    let keep: boolean[] | undefined
    if (pins.length > 0 && pins[0]! < vs[atHorizon]!.commitId) {
      keep = new Array<boolean>(atHorizon).fill(false)
      let j = atHorizon - 1
      for (let p = pins.length - 1; p >= 0 && j >= 0; p--) {
        const pin = pins[p]!
        if (pin >= vs[atHorizon]!.commitId) continue
        while (j >= 0 && vs[j]!.commitId > pin) j--
        if (j >= 0) keep[j] = true
      }
    }
    let dropped = 0
    let w = 0
    for (let i = 0; i < vs.length; i++) {
      const v = vs[i]!
      if (i >= atHorizon || keep?.[i]) {
        vs[w++] = v
        continue
      }
      this.recordBytes -= versionBytes(v)
      this.dropRefs(c, v)
      dropped++
    }
    vs.length = w
    this.versions -= dropped
    return dropped
  }

  /** Remove a whole chain (a lone version) from memory. */
  private dropChain(c: Collection, key: string, chain: Chain): void {
    for (const v of chain.versions) {
      this.recordBytes -= versionBytes(v)
      this.dropRefs(c, v)
    }
    this.versions -= chain.versions.length
    this.recordBytes -= key.length + KEY_OVERHEAD_BYTES
    c.chains.remove(key)
  }

  /** A lone tombstone at or below the horizon, once a checkpoint removed the key from the page store too: it hides nothing. */
  private isDeadTombstone(chain: Chain): boolean {
    const only = chain.versions[0]!
    return chain.versions.length === 1 && only.value === undefined && only.commitId <= this.horizon && only.commitId <= this.checkpointedLsn
  }

  /** A lone version every snapshot ≥ the horizon would read from the page store the same way. */
  private isRetirable(chain: Chain): boolean {
    const only = chain.versions[0]!
    return chain.versions.length === 1 && only.commitId <= this.checkpointedLsn && (only.value !== undefined || only.commitId <= this.horizon)
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
      let chain = c.chains.map.get(k)
      if (!chain) {
        const onDisk = this.pages.get(op.collection, op.key)
        const loaded = onDisk ? this.version(onDisk.commitId, onDisk.value, k, op.key.length, true) : undefined
        chain = { versions: [], age: this.ageGroup }
        c.chains.insert(k, chain)
        this.recordBytes += op.key.length + KEY_OVERHEAD_BYTES
        if (loaded) {
          chain.versions.push(loaded)
          this.versions++
          this.recordBytes += versionBytes(loaded)
          this.addRefs(c, loaded)
        }
      }
      chain.age = this.ageGroup
      const base = chain.versions[chain.versions.length - 1]?.value
      let value: Uint8Array | undefined
      switch (op.kind) {
        case OP_DELETE: value = undefined; break
        case OP_APPEND: value = mergeAppend(base, op.value!); break
        case OP_INCREMENT: value = mergeIncrement(base, op.value!); break
        default: value = op.value!.slice()
      }
      const v = this.version(commitId, value, k, op.key.length, false)
      chain.versions.push(v)
      this.versions++
      this.recordBytes += versionBytes(v)
      this.addRefs(c, v)
      this.pruneChain(c, chain)
      // The count starts from the checkpoint's; a key loaded from the page store is in it, so
      // it cannot go below zero unless that count was wrong.
      this.liveKeys += (value !== undefined ? 1 : 0) - (base !== undefined ? 1 : 0)
      if (this.liveKeys < 0) {
        throw new KestrelError('KESTREL_CORRUPT', `${op.collection}: more live records were deleted than the checkpoint counts (${PAGE_FILE} meta page); run \`kestrel verify\` and restore from a backup`)
      }
      out.push({ collection: op.collection, key: op.key, commitId, value })
    }
    return out
  }

  /**
   * Raise the horizon (never lowers it) and replace the pinned snapshots: the readers below the
   * horizon still open, each keeping the one version it sees — sorted, deduplicated and cut at
   * PINNED_MAX as the Rust twin does (never an error: a reader must not lose what it reads). With
   * `sweep`, prune every chain now.
   */
  setHorizon(horizon: number, sweep: boolean, pinned: readonly number[] = []): void {
    this.horizon = Math.max(this.horizon, horizon)
    const h = this.horizon
    const kept = [...new Set(pinned)].filter((p) => p < h).sort((a, b) => a - b)
    if (kept.length > PINNED_MAX) {
      // The snapshots cut off lie above the newest one kept: everything above it stays, so the
      // version each of them reads stays (it is above, or the newest at or below it).
      kept.length = PINNED_MAX
      this.above = kept[PINNED_MAX - 1]!
    } else {
      this.above = h
    }
    this.pinned = kept
    if (!sweep) return
    for (const c of this.collections.values()) {
      for (const [key, chain] of c.chains.map) {
        this.pruneChain(c, chain)
        if (this.isDeadTombstone(chain)) this.dropChain(c, key, chain)
      }
    }
  }

  /** A checkpoint at `lsn` is published: chains at or below it may be retired. */
  setCheckpointed(lsn: number): void {
    this.checkpointedLsn = Math.max(this.checkpointedLsn, lsn)
  }

  /** Chains written, loaded or read from now on belong to age group `group` (never decreases). */
  setAgeGroup(group: number): void {
    this.ageGroup = Math.max(this.ageGroup, group)
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
      for (const [key, chain] of c.chains.map) {
        if (this.recordBytes <= targetBytes) break
        if (this.isRetirable(chain)) {
          this.dropChain(c, key, chain)
          retired++
        }
      }
      if (this.recordBytes <= targetBytes) break
    }
    this.retired += retired
    return retired
  }

  /** The next chain of the scavenge pass, or undefined at its end (the next call starts a new pass). */
  private nextChain(): [Collection, string, Chain] | undefined {
    if (!this.cursor) this.cursor = { collections: this.collections.values(), chains: undefined, collection: undefined, pending: undefined }
    const cur = this.cursor
    if (cur.pending) {
      const [key, chain] = cur.pending
      cur.pending = undefined
      // Still the same chain? (Dropped meanwhile: a chain re-made for the key comes later in the pass.)
      if (cur.collection!.chains.map.get(key) === chain) return [cur.collection!, key, chain]
    }
    // Bounded: each iteration consumes a chain or a collection of the live iterators.
    for (;;) {
      if (cur.chains) {
        const r = cur.chains.next()
        if (!r.done) return [cur.collection!, r.value[0], r.value[1]]
        cur.chains = undefined
      }
      const c = cur.collections.next()
      if (c.done) {
        this.cursor = undefined
        return undefined
      }
      cur.collection = c.value
      cur.chains = c.value.chains.map.entries()
    }
  }

  /**
   * One slice of a scavenge pass (see Core.scavenge): for each visited chain, prune below the
   * horizon, drop a dead lone tombstone, else retire it if it is retirable, old enough and memory
   * is still above the target; survey the retirable chains that stay.
   */
  scavenge(o: CoreScavengeOptions): CoreScavengeStep {
    const removedBefore = this.entriesRemoved
    let visited = 0
    let prunedVersions = 0
    let retired = 0
    let done = false
    const survey = new Map<number, number>()
    // A slice visits at least one chain (as the Rust twin's does).
    const visitMax = Math.max(1, o.visitMax)
    // Bounded by visitMax (and the pass's end).
    while (visited < visitMax) {
      const next = this.nextChain()
      if (!next) { done = true; break }
      const [c, key, chain] = next
      visited++
      prunedVersions += this.pruneChain(c, chain)
      if (this.isDeadTombstone(chain)) {
        this.dropChain(c, key, chain)
        prunedVersions++
        continue
      }
      if (!this.isRetirable(chain)) continue
      if (chain.age <= o.retireAgeMax && this.recordBytes > o.targetBytes) {
        this.dropChain(c, key, chain)
        retired++
        continue
      }
      const bytes = versionBytes(chain.versions[0]!) + key.length + KEY_OVERHEAD_BYTES
      survey.set(chain.age, (survey.get(chain.age) ?? 0) + bytes)
    }
    if (!done) {
      // Look ahead one chain, so that a slice that visits the last chain says the pass is done.
      const next = this.nextChain()
      if (next) this.cursor!.pending = [next[1], next[2]]
      else done = true
    }
    this.retired += retired
    const flat: number[] = []
    for (const age of [...survey.keys()].sort((a, b) => a - b)) flat.push(age, survey.get(age)!)
    return { visited, prunedVersions, indexEntriesRemoved: this.entriesRemoved - removedBefore, retired, done, survey: flat }
  }

  get(collection: string, key: Uint8Array, snapshot: number): Uint8Array | undefined {
    const chain = this.collections.get(collection)?.chains.map.get(bytesToOrderedString(key))
    if (chain) {
      chain.age = this.ageGroup
      const v = visible(chain.versions, snapshot)?.value
      return v === undefined ? undefined : envelopeValue(v)
    }
    const onDisk = this.pages.get(collection, key)
    return onDisk && onDisk.commitId <= snapshot ? envelopeValue(onDisk.value) : undefined
  }

  /**
   * Walk the keys of `mem` (in memory) merged with the page-store tree `tree` within the bounds,
   * in order (or reverse). `visit(key, inMemory, disk)` gets each key once — `inMemory` when `mem`
   * holds it, `disk` its page-store entry when the tree holds it (and `mem` does not) — and
   * returns false to stop.
   */
  private walkMerged(
    mem: SortedMap<unknown> | undefined, tree: string, o: CoreScanOptions,
    visit: (key: string, inMemory: boolean, disk: PageEntry | undefined) => boolean,
  ): void {
    const lower: StrBound | undefined = o.gte ? { k: bytesToOrderedString(o.gte), incl: true } : o.gt ? { k: bytesToOrderedString(o.gt), incl: false } : undefined
    const upper: StrBound | undefined = o.lte ? { k: bytesToOrderedString(o.lte), incl: true } : o.lt ? { k: bytesToOrderedString(o.lt), incl: false } : undefined
    if (lower && upper && (lower.k > upper.k || (lower.k === upper.k && !(lower.incl && upper.incl)))) return
    const keys = mem ? mem.keys() : []
    let start = lower ? lowerBound(keys, lower.k) : 0
    if (lower && !lower.incl && keys[start] === lower.k) start++
    let end = upper ? lowerBound(keys, upper.k) : keys.length
    if (upper && upper.incl && keys[end] === upper.k) end++
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
    let disk: PageEntry[] = []
    let di = 0
    let diskDone = false
    let diskCursor: Uint8Array | undefined
    const lo: Bound = o.gte ? { key: o.gte, inclusive: true } : o.gt ? { key: o.gt, inclusive: false } : undefined
    const hi: Bound = o.lte ? { key: o.lte, inclusive: true } : o.lt ? { key: o.lt, inclusive: false } : undefined
    let dk: string | undefined
    let chunk = SCAN_FIRST_CHUNK_ENTRIES
    const nextDisk = (): PageEntry | undefined => {
      if (di < disk.length) return disk[di]
      if (diskDone) return undefined
      const cursor: Bound = diskCursor === undefined ? undefined : { key: diskCursor, inclusive: false }
      disk = this.pages.range(tree, o.reverse ? lo : (cursor ?? lo), o.reverse ? (cursor ?? hi) : hi, o.reverse === true, chunk)
      di = 0
      dk = undefined
      diskDone = disk.length < chunk
      // Short scans (limit 1, point-like lookups) read a few entries; long ones grow to full chunks.
      chunk = Math.min(SCAN_CHUNK_ENTRIES, chunk * 4)
      if (disk.length > 0) diskCursor = disk[disk.length - 1]!.key
      return disk[0]
    }
    // Bounded: each pass consumes a memory key or a page-store entry.
    for (;;) {
      const mk = nextMem()
      const d = nextDisk()
      if (mk === undefined && d === undefined) return
      if (d !== undefined && dk === undefined) dk = bytesToOrderedString(d.key)
      let takeMem: boolean
      if (mk === undefined) takeMem = false
      else if (d === undefined) takeMem = true
      else takeMem = o.reverse ? mk >= dk! : mk <= dk!
      let go: boolean
      if (takeMem) {
        if (d !== undefined && dk === mk) { di++; dk = undefined } // memory answers for a key it holds
        i += step
        go = visit(mk!, true, undefined)
      } else {
        di++
        const key = dk!
        dk = undefined
        go = visit(key, false, d)
      }
      if (!go) return
    }
  }

  /** The chains in memory merged with the page store's keys that are not in memory. */
  scan(collection: string, o: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    const c = this.collections.get(collection)
    const limit = o.limit ?? Infinity
    const out: Array<[Uint8Array, Uint8Array]> = []
    if (!(limit > 0)) return out
    this.walkMerged(c?.chains, collection, o, (k, inMemory, d) => {
      if (inMemory) {
        const chain = c!.chains.map.get(k)!
        chain.age = this.ageGroup
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
  find(collection: string, index: string, o: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    const c = this.collections.get(collection)
    const limit = o.limit ?? Infinity
    const out: Array<[Uint8Array, Uint8Array]> = []
    if (!(limit > 0)) return out
    this.walkMerged(c?.indexes.get(index), indexTreeName(collection, index), o, (entry) => {
      const split = splitEntry(entry)
      if (!split) {
        // Memory only holds entries it made: this one comes from the page store.
        throw new KestrelError('KESTREL_CORRUPT', `an entry of index ${JSON.stringify(index)} of collection ${JSON.stringify(collection)} (${entry.length} bytes) has a primary-key length that does not fit; restore from a backup (kestrel restore <backup> <dir>)`)
      }
      const { ik, pk } = split
      const chain = c?.chains.map.get(pk)
      if (chain) {
        chain.age = this.ageGroup
        const v = visible(chain.versions, snapshot)
        if (v?.value !== undefined && v.refs?.some((r) => r.index === index && r.entry === entry)) {
          out.push([orderedStringToBytes(pk), envelopeValue(v.value)])
        }
      } else {
        const pkBytes = orderedStringToBytes(pk)
        const onDisk = this.pages.get(collection, pkBytes)
        if (onDisk && onDisk.commitId <= snapshot && onDisk.value[0] === ENVELOPE_TAG) {
          const keys = storedKeys(onDisk.value, pkBytes.length)
          if (typeof keys === 'string') {
            throw new KestrelError('KESTREL_CORRUPT', `a stored value of key ${Buffer.from(pkBytes).toString('hex')} in collection ${JSON.stringify(collection)} is a malformed index envelope (${keys}); restore from a backup (kestrel restore <backup> <dir>)`)
          }
          if (keys.some((e) => e.index === index && bytesToOrderedString(e.key) === ik)) out.push([pkBytes, envelopeValue(onDisk.value)])
        }
      }
      return out.length < limit
    })
    return out
  }
}
