//! Byte layouts of `pages.kdb` (docs/FORMAT.md, "Page store"): the 24-byte page header, the meta
//! page, leaf / branch / overflow / free-list pages, and greedy packing. Every decoder checks
//! what it reads and says what is wrong as a plain message; the caller adds the page number and
//! turns it into `KESTREL_CORRUPT`.

use super::envelope::STORED_VALUE_BYTES_MAX;
use super::payload::KEY_BYTES_MAX;
use super::{crc32c, u32_at, u64_at, FORMAT_VERSION};

pub const PAGE_BYTES: usize = 4096;
pub const HEADER_BYTES: usize = 24;
/// Bytes of a page after its header.
pub const BODY_BYTES: usize = PAGE_BYTES - HEADER_BYTES;

pub const KIND_META: u8 = 1;
pub const KIND_LEAF: u8 = 2;
pub const KIND_BRANCH: u8 = 3;
pub const KIND_OVERFLOW: u8 = 4;
pub const KIND_FREE: u8 = 5;

pub const META_MAGIC: [u8; 8] = *b"KPAGES\x00\x01";
/// Pages 0 and 1 are the meta slots; every other page number is a tree, overflow or free-list
/// page (or free).
pub const META_SLOTS: u32 = 2;

/// A value is stored in the leaf iff its length is at most this.
pub const INLINE_VALUE_BYTES_MAX: usize = 1024;
pub const VALUE_KIND_INLINE: u8 = 0;
pub const VALUE_KIND_OVERFLOW: u8 = 1;
/// u16 key length + u64 commit id + u8 value kind + u32 value length.
pub const LEAF_ENTRY_FIXED_BYTES: usize = 15;
/// u16 key length + u32 child.
pub const BRANCH_ENTRY_FIXED_BYTES: usize = 6;
/// Data bytes of one overflow page.
pub const OVERFLOW_DATA_BYTES: usize = BODY_BYTES;
/// Page numbers held by one free-list page (1018 × 4 = 4072).
pub const FREE_NUMBERS_PER_PAGE: usize = BODY_BYTES / 4;
/// Catalog value: u32 root, u32 0, u64 live records.
pub const CATALOG_VALUE_BYTES: usize = 16;

const _: () = assert!(FREE_NUMBERS_PER_PAGE == 1018);
// The largest leaf entry (2063 bytes) fits a page, so packing never meets an entry that fits nowhere.
const _: () = assert!(LEAF_ENTRY_FIXED_BYTES + KEY_BYTES_MAX + INLINE_VALUE_BYTES_MAX <= BODY_BYTES);
const _: () = assert!(BRANCH_ENTRY_FIXED_BYTES + KEY_BYTES_MAX <= BODY_BYTES);

pub type PageBuf = [u8; PAGE_BYTES];

/// A zeroed page (boxed: 4 KiB is too big to move around on the stack casually).
pub fn zeroed_page() -> Box<PageBuf> {
    Box::new([0u8; PAGE_BYTES])
}

/// The 24-byte header every page starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    /// Entries (leaf, branch), data bytes (overflow), page numbers (free list); 0 for meta.
    pub count: u16,
    /// Sequence number of the checkpoint that wrote the page.
    pub seq: u64,
    /// The page's own number.
    pub page_no: u32,
    /// Next page of an overflow or free-list chain, else 0.
    pub next: u32,
}

pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_META => "meta",
        KIND_LEAF => "leaf",
        KIND_BRANCH => "branch",
        KIND_OVERFLOW => "overflow",
        KIND_FREE => "free-list",
        _ => "unknown",
    }
}

/// Write the header fields (not the CRC: see [`seal`]).
fn put_header(page: &mut PageBuf, h: &Header) {
    page[4] = h.kind;
    page[5] = 0;
    page[6..8].copy_from_slice(&h.count.to_le_bytes());
    page[8..16].copy_from_slice(&h.seq.to_le_bytes());
    page[16..20].copy_from_slice(&h.page_no.to_le_bytes());
    page[20..24].copy_from_slice(&h.next.to_le_bytes());
}

/// Store the CRC32C of bytes 4..4096 in bytes 0..4; the last step of building any page.
pub fn seal(page: &mut PageBuf) {
    let crc = crc32c(&page[4..]);
    page[0..4].copy_from_slice(&crc.to_le_bytes());
}

