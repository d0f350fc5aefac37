//! The version store (record cache): per (collection, key) a chain of versions, oldest first,
//! each stamped with the commit id (LSN) that wrote it. Reads at a snapshot see the newest version
//! with `commit_id ≤ snapshot`. Versions that no snapshot at or after the horizon can see are
//! pruned.
//!
//! A key is either **in memory** — then its chain answers every snapshot ≥ the horizon on its
//! own — or only in the **page store**, whose version is then the key's one and only version. The
//! chain of a key written while it was only in the page store starts with that page-store version
//! (loaded at install), so that older snapshots and merges see it. A chain is retired from memory
//! only when it is a single version already in a checkpoint (`commit_id ≤ checkpointed_lsn`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::error::Result;
use crate::merge;
use crate::pages::PageStore;
use crate::payload::{Commit, OP_APPEND, OP_DELETE, OP_INCREMENT, OP_PUT};

/// Bytes charged per version and per key on top of their payload bytes (chain and map overhead,
/// an estimate: the budget is about order of magnitude, not bytes).
pub const VERSION_OVERHEAD_BYTES: usize = 40;
pub const KEY_OVERHEAD_BYTES: usize = 64;

/// One version of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub commit_id: u64,
    /// None = tombstone.
    pub value: Option<Vec<u8>>,
}

/// What one installed write left as the key's newest version: the flusher's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub collection: String,
    pub key: Vec<u8>,
    pub commit_id: u64,
    /// None = deleted.
    pub value: Option<Vec<u8>>,
}

impl Written {
    /// Memory this write holds while queued, deferred or dirty.
    pub fn bytes(&self) -> usize {
        self.collection.len() + self.key.len() + self.value.as_ref().map_or(0, |v| v.len()) + VERSION_OVERHEAD_BYTES
    }
}

#[derive(Default)]
pub struct Store {
    /// Invariant: every chain is non-empty and strictly increasing in commit_id.
    collections: HashMap<String, BTreeMap<Vec<u8>, Vec<Version>>>,
    /// Versions older than the newest one at or below the horizon are invisible to every
    /// snapshot still allowed, and may be pruned. Never decreases.
    horizon: u64,
    /// The LSN of the published checkpoint: chains whose only version is at or below it are
    /// in the page store as they are. Never decreases.
    checkpointed_lsn: u64,
    /// Invariant: number of keys whose newest version is not a tombstone, memory and page store.
    live_keys: u64,
    /// Invariant: total number of versions held in memory.
    versions: usize,
    /// Invariant: estimated bytes of the chains in memory (payloads + overheads).
    record_bytes: usize,
    /// Chains dropped from memory since open.
    retired: u64,
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

fn visible(chain: &[Version], snapshot: u64) -> Option<&Version> {
    chain.iter().rev().find(|v| v.commit_id <= snapshot)
}

fn version_bytes(v: &Version) -> usize {
    v.value.as_ref().map_or(0, |b| b.len()) + VERSION_OVERHEAD_BYTES
}

/// Drop versions hidden from every snapshot ≥ horizon; returns (versions, bytes) dropped.
fn prune(chain: &mut Vec<Version>, horizon: u64) -> (usize, usize) {
    // The newest version at or below the horizon stays: snapshots at the horizon read it.
    let Some(keep_from) = chain.iter().rposition(|v| v.commit_id <= horizon) else { return (0, 0) };
    let bytes = chain[..keep_from].iter().map(version_bytes).sum();
    chain.drain(..keep_from);
    (keep_from, bytes)
}

/// Entries per page-store read while merging a scan.
const SCAN_CHUNK_ENTRIES: usize = 256;

impl Store {
    /// Start from a checkpoint holding `records` live records at `checkpoint_lsn`.
    pub fn new(checkpoint_lsn: u64, records: u64) -> Store {
        Store { checkpointed_lsn: checkpoint_lsn, horizon: checkpoint_lsn, live_keys: records, ..Store::default() }
    }

