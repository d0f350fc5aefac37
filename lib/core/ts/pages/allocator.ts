/**
 * The allocator of one checkpoint (docs/FORMAT.md "Writing checkpoint seq + 1", steps 1 and 5)
 * and the published free list. Twin of `pages/allocator.rs`. Pages freed by a checkpoint become
 * reusable only from the next one on: until the new meta page is durable, the published
 * checkpoint can still reach them (a crash, a reader, a backup).
 */
import { KestrelError } from '../../../errors.js'
import { FREE_NUMBERS_PER_PAGE, KIND_FREE, PAGE_NUMBER_MAX, corruptPage, type PageMeta } from '../../../format/page_layout.js'
import type { PageSource } from './index.js'

/** Step 1 of the spec: the smallest reusable page first, else a new page at the end of the file. */
export class Allocator {
  private taken = 0
  /** Pages freed by this checkpoint (reusable from the next one on). */
  readonly freed: number[] = []

  /** The next page at the end of the file. */
  next: number

  /**
   * `reusable`: the published free list, ascending; `pageCount`: the published page count;
   * `reuse` false: hand out only new pages at the end of the file (another participant sharing
   * the directory may still read an older checkpoint that reaches the free pages); the whole
   * published free list is carried into the new one.
   */
  constructor(
    private readonly reusable: readonly number[],
    pageCount: number,
    private readonly reuse = true,
  ) {
    this.next = pageCount
  }

  /** The smallest reusable page, or else a new one at the end of the file. */
  alloc(): number {
    if (this.reuse && this.taken < this.reusable.length) return this.reusable[this.taken++]!
    return this.allocAtEnd()
  }

  /** A new page at the end of the file. */
  allocAtEnd(): number {
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

  /**
   * Step 5: the pages of the new free-list chain and the numbers it lists. The chain takes the
   * smallest reusable pages (c = the smallest count whose pages can hold what is left), then pages
   * at the end, so a database that rewrites the same keys does not grow. The list is the rest of
   * the reusable pages and the freed ones, ascending; a page freed twice is corruption.
   */
  freeChain(): { chain: number[]; list: number[] } {
    const reusableLeft = this.untaken().length
    const total = reusableLeft + this.freed.length
    // The chain's pages come from the reusable ones only when pages may be reused.
    const fromReusable = this.reuse ? reusableLeft : 0
    let c = 0
    // Bounded: c = ceil(total / FREE_NUMBERS_PER_PAGE) satisfies the condition.
    while (total - Math.min(c, fromReusable) > FREE_NUMBERS_PER_PAGE * c) c++
    const chain: number[] = []
    for (let i = 0; i < c; i++) chain.push(this.alloc())
    const list = [...this.untaken(), ...this.freed].sort((x, y) => x - y)
    for (let i = 1; i < list.length; i++) {
      if (list[i] === list[i - 1]) throw corruptPage(list[i]!, 'page freed twice (reached twice, or both reachable and free)')
    }
    return { chain, list }
  }
}

/** The free list (ascending) and the pages of its chain, checked against the meta. */
export function readFreeList(src: PageSource, meta: PageMeta): { list: number[]; chain: number[] } {
  const list: number[] = []
  const chain: number[] = []
  let page = meta.freeHead
  // Bounded: a chain longer than the file's page count is a cycle.
  while (page !== 0) {
    if (chain.length >= meta.pageCount) throw corruptPage(page, 'free-list chain longer than the file (a cycle)')
    const { header, bytes } = src.read(page, KIND_FREE)
    if (header.count > FREE_NUMBERS_PER_PAGE || (header.next !== 0 && header.count < FREE_NUMBERS_PER_PAGE)) {
      throw corruptPage(page, `free-list page lists ${header.count} pages (every page but the last holds ${FREE_NUMBERS_PER_PAGE})`)
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
