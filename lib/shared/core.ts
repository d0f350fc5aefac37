/**
 * One participant of a shared directory (docs/ARCHITECTURE.md "Many processes"): wraps this
 * process's engine (native or ts, opened with `sharing`) and speaks the protocol above the seam,
 * so both engines share one implementation of it.
 *
 * Commit: commits submitted in one turn form a batch; under the `write` lock the participant
 * catches up on what others published (adopting whole frames a dead writer left), re-checks the
 * batch against those foreign writes, hands it to the engine (which assigns the next LSNs,
 * writes and fdatasyncs, and whose log writer publishes the new tail in SHARED), and only then
 * acknowledges.
 * Reads: every `lastCommitId` glances at the published tail (a memory-mapped read) and catches
 * up when it moved; a tailer applies foreign commits as they are published. Checkpoints: by one participant at a time under `ckpt`,
 * on top of the newest one; free pages are reused only when every live participant reads the
 * newest checkpoint; log is trimmed only below what every live participant still needs.
 */
import { closeSync, existsSync, fdatasyncSync, fstatSync, openSync, readFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { KestrelError } from '../errors.js'
import { LOCK_FILE } from '../lock.js'
import { LOG_DIR } from '../format/log.js'
import { PAGE_FILE, readMeta } from '../format/page_layout.js'
import { type QueuedCommit, WrappedCore, stillValid } from '../core/wrapped.js'
import type { CommitCheck, Core, CoreOpenOptions, EngineName, LogTail } from '../core/types.js'
import { SHARED_FILE, SLOTS_MAX, SharedFile, type Slot } from './file.js'
import { type LockNames, type NamedLock, afterHandOver, lockNames, netnsId, tryLock, waitLock } from './locks.js'

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
/** After handing the write lock to waiting participants, let one of them take it for this long. */
const HAND_OVER_MS = 1
/** Keep the write lock this long after the last batch while no one waits for it. */
const IDLE_RELEASE_MS = 2
/**
 * Test-only (multi-process crash tests): `locked:<n>` SIGKILLs this process at the n-th `locked`
 * point (write lock held, caught up, nothing of the batch — or, holding the lock between
 * batches, of the commit — written). The `synced` point (written and durable, tail not yet
 * published) is the engines' log writers' (`log/publish`).
 */
const KILL_AT = parseKillAt(process.env.KESTREL_TEST_KILL_AT)
function parseKillAt(v: string | undefined): number | undefined {
  const m = v?.match(/^locked:(\d+)$/)
  return m ? Number(m[1]) : undefined
}
let killCount = 0
function killPoint(): void {
  if (++killCount === KILL_AT) process.kill(process.pid, 'SIGKILL')
}

/** Most commits in one batch (the engine splits by bytes itself). */
const BATCH_COMMITS_MAX = 4096
/** The largest torn tail zeroed after an abandoned batch. */
const ZERO_BYTES_MAX = 64 << 20

type Pending = QueuedCommit

const ENGINE_IDS: Record<EngineName, number> = { native: 1, ts: 2 }

export class SharedCore extends WrappedCore {
  /** Foreign commits applied, for the coordinator's conflict memory (first LSN, payloads). */
  onForeign: ((firstLsn: number, payloads: Uint8Array[]) => void) | undefined

  private readonly pending: Pending[] = []
  private running = false
  /** Own commits handed to the engine and not settled (catch-up must wait for 0). */
  private inFlight = 0
  private writeLock: NamedLock | undefined
  /** The write lock was held continuously since this participant last published the tail. */
  private caughtUnderLock = false
  private foreignBatches = 0
  private othersLive = 0
  private closed = false
  private tailTimer: NodeJS.Timeout | undefined
  private houseTimer: NodeJS.Timeout | undefined
  private idleTimer: NodeJS.Timeout | undefined
  /** When the write lock last fell idle (no own commit in flight). */
  private idleSinceMs = 0
  /** The write lock was let go because others waited for it: do not take it straight back. */
  private handedOver = false
  private checkpointing: Promise<void> | undefined
  private suspends = 0
  private suspendLock: NamedLock | undefined
  private lastCheckpointMs = Date.now()
  /** Why the last background checkpoint failed (it is retried; explicit ones report their own). */
  checkpointError: unknown
  private needLsn = Number.MAX_SAFE_INTEGER

  private constructor(
    inner: Core,
    private readonly file: SharedFile,
    private readonly names: LockNames,
    private readonly slotIndex: number,
    private readonly slotLock: NamedLock,
    private readonly slot: Slot,
    private readonly options: CoreOpenOptions,
  ) {
    super(inner)
  }

  /** Open `dir` as a participant: `openEngine` opens this process's engine with the given options. */
  static async open(dir: string, engine: EngineName, options: CoreOpenOptions, openEngine: (o: CoreOpenOptions) => Promise<Core>): Promise<SharedCore> {
    const names = lockNames(dir)
    const init = await waitLock(
      names.init,
      INIT_WAIT_MS,
      () => `${dir} stayed locked for ${INIT_WAIT_MS / 1000} s while another process opened or checked it; try again`,
      () => soleOwner(dir),
    )
    try {
      const netns = netnsId()
      let file = existsSync(join(dir, SHARED_FILE)) ? new SharedFile(dir) : undefined
      let live = 0
      const free: number[] = []
      try {
        const states = file ? slotStates(file, names, netns) : []
        const written = new Set(states.map((st) => st.i))
        for (let i = 0; i < SLOTS_MAX; i++) if (!written.has(i)) free.push(i)
        for (const { i, slot: s, live: alive } of states) {
          if (!alive) {
            // Its owner is gone: the slot no longer counts.
            file!.writeSlot(i, undefined)
            free.push(i)
          } else if (s.netns !== netns) {
            throw new KestrelError(
              'KESTREL_LOCKED',
              `${dir} is open in process ${s.pid} of another network namespace (another container?): processes share a directory only within one network namespace, because the locks that guard it are abstract sockets; open it from one namespace`,
            )
          } else {
            live++
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
        let write: NamedLock | undefined
        let ckpt: NamedLock | undefined
        try {
          // No checkpoint is written while this opener compares the newest one with the tail and
          // its engine reads it: one in flight could cover commits not published yet.
          if (live > 0)
            ckpt = await waitLock(
              names.ckpt,
              CKPT_WAIT_MS,
              () => `another process kept checkpointing ${dir} for ${CKPT_WAIT_MS / 1000} s while it was opened; try again`,
            )
          let tail = live > 0 ? log?.tail : undefined
          if (tail && file && newestCheckpointLsn(dir) > tail.lsn) {
            // A writer's commits were checkpointed before it published them: it is about to, or
            // it died first. Under the write lock the tail moves no more: if it is still behind,
            // that writer is gone and a full recovery takes its whole frames, as crash recovery
            // would (after zeroing a batch it marked abandoned).
            write = await waitLock(
              names.write,
              WRITE_WAIT_MS,
              () => `another process has held the write lock of ${dir} for ${WRITE_WAIT_MS / 1000} s; try again`,
            )
            const now = file.readLog()
            if (!now) throw new KestrelError('KESTREL_CORRUPT', `${join(dir, SHARED_FILE)} lost its log tail; close every process and open again`)
            if (now.abandoned) discardPastTail(dir, now.tail)
            tail = newestCheckpointLsn(dir) > now.tail.lsn || now.abandoned ? undefined : now.tail
          }
          inner = await openEngine({ ...options, sharing: tail ? { tail, publish: true } : { publish: true } })
          if (write && file) file.writeLog({ tail: inner.logTail(), abandoned: false })
        } catch (err) {
          if (claimed) {
            file?.writeSlot(claimed.i, undefined)
            claimed.lock.release()
          }
          throw err
        } finally {
          write?.release()
          ckpt?.release()
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
    if (this.inFlight > 0) throw new Error('catch-up while own commits are in flight')
    const before = Number(this.inner.lastCommitId())
    if (!adopt && tail.lsn <= before) return
    const payloads = this.inner.catchUp(tail, adopt)
    if (payloads.length === 0) return
    this.foreignBatches++
    this.onForeign?.(before + 1, payloads)
  }

  /** Catch up to the published tail now, if no own commit is being written (then we are current). */
  private refreshNow(): void {
    if (this.inFlight > 0 || this.caughtUnderLock) return
    if (this.file.glanceLogLsn() <= Number(this.inner.lastCommitId())) return
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
    if (this.othersLive > 0 && this.writeLock && !this.running && this.inFlight === 0) this.releaseWrite()
    this.maybeCheckpoint()
  }

  /** Live participants other than this one (a slot whose lock can be taken is dead). */
  private countOthers(): number {
    return this.liveOthers().length
  }

  private liveOthers(): Slot[] {
    return slotStates(this.file, this.names, this.slot.netns, this.slotIndex)
      .filter((st) => st.live)
      .map((st) => st.slot)
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
    // Holding the write lock alone and caught up: nothing can arrive from elsewhere, so the
    // commit goes straight to the engine, which groups and pipelines batches as in one process.
    if (this.writeLock && !this.writeLock.contended && this.caughtUnderLock && !this.running && this.faultError === undefined) {
      if (KILL_AT) killPoint()
      return this.submit(payload)
    }
    return new Promise<bigint>((resolve, reject) => {
      this.pending.push({ payload, check, foreignAt: this.foreignBatches, resolve, reject })
      if (!this.running) {
        this.running = true
        setImmediate(() => void this.run())
      }
    })
  }

  /**
   * Hand one commit to the engine (under the write lock, caught up). The engine's log writer
   * publishes each batch's tail in the log block once it is durable, before it acknowledges it
   * (`sharing.publish`): a commit resolves only once others can see it.
   */
  private submit(payload: Uint8Array): Promise<bigint> {
    this.inFlight++
    return this.inner.commit(payload).then(
      (lsn) => {
        this.inFlight--
        this.settledOne()
        return lsn
      },
      (err: unknown) => {
        this.inFlight--
        // Bytes past the durable tail belong to a failed batch: no one may adopt them.
        this.publishAbandoned()
        this.caughtUnderLock = false
        this.settledOne()
        throw err
      },
    )
  }

  private settledWaiters: Array<() => void> = []

  /** Resolves once no own commit is in the engine. */
  private settled(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve()
    return new Promise<void>((r) => this.settledWaiters.push(r))
  }

  /** The engine stopped at a failed batch: publish its durable tail, marking what lies past it. */
  private publishAbandoned(): void {
    try {
      this.file.writeLog({ tail: this.inner.logTail(), abandoned: true })
    } catch (err) {
      this.fault(err)
    }
  }

  /** The last own commit settled: let go of the lock if others wait, else soon. */
  private settledOne(): void {
    if (this.inFlight > 0) return
    for (const w of this.settledWaiters.splice(0)) w()
    if (this.running || !this.writeLock) return
    if (this.writeLock.contended) this.handOver()
    else if (this.closed) this.releaseWrite()
    else this.armIdleRelease()
  }

  private async run(): Promise<void> {
    // Commits submitted straight to the engine settle first (the lock changes hands only then).
    // Bounded: each wait is for one engine batch.
    while (this.inFlight > 0) await this.settled()
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
        // Hands the lock over at its end if anyone waits for it, so no one waits more than a batch.
        await this.writeBatch(this.pending.splice(0, BATCH_COMMITS_MAX))
        if (this.closed) this.releaseWrite()
      }
    } finally {
      this.running = false
      if (this.writeLock && !this.closed && this.inFlight === 0) this.armIdleRelease()
    }
  }

  private async acquireWrite(): Promise<void> {
    if (this.writeLock) return
    if (this.handedOver) {
      this.handedOver = false
      await afterHandOver(this.names.write, HAND_OVER_MS)
    }
    this.writeLock = await waitLock(
      this.names.write,
      WRITE_WAIT_MS,
      () =>
        `another process has held the write lock of ${this.dir} for ${WRITE_WAIT_MS / 1000} s (stopped or stuck?); these commits were not written: retry them`,
    )
    this.caughtUnderLock = false
    // Held by the engine too, until this thread's commits are written even if it ends first.
    if (this.writeLock.fd >= 0) this.inner.keepWriteLock(this.writeLock.fd)
    // A participant that starts waiting while the lock sits idle here gets it at once.
    this.writeLock.onContended = () => {
      if (!this.running && this.inFlight === 0) this.handOver()
    }
  }

  /**
   * Take the write lock between batches of this participant and catch up under it: a writer
   * that has not published its last batch yet does so first, or, if it died, its frames are
   * adopted.
   */
  private async catchUpUnderWriteLock(): Promise<void> {
    // Bounded: the committer ends once its queue is empty.
    while (this.running) await new Promise<void>((r) => setImmediate(r))
    this.running = true
    try {
      await this.settled()
      await this.acquireWrite()
      if (!this.caughtUnderLock) this.catchUpUnderLock()
    } finally {
      this.running = false
      if (this.othersLive > 0) this.releaseWrite()
      else this.armIdleRelease()
      if (this.pending.length > 0) {
        this.running = true
        setImmediate(() => void this.run())
      }
    }
  }

  /** Let go of the write lock for those waiting, and give one of them time to take it. */
  private handOver(): void {
    this.releaseWrite()
    this.handedOver = true
  }

  private releaseWrite(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    if (this.writeLock) this.inner.letGoWriteLock()
    this.writeLock?.release()
    this.writeLock = undefined
    this.caughtUnderLock = false
  }

  /** Let go of the write lock once idle for IDLE_RELEASE_MS (one timer, not one per commit). */
  private armIdleRelease(): void {
    this.idleSinceMs = performance.now()
    if (this.idleTimer) return
    const check = (): void => {
      this.idleTimer = undefined
      if (this.running || this.inFlight > 0 || !this.writeLock) return
      const idleMs = performance.now() - this.idleSinceMs
      if (idleMs >= IDLE_RELEASE_MS) this.releaseWrite()
      else {
        this.idleTimer = setTimeout(check, IDLE_RELEASE_MS - idleMs)
        this.idleTimer.unref()
      }
    }
    this.idleTimer = setTimeout(check, IDLE_RELEASE_MS)
    this.idleTimer.unref()
  }

  private async writeBatch(batch: Pending[]): Promise<void> {
    try {
      if (!this.caughtUnderLock) this.catchUpUnderLock()
    } catch (err) {
      for (const p of batch) p.reject(err)
      this.releaseWrite()
      return
    }
    const go = stillValid(batch, this.foreignBatches)
    if (go.length === 0) return
    if (KILL_AT) killPoint()
    // One batch, one fdatasync: others wait for this lock.
    this.inner.holdWriter(true)
    let submitted: Array<Promise<bigint>>
    try {
      submitted = go.map((p) => this.submit(p.payload))
    } finally {
      this.inner.holdWriter(false)
    }
    const results = await Promise.allSettled(submitted)
    // Written, durable and published: others waiting go next while our callers (acknowledged
    // below) prepare their next commits.
    if (this.writeLock?.contended && !this.closed) this.handOver()
    for (let i = 0; i < go.length; i++) {
      const r = results[i]!
      if (r.status === 'fulfilled') go[i]!.resolve(r.value)
      else go[i]!.reject(r.reason)
    }
  }

  /**
   * Under `write`, newly taken: catch up to the published tail, adopting what a dead writer left
   * past it (or zeroing a batch whose writer marked it abandoned), and publish where the log ends.
   */
  private catchUpUnderLock(): void {
    const log = this.file.readLog()
    if (!log) throw new KestrelError('KESTREL_CORRUPT', `${join(this.dir, SHARED_FILE)} lost its log tail; close every process and open again`)
    if (log.abandoned) discardPastTail(this.dir, log.tail)
    const before = Number(this.inner.lastCommitId())
    this.applyForeign(log.tail, !log.abandoned)
    if (log.abandoned || Number(this.inner.lastCommitId()) > Math.max(before, log.tail.lsn)) {
      // Adopted a dead writer's frames (now durable), or cleared an abandoned batch.
      this.file.writeLog({ tail: this.inner.logTail(), abandoned: false })
    }
    this.caughtUnderLock = true
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
    if (bySize || byMemory || byAge) {
      // A failed or postponed checkpoint is tried again later: the log keeps everything meanwhile.
      void this.runCheckpoint(false).catch((err: unknown) => {
        this.checkpointError = err
      })
    }
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
        try {
          await this.checkpointHolding()
        } catch (err) {
          if (!(wait && err instanceof KestrelError && err.code === 'KESTREL_BEHIND')) throw err
          // The newest checkpoint covers commits not published yet: the write lock makes their
          // writer publish them (or, if it died, lets us adopt them).
          await this.catchUpUnderWriteLock()
          await this.checkpointHolding()
        }
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
  private async checkpointHolding(): Promise<void> {
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
      await this.inner.checkpoint({ reuseFreePages, trimBelowLsn: init ? trimBelowLsn : 0 })
    } finally {
      init?.release()
    }
    this.file.writeCkpt(this.inner.checkpointRef())
    this.writeSlot()
  }

  override checkpoint(): Promise<void> {
    return this.runCheckpoint(true)
  }

  override async suspendFlusher(): Promise<void> {
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

  override resumeFlusher(): void {
    this.inner.resumeFlusher()
    if (--this.suspends === 0) {
      this.needLsn = Number.MAX_SAFE_INTEGER
      this.writeSlot()
      this.suspendLock?.release()
      this.suspendLock = undefined
    }
  }

  // ---- freshness (reads and the rest are forwarded by WrappedCore) ----------------------------

  /**
   * Every snapshot starts here (transactions, views, one-shot reads): caught up to the published
   * tail first — one read of the log block, unless this participant holds the write lock — so a
   * transaction begun after another process's commit resolved sees it. (Once per event-loop turn
   * would not do: a message from that process can arrive in the same turn as an earlier refresh.)
   */
  override lastCommitId(): bigint {
    if (!this.closed) {
      try {
        this.refreshNow()
      } catch (err) {
        this.fault(err)
      }
    }
    return this.inner.lastCommitId()
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
    // Bounded: the committer ends once the queue is empty, and nothing new is queued.
    while (this.running) await new Promise<void>((r) => setImmediate(r))
    await this.settled()
    this.stopTimers()
    let init: NamedLock | undefined
    try {
      if (this.checkpointing) await this.checkpointing.catch(() => {})
      // The last one out (no opener in progress, no other live slot) becomes the directory's
      // only user: its engine seals the log and writes the final checkpoint, as a sole owner does.
      init = tryLock(this.names.init)
      if (init && this.countOthers() === 0) {
        this.writeLock ??= tryLock(this.names.write)
        if (this.writeLock) {
          try {
            if (!this.caughtUnderLock) this.catchUpUnderLock()
            this.inner.leaveSharing()
          } catch {
            // Stay a participant: the next opener's recovery deals with the log's end.
          }
        }
      }
      await this.inner.close()
    } finally {
      this.file.writeSlot(this.slotIndex, undefined)
      this.slotLock.release()
      this.releaseWrite()
      this.suspendLock?.release()
      init?.release()
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
 * The participants live in `dir` now, as their slots name them (none when it has no SHARED
 * file). The caller should hold the base lock, or the answer may change at once.
 */
export function liveParticipants(dir: string): Slot[] {
  if (!existsSync(join(dir, SHARED_FILE))) return []
  const file = new SharedFile(dir)
  try {
    return slotStates(file, lockNames(dir), netnsId())
      .filter((st) => st.live)
      .map((st) => st.slot)
  } finally {
    file.close()
  }
}

/**
 * Each written slot of `file`, and whether its owner lives: in this network namespace, its slot
 * lock is held (the kernel let go of it when the owner died, whatever became of its pid); in
 * another one, where that lock cannot be seen, its heartbeat is fresh. Slot `skip` (the caller's
 * own) is left out.
 */
function slotStates(file: SharedFile, names: LockNames, netns: number, skip = -1): Array<{ i: number; slot: Slot; live: boolean }> {
  const out: Array<{ i: number; slot: Slot; live: boolean }> = []
  const slots = file.readSlots()
  for (let i = 0; i < SLOTS_MAX; i++) {
    const slot = slots[i]
    if (!slot || i === skip) continue
    let live: boolean
    if (slot.netns !== netns) live = Date.now() - slot.heartbeatMs < FOREIGN_NS_STALE_MS
    else {
      const probe = tryLock(names.slot(i))
      probe?.release()
      live = probe === undefined
    }
    out.push({ i, slot, live })
  }
  return out
}

/**
 * The base lock held for good by an engine that does not share (a kestreldb from before
 * sharing, or one on the one-owner path), as its `LOCK` line names it; undefined otherwise.
 */
function soleOwner(dir: string): string | undefined {
  let text: string
  try {
    text = readFileSync(join(dir, LOCK_FILE), 'utf8')
  } catch {
    return undefined
  }
  const pid = Number(/pid=(\d+)/.exec(text)?.[1])
  const engine = /engine=(\w+)/.exec(text)?.[1]
  if (!Number.isSafeInteger(pid) || pid === process.pid || (engine !== 'native' && engine !== 'ts')) return undefined
  try {
    process.kill(pid, 0)
  } catch {
    return undefined
  }
  return `${dir} is open in process ${pid} (engine ${engine}) by a kestreldb that does not share directories (an older version); close it, or upgrade it, to open the directory here`
}

/**
 * A batch past `tail` failed (its write or fdatasync): zero it, so that no one adopts it and a
 * later, shorter batch is not followed by its frames. Only under the write lock.
 */
function discardPastTail(dir: string, tail: LogTail): void {
  const fd = openSync(join(dir, LOG_DIR, tail.segment), 'r+')
  try {
    const end = Math.min(fstatSync(fd).size, tail.offset + ZERO_BYTES_MAX)
    const zeros = Buffer.alloc(1 << 20)
    for (let at = tail.offset; at < end; at += zeros.length) writeSync(fd, zeros, 0, Math.min(zeros.length, end - at), at)
    fdatasyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** LSN of the newest checkpoint in `pages.kdb` (0: none). */
function newestCheckpointLsn(dir: string): number {
  let fd: number
  try {
    fd = openSync(join(dir, PAGE_FILE), 'r')
  } catch {
    return 0
  }
  try {
    return readMeta(fd, join(dir, PAGE_FILE))?.checkpointLsn ?? 0
  } finally {
    closeSync(fd)
  }
}