pub fn crc_matches(page: &PageBuf) -> bool {
    u32_at(page, 0) == crc32c(&page[4..])
}

pub fn read_header(page: &PageBuf) -> Header {
    Header { kind: page[4], count: u16::from_le_bytes([page[6], page[7]]), seq: u64_at(page, 8), page_no: u32_at(page, 16), next: u32_at(page, 20) }
}

/// The checks every page read gets: CRC, the zero byte, its own number, its kind, its seq not
/// newer than the checkpoint reading it.
pub fn check_header(page: &PageBuf, page_no: u32, kinds: &[u8], seq_max: u64) -> Result<Header, String> {
    if !crc_matches(page) {
        return Err("checksum mismatch".into());
    }
    let h = read_header(page);
    if page[5] != 0 {
        return Err(format!("header byte 5 is {}, expected 0", page[5]));
    }
    if h.page_no != page_no {
        return Err(format!("holds page {} (a misplaced write)", h.page_no));
    }
    if !kinds.contains(&h.kind) {
        let want: Vec<&str> = kinds.iter().map(|&k| kind_name(k)).collect();
        return Err(format!("kind {} ({}), expected {}", h.kind, kind_name(h.kind), want.join(" or ")));
    }
    if h.seq > seq_max {
        return Err(format!("written by checkpoint {} but the checkpoint is {seq_max}", h.seq));
    }
    Ok(h)
}

/// Bytes after `used` (an offset into the page) must be zero: the writer leaves them so.
fn check_tail_zero(page: &PageBuf, used: usize) -> Result<(), String> {
    debug_assert!(used <= PAGE_BYTES);
    match page[used..].iter().position(|&b| b != 0) {
        None => Ok(()),
        Some(at) => Err(format!("non-zero byte at offset {} after the last entry", used + at)),
    }
}

// ---------------------------------------------------------------------------------------------
// Meta page

/// A checkpoint's meta page. With no checkpoint: seq 0, checkpoint_lsn 0, catalog_root 0,
/// page_count 2, free 0/0, records 0 (see `PageStore::meta`; `Default` is all zeros).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub seq: u64,
    pub checkpoint_lsn: u64,
    /// 0 = no collections.
    pub catalog_root: u32,
    /// Invariant: ≥ 2; the file's pages are 0 … page_count − 1.
    pub page_count: u32,
    /// 0 = no free list.
    pub free_head: u32,
    pub free_count: u32,
    /// Live records over all collections.
    pub records: u64,
}

impl Meta {
    /// The state before the first checkpoint.
    pub const NONE: Meta = Meta { seq: 0, checkpoint_lsn: 0, catalog_root: 0, page_count: META_SLOTS, free_head: 0, free_count: 0, records: 0 };
}

/// What one meta slot holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    Valid(Meta),
    /// A well-formed meta page written by a newer format version.
    NewerVersion(u32),
    /// Not a valid meta page (torn, never written, garbage), and why.
    Invalid(String),
}

pub fn encode_meta(meta: &Meta) -> Box<PageBuf> {
    let slot = (meta.seq % 2) as u32;
    let mut page = zeroed_page();
    put_header(&mut page, &Header { kind: KIND_META, count: 0, seq: meta.seq, page_no: slot, next: 0 });
    page[24..32].copy_from_slice(&META_MAGIC);
    page[32..36].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    page[36..40].copy_from_slice(&(PAGE_BYTES as u32).to_le_bytes());
    page[40..48].copy_from_slice(&meta.checkpoint_lsn.to_le_bytes());
    page[48..52].copy_from_slice(&meta.catalog_root.to_le_bytes());
    page[52..56].copy_from_slice(&meta.page_count.to_le_bytes());
    page[56..60].copy_from_slice(&meta.free_head.to_le_bytes());
    page[60..64].copy_from_slice(&meta.free_count.to_le_bytes());
    page[64..72].copy_from_slice(&meta.records.to_le_bytes());
    seal(&mut page);
    page
}

