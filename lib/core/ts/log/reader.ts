/**
 * Reading log segments from files (twin of `log/reader.rs`), for recovery: the segment files of
 * a log directory in LSN order, and a segment's bytes with its checked header. The records in
 * them are read with `readFrame` (lib/format/log.ts).
 */
import { readdir, readFile } from 'node:fs/promises'
import { parseSegmentName, readSegmentHeader } from '../../../format/log.js'

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
