/**
 * The pure-TypeScript engine: the serial log with group commit, recovery and the latest-value
 * store, byte-compatible with the native engine (docs/FORMAT.md).
 *
 * Group commit: one write + fdatasync is in flight at a time; every commit that arrives meanwhile
 * joins the next batch (bounded by `groupBytesMax`). A batch's commits become visible, in LSN
 * order, only after the step that acknowledges them (I1: durability before visibility).
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { KestrelError, toKestrelError } from '../../errors.js'
import { decodeCommit, type WriteOp } from '../payload.js'
import type { BackupPlan, Core, CoreOpenOptions, CoreScanOptions, CoreScavengeOptions, CoreScavengeStep, CoreStats, PageFault } from '../types.js'
import { prepareDirectory } from './directory.js'
import { BATCH_END, FRAME_HEADER_BYTES, LOG_DIR, parseSegmentName, RECORD_COMMIT, segmentHeader, segmentName, writeFrame } from './format.js'
import { syncDir } from './fsutil.js'
import { Flow, makeBatch } from './flush.js'
import { PageStore } from './pages/store.js'
import { PAGE_FILE } from './pages/layout.js'
import { VersionStore, type Written } from './store.js'
import { checkStoredValues } from './stored.js'
import { recoverLog } from './recovery.js'
import { FaultyVfs, RealVfs, type LogFile, type Vfs } from './vfs.js'
import { readdirSync, statSync } from 'node:fs'

/** Queued bytes past which new commits wait for the writer (back-pressure, never a drop). */
const QUEUE_BYTES_MAX = 256 * 1024 * 1024
/**
 * The writer keeps this many zeroed bytes ahead of the write position: an fdatasync of data
 * written into pre-zeroed space has no file-size change to journal.
 */
const PREALLOC_BYTES = 4 * 1024 * 1024
/** Bytes of the page cache for a record cache of `cacheBytes`. */
function pageCacheBytes(cacheBytes: number): number {
  return Math.min(64 << 20, Math.max(1 << 20, Math.floor(cacheBytes / 8)))
}
/** In `relaxed` mode, fdatasync with a batch when the last sync is older than this. */
const RELAXED_SYNC_INTERVAL_MS = 100

interface Pending {
  lsn: number
  payload: Uint8Array
  ops: WriteOp[]
  resolve: (lsn: bigint) => void
  reject: (err: KestrelError) => void
}

type State = 'open' | 'failed' | 'closed'

export class TsCore implements Core {
  readonly engine = 'ts' as const
  private state: State = 'open'
  private failure: KestrelError | undefined
  private crashed = false
  /** Invariant: nextLsn = last queued LSN + 1 ≥ visibleLsn + 1. */
  private nextLsn: number
  private visibleLsn: number
  private readonly queue: Pending[] = []
  private queueBytes = 0
  private readonly roomWaiters: Array<() => void> = []
  private flushing: Promise<void> | undefined
  private lastSyncMs = Date.now()
  /**
   * `relaxed`: a batch was written since the last fdatasync. A quiet writer syncs it once
   * RELAXED_SYNC_INTERVAL_MS has passed (the timer), so what a power loss can take stays bounded.
   */
  private unsynced = false
  private quietSyncTimer: NodeJS.Timeout | undefined
  private batches = 0
  private syncs = 0

  /** The last published batch: the active segment's name and length after it, its last LSN. */
  private durableAt: { segment: string; length: number; lsn: number }

  private constructor(
    readonly dir: string,
    private readonly options: CoreOpenOptions,
    private readonly vfs: Vfs,
    private readonly pages: PageStore,
    private readonly store: VersionStore,
    private readonly flow: Flow,
    private active: LogFile,
    private activeName: string,
    private segmentCount: number,
    lastLsn: number,
  ) {
    this.nextLsn = lastLsn + 1
    this.visibleLsn = lastLsn
    this.durableAt = { segment: activeName, length: active.length, lsn: lastLsn }
  }

