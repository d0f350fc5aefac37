#!/usr/bin/env node
/**
 * The `kestrel` command: `stat`, `verify`, `backup`, `restore`, `export`, `import` (run
 * `kestrel help`).
 *
 * Exit codes (stable, for scripts):
 * - 0 — done; for `verify`, no problem found
 * - 1 — `verify` found problems, `restore` was given a backup that is incomplete, damaged
 *   or has no manifest (the message says which file and what is short), or `import` was given
 *   an export that is truncated or damaged (the message names the line and what was imported)
 * - 2 — bad usage (unknown command, missing or extra arguments, unknown option, a target
 *   directory or database that is not new or empty, an export file that exists, an input that
 *   is not an export)
 * - 3 — the directory (or the backup) is missing, is not a kestreldb database, or is open in
 *   another process; an export in a format this version cannot read
 * - 4 — anything else went wrong (I/O, disk full, …); the message says what to do
 */
import { closeSync, createReadStream, createWriteStream, existsSync, fdatasyncSync, openSync, readdirSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { finished } from 'node:stream/promises'
import { open, type Database } from '../database.js'
import { KestrelError } from '../errors.js'
import { exportDatabase, importDatabase, IMPORT_TRANSACTION_RECORDS, type ExportResult } from '../export.js'
import { restore, type BackupProgress } from '../backup.js'
import { verifyDirectory, type VerifyReport } from '../verify.js'
import { isBackupDirectory } from '../manifest.js'
import type { EngineChoice, OpenOptions } from '../options.js'
import { readReplicaMark } from '../postgres/replica.js'
import { acquireLock, releaseLock } from '../lock.js'
import { liveParticipants } from '../shared/core.js'

/** Exit codes of the command (see the module comment). */
/** JSON with commit ids (bigints) as plain numbers. */
function toJson(value: unknown, indent?: number): string {
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? Number(v) : v), indent)
}

export const EXIT = { ok: 0, problems: 1, usage: 2, notADatabase: 3, failed: 4 } as const

const USAGE = `usage: kestrel <command> [options]

commands:
  stat <dir>                 what the database holds: commits, checkpoint, log, pages, memory
  verify <dir>               check checksums, B+tree order and fill, free pages, log continuity
                             (a backup: also every file against its manifest)
  backup <dir> <dest>        copy a consistent database into <dest> (new or empty directory)
  restore <backup> <dir>     check <backup> against its manifest, copy it into <dir> (new or
                             empty directory), check the copy
  export <dir> [<file>]      write the database as of one commit as NDJSON to <file> (a new
                             file) or to stdout (no <file>, or -); writers may go on meanwhile
  import <file> <dir>        read an export (<file>, or stdin for -) into <dir> (a new or empty
                             database), in transactions of up to ${IMPORT_TRANSACTION_RECORDS} records; indexes are
                             built when the application defines them
  help                       this text

options:
  --json                     print the result as JSON (stat, verify, backup, restore, export
                             to a file, import)
  --engine native|ts|auto    the engine that opens <dir> (default auto)
  --postgres <url>           <dir> is (or, for import, becomes) a replica of a database whose
                             log is in PostgreSQL at <url> (a connection string)
  --schema <name>            the PostgreSQL schema of that database (default: the one the
                             replica's REPLICA file names)
  --progress / --no-progress show progress on stderr (default: when stderr is a terminal)

exit codes: 0 ok, 1 problems found (also an incomplete or damaged backup or export), 2 bad
usage (also a target that is not new or empty), 3 not a database / missing / open in another
process, 4 failed`

class UsageError extends Error {}

interface Parsed {
  command: string
  args: string[]
  json: boolean
  engine: EngineChoice
  progress: boolean
  postgres?: string
  schema?: string
}

