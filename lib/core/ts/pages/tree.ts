/**
 * The B+trees of the page store: lookup, range scans, reachability, and the deterministic
 * copy-on-write build of checkpoint `seq + 1` (docs/FORMAT.md "Writing checkpoint seq + 1").
 * Every allocation and every byte written follows the spec's order exactly, because the Rust twin
 * must produce an identical file from the same input.
 */
import { KestrelError } from '../../../errors.js'
import { ENVELOPE_TAG, indexEntryKey, type IndexKey } from '../../envelope.js'
import { derivedKeys } from '../stored.js'
import {
  BODY_BYTES, FREE_PER_PAGE, PageDefect, INLINE_BYTES_MAX, KEY_BYTES_MAX, KIND_FREE, KIND_LEAF, KIND_OVERFLOW,
  PAGE_NUMBER_MAX, VALUE_BYTES_MAX, branchEntryBytes, compareBytes, corruptPage, decodeCatalogValue,
  encodeBranch, encodeCatalogValue, encodeFreeList, encodeLeaf, encodeOverflow, leafEntryBytes,
  type LeafEntry, type PageHeader, type PageMeta,
} from './layout.js'

/** One record as a range scan returns it. */
export interface PageEntry { key: Uint8Array; commitId: number; value: Uint8Array }
/** value undefined = deleted; else the version visible at the checkpoint LSN. */
export interface Change { key: Uint8Array; version?: { commitId: number; value: Uint8Array } }
/** One collection's changes: sorted by key bytewise, no duplicates, non-empty. */
export interface CollectionChanges { name: string; changes: Change[] }
/** A range bound; undefined = unbounded on that side. */
export type Bound = { key: Uint8Array; inclusive: boolean } | undefined

/** A decoded, checked tree page. */
export type TreeNode =
  | { kind: 2; page: number; entries: LeafEntry[] }
  | { kind: 3; page: number; keys: Uint8Array[]; children: number[] }

/** Where the tree code gets pages from (the store's cache); every method throws KESTREL_CORRUPT. */
export interface PageSource {
  /** A checked, decoded leaf or branch page. */
  node(page: number): TreeNode
  /** A checked overflow (kind 4) or free-list (kind 5) page: its header and bytes. */
  chainPage(page: number, kind: number): { header: PageHeader; bytes: Uint8Array }
}

/**
 * Deepest tree we follow. A 2^32-page file of minimal branches (4 entries a page) is 16 levels
 * deep, so anything deeper is a cycle in a corrupt file.
 */
const DEPTH_MAX = 64
const EMPTY = new Uint8Array(0)
const utf8 = new TextEncoder()
const utf8Decoder = new TextDecoder()

/** The index of the child to follow: the last entry whose key ≤ `key` (entry 0 = below all). */
export function childIndex(keys: readonly Uint8Array[], key: Uint8Array): number {
  let lo = 1
  let hi = keys.length
  // Binary search: first i ≥ 1 with keys[i] > key. Bounded by log2(count).
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (compareBytes(keys[mid]!, key) <= 0) lo = mid + 1
    else hi = mid
  }
  return lo - 1
}

/** First index in a leaf whose key ≥ `key`. */
function lowerBound(entries: readonly LeafEntry[], key: Uint8Array): number {
  let lo = 0
  let hi = entries.length
  // Binary search, bounded by log2(count).
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (compareBytes(entries[mid]!.key, key) < 0) lo = mid + 1
    else hi = mid
  }
  return lo
}

function tooDeep(page: number): KestrelError {
  return corruptPage(page, `tree deeper than ${DEPTH_MAX} levels (a cycle)`)
}

/** The leaf entry for `key` in the tree rooted at `root` (0 = empty tree). */
export function findEntry(src: PageSource, root: number, key: Uint8Array): LeafEntry | undefined {
  let page = root
  // Bounded by DEPTH_MAX levels.
  for (let depth = 0; page !== 0; depth++) {
    if (depth >= DEPTH_MAX) throw tooDeep(page)
    const node = src.node(page)
    if (node.kind === KIND_LEAF) {
      const i = lowerBound(node.entries, key)
      const e = node.entries[i]
      return e !== undefined && compareBytes(e.key, key) === 0 ? e : undefined
    }
    page = node.children[childIndex(node.keys, key)]!
  }
  return undefined
}

