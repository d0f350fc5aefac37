/**
 * A whole database as NDJSON (docs/FORMAT.md "Export format (NDJSON)"), streamed both ways.
 * `exportDatabase` reads one pinned snapshot, collection by collection in chunks, and waits for
 * the output to drain; `importDatabase` reads line by line and commits in bounded transactions.
 * The import writes through the public API (collection, begin, put, commit), so any Database can
 * take an export; only listing a database's collections reaches below it.
 */
import type { Writable } from 'node:stream'
import { decodeKey, encodeKey, type Key } from './codec/key.js'
import { decodeValue, encodeValue } from './codec/value.js'
import { checkCollectionName, type Collection, type IndexDefinition } from './collection.js'
import { leaseOf, type Database } from './database.js'
import { KestrelError, isKestrelErrorCode, type KestrelErrorCode } from './errors.js'
import type { ReadView } from './snapshot.js'
import type { Transaction } from './transaction.js'
import { INDEX_MARKERS } from './txn/indexes.js'

/** The export format this version writes and reads (the header's `format`). */
export const EXPORT_FORMAT = 1
/** Records per import transaction at most (default). */
export const IMPORT_TRANSACTION_RECORDS = 1000
/** Line bytes per import transaction at most (default); a larger single record gets its own. */
export const IMPORT_TRANSACTION_BYTES = 4 * 1024 * 1024
/**
 * Longest line an import reads (default). An export's longest line is a 64 MiB value in base64
 * (about 85.4 MiB) with its key and collection.
 */
export const IMPORT_LINE_BYTES_MAX = 128 * 1024 * 1024
/** A JSON-exact value whose JSON text is longer than this goes as base64 (it bounds a line). */
const JSON_VALUE_CHARS_MAX = 16 * 1024 * 1024
/** Output is handed to the stream in pieces of about this many characters. */
const WRITE_CHUNK_CHARS = 256 * 1024
/** Nesting past which a value is not checked for JSON exactness (it goes as base64). */
const JSON_DEPTH_MAX = 256

/** One index as the header names it. `unique` is null when the export did not have its definition. */
export interface ExportIndex {
  name: string
  unique: boolean | null
}

/** The first line of an export. */
export interface ExportHeader {
  kestrel: 'export'
  format: typeof EXPORT_FORMAT
  /** The commit the export's snapshot is at. */
  commitId: number
  /** When the export started, ISO 8601 (informational). */
  createdAt: string
  /** Every collection whose records follow (and every collection with an index), name order. */
  collections: Array<{ name: string; indexes: ExportIndex[] }>
}

/** Progress of an export: records written so far, and the collection being read. */
export interface ExportProgress {
  records: number
  collection: string
}

export interface ExportOptions {
  /** Called as the output is written (after each piece handed to the stream, and per collection). */
  onProgress?: (progress: ExportProgress) => void
}

export interface ExportResult {
  /** The commit the export holds: every commit up to it, none after. */
  commitId: bigint
  records: number
  collections: number
}

/** Progress of an import: records committed so far, in how many transactions. */
export interface ImportProgress {
  records: number
  transactions: number
}

export interface ImportOptions {
  /**
   * Index definitions by collection and index name. An index's key function is code, not data,
   * so an export names its indexes but cannot carry them: pass them here (or define them on the
   * handle before the import) to build the indexes as the records go in. `unique`, when left out,
   * is the header's. Indexes without a definition are reported in the result, not built.
   */
  indexes?: Record<string, Record<string, IndexDefinition<never>>>
  /** Called after each committed transaction. */
  onProgress?: (progress: ImportProgress) => void
  /** Records per transaction at most (default 1000). */
  transactionRecords?: number
  /** Line bytes per transaction at most (default 4 MiB); a larger record gets a transaction of its own. */
  transactionBytes?: number
  /** Longest line read (default 128 MiB); a longer one fails the import as damaged. */
  maxLineBytes?: number
}

