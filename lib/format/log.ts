/**
 * The log's bytes (docs/FORMAT.md "Directory", "Log"): the identity file, segment names and
 * headers, record frames. Engine-neutral: the ts engine writes and recovers with it, the tools
 * (verify, backup, manifest) read with it, and the Rust twin (`format/log.rs`) writes the same bytes.
 */
import { crc32c } from './crc32c.js'

/** Format version of log segments (their header). */
export const FORMAT_VERSION = 1
/** Identity file version written: 2 = the directory may be shared by several processes. */
export const IDENTITY_VERSION = 2
/** Identity file versions read (1 is rewritten to 2 at open). */
export const IDENTITY_VERSION_MIN = 1
export const IDENTITY_FILE = 'KESTREL'
export const IDENTITY_BYTES = 16
export const IDENTITY_MAGIC = Uint8Array.from([0x4b, 0x45, 0x53, 0x54, 0x52, 0x45, 0x4c, 0x01])
export const LOG_DIR = 'log'
export const SEGMENT_SUFFIX = '.klog'
export const SEGMENT_HEADER_BYTES = 32
export const SEGMENT_MAGIC = Uint8Array.from([0x4b, 0x4c, 0x4f, 0x47, 0x53, 0x45, 0x47, 0x01])
export const FRAME_HEADER_BYTES = 17
/** Largest record payload, in bytes. */
export const RECORD_PAYLOAD_BYTES_MAX = 256 * 1024 * 1024
export const RECORD_COMMIT = 1
export const BATCH_END = 0x80

/** The identity file's 16 bytes (version 1 only for tests of the upgrade). */
export function identityBytes(version = IDENTITY_VERSION): Uint8Array {
  const out = new Uint8Array(IDENTITY_BYTES)
  const view = new DataView(out.buffer)
  out.set(IDENTITY_MAGIC, 0)
  view.setUint32(8, version, true)
  view.setUint32(12, crc32c(out, 0, 0, 12), true)
  return out
}

/** Segment file name for a first LSN: 20 decimal digits + `.klog`. */
export function segmentName(firstLsn: number): string {
  return String(firstLsn).padStart(20, '0') + SEGMENT_SUFFIX
}

/** Parse a segment file name; undefined when it is not one. */
export function parseSegmentName(name: string): number | undefined {
  if (!/^\d{20}\.klog$/.test(name)) return undefined
  const n = Number(name.slice(0, 20))
  return Number.isSafeInteger(n) ? n : undefined
}

export function segmentHeader(firstLsn: number): Uint8Array {
  const out = new Uint8Array(SEGMENT_HEADER_BYTES)
  const view = new DataView(out.buffer)
  out.set(SEGMENT_MAGIC, 0)
  view.setUint32(8, FORMAT_VERSION, true)
  view.setBigUint64(16, BigInt(firstLsn), true)
  view.setUint32(28, crc32c(out, 0, 0, 28), true)
  return out
}

/** Check a segment header; returns its first LSN or a reason it is bad. */
export function readSegmentHeader(bytes: Uint8Array): { firstLsn: number } | { error: string } {
  if (bytes.length < SEGMENT_HEADER_BYTES) return { error: `header is ${bytes.length} bytes, expected ${SEGMENT_HEADER_BYTES}` }
  const view = new DataView(bytes.buffer, bytes.byteOffset, SEGMENT_HEADER_BYTES)
  if (view.getUint32(28, true) !== crc32c(bytes, 0, 0, 28)) return { error: 'header checksum mismatch' }
  for (let i = 0; i < 8; i++) if (bytes[i] !== SEGMENT_MAGIC[i]) return { error: 'bad segment magic' }
  const version = view.getUint32(8, true)
  if (version !== FORMAT_VERSION) return { error: `segment format version ${version}, this build reads ${FORMAT_VERSION}` }
  return { firstLsn: Number(view.getBigUint64(16, true)) }
}

/** Write one frame (header + payload) into `out` at `pos`; returns the position after it. */
export function writeFrame(out: Uint8Array, pos: number, lsn: number, type: number, payload: Uint8Array): number {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  view.setUint32(pos, payload.length, true)
  view.setBigUint64(pos + 8, BigInt(lsn), true)
  out[pos + 16] = type
  out.set(payload, pos + FRAME_HEADER_BYTES)
  const end = pos + FRAME_HEADER_BYTES + payload.length
  view.setUint32(pos + 4, crc32c(out, 0, pos + 8, end), true)
  return end
}

/** A whole, checksummed frame found in a segment. */
export interface Frame {
  offset: number
  lsn: number
  type: number
  batchEnd: boolean
  payload: Uint8Array
  /** Offset just past the frame. */
  end: number
}

/** Read a whole frame at `pos`, or undefined if the bytes there are not one (short, bad CRC). */
export function readFrame(bytes: Uint8Array, pos: number): Frame | undefined {
  if (pos + FRAME_HEADER_BYTES > bytes.length) return undefined
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const length = view.getUint32(pos, true)
  if (length > RECORD_PAYLOAD_BYTES_MAX) return undefined
  const end = pos + FRAME_HEADER_BYTES + length
  if (end > bytes.length) return undefined
  if (view.getUint32(pos + 4, true) !== crc32c(bytes, 0, pos + 8, end)) return undefined
  const typeByte = bytes[pos + 16]!
  return {
    offset: pos,
    lsn: Number(view.getBigUint64(pos + 8, true)),
    type: typeByte & 0x7f,
    batchEnd: (typeByte & BATCH_END) !== 0,
    payload: bytes.subarray(pos + FRAME_HEADER_BYTES, end),
    end,
  }
}
