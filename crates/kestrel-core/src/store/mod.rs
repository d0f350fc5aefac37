//! The version store (record cache): per (collection, key) a chain of versions, oldest first,
//! each stamped with the commit id (LSN) that wrote it. Reads at a snapshot see the newest version
//! with `commit_id ≤ snapshot`.
//!
//! - `chain.rs`: `Version`, `Chain`, visibility, the memory charge of versions and keys.
//! - `overlay.rs`: the in-memory index entries, reference-counted.
//! - `keep.rs`: the horizon and pinned snapshots, and the prune rule.
//! - `disk_cursor.rs`, `read.rs`: scans and index lookups, memory merged with the page store.
//! - `scavenge.rs`: scavenge slices and retiring chains from memory.
//! - this file: [`Store`] — apply, get, the horizon and pinned snapshots, the checkpointed LSN,
//!   counters.
//!
//! **Pruning** keeps, of each chain, exactly the versions some allowed snapshot can read: every
//! snapshot ≥ the horizon, and each **pinned** snapshot below it (open readers older than the
//! horizon; the caller hands over the whole list with every `set_horizon`). A version stays iff
//! its commit id is above the horizon, or it is the newest at or below the horizon, or it is the
//! newest at or below some pinned snapshot; every other version leaves, also from the middle of a
//! chain. So an old reader keeps one version per key, not every version written since.
//!
//! A key is either **in memory** — then its chain answers every snapshot ≥ the horizon and every
//! pinned snapshot on its own — or only in the **page store**, whose version is then the key's
//! one and only version. The chain of a key written while it was only in the page store starts
//! with that page-store version (loaded at install), so that older snapshots and merges see it.
//! A chain is retired from memory only when it is a single version already in a checkpoint
//! (`commit_id ≤ checkpointed_lsn`).
//!
//! Versions hold **stored** values: plain MessagePack or an index envelope (`format::envelope`).
//! Reads (`get`, `scan`, `find`) return the MessagePack part only.
//!
//! **Index entries in memory** (docs/FORMAT.md "Index entries in memory"): per index tree, the
//! (index key, primary key) pairs held by the versions in memory, each with a reference count =
//! the number of in-memory versions (of any chain) holding it. Every place a version enters a
//! chain adds one per envelope entry, every place a version leaves memory subtracts one, and an
//! entry goes at zero. Nothing ever compares a leaving version with its neighbours: the count
//! already knows whether any staying version holds the pair, wherever it sits in the chain.
//!
//! **Memory**: keys are [`KeyBuf`]s (short ones in place, in the map nodes), a chain of one
//! version holds it in place (no allocation of its own), and a stored value is one shared
//! [`Value`] allocation: the flusher's queue and dirty set and the checkpoint that writes it
//! hold the same bytes, never a copy. `record_bytes` stays the documented estimate (payload bytes
//! plus the fixed overheads), the same figure the TypeScript twin reports.
//!
//! **Age groups** (the scavenger's LRU clock): the store has a current age group, set by the
//! caller and never decreasing; each chain remembers the group in which it was last installed,
//! loaded or read. `scavenge` walks the chains a slice at a time, prunes, retires the old lone
//! checkpointed ones and surveys what it could retire next, by age.

mod chain;
mod disk_cursor;
mod keep;
mod overlay;
mod read;
mod scavenge;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::btree_map::Entry as MapEntry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub use chain::{Value, Version, KEY_OVERHEAD_BYTES, VERSION_OVERHEAD_BYTES};
pub use keep::PINNED_MAX;
pub use overlay::INDEX_ENTRY_OVERHEAD_BYTES;
pub use read::ScanBounds;
pub use scavenge::ScavengeStep;

use crate::error::{Code, Error, Result};
use crate::format::envelope;
use crate::format::payload::{Commit, OP_APPEND, OP_DELETE, OP_INCREMENT, OP_PUT};
use crate::keybuf::KeyBuf;
use crate::merge;
use crate::pages::{PageStore, PAGE_FILE};
use chain::{chain_key_bytes, chain_of, version_bytes, visible, Chain};
use keep::{droppable_tombstone, prune, Keep};
use overlay::{Overlay, Released};

