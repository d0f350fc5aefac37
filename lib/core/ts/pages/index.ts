/**
 * The page store `pages.kdb` of the ts engine (docs/FORMAT.md "Page store"), twin of
 * `pages/mod.rs`: the state of every collection at the checkpoint LSN as copy-on-write B+trees.
 * This file: `PageStore` — open, reads, the checkpoint driver (build, write, sync, meta, sync,
 * publish) and the page cache. The trees are read in tree_read.ts, written in tree_write.ts
 * (pages from allocator.ts, index-tree changes from derive.ts); the byte layout and the file
 * check are engine-neutral (lib/format/page_layout.ts, page_check.ts).
 *
 * Reads are synchronous (`fs.readSync` on a kept-open fd) because engine reads are. A checkpoint
 * builds every new page in memory, then writes them with async fs calls; reads that interleave
 * keep using the published checkpoint, whose pages the new checkpoint never overwrites (the
 * allocator only hands out pages that checkpoint cannot reach).
 */
import { closeSync, constants, fdatasync, openSync, write } from 'node:fs'
import { randomFillSync } from 'node:crypto'
import { dirname, join } from 'node:path'
import { KestrelError, toKestrelError } from '../../../errors.js'
import { STORED_VALUE_BYTES_MAX } from '../../../format/envelope.js'
import {
  KEY_BYTES_MAX,
  KIND_BRANCH,
  KIND_LEAF,
  PAGE_BYTES,
  PAGE_FILE,
  PageDefect,
  checkHeader,
  compareBytes,
  corruptPage,
  decodeBranch,
  decodeLeaf,
  emptyMeta,
  encodeMeta,
  type LeafEntry,
  type PageHeader,
  type PageMeta,
  readMeta,
  readPageBytes,
} from '../../../format/page_layout.js'
import { syncDir } from '../fsutil.js'
import { readFreeList } from './allocator.js'
import { catalogGet, listCatalog, lookup, range, reachablePages, readValue } from './tree_read.js'
import { buildCheckpoint, runSlices } from './tree_write.js'

/** One record as a range scan returns it. */
export interface PageEntry {
  key: Uint8Array
  commitId: number
  value: Uint8Array
}
/** value undefined = deleted; else the version visible at the checkpoint LSN. */
export interface Change {
  key: Uint8Array
  version?: { commitId: number; value: Uint8Array }
}
/** One collection's changes: sorted by key bytewise, no duplicates, non-empty. */
export interface CollectionChanges {
  name: string
  changes: Change[]
}
/** A range bound; undefined = unbounded on that side. */
export type Bound = { key: Uint8Array; inclusive: boolean } | undefined

/** A decoded, checked tree page. */
export type TreeNode = { kind: 2; page: number; entries: LeafEntry[] } | { kind: 3; page: number; keys: Uint8Array[]; children: number[] }

/** Where the tree code gets pages from (the store's cache); every method throws KESTREL_CORRUPT. */
export interface PageSource {
  /** A checked, decoded leaf or branch page. */
  readTree(page: number): TreeNode
  /** A checked overflow (kind 4) or free-list (kind 5) page: its header and bytes (not cached). */
  read(page: number, kind: number): { header: PageHeader; bytes: Uint8Array }
}

/** Test-only crash points of {@link PageStore.checkpoint}. */
export type PageFault = 'none' | 'losePagesBeforeMeta' | 'tearMeta' | 'failMetaSync'

/** What a checkpoint wrote. */
export interface CheckpointReport {
  seq: number
  lsn: number
  /** New tree, overflow and free-list pages (the meta page not included). */
  pagesWritten: number
  /** Pages this checkpoint freed (reusable from the next checkpoint on). */
  pagesFreed: number
  /** Bytes written: the new pages plus the 4096-byte meta page. */
  bytesWritten: number
}

