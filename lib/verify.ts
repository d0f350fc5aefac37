/**
 * Integrity checks of a database's files (docs/FORMAT.md "Checks"), shared by both engines: the
 * page store's structure (checksums, B+tree order and fill, free-list accounting) and the log's
 * continuity. `db.verify()` runs them on a live database with the flusher suspended;
 * {@link verifyDirectory} runs them on a closed directory or a backup, and on a backup also
 * checks its files against its manifest (manifest.ts).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { IDENTITY_BYTES, IDENTITY_FILE, LOG_DIR, parseSegmentName, readFrame, readSegmentHeader, RECORD_COMMIT, SEGMENT_HEADER_BYTES } from './format/log.js'
import { walk } from './format/page_check.js'
import { PAGE_FILE } from './format/page_layout.js'
import { decodeCommit } from './format/payload.js'
import { KestrelError } from './errors.js'
import { BACKUP_MANIFEST, checkManifestFiles, isBackupDirectory, readManifest } from './manifest.js'

/** What {@link verifyDirectory} and `db.verify()` found. */
export interface VerifyReport {
  /** True when no problem was found. */
  ok: boolean
  /** Every problem found, each naming the file and page or byte offset. */
  problems: string[]
  /** Notes that are not damage (e.g. a torn log tail the next open will cut). */
  notes: string[]
  /** The checkpoint's commit id (0n = no checkpoint yet). */
  checkpointLsn: bigint
  /** The last commit the files hold. */
  lastCommitId: bigint
  pages: {
    /** Pages in the file. */
    total: number
    /** Pages the checkpoint reaches. */
    reachable: number
    free: number
    /** Live records in the checkpoint. */
    records: number
    /** Average fill of the leaf pages, in percent. */
    leafFillPercent: number
    collections: Array<{ name: string; records: number; depth: number; leaves: number }>
  }
  log: {
    segments: number
    /** Commit id of the first record kept in the log (0n = none). */
    firstLsn: bigint
    records: number
    bytes: number
  }
  /**
   * Set when the directory is a backup whose manifest could be read: what it promised. The
   * files are checked against it (a difference is a problem).
   */
  backup?: {
    /** The commit id the backup promised. */
    commitId: bigint
    /** When the backup finished (ISO 8601). */
    createdAt: string
    /** Files the manifest lists. */
    files: number
  }
}

/**
 * Check the log: segments chain from at most `checkpointLsn + 1`, every record has its CRC and
 * the next LSN and parses. `segments` limits the check to a prefix of each file (a live database:
 * what is durable); without it every segment is read whole and a torn tail is a note.
 */
export function checkLog(
  dir: string,
  checkpointLsn: number,
  segments?: Array<{ name: string; bytes: number }>,
): { problems: string[]; notes: string[]; firstLsn: number; lastLsn: number; records: number; bytes: number; segments: number } {
  const problems: string[] = []
  const notes: string[] = []
  const logDir = join(dir, LOG_DIR)
  let list = segments
  if (!list) {
    if (!existsSync(logDir)) return { problems: [`${LOG_DIR}/ is missing`], notes, firstLsn: 0, lastLsn: checkpointLsn, records: 0, bytes: 0, segments: 0 }
    list = readdirSync(logDir)
      .filter((n) => parseSegmentName(n) !== undefined)
      .sort()
      .map((name) => ({ name, bytes: statSync(join(logDir, name)).size }))
  }
  // Segments wholly covered by the checkpoint may be left over from an interrupted trim.
  let skip = 0
  while (skip + 1 < list.length && parseSegmentName(list[skip + 1]!.name)! <= checkpointLsn + 1) skip++
  const kept = list.slice(skip)
  let last = 0
  let firstLsn = 0
  let records = 0
  let bytesTotal = 0
  for (let i = 0; i < kept.length; i++) {
    const { name, bytes: length } = kept[i]!
    const first = parseSegmentName(name)!
    const isLast = i === kept.length - 1
    const bytes = new Uint8Array(readFileSync(join(logDir, name))).subarray(0, length)
    bytesTotal += bytes.length
    const header = readSegmentHeader(bytes)
    if ('error' in header || header.firstLsn !== first) {
      problems.push(`${LOG_DIR}/${name}: bad segment header (${'error' in header ? header.error : `says first LSN ${header.firstLsn}`})`)
      break
    }
    if (i === 0) {
      if (first > checkpointLsn + 1)
        problems.push(
          `${LOG_DIR}/${name}: records ${checkpointLsn + 1}..${first - 1} are missing (the log must continue the checkpoint at LSN ${checkpointLsn})`,
        )
      last = first - 1
      firstLsn = first
    } else if (first !== last + 1) {
      problems.push(`${LOG_DIR}/${name}: starts at LSN ${first}, expected ${last + 1}`)
    }
    let pos = SEGMENT_HEADER_BYTES
    // Bounded: each pass consumes a whole frame or stops.
    while (pos < bytes.length) {
      const frame = readFrame(bytes, pos)
      if (!frame || frame.lsn !== last + 1) {
        const what = !frame ? 'a torn, zeroed or checksum-failing record' : `record LSN ${frame.lsn}, expected ${last + 1}`
        if (isLast && segments === undefined && !wholeFrameAfter(bytes, pos, last))
          notes.push(`${LOG_DIR}/${name}: ${what} at byte ${pos}: a torn tail the next open cuts off`)
        else problems.push(`${LOG_DIR}/${name}: ${what} at byte ${pos}`)
        break
      }
      if (frame.type !== RECORD_COMMIT) {
        problems.push(`${LOG_DIR}/${name}: unknown record type ${frame.type} at byte ${pos}`)
        break
      }
      try {
        decodeCommit(frame.payload)
      } catch (err) {
        problems.push(`${LOG_DIR}/${name}: commit ${frame.lsn} at byte ${pos} does not parse (${(err as Error).message})`)
        break
      }
      last = frame.lsn
      records++
      pos = frame.end
    }
  }
  if (kept.length === 0 && checkpointLsn === 0 && segments === undefined) notes.push('the log is empty')
  return { problems, notes, firstLsn, lastLsn: Math.max(last, checkpointLsn), records, bytes: bytesTotal, segments: kept.length }
}

