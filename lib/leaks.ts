/**
 * Readers that pin a snapshot — transactions, read views, one-shot scans being iterated — and
 * are garbage-collected without being ended: the pin is released, so a forgotten reader cannot
 * hold versions in memory forever, and a warning says so (`KESTREL_LEAK`). Once per process; with
 * the environment variable `KESTREL_DEBUG` set, every time, with the stack of where the reader was
 * opened (taking that stack costs a few microseconds per reader, hence only then).
 */

interface Leak {
  /** Unpins the reader's snapshot. Must not refer to the reader (it would never be collected). */
  release: () => void
  what: string
  stack: string | undefined
}

const DEBUG = process.env.KESTREL_DEBUG !== undefined && process.env.KESTREL_DEBUG !== '' && process.env.KESTREL_DEBUG !== '0'
let warned = false

const registry = new FinalizationRegistry<Leak>((leak) => {
  leak.release()
  if (warned && !DEBUG) return
  warned = true
  const where = leak.stack ? `It was opened at:\n${leak.stack}` : 'Set KESTREL_DEBUG=1 to see where each one was opened.'
  process.emitWarning(`kestreldb: a ${leak.what} was garbage-collected without being ended (commit(), rollback() or close()); its snapshot stayed pinned until now, keeping old versions in memory. ${where}`, { code: 'KESTREL_LEAK' })
})

/** Release `reader`'s pin by `release` if it is collected before {@link ended} is called for it. */
export function opened(reader: object, what: string, release: () => void): void {
  const stack = DEBUG ? new Error().stack?.split('\n').slice(3).join('\n') : undefined
  registry.register(reader, { release, what, stack }, reader)
}

/** `reader` ended and released its pin itself. */
export function ended(reader: object): void {
  registry.unregister(reader)
}
