/**
 * The ts engine's version store (record cache), twin of `store/mod.rs`: per (collection, key) a
 * chain of versions, oldest first, stamped with the commit id that wrote them. A read at a
 * snapshot sees the newest version with `commitId ≤ snapshot`.
 *
 * Versions hold *stored* bytes: plain MessagePack or an index envelope (docs/FORMAT.md "Index
 * envelope"); reads return the MessagePack part. Next to the chains, the in-memory index entries,
 * reference-counted (overlay.ts). This file: `Store` — apply, get, the horizon and pinned
 * snapshots, the checkpointed LSN, counters. Chains and their memory charge are in chain.ts, the
 * prune rule in keep.ts, scans and lookups in read.ts (with the page-store cursor of
 * disk_cursor.ts), scavenge slices in scavenge.ts.
 */
import { bytesToOrderedString, orderedStringToBytes } from '../../../codec/bytes.js'
import { KestrelError } from '../../../errors.js'
import { ENVELOPE_TAG, envelopeValue } from '../../../format/envelope.js'
import { PAGE_FILE } from '../../../format/page_layout.js'
import { OP_APPEND, OP_DELETE, OP_INCREMENT, type WriteOp } from '../../../format/payload.js'
import { storedKeys } from '../../../format/stored.js'
import type { CoreScanOptions, CoreScavengeOptions, CoreScavengeStep } from '../../types.js'
import { mergeAppend, mergeIncrement } from '../merge.js'
import type { PageStore } from '../pages/index.js'
import { KEY_OVERHEAD_BYTES, VERSION_OVERHEAD_BYTES, SortedMap, versionBytes, visible, type Chain, type Version } from './chain.js'
import { Keep, prune } from './keep.js'
import { Overlay, lengthSuffix } from './overlay.js'
import { find, scan } from './read.js'
import { droppableTombstone, retirable, scavenge, type ScavengeCursor } from './scavenge.js'

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

/**
 * Version chains for every collection (the record cache). A key is either in memory — its chain
 * then answers every snapshot ≥ the horizon — or only in the page store, whose version is then its
 * only one. Writing a key that is only in the page store loads that version first (merges build on
 * it, older snapshots read it). Chains are retired from memory only when they are a single
 * version already in a checkpoint.
 */
export class Store {
  /** @internal Collection → its chains by latin1 key (read.ts, scavenge.ts). */
  readonly collections = new Map<string, SortedMap<Chain>>()
  /** @internal The in-memory index entries. */
  readonly overlay = new Overlay()
  /** The horizon and the pinned snapshots below it: what pruning keeps. */
  private readonly keep: Keep
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
  /** The current age group; never decreases. */
  ageGroup = 0
  /** @internal Where the scavenge pass stands (scavenge.ts); undefined = the next slice starts a pass. */
  scavengeCursor: ScavengeCursor | undefined

  /** @param pages the page store under the chains (read by read.ts too) */
  constructor(
    readonly pages: PageStore,
    checkpointLsn = 0,
    records = 0,
  ) {
    this.checkpointedLsn = checkpointLsn
    this.keep = new Keep(checkpointLsn)
    this.liveKeys = records
  }

  /** Never decreases; see Core.setHorizon. */
  get horizon(): number {
    return this.keep.horizon
  }

  /** Open snapshots below the horizon, ascending and distinct, at most PINNED_MAX. */
  get pinned(): readonly number[] {
    return this.keep.pinned
  }

  /** Invariant: number of in-memory index entries (distinct pairs) over all collections and indexes. */
  get indexEntries(): number {
    return this.overlay.entries
  }

  private collection(name: string): SortedMap<Chain> {
    let c = this.collections.get(name)
    if (!c) {
      c = new SortedMap<Chain>()
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
      throw new KestrelError(
        fromPages ? 'KESTREL_CORRUPT' : 'KESTREL_INVALID_ARGUMENT',
        `a stored value of key ${Buffer.from(orderedStringToBytes(k)).toString('hex')} is a malformed index envelope (${keys})${fromPages ? '; restore from a backup (kestrel restore <backup> <dir>)' : ''}`,
      )
    }
    const suffix = k + lengthSuffix(keyBytes)
    return { commitId, value, refs: keys.map((e) => ({ index: e.index, entry: bytesToOrderedString(e.key) + suffix })) }
  }

