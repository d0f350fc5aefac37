/**
 * The value codec: MessagePack through msgpackr with `useRecords: false`, so every stored value
 * is self-describing and no shared structure table has to live beside the data.
 */
import { Packr } from 'msgpackr'
import { KestrelError } from '../errors.js'
import { transientBytes } from './bytes.js'

/** Largest encoded value, in bytes. */
export const VALUE_BYTES_MAX = 64 * 1024 * 1024

const packr = new Packr({ useRecords: false, moreTypes: false, int64AsType: 'bigint', useBigIntExtension: true, mapsAsObjects: true, copyBuffers: true })

/** Deeper than this, a value is refused (it also ends the walk of a cyclic value). */
const DEPTH_MAX = 256

/**
 * Why `value` cannot be stored, or undefined. Walks without allocating: a cycle shows as a
 * nesting past DEPTH_MAX, and only then is the value walked again with the ancestors tracked, to
 * tell a cycle from a deep value.
 */
function findUnencodable(value: unknown, depth: number): string | undefined {
  switch (typeof value) {
    case 'function':
      return 'it contains a function'
    case 'symbol':
      return 'it contains a symbol'
    case 'undefined':
      return depth === 0 ? 'it is undefined (use delete to remove a key)' : undefined
    case 'object': {
      if (value === null || value instanceof Uint8Array || value instanceof Date) return undefined
      if (depth >= DEPTH_MAX) return deepOrCyclic(value)
      if (value instanceof Map) {
        for (const [k, v] of value) {
          const why = findUnencodable(k, depth + 1) ?? findUnencodable(v, depth + 1)
          if (why) return why
        }
        return undefined
      }
      if (value instanceof Set) {
        for (const v of value) {
          const why = findUnencodable(v, depth + 1)
          if (why) return why
        }
        return undefined
      }
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const why = findUnencodable(value[i], depth + 1)
          if (why) return why
        }
        return undefined
      }
      for (const k in value) {
        if (!Object.hasOwn(value, k)) continue
        const why = findUnencodable((value as Record<string, unknown>)[k], depth + 1)
        if (why) return why
      }
      return undefined
    }
    default:
      return undefined
  }
}

/** A value nested past DEPTH_MAX: a cycle, or just that deep. */
function deepOrCyclic(value: object): string {
  const ancestors = new Set<object>()
  // Bounded: follows one path, at most DEPTH_MAX + 1 objects long before it returns.
  const walk = (v: unknown): boolean => {
    if (typeof v !== 'object' || v === null || v instanceof Uint8Array || v instanceof Date) return false
    if (ancestors.has(v)) return true
    if (ancestors.size > DEPTH_MAX) return false
    ancestors.add(v)
    const children = v instanceof Map ? [...v.keys(), ...v.values()] : v instanceof Set ? [...v] : Object.values(v)
    for (const c of children) if (walk(c)) return true
    ancestors.delete(v)
    return false
  }
  return walk(value) ? 'it contains a cycle' : `it nests deeper than ${DEPTH_MAX} levels`
}

/** Encode a value. Throws `KESTREL_INVALID_VALUE` / `KESTREL_VALUE_TOO_LARGE`. */
export function encodeValue(value: unknown): Uint8Array {
  // msgpackr silently drops functions/symbols and loops on cycles: refuse them up front so
  // nothing is stored that would read back differently.
  const why = findUnencodable(value, 0)
  if (why) {
    throw new KestrelError(
      'KESTREL_INVALID_VALUE',
      `cannot store this value: ${why}; store plain data (objects, arrays, strings, numbers, bigints, booleans, null, Date, Uint8Array)`,
    )
  }
  let bytes: Uint8Array
  try {
    bytes = packr.pack(value)
  } catch (err) {
    throw new KestrelError('KESTREL_INVALID_VALUE', `cannot store this value: ${(err as Error).message}; store plain data`, { cause: err })
  }
  if (bytes.length > VALUE_BYTES_MAX) {
    throw new KestrelError(
      'KESTREL_VALUE_TOO_LARGE',
      `value too large: ${bytes.length} bytes encoded, the limit is ${VALUE_BYTES_MAX}; split it over several keys`,
    )
  }
  // msgpackr reuses its output buffer: copy, into pooled bytes — an encoded value lives in its
  // transaction until the commit payload copies it (the engines keep their own copies).
  const out = transientBytes(bytes.length)
  out.set(bytes)
  return out
}

/** Decode value bytes written by {@link encodeValue}. */
export function decodeValue<T = unknown>(bytes: Uint8Array): T {
  try {
    return packr.unpack(bytes) as T
  } catch (err) {
    throw new KestrelError('KESTREL_CORRUPT', `a stored value cannot be decoded (${(err as Error).message}); run verify and restore from a backup`, {
      cause: err,
    })
  }
}
