/**
 * Export and import (lib/export.ts, `kestrel export` / `kestrel import`, run from dist like
 * cli.test.ts): lossless round trips into the other engine, indexes re-created, streaming both
 * ways, truncated and damaged exports, targets that are not empty, and an export taken while
 * another process commits.
 */
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { PassThrough, Readable, Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { exportDatabase, importDatabase, open, type Collection, type Database, type EngineName, type ExportHeader, type Key } from '../lib/index.js'
import { ENGINES, expectCode, other, tempDir } from './helpers.js'

const BIN = fileURLToPath(new URL('../dist/cli/kestrel.js', import.meta.url))
const WRITER = fileURLToPath(new URL('./fixtures/export-writer.mjs', import.meta.url))

function kestrel(args: string[], input?: string): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', input, maxBuffer: 256 * 1024 * 1024 })
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr }
}

/** The same, without blocking this process (a child writer keeps running meanwhile). */
function kestrelAsync(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  p.stdout.on('data', (d) => {
    out += String(d)
  })
  p.stderr.on('data', (d) => {
    err += String(d)
  })
  return new Promise((resolve) => p.on('close', (code) => resolve({ code: code ?? -1, out, err })))
}

/** A Writable that keeps what it is given, as text. */
class Sink extends Writable {
  text = ''
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8')
    cb()
  }
}

async function exportText(db: Database): Promise<string> {
  const sink = new Sink()
  await exportDatabase(db, sink)
  return sink.text
}

interface User {
  name: string
  email: string
  team: string
}

/** The users collection with a unique and a non-unique index (`unique` left to the export when false). */
function users(db: Database, withUnique = true): Collection<User> {
  return db.collection<User>('users', {
    indexes: {
      byEmail: withUnique ? { key: (u) => u.email, unique: true } : { key: (u) => u.email },
      byTeam: { key: (u) => [u.team, u.name] },
    },
  })
}

/** Every kind of value the database accepts. */
const VALUES: Record<string, unknown> = {
  nested: { a: { b: { c: [1, { d: 'e' }] } }, list: [[], {}, [[]]] },
  map: new Map<unknown, unknown>([
    ['k', 1],
    [2, { x: new Date(5) }],
  ]),
  set: new Set<unknown>([1, 'two', 3n]),
  date: new Date('2024-02-29T12:34:56.789Z'),
  dates: [new Date(0), { at: new Date(-1) }],
  bytes: new Uint8Array([0, 1, 2, 255]),
  emptyBytes: new Uint8Array(0),
  bigint: 123456789012345678901234567890n,
  negativeBigint: -5n,
  int64: 2n ** 63n - 1n,
  unicode: 'héllo wörld — 日本語 🎉 \u0000 \u2028 "quoted" \\ back\nslash',
  emptyString: '',
  emptyArray: [],
  emptyObject: {},
  withUndefined: { a: undefined, b: [undefined, null] },
  numbers: [0, -0, 1.5, -1e-300, Number.MAX_SAFE_INTEGER, 2 ** 60, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY],
  scalars: [true, false, null],
  nullValue: null,
  plainNumber: 42,
  protoMember: JSON.parse('{"__proto__": 1, "a": 2}'),
  largeString: `${'x'.repeat(100 * 1024)}🎉`,
  largeBytes: Uint8Array.from({ length: 100 * 1024 }, (_, i) => (i * 7) & 0xff),
  largeObject: { items: Array.from({ length: 3000 }, (_, i) => ({ i, s: `item ${i}`, when: i % 100 === 0 ? new Date(i) : i })) },
}

/** Keys of every kind, composite ones too. */
const KEYS: Key[] = [
  0,
  -1.5,
  1e300,
  '',
  'plain',
  'ünïcødé 🎉',
  10n,
  -(2n ** 100n),
  new Uint8Array([0, 0, 255]),
  [1, 'a'],
  ['nested', [2n, new Uint8Array([1])], -3],
]

