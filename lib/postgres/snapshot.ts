/**
 * Snapshots of a PostgreSQL-backed database (docs/FORMAT.md "The PostgreSQL medium"): a backup
 * of one replica at an LSN, its files stored in chunks, so that a new replica starts from it and
 * the log after it, and the log below it can be trimmed. Publishing is a backup (backup.ts) whose
 * files are uploaded in one transaction; bootstrapping downloads them and restores them (which
 * checks every file against the backup's manifest).
 */
import { mkdtempSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs'
import { mkdir, open as openFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import type { Pool } from 'pg'
import { backupCore, restore } from '../backup.js'
import { syncDirSync } from '../core/ts/fsutil.js'
import type { Core } from '../core/types.js'
import { KestrelError } from '../errors.js'
import { IDENTITY_FILE } from '../format/log.js'
import type { PgLog } from './log.js'

/**
 * Where a bootstrap restores the snapshot inside the replica directory before moving it into
 * place: while it exists, the directory holds a bootstrap cut short, to be done again.
 */
export const BOOTSTRAP_DIR = '.kestrel-bootstrap'

/** Bytes per stored chunk (one row). */
const CHUNK_BYTES = 1024 * 1024

/** Every file under `dir`, as paths relative to it (a backup: a few files and the log directory). */
function filesOf(dir: string): string[] {
  const out: string[] = []
  // Bounded: a backup's tree is two levels deep.
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name)
      if (statSync(p).isDirectory()) walk(p)
      else out.push(relative(dir, p))
    }
  }
  walk(dir)
  return out.sort()
}

/**
 * Publish a snapshot of `core` (the replica's engine) unless another replica is publishing one
 * or the newest is already at its LSN; trims the log behind it (see PgLog.sealSnapshot).
 * Resolves with the snapshot's LSN, or undefined when none was published.
 */
export async function publishSnapshot(
  pool: Pool,
  log: PgLog,
  core: Core,
  replicaId: string,
  staleMs: number,
): Promise<{ lsn: number; trimmed: number } | undefined> {
  const c = await pool.connect()
  let locked = false
  const tmp = mkdtempSync(join(tmpdir(), 'kestrel-snapshot-'))
  try {
    locked = await log.trySnapshotLock(c)
    if (!locked) return undefined
    if ((await log.newestSnapshot(c)) >= Number(core.lastCommitId())) return undefined
    const copy = join(tmp, 'backup')
    const made = await backupCore(core, copy)
    const lsn = Number(made.commitId)
    if ((await log.newestSnapshot(c)) >= lsn) return undefined
    await c.query('BEGIN')
    try {
      let bytes = 0
      const buffer = Buffer.allocUnsafe(CHUNK_BYTES)
      for (const path of filesOf(copy)) {
        const f = await openFile(join(copy, path), 'r')
        try {
          // Bounded: each read moves ≥ 1 byte until the end (a file of zero bytes: one empty chunk).
          for (let seq = 0; ; seq++) {
            const { bytesRead } = await f.read(buffer, 0, CHUNK_BYTES, seq * CHUNK_BYTES)
            if (bytesRead === 0 && seq > 0) break
            await log.putChunk(c, lsn, path, seq, buffer.subarray(0, bytesRead))
            bytes += bytesRead
            if (bytesRead < CHUNK_BYTES) break
          }
        } finally {
          await f.close()
        }
      }
      // This replica has applied at least what it copied: it holds back nothing below.
      await log.heartbeat(c, replicaId, Number(core.lastCommitId()))
      const trimmed = await log.sealSnapshot(c, lsn, bytes, staleMs)
      await c.query('COMMIT')
      return { lsn, trimmed }
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {})
      throw err
    }
  } finally {
    if (locked) await log.snapshotUnlock(c).catch(() => {})
    c.release()
    rmSync(tmp, { recursive: true, force: true })
  }
}

/**
 * Restore the newest snapshot into `dir` (new or empty), as one consistent read of it. Resolves
 * with its LSN, or 0 when there is none (the log starts at LSN 1 then).
 */
export async function fetchSnapshot(pool: Pool, log: PgLog, dir: string): Promise<number> {
  const c = await pool.connect()
  const tmp = mkdtempSync(join(tmpdir(), 'kestrel-bootstrap-'))
  try {
    const copy = join(tmp, 'backup')
    let lsn: number
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ')
    try {
      const snap = await log.snapshotFiles(c)
      if (!snap) {
        await c.query('COMMIT')
        return 0
      }
      lsn = snap.lsn
      for (const { path, chunks } of snap.files) {
        if (path.startsWith('..') || path.startsWith('/'))
          throw new KestrelError('KESTREL_CORRUPT', `snapshot ${lsn} of schema "${log.schema}" names a file outside it: ${path}`)
        const to = join(copy, path)
        await mkdir(dirname(to), { recursive: true })
        const f = await openFile(to, 'wx')
        try {
          let at = 0
          for (let seq = 0; seq < chunks; seq++) {
            const data = await log.getChunk(c, lsn, path, seq)
            await f.write(data, 0, data.byteLength, at)
            at += data.byteLength
          }
        } finally {
          await f.close()
        }
      }
      await c.query('COMMIT')
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {})
      throw err
    }
    // Checked against the backup's manifest on the way in; then moved into place, the identity
    // file last (a directory without it is no database), and the staging directory removed.
    const staging = join(dir, BOOTSTRAP_DIR)
    await restore(copy, staging)
    const names = readdirSync(staging).sort((a, b) => Number(a === IDENTITY_FILE) - Number(b === IDENTITY_FILE))
    for (const name of names) renameSync(join(staging, name), join(dir, name))
    syncDirSync(dir)
    return lsn
  } finally {
    c.release()
    rmSync(tmp, { recursive: true, force: true })
  }
}
