/**
 * The file layer of the ts engine, and its fault-injecting twin (the Rust engine has the same
 * pair behind a trait). Only log segments go through it.
 *
 * Counting rule shared with the native engine: only the writes and fdatasyncs issued for commit
 * *batches* count toward `failWriteAt` / `failFsyncAt`; segment headers and directory syncs don't.
 */
import { close, fdatasync, fstatSync, ftruncate, open, openSync, write } from 'node:fs'
import type { FaultOptions } from '../types.js'

/** Why a log file operation is issued: only `batch` operations are counted by the fault layer. */
export type Purpose = 'batch' | 'meta' | 'seal'

/**
 * One open log segment. `length` is the write position (the end of the records); the file may be
 * longer, pre-filled with zeros by `preallocate`, so that an fdatasync after a write has no
 * file-size change to journal.
 */
export interface LogFile {
  readonly path: string
  /** Write position in bytes (including unsynced writes). */
  readonly length: number
  /** Physical size: ≥ `length`. */
  readonly allocated: number
  /** Write `data` at the write position and advance it. */
  append(data: Uint8Array, purpose: Purpose): Promise<void>
  sync(purpose: Purpose): Promise<void>
  /** Cut the file (and the write position) to `length`. */
  truncate(length: number): Promise<void>
  /** Zero-fill the file up to `size` bytes and sync it (not counted by the fault layer). */
  preallocate(size: number): Promise<void>
  /**
   * Sharing: another participant wrote (durably) up to `length`; continue there. Nothing is
   * written: the bytes past it are that participant's preallocated zeros.
   */
  moveTo(length: number): void
  close(): Promise<void>
}

const ZERO_CHUNK = new Uint8Array(1 << 20)

/** Opens log files; the faulty implementation also simulates crashes. */
export interface Vfs {
  /** Open a segment whose write position is `length` (the file may be longer: zeros). */
  openLog(path: string, length: number): Promise<LogFile>
  /** The same, synchronously (catchUp moves the writer to another participant's segment). */
  openLogSync(path: string, length: number): LogFile
}

/** The callback fs calls as promises (the log keeps a plain fd so that it can be opened synchronously). */
function writeAt(fd: number, data: Uint8Array, offset: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => write(fd, data, offset, data.length - offset, position, (err, n) => (err ? reject(err) : resolve(n))))
}
function fdatasyncAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())))
}
function ftruncateAsync(fd: number, length: number): Promise<void> {
  return new Promise((resolve, reject) => ftruncate(fd, length, (err) => (err ? reject(err) : resolve())))
}
function closeAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => close(fd, (err) => (err ? reject(err) : resolve())))
}
function openAsync(path: string): Promise<number> {
  return new Promise((resolve, reject) => open(path, 'r+', (err, fd) => (err ? reject(err) : resolve(fd))))
}

async function writeAllAt(fd: number, path: string, data: Uint8Array, position: number): Promise<void> {
  let done = 0
  // Bounded: each iteration writes at least one byte or throws.
  while (done < data.length) {
    const bytesWritten = await writeAt(fd, data, done, position + done)
    if (bytesWritten <= 0) throw Object.assign(new Error(`short write to ${path}`), { code: 'EIO' })
    done += bytesWritten
  }
}

class RealFile implements LogFile {
  /** Invariant: length <= allocated. */
  allocated: number

  constructor(
    readonly path: string,
    readonly fd: number,
    public length: number,
  ) {
    // A file longer than the write position holds zeros there (preallocated; shared mode).
    this.allocated = Math.max(length, fstatSync(fd).size)
  }

  async append(data: Uint8Array): Promise<void> {
    await writeAllAt(this.fd, this.path, data, this.length)
    this.length += data.length
    this.allocated = Math.max(this.allocated, this.length)
  }

  async preallocate(size: number): Promise<void> {
    // Bounded: each step writes up to one chunk towards `size`.
    for (let at = this.allocated; at < size; at += ZERO_CHUNK.length) {
      await writeAllAt(this.fd, this.path, ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, size - at)), at)
    }
    await fdatasyncAsync(this.fd)
    this.allocated = Math.max(this.allocated, size)
  }

  async sync(): Promise<void> {
    await fdatasyncAsync(this.fd)
  }

  async truncate(length: number): Promise<void> {
    await ftruncateAsync(this.fd, length)
    this.length = length
    this.allocated = length
  }

  moveTo(length: number): void {
    this.length = length
    // The other participant's preallocated zeros need not be written again.
    this.allocated = Math.max(this.allocated, length, fstatSync(this.fd).size)
  }

  async close(): Promise<void> {
    await closeAsync(this.fd)
  }
}

