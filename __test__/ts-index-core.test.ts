/**
 * Secondary indexes in the ts engine, at the Core level (docs/FORMAT.md "Secondary indexes"):
 * index entries of values that come back while readers pin old versions, step by step;
 * scavenge slices, envelopes and merges, a randomized comparison of `find` with brute force
 * across scavenges, checkpoints and reopens, and the exact page-store index trees a checkpoint
 * derives.
 */
import { createHash } from 'node:crypto'
import { appendFileSync, existsSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { encodeKey } from '../lib/codec/key.js'
import { decodeValue, encodeValue } from '../lib/codec/value.js'
import { encodeEnvelope, indexEntryKey, type IndexKey } from '../lib/format/envelope.js'
import { BATCH_END, FRAME_HEADER_BYTES, LOG_DIR, RECORD_COMMIT, writeFrame } from '../lib/format/log.js'
import { walk } from '../lib/format/page_check.js'
import { PAGE_FILE } from '../lib/format/page_layout.js'
import { OP_APPEND, OP_DELETE, OP_INCREMENT, OP_PUT, encodeCommit, type WriteOp } from '../lib/format/payload.js'
import { indexKeys } from '../lib/format/stored.js'
import type { CoreOpenOptions, CoreScanOptions } from '../lib/core/types.js'
import { TsCore } from '../lib/core/ts/engine.js'
import { PageStore, type Change, type CollectionChanges } from '../lib/core/ts/pages/index.js'
import { KEY_OVERHEAD_BYTES, VERSION_OVERHEAD_BYTES } from '../lib/core/ts/store/chain.js'
import { INDEX_ENTRY_OVERHEAD_BYTES } from '../lib/core/ts/store/overlay.js'
import { expectCode, goldenPages, k2s, newDir, rng, s2k } from './helpers.js'

const OPTIONS: CoreOpenOptions = {
  durability: 'none',
  segmentBytes: 64 << 20,
  groupBytesMax: 4 << 20,
  retainCommits: 0,
  // No checkpoint but on request and at close (the randomized model knows when they happen).
  cacheBytes: 2 ** 40,
  checkpointBytes: 2 ** 40,
  checkpointIntervalMs: 0,
  flushQueueBytes: 64 << 20,
  deferredBytesMax: 64 << 20,
}

const open = (dir: string): Promise<TsCore> => TsCore.open(dir, OPTIONS)
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

/** The smallest byte string greater than every string starting with `prefix` (undefined: none). */
function prefixEnd(prefix: Uint8Array): Uint8Array | undefined {
  const out = prefix.slice()
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i]! < 0xff) {
      out[i]!++
      return out.subarray(0, i + 1)
    }
  }
  return undefined
}

/** Entry-key bounds of a lookup of one index key (entries with prefix `ik`). */
function lookup(ik: Uint8Array): CoreScanOptions {
  return { gte: ik, lt: prefixEnd(ik) }
}

const put = (collection: string, key: Uint8Array, value: unknown, keys: IndexKey[] = []): WriteOp => ({
  kind: OP_PUT,
  collection,
  key,
  value: encodeEnvelope(encodeValue(value), keys),
})
const del = (collection: string, key: Uint8Array): WriteOp => ({ kind: OP_DELETE, collection, key, value: undefined })

async function commit(core: TsCore, ...ops: WriteOp[]): Promise<number> {
  return Number(await core.commit(encodeCommit(ops)))
}

/** find() decoded: [primary key hex, value] pairs. */
function found(core: TsCore, collection: string, index: string, o: CoreScanOptions, snapshot: number): Array<[string, unknown]> {
  return core.find(collection, index, o, snapshot).map(([k, v]) => [hex(k), decodeValue(v)])
}

const FULL_PASS = { retireAgeMax: -1, targetBytes: Number.POSITIVE_INFINITY, visitMax: 1_000_000 }

// ---------------------------------------------------------------------------------------------

