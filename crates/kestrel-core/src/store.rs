//! The version store: per (collection, key) a chain of versions, oldest first, each stamped with
//! the commit id (LSN) that wrote it. Reads at a snapshot see the newest version with
//! `commit_id ≤ snapshot`. Versions that no snapshot at or after the horizon can see are pruned.
//! Rebuilt from the log at open (the page store comes later).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::merge;
use crate::payload::{Commit, OP_APPEND, OP_DELETE, OP_INCREMENT, OP_PUT};

/// One version of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub commit_id: u64,
    /// None = tombstone.
    pub value: Option<Vec<u8>>,
}

#[derive(Default)]
pub struct Store {
    /// Invariant: every chain is non-empty and strictly increasing in commit_id.
    collections: HashMap<String, BTreeMap<Vec<u8>, Vec<Version>>>,
    /// Versions older than the newest one at or below the horizon are invisible to every
    /// snapshot still allowed, and may be pruned. Never decreases.
    horizon: u64,
    /// Invariant: number of keys whose newest version is not a tombstone.
    live_keys: usize,
    /// Invariant: total number of versions held.
    versions: usize,
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

/// Drop versions hidden from every snapshot ≥ horizon; returns how many were dropped.
fn prune(chain: &mut Vec<Version>, horizon: u64) -> usize {
    // The newest version at or below the horizon stays: snapshots at the horizon read it.
    let Some(keep_from) = chain.iter().rposition(|v| v.commit_id <= horizon) else { return 0 };
    chain.drain(..keep_from);
    keep_from
}

impl Store {
    /// Install one commit's ops in order (called in LSN order, after the commit is acknowledged).
    pub fn apply(&mut self, commit_id: u64, commit: Commit) {
        for op in commit.ops {
            let name = &commit.collections[op.collection as usize];
            let map = match self.collections.get_mut(name) {
                Some(m) => m,
                None => self.collections.entry(name.clone()).or_default(),
            };
            let chain = map.entry(op.key).or_default();
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
            chain.push(Version { commit_id, value });
            self.versions += 1;
            self.versions -= prune(chain, self.horizon);
            self.live_keys = self.live_keys + is_live as usize - was_live as usize;
        }
    }

    /// Raise the horizon (never lowers it). With `sweep`, prune every chain now.
    pub fn set_horizon(&mut self, horizon: u64, sweep: bool) {
        self.horizon = self.horizon.max(horizon);
        if !sweep {
            return;
        }
        let h = self.horizon;
        let mut dropped = 0usize;
        for map in self.collections.values_mut() {
            map.retain(|_, chain| {
                dropped += prune(chain, h);
                // A lone tombstone at or below the horizon hides nothing from anyone.
                let gone = chain.len() == 1 && chain[0].value.is_none() && chain[0].commit_id <= h;
                if gone {
                    dropped += 1;
                }
                !gone
            });
        }
        self.versions -= dropped;
    }

    pub fn horizon(&self) -> u64 {
        self.horizon
    }

    pub fn get(&self, collection: &str, key: &[u8], snapshot: u64) -> Option<&[u8]> {
        let chain = self.collections.get(collection)?.get(key)?;
        visible(chain, snapshot)?.value.as_deref()
    }

    pub fn key_count(&self) -> usize {
        self.live_keys
    }

    pub fn version_count(&self) -> usize {
        self.versions
    }

    /// Entries visible at `snapshot` within the bounds, in key order (or reverse), at most
    /// `limit` (0 = all).
    pub fn scan(&self, collection: &str, b: &ScanBounds, snapshot: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let Some(map) = self.collections.get(collection) else { return Vec::new() };
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
                return Vec::new();
            }
        }
        let limit = if b.limit == 0 { usize::MAX } else { b.limit };
        let range = map.range::<[u8], _>((lower, upper));
        let pick = |(k, chain): (&Vec<u8>, &Vec<Version>)| visible(chain, snapshot).and_then(|v| v.value.as_ref()).map(|v| (k.clone(), v.clone()));
        if b.reverse {
            range.rev().filter_map(pick).take(limit).collect()
        } else {
            range.filter_map(pick).take(limit).collect()
        }
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

    #[test]
    fn reads_at_snapshots_and_prunes_below_the_horizon() {
        let mut s = Store::default();
        s.apply(1, put(b"k", Some(b"a")));
        s.apply(2, put(b"k", Some(b"b")));
        s.apply(3, put(b"k", None));
        assert_eq!(s.get("c", b"k", 1), Some(&b"a"[..]));
        assert_eq!(s.get("c", b"k", 2), Some(&b"b"[..]));
        assert_eq!(s.get("c", b"k", 3), None);
        assert_eq!(s.get("c", b"k", 0), None);
        assert_eq!(s.version_count(), 3);
        s.set_horizon(2, true);
        assert_eq!(s.get("c", b"k", 2), Some(&b"b"[..]), "the horizon snapshot still reads");
        assert_eq!(s.version_count(), 2);
        s.set_horizon(3, true);
        assert_eq!(s.version_count(), 0, "a lone tombstone at the horizon is dropped");
        assert_eq!(s.key_count(), 0);
    }

    #[test]
    fn merges_apply_in_commit_order() {
        let mut s = Store::default();
        for (i, item) in [1u8, 2, 3].iter().enumerate() {
            let op = Op { kind: OP_APPEND, collection: 0, key: b"list".to_vec(), value: vec![0x91, *item] };
            s.apply(i as u64 + 1, Commit { collections: vec!["c".into()], ops: vec![op] });
        }
        assert_eq!(s.get("c", b"list", 3), Some(&[0x93, 1, 2, 3][..]));
        assert_eq!(s.get("c", b"list", 1), Some(&[0x91, 1][..]));
    }
}
