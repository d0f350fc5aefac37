/** Small durable-filesystem helpers for the ts engine. */
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