/// Decode meta slot `slot` (0 or 1) per the spec's validity rule. The version is looked at
/// last, so that only an otherwise well-formed page (CRC, kind, number, parity, magic) can
/// claim to be from a newer version: a torn or garbage slot is merely invalid.
pub fn decode_meta(page: &PageBuf, slot: u32) -> Slot {
    debug_assert!(slot < META_SLOTS);
    if !crc_matches(page) {
        return Slot::Invalid("checksum mismatch".into());
    }
    let h = read_header(page);
    if h.kind != KIND_META {
        return Slot::Invalid(format!("kind {}, expected meta", h.kind));
    }
    if h.page_no != slot {
        return Slot::Invalid(format!("holds page {}", h.page_no));
    }
    if (h.seq % 2) as u32 != slot {
        return Slot::Invalid(format!("seq {} does not belong in slot {slot}", h.seq));
    }
    if page[24..32] != META_MAGIC {
        return Slot::Invalid("bad magic".into());
    }
    let version = u32_at(page, 32);
    if version > FORMAT_VERSION {
        return Slot::NewerVersion(version);
    }
    if version != FORMAT_VERSION {
        return Slot::Invalid(format!("format version {version}"));
    }
    let page_size = u32_at(page, 36);
    if page_size as usize != PAGE_BYTES {
        return Slot::Invalid(format!("page size {page_size}"));
    }
    Slot::Valid(Meta {
        seq: h.seq,
        checkpoint_lsn: u64_at(page, 40),
        catalog_root: u32_at(page, 48),
        page_count: u32_at(page, 52),
        free_head: u32_at(page, 56),
        free_count: u32_at(page, 60),
        records: u64_at(page, 64),
    })
}

// ---------------------------------------------------------------------------------------------
// Leaf page

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueRef<'a> {
    /// Invariant: len ≤ INLINE_VALUE_BYTES_MAX.
    Inline(&'a [u8]),
    /// Invariant: len > INLINE_VALUE_BYTES_MAX, first ≥ 2.
    Overflow { len: u32, first: u32 },
}

impl ValueRef<'_> {
    pub fn len(&self) -> usize {
        match self {
            ValueRef::Inline(v) => v.len(),
            ValueRef::Overflow { len, .. } => *len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafEntry<'a> {
    /// Invariant: len ≤ KEY_BYTES_MAX.
    pub key: &'a [u8],
    pub commit_id: u64,
    pub value: ValueRef<'a>,
}

/// Entry size = 15 + k + (inline ? v : 4); at most 2063.
pub fn leaf_entry_bytes(key_len: usize, value_len: usize) -> usize {
    let stored = if value_len <= INLINE_VALUE_BYTES_MAX { value_len } else { 4 };
    LEAF_ENTRY_FIXED_BYTES + key_len + stored
}

/// A little cursor over a page body with bounds-checked reads.
struct Cursor<'a> {
    page: &'a PageBuf,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > PAGE_BYTES - self.pos {
            return Err(format!("{what} at offset {} runs past the end of the page", self.pos));
        }
        let out = &self.page[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32_at(self.take(4, what)?, 0))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64_at(self.take(8, what)?, 0))
    }
}

/// The entries of a leaf page whose header was checked: each well-formed, keys strictly
/// increasing, the unused bytes zero.
pub fn decode_leaf(page: &PageBuf) -> Result<Vec<LeafEntry<'_>>, String> {
    let h = read_header(page);
    debug_assert_eq!(h.kind, KIND_LEAF);
    if h.next != 0 {
        return Err(format!("leaf with next = {}", h.next));
    }
    let mut cur = Cursor { page, pos: HEADER_BYTES };
    let mut out: Vec<LeafEntry<'_>> = Vec::with_capacity(h.count as usize);
    // Bounded by `count` (≤ 65535) and by the cursor, which only moves forward inside the page.
    for i in 0..h.count {
        let key_len = cur.u16("key length")? as usize;
        if key_len > KEY_BYTES_MAX {
            return Err(format!("entry {i}: key length {key_len} > {KEY_BYTES_MAX}"));
        }
        let key = cur.take(key_len, "key")?;
        let commit_id = cur.u64("commit id")?;
        let value_kind = cur.u8("value kind")?;
        let value_len = cur.u32("value length")? as usize;
        // A stored value: up to 64 MiB of MessagePack in an index envelope.
        if value_len > STORED_VALUE_BYTES_MAX {
            return Err(format!("entry {i}: value length {value_len} > {STORED_VALUE_BYTES_MAX}"));
        }
        let value = match value_kind {
            VALUE_KIND_INLINE if value_len <= INLINE_VALUE_BYTES_MAX => ValueRef::Inline(cur.take(value_len, "value")?),
            VALUE_KIND_OVERFLOW if value_len > INLINE_VALUE_BYTES_MAX => {
                let first = cur.u32("overflow page")?;
                if first < META_SLOTS {
                    return Err(format!("entry {i}: overflow page {first}"));
                }
                ValueRef::Overflow { len: value_len as u32, first }
            }
            _ => return Err(format!("entry {i}: value kind {value_kind} with length {value_len}")),
        };
        if let Some(prev) = out.last() {
            if prev.key >= key {
                return Err(format!("entry {i}: keys out of order"));
            }
        }
        out.push(LeafEntry { key, commit_id, value });
    }
    check_tail_zero(page, cur.pos)?;
    Ok(out)
}

