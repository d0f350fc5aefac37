//! The `COMMIT` payload (docs/FORMAT.md): a collection table, then PUT / DELETE ops.

use super::envelope::{self, STORED_VALUE_BYTES_MAX};

pub const OP_PUT: u8 = 1;
pub const OP_DELETE: u8 = 2;
/// Merge: append the items of a MessagePack array to the key's list.
pub const OP_APPEND: u8 = 3;
/// Merge: add an f64 (8 bytes LE) to the key's number.
pub const OP_INCREMENT: u8 = 4;
pub const KEY_BYTES_MAX: usize = 1024;
pub const VALUE_BYTES_MAX: usize = 64 * 1024 * 1024;
pub const COLLECTION_NAME_BYTES_MAX: usize = 255;
pub const COMMIT_OPS_MAX: usize = 1 << 24;

/// One write of a commit. `value` is empty for a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// `OP_PUT`, `OP_DELETE`, `OP_APPEND` or `OP_INCREMENT`.
    pub kind: u8,
    /// Index into [`Commit::collections`].
    pub collection: u16,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Op {
    pub fn is_merge(&self) -> bool {
        self.kind == OP_APPEND || self.kind == OP_INCREMENT
    }
}

/// Check one op's kind and value length. A PUT value may be an index envelope, so its length
/// field may reach [`STORED_VALUE_BYTES_MAX`]; [`check_put_value`] then holds a plain value to
/// 64 MiB.
fn check_op(kind: u8, value_len: Option<usize>) -> Result<(), String> {
    match (kind, value_len) {
        (OP_DELETE, None) => Ok(()),
        (OP_PUT, Some(n)) if n <= STORED_VALUE_BYTES_MAX => Ok(()),
        (OP_APPEND, Some(n)) if n <= VALUE_BYTES_MAX => Ok(()),
        (OP_INCREMENT, Some(8)) => Ok(()),
        (OP_PUT | OP_APPEND | OP_INCREMENT, Some(n)) => Err(format!("value length {n} out of range for op {kind}")),
        _ => Err(format!("unknown op {kind}")),
    }
}

/// A PUT value is plain MessagePack (≤ 64 MiB) or a valid index envelope (docs/FORMAT.md "Index
/// envelope"): one starting with 0xC1 that does not parse is refused here, so that the store and
/// the checkpoint never see a malformed one.
fn check_put_value(value: &[u8], key_len: usize) -> Result<(), String> {
    if !envelope::is_envelope(value) {
        if value.len() > VALUE_BYTES_MAX {
            return Err(format!("value length {} out of range for op {OP_PUT}", value.len()));
        }
        return Ok(());
    }
    envelope::keys(value, key_len).map(|_| ()).map_err(|e| format!("PUT value: {e}"))
}

const fn has_value(kind: u8) -> bool {
    kind != OP_DELETE
}

/// A parsed commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub collections: Vec<String>,
    pub ops: Vec<Op>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.pos + n > self.bytes.len() {
            return Err(format!("commit payload truncated reading {what} at byte {}", self.pos));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
}

/// Parse and validate a payload; the error says what is wrong (the caller picks the code).
pub fn decode(bytes: &[u8]) -> Result<Commit, String> {
    let mut r = Reader { bytes, pos: 0 };
    let count = r.u16("collection count")? as usize;
    if count == 0 {
        return Err("commit payload has no collections".into());
    }
    let mut collections = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.u16("collection name length")? as usize;
        if len == 0 || len > COLLECTION_NAME_BYTES_MAX {
            return Err(format!("collection name length {len} out of range"));
        }
        let name = std::str::from_utf8(r.take(len, "collection name")?).map_err(|_| "collection name is not UTF-8".to_string())?;
        collections.push(name.to_string());
    }
    let op_count = r.u32("op count")? as usize;
    if op_count == 0 || op_count > COMMIT_OPS_MAX {
        return Err(format!("op count {op_count} out of range"));
    }
    let mut ops = Vec::with_capacity(op_count.min(1 << 16));
    for _ in 0..op_count {
        let kind = r.u8("op header")?;
        let collection = r.u16("op header")?;
        let key_len = r.u32("op header")? as usize;
        if !(OP_PUT..=OP_INCREMENT).contains(&kind) {
            return Err(format!("unknown op {kind}"));
        }
        if collection as usize >= count {
            return Err(format!("collection index {collection} out of range"));
        }
        if key_len == 0 || key_len > KEY_BYTES_MAX {
            return Err(format!("key length {key_len} out of range"));
        }
        let key = r.take(key_len, "key")?.to_vec();
        let value = if has_value(kind) {
            let value_len = r.u32("value length")? as usize;
            check_op(kind, Some(value_len))?;
            let value = r.take(value_len, "value")?;
            if kind == OP_PUT {
                check_put_value(value, key_len)?;
            }
            value.to_vec()
        } else {
            Vec::new()
        };
        ops.push(Op { kind, collection, key, value });
    }
    if r.pos != bytes.len() {
        return Err(format!("commit payload has {} trailing bytes", bytes.len() - r.pos));
    }
    Ok(Commit { collections, ops })
}

