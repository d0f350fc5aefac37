/**
 * Byte layouts of the page store `pages.kdb` (docs/FORMAT.md "Page store"): page header, meta
 * slot, leaf, branch, overflow and free-list pages. Encoders produce whole 4096-byte pages with
 * the CRC set; decoders check what a reader must trust and throw {@link PageDefect} otherwise.
 * The Rust twin (`format/page_layout.rs`) writes the same bytes, so nothing here may depend on
 * engine state.
 */
import { readSync } from 'node:fs'
import { KestrelError } from '../errors.js'
import { crc32c } from './crc32c.js'
import { compareBytes } from '../codec/bytes.js'
import { STORED_VALUE_BYTES_MAX } from './envelope.js'

/** Bytes per page. Page `n` lives at byte `n × PAGE_BYTES`. */
export const PAGE_BYTES = 4096
/** The page store's file name inside a database directory. */
export const PAGE_FILE = 'pages.kdb'
/** Bytes of the header every page starts with. */
export const HEADER_BYTES = 24
/** Bytes after the header: what leaf, branch, overflow and free-list entries are packed into. */
export const BODY_BYTES = PAGE_BYTES - HEADER_BYTES
/** Page store format version written into (and required of) meta pages. */
export const PAGE_FORMAT_VERSION = 1
/** Meta magic: "KPAGES", 0x00, 0x01. */
export const META_MAGIC = Uint8Array.from([0x4b, 0x50, 0x41, 0x47, 0x45, 0x53, 0x00, 0x01])

export const KIND_META = 1
export const KIND_LEAF = 2
export const KIND_BRANCH = 3
export const KIND_OVERFLOW = 4
export const KIND_FREE = 5

/** Longest key (and collection name) in bytes. */
export const KEY_BYTES_MAX = 1024
/** A value is stored inline in its leaf iff its length is at most this. */
export const INLINE_VALUE_BYTES_MAX = 1024
/** Page numbers per free-list page: (4096 − 24) / 4, rounded down. */
export const FREE_NUMBERS_PER_PAGE = 1018
/** Largest page number (u32). */
export const PAGE_NUMBER_MAX = 0xffffffff
/** Bytes of a catalog value: u32 root, u32 0, u64 records. */
export const CATALOG_VALUE_BYTES = 16
/** Fixed bytes of a leaf entry besides key and value: key length, commit id, kind, value length. */
const LEAF_ENTRY_FIXED_BYTES = 2 + 8 + 1 + 4
/** Fixed bytes of a branch entry besides the key: key length, child page. */
const BRANCH_ENTRY_FIXED_BYTES = 2 + 4

/** The published state of the page store: the contents of the chosen meta slot. */
export interface PageMeta {
  seq: number
  checkpointLsn: number
  catalogRoot: number
  pageCount: number
  freeHead: number
  freeCount: number
  records: number
}

/** The meta of a store with no checkpoint. */
export function emptyMeta(): PageMeta {
  return { seq: 0, checkpointLsn: 0, catalogRoot: 0, pageCount: 2, freeHead: 0, freeCount: 0, records: 0 }
}

/** The fields of a page header (bytes 4..24; the CRC is checked, not returned). */
export interface PageHeader {
  kind: number
  /** Byte 5; must be 0. */
  reserved: number
  count: number
  seq: number
  page: number
  next: number
}

/**
 * A page that cannot be trusted: bad CRC, wrong kind or page number, or a body that does not
 * parse. Readers turn it into KESTREL_CORRUPT ({@link corruptPage}); the checker lists it.
 */
export class PageDefect extends Error {
  constructor(
    readonly page: number,
    readonly what: string,
  ) {
    super(`page ${page}: ${what}`)
    this.name = 'PageDefect'
  }
}

/** The KESTREL_CORRUPT error for a bad page, with the recovery advice. */
export function corruptPage(page: number, what: string): KestrelError {
  return new KestrelError('KESTREL_CORRUPT', `pages.kdb page ${page}: ${what}; restore from a backup (kestrel restore <backup> <dir>)`)
}

/** Compare byte strings: memcmp order, shorter first on a common prefix (FORMAT.md key order). */
export { compareBytes }

function view(page: Uint8Array): DataView {
  return new DataView(page.buffer, page.byteOffset, page.byteLength)
}

/** Read a u64 as a JS number; beyond 2^53 it cannot be a valid LSN, seq or count. */
function u64(v: DataView, at: number): number {
  const big = v.getBigUint64(at, true)
  return big > BigInt(Number.MAX_SAFE_INTEGER) ? Number.NaN : Number(big)
}