/** The plain file layer. */
export class RealVfs implements Vfs {
  async openLog(path: string, length: number): Promise<RealFile> {
    return new RealFile(path, await openAsync(path), length)
  }

  openLogSync(path: string, length: number): RealFile {
    return new RealFile(path, openSync(path, 'r+'), length)
  }
}

function injected(errno: 'EIO' | 'ENOSPC', what: string): Error {
  const message = errno === 'ENOSPC' ? 'no space left on device' : 'input/output error'
  return Object.assign(new Error(`${errno}: ${message} (injected at ${what})`), { code: errno, injected: true })
}

class FaultyFile implements LogFile {
  /** Write position at the last successful sync: the records before it are durable. */
  syncedLength: number

  constructor(
    private readonly inner: RealFile,
    private readonly vfs: FaultyVfs,
  ) {
    this.syncedLength = inner.length
  }

  get path(): string {
    return this.inner.path
  }
  get length(): number {
    return this.inner.length
  }
  get allocated(): number {
    return this.inner.allocated
  }

  preallocate(size: number): Promise<void> {
    return this.inner.preallocate(size)
  }

  async append(data: Uint8Array, purpose: Purpose): Promise<void> {
    if (purpose === 'batch') {
      this.vfs.writes++
      if (this.vfs.options.failWriteAt === this.vfs.writes) throw injected(this.vfs.errno, `write #${this.vfs.writes}`)
    }
    await this.inner.append(data)
  }

  async sync(purpose: Purpose): Promise<void> {
    if (purpose === 'seal' && this.vfs.options.failSealSync) throw injected(this.vfs.errno, 'the sealing fdatasync')
    // Bounded by the test that holds the gate: it releases it, or crashes the engine.
    while (purpose === 'batch' && this.vfs.gate) await this.vfs.gate.promise
    if (purpose === 'batch') {
      this.vfs.syncs++
      if (this.vfs.options.failFsyncAt === this.vfs.syncs) throw injected(this.vfs.errno, `fdatasync #${this.vfs.syncs}`)
    }
    await this.inner.sync()
    this.syncedLength = this.inner.length
  }

  async truncate(length: number): Promise<void> {
    await this.inner.truncate(length)
    this.syncedLength = Math.min(this.syncedLength, length)
  }

  moveTo(length: number): void {
    this.inner.moveTo(length)
    // What another participant published is durable.
    this.syncedLength = length
  }

  async close(): Promise<void> {
    this.vfs.files.delete(this)
    await this.inner.close()
  }

  /**
   * Power loss: keep the synced records plus `tearBytes` of what was written after them; the rest
   * of what was written reads back as the zeros that were there before.
   */
  async crash(tearBytes: number): Promise<void> {
    const unsynced = Math.max(0, this.inner.length - this.syncedLength)
    const keep = this.syncedLength + Math.min(tearBytes, unsynced)
    if (keep < this.inner.length) await writeAllAt(this.inner.fd, this.path, new Uint8Array(this.inner.length - keep), keep)
    await this.inner.close()
  }
}

/** Fault-injecting file layer for tests: failing Nth write/sync, lost unsynced data, torn writes. */
export class FaultyVfs implements Vfs {
  writes = 0
  syncs = 0
  readonly files = new Set<FaultyFile>()
  readonly errno: 'EIO' | 'ENOSPC'
  /** While set, batch fdatasyncs wait (tests hold a commit between write and durability). */
  gate: { promise: Promise<void>; open: () => void } | undefined

  /** Hold (true) or release (false) every batch fdatasync. */
  holdSyncs(hold: boolean): void {
    if (hold && !this.gate) {
      let open!: () => void
      const promise = new Promise<void>((r) => {
        open = r
      })
      this.gate = { promise, open }
    } else if (!hold && this.gate) {
      const g = this.gate
      this.gate = undefined
      g.open()
    }
  }

  constructor(
    readonly options: FaultOptions,
    private readonly real: RealVfs = new RealVfs(),
  ) {
    this.errno = options.errno ?? 'EIO'
  }

  async openLog(path: string, length: number): Promise<LogFile> {
    const file = new FaultyFile(await this.real.openLog(path, length), this)
    this.files.add(file)
    return file
  }

  openLogSync(path: string, length: number): LogFile {
    const file = new FaultyFile(this.real.openLogSync(path, length), this)
    this.files.add(file)
    return file
  }

  /** Simulate power loss on every open log file. */
  async crash(tearBytes: number): Promise<void> {
    for (const file of [...this.files]) await file.crash(tearBytes)
    this.files.clear()
  }
}
