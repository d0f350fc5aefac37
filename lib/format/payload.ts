/**
 * The `COMMIT` record payload (docs/FORMAT.md): a collection table, then put/delete ops.
 * Built here for both engines; the ts engine also parses it for recovery (the native engine
 * parses it with its twin, `format/payload.rs`).
 */
import { KestrelError } from '../errors.js'
import { transientBytes } from '../codec/bytes.js'
import { KEY_BYTES_MAX } from '../codec/key.js'
import { VALUE_BYTES_MAX } from '../codec/value.js'
import { ENVELOPE_OVERHEAD_BYTES_MAX } from './envelope.js'

export const OP_PUT = 1
export const OP_DELETE = 2
/** Merge: append the items of a MessagePack array to the key's list. */
export const OP_APPEND = 3
/** Merge: add an f64 (8 bytes LE) to the key's number. */
export const OP_INCREMENT = 4

/** The op kinds of a COMMIT payload. */
export type OpKind = typeof OP_PUT | typeof OP_DELETE | typeof OP_APPEND | typeof OP_INCREMENT

/** Longest collection name, in UTF-8 bytes. */
export const COLLECTION_NAME_BYTES_MAX = 255
/** Most ops in one commit. */
export const COMMIT_OPS_MAX = 1 << 24
/** Most collections one commit may touch. */
const COLLECTIONS_PER_COMMIT_MAX = 0xffff

/** One write of a commit. `value` is undefined exactly for `OP_DELETE`. */
export interface WriteOp {
  kind: OpKind
  collection: string
  key: Uint8Array
  value: Uint8Array | undefined
}

/** Is this op a merge (append/increment), which never conflicts with other merges? */
export const isMerge = (kind: OpKind): boolean => kind === OP_APPEND || kind === OP_INCREMENT

function checkOp(kind: number, valueLength: number | undefined): string | undefined {
  if (kind === OP_DELETE) return valueLength === undefined ? undefined : 'a delete carries no value'
  if (kind !== OP_PUT && kind !== OP_APPEND && kind !== OP_INCREMENT) return `unknown op ${kind}`
  if (valueLength === undefined) return `op ${kind} needs a value`
  // A PUT may carry an index envelope (docs/FORMAT.md): up to 65,538 bytes on top of the value.
  const max = kind === OP_PUT ? VALUE_BYTES_MAX + ENVELOPE_OVERHEAD_BYTES_MAX : VALUE_BYTES_MAX
  if (kind === OP_INCREMENT ? valueLength !== 8 : valueLength > max) return `value length ${valueLength} out of range for op ${kind}`
  return undefined
}

const utf8 = new TextEncoder()
/** Collection names are few and reused on every commit: encode each once (bounded). */
const nameCache = new Map<string, Uint8Array>()
const NAME_CACHE_MAX = 4096

function nameBytesOf(name: string): Uint8Array {
  let b = nameCache.get(name)
  if (!b) {
    b = utf8.encode(name)
    if (nameCache.size < NAME_CACHE_MAX) nameCache.set(name, b)
  }
  return b
}
const utf8Decoder = new TextDecoder('utf-8', { fatal: true })

