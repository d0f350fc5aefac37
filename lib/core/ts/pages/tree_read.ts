/**
 * Reading the page store's B+trees (docs/FORMAT.md "Page store"): lookups, ranges, values
 * (overflow chains), the catalog and the pages a checkpoint reaches. Twin of `pages/tree_read.rs`.
 */
import type { KestrelError } from '../../../errors.js'
import {
  BODY_BYTES,
  KIND_LEAF,
  KIND_OVERFLOW,
  PageDefect,
  compareBytes,
  corruptPage,
  decodeCatalogValue,
  type LeafEntry,
  type PageMeta,
} from '../../../format/page_layout.js'
import { readFreeList } from './allocator.js'
import type { Bound, PageSource } from './index.js'

/**
 * Deepest tree we follow. A 2^32-page file of minimal branches (4 entries a page) is 16 levels
 * deep, so anything deeper is a cycle in a corrupt file.
 */
export const DEPTH_MAX = 64
const utf8Decoder = new TextDecoder()

/** The index of the child to follow: the last entry whose key ≤ `key` (entry 0 = below all). */
export function childFor(keys: readonly Uint8Array[], key: Uint8Array): number {
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

export function tooDeep(page: number): KestrelError {
  return corruptPage(page, `tree deeper than ${DEPTH_MAX} levels (a cycle)`)
}

/** The leaf entry for `key` in the tree rooted at `root` (0 = empty tree). */
export function lookup(src: PageSource, root: number, key: Uint8Array): LeafEntry | undefined {
  let page = root
  // Bounded by DEPTH_MAX levels.
  for (let depth = 0; page !== 0; depth++) {
    if (depth >= DEPTH_MAX) throw tooDeep(page)
    const node = src.readTree(page)
    if (node.kind === KIND_LEAF) {
      const i = lowerBound(node.entries, key)
      const e = node.entries[i]
      return e !== undefined && compareBytes(e.key, key) === 0 ? e : undefined
    }
    page = node.children[childFor(node.keys, key)]!
  }
  return undefined
}

/** The pages of an overflow chain holding `length` bytes, in order (checked as they are read). */
export function walkChain(src: PageSource, first: number, length: number): number[] {
  const pages: number[] = []
  let page = first
  let left = length
  // Bounded: each page carries ≥ 1 byte of `length` (a zero count is corruption).
  while (left > 0) {
    if (page === 0) throw corruptPage(pages[pages.length - 1] ?? first, `overflow chain ends ${left} bytes before its value does`)
    const { header } = src.read(page, KIND_OVERFLOW)
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
    const { header, bytes } = src.read(page, KIND_OVERFLOW)
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
export function range(src: PageSource, root: number, lower: Bound, upper: Bound, reverse: boolean, max: number, visit: (e: LeafEntry) => void): void {
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
    const node = src.readTree(page)
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
      const start = lower ? childFor(keys, lower.key) : 0
      // Bounded by the branch's entry count.
      for (let i = start; i < keys.length; i++) {
        if (i > start && beyondUpper(keys[i]!)) return true
        if (walk(children[i]!, depth + 1)) return true
      }
    } else {
      const start = upper ? childFor(keys, upper.key) : keys.length - 1
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
export interface CatalogEntry {
  name: string
  root: number
  records: number
}

/** Look a collection up in the catalog. */
export function catalogGet(src: PageSource, catalogRoot: number, name: Uint8Array): { root: number; records: number } | undefined {
  const e = lookup(src, catalogRoot, name)
  if (!e) return undefined
  return catalogValue(e, catalogRoot)
}

/** Every catalog entry, in name order. */
export function listCatalog(src: PageSource, catalogRoot: number): CatalogEntry[] {
  const out: CatalogEntry[] = []
  range(src, catalogRoot, undefined, undefined, false, Number.POSITIVE_INFINITY, (e) => {
    out.push({ name: utf8Decoder.decode(e.key), ...catalogValue(e, catalogRoot) })
  })
  return out
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
    const node = src.readTree(page)
    if (node.kind === KIND_LEAF) {
      for (const e of node.entries) {
        if (e.inline === undefined) for (const p of walkChain(src, e.overflow, e.length)) mark(p)
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
