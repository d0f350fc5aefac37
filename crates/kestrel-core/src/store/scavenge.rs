//! Giving memory back: [`Store::scavenge`], one bounded slice of a pass over every chain (prune,
//! drop lone checkpointed tombstones, retire lone checkpointed chains of old age groups, survey
//! what is retirable by age group), and [`Store::retire`], the flusher's backstop after a
//! checkpoint. A chain leaves memory only as a lone version that every allowed snapshot reads the
//! same way from the page store: a checkpointed value, or a checkpointed tombstone at or below
//! the horizon (see `keep.rs`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::chain::{chain_key_bytes, version_bytes};
use super::keep::{droppable_tombstone, prune, retirable};
use super::overlay::Released;
use super::Store;
use crate::keybuf::KeyBuf;

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

impl Store {
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
}
