/**
 * Threads and copies of the package share a directory: Workers, the main thread and copies of
 * the package (this file's `lib/` is one copy, the Workers' `dist/` another) each open it as a
 * participant (docs/ARCHITECTURE.md "Many processes"), write at once, and lose nothing. Native
 * participants of one process share one engine; transactions still conflict across threads.
 */
import { Worker } from 'node:worker_threads'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { open, type Database, type EngineName } from '../lib/index.js'
import { ENGINES, expectCode, tempDir } from './helpers.js'
import { createLockFile } from '../lib/lock.js'

const WRITER = fileURLToPath(new URL('./fixtures/thread-writer.mjs', import.meta.url))
const RECORDS = 300

interface OpenResult {
  opened: boolean
  threads?: number
  code?: string
  message?: string
}
interface Outcome {
  acked: string[]
  failed: string[]
  /** Threads using this participant's engine while it wrote. */
  threads?: number
}
interface Participant {
  opened: Promise<OpenResult>
  /** Commit the records (only if it opened) and close. */
  run(): Promise<Outcome>
  name: string
}

type Mode = 'records' | 'rmw'

function inWorker(dir: string, engine: EngineName, prefix: string, mode: Mode = 'records', count = RECORDS): Participant {
  const worker = new Worker(WRITER, { workerData: { dir, engine, prefix, count, mode } })
  const messages: unknown[] = []
  const waiters: Array<(m: unknown) => void> = []
  worker.on('message', (m) => (waiters.length > 0 ? waiters.shift()!(m) : messages.push(m)))
  const failure = new Promise<never>((_, reject) => worker.once('error', reject))
  const next = (): Promise<unknown> => Promise.race([failure, new Promise((r) => (messages.length > 0 ? r(messages.shift()) : waiters.push(r)))])
  const opened = next() as Promise<OpenResult>
  return {
    name: `Worker(${engine})`,
    opened,
    async run() {
      if (!(await opened).opened) {
        await worker.terminate()
        return { acked: [], failed: [] }
      }
      worker.postMessage('go')
      const outcome = (await next()) as Outcome
      await worker.terminate()
      return outcome
    },
  }
}

function inThisThread(dir: string, engine: EngineName, prefix: string, mode: Mode = 'records', count = RECORDS): Participant {
  let db: Database | undefined
  const opened: Promise<OpenResult> = open(dir, { engine }).then(
    (d) => {
      db = d
      return { opened: true, threads: d.stats().threads }
    },
    (err: { code: string; message: string }) => ({ opened: false, code: err.code, message: err.message }),
  )
  return {
    name: `main thread(${engine})`,
    opened,
    async run() {
      await opened
      if (!db) return { acked: [], failed: [] }
      const threads = db.stats().threads
      const c = db.collection<number>('records')
      const list = db.collection<string[]>('shared')
      const acked: string[] = []
      const failed: string[] = []
      await Promise.all(
        Array.from({ length: count }, async (_, i) => {
          const key = `${prefix}-${i}`
          try {
            if (mode === 'rmw') await db!.transaction((tx) => tx.put(list, 'index', [...(tx.get(list, 'index') ?? []), key]))
            else await db!.transaction((tx) => tx.put(c, key, i))
            acked.push(key)
          } catch (err) {
            failed.push(`${key}: ${(err as { code: string }).code}`)
          }
        }),
      )
      await db.close()
      return { acked, failed, threads }
    },
  }
}

/** All open at once; all write; every commit any of them acknowledged is there after a reopen. */
async function race(dir: string, participants: Participant[]): Promise<void> {
  const results = await Promise.all(participants.map((p) => p.opened))
  expect(
    results.filter((r) => !r.opened),
    `open results: ${JSON.stringify(results)}`,
  ).toEqual([])
  const outcomes = await Promise.all(participants.map((p) => p.run()))
  const acked = outcomes.flatMap((o) => o.acked)
  expect(outcomes.flatMap((o) => o.failed)).toEqual([])
  expect(acked).toHaveLength(RECORDS * participants.length)
  for (const engine of ENGINES) {
    const db = await open(dir, { engine })
    const c = db.collection<number>('records')
    const present = acked.filter((k) => db.begin().get(c, k) !== undefined)
    expect(present.length, `${engine} reopen`).toBe(acked.length)
    await db.close()
  }
}

const MIXES: Array<[EngineName, EngineName]> = [
  ['native', 'ts'],
  ['ts', 'native'],
  ['native', 'native'],
  ['ts', 'ts'],
]