/// Build a leaf page. The entries must fit (as packed by [`pack`]).
pub fn encode_leaf(entries: &[LeafEntry<'_>], seq: u64, page_no: u32) -> Box<PageBuf> {
    debug_assert!(entries.len() <= u16::MAX as usize);
    let mut page = zeroed_page();
    put_header(&mut page, &Header { kind: KIND_LEAF, count: entries.len() as u16, seq, page_no, next: 0 });
    let mut pos = HEADER_BYTES;
    for (i, e) in entries.iter().enumerate() {
        debug_assert!(i == 0 || entries[i - 1].key < e.key, "leaf keys strictly increasing");
        debug_assert!(e.key.len() <= KEY_BYTES_MAX);
        let size = leaf_entry_bytes(e.key.len(), e.value.len());
        assert!(pos + size <= PAGE_BYTES, "leaf entries overflow the page (a packing bug)");
        page[pos..pos + 2].copy_from_slice(&(e.key.len() as u16).to_le_bytes());
        pos += 2;
        page[pos..pos + e.key.len()].copy_from_slice(e.key);
        pos += e.key.len();
        page[pos..pos + 8].copy_from_slice(&e.commit_id.to_le_bytes());
        pos += 8;
        match e.value {
            ValueRef::Inline(v) => {
                debug_assert!(v.len() <= INLINE_VALUE_BYTES_MAX);
                page[pos] = VALUE_KIND_INLINE;
                page[pos + 1..pos + 5].copy_from_slice(&(v.len() as u32).to_le_bytes());
                page[pos + 5..pos + 5 + v.len()].copy_from_slice(v);
                pos += 5 + v.len();
            }
            ValueRef::Overflow { len, first } => {
                debug_assert!(len as usize > INLINE_VALUE_BYTES_MAX && first >= META_SLOTS);
                page[pos] = VALUE_KIND_OVERFLOW;
                page[pos + 1..pos + 5].copy_from_slice(&len.to_le_bytes());
                page[pos + 5..pos + 9].copy_from_slice(&first.to_le_bytes());
                pos += 9;
            }
        }
    }
    seal(&mut page);
    page
}

// ---------------------------------------------------------------------------------------------
// Branch page

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BranchEntry<'a> {
    /// Empty for entry 0 (it stands for "below everything").
    pub key: &'a [u8],
    /// Invariant: ≥ 2.
    pub child: u32,
}

/// Size of a branch entry; the first entry of a page is sized with its key stored empty.
pub fn branch_entry_bytes(key_len: usize, first_in_page: bool) -> usize {
    BRANCH_ENTRY_FIXED_BYTES + if first_in_page { 0 } else { key_len }
}

