//! The engine-neutral byte format of docs/FORMAT.md: every byte both engines and the tools write
//! and read. The TypeScript twin is `lib/format/`; the two must agree byte for byte.
//!
//! - `log.rs`: identity file, segment names and headers, record frames, BATCH_END.
//! - `payload.rs`: the COMMIT payload.
//! - `envelope.rs`: the index envelope, index-tree names and entry keys.
//! - `page_layout.rs`: the pages of `pages.kdb` (header, meta, leaf, branch, overflow, free list,
//!   packing).
//! - `shared.rs`: the log block of the `SHARED` file (sharing).
//!
//! Format-wide: the version and the checksum below, little-endian integers throughout.

pub mod envelope;
pub mod log;
pub mod page_layout;
pub mod payload;
pub mod shared;

/// The on-disk format version, in the identity file, every segment header and every meta page.
pub const FORMAT_VERSION: u32 = 1;

/// CRC32C (Castagnoli): the checksum of the identity file, segment headers, frames and pages.
pub fn crc32c(bytes: &[u8]) -> u32 {
    ::crc32c::crc32c(bytes)
}

pub fn u32_at(b: &[u8], pos: usize) -> u32 {
    u32::from_le_bytes(b[pos..pos + 4].try_into().expect("4 bytes"))
}

pub fn u64_at(b: &[u8], pos: usize) -> u64 {
    u64::from_le_bytes(b[pos..pos + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
