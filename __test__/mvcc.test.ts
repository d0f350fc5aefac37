/**
 * Snapshot isolation, first-committer-wins, merges, savepoints, read views and time travel, on
 * both engines. Anomaly names follow the Hermitage suite (G0, G1a, G1b, G1c, OTV, PMP, P4,
 * G-single, G2-item).
 */
import { describe, expect, it } from 'vitest'
import { ConflictError, open, orderedMapResolver, type Database, type Transaction } from '../lib/index.js'
import { holdSyncs, openWithFaults, simulateCrash } from '../lib/testing.js'
import { ENGINES, expectCode, other, tempDir } from './helpers.js'

async function seeded(engine: string, opts: object = {}): Promise<Database> {
  const db = await open(tempDir(), { engine: engine as 'native', ...opts })
  const t = db.collection<number>('test')
  await db.transaction((tx) => {
    tx.put(t, 1, 10)
    tx.put(t, 2, 20)
  })
  return db
}

const conflict = (p: Promise<unknown>): Promise<unknown> => expect(p).rejects.toBeInstanceOf(ConflictError)

describe.each(ENGINES)('snapshot isolation [%s]', (engine) => {
  it('G0 dirty write: the second writer of the same keys conflicts', async () => {
    const db = await seeded(engine)
    const t = db.collection<number>('test')
    const t1 = db.begin()
    const t2 = db.begin()
    t1.put(t, 1, 11)
    t2.put(t, 1, 12)
    t1.put(t, 2, 21)
    t2.put(t, 2, 22)
    await t1.commit()
    await conflict(t2.commit())
    const r = db.begin()
    expect([r.get(t, 1), r.get(t, 2)]).toEqual([11, 21])
    await db.close()
  })

  it('G1a aborted reads and G1b intermediate reads are impossible', async () => {
    const db = await seeded(engine)
    const t = db.collection<number>('test')
    const t1 = db.begin()
    t1.put(t, 1, 101)
    const t2 = db.begin()
    expect(t2.get(t, 1)).toBe(10)
    t1.rollback()
    expect(t2.get(t, 1)).toBe(10)
    const t3 = db.begin()
    t3.put(t, 1, 101)
    t3.put(t, 1, 11)
    const t4 = db.begin()
    expect(t4.get(t, 1)).toBe(10)
    await t3.commit()
    expect(t4.get(t, 1)).toBe(10) // its snapshot does not move
    expect(db.begin().get(t, 1)).toBe(11) // never 101
    await db.close()
  })

  it('G1c circular information flow and G-single read skew are impossible', async () => {
    const db = await seeded(engine)
    const t = db.collection<number>('test')
    const t1 = db.begin()
    const t2 = db.begin()
    t1.put(t, 1, 11)
    t2.put(t, 2, 22)
    expect(t1.get(t, 2)).toBe(20)
    expect(t2.get(t, 1)).toBe(10)
    await t1.commit()
    await t2.commit()
    // Read skew: a reader sees x before, then y after another commit — must see both old.
    const r = db.begin()
    expect(r.get(t, 1)).toBe(11)
    await db.transaction((tx) => {
      tx.put(t, 1, 12)
      tx.put(t, 2, 18)
    })
    expect(r.get(t, 2)).toBe(22)
    expect([...r.scan(t)].map((e) => e.value)).toEqual([11, 22])
    await db.close()
  })

  it('G-single write forms: writing a key changed after the snapshot conflicts, also through a predicate', async () => {
    const db = await seeded(engine)
    const t = db.collection<number>('test')
    const t1 = db.begin()
    expect(t1.get(t, 1)).toBe(10)
    await db.transaction((tx) => {
      tx.put(t, 1, 12)
      tx.put(t, 2, 18)
    })
    t1.put(t, 2, 0)
    await conflict(t1.commit())
    // Predicate form: delete every row matching a predicate while another commit changes one.
    const t2 = db.begin()
    const victims = [...t2.scan(t)].filter((e) => (e.value as number) > 15)
    await db.transaction((tx) => tx.put(t, 2, 19))
    for (const v of victims) t2.delete(t, v.key as number)
    await conflict(t2.commit())
    await db.close()
  })

  it('retainHistory.ms keeps commits of the window readable', async () => {
    const db = await open(tempDir(), { engine, retainHistory: { ms: 60_000 } })
    const t = db.collection<number>('t')
    const first = await db
      .transaction(async (tx) => {
        tx.put(t, 'x', 1)
      })
      .then(() => db.lastCommitId())
    for (let i = 2; i <= 5; i++) await db.transaction((tx) => tx.put(t, 'x', i))
    await new Promise((r) => setImmediate(r))
    const v = db.at(first)
    expect(v.get(t, 'x')).toBe(1)
    v.close()
    await db.close()
  })

  it('OTV and P4 lost update: one of two read-modify-writes conflicts', async () => {
    const db = await seeded(engine)
    const t = db.collection<number>('test')
    const t1 = db.begin()
    const t2 = db.begin()
    t1.put(t, 1, t1.get(t, 1)! + 1)
    t2.put(t, 1, t2.get(t, 1)! + 1)
    await t1.commit()
    await conflict(t2.commit())
    expect(db.begin().get(t, 1)).toBe(11)
    // OTV: a reader keeps seeing a whole committed state while a conflicting writer fails.
    const t3 = db.begin()
    const t4 = db.begin()
    t3.put(t, 1, 100)
    t3.put(t, 2, 200)
    t4.put(t, 1, 300)
    const reader = db.begin()
    await t3.commit()
    await conflict(t4.commit())
    expect([reader.get(t, 1), reader.get(t, 2)]).toEqual([11, 20])
    await db.close()
  })

  it('PMP: a predicate read does not see rows inserted after the snapshot; write-predicate form conflicts', async () => {
    const db = await seeded(engine)
    const t = db.collection<number>('test')
    const t1 = db.begin()
    expect([...t1.scan(t)].filter((e) => e.value === 30)).toEqual([])
    await db.transaction((tx) => tx.put(t, 3, 30))
    expect([...t1.scan(t)].filter((e) => e.value === 30)).toEqual([])
    // Write predicate: t2 rewrites every row it sees while t3 deletes one of them first.
    const t2 = db.begin()
    for (const e of t2.scan(t)) t2.put(t, e.key as number, (e.value as number) + 10)
    await db.transaction((tx) => tx.delete(t, 2))
    await conflict(t2.commit())
    await db.close()
  })

  it('G2-item write skew is allowed (snapshot isolation, documented)', async () => {
    const db = await seeded(engine)
    const t = db.collection<number>('test')
    const t1 = db.begin()
    const t2 = db.begin()
    expect(t1.get(t, 1)! + t1.get(t, 2)!).toBe(30)
    expect(t2.get(t, 1)! + t2.get(t, 2)!).toBe(30)
    t1.put(t, 1, 0)
    t2.put(t, 2, 0)
    await t1.commit()
    await t2.commit()
    const r = db.begin()
    expect([r.get(t, 1), r.get(t, 2)]).toEqual([0, 0])
    await db.close()
  })

  it('I1: a commit whose fsync is held is invisible to everyone, and a writer of its key conflicts', async () => {
    const db = await openWithFaults(tempDir(), { engine, faults: {} })
    const t = db.collection<string>('test')
    await db.transaction((tx) => tx.put(t, 'k', 'before'))
    holdSyncs(db, true)
    const held = db.begin()
    held.put(t, 'k', 'after')
    held.put(t, 'other', 'x')
    const pending = held.commit()
    let settled = false
    void pending.then(() => {
      settled = true
    })
    await new Promise((r) => setTimeout(r, 50))
    expect(settled).toBe(false)
    // Readers and new transactions do not see it…
    expect(db.begin().get(t, 'k')).toBe('before')
    expect(db.snapshot().get(t, 'other')).toBeUndefined()
    expect(db.lastCommitId()).toBe(1n)
    // …and a transaction that starts meanwhile and writes the same key conflicts.
    const racer = db.begin()
    racer.put(t, 'k', 'racer')
    await conflict(racer.commit())
    holdSyncs(db, false)
    expect((await pending).commitId).toBe(2n)
    expect(db.begin().get(t, 'k')).toBe('after')
    await db.close()
  })

  it('20 concurrent appends from two handles keep 20 entries; 20 read-modify-writes keep 20 by retrying', async () => {
    const dir = tempDir()
    const a = await open(dir, { engine })
    const b = await open(dir, { engine })
    const la = a.collection<number[]>('threads')
    const lb = b.collection<number[]>('threads')
    await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).transaction((tx) => tx.append(i % 2 ? la : lb, 'thread-7', i), { retries: 0 })))
    expect(
      a
        .begin()
        .get(la, 'thread-7')!
        .slice()
        .sort((x, y) => x - y),
    ).toEqual(Array.from({ length: 20 }, (_, i) => i))
    let conflicts = 0
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 ? a : b)
          .transaction(
            async (tx) => {
              const c = i % 2 ? la : lb
              const list = tx.get(c, 'rmw') ?? []
              await new Promise((r) => setTimeout(r, 1))
              tx.put(c, 'rmw', [...list, i])
            },
            { retries: 100 },
          )
          .catch((e) => {
            conflicts++
            throw e
          }),
      ),
    )
    expect(conflicts).toBe(0)
    expect(b.begin().get(lb, 'rmw')!.length).toBe(20)
    await a.close()
    await b.close()
    const again = await open(dir, { engine: other(engine) })
    expect(again.begin().get(again.collection<number[]>('threads'), 'thread-7')!.length).toBe(20)
    await again.close()
  })

  it('increments never conflict with each other and all take effect; a plain write does conflict', async () => {
    const db = await open(tempDir(), { engine })
    const c = db.collection<number>('counters')
    const txs = Array.from({ length: 10 }, () => db.begin())
    for (const [i, tx] of txs.entries()) tx.increment(c, 'hits', i + 1)
    await Promise.all(txs.map((tx) => tx.commit()))
    expect(db.begin().get(c, 'hits')).toBe(55)
    const merge = db.begin()
    const plain = db.begin()
    merge.increment(c, 'hits', 1)
    plain.put(c, 'hits', 0)
    await plain.commit()
    await conflict(merge.commit())
    await expectCode(() => db.begin().increment(c, 'hits', NaN), 'KESTREL_INVALID_ARGUMENT')
    await db.close()
  })

  it('resolver: ZODB ordered-map rules (different inserts merge; same key, delete vs change conflict)', async () => {
    const db = await open(tempDir(), { engine })
    const m = db.collection<Record<string, number>>('maps', { resolver: orderedMapResolver })
    await db.transaction((tx) => tx.put(m, 'tree', { a: 1, b: 2 }))
    const t1 = db.begin()
    const t2 = db.begin()
    t1.put(m, 'tree', { ...t1.get(m, 'tree')!, c: 3 })
    t2.put(m, 'tree', { ...t2.get(m, 'tree')!, d: 4 })
    await t1.commit()
    await t2.commit()
    expect(db.begin().get(m, 'tree')).toEqual({ a: 1, b: 2, c: 3, d: 4 })
    const same1 = db.begin()
    const same2 = db.begin()
    same1.put(m, 'tree', { ...same1.get(m, 'tree')!, e: 5 })
    same2.put(m, 'tree', { ...same2.get(m, 'tree')!, e: 6 })
    await same1.commit()
    await conflict(same2.commit())
    const del = db.begin()
    const chg = db.begin()
    const { a: _drop, ...withoutA } = del.get(m, 'tree')!
    del.put(m, 'tree', withoutA)
    chg.put(m, 'tree', { ...chg.get(m, 'tree')!, a: 100 })
    await del.commit()
    await conflict(chg.commit())
    await db.close()
  })

  it('a resolver that returns garbage or throws is a clear error', async () => {
    const db = await open(tempDir(), { engine })
    const bad = db.collection<unknown>('bad', { resolver: () => () => 1 })
    const boom = db.collection<unknown>('boom', {
      resolver: () => {
        throw new Error('nope')
      },
    })
    for (const c of [bad, boom]) {
      await db.transaction((tx) => tx.put(c, 'k', 1))
      const t1 = db.begin()
      const t2 = db.begin()
      t1.put(c, 'k', 2)
      t2.put(c, 'k', 3)
      await t1.commit()
      await expectCode(() => t2.commit(), 'KESTREL_INVALID_ARGUMENT')
    }
    await expectCode(() => db.collection('x', { resolver: 5 as never }), 'KESTREL_INVALID_ARGUMENT')
    await db.close()
  })

  it('savepoints: nested rollbackTo/release; reads and scans see exactly the writes in force', async () => {
    const db = await open(tempDir(), { engine })
    const c = db.collection<string>('sp')
    const tx = db.begin()
    tx.put(c, 'a', 'a1')
    const sp1 = tx.savepoint()
    tx.put(c, 'b', 'b1')
    tx.put(c, 'a', 'a2')
    const sp2 = tx.savepoint()
    tx.delete(c, 'a')
    tx.put(c, 'c', 'c1')
    expect([...tx.scan(c)].map((e) => e.key)).toEqual(['b', 'c'])
    tx.rollbackTo(sp2)
    expect(tx.get(c, 'a')).toBe('a2')
    expect([...tx.scan(c)].map((e) => `${e.key}=${e.value}`)).toEqual(['a=a2', 'b=b1'])
    tx.rollbackTo(sp2) // still usable after a rollback to it
    tx.release(sp2)
    await expectCode(() => tx.rollbackTo(sp2), 'KESTREL_INVALID_ARGUMENT')
    tx.put(c, 'd', 'd1')
    tx.rollbackTo(sp1)
    expect([...tx.scan(c)].map((e) => `${e.key}=${e.value}`)).toEqual(['a=a1'])
    const sp3 = tx.savepoint()
    tx.put(c, 'e', 'e1')
    tx.release(sp3)
    await tx.commit()
    expect([...db.begin().scan(c)].map((e) => `${e.key}=${e.value}`)).toEqual(['a=a1', 'e=e1'])
    await expectCode(() => tx.savepoint(), 'KESTREL_TRANSACTION_DONE')
    await db.close()
  })

  it('read views pin a snapshot across awaits; time travel inside retention, KESTREL_HISTORY_GONE beyond', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine, retainHistory: { commits: 5 } })
    const c = db.collection<number>('tt')
    const ids: bigint[] = []
    for (let i = 0; i < 10; i++) {
      const tx = db.begin()
      tx.put(c, 'x', i)
      ids.push((await tx.commit()).commitId)
    }
    const view = db.snapshot()
    await db.transaction((tx) => tx.put(c, 'x', 99))
    await new Promise((r) => setTimeout(r, 20))
    expect(view.get(c, 'x')).toBe(9)
    view.close()
    await expectCode(() => view.get(c, 'x'), 'KESTREL_CLOSED')
    await new Promise((r) => setImmediate(r))
    const old = db.at(ids[7]!)
    expect(old.get(c, 'x')).toBe(7)
    expect([...old.scan(c)].map((e) => e.value)).toEqual([7])
    old.close()
    await expectCode(() => db.at(ids[0]!), 'KESTREL_HISTORY_GONE')
    await expectCode(() => db.at(1000n), 'KESTREL_INVALID_ARGUMENT')
    // A checkpoint never covers the retention window: its older versions live in the log,
    // which is trimmed only up to the checkpoint.
    await db.checkpoint()
    expect(db.stats().checkpointLsn).toBeLessThanOrEqual(Number(db.lastCommitId()) - 5)
    expect(db.at(ids[7]!).get(c, 'x')).toBe(7)
    await db.close()
    const again = await open(dir, { engine: other(engine), retainHistory: { commits: 5 } })
    expect(again.at(ids[8]!).get(again.collection<number>('tt'), 'x')).toBe(8)
    await expectCode(() => again.at(ids[1]!), 'KESTREL_HISTORY_GONE')
    await again.close()
  })

  it('retries: 0 hands the conflict to the caller; bad use of transactions', async () => {
    const db = await seeded(engine)
    const t = db.collection<number>('test')
    const blocker = db.begin()
    blocker.put(t, 1, 0)
    const p = db.transaction(
      async (tx) => {
        tx.put(t, 1, tx.get(t, 1)! + 1)
        await blocker.commit()
      },
      { retries: 0 },
    )
    await conflict(p)
    const tx = db.begin()
    tx.put(t, 9, 9)
    await tx.commit()
    await expectCode(() => tx.commit(), 'KESTREL_TRANSACTION_DONE')
    await expectCode(() => tx.get(t, 9), 'KESTREL_TRANSACTION_DONE')
    const l = db.collection<unknown>('l')
    const mixed = db.begin()
    mixed.append(l as never, 'k', 1)
    await expectCode(() => mixed.increment(l, 'k', 1), 'KESTREL_INVALID_ARGUMENT')
    await db.transaction((x) => x.put(l, 's', 'text'))
    await expectCode(() => db.begin().append(l as never, 's', 1), 'KESTREL_INVALID_ARGUMENT')
    await db.close()
  })

  it('merges survive a crash: replay reproduces them exactly', async () => {
    const dir = tempDir()
    const db = await openWithFaults(dir, { engine, faults: {} })
    const l = db.collection<number[]>('l')
    const n = db.collection<number>('n')
    await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        db.transaction((tx) => {
          tx.append(l, 'list', i)
          tx.increment(n, 'sum', i)
        }),
      ),
    )
    const list = db.begin().get(l, 'list')
    await simulateCrash(db, 0)
    const again = await open(dir, { engine: other(engine) })
    expect(again.begin().get(again.collection<number[]>('l'), 'list')).toEqual(list)
    expect(again.begin().get(again.collection<number>('n'), 'sum')).toBe(435)
    await again.close()
  })
})

