import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll } from 'vitest'
import type { Database, EngineName } from '../lib/index.js'
import type { Core } from '../lib/core/types.js'

/** Every engine-level suite runs on both engines. A missing native binary fails, never skips. */
export const ENGINES: EngineName[] = (process.env.KESTREL_TEST_ENGINES?.split(',') as EngineName[] | undefined) ?? ['native', 'ts']

/** The other engine, for cross-engine tests. */
export const other = (e: EngineName): EngineName => (e === 'native' ? 'ts' : 'native')

const roots: string[] = []
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true })
})

/** A fresh temp directory path (not created) removed after the file's tests. */
export function tempDir(label = 'db'): string {
  const root = mkdtempSync(join(tmpdir(), 'kestrel-test-'))
  roots.push(root)
  return join(root, label)
}

/** A fresh temp directory, created, removed after the file's tests. */
export function newDir(label = 'db'): string {
  const dir = tempDir(label)
  mkdirSync(dir, { recursive: true })
  return dir
}

/** Bytes as a latin1 string (one char per byte, so `<` on such strings is bytewise order). */
export const k2s = (k: Uint8Array): string => Buffer.from(k).toString('latin1')
/** A latin1 string back to its bytes. */
export const s2k = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'))

/** pages.kdb after one checkpoint of a golden scenario. */
export interface GoldenCheckpoint {
  pageCount: number
  records: number
  freeCount: number
  /** SHA-256 of the whole file, lowercase hex. */
  sha256: string
}

/**
 * The golden page-store scenarios' expected files (testdata/golden-pages.json), one entry per
 * checkpoint: `plain` (pages.test.ts) and `indexed` (ts-index-core.test.ts). The Rust suite
 * reads the same file, so both engines are held to the same bytes.
 */
export function goldenPages(): { plain: GoldenCheckpoint[]; indexed: GoldenCheckpoint[] } {
  return JSON.parse(readFileSync(new URL('../testdata/golden-pages.json', import.meta.url), 'utf8')) as {
    plain: GoldenCheckpoint[]
    indexed: GoldenCheckpoint[]
  }
}

/** Assert that `fn` rejects/throws a KestrelError with `code`; returns the error. */
export async function expectCode(fn: () => unknown, code: string): Promise<Error & { code: string }> {
  try {
    await fn()
  } catch (err) {
    const e = err as Error & { code: string }
    // KestrelError or one of its subclasses (ConflictError, UniqueError).
    if (!['KestrelError', 'ConflictError', 'UniqueError'].includes(e.name) || e.code !== code) {
      throw new Error(`expected KestrelError ${code}, got ${e.name} ${e.code}: ${e.message}`)
    }
    return e
  }
  throw new Error(`expected KestrelError ${code}, but nothing was thrown`)
}

/** Small deterministic PRNG (mulberry32) so randomized tests reproduce. */
export function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** The engine behind a handle (tests drive the flusher directly through it). */
export function coreOf(db: Database): Core {
  return (db as unknown as { lease: { core: Core } }).lease.core
}

/** Resolve after `ms` milliseconds. */
export const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

interface SaverLike {
  getTuple(config: {
    configurable: Record<string, unknown>
  }): Promise<{ checkpoint: { id: string }; parentConfig?: { configurable?: Record<string, unknown> } } | undefined>
}

/** A thread's checkpoint ids from its latest back through each parent to its root. */
export async function saverChain(saver: SaverLike, thread: string): Promise<string[]> {
  const ids: string[] = []
  let id: string | undefined
  for (let step = 0; step < 10_000; step++) {
    const t = await saver.getTuple({ configurable: { thread_id: thread, checkpoint_ns: '', ...(id ? { checkpoint_id: id } : {}) } })
    if (!t) break
    ids.push(t.checkpoint.id)
    id = t.parentConfig?.configurable?.checkpoint_id as string | undefined
    if (!id) break
  }
  return ids
}