/** Fewest pages the cache holds, whatever `cacheBytes` says. */
const CACHE_PAGES_MIN = 64
/** Largest single write when flushing consecutive pages. */
const WRITE_RUN_PAGES_MAX = 256
/** Catalog lookups remembered per published checkpoint (cleared beyond this). */
const ROOT_MEMO_MAX = 4096
/** Bytes of the new meta page written by the 'tearMeta' fault: header, magic and version, not the LSN. */
const TORN_META_BYTES = 40

const utf8 = new TextEncoder()

function invalid(message: string): KestrelError {
  return new KestrelError('KESTREL_INVALID_ARGUMENT', `page store checkpoint: ${message}`)
}

/** Check the checkpoint input (sorted, bounded, versions not after `lsn`); returns names as UTF-8. */
function validateChanges(lsn: number, changes: readonly CollectionChanges[]): Uint8Array[] {
  const names: Uint8Array[] = []
  for (let c = 0; c < changes.length; c++) {
    const col = changes[c]!
    const name = utf8.encode(col.name)
    if (name.length > KEY_BYTES_MAX) throw invalid(`collection name ${JSON.stringify(col.name)} is ${name.length} bytes > ${KEY_BYTES_MAX}`)
    if (name.includes(0))
      throw invalid(`collection name ${JSON.stringify(col.name)} contains a 0x00 byte (index trees are derived by the checkpoint, never given)`)
    if (c > 0 && compareBytes(names[c - 1]!, name) >= 0) throw invalid(`collections not sorted by name bytewise at ${JSON.stringify(col.name)}`)
    if (col.changes.length === 0) throw invalid(`collection ${JSON.stringify(col.name)} has no changes`)
    for (let i = 0; i < col.changes.length; i++) {
      const ch = col.changes[i]!
      if (ch.key.length > KEY_BYTES_MAX) throw invalid(`a key of ${ch.key.length} bytes > ${KEY_BYTES_MAX} in ${JSON.stringify(col.name)}`)
      if (i > 0 && compareBytes(col.changes[i - 1]!.key, ch.key) >= 0)
        throw invalid(`changes of ${JSON.stringify(col.name)} not sorted by key or with a duplicate at index ${i}`)
      const v = ch.version
      if (v) {
        if (!Number.isSafeInteger(v.commitId) || v.commitId < 0 || v.commitId > lsn)
          throw invalid(`commit id ${v.commitId} outside 0..${lsn} in ${JSON.stringify(col.name)}`)
        if (v.value.length > STORED_VALUE_BYTES_MAX)
          throw invalid(`a value of ${v.value.length} bytes > ${STORED_VALUE_BYTES_MAX} in ${JSON.stringify(col.name)}`)
      }
    }
    names.push(name)
  }
  return names
}

/** What `base()` hands the builder, plus whether the free list was read yet. */
interface Published {
  meta: PageMeta
  /** Loaded on the first checkpoint (reads need not pay for it). */
  free: { list: number[]; chain: number[] } | undefined
}

function writeAt(fd: number, data: Uint8Array, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    write(fd, data, 0, data.length, position, (err, n) => (err ? reject(err) : resolve(n)))
  })
}

async function writeAll(fd: number, data: Uint8Array, position: number): Promise<void> {
  let done = 0
  // Bounded: each iteration writes ≥ 1 byte or throws.
  while (done < data.length) {
    const n = await writeAt(fd, data.subarray(done), position + done)
    if (n <= 0) throw Object.assign(new Error('short write to pages.kdb'), { code: 'EIO' })
    done += n
  }
}

function datasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())))
}

function injected(fault: PageFault): KestrelError {
  return new KestrelError('KESTREL_IO', `pages.kdb checkpoint failed: injected fault ${fault}; reopen the database`)
}

/** Turn a PageDefect from a decoder into the KESTREL_CORRUPT error readers see. */
function rethrow(err: unknown): never {
  if (err instanceof PageDefect) throw corruptPage(err.page, err.what)
  throw err
}