/// The entries of a branch page whose header was checked: count ≥ 1, entry 0's key empty, the
/// other keys strictly increasing, the unused bytes zero.
pub fn decode_branch(page: &PageBuf) -> Result<Vec<BranchEntry<'_>>, String> {
    let h = read_header(page);
    debug_assert_eq!(h.kind, KIND_BRANCH);
    if h.next != 0 {
        return Err(format!("branch with next = {}", h.next));
    }
    if h.count == 0 {
        return Err("branch with no entries".into());
    }
    let mut cur = Cursor { page, pos: HEADER_BYTES };
    let mut out: Vec<BranchEntry<'_>> = Vec::with_capacity(h.count as usize);
    // Bounded by `count` and by the forward-only cursor.
    for i in 0..h.count {
        let key_len = cur.u16("key length")? as usize;
        if key_len > KEY_BYTES_MAX {
            return Err(format!("entry {i}: key length {key_len} > {KEY_BYTES_MAX}"));
        }
        if i == 0 && key_len != 0 {
            return Err(format!("entry 0 has a {key_len}-byte key, expected an empty one"));
        }
        let key = cur.take(key_len, "key")?;
        let child = cur.u32("child")?;
        if child < META_SLOTS {
            return Err(format!("entry {i}: child page {child}"));
        }
        if i >= 1 {
            // Entry 0's key stands for "below everything": every later key must be above it,
            // and an empty key is the smallest there is, so i ≥ 1 keys are non-empty.
            let prev = out.last().expect("i ≥ 1").key;
            if prev >= key || key.is_empty() {
                return Err(format!("entry {i}: keys out of order"));
            }
        }
        out.push(BranchEntry { key, child });
    }
    check_tail_zero(page, cur.pos)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// A checked tree page, for searching

/// A leaf or branch page that passed [`decode_leaf`] / [`decode_branch`] once, with the offsets
/// of its entries kept: a search then reads only the entries it touches (a binary search), not
/// every entry of the page with all its checks. The page cache holds these, so each tree page
/// is checked once per time it is read from the file.
pub struct TreePage {
    pub header: Header,
    pub page: std::sync::Arc<PageBuf>,
    /// Offset of entry i (its u16 key length). Invariant: the page decoded without a problem, so
    /// every entry these point at is well-formed and the keys strictly increase.
    offsets: Box<[u16]>,
}

impl TreePage {
    /// Check a leaf or branch page whose header passed [`check_header`]: what is wrong, as
    /// [`decode_leaf`] / [`decode_branch`] say it.
    pub fn new(page: std::sync::Arc<PageBuf>) -> Result<TreePage, String> {
        let header = read_header(&page);
        let base = page.as_ptr() as usize;
        // Each entry starts with its u16 key length, right before the key.
        let offset = |key: &[u8]| (key.as_ptr() as usize - base - 2) as u16;
        let offsets: Box<[u16]> = match header.kind {
            KIND_LEAF => decode_leaf(&page)?.iter().map(|e| offset(e.key)).collect(),
            KIND_BRANCH => decode_branch(&page)?.iter().map(|e| offset(e.key)).collect(),
            other => return Err(format!("a {} page where a tree page belongs", kind_name(other))),
        };
        Ok(TreePage { header, page, offsets })
    }

    /// Test support: a page with no entries, unchecked (for the cache's own tests).
    #[cfg(test)]
    pub fn unchecked(page: std::sync::Arc<PageBuf>) -> TreePage {
        TreePage { header: read_header(&page), page, offsets: Box::new([]) }
    }

    pub fn is_leaf(&self) -> bool {
        self.header.kind == KIND_LEAF
    }

    /// Entries on the page.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Key of entry i (empty for a branch's entry 0).
    pub fn key(&self, i: usize) -> &[u8] {
        let o = self.offsets[i] as usize;
        let len = u16::from_le_bytes([self.page[o], self.page[o + 1]]) as usize;
        &self.page[o + 2..o + 2 + len]
    }

    /// The first entry whose key is ≥ `key` (`len()` if none).
    pub fn lower_bound(&self, key: &[u8]) -> usize {
        self.partition_point(|k| k < key)
    }

    /// The first entry whose key is > `key` (`len()` if none).
    pub fn upper_bound(&self, key: &[u8]) -> usize {
        self.partition_point(|k| k <= key)
    }