  /** Open (or create) the database in `dir` and recover it. */
  static async open(dir: string, options: CoreOpenOptions): Promise<TsCore> {
    await prepareDirectory(dir)
    const pages = PageStore.open(dir, pageCacheBytes(options.cacheBytes))
    try {
      const meta = pages.meta()
      checkRecordCount(pages, meta.records)
      const recovered = await recoverLog(dir, meta.checkpointLsn)
      const store = new VersionStore(pages, meta.checkpointLsn, meta.records)
      let segmentCount = recovered.segments.length
      const flow = new Flow(pages, store, options, join(dir, LOG_DIR), meta.checkpointLsn, (n) => { core.segmentCount -= n })
      // The replayed tail is not in the page store yet: it is dirty.
      for (const c of recovered.commits) flow.admit(makeBatch(c.lsn, store.apply(c.lsn, c.ops)))
      // Replay installed every version; keep only what the retention window asks for.
      store.setHorizon(Math.max(0, recovered.lastLsn - options.retainCommits), true)
      const vfs: Vfs = options.faults ? new FaultyVfs(options.faults) : new RealVfs()
      const last = recovered.segments[recovered.segments.length - 1]
      let active: LogFile
      let activeName: string
      if (last && recovered.logEndLsn >= recovered.lastLsn) {
        active = await vfs.openLog(join(dir, LOG_DIR, last.name), last.length)
        activeName = last.name
      } else {
        // No log, or one that ends below the checkpoint: continue after the checkpoint.
        active = await TsCore.createSegment(dir, vfs, recovered.lastLsn + 1)
        activeName = segmentName(recovered.lastLsn + 1)
        segmentCount++
      }
      const core: TsCore = new TsCore(dir, options, vfs, pages, store, flow, active, activeName, segmentCount, recovered.lastLsn)
      flow.start()
      return core
    } catch (err) {
      pages.close()
      throw err
    }
  }

  private static async createSegment(dir: string, vfs: Vfs, firstLsn: number): Promise<LogFile> {
    const logDir = join(dir, LOG_DIR)
    const path = join(logDir, segmentName(firstLsn))
    await writeFile(path, segmentHeader(firstLsn), { flag: 'wx' })
    const file = await vfs.openLog(path, 32)
    await file.sync('meta')
    await syncDir(logDir)
    return file
  }

  commit(payload: Uint8Array): Promise<bigint> {
    const refused = this.refusal()
    if (refused) return Promise.reject(refused)
    let ops: WriteOp[]
    try {
      ops = decodeCommit(payload)
    } catch (err) {
      return Promise.reject(new KestrelError('KESTREL_INVALID_ARGUMENT', `malformed commit payload: ${(err as Error).message}`))
    }
    const badValue = checkStoredValues(ops)
    if (badValue !== undefined) return Promise.reject(new KestrelError('KESTREL_INVALID_ARGUMENT', `malformed commit payload: ${badValue}`))
    if (this.queueBytes > QUEUE_BYTES_MAX) {
      // Back-pressure: wait for the writer to drain, then queue in arrival order.
      return new Promise<void>((resolve) => this.roomWaiters.push(resolve)).then(() => this.commit(payload))
    }
    return new Promise<bigint>((resolve, reject) => {
      const lsn = this.nextLsn++
      this.queue.push({ lsn, payload, ops, resolve, reject })
      this.queueBytes += payload.length + FRAME_HEADER_BYTES
      this.kick()
    })
  }

  /** Start the writer unless it runs. Its end re-checks the queue, so no commit is stranded. */
  private kick(): void {
    if (this.flushing) return
    // Start on a microtask so that commits issued in the same tick share the first batch;
    // nothing ever sleeps waiting for company.
    this.flushing = Promise.resolve().then(() => this.flushLoop()).finally(() => {
      this.flushing = undefined
      if (this.queue.length > 0) this.kick()
      else this.armQuietSync()
    })
  }

  /** `relaxed`: sync written batches once the interval has passed, if no batch does first. */
  private armQuietSync(): void {
    if (this.options.durability !== 'relaxed' || !this.unsynced || this.quietSyncTimer || this.state !== 'open') return
    const dueMs = Math.max(0, this.lastSyncMs + RELAXED_SYNC_INTERVAL_MS - Date.now())
    this.quietSyncTimer = setTimeout(() => {
      this.quietSyncTimer = undefined
      // The writer, when running, re-arms the timer at its end.
      if (this.flushing || !this.unsynced || this.state !== 'open') return
      this.flushing = this.quietSync().finally(() => {
        this.flushing = undefined
        if (this.queue.length > 0) this.kick()
      })
    }, dueMs)
  }

  /**
   * The quiet-period fdatasync. Its failure stops the engine as a failed batch sync does:
   * acknowledged commits may not be durable, so nothing more is acknowledged.
   */
  private async quietSync(): Promise<void> {
    try {
      await this.active.sync('batch')
    } catch (err) {
      const cause = toKestrelError(err, 'syncing the log')
      this.failure = new KestrelError('KESTREL_IO', `the log's periodic fdatasync failed (${cause.message}); commits acknowledged in the last ${RELAXED_SYNC_INTERVAL_MS} ms (durability 'relaxed') may be lost on a power failure: reopen the database to recover the last durable state`, { cause: err })
      this.state = 'failed'
      this.failQueued()
      return
    }
    this.syncs++
    this.lastSyncMs = Date.now()
    this.unsynced = false
  }

