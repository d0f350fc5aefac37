/**
 * Sharing a directory, with two participants in this process: `lib/` and `dist/` are two copies
 * of the package, each with its own registry, so each opens the directory as its own participant
 * (with two engines, exactly what two processes do, without process start-up; two native
 * participants of one process share one engine, as threads.test.ts tests). Checkpoints while another
 * participant reads an older one, backups under another participant's writes, an fdatasync
 * failure never resurrected, a dead slot reclaimed, freshness, engines mixed.
 */
import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { nativeAvailable, open, restore, type Database, type EngineName } from '../lib/index.js'
import { SharedFile, SHARED_FILE } from '../lib/shared/file.js'
import { injectPageFault, openWithFaults } from '../lib/testing.js'
import { ENGINES, expectCode, other, tempDir } from './helpers.js'

type Lib = typeof import('../lib/index.js')
const dist = (): Promise<Lib> => import(new URL('../dist/index.js', import.meta.url).href) as Promise<Lib>

const value = (i: number, round: number): { i: number; round: number; pad: string } => ({ i, round, pad: 'p'.repeat(200 + (i % 50)) })

async function writeAll(db: Database, n: number, round: number): Promise<void> {
  const c = db.collection<ReturnType<typeof value>>('items')
  for (let i = 0; i < n; i += 500) {
    await db.transaction((tx) => {
      for (let j = i; j < Math.min(n, i + 500); j++) tx.put(c, j, value(j, round))
    })
  }
}

