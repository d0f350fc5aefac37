/**
 * Online backup and restore, shared by both engines (DESIGN.md §4 "Backup", invariant I4).
 *
 * A backup suspends the flusher (so no page is written and no log segment deleted), waits out a
 * checkpoint in flight, takes the engine's plan — the published checkpoint's meta page and the
 * pages it reaches, and the log up to the last acknowledged commit — copies exactly that, and
 * resumes the flusher, also when the copy fails or is cancelled. Writers keep committing
 * meanwhile: their batches are deferred in order and applied on resume.
 *
 * The copy is the database at one commit id (`commitId`): the checkpoint plus whole log records
 * up to a batch boundary, so a restored backup holds whole transactions only.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readSync, rmSync, statSync, writeSync } from 'node:fs'
import { open as openFile, type FileHandle } from 'node:fs/promises'
import { setTimeout as delay } from 'node:timers/promises'
import { join, resolve, relative, isAbsolute, dirname } from 'node:path'
import type { Core } from './core/types.js'
import { IDENTITY_FILE, LOG_DIR } from './core/ts/format.js'
import { PAGE_BYTES, PAGE_FILE } from './core/ts/pages/layout.js'
import { KestrelError, toKestrelError } from './errors.js'
import { verifyDirectory, type VerifyReport } from './verify.js'

/** Progress of a backup or restore. */
export interface BackupProgress {
  /** `'pages'` while the page store is copied, then `'log'`. */
  phase: 'pages' | 'log'
  /** Bytes copied so far (both phases). */
  bytesCopied: number
  /** Bytes the whole copy will have. */
  bytesTotal: number
}

/** Options of `db.backup()`. */
export interface BackupOptions {
  /** Called after every chunk copied (about every 1 MiB). */
  onProgress?: (progress: BackupProgress) => void
  /** Cancels the backup: it rejects with an `AbortError`, the partial copy is removed and the flusher resumes. */
  signal?: AbortSignal
  /**
   * Upper bound on the copy's speed in bytes per second, so that committers keep the disk: the
   * log's fdatasync waits behind whatever the copy writes. Default {@link BACKUP_BYTES_PER_SEC};
   * `0` copies as fast as the disk goes.
   */
  bytesPerSec?: number
}

/** The default `bytesPerSec` of a backup or restore. */
export const BACKUP_BYTES_PER_SEC = 48 * 1024 * 1024

/** What a finished backup holds. */
export interface BackupResult {
  /** Every commit up to this one is in the copy, none after. */
  commitId: bigint
  /** Bytes written into the backup directory. */
  bytes: number
  /** The backup directory (absolute). */
  path: string
}

/** Bytes per copy step (progress and cancellation are checked between steps). */
const CHUNK_BYTES = 1024 * 1024
/**
 * The copy's written bytes are synced every this many bytes: a long copy never leaves a large
 * amount of dirty page cache whose writeback would stall the log's fdatasync (and so every
 * committer) for hundreds of milliseconds.
 */
const SYNC_EVERY_BYTES = 2 * 1024 * 1024

/** A directory that is missing or empty; anything else is refused (a backup never overwrites). */
function prepareTarget(dest: string, what: string): void {
  if (existsSync(dest)) {
    if (!statSync(dest).isDirectory()) throw new KestrelError('KESTREL_INVALID_ARGUMENT', `${what} ${dest} is a file; give a new or empty directory`)
    if (readdirSync(dest).length > 0) throw new KestrelError('KESTREL_INVALID_ARGUMENT', `${what} ${dest} is not empty; give a new or empty directory (nothing is ever overwritten)`)
  }
  mkdirSync(join(dest, LOG_DIR), { recursive: true })
}

function isInside(child: string, parent: string): boolean {
  const r = relative(parent, child)
  return r === '' || (!r.startsWith('..') && !isAbsolute(r))
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r')
  try { fsyncSync(fd) } finally { closeSync(fd) }
}

/**
 * Copies byte ranges with asynchronous reads and writes (the thread pool does the I/O, so the
 * event loop — and with it every committer — keeps running), one chunk read ahead of the write.
 */
