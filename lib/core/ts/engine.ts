/**
 * The pure-TypeScript engine's facade (twin of `engine.rs`): open (directory, page store,
 * recovery, replay), the commit queue, reads, checkpoint and backup hooks, close and crash. The
 * log is written by log/writer.ts and recovered by log/recovery.ts; byte-compatible with the
 * native engine (docs/FORMAT.md).
 */
import { closeSync, fdatasyncSync, fstatSync, ftruncateSync, openSync, readdirSync, statSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { KestrelError } from '../../errors.js'
import { FRAME_HEADER_BYTES, LOG_DIR, parseSegmentName, segmentName } from '../../format/log.js'
import { PAGE_FILE } from '../../format/page_layout.js'
import { decodeCommit, type WriteOp } from '../../format/payload.js'
import { checkStoredValues } from '../../format/stored.js'
import type {
  BackupPlan,
  CheckpointRef,
  Core,
  CoreCheckpointOptions,
  CoreOpenOptions,
  CoreScanOptions,
  CoreScavengeOptions,
  CoreScavengeStep,
  CoreStats,
  LogTail,
  PageFault,
} from '../types.js'
import { prepareDirectory } from './directory.js'
import { Flow, makeBatch } from './flush.js'
import { syncDirSync } from './fsutil.js'
import { createSegment, readPastTail, readToTail, recover, recoverToTail, Writer, type FollowedFrame, type PastTail } from './log/index.js'
import { PageStore } from './pages/index.js'
import { Store } from './store/index.js'
import { FaultyVfs, RealVfs, type LogFile, type Vfs } from './vfs.js'

/** Queued bytes past which new commits wait for the writer (back-pressure, never a drop). */
export const QUEUE_BYTES_MAX = 256 * 1024 * 1024
/** Bytes of the page cache for a record cache of `cacheBytes`. */
function pageCacheBytes(cacheBytes: number): number {
  return Math.min(64 << 20, Math.max(1 << 20, Math.floor(cacheBytes / 8)))
}

/** A commit waiting for the writer: its LSN, payload and parsed ops, and its promise. */
export interface Queued {
  lsn: number
  payload: Uint8Array
  ops: WriteOp[]
  resolve: (lsn: bigint) => void
  reject: (err: KestrelError) => void
}

export type State = 'open' | 'failed' | 'closed'

/** The commit queue and the engine's state, shared by the facade and the log writer. */
export class Queue {
  state: State = 'open'
  /** Why the engine stopped acknowledging (state 'failed'). */
  failure: KestrelError | undefined
  /** A simulated crash: nothing more is written or acknowledged. */
  crashed = false
  /** Commits in LSN order, not yet taken by the writer. */
  readonly items: Queued[] = []
  /** Invariant: the frame bytes of `items` (header + payload each). */
  bytes = 0
  private readonly roomWaiters: Array<() => void> = []

  /** Why a commit is refused now, or undefined. */
  refusal(): KestrelError | undefined {
    if (this.state === 'closed') return new KestrelError('KESTREL_CLOSED', 'the database is closed; open it again to use it')
    if (this.state === 'failed') {
      return new KestrelError(
        'KESTREL_IO',
        `an earlier log write failed (${this.failure?.message ?? 'I/O error'}); nothing more is acknowledged: reopen the database to recover the last durable state`,
      )
    }
    return undefined
  }

  /** Resolves once the writer has taken enough of the queue (back-pressure). */
  room(): Promise<void> {
    return new Promise<void>((resolve) => this.roomWaiters.push(resolve))
  }

  /** Let committers waiting for room go on while the queue is below QUEUE_BYTES_MAX. */
  wakeIfRoom(): void {
    while (this.bytes <= QUEUE_BYTES_MAX && this.roomWaiters.length > 0) this.roomWaiters.shift()!()
  }

  /** Reject every queued commit (the engine failed, closed or crashed) and release the waiters. */
  failQueued(): void {
    const err = this.refusal() ?? new KestrelError('KESTREL_CLOSED', 'the database is closed; open it again to use it')
    for (const p of this.items.splice(0))
      p.reject(this.crashed ? new KestrelError('KESTREL_CLOSED', 'the database crashed (simulated) before this commit was acknowledged') : err)
    this.bytes = 0
    for (const w of this.roomWaiters.splice(0)) w()
  }
}

export class TsCore implements Core {
  readonly engine = 'ts' as const
  /** Invariant: nextLsn = last queued LSN + 1 ≥ visible LSN + 1. */
  private nextLsn: number

  private constructor(
    readonly dir: string,
    private readonly vfs: Vfs,
    private readonly pages: PageStore,
    private readonly store: Store,
    private readonly flow: Flow,
    private readonly queue: Queue,
    private readonly writer: Writer,
    lastLsn: number,
    /** Opened as one of several participants (CoreOpenOptions.sharing). */
    private shared: boolean,
  ) {
    this.nextLsn = lastLsn + 1
  }

  /** Open (or create) the database in `dir` and recover it. */
  static async open(dir: string, options: CoreOpenOptions): Promise<TsCore> {
    await prepareDirectory(dir)
    const pages = PageStore.open(dir, pageCacheBytes(options.cacheBytes))
    try {
      const meta = pages.meta()
      checkRecordCount(pages, meta.records)
      const tail = options.sharing?.tail
      const recovered = tail ? await recoverToTail(dir, meta.checkpointLsn, tail) : await recover(dir, meta.checkpointLsn)
      const store = new Store(pages, meta.checkpointLsn, meta.records)
      let segmentCount = recovered.segments.length
      const logDir = join(dir, LOG_DIR)
      const flow = new Flow(
        pages,
        store,
        options,
        logDir,
        meta.checkpointLsn,
        (n) => {
          writer.segments -= n
        },
        () => writer.activeSegment(),
      )
      // The replayed tail is not in the page store yet: it is dirty.
      for (const c of recovered.commits) flow.admit(makeBatch(c.lsn, store.apply(c.lsn, c.ops)))
      // Replay installed every version; keep only what the retention window asks for.
      store.setHorizon(Math.max(0, recovered.lastLsn - options.retainCommits), true)
      const vfs: Vfs = options.faults ? new FaultyVfs(options.faults) : new RealVfs()
      const last = recovered.segments[recovered.segments.length - 1]
      let active: LogFile
      let activeName: string
      if (tail) {
        // Continue at the published tail: the bytes past it are another participant's.
        active = await vfs.openLog(join(logDir, tail.segment), tail.offset)
        activeName = tail.segment
      } else if (last && recovered.logEndLsn >= recovered.lastLsn) {
        active = await vfs.openLog(join(logDir, last.name), last.length)
        activeName = last.name
      } else {
        // No log, or one that ends below the checkpoint: continue after the checkpoint.
        active = await createSegment(logDir, vfs, recovered.lastLsn + 1)
        activeName = segmentName(recovered.lastLsn + 1)
        segmentCount++
      }
      const queue = new Queue()
      const writer: Writer = new Writer(logDir, options, vfs, queue, store, flow, active, activeName, segmentCount, recovered.lastLsn)
      const core = new TsCore(dir, vfs, pages, store, flow, queue, writer, recovered.lastLsn, options.sharing !== undefined)
      flow.start()
      return core
    } catch (err) {
      pages.close()
      throw err
    }
  }

  commit(given: Uint8Array): Promise<bigint> {
    const refused = this.queue.refusal()
    if (refused) return Promise.reject(refused)
    // The queue, the log writer and the dirty set keep views into the payload (keys stay until a
    // checkpoint): keep them in an array of our own, not in the caller's — a slice of a shared
    // pool (lib/codec/bytes.ts transientBytes) would pin its whole slab.
    const payload = given.byteLength === given.buffer.byteLength ? given : given.slice()
    let ops: WriteOp[]
    try {
      ops = decodeCommit(payload)
    } catch (err) {
      return Promise.reject(new KestrelError('KESTREL_INVALID_ARGUMENT', `malformed commit payload: ${(err as Error).message}`))
    }
    const badValue = checkStoredValues(ops)
    if (badValue !== undefined) return Promise.reject(new KestrelError('KESTREL_INVALID_ARGUMENT', `malformed commit payload: ${badValue}`))
    if (this.queue.bytes > QUEUE_BYTES_MAX) {
      // Back-pressure: wait for the writer to drain, then queue in arrival order.
      return this.queue.room().then(() => this.commit(payload))
    }
    return new Promise<bigint>((resolve, reject) => {
      const lsn = this.nextLsn++
      this.queue.items.push({ lsn, payload, ops, resolve, reject })
      this.queue.bytes += payload.length + FRAME_HEADER_BYTES
      this.writer.kick()
    })
  }

  get(collection: string, key: Uint8Array, snapshot: number): Uint8Array | undefined {
    this.assertReadable()
    return this.store.get(collection, key, snapshot)
  }

  scan(collection: string, options: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    this.assertReadable()
    return this.store.scan(collection, options, snapshot)
  }

  find(collection: string, index: string, options: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    this.assertReadable()
    return this.store.find(collection, index, options, snapshot)
  }

  collections(): string[] {
    this.assertReadable()
    const names = new Set(this.store.collections.keys())
    // Index trees (their names hold a NUL) are not collections, as in the Rust twin.
    for (const c of this.pages.collections()) if (!c.name.includes('\0')) names.add(c.name)
    // Bytewise UTF-8 order, as the Rust twin returns them (UTF-16 order differs past U+FFFF).
    return [...names]
      .map((n) => Buffer.from(n, 'utf8'))
      .sort(Buffer.compare)
      .map((b) => b.toString('utf8'))
  }

  setAgeGroup(group: number): void {
    this.assertReadable()
    this.store.setAgeGroup(group)
  }

  scavenge(options: CoreScavengeOptions): CoreScavengeStep {
    this.assertReadable()
    return this.store.scavenge(options)
  }

  setHorizon(horizon: number, sweep: boolean, pinned: readonly number[] = []): void {
    this.assertReadable()
    this.store.setHorizon(horizon, sweep, pinned)
  }

  horizon(): number {
    return this.store.horizon
  }

  private assertReadable(): void {
    if (this.queue.state === 'closed') throw new KestrelError('KESTREL_CLOSED', 'the database is closed; open it again to use it')
  }

  lastCommitId(): bigint {
    return BigInt(this.writer.visibleLsn)
  }

  stats(): CoreStats {
    const meta = this.pages.meta()
    return {
      engine: 'ts',
      durableLsn: this.writer.visibleLsn,
      batches: this.writer.batches,
      syncs: this.writer.syncs,
      segments: this.writer.segments,
      keys: this.store.liveKeys,
      versions: this.store.versions,
      recordBytes: this.store.recordBytes,
      retired: this.store.retired,
      checkpointLsn: meta.checkpointLsn,
      pageCount: meta.pageCount,
      indexEntries: this.store.indexEntries,
      ageGroup: this.store.ageGroup,
      threads: 1,
      flow: this.flow.stats(),
    }
  }

  async checkpoint(options: CoreCheckpointOptions = {}): Promise<void> {
    const refused = this.queue.refusal()
    if (refused) throw refused
    if (this.shared) {
      // Build on the newest checkpoint on disk (the caller holds the checkpoint lock: no other
      // participant publishes one meanwhile).
      await this.flow.idle()
      this.adoptNewest(true)
    }
    return this.flow.checkpoint(this.writer.visibleLsn, options)
  }

  checkpointRef(): CheckpointRef {
    const meta = this.pages.meta()
    return { seq: meta.seq, lsn: meta.checkpointLsn }
  }

  adoptCheckpoint(): boolean {
    this.assertReadable()
    if (!this.shared) return false
    return this.adoptNewest(false)
  }

  /**
   * Adopt the newest checkpoint on disk if it is newer than ours. `forCheckpoint` (the caller
   * waited out a checkpoint of ours): a newer one covering commits not applied here is
   * `KESTREL_BEHIND`; else a checkpoint of ours being written, or such a newer one, is false.
   */
  private adoptNewest(forCheckpoint: boolean): boolean {
    if (!forCheckpoint && this.flow.isBusy()) return false
    const newest = this.pages.newestOnDisk()
    if (!newest || newest.seq <= this.pages.meta().seq) return false
    if (newest.checkpointLsn > this.writer.visibleLsn) {
      if (!forCheckpoint) return false
      throw new KestrelError(
        'KESTREL_BEHIND',
        `the newest checkpoint covers commit ${newest.checkpointLsn} but this process has applied only up to ${this.writer.visibleLsn}: catch up with the log, then checkpoint`,
      )
    }
    this.pages.adopt(newest)
    this.store.setCheckpointed(newest.checkpointLsn)
    this.flow.adopt(newest.checkpointLsn)
    return true
  }

  logTail(): LogTail {
    return this.writer.logTail()
  }

  catchUp(tail: LogTail, adopt: boolean): Uint8Array[] {
    this.assertReadable()
    if (!this.shared) throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'catchUp() is for a database opened with sharing')
    const refused = this.queue.refusal()
    if (refused) throw refused
    if (this.nextLsn !== this.writer.visibleLsn + 1) throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'catchUp while commits are in flight')
    const own = this.writer.logTail()
    if (tail.lsn < own.lsn) {
      throw new KestrelError(
        'KESTREL_CORRUPT',
        `the published log tail (LSN ${tail.lsn}) is behind this process's own log end (LSN ${own.lsn}); restore from a backup`,
      )
    }
    const same = tail.segment === own.segment && tail.offset === own.offset
    if (same && tail.lsn !== own.lsn) {
      throw new KestrelError(
        'KESTREL_CORRUPT',
        `the published log tail says LSN ${tail.lsn} at this process's own log end (LSN ${own.lsn}); restore from a backup`,
      )
    }
    if (same && !adopt) return []
    const logDir = join(this.dir, LOG_DIR)
    const frames: FollowedFrame[] = same ? [] : readToTail(logDir, own, tail)
    let end = tail
    // The segment at `end` was cut (or another one entered): the writer reopens it.
    let reopen = false
    if (adopt) {
      const past = readPastTail(logDir, tail)
      if (past) {
        end = this.settlePastTail(logDir, past)
        for (const f of past.frames) frames.push(f)
        reopen = true
      }
    }
    if (frames.length === 0 && !reopen && same) return []
    const entered = end.segment > own.segment ? countBetween(own.segment, end.segment, logDir) : 0
    const visibleBefore = this.writer.visibleLsn
    this.writer.reposition(end, reopen, entered)
    this.nextLsn = end.lsn + 1
    // Durable records: apply them as replay at open does, in LSN order.
    try {
      for (const f of frames) this.flow.pushNow(makeBatch(f.lsn, this.store.apply(f.lsn, f.ops)))
    } catch (err) {
      // A page-store read failed (corruption): stop; the reopen decides.
      this.queue.failure = err instanceof KestrelError ? err : new KestrelError('KESTREL_IO', (err as Error).message, { cause: err })
      this.queue.state = 'failed'
      this.writer.visibleLsn = visibleBefore
      throw err
    }
    return frames.map((f) => f.payload.slice())
  }

  /**
   * Make what `readPastTail` found durable and the log clean after it: remove a segment the dead
   * writer died creating, cut the torn rest of the last segment, fdatasync the segments holding
   * adopted frames. Returns the new log end.
   */
  private settlePastTail(logDir: string, past: PastTail): LogTail {
    const end = past.end
    if (past.orphan !== undefined) {
      unlinkSync(join(logDir, past.orphan))
      syncDirSync(logDir)
    }
    const fd = openSync(join(logDir, end.segment), 'r+')
    try {
      // As recovery cuts a torn tail.
      if (fstatSync(fd).size > end.offset) ftruncateSync(fd, end.offset)
      fdatasyncSync(fd)
    } finally {
      closeSync(fd)
    }
    for (const name of past.segments) {
      if (name === end.segment) continue
      const f = openSync(join(logDir, name), 'r+')
      try {
        fdatasyncSync(f)
      } finally {
        closeSync(f)
      }
    }
    return end
  }

  async suspendFlusher(): Promise<void> {
    this.assertReadable()
    await this.flow.suspend()
  }

  resumeFlusher(): void {
    this.flow.resume()
  }

  backupPlan(): BackupPlan {
    if (!this.flow.isSuspended() || this.flow.isBusy()) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'backupPlan() needs the flusher suspended and idle')
    }
    const { segment, length, lsn } = this.writer.durableAt
    const meta = this.pages.meta()
    const logDir = join(this.dir, LOG_DIR)
    const names = readdirSync(logDir)
      .filter((n) => parseSegmentName(n) !== undefined && n <= segment)
      .sort()
    // Sealed segments' lengths are final (the trimmer is the flusher, which is suspended).
    const segments = names.map((name) => ({ name, bytes: name === segment ? length : statSync(join(logDir, name)).size }))
    return { commitId: lsn, seq: meta.seq, pages: this.pages.pagesInUse(), pageCount: meta.pageCount, segments }
  }

  setPageFault(fault: PageFault): void {
    this.flow.fault = fault
  }

  async close(): Promise<void> {
    if (this.queue.state === 'closed') return
    // Bounded: each pass waits for one write loop, which empties the queue or fails it.
    while (this.writer.flushing) await this.writer.flushing
    this.writer.stopQuietSync()
    const wasOpen = this.queue.state === 'open'
    this.queue.state = 'closed'
    if (this.shared) {
      // Another participant may be writing this segment and checkpoints only come on request:
      // no seal, no final checkpoint — but what this engine acknowledged without an fdatasync
      // is made durable.
      let syncError: unknown
      try {
        if (wasOpen)
          await this.writer.syncActive().catch((err: unknown) => {
            syncError = err
          })
        await this.flow.stop(false)
      } finally {
        await this.writer.closeActive()
        this.pages.close()
      }
      if (syncError !== undefined) throw finalSyncFailed(syncError)
      return
    }
    let sealError: unknown
    let flushError: unknown
    try {
      // A failure leaves a zeroed tail, which recovery cuts, but commits that 'relaxed'/'none'
      // acknowledged since the last sync may not be durable: report it.
      if (wasOpen)
        await this.writer.seal().catch((err: unknown) => {
          sealError = err
        })
      // The final checkpoint (not after a failed log write: the reopen recovers from the log).
      await this.flow.stop(wasOpen && sealError === undefined).catch((err: unknown) => {
        flushError = err
      })
    } finally {
      await this.writer.closeActive()
      this.pages.close()
    }
    if (flushError !== undefined) throw flushError
    if (sealError !== undefined) throw finalSyncFailed(sealError)
  }

  /** The writer takes its batch on a later turn: commits of one synchronous step are one batch already. */
  holdWriter(_hold: boolean): void {}

  /**
   * A ts engine's writes run on its thread's event loop and stop with it; only a write already
   * handed to libuv's thread pool can land after a Worker stopped mid-commit (docs/ARCHITECTURE.md
   * "Limits"). Node's file API cannot duplicate a socket to hold the lock past that.
   */
  keepWriteLock(_fd: number): void {}

  letGoWriteLock(): void {}

  leaveSharing(): void {
    this.shared = false
  }

  holdSyncs(hold: boolean): void {
    if (!(this.vfs instanceof FaultyVfs)) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'holdSyncs() needs the fault layer: open with faults: {}')
    }
    this.vfs.holdSyncs(hold)
  }

  async crash(tearBytes = 0): Promise<void> {
    if (!(this.vfs instanceof FaultyVfs)) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'crash() needs the fault layer: open with faults: {}')
    }
    if (this.queue.state === 'closed') return
    this.queue.crashed = true
    this.writer.stopQuietSync()
    this.vfs.holdSyncs(false)
    this.queue.failQueued()
    while (this.writer.flushing) await this.writer.flushing
    this.queue.state = 'closed'
    await this.flow.stop(false)
    this.pages.close()
    await this.vfs.crash(tearBytes)
  }
}

/** Segment files after `from` up to and including `to` (they are named in LSN order). */
function countBetween(from: string, to: string, logDir: string): number {
  return readdirSync(logDir).filter((n) => parseSegmentName(n) !== undefined && n > from && n <= to).length
}

/**
 * The meta page's live-record count is where the store's count starts: it must be what the
 * catalog says the collection trees hold (index trees count index entries and are left out).
 */
function checkRecordCount(pages: PageStore, metaRecords: number): void {
  let counted = 0
  for (const c of pages.collections()) counted += c.records
  if (counted !== metaRecords) {
    throw new KestrelError(
      'KESTREL_CORRUPT',
      `${PAGE_FILE}: the meta page counts ${metaRecords} live records but the catalog's collections hold ${counted}; run \`kestrel verify\` and restore from a backup`,
    )
  }
}

function finalSyncFailed(err: unknown): KestrelError {
  return new KestrelError(
    'KESTREL_IO',
    `closing: the final fdatasync of the log failed (${(err as Error).message}); commits acknowledged without an fdatasync (durability 'relaxed' or 'none') may be lost on a power failure`,
    { cause: err },
  )
}
