/**
 * The ts engine's gopher and flusher, twin of `crates/kestrel-core/src/flush.rs` (read its module
 * comment for the whole picture):
 *
 * writer → `push(batch)` → queue → gopher → dirty set → flusher → checkpoint → trim log, retire.
 *
 * - The queue is bounded in bytes: `push` returns a promise that settles only when there is room,
 *   and the writer awaits it before acknowledging the batch (committers wait; nothing is dropped).
 * - The gopher applies batches in commit order; while the flusher is suspended it defers them, in
 *   order, up to `deferredBytesMax`, then leaves them queued (so committers are throttled).
 * - After the last `resume` every deferred batch is applied, in order, before anything newer, in
 *   slices between event-loop turns; no checkpoint starts until they all are.
 * - The flusher writes a checkpoint by size, by age, on request or at close — never while
 *   suspended; `suspend` resolves once no checkpoint is being written.
 */
import { readdir, unlink } from 'node:fs/promises'
import { KestrelError, toKestrelError } from '../../errors.js'
import type { CoreCheckpointOptions, CoreOpenOptions, CoreStats, PageFault } from '../types.js'
import { parseSegmentName } from '../../format/log.js'
import { syncDir } from './fsutil.js'
import type { CollectionChanges, PageStore } from './pages/index.js'
import { bytesToOrderedString, orderedStringToBytes } from '../../codec/bytes.js'
import { writtenBytes, type Store, type Written } from './store/index.js'

/** A flusher that failed waits this long before trying again on its own. */
const RETRY_AFTER_FAILURE_MS = 1000
/** The longest the flusher sleeps between looks at its age threshold. */
const FLUSHER_TICK_MS = 200
/** Writes of deferred batches applied per event-loop turn after a resume. */
const DEFERRED_WRITES_PER_TURN = 20_000
/** Dirty keys turned into checkpoint changes per event-loop turn. */
const CONVERT_KEYS_PER_TURN = 20_000

/** What one group-commit batch wrote, in commit order. */
export interface Batch {
  lastLsn: number
  writes: Written[]
  /** Invariant: the sum of writtenBytes(writes[i]). */
  bytes: number
}

export function makeBatch(lastLsn: number, writes: Written[]): Batch {
  let bytes = 0
  for (const w of writes) bytes += writtenBytes(w)
  return { lastLsn, writes, bytes }
}

/** Both requests served by one checkpoint: the stricter of each. */
function mergeCheckpointOptions(a: CoreCheckpointOptions, b: CoreCheckpointOptions): CoreCheckpointOptions {
  const out: CoreCheckpointOptions = { ...a }
  if (b.reuseFreePages === false) out.reuseFreePages = false
  if (b.trimBelowLsn !== undefined) out.trimBelowLsn = Math.min(a.trimBelowLsn ?? Number.POSITIVE_INFINITY, b.trimBelowLsn)
  return out
}

/** Options of the flow (validated by lib/options.ts); `retainCommits`: a checkpoint never covers them. */
export type FlowOptions = Pick<
  CoreOpenOptions,
  'retainCommits' | 'cacheBytes' | 'checkpointBytes' | 'checkpointIntervalMs' | 'flushQueueBytes' | 'deferredBytesMax' | 'sharing'
>

/** Counters of the flow, reported by stats(). */
export type FlowStats = CoreStats['flow']

interface DirtyEntry {
  commitId: number
  value: Uint8Array | undefined
  bytes: number
}

