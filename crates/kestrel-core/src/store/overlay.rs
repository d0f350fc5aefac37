//! The index entries held by the versions in memory, reference-counted: per index tree, each
//! (index key, primary key) pair with the number of in-memory versions (of any chain) holding it.
//! Every place a version enters a chain calls [`Overlay::enter`], every place one leaves memory
//! [`Overlay::leave`] (or [`Overlay::release`], which also gives back its bytes), and an entry
//! goes at zero. Nothing compares a leaving version with its neighbours: the count already knows
//! whether a staying version still holds the pair.

use std::collections::btree_map::Entry as MapEntry;
use std::collections::BTreeMap;

use super::chain::{version_bytes, Version};
use crate::format::envelope;
use crate::keybuf::KeyBuf;

/// Bytes charged per in-memory index entry on top of its entry key (map node and count).
pub const INDEX_ENTRY_OVERHEAD_BYTES: usize = 48;

/// The reference-counted index entries held by the versions in memory.
#[derive(Debug, Default)]
pub(super) struct Overlay {
    /// Index tree name (`collection ‖ 0x00 ‖ index`) → entry key (`ik ‖ pk ‖ u16 BE |pk|`) →
    /// reference count. Invariant: every count ≥ 1 and equals the number of in-memory versions
    /// of the collection whose envelope holds that (index, ik) for that pk; no tree map is empty.
    pub(super) trees: BTreeMap<String, BTreeMap<KeyBuf, u32>>,
    /// Invariant: Σ trees[t].len().
    pub(super) entries: usize,
}

/// Memory released when versions leave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Released {
    pub(super) versions: usize,
    /// Version bytes and index-entry bytes (not the key's own bytes).
    pub(super) bytes: usize,
    pub(super) index_entries: usize,
}

impl Released {
    pub(super) fn add(&mut self, o: Released) {
        self.versions += o.versions;
        self.bytes += o.bytes;
        self.index_entries += o.index_entries;
    }
}

pub(super) fn index_entry_bytes(entry_key_len: usize) -> usize {
    entry_key_len + INDEX_ENTRY_OVERHEAD_BYTES
}

impl Overlay {
    /// A version of `pk` holding `stored` entered memory: +1 per envelope entry. Returns the
    /// bytes of the entries that are new.
    pub(super) fn enter(&mut self, collection: &str, pk: &[u8], stored: Option<&[u8]>) -> usize {
        let Some(stored) = stored else { return 0 };
        let mut bytes = 0;
        for e in envelope::entries(stored) {
            let tree = self.trees.entry(envelope::tree_name(collection, e.index)).or_default();
            let count = tree.entry(KeyBuf::from(envelope::entry_key(e.key, pk))).or_insert(0);
            if *count == 0 {
                self.entries += 1;
                bytes += index_entry_bytes(e.key.len() + pk.len() + 2);
            }
            *count += 1;
        }
        bytes
    }

    /// A version of `pk` holding `stored` left memory: −1 per envelope entry, the entry removed
    /// at zero. Returns (entries removed, their bytes).
    pub(super) fn leave(&mut self, collection: &str, pk: &[u8], stored: Option<&[u8]>) -> (usize, usize) {
        let Some(stored) = stored else { return (0, 0) };
        let (mut removed, mut bytes) = (0, 0);
        for e in envelope::entries(stored) {
            let name = envelope::tree_name(collection, e.index);
            let Some(tree) = self.trees.get_mut(&name) else {
                debug_assert!(false, "a leaving version's entry is counted");
                continue;
            };
            let key = KeyBuf::from(envelope::entry_key(e.key, pk));
            let MapEntry::Occupied(mut slot) = tree.entry(key) else {
                debug_assert!(false, "a leaving version's entry is counted");
                continue;
            };
            debug_assert!(*slot.get() >= 1);
            *slot.get_mut() -= 1;
            if *slot.get() == 0 {
                bytes += index_entry_bytes(slot.key().len());
                slot.remove();
                removed += 1;
                self.entries -= 1;
                if tree.is_empty() {
                    self.trees.remove(&name);
                }
            }
        }
        (removed, bytes)
    }

    /// A whole version left memory: its bytes and its entries.
    pub(super) fn release(&mut self, collection: &str, pk: &[u8], v: &Version) -> Released {
        let (index_entries, index_bytes) = self.leave(collection, pk, v.value.as_deref());
        Released { versions: 1, bytes: version_bytes(v) + index_bytes, index_entries }
    }
}