/** The pages of an overflow chain holding `length` bytes, in order (checked as they are read). */
export function overflowPages(src: PageSource, first: number, length: number): number[] {
  const pages: number[] = []
  let page = first
  let left = length
  // Bounded: each page carries ≥ 1 byte of `length` (a zero count is corruption).
  while (left > 0) {
    if (page === 0) throw corruptPage(pages[pages.length - 1] ?? first, `overflow chain ends ${left} bytes before its value does`)
    const { header } = src.chainPage(page, KIND_OVERFLOW)
    if (header.count === 0 || header.count > BODY_BYTES) throw corruptPage(page, `overflow page holds ${header.count} bytes`)
    pages.push(page)
    left -= Math.min(left, header.count)
    page = header.next
  }
  return pages
}

/** A leaf entry's value (a copy: callers may keep or change it). */
export function readValue(src: PageSource, e: LeafEntry): Uint8Array {
  if (e.inline !== undefined) return e.inline.slice()
  const out = new Uint8Array(e.length)
  let page = e.overflow
  let at = 0
  // Bounded: each page adds ≥ 1 byte towards e.length.
  while (at < e.length) {
    if (page === 0) throw corruptPage(e.overflow, `overflow chain ends ${e.length - at} bytes before its value does`)
    const { header, bytes } = src.chainPage(page, KIND_OVERFLOW)
    if (header.count === 0 || header.count > BODY_BYTES) throw corruptPage(page, `overflow page holds ${header.count} bytes`)
    const n = Math.min(header.count, e.length - at)
    out.set(bytes.subarray(24, 24 + n), at)
    at += n
    page = header.next
  }
  return out
}

/**
 * Visit the entries of the tree at `root` within [lower, upper] in key order (or reverse), at
 * most `max` of them. Branches are pruned by their keys: child i holds keys in [key_i, key_i+1).
 */
export function scanTree(
  src: PageSource, root: number, lower: Bound, upper: Bound, reverse: boolean, max: number,
  visit: (e: LeafEntry) => void,
): void {
  if (root === 0 || !(max > 0)) return
  let seen = 0
  const beyondUpper = (key: Uint8Array): boolean => {
    if (!upper) return false
    const c = compareBytes(key, upper.key)
    return c > 0 || (c === 0 && !upper.inclusive)
  }
  const belowLower = (key: Uint8Array): boolean => {
    if (!lower) return false
    const c = compareBytes(key, lower.key)
    return c < 0 || (c === 0 && !lower.inclusive)
  }
  /** Returns true when the scan is finished (bound passed or `max` reached). */
  const walk = (page: number, depth: number): boolean => {
    if (depth >= DEPTH_MAX) throw tooDeep(page)
    const node = src.node(page)
    if (node.kind === KIND_LEAF) {
      const es = node.entries
      if (!reverse) {
        // Bounded by the leaf's entry count.
        for (let i = lower ? lowerBound(es, lower.key) : 0; i < es.length; i++) {
          const e = es[i]!
          if (belowLower(e.key)) continue
          if (beyondUpper(e.key)) return true
          visit(e)
          if (++seen >= max) return true
        }
      } else {
        // Bounded by the leaf's entry count.
        for (let i = upper ? lowerBound(es, upper.key) : es.length - 1; i >= 0; i--) {
          const e = es[i]
          if (e === undefined || beyondUpper(e.key)) continue
          if (belowLower(e.key)) return true
          visit(e)
          if (++seen >= max) return true
        }
      }
      return false
    }
    const { keys, children } = node
    if (!reverse) {
      const start = lower ? childIndex(keys, lower.key) : 0
      // Bounded by the branch's entry count.
      for (let i = start; i < keys.length; i++) {
        if (i > start && beyondUpper(keys[i]!)) return true
        if (walk(children[i]!, depth + 1)) return true
      }
    } else {
      const start = upper ? childIndex(keys, upper.key) : keys.length - 1
      // Bounded by the branch's entry count.
      for (let i = start; i >= 0; i--) {
        if (walk(children[i]!, depth + 1)) return true
        // Children before i hold keys < keys[i]; if that is ≤ lower, they are all below it.
        if (i >= 1 && lower && compareBytes(keys[i]!, lower.key) <= 0) return true
      }
    }
    return false
  }
  walk(root, 0)
}

