/**
 * Log recovery for the ts engine (twin of `log/recovery.rs`): the algorithm of docs/FORMAT.md
 * "Recovery", step for step. Returns every good COMMIT record after the checkpoint in LSN order
 * and leaves the directory with a clean tail: damage in the last segment is a torn final write
 * (cut) unless a later batch follows it, which proves it was durable (corruption).
 */
import { unlink, open as fsOpen } from 'node:fs/promises'
import { join } from 'node:path'
import { KestrelError } from '../../../errors.js'
import { FRAME_HEADER_BYTES, LOG_DIR, RECORD_COMMIT, SEGMENT_HEADER_BYTES, parseSegmentName, readFrame, type Frame } from '../../../format/log.js'
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
 */
export function recover(dir: string, checkpointLsn = 0): Promise<Recovered> {
  return replay(dir, checkpointLsn, undefined)
}

/**
 * Sharing, other participants live: replay the log under `dir` on top of a checkpoint at
 * `checkpointLsn` only up to the published `tail` — the frames through LSN `tail.lsn`, which
 * ends at `tail.segment` byte `tail.offset` — and change nothing on disk (the bytes past it
 * belong to another participant's writer); anything else there is corruption.
 */
export function recoverToTail(dir: string, checkpointLsn: number, tail: LogTail): Promise<Recovered> {
  return replay(dir, checkpointLsn, tail)
}

/** `recover` and `recoverToTail`: one pass, so that both check the log the same way. */
async function replay(dir: string, checkpointLsn: number, tail: LogTail | undefined): Promise<Recovered> {
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
