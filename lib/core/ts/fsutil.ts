/** Small durable-filesystem helpers for the ts engine. */
import { closeSync, fsyncSync, openSync } from 'node:fs'
import { open as fsOpen } from 'node:fs/promises'

/** fsync a directory so that entries created or removed in it are durable. */
export async function syncDir(path: string): Promise<void> {
  const fh = await fsOpen(path, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** `syncDir`, synchronously (catchUp is). */
export function syncDirSync(path: string): void {
  const fd = openSync(path, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}
