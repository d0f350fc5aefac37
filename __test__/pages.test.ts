/**
 * The ts engine's page store `pages.kdb` (docs/FORMAT.md "Page store"): a randomized model test,
 * crash points, reads interleaved with a running checkpoint, corruption, and the golden scenario
 * whose file digests are compared with the Rust twin's.
 */
import { createHash } from 'node:crypto'
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { crc32c } from '../lib/format/crc32c.js'
import { walk } from '../lib/format/page_check.js'
import { PAGE_BYTES, PAGE_FILE, type PageMeta } from '../lib/format/page_layout.js'
import { PageStore, type Bound, type Change, type CollectionChanges } from '../lib/core/ts/pages/index.js'
import { expectCode, goldenPages, k2s, newDir, rng, s2k } from './helpers.js'

type Version = { commitId: number; value: Uint8Array }
/** collection → latin1 key (one char per byte, so `<` is bytewise) → version. */
type Model = Map<string, Map<string, Version>>

const utf8 = new TextEncoder()
const CACHE = 1 << 20

const nameOrder = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b))

function bytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = (seed * 31 + i * 7) & 0xff
  return out
}

/** Apply checkpoint input to the model. */
function applyModel(model: Model, changes: CollectionChanges[]): void {
  for (const c of changes) {
    let m = model.get(c.name)
    if (!m) {
      m = new Map()
      model.set(c.name, m)
    }
    for (const ch of c.changes) {
      if (ch.version) m.set(k2s(ch.key), { commitId: ch.version.commitId, value: ch.version.value })
      else m.delete(k2s(ch.key))
    }
    if (m.size === 0) model.delete(c.name)
  }
}

function modelRange(m: Map<string, Version> | undefined, lower: Bound, upper: Bound, reverse: boolean, max: number): Array<[string, Version]> {
  if (!m) return []
  const lo = lower ? k2s(lower.key) : undefined
  const hi = upper ? k2s(upper.key) : undefined
  const keys = [...m.keys()]
    .sort()
    .filter((k) => (lo === undefined || (lower!.inclusive ? k >= lo : k > lo)) && (hi === undefined || (upper!.inclusive ? k <= hi : k < hi)))
  if (reverse) keys.reverse()
  return keys.slice(0, max).map((k) => [k, m.get(k)!])
}

function sameValue(got: { commitId: number; value: Uint8Array } | undefined, want: Version | undefined): boolean {
  if (!got || !want) return got === want
  return got.commitId === want.commitId && Buffer.compare(got.value, want.value) === 0
}

/** Compare every key ever used, random ranges and the collection list with the model. */
function verify(store: PageStore, model: Model, used: Map<string, Set<string>>, r: () => number, ranges = 25): void {
  for (const [name, keys] of used) {
    const m = model.get(name)
    for (const k of keys) {
      const got = store.get(name, s2k(k))
      const want = m?.get(k)
      if (!sameValue(got, want))
        throw new Error(
          `get ${name} ${Buffer.from(k, 'latin1').toString('hex')}: got ${got?.commitId}/${got?.value.length}, want ${want?.commitId}/${want?.value.length}`,
        )
    }
    const pool = [...keys]
    const pick = (): Bound => {
      const x = r()
      if (x < 0.2 || pool.length === 0) return undefined
      const key = x < 0.7 ? s2k(pool[Math.floor(r() * pool.length)]!) : randomKey(r, 1, 40)
      return { key, inclusive: r() < 0.5 }
    }
    for (let q = 0; q < ranges; q++) {
      const lower = pick()
      const upper = pick()
      const reverse = r() < 0.5
      const max = r() < 0.3 ? Number.POSITIVE_INFINITY : 1 + Math.floor(r() * 60)
      const got = store.range(name, lower, upper, reverse, max)
      const want = modelRange(m, lower, upper, reverse, max)
      expect(got.length).toBe(want.length)
      for (let i = 0; i < got.length; i++) {
        expect(k2s(got[i]!.key)).toBe(want[i]![0])
        expect(sameValue(got[i], want[i]![1])).toBe(true)
      }
    }
  }
  const cols = [...model.entries()].map(([name, m]) => ({ name, records: m.size })).sort((a, b) => nameOrder(a.name, b.name))
  expect(store.collections()).toEqual(cols)
  const total = cols.reduce((s, c) => s + c.records, 0)
  expect(store.meta().records).toBe(total)
}