class Copier {
  copied = 0
  private unsynced = 0
  private buffers = [Buffer.allocUnsafe(CHUNK_BYTES), Buffer.allocUnsafe(CHUNK_BYTES)]
  private readonly startedMs = performance.now()
  private readonly bytesPerSec: number
  constructor(private readonly total: number, private readonly options: BackupOptions) {
    const rate = options.bytesPerSec ?? BACKUP_BYTES_PER_SEC
    if (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 0) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', `backup option bytesPerSec must be a number ≥ 0 (0 = unlimited), got ${String(rate)}`)
    }
    this.bytesPerSec = rate
  }

  private async step(phase: BackupProgress['phase'], to: FileHandle, n: number): Promise<void> {
    this.copied += n
    this.unsynced += n
    if (this.unsynced >= SYNC_EVERY_BYTES) {
      await to.datasync()
      this.unsynced = 0
    }
    this.options.onProgress?.({ phase, bytesCopied: this.copied, bytesTotal: this.total })
    this.options.signal?.throwIfAborted()
    if (this.bytesPerSec > 0) {
      // Ahead of the allowed pace: wait until the copy is back on it (at most one chunk's worth).
      const dueMs = (this.copied / this.bytesPerSec) * 1000 - (performance.now() - this.startedMs)
      if (dueMs > 1) {
        await delay(Math.min(dueMs, 1000), undefined, { signal: this.options.signal })
      }
    }
  }

  /** Copy `length` bytes at `offset` of `from` to the same offset of `to`. */
  async range(phase: BackupProgress['phase'], from: FileHandle, to: FileHandle, offset: number, length: number): Promise<void> {
    const read = async (at: number, buffer: Buffer): Promise<number> => {
      const want = Math.min(CHUNK_BYTES, length - at)
      if (want <= 0) return 0
      const { bytesRead } = await from.read(buffer, 0, want, offset + at)
      if (bytesRead <= 0) throw new KestrelError('KESTREL_IO', `a file shrank while it was backed up (at byte ${offset + at}); retry the backup`)
      return bytesRead
    }
    let done = 0
    let which = 0
    let pending = read(0, this.buffers[0]!)
    // Bounded by `length`: each pass copies at least one byte or throws.
    while (done < length) {
      const got = await pending
      const buffer = this.buffers[which]!
      which ^= 1
      pending = read(done + got, this.buffers[which]!)
      try {
        let written = 0
        // Bounded: each write moves ≥ 1 byte or throws.
        while (written < got) written += (await to.write(buffer, written, got - written, offset + done + written)).bytesWritten
      } catch (err) {
        await pending.catch(() => undefined)
        throw err
      }
      done += got
      try {
        await this.step(phase, to, got)
      } catch (err) {
        await pending.catch(() => undefined)
        throw err
      }
    }
    await pending
  }
}