/** A catalog value, with a malformed one reported as KESTREL_CORRUPT naming `page`. */
function catalogValue(e: LeafEntry, page: number): { root: number; records: number } {
  try {
    return decodeCatalogValue(e, page)
  } catch (err) {
    if (err instanceof PageDefect) throw corruptPage(err.page, err.what)
    throw err
  }
}

/** A catalog entry: a collection's root page and live records. */
export interface CatalogEntry { name: string; root: number; records: number }

/** Look a collection up in the catalog. */
export function catalogLookup(src: PageSource, catalogRoot: number, name: Uint8Array): { root: number; records: number } | undefined {
  const e = findEntry(src, catalogRoot, name)
  if (!e) return undefined
  return catalogValue(e, catalogRoot)
}

/** Every catalog entry, in name order. */
export function listCatalog(src: PageSource, catalogRoot: number): CatalogEntry[] {
  const out: CatalogEntry[] = []
  scanTree(src, catalogRoot, undefined, undefined, false, Number.POSITIVE_INFINITY, (e) => {
    out.push({ name: utf8Decoder.decode(e.key), ...catalogValue(e, catalogRoot) })
  })
  return out
}

/** The free list (ascending) and the pages of its chain, checked against the meta. */
export function readFreeList(src: PageSource, meta: PageMeta): { list: number[]; chain: number[] } {
  const list: number[] = []
  const chain: number[] = []
  let page = meta.freeHead
  // Bounded: a chain longer than the file's page count is a cycle.
  while (page !== 0) {
    if (chain.length >= meta.pageCount) throw corruptPage(page, 'free-list chain longer than the file (a cycle)')
    const { header, bytes } = src.chainPage(page, KIND_FREE)
    if (header.count > FREE_PER_PAGE || (header.next !== 0 && header.count < FREE_PER_PAGE)) {
      throw corruptPage(page, `free-list page lists ${header.count} pages (every page but the last holds ${FREE_PER_PAGE})`)
    }
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    for (let i = 0; i < header.count; i++) {
      const p = v.getUint32(24 + 4 * i, true)
      if (p < 2 || p >= meta.pageCount) throw corruptPage(page, `free-list entry ${p} outside pages 2..${meta.pageCount - 1}`)
      if (list.length > 0 && p <= list[list.length - 1]!) throw corruptPage(page, `free list not ascending at ${p}`)
      list.push(p)
    }
    chain.push(page)
    page = header.next
  }
  if (list.length !== meta.freeCount) throw corruptPage(meta.freeHead || meta.seq % 2, `free list holds ${list.length} pages, the meta says ${meta.freeCount}`)
  return { list, chain }
}

/**
 * Every page the checkpoint reaches — catalog, trees, overflow chains, free-list chain — in
 * ascending order (not the meta slots). A page reached twice is KESTREL_CORRUPT.
 */
export function reachablePages(src: PageSource, meta: PageMeta): Uint32Array {
  const seen = new Set<number>()
  const mark = (p: number): void => {
    if (p < 2 || p >= meta.pageCount) throw corruptPage(p, `page number outside 2..${meta.pageCount - 1}`)
    if (seen.has(p)) throw corruptPage(p, 'page reached twice')
    seen.add(p)
  }
  const walk = (page: number, depth: number, onEntry: (e: LeafEntry) => void): void => {
    if (depth >= DEPTH_MAX) throw tooDeep(page)
    mark(page)
    const node = src.node(page)
    if (node.kind === KIND_LEAF) {
      for (const e of node.entries) {
        if (e.inline === undefined) for (const p of overflowPages(src, e.overflow, e.length)) mark(p)
        onEntry(e)
      }
    } else {
      for (const c of node.children) walk(c, depth + 1, onEntry)
    }
  }
  if (meta.catalogRoot !== 0) {
    walk(meta.catalogRoot, 0, (e) => {
      walk(catalogValue(e, meta.catalogRoot).root, 0, () => {})
    })
  }
  for (const p of readFreeList(src, meta).chain) mark(p)
  return Uint32Array.from([...seen].sort((a, b) => a - b))
}

// ---------------------------------------------------------------------------------------------
// Building checkpoint seq + 1

/** The published state the builder starts from. */
export interface BuildBase {
  meta: PageMeta
  /** The current free list, ascending. */
  freeList: readonly number[]
  /** The pages of the current free-list chain. */
  freeChain: readonly number[]
}