/** The page store of one database directory. */
export class PageStore implements PageSource {
  /** Absolute or caller-relative path of `pages.kdb`. */
  readonly path: string
  private fd: number | undefined
  /** False between creating the file and fsyncing its directory. */
  private dirSynced: boolean
  private published: Published
  /** Decoded tree pages, least recently used first. Holds only pages the published (or, during a build, old) checkpoint reaches. */
  private readonly cache = new Map<number, TreeNode>()
  private readonly cachePages: number
  /** Catalog lookups of the published checkpoint (tree name → root and records); emptied at each publish. */
  private readonly roots = new Map<string, { root: number; records: number } | undefined>()
  private closed = false
  /**
   * Set when a checkpoint failed at or after starting its meta write: the slot may hold a valid
   * meta of the unpublished checkpoint (a write can land although its fdatasync failed; and with
   * this layout a meta torn at any byte past 72 is still whole, the rest of a meta page being
   * zeros). The next checkpoint wipes that slot before reusing pages such a meta would reach.
   */
  private slotSuspect = false
  private running = false

  private constructor(path: string, fd: number | undefined, meta: PageMeta, cacheBytes: number) {
    this.path = path
    this.fd = fd
    this.dirSynced = fd !== undefined
    this.published = { meta, free: meta.freeHead === 0 && meta.freeCount === 0 ? { list: [], chain: [] } : undefined }
    this.cachePages = Math.max(CACHE_PAGES_MIN, Number.isFinite(cacheBytes) ? Math.floor(cacheBytes / PAGE_BYTES) : 0)
  }

  /**
   * Open `<dir>/pages.kdb` synchronously. Missing file = no checkpoint (the file is created by the
   * first checkpoint, and the directory fsync'd then). No valid meta slot = no checkpoint (not an
   * error). A slot with a newer format version → KESTREL_FORMAT_VERSION. `cacheBytes` bounds the
   * page cache (≥ 64 pages).
   */
  static open(dir: string, cacheBytes: number): PageStore {
    const path = join(dir, PAGE_FILE)
    let fd: number | undefined
    try {
      fd = openSync(path, 'r+')
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return new PageStore(path, undefined, emptyMeta(), cacheBytes)
      throw toKestrelError(err, `opening ${path}`)
    }
    try {
      const meta = readMeta(fd, path) ?? emptyMeta()
      checkMeta(meta)
      return new PageStore(path, fd, meta, cacheBytes)
    } catch (err) {
      closeSync(fd)
      throw toKestrelError(err, `reading ${path}`)
    }
  }

  /** The published checkpoint (a copy). */
  meta(): PageMeta {
    return { ...this.published.meta }
  }

  /** The version of `key` in `collection` at the checkpoint LSN; undefined when absent. */
  get(collection: string, key: Uint8Array): { commitId: number; value: Uint8Array } | undefined {
    this.assertOpen()
    const c = this.collection(collection)
    if (!c) return undefined
    const e = lookup(this, c.root, key)
    return e ? { commitId: e.commitId, value: readValue(this, e) } : undefined
  }

  /** Up to `max` records of `collection` within the bounds, in key order or `reverse`. */
  range(collection: string, lower: Bound, upper: Bound, reverse: boolean, max: number): PageEntry[] {
    this.assertOpen()
    const c = this.collection(collection)
    const out: PageEntry[] = []
    if (!c) return out
    range(this, c.root, lower, upper, reverse, max, (e) => {
      out.push({ key: e.key.slice(), commitId: e.commitId, value: readValue(this, e) })
    })
    return out
  }

  /** Every collection with records, in name order (bytewise UTF-8); not the index trees. */
  collections(): Array<{ name: string; records: number }> {
    return this.trees().filter((t) => !t.name.includes('\u0000'))
  }

  /**
   * Every tree in the catalog — collections and index trees (`collection ‖ 0x00 ‖ index`, whose
   * records are index entries) — in name order (bytewise UTF-8).
   */
  trees(): Array<{ name: string; records: number }> {
    this.assertOpen()
    return listCatalog(this, this.published.meta.catalogRoot).map(({ name, records }) => ({ name, records }))
  }

