//! A key's versions in memory: [`Version`], the [`Chain`] that holds them oldest first, which
//! version a snapshot sees, and what versions and keys are charged against the record memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::keybuf::KeyBuf;

/// Bytes charged per version and per key on top of their payload bytes (chain and map overhead,
/// an estimate: the budget is about order of magnitude, not bytes).
pub const VERSION_OVERHEAD_BYTES: usize = 40;
pub const KEY_OVERHEAD_BYTES: usize = 64;

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
pub(super) enum Versions {
    One(Version),
    /// Empty only while a chain is being made in `apply`; never of length 1 after a prune.
    Many(Vec<Version>),
}

impl Versions {
    pub(super) fn as_slice(&self) -> &[Version] {
        match self {
            Versions::One(v) => std::slice::from_ref(v),
            Versions::Many(vs) => vs,
        }
    }

    pub(super) fn push(&mut self, v: Version) {
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
pub(super) struct Chain {
    /// Invariant: non-empty outside `apply`, strictly increasing in commit_id.
    pub(super) versions: Versions,
    /// The age group in which the chain was last installed, loaded or read. Atomic because reads
    /// hold only the store's read lock; relaxed, because it is only a hint for the LRU policy.
    pub(super) age: AtomicU32,
}

impl Chain {
    pub(super) fn new(age: u32) -> Chain {
        Chain { versions: Versions::Many(Vec::new()), age: AtomicU32::new(age) }
    }

    pub(super) fn versions(&self) -> &[Version] {
        self.versions.as_slice()
    }

    /// Mark the chain used in age group `age` (never moves it back).
    pub(super) fn touch(&self, age: u32) {
        // A load first: most reads find the age current, and then no cache line is dirtied.
        if self.age.load(Ordering::Relaxed) < age {
            self.age.fetch_max(age, Ordering::Relaxed);
        }
    }

    pub(super) fn age(&self) -> u32 {
        self.age.load(Ordering::Relaxed)
    }
}

/// The version a reader at `snapshot` sees: the newest with `commit_id ≤ snapshot`.
pub(super) fn visible(chain: &[Version], snapshot: u64) -> Option<&Version> {
    chain.iter().rev().find(|v| v.commit_id <= snapshot)
}

/// Bytes a version is charged: its stored value plus [`VERSION_OVERHEAD_BYTES`].
pub(super) fn version_bytes(v: &Version) -> usize {
    v.value.as_ref().map_or(0, |b| b.len()) + VERSION_OVERHEAD_BYTES
}

/// Bytes a chain is charged for its key: the key plus [`KEY_OVERHEAD_BYTES`].
pub(super) fn chain_key_bytes(key: &[u8]) -> usize {
    key.len() + KEY_OVERHEAD_BYTES
}

/// The chain of `key` in a collection's map.
pub(super) fn chain_of<'m>(map: &'m BTreeMap<KeyBuf, Chain>, key: &[u8]) -> Option<&'m Chain> {
    map.get(&KeyBuf::new(key))
}
