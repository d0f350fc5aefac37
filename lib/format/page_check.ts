/**
 * The structural checker of `pages.kdb` (docs/FORMAT.md "Checks"). It reads the file itself with
 * synchronous fs calls and never trusts the engine that wrote it, so it also verifies files the
 * Rust engine wrote and backups. It reports every problem it finds instead of stopping at the
 * first, and never throws for a bad file.
 */
import { closeSync, fstatSync, openSync } from 'node:fs'
import { concatBytes } from '../codec/bytes.js'
import {
  BODY_BYTES,
  FREE_NUMBERS_PER_PAGE,
  HEADER_BYTES,
  KIND_BRANCH,
  KIND_FREE,
  KIND_LEAF,
  KIND_OVERFLOW,
  PAGE_BYTES,
  PAGE_FORMAT_VERSION,
  PageDefect,
  compareBytes,
  crcMatches,
  decodeBranch,
  decodeCatalogValue,
  decodeFree,
  decodeLeaf,
  decodeMeta,
  kindName,
  readHeader,
  type LeafEntry,
  type PageHeader,
  type PageMeta,
  readPageBytes,
} from './page_layout.js'
import { ENVELOPE_TAG } from './envelope.js'
import { indexKeys } from './stored.js'

/** What {@link walk} found. */
export interface CheckReport {
  /** Every problem, each naming the page it is about ("page N: …"); empty = the file is sound. */
  problems: string[]
  /** The meta the file opens with; undefined = no checkpoint (no valid slot). */
  meta: PageMeta | undefined
  /** Pages the checkpoint reaches: catalog, trees, overflow and free-list chains. */
  pagesReachable: number
  /** Pages the free list holds. */
  pagesFree: number
  /** Live records found in the collection trees (index trees not counted). */
  records: number
  /** Bytes used in the collection trees' leaves, as a percentage of their 4072-byte bodies. */
  leafFillPercent: number
  /**
   * Per tree in the catalog — collections, and index trees named `collection ‖ 0x00 ‖ index` whose
   * records are index entries — its records as found, tree depth (a leaf root = 1), leaves.
   */
  collections: Array<{ name: string; records: number; depth: number; leaves: number }>
}

/** Listing stops here; a wrecked file would otherwise report every page. */
const PROBLEMS_MAX = 1000
/** Deeper than any real tree (a file of 2^32 pages is at most 16 levels deep); beyond it the walk stops. */
const DEPTH_MAX = 64
const UNSEEN = 0
const REACHED = 1
const FREE = 2
const utf8 = new TextDecoder()

/**
 * Check the page file at `path` per FORMAT.md "Checks": walk everything its published checkpoint
 * reaches (the twin of `pages/check.rs`'s `walk`, which walks the engine's open file instead).
 */
export function walk(path: string): CheckReport {
  const report: CheckReport = { problems: [], meta: undefined, pagesReachable: 0, pagesFree: 0, records: 0, leafFillPercent: 0, collections: [] }
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (err) {
    report.problems.push(`${path}: cannot open (${(err as Error).message})`)
    return report
  }
  try {
    new Walker(fd, report).run()
  } catch (err) {
    // Only an I/O error gets here; file contents are reported, not thrown.
    report.problems.push(`${path}: ${(err as Error).message}`)
  } finally {
    closeSync(fd)
  }
  return report
}

class Walker {
  private meta!: PageMeta
  /** Pages below this exist in the file and are below the page count. */
  private limit = 0
  private state = new Uint8Array(0)
  private dropped = 0

  constructor(
    private readonly fd: number,
    private readonly report: CheckReport,
  ) {}

  private problem(message: string): void {
    if (this.report.problems.length < PROBLEMS_MAX) this.report.problems.push(message)
    else this.dropped++
  }

  private readBytes(page: number): Uint8Array {
    return readPageBytes(this.fd, page)
  }

