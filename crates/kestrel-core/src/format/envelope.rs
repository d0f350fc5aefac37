//! The index envelope (docs/FORMAT.md "Index envelope"): a stored value that carries the encoded
//! index keys of its version,
//!
//! ```text
//! 0xC1 ‖ u16 LE b ‖ b bytes of entries { u8 m, m bytes name, u16 LE k, k bytes index key } ‖ MessagePack
//! ```
//!
//! Built by the transaction layer (lib/txn); validated here when a commit arrives (payload.rs) and
//! when a value is read back from the page store. The TypeScript twin is `lib/format/envelope.ts`:
//! the validation rules and their order are the same, so both engines refuse the same bytes.
//!
//! Also the index-tree naming and entry-key helpers (docs/FORMAT.md "Index trees").

use super::payload::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// The first byte of an envelope: a byte MessagePack never uses, so a plain value never starts
/// with it.
pub const ENVELOPE_TAG: u8 = 0xC1;
/// Largest envelope block (the u16 length field).
pub const ENVELOPE_BLOCK_BYTES_MAX: usize = 0xFFFF;
/// Tag + block length + the largest block.
pub const ENVELOPE_OVERHEAD_BYTES_MAX: usize = 3 + ENVELOPE_BLOCK_BYTES_MAX;
/// Longest index name, in UTF-8 bytes.
pub const INDEX_NAME_BYTES_MAX: usize = 255;
/// Largest stored value: a 64 MiB MessagePack value in the largest envelope.
pub const STORED_VALUE_BYTES_MAX: usize = VALUE_BYTES_MAX + ENVELOPE_OVERHEAD_BYTES_MAX;

/// Is this stored value an envelope?
pub fn is_envelope(stored: &[u8]) -> bool {
    stored.first() == Some(&ENVELOPE_TAG)
}

/// Bytes before the MessagePack part: 0 for a plain value, `3 + b` for an envelope. Clamped to
/// the value's length so that a malformed envelope (never stored: every path validates first)
/// cannot make a caller slice out of bounds.
pub fn header_len(stored: &[u8]) -> usize {
    if !is_envelope(stored) || stored.len() < 3 {
        return 0;
    }
    let b = u16::from_le_bytes([stored[1], stored[2]]) as usize;
    (3 + b).min(stored.len())
}

/// The MessagePack part of a stored value (a plain value is all MessagePack).
pub fn value(stored: &[u8]) -> &[u8] {
    &stored[header_len(stored)..]
}

/// One (index name, encoded index key) pair of a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexKey<'a> {
    /// UTF-8, 1..=255 bytes, no 0x00 (validated).
    pub index: &'a [u8],
    /// 1..=1024 bytes.
    pub key: &'a [u8],
}

/// The index keys of a stored value (empty for a plain value), or what is wrong with its
/// envelope. `primary_key_bytes` bounds each key so that its index-tree entry fits
/// (`k + |pk| + 2 ≤ 1024`). Same checks, same order, as `envelopeKeys` in lib/format/envelope.ts.
pub fn keys(stored: &[u8], primary_key_bytes: usize) -> Result<Vec<IndexKey<'_>>, String> {
    if !is_envelope(stored) {
        return Ok(Vec::new());
    }
    if stored.len() < 3 {
        return Err("index envelope shorter than its header".into());
    }
    let b = u16::from_le_bytes([stored[1], stored[2]]) as usize;
    if b == 0 || 3 + b > stored.len() {
        return Err(format!("index envelope block length {b} out of range"));
    }
    if stored.len() - 3 - b > VALUE_BYTES_MAX {
        return Err(format!("value length {} out of range inside an index envelope", stored.len() - 3 - b));
    }
    let end = 3 + b;
    let mut pos = 3;
    let mut out: Vec<IndexKey<'_>> = Vec::new();
    // Bounded by the block length: every entry takes at least 4 bytes.
    while pos < end {
        let m = stored[pos] as usize;
        pos += 1;
        if m == 0 || pos + m > end {
            return Err(format!("index name length {m} out of range"));
        }
        let name = &stored[pos..pos + m];
        pos += m;
        if name.contains(&0) {
            return Err("index name contains a 0x00 byte".into());
        }
        if std::str::from_utf8(name).is_err() {
            return Err("index name is not UTF-8".into());
        }
        if pos + 2 > end {
            return Err("index envelope truncated at a key length".into());
        }
        let k = u16::from_le_bytes([stored[pos], stored[pos + 1]]) as usize;
        pos += 2;
        if k == 0 || k > KEY_BYTES_MAX || pos + k > end {
            return Err(format!("index key length {k} out of range"));
        }
        if k + primary_key_bytes + 2 > KEY_BYTES_MAX {
            return Err(format!("index key of {k} bytes with a {primary_key_bytes}-byte primary key exceeds {} bytes", KEY_BYTES_MAX - 2));
        }
        if out.iter().any(|e| e.index == name) {
            return Err(format!("index {} appears twice in one envelope", String::from_utf8_lossy(name)));
        }
        out.push(IndexKey { index: name, key: &stored[pos..pos + k] });
        pos += k;
    }
    debug_assert_eq!(pos, end, "entries end exactly at the block's end");
    debug_assert!(!out.is_empty(), "b ≥ 1 and every entry is whole, so there is one");
    Ok(out)
}