/// What one installed write left as the key's newest version: the flusher's input. The
/// collection name and the value are the store's own, shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub collection: Arc<str>,
    pub key: KeyBuf,
    pub commit_id: u64,
    /// The stored value; None = deleted.
    pub value: Option<Value>,
}

impl Written {
    /// Bytes this write counts for while queued, deferred or dirty (its value is shared with the
    /// version that holds it: what the queue alone keeps alive is at most this).
    pub fn bytes(&self) -> usize {
        self.collection.len() + self.key.len() + self.value.as_ref().map_or(0, |v| v.len()) + VERSION_OVERHEAD_BYTES
    }
}

/// The version store of one engine; the engine holds it behind an `RwLock` (reads share it,
/// `apply`, pruning and scavenging take it exclusively).
pub struct Store {
    /// Collection → key → chain. Ordered, so the scavenger can walk (collection, key) in order.
    collections: BTreeMap<Arc<str>, BTreeMap<KeyBuf, Chain>>,
    overlay: Overlay,
    /// The horizon and the pinned snapshots below it: a version no snapshot ≥ the horizon and no
    /// pinned snapshot reads may be pruned.
    keep: Keep,
    /// The LSN of the published checkpoint: chains whose only version is at or below it are
    /// in the page store as they are. Never decreases.
    checkpointed_lsn: u64,
    /// Invariant: number of keys whose newest version is not a tombstone, memory and page store.
    live_keys: u64,
    /// Invariant: total number of versions held in memory.
    versions: usize,
    /// Invariant: estimated bytes of the chains in memory (payloads + overheads) plus the
    /// in-memory index entries (entry keys + overhead).
    record_bytes: usize,
    /// Chains dropped from memory since open.
    retired: u64,
    /// The current age group. Never decreases. Atomic so that it can be moved under the read lock.
    age_group: AtomicU32,
    /// Where the scavenger's pass stands: the last (collection, key) it visited; None = the next
    /// slice starts a new pass at the first chain.
    scavenge_cursor: Option<(Arc<str>, KeyBuf)>,
    /// Which collections may have keys that are only in the page store (see [`DiskOnly`]).
    disk_only: DiskOnly,
}

/// Which collections may have keys in the page store that have no chain in memory.
///
/// Invariant: for a collection `c` with `!may_have(c)`, every key of `c` in the published page
/// store has a chain in memory. Then a read of `c` never needs the page store: a key without a
/// chain is in no checkpoint, and a page-store entry (of `c` or of one of its index trees) is
/// always answered by its key's chain, whose visible versions are in memory with their index
/// entries counted in the overlay. Why it holds: the store starts from an empty page store
/// (`Store::default`, or `Store::new` with no records and no trees) or marks every collection
/// (`all`); a checkpoint only adds the keys of the dirty set, which `apply` installed as chains;
/// a chain leaves memory only when it is retired (`retire`, `scavenge`: its collection is
/// marked) or as a droppable tombstone (its key is in no checkpoint from then on: the tombstone
/// is the key's newest version and at or below the published checkpoint). Log replay at open
/// goes through `apply` like any commit.
#[derive(Debug, Default)]
struct DiskOnly {
    /// The page store held records, or its catalog any tree, at open: any collection may.
    all: bool,
    /// Collections from which a chain was retired since open.
    retired_from: BTreeSet<String>,
}

impl DiskOnly {
    fn may_have(&self, collection: &str) -> bool {
        self.all || (!self.retired_from.is_empty() && self.retired_from.contains(collection))
    }

    fn mark(&mut self, collection: &str) {
        if !self.all && !self.retired_from.contains(collection) {
            self.retired_from.insert(collection.to_string());
        }
    }
}

impl Default for Store {
    fn default() -> Store {
        Store {
            collections: BTreeMap::new(),
            overlay: Overlay::default(),
            keep: Keep::default(),
            checkpointed_lsn: 0,
            live_keys: 0,
            versions: 0,
            record_bytes: 0,
            retired: 0,
            age_group: AtomicU32::new(0),
            scavenge_cursor: None,
            disk_only: DiskOnly::default(),
        }
    }
}

/// The MessagePack part of a value read from the page store, without a copy for a plain one.
fn strip_owned(mut stored: Vec<u8>) -> Vec<u8> {
    let h = envelope::header_len(&stored);
    if h > 0 {
        stored.drain(..h);
    }
    stored
}