  run(): void {
    const size = fstatSync(this.fd).size
    let best: PageMeta | undefined
    for (const slot of [0, 1]) {
      const s = decodeMeta(this.readBytes(slot), slot)
      if (s.state === 'newer') {
        this.problem(`page ${slot}: meta with page store format version ${s.version}; this kestreldb checks version ${PAGE_FORMAT_VERSION}`)
        return
      }
      if (s.state === 'valid' && (!best || s.meta.seq > best.seq)) best = s.meta
    }
    // No valid slot is "no checkpoint" (e.g. a torn first checkpoint), not a defect.
    if (!best) return
    const meta = best
    this.meta = meta
    this.report.meta = { ...meta }
    const slot = meta.seq % 2
    if (meta.pageCount < 2) {
      this.problem(`page ${slot}: meta page count ${meta.pageCount} < 2`)
      return
    }
    const filePages = Math.floor(size / PAGE_BYTES)
    if (filePages < meta.pageCount) this.problem(`page ${slot}: the meta counts ${meta.pageCount} pages but the file holds ${filePages} whole pages`)
    this.limit = Math.min(meta.pageCount, filePages)
    this.state = new Uint8Array(this.limit)

    const collections: Array<{ name: string; root: number; records: number; leaf: number }> = []
    if (meta.catalogRoot !== 0) {
      this.tree(meta.catalogRoot, 'the catalog', (e, leaf) => {
        if (e.commitId !== 0) this.problem(`page ${leaf}: catalog entry ${JSON.stringify(utf8.decode(e.key))} has commit id ${e.commitId}, expected 0`)
        try {
          collections.push({ name: utf8.decode(e.key), ...decodeCatalogValue(e, leaf), leaf })
        } catch (err) {
          if (!(err instanceof PageDefect)) throw err
          this.problem(err.message)
        }
      })
    }
    let records = 0
    let catalogRecords = 0
    let fill = 0
    let leaves = 0
    // Per collection walked: index name → records whose envelope has a key of that index. A
    // collection sorts right before its index trees, so it is walked first.
    const keyed = new Map<string, Map<string, number>>()
    for (const c of collections) {
      const sep = c.name.indexOf('\u0000')
      const isIndex = sep >= 0
      const what = isIndex
        ? `index ${JSON.stringify(c.name.slice(sep + 1))} of collection ${JSON.stringify(c.name.slice(0, sep))}`
        : `collection ${JSON.stringify(c.name)}`
      let counts: Map<string, number> | undefined
      if (!isIndex) {
        counts = new Map()
        keyed.set(c.name, counts)
      }
      const t = this.tree(c.root, what, (e, leaf, head) => {
        if (isIndex) {
          const n = e.key.length >= 2 ? (e.key[e.key.length - 2]! << 8) | e.key[e.key.length - 1]! : 0
          if (n === 0 || n + 2 >= e.key.length)
            this.problem(`page ${leaf}: ${what} has an entry whose primary-key length ${n} does not fit its ${e.key.length}-byte key`)
          if (e.length !== 0) this.problem(`page ${leaf}: ${what} has an entry with a ${e.length}-byte value (index entries are empty)`)
          return
        }
        // The keys the checkpoint derives (a value that is no well-formed envelope has none).
        if (head === undefined) return
        for (const k of indexKeys(head, e.length, e.key.length)) counts!.set(k.index, (counts!.get(k.index) ?? 0) + 1)
      })
      if (t.entries !== c.records) this.problem(`page ${c.leaf}: catalog says ${what} holds ${c.records} records, its tree holds ${t.entries}`)
      if (isIndex) {
        const want = keyed.get(c.name.slice(0, sep))?.get(c.name.slice(sep + 1)) ?? 0
        if (want !== t.entries)
          this.problem(`page ${c.leaf}: ${what} holds ${t.entries} entries, but ${want} records of the collection have a key of that index`)
        keyed.get(c.name.slice(0, sep))?.delete(c.name.slice(sep + 1))
      } else {
        records += t.entries
        catalogRecords += c.records
        fill += t.fill
        leaves += t.leaves
      }
      this.report.collections.push({ name: c.name, records: t.entries, depth: t.depth, leaves: t.leaves })
    }
    for (const [name, counts] of keyed) {
      for (const [index, n] of counts)
        this.problem(
          `page ${this.meta.catalogRoot}: ${n} records of collection ${JSON.stringify(name)} have a key of index ${JSON.stringify(index)}, which has no index tree`,
        )
    }
    if (catalogRecords !== meta.records) this.problem(`page ${slot}: the meta counts ${meta.records} records, the catalog ${catalogRecords}`)
    this.report.records = records
    this.report.leafFillPercent = leaves === 0 ? 0 : Math.round((1000 * fill) / (leaves * BODY_BYTES)) / 10

    this.freeList()

    let reached = 0
    let free = 0
    // Bounded by the page count (capped by the file size).
    for (let p = 2; p < this.limit; p++) {
      const s = this.state[p]
      if (s === REACHED) reached++
      else if (s === FREE) free++
      else this.problem(`page ${p}: neither reachable nor free (a leaked page)`)
    }
    this.report.pagesReachable = reached
    this.report.pagesFree = free
    if (this.dropped > 0) this.report.problems.push(`… and ${this.dropped} more problems`)
  }