export interface ImportResult {
  /** Records imported (committed). */
  records: number
  transactions: number
  /** The commit the export was taken at, in its source database. */
  sourceCommitId: bigint
  /** The collections the header lists. */
  collections: string[]
  /** The indexes the header names; `defined`: the target has a definition, so the index was built. */
  indexes: Array<{ collection: string; name: string; unique: boolean | null; defined: boolean }>
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: engine-internal names (0x01 …) and index trees (0x00) are not user collections
const CONTROL = /[\u0000-\u001f]/

/** UTF-8 byte order, as the engines order names. */
function byUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
}

/** The collections the engine behind `db` may hold records in (user collections only). */
function collectionsOf(db: Database): string[] {
  return leaseOf(db)
    .core.collections()
    .filter((name) => !CONTROL.test(name))
}

/** The index definitions `db` knows and the indexes built in it (build markers) at `view`. */
function indexesAt(db: Database, view: ReadView, names: readonly string[]): Map<string, ExportIndex[]> {
  const { core, coordinator } = leaseOf(db)
  const out = new Map<string, ExportIndex[]>()
  const add = (collection: string, index: ExportIndex): void => {
    const list = out.get(collection) ?? []
    if (!list.some((i) => i.name === index.name)) list.push(index)
    out.set(collection, list)
  }
  const built: Array<[string, string]> = []
  // Few: one marker per index ever built.
  for (const [k] of core.scan(INDEX_MARKERS, {}, Number(view.commitId))) {
    const key = decodeKey(k)
    if (Array.isArray(key) && typeof key[0] === 'string' && typeof key[1] === 'string') built.push([key[0], key[1]])
  }
  for (const name of new Set([...names, ...built.map(([c]) => c)])) {
    for (const s of coordinator.indexes.of(name) ?? []) add(name, { name: s.name, unique: s.unique })
  }
  // Built indexes this handle has no definition for: their names only.
  for (const [c, i] of built) add(c, { name: i, unique: null })
  return out
}

/** Does the collection hold a record at the view's commit? */
function holdsRecords(view: ReadView, c: Collection<unknown>): boolean {
  for (const _ of view.scan(c, { limit: 1 })) return true
  return false
}

/** Is `key` exactly representable as JSON (strings, finite numbers, tuples of them)? */
function jsonKey(key: Key): boolean {
  if (typeof key === 'string') return true
  if (typeof key === 'number') return Number.isFinite(key) && !Object.is(key, -0)
  return Array.isArray(key) && key.every((k) => jsonKey(k as Key))
}

/** Does JSON.parse(JSON.stringify(value)) give back an equal value? */
function jsonExact(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true
    case 'number':
      return Number.isFinite(value) && !Object.is(value, -0)
    case 'object': {
      if (value === null) return true
      if (depth >= JSON_DEPTH_MAX) return false
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) if (!jsonExact(value[i], depth + 1)) return false
        return true
      }
      if (Object.getPrototypeOf(value) !== Object.prototype) return false
      for (const k of Object.keys(value)) {
        // JSON.parse makes "__proto__" an own member; an object literal would not: keep it exact.
        if (k === '__proto__' || !jsonExact((value as Record<string, unknown>)[k], depth + 1)) return false
      }
      return true
    }
    default:
      return false
  }
}

const base64 = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')

/** The key and value members of a record line (after its `"c"`). */
function recordMembers(key: Key, value: unknown): string {
  const k = jsonKey(key) ? `"k":${JSON.stringify(key)}` : `"kb":"${base64(encodeKey(key))}"`
  if (jsonExact(value, 0)) {
    const v = JSON.stringify(value)
    if (v.length <= JSON_VALUE_CHARS_MAX) return `${k},"v":${v}`
  }
  return `${k},"vb":"${base64(encodeValue(value))}"`
}

/** Lines gathered into pieces, handed to a stream with its backpressure respected. */
class Output {
  private text = ''
  private failure: Error | undefined
  private readonly onError = (err: Error): void => {
    this.failure ??= err
  }

  constructor(private readonly stream: Writable) {
    stream.on('error', this.onError)
  }