fn corrupt_value(collection: &str, what: &str) -> Error {
    Error::new(
        Code::Corrupt,
        format!("collection {collection:?}: a record in the page store has a malformed index envelope ({what}); restore the database from a backup (kestrel restore)"),
    )
}

impl Store {
    /// Start from a checkpoint holding `records` live records at `checkpoint_lsn`, whose catalog
    /// lists at least one tree iff `has_trees` (`Store::default()`: from an empty page store).
    pub fn new(checkpoint_lsn: u64, records: u64, has_trees: bool) -> Store {
        // Either says the page store may hold keys: reads must look there (see DiskOnly).
        let disk_only = DiskOnly { all: records > 0 || has_trees, retired_from: BTreeSet::new() };
        Store { checkpointed_lsn: checkpoint_lsn, keep: Keep::at(checkpoint_lsn), live_keys: records, disk_only, ..Store::default() }
    }

    fn age(&self) -> u32 {
        self.age_group.load(Ordering::Relaxed)
    }

    /// Chains installed, loaded or read from now on belong to age group `group` (never decreases).
    pub fn set_age_group(&self, group: u64) {
        let g = u32::try_from(group).unwrap_or(u32::MAX);
        self.age_group.fetch_max(g, Ordering::Relaxed);
    }

    pub fn age_group(&self) -> u32 {
        self.age()
    }

    /// Install one commit's ops in order (called in LSN order, after the commit is
    /// acknowledged). A key only in the page store is loaded first (merges build on it, older
    /// snapshots read it). Returns what each op left as the key's newest version.
    pub fn apply(&mut self, commit_id: u64, commit: Commit, pages: &PageStore) -> Result<Vec<Written>> {
        let age = self.age();
        let mut out = Vec::with_capacity(commit.ops.len());
        // Split borrows: the chains and the overlay change together.
        let Store { collections, overlay, versions, record_bytes, live_keys, keep, .. } = self;
        let names: Vec<Arc<str>> = commit
            .collections
            .iter()
            .map(|n| match collections.get_key_value(n.as_str()) {
                Some((name, _)) => name.clone(),
                None => Arc::from(n.as_str()),
            })
            .collect();
        for op in commit.ops {
            let name = &names[op.collection as usize];
            let map = match collections.get_mut(&**name) {
                Some(map) => map,
                None => collections.entry(name.clone()).or_default(),
            };
            // One search per op: the entry is found or made in place.
            let key = KeyBuf::from(op.key);
            let chain = match map.entry(key.clone()) {
                MapEntry::Occupied(e) => {
                    let chain = e.into_mut();
                    chain.touch(age);
                    chain
                }
                MapEntry::Vacant(e) => {
                    let mut chain = Chain::new(age);
                    if let Some((cid, value)) = pages.get(name, e.key())? {
                        debug_assert!(cid < commit_id, "the page store only holds older commits");
                        // Read back from disk: check it before its entries are counted.
                        envelope::validate(&value, e.key().len()).map_err(|w| corrupt_value(name, &w))?;
                        *record_bytes += overlay.enter(name, e.key(), Some(&value));
                        let v = Version { commit_id: cid, value: Some(Value::from(value)) };
                        *record_bytes += version_bytes(&v);
                        *versions += 1;
                        chain.versions.push(v);
                    }
                    *record_bytes += chain_key_bytes(e.key());
                    e.insert(chain)
                }
            };
            let base = chain.versions().last().and_then(|v| v.value.as_deref());
            let was_live = base.is_some();
            let value: Option<Value> = match op.kind {
                OP_PUT => Some(Value::from(op.value)),
                OP_DELETE => None,
                OP_APPEND => Some(Value::from(merge::append(base, &op.value))),
                OP_INCREMENT => Some(Value::from(merge::increment(base, &op.value))),
                other => unreachable!("op {other} passed validation"),
            };
            debug_assert!(chain.versions().last().is_none_or(|v| v.commit_id < commit_id), "versions install in commit order");
            let is_live = value.is_some();
            *record_bytes += overlay.enter(name, &key, value.as_deref());
            let v = Version { commit_id, value: value.clone() };
            *record_bytes += version_bytes(&v);
            chain.versions.push(v);
            *versions += 1;
            let gone = prune(&mut chain.versions, keep, name, &key, overlay);
            *versions -= gone.versions;
            *record_bytes -= gone.bytes;
            // The count starts from the checkpoint's; a key loaded from the page store is in it,
            // so it cannot go below zero unless that count was wrong.
            *live_keys = (*live_keys + is_live as u64).checked_sub(was_live as u64).ok_or_else(|| {
                Error::new(
                    Code::Corrupt,
                    format!("{name}: more live records were deleted than the checkpoint counts ({PAGE_FILE} meta page); run `kestrel verify` and restore from a backup"),
                )
            })?;
            out.push(Written { collection: name.clone(), key, commit_id, value });
        }
        Ok(out)
    }

