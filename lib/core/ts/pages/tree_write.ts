/**
 * Building checkpoint seq + 1 (docs/FORMAT.md "Writing checkpoint seq + 1"): the deterministic
 * copy-on-write apply of the changes to the trees, the catalog and the free list. Every
 * allocation and every byte follows the spec's order exactly, because the Rust twin
 * (`pages/tree_write.rs`) must produce an identical file from the same input.
 */
import {
  BODY_BYTES,
  FREE_NUMBERS_PER_PAGE,
  INLINE_VALUE_BYTES_MAX,
  KIND_LEAF,
  branchEntryBytes,
  compareBytes,
  corruptPage,
  encodeBranch,
  encodeCatalogValue,
  encodeFree,
  encodeLeaf,
  encodeOverflow,
  leafEntryBytes,
  pack,
  type LeafEntry,
  type PageMeta,
} from '../../../format/page_layout.js'
import { Allocator } from './allocator.js'
import { deriveIndexChanges } from './derive.js'
import type { Change, CollectionChanges, PageSource } from './index.js'
import { DEPTH_MAX, catalogGet, tooDeep, walkChain } from './tree_read.js'

const EMPTY = new Uint8Array(0)
const utf8 = new TextEncoder()

/** The published state a checkpoint build starts from. */
export interface BuildBase {
  meta: PageMeta
  /** The current free list, ascending. */
  freeList: readonly number[]
  /** The pages of the current free-list chain. */
  freeChain: readonly number[]
  /** False: take only new pages at the end of the file; the free list is carried over whole. */
  reuseFreePages?: boolean
}

/** Everything checkpoint seq + 1 writes, and the state it publishes. */
export interface Built {
  meta: PageMeta
  freeList: number[]
  freeChain: number[]
  /** Every new page (tree, overflow, free-list) by page number. */
  pages: Map<number, Uint8Array>
  /** Pages freed by this checkpoint (including the old free-list chain). */
  pagesFreed: number
}

/** A (first key, page) pair: one entry of a branch's entry list. */
interface Child {
  key: Uint8Array
  page: number
}

/** A checkpoint build pauses (lets the event loop run, see `runSlices`) every this many pages. */
const PAGES_PER_PAUSE = 64

/** A leaf entry on its way into a new page; `fresh` = a new overflow value still to be written. */
interface Pending extends LeafEntry {
  fresh: Uint8Array | undefined
}

/**
 * Steps 2–4 of the spec: the deterministic copy-on-write apply of one checkpoint's changes, tree
 * by tree, into pages taken from the allocator (step 1). Holds every page built.
 */
class TreeWriter {
  readonly pages = new Map<number, Uint8Array>()
  /** Live-record change of the collection being applied. */
  delta = 0

  constructor(
    readonly src: PageSource,
    readonly alloc: Allocator,
    readonly seq: number,
  ) {}

  emit(page: number, bytes: Uint8Array): void {
    this.pages.set(page, bytes)
  }