  /**
   * Build checkpoint seq + 1 at `lsn` (≥ the current checkpoint LSN) from `changes` (sorted by
   * name bytewise, each non-empty) per FORMAT.md; write the pages, fdatasync, write the meta slot,
   * fdatasync, then publish. Synchronous reads that interleave see the old checkpoint until
   * publication. Calls must be serialized by the caller. On error the published state is
   * unchanged. Faults (tests): 'losePagesBeforeMeta' = the new pages reach the file as garbage,
   * then KESTREL_IO before the meta is written; 'tearMeta' = pages written and synced, then only
   * the first 40 bytes of the new meta page (an invalid slot), then KESTREL_IO; 'failMetaSync' =
   * pages and the whole meta written and synced, then KESTREL_IO (a valid, unpublished slot). After a failure at or after the
   * meta write, the next checkpoint first zeroes that meta slot (see `slotSuspect`); a checkpoint
   * started while another runs is KESTREL_INVALID_ARGUMENT.
   */
  async checkpoint(lsn: number, changes: CollectionChanges[], fault: PageFault = 'none', reuseFreePages = true): Promise<CheckpointReport> {
    this.assertOpen()
    // Two builds from one published state would allocate the same pages.
    if (this.running) throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'page store checkpoint: another checkpoint is running; serialize the calls')
    this.running = true
    try {
      return await this.runCheckpoint(lsn, changes, fault, reuseFreePages)
    } finally {
      this.running = false
    }
  }

  private async runCheckpoint(lsn: number, changes: CollectionChanges[], fault: PageFault, reuseFreePages: boolean): Promise<CheckpointReport> {
    const base = this.published
    if (!Number.isSafeInteger(lsn) || lsn < base.meta.checkpointLsn) {
      throw new KestrelError('KESTREL_INVALID_ARGUMENT', `page store checkpoint: LSN ${lsn} is before the current checkpoint LSN ${base.meta.checkpointLsn}`)
    }
    validateChanges(lsn, changes)
    const free = base.free ?? readFreeList(this, base.meta)
    base.free = free
    // Built in slices between event-loop turns; reads keep seeing the published checkpoint, and
    // no other checkpoint can start meanwhile (`running`).
    const built = await runSlices(buildCheckpoint(this, { meta: base.meta, freeList: free.list, freeChain: free.chain, reuseFreePages }, lsn, changes))
    this.assertOpen()
    // Stale cached copies (from when these pages were reachable) must never be read again.
    for (const p of built.pages.keys()) this.cache.delete(p)

    const slotAt = (built.meta.seq % 2) * PAGE_BYTES
    let metaStarted = false
    try {
      const fd = this.ensureFile()
      if (this.slotSuspect) {
        // A failed meta write may have left a valid meta for this seq that reaches the pages we are
        // about to reuse: invalidate the slot first (it holds nothing the published checkpoint needs).
        await writeAll(fd, new Uint8Array(PAGE_BYTES), slotAt)
        await datasync(fd)
        this.slotSuspect = false
      }
      await this.writePages(fd, built.pages, fault === 'losePagesBeforeMeta')
      if (fault === 'losePagesBeforeMeta') throw injected(fault)
      await datasync(fd)
      if (!this.dirSynced) {
        await syncDir(dirname(this.path))
        this.dirSynced = true
      }
      const metaPage = encodeMeta(built.meta)
      metaStarted = true
      if (fault === 'tearMeta' || fault === 'failMetaSync') {
        await writeAll(fd, fault === 'tearMeta' ? metaPage.subarray(0, TORN_META_BYTES) : metaPage, slotAt)
        await datasync(fd)
        throw injected(fault)
      }
      await writeAll(fd, metaPage, slotAt)
      await datasync(fd)
    } catch (err) {
      if (metaStarted) this.slotSuspect = true
      throw toKestrelError(err, `writing checkpoint ${built.meta.seq} to ${this.path}`)
    }
    if (this.closed) throw new KestrelError('KESTREL_CLOSED', 'the page store was closed during a checkpoint; reopen it')

    this.published = { meta: built.meta, free: { list: built.freeList, chain: built.freeChain } }
    for (const p of built.pages.keys()) this.cache.delete(p)
    this.roots.clear()
    return {
      seq: built.meta.seq,
      lsn,
      pagesWritten: built.pages.size,
      pagesFreed: built.pagesFreed,
      bytesWritten: (built.pages.size + 1) * PAGE_BYTES,
    }
  }

  /**
   * Sharing: the newest valid meta on disk now (another participant may have published a
   * checkpoint, or created the file, since this store opened); undefined when there is none.
   */
  newestOnDisk(): PageMeta | undefined {
    this.assertOpen()
    if (this.fd === undefined) {
      try {
        this.fd = openSync(this.path, 'r+')
      } catch (err) {
        if ((err as { code?: string }).code === 'ENOENT') return undefined
        throw toKestrelError(err, `opening ${this.path}`)
      }
      // Its creator synced the directory entry.
      this.dirSynced = true
    }
    const fd = this.fd
    let meta: PageMeta | undefined
    try {
      meta = readMeta(fd, this.path)
      if (meta) checkMeta(meta)
    } catch (err) {
      throw toKestrelError(err, `reading ${this.path}`)
    }
    return meta
  }

  /**
   * Sharing: publish `meta` (another participant's newer checkpoint, from newestOnDisk) as this
   * store's: reads and the next checkpoint build on it. The cache is emptied: that participant
   * may have rewritten pages this store's checkpoint had freed.
   */
  adopt(meta: PageMeta): void {
    this.assertOpen()
    if (this.running) throw new Error('adopting a checkpoint while one is being written') // assertion
    if (meta.seq <= this.published.meta.seq) throw new Error(`adopting checkpoint ${meta.seq}, not newer than ${this.published.meta.seq}`) // assertion
    this.published = { meta, free: meta.freeHead === 0 && meta.freeCount === 0 ? { list: [], chain: [] } : undefined }
    this.cache.clear()
    this.roots.clear()
  }

  /** Every page the published checkpoint reaches (catalog, trees, overflow, free-list chain), ascending; not the meta slots. */
  reachablePages(): Uint32Array {
    this.assertOpen()
    return reachablePages(this, this.published.meta)
  }

  /**
   * The pages of the published checkpoint that are not free (nor meta slots), ascending. By the
   * accounting the checks enforce (reachable ∪ free ∪ {0, 1} = every page below the page count)
   * these are exactly the pages it reaches, found from the free list alone: a backup of a large
   * database need not walk its trees. Were the file damaged, this is a superset of the reachable.
   */
  pagesInUse(): Uint32Array {
    this.assertOpen()
    const base = this.published
    const free = base.free ?? readFreeList(this, base.meta)
    base.free = free
    const count = base.meta.pageCount
    const out = new Uint32Array(Math.max(0, count - 2 - free.list.length))
    let n = 0
    let f = 0
    // Bounded by the page count; the free list is ascending (readFreeList checks it).
    for (let p = 2; p < count; p++) {
      if (f < free.list.length && free.list[f] === p) {
        f++
        continue
      }
      out[n++] = p
    }
    return n === out.length ? out : out.subarray(0, n)
  }

  /** Close the file. Further calls throw KESTREL_CLOSED. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.cache.clear()
    this.roots.clear()
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
  }

  /** @internal PageSource: a checked, decoded tree page, through the LRU cache. */
  readTree(page: number): TreeNode {
    const hit = this.cache.get(page)
    if (hit) {
      this.cache.delete(page)
      this.cache.set(page, hit)
      return hit
    }
    const bytes = this.readPage(page)
    let node: TreeNode
    try {
      const h = checkHeader(bytes, page, [KIND_LEAF, KIND_BRANCH])
      node =
        h.kind === KIND_LEAF
          ? { kind: KIND_LEAF, page, entries: decodeLeaf(bytes, page, h.count).entries }
          : { kind: KIND_BRANCH, page, ...decodeBranch(bytes, page, h.count) }
    } catch (err) {
      rethrow(err)
    }
    this.cache.set(page, node)
    if (this.cache.size > this.cachePages) {
      // Evict the least recently used page (Map iteration order is insertion order).
      const oldest = this.cache.keys().next().value
      if (oldest !== undefined) this.cache.delete(oldest)
    }
    return node
  }

  /** @internal PageSource: a checked overflow or free-list page (not cached: read once per use). */
  read(page: number, kind: number): { header: PageHeader; bytes: Uint8Array } {
    const bytes = this.readPage(page)
    try {
      return { header: checkHeader(bytes, page, [kind]), bytes }
    } catch (err) {
      rethrow(err)
    }
  }

  private readPage(page: number): Uint8Array {
    const { pageCount } = this.published.meta
    if (page < 2 || page >= pageCount) throw corruptPage(page, `page number outside 2..${pageCount - 1} (a bad pointer)`)
    if (this.fd === undefined) throw corruptPage(page, 'the file is missing')
    let bytes: Uint8Array
    try {
      bytes = readPageBytes(this.fd, page)
    } catch (err) {
      throw toKestrelError(err, `reading ${this.path}`)
    }
    if (bytes.length !== PAGE_BYTES) throw corruptPage(page, `the file ends inside or before the page`)
    return bytes
  }

  private collection(name: string): { root: number; records: number } | undefined {
    if (this.roots.has(name)) return this.roots.get(name)
    const found = catalogGet(this, this.published.meta.catalogRoot, utf8.encode(name))
    if (this.roots.size >= ROOT_MEMO_MAX) this.roots.clear()
    this.roots.set(name, found)
    return found
  }

  private ensureFile(): number {
    if (this.fd === undefined) {
      this.fd = openSync(this.path, constants.O_RDWR | constants.O_CREAT, 0o644)
      this.dirSynced = false
    }
    return this.fd
  }

  /** Write the pages in runs of consecutive page numbers; `garbage` writes random bytes instead. */
  private async writePages(fd: number, pages: Map<number, Uint8Array>, garbage: boolean): Promise<void> {
    const order = [...pages.keys()].sort((a, b) => a - b)
    let i = 0
    // Bounded: each run consumes ≥ 1 page of `order`.
    while (i < order.length) {
      let j = i + 1
      while (j < order.length && order[j] === order[j - 1]! + 1 && j - i < WRITE_RUN_PAGES_MAX) j++
      const run = new Uint8Array((j - i) * PAGE_BYTES)
      if (garbage) randomFillSync(run)
      else for (let k = i; k < j; k++) run.set(pages.get(order[k]!)!, (k - i) * PAGE_BYTES)
      await writeAll(fd, run, order[i]! * PAGE_BYTES)
      i = j
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new KestrelError('KESTREL_CLOSED', 'the page store is closed; open the database again to use it')
  }
}

/** A valid slot whose pointers would make the allocator overwrite the meta slots is corrupt. */
function checkMeta(meta: PageMeta): void {
  const slot = meta.seq % 2
  const inFile = (p: number): boolean => p === 0 || (p >= 2 && p < meta.pageCount)
  if (meta.pageCount < 2) throw corruptPage(slot, `meta page count ${meta.pageCount} < 2`)
  if (!inFile(meta.catalogRoot)) throw corruptPage(slot, `meta catalog root ${meta.catalogRoot} outside the file`)
  if (!inFile(meta.freeHead)) throw corruptPage(slot, `meta free-list head ${meta.freeHead} outside the file`)
  if (meta.freeCount > meta.pageCount || (meta.freeHead === 0) !== (meta.freeCount === 0)) {
    throw corruptPage(slot, `meta free-list head ${meta.freeHead} with ${meta.freeCount} free pages`)
  }
}
