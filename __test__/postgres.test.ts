/**
 * The shared log on PostgreSQL, in one process: replicas (each its own directory) of one
 * database, their commits, catch-up, validation across replicas, bootstrap, the replica mark,
 * and PostgreSQL going away. The multi-host tests with child processes are in
 * postgres-hosts.test.ts.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { ConflictError, type Database, type EngineName, open } from '../lib/index.js'
import type { PgCore } from '../lib/postgres/core.js'
import { ENGINES, coreOf, expectCode, other, tempDir } from './helpers.js'
import { PG_URL, adminPool, newSchema, pgOptions, usePostgres } from './pg-helpers.js'

usePostgres()

const BIN = fileURLToPath(new URL('../dist/cli/kestrel.js', import.meta.url))
function kestrel(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' })
}

async function until(what: string, test: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  // Bounded by the deadline.
  while (!test()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

/**
 * A TCP proxy to PostgreSQL. `cut` cuts one connection at its next `COMMIT` (a simple-protocol
 * Query message): `before` drops it unsent, `after` sends it and drops the connection before the
 * answer comes back — the outcome a client cannot know without asking. `down` drops every
 * connection and refuses new ones until `up` (PostgreSQL unreachable, then back).
 */
async function pgProxy(): Promise<{
  url: string
  cut: (when: 'before' | 'after') => void
  cuts: () => number
  down: () => void
  up: () => void
  close: () => Promise<void>
}> {
  const target = new URL(PG_URL)
  let armed: 'before' | 'after' | undefined
  let cuts = 0
  const commit = Buffer.from('COMMIT\0')
  const sockets = new Set<Socket>()
  let isDown = false
  const server: Server = createServer((client) => {
    if (isDown) {
      client.destroy()
      return
    }
    const upstream = createConnection({ host: target.hostname, port: Number(target.port || 5432) })
    for (const sock of [client, upstream]) {
      sockets.add(sock)
      sock.on('close', () => sockets.delete(sock))
    }
    const drop = (): void => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', drop)
    upstream.on('error', drop)
    client.on('data', (chunk: Buffer) => {
      const at = chunk.indexOf(commit)
      if (armed && at >= 5 && chunk[at - 5] === 0x51) {
        const when = armed
        armed = undefined
        cuts++
        // `after`: PostgreSQL reads the COMMIT before the end of the connection behind it.
        if (when === 'after') upstream.end(chunk, () => client.destroy())
        else drop()
        return
      }
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => client.write(chunk))
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as { port: number }).port
  const url = new URL(PG_URL)
  url.port = String(port)
  return {
    url: url.toString(),
    cut: (when) => {
      armed = when
    },
    cuts: () => cuts,
    down: () => {
      isDown = true
      for (const sock of sockets) sock.destroy()
    },
    up: () => {
      isDown = false
    },
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r())
        for (const sock of sockets) sock.destroy()
      }),
  }
}

