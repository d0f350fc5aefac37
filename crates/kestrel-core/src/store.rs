//! The version store (record cache): per (collection, key) a chain of versions, oldest first,
//! each stamped with the commit id (LSN) that wrote it. Reads at a snapshot see the newest version
//! with `commit_id ≤ snapshot`.
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
//! Versions hold **stored** values: plain MessagePack or an index envelope (envelope.rs). Reads
//! (`get`, `scan`, `find`) return the MessagePack part only.
//!
//! **Index entries in memory** (docs/FORMAT.md "Index entries in memory"): per index tree, the
//! (index key, primary key) pairs held by the versions in memory, each with a reference count =
//! the number of in-memory versions (of any chain) holding it. Every place a version enters a
//! chain adds one per envelope entry, every place a version leaves memory subtracts one, and an
//! entry goes at zero. Nothing ever compares a leaving version with its neighbour: the count
//! already knows whether any staying version holds the pair (Falcon bug #40801, seed 004).
//!
//! **Memory**: keys are [`KeyBuf`]s (short ones in place, in the map nodes), a chain of one
//! version holds it in place (no allocation of its own), and a stored value is one shared
//! [`Value`] allocation: the flusher's queue and dirty set and the checkpoint that writes it
//! hold the same bytes, never a copy. `record_bytes` stays the documented estimate (payload bytes
//! plus the fixed overheads below), the same figure the TypeScript twin reports.
//!
//! **Age groups** (the scavenger's LRU clock): the store has a current age group, set by the
//! caller and never decreasing; each chain remembers the group in which it was last installed,
//! loaded or read. `scavenge` walks the chains a slice at a time, prunes, retires the old lone
//! checkpointed ones and surveys what it could retire next, by age.

use std::borrow::Cow;
use std::collections::btree_map::Entry as MapEntry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::envelope;
use crate::error::{Code, Error, Result};
use crate::keybuf::KeyBuf;
use crate::merge;
use crate::pages::{PageStore, PAGE_FILE};
use crate::payload::{Commit, OP_APPEND, OP_DELETE, OP_INCREMENT, OP_PUT};

/// Bytes charged per version and per key on top of their payload bytes (chain and map overhead,
/// an estimate: the budget is about order of magnitude, not bytes).
pub const VERSION_OVERHEAD_BYTES: usize = 40;
pub const KEY_OVERHEAD_BYTES: usize = 64;
/// Bytes charged per in-memory index entry on top of its entry key (map node and count).
pub const INDEX_ENTRY_OVERHEAD_BYTES: usize = 48;
/// The most pinned snapshots the store tells apart (a defensive bound on the list's memory and
/// on the cost of a prune). Past it, the oldest `PINNED_MAX` are kept and every version above
/// the newest of them stays: the snapshots cut off still read theirs, the store only keeps more.
pub const PINNED_MAX: usize = 1 << 16;

/// A stored value (plain MessagePack or an index envelope), shared — not copied — by the version
/// that holds it and the flusher's queue and dirty set until the checkpoint that writes it.
pub type Value = Arc<[u8]>;

/// One version of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub commit_id: u64,
    /// The stored value; None = tombstone.
    pub value: Option<Value>,
}

/// A chain's versions, oldest first: a lone version (most chains) in place, more in a vector.
#[derive(Debug)]
enum Versions {
    One(Version),
    /// Empty only while a chain is being made in `apply`; never of length 1 after a prune.
    Many(Vec<Version>),
}

impl Versions {
    fn as_slice(&self) -> &[Version] {
        match self {
            Versions::One(v) => std::slice::from_ref(v),
            Versions::Many(vs) => vs,
        }
    }

    fn push(&mut self, v: Version) {
        match self {
            Versions::Many(vs) if vs.is_empty() => *self = Versions::One(v),
            Versions::Many(vs) => vs.push(v),
            Versions::One(_) => {
                let Versions::One(first) = std::mem::replace(self, Versions::Many(Vec::new())) else { unreachable!("matched One") };
                *self = Versions::Many(vec![first, v]);
            }
        }
    }
}

/// A key's versions in memory.
#[derive(Debug)]
struct Chain {
    /// Invariant: non-empty outside `apply`, strictly increasing in commit_id.
    versions: Versions,
    /// The age group in which the chain was last installed, loaded or read. Atomic because reads
    /// hold only the store's read lock; relaxed, because it is only a hint for the LRU policy.
    age: AtomicU32,
}

impl Chain {
    fn new(age: u32) -> Chain {
        Chain { versions: Versions::Many(Vec::new()), age: AtomicU32::new(age) }
    }

    fn versions(&self) -> &[Version] {
        self.versions.as_slice()
    }

    /// Mark the chain used in age group `age` (never moves it back).
    fn touch(&self, age: u32) {
        // A load first: most reads find the age current, and then no cache line is dirtied.
        if self.age.load(Ordering::Relaxed) < age {
            self.age.fetch_max(age, Ordering::Relaxed);
        }
    }

    fn age(&self) -> u32 {
        self.age.load(Ordering::Relaxed)
    }
}

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

/// The reference-counted index entries held by the versions in memory.
#[derive(Debug, Default)]
struct Overlay {
    /// Index tree name (`collection ‖ 0x00 ‖ index`) → entry key (`ik ‖ pk ‖ u16 BE |pk|`) →
    /// reference count. Invariant: every count ≥ 1 and equals the number of in-memory versions
    /// of the collection whose envelope holds that (index, ik) for that pk; no tree map is empty.
    trees: BTreeMap<String, BTreeMap<KeyBuf, u32>>,
    /// Invariant: Σ trees[t].len().
    entries: usize,
}

/// Memory released when versions leave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Released {
    versions: usize,
    /// Version bytes and index-entry bytes (not the key's own bytes).
    bytes: usize,
    index_entries: usize,
}

impl Released {
    fn add(&mut self, o: Released) {
        self.versions += o.versions;
        self.bytes += o.bytes;
        self.index_entries += o.index_entries;
    }
}

fn index_entry_bytes(entry_key_len: usize) -> usize {
    entry_key_len + INDEX_ENTRY_OVERHEAD_BYTES
}

impl Overlay {
    /// A version of `pk` holding `stored` entered memory: +1 per envelope entry. Returns the
    /// bytes of the entries that are new.
    fn enter(&mut self, collection: &str, pk: &[u8], stored: Option<&[u8]>) -> usize {
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
    fn leave(&mut self, collection: &str, pk: &[u8], stored: Option<&[u8]>) -> (usize, usize) {
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
    fn release(&mut self, collection: &str, pk: &[u8], v: &Version) -> Released {
        let (index_entries, index_bytes) = self.leave(collection, pk, v.value.as_deref());
        Released { versions: 1, bytes: version_bytes(v) + index_bytes, index_entries }
    }
}

/// Which versions pruning keeps: the horizon and the pinned snapshots below it (see [`prune`]).
#[derive(Debug, Default)]
struct Keep {
    /// Every snapshot at or above it may read. Never decreases.
    horizon: u64,
    /// Every version above it stays: the horizon, or the newest of the `PINNED_MAX` oldest
    /// pinned snapshots when more were handed over. Invariant: ≤ horizon.
    above: u64,
    /// The pinned snapshots below the horizon, ascending, distinct, at most [`PINNED_MAX`];
    /// invariant: every one ≤ `above` and < horizon.
    pinned: Vec<u64>,
}

impl Keep {
    fn at(horizon: u64) -> Keep {
        Keep { horizon, above: horizon, pinned: Vec::new() }
    }

    /// Raise the horizon to `horizon` (never lowers it) and replace the pinned list by the
    /// snapshots of `pinned` below the (new) horizon, sorted and deduplicated, cut at
    /// [`PINNED_MAX`].
    fn set(&mut self, horizon: u64, pinned: &[u64]) {
        self.horizon = self.horizon.max(horizon);
        let h = self.horizon;
        self.pinned.clear();
        self.pinned.extend(pinned.iter().copied().filter(|&p| p < h));
        self.pinned.sort_unstable();
        self.pinned.dedup();
        if self.pinned.len() > PINNED_MAX {
            // The snapshots cut off lie above the newest one kept: everything above it stays, so
            // the version each of them reads stays (it is above, or the newest at or below it).
            self.pinned.truncate(PINNED_MAX);
            self.pinned.shrink_to_fit();
            self.above = self.pinned[PINNED_MAX - 1];
        } else {
            self.above = h;
        }
    }

    /// Whether a pinned snapshot lies in `[lo, hi)`: then the version at `lo`, followed by the
    /// one at `hi`, is the newest at or below it.
    fn pins_between(&self, lo: u64, hi: u64) -> bool {
        let i = self.pinned.partition_point(|&p| p < lo);
        i < self.pinned.len() && self.pinned[i] < hi
    }
}

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

/// (lower, upper) bounds over keys.
type KeyRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Bounds over keys as map keys (a map searched by `KeyBuf` compares the bytes held in place).
fn key_bounds((lower, upper): KeyRange<'_>) -> (Bound<KeyBuf>, Bound<KeyBuf>) {
    let own = |b: Bound<&[u8]>| match b {
        Bound::Included(k) => Bound::Included(KeyBuf::new(k)),
        Bound::Excluded(k) => Bound::Excluded(KeyBuf::new(k)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (own(lower), own(upper))
}

/// The chain of `key` in a collection's map.
fn chain_of<'m>(map: &'m BTreeMap<KeyBuf, Chain>, key: &[u8]) -> Option<&'m Chain> {
    map.get(&KeyBuf::new(key))
}

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
    fn range(&self) -> Option<KeyRange<'_>> {
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

    fn limit(&self) -> usize {
        if self.limit == 0 { usize::MAX } else { self.limit }
    }
}

/// What one scavenge slice did (see [`Store::scavenge`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScavengeStep {
    /// Chains visited in this slice.
    pub visited: u64,
    /// Versions pruned (read by no snapshot ≥ the horizon nor any pinned snapshot), lone
    /// tombstones included.
    pub pruned_versions: u64,
    /// In-memory index entries removed because no staying version holds them any more.
    pub index_entries_removed: u64,
    /// Chains retired from memory.
    pub retired: u64,
    /// The pass reached the last chain: the next slice starts a new pass.
    pub done: bool,
    /// (age group, bytes) of the retirable chains (one checkpointed version) this slice visited
    /// and left in memory, ascending by age group, one pair per group seen.
    pub survey: Vec<(u32, u64)>,
}

