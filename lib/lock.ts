/**
 * The directory lock: one engine writes a database directory at a time, whichever process,
 * thread (Worker), realm or copy of this package it runs in. Twin of
 * `crates/kestrel-core/src/lock.rs`; both take the same lock, so native and ts engines exclude
 * each other too.
 *
 * Linux: an abstract Unix socket bound to `kestreldb/<device>/<inode>` of the directory (hex).
 * Binding a name is exclusive within a network namespace across processes and threads, and the
 * kernel frees it when the socket closes or its process dies: no stale lock, no pid check. The
 * native engine binds it itself (held until its threads stop); the ts engine binds it here.
 *
 * Other platforms (not tested in CI): a `LOCK` file created atomically — a finished temporary
 * file linked to the name — holding the owner's pid; a lock whose process is gone is broken.
 * A pid equal to ours is another thread or copy of the package, never "mine". Both engines
 * take this lock here.
 *
 * Either way `LOCK` holds `pid=<pid> engine=<name> nonce=<hex>`, which names the owner in the
 * `KESTREL_LOCKED` error a later opener gets.
 */
import { randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:net'
import { link, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { KestrelError } from './errors.js'

export const LOCK_FILE = 'LOCK'

/** Does the native engine take the lock itself (Linux), or must it be taken here first? */
export const NATIVE_TAKES_LOCK = process.platform === 'linux'

/** Locks this realm holds, by directory. */
const held = new Map<string, { server?: Server; nonce: string }>()

/** Is `name` a file the lock owns (`LOCK`, or one of the temporary files it is written from)? */
export function isLockFile(name: string): boolean {
  return name === LOCK_FILE || (name.startsWith(`${LOCK_FILE}.`) && name.endsWith('.tmp'))
}

/** The abstract socket name of `dir` (the same bytes as `lock_name` in lock.rs). */
export async function lockName(dir: string): Promise<string> {
  const st = await stat(dir, { bigint: true })
  return `kestreldb/${st.dev.toString(16)}/${st.ino.toString(16)}`
}

function field(text: string, name: string): string | undefined {
  for (const f of text.split(/\s+/)) if (f.startsWith(`${name}=`)) return f.slice(name.length + 1)
  return undefined
}

/** Most reads of `LOCK` while its new owner may still be writing it, and the pause between. */
const OWNER_READS_MAX = 20
const OWNER_READ_PAUSE_MS = 5

/**
 * Who `LOCK` names as the owner, in words (the same words as lock.rs). The owner writes it just
 * after taking the lock: a line that is missing or names a process that is gone is read again
 * for a moment before it is reported as unknown.
 */
async function describeOwner(dir: string): Promise<string> {
  let text = ''
  for (let read = 0; read < OWNER_READS_MAX; read++) {
    if (read > 0) await new Promise((r) => setTimeout(r, OWNER_READ_PAUSE_MS))
    text = await readFile(join(dir, LOCK_FILE), 'utf8').catch(() => '')
    const pid = Number(field(text, 'pid'))
    if (Number.isSafeInteger(pid) && pid > 0 && alive(pid)) break
  }
  const engine = field(text, 'engine')
  const suffix = engine ? ` (engine ${engine})` : ''
  const pid = Number(field(text, 'pid'))
  if (!Number.isSafeInteger(pid) || pid <= 0) return 'another process or thread'
  if (pid === process.pid) return `another thread or copy of kestreldb in this process${suffix}`
  return `process ${pid}${suffix}`
}

async function locked(dir: string): Promise<KestrelError> {
  return new KestrelError(
    'KESTREL_LOCKED',
    `${dir} is open in ${await describeOwner(dir)}; close it there first (one engine per database directory: share one open database between the threads of a process, or open it from one process only)`,
  )
}

function ownerLine(engine: string, nonce: string): string {
  return `pid=${process.pid} engine=${engine} nonce=${nonce}\n`
}

/**
 * Take the lock of `dir` (an existing directory) for an engine of kind `engine`, or throw
 * `KESTREL_LOCKED` naming the owner. Released by {@link releaseLock}.
 */
export async function acquireLock(dir: string, engine: 'native' | 'ts' | 'tool' = 'ts'): Promise<void> {
  if (held.has(dir)) throw await locked(dir)
  const nonce = randomBytes(8).toString('hex')
  // Claimed before the first await, so that two opens in this realm cannot both pass the check.
  const entry: { server?: Server; nonce: string } = { nonce }
  held.set(dir, entry)
  try {
    if (process.platform === 'linux') {
      entry.server = await bindSocket(dir)
      const tmp = join(dir, `${LOCK_FILE}.${nonce}.tmp`)
      await writeFile(tmp, ownerLine(engine, nonce))
      await rename(tmp, join(dir, LOCK_FILE))
    } else {
      await createLockFile(dir, engine, nonce)
    }
  } catch (err) {
    held.delete(dir)
    entry.server?.close()
    throw err
  }
}

async function bindSocket(dir: string): Promise<Server> {
  const name = await lockName(dir)
  const server = createServer()
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      // `exclusive`: a cluster worker binds the name itself instead of sharing the primary's.
      server.listen({ path: `\0${name}`, exclusive: true }, () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (err) {
    if ((err as { code?: string }).code === 'EADDRINUSE') throw await locked(dir)
    throw new KestrelError(
      'KESTREL_IO',
      `${dir}: taking the directory lock failed (${(err as Error).message}); check that the process may create Unix sockets`,
      { cause: err },
    )
  }
  // The lock must never keep the process alive.
  server.unref()
  return server
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM'
  }
}

/**
 * The fallback: `LOCK` appears whole (link of a finished file) or not at all.
 * @internal exported for its tests, which run it where the socket is used instead.
 */
export async function createLockFile(dir: string, engine: string, nonce: string): Promise<void> {
  const path = join(dir, LOCK_FILE)
  const tmp = join(dir, `${LOCK_FILE}.${nonce}.tmp`)
  await writeFile(tmp, ownerLine(engine, nonce))
  try {
    // Bounded: at most one stale lock is removed, then the exclusive link decides.
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await link(tmp, path)
        return
      } catch (err) {
        if ((err as { code?: string }).code !== 'EEXIST') throw err
      }
      const text = await readFile(path, 'utf8').catch(() => '')
      const pid = Number(field(text, 'pid'))
      if (Number.isSafeInteger(pid) && pid > 0 && (pid === process.pid || alive(pid))) throw await locked(dir)
      // Stale (its process is gone): remove it only if it still says what was just read.
      if ((await readFile(path, 'utf8').catch(() => '')) === text) await unlink(path).catch(() => {})
    }
    throw await locked(dir)
  } finally {
    await unlink(tmp).catch(() => {})
  }
}

/** Release the lock {@link acquireLock} took on `dir` in this realm (nothing if none). */
export async function releaseLock(dir: string): Promise<void> {
  const entry = held.get(dir)
  if (!entry) return
  held.delete(dir)
  // `LOCK` goes first, and only while it is ours: once the lock is free a new owner may
  // already have written its own line.
  const path = join(dir, LOCK_FILE)
  const text = await readFile(path, 'utf8').catch(() => '')
  if (field(text, 'nonce') === entry.nonce) await unlink(path).catch(() => {})
  if (entry.server) await new Promise<void>((resolve) => entry.server!.close(() => resolve()))
}
