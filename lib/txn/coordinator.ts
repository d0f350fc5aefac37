/**
 * One coordinator per running engine (shared by every handle of the directory in this process):
 * it knows which snapshots are pinned, which keys are being committed right now, and from those
 * and the retention window it moves the engine's pruning horizon.
 */
import { bytesToOrderedString } from '../codec/bytes.js'
import type { Core } from '../core/types.js'
import { decodeCommit, isMerge } from '../format/payload.js'
import { KestrelError } from '../errors.js'
import type { Retention } from '../options.js'
import { IndexRegistry } from './indexes.js'
import { SCAVENGER_DEFAULTS, Scavenger } from '../scavenger/policy.js'

/** Writes of commits that were validated and handed to the engine but are not yet visible. */
class InFlight {
  plain = 0
  merges = 0
  /** Made only when someone waits: most in-flight writes are never waited for. */
  private waiting: { promise: Promise<void>; resolve: () => void } | undefined

  /** Resolves when the last of these writes settles. */
  get settled(): Promise<void> {
    if (!this.waiting) {
      let resolve!: () => void
      const promise = new Promise<void>((r) => {
        resolve = r
      })
      this.waiting = { promise, resolve }
    }
    return this.waiting.promise
  }

  settle(): void {
    this.waiting?.resolve()
  }
}

/** Most publish timestamps remembered for the ms retention window (bounded). */
const RECENT_COMMITS_MAX = 1 << 20

/** The last commits that wrote a slot, kept while some snapshot could still be older. */
interface Recent {
  /** Commit id of the last plain write (put/delete), 0 if none is remembered. */
  plain: number
  /** Commit id of the last merge (append/increment), 0 if none is remembered. */
  merge: number
}

export class Coordinator {
  /**
   * Writes committed after the horizon, by slot: all validation needs, answered without asking
   * the engine (commits only come from this process: the directory lock guarantees it).
   * Entries at or below the horizon can conflict with no snapshot and are dropped.
   */
  private readonly recentWrites = new Map<string, Recent>()
  /** snapshot commit id → number of readers pinning it. */
  private readonly pins = new Map<number, number>()
  private readonly inflight = new Map<string, InFlight>()
  /** Every commit handed to the engine and not settled yet (see drain). */
  private readonly submitted = new Set<Promise<bigint>>()
  /** [commitId, publishedAtMs], oldest first, for the ms retention window. */
  private readonly recent: Array<[number, number]> = []
  private horizonScheduled = false
  /** Per-slot FIFO of transactions retrying after a conflict on that slot. */
  private readonly retryQueues = new Map<string, Promise<void>>()

  /** Index definitions of every collection (shared by every handle of the engine). */
  readonly indexes = new IndexRegistry()

  /** Keeps the record memory within the cache budget. */
  readonly scavenger: Scavenger

  constructor(
    readonly core: Core,
    readonly retain: Retention,
    cacheBytes = 256 << 20,
  ) {
    this.scavenger = new Scavenger(core, { ...SCAVENGER_DEFAULTS, budgetBytes: cacheBytes }, () => this.moveHorizonNow())
  }

  /**
   * Move the engine's horizon to what the retention window allows, and tell it which older
   * snapshots are still open (each keeps the one version it sees), now.
   */
  moveHorizonNow(): void {
    const h = this.computeHorizon()
    const pinned: number[] = []
    for (const s of this.pins.keys()) if (s < h) pinned.push(s)
    pinned.sort((a, b) => a - b)
    const key = pinned.join(',')
    if (h > this.core.horizon() || key !== this.sentPins) {
      this.core.setHorizon(h, false, pinned)
      this.sentPins = key
    }
  }

  /** The pinned list last given to the engine (to skip calls that change nothing). */
  private sentPins = ''

  /** Pin a snapshot so that its versions are not pruned. */
  pin(snapshot: number): void {
    this.pins.set(snapshot, (this.pins.get(snapshot) ?? 0) + 1)
  }

  unpin(snapshot: number): void {
    const n = this.pins.get(snapshot)
    if (n === undefined) return
    if (n <= 1) this.pins.delete(snapshot)
    else this.pins.set(snapshot, n - 1)
    this.scheduleHorizon()
  }

  /** Number of pinned snapshots (stats). */
  get pinned(): number {
    let n = 0
    for (const c of this.pins.values()) n += c
    return n
  }

  /** What is being committed on `slot` (collection + key) right now. */
  inFlight(slot: string): { plain: number; merges: number; settled: Promise<void> } | undefined {
    return this.inflight.get(slot)
  }

  /** Mark slots as being committed until `done` settles. Call synchronously after validation. */
  track(slots: Array<{ slot: string; merge: boolean }>, done: Promise<bigint>): void {
    for (const { slot, merge } of slots) {
      let f = this.inflight.get(slot)
      if (!f) {
        f = new InFlight()
        this.inflight.set(slot, f)
      }
      if (merge) f.merges++
      else f.plain++
    }
    this.submitted.add(done)
    const release = (commitId: number | undefined): void => {
      this.submitted.delete(done)
      for (const { slot, merge } of slots) {
        // Record the committed write and clear the in-flight mark in one step, so that no
        // validation can run between the two and miss the write.
        if (commitId !== undefined) {
          let r = this.recentWrites.get(slot)
          if (!r) {
            r = { plain: 0, merge: 0 }
            this.recentWrites.set(slot, r)
          }
          if (merge) r.merge = commitId
          else r.plain = commitId
        }
        const f = this.inflight.get(slot)!
        if (merge) f.merges--
        else f.plain--
        if (f.plain + f.merges === 0) {
          this.inflight.delete(slot)
          f.settle()
        }
      }
    }
    done.then(
      (id) => release(Number(id)),
      () => release(undefined),
    )
  }