    fn partition_point(&self, below: impl Fn(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        // Bounded: the interval halves each round.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if below(self.key(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Leaf entry i.
    pub fn leaf_entry(&self, i: usize) -> LeafEntry<'_> {
        debug_assert!(self.is_leaf());
        let key = self.key(i);
        let p = self.offsets[i] as usize + 2 + key.len();
        let commit_id = u64_at(&self.page[..], p);
        let len = u32_at(&self.page[..], p + 9);
        let value = if self.page[p + 8] == VALUE_KIND_INLINE {
            ValueRef::Inline(&self.page[p + 13..p + 13 + len as usize])
        } else {
            ValueRef::Overflow { len, first: u32_at(&self.page[..], p + 13) }
        };
        LeafEntry { key, commit_id, value }
    }

    /// Child page of branch entry i.
    pub fn child(&self, i: usize) -> u32 {
        debug_assert!(!self.is_leaf());
        let o = self.offsets[i] as usize;
        let len = u16::from_le_bytes([self.page[o], self.page[o + 1]]) as usize;
        u32_at(&self.page[..], o + 2 + len)
    }

    /// Branch: the entry whose child holds `key` — the last one whose key is ≤ `key` (entry 0's
    /// key is empty, so there always is one).
    pub fn child_for(&self, key: &[u8]) -> usize {
        debug_assert!(!self.is_leaf());
        let after = self.upper_bound(key);
        debug_assert!(after >= 1, "entry 0's empty key is ≤ every key");
        after - 1
    }
}

/// Build a branch page from `(key, child)` entries; entry 0's key is stored empty whatever it is.
pub fn encode_branch(entries: &[(Vec<u8>, u32)], seq: u64, page_no: u32) -> Box<PageBuf> {
    debug_assert!(!entries.is_empty() && entries.len() <= u16::MAX as usize);
    let mut page = zeroed_page();
    put_header(&mut page, &Header { kind: KIND_BRANCH, count: entries.len() as u16, seq, page_no, next: 0 });
    let mut pos = HEADER_BYTES;
    for (i, (key, child)) in entries.iter().enumerate() {
        debug_assert!(*child >= META_SLOTS);
        debug_assert!(i < 2 || entries[i - 1].0 < *key, "branch keys strictly increasing");
        let stored: &[u8] = if i == 0 { &[] } else { key };
        let size = branch_entry_bytes(key.len(), i == 0);
        assert!(pos + size <= PAGE_BYTES, "branch entries overflow the page (a packing bug)");
        page[pos..pos + 2].copy_from_slice(&(stored.len() as u16).to_le_bytes());
        page[pos + 2..pos + 2 + stored.len()].copy_from_slice(stored);
        pos += 2 + stored.len();
        page[pos..pos + 4].copy_from_slice(&child.to_le_bytes());
        pos += 4;
    }
    seal(&mut page);
    page
}

// ---------------------------------------------------------------------------------------------
// Overflow page

/// Pages of an overflow chain for a value of `len` bytes. Spec reading: every page but the last
/// is filled with 4072 data bytes (the simplest reading of "count data bytes (≤ 4072)").
pub fn overflow_pages_for(len: usize) -> usize {
    len.div_ceil(OVERFLOW_DATA_BYTES)
}

pub fn encode_overflow(data: &[u8], seq: u64, page_no: u32, next: u32) -> Box<PageBuf> {
    debug_assert!(!data.is_empty() && data.len() <= OVERFLOW_DATA_BYTES);
    let mut page = zeroed_page();
    put_header(&mut page, &Header { kind: KIND_OVERFLOW, count: data.len() as u16, seq, page_no, next });
    page[HEADER_BYTES..HEADER_BYTES + data.len()].copy_from_slice(data);
    seal(&mut page);
    page
}

/// The data bytes and `next` of an overflow page whose header was checked.
pub fn decode_overflow(page: &PageBuf) -> Result<(&[u8], u32), String> {
    let h = read_header(page);
    debug_assert_eq!(h.kind, KIND_OVERFLOW);
    let n = h.count as usize;
    if n == 0 || n > OVERFLOW_DATA_BYTES {
        return Err(format!("overflow page with {n} data bytes"));
    }
    if h.next != 0 && h.next < META_SLOTS {
        return Err(format!("overflow next = {}", h.next));
    }
    check_tail_zero(page, HEADER_BYTES + n)?;
    Ok((&page[HEADER_BYTES..HEADER_BYTES + n], h.next))
}

// ---------------------------------------------------------------------------------------------
// Free-list page

pub fn encode_free(numbers: &[u32], seq: u64, page_no: u32, next: u32) -> Box<PageBuf> {
    // Empty only as the last page of a chain whose own pages came off the list (FORMAT.md step 5).
    debug_assert!(numbers.len() <= FREE_NUMBERS_PER_PAGE);
    let mut page = zeroed_page();
    put_header(&mut page, &Header { kind: KIND_FREE, count: numbers.len() as u16, seq, page_no, next });
    for (i, n) in numbers.iter().enumerate() {
        debug_assert!(i == 0 || numbers[i - 1] < *n, "free list ascending");
        let at = HEADER_BYTES + 4 * i;
        page[at..at + 4].copy_from_slice(&n.to_le_bytes());
    }
    seal(&mut page);
    page
}

/// The page numbers and `next` of a free-list page whose header was checked: ascending within
/// the page, none of them a meta slot.
pub fn decode_free(page: &PageBuf) -> Result<(Vec<u32>, u32), String> {
    let h = read_header(page);
    debug_assert_eq!(h.kind, KIND_FREE);
    let n = h.count as usize;
    if n > FREE_NUMBERS_PER_PAGE || (h.next != 0 && n < FREE_NUMBERS_PER_PAGE) {
        return Err(format!("free-list page with {n} page numbers (every page but the last holds {FREE_NUMBERS_PER_PAGE})"));
    }
    if h.next != 0 && h.next < META_SLOTS {
        return Err(format!("free-list next = {}", h.next));
    }
    let numbers: Vec<u32> = (0..n).map(|i| u32_at(page, HEADER_BYTES + 4 * i)).collect();
    if let Some(i) = (0..n).find(|&i| numbers[i] < META_SLOTS || (i > 0 && numbers[i - 1] >= numbers[i])) {
        return Err(format!("free-list entry {i} ({}) is a meta slot or out of order", numbers[i]));
    }
    check_tail_zero(page, HEADER_BYTES + 4 * n)?;
    Ok((numbers, h.next))
}

// ---------------------------------------------------------------------------------------------
// Catalog values and packing

pub fn encode_catalog_value(root: u32, records: u64) -> [u8; CATALOG_VALUE_BYTES] {
    let mut v = [0u8; CATALOG_VALUE_BYTES];
    v[0..4].copy_from_slice(&root.to_le_bytes());
    v[8..16].copy_from_slice(&records.to_le_bytes());
    v
}

/// (root, live records) of a catalog entry.
pub fn decode_catalog_value(e: &LeafEntry<'_>) -> Result<(u32, u64), String> {
    let name = String::from_utf8_lossy(e.key);
    let ValueRef::Inline(v) = e.value else {
        return Err(format!("catalog entry {name:?}: value is not inline"));
    };
    if v.len() != CATALOG_VALUE_BYTES || e.commit_id != 0 || u32_at(v, 4) != 0 {
        return Err(format!("catalog entry {name:?}: malformed value"));
    }
    let (root, records) = (u32_at(v, 0), u64_at(v, 8));
    if root < META_SLOTS || records == 0 {
        return Err(format!("catalog entry {name:?}: root {root} with {records} records"));
    }
    Ok((root, records))
}

/// Greedy packing: fill pages in order, starting a new page when the next entry does not fit
/// the 4072-byte body. `size(i, first_in_page)` is entry i's size (a branch page's first entry
/// is sized with its key stored empty). Returns the groups as index ranges, in order; none for
/// no entries.
pub fn pack(n: usize, size: impl Fn(usize, bool) -> usize) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for i in 0..n {
        if i == start {
            used = size(i, true);
            assert!(used <= BODY_BYTES, "entry {i} of {used} bytes fits no page");
            continue;
        }
        let s = size(i, false);
        if used + s > BODY_BYTES {
            groups.push(start..i);
            start = i;
            used = size(i, true);
            assert!(used <= BODY_BYTES, "entry {i} of {used} bytes fits no page");
        } else {
            used += s;
        }
    }
    if start < n {
        groups.push(start..n);
    }
    debug_assert!(groups.iter().all(|g| !g.is_empty()));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_round_trip_and_sizes() {
        let big = ValueRef::Overflow { len: 5000, first: 7 };
        let entries = [
            LeafEntry { key: b"", commit_id: 1, value: ValueRef::Inline(b"") },
            LeafEntry { key: b"a", commit_id: 2, value: ValueRef::Inline(&[9u8; 1024]) },
            LeafEntry { key: b"ab", commit_id: 3, value: big },
        ];
        let page = encode_leaf(&entries, 5, 9);
        assert_eq!(check_header(&page, 9, &[KIND_LEAF], 5).unwrap().count, 3);
        assert_eq!(decode_leaf(&page).unwrap(), entries);
        assert_eq!(leaf_entry_bytes(0, 0), 15);
        assert_eq!(leaf_entry_bytes(1024, 1024), 2063);
        assert_eq!(leaf_entry_bytes(3, 1025), 22);
        // Wrong number, newer seq, flipped byte.
        assert!(check_header(&page, 8, &[KIND_LEAF], 5).unwrap_err().contains("misplaced"));
        assert!(check_header(&page, 9, &[KIND_LEAF], 4).is_err());
        assert!(check_header(&page, 9, &[KIND_BRANCH], 5).is_err());
        let mut bad = page.clone();
        bad[100] ^= 1;
        assert!(check_header(&bad, 9, &[KIND_LEAF], 5).unwrap_err().contains("checksum"));
    }

