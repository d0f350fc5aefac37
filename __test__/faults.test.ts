/**
 * The fault-injecting file layer on both engines: failing fsync/write, lost unsynced writes and
 * torn writes at a simulated power loss (I1, I2).
 */
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { open, type Database } from '../lib/index.js'
import { holdSyncs, openWithFaults, simulateCrash } from '../lib/testing.js'
import { ENGINES, expectCode, other, rng, tempDir } from './helpers.js'

async function put(db: Database, key: string, value: unknown): Promise<bigint> {
  const tx = db.begin()
  tx.put(db.collection('items'), key, value)
  return (await tx.commit()).commitId
}

function keys(db: Database): string[] {
  return [...db.begin().scan(db.collection('items'))].map((e) => e.key as string)
}

describe.each(ENGINES)('fault injection [%s]', (engine) => {
  it('EIO on fsync: that commit rejects, later ones reject KESTREL_IO, reopen keeps every acknowledged commit', async () => {
    const dir = tempDir()
    const db = await openWithFaults(dir, { engine, faults: { failFsyncAt: 3 } })
    await put(db, 'k1', 1)
    await put(db, 'k2', 2)
    const failed = await expectCode(() => put(db, 'k3', 3), 'KESTREL_IO')
    expect(failed.message).toMatch(/reopen/)
    expect(db.begin().get(db.collection('items'), 'k3')).toBeUndefined() // never visible
    const later = await expectCode(() => put(db, 'k4', 4), 'KESTREL_IO')
    expect(later.message).toMatch(/reopen/)
    await db.close()
    const again = await open(dir, { engine: other(engine) })
    expect(keys(again)).toEqual(['k1', 'k2'])
    expect(await put(again, 'k5', 5)).toBe(3n) // the log continues after the last durable record
    await again.close()
  })

  it('EIO on fsync fails every commit of the batch and every queued one', async () => {
    const dir = tempDir()
    const db = await openWithFaults(dir, { engine, faults: { failFsyncAt: 2 } })
    await put(db, 'first', 0)
    const results = await Promise.allSettled(Array.from({ length: 50 }, (_, i) => put(db, `c${i}`, i)))
    expect(results.every((r) => r.status === 'rejected' && (r.reason as { code: string }).code === 'KESTREL_IO')).toBe(true)
    await db.close()
    const again = await open(dir, { engine })
    expect(keys(again)).toEqual(['first'])
    await again.close()
  })

  it('a batch failing right after a segment rollover stays out after reopen', async () => {
    const dir = tempDir()
    const db = await openWithFaults(dir, { engine, segmentBytes: 65536, faults: { failFsyncAt: 2 } })
    await put(db, 'big', 'x'.repeat(70_000)) // the first segment is now past segmentBytes
    await expectCode(() => put(db, 'small', 1), 'KESTREL_IO') // written to a new segment, fsync fails
    await db.close()
    const again = await open(dir, { engine: other(engine) })
    expect(keys(again)).toEqual(['big'])
    await again.close()
  })

  it('disk full: the failing batch gets KESTREL_DISK_FULL, commits queued behind it KESTREL_IO', async () => {
    const db = await openWithFaults(tempDir(), { engine, faults: { failFsyncAt: 1, errno: 'ENOSPC' } })
    holdSyncs(db, true)
    const first = put(db, 'a', 1) // written, its fdatasync held
    await new Promise((r) => setTimeout(r, 20))
    const queued = [put(db, 'b', 2), put(db, 'c', 3)] // wait behind it
    await new Promise((r) => setTimeout(r, 20))
    holdSyncs(db, false)
    await expectCode(() => first, 'KESTREL_DISK_FULL')
    for (const q of queued) await expectCode(() => q, 'KESTREL_IO')
    await db.close()
  })

  it('a failed final fdatasync at close is reported, not swallowed', async () => {
    const dir = tempDir()
    const db = await openWithFaults(dir, { engine, durability: 'none', faults: { failSealSync: true } })
    await put(db, 'k', 1) // acknowledged without an fdatasync
    const err = await expectCode(() => db.close(), 'KESTREL_IO')
    expect(err.message).toMatch(/may be lost/)
    const again = await open(dir, { engine }) // the directory is usable again
    expect(keys(again)).toEqual(['k'])
    await again.close()
  })

  it('ENOSPC on write: KESTREL_DISK_FULL, then KESTREL_IO until reopened', async () => {
    const dir = tempDir()
    const db = await openWithFaults(dir, { engine, faults: { failWriteAt: 2, errno: 'ENOSPC' } })
    await put(db, 'a', 1)
    const full = await expectCode(() => put(db, 'b', 2), 'KESTREL_DISK_FULL')
    expect(full.message).toMatch(/free disk space/)
    await expectCode(() => put(db, 'c', 3), 'KESTREL_IO')
    await db.close()
    const again = await open(dir, { engine })
    expect(keys(again)).toEqual(['a'])
    await put(again, 'd', 4)
    expect(keys(again)).toEqual(['a', 'd'])
    await again.close()
  })

  it('power loss drops unsynced writes; a torn write keeps only whole records', async () => {
    for (const [tear, expected] of [
      [0, []],
      [1, []],
      [10_000, ['k0', 'k1', 'k2', 'k3']],
    ] as const) {
      const dir = tempDir()
      // durability 'none' never fsyncs, so everything after the segment header is unsynced.
      const db = await openWithFaults(dir, { engine, durability: 'none', faults: {} })
      for (let i = 0; i < 4; i++) await put(db, `k${i}`, 'v'.repeat(100))
      await simulateCrash(db, tear)
      const again = await open(dir, { engine: other(engine) })
      expect(keys(again), `tear ${tear}`).toEqual(expected)
      await again.close()
    }
    // A tear in the middle of the third record keeps exactly the first two.
    const dir = tempDir()
    const db = await openWithFaults(dir, { engine, durability: 'none', faults: {} })
    for (let i = 0; i < 4; i++) await put(db, `k${i}`, 'v'.repeat(100))
    // The same four records in a closed database tell the record size.
    const sized = tempDir('sized')
    const probe = await open(sized, { engine })
    for (let i = 0; i < 4; i++) await put(probe, `k${i}`, 'v'.repeat(100))
    await probe.close()
    const recordBytes = (statSync(join(sized, 'log', readdirSync(join(sized, 'log'))[0]!)).size - 32) / 4
    expect(Number.isInteger(recordBytes)).toBe(true)
    await simulateCrash(db, 2 * recordBytes + Math.floor(recordBytes / 2))
    const again = await open(dir, { engine })
    expect(keys(again)).toEqual(['k0', 'k1'])
    await again.close()
  })

  it('fake-disk crash at random moments: acknowledged commits survive, transactions stay whole', async () => {
    const random = rng(99)
    for (let round = 0; round < 15; round++) {
      const dir = tempDir()
      const db = await openWithFaults(dir, { engine, faults: {} })
      const c = db.collection('pairs')
      const acked: number[] = []
      let n = 0
      let stop = false
      const workers = Array.from({ length: 1 + Math.floor(random() * 16) }, async () => {
        while (!stop) {
          const i = n++
          const tx = db.begin()
          tx.put(c, ['a', i], i)
          tx.put(c, ['b', i], 'x'.repeat(i % 50))
          try {
            await tx.commit()
            acked.push(i)
          } catch (err) {
            expect((err as { code: string }).code).toBe('KESTREL_CLOSED')
            return
          }
        }
      })
      await new Promise((r) => setTimeout(r, random() * 30))
      stop = true
      await simulateCrash(db, Math.floor(random() * 400))
      await Promise.all(workers)
      const again = await open(dir, { engine: round % 2 ? engine : other(engine) })
      const tx = again.begin()
      const rc = again.collection('pairs')
      for (const i of acked) {
        expect(tx.get(rc, ['a', i]), `round ${round}: ack ${i}`).toBe(i)
      }
      const as = [...tx.scan(rc, { prefix: ['a'] })].map((e) => (e.key as [string, number])[1])
      const bs = [...tx.scan(rc, { prefix: ['b'] })].map((e) => (e.key as [string, number])[1])
      expect(bs).toEqual(as)
      await again.close()
    }
  })
  it("'relaxed': a quiet writer syncs within the interval, so a power loss after a quiet period loses nothing", async () => {
    const dir = tempDir()
    const db = await openWithFaults(dir, { engine, durability: 'relaxed', faults: {} })
    // A commit right after a synced one is acknowledged unsynced (the last sync is < 100 ms old);
    // retried until that holds (bounded), so the test never passes without the quiet sync.
    let unsyncedKey: string | undefined
    for (let attempt = 0; attempt < 20 && unsyncedKey === undefined; attempt++) {
      await new Promise((r) => setTimeout(r, 120))
      await put(db, `synced${attempt}`, attempt) // > 100 ms since the last sync: this batch syncs
      const syncs = db.stats().syncs
      await put(db, `quiet${attempt}`, attempt)
      if (db.stats().syncs === syncs) unsyncedKey = `quiet${attempt}`
    }
    expect(unsyncedKey, 'a commit acknowledged without an fdatasync').toBeDefined()
    const before = db.stats().syncs
    // Quiet: no commit for several intervals.
    await new Promise((r) => setTimeout(r, 400))
    expect(db.stats().syncs).toBe(before + 1)
    await simulateCrash(db)
    const again = await open(dir, { engine })
    expect(again.begin().get(again.collection('items'), unsyncedKey!)).toBe(Number(unsyncedKey!.slice(5)))
    await again.close()
  })

  it("'relaxed': a failing periodic fdatasync stops acknowledging (KESTREL_IO), and reopen recovers", async () => {
    const dir = tempDir()
    // The first batch sync is the open's first commit (> 100 ms after open); the second is the quiet sync.
    const db = await openWithFaults(dir, { engine, durability: 'relaxed', faults: { failFsyncAt: 2 } })
    let quietKey: string | undefined
    for (let attempt = 0; attempt < 20 && quietKey === undefined; attempt++) {
      await new Promise((r) => setTimeout(r, 120))
      const syncs = db.stats().syncs
      await put(db, `first${attempt}`, attempt)
      if (db.stats().syncs !== syncs + 1) continue
      const after = db.stats().syncs
      await put(db, `quiet${attempt}`, attempt)
      if (db.stats().syncs === after) quietKey = `quiet${attempt}`
    }
    expect(quietKey).toBeDefined()
    await new Promise((r) => setTimeout(r, 400))
    // Refused because the periodic sync failed in the quiet period, not by a sync of its own.
    const err = await expectCode(() => put(db, 'late', 0), 'KESTREL_IO')
    expect(err.message).toMatch(/earlier log write failed.*reopen/)
    await db.close().catch(() => undefined)
    const again = await open(dir, { engine })
    expect(keys(again)).toContain(quietKey)
    await again.close()
  })
  it('a failing final seal at close: commits the writer made durable resolve, and are on disk', async () => {
    const dir = tempDir()
    const db = await openWithFaults(dir, { engine, faults: { failSealSync: true } })
    const c = db.collection('items')
    const outcomes = Array.from({ length: 64 }, (_, i) => {
      const tx = db.begin()
      tx.put(c, `k${i}`, i)
      return tx.commit()
    })
    await expectCode(() => db.close(), 'KESTREL_IO')
    const settled = await Promise.allSettled(outcomes)
    const again = await open(dir, { engine })
    const rc = again.collection('items')
    settled.forEach((r, i) => {
      const present = again.begin().get(rc, `k${i}`) !== undefined
      expect(present, `k${i}: ${r.status}`).toBe(r.status === 'fulfilled')
    })
    expect(settled.filter((r) => r.status === 'fulfilled').length).toBe(64)
    await again.close()
  })
})