  /**
   * Resolves once every commit handed to the engine before the call has settled (an index build
   * waits for those validated before its index was defined: they carry no key for it).
   */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.submitted])
  }

  /** What was committed on `slot` after `snapshot`: 0 nothing, 1 only merges, 2 a plain write. */
  newer(slot: string, snapshot: number): 0 | 1 | 2 {
    const r = this.recentWrites.get(slot)
    if (!r) return 0
    if (r.plain > snapshot) return 2
    return r.merge > snapshot ? 1 : 0
  }

  /**
   * Queue behind other retriers of `slot`: contention on a hot key becomes a FIFO instead of a
   * herd that wakes together and collides again. Resolves with the release function. A caller
   * holds at most one slot at a time (no hold-and-wait, so no deadlock).
   */
  async queueForSlot(slot: string): Promise<() => void> {
    const previous = this.retryQueues.get(slot) ?? Promise.resolve()
    let release!: () => void
    const mine = new Promise<void>((r) => {
      release = r
    })
    const tail = previous.then(() => mine)
    this.retryQueues.set(slot, tail)
    await previous
    let released = false
    return () => {
      if (released) return
      released = true
      release()
      if (this.retryQueues.get(slot) === tail) this.retryQueues.delete(slot)
    }
  }

  /**
   * Commits of other processes became visible (shared directories): remember their writes as if
   * committed here, so that validation sees them (first committer wins across processes).
   */
  noteForeign(firstLsn: number, payloads: readonly Uint8Array[]): void {
    for (let i = 0; i < payloads.length; i++) {
      const lsn = firstLsn + i
      const payload = payloads[i]!
      for (const op of decodeCommit(payload)) {
        const slot = slotOf(op.collection, bytesToOrderedString(op.key))
        let r = this.recentWrites.get(slot)
        if (!r) {
          r = { plain: 0, merge: 0 }
          this.recentWrites.set(slot, r)
        }
        if (isMerge(op.kind)) r.merge = Math.max(r.merge, lsn)
        else r.plain = Math.max(r.plain, lsn)
      }
      this.published(lsn, payload.length)
    }
  }

  /** A commit of `bytes` became visible: remember when (ms window) and move the horizon soon. */
  published(commitId: number, bytes = 0): void {
    this.scavenger.noteCommit(bytes)
    if (this.retain.ms > 0) {
      this.recent.push([commitId, Date.now()])
      if (this.recent.length > RECENT_COMMITS_MAX) this.recent.splice(0, this.recent.length - RECENT_COMMITS_MAX)
    }
    this.scheduleHorizon()
  }

  /**
   * The oldest snapshot that may still be *opened*: the commits window and the ms window.
   * Snapshots already open below it are passed to the engine separately (see moveHorizonNow).
   */
  computeHorizon(): number {
    const last = Number(this.core.lastCommitId())
    let h = Math.max(0, last - this.retain.commits)
    if (this.retain.ms > 0) {
      const since = Date.now() - this.retain.ms
      // Bounded by the ring: drop entries that left the window, keep the first one inside it.
      while (this.recent.length > 1 && this.recent[1]![1] < since) this.recent.shift()
      const first = this.recent[0]
      if (first && first[1] >= since) h = Math.min(h, first[0] - 1)
      else if (this.recent[1]) h = Math.min(h, this.recent[1][0] - 1)
    }
    return h
  }

  private scheduleHorizon(): void {
    if (this.horizonScheduled) return
    this.horizonScheduled = true
    // At most once per turn of the event loop, computed when it runs (so a pin taken meanwhile
    // is respected).
    setImmediate(() => {
      this.horizonScheduled = false
      try {
        this.moveHorizonNow()
        // Writes at or below the oldest snapshot anyone reads at can conflict with no one.
        // Bounded by the writes since the oldest snapshot still pinned.
        let oldest = this.computeHorizon()
        for (const p of this.pins.keys()) oldest = Math.min(oldest, p)
        for (const [slot, r] of this.recentWrites) if (r.plain <= oldest && r.merge <= oldest) this.recentWrites.delete(slot)
      } catch (err) {
        // The engine closed meanwhile: nothing to prune. Any other error is a fault of the
        // engine that must not pass for that (readers could lose versions they read).
        if (!(err instanceof KestrelError && err.code === 'KESTREL_CLOSED')) throw err
      }
    }).unref()
  }
}

/** The coordinator key of a unique index key: commits that would hold it at once exclude each other. */
export function uniqueSlotOf(collection: string, index: string, indexKeyString: string): string {
  return `\u0001${collection}\u0000${index}\u0000${indexKeyString}`
}

/** The coordinator key of a (collection, encoded key) pair. */
export function slotOf(collection: string, keyString: string): string {
  return `${collection}\u0000${keyString}`
}
