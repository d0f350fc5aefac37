/**
 * Ordered scans at a snapshot against a brute-force model: every bound combination, prefixes,
 * reverse and limit, with the transaction's own writes overlaid — on both engines.
 */
import { describe, expect, it } from 'vitest'
import { compareBytes } from '../lib/codec/bytes.js'
import { encodeKey, encodeKeyPrefix, type Key } from '../lib/codec/key.js'
import { open, type ScanOptions } from '../lib/index.js'
import { ENGINES, rng, tempDir } from './helpers.js'

describe.each(ENGINES)('ordered scans [%s]', (engine) => {
  it('match a brute-force model for random bounds, prefixes, reverse and limits', async () => {
    const db = await open(tempDir(), { engine, retainHistory: { commits: 100 } })
    const c = db.collection<number>('s')
    const random = rng(5)
    const keyOf = (i: number): Key => (i % 3 === 0 ? ['t', i % 7, i] : i % 3 === 1 ? `s${String(i).padStart(3, '0')}` : i)
    const model = new Map<string, { key: Key; value: number }>()
    const id = (k: Key): string => Buffer.from(encodeKey(k)).toString('hex')
    for (let round = 0; round < 5; round++) {
      await db.transaction((tx) => {
        for (let j = 0; j < 40; j++) {
          const k = keyOf(Math.floor(random() * 120))
          if (random() < 0.2) {
            tx.delete(c, k)
            model.delete(id(k))
          } else {
            const v = round * 100 + j
            tx.put(c, k, v)
            model.set(id(k), { key: k, value: v })
          }
        }
      })
    }
    const snapshotModel = new Map(model)
    const tx = db.begin()
    // Own writes overlaid on the snapshot.
    for (let j = 0; j < 15; j++) {
      const k = keyOf(Math.floor(random() * 120))
      if (random() < 0.3) {
        tx.delete(c, k)
        model.delete(id(k))
      } else {
        tx.put(c, k, -j)
        model.set(id(k), { key: k, value: -j })
      }
    }
    // A commit after the snapshot must not show up.
    await db.transaction((t) => t.put(c, 'zzz-late', 1))
    const sorted = (m: Map<string, { key: Key; value: number }>): Array<{ key: Key; value: number }> =>
      [...m.values()].sort((a, b) => compareBytes(encodeKey(a.key), encodeKey(b.key)))
    const bounds: Array<keyof ScanOptions> = ['gt', 'gte', 'lt', 'lte']
    for (let q = 0; q < 300; q++) {
      const o: ScanOptions = {}
      for (const b of bounds) if (random() < 0.3) (o as Record<string, Key>)[b] = keyOf(Math.floor(random() * 130))
      if (random() < 0.2) o.prefix = random() < 0.5 ? 's0' : ['t', Math.floor(random() * 7)]
      if (random() < 0.3) o.reverse = true
      if (random() < 0.3) o.limit = Math.floor(random() * 10)
      const expectFrom = (m: Map<string, { key: Key; value: number }>): Array<{ key: Key; value: number }> => {
        let rows = sorted(m).filter(({ key }) => {
          const e = encodeKey(key)
          if (o.gt !== undefined && compareBytes(e, encodeKey(o.gt)) <= 0) return false
          if (o.gte !== undefined && compareBytes(e, encodeKey(o.gte)) < 0) return false
          if (o.lt !== undefined && compareBytes(e, encodeKey(o.lt)) >= 0) return false
          if (o.lte !== undefined && compareBytes(e, encodeKey(o.lte)) > 0) return false
          if (o.prefix !== undefined) {
            const p = encodeKeyPrefix(o.prefix)
            if (e.length < p.length || compareBytes(e.subarray(0, p.length), p) !== 0) return false
          }
          return true
        })
        if (o.reverse) rows = rows.reverse()
        return o.limit !== undefined ? rows.slice(0, o.limit) : rows
      }
      expect([...tx.scan(c, o)], JSON.stringify(o)).toEqual(expectFrom(model))
      const view = db.at(tx.snapshot)
      expect([...view.scan(c, o)], `view ${JSON.stringify(o)}`).toEqual(expectFrom(snapshotModel))
      view.close()
    }
    tx.rollback()
    await db.close()
  })
})
