/**
 * One process at a time owns a database directory: `<dir>/LOCK` holds the owner's pid. A lock
 * whose process is gone (killed, crashed) is taken over. Within one process, `open` shares the
 * engine instead (see registry.ts), so the lock is taken once per process.
 */
import { open as fsOpen, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { KestrelError } from './errors.js'

export const LOCK_FILE = 'LOCK'

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM'
  }
}

/** Take the directory lock or throw `KESTREL_LOCKED`. */
export async function acquireLock(dir: string): Promise<void> {
  const path = join(dir, LOCK_FILE)
  // Bounded: at most one stale lock is removed, then the exclusive create decides.
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await fsOpen(path, 'wx')
      try {
        await fh.writeFile(String(process.pid))
      } finally {
        await fh.close()
      }
      return
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err
    }
    const owner = Number((await readFile(path, 'utf8').catch(() => '')).trim())
    if (Number.isSafeInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
      throw new KestrelError('KESTREL_LOCKED', `${dir} is open in another process (pid ${owner}); close it there first (one process per database directory in this version)`)
    }
    await unlink(path).catch(() => {})
  }
  throw new KestrelError('KESTREL_LOCKED', `${dir}: could not take the directory lock; another process is opening it right now`)
}

/** Release the lock taken by {@link acquireLock}. */
export async function releaseLock(dir: string): Promise<void> {
  await unlink(join(dir, LOCK_FILE)).catch(() => {})
}
