import { describe, expect, it } from 'vitest'
import { compareBytes } from '../lib/codec/bytes.js'
import { decodeKey, encodeKey, encodeKeyPrefix, type Key } from '../lib/codec/key.js'
import { decodeValue, encodeValue } from '../lib/codec/value.js'
import { crc32c } from '../lib/format/crc32c.js'
import { OP_DELETE, OP_PUT, decodeCommit, encodeCommit } from '../lib/format/payload.js'
import { expectCode, rng } from './helpers.js'

const typeRank = (k: Key): number => (typeof k === 'number' ? 0 : typeof k === 'bigint' ? 1 : typeof k === 'string' ? 2 : k instanceof Uint8Array ? 3 : 4)

function codePoints(s: string): number[] {
  return [...s].map((c) => c.codePointAt(0)!)
}

/** The natural order the encoding must reproduce (docs/FORMAT.md "Keys"). */
function naturalCompare(a: Key, b: Key): number {
  const ra = typeRank(a)
  const rb = typeRank(b)
  if (ra !== rb) return ra - rb
  if (typeof a === 'number' || typeof a === 'bigint') return a < (b as typeof a) ? -1 : a > (b as typeof a) ? 1 : 0
  if (typeof a === 'string') {
    const x = codePoints(a)
    const y = codePoints(b as string)
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! - y[i]!
    return x.length - y.length
  }
  if (a instanceof Uint8Array) return compareBytes(a, b as Uint8Array)
  const x = a as Key[]
  const y = b as Key[]
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = naturalCompare(x[i]!, y[i]!)
    if (d !== 0) return d
  }
  return x.length - y.length
}

function randomKey(r: () => number, depth = 0): Key {
  const t = Math.floor(r() * (depth < 2 ? 5 : 4))
  switch (t) {
    case 0: {
      const choices = [0, -0, 1, -1, 0.5, -0.5, 1e300, -1e300, Number.MIN_VALUE, -Number.MIN_VALUE, 2 ** 53, -(2 ** 53)]
      return r() < 0.5 ? choices[Math.floor(r() * choices.length)]! : (r() - 0.5) * 10 ** Math.floor(r() * 12)
    }
    case 1: {
      const n = BigInt(Math.floor(r() * 2 ** 40)) ** BigInt(1 + Math.floor(r() * 4))
      return r() < 0.5 ? -n : n
    }
    case 2: {
      const alphabet = ['', 'a', 'b', '\u0000', '\u00ff', 'é', '\uffff', '😀', 'zz']
      let s = ''
      const n = Math.floor(r() * 4)
      for (let i = 0; i < n; i++) s += alphabet[Math.floor(r() * alphabet.length)]
      return s
    }
    case 3:
      return Uint8Array.from({ length: Math.floor(r() * 4) }, () => [0, 1, 0xff, 0x7f][Math.floor(r() * 4)]!)
    default:
      return Array.from({ length: 1 + Math.floor(r() * 3) }, () => randomKey(r, depth + 1))
  }
}

describe('key codec', () => {
  it('byte order equals natural order on 3000 random keys, and round-trips', () => {
    const r = rng(42)
    const keys = Array.from({ length: 3000 }, () => randomKey(r))
    const encoded = keys.map((k) => ({ k, e: encodeKey(k) }))
    for (const { k, e } of encoded) {
      const back = decodeKey(e)
      expect(naturalCompare(back, k)).toBe(0)
    }
    const r2 = rng(7)
    for (let i = 0; i < 20_000; i++) {
      const a = encoded[Math.floor(r2() * encoded.length)]!
      const b = encoded[Math.floor(r2() * encoded.length)]!
      expect(Math.sign(compareBytes(a.e, b.e))).toBe(Math.sign(naturalCompare(a.k, b.k)))
    }
  })

  it('normalises -0 and keeps 1 and 1n apart', () => {
    expect(encodeKey(-0)).toEqual(encodeKey(0))
    expect(compareBytes(encodeKey(1), encodeKey(1n))).toBeLessThan(0)
  })

  it('prefix encodings are prefixes of the keys they match', () => {
    const starts = (k: Uint8Array, p: Uint8Array): boolean => p.every((b, i) => k[i] === b)
    expect(starts(encodeKey('abc'), encodeKeyPrefix('ab'))).toBe(true)
    expect(starts(encodeKey('b'), encodeKeyPrefix('ab'))).toBe(false)
    expect(starts(encodeKey(['user', 7, 'x']), encodeKeyPrefix(['user', 7]))).toBe(true)
    expect(starts(encodeKey(['users', 7]), encodeKeyPrefix(['user']))).toBe(true) // string element stays open
    expect(starts(encodeKey(['user', 8]), encodeKeyPrefix(['user', 7]))).toBe(false)
  })

  it('refuses keys it cannot order, with stable codes', async () => {
    for (const bad of [NaN, Infinity, -Infinity, null, undefined, true, {}, [], new Date(), () => 1, Symbol('x')]) {
      await expectCode(() => encodeKey(bad as never), 'KESTREL_INVALID_KEY')
    }
    await expectCode(() => encodeKey(2n ** 1020n), 'KESTREL_INVALID_KEY')
    await expectCode(() => encodeKey('x'.repeat(1100)), 'KESTREL_KEY_TOO_LARGE')
    expect(encodeKey('x'.repeat(1000)).length).toBe(1 + 1000 + 2)
  })
})

