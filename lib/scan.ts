/** Scan options and their translation to encoded-key bounds. */
import { encodeKey, encodeKeyPrefix, type Key } from './codec/key.js'
import { KestrelError } from './errors.js'
import { compareBytes } from './codec/bytes.js'
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
export function prefixEnd(prefix: Uint8Array): Uint8Array | undefined {
  let end = prefix.length
  while (end > 0 && prefix[end - 1] === 0xff) end--
  if (end === 0) return undefined
  const out = prefix.slice(0, end)
  out[end - 1]!++
  return out
}

interface Bound {
  key: Uint8Array
  inclusive: boolean
}

/** Of two lower bounds, the one that admits fewer keys. */
function tighterLower(a: Bound | undefined, b: Bound | undefined): Bound | undefined {
  if (!a || !b) return a ?? b
  const c = compareBytes(a.key, b.key)
  if (c !== 0) return c > 0 ? a : b
  return a.inclusive ? b : a
}

/** Of two upper bounds, the one that admits fewer keys. */
function tighterUpper(a: Bound | undefined, b: Bound | undefined): Bound | undefined {
  if (!a || !b) return a ?? b
  const c = compareBytes(a.key, b.key)
  if (c !== 0) return c < 0 ? a : b
  return a.inclusive ? b : a
}

/**
 * Translate user scan options to core bounds: at most one lower and one upper bound (the
 * tightest of gt/gte/prefix and of lt/lte/prefix end). Throws `KESTREL_INVALID_ARGUMENT` on bad ones.
 */
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
  const bound = (k: Key | undefined, inclusive: boolean): Bound | undefined => (k === undefined ? undefined : { key: encodeKey(k), inclusive })
  let lower = tighterLower(bound(options.gte, true), bound(options.gt, false))
  let upper = tighterUpper(bound(options.lte, true), bound(options.lt, false))
  if (options.prefix !== undefined) {
    const p = encodeKeyPrefix(options.prefix)
    lower = tighterLower(lower, { key: p, inclusive: true })
    const end = prefixEnd(p)
    if (end) upper = tighterUpper(upper, { key: end, inclusive: false })
  }
  if (lower) out[lower.inclusive ? 'gte' : 'gt'] = lower.key
  if (upper) out[upper.inclusive ? 'lte' : 'lt'] = upper.key
  return out
}
