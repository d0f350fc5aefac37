//! The log block of the `SHARED` file (docs/FORMAT.md "Sharing"): the tail that the holder of the
//! write lock publishes for the other participants. The TypeScript twin is `lib/format/shared.ts`;
//! the rest of the file (checkpoint block, slots) is written above the seam, by
//! `lib/shared/file.ts`.
//!
//! The block is two 64-byte copies, each `magic u32 | version u32 | lsn u64 | segment u64 |
//! offset u64 | flags u32 | zeros | crc32c u32` (CRC of the copy's first 60 bytes), written with
//! one write: a reader racing it finds the first copy whole, or torn with the second still whole.

use super::crc32c;

pub const SHARED_FILE: &str = "SHARED";
pub const SHARED_MAGIC: u32 = 0x5248_534b; // "KSHR"
pub const SHARED_VERSION: u32 = 1;
pub const BLOCK_COPY_BYTES: usize = 64;
/// The log block's byte offset in `SHARED`.
pub const LOG_BLOCK_AT: u64 = 0;
/// Flag: the bytes past the tail belong to a batch whose write or sync failed.
pub const LOG_ABANDONED: u32 = 1;

/// Both copies of a block of `SHARED`: magic, version, what `fill` writes at bytes 8..60, the
/// CRC (see the module).
pub fn sealed_block(fill: impl FnOnce(&mut [u8])) -> [u8; 2 * BLOCK_COPY_BYTES] {
    let mut b = [0u8; 2 * BLOCK_COPY_BYTES];
    b[0..4].copy_from_slice(&SHARED_MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&SHARED_VERSION.to_le_bytes());
    fill(&mut b[..60]);
    let crc = crc32c(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    b.copy_within(0..BLOCK_COPY_BYTES, BLOCK_COPY_BYTES);
    b
}

/// Both copies of the log block for a tail (`lsn`, the segment named after `segment_first_lsn`,
/// `offset`).
pub fn log_block(lsn: u64, segment_first_lsn: u64, offset: u64, abandoned: bool) -> [u8; 2 * BLOCK_COPY_BYTES] {
    sealed_block(|b| {
        b[8..16].copy_from_slice(&lsn.to_le_bytes());
        b[16..24].copy_from_slice(&segment_first_lsn.to_le_bytes());
        b[24..32].copy_from_slice(&offset.to_le_bytes());
        b[32..36].copy_from_slice(&(if abandoned { LOG_ABANDONED } else { 0 }).to_le_bytes());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_copies_are_whole_and_equal() {
        let b = log_block(42, 1, 4096, false);
        assert_eq!(b[..64], b[64..]);
        assert_eq!(u32::from_le_bytes(b[60..64].try_into().unwrap()), crc32c(&b[0..60]));
        assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), 0);
        assert_eq!(u32::from_le_bytes(log_block(42, 1, 4096, true)[32..36].try_into().unwrap()), LOG_ABANDONED);
    }
}