/// Check a stored value: plain (any bytes up to 64 MiB) or a valid envelope.
pub fn validate(stored: &[u8], primary_key_bytes: usize) -> Result<(), String> {
    if !is_envelope(stored) {
        if stored.len() > VALUE_BYTES_MAX {
            return Err(format!("value length {} out of range", stored.len()));
        }
        return Ok(());
    }
    keys(stored, primary_key_bytes).map(|_| ())
}

/// The index keys of a value already validated (in memory, or just read from a checked page):
/// iterates without allocating; stops at the first malformed entry (there is none).
pub fn entries(stored: &[u8]) -> Entries<'_> {
    let end = header_len(stored);
    Entries { block: &stored[..end], pos: if end > 0 { 3 } else { 0 } }
}

/// See [`entries`].
pub struct Entries<'a> {
    /// The envelope header and block (empty for a plain value).
    block: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = IndexKey<'a>;
    fn next(&mut self) -> Option<IndexKey<'a>> {
        let b = self.block;
        if self.pos >= b.len() {
            return None;
        }
        let m = b[self.pos] as usize;
        let name_at = self.pos + 1;
        let klen_at = name_at + m;
        if m == 0 || klen_at + 2 > b.len() {
            debug_assert!(false, "entries() on a malformed envelope");
            self.pos = b.len();
            return None;
        }
        let k = u16::from_le_bytes([b[klen_at], b[klen_at + 1]]) as usize;
        let key_at = klen_at + 2;
        if k == 0 || key_at + k > b.len() {
            debug_assert!(false, "entries() on a malformed envelope");
            self.pos = b.len();
            return None;
        }
        self.pos = key_at + k;
        Some(IndexKey { index: &b[name_at..klen_at], key: &b[key_at..key_at + k] })
    }
}

/// Does this stored value's envelope hold the pair (index, key)?
pub fn holds(stored: &[u8], index: &[u8], key: &[u8]) -> bool {
    entries(stored).any(|e| e.index == index && e.key == key)
}

/// Build an envelope (tests and tools; the transaction layer builds them in production). A
/// version without index keys is stored plain.
pub fn encode(value: &[u8], keys: &[(&str, &[u8])]) -> Vec<u8> {
    if keys.is_empty() {
        return value.to_vec();
    }
    let b: usize = keys.iter().map(|(n, k)| 1 + n.len() + 2 + k.len()).sum();
    assert!(b <= ENVELOPE_BLOCK_BYTES_MAX, "envelope block of {b} bytes");
    let mut out = Vec::with_capacity(3 + b + value.len());
    out.push(ENVELOPE_TAG);
    out.extend_from_slice(&(b as u16).to_le_bytes());
    for (name, key) in keys {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
    }
    out.extend_from_slice(value);
    out
}

/// The separator between a collection's name and an index's in an index tree's name.
pub const INDEX_TREE_SEPARATOR: char = '\u{0}';

/// The page-store tree of index `index` of `collection`: `collection ‖ 0x00 ‖ index`.
pub fn tree_name(collection: &str, index: &[u8]) -> String {
    let mut s = String::with_capacity(collection.len() + 1 + index.len());
    s.push_str(collection);
    s.push(INDEX_TREE_SEPARATOR);
    // Index names are validated UTF-8; a lossy conversion only guards against misuse.
    s.push_str(&String::from_utf8_lossy(index));
    s
}

/// Is this tree name an index tree's? (Collection and index names never contain 0x00.)
pub fn is_index_tree(name: &[u8]) -> bool {
    name.contains(&0)
}

/// The index-tree key of a pair: `ik ‖ pk ‖ u16 BE |pk|`.
pub fn entry_key(index_key: &[u8], primary_key: &[u8]) -> Vec<u8> {
    debug_assert!(primary_key.len() <= KEY_BYTES_MAX);
    let mut out = Vec::with_capacity(index_key.len() + primary_key.len() + 2);
    out.extend_from_slice(index_key);
    out.extend_from_slice(primary_key);
    out.extend_from_slice(&(primary_key.len() as u16).to_be_bytes());
    out
}