/// Check a payload without copying anything (the same rules as [`decode`]).
pub fn validate(bytes: &[u8]) -> Result<(), String> {
    let mut r = Reader { bytes, pos: 0 };
    let count = r.u16("collection count")? as usize;
    if count == 0 {
        return Err("commit payload has no collections".into());
    }
    for _ in 0..count {
        let len = r.u16("collection name length")? as usize;
        if len == 0 || len > COLLECTION_NAME_BYTES_MAX {
            return Err(format!("collection name length {len} out of range"));
        }
        std::str::from_utf8(r.take(len, "collection name")?).map_err(|_| "collection name is not UTF-8".to_string())?;
    }
    let op_count = r.u32("op count")? as usize;
    if op_count == 0 || op_count > COMMIT_OPS_MAX {
        return Err(format!("op count {op_count} out of range"));
    }
    for _ in 0..op_count {
        let kind = r.u8("op header")?;
        let collection = r.u16("op header")? as usize;
        let key_len = r.u32("op header")? as usize;
        if !(OP_PUT..=OP_INCREMENT).contains(&kind) {
            return Err(format!("unknown op {kind}"));
        }
        if collection >= count {
            return Err(format!("collection index {collection} out of range"));
        }
        if key_len == 0 || key_len > KEY_BYTES_MAX {
            return Err(format!("key length {key_len} out of range"));
        }
        r.take(key_len, "key")?;
        if has_value(kind) {
            let value_len = r.u32("value length")? as usize;
            check_op(kind, Some(value_len))?;
            let value = r.take(value_len, "value")?;
            if kind == OP_PUT {
                check_put_value(value, key_len)?;
            }
        }
    }
    if r.pos != bytes.len() {
        return Err(format!("commit payload has {} trailing bytes", bytes.len() - r.pos));
    }
    Ok(())
}

