/**
 * Online backup and restore, shared by both engines (docs/FORMAT.md "Backups").
 *
 * A backup suspends the flusher (so no page is written and no log segment deleted), waits out a
 * checkpoint in flight, takes the engine's plan — the published checkpoint's meta page and the
 * pages it reaches, and the log up to the last acknowledged commit — copies exactly that, and
 * resumes the flusher, also when the copy fails or is cancelled. Writers keep committing
 * meanwhile: their batches are deferred in order and applied on resume.
 *
 * The copy is the database at one commit id (`commitId`): the checkpoint plus whole log records
 * up to a batch boundary, so a restored backup holds whole transactions only. It starts with
 * `BACKUP_LABEL` and ends with `BACKUP_MANIFEST` (manifest.ts), which lists every file with its
 * length and SHA-256: restore and verify refuse a backup that is short of it.
 *
 * A failed or cancelled backup or restore removes what it created, and only that.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs'
import { open as openFile, type FileHandle } from 'node:fs/promises'
import { setTimeout as delay } from 'node:timers/promises'
import { join, resolve, relative, isAbsolute, dirname } from 'node:path'
import type { Core } from './core/types.js'
import { IDENTITY_FILE, LOG_DIR } from './format/log.js'
import { PAGE_BYTES, PAGE_FILE } from './format/page_layout.js'
import { KestrelError, toKestrelError } from './errors.js'
import { acquireLock, releaseLock } from './lock.js'
import { liveParticipants } from './shared/core.js'
import {
  BACKUP_LABEL,
  BACKUP_MANIFEST,
  checkManifestFiles,
  encodeManifest,
  FileDigest,
  isBackupDirectory,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  readManifest,
  type BackupManifest,
  type ManifestFile,
} from './manifest.js'
import { verifyDirectory, verifyFiles, type VerifyReport } from './verify.js'

/** Progress of a backup or restore. */
export interface BackupProgress {
  /** `'pages'` while the page store is copied, then `'log'`. */
  phase: 'pages' | 'log'
  /** Bytes copied so far (both phases). */
  bytesCopied: number
  /** Bytes the whole copy will have. */
  bytesTotal: number
}

/** Options of `db.backup()` and `restore()`. */
export interface BackupOptions {
  /** Called after every chunk copied (about every 1 MiB). */
  onProgress?: (progress: BackupProgress) => void
  /**
   * Cancels the copy: it rejects with an `Error` whose `name` is `'AbortError'` and `code` is
   * `'ABORT_ERR'` (with the signal's reason as `cause`), wherever the abort lands, as long as the
   * copy has not finished; what it created is removed and the flusher resumes.
   */
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

/**
 * The one error a cancelled backup or restore rejects with, whichever step the abort interrupts
 * (a read, a write, a pause of the pacing, or before the start): Node's convention for
 * cancelled operations.
 */
function abortError(signal: AbortSignal, what: string): Error {
  const err = new Error(`${what} was cancelled by its AbortSignal; the partial copy was removed`, { cause: signal.reason })
  err.name = 'AbortError'
  return Object.assign(err, { code: 'ABORT_ERR' })
}

/** Why a copy failed, as a KestrelError that says what to do. */
function copyError(err: unknown, what: string): KestrelError {
  if (err instanceof KestrelError) return err
  const e = err as { code?: unknown; message?: unknown }
  if (e?.code === 'ENOSPC') return toKestrelError(err, what)
  const message = typeof e?.message === 'string' ? e.message : String(err)
  return new KestrelError('KESTREL_IO', `${what}: ${message}; the partial copy was removed; check the disks and retry`, { cause: err })
}

function checkOptions(options: BackupOptions): void {
  if (options === null || typeof options !== 'object') throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'backup/restore options must be an object')
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function')
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'backup option onProgress must be a function')
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal))
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'backup option signal must be an AbortSignal')
  const rate = options.bytesPerSec
  if (rate !== undefined && (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 0)) {
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', `backup option bytesPerSec must be a number ≥ 0 (0 = unlimited), got ${String(rate)}`)
  }
}

