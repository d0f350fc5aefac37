//! Merge operators applied at install time, on MessagePack bytes (docs/FORMAT.md "Merge ops").
//! The TypeScript twin is `lib/core/ts/merge.ts`; both produce the same bytes.

use crate::format::envelope;

/// Parse a MessagePack array header: (element count, header length).
pub fn array_header(bytes: &[u8]) -> Option<(usize, usize)> {
    let b = *bytes.first()?;
    match b {
        0x90..=0x9f => Some(((b & 0x0f) as usize, 1)),
        0xdc => Some((u16::from_be_bytes(bytes.get(1..3)?.try_into().ok()?) as usize, 3)),
        0xdd => Some((u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?) as usize, 5)),
        _ => None,
    }
}

fn write_array_header(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= 0xffff {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// APPEND: `items` is a MessagePack array; the result is the base array followed by the items.
/// A missing base is the empty array; a base that is not an array becomes its first element.
/// `base` is a stored value: an index envelope's MessagePack part is merged into and the result
/// is plain (docs/FORMAT.md "Index envelope": only an index that was dropped gets here).
pub fn append(base: Option<&[u8]>, items: &[u8]) -> Vec<u8> {
    let base = base.map(envelope::value);
    let (n_items, items_header) = array_header(items).unwrap_or((0, items.len()));
    let items_body = &items[items_header..];
    let mut out = Vec::with_capacity(base.map_or(0, |b| b.len()) + items.len() + 5);
    match base {
        None => {
            write_array_header(&mut out, n_items);
        }
        Some(b) => match array_header(b) {
            Some((n, h)) => {
                write_array_header(&mut out, n + n_items);
                out.extend_from_slice(&b[h..]);
            }
            None => {
                write_array_header(&mut out, 1 + n_items);
                out.extend_from_slice(b);
            }
        },
    }
    out.extend_from_slice(items_body);
    out
}

/// Read a MessagePack number (any int or float format); None for anything else.
pub fn number(bytes: &[u8]) -> Option<f64> {
    let b = *bytes.first()?;
    let be = |n: usize| bytes.get(1..1 + n);
    Some(match b {
        0x00..=0x7f => b as f64,
        0xe0..=0xff => (b as i8) as f64,
        0xcc => be(1)?[0] as f64,
        0xcd => u16::from_be_bytes(be(2)?.try_into().ok()?) as f64,
        0xce => u32::from_be_bytes(be(4)?.try_into().ok()?) as f64,
        0xcf => u64::from_be_bytes(be(8)?.try_into().ok()?) as f64,
        0xd0 => (be(1)?[0] as i8) as f64,
        0xd1 => i16::from_be_bytes(be(2)?.try_into().ok()?) as f64,
        0xd2 => i32::from_be_bytes(be(4)?.try_into().ok()?) as f64,
        0xd3 => i64::from_be_bytes(be(8)?.try_into().ok()?) as f64,
        0xca => f32::from_be_bytes(be(4)?.try_into().ok()?) as f64,
        0xcb => f64::from_be_bytes(be(8)?.try_into().ok()?),
        _ => return None,
    })
}

/// INCREMENT: `delta` is 8 bytes f64 LE; the result is MessagePack float64 of base + delta.
/// A missing base, or one that is not a number, counts as 0.
/// `base` is a stored value: an index envelope counts by its MessagePack part; the result is plain.
pub fn increment(base: Option<&[u8]>, delta: &[u8]) -> Vec<u8> {
    let base = base.map(envelope::value);
    let d = f64::from_le_bytes(delta.try_into().unwrap_or([0; 8]));
    let sum = base.and_then(number).unwrap_or(0.0) + d;
    let mut out = Vec::with_capacity(9);
    out.push(0xcb);
    out.extend_from_slice(&sum.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_grows_headers_canonically() {
        let one = [0x91, 0x01];
        assert_eq!(append(None, &one), vec![0x91, 0x01]);
        assert_eq!(append(Some(&[0x92, 0x01, 0x02]), &[0x91, 0x03]), vec![0x93, 0x01, 0x02, 0x03]);
        let mut base = vec![0x9f];
        base.extend(std::iter::repeat_n(0x00, 15));
        let out = append(Some(&base), &one);
        assert_eq!(&out[..3], &[0xdc, 0x00, 0x10]);
        assert_eq!(out.len(), 3 + 16);
        assert_eq!(append(Some(&[0xa1, 0x61]), &one), vec![0x92, 0xa1, 0x61, 0x01]);
    }

    #[test]
    fn increment_reads_every_number_format() {
        assert_eq!(number(&[0x05]), Some(5.0));
        assert_eq!(number(&[0xff]), Some(-1.0));
        assert_eq!(number(&[0xd1, 0xff, 0x00]), Some(-256.0));
        let out = increment(Some(&[0x05]), &2.5f64.to_le_bytes());
        assert_eq!(out[0], 0xcb);
        assert_eq!(number(&out), Some(7.5));
        assert_eq!(number(&increment(None, &1f64.to_le_bytes())), Some(1.0));
    }

    #[test]
    fn merges_on_an_envelope_base_merge_into_its_value_and_store_it_plain() {
        let base = envelope::encode(&[0x92, 0x01, 0x02], &[("i", &[0x10, 1])]);
        assert_eq!(append(Some(&base), &[0x91, 0x03]), vec![0x93, 0x01, 0x02, 0x03]);
        let n = envelope::encode(&[0x05], &[("i", &[0x10, 1])]);
        assert_eq!(number(&increment(Some(&n), &2f64.to_le_bytes())), Some(7.0));
    }
}
