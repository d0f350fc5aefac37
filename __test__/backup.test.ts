/**
 * Online backup (I4) on both engines. The central property: a backup taken while writers commit
 * 500-record transactions holds whole transactions only, because no page is written and no log
 * segment deleted while the backup copies (the flusher is suspended), and the log is copied up to
 * a batch boundary.
 */
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { open, restore, verifyDirectory, type BackupResult, type Database } from '../lib/index.js'
import { closeHolder, COMMITS, DAMAGES, damagedCopy, holdOpen, makeBackup, RECORDS, ROOT, segments } from './backup-helpers.js'
import { coreOf, ENGINES, expectCode, other, tempDir } from './helpers.js'

const TX_RECORDS = 500

interface Acked {
  writer: number
  n: number
  commitId: bigint
}

/** Writers commit transactions of exactly 500 records until `stop()`; returns what was acknowledged. */
function startWriters(db: Database, writers: number): { acked: Acked[]; stop: () => Promise<void> } {
  const c = db.collection('records')
  const acked: Acked[] = []
  let running = true
  const loops = Array.from({ length: writers }, async (_, writer) => {
    // Bounded by stop().
    for (let n = 0; running; n++) {
      const info = await db.transaction((tx) => {
        for (let i = 0; i < TX_RECORDS; i++) tx.put(c, [writer, n, i], { writer, n, i, pad: 'p'.repeat(40) })
      })
      void info
      acked.push({ writer, n, commitId: db.lastCommitId() })
    }
  })
  return {
    acked,
    stop: async () => {
      running = false
      await Promise.all(loops)
    },
  }
}

/** Restore `backup`, open the copy with `engine`, and check it against what was acknowledged before the backup. */
async function checkBackup(engine: 'native' | 'ts', backup: BackupResult, ackedBefore: Acked[]): Promise<number> {
  const restored = tempDir('restored')
  const report = await restore(backup.path, restored)
  expect(report.ok, report.problems.join('\n')).toBe(true)
  const db = await open(restored, { engine })
  try {
    expect(db.lastCommitId()).toBe(backup.commitId)
    const c = db.collection<{ writer: number; n: number; i: number }>('records')
    const snap = db.snapshot()
    const perTx = new Map<string, number>()
    let count = 0
    for (const { value } of snap.scan(c)) {
      count++
      const k = `${value.writer}/${value.n}`
      perTx.set(k, (perTx.get(k) ?? 0) + 1)
    }
    snap.close()
    expect(count % TX_RECORDS, `a backup holding ${count} records has a partial transaction`).toBe(0)
    for (const [k, n] of perTx) expect(n, `transaction ${k}`).toBe(TX_RECORDS)
    for (const a of ackedBefore) expect(perTx.get(`${a.writer}/${a.n}`), `commit ${a.commitId} acknowledged before backup()`).toBe(TX_RECORDS)
    const v = await db.verify()
    expect(v.ok, v.problems.join('\n')).toBe(true)
    return count
  } finally {
    await db.close()
  }
}