    /// Install one commit's ops in order (called in LSN order, after the commit is
    /// acknowledged). A key only in the page store is loaded first (merges build on it, older
    /// snapshots read it). Returns what each op left as the key's newest version.
    pub fn apply(&mut self, commit_id: u64, commit: Commit, pages: &PageStore) -> Result<Vec<Written>> {
        let mut out = Vec::with_capacity(commit.ops.len());
        for op in commit.ops {
            let name = &commit.collections[op.collection as usize];
            if !self.collections.contains_key(name) {
                self.collections.insert(name.clone(), BTreeMap::new());
            }
            let map = self.collections.get_mut(name).expect("inserted above");
            // One search per op: the entry is found or made in place.
            let key = op.key.clone();
            let chain = match map.entry(op.key) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let mut chain = Vec::with_capacity(2);
                    if let Some((cid, value)) = pages.get(name, e.key())? {
                        debug_assert!(cid < commit_id, "the page store only holds older commits");
                        let v = Version { commit_id: cid, value: Some(value) };
                        self.record_bytes += version_bytes(&v);
                        self.versions += 1;
                        chain.push(v);
                    }
                    self.record_bytes += e.key().len() + KEY_OVERHEAD_BYTES;
                    e.insert(chain)
                }
            };
            let base = chain.last().and_then(|v| v.value.as_deref());
            let was_live = base.is_some();
            let value = match op.kind {
                OP_PUT => Some(op.value),
                OP_DELETE => None,
                OP_APPEND => Some(merge::append(base, &op.value)),
                OP_INCREMENT => Some(merge::increment(base, &op.value)),
                other => unreachable!("op {other} passed validation"),
            };
            debug_assert!(chain.last().is_none_or(|v| v.commit_id < commit_id), "versions install in commit order");
            let is_live = value.is_some();
            out.push(Written { collection: name.clone(), key, commit_id, value: value.clone() });
            let v = Version { commit_id, value };
            self.record_bytes += version_bytes(&v);
            chain.push(v);
            self.versions += 1;
            let (n, bytes) = prune(chain, self.horizon);
            self.versions -= n;
            self.record_bytes -= bytes;
            self.live_keys = self.live_keys + is_live as u64 - was_live as u64;
        }
        Ok(out)
    }

    /// Raise the horizon (never lowers it). With `sweep`, prune every chain now.
    pub fn set_horizon(&mut self, horizon: u64, sweep: bool) {
        self.horizon = self.horizon.max(horizon);
        if !sweep {
            return;
        }
        let h = self.horizon;
        let checkpointed = self.checkpointed_lsn;
        let (mut dropped, mut bytes) = (0usize, 0usize);
        for map in self.collections.values_mut() {
            map.retain(|key, chain| {
                let (n, b) = prune(chain, h);
                dropped += n;
                bytes += b;
                // A lone tombstone at or below the horizon hides nothing from any snapshot —
                // once a checkpoint has removed the key from the page store too.
                let gone = chain.len() == 1 && chain[0].value.is_none() && chain[0].commit_id <= h && chain[0].commit_id <= checkpointed;
                if gone {
                    dropped += 1;
                    bytes += version_bytes(&chain[0]) + key.len() + KEY_OVERHEAD_BYTES;
                }
                !gone
            });
        }
        self.versions -= dropped;
        self.record_bytes -= bytes;
    }

    pub fn horizon(&self) -> u64 {
        self.horizon
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
    /// memory is at most `target_bytes`. Returns how many chains were dropped. Reads of them fall
    /// through to the page store, which holds exactly that version.
    pub fn retire(&mut self, target_bytes: usize) -> u64 {
        if self.record_bytes <= target_bytes {
            return 0;
        }
        let checkpointed = self.checkpointed_lsn;
        let horizon = self.horizon;
        let mut retired = 0u64;
        let mut names: Vec<String> = self.collections.keys().cloned().collect();
        names.sort();
        for name in names {
            let map = self.collections.get_mut(&name).expect("listed above");
            let mut gone_bytes = 0usize;
            let mut gone = 0u64;
            let over = self.record_bytes;
            map.retain(|key, chain| {
                if over - gone_bytes <= target_bytes {
                    return true;
                }
                // Only a lone version that every snapshot ≥ horizon would read from the page
                // store the same way: at or below the checkpoint.
                let lone = chain.len() == 1 && chain[0].commit_id <= checkpointed && (chain[0].value.is_some() || chain[0].commit_id <= horizon);
                if lone {
                    gone_bytes += version_bytes(&chain[0]) + key.len() + KEY_OVERHEAD_BYTES;
                    gone += 1;
                }
                !lone
            });
            self.record_bytes -= gone_bytes;
            self.versions -= gone as usize;
            retired += gone;
            if self.record_bytes <= target_bytes {
                break;
            }
        }
        self.retired += retired;
        retired
    }

    pub fn get<'a>(&'a self, collection: &str, key: &[u8], snapshot: u64, pages: &PageStore) -> Result<Option<Cow<'a, [u8]>>> {
        if let Some(chain) = self.collections.get(collection).and_then(|m| m.get(key)) {
            return Ok(visible(chain, snapshot).and_then(|v| v.value.as_deref()).map(Cow::Borrowed));
        }
        Ok(match pages.get(collection, key)? {
            Some((cid, value)) if cid <= snapshot => Some(Cow::Owned(value)),
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

    /// Entries visible at `snapshot` within the bounds, in key order (or reverse), at most
    /// `limit` (0 = all): the chains in memory merged with the page store's keys not in memory.
    pub fn scan(&self, collection: &str, b: &ScanBounds, snapshot: u64, pages: &PageStore) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let lower: Bound<&[u8]> = match (&b.gte, &b.gt) {
            (Some(k), _) => Bound::Included(k.as_slice()),
            (None, Some(k)) => Bound::Excluded(k.as_slice()),
            _ => Bound::Unbounded,
        };
        let upper: Bound<&[u8]> = match (&b.lte, &b.lt) {
            (Some(k), _) => Bound::Included(k.as_slice()),
            (None, Some(k)) => Bound::Excluded(k.as_slice()),
            _ => Bound::Unbounded,
        };
        // BTreeMap::range panics on an inverted range: an empty result is the answer.
        if let (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) = (lower, upper) {
            if l > u || (l == u && !(matches!(lower, Bound::Included(_)) && matches!(upper, Bound::Included(_)))) {
                return Ok(Vec::new());
            }
        }
        let limit = if b.limit == 0 { usize::MAX } else { b.limit };
        let empty = BTreeMap::new();
        let map = self.collections.get(collection).unwrap_or(&empty);
        let mut mem: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<Version>)>> =
            if b.reverse { Box::new(map.range::<[u8], _>((lower, upper)).rev()) } else { Box::new(map.range::<[u8], _>((lower, upper))) };
        // The page store side, read in chunks; `disk_from` is where the next chunk starts.
        let mut disk: std::collections::VecDeque<crate::pages::Entry> = Default::default();
        let mut disk_done = false;
        let mut disk_cursor: Option<Vec<u8>> = None;
        let mut next_mem = mem.next();
        let mut out = Vec::new();
        // Bounded: each iteration consumes a memory entry or a page-store entry.
        while out.len() < limit {
            if disk.is_empty() && !disk_done {
                let (lo, hi) = match (&disk_cursor, b.reverse) {
                    (None, _) => (lower, upper),
                    (Some(c), false) => (Bound::Excluded(c.as_slice()), upper),
                    (Some(c), true) => (lower, Bound::Excluded(c.as_slice())),
                };
                let chunk = pages.range(collection, lo, hi, b.reverse, SCAN_CHUNK_ENTRIES)?;
                disk_done = chunk.len() < SCAN_CHUNK_ENTRIES;
                disk_cursor = chunk.last().map(|e| e.key.clone());
                disk.extend(chunk);
            }
            let order = match (&next_mem, disk.front()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((mk, _)), Some(d)) => {
                    let o = mk.as_slice().cmp(d.key.as_slice());
                    if b.reverse { o.reverse() } else { o }
                }
            };
            match order {
                std::cmp::Ordering::Less | std::cmp::Ordering::Equal => {
                    let (k, chain) = next_mem.take().expect("checked");
                    if order == std::cmp::Ordering::Equal {
                        disk.pop_front(); // memory answers for a key it holds
                    }
                    if let Some(v) = visible(chain, snapshot).and_then(|v| v.value.as_ref()) {
                        out.push((k.clone(), v.clone()));
                    }
                    next_mem = mem.next();
                }
                std::cmp::Ordering::Greater => {
                    let e = disk.pop_front().expect("checked");
                    if e.commit_id <= snapshot {
                        out.push((e.key, e.value));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Op;

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
        s.set_horizon(2, true);
        assert_eq!(read(&s, &p, b"k", 2).as_deref(), Some(&b"b"[..]), "the horizon snapshot still reads");
        assert_eq!(s.version_count(), 2);
        s.set_horizon(3, true);
        assert_eq!(s.version_count(), 1, "a lone tombstone stays until a checkpoint covers it");
        s.set_checkpointed(3);
        s.set_horizon(3, true);
        assert_eq!(s.version_count(), 0, "a lone tombstone at the horizon and the checkpoint is dropped");
        assert_eq!(s.key_count(), 0);
        assert_eq!(s.record_bytes(), 0, "record memory accounting returns to zero");
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
        s.set_horizon(2, true);
        assert_eq!(s.retire(0), 0, "nothing is checkpointed yet, so nothing may leave memory");
        s.set_checkpointed(1);
        assert_eq!(s.retire(0), 1, "only the chain at or below the checkpoint retires");
        assert_eq!(s.version_count(), 1);
    }
}
