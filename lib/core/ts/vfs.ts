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
export type IoPurpose = 'batch' | 'meta'

/** One open log segment. Writes always go to the end of the file. */
export interface LogFile {
  readonly path: string
  /** Current length in bytes (including unsynced writes). */
  readonly length: number
  append(data: Uint8Array, purpose: IoPurpose): Promise<void>
  sync(purpose: IoPurpose): Promise<void>
  truncate(length: number): Promise<void>
  close(): Promise<void>
}

/** Opens log files; the faulty implementation also simulates crashes. */
export interface Vfs {
  openLog(path: string, length: number): Promise<LogFile>
}

class RealLogFile implements LogFile {
  constructor(readonly path: string, private readonly fh: FileHandle, public length: number) {}

  async append(data: Uint8Array): Promise<void> {
    let done = 0
    // Bounded: each iteration writes at least one byte or throws.
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, this.length + done)
      if (bytesWritten <= 0) throw Object.assign(new Error(`short write to ${this.path}`), { code: 'EIO' })
      done += bytesWritten
    }
    this.length += data.length
  }

  async sync(): Promise<void> {
    await this.fh.datasync()
  }

  async truncate(length: number): Promise<void> {
    await this.fh.truncate(length)
    this.length = length
  }

  async close(): Promise<void> {
    await this.fh.close()
  }
}

/** The plain file layer. */
export class RealVfs implements Vfs {
  async openLog(path: string, length: number): Promise<LogFile> {
    const fh = await fsOpen(path, 'r+')
    return new RealLogFile(path, fh, length)
  }
}

function injected(errno: 'EIO' | 'ENOSPC', what: string): Error {
  const message = errno === 'ENOSPC' ? 'no space left on device' : 'input/output error'
  return Object.assign(new Error(`${errno}: ${message} (injected at ${what})`), { code: errno, injected: true })
}

class FaultyLogFile implements LogFile {
  /** Bytes known durable: the file length at the last successful sync. */
  syncedLength: number

  constructor(private readonly inner: LogFile, private readonly vfs: FaultyVfs) {
    this.syncedLength = inner.length
  }

  get path(): string { return this.inner.path }
  get length(): number { return this.inner.length }

  async append(data: Uint8Array, purpose: IoPurpose): Promise<void> {
    if (purpose === 'batch') {
      this.vfs.writes++
      if (this.vfs.options.failWriteAt === this.vfs.writes) throw injected(this.vfs.errno, `write #${this.vfs.writes}`)
    }
    await this.inner.append(data, purpose)
  }

  async sync(purpose: IoPurpose): Promise<void> {
    if (purpose === 'batch') {
      this.vfs.syncs++
      if (this.vfs.options.failFsyncAt === this.vfs.syncs) throw injected(this.vfs.errno, `fdatasync #${this.vfs.syncs}`)
    }
    await this.inner.sync(purpose)
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

  /** Power loss: keep the synced prefix plus `tearBytes` of whatever was not synced. */
  async crash(tearBytes: number): Promise<void> {
    const unsynced = this.inner.length - this.syncedLength
    await this.inner.truncate(this.syncedLength + Math.min(tearBytes, Math.max(0, unsynced)))
    await this.inner.close()
  }
}

/** Fault-injecting file layer for tests: failing Nth write/sync, lost unsynced data, torn writes. */
export class FaultyVfs implements Vfs {
  writes = 0
  syncs = 0
  readonly files = new Set<FaultyLogFile>()
  readonly errno: 'EIO' | 'ENOSPC'

  constructor(readonly options: FaultOptions, private readonly real: Vfs = new RealVfs()) {
    this.errno = options.errno ?? 'EIO'
  }

  async openLog(path: string, length: number): Promise<LogFile> {
    const file = new FaultyLogFile(await this.real.openLog(path, length), this)
    this.files.add(file)
    return file
  }

  /** Simulate power loss on every open log file. */
  async crash(tearBytes: number): Promise<void> {
    for (const file of [...this.files]) await file.crash(tearBytes)
    this.files.clear()
  }
}