describe.each(ENGINES)('backup (%s)', (engine) => {
  for (const busy of [false, true]) {
    it(`backups under writers hold whole 500-record transactions only${busy ? ', with the flusher busy when each backup starts' : ''}`, async () => {
      const dir = tempDir()
      const db = await open(dir, { engine, checkpointBytes: 256 * 1024, checkpointIntervalMs: 20 })
      const w = startWriters(db, 2)
      const backups: Array<{ result: BackupResult; ackedBefore: Acked[] }> = []
      try {
        // Let some transactions and checkpoints happen first.
        while (w.acked.length < 4) await new Promise((r) => setTimeout(r, 5))
        for (let i = 0; i < 4; i++) {
          if (busy) {
            // A checkpoint in flight when the backup suspends the flusher: the backup must wait it out.
            void db.checkpoint().catch(() => undefined)
            await new Promise((r) => setImmediate(r))
          }
          const ackedBefore = [...w.acked]
          const result = await db.backup(tempDir(`backup${i}`))
          backups.push({ result, ackedBefore })
          expect(result.commitId >= (ackedBefore.at(-1)?.commitId ?? 0n)).toBe(true)
        }
      } finally {
        await w.stop()
      }
      expect(coreOf(db).stats().flow.suspended).toBe(0)
      await db.close()
      const counts: number[] = []
      for (const [i, b] of backups.entries()) counts.push(await checkBackup(i % 2 === 0 ? other(engine) : engine, b.result, b.ackedBefore))
      expect(counts.at(-1)! > 0).toBe(true)
    })
  }

  it('reports progress, resolves with the commit id and the bytes copied, and the copy opens in the other engine', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    const c = db.collection<string>('c')
    for (let i = 0; i < 50; i++)
      await db.transaction((tx) => {
        for (let j = 0; j < 100; j++) tx.put(c, [i, j], 'v'.repeat(100))
      })
    await db.checkpoint()
    await db.transaction((tx) => tx.put(c, 'after-checkpoint', 'tail'))
    const seen: number[] = []
    const dest = tempDir('backup')
    const r = await db.backup(dest, { onProgress: (p) => seen.push(p.bytesCopied) })
    expect(r.commitId).toBe(db.lastCommitId())
    expect(r.bytes).toBeGreaterThan(500_000)
    expect(seen.length).toBeGreaterThan(0)
    expect(seen).toEqual([...seen].sort((a, b) => a - b))
    await db.close()
    expect(verifyDirectory(dest).ok).toBe(true)
    const copy = await open(dest, { engine: other(engine) })
    expect(copy.snapshot().get(copy.collection<string>('c'), 'after-checkpoint')).toBe('tail')
    expect(copy.snapshot().get(copy.collection<string>('c'), [49, 99])).toBe('v'.repeat(100))
    expect(copy.stats().keys).toBe(5001)
    await copy.close()
  })

  it('a cancelled backup rejects with AbortError, removes the partial copy and resumes the flusher', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    const c = db.collection<string>('c')
    for (let i = 0; i < 20; i++)
      await db.transaction((tx) => {
        for (let j = 0; j < 200; j++) tx.put(c, [i, j], 'x'.repeat(200))
      })
    await db.checkpoint()
    const ac = new AbortController()
    const dest = tempDir('cancelled')
    // Writers go on while the backup runs and is cancelled: their batches are deferred.
    const writes = Array.from({ length: 20 }, (_, i) => db.transaction((tx) => tx.put(c, ['during', i], 'd')))
    await expect(db.backup(dest, { signal: ac.signal, onProgress: () => ac.abort() })).rejects.toMatchObject({ name: 'AbortError' })
    await Promise.all(writes)
    expect(existsSync(dest)).toBe(false)
    expect(coreOf(db).stats().flow.suspended).toBe(0)
    await db.checkpoint()
    expect(coreOf(db).stats().flow.deferredBatches).toBe(0)
    await db.close()
    const again = await open(dir, { engine: other(engine), cacheBytes: 1 << 20 })
    for (let i = 0; i < 20; i++) expect(again.snapshot().get(again.collection<string>('c'), ['during', i])).toBe('d')
    await again.close()
  })

  it('bytesPerSec paces the copy (and is checked); a cancel during a pause still cancels', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    const c = db.collection<string>('c')
    // About 2.5 MB of values, checkpointed.
    for (let i = 0; i < 12; i++)
      await db.transaction((tx) => {
        for (let j = 0; j < 200; j++) tx.put(c, [i, j], 'x'.repeat(1000))
      })
    await db.checkpoint()
    await expectCode(() => db.backup(tempDir('bad-rate'), { bytesPerSec: -1 }), 'KESTREL_INVALID_ARGUMENT')
    const rate = 1024 * 1024
    const started = performance.now()
    const r = await db.backup(tempDir('paced'), { bytesPerSec: rate })
    const tookMs = performance.now() - started
    // A lower bound only (the pace is a ceiling): the copy cannot be faster than its limit allows
    // for all but its first chunk.
    expect(r.bytes).toBeGreaterThan(2 * rate)
    expect(tookMs).toBeGreaterThanOrEqual(((r.bytes - 1024 * 1024) / rate) * 1000 - 50)
    const ac = new AbortController()
    const dest = tempDir('paced-cancel')
    let chunks = 0
    const p = db.backup(dest, {
      bytesPerSec: rate / 4,
      signal: ac.signal,
      onProgress: () => {
        chunks++
      },
    })
    setTimeout(() => ac.abort(), 300)
    await expect(p).rejects.toMatchObject({ name: 'AbortError' })
    expect(chunks).toBeLessThan(3)
    expect(existsSync(dest)).toBe(false)
    expect(coreOf(db).stats().flow.suspended).toBe(0)
    await db.close()
  })

  it('refuses a non-empty target, a target inside the database, and a closed handle', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    await db.transaction((tx) => tx.put(db.collection('c'), 'k', 1))
    const full = tempDir('full')
    mkdirSync(full, { recursive: true })
    writeFileSync(join(full, 'something'), 'x')
    await expectCode(() => db.backup(full), 'KESTREL_INVALID_ARGUMENT')
    expect(readdirSync(full)).toEqual(['something'])
    await expectCode(() => db.backup(join(dir, 'inner')), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => db.backup(''), 'KESTREL_INVALID_ARGUMENT')
    await db.close()
    await expectCode(() => db.backup(tempDir('late')), 'KESTREL_CLOSED')
  })

  it('restore refuses a corrupt backup and a non-empty target', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    await db.transaction((tx) => tx.put(db.collection('c'), 'k', 1))
    await db.transaction((tx) => tx.put(db.collection('c'), 'k2', 2))
    const dest = tempDir('b')
    await db.backup(dest)
    await db.close()
    const target = tempDir('t')
    mkdirSync(target, { recursive: true })
    writeFileSync(join(target, 'x'), 'x')
    await expectCode(() => restore(dest, target), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => restore(tempDir('nothing'), tempDir('t2')), 'KESTREL_NOT_A_DATABASE')
    // Damage the first record of the backup's log (a later record follows): restore refuses it.
    const seg = readdirSync(join(dest, 'log'))[0]!
    const path = join(dest, 'log', seg)
    const bytes = readFileSync(path)
    bytes[32 + 20] = bytes[32 + 20]! ^ 0xff
    writeFileSync(path, bytes)
    await expectCode(() => restore(dest, tempDir('t3')), 'KESTREL_CORRUPT')
  })
})