function randomKey(r: () => number, min: number, max: number): Uint8Array {
  const n = min + Math.floor(r() * (max - min + 1))
  const k = new Uint8Array(n)
  // Small alphabet: shared prefixes exercise the order on a common prefix.
  for (let i = 0; i < n; i++) k[i] = r() < 0.5 ? 0x61 + Math.floor(r() * 3) : Math.floor(r() * 256)
  return k
}

function randomValue(r: () => number): Uint8Array {
  const x = r()
  const n = x < 0.5 ? Math.floor(r() * 100) : x < 0.8 ? 100 + Math.floor(r() * 925) : 1025 + Math.floor(r() * 1976)
  return bytes(n, Math.floor(r() * 1e6))
}

function expectClean(dir: string, records?: number): ReturnType<typeof walk> {
  const rep = walk(join(dir, PAGE_FILE))
  expect(rep.problems).toEqual([])
  if (records !== undefined) expect(rep.records).toBe(records)
  return rep
}

interface Scenario {
  r: () => number
  model: Model
  used: Map<string, Set<string>>
  lsn: number
}

/** One random checkpoint's input (sorted, deduplicated) over `names`. */
/** `empty`: one chosen collection loses every key; `thin`: all but 1–4 of them (its tree collapses). */
function randomChanges(s: Scenario, names: string[], keyMin: number, keyMax: number, opsMax: number, mode: 'plain' | 'empty' | 'thin'): CollectionChanges[] {
  const { r, model, used } = s
  const lsn = s.lsn
  const out: CollectionChanges[] = []
  const chosen = names.filter(() => r() < 0.6)
  if (chosen.length === 0) chosen.push(names[Math.floor(r() * names.length)]!)
  const victim = mode !== 'plain' ? chosen[Math.floor(r() * chosen.length)] : undefined
  for (const name of chosen.sort(nameOrder)) {
    let pool = used.get(name)
    if (!pool) {
      pool = new Set()
      used.set(name, pool)
    }
    const byKey = new Map<string, Change>()
    if (name === victim) {
      const live = [...(model.get(name)?.keys() ?? [])].sort()
      const keep = mode === 'thin' ? 1 + Math.floor(r() * 4) : 0
      const start = Math.floor(r() * live.length)
      // Keep `keep` consecutive keys (from a random start, wrapping), delete the rest.
      for (let i = 0; i < live.length; i++) if ((i - start + live.length) % live.length >= keep) byKey.set(live[i]!, { key: s2k(live[i]!) })
    } else {
      const n = 1 + Math.floor(r() * opsMax)
      const poolArr = [...pool]
      for (let i = 0; i < n; i++) {
        const key = poolArr.length > 0 && r() < 0.7 ? s2k(poolArr[Math.floor(r() * poolArr.length)]!) : randomKey(r, keyMin, keyMax)
        const change: Change = r() < 0.25 ? { key } : { key, version: { commitId: Math.max(0, lsn - Math.floor(r() * 5)), value: randomValue(r) } }
        byKey.set(k2s(key), change)
      }
    }
    if (byKey.size === 0) byKey.set(k2s(randomKey(r, keyMin, keyMax)), { key: randomKey(r, keyMin, keyMax) })
    const changes = [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, c]) => ({ ...c, key: s2k(k) }))
    for (const c of changes) pool.add(k2s(c.key))
    out.push({ name, changes })
  }
  return out
}