/** Encode a commit's ops (at most one per key, already deduplicated by the transaction). */
export function encodeCommit(ops: readonly WriteOp[]): Uint8Array {
  if (ops.length === 0 || ops.length > COMMIT_OPS_MAX) {
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', `a commit holds 1 to ${COMMIT_OPS_MAX} writes, not ${ops.length}; split the transaction`)
  }
  // Hot path (one commit per transaction): a plain array for the few collections of a commit,
  // little-endian integers written by hand, one pooled allocation (the engines copy the payload,
  // or the values out of it, before they keep anything).
  const names: string[] = []
  const nameBytes: Uint8Array[] = []
  const indexes: number[] = new Array(ops.length)
  let size = 2 + 4
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!
    let ci = names.length === 1 && names[0] === op.collection ? 0 : names.indexOf(op.collection)
    if (ci < 0) {
      if (names.length >= COLLECTIONS_PER_COMMIT_MAX) {
        throw new KestrelError('KESTREL_INVALID_ARGUMENT', `a commit may touch at most ${COLLECTIONS_PER_COMMIT_MAX} collections; split the transaction`)
      }
      ci = names.length
      names.push(op.collection)
      const b = nameBytesOf(op.collection)
      nameBytes.push(b)
      size += 2 + b.length
    }
    indexes[i] = ci
    const bad = checkOp(op.kind, op.value?.length)
    if (bad) throw new KestrelError('KESTREL_INVALID_ARGUMENT', `cannot encode commit: ${bad}`)
    size += 1 + 2 + 4 + op.key.length + (op.value ? 4 + op.value.length : 0)
  }
  const out = transientBytes(size)
  let pos = 0
  const u16 = (v: number): void => {
    out[pos++] = v & 0xff
    out[pos++] = v >>> 8
  }
  const u32 = (v: number): void => {
    out[pos++] = v & 0xff
    out[pos++] = (v >>> 8) & 0xff
    out[pos++] = (v >>> 16) & 0xff
    out[pos++] = v >>> 24
  }
  u16(nameBytes.length)
  for (const b of nameBytes) {
    u16(b.length)
    out.set(b, pos)
    pos += b.length
  }
  u32(ops.length)
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!
    out[pos++] = op.kind
    u16(indexes[i]!)
    u32(op.key.length)
    out.set(op.key, pos)
    pos += op.key.length
    if (op.value) {
      u32(op.value.length)
      out.set(op.value, pos)
      pos += op.value.length
    }
  }
  if (pos !== size) throw new Error(`encodeCommit: wrote ${pos} of ${size} bytes`) // assertion
  return out
}

/**
 * Parse and validate a commit payload. Throws a plain `Error` describing the first problem; the
 * caller decides whether that is bad input (`KESTREL_INVALID_ARGUMENT`) or `KESTREL_CORRUPT`.
 */
export function decodeCommit(payload: Uint8Array): WriteOp[] {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  let pos = 0
  const need = (n: number, what: string): void => {
    if (pos + n > payload.length) throw new Error(`commit payload truncated reading ${what} at byte ${pos}`)
  }
  need(2, 'collection count')
  const count = view.getUint16(pos, true)
  pos += 2
  if (count === 0) throw new Error('commit payload has no collections')
  const names: string[] = []
  for (let i = 0; i < count; i++) {
    need(2, 'collection name length')
    const len = view.getUint16(pos, true)
    pos += 2
    if (len === 0 || len > COLLECTION_NAME_BYTES_MAX) throw new Error(`collection name length ${len} out of range`)
    need(len, 'collection name')
    names.push(utf8Decoder.decode(payload.subarray(pos, pos + len)))
    pos += len
  }
  need(4, 'op count')
  const opCount = view.getUint32(pos, true)
  pos += 4
  if (opCount === 0 || opCount > COMMIT_OPS_MAX) throw new Error(`op count ${opCount} out of range`)
  const ops: WriteOp[] = []
  for (let i = 0; i < opCount; i++) {
    need(7, 'op header')
    const kind = payload[pos]! as OpKind
    pos += 1
    const ci = view.getUint16(pos, true)
    pos += 2
    const keyLen = view.getUint32(pos, true)
    pos += 4
    if (kind < OP_PUT || kind > OP_INCREMENT) throw new Error(`unknown op ${kind}`)
    const collection = names[ci]
    if (collection === undefined) throw new Error(`collection index ${ci} out of range`)
    if (keyLen === 0 || keyLen > KEY_BYTES_MAX) throw new Error(`key length ${keyLen} out of range`)
    need(keyLen, 'key')
    const key = payload.subarray(pos, pos + keyLen)
    pos += keyLen
    let value: Uint8Array | undefined
    if (kind !== OP_DELETE) {
      need(4, 'value length')
      const valueLen = view.getUint32(pos, true)
      pos += 4
      const bad = checkOp(kind, valueLen)
      if (bad) throw new Error(bad)
      need(valueLen, 'value')
      value = payload.subarray(pos, pos + valueLen)
      pos += valueLen
    }
    ops.push({ kind, collection, key, value })
  }
  if (pos !== payload.length) throw new Error(`commit payload has ${payload.length - pos} trailing bytes`)
  return ops
}
