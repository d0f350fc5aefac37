/** Built-in conflict resolvers. */
import { ConflictError } from '../errors.js'

type Obj = Record<string, unknown>

const isMap = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Date)

function same(a: unknown, b: unknown): boolean {
  if (a === b) return true
  try {
    return JSON.stringify(a, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v)) === JSON.stringify(b, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))
  } catch {
    return false
  }
}

/**
 * A resolver for values that are ordered maps (plain objects), following ZODB's BTree conflict
 * rules: changes to different entries merge; inserting the same entry twice, deleting an entry the
 * other side changed, changing one entry on both sides, or deleting one entry on both sides
 * conflict. Use as `db.collection(name, { resolver: orderedMapResolver })`.
 */
export function orderedMapResolver<T extends object>(ancestor: T | undefined, committed: T | undefined, mine: T | undefined): T | undefined {
  const base = ancestor ?? {}
  const theirs = committed ?? {}
  const ours = mine ?? {}
  if (!isMap(base) || !isMap(theirs) || !isMap(ours)) {
    throw new ConflictError('?', undefined, 'write conflict: orderedMapResolver merges plain-object values only')
  }
  const merged: Obj = { ...theirs }
  const keys = new Set([...Object.keys(base), ...Object.keys(theirs), ...Object.keys(ours)])
  for (const k of keys) {
    const inBase = k in base
    const inTheirs = k in theirs
    const inOurs = k in ours
    const ourChange = inBase !== inOurs || (inOurs && !same(base[k], ours[k]))
    const theirChange = inBase !== inTheirs || (inTheirs && !same(base[k], theirs[k]))
    if (!ourChange) continue
    if (theirChange) {
      throw new ConflictError(
        '?',
        k,
        `write conflict on entry ${JSON.stringify(k)}: both transactions ${!inBase && inOurs && inTheirs ? 'inserted' : !inOurs && !inTheirs ? 'deleted' : 'changed'} it`,
      )
    }
    if (inOurs) merged[k] = ours[k]
    else delete merged[k]
  }
  // Keep the ordered-map property: entries in key order. (A merge of plain objects of T's shape.)
  return Object.fromEntries(
    Object.keys(merged)
      .sort()
      .map((k) => [k, merged[k]]),
  ) as T
}