describe('page store: model', () => {
  it('random checkpoints match a sorted-map model, before and after reopen', async () => {
    const dir = newDir('model')
    const s: Scenario = { r: rng(0x5eed), model: new Map(), used: new Map(), lsn: 0 }
    const names = ['alpha', 'beta', 'gamma', 'δelta', 'zz']
    let store = PageStore.open(dir, CACHE)
    expect(store.meta()).toEqual({ seq: 0, checkpointLsn: 0, catalogRoot: 0, pageCount: 2, freeHead: 0, freeCount: 0, records: 0 })
    for (let cp = 1; cp <= 30; cp++) {
      s.lsn += 1 + Math.floor(s.r() * 40)
      const changes = randomChanges(s, names, 1, 40, 200, cp % 7 === 0 ? 'empty' : cp % 5 === 0 ? 'thin' : 'plain')
      const rep = await store.checkpoint(s.lsn, changes)
      applyModel(s.model, changes)
      expect(rep.seq).toBe(cp)
      expect(rep.lsn).toBe(s.lsn)
      expect(rep.bytesWritten).toBe((rep.pagesWritten + 1) * PAGE_BYTES)
      expect(store.meta().seq).toBe(cp)
      expect(store.meta().checkpointLsn).toBe(s.lsn)
      verify(store, s.model, s.used, s.r)
      const total = [...s.model.values()].reduce((n, m) => n + m.size, 0)
      const check = expectClean(dir, total)
      expect(check.meta).toEqual(store.meta())
      expect(check.pagesReachable).toBe(store.reachablePages().length)
      // What a backup copies (found from the free list alone) is exactly what the walk reaches.
      expect([...store.pagesInUse()]).toEqual([...store.reachablePages()])
      expect(check.pagesFree).toBe(store.meta().freeCount)
      store.close()
      store = PageStore.open(dir, CACHE)
      expect(store.meta()).toEqual(check.meta)
      verify(store, s.model, s.used, s.r, 10)
    }
    store.close()
  })

  it('deep trees (keys up to 1024 bytes) grow and shrink by the spec and stay consistent', async () => {
    const dir = newDir('deep')
    const s: Scenario = { r: rng(77), model: new Map(), used: new Map(), lsn: 0 }
    const store = PageStore.open(dir, 64 * PAGE_BYTES)
    let maxDepth = 0
    let collapses = 0
    let depths = new Map<string, number>()
    for (let cp = 1; cp <= 40; cp++) {
      s.lsn += 10
      const changes = randomChanges(s, ['deep', 'wide'], 1, 1024, 120, cp % 9 === 0 ? 'empty' : cp % 4 === 0 ? 'thin' : 'plain')
      await store.checkpoint(s.lsn, changes)
      applyModel(s.model, changes)
      verify(store, s.model, s.used, s.r, 15)
      const total = [...s.model.values()].reduce((n, m) => n + m.size, 0)
      const check = expectClean(dir, total)
      const now = new Map(check.collections.map((c) => [c.name, c.depth]))
      for (const [name, d] of now) {
        maxDepth = Math.max(maxDepth, d)
        if (d < (depths.get(name) ?? 0)) collapses++
      }
      depths = now
    }
    expect(maxDepth).toBeGreaterThanOrEqual(3)
    expect(collapses).toBeGreaterThan(0)
    // Delete everything, collection by collection: the trees collapse and the catalog empties.
    for (const name of [...s.model.keys()].sort(nameOrder)) {
      const keys = [...s.model.get(name)!.keys()].sort()
      s.lsn += 1
      const changes = [{ name, changes: keys.map((k) => ({ key: s2k(k) })) }]
      await store.checkpoint(s.lsn, changes)
      applyModel(s.model, changes)
      verify(store, s.model, s.used, s.r, 5)
      expectClean(dir)
    }
    expect(store.meta().catalogRoot).toBe(0)
    expect(store.meta().records).toBe(0)
    expect(store.collections()).toEqual([])
    store.close()
  })

  it('rewriting the same keys reuses freed pages: the file stops growing', async () => {
    const dir = newDir('rewrite')
    const store = PageStore.open(dir, CACHE)
    const keys = Array.from({ length: 400 }, (_, i) => utf8.encode(`key-${String(i).padStart(4, '0')}`))
    const metas: PageMeta[] = []
    for (let round = 1; round <= 60; round++) {
      const changes = [{ name: 'c', changes: keys.map((key, i) => ({ key, version: { commitId: round, value: bytes(i % 3 === 0 ? 1500 : 200, round + i) } })) }]
      await store.checkpoint(round, changes)
      metas.push(store.meta())
    }
    const live = metas.map((m) => m.pageCount - 2 - m.freeCount)
    // Pages in use (tree + overflow + free-list chain) do not grow at all once warm.
    expect(Math.max(...live.slice(2))).toBe(Math.min(...live.slice(2)))
    // Tree, overflow and free-list pages all come from the free list once it holds a checkpoint's
    // worth (FORMAT.md step 5): from then on the file does not grow at all.
    for (let i = 3; i < metas.length; i++) expect(metas[i]!.pageCount).toBe(metas[2]!.pageCount)
    expectClean(dir, 400)
    store.close()
  })

  it('rejects bad input without changing the published state', async () => {
    const dir = newDir('input')
    const store = PageStore.open(dir, CACHE)
    await store.checkpoint(5, [{ name: 'a', changes: [{ key: utf8.encode('k'), version: { commitId: 5, value: bytes(3, 1) } }] }])
    const before = store.meta()
    const v = { commitId: 6, value: bytes(1, 1) }
    await expectCode(() => store.checkpoint(4, []), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => store.checkpoint(6, [{ name: 'b', changes: [] }]), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(
      () =>
        store.checkpoint(6, [
          { name: 'b', changes: [] },
          { name: 'a', changes: [{ key: utf8.encode('k') }] },
        ]),
      'KESTREL_INVALID_ARGUMENT',
    )
    await expectCode(
      () =>
        store.checkpoint(6, [
          {
            name: 'a',
            changes: [
              { key: utf8.encode('b'), version: v },
              { key: utf8.encode('a'), version: v },
            ],
          },
        ]),
      'KESTREL_INVALID_ARGUMENT',
    )
    await expectCode(() => store.checkpoint(6, [{ name: 'a', changes: [{ key: new Uint8Array(1025), version: v }] }]), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(
      () => store.checkpoint(6, [{ name: 'a', changes: [{ key: utf8.encode('k'), version: { commitId: 7, value: v.value } }] }]),
      'KESTREL_INVALID_ARGUMENT',
    )
    expect(store.meta()).toEqual(before)
    // A checkpoint with no changes still publishes a new seq and LSN.
    await store.checkpoint(9, [])
    expect(store.meta()).toMatchObject({ seq: 2, checkpointLsn: 9, records: 1 })
    expect(store.get('a', utf8.encode('k'))?.commitId).toBe(5)
    expectClean(dir, 1)
    store.close()
    expect(() => store.get('a', utf8.encode('k'))).toThrow(/closed/)
  })
})

/** Three checkpoints' worth of distinct values for the crash and interleaving tests. */
function generation(gen: number, n: number): CollectionChanges[] {
  const mk = (i: number): Change => ({
    key: utf8.encode(`k${String(i).padStart(5, '0')}`),
    version: { commitId: gen * 100, value: bytes(i % 11 === 0 ? 2000 + i : (i * 13) % 600, gen * 1000 + i) },
  })
  return [
    { name: 'one', changes: Array.from({ length: n }, (_, i) => mk(i)) },
    { name: 'two', changes: Array.from({ length: n }, (_, i) => mk(i)).filter((_, i) => (i + gen) % 2 === 0) },
  ]
}

function expectGeneration(store: PageStore, model: Model): void {
  for (const [name, m] of model) {
    for (const [k, v] of m) expect(sameValue(store.get(name, s2k(k)), v)).toBe(true)
    expect(store.range(name, undefined, undefined, false, Number.POSITIVE_INFINITY).length).toBe(m.size)
  }
}

describe('page store: crash points', () => {
  async function twoGenerations(label: string): Promise<{ dir: string; store: PageStore; model: Model }> {
    const dir = newDir(label)
    const model: Model = new Map()
    const store = PageStore.open(dir, CACHE)
    for (const gen of [1, 2]) {
      const ch = generation(gen, 600)
      await store.checkpoint(gen * 100, ch)
      applyModel(model, ch)
    }
    return { dir, store, model }
  }

  it('losePagesBeforeMeta leaves the previous checkpoint readable, before and after reopen', async () => {
    const generations = await twoGenerations('lose')
    const { dir, model } = generations
    let store = generations.store
    const before = store.meta()
    // seq 3 goes to slot 1, over checkpoint 1's meta; the published checkpoint 2 is in slot 0.
    await expectCode(() => store.checkpoint(300, generation(3, 600), 'losePagesBeforeMeta'), 'KESTREL_IO')
    expect(store.meta()).toEqual(before)
    expectGeneration(store, model)
    expectClean(dir, before.records)
    store.close()
    store = PageStore.open(dir, CACHE)
    expect(store.meta()).toEqual(before)
    expectGeneration(store, model)
    // The next checkpoint rebuilds seq 3 over the debris.
    const ch = generation(3, 600)
    await store.checkpoint(300, ch)
    applyModel(model, ch)
    expectGeneration(store, model)
    expectClean(dir, store.meta().records)
    store.close()
    store = PageStore.open(dir, CACHE)
    expect(store.meta().seq).toBe(3)
    expectGeneration(store, model)
    store.close()
  })

  it('tearMeta: the handle keeps the previous checkpoint, and so does reopen (the torn slot is invalid)', async () => {
    const { dir, store, model } = await twoGenerations('tear')
    const before = store.meta()
    await expectCode(() => store.checkpoint(300, generation(3, 600), 'tearMeta'), 'KESTREL_IO')
    expect(store.meta()).toEqual(before)
    expectGeneration(store, model)
    store.close()
    const again = PageStore.open(dir, CACHE)
    expect(again.meta()).toEqual(before)
    expectGeneration(again, model)
    again.close()
  })

  it('failMetaSync: the handle keeps the previous checkpoint; reopen finds the whole new meta and its synced pages', async () => {
    const { dir, store, model } = await twoGenerations('failsync')
    const before = store.meta()
    const ch = generation(3, 600)
    await expectCode(() => store.checkpoint(300, ch, 'failMetaSync'), 'KESTREL_IO')
    expect(store.meta()).toEqual(before)
    expectGeneration(store, model)
    store.close()
    const next: Model = new Map([...model].map(([n, m]) => [n, new Map(m)]))
    applyModel(next, ch)
    const again = PageStore.open(dir, CACHE)
    expect(again.meta()).toMatchObject({ seq: 3, checkpointLsn: 300, records: before.records })
    expectGeneration(again, next)
    expectClean(dir, again.meta().records)
    again.close()
  })

  it('after failMetaSync, a retry on the same handle that loses its pages still leaves the previous checkpoint', async () => {
    const { dir, store, model } = await twoGenerations('tear-retry')
    const before = store.meta()
    await expectCode(() => store.checkpoint(300, generation(3, 600), 'failMetaSync'), 'KESTREL_IO')
    // The retry reuses the pages the (whole) seq-3 meta reaches: it must first invalidate that slot.
    await expectCode(() => store.checkpoint(400, generation(4, 600), 'losePagesBeforeMeta'), 'KESTREL_IO')
    const reopened = PageStore.open(dir, CACHE)
    expect(reopened.meta()).toEqual(before)
    expectGeneration(reopened, model)
    expectClean(dir, before.records)
    reopened.close()
    const ch = generation(4, 600)
    await store.checkpoint(400, ch)
    applyModel(model, ch)
    expectGeneration(store, model)
    store.close()
    const last = PageStore.open(dir, CACHE)
    expect(last.meta().seq).toBe(3)
    expectGeneration(last, model)
    expectClean(dir, last.meta().records)
    last.close()
  })

  it('a meta torn inside its fields is invalid: open falls back to the previous checkpoint', async () => {
    const { dir, store, model } = await twoGenerations('torn-fields')
    const path = join(dir, PAGE_FILE)
    const before = store.meta()
    const oldSlot1 = readFileSync(path).subarray(PAGE_BYTES, 2 * PAGE_BYTES)
    await store.checkpoint(300, generation(3, 600))
    store.close()
    // Tear at byte 40: the new header, magic and version, then checkpoint 1's LSN, pointers, counts.
    const fd = openSync(path, 'r+')
    writeSync(fd, oldSlot1, 40, 32, PAGE_BYTES + 40)
    closeSync(fd)
    const reopened = PageStore.open(dir, CACHE)
    expect(reopened.meta()).toEqual(before)
    expectGeneration(reopened, model) // checkpoint 3 freed checkpoint 2's pages but could not reuse them yet
    expectClean(dir, before.records)
    reopened.close()
  })

  for (const [fault, seq] of [
    ['losePagesBeforeMeta', 0],
    ['tearMeta', 0],
    ['failMetaSync', 1],
  ] as const) {
    it(`${fault} on the first checkpoint: the handle has no checkpoint; reopen finds seq ${seq}`, async () => {
      const dir = newDir(`${fault}-first`)
      const store = PageStore.open(dir, CACHE)
      await expectCode(() => store.checkpoint(100, generation(1, 50), fault), 'KESTREL_IO')
      expect(store.meta().seq).toBe(0)
      expect(store.get('one', utf8.encode('k00001'))).toBeUndefined()
      const rep = walk(join(dir, PAGE_FILE))
      expect(rep.problems).toEqual([])
      expect(rep.meta?.seq).toBe(seq === 0 ? undefined : seq)
      const again = PageStore.open(dir, CACHE)
      expect(again.meta().seq).toBe(seq)
      again.close()
      await store.checkpoint(100, generation(1, 50))
      expect(store.meta().seq).toBe(1)
      expectClean(dir, store.meta().records)
      store.close()
    })
  }

  it('failed checkpoints followed by one on the same handle', async () => {
    const dir = newDir('retry')
    const model: Model = new Map()
    const store = PageStore.open(dir, 0)
    const ch1 = generation(1, 400)
    await store.checkpoint(100, ch1)
    applyModel(model, ch1)
    await expectCode(() => store.checkpoint(200, generation(2, 400), 'losePagesBeforeMeta'), 'KESTREL_IO')
    await expectCode(() => store.checkpoint(200, generation(2, 400), 'tearMeta'), 'KESTREL_IO')
    await expectCode(() => store.checkpoint(200, generation(2, 400), 'failMetaSync'), 'KESTREL_IO')
    expectGeneration(store, model)
    const ch2 = generation(2, 400)
    await store.checkpoint(200, ch2)
    applyModel(model, ch2)
    expectGeneration(store, model)
    expectClean(dir, store.meta().records)
    store.close()
  })
})

describe('page store: reads interleaved with a checkpoint', () => {
  for (const fault of ['none', 'losePagesBeforeMeta'] as const) {
    it(`synchronous reads between the awaits see old or new values, never an error (${fault})`, async () => {
      const dir = newDir(`interleave-${fault}`)
      const store = PageStore.open(dir, 0) // the minimum cache: most reads go to the file
      const oldModel: Model = new Map()
      for (const gen of [1, 2, 3]) {
        const ch = generation(gen, 2500)
        await store.checkpoint(gen * 100, ch)
        applyModel(oldModel, ch)
      }
      const next = generation(4, 2500)
      const newModel: Model = new Map([...oldModel].map(([n, m]) => [n, new Map(m)]))
      applyModel(newModel, next)
      const names = [...newModel.keys()]
      const r = rng(4)
      let reads = 0
      let sawNew = 0
      const errors: unknown[] = []
      let running = true
      const tick = (): void => {
        if (!running) return
        try {
          for (let i = 0; i < 25; i++) {
            const name = names[Math.floor(r() * names.length)]!
            const k = `k${String(Math.floor(r() * 2500)).padStart(5, '0')}`
            const got = store.get(name, s2k(k))
            const o = oldModel.get(name)?.get(k)
            const n = newModel.get(name)?.get(k)
            if (!sameValue(got, o) && !sameValue(got, n)) throw new Error(`get ${name} ${k}: neither old nor new`)
            if (!sameValue(got, o)) sawNew++
            reads++
          }
          const name = names[Math.floor(r() * names.length)]!
          const rows = store.range(name, { key: utf8.encode('k01000'), inclusive: true }, undefined, r() < 0.5, 30)
          for (const row of rows) {
            const o = oldModel.get(name)?.get(k2s(row.key))
            const n = newModel.get(name)?.get(k2s(row.key))
            if (!sameValue(row, o) && !sameValue(row, n)) throw new Error(`range ${name}: neither old nor new`)
          }
        } catch (err) {
          errors.push(err)
        }
        setImmediate(tick)
      }
      setImmediate(tick)
      const done = store.checkpoint(400, next, fault === 'none' ? undefined : fault)
      try {
        await done
      } catch (err) {
        if (fault === 'none') throw err
      } finally {
        running = false
      }
      expect(errors).toEqual([])
      expect(reads).toBeGreaterThan(0)
      expect(sawNew).toBe(0) // nothing new is visible before publication
      expectGeneration(store, fault === 'none' ? newModel : oldModel)
      expectClean(dir, store.meta().records)
      store.close()
    })
  }
})

function pageKind(path: string, page: number): number {
  const fd = openSync(path, 'r')
  try {
    const b = Buffer.alloc(8)
    readSync(fd, b, 0, 8, page * PAGE_BYTES)
    return b[4]!
  } finally {
    closeSync(fd)
  }
}

function flipByte(path: string, at: number): void {
  const fd = openSync(path, 'r+')
  try {
    const b = Buffer.alloc(1)
    readSync(fd, b, 0, 1, at)
    b[0] = b[0]! ^ 0x5a
    writeSync(fd, b, 0, 1, at)
  } finally {
    closeSync(fd)
  }
}

describe('page store: corruption and versions', () => {
  for (const kind of [2, 4] as const) {
    it(`a corrupt ${kind === 2 ? 'leaf' : 'overflow'} page → KESTREL_CORRUPT naming the page; the checker names it too`, async () => {
      const dir = newDir(`corrupt-${kind}`)
      const path = join(dir, PAGE_FILE)
      let store = PageStore.open(dir, CACHE)
      await store.checkpoint(100, generation(1, 800))
      const catalogRoot = store.meta().catalogRoot
      const victim = [...store.reachablePages()].find((p) => p !== catalogRoot && pageKind(path, p) === kind)!
      expect(victim).toBeGreaterThan(1)
      store.close()
      flipByte(path, victim * PAGE_BYTES + 3000)
      store = PageStore.open(dir, CACHE)
      let err: (Error & { code?: string }) | undefined
      for (const name of ['one', 'two']) {
        for (let i = 0; i < 800 && !err; i++) {
          try {
            store.get(name, utf8.encode(`k${String(i).padStart(5, '0')}`))
          } catch (e) {
            err = e as Error & { code?: string }
          }
        }
      }
      expect(err?.code).toBe('KESTREL_CORRUPT')
      expect(err?.message).toBe(`pages.kdb page ${victim}: checksum mismatch; restore from a backup (kestrel restore <backup> <dir>)`)
      await expectCode(
        () =>
          store.range('one', undefined, undefined, false, Number.POSITIVE_INFINITY).length +
          store.range('two', undefined, undefined, false, Number.POSITIVE_INFINITY).length,
        'KESTREL_CORRUPT',
      )
      const rep = walk(path)
      expect(rep.problems.length).toBeGreaterThan(0)
      expect(rep.problems.some((p) => p.startsWith(`page ${victim}: checksum mismatch`))).toBe(true)
      store.close()
    })
  }

  it('a meta slot with a newer format version → KESTREL_FORMAT_VERSION; a bad slot falls back to the other', async () => {
    const dir = newDir('version')
    const path = join(dir, PAGE_FILE)
    const store = PageStore.open(dir, CACHE)
    await store.checkpoint(100, generation(1, 10))
    await store.checkpoint(200, generation(2, 10))
    store.close()
    const file = readFileSync(path)
    const edit = (slot: number, fn: (page: Buffer) => void): void => {
      const fd = openSync(path, 'r+')
      try {
        const page = Buffer.from(file.subarray(slot * PAGE_BYTES, (slot + 1) * PAGE_BYTES))
        fn(page)
        page.writeUInt32LE(crc32c(page, 0, 4, PAGE_BYTES), 0)
        writeSync(fd, page, 0, PAGE_BYTES, slot * PAGE_BYTES)
      } finally {
        closeSync(fd)
      }
    }
    // Slot 0 (seq 2) with a bad magic: open falls back to slot 1 (seq 1).
    edit(0, (p) => {
      p[25] = 0
    })
    const s1 = PageStore.open(dir, CACHE)
    expect(s1.meta().seq).toBe(1)
    s1.close()
    edit(0, (p) => {
      p.writeUInt32LE(2, 32)
    })
    await expectCode(() => PageStore.open(dir, CACHE), 'KESTREL_FORMAT_VERSION')
    expect(walk(path).problems[0]).toMatch(/^page 0: meta with page store format version 2/)
  })
})

// ---------------------------------------------------------------------------------------------
// Golden scenario: the Rust twin runs the same input; the digests must match.

const kname = (i: number): Uint8Array => utf8.encode(`k${String(i).padStart(5, '0')}`)

function goldenInput(cp: number): CollectionChanges[] {
  if (cp === 1) {
    const big: Change[] = []
    for (let j = 0; j < 5; j++) {
      const value = new Uint8Array(5000 * (j + 1))
      for (let p = 0; p < value.length; p++) value[p] = (j * 7 + p) % 256
      big.push({ key: utf8.encode(`x${j}`), version: { commitId: 10, value } })
    }
    const users: Change[] = []
    for (let i = 0; i < 3000; i++) {
      const value = new Uint8Array((i * 37) % 300)
      for (let p = 0; p < value.length; p++) value[p] = (i + p) % 251
      users.push({ key: kname(i), version: { commitId: 1 + (i % 10), value } })
    }
    return [
      { name: 'big', changes: big },
      { name: 'users', changes: users },
    ]
  }
  if (cp === 2) {
    const users: Change[] = []
    for (let i = 0; i < 3000; i++) {
      if (i % 3 === 0) users.push({ key: kname(i) })
      else if (i % 3 === 1) users.push({ key: kname(i), version: { commitId: 15, value: new Uint8Array(1100).fill(0xab) } })
    }
    const zeta: Change[] = []
    for (let i = 0; i < 100; i++) {
      const value = new Uint8Array(8)
      new DataView(value.buffer).setBigUint64(0, BigInt(i), true)
      zeta.push({ key: Uint8Array.from([i >> 8, i & 0xff]), version: { commitId: 20, value } })
    }
    return [
      { name: 'big', changes: [{ key: utf8.encode('x1') }] },
      { name: 'users', changes: users },
      { name: 'zeta', changes: zeta },
    ]
  }
  const users: Change[] = []
  for (let i = 0; i < 3000; i++) users.push({ key: kname(i) })
  return [
    { name: 'big', changes: [{ key: utf8.encode('x9'), version: { commitId: 30, value: new Uint8Array(10).fill(0x01) } }] },
    { name: 'users', changes: users },
  ]
}

describe('page store: golden scenario', () => {
  it('writes the golden file, byte for byte what the Rust page store writes', async () => {
    const dir = newDir('golden')
    const path = join(dir, PAGE_FILE)
    const store = PageStore.open(dir, CACHE)
    // Page count, records, free pages and the file's SHA-256 after each checkpoint, pinned in
    // testdata/golden-pages.json for both engines.
    const golden = goldenPages().plain
    for (let cp = 1; cp <= 3; cp++) {
      await store.checkpoint(cp * 10, goldenInput(cp))
      const file = readFileSync(path)
      const hex = createHash('sha256').update(file).digest('hex')
      const meta = store.meta()
      expect(file.length).toBe(meta.pageCount * PAGE_BYTES)
      expect(meta.seq).toBe(cp)
      expect(meta.checkpointLsn).toBe(cp * 10)
      const want = golden[cp - 1]!
      expect(meta.pageCount).toBe(want.pageCount)
      expect(meta.records).toBe(want.records)
      expect(meta.freeCount).toBe(want.freeCount)
      expect(hex, `checkpoint ${cp}: the bytes differ from the Rust page store's`).toBe(want.sha256)
      expectClean(dir, want.records)
    }
    expect(store.get('big', utf8.encode('x9'))).toEqual({ commitId: 30, value: new Uint8Array(10).fill(1) })
    expect(store.get('big', utf8.encode('x1'))).toBeUndefined()
    expect(store.get('big', utf8.encode('x4'))?.value.length).toBe(25000)
    expect(store.get('users', kname(2))).toBeUndefined()
    expect(store.collections()).toEqual([
      { name: 'big', records: 5 },
      { name: 'zeta', records: 100 },
    ])
    store.close()
  })
})