/** Everything checkpoint seq + 1 writes, and the state it publishes. */
export interface BuiltCheckpoint {
  meta: PageMeta
  freeList: number[]
  freeChain: number[]
  /** Every new page (tree, overflow, free-list) by page number. */
  pages: Map<number, Uint8Array>
  /** Pages freed by this checkpoint (including the old free-list chain). */
  pagesFreed: number
}

/** A (first key, page) pair: one entry of a branch's entry list. */
interface Child { key: Uint8Array; page: number }

/** A checkpoint build pauses (lets the event loop run, see `runSlices`) every this many pages. */
const PAGES_PER_PAUSE = 64

/** A leaf entry on its way into a new page; `fresh` = a new overflow value still to be written. */
interface Pending extends LeafEntry { fresh: Uint8Array | undefined }

/** Step 1 of the spec: the allocator, plus the page buffer of the checkpoint being built. */
class Builder {
  private taken = 0
  readonly freed: number[] = []
  readonly pages = new Map<number, Uint8Array>()
  /** Live-record change of the collection being applied. */
  delta = 0

  constructor(readonly src: PageSource, private readonly reusable: readonly number[], public next: number, readonly seq: number) {}

  /** The smallest reusable page, or else a new one at the end of the file. */
  alloc(): number {
    if (this.taken < this.reusable.length) return this.reusable[this.taken++]!
    return this.grow()
  }

  /** A new page at the end of the file. */
  grow(): number {
    if (this.next >= PAGE_NUMBER_MAX) throw new KestrelError('KESTREL_IO', 'pages.kdb would exceed 2^32 pages; the page store is full')
    return this.next++
  }

  free(page: number): void {
    this.freed.push(page)
  }

  /** The reusable pages not taken by `alloc`. */
  untaken(): readonly number[] {
    return this.reusable.slice(this.taken)
  }

  write(page: number, bytes: Uint8Array): void {
    this.pages.set(page, bytes)
  }

  /** Allocate and write the overflow chain of `value`; returns its first page. */
  writeOverflow(value: Uint8Array): number {
    const n = Math.ceil(value.length / BODY_BYTES)
    const chain: number[] = []
    for (let i = 0; i < n; i++) chain.push(this.alloc())
    for (let i = 0; i < n; i++) {
      const data = value.subarray(i * BODY_BYTES, Math.min(value.length, (i + 1) * BODY_BYTES))
      this.write(chain[i]!, encodeOverflow(data, this.seq, chain[i]!, chain[i + 1] ?? 0))
    }
    return chain[0]!
  }

  /**
   * apply() on a leaf (`node` undefined = the empty tree). Pauses every {@link PAGES_PER_PAUSE}
   * pages written: a bulk load can send hundreds of thousands of ops to one leaf.
   */
  *applyLeaf(node: { page: number; entries: readonly LeafEntry[] } | undefined, ops: readonly Change[]): Generator<void, Child[]> {
    const old = node?.entries ?? []
    const out: Pending[] = []
    const dropped: LeafEntry[] = []
    let i = 0
    let j = 0
    const add = (op: Change): void => {
      const v = op.version!
      const inline = v.value.length <= INLINE_BYTES_MAX
      out.push({ key: op.key, commitId: v.commitId, length: v.value.length, inline: inline ? v.value : undefined, overflow: 0, fresh: inline ? undefined : v.value })
    }
    // Merge; bounded: every iteration advances i or j.
    while (i < old.length || j < ops.length) {
      const e = old[i]
      const op = ops[j]
      const c = e === undefined ? 1 : op === undefined ? -1 : compareBytes(e.key, op.key)
      if (c < 0) {
        out.push({ ...e!, fresh: undefined })
        i++
      } else if (c > 0) {
        if (op!.version) { add(op!); this.delta++ }
        j++
      } else {
        dropped.push(e!)
        if (op!.version) add(op!)
        else this.delta--
        i++
        j++
      }
    }
    if (node) this.free(node.page)
    for (const e of dropped) if (e.inline === undefined) for (const p of overflowPages(this.src, e.overflow, e.length)) this.free(p)
    let written = 0
    for (const e of out) {
      if (!e.fresh) continue
      e.overflow = this.writeOverflow(e.fresh)
      if (++written % PAGES_PER_PAUSE === 0) yield
    }
    const groups = pack(out, (e) => leafEntryBytes(e.key.length, e.length))
    const children: Child[] = []
    for (const g of groups) {
      const page = this.alloc()
      this.write(page, encodeLeaf(g, this.seq, page))
      children.push({ key: g[0]!.key, page })
      if (++written % PAGES_PER_PAUSE === 0) yield
    }
    return children
  }