  private refusal(): KestrelError | undefined {
    if (this.state === 'closed') return new KestrelError('KESTREL_CLOSED', 'the database is closed; open it again to use it')
    if (this.state === 'failed') {
      return new KestrelError('KESTREL_IO', `an earlier log write failed (${this.failure?.message ?? 'I/O error'}); nothing more is acknowledged: reopen the database to recover the last durable state`)
    }
    return undefined
  }

  /** Write queued commits batch by batch until the queue is empty. */
  private async flushLoop(): Promise<void> {
    // Bounded: every iteration removes at least one commit from the queue or stops.
    while (this.queue.length > 0 && !this.crashed && this.state !== 'failed') {
      const batch: Pending[] = []
      let bytes = 0
      while (this.queue.length > 0) {
        const next = this.queue[0]!
        const size = FRAME_HEADER_BYTES + next.payload.length
        if (batch.length > 0 && bytes + size > this.options.groupBytesMax) break
        batch.push(this.queue.shift()!)
        bytes += size
      }
      this.queueBytes -= bytes
      await this.writeBatch(batch, bytes)
      while (this.queueBytes <= QUEUE_BYTES_MAX && this.roomWaiters.length > 0) this.roomWaiters.shift()!()
    }
    if (this.crashed || this.state === 'failed') this.failQueued()
  }

