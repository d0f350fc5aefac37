/**
 * Several "hosts" on one PostgreSQL database: real child processes, each with a replica
 * directory of its own (what separate machines have), of both engines and mixed — seed 000's
 * load-modify-save, a unique key claimed from two hosts, a randomized list-append history from
 * three hosts checked for snapshot-isolation anomalies, a host SIGKILLed mid-commit, a new host
 * bootstrapping while others write, and KestrelSaver from two hosts.
 */
import { describe, expect, it } from 'vitest'
import { open, type EngineName } from '../lib/index.js'
import { ENGINES, tempDir } from './helpers.js'
import { type HistoryOutcome, PAIRS, type RmwOutcome, checkHistory, saverRace, start } from './participants.js'
import { PG_URL, adminPool, newSchema, pgOptions, usePostgres } from './pg-helpers.js'

usePostgres()

/** Start `engines` as hosts of `schema`, each on a replica directory of its own. */
function hosts(
  scenario: string,
  schema: string,
  engines: EngineName[],
  args: (i: number) => string[] = () => [],
  env: (i: number) => Record<string, string> = () => ({}),
) {
  const dirs = engines.map((_, i) => tempDir(`host${i + 1}`))
  return start(
    scenario,
    (i) => dirs[i]!,
    engines,
    args,
    (i) => ({ KESTREL_TEST_PG_URL: PG_URL, KESTREL_TEST_PG_SCHEMA: schema, ...env(i) }),
  ).then((ps) => ({ ps, dirs }))
}

describe('seed 000 across hosts: load-modify-save of one shared record', () => {
  for (const [a, b] of PAIRS) {
    it(`${a} + ${b}: 2 hosts x 10 concurrent saves with retries keep all 20; appends keep all 20; with retries: 0 exactly one of 20 wins`, async () => {
      const schema = newSchema()
      const { ps } = await hosts('rmw', schema, [a, b], () => ['plain', '10'])
      for (const p of ps) p.send()
      const outcomes = await Promise.all(ps.map((p) => p.result<RmwOutcome>()))
      expect(outcomes.flatMap((o) => o.failed)).toEqual([])
      const db = await open(tempDir('check'), { engine: a, ...pgOptions(schema) })
      const list = db.get(db.collection<string[]>('shared'), 'index') ?? []
      expect([...list].sort()).toEqual(outcomes.flatMap((o) => o.acked).sort())
      expect(list).toHaveLength(20)
      await db.close()

      const schema2 = newSchema()
      const appends = await hosts('rmw', schema2, [a, b], () => ['append', '10'])
      for (const p of appends.ps) p.send()
      const appended = await Promise.all(appends.ps.map((p) => p.result<RmwOutcome>()))
      expect(appended.flatMap((o) => o.failed)).toEqual([])
      const db2 = await open(tempDir('check2'), { engine: b, ...pgOptions(schema2) })
      expect(db2.get(db2.collection<string[]>('shared'), 'index') ?? []).toHaveLength(20)
      await db2.close()

      const schema3 = newSchema()
      const once = await hosts('rmw', schema3, [a, b], () => ['retries0', '10'])
      for (const p of once.ps) p.send()
      await Promise.all(once.ps.map((p) => p.waitFor((l) => l === 'BARRIER', 'BARRIER')))
      for (const p of once.ps) p.send()
      const raced = await Promise.all(once.ps.map((p) => p.result<RmwOutcome>()))
      const acked = raced.flatMap((o) => o.acked)
      expect(acked).toHaveLength(1)
      const failed = raced.flatMap((o) => o.failed)
      expect(failed).toHaveLength(19)
      for (const [, c] of failed) expect(c).toBe('KESTREL_CONFLICT')
      const db3 = await open(tempDir('check3'), { engine: a, ...pgOptions(schema3) })
      expect(db3.get(db3.collection<string[]>('shared'), 'index')).toEqual(acked)
      await db3.close()
    })
  }
})

describe('unique indexes across hosts', () => {
  for (const [a, b] of PAIRS) {
    it(`${a} + ${b}: two hosts claim one unique key at once: exactly one wins`, async () => {
      const schema = newSchema()
      const { ps } = await hosts('unique', schema, [a, b])
      for (const p of ps) p.send()
      await Promise.all(ps.map((p) => p.waitFor((l) => l === 'BARRIER', 'BARRIER')))
      for (const p of ps) p.send()
      const outcomes = await Promise.all(ps.map((p) => p.result<{ ok: boolean; code?: string }>()))
      expect(outcomes.filter((o) => o.ok)).toHaveLength(1)
      expect(['KESTREL_UNIQUE', 'KESTREL_CONFLICT']).toContain(outcomes.find((o) => !o.ok)!.code)
      const db = await open(tempDir('check'), { engine: b, ...pgOptions(schema) })
      const users = db.collection<{ email: string }>('users', { indexes: { byEmail: { key: (u) => u.email, unique: true } } })
      await users.ready()
      expect([...db.find(users, 'byEmail', 'same@example.com')]).toHaveLength(1)
      await db.close()
    })
  }
})

