/**
 * The page-store side of a scan or an index lookup (twin of `store/disk_cursor.rs`): a range of
 * one tree read in growing chunks, merged under the keys in memory by read.ts.
 */
import type { Bound, PageEntry, PageStore } from '../pages/index.js'

/**
 * Entries of the first page-store read while merging a scan or a lookup: most reads want a few
 * (a `limit: 1` scan, an exact index lookup), so the first chunk is small and each next one
 * SCAN_CHUNK_GROWTH times bigger, up to SCAN_CHUNK_ENTRIES_MAX.
 */
export const SCAN_CHUNK_ENTRIES_FIRST = 16
export const SCAN_CHUNK_GROWTH = 4
export const SCAN_CHUNK_ENTRIES_MAX = 256

/** A page-store range read in growing chunks, for merging with memory. */
export class DiskCursor {
  private buffered: PageEntry[] = []
  /** The next entry of `buffered` to hand out. */
  private at = 0
  private done = false
  /** The last key read: the next chunk starts after it. */
  private last: Uint8Array | undefined
  /** Entries the next chunk reads. */
  private chunk = SCAN_CHUNK_ENTRIES_FIRST

  constructor(
    private readonly pages: PageStore,
    private readonly tree: string,
    private readonly lower: Bound,
    private readonly upper: Bound,
    private readonly reverse: boolean,
  ) {}

  /** The next entry in order, without taking it. */
  peek(): PageEntry | undefined {
    if (this.at < this.buffered.length) return this.buffered[this.at]
    if (this.done) return undefined
    const cursor: Bound = this.last === undefined ? undefined : { key: this.last, inclusive: false }
    this.buffered = this.pages.range(
      this.tree,
      this.reverse ? this.lower : (cursor ?? this.lower),
      this.reverse ? (cursor ?? this.upper) : this.upper,
      this.reverse,
      this.chunk,
    )
    this.at = 0
    this.done = this.buffered.length < this.chunk
    this.chunk = Math.min(SCAN_CHUNK_ENTRIES_MAX, this.chunk * SCAN_CHUNK_GROWTH)
    if (this.buffered.length > 0) this.last = this.buffered[this.buffered.length - 1]!.key
    return this.buffered[0]
  }

  /** Take the entry `peek` returned. */
  pop(): void {
    this.at++
  }
}