/** Write the header fields and then the CRC of bytes 4..4096 (last, so it covers everything). */
export function sealPage(page: Uint8Array, kind: number, count: number, seq: number, pageNo: number, next: number): Uint8Array {
  const v = view(page)
  page[4] = kind
  page[5] = 0
  v.setUint16(6, count, true)
  v.setBigUint64(8, BigInt(seq), true)
  v.setUint32(16, pageNo, true)
  v.setUint32(20, next, true)
  v.setUint32(0, crc32c(page, 0, 4, PAGE_BYTES), true)
  return page
}

/** The header fields of a page, unchecked. */
export function readHeader(page: Uint8Array): PageHeader {
  const v = view(page)
  return { kind: page[4]!, reserved: page[5]!, count: v.getUint16(6, true), seq: u64(v, 8), page: v.getUint32(16, true), next: v.getUint32(20, true) }
}

/** Does the stored CRC match bytes 4..4096? */
export function crcMatches(page: Uint8Array): boolean {
  return page.length === PAGE_BYTES && view(page).getUint32(0, true) === crc32c(page, 0, 4, PAGE_BYTES)
}

/**
 * The checks every read makes: length, CRC, kind, own page number. Returns the header.
 * `kinds` lists the acceptable kinds.
 */
export function checkHeader(page: Uint8Array, pageNo: number, kinds: readonly number[]): PageHeader {
  if (page.length !== PAGE_BYTES) throw new PageDefect(pageNo, `short page (${page.length} of ${PAGE_BYTES} bytes; the file ends early)`)
  if (!crcMatches(page)) throw new PageDefect(pageNo, 'checksum mismatch')
  const h = readHeader(page)
  if (!kinds.includes(h.kind)) throw new PageDefect(pageNo, `kind ${h.kind}, expected ${kinds.map(kindName).join(' or ')}`)
  if (h.page !== pageNo) throw new PageDefect(pageNo, `holds page number ${h.page} (a misplaced write)`)
  return h
}

/** Human name of a page kind, for messages. */
export function kindName(kind: number): string {
  switch (kind) {
    case KIND_META:
      return 'meta'
    case KIND_LEAF:
      return 'leaf'
    case KIND_BRANCH:
      return 'branch'
    case KIND_OVERFLOW:
      return 'overflow'
    case KIND_FREE:
      return 'free-list'
    default:
      return `unknown(${kind})`
  }
}

// ---------------------------------------------------------------------------------------------
// Meta slots

/** A meta slot's page: header (kind 1, count 0, next 0, page = seq mod 2) and the fields. */
export function encodeMeta(meta: PageMeta): Uint8Array {
  const page = new Uint8Array(PAGE_BYTES)
  const v = view(page)
  page.set(META_MAGIC, 24)
  v.setUint32(32, PAGE_FORMAT_VERSION, true)
  v.setUint32(36, PAGE_BYTES, true)
  v.setBigUint64(40, BigInt(meta.checkpointLsn), true)
  v.setUint32(48, meta.catalogRoot, true)
  v.setUint32(52, meta.pageCount, true)
  v.setUint32(56, meta.freeHead, true)
  v.setUint32(60, meta.freeCount, true)
  v.setBigUint64(64, BigInt(meta.records), true)
  return sealPage(page, KIND_META, 0, meta.seq, meta.seq % 2, 0)
}

/** What a meta slot holds. */
export type Slot =
  | { state: 'valid'; meta: PageMeta }
  | { state: 'invalid'; why: string }
  /** Passes CRC, kind, page number, parity and magic, but a newer format version. */
  | { state: 'newer'; seq: number; version: number }

/**
 * Decode slot `slot` (0 or 1) per "A slot is valid when …". `page` may be short (a file shorter
 * than two pages): that slot is invalid.
 */