export class Flow {
  private readonly queue: Batch[] = []
  /** Invariant: the sum of queue[i].bytes. */
  private queueBytes = 0
  private readonly roomWaiters: Array<() => void> = []
  private readonly deferred: Batch[] = []
  /** Invariant: the sum of deferred[i].bytes. */
  private deferredBytes = 0
  /**
   * Batches inside the retention window (the last `retainCommits` commits): a checkpoint must not
   * cover them, or reopen could no longer read their older versions (the log is trimmed up to the
   * checkpoint). Released to the dirty set, in order, as newer batches arrive.
   */
  private readonly held: Batch[] = []
  /** Invariant: the highest LSN admitted (held or applied) ≥ appliedLsn. */
  private seenLsn: number
  private suspended = 0
  private inFlight: Promise<void> | undefined
  /** Newest version of every key written after the checkpoint, up to appliedLsn. */
  private dirty = new Map<string, Map<string, DirtyEntry>>()
  private dirtyBytes = 0
  private dirtyKeys = 0
  private dirtySinceMs: number | undefined
  /** Invariant: appliedLsn ≥ checkpointedLsn; batches apply in increasing LSN order. */
  appliedLsn: number
  private checkpointedLsn: number
  private requested = 0
  private requestTargetLsn = 0
  /** What the pending requests ask of the next checkpoint (the strictest of them). */
  private requestOptions: CoreCheckpointOptions = {}
  private completed = 0
  private failure: { upTo: number; error: KestrelError } | undefined
  private retryAtMs = 0
  private readonly ticketWaiters: Array<() => void> = []
  private stopping = false
  private timer: NodeJS.Timeout | undefined
  /** Test-only: where the next checkpoint crashes. */
  fault: PageFault = 'none'
  /** Checkpoints by size, memory and age; false when sharing the directory (only on request). */
  private readonly auto: boolean
  private readonly counters = {
    checkpoints: 0,
    checkpointFailures: 0,
    writerWaits: 0,
    batchesDeferred: 0,
    segmentsDeleted: 0,
    pagesWritten: 0,
    lastCheckpointMs: 0,
  }

  constructor(
    private readonly pages: PageStore,
    private readonly store: Store,
    private readonly options: FlowOptions,
    private readonly logDir: string,
    checkpointedLsn: number,
    private readonly onSegmentsDeleted: (n: number) => void,
    /** The log writer's active segment: never trimmed (sharing: others may be behind it too). */
    private readonly activeSegment: () => string,
  ) {
    this.appliedLsn = checkpointedLsn
    this.checkpointedLsn = checkpointedLsn
    this.seenLsn = checkpointedLsn
    this.auto = options.sharing === undefined
  }

  /** Start the age timer (not before open has replayed the log). */
  start(): void {
    this.timer = setInterval(() => this.maybeCheckpoint(), FLUSHER_TICK_MS)
    this.timer.unref()
  }

  /**
   * Take a batch in commit order (the gopher's step; also replay at open): to the dirty set, or
   * held while it is inside the retention window.
   */
  admit(batch: Batch): void {
    this.seenLsn = Math.max(this.seenLsn, batch.lastLsn)
    if (this.options.retainCommits === 0 && this.held.length === 0) {
      this.applyNow(batch)
      return
    }
    this.held.push(batch)
    let released = 0
    // Bounded by the held queue.
    while (released < this.held.length && this.held[released]!.lastLsn + this.options.retainCommits <= this.seenLsn) {
      this.applyNow(this.held[released]!)
      released++
    }
    if (released > 0) this.held.splice(0, released)
  }

  /** Apply a batch to the dirty set. */
  private applyNow(batch: Batch): void {
    for (const w of batch.writes) {
      let m = this.dirty.get(w.collection)
      if (!m) {
        m = new Map()
        this.dirty.set(w.collection, m)
      }
      const k = bytesToOrderedString(w.key)
      const bytes = writtenBytes(w)
      const old = m.get(k)
      if (old) this.dirtyBytes -= old.bytes
      else this.dirtyKeys++
      m.set(k, { commitId: w.commitId, value: w.value, bytes })
      this.dirtyBytes += bytes
    }
    if (this.dirtySinceMs === undefined && this.dirtyKeys > 0) this.dirtySinceMs = Date.now()
    this.appliedLsn = Math.max(this.appliedLsn, batch.lastLsn)
  }

  /** The writer's hand-off: resolves once the batch is queued (at once unless the queue is full). */
  push(batch: Batch): Promise<void> | undefined {
    if (this.queue.length > 0 && this.queueBytes + batch.bytes > this.options.flushQueueBytes && !this.stopping) {
      this.counters.writerWaits++
      return new Promise<void>((resolve) => this.roomWaiters.push(resolve)).then(() => this.push(batch))
    }
    this.queue.push(batch)
    this.queueBytes += batch.bytes
    this.pump()
    return undefined
  }