  line(s: string): void {
    this.text += `${s}\n`
  }

  get full(): boolean {
    return this.text.length >= WRITE_CHUNK_CHARS
  }

  /** Hand the gathered text to the stream; waits while the stream's buffer is full. */
  async flush(): Promise<void> {
    const text = this.text
    this.text = ''
    if (this.failure) throw this.failure
    if (this.stream.destroyed || this.stream.writableEnded) throw new Error('the output stream was closed before the export finished')
    if (text.length > 0 && this.stream.write(text)) return
    if (text.length === 0 && !this.stream.writableNeedDrain) return
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => {
        this.stream.off('drain', onDrain)
        this.stream.off('error', done)
        this.stream.off('close', onClose)
        if (err) reject(err)
        else resolve()
      }
      const onDrain = (): void => done()
      const onClose = (): void => done(this.failure ?? new Error('the output stream was closed before the export finished'))
      this.stream.on('drain', onDrain)
      this.stream.on('error', done)
      this.stream.on('close', onClose)
    })
  }

  release(): void {
    this.stream.off('error', this.onError)
  }
}

/**
 * Write the whole database, as of one snapshot, to `output` as NDJSON: a header line naming the
 * collections and their indexes, one line per record, and an end line with the counts. Writers
 * (also in other processes) go on meanwhile; the export holds exactly the commits up to
 * `commitId`. Collections are read in chunks and the stream's backpressure is respected, so
 * memory stays bounded. The stream is not ended: the caller owns it.
 *
 * @example
 * const out = createWriteStream('./data.ndjson')
 * const { records } = await exportDatabase(db, out)
 * out.end()
 */
export async function exportDatabase(db: Database, output: Writable, options: ExportOptions = {}): Promise<ExportResult> {
  if (typeof output?.write !== 'function' || typeof output.on !== 'function') {
    throw new KestrelError(
      'KESTREL_INVALID_ARGUMENT',
      'exportDatabase(db, output) needs a Writable stream as output (fs.createWriteStream(file), process.stdout, …)',
    )
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function')
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'export option onProgress must be a function')
  const view = db.snapshot()
  const out = new Output(output)
  try {
    const listed = collectionsOf(db)
    const indexes = indexesAt(db, view, listed)
    const names = [...new Set([...listed, ...indexes.keys()])].sort(byUtf8)
    const collections: Array<{ name: string; handle: Collection<unknown>; indexes: ExportIndex[] }> = []
    for (const name of names) {
      const handle = db.collection(name)
      const ix = indexes.get(name) ?? []
      // A name the engine lists may hold nothing at this snapshot; an index keeps it.
      if (ix.length > 0 || holdsRecords(view, handle)) collections.push({ name, handle, indexes: ix })
    }
    const header: ExportHeader = {
      kestrel: 'export',
      format: EXPORT_FORMAT,
      commitId: Number(view.commitId),
      createdAt: new Date().toISOString(),
      collections: collections.map((c) => ({ name: c.name, indexes: c.indexes })),
    }
    out.line(JSON.stringify(header))
    let records = 0
    // Null prototype: a collection may be named "__proto__".
    const counts: Record<string, number> = Object.create(null)
    for (const c of collections) {
      const prefix = `{"c":${JSON.stringify(c.name)},`
      let n = 0
      // Lazily, in chunks, at the view's commit; the view stays pinned across the awaits.
      for (const { key, value } of view.scan(c.handle)) {
        out.line(`${prefix}${recordMembers(key, value)}}`)
        n++
        if (out.full) {
          await out.flush()
          options.onProgress?.({ records: records + n, collection: c.name })
        }
      }
      counts[c.name] = n
      records += n
      options.onProgress?.({ records, collection: c.name })
    }
    out.line(JSON.stringify({ kestrel: 'end', records, collections: counts }))
    await out.flush()
    return { commitId: view.commitId, records, collections: collections.length }
  } catch (err) {
    throw outputError(err)
  } finally {
    out.release()
    view.close()
  }
}

