/**
 * Which versions pruning keeps (twin of `store/keep.rs`): the horizon and the pinned snapshots
 * below it (`Keep`), and the prune rule (`prune`). Every snapshot at or above the horizon may be
 * opened; a pinned snapshot is an open reader older than the horizon. A version stays iff some
 * such snapshot reads it, so an old reader keeps one version per key, not every version since.
 */
import type { Version } from './chain.js'
import type { Overlay } from './overlay.js'

/**
 * The most pinned snapshots the store tells apart (a bound on the list's memory and on the cost
 * of a prune). Past it the oldest `PINNED_MAX` are kept and every version above the newest of
 * them stays: the snapshots cut off still read theirs, the store keeps more.
 */
export const PINNED_MAX = 1 << 16

/** The horizon and the pinned snapshots below it: a version none of them reads may be pruned. */
export class Keep {
  /** Every snapshot at or above it may read. Never decreases; see Core.setHorizon. */
  horizon: number
  /**
   * Every version above it stays: the horizon, or the newest of the PINNED_MAX oldest pinned
   * snapshots when more were handed over. Invariant: ≤ horizon, ≥ every pinned snapshot.
   */
  above: number
  /** Open snapshots below the horizon, ascending and distinct, at most PINNED_MAX: each keeps the version it sees. */
  pinned: number[] = []

  constructor(horizon: number) {
    this.horizon = horizon
    this.above = horizon
  }

  /**
   * Raise the horizon (never lowers it) and replace the pinned snapshots: the readers below the
   * horizon still open, each keeping the one version it sees — sorted, deduplicated and cut at
   * PINNED_MAX (never an error: a reader must not lose what it reads).
   */
  set(horizon: number, pinned: readonly number[]): void {
    this.horizon = Math.max(this.horizon, horizon)
    const h = this.horizon
    const kept = [...new Set(pinned)].filter((p) => p < h).sort((a, b) => a - b)
    if (kept.length > PINNED_MAX) {
      // The snapshots cut off lie above the newest one kept: everything above it stays, so the
      // version each of them reads stays (it is above, or the newest at or below it).
      kept.length = PINNED_MAX
      this.above = kept[PINNED_MAX - 1]!
    } else {
      this.above = h
    }
    this.pinned = kept
  }
}

/** What leaving versions gave back: how many, and their bytes (versions and index entries). */
export interface Released {
  versions: number
  bytes: number
}

/**
 * Drop the versions of a chain of `collection` that no allowed snapshot can see. A version stays
 * iff it is newer than `keep.above` (the horizon, unless more than PINNED_MAX snapshots are
 * pinned), or the newest at or below it, or the newest at or below one of the pinned snapshots
 * (older readers still open). Leaving versions may sit in the middle of the chain; their index
 * entries go only if no staying version holds them (the overlay's counts).
 */
export function prune(vs: Version[], keep: Keep, collection: string, overlay: Overlay): Released {
  const above = keep.above
  let atHorizon = -1
  for (let i = vs.length - 1; i >= 0; i--)
    if (vs[i]!.commitId <= above) {
      atHorizon = i
      break
    }
  if (atHorizon <= 0) return { versions: 0, bytes: 0 }
  // Versions 0 … atHorizon-1 leave unless a pinned snapshot reads one of them. Bounded by the
  // chain and by the pins (both short; pins are deduplicated and below the horizon).
  const pins = keep.pinned
  let kept: boolean[] | undefined
  if (pins.length > 0 && pins[0]! < vs[atHorizon]!.commitId) {
    kept = new Array<boolean>(atHorizon).fill(false)
    let j = atHorizon - 1
    for (let p = pins.length - 1; p >= 0 && j >= 0; p--) {
      const pin = pins[p]!
      if (pin >= vs[atHorizon]!.commitId) continue
      while (j >= 0 && vs[j]!.commitId > pin) j--
      if (j >= 0) kept[j] = true
    }
  }
  let dropped = 0
  let bytes = 0
  let w = 0
  for (let i = 0; i < vs.length; i++) {
    const v = vs[i]!
    if (i >= atHorizon || kept?.[i]) {
      vs[w++] = v
      continue
    }
    bytes += overlay.release(collection, v)
    dropped++
  }
  vs.length = w
  return { versions: dropped, bytes }
}