/// Encode a commit (used by tests and tools; the TypeScript side builds payloads in production).
pub fn encode(commit: &Commit) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(commit.collections.len() as u16).to_le_bytes());
    for name in &commit.collections {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    out.extend_from_slice(&(commit.ops.len() as u32).to_le_bytes());
    for op in &commit.ops {
        out.push(op.kind);
        out.extend_from_slice(&op.collection.to_le_bytes());
        out.extend_from_slice(&(op.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&op.key);
        if has_value(op.kind) {
            out.extend_from_slice(&(op.value.len() as u32).to_le_bytes());
            out.extend_from_slice(&op.value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_payload_bytes_match_the_typescript_encoder() {
        // The same bytes __test__/codec.test.ts expects from lib/format/payload.ts.
        let bytes = [2, 0, 1, 0, 0x61, 1, 0, 0x62, 2, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 2, 0, 0, 0, 9, 9, 2, 1, 0, 1, 0, 0, 0, 2];
        let c = decode(&bytes).expect("valid");
        assert_eq!(c.collections, vec!["a", "b"]);
        assert_eq!(
            c.ops,
            vec![Op { kind: OP_PUT, collection: 0, key: vec![1], value: vec![9, 9] }, Op { kind: OP_DELETE, collection: 1, key: vec![2], value: vec![] },]
        );
        assert_eq!(encode(&c), bytes);
        assert_eq!(validate(&bytes), Ok(()));
        assert!(validate(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&bytes[..bytes.len() - 1]).unwrap_err().contains("truncated"));
        let mut extra = bytes.to_vec();
        extra.push(0);
        assert!(decode(&extra).unwrap_err().contains("trailing"));
        assert!(decode(&[0, 0]).is_err());
        // INCREMENT carries exactly 8 bytes.
        let inc = encode(&Commit { collections: vec!["a".into()], ops: vec![Op { kind: OP_INCREMENT, collection: 0, key: vec![1], value: vec![0; 8] }] });
        assert!(decode(&inc).is_ok());
        let bad = encode(&Commit { collections: vec!["a".into()], ops: vec![Op { kind: OP_INCREMENT, collection: 0, key: vec![1], value: vec![0; 7] }] });
        assert!(validate(&bad).is_err());
    }

    #[test]
    fn every_malformed_shape_is_refused_by_both_parsers() {
        let op = |kind: u8, collection: u16, key: Vec<u8>, value: Vec<u8>| Op { kind, collection, key, value };
        let one = |o: Op| encode(&Commit { collections: vec!["a".into()], ops: vec![o] });
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (one(op(OP_PUT, 0, vec![], vec![1])), "key length 0"),
            (one(op(OP_PUT, 0, vec![7; KEY_BYTES_MAX + 1], vec![1])), "key length 1025"),
            (one(op(OP_PUT, 1, vec![1], vec![1])), "collection index 1"),
            (one(op(9, 0, vec![1], vec![])), "unknown op 9"),
            (encode(&Commit { collections: vec!["a".into()], ops: vec![] }), "op count 0"),
            (encode(&Commit { collections: vec!["".into()], ops: vec![op(OP_DELETE, 0, vec![1], vec![])] }), "name length 0"),
            (vec![1, 0, 2, 0, 0xFF, 0xFE, 1, 0, 0, 0, 2, 0, 0, 1, 0, 0, 0, 1], "not UTF-8"),
        ];
        // A value length past 64 MiB + the largest envelope is refused from its length field alone.
        let mut big = one(op(OP_PUT, 0, vec![1], vec![]));
        let n = big.len();
        big[n - 4..].copy_from_slice(&(STORED_VALUE_BYTES_MAX as u32 + 1).to_le_bytes());
        cases.push((big, "value length 67174403"));
        // APPEND values carry no envelope: 64 MiB is their bound.
        let mut big = one(op(OP_APPEND, 0, vec![1], vec![]));
        let n = big.len();
        big[n - 4..].copy_from_slice(&(VALUE_BYTES_MAX as u32 + 1).to_le_bytes());
        cases.push((big, "value length 67108865"));
        // A PUT value starting with 0xC1 must be a valid envelope.
        cases.push((one(op(OP_PUT, 0, vec![1], vec![0xC1])), "PUT value: index envelope shorter than its header"));
        cases.push((one(op(OP_PUT, 0, vec![1], vec![0xC1, 9, 0, 1, b'a', 1, 0])), "PUT value: index envelope block length 9"));
        cases.push((one(op(OP_PUT, 0, vec![1], vec![0xC1, 4, 0, 1, b'a', 1, 0])), "PUT value: index key length 1 out of range"));
        cases.push((one(op(OP_PUT, 0, vec![1], envelope::encode(&[1], &[("i", &[7; 1022])]))), "PUT value: index key of 1022 bytes with a 1-byte"));
        let long_pk = encode(&Commit { collections: vec!["a".into()], ops: vec![op(OP_PUT, 0, vec![1; 23], envelope::encode(&[1], &[("i", &[7; 1000])]))] });
        cases.push((long_pk, "exceeds 1022 bytes"));
        for (bytes, why) in cases {
            let d = decode(&bytes).unwrap_err();
            let v = validate(&bytes).unwrap_err();
            assert!(d.contains(why), "{why}: decode said {d}");
            assert_eq!(d, v, "{why}: both parsers agree");
        }
        // A valid envelope, and the largest plain value, pass; one byte more is refused.
        let ok = one(op(OP_PUT, 0, vec![1; 22], envelope::encode(&[0x91, 1], &[("i", &[7; 1000]), ("j", &[1])])));
        assert_eq!(validate(&ok), Ok(()));
        assert_eq!(encode(&decode(&ok).unwrap()), ok);
        let plain = one(op(OP_PUT, 0, vec![1], vec![0; VALUE_BYTES_MAX]));
        assert_eq!(validate(&plain), Ok(()));
        let plain = one(op(OP_PUT, 0, vec![1], vec![0; VALUE_BYTES_MAX + 1]));
        assert_eq!(validate(&plain).unwrap_err(), "value length 67108865 out of range for op 1");
        assert_eq!(decode(&plain).unwrap_err(), "value length 67108865 out of range for op 1");
        // Round trip of the largest key and an empty value.
        let ok = one(op(OP_PUT, 0, vec![7; KEY_BYTES_MAX], vec![]));
        assert_eq!(encode(&decode(&ok).unwrap()), ok);
    }
}
