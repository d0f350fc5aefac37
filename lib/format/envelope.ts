/**
 * The index envelope (docs/FORMAT.md "Index envelope"): a stored value that carries the encoded
 * index keys of its version, `0xC1 ‖ u16 b ‖ block ‖ MessagePack value`. Built by the transaction
 * layer; parsed by the ts engine. The Rust twin (`format/envelope.rs`) refuses the same bytes.
 */
import { KEY_BYTES_MAX } from '../codec/key.js'
import { VALUE_BYTES_MAX } from '../codec/value.js'

/** The first byte of an envelope: a byte MessagePack never uses. */
export const ENVELOPE_TAG = 0xc1
/** Largest envelope block (the u16 length field). */
export const ENVELOPE_BLOCK_BYTES_MAX = 0xffff
/** Bytes an envelope adds to a MessagePack value at most: tag, block length, block. */
export const ENVELOPE_OVERHEAD_BYTES_MAX = 3 + ENVELOPE_BLOCK_BYTES_MAX
/** Longest index name, in UTF-8 bytes. */
export const INDEX_NAME_BYTES_MAX = 255
/** Longest stored value: a 64 MiB MessagePack value in an envelope with the largest block. */
export const STORED_VALUE_BYTES_MAX = VALUE_BYTES_MAX + ENVELOPE_OVERHEAD_BYTES_MAX

/** One (index name, encoded index key) pair of a version. */
export interface IndexKey {
  index: string
  key: Uint8Array
}

const utf8 = new TextEncoder()
const utf8Decoder = new TextDecoder('utf-8', { fatal: true })
const nameBytes = new Map<string, Uint8Array>()

function nameOf(index: string): Uint8Array {
  let b = nameBytes.get(index)
  if (!b) {
    b = utf8.encode(index)
    if (nameBytes.size < 4096) nameBytes.set(index, b)
  }
  return b
}

/** Bytes the block of these keys takes. */
export function envelopeBlockBytes(keys: readonly IndexKey[]): number {
  let n = 0
  for (const k of keys) n += 1 + nameOf(k.index).length + 2 + k.key.length
  return n
}

/**
 * Wrap `value` (MessagePack) with its index keys; a version without index keys is stored plain.
 * The caller has checked names, key lengths and the block size.
 */
export function encodeEnvelope(value: Uint8Array, keys: readonly IndexKey[]): Uint8Array {
  if (keys.length === 0) return value
  const b = envelopeBlockBytes(keys)
  if (b > ENVELOPE_BLOCK_BYTES_MAX) throw new Error(`envelope block of ${b} bytes`) // assertion: checked by the caller
  const out = new Uint8Array(3 + b + value.length)
  out[0] = ENVELOPE_TAG
  out[1] = b & 0xff
  out[2] = b >>> 8
  let pos = 3
  for (const k of keys) {
    const name = nameOf(k.index)
    out[pos++] = name.length
    out.set(name, pos)
    pos += name.length
    out[pos++] = k.key.length & 0xff
    out[pos++] = k.key.length >>> 8
    out.set(k.key, pos)
    pos += k.key.length
  }
  out.set(value, pos)
  return out
}

/** Is this stored value an envelope? */
export function isEnvelope(stored: Uint8Array): boolean {
  return stored.length > 0 && stored[0] === ENVELOPE_TAG
}

/** The MessagePack part of a stored value (a view, no copy). */
export function envelopeValue(stored: Uint8Array): Uint8Array {
  if (!isEnvelope(stored)) return stored
  const b = stored[1]! | (stored[2]! << 8)
  return stored.subarray(3 + b)
}

/**
 * The index keys of a stored value (empty for a plain value), or a string saying what is wrong
 * with the envelope. `primaryKeyBytes` bounds each key so that its index-tree entry fits.
 */
export function envelopeKeys(stored: Uint8Array, primaryKeyBytes: number): IndexKey[] | string {
  if (!isEnvelope(stored)) return []
  if (stored.length < 3) return 'index envelope shorter than its header'
  const b = stored[1]! | (stored[2]! << 8)
  if (b === 0 || 3 + b > stored.length) return `index envelope block length ${b} out of range`
  const out: IndexKey[] = []
  const end = 3 + b
  let pos = 3
  // Bounded by the block length: every entry takes at least 4 bytes.
  while (pos < end) {
    const m = stored[pos++]!
    if (m === 0 || pos + m > end) return `index name length ${m} out of range`
    const nameRaw = stored.subarray(pos, pos + m)
    pos += m
    if (nameRaw.includes(0)) return 'index name contains a 0x00 byte'
    let index: string
    try {
      index = utf8Decoder.decode(nameRaw)
    } catch {
      return 'index name is not UTF-8'
    }
    if (pos + 2 > end) return 'index envelope truncated at a key length'
    const k = stored[pos]! | (stored[pos + 1]! << 8)
    pos += 2
    if (k === 0 || k > KEY_BYTES_MAX || pos + k > end) return `index key length ${k} out of range`
    if (k + primaryKeyBytes + 2 > KEY_BYTES_MAX) return `index key of ${k} bytes with a ${primaryKeyBytes}-byte primary key exceeds ${KEY_BYTES_MAX - 2} bytes`
    if (out.some((e) => e.index === index)) return `index ${index} appears twice in one envelope`
    out.push({ index, key: stored.subarray(pos, pos + k) })
    pos += k
  }
  if (stored.length - end > VALUE_BYTES_MAX) return `value length ${stored.length - end} out of range inside an index envelope`
  return out
}

/** The page-store tree of index `index` of `collection`. */
export function indexTreeName(collection: string, index: string): string {
  return `${collection}\u0000${index}`
}

/** The index-tree key of a pair: `ik ‖ pk ‖ u16 BE |pk|`. */
export function indexEntryKey(indexKey: Uint8Array, primaryKey: Uint8Array): Uint8Array {
  const out = new Uint8Array(indexKey.length + primaryKey.length + 2)
  out.set(indexKey, 0)
  out.set(primaryKey, indexKey.length)
  out[out.length - 2] = primaryKey.length >>> 8
  out[out.length - 1] = primaryKey.length & 0xff
  return out
}

/** Split an index-tree key into (index key, primary key). */
export function splitIndexEntry(entry: Uint8Array): { indexKey: Uint8Array; primaryKey: Uint8Array } {
  const n = (entry[entry.length - 2]! << 8) | entry[entry.length - 1]!
  const pkStart = entry.length - 2 - n
  return { indexKey: entry.subarray(0, pkStart), primaryKey: entry.subarray(pkStart, entry.length - 2) }
}
