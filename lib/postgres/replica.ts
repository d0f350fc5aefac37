/**
 * The mark of a replica directory (docs/FORMAT.md "The PostgreSQL medium"): `REPLICA` names the
 * PostgreSQL database it replicates, so that it is never opened against another one, nor without
 * one (its commits would fork from the shared log).
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { syncDirSync } from '../core/ts/fsutil.js'
import { KestrelError } from '../errors.js'

export const REPLICA_FILE = 'REPLICA'

export interface ReplicaMark {
  format: 1
  /** The schema it was made from (informative: the id decides). */
  schema: string
  /** `database_id` of the schema's `kestrel_meta` row. */
  databaseId: string
}

/** The directory's mark, or undefined when it is not a replica. */
export function readReplicaMark(dir: string): ReplicaMark | undefined {
  let text: string
  try {
    text = readFileSync(join(dir, REPLICA_FILE), 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  let mark: ReplicaMark
  try {
    mark = JSON.parse(text) as ReplicaMark
  } catch {
    throw new KestrelError(
      'KESTREL_CORRUPT',
      `${join(dir, REPLICA_FILE)} is not readable JSON; remove the directory to bootstrap the replica again from PostgreSQL`,
    )
  }
  if (mark.format !== 1 || typeof mark.databaseId !== 'string' || typeof mark.schema !== 'string') {
    throw new KestrelError(
      'KESTREL_FORMAT_VERSION',
      `${join(dir, REPLICA_FILE)} is of an unknown format; upgrade kestreldb, or remove the directory to bootstrap the replica again`,
    )
  }
  return mark
}

/** Mark `dir` as a replica (written whole: a temporary file, fsynced, renamed, directory fsynced). */
export function writeReplicaMark(dir: string, mark: ReplicaMark): void {
  const tmp = join(dir, `${REPLICA_FILE}.tmp`)
  writeFileSync(tmp, `${JSON.stringify(mark)}\n`)
  const fd = openSync(tmp, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, join(dir, REPLICA_FILE))
  syncDirSync(dir)
}