describe.each(ENGINES)('backup manifest (%s)', (engine) => {
  it('a whole backup carries its manifest, verifies, restores, and opens with either engine', async () => {
    const { backup } = await makeBackup(engine)
    // The manifest as docs/FORMAT.md describes it, checked by an independent reading.
    const text = readFileSync(join(backup, 'BACKUP_MANIFEST'), 'utf8')
    const m = JSON.parse(text) as {
      format: string
      version: number
      commitId: string
      files: Array<{ path: string; bytes: number; sha256: string }>
      manifestSha256: string
    }
    expect(m.format).toBe('kestreldb-backup')
    expect(m.version).toBe(1)
    expect(m.commitId).toBe(String(COMMITS))
    const head = text.slice(0, text.lastIndexOf('\n  "manifestSha256"') + 1)
    expect(createHash('sha256').update(head).digest('hex')).toBe(m.manifestSha256)
    expect(m.files.map((f) => f.path).sort()).toEqual(['KESTREL', 'pages.kdb', ...segments(backup).map((s) => `log/${s}`)].sort())
    for (const f of m.files) {
      const bytes = readFileSync(join(backup, f.path))
      expect(bytes.length, f.path).toBe(f.bytes)
      expect(createHash('sha256').update(bytes).digest('hex'), f.path).toBe(f.sha256)
    }
    expect(existsSync(join(backup, 'BACKUP_LABEL'))).toBe(true)
    const v = verifyDirectory(backup)
    expect(v.ok, v.problems.join('\n')).toBe(true)
    expect(v.backup).toMatchObject({ commitId: BigInt(COMMITS), files: m.files.length })
    for (const opener of [engine, other(engine)]) {
      const target = tempDir('restored')
      const report = await restore(backup, target)
      expect(report.ok, report.problems.join('\n')).toBe(true)
      // The restored copy is a database, not a backup: no manifest or label travels with it.
      expect(readdirSync(target).sort()).toEqual(['KESTREL', 'log', 'pages.kdb'])
      const db = await open(target, { engine: opener })
      expect(db.lastCommitId()).toBe(BigInt(COMMITS))
      expect(db.stats().keys).toBe(RECORDS)
      expect(db.snapshot().get(db.collection<{ i: number }>('records'), RECORDS - 1)?.i).toBe(RECORDS - 1)
      await db.close()
    }
    // A database directory is not a backup: it still verifies without a manifest, but restore
    // wants a backup.
    const plain = tempDir('plain')
    await restore(backup, plain)
    expect(verifyDirectory(plain).ok).toBe(true)
    expect(verifyDirectory(plain).backup).toBeUndefined()
    const err = await expectCode(() => restore(plain, tempDir('from-plain')), 'KESTREL_CORRUPT')
    expect(err.message).toContain('BACKUP_MANIFEST')
  })

  it('restore() and verifyDirectory() refuse a backup short of its manifest, naming the file', async () => {
    const { backup } = await makeBackup(engine)
    for (const damage of DAMAGES) {
      const { dir, file } = damagedCopy(backup, damage)
      const target = tempDir('target')
      const err = await expectCode(() => restore(dir, target), 'KESTREL_CORRUPT')
      expect(err.message, damage.name).toContain(file)
      expect(err.message, damage.name).toMatch(damage.says)
      expect(existsSync(target), damage.name).toBe(false)
      const v = verifyDirectory(dir)
      expect(v.ok, damage.name).toBe(false)
      expect(v.problems.join('\n'), damage.name).toContain(file)
    }
  })

  it('a backup cut short before its manifest was written is recognised as unfinished', async () => {
    const { backup } = await makeBackup(engine)
    // As a kill in the middle would leave it: the label, some files, no identity file, no manifest.
    const dir = tempDir('unfinished')
    cpSync(backup, dir, { recursive: true })
    rmSync(join(dir, 'BACKUP_MANIFEST'))
    rmSync(join(dir, 'KESTREL'))
    rmSync(join(dir, 'log', segments(dir).at(-1)!))
    const v = verifyDirectory(dir)
    expect(v.ok).toBe(false)
    expect(v.problems.join('\n')).toContain('BACKUP_MANIFEST: missing')
    await expectCode(() => restore(dir, tempDir('t')), 'KESTREL_CORRUPT')
    // Without its identity file it is not a database either: nothing opens it by mistake.
    await expectCode(() => open(dir, { engine }), 'KESTREL_NOT_A_DATABASE')
  })

  it('restore() refuses a backup or a database open in another process or this one (KESTREL_LOCKED)', async () => {
    const { db, backup } = await makeBackup(engine)
    for (const dir of [db, backup]) {
      const holder = await holdOpen(dir, other(engine))
      try {
        const target = tempDir('target')
        const err = await expectCode(() => restore(dir, target), 'KESTREL_LOCKED')
        expect(err.message).toContain(String(holder.pid))
        expect(existsSync(target)).toBe(false)
      } finally {
        await closeHolder(holder)
      }
    }
    // Open in this process (another handle of the same lock) is refused the same way.
    const here = await open(db, { engine })
    try {
      const target = tempDir('target')
      await expectCode(() => restore(db, target), 'KESTREL_LOCKED')
      expect(existsSync(target)).toBe(false)
    } finally {
      await here.close()
    }
  })
})