/// Split an index-tree key into (index key, primary key); None when its trailing length does not
/// fit (a damaged tree).
pub fn split_entry(entry: &[u8]) -> Option<(&[u8], &[u8])> {
    if entry.len() < 2 {
        return None;
    }
    let n = u16::from_be_bytes([entry[entry.len() - 2], entry[entry.len() - 1]]) as usize;
    let pk_start = (entry.len() - 2).checked_sub(n)?;
    Some((&entry[..pk_start], &entry[pk_start..entry.len() - 2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_envelope_bytes() {
        // The bytes lib/format/envelope.ts builds for value 0x01 with index "by" → key [0x30, 0x61, 0, 0].
        let e = encode(&[0x01], &[("by", &[0x30, 0x61, 0, 0])]);
        assert_eq!(e, vec![0xC1, 9, 0, 2, b'b', b'y', 4, 0, 0x30, 0x61, 0, 0, 0x01]);
        assert_eq!(value(&e), &[0x01]);
        assert_eq!(keys(&e, 3).unwrap(), vec![IndexKey { index: b"by", key: &[0x30, 0x61, 0, 0] }]);
        assert_eq!(entries(&e).collect::<Vec<_>>(), keys(&e, 3).unwrap());
        assert!(holds(&e, b"by", &[0x30, 0x61, 0, 0]));
        assert!(!holds(&e, b"by", &[0x30, 0x62, 0, 0]));
        assert!(!holds(&e, b"b", &[0x30, 0x61, 0, 0]));
        // Plain values pass through.
        assert_eq!(value(&[0x92, 1, 2]), &[0x92, 1, 2]);
        assert_eq!(keys(&[0x92, 1, 2], 3).unwrap(), vec![]);
        assert_eq!(entries(&[0x92]).count(), 0);
        assert_eq!(encode(&[7], &[]), vec![7]);
        // An empty MessagePack part is allowed by the format.
        assert_eq!(value(&encode(&[], &[("i", &[1])])), &[] as &[u8]);
    }

    #[test]
    fn entry_keys_split_back() {
        let k = entry_key(&[0x30, 0x61, 0, 0], &[0x10, 1, 2]);
        assert_eq!(k, vec![0x30, 0x61, 0, 0, 0x10, 1, 2, 0, 3]);
        assert_eq!(split_entry(&k), Some((&[0x30, 0x61, 0, 0][..], &[0x10, 1, 2][..])));
        assert_eq!(split_entry(&[0, 5]), None);
        assert_eq!(split_entry(&[1]), None);
        assert_eq!(tree_name("users", b"byName"), "users\u{0}byName");
        assert!(is_index_tree(tree_name("a", b"b").as_bytes()));
        assert!(!is_index_tree(b"users"));
    }

    #[test]
    fn every_malformed_envelope_is_refused() {
        let ok = encode(&[0x01], &[("a", &[1]), ("b", &[2, 3])]);
        assert!(validate(&ok, 10).is_ok());
        let with_b = |block: &[u8]| {
            let mut v = vec![ENVELOPE_TAG];
            v.extend_from_slice(&(block.len() as u16).to_le_bytes());
            v.extend_from_slice(block);
            v.push(0xc0);
            v
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0xC1], "shorter than its header"),
            (vec![0xC1, 0], "shorter than its header"),
            (vec![0xC1, 0, 0, 0xc0], "block length 0"),
            (vec![0xC1, 9, 0, 1], "block length 9"),
            (with_b(&[0, 1, 0, 1]), "index name length 0"),
            (with_b(&[5, b'a', 1, 0, 1]), "index name length 5"),
            (with_b(&[1, 0, 1, 0, 1]), "0x00"),
            (with_b(&[1, 0xff, 1, 0, 1]), "not UTF-8"),
            (with_b(&[1, b'a', 1]), "truncated at a key length"),
            (with_b(&[1, b'a', 0, 0]), "index key length 0"),
            (with_b(&[1, b'a', 2, 0, 1]), "index key length 2"),
            (with_b(&[1, b'a', 1, 0, 1, 1, b'a', 1, 0, 2]), "appears twice"),
        ];
        for (bytes, why) in cases {
            let e = validate(&bytes, 10).unwrap_err();
            assert!(e.contains(why), "{why}: got {e}");
        }
        // k + |pk| + 2 ≤ 1024.
        let long = encode(&[0x01], &[("a", &[7; 1000])]);
        assert!(validate(&long, 22).is_ok());
        assert!(validate(&long, 23).unwrap_err().contains("exceeds 1022 bytes"));
        let too_long_key = with_b(&{
            let mut b = vec![1, b'a'];
            b.extend_from_slice(&1025u16.to_le_bytes());
            b.extend(std::iter::repeat_n(1, 1025));
            b
        });
        assert!(validate(&too_long_key, 1).unwrap_err().contains("index key length 1025"));
    }
}
