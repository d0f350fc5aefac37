/** Options of {@link open}, their defaults and their validation. */
import { KestrelError } from './errors.js'
import type { CoreOpenOptions, Durability, FaultOptions } from './core/types.js'
import type { PostgresOptions } from './postgres/core.js'
import { checkSchemaName } from './postgres/log.js'

/** Which engine `open` should use. `'auto'`: native when its binary loads, else ts (one warning). */
export type EngineChoice = 'native' | 'ts' | 'auto'

/** Options of {@link open}. */
export interface OpenOptions {
  /** `'native'` | `'ts'` | `'auto'` (default). */
  engine?: EngineChoice
  /**
   * `'sync'` (default): a commit is acknowledged once fdatasync'd. `'relaxed'`: once written to
   * the OS (survives a process crash, not a power loss). `'none'`: no fdatasync until close.
   */
  durability?: Durability
  /** Start a new log segment past this size. Default 64 MiB; at least 64 KiB. */
  segmentBytes?: number
  /** Upper bound on one group-commit batch. Default 4 MiB; at least 64 KiB. */
  groupBytesMax?: number
  /**
   * Time-travel window for `db.at(commitId)`: versions of the last `commits` commits, and of
   * commits made in the last `ms` milliseconds, stay readable. Default `{ commits: 0, ms: 0 }`.
   * After a reopen, the commits window counts replayed commits; the ms window starts at open.
   */
  retainHistory?: { commits?: number; ms?: number }
  /**
   * Memory for records (the version store), in bytes. Past it, records already in a checkpoint
   * are dropped from memory and read from the page store. Default 256 MiB; at least 1 MiB.
   */
  cacheBytes?: number
  /** Write a checkpoint once this many bytes of changes wait for one. Default 64 MiB; at least 64 KiB. */
  checkpointBytes?: number
  /**
   * Write a checkpoint when the oldest unwritten change is this old, in milliseconds. Default
   * 10000; 0 = only by size, on `db.checkpoint()` and at close.
   */
  checkpointIntervalMs?: number
  /**
   * Bytes of written batches that may wait for the flusher before committers wait. Default
   * 64 MiB; at least 1 KiB (tests use small values to exercise back-pressure).
   */
  flushQueueBytes?: number
  /**
   * Bytes of batches held back while a backup or verify suspends the flusher before committers
   * are throttled. Default 256 MiB; at least 1 KiB.
   */
  deferredBytesMax?: number
  /**
   * Share the database between machines through PostgreSQL: the log lives in `schema` of the
   * database `connectionString` names, and `path` holds this process's replica of it. Needs the
   * `pg` package. See the README's "Several machines".
   */
  postgres?: PostgresOptions
}

/** The validated time-travel window. */
export interface Retention {
  commits: number
  ms: number
}

const MIB = 1024 * 1024

function invalid(message: string): KestrelError {
  return new KestrelError('KESTREL_INVALID_ARGUMENT', message)
}

function byteOption(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 64 * 1024 || value > 1024 * MIB) {
    throw invalid(`option ${name} must be a whole number of bytes from 65536 to 1 GiB, got ${String(value)}`)
  }
  return value
}

function sizeOption(name: string, value: unknown, fallback: number, min: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw invalid(`option ${name} must be a whole number of bytes ≥ ${min}, got ${String(value)}`)
  }
  return value
}

/** Every option `open` knows: anything else is refused (a misspelt option must not run with its default). */
const OPTION_NAMES: ReadonlyArray<keyof OpenOptions> = [
  'engine',
  'durability',
  'segmentBytes',
  'groupBytesMax',
  'retainHistory',
  'cacheBytes',
  'checkpointBytes',
  'checkpointIntervalMs',
  'flushQueueBytes',
  'deferredBytesMax',
  'postgres',
]