/** An error of the output stream as a KestrelError (engine errors pass as they are). */
function outputError(err: unknown): KestrelError {
  if (err instanceof KestrelError) return err
  const e = err as { code?: unknown; message?: unknown }
  const message = typeof e?.message === 'string' ? e.message : String(err)
  if (e?.code === 'ENOSPC')
    return new KestrelError('KESTREL_DISK_FULL', `writing the export: the disk is full (${message}); free disk space and export again`, { cause: err })
  return new KestrelError('KESTREL_IO', `writing the export failed: ${message}; check where it goes (the disk, a pipe closed early) and export again`, {
    cause: err,
  })
}

/** One line of the input: its text (UTF-8 decoded, without `\r\n`), bytes, and whether a newline ended it. */
interface Line {
  /** Undefined when the line is not UTF-8. */
  text: string | undefined
  bytes: number
  terminated: boolean
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** Lines of a byte stream, one at a time, each at most `max` bytes (longer ones are refused before they are gathered). */
class LineReader {
  private readonly it: AsyncIterator<Uint8Array | string>
  private chunk: Buffer = Buffer.alloc(0)
  private pos = 0
  private ended = false
  /** The number of the last line returned (1-based). */
  number = 0

  constructor(
    input: AsyncIterable<Uint8Array | string>,
    private readonly max: number,
    private readonly tooLong: (line: number) => Error,
    private readonly readFailed: (line: number, err: unknown) => Error,
  ) {
    this.it = input[Symbol.asyncIterator]()
  }

  async next(): Promise<Line | undefined> {
    const parts: Buffer[] = []
    let size = 0
    // Bounded by the input: every turn consumes a chunk or ends a line.
    for (;;) {
      if (this.pos >= this.chunk.length) {
        if (this.ended) break
        let r: IteratorResult<Uint8Array | string>
        try {
          r = await this.it.next()
        } catch (err) {
          throw this.readFailed(this.number, err)
        }
        if (r.done) {
          this.ended = true
          break
        }
        const v = r.value
        this.chunk = typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v.buffer, v.byteOffset, v.byteLength)
        this.pos = 0
        continue
      }
      const nl = this.chunk.indexOf(10, this.pos)
      const end = nl < 0 ? this.chunk.length : nl
      size += end - this.pos
      if (size > this.max) throw this.tooLong(this.number + 1)
      parts.push(this.chunk.subarray(this.pos, end))
      if (nl >= 0) {
        this.pos = nl + 1
        return this.line(parts, size, true)
      }
      this.pos = end
    }
    return parts.length > 0 ? this.line(parts, size, false) : undefined
  }

  private line(parts: Buffer[], size: number, terminated: boolean): Line {
    this.number++
    const bytes = parts.length === 1 ? parts[0]! : Buffer.concat(parts, size)
    let text: string | undefined
    try {
      text = utf8.decode(bytes)
      if (text.endsWith('\r')) text = text.slice(0, -1)
    } catch {
      text = undefined
    }
    return { text, bytes: size + (terminated ? 1 : 0), terminated }
  }

  /** Stop reading (the input stream is destroyed when it is a Readable). */
  async close(): Promise<void> {
    await this.it.return?.()
  }
}

