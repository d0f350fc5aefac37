/**
 * Reading the log from its files (twin of `log/reader.rs`): the segment files of a log directory
 * in LSN order and their bytes, and, for sharing, following the log up to a published tail
 * (`readToTail`) and past it (`readPastTail`). The records in them are read with `readFrame`
 * (lib/format/log.ts); what a damaged record means is decided by recovery.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
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

/** A segment file: its name and the first LSN the name gives. */
export interface SegmentFile {
  name: string
  firstLsn: number
}

/** The segment files of `logDir`, in LSN order; files that are not segments are left out. */
export async function listSegments(logDir: string): Promise<SegmentFile[]> {
  return (await readdir(logDir))
    .map((name) => ({ name, firstLsn: parseSegmentName(name) }))
    .filter((s): s is SegmentFile => s.firstLsn !== undefined)
    .sort((a, b) => a.firstLsn - b.firstLsn)
}

/** A whole segment file and its header: the first LSN it says, or why the header is bad. */
export async function readSegment(path: string): Promise<{ bytes: Uint8Array; header: ReturnType<typeof readSegmentHeader> }> {
  const bytes = new Uint8Array(await readFile(path))
  return { bytes, header: readSegmentHeader(bytes) }
}

// Sharing: following the log other participants append (synchronous: catchUp is).

/** A whole frame read while following the log: its LSN and COMMIT payload, parsed. */
export interface FollowedFrame {
  lsn: number
  /** The COMMIT payload (a view into the bytes read). */
  payload: Uint8Array
  ops: WriteOp[]
}