  /** Mark `page` reachable; false (with a problem) when it is outside the file or reached twice. */
  private mark(page: number, from: string): boolean {
    if (page < 2 || page >= this.limit) {
      this.problem(`page ${page}: referenced by ${from} but outside pages 2..${this.limit - 1}`)
      return false
    }
    if (this.state[page] !== UNSEEN) {
      this.problem(`page ${page}: reached twice (again from ${from})`)
      return false
    }
    this.state[page] = REACHED
    return true
  }

  /** Read a reachable page and check CRC, kind, own number, seq and the reserved byte. */
  private load(page: number, kind: number, from: string): { header: PageHeader; bytes: Uint8Array } | undefined
  private load(page: number, kind: readonly number[], from: string): { header: PageHeader; bytes: Uint8Array } | undefined
  private load(page: number, kinds: number | readonly number[], from: string): { header: PageHeader; bytes: Uint8Array } | undefined {
    const ok = typeof kinds === 'number' ? [kinds] : kinds
    const bytes = this.readBytes(page)
    if (!crcMatches(bytes)) {
      this.problem(`page ${page}: checksum mismatch (${from})`)
      return undefined
    }
    const header = readHeader(bytes)
    let good = true
    if (!ok.includes(header.kind)) {
      this.problem(`page ${page}: kind ${kindName(header.kind)}, expected ${ok.map(kindName).join(' or ')} (${from})`)
      good = false
    }
    if (header.page !== page) {
      this.problem(`page ${page}: holds page number ${header.page} (a misplaced write)`)
      good = false
    }
    if (!(header.seq <= this.meta.seq)) this.problem(`page ${page}: written by checkpoint ${header.seq}, after the meta's ${this.meta.seq}`)
    if (header.reserved !== 0) this.problem(`page ${page}: header byte 5 is ${header.reserved}, expected 0`)
    if ((header.kind === KIND_LEAF || header.kind === KIND_BRANCH) && header.next !== 0)
      this.problem(`page ${page}: ${kindName(header.kind)} page with next ${header.next}`)
    return good ? { header, bytes } : undefined
  }

  private zeroTail(page: number, bytes: Uint8Array, from: number): void {
    // Bounded by the page size.
    for (let i = from; i < PAGE_BYTES; i++) {
      if (bytes[i] !== 0) {
        this.problem(`page ${page}: unused byte ${i} is not zero`)
        return
      }
    }
  }

  /**
   * Walk one tree: keys in order within their parents' bounds, all leaves at one depth, no empty
   * page but an empty root, overflow chains as long as their values.
   */
  private tree(
    root: number,
    what: string,
    onEntry: (e: LeafEntry, leaf: number, head: Uint8Array | undefined) => void,
  ): { entries: number; depth: number; leaves: number; fill: number } {
    const out = { entries: 0, depth: 0, leaves: 0, fill: 0 }
    const depths = new Set<number>()
    const visit = (page: number, lo: Uint8Array | undefined, hi: Uint8Array | undefined, level: number, from: string): void => {
      if (level > DEPTH_MAX) {
        this.problem(`page ${page}: ${what} is deeper than ${DEPTH_MAX} levels`)
        return
      }
      if (!this.mark(page, from)) return
      const got = this.load(page, [KIND_LEAF, KIND_BRANCH], `${what}, from ${from}`)
      if (!got) return
      const { header, bytes } = got
      const inBounds = (key: Uint8Array): boolean => (lo === undefined || compareBytes(key, lo) >= 0) && (hi === undefined || compareBytes(key, hi) < 0)
      if (header.kind === KIND_LEAF) {
        let decoded: ReturnType<typeof decodeLeaf>
        try {
          decoded = decodeLeaf(bytes, page, header.count)
        } catch (err) {
          if (!(err instanceof PageDefect)) throw err
          this.problem(`${err.message} (${what})`)
          return
        }
        const { entries, end } = decoded
        this.zeroTail(page, bytes, end)
        if (entries.length === 0 && level !== 1) this.problem(`page ${page}: empty leaf that is not a root (${what})`)
        const first = entries[0]
        const last = entries[entries.length - 1]
        if (first && last && (!inBounds(first.key) || !inBounds(last.key)))
          this.problem(`page ${page}: leaf keys outside the bounds its parents give (${what})`)
        depths.add(level)
        out.leaves++
        out.fill += end - HEADER_BYTES
        for (const e of entries) {
          const head = e.inline ?? this.chain(e.overflow, e.length, page)
          out.entries++
          onEntry(e, page, head)
        }
        return
      }
      let decoded: ReturnType<typeof decodeBranch>
      try {
        decoded = decodeBranch(bytes, page, header.count)
      } catch (err) {
        if (!(err instanceof PageDefect)) throw err
        this.problem(`${err.message} (${what})`)
        return
      }
      const { keys, children, end } = decoded
      this.zeroTail(page, bytes, end)
      // Entry i ≥ 1's key bounds child i from below and child i − 1 from above, so it must lie
      // strictly above the branch's own lower bound (else child i − 1 could hold nothing).
      for (let i = 1; i < keys.length; i++) {
        const k = keys[i]!
        if ((lo !== undefined && compareBytes(k, lo) <= 0) || (hi !== undefined && compareBytes(k, hi) >= 0)) {
          this.problem(`page ${page}: branch key ${i} outside the bounds its parents give (${what})`)
          return
        }
      }
      // Bounded by the entry count; recursion bounded by DEPTH_MAX.
      for (let i = 0; i < children.length; i++) {
        visit(children[i]!, i === 0 ? lo : keys[i], keys[i + 1] ?? hi, level + 1, `branch page ${page}`)
      }
    }
    visit(root, undefined, undefined, 1, what)
    if (depths.size > 1) this.problem(`page ${root}: ${what} has leaves at depths ${[...depths].sort().join(', ')}`)
    out.depth = depths.size > 0 ? Math.max(...depths) : 0
    return out
  }