fn visible(chain: &[Version], snapshot: u64) -> Option<&Version> {
    chain.iter().rev().find(|v| v.commit_id <= snapshot)
}

fn version_bytes(v: &Version) -> usize {
    v.value.as_ref().map_or(0, |b| b.len()) + VERSION_OVERHEAD_BYTES
}

fn chain_key_bytes(key: &[u8]) -> usize {
    key.len() + KEY_OVERHEAD_BYTES
}

/// Drop the versions of `pk` that no snapshot ≥ the horizon and no pinned snapshot reads; each
/// leaving version gives back its index entries (one reference each — the staying versions keep
/// theirs, whatever their place in the chain).
///
/// A version stays iff its commit id is above `keep.above`, or it is the newest at or below the
/// horizon, or the newest at or below some pinned snapshot. With the list not cut, `above` is the
/// horizon and that is the whole rule; cut, `above` is a pinned snapshot and more stays.
fn prune(versions: &mut Versions, keep: &Keep, collection: &str, pk: &[u8], overlay: &mut Overlay) -> Released {
    let Versions::Many(chain) = versions else { return Released::default() };
    // Versions [0, n) are at or below `above`; the newest of them stays (the newest at or below
    // the horizon, or at or below the pinned snapshot `above`), and everything after it.
    let n = chain.partition_point(|v| v.commit_id <= keep.above);
    if n <= 1 {
        return Released::default();
    }
    let mut out = Released::default();
    // Compact in place: a version at r < n − 1 is followed by r + 1, still unmoved (swaps only
    // touch positions ≤ r), so it is the newest at or below a snapshot iff one lies in
    // [its commit id, the next one's). The horizon never does (≥ above ≥ the next one's).
    let mut w = 0;
    for r in 0..chain.len() {
        let stays = r + 1 >= n || keep.pins_between(chain[r].commit_id, chain[r + 1].commit_id);
        if stays {
            chain.swap(w, r);
            w += 1;
        } else {
            out.add(overlay.release(collection, pk, &chain[r]));
        }
    }
    chain.truncate(w);
    if w == 1 {
        // Back to a lone version in place.
        *versions = Versions::One(chain.pop().expect("one version"));
    }
    out
}

/// A lone tombstone at or below the horizon hides nothing from any snapshot — once a checkpoint
/// has removed the key from the page store too. (Lone: no pinned snapshot needs an older
/// version, or it would have stayed.)
fn droppable_tombstone(chain: &[Version], horizon: u64, checkpointed: u64) -> bool {
    chain.len() == 1 && chain[0].value.is_none() && chain[0].commit_id <= horizon && chain[0].commit_id <= checkpointed
}

/// A lone version that every snapshot ≥ horizon would read from the page store the same way: at
/// or below the checkpoint (a tombstone only once no snapshot can see the value before it).
fn retirable(chain: &[Version], horizon: u64, checkpointed: u64) -> bool {
    chain.len() == 1 && chain[0].commit_id <= checkpointed && (chain[0].value.is_some() || chain[0].commit_id <= horizon)
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

/// Entries of the first page-store read while merging a scan or a lookup: most reads want a
/// few (a `limit: 1` scan, an exact index lookup), so the first chunk is small and each next one
/// [`SCAN_CHUNK_GROWTH`] times bigger, up to [`SCAN_CHUNK_ENTRIES_MAX`].
const SCAN_CHUNK_ENTRIES_FIRST: usize = 16;
const SCAN_CHUNK_GROWTH: usize = 4;
const SCAN_CHUNK_ENTRIES_MAX: usize = 256;

/// A page-store range read in growing chunks, for merging with memory.
struct DiskCursor<'a> {
    pages: &'a PageStore,
    tree: &'a str,
    lower: Bound<&'a [u8]>,
    upper: Bound<&'a [u8]>,
    reverse: bool,
    buffered: VecDeque<crate::pages::Entry>,
    /// The last key read: the next chunk starts after it.
    last: Option<Vec<u8>>,
    /// Entries the next chunk reads.
    chunk: usize,
    done: bool,
}

impl<'a> DiskCursor<'a> {
    fn new(pages: &'a PageStore, tree: &'a str, lower: Bound<&'a [u8]>, upper: Bound<&'a [u8]>, reverse: bool) -> Self {
        DiskCursor { pages, tree, lower, upper, reverse, buffered: VecDeque::new(), last: None, chunk: SCAN_CHUNK_ENTRIES_FIRST, done: false }
    }

    /// A cursor that reads nothing: the page store has nothing a merge with memory could use.
    fn empty(pages: &'a PageStore, tree: &'a str) -> Self {
        let mut c = DiskCursor::new(pages, tree, Bound::Unbounded, Bound::Unbounded, false);
        c.done = true;
        c
    }

    /// The next entry in order, without taking it.
    fn peek(&mut self) -> Result<Option<&crate::pages::Entry>> {
        if self.buffered.is_empty() && !self.done {
            let (lo, hi) = match (&self.last, self.reverse) {
                (None, _) => (self.lower, self.upper),
                (Some(c), false) => (Bound::Excluded(c.as_slice()), self.upper),
                (Some(c), true) => (self.lower, Bound::Excluded(c.as_slice())),
            };
            let chunk = self.pages.range(self.tree, lo, hi, self.reverse, self.chunk)?;
            self.done = chunk.len() < self.chunk;
            self.chunk = (self.chunk * SCAN_CHUNK_GROWTH).min(SCAN_CHUNK_ENTRIES_MAX);
            if let Some(e) = chunk.last() {
                self.last = Some(e.key.clone());
            }
            self.buffered.extend(chunk);
        }
        Ok(self.buffered.front())
    }

    fn pop(&mut self) -> Option<crate::pages::Entry> {
        self.buffered.pop_front()
    }
}