describe.each(ENGINES)('a transaction commits at most once [%s]', (engine) => {
  /** One append and one increment: after one commit the list holds the item once, the counter is 1. */
  const write = (db: Database, tx: Transaction): void => {
    tx.append(db.collection<string[]>('list'), 'k', 'item')
    tx.increment(db.collection<number>('counter'), 'n', 1)
  }
  const ONCE = [['item'], 1]

  /** The merged values after `fn`, read in this handle and again after a reopen (other engine). */
  async function landed(fn: (db: Database) => Promise<void>): Promise<unknown[]> {
    const dir = tempDir()
    const db = await open(dir, { engine })
    await fn(db)
    const read = (d: Database): unknown[] => {
      const view = d.snapshot()
      const out = [view.get(d.collection('list'), 'k'), view.get(d.collection('counter'), 'n')]
      view.close()
      return out
    }
    const before = read(db)
    await db.close()
    const again = await open(dir, { engine: other(engine) })
    const after = read(again)
    await again.close()
    return [before, after]
  }

  it('a second commit() rejects with KESTREL_TRANSACTION_DONE, in flight or after; the writes land once', async () => {
    expect(
      await landed(async (db) => {
        const tx = db.begin()
        write(db, tx)
        const first = tx.commit()
        const err = await expectCode(() => tx.commit(), 'KESTREL_TRANSACTION_DONE')
        expect(err.message).toMatch(/in flight/)
        expect((await first).commitId).toBeGreaterThan(0n)
        await expectCode(() => tx.commit(), 'KESTREL_TRANSACTION_DONE')
        expect(tx.finished).toBe(true)
      }),
    ).toEqual([ONCE, ONCE])
  })

  it('rollback() while the commit is in flight is refused and says why; the commit lands once', async () => {
    expect(
      await landed(async (db) => {
        const tx = db.begin()
        write(db, tx)
        const pending = tx.commit()
        const err = await expectCode(() => tx.rollback(), 'KESTREL_TRANSACTION_DONE')
        expect(err.message).toMatch(/in flight/)
        await pending
        await expectCode(() => tx.rollback(), 'KESTREL_TRANSACTION_DONE')
        // A commit that failed left its transaction rolled back: rollback() does nothing then.
        const loser = db.begin()
        loser.put(db.collection('other'), 'x', 'lost')
        await db.transaction((t) => t.put(db.collection('other'), 'x', 'winner'))
        await conflict(loser.commit())
        expect(() => loser.rollback()).not.toThrow()
        await expectCode(() => loser.commit(), 'KESTREL_TRANSACTION_DONE')
      }),
    ).toEqual([ONCE, ONCE])
  })

  it('db.transaction whose body commits without awaiting commits once and reports that commit', async () => {
    expect(
      await landed(async (db) => {
        const result = await db.transaction((tx) => {
          write(db, tx)
          void tx.commit()
          return 'body done'
        })
        expect(result).toBe('body done')
      }),
    ).toEqual([ONCE, ONCE])
    const db = await open(tempDir(), { engine })
    const c = db.collection<number>('c')
    // The body's commit fails: db.transaction rejects with its error (retries: 0) …
    const blocker = db.begin()
    blocker.put(c, 'x', 1)
    await conflict(
      db.transaction(
        async (tx) => {
          tx.put(c, 'x', 2)
          await blocker.commit()
          void tx.commit()
        },
        { retries: 0 },
      ),
    )
    // … or, with retries, runs the body again until its commit lands (once).
    let runs = 0
    const racer = db.begin()
    racer.put(c, 'x', 3)
    await db.transaction(async (tx) => {
      runs++
      tx.put(c, 'x', tx.get(c, 'x')! * 10)
      if (runs === 1) await racer.commit()
      void tx.commit()
    })
    expect(runs).toBe(2)
    expect(db.snapshot().get(c, 'x')).toBe(30)
    // A body that commits and then throws: its error, and no second run.
    runs = 0
    await expect(
      db.transaction((tx) => {
        runs++
        tx.put(c, 'y', 1)
        void tx.commit()
        throw new Error('after its commit')
      }),
    ).rejects.toThrow('after its commit')
    expect(runs).toBe(1)
    expect(db.snapshot().get(c, 'y')).toBe(1)
    await db.close()
  })
})
