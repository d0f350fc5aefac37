/**
 * Log recovery for the ts engine (twin of `log/recovery.rs`): the algorithm of docs/FORMAT.md
 * "Recovery", step for step. Returns every good COMMIT record after the checkpoint in LSN order
 * and leaves the directory with a clean tail: damage in the last segment is a torn final write
 * (cut) unless a later batch follows it, which proves it was durable (corruption).
 */
import { closeSync, existsSync, fdatasyncSync, fstatSync, fsyncSync, ftruncateSync, openSync, readSync, unlinkSync } from 'node:fs'
import { unlink, open as fsOpen } from 'node:fs/promises'
import { join } from 'node:path'
import { KestrelError } from '../../../errors.js'
import {
  FRAME_HEADER_BYTES,
  LOG_DIR,
  RECORD_COMMIT,
  SEGMENT_HEADER_BYTES,
  parseSegmentName,
  readFrame,
  readSegmentHeader,
  segmentName,
  type Frame,
} from '../../../format/log.js'
import { decodeCommit, type WriteOp } from '../../../format/payload.js'
import { checkStoredValues } from '../../../format/stored.js'
import type { LogTail } from '../../types.js'
import { syncDir } from '../fsutil.js'
import { listSegments, readSegment } from './reader.js'

/** One recovered commit. */
export interface RecoveredCommit {
  lsn: number
  ops: WriteOp[]
}

/** What recovery found. */
export interface Recovered {
  commits: RecoveredCommit[]
  /** The database's last LSN: the log's last good record, or the checkpoint's if the log ends below it. */
  lastLsn: number
  /** LSN of the log's own last good record (0 if none). */
  logEndLsn: number
  /** Segments in LSN order, with their first LSN and clean length. */
  segments: Array<{ name: string; firstLsn: number; length: number }>
  /** Bytes cut from a torn tail (0 when the log ended cleanly). */
  truncatedBytes: number
}

function corrupt(segment: string, offset: number, what: string): KestrelError {
  return new KestrelError(
    'KESTREL_CORRUPT',
    `log segment ${LOG_DIR}/${segment} is corrupt at byte ${offset} (${what}); committed data past this point cannot be trusted: restore from a backup`,
  )
}

/**
 * Is damage at `from` a torn final write? Yes unless a whole frame carrying BATCH_END is followed
 * by another whole frame (a later batch, written only after the damaged one was durable).
 */
function isTornTail(bytes: Uint8Array, from: number, lastGoodLsn: number): boolean {
  let sawBatchEnd = false
  // Bounded by the segment length: one step per byte or per whole frame.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  for (let pos = from + 1; pos + FRAME_HEADER_BYTES <= bytes.length; ) {
    // LSN 0 is never written: skip zeroed (preallocated) space without checksumming it.
    if (view.getUint32(pos + 8, true) === 0 && view.getUint32(pos + 12, true) === 0) {
      pos++
      continue
    }
    const frame = readFrame(bytes, pos)
    if (frame && frame.lsn > lastGoodLsn) {
      if (sawBatchEnd) return false
      if (frame.batchEnd) sawBatchEnd = true
      pos = frame.end
    } else {
      pos++
    }
  }
  return true
}

/**
 * Recover the log under `dir` on top of a checkpoint at `checkpointLsn` (0 = none): the good
 * commits after it. Segments wholly at or below the checkpoint (left when a crash interrupted
 * trimming) are skipped; the first one kept must start at most at `checkpointLsn + 1`.
 *
 * With `tail` (sharing, other participants live): read only up to it — the frames through LSN
 * `tail.lsn`, which ends at `tail.segment` byte `tail.offset` — and change nothing on disk (the
 * bytes past it belong to another participant's writer); anything else there is corruption.
 */