    #[test]
    fn branch_stores_first_key_empty() {
        let entries = vec![(b"zzz".to_vec(), 4), (b"m".to_vec(), 5)];
        // Entry 0's key is dropped; "m" > "" keeps the page well-formed.
        let page = encode_branch(&entries, 1, 3);
        let d = decode_branch(&page).unwrap();
        assert_eq!(d, vec![BranchEntry { key: b"", child: 4 }, BranchEntry { key: b"m", child: 5 }]);
        assert_eq!(u16::from_le_bytes([page[24], page[25]]), 0);
    }

    #[test]
    fn meta_slots() {
        let m = Meta { seq: 3, checkpoint_lsn: 30, catalog_root: 5, page_count: 9, free_head: 8, free_count: 2, records: 7 };
        let page = encode_meta(&m);
        assert_eq!(decode_meta(&page, 1), Slot::Valid(m));
        assert!(matches!(decode_meta(&page, 0), Slot::Invalid(_)));
        let mut newer = page.clone();
        newer[32] = 2;
        seal(&mut newer);
        assert_eq!(decode_meta(&newer, 1), Slot::NewerVersion(2));
        // A meta page's fields end at byte 72 and the rest is zero: losing its second half
        // (over a zeroed slot) loses nothing, so such a "tear" is still a valid meta page.
        let mut half = page.clone();
        half[2048..].fill(0);
        assert_eq!(decode_meta(&half, 1), Slot::Valid(m));
        let mut torn = page.clone();
        torn[40..].fill(0);
        assert!(matches!(decode_meta(&torn, 1), Slot::Invalid(_)));
        assert!(matches!(decode_meta(&zeroed_page(), 0), Slot::Invalid(_)));
    }