describe.each(ENGINES)('PostgreSQL replicas (%s, with the other engine beside it)', (engine: EngineName) => {
  it('a commit on one replica reaches the other (notified), with the same commit id; a new replica bootstraps from the log', async () => {
    const schema = newSchema()
    const a = await open(tempDir('a'), { engine, ...pgOptions(schema) })
    const b = await open(tempDir('b'), { engine: other(engine), ...pgOptions(schema) })
    const items = a.collection<{ n: number }>('items')
    const txA = a.begin()
    txA.put(items, 'x', { n: 1 })
    const { commitId } = await txA.commit()
    const bItems = b.collection<{ n: number }>('items')
    await until('b to catch up', () => b.get(bItems, 'x') !== undefined)
    expect(b.get(bItems, 'x')).toEqual({ n: 1 })
    expect(b.lastCommitId()).toBe(commitId)
    const txB = b.begin()
    txB.put(bItems, 'y', { n: 2 })
    const { commitId: second } = await txB.commit()
    expect(second).toBe(commitId + 1n)
    // A third replica starts empty and replays the whole log.
    const c = await open(tempDir('c'), { engine, ...pgOptions(schema) })
    const cItems = c.collection<{ n: number }>('items')
    expect(c.get(cItems, 'x')).toEqual({ n: 1 })
    expect(c.get(cItems, 'y')).toEqual({ n: 2 })
    expect(c.stats().replica).toMatchObject({ schema, lagCommits: 0, reachable: true })
    for (const db of [a, b, c]) await db.close()
  })

  it('seed 000 on two replicas: 2 x 10 concurrent load-modify-saves with retries keep all 20; appends too', async () => {
    const schema = newSchema()
    const dbs = [await open(tempDir('a'), { engine, ...pgOptions(schema) }), await open(tempDir('b'), { engine: other(engine), ...pgOptions(schema) })]
    const save = (db: Database, entry: string) =>
      db.transaction(
        (tx) => {
          const c = db.collection<string[]>('shared')
          tx.put(c, 'index', [...(tx.get(c, 'index') ?? []), entry])
        },
        { retries: 1000 },
      )
    await Promise.all(dbs.flatMap((db, d) => Array.from({ length: 10 }, (_, i) => save(db, `${d}-${i}`))))
    const append = (db: Database, entry: string) => db.transaction((tx) => tx.append(db.collection<string[]>('log'), 'l', entry))
    await Promise.all(dbs.flatMap((db, d) => Array.from({ length: 10 }, (_, i) => append(db, `${d}-${i}`))))
    // Each replica, caught up, holds all of both.
    for (const db of dbs) {
      await until('catch-up', () => (db.get(db.collection<string[]>('log'), 'l') ?? []).length === 20)
      expect([...(db.get(db.collection<string[]>('shared'), 'index') ?? [])].sort()).toHaveLength(20)
    }
    for (const db of dbs) await db.close()
  })

  it('first committer wins across replicas: a transaction whose snapshot missed the other replica’s write conflicts', async () => {
    const schema = newSchema()
    const a = await open(tempDir('a'), { engine, ...pgOptions(schema) })
    const b = await open(tempDir('b'), { engine: other(engine), ...pgOptions(schema) })
    const ca = a.collection<number>('c')
    const cb = b.collection<number>('c')
    const txB = b.begin()
    txB.put(cb, 'k', (txB.get(cb, 'k') ?? 0) + 1)
    await a.transaction((tx) => tx.put(ca, 'k', 100))
    const err = await txB.commit().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ConflictError)
    expect(b.get(cb, 'k')).toBe(100)
    await a.close()
    await b.close()
  })

  it('a unique index holds across replicas', async () => {
    const schema = newSchema()
    const dbs = [await open(tempDir('a'), { engine, ...pgOptions(schema) }), await open(tempDir('b'), { engine: other(engine), ...pgOptions(schema) })]
    const users = dbs.map((db) => db.collection<{ email: string }>('users', { indexes: { byEmail: { key: (u) => u.email, unique: true } } }))
    for (const u of users) await u.ready()
    const txs = dbs.map((db, i) => {
      const tx = db.begin()
      tx.put(users[i]!, `u${i}`, { email: 'same@example.com' })
      return tx
    })
    const outcomes = await Promise.allSettled(txs.map((tx) => tx.commit()))
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1)
    const refused = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult
    expect(['KESTREL_UNIQUE', 'KESTREL_CONFLICT']).toContain((refused.reason as { code: string }).code)
    for (let i = 0; i < 2; i++) {
      await until('catch-up', () => Number(dbs[i]!.lastCommitId()) >= 1)
      expect([...dbs[i]!.find(users[i]!, 'byEmail', 'same@example.com')]).toHaveLength(1)
    }
    for (const db of dbs) await db.close()
  })

  it('the replica mark: not opened without postgres, nor against another schema; a plain database is not made a replica', async () => {
    const schema = newSchema()
    const dir = tempDir('a')
    const a = await open(dir, { engine, ...pgOptions(schema) })
    await a.transaction((tx) => tx.put(a.collection('c'), 1, 1))
    await a.close()
    await expectCode(() => open(dir, { engine }), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => open(dir, { engine, ...pgOptions(newSchema()) }), 'KESTREL_INVALID_ARGUMENT')
    const plain = tempDir('plain')
    const p = await open(plain, { engine })
    await p.transaction((tx) => tx.put(p.collection('c'), 1, 1))
    await p.close()
    await expectCode(() => open(plain, { engine, ...pgOptions(schema) }), 'KESTREL_INVALID_ARGUMENT')
    // Reopened as it should be: it holds its commit.
    const again = await open(dir, { engine, ...pgOptions(schema) })
    expect(again.get(again.collection('c'), 1)).toBe(1)
    await again.close()
  })

  it('PostgreSQL unreachable: a new replica is refused, an existing one opens and serves reads, commits reject with KESTREL_UNAVAILABLE', async () => {
    const schema = newSchema()
    const dir = tempDir('a')
    const a = await open(dir, { engine, ...pgOptions(schema) })
    await a.transaction((tx) => tx.put(a.collection('c'), 'k', 'v'))
    await a.close()
    // Nothing listens on port 1.
    const down = { postgres: { connectionString: 'postgres://postgres@127.0.0.1:1/test', schema } }
    await expectCode(() => open(tempDir('new'), { engine, ...down }), 'KESTREL_UNAVAILABLE')
    const offline = await open(dir, { engine, ...down })
    expect(offline.get(offline.collection('c'), 'k')).toBe('v')
    expect(offline.stats().replica?.reachable).toBe(false)
    const err = await expectCode(() => offline.transaction((tx) => tx.put(offline.collection('c'), 'k', 'w')), 'KESTREL_UNAVAILABLE')
    expect(err.message).toMatch(/127\.0\.0\.1:1/)
    expect(offline.get(offline.collection('c'), 'k')).toBe('v')
    await offline.close()
    // Nothing was written: back online, the value is the old one and commits go on.
    const back = await open(dir, { engine, ...pgOptions(schema) })
    expect(back.get(back.collection('c'), 'k')).toBe('v')
    await back.transaction((tx) => tx.put(back.collection('c'), 'k', 'w'))
    expect(back.get(back.collection('c'), 'k')).toBe('w')
    await back.close()
  })

  it('a connection killed during commits (pg_terminate_backend): every outcome definite — each acknowledged commit is in the log, each refused one is not', async () => {
    const schema = newSchema()
    const a = await open(tempDir('a'), { engine, ...pgOptions(schema) })
    const c = a.collection<number>('c')
    const acked: number[] = []
    const refused: number[] = []
    let stop = false
    const killer = (async () => {
      // Bounded by `stop`.
      while (!stop) {
        await adminPool().query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'kestreldb' AND query ILIKE '%${schema}%'`,
        )
        await new Promise((r) => setTimeout(r, 3))
      }
    })()
    await Promise.all(
      Array.from({ length: 8 }, async (_, w) => {
        for (let i = 0; i < 40; i++) {
          const n = w * 1000 + i
          try {
            await a.transaction((tx) => tx.put(c, n, n), { retries: 0 })
            acked.push(n)
          } catch (err) {
            expect(['KESTREL_UNAVAILABLE', 'KESTREL_IO']).toContain((err as { code: string }).code)
            refused.push(n)
          }
        }
      }),
    )
    stop = true
    await killer
    await a.close()
    expect(acked.length).toBeGreaterThan(0)
    // The log is the truth: a fresh replica holds exactly the acknowledged commits.
    const fresh = await open(tempDir('fresh'), { engine: other(engine), ...pgOptions(schema) })
    const fc = fresh.collection<number>('c')
    const present = [...fresh.scan(fc)].map((e) => e.key as number).sort((x, y) => x - y)
    expect(present).toEqual([...acked].sort((x, y) => x - y))
    for (const n of refused) expect(fresh.get(fc, n)).toBeUndefined()
    await fresh.close()
    const rows = await adminPool().query(`SELECT count(*)::int AS n, max(lsn)::int AS m FROM "${schema}".kestrel_log`)
    expect(rows.rows[0]).toEqual({ n: acked.length, m: acked.length })
  })

  it('snapshots: a new replica starts from the newest one plus the log after it; the log is trimmed behind it and every live replica', async () => {
    const schema = newSchema()
    const a = await open(tempDir('a'), { engine, ...pgOptions(schema) })
    const b = await open(tempDir('b'), { engine: other(engine), ...pgOptions(schema) })
    const c = a.collection<{ n: number; pad: string }>('c')
    for (let i = 0; i < 30; i++) await a.transaction((tx) => tx.put(c, i, { n: i, pad: 'p'.repeat(500) }))
    await until('b to catch up', () => b.lastCommitId() === a.lastCommitId())
    // b heartbeats its applied LSN each second: wait until PostgreSQL has heard it.
    const replicas = () => adminPool().query(`SELECT min(applied_lsn)::int AS m FROM "${schema}".kestrel_replica`)
    const end = Date.now() + 5000
    while ((await replicas()).rows[0].m < 30 && Date.now() < end) await new Promise((r) => setTimeout(r, 50))
    const lsn = await (coreOf(a) as PgCore).snapshot()
    expect(lsn).toBe(30)
    // Every live replica has applied all 30: the log below the snapshot is gone.
    const left = await adminPool().query(`SELECT min(lsn)::int AS lo, count(*)::int AS n FROM "${schema}".kestrel_log`)
    expect(left.rows[0].n).toBe(0)
    for (let i = 30; i < 35; i++) await a.transaction((tx) => tx.put(c, i, { n: i, pad: '' }))
    const fresh = await open(tempDir('fresh'), { engine: other(engine), ...pgOptions(schema) })
    const fc = fresh.collection<{ n: number; pad: string }>('c')
    expect(fresh.lastCommitId()).toBe(35n)
    for (let i = 0; i < 35; i++) expect(fresh.get(fc, i)?.n).toBe(i)
    expect((await fresh.verify()).problems).toEqual([])
    // The new replica writes on top, and the others see it.
    await fresh.transaction((tx) => tx.put(fc, 'late', { n: -1, pad: '' }))
    await until('a to see it', () => a.get(c, 'late') !== undefined)
    for (const db of [a, b, fresh]) await db.close()
  })

  it('a bootstrap cut short (killed while moving the snapshot into place) is done again at the next open', async () => {
    const schema = newSchema()
    const a = await open(tempDir('a'), { engine, ...pgOptions(schema) })
    const c = a.collection<number>('c')
    for (let i = 0; i < 10; i++) await a.transaction((tx) => tx.put(c, i, i))
    expect(await (coreOf(a) as PgCore).snapshot()).toBe(10)
    // What a kill mid-bootstrap leaves: the staging directory, part of the files moved, no mark.
    const dir = tempDir('cut')
    mkdirSync(join(dir, '.kestrel-bootstrap', 'log'), { recursive: true })
    writeFileSync(join(dir, 'pages.kdb'), Buffer.alloc(4096, 7))
    const b = await open(dir, { engine: other(engine), ...pgOptions(schema) })
    expect(b.lastCommitId()).toBe(10n)
    expect(b.get(b.collection<number>('c'), 9)).toBe(9)
    expect(existsSync(join(dir, '.kestrel-bootstrap'))).toBe(false)
    expect(existsSync(join(dir, 'REPLICA'))).toBe(true)
    expect((await b.verify()).problems).toEqual([])
    await b.close()
    await a.close()
  })

  it('a replica gone long enough for its log to be trimmed starts again from the newest snapshot when it reopens', async () => {
    const schema = newSchema()
    const dirB = tempDir('b')
    const a = await open(tempDir('a'), { engine, ...pgOptions(schema) })
    const b = await open(dirB, { engine: other(engine), ...pgOptions(schema) })
    const c = a.collection<number>('c')
    await a.transaction((tx) => tx.put(c, 'first', 1))
    await until('b to catch up', () => b.lastCommitId() === a.lastCommitId())
    await b.close()
    for (let i = 0; i < 20; i++) await a.transaction((tx) => tx.put(c, i, i))
    // b is gone (it left the replica table when it closed): the trim passes it.
    await (coreOf(a) as PgCore).snapshot()
    const left = await adminPool().query(`SELECT count(*)::int AS n FROM "${schema}".kestrel_log`)
    expect(left.rows[0].n).toBe(0)
    const again = await open(dirB, { engine: other(engine), ...pgOptions(schema) })
    expect(again.lastCommitId()).toBe(a.lastCommitId())
    expect(again.get(again.collection<number>('c'), 19)).toBe(19)
    await again.transaction((tx) => tx.put(again.collection<number>('c'), 'b', 2))
    await until('a to see it', () => a.get(c, 'b') === 2)
    await again.close()
    await a.close()
  })

  it('a connection lost while COMMIT is in flight: the outcome is asked of PostgreSQL — written means acknowledged (once), unsent means refused', async () => {
    const schema = newSchema()
    const proxy = await pgProxy()
    try {
      const a = await open(tempDir('a'), { engine, postgres: { connectionString: proxy.url, schema } })
      const c = a.collection<number>('c')
      await a.transaction((tx) => tx.put(c, 'warm', 0))
      // Sent, then cut before the answer: PostgreSQL committed it; the replica learns so and acknowledges.
      proxy.cut('after')
      const txA = a.begin()
      txA.put(c, 'sent', 1)
      const { commitId } = await txA.commit()
      expect(proxy.cuts()).toBe(1)
      expect(a.get(c, 'sent')).toBe(1)
      // Cut before it is sent: not written, refused.
      proxy.cut('before')
      await expectCode(() => a.transaction((tx) => tx.put(c, 'unsent', 2), { retries: 0 }), 'KESTREL_UNAVAILABLE')
      expect(proxy.cuts()).toBe(2)
      expect(a.get(c, 'unsent')).toBeUndefined()
      // And commits go on.
      await a.transaction((tx) => tx.put(c, 'after', 3))
      await a.close()
      const rows = await adminPool().query(`SELECT lsn::int, batch FROM "${schema}".kestrel_log ORDER BY lsn`)
      expect(rows.rows.map((r) => r.lsn)).toEqual([1, 2, 3])
      expect(Number(commitId)).toBe(2)
      const fresh = await open(tempDir('fresh'), { engine: other(engine), ...pgOptions(schema) })
      const fc = fresh.collection<number>('c')
      expect([fresh.get(fc, 'warm'), fresh.get(fc, 'sent'), fresh.get(fc, 'unsent'), fresh.get(fc, 'after')]).toEqual([0, 1, undefined, 3])
      await fresh.close()
    } finally {
      await proxy.close()
    }
  })

  it('kestrel export / import move a database from a directory into PostgreSQL and back, every record and index kept; the CLI opens a replica with --postgres', async () => {
    const plain = tempDir('plain')
    const db = await open(plain, { engine })
    const users = db.collection<{ email: string; tags: string[]; at: Date }>('users', { indexes: { byEmail: { key: (u) => u.email, unique: true } } })
    await users.ready()
    await db.transaction((tx) => {
      for (let i = 0; i < 300; i++) tx.put(users, i, { email: `u${i}@example.com`, tags: ['a', `t${i % 7}`], at: new Date(1_700_000_000_000 + i) })
    })
    await db.transaction((tx) => tx.put(db.collection<bigint>('counters'), ['n', 1], 2n ** 70n))
    await db.close()
    const exported = `${tempDir('x')}.ndjson`
    expect(kestrel('export', plain, exported, '--engine', engine).status).toBe(0)
    const schema = newSchema()
    const replica = tempDir('replica')
    const imported = kestrel('import', exported, replica, '--engine', other(engine), '--postgres', PG_URL, '--schema', schema)
    expect(imported.stderr).not.toMatch(/kestrel:/)
    expect(imported.status).toBe(0)
    // Another host sees all of it, and its index answers as the original did.
    const host = await open(tempDir('host'), { engine, ...pgOptions(schema) })
    const hu = host.collection<{ email: string; tags: string[]; at: Date }>('users', { indexes: { byEmail: { key: (u) => u.email, unique: true } } })
    await hu.ready()
    expect([...host.scan(hu)]).toHaveLength(300)
    expect(host.get(hu, 42)).toEqual({ email: 'u42@example.com', tags: ['a', 't0'], at: new Date(1_700_000_000_042) })
    expect([...host.find(hu, 'byEmail', 'u7@example.com')].map((e) => e.key)).toEqual([7])
    expect(host.get(host.collection<bigint>('counters'), ['n', 1])).toBe(2n ** 70n)
    await host.close()
    // A replica needs --postgres; with it, stat and export work, and the export is the same records.
    const refused = kestrel('stat', replica)
    expect(refused.status).toBe(2)
    expect(refused.stderr).toMatch(/--postgres/)
    expect(kestrel('stat', replica, '--postgres', PG_URL).status).toBe(0)
    const back = `${tempDir('y')}.ndjson`
    expect(kestrel('export', replica, back, '--postgres', PG_URL).status).toBe(0)
    const records = (f: string) =>
      readFileSync(f, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('{"c"'))
    expect(records(back)).toEqual(records(exported))
    expect(records(back)).toHaveLength(301)
  })

  it('PostgreSQL gone while a replica runs: commits reject with KESTREL_UNAVAILABLE, reads serve its last state; back, it catches up and commits again', async () => {
    const schema = newSchema()
    const proxy = await pgProxy()
    try {
      const a = await open(tempDir('a'), { engine, ...pgOptions(schema) })
      const b = await open(tempDir('b'), { engine: other(engine), postgres: { connectionString: proxy.url, schema } })
      const ca = a.collection<number>('c')
      const cb = b.collection<number>('c')
      await a.transaction((tx) => tx.put(ca, 'k', 1))
      await until('b to catch up', () => b.get(cb, 'k') === 1)
      proxy.down()
      await a.transaction((tx) => tx.put(ca, 'k', 2))
      await expectCode(() => b.transaction((tx) => tx.put(cb, 'other', 1), { retries: 0 }), 'KESTREL_UNAVAILABLE')
      expect(b.get(cb, 'k')).toBe(1)
      expect(b.stats().replica?.reachable).toBe(false)
      proxy.up()
      // Within the poll period (and the LISTEN connection made again).
      await until('b to catch up after PostgreSQL is back', () => b.get(cb, 'k') === 2, 10_000)
      await b.transaction((tx) => tx.put(cb, 'other', 1))
      expect(b.stats().replica).toMatchObject({ reachable: true, lagCommits: 0 })
      await until('a to see it', () => a.get(ca, 'other') === 1)
      expect(b.get(cb, 'other')).toBe(1)
      await a.close()
      await b.close()
    } finally {
      await proxy.close()
    }
  })

  it('a schema written by a newer kestreldb is refused with KESTREL_FORMAT_VERSION; one holding other tables with KESTREL_NOT_A_DATABASE', async () => {
    const schema = newSchema()
    const a = await open(tempDir('a'), { engine, ...pgOptions(schema) })
    await a.close()
    await adminPool().query(`UPDATE "${schema}".kestrel_meta SET format = 2`)
    await expectCode(() => open(tempDir('b'), { engine, ...pgOptions(schema) }), 'KESTREL_FORMAT_VERSION')
    const other = newSchema()
    await adminPool().query(`CREATE SCHEMA "${other}"; CREATE TABLE "${other}".orders (id int)`)
    await expectCode(() => open(tempDir('c'), { engine, ...pgOptions(other) }), 'KESTREL_NOT_A_DATABASE')
  })

  it('bad options are refused with KESTREL_INVALID_ARGUMENT', async () => {
    await expectCode(
      () => open(tempDir(), { engine, postgres: { connectionString: PG_URL, schema: 'ok', snapshotEveryCommits: 0 } }),
      'KESTREL_INVALID_ARGUMENT',
    )
    await expectCode(() => open(tempDir(), { engine, postgres: { connectionString: PG_URL, schema: 'Bad-Name' } }), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => open(tempDir(), { engine, postgres: { connectionString: PG_URL } as never }), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => open(tempDir(), { engine, postgres: { connectionString: '', schema: 'ok' } }), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => open(tempDir(), { engine, postgres: { connectionString: PG_URL, schema: 'ok', pool: 3 } as never }), 'KESTREL_INVALID_ARGUMENT')
  })
})