describe.each(ENGINES)('two participants in one process [%s first]', (engine) => {
  const second = ENGINES.length > 1 ? other(engine) : engine

  it("a commit resolved in one participant is seen by the other's next transaction, and both commit in one order", async () => {
    const dir = tempDir()
    const a = await open(dir, { engine })
    const b = await (await dist()).open(dir, { engine: second })
    const ca = a.collection<number>('n')
    const cb = b.collection<number>('n')
    const ids: bigint[] = []
    for (let i = 0; i < 20; i++) {
      const [x, y, o, oc] = i % 2 ? [a, ca, b, cb] : [b, cb, a, ca]
      const tx = x.begin()
      tx.put(y, i, i)
      ids.push((await tx.commit()).commitId)
      // The other sees it at once (freshness), in its next transaction.
      expect(o.begin().get(oc, i)).toBe(i)
    }
    // One gap-free order of commit ids, whoever committed.
    expect(ids).toEqual(ids.map((_, i) => ids[0]! + BigInt(i)))
    await b.close()
    await a.close()
  })

  it('an opener sees every commit that a participant writing alone acknowledged before the open began', async () => {
    const dir = tempDir()
    const a = await open(dir, { engine })
    const c = a.collection<number>('n')
    // a writes on and on, alone: it holds the write lock throughout.
    let stop = false
    let seq = 0
    const acked: number[] = []
    const writers = Array.from({ length: 4 }, async () => {
      // Bounded by `stop`.
      while (!stop) {
        const i = seq++
        await a.transaction((tx) => tx.put(c, `k${i}`, i))
        acked.push(i)
      }
    })
    while (acked.length < 200) await new Promise((r) => setImmediate(r))
    const before = [...acked]
    const b = await (await dist()).open(dir, { engine: second })
    const view = b.snapshot()
    const missing = before.filter((i) => view.get(b.collection<number>('n'), `k${i}`) !== i)
    view.close()
    stop = true
    await Promise.all(writers)
    expect(missing).toEqual([])
    await b.close()
    await a.close()
  })

  it('a reader pinned at an old checkpoint keeps reading right while the other participant checkpoints twice', async () => {
    const dir = tempDir()
    const N = 3000
    const a = await open(dir, { engine, checkpointIntervalMs: 0, cacheBytes: 1 << 20 })
    await writeAll(a, N, 1)
    await a.checkpoint()
    await a.scavenge() // retire what it can: those records are read from a's checkpoint's pages
    const view = a.snapshot()
    const b = await (await dist()).open(dir, { engine: second, checkpointIntervalMs: 0 })
    for (const round of [2, 3]) {
      await writeAll(b, N, round)
      await b.checkpoint()
    }
    const items = a.collection<ReturnType<typeof value>>('items')
    for (let i = 0; i < N; i += 7) expect(view.get(items, i), `old view, record ${i}`).toEqual(value(i, 1))
    view.close()
    const now = a.begin()
    for (let i = 0; i < N; i += 7) expect(now.get(items, i), `newest, record ${i}`).toEqual(value(i, 3))
    expect((await a.verify()).problems).toEqual([])
    expect((await b.verify()).problems).toEqual([])
    await b.close()
    await a.close()
    const again = await open(dir, { engine: second })
    expect([...again.scan(again.collection('items'))]).toHaveLength(N)
    await again.close()
  })

  it('a backup from one participant while the other writes and checkpoints holds exactly its commits', async () => {
    const dir = tempDir()
    const a = await open(dir, { engine })
    const b = await (await dist()).open(dir, { engine: second, checkpointBytes: 64 << 10, checkpointIntervalMs: 20 })
    await writeAll(a, 2000, 1)
    const cb = b.collection<number>('bg')
    let stop = false
    let written = 0
    const writer = (async () => {
      while (!stop) {
        await b.transaction((tx) => tx.put(cb, written, written))
        written++
      }
    })()
    const dest = tempDir('backup')
    const r = await a.backup(dest)
    stop = true
    await writer
    const restored = tempDir('restored')
    const report = await restore(dest, restored)
    expect(report.ok).toBe(true)
    const copy = await open(restored, { engine: second })
    expect(copy.lastCommitId()).toBe(r.commitId)
    expect([...copy.scan(copy.collection('items'))]).toHaveLength(2000)
    const bg = [...copy.scan(copy.collection<number>('bg'))].map((e) => e.value)
    // A prefix of what b committed: those before the backup's commit id, all of them.
    expect(bg).toEqual(bg.map((_, i) => i))
    await copy.close()
    await b.close()
    await a.close()
  })

  it('an fdatasync failure in one participant is never resurrected by the other', async () => {
    const dir = tempDir()
    const ok = await open(dir, { engine })
    const c = ok.collection<string>('k')
    await ok.transaction((tx) => tx.put(c, 'before', 'x'))
    const faulty = await ((await import(new URL('../dist/testing.js', import.meta.url).href)) as typeof import('../lib/testing.js')).openWithFaults(dir, {
      engine: second,
      faults: { failFsyncAt: 1 },
    })
    const fc = faulty.collection<string>('k')
    await expectCode(() => faulty.transaction((tx) => tx.put(fc, 'failed', 'x')), 'KESTREL_IO')
    // The other participant writes on: the failed batch is not adopted.
    await ok.transaction((tx) => tx.put(c, 'after', 'y'))
    expect(ok.begin().get(c, 'failed')).toBeUndefined()
    await faulty.close().catch(() => {})
    await ok.close()
    const again = await open(dir, { engine: second })
    const ac = again.collection<string>('k')
    expect(again.begin().get(ac, 'failed')).toBeUndefined()
    expect(again.begin().get(ac, 'before')).toBe('x')
    expect(again.begin().get(ac, 'after')).toBe('y')
    await again.close()
  })
})

describe.each(ENGINES)('a checkpoint that crashes in one participant [%s]', (engine) => {
  for (const fault of ['losePagesBeforeMeta', 'tearMeta', 'failMetaSync'] as const) {
    it(`${fault}: the other participant checkpoints on top of the last whole one; verify passes; nothing is lost`, async () => {
      const dir = tempDir()
      const a = await openWithFaults(dir, { engine, faults: {}, checkpointIntervalMs: 0 })
      const b = await (await dist()).open(dir, { engine: ENGINES.length > 1 ? other(engine) : engine, checkpointIntervalMs: 0 })
      await writeAll(a, 1000, 1)
      await a.checkpoint()
      await writeAll(b, 1000, 2)
      injectPageFault(a, fault)
      await expectCode(() => a.checkpoint(), 'KESTREL_IO')
      await writeAll(a, 500, 3)
      await b.checkpoint()
      expect((await b.verify()).problems).toEqual([])
      await a.checkpoint()
      expect((await a.verify()).problems).toEqual([])
      const items = b.collection<ReturnType<typeof value>>('items')
      for (let i = 0; i < 1000; i += 11) expect(b.begin().get(items, i)).toEqual(value(i, i < 500 ? 3 : 2))
      await b.close()
      await a.close()
      const again = await open(dir, { engine })
      const c = again.collection<ReturnType<typeof value>>('items')
      for (let i = 0; i < 1000; i += 11) expect(again.begin().get(c, i)).toEqual(value(i, i < 500 ? 3 : 2))
      expect((await again.verify()).problems).toEqual([])
      await again.close()
    })
  }
})

