/** Small helpers over byte arrays shared by the codecs and the engines. */

/** Unsigned lexicographic comparison: <0, 0, >0 like `Array.prototype.sort` wants. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!
    if (d !== 0) return d
  }
  return a.length - b.length
}

/**
 * A string whose UTF-16 order equals the bytes' unsigned order (each char is one byte, 0..255),
 * usable as a Map key and comparable with `<`.
 */
export function bytesToOrderedString(bytes: Uint8Array): string {
  // Short keys are the common case: building the string directly avoids a Buffer view.
  if (bytes.length <= 64) return String.fromCharCode.apply(null, bytes as unknown as number[])
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1')
}

/** Up to this many bytes, V8 keeps a typed array's bytes on its own heap: allocating one is cheap. */
const ON_HEAP_BYTES_MAX = 64

/**
 * `n` uninitialised bytes, to be written whole, for an array that lives about as long as a
 * transaction (an encoded key or value, a commit payload). Past 64 bytes a fresh ArrayBuffer
 * costs 0.8–1.5 µs here (an off-heap store, registered with V8's sweeper); those come from
 * Node's shared pool instead (~0.2 µs). What is kept for long (the engines' stores) is copied
 * out first: a slice pins its whole 8 KiB slab.
 */
export function transientBytes(n: number): Uint8Array {
  if (n <= ON_HEAP_BYTES_MAX) return new Uint8Array(n)
  const pooled = Buffer.allocUnsafe(n)
  // A plain Uint8Array view: Buffer's slice() would be a view where Uint8Array's is a copy.
  return new Uint8Array(pooled.buffer, pooled.byteOffset, n)
}

/** Inverse of {@link bytesToOrderedString}. */
export function orderedStringToBytes(s: string): Uint8Array {
  const b = Buffer.from(s, 'latin1')
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
}

/** `parts` joined into one array of `total` bytes (their summed length); a lone part as it is. */
export function concatBytes(parts: readonly Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0]!
  const out = new Uint8Array(total)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}