  /** Allocate and write the overflow chain of `value`; returns its first page. */
  writeChain(value: Uint8Array): number {
    const n = Math.ceil(value.length / BODY_BYTES)
    const chain: number[] = []
    for (let i = 0; i < n; i++) chain.push(this.alloc.alloc())
    for (let i = 0; i < n; i++) {
      const data = value.subarray(i * BODY_BYTES, Math.min(value.length, (i + 1) * BODY_BYTES))
      this.emit(chain[i]!, encodeOverflow(data, this.seq, chain[i]!, chain[i + 1] ?? 0))
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
      const inline = v.value.length <= INLINE_VALUE_BYTES_MAX
      out.push({
        key: op.key,
        commitId: v.commitId,
        length: v.value.length,
        inline: inline ? v.value : undefined,
        overflow: 0,
        fresh: inline ? undefined : v.value,
      })
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
        if (op!.version) {
          add(op!)
          this.delta++
        }
        j++
      } else {
        dropped.push(e!)
        if (op!.version) add(op!)
        else this.delta--
        i++
        j++
      }
    }
    if (node) this.alloc.free(node.page)
    for (const e of dropped) if (e.inline === undefined) for (const p of walkChain(this.src, e.overflow, e.length)) this.alloc.free(p)
    let written = 0
    for (const e of out) {
      if (!e.fresh) continue
      e.overflow = this.writeChain(e.fresh)
      if (++written % PAGES_PER_PAUSE === 0) yield
    }
    const groups = pack(out, (e) => leafEntryBytes(e.key.length, e.length))
    const children: Child[] = []
    for (const g of groups) {
      const page = this.alloc.alloc()
      this.emit(page, encodeLeaf(g, this.seq, page))
      children.push({ key: g[0]!.key, page })
      if (++written % PAGES_PER_PAUSE === 0) yield
    }
    return children
  }

  /**
   * apply() on a branch up to (not including) packing: the new entry list. `low` is the branch's
   * own smallest key, the key of its entry 0 (passed down from the parent; empty at the root).
   */
  *branchEntries(
    node: { page: number; keys: readonly Uint8Array[]; children: readonly number[] },
    ops: readonly Change[],
    low: Uint8Array,
    depth: number,
  ): Generator<void, Child[]> {
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
      const child = this.src.readTree(node.children[i]!)
      if (child.kind === KIND_LEAF) {
        for (const c of yield* this.applyLeaf(child, mine)) list.push(c)
        yield // one leaf done: the caller may let the event loop run
      } else {
        for (const c of this.writeBranches(yield* this.branchEntries(child, mine, key, depth + 1))) list.push(c)
      }
    }
    this.alloc.free(node.page)
    return list
  }

  /** Pack a branch entry list into branch pages, allocated in order; returns one Child each. */
  writeBranches(list: readonly Child[]): Child[] {
    const groups = pack(list, (c, first) => branchEntryBytes(first ? 0 : c.key.length))
    return groups.map((g) => {
      const page = this.alloc.alloc()
      this.emit(
        page,
        encodeBranch(
          g.map((c) => c.key),
          g.map((c) => c.page),
          this.seq,
          page,
        ),
      )
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
      const node = this.src.readTree(root)
      if (node.kind === KIND_LEAF) {
        list = yield* this.applyLeaf(node, ops)
      } else {
        const entries = yield* this.branchEntries(node, ops, EMPTY, 0)
        // The spec collapses exactly one level: that child becomes the root as it is.
        if (entries.length <= 1) return entries[0]?.page ?? 0
        list = this.writeBranches(entries)
      }
    }
    // Bounded: a branch page holds ≥ 4 entries (6 + 3 × 1030 ≤ 4072), so each round shrinks the list.
    for (let level = 0; list.length > 1; level++) {
      if (level >= DEPTH_MAX) throw new Error('root packing did not converge (bug)')
      list = this.writeBranches(list)
    }
    return list[0]?.page ?? 0
  }
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
export function* buildCheckpoint(src: PageSource, base: BuildBase, lsn: number, input: readonly CollectionChanges[]): Generator<void, Built> {
  const { meta } = base
  const seq = meta.seq + 1

  // Step 0: the index trees' changes, derived from the old and new stored values, joined in name order.
  const changes = yield* deriveIndexChanges(src, meta.catalogRoot, input)
  const names = changes.map((c) => utf8.encode(c.name))
  const alloc = new Allocator(base.freeList, meta.pageCount, base.reuseFreePages !== false)
  const b = new TreeWriter(src, alloc, seq)

  // Step 2: each changed collection's tree, in name order.
  const catalogOps: Change[] = []
  let records = meta.records
  for (let c = 0; c < changes.length; c++) {
    const name = names[c]!
    const current = catalogGet(src, meta.catalogRoot, name) ?? { root: 0, records: 0 }
    b.delta = 0
    const root = yield* b.applyRoot(current.root, changes[c]!.changes)
    const count = current.records + b.delta
    if ((root === 0) !== (count === 0) || count < 0) {
      throw corruptPage(
        current.root || meta.catalogRoot,
        `collection ${JSON.stringify(changes[c]!.name)} holds a different number of records than its catalog entry says (${current.records})`,
      )
    }
    // The meta counts the records of collections, not the entries of index trees.
    if (!name.includes(0)) records += b.delta
    catalogOps.push(root === 0 ? { key: name } : { key: name, version: { commitId: 0, value: encodeCatalogValue(root, count) } })
  }

  // Step 3: the catalog, one op per changed collection.
  const catalogRoot = catalogOps.length > 0 ? yield* b.applyRoot(meta.catalogRoot, catalogOps) : meta.catalogRoot

  // Step 5: the free list. The old chain is freed; the new chain takes the smallest reusable
  // pages, then pages at the end (Allocator.freeChain).
  for (const p of base.freeChain) alloc.free(p)
  const { chain, list } = alloc.freeChain()
  for (let i = 0; i < chain.length; i++) {
    const part = list.slice(i * FREE_NUMBERS_PER_PAGE, (i + 1) * FREE_NUMBERS_PER_PAGE)
    b.emit(chain[i]!, encodeFree(part, seq, chain[i]!, chain[i + 1] ?? 0))
  }

  return {
    meta: {
      seq,
      checkpointLsn: lsn,
      catalogRoot,
      pageCount: alloc.next,
      freeHead: chain[0] ?? 0,
      freeCount: list.length,
      records,
    },
    freeList: list,
    freeChain: chain,
    pages: b.pages,
    pagesFreed: alloc.freed.length,
  }
}
