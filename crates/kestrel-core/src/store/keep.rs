//! Which versions pruning keeps: [`Keep`] (the horizon and the pinned snapshots below it) and
//! the rule, [`prune`]. Of each chain exactly the versions some allowed snapshot can read stay —
//! every snapshot ≥ the horizon, and each pinned snapshot below it — also from the middle of a
//! chain, so an old reader keeps one version per key, not every version written since. Also the
//! two rules for a lone version leaving memory: [`droppable_tombstone`] and [`retirable`].

use super::chain::{Version, Versions};
use super::overlay::{Overlay, Released};

/// The most pinned snapshots the store tells apart (a defensive bound on the list's memory and
/// on the cost of a prune). Past it, the oldest `PINNED_MAX` are kept and every version above
/// the newest of them stays: the snapshots cut off still read theirs, the store only keeps more.
pub const PINNED_MAX: usize = 1 << 16;

/// Which versions pruning keeps: the horizon and the pinned snapshots below it (see [`prune`]).
#[derive(Debug, Default)]
pub(super) struct Keep {
    /// Every snapshot at or above it may read. Never decreases.
    pub(super) horizon: u64,
    /// Every version above it stays: the horizon, or the newest of the `PINNED_MAX` oldest
    /// pinned snapshots when more were handed over. Invariant: ≤ horizon.
    pub(super) above: u64,
    /// The pinned snapshots below the horizon, ascending, distinct, at most [`PINNED_MAX`];
    /// invariant: every one ≤ `above` and < horizon.
    pub(super) pinned: Vec<u64>,
}

impl Keep {
    pub(super) fn at(horizon: u64) -> Keep {
        Keep { horizon, above: horizon, pinned: Vec::new() }
    }

    /// Raise the horizon to `horizon` (never lowers it) and replace the pinned list by the
    /// snapshots of `pinned` below the (new) horizon, sorted and deduplicated, cut at
    /// [`PINNED_MAX`].
    pub(super) fn set(&mut self, horizon: u64, pinned: &[u64]) {
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
        debug_assert!(self.above <= self.horizon && self.pinned.last().is_none_or(|&p| p <= self.above && p < self.horizon));
    }

    /// Whether a pinned snapshot lies in `[lo, hi)`: then the version at `lo`, followed by the
    /// one at `hi`, is the newest at or below it.
    pub(super) fn pins_between(&self, lo: u64, hi: u64) -> bool {
        let i = self.pinned.partition_point(|&p| p < lo);
        i < self.pinned.len() && self.pinned[i] < hi
    }
}

/// Drop the versions of `pk` that no snapshot ≥ the horizon and no pinned snapshot reads; each
/// leaving version gives back its index entries (one reference each — the staying versions keep
/// theirs, whatever their place in the chain).
///
/// A version stays iff its commit id is above `keep.above`, or it is the newest at or below the
/// horizon, or the newest at or below some pinned snapshot. With the list not cut, `above` is the
/// horizon and that is the whole rule; cut, `above` is a pinned snapshot and more stays.
pub(super) fn prune(versions: &mut Versions, keep: &Keep, collection: &str, pk: &[u8], overlay: &mut Overlay) -> Released {
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
pub(super) fn droppable_tombstone(chain: &[Version], horizon: u64, checkpointed: u64) -> bool {
    chain.len() == 1 && chain[0].value.is_none() && chain[0].commit_id <= horizon && chain[0].commit_id <= checkpointed
}

/// A lone version that every snapshot ≥ horizon would read from the page store the same way: at
/// or below the checkpoint (a tombstone only once no snapshot can see the value before it).
pub(super) fn retirable(chain: &[Version], horizon: u64, checkpointed: u64) -> bool {
    chain.len() == 1 && chain[0].commit_id <= checkpointed && (chain[0].value.is_some() || chain[0].commit_id <= horizon)
}