describe('value codec', () => {
  it('round-trips plain data, bytes, bigints, dates, maps', () => {
    const v = {
      s: 'é😀',
      n: 1.5,
      i: -7,
      big: 2n ** 70n,
      b: Uint8Array.from([0, 1, 2]),
      d: new Date(1e12),
      a: [null, true, false],
      nested: { x: [1, { y: 2 }] },
    }
    const back = decodeValue<typeof v>(encodeValue(v))
    expect(back.s).toBe(v.s)
    expect(back.big).toBe(v.big)
    expect([...back.b]).toEqual([0, 1, 2])
    expect(back.d.getTime()).toBe(1e12)
    expect(back.nested).toEqual(v.nested)
  })

  it('refuses what it cannot store faithfully', async () => {
    await expectCode(() => encodeValue(undefined), 'KESTREL_INVALID_VALUE')
    await expectCode(() => encodeValue({ f: () => 1 }), 'KESTREL_INVALID_VALUE')
    await expectCode(() => encodeValue({ s: Symbol('x') }), 'KESTREL_INVALID_VALUE')
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    expect((await expectCode(() => encodeValue(cyclic), 'KESTREL_INVALID_VALUE')).message).toContain('contains a cycle')
    // A cycle through an array, a Map and a Set, reached below a shared (acyclic) part.
    const shared = { leaf: 1 }
    const ring: unknown[] = [shared]
    ring.push(new Map([['k', new Set([{ back: ring }])]]))
    expect((await expectCode(() => encodeValue({ a: shared, b: ring }), 'KESTREL_INVALID_VALUE')).message).toContain('contains a cycle')
    // Deep but acyclic: its own reason. 256 levels are fine.
    let deep: unknown = 0
    for (let i = 0; i < 300; i++) deep = [deep]
    expect((await expectCode(() => encodeValue(deep), 'KESTREL_INVALID_VALUE')).message).toContain('nests deeper than 256 levels')
    let fine: unknown = 0
    for (let i = 0; i < 256; i++) fine = [fine]
    expect(decodeValue(encodeValue(fine))).toEqual(fine)
    // Unencodable things inside Maps and Sets, keys included; inherited properties are not walked.
    await expectCode(() => encodeValue(new Map([[Symbol('k'), 1]])), 'KESTREL_INVALID_VALUE')
    await expectCode(() => encodeValue(new Set([() => 1])), 'KESTREL_INVALID_VALUE')
    expect(decodeValue(encodeValue(Object.create({ fn: () => 1 }, { own: { value: 1, enumerable: true } })))).toEqual({ own: 1 })
  })

  it('refuses values over 64 MiB', async () => {
    await expectCode(() => encodeValue(new Uint8Array(64 * 1024 * 1024 + 1)), 'KESTREL_VALUE_TOO_LARGE')
  })
})

describe('format primitives', () => {
  it('crc32c matches the standard check value', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283)
    const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 31) & 0xff)
    // Incremental equals one-shot (the frame CRC is computed over header fields + payload).
    expect(crc32c(data, crc32c(data, 0, 0, 333), 333)).toBe(crc32c(data))
  })

  it('COMMIT payload: exact bytes, round trip, and refusal of garbage', () => {
    const payload = encodeCommit([
      { kind: OP_PUT, collection: 'a', key: Uint8Array.from([1]), value: Uint8Array.from([9, 9]) },
      { kind: OP_DELETE, collection: 'b', key: Uint8Array.from([2]), value: undefined },
    ])
    expect([...payload]).toEqual([
      2,
      0,
      1,
      0,
      0x61,
      1,
      0,
      0x62, // 2 collections: "a", "b"
      2,
      0,
      0,
      0, // 2 ops
      1,
      0,
      0,
      1,
      0,
      0,
      0,
      1,
      2,
      0,
      0,
      0,
      9,
      9, // PUT a [1] = [9, 9]
      2,
      1,
      0,
      1,
      0,
      0,
      0,
      2, // DELETE b [2]
    ])
    const ops = decodeCommit(payload)
    expect(ops.map((o) => [o.collection, [...o.key], o.value && [...o.value]])).toEqual([
      ['a', [1], [9, 9]],
      ['b', [2], undefined],
    ])
    expect(() => decodeCommit(payload.subarray(0, payload.length - 1))).toThrow(/truncated/)
    expect(() => decodeCommit(Uint8Array.from([...payload, 0]))).toThrow(/trailing/)
  })
})
