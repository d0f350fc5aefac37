// Sizes of what a store left on disk, and the values the write workloads store.
import { randomBytes } from 'node:crypto'
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs'
import { join } from 'node:path'

/**
 * Sum of the file sizes under `path` (a file or a directory, recursively): `bytes` is the
 * apparent size (what `ls -l` shows), `allocatedBytes` what the file system holds (st_blocks).
 */
export function diskUsage(path) {
  const st = statSync(path, { throwIfNoEntry: false })
  if (!st) return { bytes: 0, allocatedBytes: 0, files: 0 }
  if (!st.isDirectory()) return { bytes: st.size, allocatedBytes: st.blocks * 512, files: 1 }
  const total = { bytes: 0, allocatedBytes: 0, files: 0 }
  for (const name of readdirSync(path)) {
    const u = diskUsage(join(path, name))
    total.bytes += u.bytes
    total.allocatedBytes += u.allocatedBytes
    total.files += u.files
  }
  return total
}

/**
 * Bytes of `file` up to its last non-zero byte: a log segment without the zeros preallocated
 * ahead of its writer (kestreldb keeps at least 4 MiB of them).
 */
export function usedBytes(file) {
  const size = statSync(file).size
  const fd = openSync(file, 'r')
  try {
    const buf = Buffer.allocUnsafe(1 << 20)
    let end = size
    // Bounded by the file's size: each pass moves `end` back by one chunk or returns.
    while (end > 0) {
      const start = Math.max(0, end - buf.length)
      const n = readSync(fd, buf, 0, end - start, start)
      for (let i = n - 1; i >= 0; i--) if (buf[i] !== 0) return start + i + 1
      end = start
    }
    return 0
  } finally {
    closeSync(fd)
  }
}

/** usedBytes() summed over the files of a directory (a kestreldb `log/`). */
export function usedBytesIn(dir) {
  let total = 0
  for (const name of readdirSync(dir, { withFileTypes: true })) if (name.isFile()) total += usedBytes(join(dir, name.name))
  return total
}

/**
 * Values of `size` bytes that differ from record to record and do not compress (LevelDB
 * compresses its blocks with Snappy): windows into one random pool, `value(i)` for record i.
 * The windows are views, so making one costs nothing next to the store's own copy.
 */
export function valueSource(size, poolBytes = 8 << 20) {
  const pool = randomBytes(poolBytes)
  // A stride larger than the value: consecutive records never share bytes.
  const stride = 4099 + size
  const span = poolBytes - size
  return (i) => {
    const at = (i * stride) % span
    return pool.subarray(at, at + size)
  }
}

export const MB = 1e6
