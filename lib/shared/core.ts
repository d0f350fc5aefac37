/**
 * One participant of a shared directory (docs/ARCHITECTURE.md "Many processes"): wraps this
 * process's engine (native or ts, opened with `sharing`) and speaks the protocol above the seam,
 * so both engines share one implementation of it.
 *
 * Commit: commits submitted in one turn form a batch; under the `write` lock the participant
 * catches up on what others published (adopting whole frames a dead writer left), re-checks the
 * batch against those foreign writes, hands it to the engine (which assigns the next LSNs,
 * writes and fdatasyncs), publishes the new tail in SHARED, and only then acknowledges.
 * Reads: the newest commit id is refreshed from SHARED once per event-loop turn; a tailer applies
 * foreign commits as they are published. Checkpoints: by one participant at a time under `ckpt`,
 * on top of the newest one; free pages are reused only when every live participant reads the
 * newest checkpoint; log is trimmed only below what every live participant still needs.
 */
import { closeSync, existsSync, fdatasyncSync, fstatSync, openSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { KestrelError } from '../errors.js'
import { LOG_DIR } from '../format/log.js'
import type {
  BackupPlan,
  CheckpointRef,
  CommitCheck,
  Core,
  CoreCheckpointOptions,
  CoreOpenOptions,
  CoreScanOptions,
  CoreScavengeOptions,
  CoreScavengeStep,
  CoreStats,
  EngineName,
  LogTail,
  PageFault,
} from '../core/types.js'
import { SHARED_FILE, SLOTS_MAX, SharedFile, type Slot } from './file.js'
import { type LockNames, type NamedLock, lockNames, netnsId, tryLock, waitLock } from './locks.js'

/** How long an opener waits for another opener (recovery of a large log can take seconds). */
const INIT_WAIT_MS = 60_000
/** How long a batch waits for the write lock before its commits are refused (not written). */
const WRITE_WAIT_MS = 30_000
/** How long an explicit checkpoint or a backup waits for another participant's checkpoint. */
const CKPT_WAIT_MS = 120_000
/** Tailer period while other participants are live, and while alone. */
const TAIL_MS = 1
const ALONE_TAIL_MS = 20
/** Slots, heartbeat and checkpoint triggers are looked at this often. */
const HOUSEKEEPING_MS = 50
/** A slot of another network namespace whose heartbeat is older than this is taken for dead. */
const FOREIGN_NS_STALE_MS = 10_000
/** Keep the write lock this long after the last batch while no other participant is live. */
const IDLE_RELEASE_MS = 2
/**
 * Test-only (multi-process crash tests): `<point>:<n>` SIGKILLs this process at the n-th batch's
 * `locked` (write lock held, caught up, nothing written) or `synced` (written and durable, tail
 * not yet published) point.
 */
const KILL_AT = parseKillAt(process.env.KESTREL_TEST_KILL_AT)
function parseKillAt(v: string | undefined): { point: string; batch: number } | undefined {
  const m = v?.match(/^(locked|synced):(\d+)$/)
  return m ? { point: m[1]!, batch: Number(m[2]) } : undefined
}
let batchesWritten = 0
function killPoint(point: string): void {
  if (KILL_AT?.point === point && batchesWritten === KILL_AT.batch) process.kill(process.pid, 'SIGKILL')
}

/** Most commits in one batch (the engine splits by bytes itself). */
const BATCH_COMMITS_MAX = 4096
/** The largest torn tail zeroed after an abandoned batch. */
const ZERO_BYTES_MAX = 64 << 20

interface Pending {
  payload: Uint8Array
  check: CommitCheck | undefined
  /** `foreignBatches` when the commit was queued: re-checked only if it changed. */
  foreignAt: number
  resolve: (lsn: bigint) => void
  reject: (err: unknown) => void
}

const ENGINE_IDS: Record<EngineName, number> = { native: 1, ts: 2 }

export class SharedCore implements Core {
  readonly engine: EngineName
  /** Foreign commits applied, for the coordinator's conflict memory (first LSN, payloads). */
  onForeign: ((firstLsn: number, payloads: Uint8Array[]) => void) | undefined

  private readonly pending: Pending[] = []
  private running = false
  /** Own commits handed to the engine and not settled (catch-up must wait). */
  private inFlight = false
  private writeLock: NamedLock | undefined
  /** The write lock was held continuously since this participant last published the tail. */
  private caughtUnderLock = false
  private foreignBatches = 0
  private othersLive = 0
  private closed = false
  private tailTimer: NodeJS.Timeout | undefined
  private houseTimer: NodeJS.Timeout | undefined
  private idleTimer: NodeJS.Timeout | undefined
  private checkpointing: Promise<void> | undefined
  private suspends = 0
  private suspendLock: NamedLock | undefined
  private lastCheckpointMs = Date.now()
  private needLsn = Number.MAX_SAFE_INTEGER

  private constructor(
    private readonly inner: Core,
    private readonly file: SharedFile,
    private readonly names: LockNames,
    private readonly slotIndex: number,
    private readonly slotLock: NamedLock,
    private readonly slot: Slot,
    private readonly options: CoreOpenOptions,
  ) {
    this.engine = inner.engine
  }

  get dir(): string {
    return this.inner.dir
  }

  /** Open `dir` as a participant: `openEngine` opens this process's engine with the given options. */
  static async open(dir: string, engine: EngineName, options: CoreOpenOptions, openEngine: (o: CoreOpenOptions) => Promise<Core>): Promise<SharedCore> {
    const names = lockNames(dir)
    const init = await waitLock(
      names.init,
      INIT_WAIT_MS,
      () =>
        `${dir} stayed locked for ${INIT_WAIT_MS / 1000} s: another process is opening it, or a kestreldb older than 0.2 (which does not share directories) has it open; close that one or wait`,
    )
    try {
      const netns = netnsId()
      let file = existsSync(join(dir, SHARED_FILE)) ? new SharedFile(dir) : undefined
      let live = 0
      const free: number[] = []
      try {
        if (file) {
          const slots = file.readSlots()
          for (let i = 0; i < SLOTS_MAX; i++) {
            const s = slots[i]
            if (!s) {
              free.push(i)
              continue
            }
            if (s.netns !== netns && Date.now() - s.heartbeatMs < FOREIGN_NS_STALE_MS) {
              throw new KestrelError(
                'KESTREL_LOCKED',
                `${dir} is open in process ${s.pid} of another network namespace (another container?): processes share a directory only within one network namespace, because the locks that guard it are abstract sockets; open it from one namespace`,
              )
            }
            const probe = s.netns === netns ? tryLock(names.slot(i)) : undefined
            if (s.netns === netns && !probe) {
              live++
              continue
            }
            // Its owner is gone: the slot no longer counts.
            probe?.release()
            file.writeSlot(i, undefined)
            free.push(i)
          }
        }
        const log = file?.readLog()
        if (live > 0 && !log)
          throw new KestrelError(
            'KESTREL_CORRUPT',
            `${join(dir, SHARED_FILE)} holds no readable log tail while other processes have the database open; close them all and open again`,
          )
        const slot: Slot = {
          nonce: (BigInt(Date.now()) << 16n) | BigInt((process.pid & 0xffff) | 1),
          pid: process.pid,
          engine: ENGINE_IDS[engine],
          netns,
          // Until the engine is open: it may read any checkpoint and needs all the log.
          pinnedSeq: 0,
          appliedLsn: 0,
          needLsn: 0,
          heartbeatMs: Date.now(),
        }
        const claim = (f: SharedFile, candidates: number[]): { i: number; lock: NamedLock } => {
          for (const i of candidates) {
            const lock = tryLock(names.slot(i))
            if (lock) {
              f.writeSlot(i, slot)
              return { i, lock }
            }
          }
          throw new KestrelError('KESTREL_LOCKED', `${dir} already has ${SLOTS_MAX} processes and threads open on it; close some first`)
        }
        // Others are live: claim the slot first, so that no checkpoint trims log or reuses pages
        // this opener is about to read.
        let claimed = live > 0 && file ? claim(file, free) : undefined
        let inner: Core
        try {
          inner = await openEngine({ ...options, sharing: live > 0 && log ? { tail: log.tail } : {} })
        } catch (err) {
          if (claimed) {
            file?.writeSlot(claimed.i, undefined)
            claimed.lock.release()
          }
          throw err
        }
        try {
          if (live === 0) {
            // Sole participant: full recovery ran; publish its outcome.
            file ??= new SharedFile(dir)
            file.reset()
            file.writeLog({ tail: inner.logTail(), abandoned: false })
            file.writeCkpt(inner.checkpointRef())
            claimed = claim(
              file,
              Array.from({ length: SLOTS_MAX }, (_, i) => i),
            )
          }
          if (!file || !claimed) throw new Error('unreachable: a participant has a slot')
          slot.pinnedSeq = inner.checkpointRef().seq
          slot.appliedLsn = Number(inner.lastCommitId())
          slot.needLsn = Number.MAX_SAFE_INTEGER
          file.writeSlot(claimed.i, slot)
          const core = new SharedCore(inner, file, names, claimed.i, claimed.lock, slot, options)
          core.othersLive = live
          core.start()
          return core
        } catch (err) {
          await inner.close().catch(() => {})
          if (claimed) {
            file?.writeSlot(claimed.i, undefined)
            claimed.lock.release()
          }
          throw err
        }
      } catch (err) {
        file?.close()
        throw err
      }
    } finally {
      init.release()
    }
  }

  private start(): void {
    const tail = (): void => {
      this.tailTimer = undefined
      if (this.closed) return
      try {
        this.tail()
      } catch (err) {
        this.fault(err)
      }
      this.tailTimer = setTimeout(tail, this.othersLive > 0 ? TAIL_MS : ALONE_TAIL_MS)
      this.tailTimer.unref()
    }
    tail()
    this.houseTimer = setInterval(() => {
      if (this.closed) return
      try {
        this.housekeeping()
      } catch (err) {
        this.fault(err)
      }
    }, HOUSEKEEPING_MS)
    this.houseTimer.unref()
  }

  /** A background step failed: the next commit reports it (nothing is acknowledged meanwhile). */
  private faultError: unknown
  private fault(err: unknown): void {
    if (err instanceof KestrelError && err.code === 'KESTREL_CLOSED') return
    this.faultError ??= err
  }

  // ---- catching up -------------------------------------------------------------------------

  /** Apply what others published up to `tail` (with `adopt`, a dead writer's whole frames too). */
  private applyForeign(tail: LogTail, adopt: boolean): void {
    if (this.inFlight) throw new Error('catch-up while own commits are in flight')
    const before = Number(this.inner.lastCommitId())
    if (!adopt && tail.lsn <= before) return
    const payloads = this.inner.catchUp(tail, adopt)
    if (payloads.length === 0) return
    this.foreignBatches++
    this.onForeign?.(before + 1, payloads)
  }

  /** Catch up to the published tail now, if no own commit is being written (then we are current). */
  private refreshNow(): void {
    if (this.inFlight || this.caughtUnderLock) return
    const log = this.file.readLog()
    if (log && log.tail.lsn > Number(this.inner.lastCommitId())) this.applyForeign(log.tail, false)
  }

  private tail(): void {
    this.refreshNow()
    const ckpt = this.file.readCkpt()
    if (ckpt && ckpt.seq > this.inner.checkpointRef().seq && ckpt.lsn <= Number(this.inner.lastCommitId()) && this.inner.adoptCheckpoint()) {
      this.writeSlot()
    }
  }

  private housekeeping(): void {
    this.othersLive = this.countOthers()
    this.writeSlot()
    if (this.othersLive > 0 && this.writeLock && !this.running) this.releaseWrite()
    this.maybeCheckpoint()
  }

  /** Live participants other than this one (a slot whose lock can be taken is dead). */
  private countOthers(): number {
    return this.liveOthers().length
  }

  private liveOthers(): Slot[] {
    const out: Slot[] = []
    const slots = this.file.readSlots()
    for (let i = 0; i < SLOTS_MAX; i++) {
      const s = slots[i]
      if (!s || i === this.slotIndex) continue
      if (s.netns !== this.slot.netns) {
        if (Date.now() - s.heartbeatMs < FOREIGN_NS_STALE_MS) out.push(s)
        continue
      }
      const probe = tryLock(this.names.slot(i))
      if (!probe) out.push(s)
      else probe.release()
    }
    return out
  }

  private writeSlot(): void {
    this.slot.pinnedSeq = this.inner.checkpointRef().seq
    this.slot.appliedLsn = Number(this.inner.lastCommitId())
    this.slot.needLsn = this.needLsn
    this.slot.heartbeatMs = Date.now()
    this.file.writeSlot(this.slotIndex, this.slot)
  }

  // ---- commits -----------------------------------------------------------------------------

  commit(payload: Uint8Array, check?: CommitCheck): Promise<bigint> {
    if (this.closed) return Promise.reject(new KestrelError('KESTREL_CLOSED', 'the database is closed; open it again to use it'))
    return new Promise<bigint>((resolve, reject) => {
      this.pending.push({ payload, check, foreignAt: this.foreignBatches, resolve, reject })
      if (!this.running) {
        this.running = true
        setImmediate(() => void this.run())
      }
    })
  }

  private async run(): Promise<void> {
    try {
      // Bounded: every pass takes at least one pending commit.
      while (this.pending.length > 0) {
        if (this.faultError) {
          for (const p of this.pending.splice(0)) p.reject(this.faultError)
          break
        }
        try {
          await this.acquireWrite()
        } catch (err) {
          for (const p of this.pending.splice(0)) p.reject(err)
          break
        }
        await this.writeBatch(this.pending.splice(0, BATCH_COMMITS_MAX))
        if (this.othersLive > 0 || this.closed) this.releaseWrite()
      }
    } finally {
      this.running = false
      if (this.writeLock && !this.closed) this.armIdleRelease()
    }
  }

  private async acquireWrite(): Promise<void> {
    if (this.writeLock) return
    this.writeLock = await waitLock(
      this.names.write,
      WRITE_WAIT_MS,
      () =>
        `another process has held the write lock of ${this.dir} for ${WRITE_WAIT_MS / 1000} s (stopped or stuck?); these commits were not written: retry them`,
    )
    this.caughtUnderLock = false
  }

  private releaseWrite(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    this.writeLock?.release()
    this.writeLock = undefined
    this.caughtUnderLock = false
  }

  private armIdleRelease(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer)
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined
      if (!this.running) this.releaseWrite()
    }, IDLE_RELEASE_MS)
    this.idleTimer.unref()
  }

  private async writeBatch(batch: Pending[]): Promise<void> {
    try {
      if (!this.caughtUnderLock) {
        const log = this.file.readLog()
        if (!log) throw new KestrelError('KESTREL_CORRUPT', `${join(this.dir, SHARED_FILE)} lost its log tail; close every process and open again`)
        if (log.abandoned) this.discardPastTail(log.tail)
        const before = Number(this.inner.lastCommitId())
        this.applyForeign(log.tail, !log.abandoned)
        if (log.abandoned || Number(this.inner.lastCommitId()) > Math.max(before, log.tail.lsn)) {
          // Adopted a dead writer's frames (now durable), or cleared an abandoned batch.
          this.file.writeLog({ tail: this.inner.logTail(), abandoned: false })
        }
        this.caughtUnderLock = true
        // Another participant may have joined while we held the lock alone.
        if (this.othersLive === 0) this.othersLive = this.countOthers()
      } else if (this.othersLive === 0) {
        this.othersLive = this.countOthers()
      }
    } catch (err) {
      for (const p of batch) p.reject(err)
      this.releaseWrite()
      return
    }
    const go: Pending[] = []
    for (const p of batch) {
      if (p.check && p.foreignAt !== this.foreignBatches) {
        let refused: unknown
        try {
          refused = p.check()
        } catch (err) {
          refused = err
        }
        if (refused) {
          p.reject(refused)
          continue
        }
      }
      go.push(p)
    }
    if (go.length === 0) return
    batchesWritten++
    if (KILL_AT) killPoint('locked')
    this.inFlight = true
    const results = await Promise.allSettled(go.map((p) => this.inner.commit(p.payload)))
    this.inFlight = false
    if (KILL_AT) killPoint('synced')
    const failed = results.some((r) => r.status === 'rejected')
    try {
      // Durable before visible to others: the tail moves only past what the engine acknowledged.
      this.file.writeLog({ tail: this.inner.logTail(), abandoned: failed })
    } catch (err) {
      this.fault(err)
    }
    if (failed) this.caughtUnderLock = false
    for (let i = 0; i < go.length; i++) {
      const r = results[i]!
      if (r.status === 'fulfilled') go[i]!.resolve(r.value)
      else go[i]!.reject(r.reason)
    }
  }

  /**
   * A batch past `tail` failed (its write or fdatasync): zero it so that no one adopts it, and
   * so that a later, shorter batch is not followed by its frames.
   */
  private discardPastTail(tail: LogTail): void {
    const path = join(this.dir, LOG_DIR, tail.segment)
    const fd = openSync(path, 'r+')
    try {
      const size = fstatSync(fd).size
      const end = Math.min(size, tail.offset + ZERO_BYTES_MAX)
      const zeros = Buffer.alloc(1 << 20)
      for (let at = tail.offset; at < end; at += zeros.length) writeSync(fd, zeros, 0, Math.min(zeros.length, end - at), at)
      fdatasyncSync(fd)
    } finally {
      closeSync(fd)
    }
  }

  // ---- checkpoints -------------------------------------------------------------------------

  private maybeCheckpoint(): void {
    if (this.checkpointing || this.suspends > 0) return
    const s = this.inner.stats()
    const o = this.options
    const dirty = s.flow.dirtyBytes
    if (dirty === 0) return
    const bySize = dirty >= o.checkpointBytes
    const byMemory = s.recordBytes > o.cacheBytes && dirty >= Math.max(1, o.checkpointBytes / 8)
    const byAge = o.checkpointIntervalMs > 0 && Date.now() - this.lastCheckpointMs >= o.checkpointIntervalMs
    if (bySize || byMemory || byAge) void this.runCheckpoint(false).catch((err) => this.fault(err))
  }

  /** One checkpoint under `ckpt` (skipped when another participant is writing one, unless `wait`). */
  private runCheckpoint(wait: boolean): Promise<void> {
    if (this.checkpointing) return this.checkpointing
    const run = async (): Promise<void> => {
      const lock = wait
        ? await waitLock(this.names.ckpt, CKPT_WAIT_MS, () => `another process kept checkpointing ${this.dir} for ${CKPT_WAIT_MS / 1000} s`)
        : tryLock(this.names.ckpt)
      if (!lock) return
      try {
        await this.checkpointHolding({})
      } finally {
        lock.release()
      }
    }
    const p = run().finally(() => {
      this.checkpointing = undefined
    })
    this.checkpointing = p
    return p
  }

  /** Under `ckpt`: catch up, adopt the newest checkpoint, write one on top of it, publish it. */
  private async checkpointHolding(extra: CoreCheckpointOptions): Promise<void> {
    this.lastCheckpointMs = Date.now()
    this.refreshNow()
    this.inner.adoptCheckpoint()
    const ref = this.inner.checkpointRef()
    const published = this.file.readCkpt()
    const others = this.liveOthers()
    this.othersLive = others.length
    // A page freed before the newest checkpoint may still be reachable from an older one a
    // participant reads: reuse only when everyone reads the newest.
    const reuseFreePages = (published?.seq ?? ref.seq) === ref.seq && others.every((s) => s.pinnedSeq >= ref.seq)
    let trimBelowLsn = this.needLsn
    for (const s of others) trimBelowLsn = Math.min(trimBelowLsn, s.needLsn, s.appliedLsn + 1)
    // An opener not in the slots yet may be about to replay from an older checkpoint: trim only
    // while no one is opening (the `init` lock), else leave the log for a later checkpoint.
    const init = tryLock(this.names.init)
    try {
      await this.inner.checkpoint({ reuseFreePages, trimBelowLsn: init ? trimBelowLsn : 0, ...extra })
    } finally {
      init?.release()
    }
    this.file.writeCkpt(this.inner.checkpointRef())
    this.writeSlot()
  }

  checkpoint(): Promise<void> {
    return this.runCheckpoint(true)
  }

  checkpointRef(): CheckpointRef {
    return this.inner.checkpointRef()
  }

  adoptCheckpoint(): boolean {
    return this.inner.adoptCheckpoint()
  }

  async suspendFlusher(): Promise<void> {
    // A backup copies this participant's checkpoint and the log after it: no one checkpoints or
    // trims meanwhile.
    if (this.suspends++ === 0) {
      try {
        if (this.checkpointing) await this.checkpointing.catch(() => {})
        this.suspendLock = await waitLock(this.names.ckpt, CKPT_WAIT_MS, () => `another process kept checkpointing ${this.dir} for ${CKPT_WAIT_MS / 1000} s`)
        this.refreshNow()
        this.inner.adoptCheckpoint()
        this.needLsn = this.inner.checkpointRef().lsn + 1
        this.writeSlot()
      } catch (err) {
        this.suspends--
        throw err
      }
    }
    await this.inner.suspendFlusher()
  }

  resumeFlusher(): void {
    this.inner.resumeFlusher()
    if (--this.suspends === 0) {
      this.needLsn = Number.MAX_SAFE_INTEGER
      this.writeSlot()
      this.suspendLock?.release()
      this.suspendLock = undefined
    }
  }

  backupPlan(): BackupPlan {
    return this.inner.backupPlan()
  }

  // ---- reads and the rest, forwarded -------------------------------------------------------

  /**
   * Every snapshot starts here (transactions, views, one-shot reads): caught up to the published
   * tail first — one read of the log block, unless this participant holds the write lock — so a
   * transaction begun after another process's commit resolved sees it. (Once per event-loop turn
   * would not do: a message from that process can arrive in the same turn as an earlier refresh.)
   */
  lastCommitId(): bigint {
    if (!this.closed) {
      try {
        this.refreshNow()
      } catch (err) {
        this.fault(err)
      }
    }
    return this.inner.lastCommitId()
  }

  get(collection: string, key: Uint8Array, snapshot: number): Uint8Array | undefined {
    return this.inner.get(collection, key, snapshot)
  }

  scan(collection: string, options: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    return this.inner.scan(collection, options, snapshot)
  }

  find(collection: string, index: string, options: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    return this.inner.find(collection, index, options, snapshot)
  }

  setAgeGroup(group: number): void {
    this.inner.setAgeGroup(group)
  }

  scavenge(options: CoreScavengeOptions): CoreScavengeStep {
    return this.inner.scavenge(options)
  }

  setHorizon(horizon: number, sweep: boolean, pinned?: readonly number[]): void {
    this.inner.setHorizon(horizon, sweep, pinned)
  }

  horizon(): number {
    return this.inner.horizon()
  }

  stats(): CoreStats {
    return this.inner.stats()
  }

  logTail(): LogTail {
    return this.inner.logTail()
  }

  catchUp(tail: LogTail, adopt: boolean): Uint8Array[] {
    return this.inner.catchUp(tail, adopt)
  }

  setPageFault(fault: PageFault): void {
    this.inner.setPageFault(fault)
  }

  holdSyncs(hold: boolean): void {
    this.inner.holdSyncs(hold)
  }

  private stopTimers(): void {
    this.closed = true
    if (this.tailTimer) clearTimeout(this.tailTimer)
    if (this.houseTimer) clearInterval(this.houseTimer)
    if (this.idleTimer) clearTimeout(this.idleTimer)
  }

  async close(): Promise<void> {
    if (this.closed) return
    // Commits already queued are written first (the handle waited for its submitted ones).
    while (this.running) await new Promise<void>((r) => setImmediate(r))
    this.stopTimers()
    this.releaseWrite()
    try {
      if (this.checkpointing) await this.checkpointing.catch(() => {})
      // The last participant out leaves a checkpoint, so that the next open replays little.
      if (this.countOthers() === 0) {
        const lock = tryLock(this.names.ckpt)
        if (lock) {
          try {
            await this.checkpointHolding({})
          } catch {
            // Best effort: the log holds everything.
          } finally {
            lock.release()
          }
        }
      }
      await this.inner.close()
    } finally {
      this.file.writeSlot(this.slotIndex, undefined)
      this.slotLock.release()
      this.suspendLock?.release()
      this.file.close()
    }
  }

  async crash(tearBytes?: number): Promise<void> {
    this.stopTimers()
    for (const p of this.pending.splice(0)) p.reject(new KestrelError('KESTREL_CLOSED', 'the database crashed (simulated) before this commit was acknowledged'))
    try {
      await this.inner.crash(tearBytes)
    } finally {
      // A crashed process's locks die with it; its slot stays until an opener reclaims it.
      this.writeLock?.release()
      this.writeLock = undefined
      this.slotLock.release()
      this.suspendLock?.release()
      this.file.close()
    }
  }
}

/**
 * Participants live in `dir` now (0 when it has no SHARED file). The caller should hold the
 * `init` lock, or the answer may change at once.
 */
export function liveParticipants(dir: string): number {
  if (!existsSync(join(dir, SHARED_FILE))) return 0
  const names = lockNames(dir)
  const file = new SharedFile(dir)
  try {
    let live = 0
    const slots = file.readSlots()
    for (let i = 0; i < SLOTS_MAX; i++) {
      if (!slots[i]) continue
      const probe = tryLock(names.slot(i))
      if (probe) probe.release()
      else live++
    }
    return live
  } finally {
    file.close()
  }
}
