/**
 * The `SHARED` file beside the log (docs/FORMAT.md "Sharing"): what participants of one
 * directory publish to each other. Transient — never fsync'd; an opener that finds no live
 * participant rewrites it after full recovery.
 *
 * Layout (little-endian):
 * - bytes 0..128: the log block (`lib/format/shared.ts`; written only under the `write` lock, by
 *   the participant or its engine's log writer), twice;
 * - bytes 128..256: the checkpoint block (written only by the holder of the `ckpt` lock), twice;
 * - bytes 4096..: SLOTS_MAX slots of 64 bytes, each written only by the participant that holds
 *   its slot lock.
 * Every 64-byte copy ends with the CRC32C of its first 60 bytes; a reader takes the first copy
 * whose CRC holds (a writer that dies between the copies leaves one whole).
 */
import { closeSync, constants, fstatSync, openSync, readSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { crc32c } from '../format/crc32c.js'
import { BLOCK_COPY_BYTES, LOG_ABANDONED, LOG_BLOCK_AT, SHARED_FILE, SHARED_MAGIC, SHARED_VERSION, logBlock, sealedBlock } from '../format/shared.js'
import { parseSegmentName, segmentName } from '../format/log.js'
import type { LogTail } from '../core/types.js'
import { KestrelError } from '../errors.js'
import { mapFileHead } from '../core/native.js'

export { SHARED_FILE }
const COPY_BYTES = BLOCK_COPY_BYTES
const CKPT_BLOCK_AT = 128
/** The log and checkpoint blocks: the part of the file that is mapped. */
const MAPPED_BYTES = CKPT_BLOCK_AT + 2 * BLOCK_COPY_BYTES
const SLOTS_AT = 4096
/** Participants one directory can have at once (processes and Workers each take one). */
export const SLOTS_MAX = 128
const SLOT_BYTES = 64
export const SHARED_BYTES = SLOTS_AT + SLOTS_MAX * SLOT_BYTES

/** The log block: the published (durable) tail every participant may catch up to. */
export interface LogBlock {
  tail: LogTail
  /** The bytes past `tail` belong to a batch whose write or sync failed: never adopt them. */
  abandoned: boolean
}

/** The checkpoint block: the newest published checkpoint. */
export interface CkptBlock {
  seq: number
  lsn: number
}

/** One participant's slot (nonce 0: free). */
export interface Slot {
  nonce: bigint
  pid: number
  /** 1 native, 2 ts. */
  engine: number
  /** Inode of the participant's network namespace (`/proc/self/ns/net`). */
  netns: number
  /** The checkpoint it reads retired records from: pages that one reaches are not reused. */
  pinnedSeq: number
  /** The last LSN it applied. */
  appliedLsn: number
  /** Log below this LSN may be trimmed as far as it is concerned. */
  needLsn: number
  /** When it last wrote its slot (ms since the epoch). */
  heartbeatMs: number
}

function sealed(buf: Buffer, at: number): void {
  buf.writeUInt32LE(crc32c(buf, 0, at, at + 60), at + 60)
}

function whole(buf: Buffer, at: number): boolean {
  return buf.readUInt32LE(at + 60) === crc32c(buf, 0, at, at + 60)
}

export class SharedFile {
  private readonly fd: number
  private readonly path: string
  private readonly buf = Buffer.alloc(2 * COPY_BYTES)
  private readonly slotBuf = Buffer.alloc(SLOTS_MAX * SLOT_BYTES)
  /**
   * The log and checkpoint blocks mapped (no system call per read: the log block is read on
   * every `lastCommitId`), once the file is whole; until then, or without the native binding,
   * they are read with `pread`.
   */
  private mapped: Buffer | undefined

  constructor(dir: string) {
    this.path = join(dir, SHARED_FILE)
    this.fd = openSync(this.path, constants.O_RDWR | constants.O_CREAT, 0o644)
    this.map()
  }

  private map(): void {
    if (!this.mapped && fstatSync(this.fd).size >= SHARED_BYTES) this.mapped = mapFileHead(this.path, MAPPED_BYTES)
  }

  close(): void {
    // The mapping goes with the Buffer, when it is collected.
    this.mapped = undefined
    closeSync(this.fd)
  }

  private readBlock(at: number): Buffer | undefined {
    let n: number
    if (this.mapped) {
      this.buf.set(this.mapped.subarray(at, at + 2 * COPY_BYTES))
      n = 2 * COPY_BYTES
    } else n = readSync(this.fd, this.buf, 0, 2 * COPY_BYTES, at)
    for (const copy of [0, COPY_BYTES]) {
      if (n < copy + COPY_BYTES) break
      if (this.buf.readUInt32LE(copy) === SHARED_MAGIC && this.buf.readUInt32LE(copy + 4) === SHARED_VERSION && whole(this.buf, copy)) {
        return this.buf.subarray(copy, copy + COPY_BYTES)
      }
    }
    return undefined
  }

  /**
   * The LSN of the published tail as the first copy of the log block holds it right now, unchecked
   * (Infinity when the block is not mapped: then only `readLog` can tell). A copy read while its
   * writer rewrites it may show any LSN, but that tail is not acknowledged to anyone yet: if the
   * glance shows no newer LSN than the reader's, there is nothing it must see; if it shows one,
   * `readLog` reads the checked block.
   */
  glanceLogLsn(): number {
    return this.mapped ? Number(this.mapped.readBigUInt64LE(LOG_BLOCK_AT + 8)) : Number.POSITIVE_INFINITY
  }

  /** The published log tail, or undefined when the file holds none (not initialised). */
  readLog(): LogBlock | undefined {
    const b = this.readBlock(LOG_BLOCK_AT)
    if (!b) return undefined
    return {
      tail: { lsn: Number(b.readBigUInt64LE(8)), segment: segmentName(Number(b.readBigUInt64LE(16))), offset: Number(b.readBigUInt64LE(24)) },
      abandoned: (b.readUInt32LE(32) & LOG_ABANDONED) !== 0,
    }
  }

  writeLog(block: LogBlock): void {
    const first = parseSegmentName(block.tail.segment)
    if (first === undefined) throw new KestrelError('KESTREL_CORRUPT', `not a log segment name: ${block.tail.segment}`)
    const b = logBlock(block.tail.lsn, first, block.tail.offset, block.abandoned)
    writeSync(this.fd, b, 0, b.length, LOG_BLOCK_AT)
  }

  readCkpt(): CkptBlock | undefined {
    const b = this.readBlock(CKPT_BLOCK_AT)
    if (!b) return undefined
    return { seq: Number(b.readBigUInt64LE(8)), lsn: Number(b.readBigUInt64LE(16)) }
  }

  writeCkpt(block: CkptBlock): void {
    const b = sealedBlock((v) => {
      v.setBigUint64(8, BigInt(block.seq), true)
      v.setBigUint64(16, BigInt(block.lsn), true)
    })
    writeSync(this.fd, b, 0, b.length, CKPT_BLOCK_AT)
  }

  /**
   * Every slot as last written (undefined: free, or torn while its owner rewrote it — read
   * again). A slot torn twice in a row is reported as free only to callers that check the
   * slot's lock before trusting that.
   */
  readSlots(): Array<Slot | undefined> {
    const n = readSync(this.fd, this.slotBuf, 0, this.slotBuf.length, SLOTS_AT)
    const out: Array<Slot | undefined> = []
    for (let i = 0; i < SLOTS_MAX; i++) {
      const at = i * SLOT_BYTES
      if (at + SLOT_BYTES > n) {
        out.push(undefined)
        continue
      }
      // A slot caught while its owner rewrote it is read once more on its own.
      const torn = this.slotBuf.readBigUInt64LE(at) !== 0n && !whole(this.slotBuf, at)
      out.push(torn ? this.readSlotAgain(i) : this.decodeSlot(this.slotBuf, at))
    }
    return out
  }

  private readSlotAgain(i: number): Slot | undefined {
    const b = Buffer.alloc(SLOT_BYTES)
    readSync(this.fd, b, 0, SLOT_BYTES, SLOTS_AT + i * SLOT_BYTES)
    return this.decodeSlot(b, 0)
  }

  private decodeSlot(b: Buffer, at: number): Slot | undefined {
    const nonce = b.readBigUInt64LE(at)
    if (nonce === 0n || !whole(b, at)) return undefined
    return {
      nonce,
      pid: b.readUInt32LE(at + 8),
      engine: b.readUInt8(at + 12),
      netns: Number(b.readBigUInt64LE(at + 16)),
      pinnedSeq: Number(b.readBigUInt64LE(at + 24)),
      appliedLsn: Number(b.readBigUInt64LE(at + 32)),
      needLsn: Number(b.readBigUInt64LE(at + 40)),
      heartbeatMs: Number(b.readBigUInt64LE(at + 48)),
    }
  }

  /** Write slot `i` (only its owner does), or free it with `undefined`. */
  writeSlot(i: number, slot: Slot | undefined): void {
    const b = Buffer.alloc(SLOT_BYTES)
    if (slot) {
      b.writeBigUInt64LE(slot.nonce, 0)
      b.writeUInt32LE(slot.pid, 8)
      b.writeUInt8(slot.engine, 12)
      b.writeBigUInt64LE(BigInt(slot.netns), 16)
      b.writeBigUInt64LE(BigInt(slot.pinnedSeq), 24)
      b.writeBigUInt64LE(BigInt(slot.appliedLsn), 32)
      b.writeBigUInt64LE(BigInt(slot.needLsn), 40)
      b.writeBigUInt64LE(BigInt(slot.heartbeatMs), 48)
      sealed(b, 0)
    }
    writeSync(this.fd, b, 0, SLOT_BYTES, SLOTS_AT + i * SLOT_BYTES)
  }

  /** Zero the whole file's blocks (an opener that found no live participant, before recovery). */
  reset(): void {
    writeSync(this.fd, Buffer.alloc(SHARED_BYTES), 0, SHARED_BYTES, 0)
    this.map()
  }
}