  /**
   * apply() on a branch up to (not including) packing: the new entry list. `low` is the branch's
   * own smallest key, the key of its entry 0 (passed down from the parent; empty at the root).
   */
  *branchEntries(node: { page: number; keys: readonly Uint8Array[]; children: readonly number[] }, ops: readonly Change[], low: Uint8Array, depth: number): Generator<void, Child[]> {
    if (depth >= DEPTH_MAX) throw tooDeep(node.page)
    const list: Child[] = []
    let j = 0
    // Entry order; bounded by the entry count (ops advance monotonically within it).
    for (let i = 0; i < node.children.length; i++) {
      const key = i === 0 ? low : node.keys[i]!
      const nextKey = node.keys[i + 1]
      let end = j
      // Ops routed here: those below the next entry's key (the last entry whose key ≤ op key).
      while (end < ops.length && (nextKey === undefined || compareBytes(ops[end]!.key, nextKey) < 0)) end++
      if (end === j) {
        list.push({ key, page: node.children[i]! })
        continue
      }
      const mine = ops.slice(j, end)
      j = end
      const child = this.src.node(node.children[i]!)
      if (child.kind === KIND_LEAF) {
        for (const c of yield* this.applyLeaf(child, mine)) list.push(c)
        yield // one leaf done: the caller may let the event loop run
      } else {
        for (const c of this.packBranch(yield* this.branchEntries(child, mine, key, depth + 1))) list.push(c)
      }
    }
    this.free(node.page)
    return list
  }

  /** Pack a branch entry list into branch pages, allocated in order; returns one Child each. */
  packBranch(list: readonly Child[]): Child[] {
    const groups = pack(list, (c, first) => branchEntryBytes(first ? 0 : c.key.length))
    return groups.map((g) => {
      const page = this.alloc()
      this.write(page, encodeBranch(g.map((c) => c.key), g.map((c) => c.page), this.seq, page))
      return { key: g[0]!.key, page }
    })
  }

  /**
   * Apply `ops` to the tree at `root` with the spec's root handling; returns the new root (0 =
   * empty). A generator that pauses after every leaf, so that a large checkpoint can be built in
   * slices between event-loop turns (see `runSlices`); the result does not depend on the pauses.
   */
  *applyRoot(root: number, ops: readonly Change[]): Generator<void, number> {
    let list: Child[]
    if (root === 0) {
      list = yield* this.applyLeaf(undefined, ops)
    } else {
      const node = this.src.node(root)
      if (node.kind === KIND_LEAF) {
        list = yield* this.applyLeaf(node, ops)
      } else {
        const entries = yield* this.branchEntries(node, ops, EMPTY, 0)
        // The spec collapses exactly one level: that child becomes the root as it is.
        if (entries.length <= 1) return entries[0]?.page ?? 0
        list = this.packBranch(entries)
      }
    }
    // Bounded: a branch page holds ≥ 4 entries (6 + 3 × 1030 ≤ 4072), so each round shrinks the list.
    for (let level = 0; list.length > 1; level++) {
      if (level >= DEPTH_MAX) throw new Error('root packing did not converge (bug)')
      list = this.packBranch(list)
    }
    return list[0]?.page ?? 0
  }
}

/**
 * Step 4: fill pages greedily in order, starting a new page when the next entry does not fit the
 * 4072-byte body. `size(e, first)` is the entry's size as the first entry of a page or not.
 */
function pack<T>(entries: readonly T[], size: (e: T, first: boolean) => number): T[][] {
  const groups: T[][] = []
  let cur: T[] = []
  let used = 0
  for (const e of entries) {
    let s = size(e, cur.length === 0)
    if (cur.length > 0 && used + s > BODY_BYTES) {
      groups.push(cur)
      cur = []
      used = 0
      s = size(e, true)
    }
    cur.push(e)
    used += s
  }
  if (cur.length > 0) groups.push(cur)
  return groups
}

function invalid(message: string): KestrelError {
  return new KestrelError('KESTREL_INVALID_ARGUMENT', `page store checkpoint: ${message}`)
}