/** What a backup or restore created in its target, so that a failure removes exactly that. */
interface Created {
  /** Directories, outermost first. */
  dirs: string[]
  files: string[]
}

/**
 * Make the target: a directory that is missing or empty; anything else is refused (a copy never
 * overwrites). Records in `created` what it makes.
 */
function prepareTarget(dest: string, what: string, created: Created): void {
  if (existsSync(dest)) {
    if (!statSync(dest).isDirectory()) throw new KestrelError('KESTREL_INVALID_ARGUMENT', `${what} ${dest} is a file; give a new or empty directory`)
    if (readdirSync(dest).length > 0)
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', `${what} ${dest} is not empty; give a new or empty directory (nothing is ever overwritten)`)
  } else {
    const first = mkdirSync(dest, { recursive: true })
    if (first !== undefined) {
      // Every directory from the first one made down to `dest` is new (bounded by the path's depth).
      const chain: string[] = []
      for (let d = dest; d !== first && d !== dirname(d); d = dirname(d)) chain.push(d)
      created.dirs.push(first, ...chain.reverse())
    }
  }
  const log = join(dest, LOG_DIR)
  mkdirSync(log)
  created.dirs.push(log)
}

/** Remove what a failed copy created: its files, then its directories if nothing else is in them. */
function removeCreated(created: Created): void {
  for (const f of created.files) rmSync(f, { force: true })
  for (const d of [...created.dirs].reverse()) {
    try {
      rmdirSync(d)
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') continue
      // Not empty: something else was put there meanwhile; leave it and the directories above.
      break
    }
  }
}