  /**
   * catchUp's hand-off of records other participants wrote: queued behind any batch queued or
   * deferred (the dirty set takes batches in LSN order), never waiting for room.
   */
  pushNow(batch: Batch): void {
    this.queue.push(batch)
    this.queueBytes += batch.bytes
    this.pump()
  }

  /**
   * Sharing: the page store switched to another participant's checkpoint at `lsn`: what it covers
   * is no longer dirty.
   */
  adopt(lsn: number): void {
    if (this.inFlight !== undefined) throw new Error('adopting a checkpoint while one is being written') // assertion
    for (const [name, m] of this.dirty) {
      for (const [k, e] of m) {
        if (e.commitId > lsn) continue
        m.delete(k)
        this.dirtyBytes -= e.bytes
        this.dirtyKeys--
      }
      if (m.size === 0) this.dirty.delete(name)
    }
    if (this.dirtyKeys === 0) this.dirtySinceMs = undefined
    this.checkpointedLsn = Math.max(this.checkpointedLsn, lsn)
    this.appliedLsn = Math.max(this.appliedLsn, lsn)
  }

  /** Resolves once no checkpoint is being written. */
  async idle(): Promise<void> {
    // Bounded: each pass waits for one checkpoint; the caller starts none meanwhile.
    while (this.inFlight) await this.inFlight.catch(() => undefined)
  }

  /** The gopher: move queued batches to the dirty set, or to `deferred` while suspended. */
  private pump(): void {
    // Bounded by the queue.
    while (this.queue.length > 0) {
      const b = this.queue[0]!
      if (this.suspended > 0 && !this.stopping) {
        if (this.deferred.length > 0 && this.deferredBytes + b.bytes > this.options.deferredBytesMax) break
        this.queue.shift()
        this.queueBytes -= b.bytes
        this.deferred.push(b)
        this.deferredBytes += b.bytes
        this.counters.batchesDeferred++
      } else if (this.deferred.length > 0 && !this.stopping) {
        // Resumed, and the deferred batches are still being applied (drainSlice): they go first.
        break
      } else {
        this.drainDeferred()
        this.queue.shift()
        this.queueBytes -= b.bytes
        this.admit(b)
      }
    }
    while (this.roomWaiters.length > 0 && (this.queue.length === 0 || this.queueBytes < this.options.flushQueueBytes)) this.roomWaiters.shift()!()
    this.maybeCheckpoint()
  }

  private drainDeferred(): void {
    for (const b of this.deferred.splice(0)) this.admit(b)
    this.deferredBytes = 0
  }

  /**
   * After the last resume: apply the deferred batches in commit order, a slice per event-loop
   * turn so that committers are not stalled by a long suspension's backlog; then what was queued
   * meanwhile. A new suspension stops it (the rest stays first in line); stop() applies the rest.
   */
  private drainSlice(): void {
    if (this.suspended > 0 || this.stopping) return
    let writes = 0
    let taken = 0
    // Bounded by the slice size and the deferred queue.
    while (taken < this.deferred.length && writes < DEFERRED_WRITES_PER_TURN) {
      const b = this.deferred[taken++]!
      this.deferredBytes -= b.bytes
      writes += b.writes.length + 1
      this.admit(b)
    }
    this.deferred.splice(0, taken)
    if (this.deferred.length > 0) {
      setImmediate(() => this.drainSlice())
      return
    }
    this.pump()
  }

  /** Suspend (reference-counted): resolves once no checkpoint is being written. */
  async suspend(): Promise<void> {
    this.suspended++
    // Bounded: a checkpoint cannot start while suspended, so this waits for at most one.
    while (this.inFlight) await this.inFlight.catch(() => undefined)
  }

