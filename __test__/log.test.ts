/**
 * The serial log end to end on both engines: commit → durable → visible → reopen, group commit,
 * segment rollover, cross-engine files, and recovery of torn, zeroed and corrupt logs.
 */
import { appendFileSync, readdirSync, readFileSync, statSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { open as openDatabase, type Database, type OpenOptions } from '../lib/index.js'
import { segmentHeader, segmentName } from '../lib/format/log.js'
import { encodeKey } from '../lib/codec/key.js'
import { encodeValue } from '../lib/codec/value.js'
import { encodeCommit, OP_PUT } from '../lib/format/payload.js'
import { NativeCore } from '../lib/core/native.js'
import { TsCore } from '../lib/core/ts/engine.js'
import { resolveOptions } from '../lib/options.js'
import { ENGINES, expectCode, other, tempDir } from './helpers.js'

/**
 * These tests look at the log itself, so they keep all of it: with every commit inside the
 * retention window, no checkpoint covers the log and no segment is trimmed.
 */
const open = (dir: string, options: OpenOptions): Promise<Database> => openDatabase(dir, { retainHistory: { commits: Number.MAX_SAFE_INTEGER }, ...options })

const segments = (dir: string): string[] =>
  readdirSync(join(dir, 'log'))
    .filter((n) => n.endsWith('.klog'))
    .sort()

/** Commit `n` single-key transactions one after another (one batch each). */
async function commitSequential(db: Database, n: number, from = 0): Promise<bigint[]> {
  const c = db.collection('items')
  const ids: bigint[] = []
  for (let i = from; i < from + n; i++) {
    const tx = db.begin()
    tx.put(c, `k${String(i).padStart(4, '0')}`, { i, pad: 'p'.repeat(200) })
    ids.push((await tx.commit()).commitId)
  }
  return ids
}

function values(db: Database): number[] {
  const tx = db.begin()
  return [...tx.scan<{ i: number }>(db.collection('items'))].map((e) => e.value.i)
}

describe.each(ENGINES)('serial log [%s]', (engine) => {
  it('the engine keeps no view of a commit payload once commit() returns (payloads are pooled bytes): what was committed stays', async () => {
    const dir = tempDir()
    const options = resolveOptions({ durability: 'sync' }).core
    const core = engine === 'native' ? await NativeCore.open(dir, options) : await TsCore.open(dir, options)
    const value = encodeValue({ n: 1, pad: 'p'.repeat(100) })
    const payload = encodeCommit([{ kind: OP_PUT, collection: 'items', key: encodeKey('k'), value }])
    expect(payload.byteLength).toBeLessThan(payload.buffer.byteLength) // a slice of a shared pool
    const done = core.commit(payload)
    payload.fill(0xee)
    const lsn = Number(await done)
    expect(core.get('items', encodeKey('k'), lsn)).toEqual(value)
    await core.checkpoint()
    expect(core.get('items', encodeKey('k'), lsn)).toEqual(value)
    await core.close()
    const again = await open(dir, { engine: other(engine) })
    expect(again.get(again.collection('items'), 'k')).toEqual({ n: 1, pad: 'p'.repeat(100) })
    await again.close()
  })

  it('commits become durable, visible in order, and survive reopen', async () => {
    const dir = tempDir()
    let db = await open(dir, { engine })
    expect(db.engine).toBe(engine)
    const items = db.collection<{ n: number }>('items')
    const tx = db.begin()
    tx.put(items, 'a', { n: 1 })
    tx.put(items, ['tuple', 2], { n: 2 })
    tx.put(items, 'gone', { n: 3 })
    expect(tx.get(items, 'a')).toEqual({ n: 1 }) // reads its own writes
    expect(db.begin().get(items, 'a')).toBeUndefined() // others don't, before commit
    const { commitId } = await tx.commit()
    expect(commitId).toBe(1n)
    expect(db.begin().get(items, 'a')).toEqual({ n: 1 })
    const result = await db.transaction(async (t) => {
      t.delete(items, 'gone')
      t.put(items, 'b', { n: 4 })
      return 'done'
    })
    expect(result).toBe('done')
    expect(db.lastCommitId()).toBe(2n)
    await db.close()

    db = await open(dir, { engine })
    const r = db.begin()
    expect(r.get(db.collection('items'), 'gone')).toBeUndefined()
    expect([...r.scan(db.collection('items'))].map((e) => e.key)).toEqual(['a', 'b', ['tuple', 2]])
    expect(db.lastCommitId()).toBe(2n)
    const next = db.begin()
    next.put(db.collection('items'), 'c', { n: 5 })
    expect((await next.commit()).commitId).toBe(3n)
    await db.close()
  })

  it('group commit: 256 concurrent commits share fdatasyncs, each commit whole', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    const c = db.collection('items')
    const ids = await Promise.all(
      Array.from({ length: 256 }, async (_, i) => {
        const tx = db.begin()
        tx.put(c, ['a', i], i)
        tx.put(c, ['b', i], i)
        return (await tx.commit()).commitId
      }),
    )
    const stats = db.stats()
    expect(new Set(ids).size).toBe(256)
    expect(stats.durableLsn).toBe(256n)
    expect(stats.syncs).toBeLessThan(256)
    expect(stats.batches).toBeLessThan(256)
    await db.close()
  })

  it('rolls segments over and replays across them', async () => {
    const dir = tempDir()
    let db = await open(dir, { engine, segmentBytes: 65536 })
    await Promise.all(Array.from({ length: 8 }, (_, w) => commitSequential(db, 150, w * 1000)))
    expect(db.stats().segments).toBeGreaterThan(2)
    await db.close()
    expect(segments(dir).length).toBeGreaterThan(2)
    db = await open(dir, { engine })
    expect(values(db).length).toBe(1200)
    await db.close()
  })

  it(`a database written by ${engine} opens in ${other(engine)} and back`, async () => {
    const dir = tempDir()
    let db = await open(dir, { engine, segmentBytes: 65536 })
    await commitSequential(db, 300)
    await db.close()
    db = await open(dir, { engine: other(engine) })
    expect(db.engine).toBe(other(engine))
    expect(values(db)).toEqual(Array.from({ length: 300 }, (_, i) => i))
    const c = db.collection('items')
    await db.transaction((tx) => {
      tx.delete(c, 'k0000')
      tx.put(c, 'k9999', { i: 9999 })
    })
    await db.close()
    db = await open(dir, { engine })
    const v = values(db)
    expect(v.length).toBe(300)
    expect(v[0]).toBe(1)
    expect(v[v.length - 1]).toBe(9999)
    expect(db.lastCommitId()).toBe(301n)
    await db.close()
  })

  it('a torn last write is cut back to the last whole record', async () => {
    const dir = tempDir()
    let db = await open(dir, { engine })
    await commitSequential(db, 10)
    await db.close()
    const [seg] = segments(dir)
    const path = join(dir, 'log', seg!)
    const size = statSync(path).size
    truncateSync(path, size - 7) // tear the last record
    db = await open(dir, { engine })
    expect(values(db)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8])
    expect(db.lastCommitId()).toBe(9n)
    await commitSequential(db, 1, 100) // the log continues cleanly after the cut
    await db.close()
    db = await open(dir, { engine: other(engine) })
    expect(values(db)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 100])
    await db.close()
  })

  it('a zeroed tail is ignored and cut', async () => {
    const dir = tempDir()
    let db = await open(dir, { engine })
    await commitSequential(db, 5)
    await db.close()
    const path = join(dir, 'log', segments(dir)[0]!)
    const size = statSync(path).size
    appendFileSync(path, new Uint8Array(4096))
    db = await open(dir, { engine })
    expect(values(db)).toEqual([0, 1, 2, 3, 4])
    await db.close()
    expect(statSync(path).size).toBe(size)
  })

  it('a flipped byte in the middle of the log is KESTREL_CORRUPT naming segment and offset', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    await commitSequential(db, 10)
    await db.close()
    const name = segments(dir)[0]!
    const path = join(dir, 'log', name)
    const bytes = readFileSync(path)
    const recordBytes = (bytes.length - 32) / 10
    expect(Number.isInteger(recordBytes)).toBe(true)
    const offset = 32 + recordBytes * 3 // the 4th record's frame
    bytes[offset + 30]! ^= 0x01
    writeFileSync(path, bytes)
    const err = await expectCode(() => open(dir, { engine }), 'KESTREL_CORRUPT')
    expect(err.message).toContain(name)
    expect(err.message).toContain(`byte ${offset}`)
    expect(err.message).toMatch(/backup/)
    // Nothing was cut: the data after the damage is still there for a repair tool.
    expect(statSync(path).size).toBe(bytes.length)
  })

  it('an empty segment (header only) is valid and the log continues in it', async () => {
    const dir = tempDir()
    let db = await open(dir, { engine })
    await commitSequential(db, 3)
    await db.close()
    writeFileSync(join(dir, 'log', segmentName(4)), segmentHeader(4))
    db = await open(dir, { engine })
    expect(values(db)).toEqual([0, 1, 2])
    await commitSequential(db, 2, 3)
    await db.close()
    expect(statSync(join(dir, 'log', segmentName(4))).size).toBeGreaterThan(32)
    db = await open(dir, { engine: other(engine) })
    expect(values(db)).toEqual([0, 1, 2, 3, 4])
    await db.close()
  })

  it('a torn segment creation (a short last segment file) is removed', async () => {
    const dir = tempDir()
    let db = await open(dir, { engine })
    await commitSequential(db, 3)
    await db.close()
    writeFileSync(join(dir, 'log', segmentName(4)), segmentHeader(4).subarray(0, 20))
    db = await open(dir, { engine })
    expect(values(db)).toEqual([0, 1, 2])
    await commitSequential(db, 1, 3)
    await db.close()
  })

  it('a missing segment is KESTREL_CORRUPT naming the missing records', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine, segmentBytes: 65536 })
    await commitSequential(db, 900)
    await db.close()
    const names = segments(dir)
    expect(names.length).toBeGreaterThanOrEqual(3)
    unlinkSync(join(dir, 'log', names[1]!))
    const err = await expectCode(() => open(dir, { engine }), 'KESTREL_CORRUPT')
    expect(err.message).toContain(names[2]!)
    expect(err.message).toMatch(/missing/)
  })
})