  /** @internal Prune a chain of `collection` (see keep.ts); returns how many versions were dropped. */
  prune(collection: string, chain: Chain): number {
    const gone = prune(chain.versions, this.keep, collection, this.overlay)
    this.versions -= gone.versions
    this.recordBytes -= gone.bytes
    return gone.versions
  }

  /** @internal Remove a whole chain (a lone version) from memory. */
  dropChain(collection: string, chains: SortedMap<Chain>, key: string, chain: Chain): void {
    for (const v of chain.versions) this.recordBytes -= this.overlay.release(collection, v)
    this.versions -= chain.versions.length
    this.recordBytes -= key.length + KEY_OVERHEAD_BYTES
    chains.remove(key)
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
        const onDisk = this.pages.get(op.collection, op.key)
        const loaded = onDisk ? this.version(onDisk.commitId, onDisk.value, k, op.key.length, true) : undefined
        chain = { versions: [], age: this.ageGroup }
        c.insert(k, chain)
        this.recordBytes += op.key.length + KEY_OVERHEAD_BYTES
        if (loaded) {
          chain.versions.push(loaded)
          this.versions++
          this.recordBytes += versionBytes(loaded)
          this.recordBytes += this.overlay.enter(op.collection, loaded)
        }
      }
      chain.age = this.ageGroup
      const base = chain.versions[chain.versions.length - 1]?.value
      let value: Uint8Array | undefined
      switch (op.kind) {
        case OP_DELETE:
          value = undefined
          break
        case OP_APPEND:
          value = mergeAppend(base, op.value!)
          break
        case OP_INCREMENT:
          value = mergeIncrement(base, op.value!)
          break
        default:
          value = op.value!.slice()
      }
      const v = this.version(commitId, value, k, op.key.length, false)
      chain.versions.push(v)
      this.versions++
      this.recordBytes += versionBytes(v)
      this.recordBytes += this.overlay.enter(op.collection, v)
      this.prune(op.collection, chain)
      // The count starts from the checkpoint's; a key loaded from the page store is in it, so
      // it cannot go below zero unless that count was wrong.
      this.liveKeys += (value !== undefined ? 1 : 0) - (base !== undefined ? 1 : 0)
      if (this.liveKeys < 0) {
        throw new KestrelError(
          'KESTREL_CORRUPT',
          `${op.collection}: more live records were deleted than the checkpoint counts (${PAGE_FILE} meta page); run \`kestrel verify\` and restore from a backup`,
        )
      }
      out.push({ collection: op.collection, key: op.key, commitId, value })
    }
    return out
  }

  /**
   * Raise the horizon (never lowers it) and replace the pinned snapshots (see Keep.set). With
   * `sweep`, prune every chain now and drop the lone tombstones nothing needs.
   */
  setHorizon(horizon: number, sweep: boolean, pinned: readonly number[] = []): void {
    this.keep.set(horizon, pinned)
    if (!sweep) return
    for (const [name, c] of this.collections) {
      for (const [key, chain] of c.map) {
        this.prune(name, chain)
        if (droppableTombstone(chain.versions, this.horizon, this.checkpointedLsn)) this.dropChain(name, c, key, chain)
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
      for (const [key, chain] of c.map) {
        if (this.recordBytes <= targetBytes) break
        if (retirable(chain.versions, this.horizon, this.checkpointedLsn)) {
          this.dropChain(name, c, key, chain)
          retired++
        }
      }
      if (this.recordBytes <= targetBytes) break
    }
    this.retired += retired
    return retired
  }

  /** One slice of a scavenge pass (see scavenge.ts and Core.scavenge). */
  scavenge(o: CoreScavengeOptions): CoreScavengeStep {
    return scavenge(this, o)
  }

  /** The MessagePack value of `key` at `snapshot`, or undefined. */
  get(collection: string, key: Uint8Array, snapshot: number): Uint8Array | undefined {
    const chain = this.collections.get(collection)?.map.get(bytesToOrderedString(key))
    if (chain) {
      chain.age = this.ageGroup
      const v = visible(chain.versions, snapshot)?.value
      return v === undefined ? undefined : envelopeValue(v)
    }
    const onDisk = this.pages.get(collection, key)
    return onDisk && onDisk.commitId <= snapshot ? envelopeValue(onDisk.value) : undefined
  }

  /** Entries visible at `snapshot` within the bounds (see read.ts). */
  scan(collection: string, o: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    return scan(this, collection, o, snapshot)
  }

  /** Index lookup at `snapshot` (see read.ts and Core.find). */
  find(collection: string, index: string, o: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    return find(this, collection, index, o, snapshot)
  }
}