  private async writeBatch(batch: Pending[], bytes: number): Promise<void> {
    const buffer = new Uint8Array(bytes)
    let pos = 0
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i]!
      pos = writeFrame(buffer, pos, p.lsn, RECORD_COMMIT | (i === batch.length - 1 ? BATCH_END : 0), p.payload)
    }
    let lengthBefore = this.active.length
    try {
      if (this.active.length > this.options.segmentBytes) {
        await this.rollover(batch[0]!.lsn)
        // A failure below must cut the batch from the segment it was written to: the new one.
        lengthBefore = this.active.length
      }
      const end = this.active.length + buffer.length
      if (end > this.active.allocated) await this.active.preallocate(end + PREALLOC_BYTES)
      await this.active.append(buffer, 'batch')
      if (this.crashed) throw new KestrelError('KESTREL_CLOSED', 'the database crashed (simulated) before this commit was acknowledged')
      const mode = this.options.durability
      const now = Date.now()
      if (mode === 'sync' || (mode === 'relaxed' && now - this.lastSyncMs > RELAXED_SYNC_INTERVAL_MS)) {
        await this.active.sync('batch')
        this.syncs++
        this.lastSyncMs = now
        this.unsynced = false
      } else {
        this.unsynced = true
      }
      if (this.crashed) throw new KestrelError('KESTREL_CLOSED', 'the database crashed (simulated) before this commit was acknowledged')
    } catch (err) {
      if (this.crashed) {
        for (const p of batch) p.reject(new KestrelError('KESTREL_CLOSED', 'the database crashed (simulated) before this commit was acknowledged'))
        return
      }
      await this.fail(err, batch, lengthBefore)
      return
    }
    this.batches++
    // Publish: apply in LSN order, advance the horizon, hand the batch to the gopher (a full
    // queue holds the acknowledgement back: committers wait), then acknowledge.
    const written: Written[] = []
    try {
      for (const p of batch) for (const w of this.store.apply(p.lsn, p.ops)) written.push(w)
    } catch (err) {
      // Durable, but a page-store read failed (corruption): stop; the reopen decides.
      await this.fail(err, batch, this.active.length)
      return
    }
    const last = batch[batch.length - 1]!.lsn
    this.visibleLsn = last
    this.durableAt = { segment: this.activeName, length: this.active.length, lsn: last }
    const wait = this.flow.push(makeBatch(last, written))
    if (wait) await wait
    for (const p of batch) p.resolve(BigInt(p.lsn))
  }

  /** Cut the preallocated zeros and make the segment durable as it is. */
  private async seal(file: LogFile): Promise<void> {
    if (file.allocated > file.length) await file.truncate(file.length)
    await file.sync('seal')
    this.unsynced = false
  }

  private async rollover(firstLsn: number): Promise<void> {
    const old = this.active
    // A sealed segment ends at its last record: recovery treats damage in any segment but the
    // last as corruption, so its zeroed preallocation must go first.
    await this.seal(old)
    this.active = await TsCore.createSegment(this.dir, this.vfs, firstLsn)
    this.activeName = segmentName(firstLsn)
    this.segmentCount++
    await old.close()
  }

  private async fail(err: unknown, batch: Pending[], lengthBefore: number): Promise<void> {
    const cause = toKestrelError(err, 'writing the log')
    const code = cause.code === 'KESTREL_DISK_FULL' ? 'KESTREL_DISK_FULL' : 'KESTREL_IO'
    this.failure = new KestrelError(code, code === 'KESTREL_DISK_FULL'
      ? `the disk is full: this commit was not acknowledged (${cause.message}); free disk space and reopen the database`
      : `a log write failed: this commit was not acknowledged (${cause.message}); reopen the database to recover the last durable state`, { cause: err })
    this.state = 'failed'
    // Best effort: cut the failed batch off, so that it cannot reappear after a reopen.
    try { await this.active.truncate(lengthBefore) } catch { /* the reopen's recovery decides */ }
    for (const p of batch) p.reject(this.failure)
    this.failQueued()
  }

  private failQueued(): void {
    const err = this.refusal() ?? new KestrelError('KESTREL_CLOSED', 'the database is closed; open it again to use it')
    for (const p of this.queue.splice(0)) p.reject(this.crashed ? new KestrelError('KESTREL_CLOSED', 'the database crashed (simulated) before this commit was acknowledged') : err)
    this.queueBytes = 0
    for (const w of this.roomWaiters.splice(0)) w()
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
    if (this.state === 'closed') throw new KestrelError('KESTREL_CLOSED', 'the database is closed; open it again to use it')
  }

  lastCommitId(): bigint {
    return BigInt(this.visibleLsn)
  }

  stats(): CoreStats {
    const meta = this.pages.meta()
    return {
      engine: 'ts', durableLsn: this.visibleLsn, batches: this.batches, syncs: this.syncs, segments: this.segmentCount,
      keys: this.store.liveKeys, versions: this.store.versions, recordBytes: this.store.recordBytes, retired: this.store.retired,
      checkpointLsn: meta.checkpointLsn, pageCount: meta.pageCount, indexEntries: this.store.indexEntries, ageGroup: this.store.ageGroup,
      flow: this.flow.stats(),
    }
  }

  checkpoint(): Promise<void> {
    const refused = this.refusal()
    if (refused) return Promise.reject(refused)
    return this.flow.checkpoint(this.visibleLsn)
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
    const { segment, length, lsn } = this.durableAt
    const meta = this.pages.meta()
    const logDir = join(this.dir, LOG_DIR)
    const names = readdirSync(logDir).filter((n) => parseSegmentName(n) !== undefined && n <= segment).sort()
    // Sealed segments' lengths are final (the trimmer is the flusher, which is suspended).
    const segments = names.map((name) => ({ name, bytes: name === segment ? length : statSync(join(logDir, name)).size }))
    return { commitId: lsn, seq: meta.seq, pages: this.pages.pagesInUse(), pageCount: meta.pageCount, segments }
  }

  setPageFault(fault: PageFault): void {
    this.flow.fault = fault
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return
    // Bounded: each pass waits for one flush loop, which empties the queue or fails it.
    while (this.flushing) await this.flushing
    clearTimeout(this.quietSyncTimer)
    const wasOpen = this.state === 'open'
    this.state = 'closed'
    let sealError: unknown
    let flushError: unknown
    try {
      // A failure leaves a zeroed tail, which recovery cuts, but commits that 'relaxed'/'none'
      // acknowledged since the last sync may not be durable: report it.
      if (wasOpen) await this.seal(this.active).catch((err: unknown) => { sealError = err })
      // The final checkpoint (not after a failed log write: the reopen recovers from the log).
      await this.flow.stop(wasOpen && sealError === undefined).catch((err: unknown) => { flushError = err })
    } finally {
      await this.active.close()
      this.pages.close()
    }
    if (flushError !== undefined) throw flushError
    if (sealError !== undefined) {
      throw new KestrelError('KESTREL_IO', `closing: the final fdatasync of the log failed (${(sealError as Error).message}); commits acknowledged without an fdatasync (durability 'relaxed' or 'none') may be lost on a power failure`, { cause: sealError })
    }
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
    if (this.state === 'closed') return
    this.crashed = true
    clearTimeout(this.quietSyncTimer)
    this.vfs.holdSyncs(false)
    this.failQueued()
    while (this.flushing) await this.flushing
    this.state = 'closed'
    await this.flow.stop(false)
    this.pages.close()
    await this.vfs.crash(tearBytes)
  }
}

/**
 * The meta page's live-record count is where the store's count starts: it must be what the
 * catalog says the collection trees hold (index trees count index entries and are left out).
 */
function checkRecordCount(pages: PageStore, metaRecords: number): void {
  let counted = 0
  for (const c of pages.collections()) counted += c.records
  if (counted !== metaRecords) {
    throw new KestrelError('KESTREL_CORRUPT', `${PAGE_FILE}: the meta page counts ${metaRecords} live records but the catalog's collections hold ${counted}; run \`kestrel verify\` and restore from a backup`)
  }
}