describe.each(ENGINES)('backup and restore failures (%s)', (engine) => {
  it('a read that fails mid-copy rejects with KESTREL_IO, removes the partial copy, and the process lives on', async () => {
    const root = tempDir('fault')
    mkdirSync(root, { recursive: true })
    const r = spawnSync(process.execPath, [join(ROOT, '__test__/fixtures/copy-fault.mjs'), root, engine], { encoding: 'utf8' })
    // An unhandled rejection ends the child with status 1 before it prints its report.
    expect(r.status, r.stderr).toBe(0)
    const out = JSON.parse(r.stdout) as Record<string, { ok: boolean; code?: string; message?: string } | unknown>
    expect(out.backup).toMatchObject({ ok: false, code: 'KESTREL_IO', message: expect.stringContaining('pages.kdb') })
    expect(out.backupTargetLeft).toBe(false)
    expect(out.suspendedAfter).toBe(0)
    expect(out.secondBackup).toMatchObject({ ok: true })
    expect(out.restore).toMatchObject({ ok: false, code: 'KESTREL_IO', message: expect.stringContaining('pages.kdb') })
    // The caller's empty target stays, emptied of what the restore wrote.
    expect(out.restoreTargetLeft).toEqual([])
    expect(out.restoreAgain).toMatchObject({ ok: false, code: 'KESTREL_CORRUPT', message: expect.stringContaining('pages.kdb') })
    expect(out.after).toBe('still here')
    expect(out.keys).toBe(6001)
  })

  it('a cancelled backup removes only what it created: a caller-made empty target stays, new parents go', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    const c = db.collection<string>('c')
    for (let i = 0; i < 10; i++)
      await db.transaction((tx) => {
        for (let j = 0; j < 200; j++) tx.put(c, [i, j], 'x'.repeat(500))
      })
    await db.checkpoint()
    const given = tempDir('given')
    mkdirSync(given)
    const ac = new AbortController()
    await expect(db.backup(given, { signal: ac.signal, onProgress: () => ac.abort() })).rejects.toMatchObject({ name: 'AbortError' })
    expect(existsSync(given)).toBe(true)
    expect(readdirSync(given)).toEqual([])
    const root = dirname(tempDir())
    mkdirSync(root, { recursive: true })
    const nested = join(root, 'a', 'b', 'backup')
    const ac2 = new AbortController()
    await expect(db.backup(nested, { signal: ac2.signal, onProgress: () => ac2.abort() })).rejects.toMatchObject({ name: 'AbortError' })
    expect(existsSync(join(root, 'a'))).toBe(false)
    expect(existsSync(root)).toBe(true)
    // The caller's directory takes a backup afterwards.
    await db.backup(given)
    expect(verifyDirectory(given).ok).toBe(true)
    expect(coreOf(db).stats().flow.suspended).toBe(0)
    await db.close()
  })

  it('a cancelled backup or restore rejects with one AbortError (code ABORT_ERR, cause = the reason) wherever the abort lands', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine })
    const c = db.collection<string>('c')
    for (let i = 0; i < 10; i++)
      await db.transaction((tx) => {
        for (let j = 0; j < 300; j++) tx.put(c, [i, j], 'x'.repeat(1000))
      })
    await db.checkpoint()
    const reason = new Error('shutting down')
    const landings: Array<{ name: string; run: (dest: string) => Promise<unknown>; reason?: unknown }> = [
      { name: 'before the start', run: (dest) => db.backup(dest, { signal: AbortSignal.abort() }) },
      {
        name: 'between two chunks',
        run: (dest) => {
          const ac = new AbortController()
          return db.backup(dest, { signal: ac.signal, onProgress: () => ac.abort() })
        },
      },
      {
        name: 'between two chunks, with a reason',
        run: (dest) => {
          const ac = new AbortController()
          return db.backup(dest, { signal: ac.signal, onProgress: () => ac.abort(reason) })
        },
        reason,
      },
      {
        // 1 byte per second: after the first chunk the copy pauses for its pace, and the abort
        // lands in that pause.
        name: 'in a pause of the pacing',
        run: (dest) => {
          const ac = new AbortController()
          return db.backup(dest, { signal: ac.signal, bytesPerSec: 1, onProgress: () => setImmediate(() => ac.abort(reason)) })
        },
        reason,
      },
    ]
    for (const l of landings) {
      const dest = tempDir('aborted')
      const err = await l.run(dest).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: unknown; cause?: unknown },
      )
      expect(err, l.name).toBeInstanceOf(Error)
      expect({ name: err!.name, code: err!.code }, l.name).toEqual({ name: 'AbortError', code: 'ABORT_ERR' })
      if (l.reason !== undefined) expect(err!.cause, l.name).toBe(l.reason)
      expect(existsSync(dest), l.name).toBe(false)
    }
    const backup = tempDir('whole')
    await db.backup(backup)
    await db.close()
    const ac = new AbortController()
    const target = tempDir('restore-aborted')
    const err = await restore(backup, target, { signal: ac.signal, onProgress: () => ac.abort(reason) }).then(
      () => undefined,
      (e: unknown) => e as Error & { code?: unknown; cause?: unknown },
    )
    expect({ name: err?.name, code: err?.code, cause: err?.cause }).toEqual({ name: 'AbortError', code: 'ABORT_ERR', cause: reason })
    expect(existsSync(target)).toBe(false)
    expect(verifyDirectory(backup).ok).toBe(true)
  })
})