/** Is there a whole record with a later LSN after the damage at `pos`? Then it is not a torn tail. */
function wholeFrameAfter(bytes: Uint8Array, pos: number, last: number): boolean {
  // Bounded by the segment length.
  for (let p = pos + 1; p + 17 <= bytes.length; p++) {
    const f = readFrame(bytes, p)
    if (f && f.lsn > last) return true
  }
  return false
}

/** Check the page file and the log of `dir` (files as they are; `segments` as in {@link checkLog}). */
export function verifyFiles(dir: string, segments?: Array<{ name: string; bytes: number }>): VerifyReport {
  const problems: string[] = []
  const notes: string[] = []
  const identity = join(dir, IDENTITY_FILE)
  if (!existsSync(identity) || statSync(identity).size !== IDENTITY_BYTES) problems.push(`${IDENTITY_FILE}: missing or not ${IDENTITY_BYTES} bytes`)
  const pagePath = join(dir, PAGE_FILE)
  let checkpointLsn = 0
  const pages: VerifyReport['pages'] = { total: 0, reachable: 0, free: 0, records: 0, leafFillPercent: 0, collections: [] }
  if (existsSync(pagePath)) {
    const r = walk(pagePath)
    problems.push(...r.problems.map((p) => (p.startsWith(PAGE_FILE) ? p : `${PAGE_FILE}: ${p}`)))
    if (r.meta) {
      checkpointLsn = r.meta.checkpointLsn
      pages.total = r.meta.pageCount
    }
    pages.reachable = r.pagesReachable
    pages.free = r.pagesFree
    pages.records = r.records
    pages.leafFillPercent = r.leafFillPercent
    pages.collections = r.collections
  } else {
    notes.push(`no ${PAGE_FILE} yet: no checkpoint was written`)
  }
  const log = checkLog(dir, checkpointLsn, segments)
  problems.push(...log.problems)
  notes.push(...log.notes)
  return {
    ok: problems.length === 0,
    problems,
    notes,
    checkpointLsn: BigInt(checkpointLsn),
    lastCommitId: BigInt(log.lastLsn),
    pages,
    log: { segments: log.segments, firstLsn: BigInt(log.firstLsn), records: log.records, bytes: log.bytes },
  }
}

/**
 * Verify a closed database directory or a backup without opening it (nothing is written). Throws
 * `KESTREL_NOT_A_DATABASE` when `dir` holds no database.
 *
 * A directory with `BACKUP_LABEL` or `BACKUP_MANIFEST` is a backup: it must also have a valid
 * manifest, hold exactly the files it lists (lengths and SHA-256) and reach the commit it
 * promised; anything short of that is a problem. A database directory has neither file and is
 * checked as it is.
 */
export function verifyDirectory(dir: string): VerifyReport {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new KestrelError('KESTREL_NOT_A_DATABASE', `${dir} is not a directory; give the path of a kestreldb database or backup`)
  }
  const backup = isBackupDirectory(dir)
  if (!backup && !existsSync(join(dir, IDENTITY_FILE))) {
    throw new KestrelError('KESTREL_NOT_A_DATABASE', `${dir} holds no kestreldb database (no ${IDENTITY_FILE} file)`)
  }
  const report = verifyFiles(dir)
  if (!backup) return report
  const read = readManifest(dir)
  if ('problem' in read) {
    report.problems.unshift(read.problem)
  } else {
    const m = read.manifest
    report.backup = { commitId: BigInt(m.commitId), createdAt: m.createdAt, files: m.files.length }
    const problems = checkManifestFiles(dir, m, true)
    if (problems.length === 0 && report.lastCommitId !== BigInt(m.commitId)) {
      problems.push(`the files hold commits up to ${report.lastCommitId}, ${BACKUP_MANIFEST} promises commit ${m.commitId}`)
    }
    report.problems.unshift(...problems)
  }
  report.ok = report.problems.length === 0
  return report
}
