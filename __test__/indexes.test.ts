/**
 * Secondary indexes and the scavenger, on both engines: lookups at snapshots, index entries of
 * values that come back while old readers pin the versions between, a model-based test against
 * brute force, unique indexes under concurrency, online builds, the memory budget, and bad input.
 */
import { describe, expect, it } from 'vitest'
import { open, UniqueError, type Collection, type Database, type ReadView, type Transaction } from '../lib/index.js'
import { holdSyncs, openWithFaults } from '../lib/testing.js'
import { ENGINES, expectCode, other, rng, tempDir } from './helpers.js'

interface Row {
  f1: string
  n?: number
  pad?: string
}

const byF1 = { byF1: { key: (v: Row) => v.f1 } }

/** Keys found through the index, in index order. */
function found(view: ReadView | Transaction, c: Collection<Row>, index: string, q: unknown): unknown[] {
  return [...view.find(c, index, q as never)].map((e) => e.key)
}

describe.each(ENGINES)('secondary indexes [%s]', (engine) => {
  const openDb = (dir = tempDir(), opts: object = {}): Promise<Database> => open(dir, { engine, ...opts })

  it('finds by index key and by range, in index order, at the snapshot, with own writes', async () => {
    const db = await openDb()
    const users = db.collection<{ email?: string; team: string; age: number }>('users', {
      indexes: {
        byEmail: { key: (u) => u.email, unique: true },
        byTeam: { key: (u) => [u.team, u.age] },
      },
    })
    await users.ready()
    await db.transaction((tx) => {
      tx.put(users, 'u1', { email: 'ada@x', team: 'b', age: 36 })
      tx.put(users, 'u2', { email: 'bob@x', team: 'a', age: 41 })
      tx.put(users, 'u3', { team: 'a', age: 29 }) // no email: not in byEmail
      tx.put(users, 'u4', { email: 'cy@x', team: 'b', age: 19 })
    })
    const tx = db.begin()
    expect([...tx.find(users, 'byEmail', 'bob@x')]).toEqual([{ key: 'u2', value: { email: 'bob@x', team: 'a', age: 41 } }])
    expect(found(tx, users as never, 'byEmail', {})).toEqual(['u1', 'u2', 'u4'])
    expect(found(tx, users as never, 'byTeam', { prefix: ['a'] })).toEqual(['u3', 'u2'])
    expect(found(tx, users as never, 'byTeam', { gte: ['b'], reverse: true })).toEqual(['u1', 'u4'])
    expect(found(tx, users as never, 'byTeam', { gt: ['a', 29], lt: ['b', 36], limit: 5 })).toEqual(['u2', 'u4'])
    expect(found(tx, users as never, 'byTeam', { limit: 2 })).toEqual(['u3', 'u2'])
    expect(found(tx, users as never, 'byEmail', 'nobody@x')).toEqual([])
    // Own writes: a moved key, a deleted record, a new one.
    tx.put(users, 'u1', { email: 'zed@x', team: 'a', age: 50 })
    tx.delete(users, 'u2')
    tx.put(users, 'u5', { email: 'bob@x', team: 'c', age: 1 })
    expect(found(tx, users as never, 'byEmail', {})).toEqual(['u5', 'u4', 'u1'])
    expect(found(tx, users as never, 'byTeam', { prefix: ['a'] })).toEqual(['u3', 'u1'])
    const before = db.snapshot()
    await tx.commit()
    expect(found(before, users as never, 'byEmail', 'ada@x')).toEqual(['u1'])
    expect(found(before, users as never, 'byEmail', 'zed@x')).toEqual([])
    const now = db.snapshot()
    expect(found(now, users as never, 'byEmail', 'zed@x')).toEqual(['u1'])
    expect(found(now, users as never, 'byEmail', 'bob@x')).toEqual(['u5'])
    before.close()
    now.close()
    await db.close()
  })

  it('after a forced scavenge, readers pinned at old versions of a record whose values come back find it by the value they see, and by no other', async () => {
    const db = await openDb()
    const t3 = db.collection<Row>('t3', { indexes: byF1 })
    await t3.ready()
    const set = (f1: string): Promise<void> => db.transaction((tx) => tx.put(t3, 1, { f1 }))
    // Five commits write '-', A, B, C, D; a reader after each keeps its version on the chain
    // until just before the forced scavenge.
    const early: ReadView[] = []
    for (const f1 of ['-', 'A', 'B', 'C', 'D']) {
      await set(f1)
      early.push(db.snapshot())
    }
    const client3 = early[4]! // sees 'D'
    expect(found(client3, t3, 'byF1', 'D')).toEqual([1])
    await set('A') // A comes back
    const client4 = db.snapshot() // sees 'A'
    expect(found(client4, t3, 'byF1', 'A')).toEqual([1])
    // One transaction: B, savepoint, C, release, commit.
    const tx8 = db.begin()
    tx8.put(t3, 1, { f1: 'B' })
    const sp1 = tx8.savepoint()
    tx8.put(t3, 1, { f1: 'C' })
    tx8.release(sp1)
    await tx8.commit()
    const client5 = db.snapshot() // sees 'C'
    expect(found(client5, t3, 'byF1', 'C')).toEqual([1])
    await set('-')
    for (const [i, f1] of ['-', 'A', 'B', 'C'].entries()) expect(found(early[i]!, t3, 'byF1', f1)).toEqual([1])
    for (const v of early.slice(0, 4)) v.close()
    // The forced scavenge: the first four versions leave (the fifth is client3's); then again after a
    // checkpoint, so that the page store's index trees are involved too.
    const first = await db.scavenge()
    expect(first.prunedVersions).toBeGreaterThanOrEqual(4)
    expect(db.stats().indexEntries).toBe(4) // '-', 'A', 'C', 'D': B is held by no staying version
    const checkViews = (): void => {
      expect(client3.get(t3, 1)).toEqual({ f1: 'D' })
      expect(found(client3, t3, 'byF1', 'D')).toEqual([1])
      expect(found(client4, t3, 'byF1', 'A')).toEqual([1])
      expect(found(client5, t3, 'byF1', 'C')).toEqual([1])
      for (const [view, own] of [
        [client3, 'D'],
        [client4, 'A'],
        [client5, 'C'],
      ] as const) {
        for (const x of ['-', 'A', 'B', 'C', 'D'].filter((y) => y !== own)) expect(found(view, t3, 'byF1', x), `${own} view, ${x}`).toEqual([])
      }
      const fresh = db.snapshot()
      expect(found(fresh, t3, 'byF1', '-')).toEqual([1])
      for (const gone of ['A', 'B', 'C', 'D']) expect(found(fresh, t3, 'byF1', gone)).toEqual([])
      fresh.close()
    }
    checkViews()
    await db.checkpoint()
    await db.scavenge()
    checkViews()
    client3.close()
    client4.close()
    client5.close()
    await db.scavenge()
    expect(db.stats().indexEntries).toBeLessThanOrEqual(1)
    const last = db.snapshot()
    expect(found(last, t3, 'byF1', '-')).toEqual([1])
    expect(found(last, t3, 'byF1', 'D')).toEqual([])
    last.close()
    await db.close()
  })

  it('model-based: random puts, deletes and moves with snapshots held, scavenges and checkpoints match brute force', async () => {
    const rand = rng(4801)
    const dir = tempDir()
    let db = await openDb(dir, { cacheBytes: 1 << 20 })
    const letters = ['a', 'b', 'c', 'd', 'e']
    const opts = { indexes: { byF1: { key: (v: Row) => (v.f1 === 'e' ? undefined : v.f1) }, byPair: { key: (v: Row) => [v.f1, (v.n ?? 0) % 3] } } }
    let c = db.collection<Row>('m', opts)
    await c.ready()
    let held: ReadView[] = []
    const totals = { cycles: 0, pruned: 0, retired: 0 }
    const pad = 'x'.repeat(9000)
    const check = (view: ReadView): void => {
      const all = [...view.scan(c)]
      for (const l of letters) {
        const expectF1 = all.filter((e) => e.value.f1 === l && l !== 'e').map((e) => e.key)
        expect(found(view, c, 'byF1', l)).toEqual(expectF1)
        const expectPair = all
          .filter((e) => e.value.f1 === l)
          .sort((x, y) => ((x.value.n ?? 0) % 3) - ((y.value.n ?? 0) % 3) || Number(x.key) - Number(y.key))
          .map((e) => e.key)
        expect(found(view, c, 'byPair', { prefix: [l] })).toEqual(expectPair)
      }
      const range = all
        .filter((e) => e.value.f1 >= 'b' && e.value.f1 < 'd')
        .sort((x, y) => (x.value.f1 < y.value.f1 ? -1 : x.value.f1 > y.value.f1 ? 1 : Number(x.key) - Number(y.key)))
        .map((e) => e.key)
      expect(found(view, c, 'byF1', { gte: 'b', lt: 'd' })).toEqual(range)
    }
    for (let step = 0; step < 160; step++) {
      const r = rand()
      if (r < 0.6) {
        await db.transaction((tx) => {
          for (let i = 0; i < 1 + Math.floor(rand() * 12); i++) {
            const k = Math.floor(rand() * 300)
            if (rand() < 0.15) tx.delete(c, k)
            else tx.put(c, k, { f1: letters[Math.floor(rand() * letters.length)]!, n: Math.floor(rand() * 100), pad })
          }
        })
      } else if (r < 0.72) {
        if (held.length < 6) held.push(db.snapshot())
      } else if (r < 0.82) {
        const i = Math.floor(rand() * held.length)
        held[i]?.close()
        held.splice(i, 1)
      } else if (r < 0.92) {
        await db.scavenge()
      } else if (r < 0.97) {
        await db.checkpoint()
      } else {
        for (const v of held) v.close()
        held = []
        totals.cycles += db.stats().scavenger.cycles
        totals.pruned += db.stats().scavenger.prunedVersions
        totals.retired += db.stats().scavenger.retired + db.stats().retired
        await db.close()
        db = await openDb(step % 2 === 0 ? dir : dir, { cacheBytes: 1 << 20 })
        c = db.collection<Row>('m', opts)
        await c.ready()
      }
      if (step % 8 === 0 || step > 150) {
        for (const v of held) check(v)
        const fresh = db.snapshot()
        check(fresh)
        fresh.close()
      }
    }
    const st = db.stats()
    expect(totals.cycles + st.scavenger.cycles).toBeGreaterThan(0)
    expect(totals.pruned + st.scavenger.prunedVersions).toBeGreaterThan(0)
    expect(totals.retired + st.scavenger.retired + st.retired).toBeGreaterThan(0) // the 1 MiB budget made it retire records
    for (const v of held) v.close()
    await db.close()
  })

  it('unique: two transactions inserting one key concurrently — exactly one commits', async () => {
    const db = await openDb()
    const users = db.collection<{ email: string }>('users', { indexes: { byEmail: { key: (u) => u.email, unique: true } } })
    await users.ready()
    const txs = Array.from({ length: 6 }, (_, i) => {
      const tx = db.begin()
      tx.put(users, `u${i}`, { email: 'same@x' })
      return tx
    })
    const results = await Promise.allSettled(txs.map((tx) => tx.commit()))
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
    for (const r of results) {
      if (r.status === 'rejected') {
        expect(r.reason).toBeInstanceOf(UniqueError)
        expect(r.reason.code).toBe('KESTREL_UNIQUE')
        expect(r.reason.index).toBe('byEmail')
        expect(r.reason.indexKey).toBe('same@x')
        expect(r.reason.message).toMatch(/byEmail.*same@x/)
      }
    }
    // Committed holder: a later insert fails and names the holder.
    const winner = [...db.snapshot().find(users, 'byEmail', 'same@x')][0]!.key
    const err = await expectCode(() => db.transaction((tx) => tx.put(users, 'late', { email: 'same@x' })), 'KESTREL_UNIQUE')
    expect((err as unknown as UniqueError).holder).toBe(winner)
    // The holder itself may be rewritten with its key; keys may be swapped in one transaction.
    await db.transaction((tx) => tx.put(users, winner as string, { email: 'same@x' }))
    await db.transaction((tx) => tx.put(users, 'other', { email: 'other@x' }))
    await db.transaction((tx) => {
      tx.put(users, winner as string, { email: 'other@x' })
      tx.put(users, 'other', { email: 'same@x' })
    })
    // Two records of one transaction with one key.
    await expectCode(
      () =>
        db.transaction((tx) => {
          tx.put(users, 'p', { email: 'p@x' })
          tx.put(users, 'q', { email: 'p@x' })
        }),
      'KESTREL_UNIQUE',
    )
    // After the holder is deleted the key is free again.
    await db.transaction((tx) => tx.delete(users, 'other'))
    await db.transaction((tx) => tx.put(users, 'late', { email: 'same@x' }))
    expect(found(db.snapshot(), users as never, 'byEmail', 'same@x')).toEqual(['late'])
    await db.close()
  })

  it('an index added to an existing collection is built online while writers go on, and survives reopen', async () => {
    const dir = tempDir()
    let db = await openDb(dir)
    let items = db.collection<Row>('items')
    const N = 2000
    for (let b = 0; b < N; b += 250) {
      await db.transaction((tx) => {
        for (let i = b; i < b + 250; i++) tx.put(items, i, { f1: `k${i % 50}`, n: i })
      })
    }
    await db.close()
    db = await openDb(dir)
    items = db.collection<Row>('items', { indexes: byF1 })
    // Correct while the build runs …
    const early = db.snapshot()
    expect(found(early, items, 'byF1', 'k7')).toHaveLength(N / 50)
    // … with writers going on: they move records between keys during the build.
    const writers = (async () => {
      for (let i = 0; i < 200; i++) await db.transaction((tx) => tx.put(items, i * 7, { f1: 'moved', n: i }))
    })()
    await Promise.all([items.ready(), writers])
    const view = db.snapshot()
    const all = [...view.scan(items)]
    for (const k of ['k7', 'moved', 'k0']) {
      expect(found(view, items, 'byF1', k)).toEqual(all.filter((e) => e.value.f1 === k).map((e) => e.key))
    }
    expect(found(early, items, 'byF1', 'moved')).toEqual([]) // the old snapshot still sees the old values
    expect(found(early, items, 'byF1', 'k7')).toHaveLength(N / 50)
    early.close()
    view.close()
    const commitsBefore = db.lastCommitId()
    await db.close()
    // Built once: reopening does not rebuild (no commit), and the index answers at once.
    db = await openDb(dir)
    items = db.collection<Row>('items', { indexes: byF1 })
    await items.ready()
    expect(db.lastCommitId()).toBe(commitsBefore)
    expect(found(db.snapshot(), items, 'byF1', 'moved')).toHaveLength(200)
    await db.close()
  })

  it('a new unique index over records that break it fails its build with KESTREL_UNIQUE', async () => {
    const db = await openDb()
    let c = db.collection<Row>('dups')
    await db.transaction((tx) => {
      tx.put(c, 1, { f1: 'x' })
      tx.put(c, 2, { f1: 'x' })
    })
    c = db.collection<Row>('dups', { indexes: { u: { key: (v) => v.f1, unique: true } } })
    await expectCode(() => c.ready(), 'KESTREL_UNIQUE')
    expect(found(db.snapshot(), c, 'u', 'x')).toEqual([1, 2]) // lookups stay correct (by scan)
    await db.close()
  })

  it('a long write loop under a small cacheBytes stays within budget; old snapshots keep reading', async () => {
    const budget = 1 << 20
    const db = await openDb(tempDir(), { cacheBytes: budget, durability: 'none' })
    const c = db.collection<Row>('loop', { indexes: byF1 })
    await c.ready()
    const pad = 'p'.repeat(900)
    await db.transaction((tx) => {
      for (let i = 0; i < 100; i++) tx.put(c, i, { f1: `old${i % 10}`, n: i, pad })
    })
    const old = db.snapshot()
    let maxBytes = 0
    const rss0 = process.memoryUsage().rss
    const total = 12_000
    for (let i = 0; i < total; i += 40) {
      await db.transaction((tx) => {
        for (let j = i; j < i + 40; j++) tx.put(c, j % 6000, { f1: `new${j % 10}`, n: j, pad })
      })
      maxBytes = Math.max(maxBytes, db.stats().recordBytes)
    }
    await db.scavenge()
    const st = db.stats()
    expect(st.recordBytes).toBeLessThanOrEqual(budget)
    expect(maxBytes).toBeLessThan(budget * 2) // between cycles it may overshoot, never without bound
    expect(st.scavenger.cycles).toBeGreaterThan(0)
    expect(st.scavenger.retired).toBeGreaterThan(0)
    expect(st.scavenger.ageGroup).toBeGreaterThan(4)
    expect(process.memoryUsage().rss - rss0).toBeLessThan(256 << 20)
    // Every record readable, now and through the old snapshot, by key and by index.
    const now = db.snapshot()
    expect([...now.scan(c)]).toHaveLength(6000)
    expect(found(now, c, 'byF1', 'new3')).toHaveLength(600)
    expect(found(old, c, 'byF1', 'old3')).toEqual([3, 13, 23, 33, 43, 53, 63, 73, 83, 93])
    expect(old.get(c, 42)).toEqual({ f1: 'old2', n: 42, pad })
    expect([...old.scan(c)]).toHaveLength(100)
    old.close()
    now.close()
    await db.close()
  })

  it('bad input: throwing or non-encodable key functions, unknown index names, bad definitions, merges', async () => {
    const db = await openDb()
    const c = db.collection<{ v: unknown }>('bad', {
      indexes: {
        throws: {
          key: (x) => {
            if (x.v === 'boom') throw new Error('no')
            return 1
          },
        },
        weird: { key: (x) => x.v as never },
      },
    })
    await c.ready()
    const tx = db.begin()
    const e1 = await expectCode(() => tx.put(c, 1, { v: 'boom' }), 'KESTREL_INVALID_ARGUMENT')
    expect(e1.message).toMatch(/index throws of bad threw: no/)
    const e2 = await expectCode(() => tx.put(c, 2, { v: { an: 'object' } }), 'KESTREL_INVALID_KEY')
    expect(e2.message).toMatch(/index weird of bad/)
    await expectCode(() => tx.put(c, 3, { v: true }), 'KESTREL_INVALID_KEY')
    await expectCode(() => tx.put(c, 4, { v: 'x'.repeat(1100) }), 'KESTREL_KEY_TOO_LARGE')
    await expectCode(() => tx.find(c, 'nope', 1), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => tx.find(c, 42 as never, 1), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => tx.find(c, 'weird', { gte: {} as never }), 'KESTREL_INVALID_KEY')
    await expectCode(() => tx.append(c as never, 5, 1), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => tx.increment(c, 5, 1), 'KESTREL_INVALID_ARGUMENT')
    tx.put(c, 6, { v: 'fine' })
    await tx.commit() // nothing bad reached the commit
    expect(found(db.snapshot(), c as never, 'weird', 'fine')).toEqual([6])
    await expectCode(() => db.collection('x', { indexes: { i: {} as never } }), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => db.collection('x', { indexes: { '': { key: () => 1 } } }), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => db.collection('x', { indexes: { 'a\u0000b': { key: () => 1 } } }), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => db.collection('x', { indexes: 5 as never }), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => db.collection('a\u0000b'), 'KESTREL_INVALID_ARGUMENT')
    const view = db.snapshot()
    view.close()
    await expectCode(() => view.find(c, 'weird', 1), 'KESTREL_CLOSED')
    await db.close()
  })

  it(`a database with indexes written by ${engine} opens in ${other(engine)} and finds the same records`, async () => {
    const dir = tempDir()
    let db = await openDb(dir)
    let c = db.collection<Row>('x', { indexes: byF1 })
    await c.ready()
    for (let i = 0; i < 300; i++) await db.transaction((tx) => tx.put(c, i, { f1: `v${i % 7}`, n: i }))
    await db.checkpoint()
    await db.transaction((tx) => {
      tx.put(c, 0, { f1: 'moved' })
      tx.delete(c, 1)
    })
    await db.close()
    db = await open(dir, { engine: other(engine) })
    c = db.collection<Row>('x', { indexes: byF1 })
    await c.ready()
    const view = db.snapshot()
    expect(found(view, c, 'byF1', 'moved')).toEqual([0])
    expect(found(view, c, 'byF1', 'v1')).toEqual(Array.from({ length: 300 }, (_, i) => i).filter((i) => i % 7 === 1 && i !== 1))
    view.close()
    expect((await db.verify()).ok).toBe(true)
    await db.close()
  })
})