export async function recover(dir: string, checkpointLsn = 0, tail?: LogTail): Promise<Recovered> {
  const logDir = join(dir, LOG_DIR)
  let all = await listSegments(logDir)
  if (tail) {
    if (tail.lsn < checkpointLsn) {
      throw new KestrelError(
        'KESTREL_CORRUPT',
        `the published log tail (LSN ${tail.lsn}) is below the checkpoint (LSN ${checkpointLsn}); restore from a backup`,
      )
    }
    const tailFirst = parseSegmentName(tail.segment)
    if (tailFirst === undefined || !all.some((s) => s.name === tail.segment)) {
      throw corrupt(tail.segment, 0, 'the published log tail names a segment that does not exist')
    }
    all = all.filter((s) => s.firstLsn <= tailFirst)
  }
  let skip = 0
  while (skip + 1 < all.length && all[skip + 1]!.firstLsn <= checkpointLsn + 1) skip++
  const names = all.slice(skip)

  const result: Recovered = { commits: [], lastLsn: checkpointLsn, logEndLsn: 0, segments: [], truncatedBytes: 0 }
  for (let i = 0; i < names.length; i++) {
    const { name, firstLsn } = names[i]!
    const isLast = i === names.length - 1
    const path = join(logDir, name)
    const read = await readSegment(path)
    const { header } = read
    let bytes = read.bytes
    if (tail && isLast) {
      if (bytes.length < tail.offset) throw corrupt(name, bytes.length, `the published log tail is at byte ${tail.offset}, past the end of the file`)
      bytes = bytes.subarray(0, tail.offset)
    }
    // The first segment may start anywhere up to the record after the checkpoint.
    const chains = i === 0 ? firstLsn >= 1 && firstLsn <= checkpointLsn + 1 : firstLsn === result.lastLsn + 1
    if ('error' in header || header.firstLsn !== firstLsn) {
      if (!tail && isLast && bytes.length < SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES && chains) {
        // A crash while creating the segment: nothing in it was ever acknowledged.
        await unlink(path)
        await syncDir(logDir)
        break
      }
      throw corrupt(name, 0, 'error' in header ? header.error : `header says first LSN ${header.firstLsn}`)
    }
    if (!chains) {
      const missing =
        firstLsn > result.lastLsn + 1
          ? `records ${result.lastLsn + 1}..${firstLsn - 1} are missing (a segment file was deleted)`
          : `segment starts at LSN ${firstLsn}, overlapping LSN ${result.lastLsn}`
      throw corrupt(name, 0, missing)
    }
    if (i === 0) result.lastLsn = firstLsn - 1

    let pos = SEGMENT_HEADER_BYTES
    let damage: string | undefined
    // Bounded: each iteration consumes one whole frame.
    while (pos < bytes.length) {
      const frame: Frame | undefined = readFrame(bytes, pos)
      if (!frame) {
        damage = 'torn, zeroed or checksum-failing record'
        break
      }
      if (frame.lsn !== result.lastLsn + 1) {
        damage = `record LSN ${frame.lsn}, expected ${result.lastLsn + 1}`
        break
      }
      if (frame.type !== RECORD_COMMIT) {
        throw corrupt(name, pos, `unknown record type ${frame.type} (written by a newer kestreldb?)`)
      }
      let ops: WriteOp[]
      try {
        ops = decodeCommit(frame.payload)
      } catch (err) {
        throw corrupt(name, pos, `commit record ${frame.lsn} does not parse: ${(err as Error).message}`)
      }
      const badValue = checkStoredValues(ops)
      if (badValue !== undefined) throw corrupt(name, pos, `commit record ${frame.lsn} does not parse: ${badValue}`)
      if (frame.lsn > checkpointLsn) result.commits.push({ lsn: frame.lsn, ops })
      result.lastLsn = frame.lsn
      pos = frame.end
    }
    if (damage !== undefined) {
      // Up to a published tail every frame is durable: damage there is never a torn write.
      if (tail || !isLast || !isTornTail(bytes, pos, result.lastLsn)) throw corrupt(name, pos, damage)
      const fh = await fsOpen(path, 'r+')
      try {
        await fh.truncate(pos)
        await fh.datasync()
      } finally {
        await fh.close()
      }
      result.truncatedBytes = bytes.length - pos
    }
    result.segments.push({ name, firstLsn, length: pos })
  }
  if (tail && result.lastLsn !== tail.lsn) {
    throw corrupt(tail.segment, tail.offset, `the log ends at LSN ${result.lastLsn} but the published tail says ${tail.lsn}`)
  }
  // A log that ends below the checkpoint ('relaxed'/'none' lost an unsynced tail written before
  // the checkpoint) continues after the checkpoint.
  result.logEndLsn = result.lastLsn
  result.lastLsn = Math.max(result.lastLsn, checkpointLsn)
  return result
}