/** A database of several collections, with deletions and indexes; the source of the round trips. */
async function fillSource(engine: EngineName): Promise<string> {
  const dir = tempDir('source')
  const db = await open(dir, { engine })
  const u = users(db)
  const values = db.collection('values')
  const keys = db.collection('keys')
  const named = db.collection('café ☕')
  const emptied = db.collection('emptied')
  await db.transaction((tx) => {
    for (const [k, v] of Object.entries(VALUES)) tx.put(values, k, v)
    KEYS.forEach((k, i) => {
      tx.put(keys, k, { i })
    })
    tx.put(named, 'k', 'v')
    tx.put(emptied, 'only', 1)
    for (const k of ['gone1', 'gone2']) tx.put(values, k, 'deleted before the export')
  })
  for (let i = 0; i < 60; i++) {
    await db.transaction((tx) =>
      tx.put(u, `u${String(i).padStart(2, '0')}`, { name: `name ${i % 7}`, email: `user${i}@example.com`, team: ['red', 'green', 'blue'][i % 3]! }),
    )
  }
  await u.ready()
  await db.transaction((tx) => {
    tx.delete(values, 'gone1')
    tx.delete(values, 'gone2')
    tx.delete(emptied, 'only')
    tx.delete(u, 'u07')
    tx.put(u, 'u08', { name: 'renamed', email: 'user8@example.com', team: 'green' })
  })
  await db.close()
  return dir
}

const FIND_QUERIES: Array<[string, unknown]> = [
  ['byEmail', 'user8@example.com'],
  ['byEmail', 'user7@example.com'],
  ['byEmail', { gte: 'user1', lt: 'user3' }],
  ['byEmail', { reverse: true, limit: 10 }],
  ['byTeam', { prefix: ['green'] }],
  ['byTeam', ['red', 'name 3']],
  ['byTeam', {}],
]

/** Every record of every collection of `db` and the answers of FIND_QUERIES. */
function contents(db: Database, names: string[]): { records: Record<string, unknown[]>; finds: unknown[] } {
  const view = db.snapshot()
  try {
    const records: Record<string, unknown[]> = {}
    for (const n of names) records[n] = [...view.scan(db.collection(n))]
    const u = users(db)
    const finds = FIND_QUERIES.map(([index, q]) => [...view.find(u, index, q as Key)])
    return { records, finds }
  } finally {
    view.close()
  }
}

const NAMES = ['café ☕', 'keys', 'users', 'values']

