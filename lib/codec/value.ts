/**
 * The value codec: MessagePack through msgpackr with `useRecords: false`, so every stored value
 * is self-describing and no shared structure table has to live beside the data.
 */
import { Packr } from 'msgpackr'
import { KestrelError } from '../errors.js'

/** Largest encoded value, in bytes. */
export const VALUE_BYTES_MAX = 64 * 1024 * 1024

const packr = new Packr({ useRecords: false, moreTypes: false, int64AsType: 'bigint', useBigIntExtension: true, mapsAsObjects: true, copyBuffers: true })

function findUnencodable(value: unknown, depth: number, seen: Set<object>): string | undefined {
  if (depth > 256) return 'it nests deeper than 256 levels'
  switch (typeof value) {
    case 'function':
      return 'it contains a function'
    case 'symbol':
      return 'it contains a symbol'
    case 'undefined':
      return depth === 0 ? 'it is undefined (use delete to remove a key)' : undefined
    case 'object': {
      if (value === null || value instanceof Uint8Array || value instanceof Date) return undefined
      if (seen.has(value)) return 'it contains a cycle'
      seen.add(value)
      const children = value instanceof Map ? [...value.keys(), ...value.values()] : value instanceof Set ? [...value] : Object.values(value)
      for (const child of children) {
        const why = findUnencodable(child, depth + 1, seen)
        if (why) return why
      }
      seen.delete(value)
      return undefined
    }
    default:
      return undefined
  }
}

/** Encode a value. Throws `KESTREL_INVALID_VALUE` / `KESTREL_VALUE_TOO_LARGE`. */
export function encodeValue(value: unknown): Uint8Array {
  // msgpackr silently drops functions/symbols and loops on cycles: refuse them up front so
  // nothing is stored that would read back differently.
  const why = findUnencodable(value, 0, new Set())
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
  // msgpackr reuses its output buffer: copy so the bytes we keep are ours (a plain Uint8Array:
  // Buffer.prototype.slice would allocate through Buffer's slower pooled path).
  return new Uint8Array(bytes)
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