// ---------------------------------------------------------------------------------------------
// Sharing: reading what other participants appended (synchronous: catchUp is).

/** A record another participant appended. */
export interface PublishedRecord {
  lsn: number
  /** The COMMIT payload (a view into the bytes read). */
  payload: Uint8Array
  ops: WriteOp[]
}

/** Bytes `from` up to `to` (or the end of the file) of `path`; fewer when the file ends first. */
function readRange(path: string, from: number, to?: number): Uint8Array {
  const fd = openSync(path, 'r')
  try {
    const end = to ?? fstatSync(fd).size
    const out = new Uint8Array(Math.max(0, end - from))
    let got = 0
    // Bounded: each iteration reads ≥ 1 byte or stops at the end of the file.
    while (got < out.length) {
      const n = readSync(fd, out, got, out.length - got, from + got)
      if (n === 0) break
      got += n
    }
    return got === out.length ? out : out.subarray(0, got)
  } finally {
    closeSync(fd)
  }
}

/** A published frame's COMMIT record, parsed; anything else there is corruption. */
function parseRecord(name: string, offset: number, frame: Frame): PublishedRecord {
  if (frame.type !== RECORD_COMMIT) throw corrupt(name, offset, `unknown record type ${frame.type} (written by a newer kestreldb?)`)
  let ops: WriteOp[]
  try {
    ops = decodeCommit(frame.payload)
  } catch (err) {
    throw corrupt(name, offset, `commit record ${frame.lsn} does not parse: ${(err as Error).message}`)
  }
  const badValue = checkStoredValues(ops)
  if (badValue !== undefined) throw corrupt(name, offset, `commit record ${frame.lsn} does not parse: ${badValue}`)
  return { lsn: frame.lsn, payload: frame.payload, ops }
}

/** The header of segment `name` says it starts at `firstLsn` (else KESTREL_CORRUPT). */
function checkSegmentStart(logDir: string, name: string, firstLsn: number): void {
  let header: ReturnType<typeof readSegmentHeader>
  try {
    header = readSegmentHeader(readRange(join(logDir, name), 0, SEGMENT_HEADER_BYTES))
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') throw corrupt(name, 0, `the segment holding record ${firstLsn} is missing`)
    throw err
  }
  if ('error' in header) throw corrupt(name, 0, header.error)
  if (header.firstLsn !== firstLsn) throw corrupt(name, 0, `header says first LSN ${header.firstLsn}, expected ${firstLsn}`)
}

/**
 * The records from `from` (this engine's log end) up to the published `tail`: every frame whole,
 * checksummed and numbered one after the other, the last being `tail.lsn` and ending exactly at
 * `tail.offset` (they are durable, so anything else is corruption). A segment before the tail's
 * is read up to its last whole frame; the next one is the segment named after the next LSN.
 */
export function readToTail(logDir: string, from: LogTail, tail: LogTail): PublishedRecord[] {
  const records: PublishedRecord[] = []
  let segment = from.segment
  let offset = from.offset
  let lsn = from.lsn
  // Bounded: each pass reads one segment, in name order, up to the tail's.
  for (;;) {
    if (segment > tail.segment) throw corrupt(tail.segment, tail.offset, `record ${lsn + 1} is in a later segment (${segment}) than the published tail`)
    const isTail = segment === tail.segment
    if (isTail && offset > tail.offset) throw corrupt(segment, offset, `the published tail (byte ${tail.offset}) is before this engine's log end`)
    const bytes = readRange(join(logDir, segment), offset, isTail ? tail.offset : undefined)
    if (isTail && offset + bytes.length < tail.offset)
      throw corrupt(segment, offset + bytes.length, `the file ends before the published tail (byte ${tail.offset})`)
    let pos = 0
    // Bounded: each iteration consumes one whole frame.
    while (pos < bytes.length) {
      const frame = readFrame(bytes, pos)
      if (!frame) {
        if (isTail) throw corrupt(segment, offset + pos, 'torn, zeroed or checksum-failing record before the published tail')
        break
      }
      if (frame.lsn !== lsn + 1) throw corrupt(segment, offset + pos, `record LSN ${frame.lsn}, expected ${lsn + 1}`)
      records.push(parseRecord(segment, offset + pos, frame))
      lsn = frame.lsn
      pos = frame.end
    }
    if (isTail) break
    segment = segmentName(lsn + 1)
    offset = SEGMENT_HEADER_BYTES
    checkSegmentStart(logDir, segment, lsn + 1)
  }
  if (lsn !== tail.lsn) throw corrupt(tail.segment, tail.offset, `the log ends at LSN ${lsn} there but the published tail says ${tail.lsn}`)
  return records
}