describe('ts core: pruning keeps every index entry a staying version holds', () => {
  it('values that come back, step by step: each snapshot finds its record by its own value, a new reader by "-" only', async () => {
    const dir = newDir('values-come-back')
    const core = await open(dir)
    const pk = encodeKey(1)
    const values = ['-', 'A', 'B', 'C', 'D']
    const set = (f1: string): Promise<number> => commit(core, put('t3', pk, { f1 }, [{ index: 'f1', key: encodeKey(f1) }]))
    const findAt = (snapshot: number): string[] =>
      values.filter((v) => {
        const r = found(core, 't3', 'f1', lookup(encodeKey(v)), snapshot)
        if (r.length > 1) throw new Error(`${v} found ${r.length} times at ${snapshot}`)
        if (r.length === 1) expect(r[0]).toEqual([hex(pk), { f1: v }])
        return r.length === 1
      })

    // Five commits: '-', A, B, C, D.
    for (const v of values) await set(v)
    const sees = { D: 0, A: 0, C: 0 }
    sees.D = Number(core.lastCommitId()) // a reader of D
    expect(findAt(sees.D)).toEqual(['D'])
    await set('A') // A comes back
    sees.A = Number(core.lastCommitId()) // a reader of A
    expect(findAt(sees.A)).toEqual(['A'])
    // B, then C after a savepoint: the transaction folds them into one write of C.
    await set('C')
    sees.C = Number(core.lastCommitId()) // a reader of C
    expect(findAt(sees.C)).toEqual(['C'])
    const last = await set('-')
    expect(findAt(last)).toEqual(['-'])
    expect(core.stats().indexEntries).toBe(5)
    expect(core.stats().versions).toBe(8)

    // The scavenger: the horizon moves to the oldest open snapshot, and a full pass prunes the
    // first four versions ('-', A, B, C). Only B is held by no staying version.
    core.setHorizon(sees.D, false)
    const step = core.scavenge(FULL_PASS)
    expect(step).toEqual({ visited: 1, prunedVersions: 4, indexEntriesRemoved: 1, retired: 0, done: true, survey: [] })
    expect(core.stats().versions).toBe(4)
    expect(core.stats().indexEntries).toBe(4) // '-', A, C, D

    expect(findAt(sees.D)).toEqual(['D'])
    // A, C and '-' are also held by pruned versions: comparing a leaving version with its
    // neighbour instead of counting would have dropped their entries.
    expect(findAt(sees.A)).toEqual(['A'])
    expect(findAt(sees.C)).toEqual(['C'])
    expect(findAt(last)).toEqual(['-'])

    // Still so after a checkpoint (the index tree holds '-' for the page store's version) and
    // once the snapshots close and the chain retires to the page store.
    await core.checkpoint()
    expect(findAt(sees.D)).toEqual(['D'])
    expect(findAt(sees.A)).toEqual(['A'])
    expect(findAt(sees.C)).toEqual(['C'])
    core.setHorizon(last, false)
    const after = core.scavenge({ retireAgeMax: 0, targetBytes: 0, visitMax: 10 })
    expect(after).toMatchObject({ visited: 1, prunedVersions: 3, indexEntriesRemoved: 4, retired: 1, done: true })
    expect(core.stats()).toMatchObject({ versions: 0, recordBytes: 0, indexEntries: 0, retired: 1 })
    expect(findAt(last)).toEqual(['-'])
    await core.close()

    const reopened = await open(dir)
    expect(reopened.find('t3', 'f1', lookup(encodeKey('-')), Number(reopened.lastCommitId())).map(([k]) => hex(k))).toEqual([hex(pk)])
    expect(reopened.find('t3', 'f1', lookup(encodeKey('A')), Number(reopened.lastCommitId()))).toEqual([])
    await reopened.close()
  })
})

