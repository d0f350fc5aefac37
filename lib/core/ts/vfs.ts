/**
 * The file layer of the ts engine, and its fault-injecting twin (the Rust engine has the same
 * pair behind a trait). Only log segments go through it.
 *
 * Counting rule shared with the native engine: only the writes and fdatasyncs issued for commit
 * *batches* count toward `failWriteAt` / `failFsyncAt`; segment headers and directory syncs don't.
 */
import { open as fsOpen, type FileHandle } from 'node:fs/promises'
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
  close(): Promise<void>
}

const ZERO_CHUNK = new Uint8Array(1 << 20)

/** Opens log files; the faulty implementation also simulates crashes. */
export interface Vfs {
  openLog(path: string, length: number): Promise<LogFile>
}

async function writeAllAt(fh: FileHandle, path: string, data: Uint8Array, position: number): Promise<void> {
  let done = 0
  // Bounded: each iteration writes at least one byte or throws.
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done)
    if (bytesWritten <= 0) throw Object.assign(new Error(`short write to ${path}`), { code: 'EIO' })
    done += bytesWritten
  }
}

class RealFile implements LogFile {
  /** Invariant: length <= allocated. */
  allocated: number

  constructor(
    readonly path: string,
    readonly fh: FileHandle,
    public length: number,
  ) {
    this.allocated = length
  }

  async append(data: Uint8Array): Promise<void> {
    await writeAllAt(this.fh, this.path, data, this.length)
    this.length += data.length
    this.allocated = Math.max(this.allocated, this.length)
  }

  async preallocate(size: number): Promise<void> {
    // Bounded: each step writes up to one chunk towards `size`.
    for (let at = this.allocated; at < size; at += ZERO_CHUNK.length) {
      await writeAllAt(this.fh, this.path, ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, size - at)), at)
    }
    await this.fh.datasync()
    this.allocated = Math.max(this.allocated, size)
  }

  async sync(): Promise<void> {
    await this.fh.datasync()
  }

  async truncate(length: number): Promise<void> {
    await this.fh.truncate(length)
    this.length = length
    this.allocated = length
  }

  async close(): Promise<void> {
    await this.fh.close()
  }
}

/** The plain file layer. */
export class RealVfs implements Vfs {
  async openLog(path: string, length: number): Promise<RealFile> {
    const fh = await fsOpen(path, 'r+')
    return new RealFile(path, fh, length)
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
    if (keep < this.inner.length) await writeAllAt(this.inner.fh, this.path, new Uint8Array(this.inner.length - keep), keep)
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

  /** Simulate power loss on every open log file. */
  async crash(tearBytes: number): Promise<void> {
    for (const file of [...this.files]) await file.crash(tearBytes)
    this.files.clear()
  }
}
