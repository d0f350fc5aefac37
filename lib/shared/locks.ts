/**
 * The named locks of a shared directory (docs/FORMAT.md "Sharing"): abstract Unix sockets bound
 * to `kestreldb/<device>/<inode>[/<lock>]`, released by the kernel when the socket closes or its
 * process dies. Binding happens synchronously inside `listen()`, so a try costs one syscall and
 * no event-loop turn; `exclusive` keeps cluster workers from sharing the primary's socket.
 */
import { statSync } from 'node:fs'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { KestrelError } from '../errors.js'

/** Abstract names are padded with NULs to the whole `sun_path` (as Node binds them). */
const SUN_PATH_BYTES = 107

export interface LockNames {
  /** Held while opening (deciding whether anyone is live, recovering, claiming a slot). */
  init: string
  /** Held while appending to the log. */
  write: string
  /** Held while writing a checkpoint or copying a backup. */
  ckpt: string
  /** Held for a participant's life: its slot in SHARED. */
  slot(i: number): string
}

export function lockNames(dir: string): LockNames {
  const st = statSync(dir, { bigint: true })
  const base = `kestreldb/${st.dev.toString(16)}/${st.ino.toString(16)}`
  return { init: base, write: `${base}/w`, ckpt: `${base}/c`, slot: (i) => `${base}/s${i}` }
}

/**
 * A lock this participant holds. Waiters connect to it (the socket listens) and are dropped when
 * it is released: that wakes them at once, with no polling.
 */
export class NamedLock {
  private server: Server | undefined
  private readonly waiters = new Set<Socket>()
  /** Called when someone starts waiting for this lock. */
  onContended: (() => void) | undefined

  constructor(
    readonly name: string,
    server: Server,
  ) {
    this.server = server
    server.on('connection', (c) => {
      c.unref()
      c.on('error', () => {})
      c.on('close', () => this.waiters.delete(c))
      if (this.server) {
        this.waiters.add(c)
        this.onContended?.()
      } else c.destroy()
    })
  }

  get held(): boolean {
    return this.server !== undefined
  }

  /** The listening socket's file descriptor (-1 where the platform does not say). */
  get fd(): number {
    const fd = (this.server as unknown as { _handle?: { fd?: number } } | undefined)?._handle?.fd
    return typeof fd === 'number' ? fd : -1
  }

  /** Someone waits for this lock (connected to it). */
  get contended(): boolean {
    return this.waiters.size > 0
  }

  release(): void {
    // Unbind first, then wake the waiters: the first to try again gets it.
    this.server?.close()
    this.server = undefined
    for (const c of this.waiters) c.destroy()
    this.waiters.clear()
  }
}

function socketPath(name: string): string {
  return `\0${name}${'\0'.repeat(SUN_PATH_BYTES - name.length)}`
}

/**
 * Resolves when the holder of `name` lets go (its socket drops us), or after `capMs`. A refused
 * connection means it let go already — or that its holder does not listen (an older kestreldb's
 * lock): then, after `refusedBefore` refusals in a row, it pauses a millisecond before trying.
 */
function released(name: string, capMs: number, refusedBefore: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const sock = connect({ path: socketPath(name) })
    let timer: NodeJS.Timeout | undefined
    let refused = false
    const done = (): void => {
      if (timer) clearTimeout(timer)
      timer = undefined
      sock.destroy()
      resolve(refused)
    }
    // Both stay referenced: a process waiting for the lock has a commit to finish.
    timer = setTimeout(done, capMs)
    sock.on('close', () => {
      if (!refused) done()
    })
    sock.on('error', () => {
      refused = true
      if (timer) clearTimeout(timer)
      if (refusedBefore < 3) done()
      else timer = setTimeout(done, 1)
    })
  })
}

/** Take `name` now, or undefined when someone holds it. */
export function tryLock(name: string): NamedLock | undefined {
  const server = createServer()
  // A refused bind is also reported as an event: it is expected here.
  server.on('error', () => {})
  server.listen({ path: socketPath(name), exclusive: true })
  if (!server.listening) return undefined
  server.unref()
  return new NamedLock(name, server)
}

/** First retries without a timer (a hand-off between processes takes microseconds), then woken by the release. */
const SPINS = 2
/** A wait for a release is cut short after this, in case the wake-up was missed. */
const RELEASE_WAIT_CAP_MS = 20

/**
 * Take `name`, waiting up to `waitMs`; then KESTREL_LOCKED with `why()` — or at once with what
 * `hopeless()` returns, when it returns something. Bounded: SPINS turns, then one try per
 * release of the holder (at least one per RELEASE_WAIT_CAP_MS).
 */
export async function waitLock(name: string, waitMs: number, why: () => string, hopeless?: () => string | undefined): Promise<NamedLock> {
  const deadline = Date.now() + waitMs
  let refusals = 0
  for (let attempt = 0; ; attempt++) {
    const lock = tryLock(name)
    if (lock) return lock
    if (Date.now() >= deadline) throw new KestrelError('KESTREL_LOCKED', why())
    // Now and then: is the holder one that will not let go soon?
    const reason = attempt % 64 === SPINS ? hopeless?.() : undefined
    if (reason !== undefined) throw new KestrelError('KESTREL_LOCKED', reason)
    if (attempt < SPINS) await new Promise<void>((r) => setImmediate(r))
    else refusals = (await released(name, RELEASE_WAIT_CAP_MS, refusals)) ? refusals + 1 : 0
  }
}

/**
 * After handing `name` over to waiters: resolves once another has taken it and let it go, or
 * after `capMs` if none takes it — so the one that let go does not take it straight back.
 * Bounded: one connect per turn until the cap.
 */
export async function afterHandOver(name: string, capMs: number): Promise<void> {
  const until = performance.now() + capMs
  while (performance.now() < until) {
    const refused = await released(name, Math.max(1, until - performance.now()), 0)
    if (!refused) return
    await new Promise<void>((r) => setImmediate(r))
  }
}

/** Inode of this thread's network namespace (abstract socket names are per namespace), 0 if unknown. */
export function netnsId(): number {
  try {
    return Number(statSync('/proc/self/ns/net').ino)
  } catch {
    return 0
  }
}