describe('ts core: envelopes', () => {
  it('reads return the MessagePack part; merges on an envelope base store a plain value', async () => {
    const dir = newDir('envelope')
    const core = await open(dir)
    const k = encodeKey('list')
    const n = encodeKey('n')
    const c1 = await commit(core, put('c', k, [1], [{ index: 'tag', key: encodeKey('x') }]), put('c', n, 5, [{ index: 'tag', key: encodeKey('y') }]))
    expect(decodeValue(core.get('c', k, c1)!)).toEqual([1])
    expect(core.scan('c', {}, c1).map(([key, v]) => [hex(key), decodeValue(v)])).toEqual([
      [hex(k), [1]],
      [hex(n), 5],
    ])
    const delta = new Uint8Array(8)
    new DataView(delta.buffer).setFloat64(0, 2.5, true)
    const c2 = await commit(
      core,
      { kind: OP_APPEND, collection: 'c', key: k, value: encodeValue([2]) },
      { kind: OP_INCREMENT, collection: 'c', key: n, value: delta },
    )
    expect(decodeValue(core.get('c', k, c2)!)).toEqual([1, 2])
    expect(decodeValue(core.get('c', n, c2)!)).toBe(7.5)
    // The merged versions are plain: no index key any more, but the old snapshot still finds them.
    expect(found(core, 'c', 'tag', lookup(encodeKey('x')), c2)).toEqual([])
    expect(found(core, 'c', 'tag', lookup(encodeKey('x')), c1)).toEqual([[hex(k), [1]]])
    expect(found(core, 'c', 'tag', {}, c1)).toEqual([
      [hex(k), [1]],
      [hex(n), 5],
    ])
    await core.checkpoint()
    await core.close()
    const store = PageStore.open(dir, 1 << 20)
    // The append's version removed both entries of the checkpointed tree (which never had them:
    // the first checkpoint already saw the plain values).
    expect(store.trees()).toEqual([{ name: 'c', records: 2 }])
    expect(store.get('c', k)!.value).toEqual(encodeValue([1, 2]))
    store.close()
  })

  it('a malformed envelope is KESTREL_INVALID_ARGUMENT at commit and KESTREL_CORRUPT in replay', async () => {
    const dir = newDir('malformed')
    const core = await open(dir)
    const bad: Uint8Array[] = [
      Uint8Array.of(0xc1),
      Uint8Array.of(0xc1, 0, 0, 0xc0),
      Uint8Array.of(0xc1, 9, 0, 1),
      Uint8Array.of(0xc1, 4, 0, 1, 0x61, 0, 0, 0xc0), // key length 0
      encodeEnvelope(encodeValue(1), [{ index: 'a', key: new Uint8Array(1000).fill(7) }]), // with a 30-byte primary key: too long
    ]
    const pk = new Uint8Array(30).fill(0x31)
    for (const value of bad) {
      await expectCode(() => core.commit(encodeCommit([{ kind: OP_PUT, collection: 'c', key: pk, value }])), 'KESTREL_INVALID_ARGUMENT')
    }
    // The same envelope with a shorter primary key fits.
    await commit(core, { kind: OP_PUT, collection: 'c', key: encodeKey(1), value: bad[4]! })
    const last = Number(core.lastCommitId())
    await core.close()
    // Append a whole, checksummed record carrying a malformed envelope: replay must refuse it.
    const log = join(dir, LOG_DIR)
    const segment = readdirSync(log).sort().pop()!
    const payload = encodeCommit([{ kind: OP_PUT, collection: 'c', key: encodeKey(2), value: bad[2]! }])
    const frame = new Uint8Array(FRAME_HEADER_BYTES + payload.length)
    writeFrame(frame, 0, last + 1, RECORD_COMMIT | BATCH_END, payload)
    appendFileSync(join(log, segment), frame)
    const err = await expectCode(() => open(dir), 'KESTREL_CORRUPT')
    expect(err.message).toMatch(/index envelope block length 9/)
  })
})

