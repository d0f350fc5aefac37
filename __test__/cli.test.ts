/**
 * The `kestrel` command (dist/cli/kestrel.js, built by `npm test`): stat, verify, backup, restore,
 * bad arguments, a missing or corrupt directory, backups short of their manifest, a backup open
 * elsewhere, and its exit codes.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync, closeSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { open } from '../lib/index.js'
import { closeHolder, COMMITS, DAMAGES, damagedCopy, holdOpen, makeBackup } from './backup-helpers.js'
import { ENGINES, tempDir } from './helpers.js'

const BIN = fileURLToPath(new URL('../dist/cli/kestrel.js', import.meta.url))

function kestrel(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' })
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr }
}

async function makeDb(engine: 'native' | 'ts'): Promise<string> {
  const dir = tempDir()
  const db = await open(dir, { engine })
  const c = db.collection<string>('things')
  for (let i = 0; i < 30; i++)
    await db.transaction((tx) => {
      for (let j = 0; j < 50; j++) tx.put(c, [i, j], 'v'.repeat(50))
    })
  await db.checkpoint()
  await db.transaction((tx) => tx.put(c, 'tail', 'after the checkpoint'))
  await db.close()
  return dir
}

describe('kestrel CLI: usage', () => {
  it('bad arguments exit 2 with the usage text', () => {
    for (const args of [
      [],
      ['frobnicate'],
      ['stat'],
      ['verify', 'a', 'b'],
      ['backup', 'only-one'],
      ['stat', '--bogus', 'x'],
      ['stat', '--engine', 'rust', 'x'],
    ]) {
      const r = kestrel(...args)
      expect(r.code, args.join(' ')).toBe(2)
      expect(r.err).toContain('usage: kestrel')
    }
    const help = kestrel('help')
    expect(help.code).toBe(0)
    expect(help.out).toContain('restore <backup> <dir>')
  })

  it('a missing directory or one that is not a database exits 3', () => {
    const missing = join(tempDir(), 'nope')
    for (const cmd of ['stat', 'verify']) {
      const r = kestrel(cmd, missing)
      expect(r.code, cmd).toBe(3)
      expect(r.err).toContain('KESTREL_NOT_A_DATABASE')
    }
    const foreign = tempDir('foreign')
    mkdirSync(foreign, { recursive: true })
    writeFileSync(join(foreign, 'notes.txt'), 'hello')
    expect(kestrel('verify', foreign).code).toBe(3)
    expect(kestrel('stat', foreign).code).toBe(3)
    expect(kestrel('backup', foreign, tempDir('b')).code).toBe(3)
  })
})

describe.each(ENGINES)('kestrel CLI (%s-written database)', (engine) => {
  it('stat, verify, backup and restore a database; the restored copy verifies and opens', async () => {
    const dir = await makeDb(engine)
    const stat = kestrel('stat', dir, '--json')
    expect(stat.code, stat.err).toBe(0)
    const s = JSON.parse(stat.out) as { keys: number; checkpointLsn: number; durableLsn: number }
    expect(s.keys).toBe(1501)
    expect(s.checkpointLsn).toBe(31) // close wrote a final checkpoint
    const v = kestrel('verify', dir)
    expect(v.code, v.out + v.err).toBe(0)
    expect(v.out).toMatch(/^ok: checkpoint at commit 31/)
    const dest = tempDir('backup')
    const b = kestrel('backup', dir, dest, '--progress')
    expect(b.code, b.err).toBe(0)
    expect(b.out).toContain('backed up commit 31')
    expect(b.err).toMatch(/\[#+\] 100%/)
    const target = tempDir('restored')
    const r = kestrel('restore', dest, target)
    expect(r.code, r.err).toBe(0)
    expect(kestrel('verify', target, '--json').code).toBe(0)
    const db = await open(target, { engine: engine === 'native' ? 'ts' : 'native' })
    expect(db.snapshot().get(db.collection<string>('things'), 'tail')).toBe('after the checkpoint')
    expect(db.stats().keys).toBe(1501)
    await db.close()
    // A backup never overwrites: a non-empty target is bad usage.
    expect(kestrel('backup', dir, target).code).toBe(2)
    expect(kestrel('restore', dest, target).code).toBe(2)
  })

  it('verify reports a corrupt page and exits 1; a database another process has open is checked as it runs', async () => {
    const dir = await makeDb(engine)
    const pages = join(dir, 'pages.kdb')
    const file = readFileSync(pages)
    expect(file.length).toBeGreaterThan(3 * 4096)
    // Flip bytes in the middle of the catalog root, read from the newer meta slot (FORMAT.md:
    // u64 seq at byte 8, u32 catalog root at byte 48).
    const slot = file.readBigUInt64LE(8) > file.readBigUInt64LE(4096 + 8) ? 0 : 1
    const root = file.readUInt32LE(slot * 4096 + 48)
    expect(root).toBeGreaterThan(1)
    const fd = openSync(pages, 'r+')
    writeSync(fd, Buffer.from([0xde, 0xad, 0xbe, 0xef]), 0, 4, root * 4096 + 100)
    closeSync(fd)
    const v = kestrel('verify', dir)
    expect(v.code, v.out + v.err).toBe(1)
    expect(v.out).toContain(`page ${root}`)
    const clean = await makeDb(engine)
    const db = await open(clean, { engine })
    await db.transaction((tx) => tx.put(db.collection<number>('more'), 1, 1))
    const r = kestrel('verify', clean)
    expect(r.code, r.out + r.err).toBe(0)
    expect(r.out).toMatch(/ok|no problems/i)
    await db.close()
  })
})

describe.each(ENGINES)('kestrel CLI and backups (%s)', (engine) => {
  it('restore and verify exit 1 for a backup short of its manifest, naming the file; a whole one restores', async () => {
    const { backup } = await makeBackup(engine)
    const v = kestrel('verify', backup)
    expect(v.code, v.out + v.err).toBe(0)
    expect(v.out).toContain(`backup of commit ${COMMITS}`)
    for (const damage of DAMAGES) {
      const { dir, file } = damagedCopy(backup, damage)
      const target = tempDir('target')
      const r = kestrel('restore', dir, target)
      expect(r.code, `${damage.name}: ${r.err}`).toBe(1)
      expect(r.err, damage.name).toContain('KESTREL_CORRUPT')
      expect(r.err, damage.name).toContain(file)
      expect(existsSync(target), damage.name).toBe(false)
      const check = kestrel('verify', dir)
      expect(check.code, `${damage.name}: ${check.out}${check.err}`).toBe(1)
      expect(check.out, damage.name).toContain(file)
    }
    const target = tempDir('restored')
    const r = kestrel('restore', backup, target)
    expect(r.code, r.err).toBe(0)
    expect(r.out).toContain(`restored commit ${COMMITS}`)
  })

  it('restore exits 3 when another process has the backup or the database open', async () => {
    const { db, backup } = await makeBackup(engine)
    for (const dir of [db, backup]) {
      const holder = await holdOpen(dir, engine)
      try {
        const target = tempDir('target')
        const r = kestrel('restore', dir, target)
        expect(r.code, r.err).toBe(3)
        expect(r.err).toContain('KESTREL_LOCKED')
        expect(existsSync(target)).toBe(false)
      } finally {
        await closeHolder(holder)
      }
    }
  })
})
