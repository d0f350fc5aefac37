/**
 * Step 0 of a checkpoint (docs/FORMAT.md "Deriving index changes"): the index trees' changes,
 * derived from the old and new stored values of the changed records. Twin of `pages/derive.rs`.
 */
import { concatBytes } from '../../../codec/bytes.js'
import { ENVELOPE_TAG, indexEntryKey, type IndexKey } from '../../../format/envelope.js'
import { BODY_BYTES, KIND_OVERFLOW, compareBytes, corruptPage, type LeafEntry } from '../../../format/page_layout.js'
import { indexKeys } from '../../../format/stored.js'
import type { Change, CollectionChanges, PageSource } from './index.js'
import { catalogGet, lookup, range } from './tree_read.js'

const EMPTY = new Uint8Array(0)
const utf8 = new TextEncoder()

/** Old stored values read per pause of step 0. */
const DERIVE_KEYS_PER_PAUSE = 1024

/** Does the catalog hold any tree named `collection ‖ 0x00 ‖ …`? */
function hasIndexTrees(src: PageSource, catalogRoot: number, collection: Uint8Array): boolean {
  const prefix = new Uint8Array(collection.length + 1)
  prefix.set(collection)
  let found = false
  range(src, catalogRoot, { key: prefix, inclusive: true }, undefined, false, 1, (e) => {
    found = e.key.length > prefix.length && compareBytes(e.key.subarray(0, prefix.length), prefix) === 0
  })
  return found
}

/**
 * The first bytes of a leaf entry's value that hold its envelope header and block (the whole value
 * when it is shorter, or just the first page's bytes when it is no envelope): an old value's index
 * keys without reading a large value's whole overflow chain.
 */
export function readEnvelopePrefix(src: PageSource, e: LeafEntry): Uint8Array {
  if (e.inline !== undefined) return e.inline
  const parts: Uint8Array[] = []
  let have = 0
  let want = Math.min(e.length, 3)
  let page = e.overflow
  // Bounded: each page adds ≥ 1 byte towards `want` ≤ 3 + 65535.
  while (have < want) {
    if (page === 0) throw corruptPage(e.overflow, `overflow chain ends ${e.length - have} bytes before its value does`)
    const { header, bytes } = src.read(page, KIND_OVERFLOW)
    if (header.count === 0 || header.count > BODY_BYTES) throw corruptPage(page, `overflow page holds ${header.count} bytes`)
    const n = Math.min(header.count, e.length - have)
    parts.push(bytes.subarray(24, 24 + n))
    have += n
    if (parts.length === 1) {
      const first = parts[0]!
      if (first[0] !== ENVELOPE_TAG) return first
      if (first.length >= 3) want = Math.min(e.length, 3 + (first[1]! | (first[2]! << 8)))
    }
    page = header.next
  }
  return concatBytes(parts, have)
}

/** The (index, key) pairs of `a` not in `b`. */
function missingFrom(a: readonly IndexKey[], b: readonly IndexKey[]): IndexKey[] {
  return a.filter((x) => !b.some((y) => y.index === x.index && compareBytes(y.key, x.key) === 0))
}

/**
 * Step 0 of the spec ("Deriving index changes"): for each changed collection and changed key, the
 * index keys of the old and new stored values (those of a well-formed envelope, else none: see
 * `indexKeys`): the pairs only the old stored value (in the checkpoint `catalogRoot` describes) holds become
 * deletions, the pairs only the new one holds become entries with the new version's commit id; the
 * derived trees, each sorted by entry key and present only with changes, join the collections'
 * changes in name order. The old value is read only when the catalog holds an index tree of the
 * collection (otherwise no old record has an envelope). A generator that pauses every
 * {@link DERIVE_KEYS_PER_PAUSE} old values read.
 */
export function* deriveIndexChanges(src: PageSource, catalogRoot: number, changes: readonly CollectionChanges[]): Generator<void, CollectionChanges[]> {
  const out: CollectionChanges[] = []
  let reads = 0
  for (const col of changes) {
    out.push(col)
    const name = utf8.encode(col.name)
    const root = hasIndexTrees(src, catalogRoot, name) ? (catalogGet(src, catalogRoot, name)?.root ?? 0) : 0
    const trees = new Map<string, Change[]>()
    const change = (index: string, entry: Change): void => {
      let list = trees.get(index)
      if (!list) {
        list = []
        trees.set(index, list)
      }
      list.push(entry)
    }
    for (const ch of col.changes) {
      const newValue = ch.version?.value
      const fresh = newValue === undefined ? [] : indexKeys(newValue, newValue.length, ch.key.length)
      let old: IndexKey[] = []
      if (root !== 0) {
        const e = lookup(src, root, ch.key)
        if (e) old = indexKeys(readEnvelopePrefix(src, e), e.length, ch.key.length)
        if (++reads % DERIVE_KEYS_PER_PAUSE === 0) yield
      }
      if (old.length === 0 && fresh.length === 0) continue
      for (const k of missingFrom(old, fresh)) change(k.index, { key: indexEntryKey(k.key, ch.key) })
      for (const k of missingFrom(fresh, old)) change(k.index, { key: indexEntryKey(k.key, ch.key), version: { commitId: ch.version!.commitId, value: EMPTY } })
    }
    for (const [index, list] of trees) {
      list.sort((x, y) => compareBytes(x.key, y.key))
      out.push({ name: `${col.name}\u0000${index}`, changes: list })
    }
  }
  const encoded = new Map(out.map((c) => [c, utf8.encode(c.name)]))
  return out.sort((x, y) => compareBytes(encoded.get(x)!, encoded.get(y)!))
}
