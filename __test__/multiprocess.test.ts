/**
 * Many processes, one directory: real child processes (and Workers) of both engines, mixed,
 * sharing one database — seed 000's lost updates, first committer wins across processes, unique
 * indexes across processes, a SIGKILL'd writer, alternating checkpointers, a randomized
 * list-append history checked for snapshot-isolation anomalies, and many openers at once.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { open, type EngineName } from '../lib/index.js'
import { ENGINES, tempDir } from './helpers.js'
import { type HistoryOutcome, PAIRS, type RmwOutcome, checkHistory, saverRace, start } from './participants.js'

describe('seed 000 across processes: load-modify-save of one shared record', () => {
  for (const [a, b] of PAIRS) {
    it(`${a} + ${b}: 2 processes x 10 concurrent saves with retries keep all 20`, async () => {
      const dir = tempDir()
      const ps = await start('rmw', dir, [a, b], () => ['plain', '10'])
      for (const p of ps) p.send()
      const outcomes = await Promise.all(ps.map((p) => p.result<RmwOutcome>()))
      expect(outcomes.flatMap((o) => o.failed)).toEqual([])
      const db = await open(dir, { engine: a })
      const list = db.begin().get(db.collection<string[]>('shared'), 'index') ?? []
      expect([...list].sort()).toEqual(outcomes.flatMap((o) => o.acked).sort())
      expect(list).toHaveLength(20)
      await db.close()
    })

    it(`${a} + ${b}: appends (a merge) from 2 processes x 10 keep all 20, none conflicts`, async () => {
      const dir = tempDir()
      const ps = await start('rmw', dir, [a, b], () => ['append', '10'])
      for (const p of ps) p.send()
      const outcomes = await Promise.all(ps.map((p) => p.result<RmwOutcome>()))
      expect(outcomes.flatMap((o) => o.failed)).toEqual([])
      const db = await open(dir, { engine: b })
      expect((db.begin().get(db.collection<string[]>('shared'), 'index') ?? []).length).toBe(20)
      await db.close()
    })

    it(`${a} + ${b}: with retries: 0 and one snapshot, exactly one of 20 wins; the rest conflict`, async () => {
      const dir = tempDir()
      const ps = await start('rmw', dir, [a, b], () => ['retries0', '10'])
      for (const p of ps) p.send()
      await Promise.all(ps.map((p) => p.waitFor((l) => l === 'BARRIER', 'BARRIER')))
      for (const p of ps) p.send()
      const outcomes = await Promise.all(ps.map((p) => p.result<RmwOutcome>()))
      const acked = outcomes.flatMap((o) => o.acked)
      expect(acked).toHaveLength(1)
      const failed = outcomes.flatMap((o) => o.failed)
      expect(failed).toHaveLength(19)
      for (const [, c] of failed) expect(c).toBe('KESTREL_CONFLICT')
      const db = await open(dir, { engine: a })
      expect(db.begin().get(db.collection<string[]>('shared'), 'index')).toEqual(acked)
      await db.close()
    })
  }
})

describe('unique indexes across processes', () => {
  for (const [a, b] of PAIRS) {
    it(`${a} + ${b}: two processes claim one unique key at once: exactly one wins`, async () => {
      const dir = tempDir()
      const ps = await start('unique', dir, [a, b])
      for (const p of ps) p.send()
      await Promise.all(ps.map((p) => p.waitFor((l) => l === 'BARRIER', 'BARRIER')))
      for (const p of ps) p.send()
      const outcomes = await Promise.all(ps.map((p) => p.result<{ ok: boolean; code?: string }>()))
      expect(outcomes.filter((o) => o.ok)).toHaveLength(1)
      expect(['KESTREL_UNIQUE', 'KESTREL_CONFLICT']).toContain(outcomes.find((o) => !o.ok)!.code)
      const db = await open(dir, { engine: b })
      const users = db.collection<{ email: string }>('users', { indexes: { byEmail: { key: (u) => u.email, unique: true } } })
      await users.ready()
      expect([...db.find(users, 'byEmail', 'same@example.com')]).toHaveLength(1)
      await db.close()
    })
  }
})

describe('a writer killed at any point harms no other process', () => {
  for (const [a, b] of PAIRS) {
    it(`${a} killed while ${b} writes on: every acknowledged commit kept, one gap-free order`, async () => {
      const dir = tempDir()
      const [victim, survivor] = await start('writer', dir, [a, b], (i) => [i === 0 ? '1000000' : '600'])
      victim!.send()
      survivor!.send()
      // Kill at a random moment while both write (small segments: rollovers and checkpoints too).
      await victim!.waitFor((l) => l.startsWith('ACK ') && Number(l.split('-')[1]) >= 150 + Math.floor(Math.random() * 100), 'enough ACKs')
      victim!.proc.kill('SIGKILL')
      await victim!.exited
      const survived = await survivor!.result<{ done: number }>()
      expect(survived.done).toBeGreaterThanOrEqual(600)
      const acked = [...victim!.acks(), ...survivor!.acks()]
      for (const engine of ENGINES) {
        const db = await open(dir, { engine })
        const pairs = db.collection<{ key: string }>('pairs')
        const tx = db.begin()
        const missing = acked.filter((k) => tx.get(pairs, ['a', k]) === undefined || tx.get(pairs, ['b', k]) === undefined)
        expect(missing, `${engine}: acknowledged but missing`).toEqual([])
        // Both halves of every transaction, or neither.
        const as = [...tx.scan(pairs, { prefix: ['a'] })].map((e) => e.value.key)
        const bs = [...tx.scan(pairs, { prefix: ['b'] })].map((e) => e.value.key)
        expect(as.sort()).toEqual(bs.sort())
        const report = await db.verify()
        expect(report.problems).toEqual([])
        await db.close()
      }
    })
  }
})

describe('checkpoints by one process at a time', () => {
  for (const [a, b] of PAIRS) {
    it(`${a} + ${b}: alternating checkpointers, verify() passes every time`, async () => {
      const dir = tempDir()
      const ps = await start('checkpointer', dir, [a, b], () => ['4'])
      for (const p of ps) p.send()
      for (let r = 0; r < 4; r++) {
        for (const p of ps) {
          p.send()
          await p.waitFor((l) => l === `ROUND ${r}`, `round ${r}`)
        }
      }
      const outcomes = await Promise.all(ps.map((p) => p.result<{ reports: Array<{ ok: boolean; problems: string[] }>; count: number }>()))
      for (const o of outcomes) {
        for (const r of o.reports) expect(r.problems).toEqual([])
        expect(o.count).toBeGreaterThanOrEqual(50 * 4)
      }
      const db = await open(dir, { engine: a })
      expect([...db.scan(db.collection('ck'))]).toHaveLength(2 * 4 * 50)
      expect((await db.verify()).problems).toEqual([])
      await db.close()
    })
  }
})

describe('a randomized multi-process list-append history is snapshot-isolated', () => {
  it('three processes (mixed engines): every committed append once, in commit order; reads match their snapshot', async () => {
    const dir = tempDir()
    const engines: EngineName[] = ENGINES.length > 1 ? ['native', 'ts', 'native'] : [ENGINES[0]!, ENGINES[0]!, ENGINES[0]!]
    const ps = await start('history', dir, engines, (i) => [String(100 + i), '4', '25'])
    for (const p of ps) p.send()
    const outcomes = await Promise.all(ps.map((p) => p.result<HistoryOutcome>()))
    const db = await open(dir, { engine: engines[1]! })
    checkHistory(outcomes, (k) => db.begin().get(db.collection<number[]>('lists'), k))
    await db.close()
  })
})

describe('KestrelSaver from several processes', () => {
  for (const [a, b] of PAIRS) {
    it(`${a} + ${b}: two processes x 10 concurrent appends to one thread: all 20 listed once, newest first, in one chain`, async () => {
      const dir = tempDir()
      await saverRace(
        (engine) => ({ dir, options: { engine } }),
        () => start('saver', dir, [a, b]),
        [a, b],
      )
    })
  }
})

describe('under cluster', () => {
  it('four cluster workers (both engines) append to one list: all 40 land', async () => {
    const dir = tempDir()
    const proc = spawn(process.execPath, [fileURLToPath(new URL('./fixtures/cluster.mjs', import.meta.url)), dir, '4', ENGINES.join(',')], { stdio: 'inherit' })
    const code = await new Promise<number | null>((r) => proc.once('exit', r))
    expect(code).toBe(0)
    const db = await open(dir)
    expect((db.begin().get(db.collection<string[]>('shared'), 'index') ?? []).length).toBe(40)
    await db.close()
  })
})

describe('processes with Workers', () => {
  it('two cluster workers (both engines), each with a Worker on its engine: 4 threads x 10 load-modify-saves of one list keep all 40', async () => {
    const dir = tempDir()
    const proc = spawn(process.execPath, [fileURLToPath(new URL('./fixtures/cluster.mjs', import.meta.url)), dir, '2', ENGINES.join(','), '1'], {
      stdio: 'inherit',
    })
    const code = await new Promise<number | null>((r) => proc.once('exit', r))
    expect(code).toBe(0)
    const db = await open(dir)
    const list = db.begin().get(db.collection<string[]>('shared'), 'index') ?? []
    expect(new Set(list).size).toBe(40)
    await db.close()
  })
})

describe('many openers at once', () => {
  it('eight processes open an empty directory at once; all write; nothing is lost', async () => {
    const dir = tempDir()
    const engines = Array.from({ length: 8 }, (_, i) => ENGINES[i % ENGINES.length]!)
    const ps = await start('rmw', dir, engines, () => ['append', '5'])
    for (const p of ps) p.send()
    const outcomes = await Promise.all(ps.map((p) => p.result<RmwOutcome>()))
    expect(outcomes.flatMap((o) => o.failed)).toEqual([])
    const db = await open(dir)
    expect((db.begin().get(db.collection<string[]>('shared'), 'index') ?? []).length).toBe(40)
    await db.close()
  })
})