describe('ts core: scavenge slices', () => {
  it('visits every chain once per pass, in slices; retires by age group while above the target; surveys what stays', async () => {
    const dir = newDir('slices')
    const core = await open(dir)
    // Age group 0: a0..a9; age group 1: b0..b9 (20 records with an index key each).
    for (let i = 0; i < 10; i++) await commit(core, put('c', encodeKey(`a${i}`), i, [{ index: 'i', key: encodeKey(i % 3) }]))
    core.setAgeGroup(1)
    core.setAgeGroup(0) // never decreases
    expect(core.stats().ageGroup).toBe(1)
    for (let i = 0; i < 10; i++) await commit(core, put('c', encodeKey(`b${i}`), i, [{ index: 'i', key: encodeKey(i % 3) }]))
    expect(core.stats().indexEntries).toBe(20)
    // Nothing is checkpointed: nothing is retirable, nothing surveyed.
    let s = core.scavenge({ retireAgeMax: 10, targetBytes: 0, visitMax: 1000 })
    expect(s).toEqual({ visited: 20, prunedVersions: 0, indexEntriesRemoved: 0, retired: 0, done: true, survey: [] })
    await core.checkpoint()
    // A chain: its stored value (3 + 13-byte block + 1), its key (5) and overheads; its index
    // entry (9 + 5 + 2 bytes and overhead) is charged while in memory, not surveyed.
    const per = 17 + VERSION_OVERHEAD_BYTES + 5 + KEY_OVERHEAD_BYTES
    const entry = 16 + INDEX_ENTRY_OVERHEAD_BYTES
    expect(core.stats().recordBytes).toBe(20 * (per + entry))
    // Slices of 7: 7, 7, 6 (the last one says done), then a new pass.
    const steps = [0, 1, 2].map(() => core.scavenge({ retireAgeMax: -1, targetBytes: 0, visitMax: 7 }))
    expect(steps.map((x) => [x.visited, x.done])).toEqual([
      [7, false],
      [7, false],
      [6, true],
    ])
    const survey = steps.flatMap((x) => x.survey)
    expect(survey).toEqual([0, 7 * per, 0, 3 * per, 1, 4 * per, 1, 6 * per])
    // Reading a0 moves it to age group 1: it is not retired with age group 0.
    core.get('c', encodeKey('a0'), Number(core.lastCommitId()))
    s = core.scavenge({ retireAgeMax: 0, targetBytes: 0, visitMax: 1000 })
    expect(s).toMatchObject({ visited: 20, retired: 9, done: true, survey: [1, 11 * per] })
    expect(core.stats()).toMatchObject({ versions: 11, retired: 9 })
    // Stop retiring at the target: memory above 5 chains' worth retires 6 of the 11.
    s = core.scavenge({ retireAgeMax: 1, targetBytes: 5 * (per + entry), visitMax: 1000 })
    expect(s).toMatchObject({ visited: 11, retired: 6, done: true, survey: [1, 5 * per] })
    expect(core.stats().recordBytes).toBe(5 * (per + entry))
    // Every record is still found, from memory or from the page store's index tree.
    const snap = Number(core.lastCommitId())
    for (let m = 0; m < 3; m++) {
      const got = core.find('c', 'i', lookup(encodeKey(m)), snap).map(([k, v]) => [k2s(k), decodeValue(v)])
      const want = [...Array(10).keys()]
        .filter((i) => i % 3 === m)
        .flatMap((i) => [
          [k2s(encodeKey(`a${i}`)), i],
          [k2s(encodeKey(`b${i}`)), i],
        ])
      want.sort((x, y) => (x[0]! < y[0]! ? -1 : 1))
      expect(got).toEqual(want)
    }
    expect(core.find('c', 'i', { reverse: true, limit: 3 }, snap).map(([, v]) => decodeValue(v))).toEqual([8, 5, 2])
    // Everything retires; the accounting returns to zero.
    core.scavenge({ retireAgeMax: 1, targetBytes: 0, visitMax: 1000 })
    expect(core.stats()).toMatchObject({ versions: 0, recordBytes: 0, indexEntries: 0, retired: 20 })
    await core.close()
  })

  it('drops lone tombstones at or below the horizon once checkpointed, with their index entries gone', async () => {
    const dir = newDir('tombstones')
    const core = await open(dir)
    const a = encodeKey('a')
    await commit(core, put('c', a, 1, [{ index: 'i', key: encodeKey(1) }]))
    const c2 = await commit(core, del('c', a))
    expect(core.stats().indexEntries).toBe(1)
    core.setHorizon(c2, false)
    let s = core.scavenge(FULL_PASS)
    expect(s).toMatchObject({ prunedVersions: 1, indexEntriesRemoved: 1, done: true })
    expect(core.stats()).toMatchObject({ versions: 1, indexEntries: 0 })
    await core.checkpoint()
    s = core.scavenge(FULL_PASS)
    expect(s).toMatchObject({ visited: 1, prunedVersions: 1, retired: 0, done: true })
    expect(core.stats()).toMatchObject({ versions: 0, recordBytes: 0, indexEntries: 0, keys: 0 })
    expect(core.find('c', 'i', {}, c2)).toEqual([])
    await core.close()
  })
})

// ---------------------------------------------------------------------------------------------
// Randomized: find against brute force.

interface MVersion {
  commitId: number
  value: unknown | undefined
  keys: IndexKey[]
}
/** collection → primary key (latin1) → versions, oldest first. */
type MModel = Map<string, Map<string, MVersion[]>>

const COLLECTIONS = ['a', 'b']
const INDEXES = ['byX', 'byY']

function visibleAt(vs: MVersion[], s: number): MVersion | undefined {
  for (let i = vs.length - 1; i >= 0; i--) if (vs[i]!.commitId <= s) return vs[i]
  return undefined
}

function inBounds(e: string, o: CoreScanOptions): boolean {
  if (o.gte && e < k2s(o.gte)) return false
  if (!o.gte && o.gt && e <= k2s(o.gt)) return false
  if (o.lte && e > k2s(o.lte)) return false
  if (!o.lte && o.lt && e >= k2s(o.lt)) return false
  return true
}

