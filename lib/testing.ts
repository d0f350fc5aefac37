/**
 * `kestreldb/testing`: the fault layer, for tests of kestreldb and of code built on it — failing
 * writes and fdatasyncs, held syncs, simulated power loss, crashes inside a checkpoint. Never for
 * production: a database opened here runs on the fault-injecting file layer.
 *
 * @example
 * import { openWithFaults, simulateCrash } from 'kestreldb/testing'
 * const db = await openWithFaults('./scratch', { faults: { failFsyncAt: 3 } })
 * await simulateCrash(db)        // unsynced log data is gone, as after a power loss
 */
import { detachCrashed, leaseOf, openWith, type Database } from './database.js'
import { resolveFaults, type OpenOptions } from './options.js'
import type { FaultOptions, PageFault } from './core/types.js'

export type { FaultOptions, PageFault }

/**
 * Open (or create) a database on the fault layer. `faults` (required; `{}` for the layer alone):
 * `failWriteAt` / `failFsyncAt` fail the Nth log write / fdatasync of a commit batch (1-based)
 * with `errno` (`'EIO'` default, or `'ENOSPC'`); `failSealSync` fails every fdatasync that seals
 * a segment (rollover, close).
 */
export async function openWithFaults(path: string, options: OpenOptions & { faults: FaultOptions }): Promise<Database> {
  const { faults, ...rest } = options ?? ({} as OpenOptions & { faults: FaultOptions })
  return openWith(path, rest, resolveFaults(faults))
}

/**
 * Hold every log fdatasync until released, so that commits stay written but not durable — and
 * so, by durability before visibility, not visible.
 */
export function holdSyncs(db: Database, hold: boolean): void {
  leaseOf(db).core.holdSyncs(hold)
}

/**
 * The next checkpoint crashes at `fault` — `'losePagesBeforeMeta'` (its pages reach the disk as
 * garbage, no meta page), `'tearMeta'` (only the first 40 bytes of its meta page: an invalid
 * slot) or `'failMetaSync'` (a whole, valid meta page, then a failed sync) — and fails with
 * `KESTREL_IO`. Follow with {@link simulateCrash} and reopen.
 */
export function injectPageFault(db: Database, fault: PageFault): void {
  leaseOf(db).core.setPageFault(fault)
}

/**
 * Simulate a power loss: log data not fdatasync'd is lost, except the first `tearBytes` bytes of
 * the last unsynced write (a torn write). Commits not yet acknowledged reject with
 * `KESTREL_CLOSED`; every handle of the directory is unusable after it; reopen to recover.
 */
export async function simulateCrash(db: Database, tearBytes = 0): Promise<void> {
  await leaseOf(db).core.crash(tearBytes)
  await detachCrashed(db)
}
