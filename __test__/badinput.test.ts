/**
 * I8: bad input gets a KestrelError with a stable code and a message that says what to do, and
 * nothing committed is lost because of it.
 */
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, readdirSync, writeFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { open, KestrelError } from '../lib/index.js'
import { ENGINES, expectCode, tempDir } from './helpers.js'
import { crc32c } from '../lib/format/crc32c.js'
import { openWithFaults } from '../lib/testing.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

describe.each(ENGINES)('bad input [%s]', (engine) => {
  it('values and keys the codecs refuse; the transaction stays usable and nothing is lost', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    const c = db.collection('items')
    const tx = db.begin()
    tx.put(c, 'ok', 1)
    await expectCode(() => tx.put(c, 'f', { fn: () => 1 }), 'KESTREL_INVALID_VALUE')
    await expectCode(() => tx.put(c, 'u', undefined), 'KESTREL_INVALID_VALUE')
    await expectCode(() => tx.put(c, 'x'.repeat(2000), 1), 'KESTREL_KEY_TOO_LARGE')
    await expectCode(() => tx.put(c, { not: 'a key' } as never, 1), 'KESTREL_INVALID_KEY')
    await expectCode(() => tx.get(c, null as never), 'KESTREL_INVALID_KEY')
    await expectCode(() => tx.put(c, NaN, 1), 'KESTREL_INVALID_KEY')
    await expectCode(() => tx.put({ name: 'items' } as never, 'k', 1), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => db.collection(''), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => db.collection('n'.repeat(256)), 'KESTREL_INVALID_ARGUMENT')
    await tx.commit()
    expect(db.begin().get(c, 'ok')).toBe(1)
    await db.close()
  })

  it('a transaction cannot be used after commit or rollback', async () => {
    const db = await open(tempDir(), { engine })
    const c = db.collection('items')
    const tx = db.begin()
    tx.put(c, 'a', 1)
    await tx.commit()
    await expectCode(() => tx.commit(), 'KESTREL_TRANSACTION_DONE')
    await expectCode(() => tx.put(c, 'b', 2), 'KESTREL_TRANSACTION_DONE')
    await expectCode(() => tx.rollback(), 'KESTREL_TRANSACTION_DONE')
    const rolled = db.begin()
    rolled.put(c, 'c', 3)
    rolled.rollback()
    rolled.rollback() // idempotent
    await expectCode(() => rolled.get(c, 'c'), 'KESTREL_TRANSACTION_DONE')
    expect(db.begin().get(c, 'c')).toBeUndefined()
    // A callback that throws rolls back and rethrows.
    await expect(
      db.transaction((t) => {
        t.put(c, 'd', 4)
        throw new Error('boom')
      }),
    ).rejects.toThrow('boom')
    expect(db.begin().get(c, 'd')).toBeUndefined()
    await db.close()
  })

  it('use after close: KESTREL_CLOSED everywhere; another handle of the directory keeps working', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    const second = await open(dir, { engine: 'auto' }) // shares the running engine
    expect(second.engine).toBe(engine)
    const c = db.collection('items')
    const tx = db.begin()
    tx.put(c, 'a', 1)
    await db.close()
    await db.close() // idempotent
    await expectCode(() => db.begin(), 'KESTREL_CLOSED')
    await expectCode(() => db.collection('items'), 'KESTREL_CLOSED')
    await expectCode(() => tx.commit(), 'KESTREL_CLOSED')
    await expectCode(() => tx.get(c, 'a'), 'KESTREL_CLOSED')
    await expectCode(() => db.stats(), 'KESTREL_CLOSED')
    const c2 = second.collection('items')
    await second.transaction((t) => t.put(c2, 'b', 2))
    expect(second.begin().get(c2, 'b')).toBe(2)
    await second.close()
  })

  it('opening a plain file, a foreign directory, or a damaged identity file', async () => {
    const file = tempDir('plain')
    writeFileSync(file, 'hello')
    const e1 = await expectCode(() => open(file, { engine }), 'KESTREL_NOT_A_DATABASE')
    expect(e1.message).toMatch(/empty or new directory/)

    const foreign = tempDir('foreign')
    mkdirSync(foreign)
    writeFileSync(join(foreign, 'notes.txt'), 'mine')
    await expectCode(() => open(foreign, { engine }), 'KESTREL_NOT_A_DATABASE')
    expect(readdirSync(foreign)).toEqual(['notes.txt']) // nothing written into it

    const dir = tempDir()
    const db = await open(dir, { engine })
    await db.close()
    const identity = readFileSync(join(dir, 'KESTREL'))
    identity[3]! ^= 0xff
    writeFileSync(join(dir, 'KESTREL'), identity)
    await expectCode(() => open(dir, { engine }), 'KESTREL_NOT_A_DATABASE')
  })

  it('bad options are KESTREL_INVALID_ARGUMENT', async () => {
    const dir = tempDir()
    await expectCode(() => open(dir, { engine, durability: 'maybe' as never }), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => open(dir, { engine, segmentBytes: 10 }), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => open(dir, { engine: 'fast' as never }), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => open('' as never), 'KESTREL_INVALID_ARGUMENT')
  })

  it('unknown options are refused, naming the option and the likely one meant', async () => {
    const dir = tempDir()
    const misspelt = await expectCode(() => open(dir, { engine, durabilty: 'sync' } as never), 'KESTREL_INVALID_ARGUMENT')
    expect(misspelt.message).toContain('unknown option durabilty: did you mean option durability?')
    await expectCode(() => open(dir, { engine, retainHistory: { commit: 5 } } as never), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => open(dir, { engine, faults: {} } as never), 'KESTREL_INVALID_ARGUMENT') // only through kestreldb/testing
    await expectCode(() => openWithFaults(dir, { engine, faults: { failWrite: 1 } } as never), 'KESTREL_INVALID_ARGUMENT')
    const other = await expectCode(() => open(dir, { engine, compression: true } as never), 'KESTREL_INVALID_ARGUMENT')
    expect(other.message).toContain('unknown option compression: the known ones are engine, durability')
    // Nothing was opened, so the directory is free.
    const db = await open(dir, { engine })
    await db.close()
  })

  it('a meta page whose live-record count is wrong is KESTREL_CORRUPT, never a wrapped count', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    await db.transaction((tx) => {
      tx.put(db.collection('items'), 'a', 1)
      tx.put(db.collection('items'), 'b', 2)
    })
    await db.checkpoint()
    await db.close()
    // Rewrite `records` (offset 64) of every valid meta slot to 1 and re-seal its checksum.
    const path = join(dir, 'pages.kdb')
    const file = readFileSync(path)
    let doctored = 0
    for (const slot of [0, 1]) {
      const page = new Uint8Array(file.buffer, file.byteOffset + slot * 4096, 4096)
      const view = new DataView(page.buffer, page.byteOffset, 4096)
      if (page[4] !== 1 || view.getUint32(0, true) !== crc32c(page, 0, 4, 4096)) continue
      expect(view.getBigUint64(64, true)).toBe(2n)
      view.setBigUint64(64, 1n, true)
      view.setUint32(0, crc32c(page, 0, 4, 4096), true)
      doctored++
    }
    expect(doctored).toBeGreaterThan(0)
    writeFileSync(path, file)
    const err = await expectCode(() => open(dir, { engine }), 'KESTREL_CORRUPT')
    expect(err.message).toContain('counts 1 live records but the catalog')
  })

  it('a directory held by a kestreldb that does not share (an older version) is KESTREL_LOCKED, naming it', async () => {
    const dir = tempDir()
    mkdirSync(dir, { recursive: true })
    // Such a process holds the directory's base lock for its whole life and names itself in LOCK.
    const script = `import { acquireLock } from ${JSON.stringify(join(ROOT, 'dist/lock.js'))}
      await acquireLock(process.argv[1], ${JSON.stringify(engine)}); console.log('HELD'); process.stdin.resume(); process.stdin.on('end', () => process.exit(0))`
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, dir], { stdio: ['pipe', 'pipe', 'inherit'] })
    await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()))
    const err = await expectCode(() => open(dir, { engine }), 'KESTREL_LOCKED')
    expect(err.message).toContain(String(child.pid))
    expect(err.message).toContain('does not share')
    child.stdin!.end()
    await new Promise((r) => child.on('exit', r))
    const db = await open(dir, { engine }) // free again once that process let go
    await db.close()
  })

  it('a directory open in another process is shared, not refused', async () => {
    const dir = tempDir()
    const child = spawn(process.execPath, [join(ROOT, '__test__/fixtures/hold-open.mjs'), dir, engine], { stdio: ['pipe', 'pipe', 'inherit'] })
    await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()))
    const db = await open(dir, { engine })
    await db.transaction((tx) => tx.put(db.collection<number>('n'), 1, 1))
    child.stdin!.end()
    await new Promise((r) => child.on('exit', r))
    await db.close()
  })
})