/** Check the checkpoint input (sorted, bounded, versions not after `lsn`); returns names as UTF-8. */
export function validateChanges(lsn: number, changes: readonly CollectionChanges[]): Uint8Array[] {
  const names: Uint8Array[] = []
  for (let c = 0; c < changes.length; c++) {
    const col = changes[c]!
    const name = utf8.encode(col.name)
    if (name.length > KEY_BYTES_MAX) throw invalid(`collection name ${JSON.stringify(col.name)} is ${name.length} bytes > ${KEY_BYTES_MAX}`)
    if (name.includes(0)) throw invalid(`collection name ${JSON.stringify(col.name)} contains a 0x00 byte (index trees are derived by the checkpoint, never given)`)
    if (c > 0 && compareBytes(names[c - 1]!, name) >= 0) throw invalid(`collections not sorted by name bytewise at ${JSON.stringify(col.name)}`)
    if (col.changes.length === 0) throw invalid(`collection ${JSON.stringify(col.name)} has no changes`)
    for (let i = 0; i < col.changes.length; i++) {
      const ch = col.changes[i]!
      if (ch.key.length > KEY_BYTES_MAX) throw invalid(`a key of ${ch.key.length} bytes > ${KEY_BYTES_MAX} in ${JSON.stringify(col.name)}`)
      if (i > 0 && compareBytes(col.changes[i - 1]!.key, ch.key) >= 0) throw invalid(`changes of ${JSON.stringify(col.name)} not sorted by key or with a duplicate at index ${i}`)
      const v = ch.version
      if (v) {
        if (!Number.isSafeInteger(v.commitId) || v.commitId < 0 || v.commitId > lsn) throw invalid(`commit id ${v.commitId} outside 0..${lsn} in ${JSON.stringify(col.name)}`)
        if (v.value.length > VALUE_BYTES_MAX) throw invalid(`a value of ${v.value.length} bytes > ${VALUE_BYTES_MAX} in ${JSON.stringify(col.name)}`)
      }
    }
    names.push(name)
  }
  return names
}

/** Old stored values read per pause of step 0. */
const DERIVE_KEYS_PER_PAUSE = 1024

/** Does the catalog hold any tree named `collection ‖ 0x00 ‖ …`? */
function hasIndexTrees(src: PageSource, catalogRoot: number, collection: Uint8Array): boolean {
  const prefix = new Uint8Array(collection.length + 1)
  prefix.set(collection)
  let found = false
  scanTree(src, catalogRoot, { key: prefix, inclusive: true }, undefined, false, 1, (e) => {
    found = e.key.length > prefix.length && compareBytes(e.key.subarray(0, prefix.length), prefix) === 0
  })
  return found
}

/**
 * The first bytes of a leaf entry's value that hold its envelope header and block (the whole value
 * when it is shorter, or just the first page's bytes when it is no envelope): an old value's index
 * keys without reading a large value's whole overflow chain.
 */
export function readEnvelopeHead(src: PageSource, e: LeafEntry): Uint8Array {
  if (e.inline !== undefined) return e.inline
  const parts: Uint8Array[] = []
  let have = 0
  let want = Math.min(e.length, 3)
  let page = e.overflow
  // Bounded: each page adds ≥ 1 byte towards `want` ≤ 3 + 65535.
  while (have < want) {
    if (page === 0) throw corruptPage(e.overflow, `overflow chain ends ${e.length - have} bytes before its value does`)
    const { header, bytes } = src.chainPage(page, KIND_OVERFLOW)
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
  if (parts.length === 1) return parts[0]!
  const out = new Uint8Array(have)
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.length }
  return out
}

/** The (index, key) pairs of `a` not in `b`. */
function missingFrom(a: readonly IndexKey[], b: readonly IndexKey[]): IndexKey[] {
  return a.filter((x) => !b.some((y) => y.index === x.index && compareBytes(y.key, x.key) === 0))
}

/**
 * Step 0 of the spec ("Deriving index changes"): for each changed collection and changed key, the
 * index keys of the old and new stored values (those of a well-formed envelope, else none: see
 * `derivedKeys`): the pairs only the old stored value (in the checkpoint `catalogRoot` describes) holds become
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
    const root = hasIndexTrees(src, catalogRoot, name) ? (catalogLookup(src, catalogRoot, name)?.root ?? 0) : 0
    const trees = new Map<string, Change[]>()
    const change = (index: string, entry: Change): void => {
      let list = trees.get(index)
      if (!list) trees.set(index, (list = []))
      list.push(entry)
    }
    for (const ch of col.changes) {
      const newValue = ch.version?.value
      const fresh = newValue === undefined ? [] : derivedKeys(newValue, newValue.length, ch.key.length)
      let old: IndexKey[] = []
      if (root !== 0) {
        const e = findEntry(src, root, ch.key)
        if (e) old = derivedKeys(readEnvelopeHead(src, e), e.length, ch.key.length)
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

/**
 * Run a generator to its end, letting the event loop run whenever a slice took longer than
 * `sliceMs`: committers keep being served while a large checkpoint is built.
 */