describe.each(ENGINES)('export and import (%s source, the other engine as target)', (engine) => {
  it('round trip through the library: every record equal, deleted ones absent, indexes re-created with their unique flag', async () => {
    const src = await open(await fillSource(engine), { engine })
    users(src)
    const text = await exportText(src)
    const lines = text.split('\n')
    expect(lines.at(-1)).toBe('') // every line ends with \n
    const header = JSON.parse(lines[0]!) as ExportHeader
    expect(header).toMatchObject({ kestrel: 'export', format: 1, commitId: Number(src.lastCommitId()) })
    // The emptied collection holds nothing at the snapshot: not listed.
    expect(header.collections).toEqual([
      { name: 'café ☕', indexes: [] },
      { name: 'keys', indexes: [] },
      {
        name: 'users',
        indexes: [
          { name: 'byEmail', unique: true },
          { name: 'byTeam', unique: false },
        ],
      },
      { name: 'values', indexes: [] },
    ])
    expect(JSON.parse(lines.at(-2)!)).toEqual({
      kestrel: 'end',
      records: lines.length - 3,
      collections: { 'café ☕': 1, keys: KEYS.length, users: 59, values: Object.keys(VALUES).length },
    })
    // Plain JSON where it is exact, base64 of the codec's bytes where it is not.
    expect(lines).toContain('{"c":"users","k":"u08","v":{"name":"renamed","email":"user8@example.com","team":"green"}}')
    expect(lines).toContain('{"c":"values","k":"plainNumber","v":42}')
    expect(lines.find((l) => l.startsWith('{"c":"values","k":"date",'))).toMatch(/"vb":"[A-Za-z0-9+/=]+"}$/)
    expect(lines.find((l) => l.startsWith('{"c":"keys","kb":'))).toBeDefined()
    expect(text).not.toContain('gone1')
    expect(text).not.toContain('deleted before the export')

    const dst = await open(tempDir('target'), { engine: other(engine) })
    // Definitions without `unique`: the header's flag applies.
    const r = await importDatabase(dst, Readable.from([text]), {
      indexes: { users: { byEmail: { key: (u: User) => u.email }, byTeam: { key: (u: User) => [u.team, u.name] } } },
    })
    expect(r).toMatchObject({ records: lines.length - 3, transactions: 1, sourceCommitId: src.lastCommitId(), collections: NAMES })
    expect(r.indexes).toEqual([
      { collection: 'users', name: 'byEmail', unique: true, defined: true },
      { collection: 'users', name: 'byTeam', unique: false, defined: true },
    ])
    const want = contents(src, NAMES)
    expect(want.finds.flat().length).toBeGreaterThan(60)
    expect(contents(dst, NAMES)).toStrictEqual(want)
    expect(dst.get(dst.collection('values'), 'gone1')).toBeUndefined()
    expect([...dst.scan(dst.collection('emptied'))]).toEqual([])
    // The unique index holds in the target.
    await expectCode(() => dst.transaction((tx) => tx.put(users(dst), 'dup', { name: 'x', email: 'user8@example.com', team: 'red' })), 'KESTREL_UNIQUE')
    // And the target exports to the same records.
    const again = (await exportText(dst)).split('\n')
    expect(again.slice(1)).toEqual(lines.slice(1))
    await src.close()
    await dst.close()
  })

  it('round trip through the CLI: export to a file, import into a new directory; indexes are built once defined', async () => {
    const source = await fillSource(engine)
    const file = join(tempDir('out'), 'export.ndjson')
    mkdirSync(join(file, '..'), { recursive: true })
    const e = kestrel(['export', source, file, '--engine', engine, '--progress'])
    expect(e.code, e.err).toBe(0)
    const text = readFileSync(file, 'utf8')
    const header = JSON.parse(text.slice(0, text.indexOf('\n'))) as ExportHeader
    const count = text.split('\n').length - 3
    expect(e.out).toBe(`exported ${count} records of 4 collection(s) as of commit ${header.commitId} to ${file}\n`)
    expect(e.err).toMatch(new RegExp(`exported ${count} records\\s*\n$`))
    // The command has no key functions: the indexes are named, their flag unknown.
    expect(header.collections.find((c) => c.name === 'users')!.indexes).toEqual([
      { name: 'byEmail', unique: null },
      { name: 'byTeam', unique: null },
    ])
    // The same as a library export of the same snapshot.
    const src = await open(source, { engine })
    expect(text.split('\n').slice(1)).toEqual((await exportText(src)).split('\n').slice(1))

    const target = tempDir('imported')
    const i = kestrel(['import', file, target, '--engine', other(engine), '--progress'])
    expect(i.code, i.err).toBe(0)
    expect(i.out).toContain(`imported ${count} records of 4 collection(s) (commit ${header.commitId} of the export)`)
    expect(i.out).toContain('note: index "byEmail" of "users" is not built yet')
    expect(i.err).toContain(`imported ${count} records`)
    const dst = await open(target, { engine: other(engine) })
    await users(dst).ready()
    users(src)
    expect(contents(dst, NAMES)).toStrictEqual(contents(src, NAMES))
    await src.close()
    await dst.close()

    // Through stdout and stdin, with --json.
    const piped = kestrel(['export', source, '--engine', engine])
    expect(piped.code, piped.err).toBe(0)
    expect(piped.out.split('\n').slice(1)).toEqual(text.split('\n').slice(1))
    const viaStdin = kestrel(['import', '-', tempDir('stdin'), '--json'], piped.out)
    expect(viaStdin.code, viaStdin.err).toBe(0)
    expect(JSON.parse(viaStdin.out)).toMatchObject({ records: count, transactions: 1, collections: NAMES })
  })
})

