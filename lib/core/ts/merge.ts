/**
 * Merge operators applied at install time, on MessagePack bytes (docs/FORMAT.md "Merge ops").
 * The Rust twin is `crates/kestrel-core/src/merge.rs`; both produce the same bytes. A base that is
 * an index envelope merges into its MessagePack part, and the result is plain (docs/FORMAT.md
 * "Index envelope").
 */
import { envelopeValue } from '../../format/envelope.js'

/** Parse a MessagePack array header: [element count, header length], or undefined. */
export function arrayHeader(bytes: Uint8Array): [number, number] | undefined {
  const b = bytes[0]
  if (b === undefined) return undefined
  if (b >= 0x90 && b <= 0x9f) return [b & 0x0f, 1]
  if (b === 0xdc && bytes.length >= 3) return [(bytes[1]! << 8) | bytes[2]!, 3]
  if (b === 0xdd && bytes.length >= 5) return [((bytes[1]! << 24) >>> 0) + ((bytes[2]! << 16) | (bytes[3]! << 8) | bytes[4]!), 5]
  return undefined
}

function arrayHeaderBytes(n: number): Uint8Array {
  if (n < 16) return Uint8Array.of(0x90 | n)
  if (n <= 0xffff) return Uint8Array.of(0xdc, n >>> 8, n & 0xff)
  return Uint8Array.of(0xdd, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff)
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0))
  let pos = 0
  for (const p of parts) {
    out.set(p, pos)
    pos += p.length
  }
  return out
}

/**
 * APPEND: `items` is a MessagePack array; the result is the base array followed by the items.
 * A missing base is the empty array; a base that is not an array becomes its first element.
 */
export function mergeAppend(stored: Uint8Array | undefined, items: Uint8Array): Uint8Array {
  const base = stored === undefined ? undefined : envelopeValue(stored)
  const [nItems, itemsHeader] = arrayHeader(items) ?? [0, items.length]
  const body = items.subarray(itemsHeader)
  if (base === undefined) return concat([arrayHeaderBytes(nItems), body])
  const h = arrayHeader(base)
  if (h) return concat([arrayHeaderBytes(h[0] + nItems), base.subarray(h[1]), body])
  return concat([arrayHeaderBytes(1 + nItems), base, body])
}

/** Read a MessagePack number (any int or float format); undefined for anything else. */
export function msgpackNumber(bytes: Uint8Array): number | undefined {
  const b = bytes[0]
  if (b === undefined) return undefined
  if (b <= 0x7f) return b
  if (b >= 0xe0) return b - 256
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const need = (n: number): boolean => bytes.length >= 1 + n
  switch (b) {
    case 0xcc:
      return need(1) ? view.getUint8(1) : undefined
    case 0xcd:
      return need(2) ? view.getUint16(1) : undefined
    case 0xce:
      return need(4) ? view.getUint32(1) : undefined
    case 0xcf:
      return need(8) ? Number(view.getBigUint64(1)) : undefined
    case 0xd0:
      return need(1) ? view.getInt8(1) : undefined
    case 0xd1:
      return need(2) ? view.getInt16(1) : undefined
    case 0xd2:
      return need(4) ? view.getInt32(1) : undefined
    case 0xd3:
      return need(8) ? Number(view.getBigInt64(1)) : undefined
    case 0xca:
      return need(4) ? view.getFloat32(1) : undefined
    case 0xcb:
      return need(8) ? view.getFloat64(1) : undefined
    default:
      return undefined
  }
}

/** INCREMENT: `delta` is 8 bytes f64 LE; the result is MessagePack float64 of base + delta. */
export function mergeIncrement(stored: Uint8Array | undefined, delta: Uint8Array): Uint8Array {
  const base = stored === undefined ? undefined : envelopeValue(stored)
  const d = new DataView(delta.buffer, delta.byteOffset, 8).getFloat64(0, true)
  const sum = (base === undefined ? undefined : msgpackNumber(base)) ?? 0
  const out = new Uint8Array(9)
  out[0] = 0xcb
  new DataView(out.buffer).setFloat64(1, sum + d)
  return out
}