/// Order of a memory key against a page-store key in the direction of the merge.
fn merge_order(mem: Option<&[u8]>, disk: Option<&[u8]>, reverse: bool) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering::*;
    Some(match (mem, disk) {
        (None, None) => return None,
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        (Some(m), Some(d)) => {
            let o = m.cmp(d);
            if reverse { o.reverse() } else { o }
        }
    })
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
        let names: Vec<Arc<str>> = commit.collections.iter().map(|n| match collections.get_key_value(n.as_str()) {
            Some((name, _)) => name.clone(),
            None => Arc::from(n.as_str()),
        }).collect();
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

    /// Drop single-version chains already in the checkpoint, in key order, until the record
    /// memory is at most `target_bytes`. Returns how many were dropped. Reads of them fall
    /// through to the page store, which holds exactly that version (and its index entries).
    pub fn retire(&mut self, target_bytes: usize) -> u64 {
        if self.record_bytes <= target_bytes {
            return 0;
        }
        let checkpointed = self.checkpointed_lsn;
        let horizon = self.keep.horizon;
        let mut retired = 0u64;
        let Store { collections, overlay, record_bytes, versions, disk_only, .. } = self;
        for (name, map) in collections.iter_mut() {
            let mut gone = Released::default();
            let mut gone_chains = 0u64;
            let over = *record_bytes;
            map.retain(|key, chain| {
                if over - gone.bytes <= target_bytes || !retirable(chain.versions(), horizon, checkpointed) {
                    return true;
                }
                let mut r = overlay.release(name, key, &chain.versions()[0]);
                r.bytes += chain_key_bytes(key);
                gone.add(r);
                gone_chains += 1;
                false
            });
            *record_bytes -= gone.bytes;
            *versions -= gone.versions;
            retired += gone_chains;
            if gone_chains > 0 {
                disk_only.mark(name);
            }
            if *record_bytes <= target_bytes {
                break;
            }
        }
        self.retired += retired;
        retired
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
        let mut disk = if self.disk_only.may_have(collection) { DiskCursor::new(pages, collection, lower, upper, b.reverse) } else { DiskCursor::empty(pages, collection) };
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
    pub fn find_each(&self, collection: &str, index: &str, b: &ScanBounds, snapshot: u64, pages: &PageStore, visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool> {
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
        let mut disk = if self.disk_only.may_have(collection) { DiskCursor::new(pages, &tree, lower, upper, b.reverse) } else { DiskCursor::empty(pages, &tree) };
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

    /// One slice of a scavenge pass, continuing after the chain the last slice stopped at, over
    /// all chains in (collection, key) order; at most `visit_max` (≥ 1) chains. For each:
    /// prune what neither a snapshot ≥ the horizon nor a pinned snapshot reads (index entries
    /// given back per leaving version), drop a lone tombstone at or below the horizon and the
    /// checkpoint, retire a lone checkpointed chain of age group ≤ `retire_age_max` (−1: none)
    /// while the record memory is above `target_bytes`, and survey the retirable chains left by
    /// age group.
    pub fn scavenge(&mut self, retire_age_max: i64, target_bytes: usize, visit_max: usize) -> ScavengeStep {
        debug_assert!(visit_max >= 1, "a slice visits at least one chain");
        let visit_max = visit_max.max(1) as u64;
        let horizon = self.keep.horizon;
        let checkpointed = self.checkpointed_lsn;
        let mut step = ScavengeStep::default();
        let mut survey: BTreeMap<u32, u64> = BTreeMap::new();
        let start = self.scavenge_cursor.take();
        let Store { collections, overlay, versions, record_bytes, retired, scavenge_cursor, keep, disk_only, .. } = self;
        let names: Vec<Arc<str>> = match &start {
            Some((name, _)) => collections.range::<str, _>((Bound::Included(&**name), Bound::Unbounded)).map(|(n, _)| n.clone()).collect(),
            None => collections.keys().cloned().collect(),
        };
        // The last chain visited in a map already finished (the cursor if the next map stops).
        let mut last_visited: Option<(Arc<str>, KeyBuf)> = None;
        let mut stopped = false;
        let mut empties: Vec<Arc<str>> = Vec::new();
        // Bounded by the collections after the cursor; the inner loop by visit_max.
        for name in names {
            let map = collections.get_mut(&*name).expect("listed above");
            let lower: Bound<&KeyBuf> = match &start {
                Some((n, k)) if *n == name => Bound::Excluded(k),
                _ => Bound::Unbounded,
            };
            let mut gone_keys: Vec<KeyBuf> = Vec::new();
            let mut last: Option<&KeyBuf> = None;
            for (key, chain) in map.range_mut::<KeyBuf, _>((lower, Bound::Unbounded)) {
                if step.visited == visit_max {
                    // There is a next chain: the next slice goes on from the last one visited.
                    stopped = true;
                    break;
                }
                step.visited += 1;
                last = Some(key);
                let pruned = prune(&mut chain.versions, keep, &name, key, overlay);
                *versions -= pruned.versions;
                *record_bytes -= pruned.bytes;
                step.pruned_versions += pruned.versions as u64;
                step.index_entries_removed += pruned.index_entries as u64;
                if droppable_tombstone(chain.versions(), horizon, checkpointed) {
                    // A tombstone holds no index entries.
                    *versions -= 1;
                    *record_bytes -= version_bytes(&chain.versions()[0]) + chain_key_bytes(key);
                    step.pruned_versions += 1;
                    gone_keys.push(key.clone());
                    continue;
                }
                if !retirable(chain.versions(), horizon, checkpointed) {
                    continue;
                }
                let age = chain.age();
                if retire_age_max >= 0 && age as i64 <= retire_age_max && *record_bytes > target_bytes {
                    let mut r = overlay.release(&name, key, &chain.versions()[0]);
                    r.bytes += chain_key_bytes(key);
                    *versions -= r.versions;
                    *record_bytes -= r.bytes;
                    step.index_entries_removed += r.index_entries as u64;
                    step.retired += 1;
                    disk_only.mark(&name);
                    gone_keys.push(key.clone());
                    continue;
                }
                *survey.entry(age).or_default() += (version_bytes(&chain.versions()[0]) + chain_key_bytes(key)) as u64;
            }
            if let Some(k) = last {
                last_visited = Some((name.clone(), k.clone()));
            }
            // A removed key still works as the cursor: the next slice starts strictly after it.
            for k in &gone_keys {
                map.remove(k);
            }
            if map.is_empty() {
                empties.push(name);
            }
            if stopped {
                break;
            }
        }
        for name in empties {
            collections.remove(&*name);
        }
        debug_assert!(!stopped || last_visited.is_some(), "a slice stops only after visiting visit_max ≥ 1 chains");
        *scavenge_cursor = if stopped { last_visited } else { None };
        *retired += step.retired;
        step.done = scavenge_cursor.is_none();
        step.survey = survey.into_iter().collect();
        step
    }

    /// Test support: recount everything the invariants promise from the chains themselves.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut overlay = Overlay::default();
        let mut versions = 0usize;
        let mut bytes = 0usize;
        for (name, map) in &self.collections {
            for (key, chain) in map {
                assert!(!chain.versions().is_empty(), "{name}/{key:?}: empty chain");
                assert!(chain.versions().windows(2).all(|w| w[0].commit_id < w[1].commit_id));
                assert!(!matches!(&chain.versions, Versions::Many(vs) if vs.len() < 2), "{name}/{key:?}: a lone version is held in place");
                bytes += chain_key_bytes(key);
                for v in chain.versions() {
                    versions += 1;
                    bytes += version_bytes(v) + overlay.enter(name, key, v.value.as_deref());
                }
            }
        }
        assert_eq!(overlay.trees, self.overlay.trees, "the index reference counts equal the versions holding each pair");
        assert_eq!(overlay.entries, self.overlay.entries);
        assert_eq!(versions, self.versions);
        assert_eq!(bytes, self.record_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::{Change, CollectionChanges};
    use crate::payload::Op;

    /// Primary key → every version ever written, oldest first: (commit id, stored value).
    type History = BTreeMap<Vec<u8>, Vec<(u64, Option<Vec<u8>>)>>;

    fn put(key: &[u8], value: Option<&[u8]>) -> Commit {
        let op = match value {
            Some(v) => Op { kind: OP_PUT, collection: 0, key: key.to_vec(), value: v.to_vec() },
            None => Op { kind: OP_DELETE, collection: 0, key: key.to_vec(), value: vec![] },
        };
        Commit { collections: vec!["c".into()], ops: vec![op] }
    }

    /// An empty page store in a fresh temporary directory.
    fn empty_pages(label: &str) -> PageStore {
        let dir = std::env::temp_dir().join(format!("kestrel-store-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        PageStore::open(&dir, 1 << 20).unwrap()
    }

    fn read(s: &Store, p: &PageStore, key: &[u8], snapshot: u64) -> Option<Vec<u8>> {
        s.get("c", key, snapshot, p).unwrap().map(|v| v.into_owned())
    }

    #[test]
    fn reads_at_snapshots_and_prunes_below_the_horizon() {
        let p = empty_pages("prune");
        let mut s = Store::default();
        s.apply(1, put(b"k", Some(b"a")), &p).unwrap();
        s.apply(2, put(b"k", Some(b"b")), &p).unwrap();
        s.apply(3, put(b"k", None), &p).unwrap();
        assert_eq!(read(&s, &p, b"k", 1).as_deref(), Some(&b"a"[..]));
        assert_eq!(read(&s, &p, b"k", 2).as_deref(), Some(&b"b"[..]));
        assert_eq!(read(&s, &p, b"k", 3), None);
        assert_eq!(read(&s, &p, b"k", 0), None);
        assert_eq!(s.version_count(), 3);
        s.set_horizon(2, true, &[]);
        assert_eq!(read(&s, &p, b"k", 2).as_deref(), Some(&b"b"[..]), "the horizon snapshot still reads");
        assert_eq!(s.version_count(), 2);
        s.set_horizon(3, true, &[]);
        assert_eq!(s.version_count(), 1, "a lone tombstone stays until a checkpoint covers it");
        s.set_checkpointed(3);
        s.set_horizon(3, true, &[]);
        assert_eq!(s.version_count(), 0, "a lone tombstone at the horizon and the checkpoint is dropped");
        assert_eq!(s.key_count(), 0);
        assert_eq!(s.record_bytes(), 0, "record memory accounting returns to zero");
    }

    #[test]
    fn a_live_count_below_the_page_store_is_corruption_not_a_wrap() {
        let p = empty_pages("live-count");
        p.checkpoint(1, &[CollectionChanges { name: "c".into(), changes: vec![(b"k".to_vec(), Some((1, b"v".to_vec())))] }], crate::pages::PageFault::None)
            .unwrap();
        // A store told the checkpoint holds no records, though it holds one.
        let mut s = Store::new(1, 0, true);
        let err = s.apply(2, put(b"k", None), &p).err().expect("deleting the loaded record cannot count below zero");
        assert_eq!(err.code, Code::Corrupt);
        assert!(err.message.contains("meta page"), "{}", err.message);
        // With the right count the same delete is fine.
        let mut s = Store::new(1, 1, true);
        s.apply(2, put(b"k", None), &p).unwrap();
        assert_eq!(s.key_count(), 0);
    }

    #[test]
    fn merges_apply_in_commit_order() {
        let p = empty_pages("merge");
        let mut s = Store::default();
        for (i, item) in [1u8, 2, 3].iter().enumerate() {
            let op = Op { kind: OP_APPEND, collection: 0, key: b"list".to_vec(), value: vec![0x91, *item] };
            s.apply(i as u64 + 1, Commit { collections: vec!["c".into()], ops: vec![op] }, &p).unwrap();
        }
        assert_eq!(read(&s, &p, b"list", 3).as_deref(), Some(&[0x93, 1, 2, 3][..]));
        assert_eq!(read(&s, &p, b"list", 1).as_deref(), Some(&[0x91, 1][..]));
    }

    #[test]
    fn retire_keeps_only_what_the_checkpoint_does_not_hold() {
        let p = empty_pages("retire");
        let mut s = Store::default();
        s.apply(1, put(b"a", Some(b"1")), &p).unwrap();
        s.apply(2, put(b"b", Some(b"2")), &p).unwrap();
        s.set_horizon(2, true, &[]);
        assert_eq!(s.retire(0), 0, "nothing is checkpointed yet, so nothing may leave memory");
        s.set_checkpointed(1);
        assert_eq!(s.retire(0), 1, "only the chain at or below the checkpoint retires");
        assert_eq!(s.version_count(), 1);
    }

    // -----------------------------------------------------------------------------------------
    // Indexes

    /// The order-preserving encoding of a string key (tag 0x30, bytes, 00 00): no 0x00 inside.
    fn skey(s: &str) -> Vec<u8> {
        let mut k = vec![0x30];
        k.extend_from_slice(s.as_bytes());
        k.extend_from_slice(&[0, 0]);
        k
    }

    /// MessagePack fixstr.
    fn mp(s: &str) -> Vec<u8> {
        let mut v = vec![0xa0 | s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }

    /// A record of table t3 whose column f1 is `f1`, indexed by index "f1".
    fn t3_row(f1: &str) -> Vec<u8> {
        envelope::encode(&mp(f1), &[("f1", &skey(f1))])
    }

    fn t3_put(f1: &str) -> Commit {
        Commit { collections: vec!["t3".into()], ops: vec![Op { kind: OP_PUT, collection: 0, key: skey("r1"), value: t3_row(f1) }] }
    }

    /// Bounds selecting the entries of index key `ik` (every primary key).
    fn prefix(ik: &[u8]) -> ScanBounds {
        let mut hi = ik.to_vec();
        *hi.last_mut().unwrap() += 1;
        ScanBounds { gte: Some(ik.to_vec()), lt: Some(hi), ..ScanBounds::default() }
    }

    fn find_f1(s: &Store, p: &PageStore, f1: &str, snapshot: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        s.find("t3", "f1", &prefix(&skey(f1)), snapshot, p).unwrap()
    }

    /// The overlay's entries of t3.f1 as (index value, refcount).
    fn t3_overlay(s: &Store) -> Vec<(String, u32)> {
        let Some(tree) = s.overlay.trees.get(&envelope::tree_name("t3", b"f1")) else { return vec![] };
        tree.iter()
            .map(|(k, c)| {
                let (ik, pk) = envelope::split_entry(k).unwrap();
                assert_eq!(pk, skey("r1"));
                (String::from_utf8(ik[1..ik.len() - 2].to_vec()).unwrap(), *c)
            })
            .collect()
    }

    /// Seed 004 (Falcon bug #40801): record 1 goes '-', A, B, C, D; reader 1 (snapshot 5) sees
    /// D; A; reader 2 (snapshot 6) sees A; one transaction writes B then C (only C is logged);
    /// reader 3 (snapshot 7) sees C; '-'. The horizon moves to reader 1's snapshot and the
    /// scavenger prunes '-'(1), A(2), B(3), C(4). A, C and '-' are also held by staying versions:
    /// their entries must stay, or readers 2 and 3 and every new reader lose the record.
    #[test]
    fn seed_004_index_gc_keeps_every_key_a_staying_version_holds() {
        let p = empty_pages("seed004");
        let mut s = Store::default();
        for (cid, f1) in [(1, "-"), (2, "A"), (3, "B"), (4, "C"), (5, "D")] {
            s.apply(cid, t3_put(f1), &p).unwrap();
        }
        let reader1 = 5;
        assert_eq!(find_f1(&s, &p, "D", reader1), vec![(skey("r1"), mp("D"))]);
        s.apply(6, t3_put("A"), &p).unwrap();
        let reader2 = 6;
        assert_eq!(find_f1(&s, &p, "A", reader2), vec![(skey("r1"), mp("A"))]);
        // B was overwritten inside the transaction: the commit carries only C.
        s.apply(7, t3_put("C"), &p).unwrap();
        let reader3 = 7;
        assert_eq!(find_f1(&s, &p, "C", reader3), vec![(skey("r1"), mp("C"))]);
        s.apply(8, t3_put("-"), &p).unwrap();
        assert_eq!(t3_overlay(&s), vec![("-".into(), 2), ("A".into(), 2), ("B".into(), 1), ("C".into(), 2), ("D".into(), 1)]);
        s.check_invariants();

        // Readers 2 and 3 and reader 1 stay; the oldest is reader 1.
        s.set_horizon(reader1, false, &[]);
        let mut step = s.scavenge(-1, 0, 1);
        // Bounded: one chain, so the first slice finishes the pass.
        for _ in 0..4 {
            if step.done {
                break;
            }
            step = s.scavenge(-1, 0, 1);
        }
        assert!(step.done);
        assert_eq!((step.visited, step.pruned_versions, step.index_entries_removed, step.retired), (1, 4, 1, 0), "'-'(1), A(2), B(3), C(4) leave; only B's entry goes");
        assert_eq!(t3_overlay(&s), vec![("-".into(), 1), ("A".into(), 1), ("C".into(), 1), ("D".into(), 1)], "exactly '-', A, C, D stay");
        s.check_invariants();

        assert_eq!(find_f1(&s, &p, "D", reader1), vec![(skey("r1"), mp("D"))], "reader 1 still finds its D");
        assert_eq!(find_f1(&s, &p, "A", reader2), vec![(skey("r1"), mp("A"))], "reader 2 still finds its A");
        assert_eq!(find_f1(&s, &p, "C", reader3), vec![(skey("r1"), mp("C"))], "reader 3 still finds its C");
        let new_reader = 8;
        assert_eq!(find_f1(&s, &p, "-", new_reader), vec![(skey("r1"), mp("-"))], "a new reader finds the record by '-'");
        for other in ["A", "B", "C", "D"] {
            assert!(find_f1(&s, &p, other, new_reader).is_empty(), "a new reader does not find it by {other}");
        }
        for (reader, own) in [(reader1, "D"), (reader2, "A"), (reader3, "C")] {
            for other in ["-", "A", "B", "C", "D"].into_iter().filter(|o| *o != own) {
                assert!(find_f1(&s, &p, other, reader).is_empty(), "reader at {reader} does not find it by {other}");
            }
        }
        // The whole index, in order, at each snapshot: exactly one row.
        for (reader, own) in [(reader1, "D"), (reader2, "A"), (reader3, "C"), (new_reader, "-")] {
            assert_eq!(s.find("t3", "f1", &ScanBounds::default(), reader, &p).unwrap(), vec![(skey("r1"), mp(own))]);
        }

        // Readers finish; a checkpoint at 8 and a full pass retire the chain: its entries leave
        // memory and the page-store index tree answers.
        let changes = vec![CollectionChanges { name: "t3".into(), changes: vec![(skey("r1"), Some((8, t3_row("-"))))] }];
        p.checkpoint(8, &changes, crate::pages::PageFault::None).unwrap();
        s.set_checkpointed(8);
        s.set_horizon(8, false, &[]);
        let step = s.scavenge(i64::MAX, 0, 100);
        assert_eq!((step.visited, step.pruned_versions, step.retired, step.done), (1, 3, 1, true));
        assert_eq!(s.index_entry_count(), 0);
        assert_eq!((s.version_count(), s.record_bytes()), (0, 0));
        assert_eq!(find_f1(&s, &p, "-", 8), vec![(skey("r1"), mp("-"))], "found through the page-store index tree");
        assert!(find_f1(&s, &p, "D", 8).is_empty());
        assert_eq!(read_t3(&s, &p, 8), Some(mp("-")), "get strips the envelope of a page-store value too");
        s.check_invariants();
    }

    fn read_t3(s: &Store, p: &PageStore, snapshot: u64) -> Option<Vec<u8>> {
        s.get("t3", &skey("r1"), snapshot, p).unwrap().map(|v| v.into_owned())
    }

    #[test]
    fn reads_strip_envelopes_and_merges_store_plain_values() {
        let p = empty_pages("strip");
        let mut s = Store::default();
        let c = |kind, value: Vec<u8>| Commit { collections: vec!["t".into()], ops: vec![Op { kind, collection: 0, key: b"k".to_vec(), value }] };
        s.apply(1, c(OP_PUT, envelope::encode(&[0x91, 1], &[("i", &[1])])), &p).unwrap();
        assert_eq!(s.get("t", b"k", 1, &p).unwrap().as_deref(), Some(&[0x91, 1][..]));
        assert_eq!(s.scan("t", &ScanBounds::default(), 1, &p).unwrap(), vec![(b"k".to_vec(), vec![0x91, 1])]);
        let w = s.apply(2, c(OP_APPEND, vec![0x91, 2]), &p).unwrap();
        assert_eq!(w[0].value.as_deref(), Some(&[0x92, 1, 2][..]), "the merged value is plain");
        assert_eq!(s.index_entry_count(), 1, "the envelope version still holds its entry");
        assert!(s.find("t", "i", &ScanBounds::default(), 2, &p).unwrap().is_empty(), "the plain version holds no index key");
        assert_eq!(s.find("t", "i", &ScanBounds::default(), 1, &p).unwrap(), vec![(b"k".to_vec(), vec![0x91, 1])]);
        s.set_horizon(2, true, &[]);
        assert_eq!(s.index_entry_count(), 0);
        assert_eq!(s.find("t\0x", "i", &ScanBounds::default(), 2, &p).unwrap_err().code, Code::InvalidArgument);
        assert_eq!(s.find("t", "", &ScanBounds::default(), 2, &p).unwrap_err().code, Code::InvalidArgument);
        s.check_invariants();
    }

    #[test]
    fn age_groups_steer_what_the_scavenger_retires() {
        let p = empty_pages("ages");
        let mut s = Store::default();
        let changes: Vec<Change> = (0..6u8).map(|i| (vec![i], Some((i as u64 + 1, vec![0xa1, b'a' + i])))).collect();
        for (i, (k, v)) in changes.iter().enumerate() {
            s.set_age_group(i as u64 / 2); // keys 0,1 in group 0; 2,3 in 1; 4,5 in 2
            s.apply(i as u64 + 1, Commit { collections: vec!["c".into()], ops: vec![Op { kind: OP_PUT, collection: 0, key: k.clone(), value: v.as_ref().unwrap().1.clone() }] }, &p).unwrap();
        }
        s.set_age_group(1); // never goes back
        assert_eq!(s.age_group(), 2);
        p.checkpoint(6, &[CollectionChanges { name: "c".into(), changes: changes.clone() }], crate::pages::PageFault::None).unwrap();
        s.set_checkpointed(6);
        s.set_horizon(6, false, &[]);
        // Reading key 0 moves it to group 3.
        s.set_age_group(3);
        assert!(read(&s, &p, &[0], 6).is_some());
        let per = (2 + VERSION_OVERHEAD_BYTES + 1 + KEY_OVERHEAD_BYTES) as u64;
        // A survey pass (retire nothing), two chains a slice.
        let mut survey: BTreeMap<u32, u64> = BTreeMap::new();
        let mut slices = 0;
        loop {
            let step = s.scavenge(-1, 0, 2);
            slices += 1;
            assert_eq!(step.retired, 0);
            for (age, bytes) in step.survey {
                *survey.entry(age).or_default() += bytes;
            }
            if step.done {
                break;
            }
            assert!(slices < 10);
        }
        assert_eq!(slices, 3);
        assert_eq!(survey, BTreeMap::from([(0, per), (1, 2 * per), (2, 2 * per), (3, per)]));
        // Retire groups ≤ 1: keys 1, 2, 3 (key 0 was read in group 3).
        let step = s.scavenge(1, 0, 100);
        assert_eq!((step.visited, step.retired, step.done), (6, 3, true));
        assert_eq!(step.survey, vec![(2, 2 * per), (3, per)]);
        assert_eq!(s.retired_count(), 3);
        // Stop once at the target: nothing retires when memory is already at most target.
        let step = s.scavenge(i64::MAX, s.record_bytes(), 100);
        assert_eq!(step.retired, 0);
        let step = s.scavenge(i64::MAX, 0, 100);
        assert_eq!(step.retired, 3);
        assert_eq!((s.version_count(), s.record_bytes()), (0, 0));
        for i in 0..6u8 {
            assert_eq!(read(&s, &p, &[i], 6), Some(vec![0xa1, b'a' + i]), "retired chains read from the page store");
        }
        s.check_invariants();
    }

    /// Reads leave the page store out only while no key of the collection can be there without a
    /// chain in memory: from an empty page store on, until a chain is retired; never after a
    /// reopen of a page store with records. A dropped lone tombstone keeps the shortcut (its key
    /// left the page store with the checkpoint that covers it).
    #[test]
    fn reads_skip_the_page_store_only_while_every_key_there_has_a_chain() {
        let p = empty_pages("disk-only");
        let mut s = Store::default();
        let row = |f1: &str| envelope::encode(&mp(f1), &[("f1", &skey(f1))]);
        let commit = |ops: Vec<Op>| Commit { collections: vec!["t".into()], ops };
        let put = |k: &str, f1: &str| Op { kind: OP_PUT, collection: 0, key: skey(k), value: row(f1) };
        let del = |k: &str| Op { kind: OP_DELETE, collection: 0, key: skey(k), value: vec![] };
        let written = s.apply(1, commit(vec![put("a", "x"), put("b", "y"), put("c", "z")]), &p).unwrap();
        let changes: Vec<Change> = written.into_iter().map(|w| (w.key.to_vec(), w.value.map(|v| (w.commit_id, v.to_vec())))).collect();
        p.checkpoint(1, &[CollectionChanges { name: "t".into(), changes }], crate::pages::PageFault::None).unwrap();
        s.set_checkpointed(1);
        s.set_horizon(1, true, &[]);
        assert!(!s.disk_only.may_have("t"), "every checkpointed key has its chain");
        // Reads at each stage: get, find by every index key, a whole scan.
        let check = |s: &Store, live: &[(&str, &str)], what: &str| {
            for (k, f1) in [("a", "x"), ("b", "y"), ("c", "z")] {
                let expect = live.iter().any(|(lk, _)| *lk == k).then(|| mp(f1));
                assert_eq!(s.get("t", &skey(k), 9, &p).unwrap().map(|v| v.into_owned()), expect, "{what}: get {k}");
                let found = s.find("t", "f1", &prefix(&skey(f1)), 9, &p).unwrap();
                assert_eq!(found, expect.clone().map(|v| (skey(k), v)).into_iter().collect::<Vec<_>>(), "{what}: find {f1}");
            }
            let all: Vec<(Vec<u8>, Vec<u8>)> = live.iter().map(|(k, f1)| (skey(k), mp(f1))).collect();
            assert_eq!(s.scan("t", &ScanBounds::default(), 9, &p).unwrap(), all, "{what}: scan");
            let one = ScanBounds { gte: Some(skey("b")), limit: 1, ..ScanBounds::default() };
            assert_eq!(s.scan("t", &one, 9, &p).unwrap(), all.iter().filter(|(k, _)| *k >= skey("b")).take(1).cloned().collect::<Vec<_>>(), "{what}: scan from b");
        };
        check(&s, &[("a", "x"), ("b", "y"), ("c", "z")], "in memory");

        // A deleted key: its lone tombstone is dropped once checkpointed; the shortcut stays.
        s.apply(2, commit(vec![del("c")]), &p).unwrap();
        p.checkpoint(2, &[CollectionChanges { name: "t".into(), changes: vec![(skey("c"), None)] }], crate::pages::PageFault::None).unwrap();
        s.set_checkpointed(2);
        s.set_horizon(2, true, &[]);
        assert_eq!(s.version_count(), 2, "the tombstone of c is dropped");
        assert!(!s.disk_only.may_have("t"));
        check(&s, &[("a", "x"), ("b", "y")], "after a dropped tombstone");

        // One chain retired: its key is only in the page store now, and reads find it there.
        assert_eq!(s.retire(s.record_bytes() - 1), 1);
        assert!(s.disk_only.may_have("t") && !s.disk_only.may_have("u"), "only the collection retired from");
        check(&s, &[("a", "x"), ("b", "y")], "after retire");
        s.check_invariants();

        // A scavenge retirement marks the collection too.
        let mut s2 = Store::default();
        s2.apply(1, commit(vec![put("a", "x"), put("b", "y"), put("c", "z")]), &p).unwrap();
        s2.apply(2, commit(vec![del("c")]), &p).unwrap();
        s2.set_checkpointed(2);
        s2.set_horizon(2, true, &[]);
        assert!(!s2.disk_only.may_have("t"));
        let step = s2.scavenge(i64::MAX, 0, 100);
        assert_eq!((step.retired, step.done), (2, true));
        assert!(s2.disk_only.may_have("t"));
        check(&s2, &[("a", "x"), ("b", "y")], "after a scavenge");

        // Reopen: the page store has records, so every collection may have keys only there.
        let s3 = Store::new(2, 2, true);
        assert!(s3.disk_only.may_have("t") && s3.disk_only.may_have("u"));
        check(&s3, &[("a", "x"), ("b", "y")], "after reopen");
        assert!(!Store::new(2, 0, false).disk_only.may_have("t"), "an empty page store has no keys");
        assert!(Store::new(2, 0, true).disk_only.may_have("t"), "a catalog that lists trees may have keys, whatever the count says");
    }

    // -----------------------------------------------------------------------------------------
    // Pinned snapshots below the horizon

    /// The commit ids of the chain of `key` in collection `collection` (empty when not in memory).
    fn chain_ids(s: &Store, collection: &str, key: &[u8]) -> Vec<u64> {
        s.collections.get(collection).and_then(|m| m.get(key)).map_or(vec![], |c| c.versions().iter().map(|v| v.commit_id).collect())
    }

    /// Scavenge slices of at most `visit_max` chains until the pass in progress and one whole pass
    /// after it are done (retiring nothing); the summed (pruned versions, index entries removed).
    fn scavenge_passes(s: &mut Store, visit_max: usize) -> (u64, u64) {
        let (mut pruned, mut removed) = (0, 0);
        for _pass in 0..2 {
            for slice in 0.. {
                let step = s.scavenge(-1, 0, visit_max);
                assert_eq!(step.retired, 0);
                pruned += step.pruned_versions;
                removed += step.index_entries_removed;
                if step.done {
                    break;
                }
                assert!(slice < 10_000, "a pass ends");
            }
        }
        (pruned, removed)
    }

    /// Record `k` of generation `g`: the MessagePack "k/g", indexed by "gen" on the generation.
    fn gen_row(k: usize, g: u64) -> Vec<u8> {
        envelope::encode(&mp(&format!("{k}/{g}")), &[("gen", &skey(&format!("{g:03}")))])
    }

    fn gen_key(k: usize) -> Vec<u8> {
        skey(&format!("k{k}"))
    }

    /// Every record of generation `g`, as `find` by index "gen" returns them.
    fn gen_rows(keys: usize, g: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..keys).map(|k| (gen_key(k), mp(&format!("{k}/{g}")))).collect()
    }

    /// An old reader stays open while every key is rewritten many times. It keeps the one version
    /// of each key it reads — not every version written since — so each chain holds exactly 2
    /// versions after a scavenge pass (3 between passes: the newest at the horizon too), and the
    /// reader and a new one both read and find their own generation.
    #[test]
    fn an_old_pinned_snapshot_keeps_one_version_per_key_not_every_rewrite() {
        let p = empty_pages("pinned-rewrites");
        let mut s = Store::default();
        let keys = 8usize;
        let rewrites = 40u64;
        let commit = |g: u64| Commit {
            collections: vec!["c".into()],
            ops: (0..keys).map(|k| Op { kind: OP_PUT, collection: 0, key: gen_key(k), value: gen_row(k, g) }).collect(),
        };
        // Generation g is commit g + 1; the reader opens after generation 0.
        s.apply(1, commit(0), &p).unwrap();
        let reader = 1;
        for g in 1..=rewrites {
            let lsn = g + 1;
            s.apply(lsn, commit(g), &p).unwrap();
            // The coordinator: the horizon follows the last commit (no retention), the old
            // reader is pinned below it.
            s.set_horizon(lsn, false, &[reader]);
            assert_eq!(s.pinned(), &[reader][..]);
            // As keys are written: the reader's version, the newest at the horizon (before this
            // set_horizon) and the newest; the one between leaves from the middle of the chain.
            assert_eq!(s.version_count(), keys * lsn.min(3) as usize, "generation {g}");
            s.check_invariants();
        }
        let last = rewrites + 1;
        assert_eq!(chain_ids(&s, "c", &gen_key(0)), vec![1, last - 1, last]);
        let (pruned, removed) = scavenge_passes(&mut s, 3);
        assert_eq!((pruned, removed), (keys as u64, keys as u64), "each chain's middle version leaves with its entry");
        assert_eq!(s.version_count(), 2 * keys, "exactly the pinned version and the newest per key");
        assert_eq!(s.index_entry_count(), 2 * keys);
        for k in 0..keys {
            assert_eq!(chain_ids(&s, "c", &gen_key(k)), vec![reader, last]);
        }
        let per_key = chain_key_bytes(&gen_key(0))
            + version_bytes(&Version { commit_id: 1, value: Some(gen_row(0, 0).into()) })
            + version_bytes(&Version { commit_id: last, value: Some(gen_row(0, rewrites).into()) })
            + 2 * index_entry_bytes(skey("000").len() + gen_key(0).len() + 2);
        assert_eq!(s.record_bytes(), keys * per_key, "the accounting is exact");
        s.check_invariants();

        for k in 0..keys {
            assert_eq!(read(&s, &p, &gen_key(k), reader), Some(mp(&format!("{k}/0"))));
            assert_eq!(read(&s, &p, &gen_key(k), last), Some(mp(&format!("{k}/{rewrites}"))));
        }
        let gen = |g: u64| prefix(&skey(&format!("{g:03}")));
        let find = |s: &Store, b: &ScanBounds, snapshot| s.find("c", "gen", b, snapshot, &p).unwrap();
        assert_eq!(find(&s, &gen(0), reader), gen_rows(keys, 0), "the reader finds its generation");
        assert_eq!(find(&s, &gen(rewrites), last), gen_rows(keys, rewrites), "a new reader finds the newest");
        assert!(find(&s, &gen(rewrites), reader).is_empty());
        assert!(find(&s, &gen(0), last).is_empty());
        assert!(find(&s, &gen(rewrites - 1), last).is_empty() && find(&s, &gen(rewrites - 1), reader).is_empty());
        assert_eq!(find(&s, &ScanBounds::default(), reader), gen_rows(keys, 0), "the whole index at the reader");
        assert_eq!(find(&s, &ScanBounds::default(), last), gen_rows(keys, rewrites), "the whole index now");

        // The reader ends: the next list replaces this one, and a sweep leaves one version a key.
        s.set_horizon(last, true, &[]);
        assert!(s.pinned().is_empty());
        assert_eq!((s.version_count(), s.index_entry_count()), (keys, keys));
        assert_eq!(find(&s, &ScanBounds::default(), last), gen_rows(keys, rewrites));
        s.check_invariants();
    }

    /// Seed 004 with the readers handed over as pinned snapshots below a horizon at the newest
    /// commit: versions leave from the middle of the chain, and the index keeps exactly the
    /// entries the staying versions hold (an entry a leaving version shares with a staying one
    /// stays; Falcon bug #40801). Each row starts from the seed's chain; odd rows prune with the
    /// sweep, even rows with scavenge slices.
    #[test]
    fn seed_004_pinned_snapshots_keep_their_versions_from_the_middle_of_the_chain() {
        // Record 1 of t3: '-', A, B, C, D (commits 1-5), A (6), C (7: B overwritten inside the
        // transaction), '-' (8).
        const VALUES: [&str; 8] = ["-", "A", "B", "C", "D", "A", "C", "-"];
        let seed_chain = |label: &str| {
            let p = empty_pages(label);
            let mut s = Store::default();
            for (i, f1) in VALUES.iter().enumerate() {
                s.apply(i as u64 + 1, t3_put(f1), &p).unwrap();
            }
            assert_eq!(t3_overlay(&s), vec![("-".into(), 2), ("A".into(), 2), ("B".into(), 1), ("C".into(), 2), ("D".into(), 1)]);
            (s, p)
        };
        let own = |snapshot: u64| (snapshot >= 1).then(|| VALUES[snapshot as usize - 1]);
        let horizon = 8;
        // (pinned as handed over, pinned as kept, staying commits, index entries removed, overlay)
        type Row = (&'static [u64], &'static [u64], &'static [u64], u64, &'static [(&'static str, u32)]);
        let table: [Row; 9] = [
            (&[5, 6, 7], &[5, 6, 7], &[5, 6, 7, 8], 1, &[("-", 1), ("A", 1), ("C", 1), ("D", 1)]),
            (&[5, 7], &[5, 7], &[5, 7, 8], 2, &[("-", 1), ("C", 1), ("D", 1)]),
            (&[6], &[6], &[6, 8], 3, &[("-", 1), ("A", 1)]),
            (&[7], &[7], &[7, 8], 3, &[("-", 1), ("C", 1)]),
            (&[2, 4], &[2, 4], &[2, 4, 8], 2, &[("-", 1), ("A", 1), ("C", 1)]),
            (&[3], &[3], &[3, 8], 3, &[("-", 1), ("B", 1)]),
            (&[1, 6], &[1, 6], &[1, 6, 8], 3, &[("-", 2), ("A", 1)]),
            (&[], &[], &[8], 4, &[("-", 1)]),
            // Unsorted, duplicated, at or above the horizon (ignored), and 0 (reads nothing).
            (&[7, 5, 8, 5, 9, 0], &[0, 5, 7], &[5, 7, 8], 2, &[("-", 1), ("C", 1), ("D", 1)]),
        ];
        for (row, (pinned, kept, stays, removed, overlay)) in table.into_iter().enumerate() {
            let (mut s, p) = seed_chain(&format!("seed004-pinned-{row}"));
            if row % 2 == 1 {
                s.set_horizon(horizon, true, pinned);
            } else {
                s.set_horizon(horizon, false, pinned);
                let (pruned, gc) = scavenge_passes(&mut s, 1);
                assert_eq!((pruned as usize, gc), (VALUES.len() - stays.len(), removed), "row {row}: versions pruned, index entries removed");
            }
            assert_eq!(s.pinned(), kept, "row {row}");
            assert_eq!(chain_ids(&s, "t3", &skey("r1")), stays.to_vec(), "row {row}: staying versions");
            let expect: Vec<(String, u32)> = overlay.iter().map(|(k, c)| (k.to_string(), *c)).collect();
            assert_eq!(t3_overlay(&s), expect, "row {row}: the index keeps exactly what the staying versions hold");
            assert_eq!(s.index_entry_count(), 5 - removed as usize, "row {row}");
            s.check_invariants();
            for reader in kept.iter().copied().chain([horizon]) {
                let mine = own(reader);
                assert_eq!(read_t3(&s, &p, reader), mine.map(mp), "row {row}: read at {reader}");
                for f1 in ["-", "A", "B", "C", "D"] {
                    let expect = if Some(f1) == mine { vec![(skey("r1"), mp(f1))] } else { vec![] };
                    assert_eq!(find_f1(&s, &p, f1, reader), expect, "row {row}: find {f1} at {reader}");
                }
                let all = s.find("t3", "f1", &ScanBounds::default(), reader, &p).unwrap();
                assert_eq!(all, mine.map(|m| (skey("r1"), mp(m))).into_iter().collect::<Vec<_>>(), "row {row}: whole index at {reader}");
            }
        }

        // The readers end one by one, on one store: each list replaces the one before.
        let (mut s, p) = seed_chain("seed004-pinned-closing");
        for (pinned, stays, overlay) in [
            (&[5u64, 6, 7][..], &[5u64, 6, 7, 8][..], &[("-", 1), ("A", 1), ("C", 1), ("D", 1)][..]),
            (&[5, 7], &[5, 7, 8], &[("-", 1), ("C", 1), ("D", 1)]),
            (&[7], &[7, 8], &[("-", 1), ("C", 1)]),
            (&[], &[8], &[("-", 1)]),
        ] {
            s.set_horizon(horizon, false, pinned);
            scavenge_passes(&mut s, 1);
            assert_eq!(chain_ids(&s, "t3", &skey("r1")), stays.to_vec());
            assert_eq!(t3_overlay(&s), overlay.iter().map(|(k, c)| (k.to_string(), *c)).collect::<Vec<_>>());
            s.check_invariants();
            for reader in pinned.iter().copied().chain([horizon]) {
                assert_eq!(find_f1(&s, &p, own(reader).unwrap(), reader), vec![(skey("r1"), mp(own(reader).unwrap()))]);
            }
        }

        // Pruning as a key is written uses the list too: readers at 5 and 2, horizon 7, then '-'.
        let p = empty_pages("seed004-pinned-apply");
        let mut s = Store::default();
        for (i, f1) in VALUES[..7].iter().enumerate() {
            s.apply(i as u64 + 1, t3_put(f1), &p).unwrap();
        }
        s.set_horizon(7, false, &[5, 2]);
        assert_eq!(s.version_count(), 7, "nothing pruned before the key is written");
        s.apply(8, t3_put("-"), &p).unwrap();
        assert_eq!(chain_ids(&s, "t3", &skey("r1")), vec![2, 5, 7, 8]);
        assert_eq!(t3_overlay(&s), vec![("-".into(), 1), ("A".into(), 1), ("C".into(), 1), ("D".into(), 1)]);
        s.check_invariants();
        assert_eq!(find_f1(&s, &p, "A", 2), vec![(skey("r1"), mp("A"))]);
        assert_eq!(find_f1(&s, &p, "D", 5), vec![(skey("r1"), mp("D"))]);
        assert_eq!(find_f1(&s, &p, "C", 7), vec![(skey("r1"), mp("C"))]);
        assert_eq!(find_f1(&s, &p, "-", 8), vec![(skey("r1"), mp("-"))]);
    }

    /// Past [`PINNED_MAX`] snapshots the store keeps the oldest ones and every version above the
    /// newest of them: the snapshots cut off still read their versions (more stays, never less).
    #[test]
    fn pinned_snapshots_past_the_bound_keep_more_never_less() {
        let p = empty_pages("pinned-bound");
        let mut s = Store::default();
        let n = PINNED_MAX as u64 + 10;
        let value = |c: u64| [&[0xce][..], &(c as u32).to_be_bytes()].concat();
        for c in 1..=n {
            s.apply(c, put(b"k", Some(&value(c))), &p).unwrap();
        }
        // Every snapshot 1..=PINNED_MAX + 5 pinned, newest first, the horizon at the newest commit.
        let pins: Vec<u64> = (1..=PINNED_MAX as u64 + 5).rev().collect();
        s.set_horizon(n, true, &pins);
        assert_eq!(s.pinned().len(), PINNED_MAX);
        assert_eq!((s.pinned()[0], s.pinned()[PINNED_MAX - 1]), (1, PINNED_MAX as u64));
        assert_eq!(s.version_count(), n as usize, "everything above the newest pinned snapshot kept stays");
        for snapshot in pins.iter().copied().take(10).chain([n]) {
            assert_eq!(read(&s, &p, b"k", snapshot), Some(value(snapshot)), "snapshot {snapshot}");
        }
        s.check_invariants();
        // Exactly at the bound, the versions between the newest pinned snapshot and the horizon go.
        s.set_horizon(n, true, &pins[5..]);
        assert_eq!(s.pinned().len(), PINNED_MAX);
        assert_eq!(s.version_count(), PINNED_MAX + 1);
        assert_eq!(chain_ids(&s, "c", b"k")[PINNED_MAX - 1..], [PINNED_MAX as u64, n]);
        s.check_invariants();
    }

    // -----------------------------------------------------------------------------------------
    // Randomized: find against a brute force over a full history model, with open readers
    // pinned below the horizon.

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A random stored value: plain, or an envelope with index "a" and/or "b" on a few keys.
    fn random_value(rng: &mut Rng, tag: u8) -> Vec<u8> {
        let value = vec![0x92, tag, rng.below(100) as u8];
        let a = skey(&format!("a{}", rng.below(4)));
        let b = skey(&format!("b{}", rng.below(3)));
        match rng.below(5) {
            0 => value,
            1 => envelope::encode(&value, &[("a", &a)]),
            2 => envelope::encode(&value, &[("b", &b)]),
            _ => envelope::encode(&value, &[("b", &b), ("a", &a)]),
        }
    }

    /// (primary key, value) of every record whose version visible at `snapshot` holds an index
    /// key of `index` whose entry key lies within `b`, in entry order.
    fn brute_find(history: &History, index: &str, b: &ScanBounds, snapshot: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut rows: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = Vec::new();
        for (pk, versions) in history {
            let Some((_, Some(v))) = versions.iter().rev().find(|(c, _)| *c <= snapshot) else { continue };
            for e in envelope::entries(v).filter(|e| e.index == index.as_bytes()) {
                let entry = envelope::entry_key(e.key, pk);
                let Some((lo, hi)) = b.range() else { continue };
                let inside = (match lo {
                    Bound::Unbounded => true,
                    Bound::Included(l) => entry.as_slice() >= l,
                    Bound::Excluded(l) => entry.as_slice() > l,
                }) && (match hi {
                    Bound::Unbounded => true,
                    Bound::Included(u) => entry.as_slice() <= u,
                    Bound::Excluded(u) => entry.as_slice() < u,
                });
                if inside {
                    rows.push((entry, pk.clone(), envelope::value(v).to_vec()));
                }
            }
        }
        rows.sort();
        if b.reverse {
            rows.reverse();
        }
        rows.into_iter().take(b.limit()).map(|(_, pk, v)| (pk, v)).collect()
    }

    fn random_bounds(rng: &mut Rng) -> ScanBounds {
        let mut b = ScanBounds::default();
        let pick = |rng: &mut Rng| {
            let mut k = skey(&format!("{}{}", ["a", "b"][rng.below(2) as usize], rng.below(5)));
            if rng.below(2) == 0 {
                k.extend_from_slice(&skey(&format!("k{}", rng.below(20))));
            }
            k
        };
        match rng.below(3) {
            0 => b.gte = Some(pick(rng)),
            1 => b.gt = Some(pick(rng)),
            _ => {}
        }
        match rng.below(3) {
            0 => b.lte = Some(pick(rng)),
            1 => b.lt = Some(pick(rng)),
            _ => {}
        }
        b.reverse = rng.below(2) == 0;
        b.limit = [0, 1, 3][rng.below(3) as usize];
        b
    }

    /// The versions of `history` the pruning rule keeps at `horizon` with the snapshots `pinned`
    /// (the store's rule, by brute force: no binary search, no cut list): those above the
    /// horizon, and for the horizon and each pinned snapshot the newest version at or below it.
    fn staying(history: &History, horizon: u64, pinned: &[u64]) -> History {
        history
            .iter()
            .map(|(pk, versions)| {
                let read: Vec<usize> = std::iter::once(horizon).chain(pinned.iter().copied()).filter_map(|x| versions.iter().rposition(|(c, _)| *c <= x)).collect();
                let kept = versions.iter().enumerate().filter(|(i, (c, _))| *c > horizon || read.contains(i)).map(|(_, v)| v.clone()).collect();
                (pk.clone(), kept)
            })
            .collect()
    }

    /// The MessagePack value of `pk` at `snapshot` in a history model.
    fn model_get(history: &History, pk: &[u8], snapshot: u64) -> Option<Vec<u8>> {
        history.get(pk).and_then(|vs| vs.iter().rev().find(|(c, _)| *c <= snapshot)).and_then(|(_, v)| v.as_deref()).map(|v| envelope::value(v).to_vec())
    }

    /// Every get and a few finds at `snapshot` against the model of the staying versions — and the
    /// model against the full history (the rule keeps what the snapshot reads).
    #[allow(clippy::too_many_arguments)]
    fn check_reads(s: &Store, p: &PageStore, rng: &mut Rng, history: &History, model: &History, snapshot: u64, finds: usize, what: &str) {
        for k in 0..20 {
            let k = skey(&format!("k{k}"));
            let expect = model_get(model, &k, snapshot);
            assert_eq!(expect, model_get(history, &k, snapshot), "{what}: the staying versions answer get at {snapshot}");
            assert_eq!(s.get("c", &k, snapshot, p).unwrap().map(|v| v.into_owned()), expect, "{what}: get {k:?} at {snapshot}");
        }
        for _ in 0..finds {
            let index = ["a", "b"][rng.below(2) as usize];
            let b = random_bounds(rng);
            let expect = brute_find(model, index, &b, snapshot);
            assert_eq!(expect, brute_find(history, index, &b, snapshot), "{what}: the staying versions answer find at {snapshot}");
            assert_eq!(s.find("c", index, &b, snapshot, p).unwrap(), expect, "{what}: find {index} {b:?} at {snapshot}");
        }
    }

    /// A chain just pruned holds exactly the staying versions of its key, from its first version
    /// on (the older ones left memory with a retired chain or a dropped lone tombstone: no
    /// snapshot allowed reads them from memory).
    fn assert_chain_staying(s: &Store, model: &History, key: &[u8], what: &str) {
        let ids = chain_ids(s, "c", key);
        let Some(first) = ids.first() else { return };
        let expect: Vec<u64> = model[key].iter().map(|(c, _)| *c).filter(|c| c >= first).collect();
        assert_eq!(ids, expect, "{what}: chain {key:?} holds exactly the staying versions");
    }

    fn run_random(seed: u64) {
        let p = empty_pages(&format!("random-{seed}"));
        let mut rng = Rng(seed);
        let mut s = Store::default();
        let mut history: History = BTreeMap::new();
        // Newest version of every key written since the last checkpoint: the flusher's input.
        let mut dirty: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)> = BTreeMap::new();
        let mut lsn = 0u64;
        // The open readers' snapshots (two may share one), taken at the newest commit.
        let mut readers: Vec<u64> = Vec::new();
        // The pinned list as the store should keep it since the last set_horizon.
        let mut pinned: Vec<u64> = Vec::new();
        for round in 0..1500u64 {
            s.set_age_group(round / 50);
            let what = format!("seed {seed} round {round}");
            // Keys whose chains this step pruned with the current horizon and list.
            let mut pruned_keys: Vec<Vec<u8>> = Vec::new();
            let mut swept = false;
            match rng.below(23) {
                0..=9 => {
                    lsn += 1;
                    let n = 1 + rng.below(3);
                    let mut keys: Vec<Vec<u8>> = (0..n).map(|_| skey(&format!("k{}", rng.below(20)))).collect();
                    keys.sort();
                    keys.dedup();
                    let ops: Vec<Op> = keys
                        .iter()
                        .map(|k| if rng.below(6) == 0 { Op { kind: OP_DELETE, collection: 0, key: k.clone(), value: vec![] } } else { Op { kind: OP_PUT, collection: 0, key: k.clone(), value: random_value(&mut rng, lsn as u8) } })
                        .collect();
                    let written = s.apply(lsn, Commit { collections: vec!["c".into()], ops }, &p).unwrap();
                    for w in written {
                        let value = w.value.as_deref().map(<[u8]>::to_vec);
                        history.entry(w.key.to_vec()).or_default().push((lsn, value.clone()));
                        pruned_keys.push(w.key.to_vec());
                        dirty.insert(w.key.to_vec(), (lsn, value));
                    }
                }
                10..=11 => {
                    // The horizon trails the last commit by a little (the retention window); every
                    // open reader is handed over, in any order, with duplicates, and sometimes
                    // with a snapshot at or above the horizon (ignored).
                    let h = lsn.saturating_sub(rng.below(6));
                    let mut list = readers.clone();
                    if !list.is_empty() && rng.below(2) == 0 {
                        list.push(list[rng.below(list.len() as u64) as usize]);
                    }
                    if rng.below(4) == 0 {
                        list.push(lsn + rng.below(2));
                    }
                    for i in (1..list.len()).rev() {
                        list.swap(i, rng.below(i as u64 + 1) as usize);
                    }
                    swept = rng.below(3) == 0;
                    s.set_horizon(h, swept, &list);
                    pinned = list.into_iter().filter(|r| *r < s.horizon()).collect();
                    pinned.sort_unstable();
                    pinned.dedup();
                    assert_eq!(s.pinned(), &pinned[..], "{what}: the pinned list as kept");
                }
                12..=13 => {
                    if !dirty.is_empty() {
                        let changes = vec![CollectionChanges { name: "c".into(), changes: std::mem::take(&mut dirty).into_iter().map(|(k, (c, v))| (k, v.map(|v| (c, v)))).collect() }];
                        p.checkpoint(lsn, &changes, crate::pages::PageFault::None).unwrap();
                        s.set_checkpointed(lsn);
                    }
                }
                14 => {
                    s.retire(rng.below(3000) as usize);
                }
                15..=16 => {
                    let age_max = rng.below(s.age_group() as u64 + 2) as i64 - 1;
                    s.scavenge(age_max, rng.below(4000) as usize, 1 + rng.below(8) as usize);
                }
                17..=18 => {
                    // A reader opens at the newest commit (≥ the horizon).
                    if readers.len() < 6 {
                        readers.push(lsn);
                    }
                }
                19 => {
                    // A reader ends (the store learns it with the next list).
                    if !readers.is_empty() {
                        readers.swap_remove(rng.below(readers.len() as u64) as usize);
                    }
                }
                _ => {
                    let snapshot = s.horizon() + rng.below(lsn - s.horizon() + 1);
                    let model = staying(&history, s.horizon(), &pinned);
                    check_reads(&s, &p, &mut rng, &history, &model, snapshot, 4, &what);
                }
            }
            s.check_invariants();
            let model = staying(&history, s.horizon(), &pinned);
            if swept {
                pruned_keys = s.collections.get("c").map_or(vec![], |m| m.keys().map(|k| k.to_vec()).collect());
            }
            for k in &pruned_keys {
                assert_chain_staying(&s, &model, k, &what);
            }
            // Every open reader reads and finds its versions, after every step.
            let mut open = readers.clone();
            open.sort_unstable();
            open.dedup();
            for r in open {
                check_reads(&s, &p, &mut rng, &history, &model, r, 1, &format!("{what} reader {r}"));
            }
        }
        readers.clear();
        // Everything leaves: delete every key, checkpoint, and let the horizon pass.
        lsn += 1;
        let ops: Vec<Op> = history.keys().map(|k| Op { kind: OP_DELETE, collection: 0, key: k.clone(), value: vec![] }).collect();
        for w in s.apply(lsn, Commit { collections: vec!["c".into()], ops }, &p).unwrap() {
            dirty.insert(w.key.to_vec(), (lsn, w.value.as_deref().map(<[u8]>::to_vec)));
        }
        let changes = vec![CollectionChanges { name: "c".into(), changes: std::mem::take(&mut dirty).into_iter().map(|(k, (c, v))| (k, v.map(|v| (c, v)))).collect() }];
        p.checkpoint(lsn, &changes, crate::pages::PageFault::None).unwrap();
        s.set_checkpointed(lsn);
        s.set_horizon(lsn, false, &[]);
        // The pass in progress ends, then a whole pass from the first chain.
        for _pass in 0..2 {
            let mut step = s.scavenge(i64::MAX, 0, 7);
            for _ in 0..10 {
                if step.done {
                    break;
                }
                step = s.scavenge(i64::MAX, 0, 7);
            }
            assert!(step.done);
        }
        s.check_invariants();
        assert_eq!((s.version_count(), s.record_bytes(), s.index_entry_count(), s.key_count()), (0, 0, 0, 0), "seed {seed}: accounting back to zero");
        assert!(p.collections().unwrap().is_empty(), "seed {seed}: the index trees empty with their collection");
    }

    #[test]
    fn find_matches_a_brute_force_over_random_histories() {
        for seed in 1..=6 {
            run_random(seed);
        }
    }
}