function damaged(segment: string, offset: number, what: string): KestrelError {
  return new KestrelError(
    'KESTREL_CORRUPT',
    `log segment ${LOG_DIR}/${segment} is corrupt at byte ${offset} (${what}); committed data past this point cannot be trusted: restore from a backup`,
  )
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

/** A followed frame's COMMIT record, parsed; anything else there is corruption. */
function parseFrame(name: string, offset: number, frame: Frame): FollowedFrame {
  if (frame.type !== RECORD_COMMIT) throw damaged(name, offset, `unknown record type ${frame.type} (written by a newer kestreldb?)`)
  let ops: WriteOp[]
  try {
    ops = decodeCommit(frame.payload)
  } catch (err) {
    throw damaged(name, offset, `commit record ${frame.lsn} does not parse: ${(err as Error).message}`)
  }
  const badValue = checkStoredValues(ops)
  if (badValue !== undefined) throw damaged(name, offset, `commit record ${frame.lsn} does not parse: ${badValue}`)
  return { lsn: frame.lsn, payload: frame.payload, ops }
}

/** The header of segment `name` says it starts at `firstLsn` (else KESTREL_CORRUPT). */
function checkSegmentStart(logDir: string, name: string, firstLsn: number): void {
  let header: ReturnType<typeof readSegmentHeader>
  try {
    header = readSegmentHeader(readRange(join(logDir, name), 0, SEGMENT_HEADER_BYTES))
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') throw damaged(name, 0, `the segment holding record ${firstLsn} is missing`)
    throw err
  }
  if ('error' in header) throw damaged(name, 0, header.error)
  if (header.firstLsn !== firstLsn) throw damaged(name, 0, `header says first LSN ${header.firstLsn}, expected ${firstLsn}`)
}

/**
 * The frames from `from` (this engine's log end) up to the published `to`: every frame whole,
 * checksummed and numbered one after the other, the last being `to.lsn` and ending exactly at
 * `to.offset` (they are durable, so anything else is corruption). A segment before the tail's
 * is read up to its last whole frame; the next one is the segment named after the next LSN.
 */
export function readToTail(logDir: string, from: LogTail, to: LogTail): FollowedFrame[] {
  const frames: FollowedFrame[] = []
  let segment = from.segment
  let offset = from.offset
  let lsn = from.lsn
  if (segment !== to.segment && !existsSync(join(logDir, segment))) {
    // The log end was the end of a segment a checkpoint has since trimmed (nothing in it was
    // needed): the next record starts the segment named after it.
    segment = segmentName(lsn + 1)
    offset = SEGMENT_HEADER_BYTES
    checkSegmentStart(logDir, segment, lsn + 1)
  }
  // Bounded: each pass reads one segment, in name order, up to the tail's.
  for (;;) {
    if (segment > to.segment) throw damaged(to.segment, to.offset, `record ${lsn + 1} is in a later segment (${segment}) than the published tail`)
    const isTail = segment === to.segment
    if (isTail && offset > to.offset) throw damaged(segment, offset, `the published tail (byte ${to.offset}) is before this engine's log end`)
    const bytes = readRange(join(logDir, segment), offset, isTail ? to.offset : undefined)
    if (isTail && offset + bytes.length < to.offset)
      throw damaged(segment, offset + bytes.length, `the file ends before the published tail (byte ${to.offset})`)
    let pos = 0
    // Bounded: each iteration consumes one whole frame.
    while (pos < bytes.length) {
      const frame = readFrame(bytes, pos)
      if (!frame) {
        if (isTail) throw damaged(segment, offset + pos, 'torn, zeroed or checksum-failing record before the published tail')
        break
      }
      if (frame.lsn !== lsn + 1) throw damaged(segment, offset + pos, `record LSN ${frame.lsn}, expected ${lsn + 1}`)
      frames.push(parseFrame(segment, offset + pos, frame))
      lsn = frame.lsn
      pos = frame.end
    }
    if (isTail) break
    segment = segmentName(lsn + 1)
    offset = SEGMENT_HEADER_BYTES
    checkSegmentStart(logDir, segment, lsn + 1)
  }
  if (lsn !== to.lsn) throw damaged(to.segment, to.offset, `the log ends at LSN ${lsn} there but the published tail says ${to.lsn}`)
  return frames
}

/** What a dead writer left past the published tail (see `readPastTail`). */
export interface PastTail {
  /** Whole, consecutive frames through the last one flagged BATCH_END. */
  frames: FollowedFrame[]
  /** Where the log ends once they are adopted: after the last of `frames` (or at the tail). */
  end: LogTail
  /** Segments holding `frames` (to fdatasync). */
  segments: string[]
  /** A segment the writer died creating (its header incomplete): to remove. */
  orphan?: string
}

/**
 * Sharing, adopting a dead writer's log: past `tail`, as crash recovery reads the end of a log,
 * the whole, checksummed, consecutive frames through the last BATCH_END (continuing into the
 * next segment when the writer rolled over). Reads only: the engine makes them durable and cuts
 * the torn rest. Cheap when there is nothing: one frame header read at the tail (zeros or end of
 * file = nothing). Undefined: nothing past the tail.
 */
export function readPastTail(logDir: string, tail: LogTail): PastTail | undefined {
  const peek = readRange(join(logDir, tail.segment), tail.offset, tail.offset + FRAME_HEADER_BYTES)
  if (peek.length === FRAME_HEADER_BYTES && peek.every((b) => b === 0)) return undefined
  // End of file: a sealed segment; a rollover would have created the next one.
  const successor = segmentName(tail.lsn + 1)
  if (peek.length === 0 && (successor === tail.segment || !existsSync(join(logDir, successor)))) return undefined

  const past: PastTail = { frames: [], end: tail, segments: [] }
  let pending: FollowedFrame[] = []
  const segments = new Set<string>()
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
      pending.push(parseFrame(segment, offset + pos, frame))
      lsn = frame.lsn
      pos = frame.end
      if (frame.batchEnd) {
        for (const f of pending) past.frames.push(f)
        pending = []
        past.end = { segment, offset: offset + pos, lsn }
        segments.add(segment)
      }
    }
    // A batch never spans segments: only a segment that ends with a whole batch has a successor.
    const next = segmentName(lsn + 1)
    if (pos < bytes.length || pending.length > 0 || next === segment || !existsSync(join(logDir, next))) break
    const path = join(logDir, next)
    const header = readSegmentHeader(readRange(path, 0, SEGMENT_HEADER_BYTES))
    if ('error' in header || header.firstLsn !== lsn + 1) {
      // A crash while creating the segment: nothing in it was ever acknowledged.
      if (fstatSizeOf(path) < SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES) {
        past.orphan = next
        break
      }
      throw damaged(next, 0, 'error' in header ? header.error : `header says first LSN ${header.firstLsn}`)
    }
    segment = next
    offset = SEGMENT_HEADER_BYTES
  }
  // A segment the writer created at rollover but holds nothing whole of: removed (as in Rust), so
  // that the log goes on at the end of the last whole batch.
  if (segment !== past.end.segment) past.orphan = segment
  past.segments = [...segments]
  return past
}

function fstatSizeOf(path: string): number {
  const fd = openSync(path, 'r')
  try {
    return fstatSync(fd).size
  } finally {
    closeSync(fd)
  }
}
