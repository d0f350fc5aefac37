/** Scan options and their translation to encoded-key bounds. */
import { encodeKey, encodeKeyPrefix, type Key } from './codec/key.js'
import { KestrelError } from './errors.js'
import type { CoreScanOptions } from './core/types.js'

/** Bounds and direction of an ordered scan. All optional. */
export interface ScanOptions {
  gt?: Key
  gte?: Key
  lt?: Key
  lte?: Key
  /** Only keys that start with this prefix (a string prefix, or a tuple's leading elements). */
  prefix?: Key
  /** Newest-last order reversed: largest key first. */
  reverse?: boolean
  /** At most this many entries. */
  limit?: number
}

/** The smallest byte string greater than every string starting with `prefix`, if any. */
function prefixEnd(prefix: Uint8Array): Uint8Array | undefined {
  let end = prefix.length
  while (end > 0 && prefix[end - 1] === 0xff) end--
  if (end === 0) return undefined
  const out = prefix.slice(0, end)
  out[end - 1]!++
  return out
}

const later = (a: Uint8Array | undefined, b: Uint8Array | undefined, cmp: (x: Uint8Array, y: Uint8Array) => number): Uint8Array | undefined =>
  a === undefined ? b : b === undefined ? a : cmp(a, b) >= 0 ? a : b

/** Translate user scan options to core bounds. Throws `KESTREL_INVALID_ARGUMENT` on bad ones. */
export function scanBounds(options: ScanOptions): CoreScanOptions {
  if (typeof options !== 'object' || options === null) {
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'scan options must be an object like { gte, lt, prefix, reverse, limit }')
  }
  const out: CoreScanOptions = { reverse: options.reverse === true }
  if (options.limit !== undefined) {
    if (!Number.isSafeInteger(options.limit) || options.limit < 0) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', `scan limit must be a non-negative integer, got ${String(options.limit)}`)
    }
    out.limit = options.limit
  }
  if (options.gte !== undefined) out.gte = encodeKey(options.gte)
  if (options.gt !== undefined) out.gt = encodeKey(options.gt)
  if (options.lte !== undefined) out.lte = encodeKey(options.lte)
  if (options.lt !== undefined) out.lt = encodeKey(options.lt)
  if (options.prefix !== undefined) {
    const p = encodeKeyPrefix(options.prefix)
    const cmp = (x: Uint8Array, y: Uint8Array): number => Buffer.compare(x, y)
    // Intersect the prefix range with the explicit bounds.
    if (out.gt && cmp(out.gt, p) >= 0) { /* gt already tighter */ } else { out.gte = later(out.gte, p, cmp); delete out.gt }
    const end = prefixEnd(p)
    if (end) {
      if (out.lte && cmp(out.lte, end) < 0) { /* lte already tighter */ } else {
        const lt = out.lt && cmp(out.lt, end) < 0 ? out.lt : end
        out.lt = lt
        delete out.lte
      }
    }
  }
  return out
}