describe('missing native binary', () => {
  const script = `
    import { open } from ${JSON.stringify(join(ROOT, 'dist/index.js'))}
    const dir = process.argv[1]
    try { await open(dir + '/n', { engine: 'native' }); console.log('OPENED') }
    catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }
    const db = await open(dir + '/a', { engine: 'auto' })
    const db2 = await open(dir + '/b', { engine: 'auto' })
    console.log(JSON.stringify({ auto: db.engine }))
    await db.close(); await db2.close()
  `
  it("engine 'native' → KESTREL_NATIVE_UNAVAILABLE naming the package; 'auto' → ts with one warning", () => {
    const dir = tempDir()
    mkdirSync(dir)
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, dir], {
      env: { ...process.env, KESTREL_NATIVE_BINDING: '/nonexistent/kestrel-binding.cjs' },
      encoding: 'utf8',
    })
    const [first, second] = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(first.code).toBe('KESTREL_NATIVE_UNAVAILABLE')
    expect(first.message).toMatch(/kestreldb-linux-x64-gnu|kestreldb-/)
    expect(first.message).toMatch(/npm run build:native/)
    expect(second.auto).toBe('ts')
    expect(r.stderr.match(/KESTREL_NATIVE_FALLBACK/g)?.length ?? r.stderr.match(/Using the pure-TypeScript engine/g)?.length).toBe(1)
  })

  it('KestrelError is exported and carries its code', () => {
    const e = new KestrelError('KESTREL_IO', 'x')
    expect(e).toBeInstanceOf(Error)
    expect(e.code).toBe('KESTREL_IO')
  })
})
