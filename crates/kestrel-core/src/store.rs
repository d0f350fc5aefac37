//! The store: latest value bytes per (collection, key), with ordered scans. Rebuilt from the log
//! at open; the MVCC version store and the page store replace it in later versions.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::payload::Commit;

#[derive(Default)]
pub struct Store {
    collections: HashMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Invariant: equals the sum of the collections' lengths.
    keys: usize,
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

impl Store {
    /// Apply one commit's ops in order (called in LSN order, after the commit is acknowledged).
    pub fn apply(&mut self, commit: Commit) {
        for op in commit.ops {
            let name = &commit.collections[op.collection as usize];
            let map = match self.collections.get_mut(name) {
                Some(m) => m,
                None => self.collections.entry(name.clone()).or_default(),
            };
            let before = map.len();
            match op.value {
                Some(v) => {
                    map.insert(op.key, v);
                }
                None => {
                    map.remove(&op.key);
                }
            }
            self.keys = self.keys + map.len() - before;
        }
    }

    pub fn get(&self, collection: &str, key: &[u8]) -> Option<&[u8]> {
        self.collections.get(collection)?.get(key).map(|v| v.as_slice())
    }

    pub fn key_count(&self) -> usize {
        self.keys
    }

    /// Entries within the bounds, in key order (or reverse), at most `limit` (0 = all).
    pub fn scan(&self, collection: &str, b: &ScanBounds) -> Vec<(Vec<u8>, Vec<u8>)> {
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
        let pick = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        if b.reverse {
            range.rev().take(limit).map(pick).collect()
        } else {
            range.take(limit).map(pick).collect()
        }
    }
}