describe.each(ENGINES)('export and import stream (%s)', (engine) => {
  it('an export of 20k records to a slow consumer keeps to its backpressure and imports back', async () => {
    const db = await open(tempDir(), { engine })
    const events = db.collection('events')
    for (let t = 0; t < 20; t++) {
      await db.transaction((tx) => {
        for (let i = 0; i < 1000; i++) tx.put(events, t * 1000 + i, { i: t * 1000 + i, text: 'lorem ipsum '.repeat(10) })
      })
    }
    let bytes = 0
    let buffered = 0
    const lines: string[] = []
    let rest = ''
    const slow = new Writable({
      highWaterMark: 16 * 1024,
      write(chunk: Buffer, _enc, cb) {
        bytes += chunk.length
        buffered = Math.max(buffered, slow.writableLength)
        const parts = (rest + chunk.toString('utf8')).split('\n')
        rest = parts.pop()!
        lines.push(...parts)
        setImmediate(cb) // consumed a chunk per event-loop turn
      },
    })
    const progress: number[] = []
    const r = await exportDatabase(db, slow, { onProgress: (p) => progress.push(p.records) })
    slow.end()
    await finished(slow)
    expect(r.records).toBe(20_000)
    expect(bytes).toBeGreaterThan(3 * 1024 * 1024)
    // Never more than the stream's buffer and one piece of the export waiting: not the whole output.
    expect(buffered).toBeLessThan(1024 * 1024)
    expect(progress.length).toBeGreaterThan(5)
    expect(lines).toHaveLength(20_002)
    expect(JSON.parse(lines[20_001]!)).toEqual({ kestrel: 'end', records: 20_000, collections: { events: 20_000 } })
    const dst = await open(tempDir('target'), { engine: other(engine) })
    expect(await importDatabase(dst, Readable.from([`${lines.join('\n')}\n`]))).toMatchObject({ records: 20_000, transactions: 20 })
    expect([...dst.scan(dst.collection('events'))]).toStrictEqual([...db.scan(events)])
    await dst.close()
    await db.close()
  })

  it('an import reads line by line and commits as it reads, in transactions of bounded records and bytes', async () => {
    const src = await open(tempDir(), { engine })
    const events = src.collection('events')
    await src.transaction((tx) => {
      for (let i = 0; i < 20_000; i++) tx.put(events, i, { i })
    })
    const lines = (await exportText(src)).split('\n')
    await src.close()
    const dst = await open(tempDir('target'), { engine: other(engine) })
    const input = new PassThrough()
    let reached: () => void = () => undefined
    const firstCommits = new Promise<void>((resolve) => {
      reached = resolve
    })
    const done = importDatabase(dst, input, {
      onProgress: (p) => {
        if (p.records >= 2000) reached()
      },
    })
    // Half the input: the import must commit before the rest arrives.
    input.write(`${lines.slice(0, 10_000).join('\n')}\n`)
    await firstCommits
    expect(dst.get(dst.collection('events'), 1999)).toEqual({ i: 1999 })
    input.end(lines.slice(10_000).join('\n'))
    const r = await done
    expect(r).toMatchObject({ records: 20_000, transactions: 20 })
    expect([...dst.scan(dst.collection('events'), { reverse: true, limit: 1 })]).toEqual([{ key: 19_999, value: { i: 19_999 } }])

    // Large records: the byte bound splits them, one line at a time.
    const big = await open(tempDir('big'), { engine })
    const blobs = big.collection('blobs')
    for (let i = 0; i < 10; i++) await big.transaction((tx) => tx.put(blobs, i, 'b'.repeat(1024 * 1024)))
    const text = await exportText(big)
    await big.close()
    const bigTarget = await open(tempDir('big-target'), { engine: other(engine) })
    const r2 = await importDatabase(bigTarget, Readable.from([text]), { transactionBytes: 4 * 1024 * 1024 })
    expect(r2).toMatchObject({ records: 10, transactions: 3 })
    await bigTarget.close()
    await dst.close()
  })
})

/** A source of 2500 small records; its export's lines (header, records in key order, end line, ''). */
async function smallExport(engine: EngineName): Promise<string[]> {
  const db = await open(tempDir(), { engine })
  const c = db.collection('items')
  await db.transaction((tx) => {
    for (let i = 0; i < 2500; i++) tx.put(c, i, { i })
  })
  const lines = (await exportText(db)).split('\n')
  await db.close()
  return lines
}

/** The keys a database holds in `items`. */
async function itemKeys(dir: string, engine: EngineName): Promise<number[]> {
  const db = await open(dir, { engine })
  const keys = [...db.scan(db.collection('items'))].map((e) => e.key as number)
  await db.close()
  return keys
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i)