function bruteFind(model: MModel, collection: string, index: string, o: CoreScanOptions, s: number): Array<[string, unknown]> {
  const hits: Array<[string, string, unknown]> = []
  for (const [pk, vs] of model.get(collection) ?? []) {
    const v = visibleAt(vs, s)
    if (!v || v.value === undefined) continue
    const k = v.keys.find((x) => x.index === index)
    if (!k) continue
    const e = k2s(indexEntryKey(k.key, s2k(pk)))
    if (inBounds(e, o)) hits.push([e, hex(s2k(pk)), v.value])
  }
  hits.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))
  if (o.reverse) hits.reverse()
  return hits.slice(0, o.limit ?? Infinity).map(([, k, v]) => [k, v])
}

/** The index trees checkpoint `model` state must have: tree name → entry (latin1) → commit id. */
type Trees = Map<string, Map<string, number>>

/** After a checkpoint of everything: the expected trees (pairs kept from `prev` keep their commit ids). */
function expectedTrees(model: MModel, prev: Trees): Trees {
  const out: Trees = new Map()
  for (const [c, m] of model) {
    for (const [pk, vs] of m) {
      const v = vs[vs.length - 1]!
      if (v.value === undefined) continue
      for (const k of v.keys) {
        const name = `${c}\u0000${k.index}`
        const e = k2s(indexEntryKey(k.key, s2k(pk)))
        let t = out.get(name)
        if (!t) {
          t = new Map()
          out.set(name, t)
        }
        t.set(e, prev.get(name)?.get(e) ?? v.commitId)
      }
    }
  }
  return out
}

function checkTrees(dir: string, model: MModel, trees: Trees): void {
  const store = PageStore.open(dir, 1 << 20)
  try {
    const live = (c: string): number => [...(model.get(c)?.values() ?? [])].filter((vs) => vs[vs.length - 1]!.value !== undefined).length
    const want = [
      ...COLLECTIONS.filter((c) => live(c) > 0).map((c) => ({ name: c, records: live(c) })),
      ...[...trees].map(([name, t]) => ({ name, records: t.size })),
    ].sort((x, y) => Buffer.compare(Buffer.from(x.name), Buffer.from(y.name)))
    expect(store.trees()).toEqual(want)
    const records = COLLECTIONS.reduce((n, c) => n + live(c), 0)
    expect(store.meta().records).toBe(records)
    for (const [name, t] of trees) {
      const got = store.range(name, undefined, undefined, false, Number.MAX_SAFE_INTEGER).map((e) => [k2s(e.key), e.commitId, e.value.length])
      const exp = [...t].sort((x, y) => (x[0] < y[0] ? -1 : 1)).map(([e, cid]) => [e, cid, 0])
      expect(got, `index tree ${JSON.stringify(name)}`).toEqual(exp)
    }
    // And the trees are what the page store's own records derive.
    for (const c of COLLECTIONS) {
      for (const r of store.range(c, undefined, undefined, false, Number.MAX_SAFE_INTEGER)) {
        for (const k of indexKeys(r.value, r.value.length, r.key.length)) {
          expect(trees.get(`${c}\u0000${k.index}`)?.has(k2s(indexEntryKey(k.key, r.key)))).toBe(true)
        }
      }
    }
  } finally {
    store.close()
  }
  // No checkpoint yet (nothing was ever committed): no file.
  if (!existsSync(join(dir, PAGE_FILE))) {
    expect(trees.size).toBe(0)
    return
  }
  const rep = walk(join(dir, PAGE_FILE))
  expect(rep.problems).toEqual([])
  expect(rep.records).toBe(
    COLLECTIONS.reduce((n, c) => n + [...(model.get(c)?.values() ?? [])].filter((vs) => vs[vs.length - 1]!.value !== undefined).length, 0),
  )
}