export function decodeMeta(page: Uint8Array, slot: number): Slot {
  if (page.length !== PAGE_BYTES) return { state: 'invalid', why: 'short' }
  if (!crcMatches(page)) return { state: 'invalid', why: 'checksum mismatch' }
  const h = readHeader(page)
  if (h.kind !== KIND_META) return { state: 'invalid', why: `kind ${h.kind}` }
  if (h.page !== slot) return { state: 'invalid', why: `page number ${h.page}` }
  if (!Number.isSafeInteger(h.seq) || h.seq % 2 !== slot) return { state: 'invalid', why: `seq ${h.seq} in slot ${slot}` }
  for (let i = 0; i < META_MAGIC.length; i++) if (page[24 + i] !== META_MAGIC[i]) return { state: 'invalid', why: 'bad magic' }
  const v = view(page)
  const version = v.getUint32(32, true)
  if (version > PAGE_FORMAT_VERSION) return { state: 'newer', seq: h.seq, version }
  if (version !== PAGE_FORMAT_VERSION) return { state: 'invalid', why: `format version ${version}` }
  if (v.getUint32(36, true) !== PAGE_BYTES) return { state: 'invalid', why: `page size ${v.getUint32(36, true)}` }
  const checkpointLsn = u64(v, 40)
  const records = u64(v, 64)
  if (Number.isNaN(checkpointLsn) || Number.isNaN(records)) return { state: 'invalid', why: 'u64 field beyond 2^53' }
  return {
    state: 'valid',
    meta: {
      seq: h.seq,
      checkpointLsn,
      catalogRoot: v.getUint32(48, true),
      pageCount: v.getUint32(52, true),
      freeHead: v.getUint32(56, true),
      freeCount: v.getUint32(60, true),
      records,
    },
  }
}

/**
 * Choose the meta from the two slots. Any slot that would be valid but for a newer format version
 * is KESTREL_FORMAT_VERSION — FORMAT.md says both "valid requires version 1" and "a newer version
 * is KESTREL_FORMAT_VERSION"; the simplest consistent reading is to refuse such a file outright.
 * Otherwise the valid slot with the higher seq wins; none → undefined (no checkpoint).
 */
export function chooseMeta(slots: readonly Slot[], path: string): PageMeta | undefined {
  let best: PageMeta | undefined
  for (const s of slots) {
    if (s.state === 'newer') {
      throw new KestrelError(
        'KESTREL_FORMAT_VERSION',
        `${path} uses page store format version ${s.version}; this kestreldb reads version ${PAGE_FORMAT_VERSION}: upgrade kestreldb`,
      )
    }
    if (s.state === 'valid' && (best === undefined || s.meta.seq > best.seq)) best = s.meta
  }
  return best
}

// ---------------------------------------------------------------------------------------------
// Leaf pages

/** One decoded leaf entry. `inline` is set for inline values, `overflow` (first page) otherwise. */
export interface LeafEntry {
  key: Uint8Array
  commitId: number
  /** Value length in bytes (authoritative for overflow chains). */
  length: number
  inline: Uint8Array | undefined
  overflow: number
}

/** Bytes a leaf entry takes: 15 + k + (inline ? v : 4). */
export function leafEntryBytes(keyLength: number, valueLength: number): number {
  return LEAF_ENTRY_FIXED_BYTES + keyLength + (valueLength <= INLINE_VALUE_BYTES_MAX ? valueLength : 4)
}

/** Bytes a branch entry takes (pass 0 for a page's first entry, whose key is stored empty). */
export function branchEntryBytes(keyLength: number): number {
  return BRANCH_ENTRY_FIXED_BYTES + keyLength
}

/** Encode a leaf page. The caller packed `entries` so they fit (see `pack`). */
export function encodeLeaf(entries: readonly LeafEntry[], seq: number, pageNo: number): Uint8Array {
  const page = new Uint8Array(PAGE_BYTES)
  const v = view(page)
  let at = HEADER_BYTES
  for (const e of entries) {
    if (at + leafEntryBytes(e.key.length, e.length) > PAGE_BYTES) throw new Error(`leaf page ${pageNo} overfull (packing bug)`)
    v.setUint16(at, e.key.length, true)
    page.set(e.key, at + 2)
    at += 2 + e.key.length
    v.setBigUint64(at, BigInt(e.commitId), true)
    v.setUint32(at + 9, e.length, true)
    if (e.length <= INLINE_VALUE_BYTES_MAX) {
      page[at + 8] = 0
      page.set(e.inline!, at + 13)
      at += 13 + e.length
    } else {
      page[at + 8] = 1
      v.setUint32(at + 13, e.overflow, true)
      at += 17
    }
  }
  return sealPage(page, KIND_LEAF, entries.length, seq, pageNo, 0)
}

/**
 * Decode a checked leaf page. Checks that every entry lies within the page, key lengths, value
 * kinds and the inline rule, and that keys strictly increase. Returns the entries (views into
 * `page`) and the offset after the last one.
 */
