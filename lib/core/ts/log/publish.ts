/**
 * Sharing: the writer publishes each durable batch's tail in the `SHARED` log block itself,
 * right after the batch's fdatasync, so that neither the other participants nor the lock
 * hand-over wait for the participant to hear of the batch first. Batches are written only while
 * the participant holds the directory's write lock (it queues them only then), so the writer
 * writes the block only under that lock, as the protocol requires.
 *
 * A failed write of the block loses nothing: the batch is durable in the log, and the next
 * holder of the write lock adopts whole frames past the published tail (docs/FORMAT.md).
 */
import { closeSync, constants, openSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { parseSegmentName } from '../../../format/log.js'
import { LOG_BLOCK_AT, SHARED_FILE, logBlock } from '../../../format/shared.js'

/**
 * Test-only (multi-process crash tests): `KESTREL_TEST_KILL_AT=synced:<n>` SIGKILLs the
 * process at its n-th publish, after the batch is durable and before its tail is published.
 */
const KILL_AT_ENV = 'KESTREL_TEST_KILL_AT'

export class Publisher {
  private readonly path: string
  /** Opened at the first publish (the participant creates the file before it commits). */
  private fd: number | undefined
  /** Publishes so far, for the kill point. */
  private count = 0
  private readonly killAt: number | undefined

  constructor(dir: string) {
    this.path = join(dir, SHARED_FILE)
    const m = process.env[KILL_AT_ENV]?.match(/^synced:(\d+)$/)
    this.killAt = m ? Number(m[1]) : undefined
  }

  /** Publish the tail (`lsn`, segment `segment`, `offset`); best effort (see the module). */
  publish(lsn: number, segment: string, offset: number): void {
    this.count++
    if (this.killAt === this.count) process.kill(process.pid, 'SIGKILL')
    const first = parseSegmentName(segment)
    if (first === undefined) throw new Error(`unreachable: the active segment has a segment name: ${segment}`)
    try {
      this.fd ??= openSync(this.path, constants.O_RDWR)
      const block = logBlock(lsn, first, offset, false)
      writeSync(this.fd, block, 0, block.length, LOG_BLOCK_AT)
    } catch {
      // Opened again next time (the next holder adopts this batch meanwhile).
      this.close()
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
  }
}
