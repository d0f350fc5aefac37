/**
 * The native engine: the Rust core through the napi-rs binding (found by ./loader.ts). This file
 * only adapts the binding to {@link Core}; no engine logic lives here.
 */
import { KestrelError, toKestrelError } from '../errors.js'
import { loadNative as loadBinding } from './loader.js'
export { nativeAvailable, platformTriple } from './loader.js'
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
} from './types.js'

/**
 * The binding's types: `napi build` writes them from the Rust source to ./binding.d.ts (committed;
 * a build that changes them shows up in the diff), so a mismatch fails to compile.
 */
type NativeBinding = typeof import('./binding.js')
type NativeEngineHandle = import('./binding.js').NativeEngine

/** Poll interval while waiting for the native flusher (checkpoint, suspension). */
const FLUSHER_POLL_MS = 2
/** The binding of this process (found by ./loader.ts), loaded once. */
function binding(): NativeBinding {
  return loadBinding().binding as NativeBinding
}

/** Load the binding now, or throw `KESTREL_NATIVE_UNAVAILABLE` saying why. */
export function loadNative(): void {
  binding()
}

/**
 * A read-only view of the first `bytes` of the file at `path`, mapped shared, so that reading it
 * costs no system call (`crates/kestrel-node/src/mapped.rs`); undefined where the binding or the
 * mapping is unavailable (the caller reads the file instead). The file must never shrink below
 * `bytes` while the view lives.
 */
export function mapFileHead(path: string, bytes: number): Buffer | undefined {
  try {
    return binding().mapShared(path, bytes)
  } catch {
    return undefined
  }
}

interface Pending {
  lsn: number
  resolve: (lsn: bigint) => void
  reject: (err: KestrelError) => void
}

/** Size of the shared read buffer; larger values and scans fall back to allocating calls. */
const READ_BUFFER_BYTES = 1 << 20
/**
 * Scan and lookup results of at most `ROW_SLAB_BYTES / 8` bytes are copied out of the read
 * buffer into a slab shared by many results (a new `ArrayBuffer` per result costs more than the
 * lookup itself), as Node's own pool does for small Buffers; a slab is never written again once
 * handed out, so rows stay valid as long as they are referenced.
 */
const ROW_SLAB_BYTES = 16 * 1024

const CLOSED = (): KestrelError => new KestrelError('KESTREL_CLOSED', 'the database is closed; open it again to use it')