/** Back up the database behind `core` into `dest` (see the module comment). */
export async function backupCore(core: Core, dest: string, options: BackupOptions = {}): Promise<BackupResult> {
  if (typeof dest !== 'string' || dest.length === 0) throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'backup(dir) needs a directory path string')
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'backup option onProgress must be a function')
  options.signal?.throwIfAborted()
  const target = resolve(dest)
  const source = resolve(core.dir)
  if (isInside(target, source)) throw new KestrelError('KESTREL_INVALID_ARGUMENT', `the backup directory ${target} is inside the database directory; choose a directory outside it`)
  prepareTarget(target, 'the backup directory')
  let finished = false
  await core.suspendFlusher()
  try {
    const plan = core.backupPlan()
    const pagesBytes = plan.seq > 0 ? plan.pages.length * PAGE_BYTES + PAGE_BYTES : 0
    const logBytes = plan.segments.reduce((n, s) => n + s.bytes, 0)
    const copier = new Copier(pagesBytes + logBytes, options)
    // The identity file first: it is what makes the directory a database.
    const identity = Buffer.from(readFileBytes(join(source, IDENTITY_FILE)))
    writeWhole(join(target, IDENTITY_FILE), identity)
    if (plan.seq > 0) {
      const from = await openFile(join(source, PAGE_FILE), 'r')
      const to = await openFile(join(target, PAGE_FILE), 'w')
      try {
        await to.truncate(plan.pageCount * PAGE_BYTES)
        // The checkpoint's meta slot; the other slot stays zero (invalid), so the copy can only
        // open at this checkpoint.
        await copier.range('pages', from, to, (plan.seq % 2) * PAGE_BYTES, PAGE_BYTES)
        // Reachable pages, in runs of consecutive page numbers.
        const p = plan.pages
        let i = 0
        // Bounded by the page list.
        while (i < p.length) {
          let j = i + 1
          while (j < p.length && p[j] === p[j - 1]! + 1 && (j - i) * PAGE_BYTES < 8 * CHUNK_BYTES) j++
          await copier.range('pages', from, to, p[i]! * PAGE_BYTES, (j - i) * PAGE_BYTES)
          i = j
        }
        await to.sync()
      } finally {
        await from.close()
        await to.close()
      }
    }
    for (const seg of plan.segments) {
      const from = await openFile(join(source, LOG_DIR, seg.name), 'r')
      const to = await openFile(join(target, LOG_DIR, seg.name), 'w')
      try {
        await copier.range('log', from, to, 0, seg.bytes)
        await to.sync()
      } finally {
        await from.close()
        await to.close()
      }
    }
    fsyncPath(join(target, LOG_DIR))
    fsyncPath(target)
    fsyncPath(dirname(target))
    finished = true
    return { commitId: BigInt(plan.commitId), bytes: copier.copied + identity.length, path: target }
  } catch (err) {
    if ((err as Error)?.name === 'AbortError') throw err
    throw toKestrelError(err, `backing up to ${target}`)
  } finally {
    // Resume first: writers must not wait on the clean-up.
    core.resumeFlusher()
    if (!finished) rmSync(target, { recursive: true, force: true })
  }
}

function readFileBytes(path: string): Uint8Array {
  const fd = openSync(path, 'r')
  try {
    const size = statSync(path).size
    const b = Buffer.alloc(size)
    readSync(fd, b, 0, size, 0)
    return b
  } finally {
    closeSync(fd)
  }
}

function writeWhole(path: string, bytes: Uint8Array): void {
  const fd = openSync(path, 'w')
  try {
    writeSync(fd, bytes)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/**
 * Restore a backup into `dir` (missing or empty): verify the backup, copy its files, verify the
 * copy. The restored directory opens with either engine. Resolves with the backup's report.
 */
export async function restore(backupDir: string, dir: string, options: BackupOptions = {}): Promise<VerifyReport> {
  const from = resolve(backupDir)
  const target = resolve(dir)
  const report = verifyDirectory(from)
  if (!report.ok) {
    throw new KestrelError('KESTREL_CORRUPT', `the backup ${from} does not verify: ${report.problems.slice(0, 3).join('; ')}; use another backup`)
  }
  if (isInside(target, from) || isInside(from, target)) throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'the backup and the restore directory must not contain each other')
  prepareTarget(target, 'the restore directory')
  let finished = false
  try {
    const files = [IDENTITY_FILE, ...(existsSync(join(from, PAGE_FILE)) ? [PAGE_FILE] : []), ...readdirSync(join(from, LOG_DIR)).map((n) => join(LOG_DIR, n))]
    const total = files.reduce((n, f) => n + statSync(join(from, f)).size, 0)
    // Nothing else uses a directory being restored: copy at full speed unless told otherwise.
    const copier = new Copier(total, { bytesPerSec: 0, ...options })
    for (const f of files) {
      const a = await openFile(join(from, f), 'r')
      const b = await openFile(join(target, f), 'w')
      try {
        await copier.range(f === PAGE_FILE ? 'pages' : 'log', a, b, 0, statSync(join(from, f)).size)
        await b.sync()
      } finally {
        await a.close()
        await b.close()
      }
    }
    fsyncPath(join(target, LOG_DIR))
    fsyncPath(target)
    const after = verifyDirectory(target)
    if (!after.ok) throw new KestrelError('KESTREL_IO', `the restored copy in ${target} does not verify (${after.problems[0]}); check the disk and retry`)
    finished = true
    return after
  } finally {
    if (!finished) rmSync(target, { recursive: true, force: true })
  }
}