    #[test]
    fn pack_is_greedy() {
        // 4072 / 1000 → 4 per page; 10 entries → 4, 4, 2.
        let g = pack(10, |_, _| 1000);
        assert_eq!(g, vec![0..4, 4..8, 8..10]);
        assert!(pack(0, |_, _| 1).is_empty());
        // First-in-page size is smaller (branch): 6 + 3 × 1030 = 3096; one more → 4126 > 4072.
        let g = pack(5, |_, first| if first { 6 } else { 1030 });
        assert_eq!(g, vec![0..4, 4..5]);
        // Exactly full.
        assert_eq!(pack(2, |_, _| 2036), vec![0..2]);
        assert_eq!(pack(2, |_, _| 2037), vec![0..1, 1..2]);
    }

    #[test]
    fn free_and_overflow_round_trip() {
        let nums: Vec<u32> = (2..1020).collect();
        let page = encode_free(&nums, 2, 40, 41);
        assert_eq!(decode_free(&page).unwrap(), (nums, 41));
        let data = vec![7u8; OVERFLOW_DATA_BYTES];
        let page = encode_overflow(&data, 2, 40, 0);
        assert_eq!(decode_overflow(&page).unwrap(), (&data[..], 0));
        assert_eq!(overflow_pages_for(1025), 1);
        assert_eq!(overflow_pages_for(4072), 1);
        assert_eq!(overflow_pages_for(4073), 2);
        assert_eq!(overflow_pages_for(25000), 7);
    }
}