  /**
   * Check an overflow chain; returns the value's first bytes — its envelope header and block when
   * it is an envelope, else the first page's bytes — or undefined when the chain is bad.
   */
  private chain(first: number, length: number, leaf: number): Uint8Array | undefined {
    let page = first
    let left = length
    let prev = leaf
    const head: Uint8Array[] = []
    let headBytes = 0
    let want = 3
    // Bounded: mark() refuses a page twice, so at most the page count iterations.
    for (;;) {
      if (left === 0) {
        if (page !== 0) this.problem(`page ${prev}: overflow chain continues past its value (next ${page}; value in leaf ${leaf})`)
        return concatBytes(head, headBytes)
      }
      if (page === 0) {
        this.problem(`page ${prev}: overflow chain ends ${left} bytes before its value (value in leaf ${leaf})`)
        return undefined
      }
      if (!this.mark(page, `an overflow chain of leaf ${leaf}`)) return undefined
      const got = this.load(page, KIND_OVERFLOW, `overflow chain of leaf ${leaf}`)
      if (!got) return undefined
      const n = got.header.count
      if (n === 0 || n > BODY_BYTES || n > left) {
        this.problem(`page ${page}: overflow page holds ${n} bytes with ${left} of the value left (value in leaf ${leaf})`)
        return undefined
      }
      if (headBytes < want) {
        const data = got.bytes.subarray(HEADER_BYTES, HEADER_BYTES + n)
        if (head.length === 0) want = data[0] === ENVELOPE_TAG && n >= 3 ? 3 + (data[1]! | (data[2]! << 8)) : 0
        head.push(data)
        headBytes += n
      }
      this.zeroTail(page, got.bytes, HEADER_BYTES + n)
      left -= n
      prev = page
      page = got.header.next
    }
  }

  private freeList(): void {
    const meta = this.meta
    const listed: number[] = []
    let page = meta.freeHead
    let prev = 0
    // Bounded: mark() refuses a page twice.
    while (page !== 0) {
      if (!this.mark(page, prev === 0 ? 'the meta free-list head' : `free-list page ${prev}`)) break
      const got = this.load(page, KIND_FREE, 'the free-list chain')
      if (!got) break
      if (got.header.count > FREE_NUMBERS_PER_PAGE) {
        this.problem(`page ${page}: free-list page lists ${got.header.count} pages > ${FREE_NUMBERS_PER_PAGE}`)
        break
      }
      if (got.header.next !== 0 && got.header.count < FREE_NUMBERS_PER_PAGE) {
        this.problem(
          `page ${page}: free-list page lists ${got.header.count} pages but is not the last of its chain (every page but the last holds ${FREE_NUMBERS_PER_PAGE})`,
        )
      }
      const pages = decodeFree(got.bytes, page, got.header.count)
      this.zeroTail(page, got.bytes, HEADER_BYTES + 4 * pages.length)
      for (const p of pages) {
        if (listed.length > 0 && p <= listed[listed.length - 1]!) this.problem(`page ${page}: free list not ascending at ${p}`)
        listed.push(p)
      }
      prev = page
      page = got.header.next
    }
    if (listed.length !== meta.freeCount)
      this.problem(`page ${meta.seq % 2}: the meta counts ${meta.freeCount} free pages, the free list holds ${listed.length}`)
    for (const p of listed) {
      if (p < 2 || p >= this.limit) this.problem(`page ${p}: listed free but outside pages 2..${this.limit - 1}`)
      else if (this.state[p] === REACHED) this.problem(`page ${p}: listed free but reachable`)
      else this.state[p] = FREE
    }
  }
}