describe('threads and copies of the package share a directory', () => {
  for (const [a, b] of MIXES) {
    it(`main thread (${a}) and a Worker (${b})`, async () => {
      const dir = tempDir()
      await race(dir, [inThisThread(dir, a, 'main'), inWorker(dir, b, 'worker')])
    })
    it(`two Workers (${a}, ${b})`, async () => {
      const dir = tempDir()
      await race(dir, [inWorker(dir, a, 'one'), inWorker(dir, b, 'two')])
    })
  }

  it('the main thread and two Workers with the native engine share one engine; ts ones keep their own', async () => {
    if (!ENGINES.includes('native')) return
    const dir = tempDir()
    const participants = [inThisThread(dir, 'native', 'main'), inWorker(dir, 'native', 'one'), inWorker(dir, 'native', 'two'), inWorker(dir, 'ts', 'three')]
    await Promise.all(participants.map((p) => p.opened))
    const outcomes = await Promise.all(participants.map((p) => p.run()))
    // While all wrote, the three native participants used one engine.
    expect(outcomes.map((o) => o.threads)).toEqual([3, 3, 3, 1])
    expect(outcomes.flatMap((o) => o.failed)).toEqual([])
    // The last one out closed it: a new open starts one of its own and finds every record.
    const db = await open(dir, { engine: 'native' })
    expect(db.stats().threads).toBe(1)
    const c = db.collection<number>('records')
    expect(outcomes.flatMap((o) => o.acked).filter((k) => db.begin().get(c, k) === undefined)).toEqual([])
    await db.close()
  })

  for (const [a, b] of MIXES) {
    it(`seed 000 across threads: the main thread (${a}) and two Workers (${b}) x 10 load-modify-saves of one list keep all 30`, async () => {
      const dir = tempDir()
      const participants = [inThisThread(dir, a, 'main', 'rmw', 10), inWorker(dir, b, 'one', 'rmw', 10), inWorker(dir, b, 'two', 'rmw', 10)]
      await Promise.all(participants.map((p) => p.opened))
      const outcomes = await Promise.all(participants.map((p) => p.run()))
      expect(outcomes.flatMap((o) => o.failed)).toEqual([])
      const db = await open(dir, { engine: a })
      const list = db.begin().get(db.collection<string[]>('shared'), 'index') ?? []
      expect([...list].sort()).toEqual(outcomes.flatMap((o) => o.acked).sort())
      expect(list).toHaveLength(30)
      await db.close()
    })
  }

  it('a Worker terminated while committing into the shared native engine: the main thread writes on, nothing acknowledged is lost', async () => {
    if (!ENGINES.includes('native')) return
    const dir = tempDir()
    const db = await open(dir, { engine: 'native' })
    const c = db.collection<number>('records')
    const worker = new Worker(WRITER, { workerData: { dir, engine: 'native', prefix: 'w', count: 16, mode: 'flood' } })
    const acked: string[] = []
    await new Promise<void>((resolve, reject) => {
      worker.on('error', reject)
      worker.on('message', (m: { opened?: boolean; ack?: string }) => {
        if (m.opened === false) reject(new Error(JSON.stringify(m)))
        if (m.opened) worker.postMessage('go')
        if (m.ack) acked.push(m.ack)
        // Terminated mid-stream: some of its commits are queued, written or being published.
        if (acked.length === 500) resolve()
      })
    })
    await worker.terminate()
    expect(db.stats().threads).toBe(1)
    // The main thread takes the write lock and catches up past whatever the Worker left.
    const list = db.collection<string[]>('shared')
    await Promise.all(Array.from({ length: 20 }, (_, i) => db.transaction((tx) => tx.put(c, `main-${i}`, i))))
    await Promise.all(Array.from({ length: 10 }, (_, i) => db.transaction((tx) => tx.put(list, 'index', [...(tx.get(list, 'index') ?? []), `e${i}`]))))
    expect(acked.filter((k) => db.begin().get(c, k) === undefined)).toEqual([])
    expect(db.begin().get(list, 'index')).toHaveLength(10)
    expect((await db.verify()).ok).toBe(true)
    await db.close()
    for (const engine of ENGINES) {
      const again = await open(dir, { engine })
      const r = again.collection<number>('records')
      expect(
        acked.filter((k) => again.begin().get(r, k) === undefined),
        engine,
      ).toEqual([])
      expect(Array.from({ length: 20 }, (_, i) => again.begin().get(r, `main-${i}`))).toEqual(Array.from({ length: 20 }, (_, i) => i))
      await again.close()
    }
  })

  it('eight Workers opening an empty directory at once: all open and write', async () => {
    const dir = tempDir()
    const participants = Array.from({ length: 8 }, (_, i) => inWorker(dir, ENGINES[i % ENGINES.length]!, `w${i}`))
    // None may see a half-created directory as "not a database".
    await race(dir, participants)
  })

  it('an open in another realm of this process shares the directory', async () => {
    // The same directory opened through a second copy of the package (dist/ vs lib/).
    const dir = tempDir()
    const db = await open(dir, { engine: ENGINES[0]! })
    const dist = (await import(new URL('../dist/index.js', import.meta.url).href)) as typeof import('../lib/index.js')
    const other = await dist.open(dir, { engine: ENGINES[ENGINES.length - 1]! })
    const a = db.collection<number>('records')
    const b = other.collection<number>('records')
    await db.transaction((tx) => tx.put(a, 'from-lib', 1))
    await other.transaction((tx) => tx.put(b, 'from-dist', 2))
    // Each sees the other's commit in its next transaction.
    expect(db.begin().get(a, 'from-dist')).toBe(2)
    expect(other.begin().get(b, 'from-lib')).toBe(1)
    await other.close()
    await db.close()
  })

  it('the LOCK-file fallback (platforms without the socket): exactly one owner, whole lines, stale ones broken', async () => {
    const dir = tempDir()
    const { mkdirSync } = await import('node:fs')
    mkdirSync(dir, { recursive: true })
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => createLockFile(dir, 'ts', `n${i}`)))
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
    for (const r of results) if (r.status === 'rejected') expect((r.reason as { code: string }).code).toBe('KESTREL_LOCKED')
    // Never empty, never a half line: it was linked into place finished.
    expect(readFileSync(join(dir, 'LOCK'), 'utf8')).toMatch(new RegExp(`^pid=${process.pid} engine=ts nonce=n\\d\n$`))
    // A pid equal to ours is another thread or copy of the package, not "mine".
    const mine = await expectCode(() => createLockFile(dir, 'native', 'again'), 'KESTREL_LOCKED')
    expect(mine.message).toContain('another thread or copy of kestreldb in this process')
    // A process that is gone leaves a stale line, which is broken.
    writeFileSync(join(dir, 'LOCK'), 'pid=999999999 engine=ts nonce=gone\n')
    await createLockFile(dir, 'native', 'fresh')
    expect(readFileSync(join(dir, 'LOCK'), 'utf8')).toContain('nonce=fresh')
  })
})
