/**
 * Online index builds. An index new to a collection is built by rewriting every record with its
 * index keys, a chunk of records per transaction, while writers go on: a chunk that collides with
 * a writer is retried at a newer snapshot. Writers that put after the index was defined already
 * carry its keys (and a put made before is re-keyed at commit). When the last chunk is in, a
 * marker record says from which commit on the index is complete; until then (and at older
 * snapshots) lookups scan instead, so they are always correct.
 */
import { setImmediate as yieldTurn } from 'node:timers/promises'
import { bytesToOrderedString, orderedStringToBytes } from '../codec/bytes.js'
import { decodeKey, encodeKey } from '../codec/key.js'
import { decodeValue, encodeValue } from '../codec/value.js'
import { ConflictError, KestrelError, UniqueError } from '../errors.js'
import type { Transaction } from '../transaction.js'
import type { Coordinator } from './coordinator.js'
import { INDEX_MARKERS, indexKeyOf, type IndexState } from './indexes.js'

/** Records rewritten per transaction. */
const BUILD_CHUNK_RECORDS = 256
/** Records read per scan: a unique index's first pass (one slice per event-loop turn), and the keys rewritten chunk by chunk. */
const SLICE_RECORDS = 4096
/** Attempts of one chunk before the build gives up (each attempt follows a lost conflict). */
const CHUNK_ATTEMPTS_MAX = 1000

interface Marker {
  readyAt: number
}

/** Is the index built already (a marker exists)? Sets `readyAt` when it is. */
export function loadMarker(coordinator: Coordinator, s: IndexState): boolean {
  const core = coordinator.core
  const bytes = core.get(INDEX_MARKERS, encodeKey([s.collection, s.name]), Number(core.lastCommitId()))
  if (bytes === undefined) return false
  const m = decodeValue(bytes) as Marker
  if (typeof m?.readyAt !== 'number') {
    throw new KestrelError('KESTREL_CORRUPT', `the build marker of index ${s.name} of ${s.collection} is damaged; run verify and restore from a backup`)
  }
  s.readyAt = m.readyAt
  return true
}

/** Commit one transaction, retrying it from scratch after lost conflicts. Returns its commit id. */
async function commitRetrying(begin: () => Transaction, fill: (tx: Transaction) => number): Promise<{ commitId: number; rows: number }> {
  for (let attempt = 1; ; attempt++) {
    const tx = begin()
    let rows = 0
    try {
      rows = fill(tx)
      const info = await tx.commit()
      return { commitId: Number(info.commitId), rows }
    } catch (err) {
      if (!tx.finished) tx.rollback()
      if (!(err instanceof ConflictError) || attempt >= CHUNK_ATTEMPTS_MAX) throw err
      if (err.retryAfter) await err.retryAfter
    }
  }
}

/**
 * Before the first chunk: wait for the commits validated before the index was defined (they
 * carry no key for it; a chunk that read before they landed would miss a record they insert), so
 * that every version committed from then on carries its key. Returns that point: the commit from
 * which the collection changes only by such commits. For a unique index, then map the index keys
 * of the records as they are at that point (`s.candidates`; see holdersWhileBuilding): the unique
 * checks made during the build use it instead of scanning. Records that break the unique index
 * fail the build here, after one pass.
 */
async function prepare(coordinator: Coordinator, s: IndexState): Promise<number> {
  await coordinator.drain()
  const core = coordinator.core
  const since = Number(core.lastCommitId())
  if (!s.unique) return since
  // Read at one snapshot across event-loop turns.
  coordinator.pin(since)
  try {
    // Keys as strings: compact, and no hold on the buffers the engine returned rows in.
    const candidates = new Map<string, string[]>()
    let broken: UniqueError | undefined
    let cursor: Uint8Array | undefined
    // Bounded by the collection: every slice moves the cursor forward or ends the loop.
    for (;;) {
      const batch = core.scan(s.collection, cursor ? { gt: cursor, limit: SLICE_RECORDS } : { limit: SLICE_RECORDS }, since)
      for (const [k, v] of batch) {
        let ik: Uint8Array | undefined
        try {
          ik = indexKeyOf(s, decodeValue(v), k)
        } catch {
          ik = undefined // the rewrite reports it
        }
        if (!ik) continue
        const key = bytesToOrderedString(ik)
        const holders = candidates.get(key)
        if (!holders) {
          candidates.set(key, [bytesToOrderedString(k)])
          continue
        }
        broken ??= new UniqueError(s.collection, s.name, decodeKey(ik), decodeKey(k), decodeKey(orderedStringToBytes(holders[0]!)), false)
        holders.push(bytesToOrderedString(k))
      }
      if (batch.length < SLICE_RECORDS) break
      cursor = batch[batch.length - 1]![0]
      await yieldTurn()
    }
    // Kept also when the build fails: writers stay checked against these records.
    s.candidates = candidates
    if (broken) throw broken
    return since
  } finally {
    coordinator.unpin(since)
  }
}

/** Build `s` (which has no marker): rewrite every record, then write the marker. */
export async function buildIndex(coordinator: Coordinator, begin: () => Transaction, s: IndexState): Promise<void> {
  const prepared = prepare(coordinator, s)
  if (s.unique) {
    // Set before any commit can be validated with this index: until the map is complete, a
    // unique check could only scan the collection.
    const preparing = prepared
      .then(
        () => undefined,
        () => undefined,
      )
      .then(() => {
        s.preparing = undefined
      })
    s.preparing = preparing
  }
  // Snapshots before `since` may see versions without the key: the index is usable from then on.
  let readyAt = await prepared
  const core = coordinator.core
  let cursor: Uint8Array | undefined
  // In key order, a slice of keys at a time (one scan per slice, not per chunk); each chunk reads
  // its records at its own snapshot, so a writer that changed one meanwhile makes it conflict and
  // retry. Records inserted after their slice was read carry their keys already. Bounded by the
  // collection: every slice moves the cursor forward or ends the loop.
  for (;;) {
    const keys = core.scan(s.collection, cursor ? { gt: cursor, limit: SLICE_RECORDS } : { limit: SLICE_RECORDS }, Number(core.lastCommitId())).map(([k]) => k)
    for (let i = 0; i < keys.length; i += BUILD_CHUNK_RECORDS) {
      const chunk = keys.slice(i, i + BUILD_CHUNK_RECORDS)
      const { commitId } = await commitRetrying(begin, (tx) => {
        const snapshot = Number(tx.snapshot)
        let rows = 0
        for (const k of chunk) {
          const v = core.get(s.collection, k, snapshot)
          if (v === undefined) continue // deleted meanwhile
          // A copy: the engine may reuse its read buffer.
          tx.rewrite(s.collection, k, v.slice())
          rows++
        }
        return rows
      })
      readyAt = Math.max(readyAt, commitId)
    }
    if (keys.length < SLICE_RECORDS) break
    cursor = keys[keys.length - 1]!
  }
  const markerKey = encodeKey([s.collection, s.name])
  await commitRetrying(begin, (tx) => {
    tx.rewrite(INDEX_MARKERS, markerKey, encodeValue({ readyAt } satisfies Marker))
    return 1
  })
  s.readyAt = readyAt
  // Lookups and unique checks use the index from now on.
  s.candidates = undefined
}
