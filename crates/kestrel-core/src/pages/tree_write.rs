//! Writing a checkpoint (docs/FORMAT.md "Writing checkpoint seq + 1"): [`build_checkpoint`]
//! derives the index-tree changes (step 0, `derive.rs`), applies the changes of every tree in name
//! order with the deterministic copy-on-write [`TreeWriter`], then the catalog, then the new free
//! list, and returns every page to write with the new meta. It writes nothing itself.
//!
//! Determinism: the TypeScript twin builds byte-identical files, so every allocation happens
//! exactly in the order the spec gives — per leaf: overflow chains of new values in key order,
//! then one page per packed group; per branch: children first in entry order, then its own
//! groups; catalog after all collections; free-list pages last (the smallest reusable pages,
//! then the end of the file). Frees only ever add to a set, so their order does not matter.
//!
//! Index trees are ordinary trees named `collection ‖ 0x00 ‖ index`; their derived changes join
//! the caller's in name order before step 1, and from then on they are written like any
//! collection (their catalog count is their entries; the meta's `records` skips them).

use std::ops::Range;

use super::allocator::{read_free_list, Allocator, Quarantine};
use super::derive::derive_index_changes;
use super::tree_read::{catalog_get, walk_chain, DEPTH_MAX, TREE_KINDS};
use super::{corrupt, CollectionChanges, Meta, PageSource};
use crate::error::Result;
use crate::format::envelope;
use crate::format::page_layout::{
    self, branch_entry_bytes, decode_branch, decode_leaf, encode_branch, encode_catalog_value, encode_free, encode_leaf, encode_overflow, leaf_entry_bytes,
    overflow_pages_for, pack, LeafEntry, PageBuf, ValueRef, FREE_NUMBERS_PER_PAGE, INLINE_VALUE_BYTES_MAX, KIND_LEAF, OVERFLOW_DATA_BYTES,
};

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

/// Builds the pages of one checkpoint: the copy-on-write `apply` of each changed tree, every
/// page allocated in the deterministic order of the module doc.
struct TreeWriter<'s, 'f> {
    src: &'s PageSource<'f>,
    /// The seq of the checkpoint being written.
    seq: u64,
    alloc: Allocator,
    /// Every page built, each number once.
    pages: Vec<(u32, Box<PageBuf>)>,
    /// Live records added minus removed by the `apply` calls since it was last reset.
    record_delta: i64,
}

impl TreeWriter<'_, '_> {
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

/// What a checkpoint writes: its meta and every other page.
pub struct Built {
    pub meta: Meta,
    /// (page number, page); distinct numbers, all ≥ 2 and < meta.page_count.
    pub pages: Vec<(u32, Box<PageBuf>)>,
    pub pages_freed: u64,
}

/// Spec steps 1–5 for checkpoint `src.meta.seq + 1` at `lsn`: every new page, built in
/// allocation order, and the new meta. Writes nothing.
pub fn build_checkpoint<V: AsRef<[u8]>>(
    src: &PageSource<'_>,
    lsn: u64,
    changes: &[CollectionChanges<V>],
    quarantine: &Quarantine,
    reuse_free_pages: bool,
) -> Result<Built> {
    let meta = src.meta;
    let (chain, mut reusable) = read_free_list(src)?;
    let mut next = meta.page_count;
    if !quarantine.pages.is_empty() {
        debug_assert!(quarantine.pages.iter().all(|p| *p >= meta.page_count || reusable.binary_search(p).is_ok()));
        debug_assert!(
            (meta.page_count..quarantine.page_count).all(|p| quarantine.pages.binary_search(&p).is_ok()),
            "an attempt writes every page it allocates"
        );
        reusable.retain(|p| quarantine.pages.binary_search(p).is_err());
        next = next.max(quarantine.page_count);
    }
    let mut w = TreeWriter { src, seq: meta.seq + 1, alloc: Allocator::new(reusable, next, reuse_free_pages), pages: Vec::new(), record_delta: 0 };
    for &p in &quarantine.pages {
        w.alloc.free(p);
    }

    // Step 0: the derived index trees join the changes in name order.
    let derived = derive_index_changes(src, changes)?;
    // (tree name, its changes as ops), collections and derived trees alike.
    let mut all: Vec<(&str, Vec<Op<'_>>)> = changes
        .iter()
        .map(|cc| (cc.name.as_str(), cc.changes.iter().map(|(k, v)| Op { key: k, value: v.as_ref().map(|(c, v)| (*c, v.as_ref())) }).collect()))
        .chain(
            derived.iter().map(|cc| (cc.name.as_str(), cc.changes.iter().map(|(k, v)| Op { key: k, value: v.as_ref().map(|(c, v)| (*c, &v[..])) }).collect())),
        )
        .collect();
    all.sort_by(|a, b| a.0.cmp(b.0));
    debug_assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "collection and index-tree names never collide");

    // Step 2: each changed tree, in name order.
    let mut records_total = meta.records as i128;
    let mut catalog_values: Vec<Option<[u8; page_layout::CATALOG_VALUE_BYTES]>> = Vec::with_capacity(all.len());
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
        let ops: Vec<Op<'_>> =
            all.iter().zip(&catalog_values).map(|((name, _), v)| Op { key: name.as_bytes(), value: v.as_ref().map(|v| (0, &v[..])) }).collect();
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