describe('ts core: find against brute force', () => {
  for (const seed of [1, 2, 3]) {
    it(`random puts, deletes, scavenges, checkpoints and reopens (seed ${seed})`, async () => {
      const r = rng(seed)
      const int = (n: number): number => Math.floor(r() * n)
      const dir = newDir(`random${seed}`)
      let core = await open(dir)
      const model: MModel = new Map(COLLECTIONS.map((c) => [c, new Map()]))
      let trees: Trees = new Map()
      /** Snapshots held open (≥ the horizon), besides the newest commit. */
      let snapshots: number[] = []
      let counter = 0
      const pkOf = (i: number): Uint8Array => (i % 4 === 0 ? encodeKey([i, 'x']) : encodeKey(i))
      const ikPool = (index: string, i: number): Uint8Array => (index === 'byX' ? encodeKey(i) : encodeKey(['y', i % 2 === 0 ? i : String(i)]))

      const verify = (): void => {
        const last = Number(core.lastCommitId())
        for (const s of [...snapshots, last]) {
          for (const c of COLLECTIONS) {
            for (const index of INDEXES) {
              // A lookup of one index key, a range, everything, reverse and limits.
              const ik = ikPool(index, int(6))
              const ik2 = ikPool(index, int(6))
              const [lo, hi] = k2s(ik) < k2s(ik2) ? [ik, ik2] : [ik2, ik]
              const options: CoreScanOptions[] = [
                lookup(ik),
                { gte: lo, lt: hi },
                { gt: lo, lte: prefixEnd(hi), reverse: true },
                {},
                { reverse: true, limit: 1 + int(4) },
                { gte: lo, limit: 1 + int(3) },
              ]
              for (const o of options) {
                const got = found(core, c, index, o, s)
                const want = bruteFind(model, c, index, o, s)
                if (JSON.stringify(got) !== JSON.stringify(want)) {
                  throw new Error(
                    `find ${c}.${index} at ${s} (last ${last}) ${JSON.stringify(Object.fromEntries(Object.entries(o).map(([k, v]) => [k, v instanceof Uint8Array ? hex(v) : v])))}:\n got ${JSON.stringify(got)}\nwant ${JSON.stringify(want)}`,
                  )
                }
              }
            }
            // get() agrees as well (the MessagePack part only).
            for (const [pk, vs] of model.get(c)!) {
              const got = core.get(c, s2k(pk), s)
              const want = visibleAt(vs, s)?.value
              expect(got === undefined ? undefined : decodeValue(got)).toEqual(want)
            }
          }
        }
      }

      for (let step = 0; step < 400; step++) {
        const x = r()
        if (x < 0.55) {
          // One commit of 1..3 writes to distinct keys.
          const ops: WriteOp[] = []
          const pending: Array<[string, string, MVersion]> = []
          const used = new Set<string>()
          const n = 1 + int(3)
          for (let i = 0; i < n; i++) {
            const c = COLLECTIONS[int(COLLECTIONS.length)]!
            const pk = pkOf(int(24))
            if (used.has(c + k2s(pk))) continue
            used.add(c + k2s(pk))
            if (r() < 0.2) {
              ops.push(del(c, pk))
              pending.push([c, k2s(pk), { commitId: 0, value: undefined, keys: [] }])
            } else {
              const keys: IndexKey[] = []
              if (r() < 0.75) keys.push({ index: 'byX', key: ikPool('byX', int(6)) })
              if (r() < 0.5) keys.push({ index: 'byY', key: ikPool('byY', int(6)) })
              if (r() < 0.5) keys.reverse()
              const value = { n: counter++, pad: 'p'.repeat(int(3) === 0 ? 1500 : 5) }
              ops.push(put(c, pk, value, keys))
              pending.push([c, k2s(pk), { commitId: 0, value, keys }])
            }
          }
          const cid = await commit(core, ...ops)
          for (const [c, pk, v] of pending) {
            v.commitId = cid
            const m = model.get(c)!
            const vs = m.get(pk) ?? []
            vs.push(v)
            m.set(pk, vs)
          }
        } else if (x < 0.65) {
          // Open or close snapshots; the horizon follows the oldest open one.
          if (r() < 0.5 || snapshots.length === 0) snapshots.push(Number(core.lastCommitId()))
          else snapshots.splice(int(snapshots.length), 1)
          if (snapshots.length > 4) snapshots.shift()
          core.setHorizon(Math.min(...snapshots, Number(core.lastCommitId())), r() < 0.3)
        } else if (x < 0.82) {
          core.setAgeGroup(core.stats().ageGroup + int(2))
          const before = core.stats()
          const visitMax = 1 + int(30)
          const st = core.scavenge({ retireAgeMax: int(before.ageGroup + 2) - 1, targetBytes: r() < 0.5 ? 0 : int(before.recordBytes + 1), visitMax })
          const after = core.stats()
          expect(after.versions).toBe(before.versions - st.prunedVersions - st.retired)
          expect(after.indexEntries).toBe(before.indexEntries - st.indexEntriesRemoved)
          expect(st.visited).toBeLessThanOrEqual(visitMax)
        } else if (x < 0.93) {
          await core.checkpoint()
          trees = expectedTrees(model, trees)
        } else if (x < 0.97) {
          await core.close()
          trees = expectedTrees(model, trees)
          checkTrees(dir, model, trees)
          core = await open(dir)
          // After open the horizon is the last commit (retainCommits 0): older snapshots are gone.
          snapshots = []
        }
        verify()
      }
      // Close every snapshot, checkpoint, and scavenge everything: memory empties, nothing is lost.
      snapshots = []
      await core.checkpoint()
      trees = expectedTrees(model, trees)
      core.setHorizon(Number(core.lastCommitId()), false)
      core.setAgeGroup(core.stats().ageGroup + 1)
      let st: ReturnType<typeof core.scavenge>
      // Bounded: one full pass.
      do st = core.scavenge({ retireAgeMax: core.stats().ageGroup, targetBytes: 0, visitMax: 7 })
      while (!st.done)
      expect(core.stats()).toMatchObject({ versions: 0, recordBytes: 0, indexEntries: 0 })
      verify()
      await core.close()
      checkTrees(dir, model, trees)
    })
  }
})

