/**
 * Closing a handle while commits are in flight, on both engines and every durability mode: a
 * commit submitted before `close()` reports what the disk holds (resolved and written, or
 * rejected and absent), and `close()` resolves only after all of them settled.
 */
import { describe, expect, it } from 'vitest'
import { open, type Database, type Durability } from '../lib/index.js'
import { ENGINES, tempDir } from './helpers.js'

const ROUNDS = 20
const COMMITS = 64

type Outcome = { ok: true } | { ok: false; code: string }

/** Start `COMMITS` one-key transactions; each outcome is logged in `events` when it settles. */
function startCommits(db: Database, events: string[], prefix = 'k', gate?: Promise<void>): Array<Promise<Outcome>> {
  const c = db.collection<number>('c')
  return Array.from({ length: COMMITS }, (_, i) =>
    db
      .transaction(
        async (tx) => {
          if (gate) await gate
          tx.put(c, prefix + i, i)
        },
        { retries: 0 },
      )
      .then(
        (): Outcome => {
          events.push('settled')
          return { ok: true }
        },
        (err: { code: string }): Outcome => {
          events.push('settled')
          return { ok: false, code: err.code }
        },
      ),
  )
}

/** Reopen `dir` and say which of the keys `prefix + i` are there. */
async function present(dir: string, engine: string, prefix = 'k'): Promise<boolean[]> {
  const db = await open(dir, { engine: engine as 'ts' })
  const view = db.snapshot()
  const c = db.collection<number>('c')
  const out = Array.from({ length: COMMITS }, (_, i) => view.get(c, prefix + i) === i)
  view.close()
  await db.close()
  return out
}

describe.each(ENGINES)('close() with commits in flight [%s]', (engine) => {
  /** 20 rounds: 64 commits, one setImmediate, close(); then the disk is compared with the outcomes. */
  async function rounds(durability: Durability, withBackup: boolean): Promise<void> {
    for (let round = 0; round < ROUNDS; round++) {
      const dir = tempDir(`${durability}-${withBackup ? 'b' : ''}${round}`)
      const db = await open(dir, { engine, durability })
      if (withBackup) await db.transaction((tx) => tx.put(db.collection('seed'), 's', 'x'.repeat(4096)))
      const backup = withBackup ? db.backup(tempDir(`backup-${durability}-${round}`), { bytesPerSec: 0 }) : undefined
      const events: string[] = []
      const outcomes = startCommits(db, events)
      await new Promise((r) => setImmediate(r))
      await db.close()
      events.push('closed')
      const results = await Promise.all(outcomes)
      if (backup) await backup
      // close() resolved after every commit settled.
      expect(events).toHaveLength(COMMITS + 1)
      expect(events.at(-1)).toBe('closed')
      // Every commit was submitted before close(): each one is acknowledged, and on disk.
      for (const r of results) expect(r).toEqual({ ok: true })
      expect(await present(dir, engine)).toEqual(results.map((r) => r.ok))
    }
  }

  for (const durability of ['sync', 'relaxed', 'none'] as Durability[]) {
    it(`${durability}: outcomes match the disk, close() resolves after them`, () => rounds(durability, false))
  }

  it('while a backup runs (sync, relaxed, none): outcomes match the disk, close() resolves after them', async () => {
    for (const durability of ['sync', 'relaxed', 'none'] as Durability[]) await rounds(durability, true)
  })

  it('commits not submitted when close() is called reject with KESTREL_CLOSED and are not written', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    const events: string[] = []
    let openGate!: () => void
    const gate = new Promise<void>((r) => {
      openGate = r
    })
    const submitted = startCommits(db, events, 'a')
    const late = startCommits(db, events, 'b', gate)
    await new Promise((r) => setImmediate(r))
    const closing = db.close()
    openGate()
    await closing
    events.push('closed')
    const early = await Promise.all(submitted)
    const after = await Promise.all(late)
    expect(events.at(-1)).toBe('closed')
    for (const r of early) expect(r).toEqual({ ok: true })
    for (const r of after) expect(r).toEqual({ ok: false, code: 'KESTREL_CLOSED' })
    expect(await present(dir, engine, 'a')).toEqual(early.map((r) => r.ok))
    expect(await present(dir, engine, 'b')).toEqual(after.map((r) => r.ok))
  })

  it('closing one handle leaves the commits of another handle of the same directory alone', async () => {
    const dir = tempDir()
    const a = await open(dir, { engine })
    const b = await open(dir, { engine })
    const events: string[] = []
    const ofA = startCommits(a, events, 'a')
    const ofB = startCommits(b, events, 'b')
    await new Promise((r) => setImmediate(r))
    await a.close()
    const resultsA = await Promise.all(ofA)
    const resultsB = await Promise.all(ofB)
    for (const r of [...resultsA, ...resultsB]) expect(r).toEqual({ ok: true })
    // b is still open and keeps committing; a refuses.
    await b.transaction((tx) => tx.put(b.collection<number>('c'), 'after', 1))
    await expect(a.transaction((tx) => tx.put(a.collection('c'), 'x', 1))).rejects.toMatchObject({ code: 'KESTREL_CLOSED' })
    await b.close()
    expect(await present(dir, engine, 'a')).toEqual(resultsA.map((r) => r.ok))
    expect(await present(dir, engine, 'b')).toEqual(resultsB.map((r) => r.ok))
  })

  it('a transaction or read view ended after its handle closed does not throw', async () => {
    const db = await open(tempDir(), { engine })
    const c = db.collection<number>('c')
    const tx = db.begin()
    tx.put(c, 'x', 1)
    const view = db.snapshot()
    await db.close()
    expect(() => tx.rollback()).not.toThrow()
    expect(() => view.close()).not.toThrow()
  })
})