describe.each(ENGINES)('truncated and damaged exports (%s target)', (engine) => {
  it('a truncated export fails naming the line; the target holds exactly the transactions committed before it', async () => {
    const lines = await smallExport(other(engine))
    expect(lines).toHaveLength(2503)
    // Cut in the middle of the record on line 1802 (record 1800).
    const cut = `${lines.slice(0, 1801).join('\n')}\n${lines[1801]!.slice(0, 10)}`
    const target = tempDir('cut')
    const db = await open(target, { engine })
    const err = await expectCode(() => importDatabase(db, Readable.from([cut])), 'KESTREL_CORRUPT')
    expect(err.message).toContain('line 1802 of the export: cut short at the end of the input: the export is truncated')
    expect(err.message).toContain('1000 records were imported, in 1 whole transaction;')
    await db.close()
    expect(await itemKeys(target, engine)).toEqual(range(1000))

    // Cut at a line end, before the end line: the command exits 1.
    const file = join(tempDir('files'), 'no-end.ndjson')
    mkdirSync(join(file, '..'), { recursive: true })
    writeFileSync(file, `${lines.slice(0, 2501).join('\n')}\n`)
    const target2 = tempDir('no-end')
    const r = kestrel(['import', file, target2, '--engine', engine])
    expect(r.code, r.err).toBe(1)
    expect(r.err).toContain('KESTREL_CORRUPT')
    expect(r.err).toContain('the export ends after line 2501 without its end line')
    expect(r.err).toContain('2000 records were imported, in 2 whole transactions')
    expect(await itemKeys(target2, engine)).toEqual(range(2000))

    // A record missing in the middle: the end line's count gives it away.
    const target3 = tempDir('missing')
    const db3 = await open(target3, { engine })
    const missing = [...lines.slice(0, 100), ...lines.slice(101)].join('\n')
    const err3 = await expectCode(() => importDatabase(db3, Readable.from([missing])), 'KESTREL_CORRUPT')
    expect(err3.message).toContain('line 2501 of the export: the end line counts 2500 records, the export holds 2499')
    await db3.close()
    expect(await itemKeys(target3, engine)).toHaveLength(2000)
  })

  it('bad headers, garbage lines and unknown collections give the right exit code and say what is wrong', async () => {
    const lines = await smallExport(engine)
    const header = lines[0]!
    const end = (n: number): string => JSON.stringify({ kestrel: 'end', records: n, collections: { items: n } })
    const cases: Array<[string, string, number, string]> = [
      ['empty input', '', 2, 'the input is empty, not a kestrel export'],
      ['not JSON', 'hello\n', 2, 'line 1 is not the header of a kestrel export'],
      ['another JSON file', '{"name":"package"}\n', 2, 'line 1 is not the header of a kestrel export'],
      ['a newer format', `${header.replace('"format":1', '"format":2')}\n${end(0)}\n`, 3, 'the export is in format 2; this kestreldb reads format 1'],
      ['a damaged header', `${header.replace('"collections":[', '"collections":[7,')}\n`, 1, 'line 1 of the export: a collection in the header is not'],
      ['a garbage line', `${header}\n${lines[1]}\n{"c":"items",garbage\n${end(2)}\n`, 1, 'line 3 of the export: not JSON'],
      [
        'an unknown collection',
        `${header}\n{"c":"nope","k":1,"v":1}\n${end(1)}\n`,
        1,
        'line 2 of the export: a record of collection "nope", which the header (line 1) does not list',
      ],
      ['bad base64', `${header}\n{"c":"items","k":1,"vb":"**"}\n${end(1)}\n`, 1, 'line 2 of the export: "vb" is not base64'],
      ['not a key', `${header}\n{"c":"items","k":true,"v":1}\n${end(1)}\n`, 1, 'line 2 of the export: "k" is not a key'],
      ['no value', `${header}\n{"c":"items","k":1}\n${end(1)}\n`, 1, 'line 2 of the export: a record needs exactly one of "v" and "vb"'],
      ['a line after the end', `${header}\n${end(0)}\n${lines[1]}\n`, 1, 'line 3 of the export: a line after the end line'],
    ]
    for (const [what, input, code, message] of cases) {
      const target = tempDir('bad')
      const r = kestrel(['import', '-', target, '--engine', engine], input)
      expect(r.code, `${what}: ${r.err}`).toBe(code)
      expect(r.err, what).toContain(message)
      expect(await itemKeys(target, engine), what).toEqual([])
    }
    // A line longer than the import reads: refused before it is gathered.
    const db = await open(tempDir('long'), { engine })
    const long = `${header}\n{"c":"items","k":1,"v":"${'x'.repeat(5000)}"}\n${end(1)}\n`
    const err = await expectCode(() => importDatabase(db, Readable.from([long]), { maxLineBytes: 1000 }), 'KESTREL_CORRUPT')
    expect(err.message).toContain('line 2 of the export: longer than 1000 bytes')
    await db.close()
  })

  it('a target that is not new or empty is refused (exit 2) and left as it was; exports never overwrite', async () => {
    const lines = await smallExport(engine)
    const file = join(tempDir('files'), 'items.ndjson')
    mkdirSync(join(file, '..'), { recursive: true })
    writeFileSync(file, lines.join('\n'))
    const full = tempDir('full')
    const db = await open(full, { engine })
    await db.transaction((tx) => tx.put(db.collection('items'), 'mine', 1))
    await db.close()
    const r = kestrel(['import', file, full, '--engine', engine])
    expect(r.code, r.err).toBe(2)
    expect(r.err).toContain('the target database already holds records (collection "items"); import into a new or empty database')
    expect(await itemKeys(full, engine)).toEqual(['mine'])
    const foreign = tempDir('foreign')
    mkdirSync(foreign, { recursive: true })
    writeFileSync(join(foreign, 'notes.txt'), 'hello')
    const f = kestrel(['import', file, foreign])
    expect(f.code, f.err).toBe(2)
    expect(readdirSync(foreign)).toEqual(['notes.txt'])
    // An existing, empty database is a fine target.
    const empty = tempDir('empty')
    await (await open(empty, { engine })).close()
    expect(kestrel(['import', file, empty, '--engine', engine]).code).toBe(0)
    expect(await itemKeys(empty, engine)).toEqual(range(2500))

    // Exports: an existing file stays as it was; a directory that holds no database is not made one.
    const e = kestrel(['export', full, file, '--engine', engine])
    expect(e.code, e.err).toBe(2)
    expect(e.err).toContain('exists; give a new file')
    expect(readFileSync(file, 'utf8')).toBe(lines.join('\n'))
    const bare = tempDir('bare')
    mkdirSync(bare)
    expect(kestrel(['export', bare]).code).toBe(3)
    expect(readdirSync(bare)).toEqual([])
    expect(kestrel(['export', join(bare, 'missing')]).code).toBe(3)
    expect(kestrel(['import', join(bare, 'no-such-file'), tempDir()]).code).toBe(2)
  })
})