/** What a dead writer left past the published tail, as adoptPastTail took it. */
export interface Adopted {
  records: PublishedRecord[]
  /** Where the log ends now: after the last adopted record (or at the tail). */
  end: LogTail
  /** The segment at `end` was cut (or another one entered): reopen it. */
  changed: boolean
}

/**
 * Take what a dead writer left past `tail` as crash recovery takes a log's end: whole,
 * checksummed, consecutive frames through the last BATCH_END (continuing into the next segment
 * when the writer rolled over), fdatasync'd; the torn rest of the last segment is cut off. Cheap
 * when there is nothing: one frame header read at the tail (zeros or end of file = nothing).
 */
export function adoptPastTail(logDir: string, tail: LogTail): Adopted {
  const nothing: Adopted = { records: [], end: tail, changed: false }
  const peek = readRange(join(logDir, tail.segment), tail.offset, tail.offset + FRAME_HEADER_BYTES)
  if (peek.length === FRAME_HEADER_BYTES && peek.every((b) => b === 0)) return nothing
  // End of file: a sealed segment; a rollover would have created the next one.
  const successor = segmentName(tail.lsn + 1)
  if (peek.length === 0 && (successor === tail.segment || !existsSync(join(logDir, successor)))) return nothing

  const records: PublishedRecord[] = []
  let pending: PublishedRecord[] = []
  const synced = new Set<string>()
  let end = tail
  let segment = tail.segment
  let offset = tail.offset
  let lsn = tail.lsn
  // Bounded: each pass reads one segment; the next exists only if the writer rolled over.
  for (;;) {
    const bytes = readRange(join(logDir, segment), offset)
    let pos = 0
    // Bounded: each iteration consumes one whole frame.
    while (pos < bytes.length) {
      const frame = readFrame(bytes, pos)
      if (!frame || frame.lsn !== lsn + 1) break
      pending.push(parseRecord(segment, offset + pos, frame))
      lsn = frame.lsn
      pos = frame.end
      if (frame.batchEnd) {
        for (const r of pending) records.push(r)
        pending = []
        end = { segment, offset: offset + pos, lsn }
        synced.add(segment)
      }
    }
    // A batch never spans segments: only a segment that ends with a whole batch has a successor.
    const next = segmentName(lsn + 1)
    if (pos < bytes.length || pending.length > 0 || next === segment || !existsSync(join(logDir, next))) break
    const path = join(logDir, next)
    const header = readSegmentHeader(readRange(path, 0, SEGMENT_HEADER_BYTES))
    if ('error' in header || header.firstLsn !== lsn + 1) {
      if (fstatSizeOf(path) < SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES) {
        // A crash while creating the segment: nothing in it was ever acknowledged.
        unlinkSync(path)
        fsyncDirSync(logDir)
        break
      }
      throw corrupt(next, 0, 'error' in header ? header.error : `header says first LSN ${header.firstLsn}`)
    }
    segment = next
    offset = SEGMENT_HEADER_BYTES
    end = { segment, offset, lsn }
  }
  // Cut the torn rest (recovery does the same to a torn tail), then make everything durable.
  const endPath = join(logDir, end.segment)
  const fd = openSync(endPath, 'r+')
  try {
    if (fstatSync(fd).size > end.offset) ftruncateSync(fd, end.offset)
    fdatasyncSync(fd)
  } finally {
    closeSync(fd)
  }
  for (const name of synced) {
    if (name === end.segment) continue
    const f = openSync(join(logDir, name), 'r+')
    try {
      fdatasyncSync(f)
    } finally {
      closeSync(f)
    }
  }
  return { records, end, changed: true }
}

function fstatSizeOf(path: string): number {
  const fd = openSync(path, 'r')
  try {
    return fstatSync(fd).size
  } finally {
    closeSync(fd)
  }
}

function fsyncDirSync(path: string): void {
  const fd = openSync(path, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}
