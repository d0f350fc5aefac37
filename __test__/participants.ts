/**
 * Child processes sharing one database (fixtures/participant.mjs): one per engine given, each
 * opening its directory (one for all, or one each: PostgreSQL replicas), driven over stdin and
 * answering over stdout. Used by multiprocess.test.ts and postgres-hosts.test.ts.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { expect } from 'vitest'
import type { EngineName, OpenOptions } from '../lib/index.js'
import { ENGINES, saverChain } from './helpers.js'

const FIXTURE = fileURLToPath(new URL('./fixtures/participant.mjs', import.meta.url))

/** Engine pairs: each engine with itself and, when both run, with the other. */
export const PAIRS: Array<[EngineName, EngineName]> =
  ENGINES.length > 1
    ? [
        ['native', 'ts'],
        ['native', 'native'],
        ['ts', 'ts'],
      ]
    : [[ENGINES[0]!, ENGINES[0]!]]

export class Participant {
  readonly proc: ChildProcess
  private readonly lines: string[] = []
  private readonly waiters: Array<{ test: (l: string) => boolean; resolve: (l: string) => void }> = []
  readonly exited: Promise<number | null>
  stderr = ''

  constructor(args: string[], env: Record<string, string> = {}) {
    this.proc = spawn(process.execPath, [FIXTURE, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    this.proc.stderr!.on('data', (d) => {
      this.stderr += String(d)
    })
    createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      const w = this.waiters.findIndex((x) => x.test(l))
      if (w >= 0) this.waiters.splice(w, 1)[0]!.resolve(l)
      else this.lines.push(l)
    })
    this.exited = new Promise((r) => this.proc.once('exit', (code) => r(code)))
  }

  /** The next line matching `test` (lines already read are searched first). */
  waitFor(test: (l: string) => boolean, what: string): Promise<string> {
    const i = this.lines.findIndex(test)
    if (i >= 0) return Promise.resolve(this.lines.splice(i, 1)[0]!)
    return new Promise<string>((resolve, reject) => {
      this.waiters.push({ test, resolve })
      void this.exited.then((code) => reject(new Error(`participant exited (${code}) before ${what}: ${this.stderr}`)))
    })
  }

  /** Every ACK line seen so far. */
  acks(): string[] {
    return this.lines.filter((l) => l.startsWith('ACK ')).map((l) => l.slice(4))
  }

  send(line = 'go'): void {
    this.proc.stdin!.write(`${line}\n`)
  }

  async result<T>(): Promise<T> {
    const line = await this.waitFor((l) => l.startsWith('{'), 'its result')
    await this.exited
    return JSON.parse(line) as T
  }
}

/**
 * Start one participant per engine in `engines` (ids 1, 2, …) and wait until all are open. `dir`:
 * one directory for all, or each one's; `env`: added to each one's environment.
 */
export async function start(
  scenario: string,
  dir: string | ((i: number) => string),
  engines: EngineName[],
  args: (i: number) => string[] = () => [],
  env: (i: number) => Record<string, string> = () => ({}),
): Promise<Participant[]> {
  const ps = engines.map((e, i) => new Participant([scenario, typeof dir === 'string' ? dir : dir(i), e, String(i + 1), ...args(i)], env(i)))
  await Promise.all(ps.map((p) => p.waitFor((l) => l === 'READY', 'READY')))
  return ps
}

export interface RmwOutcome {
  acked: string[]
  failed: Array<[string, string]>
}

export interface HistoryTx {
  snapshot: string
  commitId: string
  reads: Record<string, number[]>
  appends: Array<[number, number]>
}

export interface HistoryOutcome {
  committed: HistoryTx[]
  conflicts: number
}

/**
 * A list-append history is snapshot-isolated: some transactions conflicted, every writer has its
 * own commit id, each list holds exactly the committed appends in commit order (`read` gives the
 * final list of key k), and every read saw exactly the appends committed at or before its snapshot.
 */
export function checkHistory(outcomes: HistoryOutcome[], read: (k: number) => number[] | undefined): void {
  const committed = outcomes.flatMap((o) => o.committed)
  expect(outcomes.reduce((n, o) => n + o.conflicts, 0)).toBeGreaterThan(0)
  const writers = committed.filter((d) => d.appends.length > 0).sort((x, y) => Number(BigInt(x.commitId) - BigInt(y.commitId)))
  // One LSN order: no two writers share a commit id.
  expect(new Set(writers.map((w) => w.commitId)).size).toBe(writers.length)
  const expected = new Map<number, number[]>()
  for (const d of writers) for (const [k, item] of d.appends) expected.set(k, [...(expected.get(k) ?? []), item])
  for (let k = 0; k < 5; k++) expect(read(k) ?? [], `key ${k}`).toEqual(expected.get(k) ?? [])
  for (const d of committed) {
    for (const [k, seen] of Object.entries(d.reads)) {
      const at = writers.filter((w) => BigInt(w.commitId) <= BigInt(d.snapshot)).flatMap((w) => w.appends.filter(([ak]) => ak === Number(k)).map(([, i]) => i))
      expect(seen, `read of ${k} at ${d.snapshot}`).toEqual(at)
    }
  }
}

/**
 * Seed 000 on the saver: a root checkpoint, then `start()`'s two participants each put 10
 * checkpoints at the root concurrently (every put called before any commits) — all 20 must be
 * listed once, newest first, in one parent chain. `where(engine)` says how the test opens it.
 */
export async function saverRace(
  where: (engine: EngineName) => { dir: string; options: OpenOptions },
  startParticipants: () => Promise<Participant[]>,
  [a, b]: [EngineName, EngineName],
): Promise<void> {
  const { KestrelSaver } = await import('../lib/langgraph/index.js')
  const { emptyCheckpoint } = await import('@langchain/langgraph-checkpoint')
  const at = where(a)
  const first = await KestrelSaver.open(at.dir, at.options)
  const root = await first.put({ configurable: { thread_id: 'shared', checkpoint_ns: '' } }, emptyCheckpoint(), { source: 'input', step: -1, parents: {} }, {})
  await first.close()
  const ps = await startParticipants()
  for (const p of ps) p.send()
  // Every put of both participants is called at the root before either lets one commit.
  await Promise.all(ps.map((p) => p.waitFor((l) => l === 'BARRIER', 'BARRIER')))
  for (const p of ps) p.send()
  const outcomes = await Promise.all(ps.map((p) => p.result<{ ids: string[] }>()))
  const then = where(b)
  const again = await KestrelSaver.open(then.dir, then.options)
  const listed: string[] = []
  for await (const t of again.list({ configurable: { thread_id: 'shared' } })) listed.push(t.checkpoint.id)
  const all = [...outcomes.flatMap((o) => o.ids), root.configurable?.checkpoint_id as string].sort().reverse()
  expect(listed).toEqual(all)
  expect(await saverChain(again, 'shared')).toEqual(all)
  await again.close()
}