    /// Raise the horizon (never lowers it) and replace the pinned snapshots: `pinned` lists the
    /// snapshots below the horizon still open — every one of them, each call (one left out may
    /// lose its versions). Snapshots at or above the (new) horizon in it are ignored; the rest
    /// are kept sorted and deduplicated, at most [`PINNED_MAX`] of them (past that, the store
    /// keeps every version above the newest one kept). Each pinned snapshot keeps the one version
    /// of each chain it reads. Pruning as keys are written, the sweep and `scavenge` all use the
    /// horizon and list set last. With `sweep`, prune every chain now.
    pub fn set_horizon(&mut self, horizon: u64, sweep: bool, pinned: &[u64]) {
        self.keep.set(horizon, pinned);
        if !sweep {
            return;
        }
        let h = self.keep.horizon;
        let checkpointed = self.checkpointed_lsn;
        let mut gone = Released::default();
        let Store { collections, overlay, keep, .. } = self;
        for (name, map) in collections.iter_mut() {
            map.retain(|key, chain| {
                gone.add(prune(&mut chain.versions, keep, name, key, overlay));
                let drop = droppable_tombstone(chain.versions(), h, checkpointed);
                if drop {
                    // A tombstone holds no index entries.
                    gone.add(Released { versions: 1, bytes: version_bytes(&chain.versions()[0]) + chain_key_bytes(key), index_entries: 0 });
                }
                !drop
            });
        }
        self.versions -= gone.versions;
        self.record_bytes -= gone.bytes;
    }

    pub fn horizon(&self) -> u64 {
        self.keep.horizon
    }

    /// The pinned snapshots below the horizon, ascending (as kept: see [`Store::set_horizon`]).
    pub fn pinned(&self) -> &[u64] {
        &self.keep.pinned
    }

    /// A checkpoint at `lsn` is published: chains at or below it may now be retired.
    pub fn set_checkpointed(&mut self, lsn: u64) {
        debug_assert!(lsn >= self.checkpointed_lsn, "checkpoints only move forward");
        self.checkpointed_lsn = self.checkpointed_lsn.max(lsn);
    }

    pub fn checkpointed_lsn(&self) -> u64 {
        self.checkpointed_lsn
    }

    /// The MessagePack value of a key at `snapshot`, or None.
    pub fn get<'a>(&'a self, collection: &str, key: &[u8], snapshot: u64, pages: &PageStore) -> Result<Option<Cow<'a, [u8]>>> {
        if let Some(chain) = self.collections.get(collection).and_then(|m| chain_of(m, key)) {
            chain.touch(self.age());
            return Ok(visible(chain.versions(), snapshot).and_then(|v| v.value.as_deref()).map(|v| Cow::Borrowed(envelope::value(v))));
        }
        if !self.disk_only.may_have(collection) {
            return Ok(None); // no chain, so in no checkpoint either (see DiskOnly)
        }
        Ok(match pages.get(collection, key)? {
            Some((cid, value)) if cid <= snapshot => Some(Cow::Owned(strip_owned(value))),
            _ => None,
        })
    }

    /// The collections with chains in memory (tombstones too), in name order.
    pub fn collection_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.collections.keys().map(|name| &**name)
    }

    pub fn key_count(&self) -> u64 {
        self.live_keys
    }

    pub fn version_count(&self) -> usize {
        self.versions
    }

    pub fn record_bytes(&self) -> usize {
        self.record_bytes
    }

    pub fn retired_count(&self) -> u64 {
        self.retired
    }

    /// Index entries held in memory (distinct pairs over all index trees).
    pub fn index_entry_count(&self) -> usize {
        self.overlay.entries
    }
}
