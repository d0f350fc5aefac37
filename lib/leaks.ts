/**
 * Readers that pin a snapshot — transactions, read views, one-shot scans being iterated — and
 * are garbage-collected without being ended: the pin is released, so a forgotten reader cannot
 * hold versions in memory forever, and a warning says so (`KESTREL_LEAK`). Once per process; with
 * the environment variable `KESTREL_DEBUG` set, every time, with the stack of where the reader was
 * opened (taking that stack costs a few microseconds per reader, hence only then).
 *
 * A reader is put in the FinalizationRegistry only if it is still open at the end of the event
 * loop turn it was opened in: most transactions are committed in that turn, and registering
 * every one would cost a tenth of a short commit.
 */

/** A reader that may pin a snapshot. */
export interface Reader {
  /** Still pinning its snapshot. */
  readonly pinning: boolean
  /** @internal leaks.ts's own mark: 1 waiting for the turn's end, 2 in the registry. */
  leakState: 0 | 1 | 2
  /** What releases its pin once it is gone; must not refer to the reader itself. */
  leak(): Leak
}

/** A collected reader's pin, and what to call it in the warning. */
export interface Leak {
  coordinator: { unpin(snapshot: number): void }
  snapshot: number
  what: string
  /** Where it was opened (only with KESTREL_DEBUG). */
  stack?: string | undefined
}

const DEBUG = process.env.KESTREL_DEBUG !== undefined && process.env.KESTREL_DEBUG !== '' && process.env.KESTREL_DEBUG !== '0'
let warned = false

const registry = new FinalizationRegistry<Leak>((leak) => {
  leak.coordinator.unpin(leak.snapshot)
  if (warned && !DEBUG) return
  warned = true
  const where = leak.stack ? `It was opened at:\n${leak.stack}` : 'Set KESTREL_DEBUG=1 to see where each one was opened.'
  process.emitWarning(
    `kestreldb: a ${leak.what} was garbage-collected without being ended (commit(), rollback() or close()); its snapshot stayed pinned until now, keeping old versions in memory. ${where}`,
    { code: 'KESTREL_LEAK' },
  )
})

/** Readers opened in this turn, registered at its end if still open. */
let waiting: Reader[] = []
/** With KESTREL_DEBUG: where each waiting reader was opened. */
const stacks = new WeakMap<Reader, string>()

function registerWaiting(): void {
  const list = waiting
  waiting = []
  for (const reader of list) {
    if (reader.leakState !== 1) continue
    if (!reader.pinning) {
      reader.leakState = 0
      continue
    }
    reader.leakState = 2
    const leak = reader.leak()
    if (DEBUG) leak.stack = stacks.get(reader)
    registry.register(reader, leak, reader)
  }
}

/** From now on, `reader`'s pin is released if it is collected before {@link ended} is called for it. */
export function opened(reader: Reader): void {
  if (DEBUG) stacks.set(reader, new Error().stack?.split('\n').slice(3).join('\n') ?? '')
  reader.leakState = 1
  if (waiting.length === 0) setImmediate(registerWaiting)
  waiting.push(reader)
}

/** `reader` ended and released its pin itself. */
export function ended(reader: Reader): void {
  if (reader.leakState === 2) registry.unregister(reader)
  reader.leakState = 0
}