describe('the SHARED file', () => {
  it('the log block is read through a shared mapping where the native binding is loaded: a write through another descriptor shows at once, torn copies are told apart', () => {
    const dir = tempDir()
    mkdirSync(dir, { recursive: true })
    const writer = new SharedFile(dir)
    writer.reset()
    const reader = new SharedFile(dir)
    const tail = (lsn: number) => ({ lsn, segment: '00000000000000000001.klog', offset: 32 + lsn * 100 })
    writer.writeLog({ tail: tail(7), abandoned: false })
    expect(reader.readLog()).toEqual({ tail: tail(7), abandoned: false })
    // The unchecked glance needs the mapping (without it: Infinity, and readers take readLog).
    expect(reader.glanceLogLsn()).toBe(nativeAvailable() ? 7 : Number.POSITIVE_INFINITY)
    writer.writeLog({ tail: tail(8), abandoned: true })
    expect(reader.glanceLogLsn()).toBe(nativeAvailable() ? 8 : Number.POSITIVE_INFINITY)
    expect(reader.readLog()).toEqual({ tail: tail(8), abandoned: true })
    // A first copy torn by a rewrite in progress: the second, whole copy is read.
    const fd = openSync(join(dir, SHARED_FILE), 'r+')
    writeSync(fd, Buffer.from([0xff, 0xff]), 0, 2, 20)
    expect(reader.readLog()).toEqual({ tail: tail(8), abandoned: true })
    closeSync(fd)
    reader.close()
    writer.close()
  })
})

describe('slots', () => {
  it("a dead participant's slot is reclaimed, also when its pid now belongs to a live process", async () => {
    const dir = tempDir()
    const engine: EngineName = ENGINES[0]!
    const db = await open(dir, { engine })
    const file = new SharedFile(dir)
    // A slot as a process that died left it — with the pid of a process that is very much alive
    // (this one): liveness is the slot's lock, never the pid.
    const mine = file.readSlots().find((s) => s !== undefined)!
    file.writeSlot(17, { ...mine, nonce: 99n, pid: process.pid, pinnedSeq: 0, appliedLsn: 0, needLsn: 0 })
    const b = await (await dist()).open(dir, { engine: ENGINES[ENGINES.length - 1]! })
    // Reclaimed by the opener: it no longer holds back trimming or page reuse.
    expect(file.readSlots()[17]).toBeUndefined()
    expect(file.readSlots().filter((s) => s !== undefined)).toHaveLength(2)
    await b.close()
    await db.close()
    file.close()
    expect(readFileSync(join(dir, SHARED_FILE)).length).toBeGreaterThan(0)
  })

  it('an opener of another network namespace is refused while a fresh slot of it is there', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine: ENGINES[0]! })
    const file = new SharedFile(dir)
    const mine = file.readSlots().find((s) => s !== undefined)!
    // A participant of another namespace: its lock is invisible from here, only its heartbeat shows.
    file.writeSlot(3, { ...mine, nonce: 7n, netns: mine.netns + 1, heartbeatMs: Date.now() })
    const err = await expectCode(async () => (await dist()).open(dir, { engine: ENGINES[0]! }), 'KESTREL_LOCKED')
    expect(err.message).toContain('network namespace')
    file.writeSlot(3, undefined)
    file.close()
    await db.close()
  })
})