/** `[k0, v0, k1, v1, …]` → `[[k0, v0], [k1, v1], …]`. */
function pairs(flat: Uint8Array[]): Array<[Uint8Array, Uint8Array]> {
  const out: Array<[Uint8Array, Uint8Array]> = new Array(flat.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = [flat[2 * i]!, flat[2 * i + 1]!]
  return out
}

function readU32(b: Uint8Array, pos: number): number {
  return (b[pos]! | (b[pos + 1]! << 8) | (b[pos + 2]! << 16)) + b[pos + 3]! * 0x1000000
}

/** Append one bound at `pos` as `[u32 LE length][bytes]`; the position after it. */
function putBound(b: Uint8Array, pos: number, bytes: Uint8Array): number {
  const n = bytes.length
  b[pos] = n & 0xff
  b[pos + 1] = (n >>> 8) & 0xff
  b[pos + 2] = (n >>> 16) & 0xff
  b[pos + 3] = n >>> 24
  b.set(bytes, pos + 4)
  return pos + 4 + n
}

/**
 * Write the bounds of `o` at the start of `b` for the binding's `scanIo`/`findIo`: a mask byte
 * (1 gte, 2 gt, 4 lte, 8 lt), then each bound it names, in that order. Bounds are keys (at most
 * 1 KiB each), so they always fit the read buffer.
 */
function putBounds(b: Uint8Array, o: CoreScanOptions): void {
  let mask = 0
  let pos = 1
  if (o.gte) {
    mask |= 1
    pos = putBound(b, pos, o.gte)
  }
  if (o.gt) {
    mask |= 2
    pos = putBound(b, pos, o.gt)
  }
  if (o.lte) {
    mask |= 4
    pos = putBound(b, pos, o.lte)
  }
  if (o.lt) {
    mask |= 8
    putBound(b, pos, o.lt)
  }
  b[0] = mask
}

export class NativeCore implements Core {
  readonly engine = 'native' as const
  /** Commits queued in the writer, in LSN order (the writer acknowledges in that order). */
  private readonly pending: Pending[] = []
  private head = 0
  private closed = false
  /**
   * The binding's callback is weak (it never holds the event loop open); while commits are
   * pending this timer does, so `await tx.commit()` in a script always gets its answer.
   */
  private keepAlive: NodeJS.Timeout | undefined
  /** Reads land here instead of in a fresh Buffer each (see Core.get's validity rule). */
  private readonly readBuffer = new Uint8Array(READ_BUFFER_BYTES)
  /** The slab small results are copied to, and how much of it is handed out. */
  private slab = new Uint8Array(ROW_SLAB_BYTES)
  private slabUsed = 0
  private readonly collectionIds = new Map<string, number>()
  /** Collection → index → the binding's id for it. */
  private readonly indexIds = new Map<string, Map<string, number>>()
  /**
   * The last commit id this side has been told is visible. It may trail the engine by one
   * callback, which only makes a new snapshot a little older — never newer than what is durable.
   */
  private visible = 0
  /**
   * Sharing: where this handle's view of the log ends (`visible` is its LSN). Other threads of
   * this process may share the engine (one per directory per process): what they commit or
   * catch up on becomes this handle's only through `catchUp`, so that its participant sees
   * every payload it did not write.
   */
  private noted: LogTail | undefined

  private constructor(
    private handle: NativeEngineHandle | undefined,
    readonly dir: string,
    /** Opened as one of several participants sharing the directory. */
    private sharing: boolean,
  ) {}

  static async open(dir: string, options: CoreOpenOptions): Promise<NativeCore> {
    const core = new NativeCore(undefined, dir, options.sharing !== undefined)
    try {
      core.handle = binding().NativeEngine.open(
        dir,
        {
          durability: options.durability,
          segmentBytes: options.segmentBytes,
          groupBytesMax: options.groupBytesMax,
          retainCommits: options.retainCommits,
          cacheBytes: options.cacheBytes,
          checkpointBytes: options.checkpointBytes,
          checkpointIntervalMs: options.checkpointIntervalMs,
          flushQueueBytes: options.flushQueueBytes,
          deferredBytesMax: options.deferredBytesMax,
          ...(options.faults ? { faults: { ...options.faults } } : {}),
          ...(options.sharing
            ? {
                sharing: {
                  ...(options.sharing.tail ? { tail: { ...options.sharing.tail } } : {}),
                  ...(options.sharing.apart ? { apart: true } : {}),
                  ...(options.sharing.publish ? { publish: true } : {}),
                },
              }
            : {}),
        },
        (lsn, code, message) => core.onDurable(lsn, code, message),
      )
    } catch (err) {
      throw toKestrelError(err, `opening ${dir}`)
    }
    if (core.sharing) {
      core.noted = core.handle.logTail()
      core.visible = core.noted.lsn
    } else {
      core.visible = core.handle.lastLsn()
    }
    return core
  }

  private live(): NativeEngineHandle {
    if (this.closed || !this.handle) throw CLOSED()
    return this.handle
  }

  /**
   * The writer's report: without `code`, every commit up to `lsn` is acknowledged and visible;
   * with `code`, the commits not yet acknowledged up to `lsn` (the failed batch) failed with it,
   * and every later one failed because the engine stopped acknowledging.
   */
  private onDurable(lsn: number, code: string | null, message: string | null): void {
    if (!code) {
      const first = this.head
      while (this.head < this.pending.length && this.pending[this.head]!.lsn <= lsn) {
        const p = this.pending[this.head++]!
        p.resolve(BigInt(p.lsn))
      }
      if (!this.sharing) {
        if (lsn > this.visible) this.visible = lsn
      } else if (this.head > first) {
        // Own commits (written under the write lock, after catching up): the log up to `lsn` is
        // ours. Batches of other threads sharing the engine are theirs to report. The position
        // is read once no own commit is left (the write lock is still held then).
        if (lsn > this.visible) this.visible = lsn
        if (this.head === this.pending.length && this.handle) this.noted = this.handle.logTail()
      }
    } else {
      const err = toKestrelError({ code, message: message ?? code }, 'writing the log')
      while (this.head < this.pending.length && this.pending[this.head]!.lsn <= lsn) this.pending[this.head++]!.reject(err)
      const stopped = new KestrelError(
        'KESTREL_IO',
        `an earlier log write failed (${err.code}); nothing more is acknowledged: reopen the database to recover the last durable state`,
      )
      while (this.head < this.pending.length) this.pending[this.head++]!.reject(stopped)
    }
    this.compact()
  }

  private compact(): void {
    if (this.head === this.pending.length) {
      this.pending.length = 0
      this.head = 0
      if (this.keepAlive) {
        clearInterval(this.keepAlive)
        this.keepAlive = undefined
      }
    } else if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending.splice(0, this.head)
      this.head = 0
    }
  }

  commit(payload: Uint8Array): Promise<bigint> {
    let lsn: number
    try {
      lsn = this.live().commit(payload)
    } catch (err) {
      return Promise.reject(toKestrelError(err, 'committing'))
    }
    if (!this.keepAlive) this.keepAlive = setInterval(() => {}, 1 << 30)
    return new Promise<bigint>((resolve, reject) => this.pending.push({ lsn, resolve, reject }))
  }

  private cid(handle: NativeEngineHandle, collection: string): number {
    let id = this.collectionIds.get(collection)
    if (id === undefined) {
      id = handle.collectionId(collection)
      this.collectionIds.set(collection, id)
    }
    return id
  }

  private iid(handle: NativeEngineHandle, collection: string, index: string): number {
    let ids = this.indexIds.get(collection)
    if (ids === undefined) {
      ids = new Map()
      this.indexIds.set(collection, ids)
    }
    let id = ids.get(index)
    if (id === undefined) {
      id = handle.indexId(this.cid(handle, collection), index)
      ids.set(index, id)
    }
    return id
  }

  get(collection: string, key: Uint8Array, snapshot: number): Uint8Array | undefined {
    const handle = this.live()
    try {
      const n = handle.getInto(this.cid(handle, collection), key, snapshot, this.readBuffer)
      if (n >= 0) return this.readBuffer.subarray(0, n)
      if (n === -1) return undefined
      return handle.get(collection, key, snapshot) ?? undefined
    } catch (err) {
      throw toKestrelError(err, 'reading')
    }
  }

  setHorizon(horizon: number, sweep: boolean, pinned: readonly number[] = []): void {
    // The binding only reads the list.
    this.live().setHorizon(horizon, sweep, pinned as number[])
  }

  horizon(): number {
    return this.live().horizon()
  }

  scan(collection: string, o: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    const handle = this.live()
    if (o.limit === 0) return [] // the binding reads limit 0 as "no limit"
    try {
      return this.scanWith(handle, collection, o, snapshot)
    } catch (err) {
      throw toKestrelError(err, 'scanning')
    }
  }

  private scanWith(handle: NativeEngineHandle, collection: string, o: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    putBounds(this.readBuffer, o)
    const count = handle.scanIo(this.cid(handle, collection), o.reverse ?? false, o.limit ?? 0, snapshot, this.readBuffer)
    if (count >= 0) return this.rowsFromBuffer(count)
    return pairs(handle.scan(collection, o.gte ?? null, o.gt ?? null, o.lte ?? null, o.lt ?? null, o.reverse ?? false, o.limit ?? 0, snapshot))
  }

  /** `count` rows that `scanIo`/`findIo` wrote to the read buffer, copied out at once. */
  private rowsFromBuffer(count: number): Array<[Uint8Array, Uint8Array]> {
    // One copy for the whole result: the rows must outlive the next read.
    let end = 0
    for (let i = 0; i < count * 2; i++) end += 4 + readU32(this.readBuffer, end)
    const bytes = this.copyOut(end)
    const rows: Array<[Uint8Array, Uint8Array]> = new Array(count)
    let pos = 0
    for (let i = 0; i < count; i++) {
      const kl = readU32(bytes, pos)
      const k = bytes.subarray(pos + 4, pos + 4 + kl)
      pos += 4 + kl
      const vl = readU32(bytes, pos)
      rows[i] = [k, bytes.subarray(pos + 4, pos + 4 + vl)]
      pos += 4 + vl
    }
    return rows
  }

  /** The first `end` bytes of the read buffer, copied to memory of their own (see ROW_SLAB_BYTES). */
  private copyOut(end: number): Uint8Array {
    if (end > ROW_SLAB_BYTES / 8) return this.readBuffer.slice(0, end)
    if (this.slabUsed + end > ROW_SLAB_BYTES) {
      this.slab = new Uint8Array(ROW_SLAB_BYTES)
      this.slabUsed = 0
    }
    const start = this.slabUsed
    this.slab.set(this.readBuffer.subarray(0, end), start)
    // Keep every result 8-byte aligned in the slab.
    this.slabUsed = (start + end + 7) & ~7
    return this.slab.subarray(start, start + end)
  }

  find(collection: string, index: string, o: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    const handle = this.live()
    if (o.limit === 0) return [] // the binding reads limit 0 as "no limit"
    try {
      putBounds(this.readBuffer, o)
      const count = handle.findIo(this.iid(handle, collection, index), o.reverse ?? false, o.limit ?? 0, snapshot, this.readBuffer)
      if (count >= 0) return this.rowsFromBuffer(count)
      return pairs(handle.find(collection, index, o.gte ?? null, o.gt ?? null, o.lte ?? null, o.lt ?? null, o.reverse ?? false, o.limit ?? 0, snapshot))
    } catch (err) {
      throw toKestrelError(err, 'finding')
    }
  }

  collections(): string[] {
    try {
      return this.live().collections()
    } catch (err) {
      throw toKestrelError(err, 'listing collections')
    }
  }

  setAgeGroup(group: number): void {
    try {
      this.live().setAgeGroup(group)
    } catch (err) {
      throw toKestrelError(err, 'setting the age group')
    }
  }

  scavenge(options: CoreScavengeOptions): CoreScavengeStep {
    try {
      const s = this.live().scavenge({ retireAgeMax: options.retireAgeMax, targetBytes: options.targetBytes, visitMax: options.visitMax })
      return {
        visited: s.visited,
        prunedVersions: s.prunedVersions,
        indexEntriesRemoved: s.indexEntriesRemoved,
        retired: s.retired,
        done: s.done,
        survey: s.survey,
      }
    } catch (err) {
      throw toKestrelError(err, 'scavenging')
    }
  }

  lastCommitId(): bigint {
    this.live()
    return BigInt(this.visible)
  }

  stats(): CoreStats {
    // The binding returns CoreStats' shape (see NativeStats in crates/kestrel-node).
    const handle = this.live()
    return { engine: 'native', ...handle.stats(), threads: handle.handles() }
  }

  async checkpoint(options?: CoreCheckpointOptions): Promise<void> {
    let ticket: number
    try {
      const handle = this.live()
      ticket =
        options === undefined
          ? handle.requestCheckpoint()
          : handle.requestCheckpointWith({
              ...(options.reuseFreePages !== undefined ? { reuseFreePages: options.reuseFreePages } : {}),
              ...(options.trimBelowLsn !== undefined ? { trimBelowLsn: options.trimBelowLsn } : {}),
            })
    } catch (err) {
      throw toKestrelError(err, 'checkpoint')
    }
    // Bounded by the flusher: it publishes, fails, or the engine stops.
    for (;;) {
      try {
        if (this.live().checkpointStatus(ticket)) return
      } catch (err) {
        throw toKestrelError(err, 'checkpoint')
      }
      await new Promise((r) => setTimeout(r, FLUSHER_POLL_MS))
    }
  }

  checkpointRef(): CheckpointRef {
    return this.live().checkpointRef()
  }

  holdWriter(hold: boolean): void {
    this.live().holdWriter(hold)
  }

  keepWriteLock(fd: number): void {
    try {
      this.live().keepWriteLock(fd)
    } catch (err) {
      throw toKestrelError(err, 'keeping the write lock')
    }
  }

  letGoWriteLock(): void {
    // Closed: the handle let go of it when it closed.
    if (this.handle && !this.closed) this.handle.letGoWriteLock()
  }

  leaveSharing(): void {
    this.live().leaveSharing()
    this.sharing = false
  }

  adoptCheckpoint(): boolean {
    try {
      return this.live().adoptCheckpoint()
    } catch (err) {
      throw toKestrelError(err, 'adopting a checkpoint')
    }
  }

  logTail(): LogTail {
    return this.live().logTail()
  }

  catchUp(tail: LogTail, adopt: boolean): Uint8Array[] {
    const handle = this.live()
    // This handle's own commits first (those of other threads sharing the engine may be written
    // meanwhile: what they add past `tail` is read at the next catch-up).
    if (this.head < this.pending.length) throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'catchUp while commits are in flight')
    let caught: { payloads: Uint8Array[]; end: LogTail }
    try {
      caught = handle.catchUpFrom(this.noted ?? handle.logTail(), { lsn: tail.lsn, segment: tail.segment, offset: tail.offset }, adopt)
    } catch (err) {
      throw toKestrelError(err, 'catching up with the log')
    }
    // Applied and visible now (no durability callback reports them).
    this.noted = caught.end
    if (caught.end.lsn > this.visible) this.visible = caught.end.lsn
    return caught.payloads
  }

  async suspendFlusher(): Promise<void> {
    let busy = this.live().suspendFlusher()
    // Bounded: no checkpoint starts while suspended, so this waits for at most one.
    while (busy) {
      await new Promise((r) => setTimeout(r, FLUSHER_POLL_MS))
      busy = this.live().flusherBusy()
    }
  }

  resumeFlusher(): void {
    try {
      this.live().resumeFlusher()
    } catch (err) {
      throw toKestrelError(err, 'resuming the flusher')
    }
  }

  backupPlan(): BackupPlan {
    let p: ReturnType<NativeEngineHandle['backupPlan']>
    try {
      p = this.live().backupPlan()
    } catch (err) {
      throw toKestrelError(err, 'planning a backup')
    }
    return {
      commitId: p.commitId,
      seq: p.seq,
      pages: p.pages,
      pageCount: p.pageCount,
      segments: p.segmentNames.map((name, i) => ({ name, bytes: p.segmentBytes[i]! })),
    }
  }

  setPageFault(fault: PageFault): void {
    this.live().setPageFault(fault)
  }

  async close(): Promise<void> {
    if (this.closed) return
    const handle = this.live()
    // Write the bulk of the final checkpoint without blocking the event loop; close() then only
    // writes what arrived since. A failure here is reported by close() itself. Sharing: no final
    // checkpoint (the caller asks for one under its checkpoint lock).
    if (!this.sharing) await this.checkpoint().catch(() => undefined)
    if (this.closed) return
    this.closed = true
    try {
      handle.close()
    } catch (err) {
      // Even when the final seal failed, the writer made everything up to its last LSN durable
      // and visible (as the durability mode defines it): those commits resolve.
      this.settleAfterStop(Number(handle.lastLsn()))
      throw toKestrelError(err, 'closing')
    }
    // close() drained the writer: everything it published is acknowledged.
    this.settleAfterStop(Number(handle.lastLsn()))
  }

  holdSyncs(hold: boolean): void {
    try {
      this.live().holdSyncs(hold)
    } catch (err) {
      throw toKestrelError(err, 'holdSyncs')
    }
  }

  async crash(tearBytes = 0): Promise<void> {
    if (this.closed) return
    const handle = this.live()
    try {
      handle.crash(tearBytes)
    } catch (err) {
      throw toKestrelError(err, 'crash')
    }
    this.closed = true
    this.settleAfterStop(0)
  }

  /** Resolve what is published, reject the rest (their outcome is decided by recovery). */
  private settleAfterStop(publishedLsn: number): void {
    this.onDurable(publishedLsn, null, null)
    while (this.head < this.pending.length) {
      this.pending[this.head++]!.reject(new KestrelError('KESTREL_CLOSED', 'the database was closed before this commit was acknowledged'))
    }
    this.compact()
  }
}