/** A positive safe integer option, or its default. */
function positive(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', `import option ${name} must be a positive integer, got ${String(value)}`)
  }
  return value
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/** The header (line 1), checked; `fail` makes the error for a damaged one. */
function parseHeader(line: Line, fail: (what: string) => KestrelError): ExportHeader {
  const notExport = (): KestrelError =>
    new KestrelError(
      'KESTREL_INVALID_ARGUMENT',
      'line 1 is not the header of a kestrel export ({"kestrel":"export","format":1,…}); nothing was imported; give a file written by `kestrel export` or exportDatabase()',
    )
  let h: unknown
  try {
    h = JSON.parse(line.text ?? '')
  } catch {
    throw notExport()
  }
  if (!isObject(h) || h.kestrel !== 'export') throw notExport()
  if (h.format !== EXPORT_FORMAT) {
    throw new KestrelError(
      'KESTREL_FORMAT_VERSION',
      `line 1: the export is in format ${JSON.stringify(h.format)}; this kestreldb reads format ${EXPORT_FORMAT}; nothing was imported; import it with the kestreldb version that wrote it (or a newer one)`,
    )
  }
  if (typeof h.commitId !== 'number' || !Number.isSafeInteger(h.commitId) || h.commitId < 0) throw fail('the header\'s "commitId" is not a commit id')
  if (!Array.isArray(h.collections)) throw fail('the header\'s "collections" is not a list')
  const seen = new Set<string>()
  for (const c of h.collections) {
    if (!isObject(c) || typeof c.name !== 'string' || !Array.isArray(c.indexes)) throw fail('a collection in the header is not {"name":…,"indexes":[…]}')
    try {
      checkCollectionName(c.name)
    } catch (err) {
      throw fail(`the header names a collection kestreldb does not accept: ${(err as Error).message}`)
    }
    if (seen.has(c.name)) throw fail(`the header lists collection ${JSON.stringify(c.name)} twice`)
    seen.add(c.name)
    for (const i of c.indexes) {
      if (!isObject(i) || typeof i.name !== 'string' || !(typeof i.unique === 'boolean' || i.unique === null)) {
        throw fail(`an index of ${JSON.stringify(c.name)} in the header is not {"name":…,"unique":true|false|null}`)
      }
    }
  }
  return h as unknown as ExportHeader
}

/** The target must hold no records (engine-internal ones aside). */
function assertEmpty(db: Database): void {
  const view = db.snapshot()
  try {
    for (const name of collectionsOf(db)) {
      if (holdsRecords(view, db.collection(name))) {
        throw new KestrelError(
          'KESTREL_INVALID_ARGUMENT',
          `the target database already holds records (collection ${JSON.stringify(name)}); import into a new or empty database (an import never merges)`,
        )
      }
    }
  } finally {
    view.close()
  }
}

/**
 * Read an export (see {@link exportDatabase}) from `input` into `db`, which must hold no records:
 * line by line, in transactions of up to `transactionRecords` records and `transactionBytes`
 * bytes, so memory stays bounded whatever the size of the export. A damaged or truncated export
 * fails with `KESTREL_CORRUPT` naming the line; the records of the transactions committed before
 * it stay (the message says how many), nothing after them is written. Index definitions given in
 * `options.indexes` are defined before the first record, so their indexes are built as it goes.
 *
 * @example
 * const db = await open('./copy')
 * const { records } = await importDatabase(db, createReadStream('./data.ndjson'), {
 *   indexes: { users: { byEmail: { key: (u: { email: string }) => u.email } } },
 * })
 */
