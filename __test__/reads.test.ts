/**
 * Reads without ceremony and lazy ordered reads, on both engines: one-shot `db.get`, `db.scan`,
 * `db.find` pin nothing once done; scans and lookups read the engine in chunks as they are
 * iterated (a loop that stops after 10 rows of 1M reads a chunk, not the range); own writes merge
 * correctly across chunk boundaries; a reader that ended cannot be iterated further.
 */
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { compareBytes } from '../lib/codec/bytes.js'
import { encodeKey } from '../lib/codec/key.js'
import { open, type Database } from '../lib/index.js'
import type { Core } from '../lib/core/types.js'
import { ENGINES, coreOf, expectCode, rng, tempDir } from './helpers.js'

/** Count the rows the engine hands out through scan and find. */
function countRows(db: Database): { rows: number } {
  const core = coreOf(db) as Core & Record<string, unknown>
  const counter = { rows: 0 }
  const scan = core.scan.bind(core)
  const find = core.find.bind(core)
  core.scan = (...args: Parameters<Core['scan']>) => {
    const r = scan(...args)
    counter.rows += r.length
    return r
  }
  core.find = (...args: Parameters<Core['find']>) => {
    const r = find(...args)
    counter.rows += r.length
    return r
  }
  return counter
}

describe.each(ENGINES)('reads [%s]', (engine) => {
  it('db.get, db.scan and db.find read the newest commit and pin nothing once done', async () => {
    const db = await open(tempDir(), { engine })
    const users = db.collection<{ team: string; n: number }>('users', { indexes: { byTeam: { key: (u) => u.team } } })
    await users.ready()
    await db.transaction((tx) => {
      for (let i = 0; i < 50; i++) tx.put(users, `u${String(i).padStart(2, '0')}`, { team: i % 2 ? 'odd' : 'even', n: i })
    })
    expect(db.get(users, 'u07')).toEqual({ team: 'odd', n: 7 })
    expect(db.get(users, 'nobody')).toBeUndefined()
    expect(db.stats().pinnedSnapshots).toBe(0)

    const scan = db.scan(users, { prefix: 'u0', limit: 5 })
    expect(db.stats().pinnedSnapshots).toBe(0) // nothing is read or pinned before iterating
    expect([...scan].map((e) => e.key)).toEqual(['u00', 'u01', 'u02', 'u03', 'u04'])
    expect(db.stats().pinnedSnapshots).toBe(0)
    // Pinned while a loop runs, released when it breaks.
    for (const e of db.scan(users)) {
      expect(e.key).toBe('u00')
      expect(db.stats().pinnedSnapshots).toBe(1)
      break
    }
    expect(db.stats().pinnedSnapshots).toBe(0)
    // Each iteration reads afresh.
    const odd = db.find(users, 'byTeam', 'odd')
    expect([...odd]).toHaveLength(25)
    await db.transaction((tx) => tx.put(users, 'u99', { team: 'odd', n: 99 }))
    expect([...odd]).toHaveLength(26)
    expect(db.stats().pinnedSnapshots).toBe(0)
    // An iterator that throws midway releases its pin too.
    const it = db.scan(users)[Symbol.iterator]()
    it.next()
    expect(db.stats().pinnedSnapshots).toBe(1)
    it.return!()
    expect(db.stats().pinnedSnapshots).toBe(0)
    await expectCode(() => db.get({ name: 'users' } as never, 'u1'), 'KESTREL_INVALID_ARGUMENT')
    await db.close()
    await expectCode(() => db.get(users, 'u07'), 'KESTREL_CLOSED')
  })

  it('a scan over 1M records that stops after 10 reads one chunk and stays flat in memory', async () => {
    const db = await open(tempDir(), { engine, durability: 'none' })
    const c = db.collection<number>('big')
    for (let i = 0; i < 1_000_000; i += 50_000)
      await db.transaction((tx) => {
        for (let j = i; j < i + 50_000; j++) tx.put(c, j, j)
      })
    const counter = countRows(db)
    const firstTen = (rows: Iterable<{ key: unknown }>): unknown[] => {
      const out: unknown[] = []
      for (const e of rows) {
        out.push(e.key)
        if (out.length === 10) break
      }
      return out
    }
    // The first scan after the load may build the store's key order once; then measure.
    expect(firstTen(db.scan(c))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    counter.rows = 0
    const heapBefore = process.memoryUsage().heapUsed
    for (let round = 0; round < 20; round++) expect(firstTen(db.scan(c, { gte: round * 1000 }))).toHaveLength(10)
    const view = db.snapshot()
    expect(firstTen(view.scan(c, { reverse: true }))).toEqual([999_999, 999_998, 999_997, 999_996, 999_995, 999_994, 999_993, 999_992, 999_991, 999_990])
    view.close()
    // A transaction with its own writes merges them in as the rows go by, also lazily.
    const tx = db.begin()
    tx.put(c, 3, -3)
    tx.delete(c, 4)
    tx.put(c, 2_000_000, 1)
    expect(firstTen(tx.scan(c))).toEqual([0, 1, 2, 3, 5, 6, 7, 8, 9, 10])
    tx.rollback()
    const heapGrowth = process.memoryUsage().heapUsed - heapBefore
    // 22 scans of 10 rows: one first chunk each (16 rows), never the range.
    expect(counter.rows).toBeLessThanOrEqual(22 * 16)
    // A scan that built its result would hold ~1M entries (tens of MiB); a chunk holds 16.
    expect(heapGrowth).toBeLessThan(8 * 1024 * 1024)
    await db.close()
  }, 180_000)

  it('lookups read index entries in chunks, and merge own writes across chunk boundaries', async () => {
    const db = await open(tempDir(), { engine })
    const c = db.collection<{ g: number; i: number }>('items', { indexes: { byG: { key: (v) => [v.g, v.i] } } })
    await c.ready()
    const random = rng(11)
    const model = new Map<number, { g: number; i: number }>()
    for (let base = 0; base < 3000; base += 1000) {
      await db.transaction((tx) => {
        for (let i = base; i < base + 1000; i++) {
          const v = { g: i % 7, i }
          tx.put(c, i, v)
          model.set(i, v)
        }
      })
    }
    const counter = countRows(db)
    let n = 0
    for (const _ of db.find(c, 'byG', { prefix: [3] })) if (++n === 10) break
    expect(counter.rows).toBeLessThanOrEqual(16)

    const tx = db.begin()
    for (let k = 0; k < 400; k++) {
      const i = Math.floor(random() * 3200)
      if (random() < 0.25) {
        tx.delete(c, i)
        model.delete(i)
      } else {
        const v = { g: Math.floor(random() * 7), i: Math.floor(random() * 5000) }
        tx.put(c, i, v)
        model.set(i, v)
      }
    }
    const order = (a: [number, { g: number; i: number }], b: [number, { g: number; i: number }]): number =>
      compareBytes(encodeKey([a[1].g, a[1].i]), encodeKey([b[1].g, b[1].i])) || compareBytes(encodeKey(a[0]), encodeKey(b[0]))
    for (let q = 0; q < 60; q++) {
      const g = Math.floor(random() * 7)
      const reverse = random() < 0.5
      const limit = random() < 0.5 ? Math.floor(random() * 600) : undefined
      const lower = Math.floor(random() * 4000)
      let want = [...model.entries()].filter(([, v]) => v.g === g && v.i >= lower).sort(order)
      if (reverse) want = want.reverse()
      if (limit !== undefined) want = want.slice(0, limit)
      const got = [...tx.find(c, 'byG', { gte: [g, lower], lt: [g + 1], reverse, limit })]
      expect(
        got.map((e) => e.key),
        `query ${q}`,
      ).toEqual(want.map(([k]) => k))
      expect(got.map((e) => e.value)).toEqual(want.map(([, v]) => v))
    }
    // Scans with own writes across chunks, against the model.
    for (let q = 0; q < 30; q++) {
      const reverse = random() < 0.5
      const gte = Math.floor(random() * 3000)
      let want = [...model.keys()].filter((k) => k >= gte).sort((a, b) => a - b)
      if (reverse) want = want.reverse()
      expect([...tx.scan(c, { gte, reverse })].map((e) => e.key)).toEqual(want)
    }
    tx.rollback()
    await db.close()
  })

  it('a reader that ended cannot be iterated further', async () => {
    const db = await open(tempDir(), { engine })
    const c = db.collection<number>('c')
    await db.transaction((tx) => {
      for (let i = 0; i < 100; i++) tx.put(c, i, i)
    })
    const tx = db.begin()
    const rows = tx.scan(c)[Symbol.iterator]()
    rows.next()
    tx.rollback()
    await expectCode(() => {
      for (let i = 0; i < 100; i++) rows.next()
    }, 'KESTREL_TRANSACTION_DONE')
    const view = db.snapshot()
    const viewRows = view.scan(c)[Symbol.iterator]()
    viewRows.next()
    view.close()
    await expectCode(() => {
      for (let i = 0; i < 100; i++) viewRows.next()
    }, 'KESTREL_CLOSED')
    const oneShot = db.scan(c)[Symbol.iterator]()
    oneShot.next()
    await db.close()
    await expectCode(() => {
      for (let i = 0; i < 100; i++) oneShot.next()
    }, 'KESTREL_CLOSED')
  })

  it('a transaction or read view garbage-collected without being ended releases its snapshot and warns', () => {
    const script = fileURLToPath(new URL('./fixtures/leak.mjs', import.meta.url))
    for (const debug of ['', '1']) {
      const r = spawnSync(process.execPath, ['--expose-gc', script, tempDir(), engine], { encoding: 'utf8', env: { ...process.env, KESTREL_DEBUG: debug } })
      expect(r.status, r.stderr).toBe(0)
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { before: number; after: number; warnings: string[] }
      expect(out.before).toBe(3)
      expect(out.after).toBe(0)
      expect(out.warnings.length).toBeGreaterThan(0)
      expect(out.warnings[0]).toContain('garbage-collected without being ended')
      if (debug) {
        // Every leak, each with where it was opened.
        expect(out.warnings).toHaveLength(3)
        expect(out.warnings.join('\n')).toContain('leak.mjs')
      } else {
        expect(out.warnings).toHaveLength(1)
        expect(out.warnings[0]).toContain('KESTREL_DEBUG')
      }
    }
  })
})
