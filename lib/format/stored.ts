/**
 * Rules for stored values (docs/FORMAT.md "Index envelope") shared by the ts engine's store,
 * recovery and page store and by the page-file check. The Rust twin is `format/envelope.rs`
 * (`validate`, `keys`): both engines refuse the same bytes and derive the same index keys.
 */
import { VALUE_BYTES_MAX } from '../codec/value.js'
import { ENVELOPE_TAG, envelopeKeys, type IndexKey } from './envelope.js'
import { OP_PUT, type WriteOp } from './payload.js'

/**
 * What is wrong with a stored value of a `keyBytes`-byte key, or undefined: a plain value is at
 * most 64 MiB; a value starting with 0xC1 must be a well-formed envelope whose MessagePack part
 * is at most 64 MiB.
 */
export function storedValueProblem(value: Uint8Array, keyBytes: number): string | undefined {
  if (value[0] !== ENVELOPE_TAG) return value.length > VALUE_BYTES_MAX ? `value length ${value.length} out of range` : undefined
  const keys = storedKeys(value, keyBytes)
  return typeof keys === 'string' ? keys : undefined
}

/**
 * The index keys of a stored value (none for a plain one), or what is wrong with its envelope:
 * `envelopeKeys` plus the bound on the MessagePack part (as the Rust twin's `envelope::keys`).
 */
export function storedKeys(value: Uint8Array, keyBytes: number): IndexKey[] | string {
  if (value[0] !== ENVELOPE_TAG) return []
  const keys = envelopeKeys(value, keyBytes)
  if (typeof keys === 'string') return keys
  const b = value[1]! | (value[2]! << 8)
  if (value.length - 3 - b > VALUE_BYTES_MAX) return `value length ${value.length - 3 - b} out of range inside an index envelope`
  return keys
}

/**
 * The index keys of a stored value as the page store derives them (checkpoint step 0): those of a
 * well-formed envelope, else none. The engines never store a malformed envelope (commits are
 * checked), so this only decides what the page store does with bytes given to it directly: they
 * are opaque, as a plain value's are (the golden page-store scenario holds such values).
 * `head` may be just the value's first bytes (envelope header and block): `length` is the whole
 * value's.
 */
export function indexKeys(head: Uint8Array, length: number, keyBytes: number): IndexKey[] {
  if (head[0] !== ENVELOPE_TAG || head.length < 3) return []
  const b = head[1]! | (head[2]! << 8)
  if (length - 3 - b > VALUE_BYTES_MAX) return []
  const keys = envelopeKeys(head, keyBytes)
  return typeof keys === 'string' ? [] : keys
}

/** The first problem with the PUT values of a commit's ops (see {@link storedValueProblem}), naming the key. */
export function checkStoredValues(ops: readonly WriteOp[]): string | undefined {
  for (const op of ops) {
    if (op.kind !== OP_PUT || op.value === undefined) continue
    const bad = storedValueProblem(op.value, op.key.length)
    if (bad !== undefined) return `the PUT value of key ${Buffer.from(op.key).toString('hex')} in collection ${JSON.stringify(op.collection)}: ${bad}`
  }
  return undefined
}
