//! B+trees over pages: lookup, range, the deterministic copy-on-write `apply` of a checkpoint
//! (docs/FORMAT.md, "Writing checkpoint seq + 1"), the allocator, and the structural walk behind
//! `check` / `reachable_pages`.
//!
//! Determinism: the TypeScript twin builds byte-identical files, so every allocation happens
//! exactly in the order the spec gives — per leaf: overflow chains of new values in key order,
//! then one page per packed group; per branch: children first in entry order, then its own
//! groups; catalog after all collections; free-list pages last (the smallest reusable pages,
//! then the end of the file). Frees
//! only ever add to a set, so their order does not matter.
//!
//! Index trees (docs/FORMAT.md "Index trees") are ordinary trees named `collection ‖ 0x00 ‖
//! index` whose changes the checkpoint derives itself (step 0, [`derive_index_changes`]) and
//! merges with the caller's changes in name order before step 1; from then on they are written
//! like any collection (their catalog count is their entries; the meta's `records` skips them).

use std::collections::{BTreeMap, HashSet};
use std::ops::{Bound, Range};
use std::sync::Arc;

use crate::envelope::{self, IndexKey};
use crate::error::{Code, Error, Result};
use crate::payload::VALUE_BYTES_MAX;

use super::layout::{
    self, branch_entry_bytes, decode_branch, decode_catalog_value, decode_free, decode_leaf, decode_overflow, encode_branch, encode_catalog_value, encode_free,
    encode_leaf, encode_overflow, leaf_entry_bytes, overflow_pages_for, pack, LeafEntry, PageBuf, ValueRef, FREE_NUMBERS_PER_PAGE, INLINE_VALUE_BYTES_MAX,
    KIND_BRANCH, KIND_FREE, KIND_LEAF, KIND_OVERFLOW, META_SLOTS, OVERFLOW_DATA_BYTES,
};
use super::{corrupt, problem, Change, CollectionChanges, Meta, PageSource, PAGE_FILE};

/// Deepest tree any path may reach. A real tree is far shallower (a full branch page holds
/// ≥ 3 entries, so 2^32 pages need ≤ 21 levels); past this a corrupt file has a cycle.
pub const DEPTH_MAX: usize = 64;

const TREE_KINDS: &[u8] = &[KIND_LEAF, KIND_BRANCH];

// ---------------------------------------------------------------------------------------------
// Reads

/// Find `key` in the tree at `root` (0 = empty) and hand its leaf entry (with the leaf's page
/// number) to `f`.
pub fn lookup<T>(src: &PageSource<'_>, root: u32, key: &[u8], f: impl FnOnce(u32, &LeafEntry<'_>) -> Result<T>) -> Result<Option<T>> {
    let mut no = root;
    if no == 0 {
        return Ok(None);
    }
    for _depth in 0..DEPTH_MAX {
        let page = src.read_tree(no)?;
        if page.is_leaf() {
            let i = page.lower_bound(key);
            if i < page.len() && page.key(i) == key {
                return f(no, &page.leaf_entry(i)).map(Some);
            }
            return Ok(None);
        }
        no = page.child(page.child_for(key));
    }
    Err(corrupt(root, &format!("tree deeper than {DEPTH_MAX} levels (a cycle?)")))
}

/// (root, live records) of a collection in the catalog.
pub fn catalog_get(src: &PageSource<'_>, name: &[u8]) -> Result<Option<(u32, u64)>> {
    lookup(src, src.meta.catalog_root, name, |leaf, e| decode_catalog_value(e).map_err(|w| corrupt(leaf, &w)))
}

/// Follow an overflow chain of a `len`-byte value from `first`, handing each page's data to
/// `on_data`; returns the chain's pages. The chain must hold exactly `len` bytes and end there.
fn walk_chain(src: &PageSource<'_>, first: u32, len: usize, mut on_data: impl FnMut(&[u8])) -> Result<std::result::Result<Vec<u32>, (u32, String)>> {
    debug_assert!(len > INLINE_VALUE_BYTES_MAX);
    let mut pages = Vec::with_capacity(overflow_pages_for(len));
    let mut no = first;
    let mut got = 0usize;
    // Bounded: every page adds ≥ 1 byte and we stop at `len` bytes.
    while got < len {
        if no == 0 {
            let last = pages.last().copied().unwrap_or(first);
            return Ok(Err((last, format!("overflow chain ends after {got} of {len} bytes"))));
        }
        let page = match src.read_checked(no, &[KIND_OVERFLOW], false)? {
            Ok((_, page)) => page,
            Err(what) => return Ok(Err((no, what))),
        };
        let (data, next) = match decode_overflow(&page) {
            Ok(d) => d,
            Err(what) => return Ok(Err((no, what))),
        };
        pages.push(no);
        got += data.len();
        if got > len {
            return Ok(Err((no, format!("overflow chain holds more than the value's {len} bytes"))));
        }
        on_data(data);
        if got == len && next != 0 {
            return Ok(Err((no, format!("overflow chain goes on past the value's {len} bytes"))));
        }
        no = next;
    }
    Ok(Ok(pages))
}

/// The bytes of a value, following its overflow chain if it has one.
pub fn read_value(src: &PageSource<'_>, value: &ValueRef<'_>) -> Result<Vec<u8>> {
    match *value {
        ValueRef::Inline(v) => Ok(v.to_vec()),
        ValueRef::Overflow { len, first } => {
            let mut out = Vec::with_capacity(len as usize);
            walk_chain(src, first, len as usize, |d| out.extend_from_slice(d))?.map_err(|(no, w)| corrupt(no, &w))?;
            debug_assert_eq!(out.len(), len as usize);
            Ok(out)
        }
    }
}

fn bounds_empty(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u)) | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
        _ => false,
    }
}

