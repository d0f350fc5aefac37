/**
 * The engine primitives for several participants sharing one directory (docs/FORMAT.md
 * "Sharing"): open with a published tail, logTail, catchUp (with and without adopting a dead
 * writer's frames), checkpointRef / adoptCheckpoint, checkpoint options, KESTREL_BEHIND and the
 * identity file's version 2. Two engines on one directory in one process stand for two
 * processes (allowed in shared mode: the engine takes no lock).
 */
import { closeSync, existsSync, openSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { encodeKey } from '../lib/codec/key.js'
import { decodeValue, encodeValue } from '../lib/codec/value.js'
import { NativeCore } from '../lib/core/native.js'
import { TsCore } from '../lib/core/ts/engine.js'
import type { Core, CoreOpenOptions, LogTail } from '../lib/core/types.js'
import { crc32c } from '../lib/format/crc32c.js'
import { segmentHeader, segmentName } from '../lib/format/log.js'
import { encodeCommit, OP_PUT } from '../lib/format/payload.js'
import { resolveOptions } from '../lib/options.js'
import { SharedFile } from '../lib/shared/file.js'
import { tryLock } from '../lib/shared/locks.js'
import { expectCode, tempDir } from './helpers.js'

const ENGINES = ['native', 'ts'] as const
type Engine = (typeof ENGINES)[number]

const base = (over: Partial<CoreOpenOptions> = {}): CoreOpenOptions => ({ ...resolveOptions({ durability: 'sync' }).core, ...over })

/** Each core stands in for another process: native ones do not share the process's engine. */
function openCore(engine: Engine, dir: string, over: Partial<CoreOpenOptions> = {}): Promise<Core> {
  const options = base(over.sharing ? { ...over, sharing: { ...over.sharing, apart: true } } : over)
  return engine === 'native' ? NativeCore.open(dir, options) : TsCore.open(dir, options)
}

const put = (key: string, value: unknown): Uint8Array => encodeCommit([{ kind: OP_PUT, collection: 'c', key: encodeKey(key), value: encodeValue(value) }])

function read(core: Core, key: string): unknown {
  const v = core.get('c', encodeKey(key), Number(core.lastCommitId()))
  return v === undefined ? undefined : decodeValue(v)
}

const segmentPath = (dir: string, tail: LogTail): string => join(dir, 'log', tail.segment)

/** Write `bytes` into a file at `offset` (a writer of another process, or its torn remains). */
function writeAt(path: string, offset: number, bytes: Uint8Array): void {
  const fd = openSync(path, 'r+')
  try {
    writeSync(fd, bytes, 0, bytes.length, offset)
  } finally {
    closeSync(fd)
  }
}

/** A frame header that promises more bytes than follow: a torn write. */
const TORN = Uint8Array.from([200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9, 0, 0, 0, 0, 0x81, 7, 7, 7])

describe.each(ENGINES)('sharing primitives (%s)', (engine) => {
  it("keepWriteLock: the native engine keeps the write lock taken past its thread's own socket until letGoWriteLock or close (after its queued commits); the ts engine cannot", async () => {
    const dir = tempDir()
    const core = await openCore(engine, dir, { sharing: {} })
    const name = `kestreldb-test/${process.pid}/${Math.random()}/w`
    const taken = (): boolean => {
      const probe = tryLock(name)
      probe?.release()
      return probe === undefined
    }
    const own = tryLock(name)!
    expect(own.fd).toBeGreaterThanOrEqual(0)
    core.keepWriteLock(own.fd)
    own.release() // as a Worker's sockets close when it is stopped
    expect(taken()).toBe(engine === 'native')
    core.letGoWriteLock()
    expect(taken()).toBe(false)
    // Kept again, with a commit queued while the writer is held (a thread stopped between
    // holdWriter(true) and holdWriter(false)): close writes it, then lets go.
    const again = tryLock(name)!
    core.keepWriteLock(again.fd)
    again.release()
    core.holdWriter(true)
    const done = core.commit(put('k', 'queued'))
    expect(taken()).toBe(engine === 'native')
    await core.close()
    expect(taken()).toBe(false)
    expect(Number(await done)).toBe(1)
    const reopened = await openCore(engine, dir)
    expect(read(reopened, 'k')).toBe('queued')
    await reopened.close()
  })

  it("with sharing.publish the log writer writes each durable batch's tail into the SHARED log block; without it, the block is left alone", async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: { publish: true } })
    const file = new SharedFile(dir)
    file.reset()
    expect(file.readLog()).toBeUndefined()
    await a.commit(put('k1', 1))
    expect(file.readLog()).toEqual({ tail: a.logTail(), abandoned: false })
    await Promise.all([a.commit(put('k2', 2)), a.commit(put('k3', 3))])
    expect(a.logTail().lsn).toBe(3)
    expect(file.readLog()).toEqual({ tail: a.logTail(), abandoned: false })
    // A participant of the other engine, opened at that tail without publish: its commit moves
    // its own log end, not the block.
    const b = await openCore(engine === 'native' ? 'ts' : 'native', dir, { sharing: { tail: file.readLog()!.tail } })
    await b.commit(put('k4', 4))
    expect(b.logTail().lsn).toBe(4)
    expect(file.readLog()!.tail.lsn).toBe(3)
    await a.close()
    await b.close()
    file.close()
  })

  it('catchUp applies what the other wrote, the writer continues at the tail, and a reopen sees one gap-free log', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: {} })
    const b = await openCore(engine, dir, { sharing: { tail: a.logTail() } })
    expect(b.logTail()).toEqual(a.logTail())
    const written = [put('x', 1), put('y', 2), put('z', 3)]
    for (const p of written) await a.commit(p)
    expect(a.logTail().lsn).toBe(3)
    const got = b.catchUp(a.logTail(), false)
    expect(got.map((p) => Buffer.from(p).toString('hex'))).toEqual(written.map((p) => Buffer.from(p).toString('hex')))
    expect(b.lastCommitId()).toBe(3n)
    expect(read(b, 'y')).toBe(2)
    expect(b.logTail()).toEqual(a.logTail())
    // Nothing more: cheap no-op.
    expect(b.catchUp(a.logTail(), false)).toEqual([])
    expect(await b.commit(put('x', 10))).toBe(4n)
    const back = a.catchUp(b.logTail(), false)
    expect(back).toHaveLength(1)
    expect(a.lastCommitId()).toBe(4n)
    expect(read(a, 'x')).toBe(10)
    expect(await a.commit(put('w', 5))).toBe(5n)
    expect(b.catchUp(a.logTail(), false)).toHaveLength(1)
    await a.close()
    await b.close()
    const c = await openCore(engine, dir)
    expect(c.lastCommitId()).toBe(5n)
    expect([read(c, 'x'), read(c, 'y'), read(c, 'z'), read(c, 'w')]).toEqual([10, 2, 3, 5])
    await c.close()
  })

  it('catchUp follows the log across rolled-over segments, and the other continues after them', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: {}, segmentBytes: 300 })
    const b = await openCore(engine, dir, { sharing: { tail: a.logTail() }, segmentBytes: 300 })
    for (let i = 0; i < 20; i++) await a.commit(put(`k${i}`, 'v'.repeat(60)))
    expect(a.logTail().segment).not.toBe(b.logTail().segment)
    expect(b.catchUp(a.logTail(), false)).toHaveLength(20)
    expect(read(b, 'k19')).toBe('v'.repeat(60))
    expect(b.stats().segments).toBe(readdirSync(join(dir, 'log')).length)
    for (let i = 20; i < 30; i++) await b.commit(put(`k${i}`, 'w'.repeat(60)))
    expect(a.catchUp(b.logTail(), false)).toHaveLength(10)
    expect(read(a, 'k29')).toBe('w'.repeat(60))
    await a.close()
    await b.close()
    const c = await openCore(engine, dir)
    expect(c.lastCommitId()).toBe(30n)
    await c.close()
  })

  it('catchUp with adopt takes a dead writer’s whole batches past the tail and cuts its torn rest', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: {} })
    await a.commit(put('a', 1))
    const t0 = a.logTail()
    const b = await openCore(engine, dir, { sharing: { tail: t0 } })
    // a writes two commits and dies before publishing them; its last write is torn.
    await a.commit(put('b', 2))
    await a.commit(put('c', 3))
    const end = a.logTail()
    await a.close()
    writeAt(segmentPath(dir, end), end.offset, TORN)
    expect(b.catchUp(t0, false)).toEqual([])
    const adopted = b.catchUp(t0, true)
    expect(adopted).toHaveLength(2)
    expect(b.lastCommitId()).toBe(3n)
    expect(read(b, 'c')).toBe(3)
    expect(b.logTail()).toEqual(end)
    expect(statSync(segmentPath(dir, end)).size).toBe(end.offset)
    // Nothing past the tail now: cheap and empty.
    expect(b.catchUp(b.logTail(), true)).toEqual([])
    expect(await b.commit(put('d', 4))).toBe(4n)
    await b.close()
    const c = await openCore(engine, dir)
    expect(c.lastCommitId()).toBe(4n)
    expect([read(c, 'a'), read(c, 'b'), read(c, 'c'), read(c, 'd')]).toEqual([1, 2, 3, 4])
    await c.close()
  })

  it('catchUp with adopt follows a dead writer into the segment it rolled over to', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: {}, segmentBytes: 200 })
    const t0 = a.logTail()
    const b = await openCore(engine, dir, { sharing: { tail: t0 }, segmentBytes: 200 })
    for (let i = 0; i < 10; i++) await a.commit(put(`k${i}`, 'v'.repeat(50)))
    const end = a.logTail()
    expect(end.segment).not.toBe(t0.segment)
    await a.close()
    writeAt(segmentPath(dir, end), end.offset, TORN)
    expect(b.catchUp(t0, true)).toHaveLength(10)
    expect(b.logTail()).toEqual(end)
    expect(statSync(segmentPath(dir, end)).size).toBe(end.offset)
    await b.commit(put('after', 1))
    await b.close()
    const c = await openCore(engine, dir)
    expect(c.lastCommitId()).toBe(11n)
    await c.close()
  })

  it('catchUp with adopt removes a segment a dead writer created at rollover with nothing whole in it', async () => {
    for (const torn of [false, true]) {
      const dir = tempDir()
      const a = await openCore(engine, dir, { sharing: {}, segmentBytes: 200 })
      for (let i = 0; i < 3; i++) await a.commit(put(`k${i}`, 'v'.repeat(50)))
      const tail = a.logTail()
      await a.close()
      const b = await openCore(engine, dir, { sharing: { tail }, segmentBytes: 200 })
      // The dead writer sealed its segment, created the next one, and wrote (part of) nothing.
      truncateSync(segmentPath(dir, tail), tail.offset)
      const next = join(dir, 'log', segmentName(tail.lsn + 1))
      writeFileSync(next, torn ? Buffer.concat([segmentHeader(tail.lsn + 1), TORN]) : segmentHeader(tail.lsn + 1))
      expect(b.catchUp(tail, true)).toEqual([])
      expect(existsSync(next)).toBe(false)
      expect(b.logTail()).toEqual(tail)
      expect(await b.commit(put('after', 1))).toBe(4n)
      await b.close()
      const c = await openCore(engine, dir)
      expect(c.lastCommitId()).toBe(4n)
      expect(read(c, 'after')).toBe(1)
      await c.close()
    }
  })

  it('opening with a tail replays up to it and leaves every byte past it alone', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: {} })
    await a.commit(put('a', 1))
    const t = a.logTail()
    await a.commit(put('b', 2))
    const end = a.logTail()
    writeAt(segmentPath(dir, end), end.offset, TORN)
    const before = readFileSync(segmentPath(dir, t))
    const b = await openCore(engine, dir, { sharing: { tail: t } })
    expect(b.lastCommitId()).toBe(1n)
    expect(read(b, 'b')).toBeUndefined()
    expect(b.logTail()).toEqual(t)
    expect(readFileSync(segmentPath(dir, t)).equals(before)).toBe(true)
    await b.close()
    expect(readFileSync(segmentPath(dir, t)).equals(before)).toBe(true)
    await a.close()
  })

  it('a published tail that the log does not reach is corruption', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: {} })
    await a.commit(put('a', 1))
    const t = a.logTail()
    await expectCode(() => openCore(engine, dir, { sharing: { tail: { ...t, lsn: 2 } } }), 'KESTREL_CORRUPT')
    const b = await openCore(engine, dir, { sharing: { tail: t } })
    expect(() => b.catchUp({ ...t, offset: t.offset + 40, lsn: 2 }, false)).toThrow(expect.objectContaining({ code: 'KESTREL_CORRUPT' }))
    await a.close()
    await b.close()
  })

  it('checkpoints build on each other: adoptCheckpoint, reuseFreePages false, retired records read from the adopted one', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: {} })
    const b = await openCore(engine, dir, { sharing: { tail: a.logTail() } })
    expect(b.adoptCheckpoint()).toBe(false) // no pages.kdb yet
    for (let i = 0; i < 50; i++) await a.commit(put(`k${i}`, `a${i}`.repeat(20)))
    b.catchUp(a.logTail(), false)
    await a.checkpoint()
    expect(a.checkpointRef()).toEqual({ seq: 1, lsn: 50 })
    expect(b.checkpointRef()).toEqual({ seq: 0, lsn: 0 })
    expect(b.adoptCheckpoint()).toBe(true)
    expect(b.checkpointRef()).toEqual(a.checkpointRef())
    expect(b.stats().flow.dirtyKeys).toBe(0)
    expect(b.adoptCheckpoint()).toBe(false)
    // b writes on top and checkpoints without reusing pages.
    for (let i = 0; i < 10; i++) await b.commit(put(`k${i}`, `b${i}`.repeat(20)))
    const pagesFile = join(dir, 'pages.kdb')
    const oldBytes = readFileSync(pagesFile)
    const oldCount = a.stats().pageCount
    await b.checkpoint({ reuseFreePages: false })
    expect(b.checkpointRef()).toEqual({ seq: 2, lsn: 60 })
    const newCount = b.stats().pageCount
    expect(newCount).toBeGreaterThan(oldCount)
    const newBytes = readFileSync(pagesFile)
    // Every page of the old checkpoint (not the meta slots) is as it was.
    expect(newBytes.subarray(2 * 4096, oldCount * 4096).equals(oldBytes.subarray(2 * 4096, oldCount * 4096))).toBe(true)
    // a is behind: its checkpoint is refused until it catches up.
    await expectCode(() => a.checkpoint(), 'KESTREL_BEHIND')
    expect(a.adoptCheckpoint()).toBe(false)
    a.catchUp(b.logTail(), false)
    expect(a.adoptCheckpoint()).toBe(true)
    expect(a.checkpointRef()).toEqual({ seq: 2, lsn: 60 })
    // Retire everything checkpointed, so reads go to the adopted page file.
    for (const core of [a, b]) {
      for (let i = 0; i < 100; i++) if (core.scavenge({ retireAgeMax: 1 << 30, targetBytes: 0, visitMax: 1000 }).done) break
      expect(core.stats().retired).toBeGreaterThan(0)
      for (let i = 0; i < 50; i++) expect(read(core, `k${i}`)).toBe(i < 10 ? `b${i}`.repeat(20) : `a${i}`.repeat(20))
    }
    // Nothing new: a checkpoint writes nothing.
    await a.checkpoint()
    expect(a.checkpointRef()).toEqual({ seq: 2, lsn: 60 })
    await a.commit(put('k0', 'again'))
    await a.checkpoint({ reuseFreePages: true })
    expect(a.checkpointRef()).toEqual({ seq: 3, lsn: 61 })
    await a.close()
    await b.close()
    const c = await openCore(engine, dir)
    expect(c.checkpointRef()).toEqual({ seq: 3, lsn: 61 })
    expect(read(c, 'k0')).toBe('again')
    expect(read(c, 'k49')).toBe('a49'.repeat(20))
    await c.close()
  })

  it('trimBelowLsn keeps segments holding records at or above it; never the active one', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: {}, segmentBytes: 200 })
    for (let i = 0; i < 20; i++) await a.commit(put(`k${i}`, 'v'.repeat(50)))
    const before = a.stats().segments
    expect(before).toBeGreaterThan(3)
    await a.checkpoint({ trimBelowLsn: 1 })
    expect(a.stats().segments).toBe(before)
    // Only a checkpoint that writes trims (one with nothing new resolves at once).
    await a.commit(put('more', 1))
    await a.checkpoint({ trimBelowLsn: 22 })
    expect(a.stats().segments).toBe(1)
    expect(a.logTail().lsn).toBe(21)
    await a.close()
    const c = await openCore(engine, dir)
    expect(c.lastCommitId()).toBe(21n)
    expect(read(c, 'k0')).toBe('v'.repeat(50))
    await c.close()
  })

  it('catchUp from a log end at the end of a segment trimmed since continues in the next one', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: {}, segmentBytes: 200 })
    const b = await openCore(engine, dir, { sharing: { tail: a.logTail() }, segmentBytes: 200 })
    // b follows a commit by commit until a's next commit starts a new segment: b's log end is
    // then the end of the segment before.
    let i = 0
    let end = a.logTail()
    // Bounded: a segment holds a few of these records.
    for (; i < 50; i++) {
      end = a.logTail()
      b.catchUp(end, false)
      await a.commit(put(`k${i}`, 'v'.repeat(50)))
      if (a.logTail().segment !== end.segment) break
    }
    expect(i).toBeLessThan(50)
    expect(b.logTail()).toEqual(end)
    // Nothing of that segment is needed by anyone: a checkpoint trims it.
    await a.commit(put('more', 1))
    await a.checkpoint({ trimBelowLsn: end.lsn + 1 })
    expect(existsSync(join(dir, 'log', end.segment))).toBe(false)
    expect(b.catchUp(a.logTail(), false)).toHaveLength(2)
    expect(read(b, `k${i}`)).toBe('v'.repeat(50))
    expect(read(b, 'more')).toBe(1)
    await b.close()
    await a.close()
  })

  it('trimBelowLsn below the checkpoint keeps the segments at or above it', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: {}, segmentBytes: 200 })
    for (let i = 0; i < 20; i++) await a.commit(put(`k${i}`, 'v'.repeat(50)))
    await a.checkpoint({ trimBelowLsn: 10 })
    const segments = a.stats().segments
    expect(segments).toBeGreaterThan(1)
    await a.close()
    const c = await openCore(engine, dir)
    expect(c.lastCommitId()).toBe(20n)
    // Records 10.. are still in the log.
    const first = readdirSync(join(dir, 'log')).sort()[0]!
    expect(Number(first.slice(0, 20))).toBeLessThanOrEqual(10)
    expect(Number(first.slice(0, 20))).toBeGreaterThan(1)
    await a.close()
  })

  it('no automatic checkpoint and no final checkpoint at close while sharing', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: {}, checkpointBytes: 64 * 1024, checkpointIntervalMs: 1 })
    for (let i = 0; i < 40; i++) await a.commit(put(`k${i}`, 'x'.repeat(4000)))
    await new Promise((r) => setTimeout(r, 300))
    expect(a.checkpointRef()).toEqual({ seq: 0, lsn: 0 })
    const tail = a.logTail()
    const size = statSync(segmentPath(dir, tail)).size
    await a.close()
    // Not sealed: the preallocated space stays for another participant.
    expect(statSync(segmentPath(dir, tail)).size).toBe(size)
    const c = await openCore(engine, dir)
    expect(c.checkpointRef()).toEqual({ seq: 0, lsn: 0 })
    expect(c.lastCommitId()).toBe(40n)
    await c.close()
  })

  it('without sharing: catchUp is refused, adoptCheckpoint is false, logTail works', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir)
    await a.commit(put('a', 1))
    const t = a.logTail()
    expect(t.lsn).toBe(1)
    expect(t.segment).toBe('00000000000000000001.klog')
    expect(() => a.catchUp(t, false)).toThrow(expect.objectContaining({ code: 'KESTREL_INVALID_ARGUMENT' }))
    expect(a.adoptCheckpoint()).toBe(false)
    await a.checkpoint({ reuseFreePages: false })
    expect(a.checkpointRef()).toEqual({ seq: 1, lsn: 1 })
    await a.close()
  })

  it('catchUp while a commit is in flight is refused', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir, { sharing: {} })
    const pending = a.commit(put('a', 1))
    expect(() => a.catchUp(a.logTail(), false)).toThrow(expect.objectContaining({ code: 'KESTREL_INVALID_ARGUMENT' }))
    await pending
    await a.close()
  })

  it('identity file: a new directory is version 2, version 1 is rewritten to 2, version 3 is refused', async () => {
    const dir = tempDir()
    const a = await openCore(engine, dir)
    await a.close()
    const idPath = join(dir, 'KESTREL')
    const version = (): number => readFileSync(idPath).readUInt32LE(8)
    expect(version()).toBe(2)
    const withVersion = (v: number): Buffer => {
      const b = Buffer.from(readFileSync(idPath))
      b.writeUInt32LE(v, 8)
      b.writeUInt32LE(crc32c(b.subarray(0, 12)), 12)
      return b
    }
    writeFileSync(idPath, withVersion(1))
    const b = await openCore(engine, dir, { sharing: {} })
    expect(version()).toBe(2)
    await b.close()
    writeFileSync(idPath, withVersion(1))
    const c = await openCore(engine, dir)
    expect(version()).toBe(2)
    await c.close()
    writeFileSync(idPath, withVersion(3))
    await expectCode(() => openCore(engine, dir), 'KESTREL_FORMAT_VERSION')
  })
})