function isInside(child: string, parent: string): boolean {
  const r = relative(parent, child)
  return r === '' || (!r.startsWith('..') && !isAbsolute(r))
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** Create `path` (never overwriting), write `bytes`, fdatasync. */
function writeNew(created: Created, path: string, bytes: Uint8Array): void {
  created.files.push(path)
  const fd = openSync(path, 'wx')
  try {
    let at = 0
    // Bounded: each write moves ≥ 1 byte or throws.
    while (at < bytes.length) {
      const n = writeSync(fd, bytes, at, bytes.length - at)
      if (n <= 0) throw new KestrelError('KESTREL_IO', `${path}: a write made no progress; check the disk`)
      at += n
    }
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

async function closeBoth(a: FileHandle, b: FileHandle): Promise<void> {
  try {
    await a.close()
  } finally {
    await b.close()
  }
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
  /** `options` as checked by {@link checkOptions}. */
  constructor(
    private readonly total: number,
    private readonly options: BackupOptions,
  ) {
    this.bytesPerSec = options.bytesPerSec ?? BACKUP_BYTES_PER_SEC
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

  /**
   * Copy `length` bytes at `offset` of `from` (the file at `path`) to the same offset of `to`,
   * feeding `digest` what it copies.
   */
  async range(
    phase: BackupProgress['phase'],
    path: string,
    from: FileHandle,
    to: FileHandle,
    offset: number,
    length: number,
    digest?: FileDigest,
  ): Promise<void> {
    const read = async (at: number, buffer: Buffer): Promise<number> => {
      const want = Math.min(CHUNK_BYTES, length - at)
      if (want <= 0) return 0
      const { bytesRead } = await from.read(buffer, 0, want, offset + at)
      if (bytesRead <= 0)
        throw new KestrelError(
          'KESTREL_IO',
          `${path} shrank while it was copied (no bytes at ${offset + at}, ${offset + length} expected); the partial copy was removed; check the file and the disk, then retry`,
        )
      return bytesRead
    }
    // The next chunk is read while this one is written. Its promise is marked handled at once: a
    // read that fails before it is awaited would otherwise be an unhandled rejection, which ends
    // the process. The error still surfaces where the read is awaited.
    const readAhead = (at: number, buffer: Buffer): Promise<number> => {
      const p = read(at, buffer)
      p.catch(() => undefined)
      return p
    }
    let done = 0
    let which = 0
    let pending = readAhead(0, this.buffers[0]!)
    try {
      // Bounded by `length`: each pass copies at least one byte or throws.
      while (done < length) {
        const got = await pending
        const buffer = this.buffers[which]!
        // Before the buffer can be reused: it is read into again two chunks later.
        digest?.update(offset + done, buffer.subarray(0, got))
        which ^= 1
        pending = readAhead(done + got, this.buffers[which]!)
        let written = 0
        // Bounded: each write moves ≥ 1 byte or throws.
        while (written < got) {
          const n = (await to.write(buffer, written, got - written, offset + done + written)).bytesWritten
          if (n <= 0) throw new KestrelError('KESTREL_IO', `the copy of ${path} made no progress writing at byte ${offset + done + written}; check the disk`)
          written += n
        }
        done += got
        await this.step(phase, to, got)
      }
    } finally {
      // No read may still be in flight when the caller closes the file or the next range reuses
      // the buffers.
      await pending.catch(() => undefined)
    }
  }
}

/** Back up the database behind `core` into `dest` (see the module comment). */
export async function backupCore(core: Core, dest: string, options: BackupOptions = {}): Promise<BackupResult> {
  if (typeof dest !== 'string' || dest.length === 0) throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'backup(dir) needs a directory path string')
  checkOptions(options)
  const signal = options.signal
  if (signal?.aborted) throw abortError(signal, 'the backup')
  const target = resolve(dest)
  const source = resolve(core.dir)
  if (isInside(target, source))
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', `the backup directory ${target} is inside the database directory; choose a directory outside it`)
  const created: Created = { dirs: [], files: [] }
  let finished = false
  let suspended = false
  try {
    prepareTarget(target, 'the backup directory', created)
    // The label first, durable before any data: a copy cut short (a crash, a kill) is then
    // recognisable as an unfinished backup.
    const label = Buffer.from(`${JSON.stringify({ format: `${MANIFEST_FORMAT}-label`, version: MANIFEST_VERSION, startedAt: new Date().toISOString() })}\n`)
    writeNew(created, join(target, BACKUP_LABEL), label)
    fsyncPath(target)
    await core.suspendFlusher()
    suspended = true
    const plan = core.backupPlan()
    const pagesBytes = plan.seq > 0 ? plan.pages.length * PAGE_BYTES + PAGE_BYTES : 0
    const logBytes = plan.segments.reduce((n, s) => n + s.bytes, 0)
    const copier = new Copier(pagesBytes + logBytes, options)
    const files: ManifestFile[] = []
    if (plan.seq > 0) {
      const size = plan.pageCount * PAGE_BYTES
      const digest = new FileDigest()
      const from = await openFile(join(source, PAGE_FILE), 'r')
      created.files.push(join(target, PAGE_FILE))
      const to = await openFile(join(target, PAGE_FILE), 'wx').catch(async (err: unknown) => {
        await from.close()
        throw err
      })
      try {
        await to.truncate(size)
        // The checkpoint's meta slot; the other slot stays zero (invalid), so the copy can only
        // open at this checkpoint. Slot 0 or 1 lies before every other page, so the digest
        // sees the file in order.
        await copier.range('pages', join(source, PAGE_FILE), from, to, (plan.seq % 2) * PAGE_BYTES, PAGE_BYTES, digest)
        // Reachable pages, in runs of consecutive page numbers.
        const p = plan.pages
        let i = 0
        // Bounded by the page list.
        while (i < p.length) {
          let j = i + 1
          while (j < p.length && p[j] === p[j - 1]! + 1 && (j - i) * PAGE_BYTES < 8 * CHUNK_BYTES) j++
          await copier.range('pages', join(source, PAGE_FILE), from, to, p[i]! * PAGE_BYTES, (j - i) * PAGE_BYTES, digest)
          i = j
        }
        await to.sync()
      } finally {
        await closeBoth(from, to)
      }
      files.push({ path: PAGE_FILE, bytes: size, sha256: digest.digest(size) })
    }
    for (const seg of plan.segments) {
      const digest = new FileDigest()
      const from = await openFile(join(source, LOG_DIR, seg.name), 'r')
      created.files.push(join(target, LOG_DIR, seg.name))
      const to = await openFile(join(target, LOG_DIR, seg.name), 'wx').catch(async (err: unknown) => {
        await from.close()
        throw err
      })
      try {
        await copier.range('log', join(source, LOG_DIR, seg.name), from, to, 0, seg.bytes, digest)
        await to.sync()
      } finally {
        await closeBoth(from, to)
      }
      files.push({ path: `${LOG_DIR}/${seg.name}`, bytes: seg.bytes, sha256: digest.digest(seg.bytes) })
    }
    // The identity file last: it is what makes a directory a database, so a copy cut short is
    // never opened as one.
    const identity = readFileSync(join(source, IDENTITY_FILE))
    writeNew(created, join(target, IDENTITY_FILE), identity)
    const idDigest = new FileDigest()
    idDigest.update(0, identity)
    files.push({ path: IDENTITY_FILE, bytes: identity.length, sha256: idDigest.digest(identity.length) })
    fsyncPath(join(target, LOG_DIR))
    fsyncPath(target)
    // The copy is complete: writers need not wait for the manifest.
    suspended = false
    core.resumeFlusher()
    // The last point a cancel takes effect; from here on everything is synchronous.
    signal?.throwIfAborted()
    const manifest = Buffer.from(encodeManifest({ commitId: plan.commitId, createdAt: new Date().toISOString(), files }))
    // Written whole under a temporary name, then renamed: the manifest exists complete or not at all.
    const tmp = join(target, `${BACKUP_MANIFEST}.tmp`)
    writeNew(created, tmp, manifest)
    created.files.push(join(target, BACKUP_MANIFEST))
    renameSync(tmp, join(target, BACKUP_MANIFEST))
    fsyncPath(target)
    fsyncPath(dirname(target))
    finished = true
    return { commitId: BigInt(plan.commitId), bytes: copier.copied + identity.length + label.length + manifest.length, path: target }
  } catch (err) {
    if (signal?.aborted) throw abortError(signal, 'the backup')
    throw copyError(err, `backing up to ${target}`)
  } finally {
    // Resume first: writers must not wait on the clean-up.
    if (suspended) core.resumeFlusher()
    if (!finished) removeCreated(created)
  }
}

/**
 * Take the lock of the backup for the copy, so that a process that has the directory open cannot
 * change it underneath (`KESTREL_LOCKED`, as for a database).
 */
async function lockBackup(dir: string): Promise<boolean> {
  try {
    await acquireLock(dir, 'tool')
  } catch (err) {
    // A directory this process may not write to (a read-only mount, another user's backup) cannot
    // be locked, and does not need to be for the copy to be exact: the manifest check before and
    // after the copy refuses any file that differs from what the backup wrote.
    const code = (err as { code?: unknown }).code
    if (code === 'EROFS' || code === 'EACCES' || code === 'EPERM') return false
    throw toKestrelError(err, `${dir}: taking the lock of the backup`)
  }
  // Processes sharing it take that lock only while they open: ask the directory who is in it.
  const live = liveParticipants(dir)
  if (live.length > 0) {
    await releaseLock(dir)
    throw new KestrelError(
      'KESTREL_LOCKED',
      `${dir} is open in process ${[...new Set(live.map((s) => s.pid))].join(', ')}; close it there before restoring from it`,
    )
  }
  return true
}

/** Check a backup as restore needs it: a whole backup with a valid manifest, or `KESTREL_CORRUPT`. */
function checkBackup(dir: string): BackupManifest {
  if (!isBackupDirectory(dir)) {
    throw new KestrelError(
      'KESTREL_CORRUPT',
      `${dir} is not a backup: it holds no ${BACKUP_MANIFEST} (a database directory, or a backup written before backups had manifests); open it with open() to use it as it is, or copy it with db.backup() / kestrel backup (nothing was copied)`,
    )
  }
  const report = verifyDirectory(dir)
  const read = readManifest(dir)
  if (!report.ok || 'problem' in read) {
    const more = report.problems.length > 3 ? `; and ${report.problems.length - 3} more` : ''
    throw new KestrelError(
      'KESTREL_CORRUPT',
      `the backup ${dir} is incomplete or damaged: ${report.problems.slice(0, 3).join('; ')}${more}; restore from another backup (nothing was copied; a backup directory that was opened as a database no longer matches its manifest either)`,
    )
  }
  return read.manifest
}

/**
 * Restore a backup into `dir` (missing or empty): lock the backup, check it against its manifest
 * (every file, its length and SHA-256, and the promised commit), copy the files the manifest
 * lists, and check the copy the same way. The restored directory is a database (it holds no
 * manifest) and opens with either engine. Resolves with the copy's report.
 *
 * Rejects with `KESTREL_CORRUPT` when the backup is short of its manifest (or has none),
 * `KESTREL_LOCKED` when another process has it open, `KESTREL_IO` when a read or write fails (the
 * partial copy is removed), and an `AbortError` when `options.signal` is aborted.
 */
export async function restore(backupDir: string, dir: string, options: BackupOptions = {}): Promise<VerifyReport> {
  if (typeof backupDir !== 'string' || backupDir.length === 0 || typeof dir !== 'string' || dir.length === 0) {
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'restore(backupDir, dir) needs two directory path strings')
  }
  checkOptions(options)
  const signal = options.signal
  if (signal?.aborted) throw abortError(signal, 'the restore')
  const given = resolve(backupDir)
  if (!existsSync(given) || !statSync(given).isDirectory()) {
    throw new KestrelError('KESTREL_NOT_A_DATABASE', `${given} is not a directory; give the path of a kestreldb backup`)
  }
  // The lock is never taken in a directory that is not ours.
  if (!isBackupDirectory(given) && !existsSync(join(given, IDENTITY_FILE))) {
    throw new KestrelError('KESTREL_NOT_A_DATABASE', `${given} holds no kestreldb backup (no ${BACKUP_MANIFEST} or ${IDENTITY_FILE} file)`)
  }
  const from = realpathSync(given)
  const target = resolve(dir)
  if (isInside(target, from) || isInside(from, target))
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'the backup and the restore directory must not contain each other')
  const locked = await lockBackup(from)
  const created: Created = { dirs: [], files: [] }
  let finished = false
  try {
    const manifest = checkBackup(from)
    prepareTarget(target, 'the restore directory', created)
    // The identity file last, as in a backup: a restore cut short is never opened as a database.
    const files = [...manifest.files.filter((f) => f.path !== IDENTITY_FILE), ...manifest.files.filter((f) => f.path === IDENTITY_FILE)]
    const total = files.reduce((n, f) => n + f.bytes, 0)
    // Nothing else uses a directory being restored: copy at full speed unless told otherwise.
    const copier = new Copier(total, { ...options, bytesPerSec: options.bytesPerSec ?? 0 })
    for (const f of files) {
      const a = await openFile(join(from, f.path), 'r')
      created.files.push(join(target, f.path))
      const b = await openFile(join(target, f.path), 'wx').catch(async (err: unknown) => {
        await a.close()
        throw err
      })
      try {
        await copier.range(f.path === PAGE_FILE ? 'pages' : 'log', join(from, f.path), a, b, 0, f.bytes)
        await b.sync()
      } finally {
        await closeBoth(a, b)
      }
    }
    fsyncPath(join(target, LOG_DIR))
    fsyncPath(target)
    signal?.throwIfAborted()
    const after = verifyFiles(target)
    const differs = checkManifestFiles(target, manifest, true)
    if (after.lastCommitId !== BigInt(manifest.commitId))
      differs.push(`the copy holds commits up to ${after.lastCommitId}, the backup commit ${manifest.commitId}`)
    after.problems.unshift(...differs)
    if (after.problems.length > 0)
      throw new KestrelError(
        'KESTREL_IO',
        `the restored copy in ${target} does not match the backup (${after.problems[0]}); the copy was removed; check the disk and retry`,
      )
    fsyncPath(dirname(target))
    finished = true
    return after
  } catch (err) {
    if (signal?.aborted) throw abortError(signal, 'the restore')
    throw copyError(err, `restoring ${from} into ${target}`)
  } finally {
    if (!finished) removeCreated(created)
    if (locked) await releaseLock(from)
  }
}
