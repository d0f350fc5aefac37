/**
 * Order-preserving key encoding (docs/FORMAT.md "Keys"). The unsigned byte order of two encoded
 * keys equals the natural order of the keys, so engines compare keys as plain bytes.
 */
import { KestrelError } from '../errors.js'
import { transientBytes } from './bytes.js'

/** One element of a key. */
export type KeyPart = string | number | bigint | Uint8Array
/** A key: a scalar or a tuple (array) of keys, nested to any depth. */
export type Key = KeyPart | readonly Key[]

/** Largest encoded key, in bytes. */
export const KEY_BYTES_MAX = 1024
/** Deepest tuple nesting accepted (bounds the recursion). */
const KEY_DEPTH_MAX = 16
const BIGINT_MAGNITUDE_BYTES_MAX = 127

const TAG_NUMBER = 0x10
const TAG_BIGINT = 0x20
const TAG_STRING = 0x30
const TAG_BYTES = 0x40
const TAG_TUPLE = 0x50

const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder('utf-8', { fatal: true })

/** A growable byte buffer; keys are small, so it starts at 64 bytes. */
class Out {
  buf = new Uint8Array(64)
  len = 0
  ensure(n: number): void {
    if (this.len + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.len + n) size *= 2
    const next = new Uint8Array(size)
    next.set(this.buf.subarray(0, this.len))
    this.buf = next
  }
  byte(b: number): void {
    this.ensure(1)
    this.buf[this.len++] = b
  }
  /**
   * Fast path for the common key: ASCII without NUL, written without a TextEncoder allocation.
   * Returns false (having written nothing) when the string needs the general path.
   */
  ascii(s: string, terminate: boolean): boolean {
    const n = s.length
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i)
      if (c === 0 || c > 0x7f) return false
    }
    this.ensure(n + 2)
    for (let i = 0; i < n; i++) this.buf[this.len++] = s.charCodeAt(i)
    if (terminate) {
      this.buf[this.len++] = 0
      this.buf[this.len++] = 0
    }
    return true
  }
  /** Bytes with 0x00 escaped as 00 FF, then the 00 00 terminator. */
  escaped(bytes: Uint8Array, terminate: boolean): void {
    this.ensure(bytes.length * 2 + 2)
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!
      this.buf[this.len++] = b
      if (b === 0) this.buf[this.len++] = 0xff
    }
    if (terminate) {
      this.buf[this.len++] = 0
      this.buf[this.len++] = 0
    }
  }
}

const f64 = new Float64Array(1)
const f64Bytes = new Uint8Array(f64.buffer)

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'object') return `an object (${(value as object).constructor?.name ?? 'Object'})`
  return `${typeof value} ${String(value)}`
}

function invalid(value: unknown, why: string): KestrelError {
  return new KestrelError(
    'KESTREL_INVALID_KEY',
    `invalid key: ${describe(value)} ${why}; a key is a string, a finite number, a bigint, a Uint8Array or a non-empty array of those`,
  )
}

function encodeNumber(out: Out, n: number): void {
  if (!Number.isFinite(n)) throw invalid(n, 'is not a finite number')
  f64[0] = n === 0 ? 0 : n // normalises -0
  out.ensure(9)
  out.buf[out.len++] = TAG_NUMBER
  // Float64Array is little-endian on every platform Node supports; write big-endian.
  const negative = (f64Bytes[7]! & 0x80) !== 0
  for (let i = 7; i >= 0; i--) {
    let b = f64Bytes[i]!
    if (negative) b = ~b & 0xff
    else if (i === 7) b ^= 0x80
    out.buf[out.len++] = b
  }
}

function encodeBigint(out: Out, n: bigint): void {
  const negative = n < 0n
  let mag = negative ? -n : n
  const bytes: number[] = []
  while (mag > 0n) {
    bytes.push(Number(mag & 0xffn))
    mag >>= 8n
    if (bytes.length > BIGINT_MAGNITUDE_BYTES_MAX) throw invalid(n, 'is too large (|n| must be below 2^1016)')
  }
  bytes.reverse()
  out.ensure(2 + bytes.length)
  out.buf[out.len++] = TAG_BIGINT
  out.buf[out.len++] = negative ? 0x7f - bytes.length : 0x80 + bytes.length
  for (const b of bytes) out.buf[out.len++] = negative ? ~b & 0xff : b
}

