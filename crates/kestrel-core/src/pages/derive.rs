//! Step 0 of a checkpoint (docs/FORMAT.md "Index trees"): the index-tree changes derived from the
//! old stored value of each changed record (in the current checkpoint) and its new one. Index
//! tree `collection ‖ 0x00 ‖ index` holds one entry `ik ‖ pk ‖ u16 BE |pk|` per index key of
//! each checkpointed record, so the trees follow the records exactly, in both engines.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::tree_read::{catalog_get, lookup, range};
use super::{corrupt, Change, CollectionChanges, PageSource};
use crate::error::Result;
use crate::format::envelope::{self, IndexKey};
use crate::format::page_layout::{decode_overflow, ValueRef, INLINE_VALUE_BYTES_MAX, KIND_OVERFLOW};
use crate::format::payload::VALUE_BYTES_MAX;

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
