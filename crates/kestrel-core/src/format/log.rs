//! Byte layouts of the log and the directory (docs/FORMAT.md): identity file, segment names and
//! headers, record frames, BATCH_END.

use super::{crc32c, u32_at, u64_at, FORMAT_VERSION};

pub const IDENTITY_FILE: &str = "KESTREL";
pub const LOCK_FILE: &str = "LOCK";
pub const IDENTITY_BYTES: usize = 16;
pub const IDENTITY_MAGIC: [u8; 8] = *b"KESTREL\x01";
/// The identity file's version: 2 = the directory may be shared by several processes (segment
/// and page formats are unchanged: still [`FORMAT_VERSION`]). Version 1 is read and rewritten.
pub const IDENTITY_VERSION: u32 = 2;
pub const LOG_DIR: &str = "log";
pub const SEGMENT_SUFFIX: &str = ".klog";
pub const SEGMENT_HEADER_BYTES: usize = 32;
pub const SEGMENT_MAGIC: [u8; 8] = *b"KLOGSEG\x01";
pub const FRAME_HEADER_BYTES: usize = 17;
/// Largest record payload.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 256 * 1024 * 1024;
pub const RECORD_COMMIT: u8 = 1;
/// Set on the last frame of every batch write.
pub const BATCH_END: u8 = 0x80;

pub fn identity_bytes() -> [u8; IDENTITY_BYTES] {
    let mut out = [0u8; IDENTITY_BYTES];
    out[..8].copy_from_slice(&IDENTITY_MAGIC);
    out[8..12].copy_from_slice(&IDENTITY_VERSION.to_le_bytes());
    let crc = crc32c(&out[..12]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

/// `00000000000000000001.klog` for LSN 1.
pub fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn segment_header(first_lsn: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut out = [0u8; SEGMENT_HEADER_BYTES];
    out[..8].copy_from_slice(&SEGMENT_MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c(&out[..28]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The first LSN of a valid header, or why it is not one.
pub fn read_segment_header(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(format!("header is {} bytes, expected {SEGMENT_HEADER_BYTES}", bytes.len()));
    }
    if u32_at(bytes, 28) != crc32c(&bytes[..28]) {
        return Err("header checksum mismatch".into());
    }
    if bytes[..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(format!("segment format version {version}, this build reads {FORMAT_VERSION}"));
    }
    Ok(u64_at(bytes, 16))
}

/// Append one frame to `out`.
pub fn write_frame(out: &mut Vec<u8>, lsn: u64, type_byte: u8, payload: &[u8]) {
    debug_assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX);
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.push(type_byte);
    out.extend_from_slice(payload);
    let crc = crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A whole, checksummed frame inside a segment's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub lsn: u64,
    pub record_type: u8,
    pub batch_end: bool,
    pub payload: &'a [u8],
    /// Offset just past the frame.
    pub end: usize,
}

/// Read a whole frame at `pos`, or `None` when the bytes there are not one.
pub fn read_frame(bytes: &[u8], pos: usize) -> Option<Frame<'_>> {
    if pos + FRAME_HEADER_BYTES > bytes.len() {
        return None;
    }
    let len = u32_at(bytes, pos) as usize;
    if len > RECORD_PAYLOAD_BYTES_MAX {
        return None;
    }
    let end = pos + FRAME_HEADER_BYTES + len;
    if end > bytes.len() || u32_at(bytes, pos + 4) != crc32c(&bytes[pos + 8..end]) {
        return None;
    }
    let t = bytes[pos + 16];
    Some(Frame { lsn: u64_at(bytes, pos + 8), record_type: t & 0x7f, batch_end: t & BATCH_END != 0, payload: &bytes[pos + FRAME_HEADER_BYTES..end], end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_identity_and_header() {
        let id = identity_bytes();
        assert_eq!(&id[..12], &[0x4b, 0x45, 0x53, 0x54, 0x52, 0x45, 0x4c, 0x01, 2, 0, 0, 0]);
        let h = segment_header(7);
        assert_eq!(&h[..8], b"KLOGSEG\x01");
        assert_eq!(read_segment_header(&h), Ok(7));
        assert_eq!(segment_name(1), "00000000000000000001.klog");
        assert_eq!(parse_segment_name("00000000000000000001.klog"), Some(1));
        assert_eq!(parse_segment_name("1.klog"), None);
    }

    #[test]
    fn golden_frame_bytes() {
        let mut out = Vec::new();
        write_frame(&mut out, 2, RECORD_COMMIT | BATCH_END, &[0xAA, 0xBB]);
        // length 2, crc, lsn 2, type 0x81, payload
        assert_eq!(&out[..4], &[2, 0, 0, 0]);
        assert_eq!(&out[8..17], &[2, 0, 0, 0, 0, 0, 0, 0, 0x81]);
        assert_eq!(&out[17..], &[0xAA, 0xBB]);
        let crc = crc32c(&[2, 0, 0, 0, 0, 0, 0, 0, 0x81, 0xAA, 0xBB]);
        assert_eq!(&out[4..8], &crc.to_le_bytes());
        let f = read_frame(&out, 0).expect("whole frame");
        assert_eq!((f.lsn, f.record_type, f.batch_end, f.payload, f.end), (2, 1, true, &[0xAA, 0xBB][..], 19));
        out[18] ^= 1;
        assert!(read_frame(&out, 0).is_none());
    }
}
