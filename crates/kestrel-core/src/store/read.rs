//! Scans and index lookups at a snapshot: the chains in memory merged with the page store's
//! keys (or index entries) that have no chain, and for a lookup the visibility check of each
//! candidate (kept only if the version of its record visible at the snapshot holds that key).

use std::collections::BTreeMap;
use std::ops::Bound;

use super::chain::{chain_of, visible, Chain};
use super::disk_cursor::{merge_order, DiskCursor};
use super::{corrupt_value, Store};
use crate::error::{Code, Error, Result};
use crate::format::envelope;
use crate::keybuf::KeyBuf;
use crate::pages::PageStore;

/// Bounds of a scan over encoded keys.
#[derive(Default, Clone, Debug)]
pub struct ScanBounds {
    pub gte: Option<Vec<u8>>,
    pub gt: Option<Vec<u8>>,
    pub lte: Option<Vec<u8>>,
    pub lt: Option<Vec<u8>>,
    pub reverse: bool,
    /// 0 = no limit.
    pub limit: usize,
}

impl ScanBounds {
    /// (lower, upper), or None when no key can lie within them (`BTreeMap::range` panics on an
    /// inverted range: an empty result is the answer).
    pub(super) fn range(&self) -> Option<KeyRange<'_>> {
        let lower: Bound<&[u8]> = match (&self.gte, &self.gt) {
            (Some(k), _) => Bound::Included(k.as_slice()),
            (None, Some(k)) => Bound::Excluded(k.as_slice()),
            _ => Bound::Unbounded,
        };
        let upper: Bound<&[u8]> = match (&self.lte, &self.lt) {
            (Some(k), _) => Bound::Included(k.as_slice()),
            (None, Some(k)) => Bound::Excluded(k.as_slice()),
            _ => Bound::Unbounded,
        };
        if let (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) = (lower, upper) {
            if l > u || (l == u && !(matches!(lower, Bound::Included(_)) && matches!(upper, Bound::Included(_)))) {
                return None;
            }
        }
        Some((lower, upper))
    }

    pub(super) fn limit(&self) -> usize {
        if self.limit == 0 {
            usize::MAX
        } else {
            self.limit
        }
    }
}

