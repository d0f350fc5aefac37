/**
 * Checkpoints and the page store on both engines: reopen replays only the log after the last
 * checkpoint, the log is trimmed behind it, crashes inside a checkpoint (lost pages, a torn meta
 * page) reopen at the last good checkpoint plus the log, and a database far larger than
 * `cacheBytes` reads every record correctly, also after reopen.
 */
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { open, verifyDirectory } from '../lib/index.js'
import { injectPageFault, openWithFaults, simulateCrash } from '../lib/testing.js'
import { coreOf, ENGINES, expectCode, other, tempDir } from './helpers.js'

const BIG = Number(process.env.KESTREL_BIG_RECORDS ?? 1_000_000)

describe.each(ENGINES)('checkpoints (%s)', (engine) => {
  it('reopen replays only what came after the last checkpoint', async () => {
    const dir = tempDir()
    const db = await openWithFaults(dir, { engine, faults: {}, checkpointIntervalMs: 0 })
    const c = db.collection<number>('c')
    for (let i = 0; i < 100; i++) await db.transaction((tx) => tx.put(c, i, i))
    await db.checkpoint()
    const at = db.lastCommitId()
    for (let i = 100; i < 110; i++) await db.transaction((tx) => tx.put(c, i, i))
    await db.transaction((tx) => {
      tx.delete(c, 5)
      tx.increment(c, 6, 10)
    })
    await simulateCrash(db) // no final checkpoint
    const again = await open(dir, { engine: other(engine) })
    const s = again.stats()
    expect(s.checkpointLsn).toBe(at)
    expect(s.versions).toBeLessThan(30) // only the tail (and the versions it loaded) is in memory
    expect(s.keys).toBe(109)
    const snap = again.snapshot()
    for (let i = 0; i < 110; i++) expect(snap.get(again.collection<number>('c'), i)).toBe(i === 5 ? undefined : i === 6 ? 16 : i)
    expect([...snap.scan(again.collection<number>('c'))].map((e) => e.key)).toEqual(Array.from({ length: 110 }, (_, i) => i).filter((i) => i !== 5))
    snap.close()
    await again.close()
  })

  it('trims log segments wholly older than the checkpoint', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine, segmentBytes: 64 * 1024, checkpointIntervalMs: 0 })
    const c = db.collection<string>('c')
    for (let i = 0; i < 240; i++)
      await db.transaction((tx) => {
        for (let j = 0; j < 10; j++) tx.put(c, [i, j], 'x'.repeat(100))
      })
    const before = readdirSync(join(dir, 'log')).length
    expect(before).toBeGreaterThan(3)
    await db.checkpoint()
    const after = readdirSync(join(dir, 'log')).length
    expect(after).toBeLessThan(before)
    expect(coreOf(db).stats().segments).toBe(after)
    await db.transaction((tx) => tx.put(c, 'tail', 'y'))
    await db.close()
    expect(verifyDirectory(dir).ok).toBe(true)
    const again = await open(dir, { engine: other(engine) })
    expect(again.stats().keys).toBe(2401)
    expect(again.snapshot().get(again.collection<string>('c'), [239, 9])).toBe('x'.repeat(100))
    await again.close()
  })

  for (const fault of ['losePagesBeforeMeta', 'tearMeta', 'failMetaSync'] as const) {
    it(`a crash inside a checkpoint (${fault}) reopens at the last good checkpoint plus the log`, async () => {
      const dir = tempDir()
      const db = await openWithFaults(dir, { engine, faults: {}, checkpointIntervalMs: 0 })
      const c = db.collection<string>('c')
      for (let i = 0; i < 300; i++) await db.transaction((tx) => tx.put(c, i, `first ${i}`))
      await db.checkpoint()
      const good = coreOf(db).stats().checkpointLsn
      for (let i = 0; i < 300; i += 2) await db.transaction((tx) => tx.put(c, i, `second ${i}`))
      for (let i = 1; i < 300; i += 6) await db.transaction((tx) => tx.delete(c, i))
      const target = Number(db.lastCommitId())
      injectPageFault(db, fault)
      await expectCode(() => db.checkpoint(), 'KESTREL_IO')
      expect(coreOf(db).stats().checkpointLsn).toBe(good)
      // A whole meta page whose sync failed may be on disk after all: then reopen finds that
      // (complete) checkpoint; otherwise the last good one. Either way, the log has the rest.
      const onDisk = fault === 'failMetaSync' ? target : good
      // The engine still serves reads and commits after a failed checkpoint.
      await db.transaction((tx) => tx.put(c, 'late', 'yes'))
      await simulateCrash(db)
      const report = verifyDirectory(dir)
      expect(report.ok, report.problems.join('\n')).toBe(true)
      expect(report.checkpointLsn).toBe(BigInt(onDisk))
      for (const e of [engine, other(engine)]) {
        const again = await open(dir, { engine: e })
        // The first reopen finds the last good checkpoint; the second, the one the first wrote.
        if (e === engine) expect(again.stats().checkpointLsn).toBe(BigInt(onDisk))
        else expect(again.stats().checkpointLsn).toBeGreaterThan(BigInt(onDisk))
        const snap = again.snapshot()
        const cc = again.collection<string>('c')
        for (let i = 0; i < 300; i++) {
          const want = i % 6 === 1 ? undefined : i % 2 === 0 ? `second ${i}` : `first ${i}`
          expect(snap.get(cc, i)).toBe(want)
        }
        expect(snap.get(cc, 'late')).toBe('yes')
        snap.close()
        await again.checkpoint()
        const v = await again.verify()
        expect(v.ok, v.problems.join('\n')).toBe(true)
        await again.close()
      }
    })
  }

  it(`a database much larger than cacheBytes (${BIG} records, 1 MiB cache) reads every record, also after reopen`, async () => {
    const dir = tempDir()
    const db = await open(dir, { engine, cacheBytes: 1 << 20, checkpointBytes: 4 << 20, checkpointIntervalMs: 0, durability: 'relaxed' })
    const c = db.collection<number>('big')
    const BATCH = 5000
    for (let i = 0; i < BIG; i += BATCH) {
      await db.transaction((tx) => {
        for (let j = i; j < Math.min(BIG, i + BATCH); j++) tx.put(c, j, j * 3)
      })
    }
    await db.checkpoint()
    const s = db.stats()
    expect(s.keys).toBe(BIG)
    expect(s.recordBytes).toBeLessThanOrEqual(2 << 20)
    expect(s.retired).toBeGreaterThan(BIG / 2)
    const check = async (d: typeof db): Promise<void> => {
      const cc = d.collection<number>('big')
      const snap = d.snapshot()
      let n = 0
      for (const { key, value } of snap.scan(cc)) {
        expect(key).toBe(n)
        if (value !== n * 3) expect(value).toBe(n * 3)
        n++
      }
      expect(n).toBe(BIG)
      for (let i = 0; i < 2000; i++) {
        const k = Math.floor((i * 7919) % BIG)
        expect(snap.get(cc, k)).toBe(k * 3)
      }
      expect(snap.get(cc, BIG)).toBe(undefined)
      snap.close()
    }
    await check(db)
    // Writes to retired keys load their checkpointed version: merges build on it.
    await db.transaction((tx) => tx.increment(c, 10, 1))
    expect(db.snapshot().get(c, 10)).toBe(31)
    await db.close()
    const again = await open(dir, { engine: other(engine), cacheBytes: 1 << 20 })
    expect(again.stats().recordBytes).toBeLessThan(1 << 20)
    await check2(again)
    await again.close()

    async function check2(d: typeof db): Promise<void> {
      const cc = d.collection<number>('big')
      expect(d.snapshot().get(cc, 10)).toBe(31)
      await d.transaction((tx) => tx.put(cc, 10, 30))
      await check(d)
    }
  }, 600_000)
})