  /**
   * Undo one suspend. After the last one the deferred batches are applied, in commit order, before
   * anything newer (in slices between event-loop turns), and no checkpoint starts until they all are.
   */
  resume(): void {
    if (this.suspended === 0) throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'resume without a matching suspend')
    this.suspended--
    if (this.suspended === 0) this.drainSlice()
  }

  isSuspended(): boolean {
    return this.suspended > 0
  }

  isBusy(): boolean {
    return this.inFlight !== undefined
  }

  /** Checkpoint everything visible up to `targetLsn`; resolves once it is published. */
  async checkpoint(targetLsn: number, options: CoreCheckpointOptions = {}): Promise<void> {
    if (this.stopping) throw new KestrelError('KESTREL_CLOSED', 'the database is closed; open it again to use it')
    const ticket = ++this.requested
    this.requestTargetLsn = Math.max(this.requestTargetLsn, targetLsn)
    this.requestOptions = mergeCheckpointOptions(this.requestOptions, options)
    this.maybeCheckpoint()
    // Bounded by the flusher: each wake-up follows a checkpoint that published or failed.
    for (;;) {
      if (this.completed >= ticket) return
      if (this.failure && ticket <= this.failure.upTo) throw this.failure.error
      await new Promise<void>((resolve) => this.ticketWaiters.push(resolve))
    }
  }

  private wakeTickets(): void {
    for (const w of this.ticketWaiters.splice(0)) w()
  }

  private shouldCheckpoint(nowMs: number): boolean {
    // Deferred batches are older than anything in the dirty set: they go in first.
    if (this.suspended > 0 || this.inFlight || this.stopping || this.deferred.length > 0) return false
    // Everything up to the target has been taken (what is held inside the retention window cannot
    // be checkpointed, so it does not count against the request).
    if (this.requested > Math.max(this.completed, this.failure?.upTo ?? 0) && this.seenLsn >= this.requestTargetLsn) return true
    if (!this.auto || this.dirtyKeys === 0 || nowMs < this.retryAtMs) return false
    const o = this.options
    const bySize = this.dirtyBytes >= o.checkpointBytes
    const byMemory = this.store.recordBytes > o.cacheBytes && this.dirtyBytes >= Math.max(1, o.checkpointBytes / 8)
    const byAge = o.checkpointIntervalMs > 0 && this.dirtySinceMs !== undefined && nowMs - this.dirtySinceMs >= o.checkpointIntervalMs
    return bySize || byMemory || byAge
  }

  private maybeCheckpoint(): void {
    if (!this.shouldCheckpoint(Date.now())) return
    this.inFlight = this.runCheckpoint().finally(() => {
      this.inFlight = undefined
      this.wakeTickets()
      if (!this.stopping) setImmediate(() => this.maybeCheckpoint())
    })
    this.inFlight.catch(() => undefined)
  }

  /** Write one checkpoint of the dirty set at the last applied LSN. */
  private async runCheckpoint(): Promise<void> {
    const dirty = this.dirty
    const since = this.dirtySinceMs
    this.dirty = new Map()
    this.dirtyBytes = 0
    this.dirtyKeys = 0
    this.dirtySinceMs = undefined
    const lsn = this.appliedLsn
    const tickets = this.requested
    const options = this.requestOptions
    this.requestOptions = {}
    const fault = this.fault
    this.fault = 'none'
    const started = Date.now()
    try {
      if (!(lsn === this.pages.meta().checkpointLsn && dirty.size === 0)) {
        const changes: CollectionChanges[] = []
        for (const name of [...dirty.keys()].sort(compareNames)) {
          const m = dirty.get(name)!
          const keys = [...m.keys()].sort()
          const list: CollectionChanges['changes'] = []
          for (let i = 0; i < keys.length; i++) {
            const e = m.get(keys[i]!)!
            list.push({ key: orderedStringToBytes(keys[i]!), version: e.value === undefined ? undefined : { commitId: e.commitId, value: e.value } })
            // Let committers run between slices of a large dirty set.
            if (i % CONVERT_KEYS_PER_TURN === CONVERT_KEYS_PER_TURN - 1) await new Promise<void>((r) => setImmediate(r))
          }
          changes.push({ name, changes: list })
        }
        const report = await this.pages.checkpoint(lsn, changes, fault, options.reuseFreePages !== false)
        this.store.setCheckpointed(lsn)
        this.store.retire(Math.floor((this.options.cacheBytes * 3) / 4))
        const trimTo = Math.min(lsn, (options.trimBelowLsn ?? Number.POSITIVE_INFINITY) - 1)
        const deleted = await trimLog(this.logDir, trimTo, this.activeSegment())
        this.onSegmentsDeleted(deleted)
        this.counters.checkpoints++
        this.counters.pagesWritten += report.pagesWritten
        this.counters.segmentsDeleted += deleted
        this.counters.lastCheckpointMs = Date.now() - started
      }
      this.checkpointedLsn = lsn
      this.completed = Math.max(this.completed, tickets)
      this.failure = undefined
      this.retryAtMs = 0
    } catch (err) {
      // Nothing is lost: the changes go back under any newer ones, for the next try.
      for (const [name, m] of dirty) {
        let cur = this.dirty.get(name)
        if (!cur) {
          cur = new Map()
          this.dirty.set(name, cur)
        }
        for (const [k, e] of m) {
          if (!cur.has(k)) {
            cur.set(k, e)
            this.dirtyBytes += e.bytes
            this.dirtyKeys++
          }
        }
      }
      this.dirtySinceMs = since ?? this.dirtySinceMs
      // The next try honours what these requests asked.
      this.requestOptions = mergeCheckpointOptions(this.requestOptions, options)
      this.counters.checkpointFailures++
      this.retryAtMs = Date.now() + RETRY_AFTER_FAILURE_MS
      this.failure = { upTo: tickets, error: toKestrelError(err, 'writing a checkpoint') }
      throw this.failure.error
    }
  }

  /**
   * Stop: with `checkpoint`, apply everything (deferred too) and write a final checkpoint.
   * Rejects if that final checkpoint fails (nothing is lost: the log still has every commit).
   */
  async stop(checkpoint: boolean): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    while (this.inFlight) await this.inFlight.catch(() => undefined)
    this.stopping = true
    // Nothing may wait for room any more.
    for (const w of this.roomWaiters.splice(0)) w()
    if (!checkpoint) {
      this.wakeTickets()
      return
    }
    this.drainDeferred()
    for (const b of this.queue.splice(0)) this.admit(b)
    this.queueBytes = 0
    try {
      if (this.dirtyKeys > 0 || this.appliedLsn > this.checkpointedLsn) await this.runCheckpoint()
    } catch (err) {
      const e = err as KestrelError
      throw new KestrelError(
        e.code,
        `the final checkpoint at close failed (${e.message}); nothing is lost: the log still holds every commit, and the next open replays it`,
        { cause: err },
      )
    } finally {
      this.wakeTickets()
    }
  }

  stats(): FlowStats {
    return {
      queuedBatches: this.queue.length,
      queuedBytes: this.queueBytes,
      deferredBatches: this.deferred.length,
      deferredBytes: this.deferredBytes,
      dirtyKeys: this.dirtyKeys,
      dirtyBytes: this.dirtyBytes,
      appliedLsn: this.appliedLsn,
      suspended: this.suspended,
      checkpointInFlight: this.inFlight !== undefined,
      ...this.counters,
    }
  }
}

/** Bytewise (UTF-8) order of collection names, as the page store sorts them. */
function compareNames(a: string, b: string): number {
  const x = Buffer.from(a, 'utf8')
  const y = Buffer.from(b, 'utf8')
  return Buffer.compare(x, y)
}

/** Delete the log segments whose records are all at or below `lsn` (never the last one, nor `active` or later ones). */
async function trimLog(logDir: string, lsn: number, active: string): Promise<number> {
  let names: Array<{ name: string; first: number }>
  try {
    names = (await readdir(logDir))
      .map((name) => ({ name, first: parseSegmentName(name) }))
      .filter((s): s is { name: string; first: number } => s.first !== undefined)
      .sort((a, b) => a.first - b.first)
  } catch {
    return 0
  }
  let deleted = 0
  for (let i = 0; i + 1 < names.length; i++) {
    if (names[i + 1]!.first <= lsn + 1 && names[i]!.name < active) {
      try {
        await unlink(`${logDir}/${names[i]!.name}`)
        deleted++
      } catch {
        /* best effort: recovery skips it */
      }
    }
  }
  if (deleted > 0) await syncDir(logDir).catch(() => undefined)
  return deleted
}