/// (lower, upper) bounds over keys.
pub(super) type KeyRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Bounds over keys as map keys (a map searched by `KeyBuf` compares the bytes held in place).
fn key_bounds((lower, upper): KeyRange<'_>) -> (Bound<KeyBuf>, Bound<KeyBuf>) {
    let own = |b: Bound<&[u8]>| match b {
        Bound::Included(k) => Bound::Included(KeyBuf::new(k)),
        Bound::Excluded(k) => Bound::Excluded(KeyBuf::new(k)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (own(lower), own(upper))
}

impl Store {
    /// Entries visible at `snapshot` within the bounds, in key order (or reverse), at most
    /// `limit` (0 = all): the chains in memory merged with the page store's keys not in memory.
    /// Values are the MessagePack parts.
    pub fn scan(&self, collection: &str, b: &ScanBounds, snapshot: u64, pages: &PageStore) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.scan_each(collection, b, snapshot, pages, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok(out)
    }

    /// As [`Store::scan`], handing each (key, MessagePack value) to `visit` instead of copying
    /// it, until `visit` returns false. Returns false iff `visit` stopped it.
    pub fn scan_each(&self, collection: &str, b: &ScanBounds, snapshot: u64, pages: &PageStore, visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool> {
        let Some((lower, upper)) = b.range() else { return Ok(true) };
        let limit = b.limit();
        let age = self.age();
        let (lo, hi) = match self.collections.get(collection) {
            Some(_) => key_bounds((lower, upper)),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let mut mem: Box<dyn Iterator<Item = (&KeyBuf, &Chain)>> = match self.collections.get(collection) {
            None => Box::new(std::iter::empty()),
            Some(map) if b.reverse => Box::new(map.range::<KeyBuf, _>((lo.as_ref(), hi.as_ref())).rev()),
            Some(map) => Box::new(map.range::<KeyBuf, _>((lo.as_ref(), hi.as_ref()))),
        };
        let mut disk = if self.disk_only.may_have(collection) {
            DiskCursor::new(pages, collection, lower, upper, b.reverse)
        } else {
            DiskCursor::empty(pages, collection)
        };
        let mut next_mem = mem.next();
        let mut found = 0usize;
        // Bounded: each iteration consumes a memory entry or a page-store entry.
        while found < limit {
            let d = disk.peek()?.map(|e| e.key.as_slice());
            let Some(order) = merge_order(next_mem.map(|(k, _)| k.as_slice()), d, b.reverse) else { break };
            match order {
                std::cmp::Ordering::Less | std::cmp::Ordering::Equal => {
                    let (k, chain) = next_mem.take().expect("checked");
                    if order == std::cmp::Ordering::Equal {
                        disk.pop(); // memory answers for a key it holds
                    }
                    chain.touch(age); // read, whatever it holds at this snapshot
                    if let Some(v) = visible(chain.versions(), snapshot).and_then(|v| v.value.as_ref()) {
                        found += 1;
                        if !visit(k.as_slice(), envelope::value(v)) {
                            return Ok(false);
                        }
                    }
                    next_mem = mem.next();
                }
                std::cmp::Ordering::Greater => {
                    let e = disk.pop().expect("peeked");
                    if e.commit_id <= snapshot {
                        found += 1;
                        if !visit(&e.key, envelope::value(&e.value)) {
                            return Ok(false);
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    /// Index lookup at `snapshot` (docs/FORMAT.md "Index entries in memory"): the records of
    /// `collection` whose visible version holds an index key of `index` whose entry key
    /// (`ik ‖ pk ‖ u16 BE |pk|`) lies within the bounds, as (primary key, MessagePack value) in
    /// entry order (reversed with `reverse`), at most `limit` (0 = all) of them.
    ///
    /// Candidates are the in-memory entries merged with the page-store index tree (an entry in
    /// both counts once); a candidate is kept only if the version of its primary key visible at
    /// `snapshot` holds that (index, ik). Every record visible at `snapshot` ≥ the horizon is
    /// found: its visible version is in memory (its entries are counted in the overlay) or it is
    /// the checkpointed version (the page-store tree holds its entries); so is every record
    /// visible at a pinned snapshot.
    pub fn find(&self, collection: &str, index: &str, b: &ScanBounds, snapshot: u64, pages: &PageStore) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.find_each(collection, index, b, snapshot, pages, &mut |pk, v| {
            out.push((pk.to_vec(), v.to_vec()));
            true
        })?;
        Ok(out)
    }

    /// As [`Store::find`], handing each (primary key, MessagePack value) to `visit` instead of
    /// copying it, until `visit` returns false. Returns false iff `visit` stopped it.
    ///
    /// When no key of `collection` can be only in the page store (`DiskOnly`), the page-store
    /// index tree is not read: every entry it holds is answered by a chain in memory, whose
    /// visible version's entries the overlay holds.
    pub fn find_each(
        &self,
        collection: &str,
        index: &str,
        b: &ScanBounds,
        snapshot: u64,
        pages: &PageStore,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<bool> {
        if index.is_empty() || index.len() > envelope::INDEX_NAME_BYTES_MAX || index.contains('\0') {
            return Err(Error::new(Code::InvalidArgument, format!("index name {index:?}: 1 to {} UTF-8 bytes without 0x00", envelope::INDEX_NAME_BYTES_MAX)));
        }
        if collection.contains('\0') {
            return Err(Error::new(Code::InvalidArgument, format!("collection name {collection:?} contains 0x00")));
        }
        let Some((lower, upper)) = b.range() else { return Ok(true) };
        let limit = b.limit();
        let age = self.age();
        let tree = envelope::tree_name(collection, index.as_bytes());
        let overlay = self.overlay.trees.get(&tree);
        let (lo, hi) = if overlay.is_some() { key_bounds((lower, upper)) } else { (Bound::Unbounded, Bound::Unbounded) };
        let mut mem: Box<dyn Iterator<Item = &KeyBuf>> = match overlay {
            None => Box::new(std::iter::empty()),
            Some(o) if b.reverse => Box::new(o.range::<KeyBuf, _>((lo.as_ref(), hi.as_ref())).rev().map(|(k, _)| k)),
            Some(o) => Box::new(o.range::<KeyBuf, _>((lo.as_ref(), hi.as_ref())).map(|(k, _)| k)),
        };
        let mut disk =
            if self.disk_only.may_have(collection) { DiskCursor::new(pages, &tree, lower, upper, b.reverse) } else { DiskCursor::empty(pages, &tree) };
        let chains = self.collections.get(collection);
        let mut next_mem = mem.next();
        let mut found = 0usize;
        // Bounded: each iteration consumes an overlay entry or a page-store entry (or both).
        while found < limit {
            let d = disk.peek()?.map(|e| e.key.as_slice());
            let Some(order) = merge_order(next_mem.map(|k| k.as_slice()), d, b.reverse) else { break };
            let disk_entry;
            let entry: &[u8] = match order {
                std::cmp::Ordering::Greater => {
                    disk_entry = disk.pop().expect("peeked").key;
                    &disk_entry
                }
                std::cmp::Ordering::Less | std::cmp::Ordering::Equal => {
                    if order == std::cmp::Ordering::Equal {
                        disk.pop(); // one candidate per entry key
                    }
                    let k = next_mem.take().expect("checked");
                    next_mem = mem.next();
                    k
                }
            };
            let mut stopped = false;
            let hit = self.find_candidate(collection, chains, index.as_bytes(), entry, snapshot, pages, age, &mut |pk, v| {
                stopped = !visit(pk, v);
            })?;
            if hit {
                found += 1;
                if stopped {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Hand the candidate `entry` of `find` to `visit` as (primary key, MessagePack value) if the
    /// version of its primary key visible at `snapshot` holds (index, ik); whether it did.
    // The lookup's state, looked up once by `find_each` and passed to each candidate.
    #[allow(clippy::too_many_arguments)]
    fn find_candidate(
        &self,
        collection: &str,
        chains: Option<&BTreeMap<KeyBuf, Chain>>,
        index: &[u8],
        entry: &[u8],
        snapshot: u64,
        pages: &PageStore,
        age: u32,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<bool> {
        let Some((ik, pk)) = envelope::split_entry(entry) else {
            return Err(corrupt_value(collection, &format!("index entry of {} bytes whose primary-key length does not fit", entry.len())));
        };
        if let Some(chain) = chains.and_then(|m| chain_of(m, pk)) {
            chain.touch(age);
            let Some(v) = visible(chain.versions(), snapshot).and_then(|v| v.value.as_deref()) else { return Ok(false) };
            if !envelope::holds(v, index, ik) {
                return Ok(false);
            }
            visit(pk, envelope::value(v));
            return Ok(true);
        }
        if !self.disk_only.may_have(collection) {
            return Ok(false); // no chain, so in no checkpoint either (see DiskOnly)
        }
        match pages.get(collection, pk)? {
            Some((cid, v)) if cid <= snapshot => {
                let keys = envelope::keys(&v, pk.len()).map_err(|w| corrupt_value(collection, &w))?;
                if !keys.iter().any(|k| k.index == index && k.key == ik) {
                    return Ok(false);
                }
                visit(pk, envelope::value(&v));
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