/// Visit the leaf entries of the tree at `root` within the bounds, ascending or (reverse)
/// descending, until `visit` returns false. `visit` gets the leaf's page number too.
pub fn range(src: &PageSource<'_>, root: u32, lower: Bound<&[u8]>, upper: Bound<&[u8]>, reverse: bool, visit: &mut dyn FnMut(u32, &LeafEntry<'_>) -> Result<bool>) -> Result<()> {
    if root == 0 || bounds_empty(lower, upper) {
        return Ok(());
    }
    range_node(src, root, lower, upper, reverse, visit, 0).map(|_| ())
}

/// Returns false once `visit` asked to stop.
fn range_node(src: &PageSource<'_>, no: u32, lower: Bound<&[u8]>, upper: Bound<&[u8]>, reverse: bool, visit: &mut dyn FnMut(u32, &LeafEntry<'_>) -> Result<bool>, depth: usize) -> Result<bool> {
    if depth >= DEPTH_MAX {
        return Err(corrupt(no, &format!("tree deeper than {DEPTH_MAX} levels (a cycle?)")));
    }
    let page = src.read_tree(no)?;
    if page.is_leaf() {
        let start = match lower {
            Bound::Unbounded => 0,
            Bound::Included(k) => page.lower_bound(k),
            Bound::Excluded(k) => page.upper_bound(k),
        };
        let end = match upper {
            Bound::Unbounded => page.len(),
            Bound::Included(k) => page.upper_bound(k),
            Bound::Excluded(k) => page.lower_bound(k),
        };
        if start >= end {
            return Ok(true);
        }
        if reverse {
            for i in (start..end).rev() {
                if !visit(no, &page.leaf_entry(i))? {
                    return Ok(false);
                }
            }
        } else {
            for i in start..end {
                if !visit(no, &page.leaf_entry(i))? {
                    return Ok(false);
                }
            }
        }
        return Ok(true);
    }
    // Child i holds keys in [key_i, key_{i+1}); visit the children that can meet the bounds.
    let lo = match lower {
        Bound::Unbounded => 0,
        Bound::Included(k) | Bound::Excluded(k) => page.child_for(k),
    };
    let hi = match upper {
        Bound::Unbounded => page.len() - 1,
        Bound::Included(k) => page.child_for(k),
        Bound::Excluded(k) => match page.lower_bound(k) {
            0 => return Ok(true),
            p => p - 1,
        },
    };
    if lo > hi {
        return Ok(true);
    }
    if reverse {
        for i in (lo..=hi).rev() {
            if !range_node(src, page.child(i), lower, upper, reverse, visit, depth + 1)? {
                return Ok(false);
            }
        }
    } else {
        for i in lo..=hi {
            if !range_node(src, page.child(i), lower, upper, reverse, visit, depth + 1)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Writing a checkpoint

/// The allocator of one checkpoint (spec step 1).
pub struct Allocator {
    /// The published free list, ascending; `reusable[taken..]` are still free.
    reusable: Vec<u32>,
    taken: usize,
    /// Invariant: ≥ the published page count; pages ≥ `next` are not in use.
    next: u32,
    /// Pages freed by this checkpoint: reusable only from the next checkpoint on, because the
    /// published checkpoint can reach them until the new meta page is durable.
    freed: Vec<u32>,
}

impl Allocator {
    pub fn new(reusable: Vec<u32>, page_count: u32) -> Allocator {
        debug_assert!(reusable.windows(2).all(|w| w[0] < w[1]));
        debug_assert!(reusable.last().is_none_or(|&p| p < page_count));
        Allocator { reusable, taken: 0, next: page_count, freed: Vec::new() }
    }

    /// The smallest reusable page, or else a new page at the end of the file.
    pub fn alloc(&mut self) -> Result<u32> {
        if let Some(&p) = self.reusable.get(self.taken) {
            self.taken += 1;
            return Ok(p);
        }
        self.alloc_at_end()
    }

    /// A new page at the end of the file (`next++`).
    pub fn alloc_at_end(&mut self) -> Result<u32> {
        let p = self.next;
        self.next = p.checked_add(1).ok_or_else(|| Error::new(Code::Io, format!("{PAGE_FILE} is full: 2^32 pages; compact the database (backup and restore)")))?;
        Ok(p)
    }

    pub fn free(&mut self, p: u32) {
        debug_assert!(p >= META_SLOTS && p < self.next);
        self.freed.push(p);
    }

    /// Spec step 5: the pages of the new free-list chain and the numbers they list. With `R`
    /// the still-reusable pages and `N` = |R| + |freed|, the chain has `c` pages, the smallest
    /// `c` ≥ 0 with `N − min(c, |R|) ≤ 1018·c`; they are the `c` smallest pages of `R` (then
    /// new pages at the end), so a database that rewrites the same keys does not grow. The list
    /// is the rest of `R` ∪ `freed`, ascending. A page freed twice means the published
    /// checkpoint reaches it twice (or both reaches and lists it as free): the file is damaged.
    fn free_chain(&mut self) -> Result<(Vec<u32>, Vec<u32>)> {
        let reusable_left = self.reusable.len() - self.taken;
        let total = reusable_left + self.freed.len();
        let per_page = FREE_NUMBERS_PER_PAGE;
        // Bounded: c ≤ ceil(total / 1018) satisfies the condition.
        let mut c = 0usize;
        while total - c.min(reusable_left) > per_page * c {
            c += 1;
        }
        debug_assert!(c <= total.div_ceil(per_page));
        let mut chain = Vec::with_capacity(c);
        for _ in 0..c {
            chain.push(self.alloc()?);
        }
        let mut list: Vec<u32> = self.reusable[self.taken..].to_vec();
        list.extend_from_slice(&self.freed);
        list.sort_unstable();
        if let Some(w) = list.windows(2).find(|w| w[0] == w[1]) {
            return Err(corrupt(w[0], "reached twice by the published checkpoint, or both reached and listed as free"));
        }
        debug_assert!(list.len() <= per_page * c);
        Ok((chain, list))
    }
}

/// One op of `apply`: put `(commit id, value)` or delete (None).
#[derive(Clone, Copy, Debug)]
pub struct Op<'a> {
    pub key: &'a [u8],
    pub value: Option<(u64, &'a [u8])>,
}

/// `(first key, page)`: one packed group, as `apply` returns them and branches hold them.
type Group = (Vec<u8>, u32);

/// A leaf entry while merging: kept as it was, or new from an op (its value not placed yet).
enum Merged<'p, 'o> {
    Old(LeafEntry<'p>),
    New { key: &'o [u8], commit_id: u64, value: &'o [u8] },
}

struct Writer<'s, 'f> {
    src: &'s PageSource<'f>,
    /// The seq of the checkpoint being written.
    seq: u64,
    alloc: Allocator,
    /// Every page built, each number once.
    pages: Vec<(u32, Box<PageBuf>)>,
    /// Live records added minus removed by the `apply` calls since it was last reset.
    record_delta: i64,
}

impl Writer<'_, '_> {
    fn emit(&mut self, no: u32, page: Box<PageBuf>) {
        self.pages.push((no, page));
    }

    /// Free the pages of an overflow chain being replaced or removed.
    fn free_chain(&mut self, first: u32, len: u32) -> Result<()> {
        let pages = walk_chain(self.src, first, len as usize, |_| {})?.map_err(|(no, w)| corrupt(no, &w))?;
        for p in pages {
            self.alloc.free(p);
        }
        Ok(())
    }

    /// Allocate and build the overflow chain of a new value (pages in chain order); its first page.
    fn write_chain(&mut self, value: &[u8]) -> Result<u32> {
        debug_assert!(value.len() > INLINE_VALUE_BYTES_MAX);
        let n = overflow_pages_for(value.len());
        let nos: Vec<u32> = (0..n).map(|_| self.alloc.alloc()).collect::<Result<_>>()?;
        for (i, chunk) in value.chunks(OVERFLOW_DATA_BYTES).enumerate() {
            let next = nos.get(i + 1).copied().unwrap_or(0);
            self.emit(nos[i], encode_overflow(chunk, self.seq, nos[i], next));
        }
        Ok(nos[0])
    }

    /// `apply` on a leaf (or, with `old` None, on an empty tree).
    fn apply_leaf(&mut self, old: Option<(u32, &PageBuf)>, ops: &[Op<'_>]) -> Result<Vec<Group>> {
        let old_entries = match old {
            Some((no, page)) => {
                let entries = decode_leaf(page).map_err(|w| corrupt(no, &w))?;
                self.alloc.free(no);
                entries
            }
            None => Vec::new(),
        };
        // Merge: an op replaces the entry with its key, "deleted" removes it, a deletion of an
        // absent key does nothing (the leaf is still rewritten: the op reached it).
        let mut merged: Vec<Merged<'_, '_>> = Vec::with_capacity(old_entries.len() + ops.len());
        let mut released: Vec<(u32, u32)> = Vec::new();
        let (mut i, mut j) = (0, 0);
        // Bounded: every round advances i or j.
        while i < old_entries.len() || j < ops.len() {
            let old_first = match (old_entries.get(i), ops.get(j)) {
                (Some(e), Some(op)) => e.key.cmp(op.key),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, _) => std::cmp::Ordering::Greater,
            };
            match old_first {
                std::cmp::Ordering::Less => {
                    merged.push(Merged::Old(old_entries[i]));
                    i += 1;
                }
                std::cmp::Ordering::Equal => {
                    if let ValueRef::Overflow { len, first } = old_entries[i].value {
                        released.push((first, len));
                    }
                    match ops[j].value {
                        Some((commit_id, value)) => merged.push(Merged::New { key: ops[j].key, commit_id, value }),
                        None => self.record_delta -= 1,
                    }
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Greater => {
                    if let Some((commit_id, value)) = ops[j].value {
                        merged.push(Merged::New { key: ops[j].key, commit_id, value });
                        self.record_delta += 1;
                    }
                    j += 1;
                }
            }
        }
        for (first, len) in released {
            self.free_chain(first, len)?;
        }
        // Overflow chains of the new values, in key order; then the entries are final.
        let mut entries: Vec<LeafEntry<'_>> = Vec::with_capacity(merged.len());
        for m in merged {
            entries.push(match m {
                Merged::Old(e) => e,
                Merged::New { key, commit_id, value } if value.len() <= INLINE_VALUE_BYTES_MAX => LeafEntry { key, commit_id, value: ValueRef::Inline(value) },
                Merged::New { key, commit_id, value } => {
                    let first = self.write_chain(value)?;
                    LeafEntry { key, commit_id, value: ValueRef::Overflow { len: value.len() as u32, first } }
                }
            });
        }
        debug_assert!(entries.windows(2).all(|w| w[0].key < w[1].key));
        let groups = pack(entries.len(), |i, _| leaf_entry_bytes(entries[i].key.len(), entries[i].value.len()));
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            let no = self.alloc.alloc()?;
            self.emit(no, encode_leaf(&entries[g.clone()], self.seq, no));
            out.push((entries[g.start].key.to_vec(), no));
        }
        Ok(out)
    }

    /// The new entry list of a branch: ops routed to the children, each child that got ops
    /// replaced by what `apply` returned (depth-first, in entry order). Frees the old branch.
    /// `lower` is the branch's own smallest key, which stands for its entry 0.
    fn branch_entries(&mut self, no: u32, page: &PageBuf, ops: &[Op<'_>], lower: &[u8], depth: usize) -> Result<Vec<Group>> {
        let entries = decode_branch(page).map_err(|w| corrupt(no, &w))?;
        self.alloc.free(no);
        let mut out: Vec<Group> = Vec::with_capacity(entries.len() + 1);
        let mut j = 0;
        for (i, e) in entries.iter().enumerate() {
            let key: &[u8] = if i == 0 { lower } else { e.key };
            // Child i takes the ops below entry i+1's key (the last child takes the rest).
            let end = match entries.get(i + 1) {
                Some(next) => j + ops[j..].partition_point(|op| op.key < next.key),
                None => ops.len(),
            };
            if end > j {
                out.extend(self.apply(e.child, &ops[j..end], key, depth + 1)?);
            } else {
                out.push((key.to_vec(), e.child));
            }
            j = end;
        }
        debug_assert_eq!(j, ops.len(), "every op routed");
        Ok(out)
    }

    /// Pack a list of `(first key, child)` into branch pages, allocated in order.
    fn write_branches(&mut self, list: &[Group]) -> Result<Vec<Group>> {
        let groups: Vec<Range<usize>> = pack(list.len(), |i, first| branch_entry_bytes(list[i].0.len(), first));
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            let no = self.alloc.alloc()?;
            self.emit(no, encode_branch(&list[g.clone()], self.seq, no));
            out.push((list[g.start].0.clone(), no));
        }
        Ok(out)
    }

    /// `apply(page, ops)` below the root: the groups that replace the page (none if empty).
    fn apply(&mut self, no: u32, ops: &[Op<'_>], lower: &[u8], depth: usize) -> Result<Vec<Group>> {
        debug_assert!(!ops.is_empty());
        if depth >= DEPTH_MAX {
            return Err(corrupt(no, &format!("tree deeper than {DEPTH_MAX} levels (a cycle?)")));
        }
        let (h, page) = self.src.read(no, TREE_KINDS, true)?;
        if h.kind == KIND_LEAF {
            return self.apply_leaf(Some((no, &page)), ops);
        }
        let list = self.branch_entries(no, &page, ops, lower, depth)?;
        self.write_branches(&list)
    }

    /// `apply` at the root (0 = empty tree); the new root, 0 when the tree is now empty.
    ///
    /// Spec reading: the one-entry collapse happens once, at the root only — if the root's
    /// child is itself a one-entry branch (possible after heavy deletes) it stays the root
    /// until a later checkpoint collapses it. The Checks list does not require root branches
    /// to have ≥ 2 entries, so such a file is sound.
    fn apply_root(&mut self, root: u32, ops: &[Op<'_>]) -> Result<u32> {
        debug_assert!(!ops.is_empty());
        let mut list = if root == 0 {
            self.apply_leaf(None, ops)?
        } else {
            let (h, page) = self.src.read(root, TREE_KINDS, true)?;
            if h.kind == KIND_LEAF {
                self.apply_leaf(Some((root, &page)), ops)?
            } else {
                let entries = self.branch_entries(root, &page, ops, &[], 0)?;
                match entries.len() {
                    0 => return Ok(0),
                    // That child becomes the root; no branch page is written.
                    1 => return Ok(entries[0].1),
                    _ => self.write_branches(&entries)?,
                }
            }
        };
        // Grow upwards while a level has more than one page. Bounded: a branch page holds ≥ 2
        // entries (6 + 1030 ≤ 4072), so every round at least halves the list.
        for _level in 0..DEPTH_MAX {
            if list.len() <= 1 {
                break;
            }
            list = self.write_branches(&list)?;
        }
        debug_assert!(list.len() <= 1);
        Ok(list.first().map_or(0, |g| g.1))
    }
}

/// The published free list: (the chain's pages, the page numbers listed).
pub(crate) fn read_free_list(src: &PageSource<'_>) -> Result<(Vec<u32>, Vec<u32>)> {
    let meta = src.meta;
    let mut chain = Vec::new();
    let mut numbers: Vec<u32> = Vec::with_capacity(meta.free_count as usize);
    let mut no = meta.free_head;
    // Bounded: a chain longer than the file has pages is a cycle.
    while no != 0 {
        if chain.len() >= meta.page_count as usize {
            return Err(corrupt(meta.free_head, "free-list chain longer than the file (a cycle?)"));
        }
        let (_, page) = src.read(no, &[KIND_FREE], false)?;
        let (nums, next) = decode_free(&page).map_err(|w| corrupt(no, &w))?;
        if let (Some(&last), Some(&first)) = (numbers.last(), nums.first()) {
            if last >= first {
                return Err(corrupt(no, "free list not ascending across pages"));
            }
        }
        if let Some(&bad) = nums.iter().find(|&&p| p >= meta.page_count) {
            return Err(corrupt(no, &format!("free page {bad} beyond the page count {}", meta.page_count)));
        }
        numbers.extend_from_slice(&nums);
        chain.push(no);
        no = next;
    }
    if numbers.len() != meta.free_count as usize {
        let slot = (meta.seq % 2) as u32;
        return Err(corrupt(slot, &format!("meta lists {} free pages, the free list holds {}", meta.free_count, numbers.len())));
    }
    Ok((chain, numbers))
}

/// Pages written by failed checkpoints whose meta write had begun. That meta page may be on
/// disk and valid (a failed write or fdatasync says nothing about what reached the disk, and a
/// meta page's second half is zeros anyway), so until a checkpoint is published a retry must
/// neither overwrite these pages nor lose them: it treats them as freed by itself (free from
/// the checkpoint after it on) and never allocates them. Fault paths only: a file written
/// through a retry differs from the TypeScript twin's, which is fine — it is still sound.
#[derive(Clone, Debug, Default)]
pub struct Quarantine {
    /// Ascending, distinct; each in the published free list or ≥ the published page count.
    pub pages: Vec<u32>,
    /// The largest page count among those attempts (0 = none).
    pub page_count: u32,
}

impl Quarantine {
    pub fn add(&mut self, pages: impl Iterator<Item = u32>, page_count: u32) {
        self.pages.extend(pages);
        self.pages.sort_unstable();
        self.pages.dedup();
        self.page_count = self.page_count.max(page_count);
    }
}

/// What a checkpoint writes: its meta and every other page.
pub struct Built {
    pub meta: Meta,
    /// (page number, page); distinct numbers, all ≥ 2 and < meta.page_count.
    pub pages: Vec<(u32, Box<PageBuf>)>,
    pub pages_freed: u64,
}

// ---------------------------------------------------------------------------------------------
// Step 0: index-tree changes derived from the old and new stored values

/// The index keys step 0 sees in a stored value: those of a valid envelope, none otherwise. The
/// engines only ever store plain values or valid envelopes (a commit with a malformed one is
/// refused), so "invalid = no keys" only matters to raw page-store callers passing arbitrary
/// bytes (the golden scenario's values are such bytes, some starting with 0xC1).
fn index_keys(stored: &[u8], primary_key_bytes: usize) -> Vec<IndexKey<'_>> {
    envelope::keys(stored, primary_key_bytes).unwrap_or_default()
}

/// The first bytes of a stored value that hold its envelope (tag, block length, block), or none
/// for a plain value: step 0 needs the old value's index keys, not all of a 64 MiB value. An
/// envelope whose MessagePack part would exceed 64 MiB is not a valid one: none.
fn read_envelope_prefix(src: &PageSource<'_>, value: &ValueRef<'_>) -> Result<Vec<u8>> {
    let (len, first) = match *value {
        ValueRef::Inline(v) => return Ok(if envelope::is_envelope(v) { v.to_vec() } else { Vec::new() }),
        ValueRef::Overflow { len, first } => (len as usize, first),
    };
    debug_assert!(len > INLINE_VALUE_BYTES_MAX);
    let mut out: Vec<u8> = Vec::new();
    // First the tag and block length, then the block.
    let mut want = 3;
    let mut header_read = false;
    let mut no = first;
    // Bounded: every page adds ≥ 1 byte (decode_overflow refuses empty ones) and at most
    // 3 + 65535 bytes are wanted; a chain longer than the file has pages is a cycle.
    for _ in 0..src.meta.page_count {
        if out.len() >= want {
            break;
        }
        if no == 0 {
            return Err(corrupt(first, &format!("overflow chain ends after {} of {len} bytes", out.len())));
        }
        let (_, page) = src.read(no, &[KIND_OVERFLOW], false)?;
        let (data, next) = decode_overflow(&page).map_err(|w| corrupt(no, &w))?;
        out.extend_from_slice(data);
        no = next;
        if !header_read && out.len() >= 3 {
            header_read = true;
            if !envelope::is_envelope(&out) {
                return Ok(Vec::new());
            }
            // A block longer than the value is caught by `envelope::keys` on the prefix.
            want = (3 + u16::from_le_bytes([out[1], out[2]]) as usize).min(len);
        }
    }
    if out.len() < want {
        return Err(corrupt(first, "overflow chain longer than the file (a cycle?)"));
    }
    out.truncate(want);
    if len - want > VALUE_BYTES_MAX {
        return Ok(Vec::new());
    }
    Ok(out)
}

/// Does the catalog list an index tree of `collection` (a name `collection ‖ 0x00 ‖ …`)?
fn has_index_trees(src: &PageSource<'_>, collection: &str) -> Result<bool> {
    let mut lower = collection.as_bytes().to_vec();
    lower.push(0);
    let mut upper = collection.as_bytes().to_vec();
    upper.push(1);
    let mut found = false;
    range(src, src.meta.catalog_root, Bound::Included(&lower), Bound::Excluded(&upper), false, &mut |_, _| {
        found = true;
        Ok(false)
    })?;
    Ok(found)
}

/// Spec step 0: for each change `(pk, new)` of each collection, with `old` the record's stored
/// value in the current checkpoint, tree `C‖00‖I` gets "deleted" for each `(I, ik)` in
/// K(old) − K(new) and `(commit id of new, empty)` for each in K(new) − K(old), at entry key
/// `ik ‖ pk ‖ u16 BE |pk|`. Returns the derived trees in name order, each sorted by entry key;
/// a tree without changes is omitted. Old values are read only when the catalog has an index
/// tree of the collection (otherwise no old record of it has an envelope).
pub fn derive_index_changes<V: AsRef<[u8]>>(src: &PageSource<'_>, changes: &[CollectionChanges<V>]) -> Result<Vec<CollectionChanges>> {
    let mut trees: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for cc in changes {
        let old_root = if has_index_trees(src, &cc.name)? { catalog_get(src, cc.name.as_bytes())?.map_or(0, |(root, _)| root) } else { 0 };
        for (pk, new) in &cc.changes {
            let old_block = if old_root != 0 { lookup(src, old_root, pk, |_, e| read_envelope_prefix(src, &e.value))?.unwrap_or_default() } else { Vec::new() };
            let old_keys = index_keys(&old_block, pk.len());
            let new_keys = match new {
                Some((_, v)) => index_keys(v.as_ref(), pk.len()),
                None => Vec::new(),
            };
            for k in old_keys.iter().filter(|k| !new_keys.contains(k)) {
                trees.entry(envelope::tree_name(&cc.name, k.index)).or_default().push((envelope::entry_key(k.key, pk), None));
            }
            if let Some((commit_id, _)) = new {
                for k in new_keys.iter().filter(|k| !old_keys.contains(k)) {
                    trees.entry(envelope::tree_name(&cc.name, k.index)).or_default().push((envelope::entry_key(k.key, pk), Some((*commit_id, Vec::new()))));
                }
            }
        }
    }
    Ok(trees
        .into_iter()
        .map(|(name, mut changes)| {
            changes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            // Distinct primary keys make distinct entry keys; per key and index, the old and the
            // new index key differ (pairs in both are left alone).
            debug_assert!(changes.windows(2).all(|w| w[0].0 < w[1].0), "derived entry keys are distinct");
            debug_assert!(!changes.is_empty());
            CollectionChanges { name, changes }
        })
        .collect())
}

/// Spec steps 1–5 for checkpoint `src.meta.seq + 1` at `lsn`: every new page, built in
/// allocation order, and the new meta. Writes nothing.
pub fn build_checkpoint<V: AsRef<[u8]>>(src: &PageSource<'_>, lsn: u64, changes: &[CollectionChanges<V>], quarantine: &Quarantine) -> Result<Built> {
    let meta = src.meta;
    let (chain, mut reusable) = read_free_list(src)?;
    let mut next = meta.page_count;
    if !quarantine.pages.is_empty() {
        debug_assert!(quarantine.pages.iter().all(|p| *p >= meta.page_count || reusable.binary_search(p).is_ok()));
        debug_assert!((meta.page_count..quarantine.page_count).all(|p| quarantine.pages.binary_search(&p).is_ok()), "an attempt writes every page it allocates");
        reusable.retain(|p| quarantine.pages.binary_search(p).is_err());
        next = next.max(quarantine.page_count);
    }
    let mut w = Writer { src, seq: meta.seq + 1, alloc: Allocator::new(reusable, next), pages: Vec::new(), record_delta: 0 };
    for &p in &quarantine.pages {
        w.alloc.free(p);
    }

    // Step 0: the derived index trees join the changes in name order.
    let derived = derive_index_changes(src, changes)?;
    // (tree name, its changes as ops), collections and derived trees alike.
    let mut all: Vec<(&str, Vec<Op<'_>>)> = changes
        .iter()
        .map(|cc| (cc.name.as_str(), cc.changes.iter().map(|(k, v)| Op { key: k, value: v.as_ref().map(|(c, v)| (*c, v.as_ref())) }).collect()))
        .chain(derived.iter().map(|cc| (cc.name.as_str(), cc.changes.iter().map(|(k, v)| Op { key: k, value: v.as_ref().map(|(c, v)| (*c, &v[..])) }).collect())))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    debug_assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "collection and index-tree names never collide");

    // Step 2: each changed tree, in name order.
    let mut records_total = meta.records as i128;
    let mut catalog_values: Vec<Option<[u8; layout::CATALOG_VALUE_BYTES]>> = Vec::with_capacity(all.len());
    for (name, ops) in &all {
        debug_assert!(!ops.is_empty());
        let (root, records) = catalog_get(src, name.as_bytes())?.unwrap_or((0, 0));
        w.record_delta = 0;
        let new_root = w.apply_root(root, ops)?;
        let new_records = records as i128 + w.record_delta as i128;
        if new_records < 0 || (new_root == 0) != (new_records == 0) {
            let at = if root != 0 { root } else { meta.catalog_root };
            return Err(corrupt(at, &format!("collection {name:?}: the catalog's record count {records} disagrees with its tree")));
        }
        // The meta's `records` counts collections only; an index tree's count is its entries.
        if !envelope::is_index_tree(name.as_bytes()) {
            records_total += new_records - records as i128;
        }
        catalog_values.push((new_root != 0).then(|| encode_catalog_value(new_root, new_records as u64)));
    }

    // Step 3: the catalog, one op per changed tree (untouched when nothing changed).
    let catalog_root = if all.is_empty() {
        meta.catalog_root
    } else {
        let ops: Vec<Op<'_>> = all.iter().zip(&catalog_values).map(|((name, _), v)| Op { key: name.as_bytes(), value: v.as_ref().map(|v| (0, &v[..])) }).collect();
        w.apply_root(meta.catalog_root, &ops)?
    };

    // Step 5: the old free-list chain is freed; the new chain takes the smallest reusable pages.
    for p in chain {
        w.alloc.free(p);
    }
    let pages_freed = w.alloc.freed.len() as u64;
    let (chain_pages, list) = w.alloc.free_chain()?;
    for (i, &page_no) in chain_pages.iter().enumerate() {
        let next = chain_pages.get(i + 1).copied().unwrap_or(0);
        let from = (i * FREE_NUMBERS_PER_PAGE).min(list.len());
        let to = ((i + 1) * FREE_NUMBERS_PER_PAGE).min(list.len());
        w.emit(page_no, encode_free(&list[from..to], w.seq, page_no, next));
    }

    debug_assert!(records_total >= 0);
    let new_meta = Meta {
        seq: w.seq,
        checkpoint_lsn: lsn,
        catalog_root,
        page_count: w.alloc.next,
        free_head: chain_pages.first().copied().unwrap_or(0),
        free_count: list.len() as u32,
        records: records_total as u64,
    };
    Ok(Built { meta: new_meta, pages: w.pages, pages_freed })
}

// ---------------------------------------------------------------------------------------------
// The structural walk (check, reachable_pages)

/// Stop recording problems past this many (a wrecked file would list every page).
const PROBLEMS_MAX: usize = 1000;

pub struct Walk {
    /// Pages reached from the meta page, ascending, each once.
    pub reached: Vec<u32>,
    pub problems: Vec<String>,
    /// The free list as read (possibly partial when it is damaged).
    pub free: Vec<u32>,
    /// Leaf entries over all collection trees (not index trees): the meta's `records`.
    pub records: u64,
    /// Leaf entries over all index trees.
    pub index_entries: u64,
    /// Collection and index-tree leaves and the bytes of their entries.
    pub leaf_pages: u64,
    pub leaf_bytes: u64,
}

struct Walker<'s, 'f> {
    src: &'s PageSource<'f>,
    seen: HashSet<u32>,
    out: Walk,
}

/// One collection as the catalog lists it.
struct CatalogEntry {
    name: String,
    root: u32,
    records: u64,
}

impl Walker<'_, '_> {
    fn problem(&mut self, page_no: u32, what: &str) {
        if self.out.problems.len() < PROBLEMS_MAX {
            self.out.problems.push(problem(page_no, what));
        }
    }

    /// Mark a page reached and read it; None (with the problem recorded) when it was reached
    /// before or fails its checks.
    fn visit(&mut self, no: u32, kinds: &[u8]) -> Result<Option<(layout::Header, Arc<PageBuf>)>> {
        if !self.seen.insert(no) {
            self.problem(no, "reached twice");
            return Ok(None);
        }
        match self.src.read_checked(no, kinds, false)? {
            Ok(p) => Ok(Some(p)),
            Err(what) => {
                self.problem(no, &what);
                Ok(None)
            }
        }
    }

    /// Walk the tree under `no`, whose keys must lie in [lower, upper) (None = unbounded).
    /// Returns its leaf entries. `catalog`: Some = this is the catalog, collect its entries.
    #[allow(clippy::too_many_arguments)]
    /// `index_tree`: every entry must split as `ik ‖ pk ‖ u16 BE |pk|` (ik, pk non-empty) and
    /// hold an empty value.
    fn tree(
        &mut self,
        no: u32,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
        depth: usize,
        leaf_depth: &mut Option<usize>,
        mut catalog: Option<&mut Vec<CatalogEntry>>,
        index_tree: bool,
    ) -> Result<u64> {
        if depth >= DEPTH_MAX {
            self.problem(no, &format!("tree deeper than {DEPTH_MAX} levels"));
            return Ok(0);
        }
        let Some((h, page)) = self.visit(no, TREE_KINDS)? else { return Ok(0) };
        let in_bounds = |k: &[u8]| lower.is_none_or(|l| k >= l) && upper.is_none_or(|u| k < u);
        if h.kind == KIND_LEAF {
            match *leaf_depth {
                None => *leaf_depth = Some(depth),
                Some(d) if d != depth => self.problem(no, &format!("leaf at depth {depth}, other leaves of its tree at depth {d}")),
                Some(_) => {}
            }
            let entries = match decode_leaf(&page) {
                Ok(e) => e,
                Err(what) => {
                    self.problem(no, &what);
                    return Ok(0);
                }
            };
            // Spec: "no empty page but an empty root"; depth 0 is the root.
            if entries.is_empty() && depth > 0 {
                self.problem(no, "empty leaf below the root");
            }
            if entries.first().is_some_and(|e| !in_bounds(e.key)) || entries.last().is_some_and(|e| !in_bounds(e.key)) {
                self.problem(no, "keys outside the bounds its parents give");
            }
            for e in &entries {
                match catalog.as_deref_mut() {
                    Some(list) => match decode_catalog_value(e) {
                        Ok((root, records)) => match std::str::from_utf8(e.key) {
                            Ok(name) => list.push(CatalogEntry { name: name.to_string(), root, records }),
                            Err(_) => self.problem(no, &format!("catalog name {:?} is not UTF-8", String::from_utf8_lossy(e.key))),
                        },
                        Err(what) => self.problem(no, &what),
                    },
                    None => {
                        if index_tree {
                            let splits = envelope::split_entry(e.key).is_some_and(|(ik, pk)| !ik.is_empty() && !pk.is_empty());
                            if !splits || e.value.len() != 0 {
                                self.problem(no, &format!("index-tree entry of {} key bytes and {} value bytes is not ik ‖ pk ‖ u16 |pk| with an empty value", e.key.len(), e.value.len()));
                            }
                        }
                        self.out.leaf_bytes += leaf_entry_bytes(e.key.len(), e.value.len()) as u64;
                        if let ValueRef::Overflow { len, first } = e.value {
                            self.chain(first, len as usize)?;
                        }
                    }
                }
            }
            if catalog.is_none() {
                self.out.leaf_pages += 1;
            }
            return Ok(entries.len() as u64);
        }
        let entries = match decode_branch(&page) {
            Ok(e) => e,
            Err(what) => {
                self.problem(no, &what);
                return Ok(0);
            }
        };
        if entries.iter().skip(1).any(|e| !in_bounds(e.key)) {
            self.problem(no, "keys outside the bounds its parents give");
        }
        let mut total = 0;
        for (i, e) in entries.iter().enumerate() {
            let lo = if i == 0 { lower } else { Some(e.key) };
            let hi = entries.get(i + 1).map(|n| n.key).or(upper);
            total += self.tree(e.child, lo, hi, depth + 1, leaf_depth, catalog.as_deref_mut(), index_tree)?;
        }
        Ok(total)
    }

    /// Walk an overflow chain, marking its pages reached.
    fn chain(&mut self, first: u32, len: usize) -> Result<()> {
        let mut no = first;
        let mut got = 0usize;
        // Bounded: each page is visited once (a repeat ends the walk) and adds ≥ 1 byte.
        while got < len {
            if no == 0 {
                self.problem(first, &format!("overflow chain from here ends after {got} of {len} bytes"));
                return Ok(());
            }
            let Some((_, page)) = self.visit(no, &[KIND_OVERFLOW])? else { return Ok(()) };
            let (data, next) = match decode_overflow(&page) {
                Ok(d) => d,
                Err(what) => {
                    self.problem(no, &what);
                    return Ok(());
                }
            };
            got += data.len();
            if got > len || (got == len && next != 0) {
                self.problem(no, &format!("overflow chain from page {first} is longer than its value ({len} bytes)"));
                return Ok(());
            }
            no = next;
        }
        Ok(())
    }

    /// Walk the free-list chain: the listed pages, ascending, none reachable.
    fn free_list(&mut self) -> Result<()> {
        let meta = self.src.meta;
        let mut no = meta.free_head;
        // Bounded: each chain page is visited once (a repeat ends the walk).
        while no != 0 {
            let Some((_, page)) = self.visit(no, &[KIND_FREE])? else { break };
            let (nums, next) = match decode_free(&page) {
                Ok(d) => d,
                Err(what) => {
                    self.problem(no, &what);
                    break;
                }
            };
            if let (Some(&last), Some(&first)) = (self.out.free.last(), nums.first()) {
                if last >= first {
                    self.problem(no, "free list not ascending across pages");
                }
            }
            self.out.free.extend_from_slice(&nums);
            no = next;
        }
        if self.out.free.len() != meta.free_count as usize {
            self.problem((meta.seq % 2) as u32, &format!("meta lists {} free pages, the free list holds {}", meta.free_count, self.out.free.len()));
        }
        Ok(())
    }
}

/// Walk everything the published checkpoint reaches and run the spec's checks.
pub fn walk(src: &PageSource<'_>) -> Result<Walk> {
    let meta = src.meta;
    let slot = (meta.seq % 2) as u32;
    let mut w = Walker {
        src,
        seen: HashSet::new(),
        out: Walk { reached: Vec::new(), problems: Vec::new(), free: Vec::new(), records: 0, index_entries: 0, leaf_pages: 0, leaf_bytes: 0 },
    };

    let mut catalog = Vec::new();
    if meta.catalog_root != 0 {
        let mut leaf_depth = None;
        w.tree(meta.catalog_root, None, None, 0, &mut leaf_depth, Some(&mut catalog), false)?;
    }
    let mut records = 0u64;
    let mut index_entries = 0u64;
    for c in &catalog {
        let mut leaf_depth = None;
        let index_tree = envelope::is_index_tree(c.name.as_bytes());
        let n = w.tree(c.root, None, None, 0, &mut leaf_depth, None, index_tree)?;
        if n != c.records {
            w.problem(c.root, &format!("collection {:?}: the catalog says {} records, its leaves hold {n}", c.name, c.records));
        }
        if n == 0 {
            w.problem(c.root, &format!("collection {:?} is listed in the catalog but has no records", c.name));
        }
        if index_tree {
            index_entries += n;
        } else {
            records += n;
        }
    }
    w.out.records = records;
    w.out.index_entries = index_entries;
    if records != meta.records {
        w.problem(slot, &format!("meta says {} records, the trees hold {records}", meta.records));
    }
    w.free_list()?;

    let mut reached: Vec<u32> = w.seen.iter().copied().collect();
    reached.sort_unstable();
    let free = std::mem::take(&mut w.out.free);
    let free_set: HashSet<u32> = free.iter().copied().collect();
    if let Some(&p) = free.iter().find(|p| w.seen.contains(p)) {
        w.problem(p, "listed as free but reachable");
    }
    // reachable ∪ free ∪ {0, 1} = every page below the page count.
    let mut missing = 0u64;
    let mut first_missing = None;
    for p in META_SLOTS..meta.page_count {
        if !w.seen.contains(&p) && !free_set.contains(&p) {
            missing += 1;
            first_missing.get_or_insert(p);
        }
    }
    if let Some(p) = first_missing {
        w.problem(p, &format!("neither reachable nor free ({missing} such pages from here on)"));
    }
    if let Some(&p) = free.iter().find(|&&p| p < META_SLOTS || p >= meta.page_count) {
        w.problem(p, &format!("listed as free but outside the pages 2..{}", meta.page_count));
    }
    w.out.reached = reached;
    w.out.free = free;
    Ok(w.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(reusable: Vec<u32>, page_count: u32, freed: &[u32]) -> (Vec<u32>, Vec<u32>, u32) {
        let mut a = Allocator::new(reusable, page_count);
        for &p in freed {
            a.free(p);
        }
        let (chain, list) = a.free_chain().unwrap();
        (chain, list, a.next)
    }

    #[test]
    fn the_free_list_chain_takes_the_smallest_reusable_pages() {
        let (chain, list, next) = chain_of(vec![5, 9, 12], 20, &[3, 15]);
        assert_eq!(chain, vec![5]);
        assert_eq!(list, vec![3, 9, 12, 15]);
        assert_eq!(next, 20, "the file does not grow");
    }

    #[test]
    fn the_free_list_chain_grows_the_file_only_when_nothing_is_reusable() {
        let (chain, list, next) = chain_of(vec![], 20, &[3, 15]);
        assert_eq!((chain, list, next), (vec![20], vec![3, 15], 21));
        let (chain, list, next) = chain_of(vec![], 20, &[]);
        assert_eq!((chain, list, next), (vec![], vec![], 20));
    }

    #[test]
    fn the_smallest_chain_may_leave_its_last_page_empty() {
        // N = 1020: one page cannot hold 1019 numbers, two pages leave 1018 — a full page and
        // an empty one.
        let reusable: Vec<u32> = (2..1022).collect();
        let (chain, list, next) = chain_of(reusable, 1022, &[]);
        assert_eq!(chain, vec![2, 3]);
        assert_eq!(list.len(), 1018);
        assert_eq!(next, 1022);
        // Encoded as the spec says: 1018 numbers, then an empty last page; both decode.
        let p0 = layout::encode_free(&list, 7, 2, 3);
        let p1 = layout::encode_free(&[], 7, 3, 0);
        assert_eq!(layout::decode_free(&p0).unwrap(), (list.clone(), 3));
        assert_eq!(layout::decode_free(&p1).unwrap(), (vec![], 0));
        // Only the last page may hold fewer than 1018.
        let short = layout::encode_free(&list[..5], 7, 2, 3);
        assert!(layout::decode_free(&short).is_err());
    }
}
