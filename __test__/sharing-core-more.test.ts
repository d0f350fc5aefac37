/**
 * The engine primitives of a shared directory (docs/FORMAT.md "Sharing"), at the Core level: two
 * engines opened on one directory in one process (shared mode takes no lock) catch up with each
 * other's log, adopt a dead writer's frames, adopt each other's checkpoints, and never cut what
 * lies past a published tail.
 */
import { closeSync, existsSync, openSync, readFileSync, readdirSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { NativeCore } from '../lib/core/native.js'
import { decodeValue, encodeValue } from '../lib/codec/value.js'
import {
  BATCH_END,
  IDENTITY_FILE,
  LOG_DIR,
  RECORD_COMMIT,
  identityBytes,
  segmentHeader,
  segmentName,
  writeFrame,
  FRAME_HEADER_BYTES,
} from '../lib/format/log.js'
import { PAGE_BYTES, PAGE_FILE } from '../lib/format/page_layout.js'
import { OP_PUT, encodeCommit } from '../lib/format/payload.js'
import { TsCore } from '../lib/core/ts/engine.js'
import type { Core, CoreOpenOptions, CoreSharing, EngineName } from '../lib/core/types.js'
import { ENGINES, expectCode, newDir, s2k } from './helpers.js'

const BASE: CoreOpenOptions = {
  durability: 'sync',
  segmentBytes: 64 << 20,
  groupBytesMax: 4 << 20,
  retainCommits: 0,
  cacheBytes: 2 ** 40,
  checkpointBytes: 2 ** 40,
  checkpointIntervalMs: 0,
  flushQueueBytes: 64 << 20,
  deferredBytesMax: 64 << 20,
}

/** Each core stands in for another process: native ones do not share the process's engine. */
async function openCore(engine: EngineName, dir: string, over: Partial<CoreOpenOptions> = {}): Promise<Core> {
  const options = { ...BASE, ...over, ...(over.sharing ? { sharing: { ...over.sharing, apart: true } } : {}) }
  return engine === 'native' ? NativeCore.open(dir, options) : TsCore.open(dir, options)
}

const payloadOf = (key: string, value: unknown): Uint8Array => encodeCommit([{ kind: OP_PUT, collection: 'c', key: s2k(key), value: encodeValue(value) }])

function read(core: Core, key: string): unknown {
  const v = core.get('c', s2k(key), Number(core.lastCommitId()))
  return v === undefined ? undefined : decodeValue(v)
}

const segPath = (dir: string, name: string): string => join(dir, LOG_DIR, name)

/** Write `frames` (lsn, value, batchEnd) into segment `name` at `offset`; returns the end offset. */
function writeFrames(dir: string, name: string, offset: number, frames: Array<[number, string, boolean]>): number {
  const payloads = frames.map(([lsn, v]) => payloadOf(`k${lsn}`, v))
  const buf = new Uint8Array(payloads.reduce((n, p) => n + FRAME_HEADER_BYTES + p.length, 0))
  let pos = 0
  frames.forEach(([lsn, , end], i) => {
    pos = writeFrame(buf, pos, lsn, RECORD_COMMIT | (end ? BATCH_END : 0), payloads[i]!)
  })
  const fd = openSync(segPath(dir, name), 'r+')
  try {
    writeSync(fd, buf, 0, buf.length, offset)
  } finally {
    closeSync(fd)
  }
  return offset + buf.length
}

const SHARED: CoreSharing = {}

describe.each(ENGINES)('sharing primitives, more (%s engine)', (engine) => {
  it('catchUp applies the other participant’s commits, both continue the one log, a sole reopen sees them in order', async () => {
    const dir = newDir()
    const a = await openCore(engine, dir, { sharing: SHARED })
    const b = await openCore(engine, dir, { sharing: { tail: a.logTail() } })
    expect(b.logTail()).toEqual(a.logTail())
    const written = [payloadOf('x', 1), payloadOf('y', 2), payloadOf('z', 3)]
    for (const p of written) await a.commit(p)
    expect(b.catchUp(b.logTail(), false)).toEqual([])
    const got = b.catchUp(a.logTail(), false)
    expect(got.map((p) => Buffer.from(p).toString('hex'))).toEqual(written.map((p) => Buffer.from(p).toString('hex')))
    expect(b.lastCommitId()).toBe(3n)
    expect(b.logTail()).toEqual(a.logTail())
    expect([read(b, 'x'), read(b, 'y'), read(b, 'z')]).toEqual([1, 2, 3])
    // Nothing more: a no-op.
    expect(b.catchUp(a.logTail(), false)).toEqual([])

    expect(await b.commit(payloadOf('x', 10))).toBe(4n)
    expect(a.catchUp(b.logTail(), false)).toHaveLength(1)
    expect(read(a, 'x')).toBe(10)
    expect(await a.commit(payloadOf('w', 5))).toBe(5n)
    expect(b.catchUp(a.logTail(), false)).toHaveLength(1)
    expect(read(b, 'w')).toBe(5)
    // A tail behind this engine's own log end is corruption.
    await expectCode(() => b.catchUp({ ...a.logTail(), lsn: 1 }, false), 'KESTREL_CORRUPT')
    await a.close()
    await b.close()

    const sole = await openCore(engine, dir)
    expect(sole.lastCommitId()).toBe(5n)
    expect([read(sole, 'x'), read(sole, 'y'), read(sole, 'z'), read(sole, 'w')]).toEqual([10, 2, 3, 5])
    await sole.close()
  })

  it('catchUp follows the log across segment rollovers', async () => {
    const dir = newDir()
    const a = await openCore(engine, dir, { sharing: SHARED, segmentBytes: 200 })
    const b = await openCore(engine, dir, { sharing: { tail: a.logTail() }, segmentBytes: 200 })
    const first = a.logTail().segment
    for (let i = 1; i <= 12; i++) await a.commit(payloadOf(`k${i}`, 'v'.repeat(40) + i))
    expect(a.logTail().segment).not.toBe(first)
    const got = b.catchUp(a.logTail(), false)
    expect(got).toHaveLength(12)
    expect(b.logTail()).toEqual(a.logTail())
    expect(read(b, 'k12')).toBe(`${'v'.repeat(40)}12`)
    for (let i = 13; i <= 20; i++) await b.commit(payloadOf(`k${i}`, 'w'.repeat(40) + i))
    expect(a.catchUp(b.logTail(), false)).toHaveLength(8)
    expect(read(a, 'k20')).toBe(`${'w'.repeat(40)}20`)
    await a.close()
    await b.close()
    const sole = await openCore(engine, dir)
    expect(sole.lastCommitId()).toBe(20n)
    for (let i = 1; i <= 20; i++) expect(read(sole, `k${i}`)).toBe((i <= 12 ? 'v' : 'w').repeat(40) + i)
    await sole.close()
  })

  it('catchUp refuses outside sharing and while own commits are in flight', async () => {
    const solo = await openCore(engine, newDir())
    await expectCode(() => solo.catchUp(solo.logTail(), false), 'KESTREL_INVALID_ARGUMENT')
    await solo.close()
    const a = await openCore(engine, newDir(), { sharing: SHARED })
    const pending = a.commit(payloadOf('x', 1))
    await expectCode(() => a.catchUp(a.logTail(), false), 'KESTREL_INVALID_ARGUMENT')
    await pending
    await a.close()
  })

  it('adopt takes a dead writer’s whole batches past the tail and cuts the torn rest', async () => {
    const dir = newDir()
    const a = await openCore(engine, dir, { sharing: SHARED })
    const b = await openCore(engine, dir, { sharing: { tail: a.logTail() } })
    await a.commit(payloadOf('k1', 'one'))
    const tail = a.logTail()
    await a.close() // "dies": nothing is sealed or cut
    // Past the tail: a whole batch (2), a whole batch of two frames (3, 4), then a batch torn
    // inside its second frame (5 whole without BATCH_END, 6 torn).
    const end4 = writeFrames(dir, tail.segment, tail.offset, [
      [2, 'two', true],
      [3, 'three', false],
      [4, 'four', true],
    ])
    const end6 = writeFrames(dir, tail.segment, end4, [
      [5, 'five', false],
      [6, 'six', true],
    ])
    truncateSync(segPath(dir, tail.segment), end6 - 3)
    // Without adopt only the published records come.
    expect(b.catchUp(tail, false)).toHaveLength(1)
    const got = b.catchUp(tail, true)
    expect(got).toHaveLength(3)
    expect(b.lastCommitId()).toBe(4n)
    expect(b.logTail()).toEqual({ lsn: 4, segment: tail.segment, offset: end4 })
    expect(statSync(segPath(dir, tail.segment)).size).toBe(end4)
    expect([read(b, 'k1'), read(b, 'k2'), read(b, 'k3'), read(b, 'k4'), read(b, 'k5')]).toEqual(['one', 'two', 'three', 'four', undefined])
    expect(await b.commit(payloadOf('k5', 'FIVE'))).toBe(5n)
    await b.close()
    const sole = await openCore(engine, dir)
    expect(sole.lastCommitId()).toBe(5n)
    expect(read(sole, 'k5')).toBe('FIVE')
    await sole.close()
  })

  it('adopt continues into the segment a dead writer rolled over to', async () => {
    const dir = newDir()
    const a = await openCore(engine, dir, { sharing: SHARED })
    const b = await openCore(engine, dir, { sharing: { tail: a.logTail() } })
    await a.commit(payloadOf('k1', 'one'))
    const tail = a.logTail()
    await a.close()
    // The dead writer sealed its segment at the tail and wrote batch 2 into a new one.
    truncateSync(segPath(dir, tail.segment), tail.offset)
    const next = segmentName(2)
    writeFileSync(segPath(dir, next), segmentHeader(2))
    const end = writeFrames(dir, next, 32, [[2, 'two', true]])
    // Nothing past the tail in the published segment, and no other file looked at: empty.
    expect(b.catchUp(tail, false)).toHaveLength(1)
    expect(b.catchUp(tail, true)).toHaveLength(1)
    expect(b.logTail()).toEqual({ lsn: 2, segment: next, offset: end })
    expect(read(b, 'k2')).toBe('two')
    expect(await b.commit(payloadOf('k3', 'three'))).toBe(3n)
    await b.close()
    const sole = await openCore(engine, dir)
    expect(sole.lastCommitId()).toBe(3n)
    await sole.close()
  })

  it('adopt with nothing past the tail is a no-op', async () => {
    const dir = newDir()
    const a = await openCore(engine, dir, { sharing: SHARED })
    await a.commit(payloadOf('k1', 'one'))
    const before = a.logTail()
    expect(a.catchUp(before, true)).toEqual([])
    expect(a.logTail()).toEqual(before)
    expect(await a.commit(payloadOf('k2', 'two'))).toBe(2n)
    await a.close()
  })

  it('open with a tail reads up to it and cuts nothing past it', async () => {
    const dir = newDir()
    const a = await openCore(engine, dir, { sharing: SHARED })
    await a.commit(payloadOf('k1', 'one'))
    await a.commit(payloadOf('k2', 'two'))
    const tail = a.logTail()
    await a.commit(payloadOf('k3', 'three'))
    // A torn frame after the last one (as if a writer were half way through a batch).
    const end = a.logTail().offset
    await a.close()
    writeFrames(dir, tail.segment, end, [[4, 'four', true]])
    const path = segPath(dir, tail.segment)
    const size = statSync(path).size
    const before = readFileSync(path)
    const b = await openCore(engine, dir, { sharing: { tail } })
    expect(b.lastCommitId()).toBe(2n)
    expect(read(b, 'k3')).toBeUndefined()
    expect(statSync(path).size).toBe(size)
    expect(Buffer.compare(readFileSync(path), before)).toBe(0)
    // And catches up with the rest (without adopting the unpublished frame 4).
    expect(b.catchUp({ lsn: 3, segment: tail.segment, offset: end }, false)).toHaveLength(1)
    expect(read(b, 'k3')).toBe('three')
    await b.close()
    expect(Buffer.compare(readFileSync(path), before)).toBe(0)
  })

  it('no automatic checkpoint in shared mode; close writes none and seals nothing', async () => {
    const dir = newDir()
    const a = await openCore(engine, dir, { sharing: SHARED, checkpointBytes: 1, checkpointIntervalMs: 10 })
    for (let i = 0; i < 5; i++) await a.commit(payloadOf(`k${i}`, i))
    await new Promise((r) => setTimeout(r, 300))
    expect(a.stats().flow.checkpoints).toBe(0)
    const seg = a.logTail().segment
    const size = statSync(segPath(dir, seg)).size
    await a.close()
    expect(existsSync(join(dir, PAGE_FILE))).toBe(false)
    expect(statSync(segPath(dir, seg)).size).toBe(size)
  })

  it('checkpoints: adopt the other’s, build on it without reusing free pages, BEHIND when not caught up', async () => {
    const dir = newDir()
    const a = await openCore(engine, dir, { sharing: SHARED })
    const b = await openCore(engine, dir, { sharing: { tail: a.logTail() } })
    expect(a.checkpointRef()).toEqual({ seq: 0, lsn: 0 })
    expect(b.adoptCheckpoint()).toBe(false) // no pages.kdb yet
    for (let i = 1; i <= 40; i++) await a.commit(payloadOf(`k${i}`, `a${i}`))
    await a.checkpoint()
    expect(a.checkpointRef()).toEqual({ seq: 1, lsn: 40 })
    // B has not applied 1..40: it cannot adopt nor build on that checkpoint.
    expect(b.adoptCheckpoint()).toBe(false)
    await expectCode(() => b.checkpoint(), 'KESTREL_BEHIND')
    b.catchUp(a.logTail(), false)
    // The native engine's gopher takes caught-up batches into the dirty set on its own thread.
    for (let i = 0; i < 200 && b.stats().flow.dirtyKeys < 40; i++) await new Promise((r) => setTimeout(r, 5))
    expect(b.stats().flow.dirtyKeys).toBe(40)
    expect(b.adoptCheckpoint()).toBe(true)
    expect(b.checkpointRef()).toEqual(a.checkpointRef())
    expect(b.stats().flow.dirtyKeys).toBe(0)
    expect(b.adoptCheckpoint()).toBe(false)

    // B overwrites half the keys and checkpoints on top without reusing free pages.
    for (let i = 1; i <= 20; i++) await b.commit(payloadOf(`k${i}`, `b${i}`))
    const pagesBefore = readFileSync(join(dir, PAGE_FILE))
    const countBefore = b.stats().pageCount
    await b.checkpoint({ reuseFreePages: false })
    expect(b.checkpointRef()).toEqual({ seq: 2, lsn: 60 })
    const pagesAfter = readFileSync(join(dir, PAGE_FILE))
    expect(b.stats().pageCount).toBeGreaterThan(countBefore)
    // Every page of the older checkpoint is untouched (only the other meta slot is written).
    expect(Buffer.compare(pagesAfter.subarray(2 * PAGE_BYTES, countBefore * PAGE_BYTES), pagesBefore.subarray(2 * PAGE_BYTES, countBefore * PAGE_BYTES))).toBe(
      0,
    )
    // Checkpoint 1's meta (slot 1) too: seq 2 goes to slot 0.
    expect(Buffer.compare(pagesAfter.subarray(PAGE_BYTES, 2 * PAGE_BYTES), pagesBefore.subarray(PAGE_BYTES, 2 * PAGE_BYTES))).toBe(0)

    // A catches up, adopts B's checkpoint, retires everything and reads it from the pages.
    a.catchUp(b.logTail(), false)
    expect(a.adoptCheckpoint()).toBe(true)
    expect(a.checkpointRef()).toEqual({ seq: 2, lsn: 60 })
    expect(a.stats().flow.dirtyKeys).toBe(0)
    a.setHorizon(Number(a.lastCommitId()), true)
    a.scavenge({ retireAgeMax: 1 << 30, targetBytes: 0, visitMax: 1_000_000 })
    expect(a.stats().recordBytes).toBe(0)
    for (let i = 1; i <= 40; i++) expect(read(a, `k${i}`)).toBe(i <= 20 ? `b${i}` : `a${i}`)
    // Nothing new: checkpoint resolves without writing.
    await a.checkpoint()
    expect(a.checkpointRef()).toEqual({ seq: 2, lsn: 60 })
    // A writes and checkpoints on top (reusing free pages now).
    await a.commit(payloadOf('k1', 'a-again'))
    await a.checkpoint()
    expect(a.checkpointRef()).toEqual({ seq: 3, lsn: 61 })
    b.catchUp(a.logTail(), false)
    b.setHorizon(Number(b.lastCommitId()), true)
    b.scavenge({ retireAgeMax: 1 << 30, targetBytes: 0, visitMax: 1_000_000 })
    expect(b.adoptCheckpoint()).toBe(true)
    for (let i = 1; i <= 40; i++) expect(read(b, `k${i}`)).toBe(i === 1 ? 'a-again' : i <= 20 ? `b${i}` : `a${i}`)
    await a.close()
    await b.close()
    const sole = await openCore(engine, dir)
    expect(sole.stats().checkpointLsn).toBe(61)
    for (let i = 1; i <= 40; i++) expect(read(sole, `k${i}`)).toBe(i === 1 ? 'a-again' : i <= 20 ? `b${i}` : `a${i}`)
    await sole.close()
  })

  it('records caught up while the flusher is suspended queue behind the deferred batches, in LSN order', async () => {
    const dir = newDir()
    const a = await openCore(engine, dir, { sharing: SHARED })
    const b = await openCore(engine, dir, { sharing: { tail: a.logTail() } })
    await b.suspendFlusher()
    await b.commit(payloadOf('k', 'b1'))
    a.catchUp(b.logTail(), false)
    await a.commit(payloadOf('k', 'a2'))
    expect(b.catchUp(a.logTail(), false)).toHaveLength(1)
    // The gopher moves queued batches to deferred on its own thread (native): wait, bounded.
    for (let i = 0; i < 200 && b.stats().flow.queuedBatches > 0; i++) await new Promise((r) => setTimeout(r, 5))
    expect(b.stats().flow.queuedBatches).toBe(0)
    expect(b.stats().flow.deferredBatches).toBe(2)
    b.resumeFlusher()
    await b.checkpoint()
    expect(b.checkpointRef()).toEqual({ seq: 1, lsn: 2 })
    b.setHorizon(2, true)
    b.scavenge({ retireAgeMax: 1 << 30, targetBytes: 0, visitMax: 1_000_000 })
    expect(b.stats().recordBytes).toBe(0)
    expect(read(b, 'k')).toBe('a2')
    await a.close()
    await b.close()
  })

  it('checkpoint trimBelowLsn keeps segments holding records at or above it', async () => {
    const dir = newDir()
    const a = await openCore(engine, dir, { sharing: SHARED, segmentBytes: 200 })
    for (let i = 1; i <= 12; i++) await a.commit(payloadOf(`k${i}`, 'v'.repeat(40) + i))
    const segments = (): string[] => readdirNames(join(dir, LOG_DIR))
    const all = segments()
    expect(all.length).toBeGreaterThan(3)
    await a.checkpoint({ trimBelowLsn: 5 })
    const kept = segments()
    // Every segment still holding a record ≥ 5 is there; the active one always.
    const firsts = all.map((n) => Number(n.slice(0, 20)))
    for (let i = 0; i < all.length; i++) {
      const lastInIt = i + 1 < all.length ? firsts[i + 1]! - 1 : Number.POSITIVE_INFINITY
      expect(kept.includes(all[i]!)).toBe(lastInIt >= 5)
    }
    await a.close()
  })

  it('identity: version 1 is rewritten to 2, version 3 is refused', async () => {
    const dir = newDir()
    const a = await openCore(engine, dir)
    await a.commit(payloadOf('k', 1))
    await a.close()
    expect(readFileSync(join(dir, IDENTITY_FILE)).readUInt32LE(8)).toBe(2)
    writeFileSync(join(dir, IDENTITY_FILE), identityBytes(1))
    const b = await openCore(engine, dir, { sharing: SHARED })
    expect(Buffer.compare(readFileSync(join(dir, IDENTITY_FILE)), Buffer.from(identityBytes(2)))).toBe(0)
    expect(read(b, 'k')).toBe(1)
    await b.close()
    writeFileSync(join(dir, IDENTITY_FILE), identityBytes(3))
    await expectCode(() => openCore(engine, dir), 'KESTREL_FORMAT_VERSION')
  })
})

/** Segment files, in LSN order (their names sort so). */
function readdirNames(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => n.endsWith('.klog'))
    .sort()
}
