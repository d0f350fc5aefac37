//! [`KeyBuf`]: an owned byte string in 24 bytes for the store's ordered maps (record keys, index
//! entry keys). A key of at most [`INLINE_BYTES_MAX`] bytes lives in place — no allocation, and
//! a map search compares it without following a pointer; a longer one is boxed with its first
//! [`PREFIX_BYTES`] bytes kept in place, so that most comparisons still end without touching
//! the heap. It orders exactly as its bytes do (`[u8]`'s order), so it can stand for `Vec<u8>`
//! in a `BTreeMap` and be looked up by `&[u8]` too.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// The longest key kept in place.
pub const INLINE_BYTES_MAX: usize = 22;
/// Bytes of a boxed key kept in place.
pub const PREFIX_BYTES: usize = 7;

#[derive(Clone)]
pub struct KeyBuf(Repr);

#[derive(Clone)]
enum Repr {
    /// Invariant: `len ≤ INLINE_BYTES_MAX`; `bytes[len..]` are zero.
    Inline { len: u8, bytes: [u8; INLINE_BYTES_MAX] },
    /// Invariant: `bytes.len() > INLINE_BYTES_MAX`, `prefix == bytes[..PREFIX_BYTES]`.
    Boxed { prefix: [u8; PREFIX_BYTES], bytes: Box<[u8]> },
}
use Repr::{Boxed, Inline};

// The point of the type: one machine word less than a Vec<u8>, and no allocation when short.
const _: () = assert!(std::mem::size_of::<KeyBuf>() == 24);
const _: () = assert!(PREFIX_BYTES <= INLINE_BYTES_MAX);

impl KeyBuf {
    pub fn new(b: &[u8]) -> KeyBuf {
        if b.len() <= INLINE_BYTES_MAX {
            let mut bytes = [0u8; INLINE_BYTES_MAX];
            bytes[..b.len()].copy_from_slice(b);
            KeyBuf(Inline { len: b.len() as u8, bytes })
        } else {
            KeyBuf(Boxed { prefix: b[..PREFIX_BYTES].try_into().expect("long enough"), bytes: b.into() })
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Inline { len, bytes } => &bytes[..*len as usize],
            Boxed { bytes, .. } => bytes,
        }
    }

    /// The first [`PREFIX_BYTES`] bytes as a big-endian number (zeros past the end of a short
    /// key): of two keys whose heads differ, the smaller head is the smaller key (a zero past a
    /// key's end only meets a non-zero byte of a longer key that it is a prefix of).
    fn head(&self) -> u64 {
        let b: &[u8] = match &self.0 {
            Inline { bytes, .. } => &bytes[..PREFIX_BYTES],
            Boxed { prefix, .. } => prefix,
        };
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], 0])
    }
}

/// An inline key's bytes (zero-padded) as three big-endian words.
fn words(b: &[u8; INLINE_BYTES_MAX]) -> (u64, u64, u64) {
    let w = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    (w(0), w(8), u64::from_be_bytes([b[16], b[17], b[18], b[19], b[20], b[21], 0, 0]))
}

impl From<Vec<u8>> for KeyBuf {
    fn from(v: Vec<u8>) -> KeyBuf {
        if v.len() <= INLINE_BYTES_MAX {
            KeyBuf::new(&v)
        } else {
            KeyBuf(Boxed { prefix: v[..PREFIX_BYTES].try_into().expect("long enough"), bytes: v.into_boxed_slice() })
        }
    }
}

impl From<&[u8]> for KeyBuf {
    fn from(b: &[u8]) -> KeyBuf {
        KeyBuf::new(b)
    }
}

impl Deref for KeyBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for KeyBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for KeyBuf {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for KeyBuf {
    fn eq(&self, other: &KeyBuf) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for KeyBuf {}

impl PartialOrd for KeyBuf {
    fn partial_cmp(&self, other: &KeyBuf) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyBuf {
    /// The order of the bytes, mostly without following a pointer: two inline keys compare as
    /// their zero-padded bytes and then their lengths (the padding only meets the bytes of a
    /// longer key it is a prefix of); otherwise the heads decide when they differ, and only
    /// then is a boxed key followed.
    fn cmp(&self, other: &KeyBuf) -> Ordering {
        if let (Inline { len: la, bytes: a }, Inline { len: lb, bytes: b }) = (&self.0, &other.0) {
            return words(a).cmp(&words(b)).then(la.cmp(lb));
        }
        match self.head().cmp(&other.head()) {
            Ordering::Equal => self.as_slice().cmp(other.as_slice()),
            o => o,
        }
    }
}

impl Hash for KeyBuf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl fmt::Debug for KeyBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_slice().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_compares_exactly_as_the_bytes() {
        // Lengths around the inline limit and the prefix, bytes that share heads.
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for len in [0usize, 1, 6, 7, 8, 21, 22, 23, 24, 40] {
            for fill in [0u8, 1, 0x7f, 0xff] {
                let mut k = vec![fill; len];
                keys.push(k.clone());
                // One byte changed at each word boundary and at the ends.
                for at in [6usize, 7, 8, 15, 16, 21] {
                    if at < len {
                        let mut m = k.clone();
                        m[at] ^= 0x41;
                        keys.push(m);
                    }
                }
                if len > 0 {
                    *k.last_mut().unwrap() ^= 1;
                    keys.push(k.clone());
                    k[0] ^= 0x80;
                    keys.push(k);
                }
            }
        }
        for a in &keys {
            let ka = KeyBuf::new(a);
            assert_eq!(ka.as_slice(), &a[..]);
            assert_eq!(KeyBuf::from(a.clone()).as_slice(), &a[..]);
            assert_eq!(matches!(ka.0, Inline { .. }), a.len() <= INLINE_BYTES_MAX);
            for b in &keys {
                let kb = KeyBuf::from(b.clone());
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(ka == kb, a == b);
            }
        }
    }
}