describe('a randomized list-append history across three hosts is snapshot-isolated', () => {
  it('three hosts (mixed engines): every committed append once, in commit order; reads match their snapshot', async () => {
    const schema = newSchema()
    const engines: EngineName[] = ENGINES.length > 1 ? ['native', 'ts', 'native'] : [ENGINES[0]!, ENGINES[0]!, ENGINES[0]!]
    const { ps } = await hosts('history', schema, engines, (i) => [String(200 + i), '4', '25'])
    for (const p of ps) p.send()
    const outcomes = await Promise.all(ps.map((p) => p.result<HistoryOutcome>()))
    const db = await open(tempDir('check'), { engine: engines[1]!, ...pgOptions(schema) })
    checkHistory(outcomes, (k) => db.get(db.collection<number[]>('lists'), k))
    await db.close()
  })
})

describe('a host killed mid-commit harms no other host', () => {
  for (const [a, b] of PAIRS) {
    it(`${a} killed right after sending a COMMIT while ${b} writes on: every acknowledged commit kept, one gap-free order; the killed host reopens and catches up`, async () => {
      const schema = newSchema()
      const killAt = 20 + Math.floor(Math.random() * 30)
      const { ps, dirs } = await hosts(
        'writer',
        schema,
        [a, b],
        (i) => [i === 0 ? '1000000' : '300'],
        (i): Record<string, string> => (i === 0 ? { KESTREL_TEST_KILL_AT: `pg-commit:${killAt}` } : {}),
      )
      const [victim, survivor] = ps as [(typeof ps)[0], (typeof ps)[0]]
      victim.send()
      survivor.send()
      expect(await victim.exited).toBe(null)
      const survived = await survivor.result<{ done: number }>()
      expect(survived.done).toBeGreaterThanOrEqual(300)
      const acked = [...victim.acks(), ...survivor.acks()]
      const rows = await adminPool().query(`SELECT count(*)::int AS n, min(lsn)::int AS lo, max(lsn)::int AS hi FROM "${schema}".kestrel_log`)
      expect(rows.rows[0].lo).toBe(1)
      expect(rows.rows[0].hi).toBe(rows.rows[0].n)
      // The killed host's own directory, reopened, and a new host: both hold the whole log.
      for (const [dir, engine] of [
        [dirs[0]!, a],
        [tempDir('fresh'), b],
      ] as const) {
        const db = await open(dir, { engine, ...pgOptions(schema) })
        expect(Number(db.lastCommitId())).toBe(rows.rows[0].n)
        const pairs = db.collection<{ key: string }>('pairs')
        const tx = db.begin()
        const missing = acked.filter((k) => tx.get(pairs, ['a', k]) === undefined || tx.get(pairs, ['b', k]) === undefined)
        expect(missing, `${engine}: acknowledged but missing`).toEqual([])
        const as = [...tx.scan(pairs, { prefix: ['a'] })].map((e) => e.value.key)
        const bs = [...tx.scan(pairs, { prefix: ['b'] })].map((e) => e.value.key)
        expect(as.sort()).toEqual(bs.sort())
        tx.rollback()
        expect((await db.verify()).problems).toEqual([])
        await db.close()
      }
    })
  }
})

describe('a new host bootstraps while others write', () => {
  it('from the newest snapshot plus the log after it: it holds a prefix at once and catches up to every acknowledged commit', async () => {
    const schema = newSchema()
    const engines: EngineName[] = ENGINES.length > 1 ? ['native', 'ts'] : [ENGINES[0]!, ENGINES[0]!]
    // Snapshots every 200 commits: the writers publish several and trim the log behind them.
    const { ps } = await hosts(
      'writer',
      schema,
      engines,
      () => ['3000'],
      () => ({ KESTREL_TEST_PG_SNAPSHOT_EVERY: '200' }),
    )
    for (const p of ps) p.send()
    const trimmed = async () => (await adminPool().query(`SELECT min(lsn)::int AS lo FROM "${schema}".kestrel_log`)).rows[0].lo as number | null
    const end = Date.now() + 20_000
    // Bounded by the deadline: a snapshot was published (once a second at most) and the log trimmed.
    while (((await trimmed()) ?? 0) <= 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 50))
    const snap = await adminPool().query(`SELECT lsn::int FROM "${schema}".kestrel_snapshot`)
    expect(snap.rows).toHaveLength(1)
    expect(await trimmed()).toBeGreaterThan(1)
    const late = await open(tempDir('late'), { engine: engines[1]!, ...pgOptions(schema) })
    expect(Number(late.lastCommitId())).toBeGreaterThanOrEqual(snap.rows[0].lsn)
    await Promise.all(ps.map((p) => p.result<{ done: number }>()))
    const acked = ps.flatMap((p) => p.acks())
    const pairs = late.collection<{ key: string }>('pairs')
    const until = Date.now() + 10_000
    // Bounded by the deadline: notified and caught up.
    while (acked.some((k) => late.get(pairs, ['a', k]) === undefined) && Date.now() < until) await new Promise((r) => setTimeout(r, 10))
    expect(acked.filter((k) => late.get(pairs, ['a', k]) === undefined || late.get(pairs, ['b', k]) === undefined)).toEqual([])
    expect(late.stats().replica?.lagCommits).toBe(0)
    expect((await late.verify()).problems).toEqual([])
    await late.close()
  })
})

describe('KestrelSaver from two hosts', () => {
  for (const [a, b] of PAIRS) {
    it(`${a} + ${b}: two hosts x 10 concurrent puts on one thread: all 20 listed once, newest first, in one chain`, async () => {
      const schema = newSchema()
      await saverRace(
        (engine) => ({ dir: tempDir('saver'), options: { engine, ...pgOptions(schema) } }),
        async () => (await hosts('saver', schema, [a, b])).ps,
        [a, b],
      )
    })
  }
})