export async function importDatabase(db: Database, input: AsyncIterable<Uint8Array | string>, options: ImportOptions = {}): Promise<ImportResult> {
  if (typeof (input as { [Symbol.asyncIterator]?: unknown })?.[Symbol.asyncIterator] !== 'function') {
    throw new KestrelError(
      'KESTREL_INVALID_ARGUMENT',
      'importDatabase(db, input) needs a Readable stream (fs.createReadStream(file), process.stdin, …) or another async iterable of bytes',
    )
  }
  const txRecords = positive('transactionRecords', options.transactionRecords, IMPORT_TRANSACTION_RECORDS)
  const txBytes = positive('transactionBytes', options.transactionBytes, IMPORT_TRANSACTION_BYTES)
  const maxLine = positive('maxLineBytes', options.maxLineBytes, IMPORT_LINE_BYTES_MAX)
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function')
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'import option onProgress must be a function')
  if (options.indexes !== undefined && !isObject(options.indexes)) {
    throw new KestrelError('KESTREL_INVALID_ARGUMENT', 'import option indexes is { collection: { index: { key: (value) => indexKey, unique? } } }')
  }
  assertEmpty(db)

  let committed = 0
  let transactions = 0
  /** What the target holds after a failure, for the message. */
  const held = (): string =>
    committed === 0
      ? 'nothing was imported'
      : `${committed} records were imported, in ${transactions} whole transaction${transactions === 1 ? '' : 's'}; nothing after them was`
  const importError = (code: KestrelErrorCode, what: string, cause?: unknown): KestrelError =>
    new KestrelError(code, `${what}; ${held()}; import a complete, undamaged export into a new or empty database`, { cause })
  const lineError = (code: KestrelErrorCode, line: number, what: string, cause?: unknown): KestrelError =>
    importError(code, `line ${line} of the export: ${what}`, cause)

  const reader = new LineReader(
    input,
    maxLine,
    (n) => lineError('KESTREL_CORRUPT', n, `longer than ${maxLine} bytes: not a kestrel export, or one with larger values than maxLineBytes allows`),
    (n, err) => importError('KESTREL_IO', `reading the export failed after line ${n}: ${String((err as Error)?.message ?? err)}`, err),
  )
  let tx: Transaction | undefined
  try {
    const first = await reader.next()
    if (!first) {
      throw new KestrelError(
        'KESTREL_INVALID_ARGUMENT',
        'the input is empty, not a kestrel export; give a file written by `kestrel export` or exportDatabase()',
      )
    }
    const header = parseHeader(first, (what) => lineError('KESTREL_CORRUPT', 1, what))

    // Collections and their indexes first: the builds of new indexes end before any record is in.
    const coordinator = leaseOf(db).coordinator
    const handles = new Map<string, Collection<unknown>>()
    for (const h of header.collections) {
      const given = options.indexes?.[h.name]
      let defs: Record<string, IndexDefinition<unknown>> | undefined
      if (given !== undefined) {
        if (!isObject(given)) throw new KestrelError('KESTREL_INVALID_ARGUMENT', `import option indexes.${h.name} is { index: { key, unique? } }`)
        defs = {}
        for (const [name, d] of Object.entries(given)) {
          const unique = (d as IndexDefinition<unknown>)?.unique ?? h.indexes.find((i) => i.name === name)?.unique ?? false
          defs[name] = { ...(d as IndexDefinition<unknown>), unique }
        }
      }
      const handle = db.collection<unknown>(h.name, defs ? { indexes: defs } : undefined)
      await handle.ready()
      handles.set(h.name, handle)
    }
    const indexes = header.collections.flatMap((h) =>
      h.indexes.map((i) => {
        const state = coordinator.indexes.of(h.name)?.find((s) => s.name === i.name)
        return { collection: h.name, name: i.name, unique: state ? state.unique : i.unique, defined: state !== undefined }
      }),
    )

    // Null prototype: a collection may be named "__proto__".
    const counts: Record<string, number> = Object.create(null)
    for (const h of header.collections) counts[h.name] = 0
    let read = 0
    let pending = 0
    let pendingBytes = 0
    const commit = async (line: number): Promise<void> => {
      if (!tx) return
      const t = tx
      tx = undefined
      try {
        await t.commit()
      } catch (err) {
        const e = err as KestrelError
        throw lineError(isKestrelErrorCode(e?.code) ? e.code : 'KESTREL_IO', line, `committing the records up to here failed: ${e.message}`, err)
      }
      committed += pending
      transactions++
      pending = 0
      pendingBytes = 0
      options.onProgress?.({ records: committed, transactions })
    }

    for (;;) {
      const line = await reader.next()
      const n = reader.number
      if (!line) {
        throw importError('KESTREL_CORRUPT', `the export ends after line ${n} without its end line {"kestrel":"end",…}: it is truncated (${read} records read)`)
      }
      if (line.text === undefined) throw lineError('KESTREL_CORRUPT', n, 'not UTF-8 text')
      let r: unknown
      try {
        r = JSON.parse(line.text)
      } catch (err) {
        throw lineError(
          'KESTREL_CORRUPT',
          n,
          line.terminated ? `not JSON (${(err as Error).message})` : 'cut short at the end of the input: the export is truncated',
        )
      }
      if (!isObject(r)) throw lineError('KESTREL_CORRUPT', n, 'not a JSON object')
      if (r.kestrel !== undefined) {
        if (r.kestrel !== 'end') throw lineError('KESTREL_CORRUPT', n, `a ${JSON.stringify(r.kestrel)} line where a record or the end line belongs`)
        if (r.records !== read) throw lineError('KESTREL_CORRUPT', n, `the end line counts ${String(r.records)} records, the export holds ${read}`)
        const listed = isObject(r.collections) ? r.collections : {}
        for (const h of header.collections) {
          if (Object.hasOwn(listed, h.name) && listed[h.name] !== counts[h.name]) {
            throw lineError(
              'KESTREL_CORRUPT',
              n,
              `the end line counts ${String(listed[h.name])} records of ${JSON.stringify(h.name)}, the export holds ${counts[h.name]}`,
            )
          }
        }
        if (await reader.next()) throw lineError('KESTREL_CORRUPT', reader.number, 'a line after the end line')
        await commit(n)
        return { records: committed, transactions, sourceCommitId: BigInt(header.commitId), collections: header.collections.map((h) => h.name), indexes }
      }
      const c = typeof r.c === 'string' ? handles.get(r.c) : undefined
      if (!c) {
        throw lineError(
          'KESTREL_CORRUPT',
          n,
          typeof r.c === 'string'
            ? `a record of collection ${JSON.stringify(r.c)}, which the header (line 1) does not list`
            : 'a record without its collection "c"',
        )
      }
      const key = recordKey(r, (what) => lineError('KESTREL_CORRUPT', n, what))
      const value = recordValue(r, (what) => lineError('KESTREL_CORRUPT', n, what))
      tx ??= db.begin()
      try {
        tx.put(c, key, value)
      } catch (err) {
        const e = err as KestrelError
        throw lineError(isKestrelErrorCode(e?.code) ? e.code : 'KESTREL_INVALID_VALUE', n, `the record cannot be written: ${e.message}`, err)
      }
      read++
      counts[c.name]!++
      pending++
      pendingBytes += line.bytes
      if (pending >= txRecords || pendingBytes >= txBytes) await commit(n)
    }
  } finally {
    // A failure leaves the records of the transaction in progress out.
    if (tx && !tx.finished) tx.rollback()
    await reader.close().catch(() => undefined)
  }
}