export function decodeLeaf(page: Uint8Array, pageNo: number, count: number): { entries: LeafEntry[]; end: number } {
  const v = view(page)
  const entries: LeafEntry[] = []
  let at = HEADER_BYTES
  // Bounded by `count` (u16).
  for (let i = 0; i < count; i++) {
    if (at + 2 > PAGE_BYTES) throw new PageDefect(pageNo, `leaf entry ${i} runs past the page`)
    const k = v.getUint16(at, true)
    if (k > KEY_BYTES_MAX) throw new PageDefect(pageNo, `leaf entry ${i} key length ${k} > ${KEY_BYTES_MAX}`)
    if (at + 2 + k + 13 > PAGE_BYTES) throw new PageDefect(pageNo, `leaf entry ${i} runs past the page`)
    const key = page.subarray(at + 2, at + 2 + k)
    at += 2 + k
    const commitId = u64(v, at)
    const kind = page[at + 8]!
    const length = v.getUint32(at + 9, true)
    if (Number.isNaN(commitId)) throw new PageDefect(pageNo, `leaf entry ${i} commit id beyond 2^53`)
    let inline: Uint8Array | undefined
    let overflow = 0
    if (kind === 0) {
      if (length > INLINE_VALUE_BYTES_MAX) throw new PageDefect(pageNo, `leaf entry ${i} inline value of ${length} bytes > ${INLINE_VALUE_BYTES_MAX}`)
      if (at + 13 + length > PAGE_BYTES) throw new PageDefect(pageNo, `leaf entry ${i} runs past the page`)
      inline = page.subarray(at + 13, at + 13 + length)
      at += 13 + length
    } else if (kind === 1) {
      if (length <= INLINE_VALUE_BYTES_MAX) throw new PageDefect(pageNo, `leaf entry ${i} overflow value of only ${length} bytes`)
      if (length > STORED_VALUE_BYTES_MAX) throw new PageDefect(pageNo, `leaf entry ${i} value of ${length} bytes > ${STORED_VALUE_BYTES_MAX}`)
      if (at + 17 > PAGE_BYTES) throw new PageDefect(pageNo, `leaf entry ${i} runs past the page`)
      overflow = v.getUint32(at + 13, true)
      at += 17
    } else {
      throw new PageDefect(pageNo, `leaf entry ${i} value kind ${kind}`)
    }
    if (i > 0 && compareBytes(entries[i - 1]!.key, key) >= 0) throw new PageDefect(pageNo, `leaf keys out of order at entry ${i}`)
    entries.push({ key, commitId, length, inline, overflow })
  }
  return { entries, end: at }
}

// ---------------------------------------------------------------------------------------------
// Branch pages

/**
 * Encode a branch page: entry 0's key is stored empty (it stands for "below everything"), the
 * other keys are the smallest keys of their children's subtrees.
 */
export function encodeBranch(keys: readonly Uint8Array[], children: readonly number[], seq: number, pageNo: number): Uint8Array {
  const page = new Uint8Array(PAGE_BYTES)
  const v = view(page)
  let at = HEADER_BYTES
  for (let i = 0; i < keys.length; i++) {
    const key = i === 0 ? EMPTY : keys[i]!
    if (at + branchEntryBytes(key.length) > PAGE_BYTES) throw new Error(`branch page ${pageNo} overfull (packing bug)`)
    v.setUint16(at, key.length, true)
    page.set(key, at + 2)
    v.setUint32(at + 2 + key.length, children[i]!, true)
    at += branchEntryBytes(key.length)
  }
  return sealPage(page, KIND_BRANCH, keys.length, seq, pageNo, 0)
}

const EMPTY = new Uint8Array(0)

/**
 * Decode a checked branch page: ≥ 1 entry, entry 0's key empty, keys ≥ 1 strictly increasing,
 * children non-zero. Keys are views into `page`.
 */
export function decodeBranch(page: Uint8Array, pageNo: number, count: number): { keys: Uint8Array[]; children: number[]; end: number } {
  if (count < 1) throw new PageDefect(pageNo, 'branch page with no entries')
  const v = view(page)
  const keys: Uint8Array[] = []
  const children: number[] = []
  let at = HEADER_BYTES
  // Bounded by `count` (u16).
  for (let i = 0; i < count; i++) {
    if (at + 2 > PAGE_BYTES) throw new PageDefect(pageNo, `branch entry ${i} runs past the page`)
    const k = v.getUint16(at, true)
    if (k > KEY_BYTES_MAX) throw new PageDefect(pageNo, `branch entry ${i} key length ${k} > ${KEY_BYTES_MAX}`)
    if (at + branchEntryBytes(k) > PAGE_BYTES) throw new PageDefect(pageNo, `branch entry ${i} runs past the page`)
    if (i === 0 && k !== 0) throw new PageDefect(pageNo, 'branch entry 0 has a non-empty key')
    const key = page.subarray(at + 2, at + 2 + k)
    if (i > 1 && compareBytes(keys[i - 1]!, key) >= 0) throw new PageDefect(pageNo, `branch keys out of order at entry ${i}`)
    const child = v.getUint32(at + 2 + k, true)
    if (child < 2) throw new PageDefect(pageNo, `branch entry ${i} points to page ${child}`)
    keys.push(key)
    children.push(child)
    at += branchEntryBytes(k)
  }
  return { keys, children, end: at }
}