describe.each(ENGINES)('unique index builds on populated collections [%s]', (engine) => {
  type User = { email: string; n?: number }
  const pad = (i: number): string => String(i).padStart(4, '0')

  /** A database holding `n` users u0000… with distinct emails e0000@x…, and a key-function call counter. */
  async function populated(
    n: number,
    faults?: object,
  ): Promise<{ db: Database; calls: { n: number }; byEmail: { byEmail: { key: (u: User) => string; unique: true } } }> {
    const db = faults ? await openWithFaults(tempDir(), { engine, faults }) : await open(tempDir(), { engine })
    const users = db.collection<User>('users')
    for (let b = 0; b < n; b += 500) {
      await db.transaction((tx) => {
        for (let i = b; i < Math.min(n, b + 500); i++) tx.put(users, `u${pad(i)}`, { email: `e${pad(i)}@x`, n: i })
      })
    }
    const calls = { n: 0 }
    return {
      db,
      calls,
      byEmail: {
        byEmail: {
          key: (u: User) => {
            calls.n++
            return u.email
          },
          unique: true,
        },
      },
    }
  }

  it('is built with O(records) key-function calls while writers go on, and one key never has two holders', async () => {
    const N = 2000
    const { db, calls, byEmail } = await populated(N, {})
    // Held fsyncs keep the build at its first chunk while the writers below run.
    holdSyncs(db, true)
    const users = db.collection<User>('users', { indexes: byEmail })
    let ready = false
    const built = users.ready().then(() => {
      ready = true
    })
    const put = (key: string, u: User): Promise<unknown> => db.transaction((tx) => tx.put(users, key, u))
    // A record the build has not reached yet holds e1999@x.
    const dup = await expectCode(() => put('dup', { email: 'e1999@x' }), 'KESTREL_UNIQUE')
    expect((dup as unknown as UniqueError).holder).toBe('u1999')
    // Two inserts of one fresh key: one is in flight, the other refused.
    const first = put('x1', { email: 'fresh@x' })
    await expectCode(() => put('x2', { email: 'fresh@x' }), 'KESTREL_UNIQUE')
    // u1500 moves to another key (in flight); its old key stays held until that commit lands.
    const moved = put('u1500', { email: 'moved@x' })
    await expectCode(() => put('y', { email: 'e1500@x' }), 'KESTREL_UNIQUE')
    expect(ready).toBe(false)
    holdSyncs(db, false)
    await Promise.all([first, moved, built])
    // Once it landed: the old key is free, the new one held.
    await put('y', { email: 'e1500@x' })
    await expectCode(() => put('z', { email: 'moved@x' }), 'KESTREL_UNIQUE')
    await expectCode(() => put('w', { email: 'e0000@x' }), 'KESTREL_UNIQUE')
    // A few calls per record: the build reads each record's key, it does not scan per key.
    expect(calls.n).toBeLessThanOrEqual(3 * N)
    const view = db.snapshot()
    const all = [...view.scan(users)]
    expect(all).toHaveLength(N + 2)
    expect(new Set(all.map((e) => e.value.email)).size).toBe(all.length)
    for (const e of all) expect(found(view, users as never, 'byEmail', e.value.email)).toEqual([e.key])
    view.close()
    await db.close()
  })

  it('records that break it fail the build with KESTREL_UNIQUE after one pass; writers stay checked', async () => {
    const N = 2000
    const { db, calls, byEmail } = await populated(N)
    await db.transaction((tx) => tx.put(db.collection<User>('users'), 'u1999', { email: 'e0007@x' }))
    const users = db.collection<User>('users', { indexes: byEmail })
    const err = await expectCode(() => users.ready(), 'KESTREL_UNIQUE')
    expect(err.message).toMatch(/e0007@x/)
    expect(calls.n).toBeLessThanOrEqual(N + 10)
    // The index stays unique for writers, and lookups stay correct (by scan).
    await expectCode(() => db.transaction((tx) => tx.put(users, 'new', { email: 'e0100@x' })), 'KESTREL_UNIQUE')
    await db.transaction((tx) => tx.put(users, 'new', { email: 'free@x' }))
    expect(found(db.snapshot(), users as never, 'byEmail', 'e0007@x')).toEqual(['u0007', 'u1999'])
    await db.close()
  })

  it('a commit in flight when the index is defined is indexed too (unique and not)', async () => {
    for (const unique of [true, false]) {
      const { db } = await populated(600)
      const plain = db.collection<User>('users')
      const tx = db.begin()
      tx.put(plain, 'u0000a', { email: 'late@x' }) // inside the build's first chunk
      const inFlight = tx.commit()
      // One index only: a second build would rewrite the chunk again after a conflict.
      const users = db.collection<User>('users', { indexes: { byEmail: { key: (u) => u.email, unique } } })
      await Promise.all([inFlight, users.ready()])
      expect(found(db.snapshot(), users as never, 'byEmail', 'late@x')).toEqual(['u0000a'])
      if (unique) await expectCode(() => db.transaction((t) => t.put(users, 'again', { email: 'late@x' })), 'KESTREL_UNIQUE')
      await db.close()
    }
  })

  it('a merge recorded before the collection had indexes is refused at commit', async () => {
    const db = await open(tempDir(), { engine })
    const list = db.collection<string[]>('lists')
    const tx = db.begin()
    tx.append(list, 'k', 'item')
    db.collection<string[]>('lists', { indexes: { first: { key: (l) => l[0] } } })
    const err = await expectCode(() => tx.commit(), 'KESTREL_INVALID_ARGUMENT')
    expect(err.message).toMatch(/lists.*indexes/)
    expect(db.snapshot().get(list, 'k')).toBeUndefined()
    await db.close()
  })
})