export async function runSlices<T>(steps: Generator<void, T>, sliceMs = 8): Promise<T> {
  let sliceStart = performance.now()
  // Bounded by the generator: it pauses once per leaf written, and the changes are finite.
  for (;;) {
    const r = steps.next()
    if (r.done) return r.value
    if (performance.now() - sliceStart >= sliceMs) {
      await new Promise<void>((resolve) => setImmediate(resolve))
      sliceStart = performance.now()
    }
  }
}

/**
 * Build checkpoint `base.meta.seq + 1` at `lsn` (steps 1–5 of the spec). Pure apart from reading
 * pages through `src`: nothing is written to the file here. A generator that pauses after every
 * leaf it writes (drive it with {@link runSlices}); the pauses do not change the result.
 */
export function* buildCheckpointSteps(src: PageSource, base: BuildBase, lsn: number, input: readonly CollectionChanges[]): Generator<void, BuiltCheckpoint> {
  const { meta } = base
  const seq = meta.seq + 1

  // Step 0: the index trees' changes, derived from the old and new stored values, joined in name order.
  const changes = yield* deriveIndexChanges(src, meta.catalogRoot, input)
  const names = changes.map((c) => utf8.encode(c.name))
  const b = new Builder(src, base.freeList, meta.pageCount, seq)

  // Step 2: each changed collection's tree, in name order.
  const catalogOps: Change[] = []
  let records = meta.records
  for (let c = 0; c < changes.length; c++) {
    const name = names[c]!
    const current = catalogLookup(src, meta.catalogRoot, name) ?? { root: 0, records: 0 }
    b.delta = 0
    const root = yield* b.applyRoot(current.root, changes[c]!.changes)
    const count = current.records + b.delta
    if ((root === 0) !== (count === 0) || count < 0) {
      throw corruptPage(current.root || meta.catalogRoot, `collection ${JSON.stringify(changes[c]!.name)} holds a different number of records than its catalog entry says (${current.records})`)
    }
    // The meta counts the records of collections, not the entries of index trees.
    if (!name.includes(0)) records += b.delta
    catalogOps.push(root === 0 ? { key: name } : { key: name, version: { commitId: 0, value: encodeCatalogValue(root, count) } })
  }

  // Step 3: the catalog, one op per changed collection.
  const catalogRoot = catalogOps.length > 0 ? yield* b.applyRoot(meta.catalogRoot, catalogOps) : meta.catalogRoot

  // Step 5: the free list. The old chain is freed; the new chain takes the smallest reusable
  // pages (c = the smallest count whose pages can hold what is left), then pages at the end.
  for (const p of base.freeChain) b.free(p)
  const reusableLeft = b.untaken().length
  const total = reusableLeft + b.freed.length
  let c = 0
  // Bounded: c = ceil(total / FREE_PER_PAGE) satisfies the condition.
  while (total - Math.min(c, reusableLeft) > FREE_PER_PAGE * c) c++
  const chain: number[] = []
  for (let i = 0; i < c; i++) chain.push(b.alloc())
  const list = [...b.untaken(), ...b.freed].sort((x, y) => x - y)
  for (let i = 1; i < list.length; i++) {
    if (list[i] === list[i - 1]) throw corruptPage(list[i]!, 'page freed twice (reached twice, or both reachable and free)')
  }
  for (let i = 0; i < chain.length; i++) {
    const part = list.slice(i * FREE_PER_PAGE, (i + 1) * FREE_PER_PAGE)
    b.write(chain[i]!, encodeFreeList(part, seq, chain[i]!, chain[i + 1] ?? 0))
  }

  return {
    meta: {
      seq,
      checkpointLsn: lsn,
      catalogRoot,
      pageCount: b.next,
      freeHead: chain[0] ?? 0,
      freeCount: list.length,
      records,
    },
    freeList: list,
    freeChain: chain,
    pages: b.pages,
    pagesFreed: b.freed.length,
  }
}