// ---------------------------------------------------------------------------------------------
// Overflow and free-list pages

/** An overflow page holding `data` (≤ 4072 bytes), linked to `next` (0 = last). */
export function encodeOverflow(data: Uint8Array, seq: number, pageNo: number, next: number): Uint8Array {
  const page = new Uint8Array(PAGE_BYTES)
  page.set(data, HEADER_BYTES)
  return sealPage(page, KIND_OVERFLOW, data.length, seq, pageNo, next)
}

/** A free-list page listing `pages` (≤ 1018), linked to `next` (0 = last). */
export function encodeFree(pages: readonly number[], seq: number, pageNo: number, next: number): Uint8Array {
  const page = new Uint8Array(PAGE_BYTES)
  const v = view(page)
  for (let i = 0; i < pages.length; i++) v.setUint32(HEADER_BYTES + 4 * i, pages[i]!, true)
  return sealPage(page, KIND_FREE, pages.length, seq, pageNo, next)
}

/** The page numbers a checked free-list page lists. */
export function decodeFree(page: Uint8Array, pageNo: number, count: number): number[] {
  if (count > FREE_NUMBERS_PER_PAGE) throw new PageDefect(pageNo, `free-list page lists ${count} pages > ${FREE_NUMBERS_PER_PAGE}`)
  const v = view(page)
  const out: number[] = []
  for (let i = 0; i < count; i++) out.push(v.getUint32(HEADER_BYTES + 4 * i, true))
  return out
}

// ---------------------------------------------------------------------------------------------
// Catalog values

/** The 16-byte catalog value: u32 root, u32 0, u64 live records. */
export function encodeCatalogValue(root: number, records: number): Uint8Array {
  const out = new Uint8Array(CATALOG_VALUE_BYTES)
  const v = view(out)
  v.setUint32(0, root, true)
  v.setBigUint64(8, BigInt(records), true)
  return out
}

/** Decode a catalog value; throws PageDefect (naming the catalog leaf) when malformed. */
export function decodeCatalogValue(e: LeafEntry, leafPage: number): { root: number; records: number } {
  if (e.inline === undefined || e.length !== CATALOG_VALUE_BYTES)
    throw new PageDefect(leafPage, `catalog entry value is not ${CATALOG_VALUE_BYTES} inline bytes`)
  const v = view(e.inline)
  const root = v.getUint32(0, true)
  const records = u64(v, 8)
  if (root < 2 || v.getUint32(4, true) !== 0 || !(records >= 1)) throw new PageDefect(leafPage, `catalog entry is malformed (root ${root}, records ${records})`)
  return { root, records }
}

/**
 * Checkpoint step 4 (docs/FORMAT.md "Writing checkpoint seq + 1"): fill pages greedily in order, starting a new page when the next entry does not fit the
 * 4072-byte body. `size(e, first)` is the entry's size as the first entry of a page or not.
 */
export function pack<T>(entries: readonly T[], size: (e: T, first: boolean) => number): T[][] {
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

/** Read page `page` of an open page file (fewer bytes if the file ends inside it). */
export function readPageBytes(fd: number, page: number): Uint8Array {
  const buf = new Uint8Array(PAGE_BYTES)
  let got = 0
  // Bounded: each iteration reads ≥ 1 byte or stops at end of file.
  while (got < PAGE_BYTES) {
    const n = readSync(fd, buf, got, PAGE_BYTES - got, page * PAGE_BYTES + got)
    if (n === 0) break
    got += n
  }
  return got === PAGE_BYTES ? buf : buf.subarray(0, got)
}

/** The meta of an open page file: its newest valid slot (see chooseMeta), undefined when none is. */
export function readMeta(fd: number, path: string): PageMeta | undefined {
  return chooseMeta(
    [0, 1].map((slot) => decodeMeta(readPageBytes(fd, slot), slot)),
    path,
  )
}