/** Edit distance, for "did you mean". Bounded by the lengths of two option names. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++)
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1))
    prev = row
  }
  return prev[b.length]!
}

function refuseUnknown(given: object, known: readonly string[], prefix: string): void {
  for (const name of Object.keys(given)) {
    if (known.includes(name)) continue
    const near = known.map((k) => [k, distance(name, k)] as const).sort((x, y) => x[1] - y[1])[0]
    const hint = near && near[1] <= 3 ? `did you mean ${prefix}${near[0]}? ` : ''
    throw invalid(`unknown ${prefix}${name}: ${hint}the known ones are ${known.join(', ')}`)
  }
}

/** Validate `open` options; returns the engine choice and the options for the core. */
export function resolveOptions(options: OpenOptions | undefined): {
  engine: EngineChoice
  core: CoreOpenOptions
  retain: Retention
  postgres?: PostgresOptions
} {
  const o = options ?? {}
  if (typeof o !== 'object' || o === null) throw invalid('open options must be an object')
  refuseUnknown(o, OPTION_NAMES, 'option ')
  const engine = o.engine ?? 'auto'
  if (engine !== 'auto' && engine !== 'native' && engine !== 'ts') {
    throw invalid(`option engine must be 'auto', 'native' or 'ts', got ${String(engine)}`)
  }
  const durability = o.durability ?? 'sync'
  if (durability !== 'sync' && durability !== 'relaxed' && durability !== 'none') {
    throw invalid(`option durability must be 'sync', 'relaxed' or 'none', got ${String(durability)}`)
  }
  const r = o.retainHistory ?? {}
  if (typeof r !== 'object' || r === null) throw invalid('option retainHistory must be an object like { commits, ms }')
  refuseUnknown(r, ['commits', 'ms'], 'option retainHistory.')
  const retain: Retention = { commits: r.commits ?? 0, ms: r.ms ?? 0 }
  for (const [k, v] of Object.entries(retain)) {
    if (!Number.isSafeInteger(v) || v < 0) throw invalid(`option retainHistory.${k} must be a non-negative integer, got ${String(v)}`)
  }
  const core: CoreOpenOptions = {
    durability,
    segmentBytes: byteOption('segmentBytes', o.segmentBytes, 64 * MIB),
    groupBytesMax: byteOption('groupBytesMax', o.groupBytesMax, 4 * MIB),
    retainCommits: retain.commits,
    cacheBytes: sizeOption('cacheBytes', o.cacheBytes, 256 * MIB, MIB),
    checkpointBytes: sizeOption('checkpointBytes', o.checkpointBytes, 64 * MIB, 64 * 1024),
    checkpointIntervalMs: 10_000,
    flushQueueBytes: sizeOption('flushQueueBytes', o.flushQueueBytes, 64 * MIB, 1024),
    deferredBytesMax: sizeOption('deferredBytesMax', o.deferredBytesMax, 256 * MIB, 1024),
  }
  if (o.checkpointIntervalMs !== undefined) {
    const v = o.checkpointIntervalMs
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
      throw invalid(`option checkpointIntervalMs must be a non-negative whole number of milliseconds, got ${String(v)}`)
    }
    core.checkpointIntervalMs = v
  }
  return { engine, core, retain, postgres: postgresOption(o.postgres) }
}

function postgresOption(p: unknown): PostgresOptions | undefined {
  if (p === undefined) return undefined
  if (typeof p !== 'object' || p === null)
    throw invalid("option postgres must be an object like { connectionString: 'postgres://user@host/db', schema: 'app' }")
  refuseUnknown(p, ['connectionString', 'schema', 'snapshotEveryCommits'], 'option postgres.')
  const { connectionString, schema, snapshotEveryCommits } = p as PostgresOptions
  if (typeof connectionString !== 'string' || connectionString.length === 0) {
    throw invalid(`option postgres.connectionString must be a connection string like 'postgres://user@host:5432/db', got ${String(connectionString)}`)
  }
  if (snapshotEveryCommits !== undefined && (!Number.isSafeInteger(snapshotEveryCommits) || snapshotEveryCommits < 1)) {
    throw invalid(`option postgres.snapshotEveryCommits must be a positive whole number of commits, got ${String(snapshotEveryCommits)}`)
  }
  return { connectionString, schema: checkSchemaName(schema), ...(snapshotEveryCommits === undefined ? {} : { snapshotEveryCommits }) }
}

/** Validate the fault options of `openWithFaults` (kestreldb/testing). */
export function resolveFaults(f: unknown): FaultOptions {
  if (typeof f !== 'object' || f === null) throw invalid('faults must be an object like { failFsyncAt: 3 } ({} for the fault layer alone)')
  refuseUnknown(f, ['failWriteAt', 'failFsyncAt', 'errno', 'failSealSync'], 'faults.')
  const o = f as FaultOptions
  for (const k of ['failWriteAt', 'failFsyncAt'] as const) {
    const v = o[k]
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) throw invalid(`faults.${k} must be a positive integer`)
  }
  if (o.errno !== undefined && o.errno !== 'EIO' && o.errno !== 'ENOSPC') throw invalid("faults.errno must be 'EIO' or 'ENOSPC'")
  if (o.failSealSync !== undefined && typeof o.failSealSync !== 'boolean') throw invalid('faults.failSealSync must be a boolean')
  return { ...o }
}