function encodeInto(out: Out, key: unknown, depth: number, terminate: boolean): void {
  if (typeof key === 'string') {
    out.byte(TAG_STRING)
    if (!out.ascii(key, terminate)) out.escaped(textEncoder.encode(key), terminate)
  } else if (typeof key === 'number') {
    encodeNumber(out, key)
  } else if (typeof key === 'bigint') {
    encodeBigint(out, key)
  } else if (key instanceof Uint8Array) {
    out.byte(TAG_BYTES)
    out.escaped(key, terminate)
  } else if (Array.isArray(key)) {
    if (key.length === 0) throw invalid(key, 'is an empty tuple')
    if (depth >= KEY_DEPTH_MAX) throw invalid(key, `nests deeper than ${KEY_DEPTH_MAX} levels`)
    out.byte(TAG_TUPLE)
    for (let i = 0; i < key.length; i++) {
      // Only the last element of a prefix stays open; every other element is whole.
      encodeInto(out, key[i], depth + 1, terminate || i < key.length - 1)
    }
    if (terminate) out.byte(0)
  } else {
    throw invalid(key, 'is not a key type')
  }
  if (out.len > KEY_BYTES_MAX) {
    throw new KestrelError(
      'KESTREL_KEY_TOO_LARGE',
      `key too large: its encoding exceeds ${KEY_BYTES_MAX} bytes; use a shorter key (hash long identifiers) and keep the data in the value`,
    )
  }
}

/**
 * One scratch buffer for every encoding (a fresh ArrayBuffer costs ~1.5 µs here): encoding is
 * synchronous and calls out to nothing, so it is never entered twice at once.
 */
const scratch = new Out()

/** The scratch buffer's bytes, copied out (pooled: see `transientBytes`); it is reset. */
function takeScratch(): Uint8Array {
  const bytes = transientBytes(scratch.len)
  bytes.set(scratch.buf.subarray(0, scratch.len))
  scratch.len = 0
  return bytes
}

/** Encode a key. Throws `KESTREL_INVALID_KEY` / `KESTREL_KEY_TOO_LARGE`. */
export function encodeKey(key: Key): Uint8Array {
  scratch.len = 0
  encodeInto(scratch, key, 0, true)
  return takeScratch()
}

/**
 * Encode a key prefix: every key whose encoding starts with these bytes "starts with" the prefix.
 * A string or byte-array prefix (alone or as a tuple's last element) is left open, so
 * `'ab'` matches `'abc'`; a tuple prefix `['a']` matches `['a', 1]` and `['abc']`.
 */
export function encodeKeyPrefix(prefix: Key): Uint8Array {
  scratch.len = 0
  encodeInto(scratch, prefix, 0, false)
  return takeScratch()
}

/** Decode one element starting at `pos`; returns the key and the position after it. */
function decodeAt(bytes: Uint8Array, pos: number, depth: number): [Key, number] {
  const tag = bytes[pos]
  const corrupt = (): KestrelError => new KestrelError('KESTREL_CORRUPT', `corrupt key encoding at byte ${pos}; run verify and restore from a backup`)
  switch (tag) {
    case TAG_NUMBER: {
      if (pos + 9 > bytes.length) throw corrupt()
      const negative = (bytes[pos + 1]! & 0x80) === 0
      for (let i = 0; i < 8; i++) {
        let b = bytes[pos + 1 + i]!
        if (negative) b = ~b & 0xff
        else if (i === 0) b ^= 0x80
        f64Bytes[7 - i] = b
      }
      return [f64[0]!, pos + 9]
    }
    case TAG_BIGINT: {
      const lenByte = bytes[pos + 1]
      if (lenByte === undefined) throw corrupt()
      const negative = lenByte < 0x80
      const len = negative ? 0x7f - lenByte : lenByte - 0x80
      if (pos + 2 + len > bytes.length) throw corrupt()
      let mag = 0n
      for (let i = 0; i < len; i++) {
        const b = bytes[pos + 2 + i]!
        mag = (mag << 8n) | BigInt(negative ? ~b & 0xff : b)
      }
      return [negative ? -mag : mag, pos + 2 + len]
    }
    case TAG_STRING:
    case TAG_BYTES: {
      const raw: number[] = []
      let i = pos + 1
      for (;;) {
        if (i >= bytes.length) throw corrupt()
        const b = bytes[i]!
        if (b !== 0) {
          raw.push(b)
          i++
          continue
        }
        const next = bytes[i + 1]
        if (next === 0xff) {
          raw.push(0)
          i += 2
          continue
        }
        if (next === 0) {
          i += 2
          break
        }
        throw corrupt()
      }
      const u8 = Uint8Array.from(raw)
      return [tag === TAG_STRING ? textDecoder.decode(u8) : u8, i]
    }
    case TAG_TUPLE: {
      if (depth >= KEY_DEPTH_MAX) throw corrupt()
      const items: Key[] = []
      let i = pos + 1
      while (bytes[i] !== 0) {
        if (i >= bytes.length) throw corrupt()
        const [item, next] = decodeAt(bytes, i, depth + 1)
        items.push(item)
        i = next
      }
      return [items, i + 1]
    }
    default:
      throw corrupt()
  }
}

/** Decode an encoded key back to its value (tuples come back as arrays). */
export function decodeKey(bytes: Uint8Array): Key {
  const [key, end] = decodeAt(bytes, 0, 0)
  if (end !== bytes.length) {
    throw new KestrelError('KESTREL_CORRUPT', 'corrupt key encoding: trailing bytes; run verify and restore from a backup')
  }
  return key
}