function parse(argv: string[]): Parsed {
  const out: Parsed = { command: '', args: [], json: false, engine: 'auto', progress: process.stderr.isTTY === true }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--json') out.json = true
    else if (a === '--progress') out.progress = true
    else if (a === '--no-progress') out.progress = false
    else if (a === '--engine') {
      const v = argv[++i]
      if (v !== 'native' && v !== 'ts' && v !== 'auto') throw new UsageError(`--engine needs native, ts or auto, got ${v ?? 'nothing'}`)
      out.engine = v
    } else if (a === '--postgres' || a === '--schema') {
      const v = argv[++i]
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${a} needs a value`)
      if (a === '--postgres') out.postgres = v
      else out.schema = v
    } else if (a === '-h' || a === '--help') out.command = out.command || 'help'
    else if (a.startsWith('-') && a !== '-') throw new UsageError(`unknown option ${a}`)
    else if (!out.command) out.command = a
    else out.args.push(a)
  }
  return out
}

/**
 * How to open `dir`: with its engine, and — for a PostgreSQL replica, or a new one with
 * `--postgres` — the database it replicates.
 */
function openOptions(p: Parsed, dir: string): OpenOptions {
  const mark = existsSync(dir) ? readReplicaMark(dir) : undefined
  if (!p.postgres) {
    if (p.schema) throw new UsageError('--schema goes with --postgres <url>')
    if (mark) throw new UsageError(`${dir} is a replica of PostgreSQL schema "${mark.schema}": pass --postgres <connection string> to open it`)
    return { engine: p.engine }
  }
  const schema = p.schema ?? mark?.schema
  if (!schema) throw new UsageError(`${dir} is not a replica yet: pass --schema <name> with --postgres`)
  return { engine: p.engine, postgres: { connectionString: p.postgres, schema } }
}

function need(p: Parsed, names: string[]): void {
  if (p.args.length !== names.length) {
    throw new UsageError(`kestrel ${p.command} needs ${names.map((n) => `<${n}>`).join(' ')}, got ${p.args.length} argument(s)`)
  }
}

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`
}

/** A one-line progress bar on stderr, redrawn at most every 100 ms. */
function progressBar(enabled: boolean): { update: (p: BackupProgress) => void; done: () => void } {
  let last = 0
  let drawn = false
  const draw = (p: BackupProgress): void => {
    const width = 30
    const frac = p.bytesTotal > 0 ? Math.min(1, p.bytesCopied / p.bytesTotal) : 1
    const fill = Math.round(frac * width)
    process.stderr.write(
      `\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${mib(p.bytesCopied)} / ${mib(p.bytesTotal)} (${p.phase})   `,
    )
    drawn = true
  }
  return {
    update: (p) => {
      if (!enabled) return
      const now = Date.now()
      if (now - last >= 100 || p.bytesCopied >= p.bytesTotal) {
        last = now
        draw(p)
      }
    },
    done: () => {
      if (drawn) process.stderr.write('\n')
    },
  }
}

/** A running count of records on stderr, redrawn at most every 100 ms. */
function recordCounter(enabled: boolean, verb: string): { update: (records: number) => void; done: () => void } {
  let last = 0
  let shown = -1
  let latest = 0
  const draw = (): void => {
    process.stderr.write(`\r${verb} ${latest} records   `)
    shown = latest
  }
  return {
    update: (records) => {
      latest = records
      if (!enabled) return
      const now = Date.now()
      if (now - last >= 100) {
        last = now
        draw()
      }
    },
    done: () => {
      if (!enabled) return
      if (shown !== latest) draw()
      process.stderr.write('\n')
    },
  }
}

/** Export `db` to a new file: a file that exists is refused, a failed export removes its file. */
async function exportToFile(db: Database, file: string, onProgress: (records: number) => void): Promise<ExportResult> {
  let fd: number
  try {
    fd = openSync(file, 'wx')
  } catch (err) {
    const code = (err as { code?: string }).code
    if (code === 'EEXIST') throw new KestrelError('KESTREL_INVALID_ARGUMENT', `${file} exists; give a new file (an export never overwrites), or - for stdout`)
    throw err
  }
  const out = createWriteStream('', { fd, autoClose: false })
  try {
    const r = await exportDatabase(db, out, { onProgress: (p) => onProgress(p.records) })
    out.end()
    await finished(out)
    fdatasyncSync(fd)
    return r
  } catch (err) {
    // Let a write in flight end before the descriptor is closed and the file removed.
    out.destroy()
    await finished(out).catch(() => undefined)
    rmSync(file, { force: true })
    throw err
  } finally {
    closeSync(fd)
  }
}

function printReport(r: VerifyReport, json: boolean): void {
  if (json) {
    process.stdout.write(`${toJson(r, 2)}\n`)
    return
  }
  const lines = [
    `${r.ok ? 'ok' : 'PROBLEMS FOUND'}: checkpoint at commit ${r.checkpointLsn}, log up to commit ${r.lastCommitId}`,
    ...(r.backup
      ? [
          `backup of commit ${r.backup.commitId} finished ${r.backup.createdAt}: ${r.backup.files} files in its manifest${r.ok ? ', all present and intact' : ''}`,
        ]
      : []),
    `pages: ${r.pages.total} in the file, ${r.pages.reachable} reachable, ${r.pages.free} free; ${r.pages.records} records; leaves ${r.pages.leafFillPercent.toFixed(1)}% full`,
    ...r.pages.collections.map((c) => {
      // An index tree is named collection ‖ 0x00 ‖ index (docs/FORMAT.md "Index trees").
      const cut = c.name.indexOf('\u0000')
      const what =
        cut > 0
          ? `index ${JSON.stringify(c.name.slice(cut + 1))} of ${JSON.stringify(c.name.slice(0, cut))}: ${c.records} entries`
          : `collection ${JSON.stringify(c.name)}: ${c.records} records`
      return `  ${what}, depth ${c.depth}, ${c.leaves} leaves`
    }),
    `log: ${r.log.segments} segment(s), ${r.log.records} records from commit ${r.log.firstLsn}, ${mib(r.log.bytes)}`,
    ...r.notes.map((n) => `note: ${n}`),
    ...r.problems.map((p) => `problem: ${p}`),
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
}

function requireDir(dir: string): void {
  if (!existsSync(dir)) throw new KestrelError('KESTREL_NOT_A_DATABASE', `${dir} does not exist; give the directory of a kestreldb database`)
}

/** Run the command line `argv` (without node and the script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  let p: Parsed
  try {
    p = parse(argv)
    if (!p.command) throw new UsageError('no command given')
  } catch (err) {
    process.stderr.write(`kestrel: ${(err as Error).message}\n\n${USAGE}\n`)
    return EXIT.usage
  }
  try {
    switch (p.command) {
      case 'help':
        process.stdout.write(`${USAGE}\n`)
        return EXIT.ok
      case 'stat': {
        need(p, ['dir'])
        requireDir(p.args[0]!)
        const db = await open(p.args[0]!, openOptions(p, p.args[0]!))
        try {
          const s = db.stats()
          if (p.json) process.stdout.write(`${toJson(s, 2)}\n`)
          else {
            process.stdout.write(
              `${[
                `engine: ${s.engine}`,
                `last commit: ${s.durableLsn}`,
                `checkpoint: commit ${s.checkpointLsn}${s.checkpointLsn === 0n ? ' (none yet)' : ''}`,
                `records: ${s.keys}`,
                `log: ${s.segments} segment(s)`,
                `pages: ${s.pageCount} (${mib(s.pageCount * 4096)})`,
                `memory: ${mib(s.recordBytes)} of records, ${s.versions} versions`,
              ].join('\n')}\n`,
            )
          }
        } finally {
          await db.close()
        }
        return EXIT.ok
      }
      case 'verify': {
        need(p, ['dir'])
        requireDir(p.args[0]!)
        // The files are checked as they are, without opening the database (nothing is written,
        // so a backup or a damaged directory can be checked too). The lock keeps a database
        // that another process has open from changing underneath.
        const dir = p.args[0]!
        if (!existsSync(join(dir, 'KESTREL')) && !isBackupDirectory(dir))
          throw new KestrelError('KESTREL_NOT_A_DATABASE', `${dir} holds no kestreldb database (no KESTREL file)`)
        await acquireLock(dir, 'tool')
        let report: VerifyReport | undefined
        try {
          // Processes have it open: check it as one of them (the files change meanwhile).
          if (liveParticipants(dir).length === 0) report = verifyDirectory(dir)
        } finally {
          await releaseLock(dir)
        }
        if (!report) {
          const db = await open(dir, openOptions(p, dir))
          try {
            report = await db.verify()
          } finally {
            await db.close()
          }
        }
        printReport(report, p.json)
        return report.ok ? EXIT.ok : EXIT.problems
      }
      case 'backup': {
        need(p, ['dir', 'dest'])
        requireDir(p.args[0]!)
        const bar = progressBar(p.progress)
        const db = await open(p.args[0]!, openOptions(p, p.args[0]!))
        try {
          // The command holds the database's lock: no committer shares the disk, so no pacing.
          const r = await db.backup(p.args[1]!, { onProgress: bar.update, bytesPerSec: 0 })
          bar.done()
          process.stdout.write(
            p.json
              ? `${JSON.stringify({ commitId: Number(r.commitId), bytes: r.bytes, path: r.path })}\n`
              : `backed up commit ${r.commitId} (${mib(r.bytes)}) to ${r.path}\n`,
          )
        } finally {
          await db.close()
        }
        return EXIT.ok
      }
      case 'restore': {
        need(p, ['backup', 'dir'])
        requireDir(p.args[0]!)
        const bar = progressBar(p.progress)
        // restore() locks the backup (exit 3 when another process has it open) and refuses one
        // that is short of its manifest (KESTREL_CORRUPT, exit 1).
        let r: VerifyReport
        try {
          r = await restore(p.args[0]!, p.args[1]!, { onProgress: bar.update })
        } finally {
          bar.done()
        }
        process.stdout.write(p.json ? `${toJson(r)}\n` : `restored commit ${r.lastCommitId} into ${p.args[1]}; open it with either engine\n`)
        return EXIT.ok
      }
      case 'export': {
        if (p.args.length < 1 || p.args.length > 2) throw new UsageError(`kestrel export needs <dir> [<file>], got ${p.args.length} argument(s)`)
        const dir = p.args[0]!
        const file = p.args[1] ?? '-'
        requireDir(dir)
        // Opening an empty directory would make a database there: an export reads one that exists.
        if (!existsSync(join(dir, 'KESTREL'))) throw new KestrelError('KESTREL_NOT_A_DATABASE', `${dir} holds no kestreldb database (no KESTREL file)`)
        const counter = recordCounter(p.progress, 'exported')
        const db = await open(dir, openOptions(p, dir))
        let r: ExportResult
        try {
          r =
            file === '-'
              ? await exportDatabase(db, process.stdout, { onProgress: (x) => counter.update(x.records) })
              : await exportToFile(db, file, counter.update)
        } finally {
          counter.done()
          await db.close()
        }
        // On stdout the export itself is the output.
        if (file !== '-') {
          process.stdout.write(
            p.json
              ? `${JSON.stringify({ commitId: Number(r.commitId), records: r.records, collections: r.collections, path: file })}\n`
              : `exported ${r.records} records of ${r.collections} collection(s) as of commit ${r.commitId} to ${file}\n`,
          )
        }
        return EXIT.ok
      }
      case 'import': {
        need(p, ['file', 'dir'])
        const [file, dir] = p.args as [string, string]
        if (file !== '-' && !existsSync(file))
          throw new KestrelError('KESTREL_INVALID_ARGUMENT', `${file} does not exist; give a file written by kestrel export, or - for stdin`)
        // A directory with files of something else is not opened (that would make a database in it).
        if (existsSync(dir)) {
          if (!statSync(dir).isDirectory()) throw new KestrelError('KESTREL_INVALID_ARGUMENT', `${dir} is a file; give a new or empty directory`)
          if (readdirSync(dir).length > 0 && !existsSync(join(dir, 'KESTREL')))
            throw new KestrelError('KESTREL_INVALID_ARGUMENT', `${dir} is not empty and not a kestreldb database; give a new or empty directory`)
        }
        const counter = recordCounter(p.progress, 'imported')
        const db = await open(dir, openOptions(p, dir))
        let r: Awaited<ReturnType<typeof importDatabase>>
        try {
          const input = file === '-' ? process.stdin : createReadStream(file)
          r = await importDatabase(db, input, { onProgress: (x) => counter.update(x.records) })
        } finally {
          counter.done()
          await db.close()
        }
        const unbuilt = r.indexes.filter((i) => !i.defined)
        if (p.json) {
          process.stdout.write(
            `${JSON.stringify({ records: r.records, transactions: r.transactions, sourceCommitId: Number(r.sourceCommitId), collections: r.collections, indexes: r.indexes })}\n`,
          )
        } else {
          process.stdout.write(
            `${[
              `imported ${r.records} records of ${r.collections.length} collection(s) (commit ${r.sourceCommitId} of the export) into ${dir}, in ${r.transactions} transaction(s)`,
              ...unbuilt.map(
                (i) =>
                  `note: index ${JSON.stringify(i.name)}${i.unique ? ' (unique)' : ''} of ${JSON.stringify(i.collection)} is not built yet: its key function is code, not data; it is built when the application opens the database with db.collection(${JSON.stringify(i.collection)}, { indexes: { ${JSON.stringify(i.name)}: … } })`,
              ),
            ].join('\n')}\n`,
          )
        }
        return EXIT.ok
      }
      default:
        throw new UsageError(`unknown command ${p.command}`)
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`kestrel: ${err.message}\n\n${USAGE}\n`)
      return EXIT.usage
    }
    const e = err as { code?: string; message?: string }
    process.stderr.write(`kestrel ${p.command}: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`)
    if (e.code === 'KESTREL_NOT_A_DATABASE' || e.code === 'KESTREL_LOCKED' || e.code === 'KESTREL_FORMAT_VERSION') return EXIT.notADatabase
    if (e.code === 'KESTREL_CORRUPT') return EXIT.problems
    if (e.code === 'KESTREL_INVALID_ARGUMENT') return EXIT.usage
    return EXIT.failed
  }
}

// Run when executed as a script (not when imported by tests).
const invoked = process.argv[1] ?? ''
if (invoked.endsWith('kestrel.js') || invoked.endsWith('/kestrel')) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
    },
    (err: unknown) => {
      process.stderr.write(`kestrel: ${String(err)}\n`)
      process.exitCode = EXIT.failed
    },
  )
}