// ---------------------------------------------------------------------------------------------
// The indexed golden scenario: the same input as `indexed_golden_scenario` in
// crates/kestrel-core/tests/pages.rs (see its comment for the recipe); the files must be identical.

const ascii = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'))
const igPk = (i: number): Uint8Array => ascii(`u${String(i).padStart(3, '0')}`)

function igBody(i: number, g: number): Uint8Array {
  if (i % 10 === 3) {
    const v = new Uint8Array(3 + 2000)
    v.set([0xc5, 0x07, 0xd0])
    for (let p = 0; p < 2000; p++) v[3 + p] = (i + p + g) % 256
    return v
  }
  return Uint8Array.of(0x92, i % 128, g % 128)
}

function igValue(i: number, g: number): Uint8Array {
  const age = Uint8Array.of(0x10, (i * 3 + g) % 50)
  const email = ascii(`e${String((i * 7) % 1000).padStart(3, '0')}`)
  if (i % 4 === 0) return igBody(i, g)
  if (i % 4 === 1) return encodeEnvelope(igBody(i, g), [{ index: 'age', key: age }])
  return encodeEnvelope(igBody(i, g), [
    { index: 'age', key: age },
    { index: 'email', key: email },
  ])
}

function indexedGoldenCheckpoints(): Array<[number, CollectionChanges[]]> {
  const cp1: Change[] = []
  for (let i = 0; i < 200; i++) cp1.push({ key: igPk(i), version: { commitId: 1 + (i % 10), value: igValue(i, 0) } })
  const cp2: Change[] = []
  for (let i = 0; i < 250; i++) {
    if (i >= 200) cp2.push({ key: igPk(i), version: { commitId: 18, value: igValue(i, 0) } })
    else if (i % 5 === 0) cp2.push({ key: igPk(i) })
    else if (i % 3 === 0) cp2.push({ key: igPk(i), version: { commitId: 15, value: igValue(i, 1) } })
    else if (i % 7 === 0) cp2.push({ key: igPk(i), version: { commitId: 16, value: igBody(i, 1) } })
  }
  const cp3: Change[] = []
  for (let i = 0; i < 250; i += 2) cp3.push({ key: igPk(i) })
  const users = (changes: Change[]): CollectionChanges[] => [{ name: 'users', changes }]
  return [
    [10, users(cp1)],
    [20, users(cp2)],
    [30, users(cp3)],
  ]
}

