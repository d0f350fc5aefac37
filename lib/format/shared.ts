/**
 * The log block of the `SHARED` file (docs/FORMAT.md "Sharing"): the tail that the holder of the
 * write lock publishes for the other participants. The Rust twin is
 * `crates/kestrel-core/src/format/shared.rs`; the rest of the file (checkpoint block, slots) is
 * written above the seam, by `lib/shared/file.ts`.
 *
 * The block is two 64-byte copies, each `magic u32 | version u32 | lsn u64 | segment u64 |
 * offset u64 | flags u32 | zeros | crc32c u32` (CRC of the copy's first 60 bytes), written with
 * one write: a reader racing it finds the first copy whole, or torn with the second still whole.
 */
import { crc32c } from './crc32c.js'

export const SHARED_FILE = 'SHARED'
export const SHARED_MAGIC = 0x5248534b // "KSHR"
export const SHARED_VERSION = 1
export const BLOCK_COPY_BYTES = 64
/** The log block's byte offset in `SHARED`. */
export const LOG_BLOCK_AT = 0
/** Flag: the bytes past the tail belong to a batch whose write or sync failed. */
export const LOG_ABANDONED = 1

/**
 * Both copies of a block of `SHARED`: magic, version, what `fill` writes at bytes 8..60, the
 * CRC. Written with one write, copied into the page cache front to back: a reader racing it finds
 * the first copy whole and new, or torn with the second still whole and old.
 */
export function sealedBlock(fill: (v: DataView) => void): Uint8Array {
  const b = new Uint8Array(2 * BLOCK_COPY_BYTES)
  const v = new DataView(b.buffer)
  v.setUint32(0, SHARED_MAGIC, true)
  v.setUint32(4, SHARED_VERSION, true)
  fill(v)
  v.setUint32(60, crc32c(b, 0, 0, 60), true)
  b.copyWithin(BLOCK_COPY_BYTES, 0, BLOCK_COPY_BYTES)
  return b
}

/** Both copies of the log block for a tail (`lsn`, the segment named after `segmentFirstLsn`, `offset`). */
export function logBlock(lsn: number, segmentFirstLsn: number, offset: number, abandoned: boolean): Uint8Array {
  return sealedBlock((v) => {
    v.setBigUint64(8, BigInt(lsn), true)
    v.setBigUint64(16, BigInt(segmentFirstLsn), true)
    v.setBigUint64(24, BigInt(offset), true)
    v.setUint32(32, abandoned ? LOG_ABANDONED : 0, true)
  })
}
