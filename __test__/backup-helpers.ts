/**
 * Backups for the manifest tests (backup.test.ts, cli.test.ts): a backup that promised commit 20
 * and 1,000 records, and the ways of cutting one short that it must be refused for.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { cpSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { open, type EngineName } from '../lib/index.js'
import { tempDir } from './helpers.js'

export const ROOT = fileURLToPath(new URL('..', import.meta.url))
export const COMMITS = 20
export const RECORDS = 1000

/** The log segments of `dir`, in LSN order. */
export function segments(dir: string): string[] {
  return readdirSync(join(dir, 'log'))
    .filter((n) => n.endsWith('.klog'))
    .sort()
}

/**
 * A database of 1,000 records written by 20 commits of 50 (a checkpoint after the 10th, small
 * segments), and its backup. The backup holds a page file and at least three log segments.
 */
export async function makeBackup(engine: EngineName): Promise<{ db: string; backup: string }> {
  const dir = tempDir('source')
  const db = await open(dir, { engine, segmentBytes: 64 * 1024, checkpointIntervalMs: 0 })
  const c = db.collection<{ i: number; pad: string }>('records')
  for (let n = 0; n < COMMITS; n++) {
    await db.transaction((tx) => {
      for (let i = 0; i < RECORDS / COMMITS; i++) tx.put(c, n * 50 + i, { i: n * 50 + i, pad: 'r'.repeat(600) })
    })
    if (n === 9) await db.checkpoint()
  }
  const backup = tempDir('backup')
  const r = await db.backup(backup)
  await db.close()
  if (r.commitId !== BigInt(COMMITS)) throw new Error(`the backup holds commit ${r.commitId}, expected ${COMMITS}`)
  if (segments(backup).length < 3) throw new Error(`the backup has ${segments(backup).length} log segments, the tests need 3`)
  return { db: dir, backup }
}

/** Keep the first `keep` bytes of the log (segments in order), deleting what lies after. */
function cutLog(dir: string, keep: number): void {
  let at = 0
  for (const name of segments(dir)) {
    const path = join(dir, 'log', name)
    const size = statSync(path).size
    if (at >= keep) rmSync(path)
    else if (at + size > keep) truncateSync(path, keep - at)
    at += size
  }
}

function logBytes(dir: string): number {
  return segments(dir).reduce((n, s) => n + statSync(join(dir, 'log', s)).size, 0)
}

/** Rewrite the manifest with `edit` applied and its checksum recomputed (docs/FORMAT.md "Backups"). */
export function rewriteManifest(dir: string, edit: (m: { commitId: string; files: Array<{ path: string; bytes: number; sha256: string }> }) => void): void {
  const m = JSON.parse(readFileSync(join(dir, 'BACKUP_MANIFEST'), 'utf8')) as {
    commitId: string
    files: Array<{ path: string; bytes: number; sha256: string }>
    manifestSha256?: string
  }
  delete m.manifestSha256
  edit(m)
  const head = `${JSON.stringify(m, null, 2).slice(0, -2)},\n`
  writeFileSync(join(dir, 'BACKUP_MANIFEST'), `${head}  "manifestSha256": "${createHash('sha256').update(head).digest('hex')}"\n}\n`)
}

export interface Damage {
  name: string
  /** Cut the backup in `dir` short. */
  apply: (dir: string) => void
  /** The file the refusal must name. */
  names: (dir: string) => string
  /** What the refusal must say about it. */
  says: RegExp
}

/** Every way of cutting a backup short that restore and verify must refuse. */
export const DAMAGES: Damage[] = [
  {
    name: 'its log cut by 100 bytes',
    apply: (d) => cutLog(d, logBytes(d) - 100),
    names: (d) => `log/${segments(d).at(-1)}`,
    says: /100 bytes short/,
  },
  {
    name: 'its log cut in half',
    apply: (d) => cutLog(d, Math.floor(logBytes(d) / 2)),
    names: () => 'log/',
    says: /bytes short|missing/,
  },
  {
    name: 'its last log segment deleted',
    apply: (d) => rmSync(join(d, 'log', segments(d).at(-1)!)),
    names: (d) => `log/${segments(d).at(-1)}`,
    says: /missing/,
  },
  {
    name: 'a log segment in the middle deleted',
    apply: (d) => rmSync(join(d, 'log', segments(d)[1]!)),
    names: (d) => `log/${segments(d)[1]}`,
    says: /missing/,
  },
  {
    name: 'its page file truncated',
    apply: (d) => truncateSync(join(d, 'pages.kdb'), statSync(join(d, 'pages.kdb')).size / 2),
    names: () => 'pages.kdb',
    says: /bytes short/,
  },
  {
    name: 'its manifest removed',
    apply: (d) => rmSync(join(d, 'BACKUP_MANIFEST')),
    names: () => 'BACKUP_MANIFEST',
    says: /missing/,
  },
  {
    name: 'its manifest edited (the commit id)',
    apply: (d) => {
      const path = join(d, 'BACKUP_MANIFEST')
      writeFileSync(path, readFileSync(path, 'utf8').replace(`"commitId": "${COMMITS}"`, `"commitId": "${COMMITS - 5}"`))
    },
    names: () => 'BACKUP_MANIFEST',
    says: /checksum does not match/,
  },
  {
    name: 'its log cut by 100 bytes and the manifest rewritten to match the files',
    apply: (d) => {
      cutLog(d, logBytes(d) - 100)
      const last = `log/${segments(d).at(-1)}`
      const bytes = readFileSync(join(d, last))
      rewriteManifest(d, (m) => {
        const f = m.files.find((x) => x.path === last)!
        f.bytes = bytes.length
        f.sha256 = createHash('sha256').update(bytes).digest('hex')
      })
    },
    names: () => 'BACKUP_MANIFEST',
    says: new RegExp(`promises commit ${COMMITS}`),
  },
]

/** A fresh copy of `backup` with `damage` applied. */
export function damagedCopy(backup: string, damage: Damage): { dir: string; file: string } {
  const dir = tempDir('damaged')
  cpSync(backup, dir, { recursive: true })
  // Named before the damage: a deleted segment is gone afterwards.
  const file = damage.names(dir)
  damage.apply(dir)
  return { dir, file }
}

/** A child process that has `dir` open with `engine` until {@link closeHolder}. */
export async function holdOpen(dir: string, engine: EngineName): Promise<ChildProcess> {
  const child = spawn(process.execPath, [join(ROOT, '__test__/fixtures/hold-open.mjs'), dir, engine], { stdio: ['pipe', 'pipe', 'inherit'] })
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve())
    child.once('exit', (code) => reject(new Error(`hold-open exited with ${code}`)))
  })
  return child
}

export async function closeHolder(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r))
  child.stdin!.end()
  await exited
}
