/**
 * Scavenge slices (twin of `store/scavenge.rs`; see Core.scavenge): a pass over every chain, a
 * bounded slice at a time, that prunes what no allowed snapshot reads, drops lone tombstones the
 * checkpoint made useless, retires lone checkpointed chains of old age groups, and surveys what
 * it could retire next, by age group.
 */
import type { CoreScavengeOptions, CoreScavengeStep } from '../../types.js'
import { KEY_OVERHEAD_BYTES, versionBytes, type Chain, type SortedMap, type Version } from './chain.js'
import type { Store } from './index.js'

/**
 * A lone tombstone at or below the horizon hides nothing from any snapshot — once a checkpoint
 * removed the key from the page store too.
 */
export function droppableTombstone(versions: readonly Version[], horizon: number, checkpointed: number): boolean {
  const only = versions[0]!
  return versions.length === 1 && only.value === undefined && only.commitId <= horizon && only.commitId <= checkpointed
}

/** A lone version every snapshot ≥ the horizon would read from the page store the same way. */
export function retirable(versions: readonly Version[], horizon: number, checkpointed: number): boolean {
  const only = versions[0]!
  return versions.length === 1 && only.commitId <= checkpointed && (only.value !== undefined || only.commitId <= horizon)
}

/**
 * Where the scavenge pass stands: live iterators over the collections and over the current
 * collection's chains (Map iteration follows insertion order and tolerates deletion), plus a
 * chain looked at but not visited yet (to tell whether the pass is done).
 */
export interface ScavengeCursor {
  collections: Iterator<[string, SortedMap<Chain>]>
  chains: Iterator<[string, Chain]> | undefined
  collection: [string, SortedMap<Chain>] | undefined
  pending: [string, Chain] | undefined
}

/** The next chain of the scavenge pass, or undefined at its end (the next call starts a new pass). */
function nextChain(store: Store): [string, SortedMap<Chain>, string, Chain] | undefined {
  if (!store.scavengeCursor) store.scavengeCursor = { collections: store.collections.entries(), chains: undefined, collection: undefined, pending: undefined }
  const cur = store.scavengeCursor
  if (cur.pending) {
    const [key, chain] = cur.pending
    cur.pending = undefined
    // Still the same chain? (Dropped meanwhile: a chain re-made for the key comes later in the pass.)
    const [name, chains] = cur.collection!
    if (chains.map.get(key) === chain) return [name, chains, key, chain]
  }
  // Bounded: each iteration consumes a chain or a collection of the live iterators.
  for (;;) {
    if (cur.chains) {
      const r = cur.chains.next()
      if (!r.done) return [cur.collection![0], cur.collection![1], r.value[0], r.value[1]]
      cur.chains = undefined
    }
    const c = cur.collections.next()
    if (c.done) {
      store.scavengeCursor = undefined
      return undefined
    }
    cur.collection = c.value
    cur.chains = c.value[1].map.entries()
  }
}

/**
 * One slice of a scavenge pass: for each visited chain, prune below the horizon, drop a
 * droppable lone tombstone, else retire it if it is retirable, old enough and memory is still
 * above the target; survey the retirable chains that stay.
 */
export function scavenge(store: Store, o: CoreScavengeOptions): CoreScavengeStep {
  const removedBefore = store.overlay.removed
  let visited = 0
  let prunedVersions = 0
  let retired = 0
  let done = false
  const survey = new Map<number, number>()
  // A slice visits at least one chain, so that every slice makes progress.
  const visitMax = Math.max(1, o.visitMax)
  // Bounded by visitMax (and the pass's end).
  while (visited < visitMax) {
    const next = nextChain(store)
    if (!next) {
      done = true
      break
    }
    const [name, chains, key, chain] = next
    visited++
    prunedVersions += store.prune(name, chain)
    if (droppableTombstone(chain.versions, store.horizon, store.checkpointedLsn)) {
      store.dropChain(name, chains, key, chain)
      prunedVersions++
      continue
    }
    if (!retirable(chain.versions, store.horizon, store.checkpointedLsn)) continue
    if (chain.age <= o.retireAgeMax && store.recordBytes > o.targetBytes) {
      store.dropChain(name, chains, key, chain)
      retired++
      continue
    }
    const bytes = versionBytes(chain.versions[0]!) + key.length + KEY_OVERHEAD_BYTES
    survey.set(chain.age, (survey.get(chain.age) ?? 0) + bytes)
  }
  if (!done) {
    // Look ahead one chain, so that a slice that visits the last chain says the pass is done.
    const next = nextChain(store)
    if (next) store.scavengeCursor!.pending = [next[2], next[3]]
    else done = true
  }
  store.retired += retired
  const flat: number[] = []
  for (const age of [...survey.keys()].sort((a, b) => a - b)) flat.push(age, survey.get(age)!)
  return { visited, prunedVersions, indexEntriesRemoved: store.overlay.removed - removedBefore, retired, done, survey: flat }
}
