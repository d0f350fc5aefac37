/**
 * Online index builds. An index new to a collection is built by rewriting every record with its
 * index keys, a chunk of records per transaction, while writers go on: a chunk that collides with
 * a writer is retried at a newer snapshot. Writers that put after the index was defined already
 * carry its keys (and a put made before is re-keyed at commit). When the last chunk is in, a
 * marker record says from which commit on the index is complete; until then (and at older
 * snapshots) lookups scan instead, so they are always correct.
 */
import { encodeKey } from '../codec/key.js'
import { decodeValue, encodeValue } from '../codec/value.js'
import { ConflictError, KestrelError } from '../errors.js'
import type { Transaction } from '../transaction.js'
import type { Coordinator } from './coordinator.js'
import { INDEX_MARKERS, type IndexState } from './indexes.js'

/** Records rewritten per transaction. */
const BUILD_CHUNK_RECORDS = 256
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

/** Build `s` (which has no marker): rewrite every record, then write the marker. */
export async function buildIndex(coordinator: Coordinator, begin: () => Transaction, s: IndexState): Promise<void> {
  const core = coordinator.core
  let cursor: Uint8Array | undefined
  let readyAt = 0
  // Bounded by the collection: every chunk moves the cursor forward or ends the loop.
  for (;;) {
    let last: Uint8Array | undefined
    const { commitId, rows } = await commitRetrying(begin, (tx) => {
      const snapshot = Number(tx.snapshot)
      const batch = core.scan(s.collection, cursor ? { gt: cursor, limit: BUILD_CHUNK_RECORDS } : { limit: BUILD_CHUNK_RECORDS }, snapshot)
      for (const [k, v] of batch) tx.rewrite(s.collection, k, v)
      last = batch.length > 0 ? batch[batch.length - 1]![0] : undefined
      return batch.length
    })
    readyAt = Math.max(readyAt, commitId)
    if (rows < BUILD_CHUNK_RECORDS || !last) break
    cursor = last
  }
  const markerKey = encodeKey([s.collection, s.name])
  await commitRetrying(begin, (tx) => {
    tx.rewrite(INDEX_MARKERS, markerKey, encodeValue({ readyAt } satisfies Marker))
    return 1
  })
  s.readyAt = readyAt
}
