/**
 * One engine per database directory per process. A second `open()` of the same directory shares
 * the running engine (what users expect from two handles in one service) instead of starting a
 * second writer over the same files, which would corrupt them.
 */
import { mkdir, realpath, stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import { KestrelError } from './errors.js'
import { NATIVE_TAKES_LOCK, acquireLock, releaseLock } from './lock.js'
import { NativeCore, loadNative } from './core/native.js'
import { TsCore } from './core/ts/engine.js'
import type { Core, CoreOpenOptions, EngineName } from './core/types.js'
import type { EngineChoice, Retention } from './options.js'
import { Coordinator } from './txn/coordinator.js'
import { SharedCore } from './shared/core.js'
import { PgCore, type PostgresOptions } from './postgres/core.js'
import { REPLICA_FILE, readReplicaMark } from './postgres/replica.js'

interface Entry {
  core: Promise<Core>
  refs: number
  coordinator?: Coordinator
}

const open = new Map<string, Entry>()
let warnedFallback = false

function notADatabase(dir: string, why: string): KestrelError {
  return new KestrelError(
    'KESTREL_NOT_A_DATABASE',
    `${dir} is not a kestreldb database (${why}); pass an empty or new directory, or the directory of an existing database`,
  )
}

/**
 * Make sure `path` is a directory (creating it when missing) and resolve it. Whether it is a
 * database is checked by the engine once it holds the directory lock: before that, another
 * opener may be halfway through creating one.
 */
async function prepare(dir: string): Promise<string> {
  try {
    const st = await stat(dir)
    if (!st.isDirectory()) throw notADatabase(dir, 'it is a file, not a directory')
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err
    await mkdir(dir, { recursive: true })
  }
  return realpath(dir)
}

function pickEngine(choice: EngineChoice): EngineName {
  if (choice !== 'auto') return choice
  try {
    loadNative()
    return 'native'
  } catch (err) {
    if (!warnedFallback) {
      warnedFallback = true
      process.emitWarning(`kestreldb: ${(err as Error).message} Using the pure-TypeScript engine.`, { code: 'KESTREL_NATIVE_FALLBACK' })
    }
    return 'ts'
  }
}

/** Directories are shared between processes and threads where the named locks exist (Linux). */
export const SHARING = process.platform === 'linux'

function openEngine(dir: string, engine: EngineName, options: CoreOpenOptions): Promise<Core> {
  return engine === 'native' ? NativeCore.open(dir, options) : TsCore.open(dir, options)
}

async function start(dir: string, engine: EngineName, options: CoreOpenOptions, postgres: PostgresOptions | undefined): Promise<Core> {
  if (postgres) return PgCore.open(dir, postgres, () => startAlone(dir, engine, options))
  const mark = readReplicaMark(dir)
  if (mark) {
    throw new KestrelError(
      'KESTREL_INVALID_ARGUMENT',
      `${dir} is a replica of the database in PostgreSQL schema "${mark.schema}" (its ${REPLICA_FILE} file says so): open it with the postgres option naming that schema`,
    )
  }
  if (SHARING) return SharedCore.open(dir, engine, options, (o) => openEngine(dir, engine, o))
  return (await startAlone(dir, engine, options)).core
}

/** Open the engine as the directory's one owner (taking the directory lock), and how to let go of the lock after closing it. */
async function startAlone(dir: string, engine: EngineName, options: CoreOpenOptions): Promise<{ core: Core; unlock: () => Promise<void> }> {
  // The native engine takes the lock itself where it can, and holds it until its threads stop.
  const lockHere = engine === 'ts' || !NATIVE_TAKES_LOCK
  if (lockHere) await acquireLock(dir, engine)
  try {
    const core = engine === 'native' ? await NativeCore.open(dir, options) : await TsCore.open(dir, options)
    // Where directories are not shared, the handle lets go of the lock itself (acquire).
    return { core, unlock: async () => (lockHere && SHARING ? releaseLock(dir) : undefined) }
  } catch (err) {
    if (lockHere) await releaseLock(dir)
    throw err
  }
}

/** A handle's share of an engine. `release()` closes the engine with its last handle. */
export interface Lease {
  core: Core
  coordinator: Coordinator
  dir: string
  release(): Promise<void>
}

/** Open the engine of `path`, or share the one already running in this process. */
export async function acquire(path: string, choice: EngineChoice, options: CoreOpenOptions, retain: Retention, postgres?: PostgresOptions): Promise<Lease> {
  const dir = await prepare(resolve(path))
  let entry = open.get(dir)
  if (!entry) {
    const core = start(dir, pickEngine(choice), options, postgres)
    entry = { core, refs: 0 }
    open.set(dir, entry)
    core.catch(() => {
      if (open.get(dir) === entry) open.delete(dir)
    })
  }
  entry.refs++
  let core: Core
  try {
    core = await entry.core
  } catch (err) {
    entry.refs--
    throw err
  }
  if (core instanceof PgCore !== (postgres !== undefined)) {
    entry.refs--
    throw new KestrelError(
      'KESTREL_INVALID_ARGUMENT',
      core instanceof PgCore
        ? `${dir} is already open in this process as a PostgreSQL replica; open it with the same postgres option to share it`
        : `${dir} is already open in this process as a directory database; open it without the postgres option to share it`,
    )
  }
  if (choice !== 'auto' && core.engine !== choice) {
    entry.refs--
    throw new KestrelError(
      'KESTREL_INVALID_ARGUMENT',
      `${dir} is already open in this process with the ${core.engine} engine; open it with engine: '${core.engine}' or 'auto' to share it`,
    )
  }
  const held = entry
  // The first handle's retention window holds for the engine's life in this process.
  if (!held.coordinator) {
    const coordinator = new Coordinator(core, retain, options.cacheBytes)
    if (core instanceof SharedCore || core instanceof PgCore) core.onForeign = (first, payloads) => coordinator.noteForeign(first, payloads)
    held.coordinator = coordinator
  }
  let released = false
  return {
    core,
    coordinator: held.coordinator,
    dir,
    async release(): Promise<void> {
      if (released) return
      released = true
      if (--held.refs > 0) return
      if (open.get(dir) === held) open.delete(dir)
      held.coordinator?.scavenger.stop()
      try {
        await core.close()
      } finally {
        if (!SHARING) await releaseLock(dir)
      }
    },
  }
}

/** Test-only: forget an engine that was crashed on purpose, releasing its lock. */
export async function forget(dir: string, core: Core): Promise<void> {
  for (const [key, entry] of open) {
    if ((await entry.core.catch(() => undefined)) === core) open.delete(key)
  }
  await releaseLock(dir)
}