describe('ts page store: the indexed golden scenario', () => {
  it('derives the index trees and writes, byte for byte, what the Rust page store writes', async () => {
    const dir = newDir('indexed-golden')
    const store = PageStore.open(dir, 1 << 20)
    // Page count, records, free pages and the file's SHA-256 after each checkpoint, pinned in
    // testdata/golden-pages.json for both engines.
    const expected = goldenPages().indexed
    const trees = [
      [
        ['users', 200],
        ['users\u0000age', 150],
        ['users\u0000email', 100],
      ],
      [
        ['users', 210],
        ['users\u0000age', 146],
        ['users\u0000email', 97],
      ],
      [
        ['users', 105],
        ['users\u0000age', 98],
        ['users\u0000email', 49],
      ],
    ]
    /** The records as the model keeps them: pk (latin1) → [commit id, stored value]. */
    const model = new Map<string, [number, Uint8Array]>()
    /** tree → entry (latin1) → commit id. */
    let index: Trees = new Map()
    const cps = indexedGoldenCheckpoints()
    for (let n = 0; n < cps.length; n++) {
      const [lsn, changes] = cps[n]!
      // The model of the index trees: pairs kept from the last checkpoint keep their commit ids.
      for (const ch of changes[0]!.changes) {
        if (ch.version) model.set(k2s(ch.key), [ch.version.commitId, ch.version.value])
        else model.delete(k2s(ch.key))
      }
      const next: Trees = new Map()
      for (const [pk, [cid, value]] of model) {
        for (const k of indexKeys(value, value.length, pk.length)) {
          const name = `users\u0000${k.index}`
          const e = k2s(indexEntryKey(k.key, s2k(pk)))
          let t = next.get(name)
          if (!t) {
            t = new Map()
            next.set(name, t)
          }
          t.set(e, index.get(name)?.get(e) ?? cid)
        }
      }
      index = next
      await store.checkpoint(lsn, changes)
      const meta = store.meta()
      const want = expected[n]!
      expect({ pageCount: meta.pageCount, records: meta.records, freeCount: meta.freeCount }, `cp${n + 1}`).toEqual({
        pageCount: want.pageCount,
        records: want.records,
        freeCount: want.freeCount,
      })
      expect(
        store.trees().map((t) => [t.name, t.records]),
        `cp${n + 1}`,
      ).toEqual(trees[n])
      for (const [name, t] of index) {
        const got = store.range(name, undefined, undefined, false, Number.MAX_SAFE_INTEGER).map((e) => [k2s(e.key), e.commitId, e.value.length])
        expect(got, `cp${n + 1} ${JSON.stringify(name)}`).toEqual([...t].sort((x, y) => (x[0] < y[0] ? -1 : 1)).map(([e, cid]) => [e, cid, 0]))
      }
      const rep = walk(join(dir, PAGE_FILE))
      expect(rep.problems, `cp${n + 1}`).toEqual([])
      expect(rep.records).toBe(meta.records)
      const digest = createHash('sha256')
        .update(readFileSync(join(dir, PAGE_FILE)))
        .digest('hex')
      expect(digest, `cp${n + 1}: the bytes differ from the Rust page store's`).toBe(want.sha256)
    }
    store.close()
  })
})

describe('ts page store: envelopes with a block over many overflow pages', () => {
  it("step 0 reads an old value's block across overflow pages; the checks count the entries", async () => {
    const dir = newDir('big-block')
    const store = PageStore.open(dir, 1 << 20)
    const pk = ascii('k')
    const names = Array.from({ length: 40 }, (_, i) => `i${String(i).padStart(2, '0')}`)
    const ik = (n: number, g: number): Uint8Array => new Uint8Array(1000).fill(n + g)
    // A block of 40 × 1006 bytes: ten overflow pages before the MessagePack part.
    const v1 = encodeEnvelope(
      encodeValue('one'),
      names.map((index, n) => ({ index, key: ik(n, 0) })),
    )
    await store.checkpoint(1, [
      {
        name: 'c',
        changes: [
          { key: pk, version: { commitId: 1, value: v1 } },
          { key: ascii('p'), version: { commitId: 1, value: Uint8Array.of(0xc1, 0xff, 0xff, 1) } },
        ],
      },
    ])
    expect(store.trees()).toEqual([{ name: 'c', records: 2 }, ...names.map((n) => ({ name: `c\u0000${n}`, records: 1 }))])
    expect(walk(join(dir, PAGE_FILE)).problems).toEqual([])
    // i00 keeps its key (and its entry's commit id), i01 changes it, the others go.
    const v2 = encodeEnvelope(encodeValue('two'), [
      { index: 'i00', key: ik(0, 0) },
      { index: 'i01', key: ik(1, 1) },
    ])
    await store.checkpoint(2, [{ name: 'c', changes: [{ key: pk, version: { commitId: 2, value: v2 } }] }])
    expect(store.trees()).toEqual([
      { name: 'c', records: 2 },
      { name: 'c\u0000i00', records: 1 },
      { name: 'c\u0000i01', records: 1 },
    ])
    expect(store.range('c\u0000i00', undefined, undefined, false, 10).map((e) => [hex(e.key), e.commitId])).toEqual([[hex(indexEntryKey(ik(0, 0), pk)), 1]])
    expect(store.range('c\u0000i01', undefined, undefined, false, 10).map((e) => [hex(e.key), e.commitId])).toEqual([[hex(indexEntryKey(ik(1, 1), pk)), 2]])
    expect(store.meta().records).toBe(2)
    const rep = walk(join(dir, PAGE_FILE))
    expect(rep.problems).toEqual([])
    expect(rep.records).toBe(2)
    await store.checkpoint(3, [{ name: 'c', changes: [{ key: pk }] }])
    expect(store.trees()).toEqual([{ name: 'c', records: 1 }])
    expect(walk(join(dir, PAGE_FILE)).problems).toEqual([])
    store.close()
  })
})
