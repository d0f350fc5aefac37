/**
 * The ts engine's group-commit log writer (twin of `log/writer.rs`).
 *
 * One write + fdatasync is in flight at a time; every commit queued meanwhile joins the next
 * batch (bounded by `groupBytesMax`): one write of all its frames, the last flagged BATCH_END,
 * and one fdatasync. A batch's commits are applied to the store, in LSN order, only after the
 * step that acknowledges them (I1: durability before visibility), then handed to the flusher's
 * queue, then acknowledged. The active segment keeps PREALLOC_BYTES of zeros ahead of the write
 * position; a segment is cut back to its last record when it is sealed (rollover, close). A
 * failed write or fdatasync cuts the batch off again (best effort) and fails the engine: nothing
 * more is acknowledged until it is reopened.
 */
import { writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { KestrelError, toKestrelError } from '../../../errors.js'
import { BATCH_END, FRAME_HEADER_BYTES, RECORD_COMMIT, segmentHeader, segmentName, writeFrame } from '../../../format/log.js'
import type { CoreOpenOptions, LogTail } from '../../types.js'
import type { Queue, Queued } from '../engine.js'
import { makeBatch, type Flow } from '../flush.js'
import { syncDir } from '../fsutil.js'
import type { Store, Written } from '../store/index.js'
import type { LogFile, Vfs } from '../vfs.js'
import { Publisher } from './publish.js'

/**
 * The writer keeps this many zeroed bytes ahead of the write position: an fdatasync of data
 * written into pre-zeroed space has no file-size change to journal.
 */
export const PREALLOC_BYTES = 4 * 1024 * 1024
/** In `relaxed` mode, fdatasync with a batch when the last sync is older than this. */
export const RELAXED_SYNC_INTERVAL_MS = 100

/** Create the segment whose first record is `firstLsn`: its header, synced, and its directory entry, synced. */
export async function createSegment(logDir: string, vfs: Vfs, firstLsn: number): Promise<LogFile> {
  const path = join(logDir, segmentName(firstLsn))
  await writeFile(path, segmentHeader(firstLsn), { flag: 'wx' })
  const file = await vfs.openLog(path, 32)
  await file.sync('meta')
  await syncDir(logDir)
  return file
}

/** The log writer of one engine: the active segment and the loop that writes the queue into it. */
export class Writer {
  /** The running write loop or quiet-period sync; undefined when idle. */
  flushing: Promise<void> | undefined
  private lastSyncMs = Date.now()
  /**
   * `relaxed`: a batch was written since the last fdatasync. A quiet writer syncs it once
   * RELAXED_SYNC_INTERVAL_MS has passed (the timer), so what a power loss can take stays bounded.
   */
  private unsynced = false
  private quietSyncTimer: NodeJS.Timeout | undefined
  batches = 0
  syncs = 0
  /** The last LSN applied to the store: what readers see. */
  visibleLsn: number
  /** The last published batch: the active segment's name and length after it, its last LSN. */
  durableAt: { segment: string; length: number; lsn: number }
  /** Sharing: publishes each durable batch's tail (`publish.ts`). */
  private readonly publisher: Publisher | undefined

  constructor(
    private readonly logDir: string,
    private readonly options: CoreOpenOptions,
    private readonly vfs: Vfs,
    private readonly queue: Queue,
    private readonly store: Store,
    private readonly flow: Flow,
    private active: LogFile,
    private activeName: string,
    /** Segment files in the log directory (the flusher's trim subtracts the ones it deletes). */
    public segments: number,
    lastLsn: number,
  ) {
    this.publisher = options.sharing?.publish ? new Publisher(dirname(logDir)) : undefined
    this.visibleLsn = lastLsn
    this.durableAt = { segment: activeName, length: active.length, lsn: lastLsn }
  }

  /** Start the writer unless it runs. Its end re-checks the queue, so no commit is stranded. */
  kick(): void {
    if (this.flushing) return
    // Start on a microtask so that commits issued in the same tick share the first batch;
    // nothing ever sleeps waiting for company.
    this.flushing = Promise.resolve()
      .then(() => this.run())
      .finally(() => {
        this.flushing = undefined
        if (this.queue.items.length > 0) this.kick()
        else this.armQuietSync()
      })
  }

  /** `relaxed`: sync written batches once the interval has passed, if no batch does first. */
  private armQuietSync(): void {
    if (this.options.durability !== 'relaxed' || !this.unsynced || this.quietSyncTimer || this.queue.state !== 'open') return
    const dueMs = Math.max(0, this.lastSyncMs + RELAXED_SYNC_INTERVAL_MS - Date.now())
    this.quietSyncTimer = setTimeout(() => {
      this.quietSyncTimer = undefined
      // The writer, when running, re-arms the timer at its end.
      if (this.flushing || !this.unsynced || this.queue.state !== 'open') return
      this.flushing = this.quietSync().finally(() => {
        this.flushing = undefined
        if (this.queue.items.length > 0) this.kick()
      })
    }, dueMs)
  }

  /** Stop the quiet-period timer (close, crash). */
  stopQuietSync(): void {
    clearTimeout(this.quietSyncTimer)
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
      this.queue.failure = new KestrelError(
        'KESTREL_IO',
        `the log's periodic fdatasync failed (${cause.message}); commits acknowledged in the last ${RELAXED_SYNC_INTERVAL_MS} ms (durability 'relaxed') may be lost on a power failure: reopen the database to recover the last durable state`,
        { cause: err },
      )
      this.queue.state = 'failed'
      this.queue.failQueued()
      return
    }
    this.syncs++
    this.lastSyncMs = Date.now()
    this.unsynced = false
  }

  /** Write queued commits batch by batch until the queue is empty. */
  private async run(): Promise<void> {
    const queue = this.queue
    // Bounded: every iteration removes at least one commit from the queue or stops.
    while (queue.items.length > 0 && !queue.crashed && queue.state !== 'failed') {
      const batch: Queued[] = []
      let bytes = 0
      while (queue.items.length > 0) {
        const next = queue.items[0]!
        const size = FRAME_HEADER_BYTES + next.payload.length
        if (batch.length > 0 && bytes + size > this.options.groupBytesMax) break
        batch.push(queue.items.shift()!)
        bytes += size
      }
      queue.bytes -= bytes
      await this.writeBatch(batch, bytes)
      queue.wakeIfRoom()
    }
    if (queue.crashed || queue.state === 'failed') queue.failQueued()
  }

  private async writeBatch(batch: Queued[], bytes: number): Promise<void> {
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
      if (this.queue.crashed) throw new KestrelError('KESTREL_CLOSED', 'the database crashed (simulated) before this commit was acknowledged')
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
      if (this.queue.crashed) throw new KestrelError('KESTREL_CLOSED', 'the database crashed (simulated) before this commit was acknowledged')
    } catch (err) {
      if (this.queue.crashed) {
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
    this.publisher?.publish(last, this.activeName, this.active.length)
    const wait = this.flow.push(makeBatch(last, written))
    if (wait) await wait
    for (const p of batch) p.resolve(BigInt(p.lsn))
  }

  /** Cut the preallocated zeros and make the segment (by default the active one) durable as it is. */
  async seal(file: LogFile = this.active): Promise<void> {
    if (file.allocated > file.length) await file.truncate(file.length)
    await file.sync('seal')
    this.unsynced = false
  }

  /** Sharing, at close: make what was acknowledged without an fdatasync durable, cutting nothing. */
  async syncActive(): Promise<void> {
    await this.active.sync('seal')
    this.unsynced = false
  }

  /** The segment being written (never trimmed). */
  activeSegment(): string {
    return this.activeName
  }

  /** Where the next frame goes, after the last published batch. */
  logTail(): LogTail {
    return { lsn: this.durableAt.lsn, segment: this.durableAt.segment, offset: this.durableAt.length }
  }

  /**
   * Sharing: other participants' records up to `at` are durable and applied; continue writing
   * there (`reopen`: the file changed under the open one, or `at` is in another segment). The
   * previous file is closed without a sync or a cut (another participant may be writing it),
   * once a quiet-period sync running on it is done. Only while no batch is queued or written.
   */
  reposition(at: LogTail, reopen: boolean, segmentsEntered: number): void {
    if (at.segment !== this.activeName || reopen) {
      const file = this.vfs.openLogSync(join(this.logDir, at.segment), at.offset)
      const old = this.active
      this.active = file
      this.activeName = at.segment
      void (this.flushing ?? Promise.resolve()).then(() => old.close()).catch(() => undefined)
    } else {
      this.active.moveTo(at.offset)
    }
    this.segments += segmentsEntered
    this.visibleLsn = at.lsn
    this.durableAt = { segment: at.segment, length: at.offset, lsn: at.lsn }
  }

  /** Close the active segment's file (after `seal`, or without it after a failure). */
  async closeActive(): Promise<void> {
    this.publisher?.close()
    await this.active.close()
  }

  private async rollover(firstLsn: number): Promise<void> {
    const old = this.active
    // A sealed segment ends at its last record: recovery treats damage in any segment but the
    // last as corruption, so its zeroed preallocation must go first.
    await this.seal(old)
    this.active = await createSegment(this.logDir, this.vfs, firstLsn)
    this.activeName = segmentName(firstLsn)
    this.segments++
    await old.close()
  }

  private async fail(err: unknown, batch: Queued[], lengthBefore: number): Promise<void> {
    const cause = toKestrelError(err, 'writing the log')
    const code = cause.code === 'KESTREL_DISK_FULL' ? 'KESTREL_DISK_FULL' : 'KESTREL_IO'
    this.queue.failure = new KestrelError(
      code,
      code === 'KESTREL_DISK_FULL'
        ? `the disk is full: this commit was not acknowledged (${cause.message}); free disk space and reopen the database`
        : `a log write failed: this commit was not acknowledged (${cause.message}); reopen the database to recover the last durable state`,
      { cause: err },
    )
    this.queue.state = 'failed'
    // Best effort: cut the failed batch off, so that it cannot reappear after a reopen.
    try {
      await this.active.truncate(lengthBefore)
    } catch {
      /* the reopen's recovery decides */
    }
    for (const p of batch) p.reject(this.queue.failure)
    this.queue.failQueued()
  }
}