/** The key of a record line: `"k"` (JSON) or `"kb"` (base64 of the key encoding). */
function recordKey(r: Record<string, unknown>, fail: (what: string) => KestrelError): Key {
  const hasK = Object.hasOwn(r, 'k')
  if (hasK === Object.hasOwn(r, 'kb')) throw fail('a record needs exactly one of "k" and "kb"')
  if (hasK) {
    try {
      encodeKey(r.k as Key)
    } catch (err) {
      throw fail(`"k" is not a key: ${(err as Error).message}`)
    }
    return r.k as Key
  }
  if (typeof r.kb !== 'string' || !BASE64.test(r.kb)) throw fail('"kb" is not base64')
  try {
    return decodeKey(Buffer.from(r.kb, 'base64'))
  } catch {
    throw fail('"kb" is not the encoding of a key')
  }
}

/** The value of a record line: `"v"` (JSON) or `"vb"` (base64 of its MessagePack). */
function recordValue(r: Record<string, unknown>, fail: (what: string) => KestrelError): unknown {
  const hasV = Object.hasOwn(r, 'v')
  if (hasV === Object.hasOwn(r, 'vb')) throw fail('a record needs exactly one of "v" and "vb"')
  if (hasV) return r.v
  if (typeof r.vb !== 'string' || !BASE64.test(r.vb)) throw fail('"vb" is not base64')
  const bytes = Buffer.from(r.vb, 'base64')
  try {
    return decodeValue(bytes)
  } catch {
    throw fail('"vb" is not a MessagePack value')
  }
}