describe('export and import: usage', () => {
  it('bad arguments exit 2 with the usage text; help lists both commands', () => {
    for (const args of [['export'], ['export', 'a', 'b', 'c'], ['import', 'only-one'], ['import', 'a', 'b', 'c']]) {
      const r = kestrel(args)
      expect(r.code, args.join(' ')).toBe(2)
      expect(r.err).toContain('usage: kestrel')
    }
    const help = kestrel(['help'])
    expect(help.out).toContain('export <dir> [<file>]')
    expect(help.out).toContain('import <file> <dir>')
  })
})

describe.each(ENGINES)('export while another process writes (%s exporter, the other engine writing)', (engine) => {
  it('the export is one snapshot: its tally matches its events, its accounts sum to 1000', async () => {
    const dir = tempDir()
    const child = spawn(process.execPath, [WRITER, dir, other(engine), '3000'], { stdio: ['pipe', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d) => {
      stderr += String(d)
    })
    let acked = 0
    let ready: () => void = () => undefined
    const isReady = new Promise<void>((resolve) => {
      ready = resolve
    })
    const waiters: Array<[number, () => void]> = []
    let result = ''
    createInterface({ input: child.stdout }).on('line', (l) => {
      if (l === 'READY') ready()
      else if (l.startsWith('ACK ')) {
        acked = Number(l.slice(4))
        for (const [n, resolve] of waiters.splice(0)) {
          if (acked >= n) resolve()
          else waiters.push([n, resolve])
        }
      } else result = l
    })
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
    const acks = (n: number): Promise<void> =>
      acked >= n
        ? Promise.resolve()
        : new Promise((resolve, reject) => {
            waiters.push([n, resolve])
            void exited.then(() => reject(new Error(`the writer exited: ${stderr}`)))
          })
    try {
      await isReady
      await acks(3050)
      const file = join(tempDir('out'), 'live.ndjson')
      mkdirSync(join(file, '..'), { recursive: true })
      const e = await kestrelAsync(['export', dir, file, '--engine', engine])
      expect(e.code, e.err).toBe(0)
      const lines = readFileSync(file, 'utf8').trimEnd().split('\n')
      const records = lines.slice(1, -1).map((l) => JSON.parse(l) as { c: string; k: unknown; v: unknown })
      const n = records.find((r) => r.c === 'tally' && r.k === 'n')!.v as number
      const events = records.filter((r) => r.c === 'events').map((r) => r.k)
      // Writes kept coming while the export read: the snapshot is somewhere in the middle.
      expect(n).toBeGreaterThanOrEqual(3050)
      expect(events).toEqual(range(n))
      const accounts = records.filter((r) => r.c === 'accounts').map((r) => r.v as number)
      expect(accounts).toHaveLength(2)
      expect(accounts[0]! + accounts[1]!).toBe(1000)
      // The writer goes on past the snapshot before it is stopped.
      await acks(n + 10)
    } finally {
      child.stdin.end()
    }
    expect(await exited, stderr).toBe(0)
    expect((JSON.parse(result) as { n: number }).n).toBeGreaterThan(3050)
  })
})
