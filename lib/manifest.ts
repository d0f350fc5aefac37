/**
 * The backup manifest (docs/FORMAT.md "Backups"): what a finished backup promised to hold — the
 * commit id, and every file with its length and SHA-256 — so that a backup cut short, or damaged
 * after it was written, is refused instead of restored as a smaller database.
 *
 * A backup directory is recognised by `BACKUP_LABEL`, which a backup writes before anything else,
 * or by `BACKUP_MANIFEST`, which it writes last (atomically): a directory with the label and no
 * manifest is a backup that did not finish or lost its manifest. A database directory has
 * neither, and the manifest does not apply to it.
 */
import { createHash, type Hash } from 'node:crypto'
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { IDENTITY_FILE, LOG_DIR, parseSegmentName } from './format/log.js'
import { PAGE_FILE } from './format/page_layout.js'

/** Written first by a backup: marks the directory as a backup (finished or not). */
export const BACKUP_LABEL = 'BACKUP_LABEL'
/** Written last by a backup: what it holds. */
export const BACKUP_MANIFEST = 'BACKUP_MANIFEST'
/** The `format` field of the manifest. */
export const MANIFEST_FORMAT = 'kestreldb-backup'
/** The manifest version this code writes and reads. */
export const MANIFEST_VERSION = 1
/** At most this many files in a backup (64 MiB segments: terabytes of log). */
const MANIFEST_FILES_MAX = 100_000
/** A manifest file larger than this is not one (100,000 entries take about 15 MB). */
const MANIFEST_BYTES_MAX = 32 * 1024 * 1024
/** The line that carries the manifest's own checksum, after everything it covers. */
const CHECKSUM_LINE = '\n  "manifestSha256": "'

/** One file of a backup. */
export interface ManifestFile {
  /** Path inside the backup: `KESTREL`, `pages.kdb` or `log/<segment>.klog`. */
  path: string
  bytes: number
  /** SHA-256 of the file's bytes, lowercase hex. */
  sha256: string
}

/** What a finished backup holds. */
export interface BackupManifest {
  /** Every commit up to this one is in the backup, none after. */
  commitId: number
  /** When the backup finished (ISO 8601, informational). */
  createdAt: string
  files: ManifestFile[]
}

/** Does `dir` hold a backup's label or manifest (so the manifest's rules apply)? */
export function isBackupDirectory(dir: string): boolean {
  return existsSync(join(dir, BACKUP_LABEL)) || existsSync(join(dir, BACKUP_MANIFEST))
}

const sha256 = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex')

/** The bytes of `BACKUP_MANIFEST` (UTF-8 JSON; the last member is the checksum of everything before its line). */
export function encodeManifest(m: BackupManifest): string {
  const body = JSON.stringify(
    { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, commitId: String(m.commitId), createdAt: m.createdAt, files: m.files },
    null,
    2,
  )
  // `body` ends with "\n}": the checksum becomes its last member.
  const head = `${body.slice(0, -2)},\n`
  return `${head}  "manifestSha256": "${sha256(head)}"\n}\n`
}

function isManifestPath(path: unknown): path is string {
  if (path === IDENTITY_FILE || path === PAGE_FILE) return true
  return typeof path === 'string' && path.startsWith(`${LOG_DIR}/`) && parseSegmentName(path.slice(LOG_DIR.length + 1)) !== undefined
}

/** Read and check `dir`'s manifest: the manifest, or the problem that makes it unusable. */
export function readManifest(dir: string): { manifest: BackupManifest } | { problem: string } {
  const path = join(dir, BACKUP_MANIFEST)
  if (!existsSync(path)) {
    return { problem: `${BACKUP_MANIFEST}: missing (the directory has ${BACKUP_LABEL}): the backup did not finish, or its manifest was lost` }
  }
  const size = statSync(path).size
  if (size > MANIFEST_BYTES_MAX) return { problem: `${BACKUP_MANIFEST}: ${size} bytes, more than a manifest can be` }
  const text = readFileSync(path, 'utf8')
  let raw: Record<string, unknown>
  try {
    raw = JSON.parse(text) as Record<string, unknown>
  } catch (err) {
    return { problem: `${BACKUP_MANIFEST}: not valid JSON (${(err as Error).message}); it is damaged or was cut short` }
  }
  if (raw === null || typeof raw !== 'object' || raw.format !== MANIFEST_FORMAT)
    return { problem: `${BACKUP_MANIFEST}: not a kestreldb backup manifest (format is not "${MANIFEST_FORMAT}")` }
  if (raw.version !== MANIFEST_VERSION) {
    return {
      problem: `${BACKUP_MANIFEST}: manifest version ${String(raw.version)}, this kestreldb reads version ${MANIFEST_VERSION}${typeof raw.version === 'number' && raw.version > MANIFEST_VERSION ? ' (written by a newer kestreldb: use that version)' : ''}`,
    }
  }
  const at = text.lastIndexOf(CHECKSUM_LINE)
  const head = text.slice(0, at + 1)
  if (
    at < 0 ||
    typeof raw.manifestSha256 !== 'string' ||
    text !== `${head}  "manifestSha256": "${raw.manifestSha256}"\n}\n` ||
    sha256(head) !== raw.manifestSha256
  ) {
    return { problem: `${BACKUP_MANIFEST}: its checksum does not match its contents (the manifest was edited or damaged)` }
  }
  const commitId = typeof raw.commitId === 'string' && /^\d{1,16}$/.test(raw.commitId) ? Number(raw.commitId) : NaN
  if (!Number.isSafeInteger(commitId)) return { problem: `${BACKUP_MANIFEST}: commitId ${JSON.stringify(raw.commitId)} is not a commit id` }
  if (typeof raw.createdAt !== 'string') return { problem: `${BACKUP_MANIFEST}: createdAt is missing` }
  const list = raw.files
  if (!Array.isArray(list) || list.length === 0 || list.length > MANIFEST_FILES_MAX)
    return { problem: `${BACKUP_MANIFEST}: files must list 1 to ${MANIFEST_FILES_MAX} files` }
  const files: ManifestFile[] = []
  const seen = new Set<string>()
  for (const f of list as Array<Record<string, unknown>>) {
    // Paths are checked, never trusted: restore copies exactly these files.
    if (f === null || typeof f !== 'object' || !isManifestPath(f.path) || seen.has(f.path))
      return {
        problem: `${BACKUP_MANIFEST}: file entry ${JSON.stringify(f)} is not a backup file (KESTREL, ${PAGE_FILE} or ${LOG_DIR}/<segment>), or is listed twice`,
      }
    if (!Number.isSafeInteger(f.bytes) || (f.bytes as number) < 0 || typeof f.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(f.sha256))
      return { problem: `${BACKUP_MANIFEST}: ${f.path} needs a length in bytes and a SHA-256` }
    seen.add(f.path)
    files.push({ path: f.path, bytes: f.bytes as number, sha256: f.sha256 })
  }
  if (!seen.has(IDENTITY_FILE)) return { problem: `${BACKUP_MANIFEST}: does not list ${IDENTITY_FILE}` }
  return { manifest: { commitId, createdAt: raw.createdAt, files } }
}

/** Bytes read per step when a file is hashed. */
const HASH_CHUNK_BYTES = 1024 * 1024
const ZEROS = new Uint8Array(64 * 1024)

/**
 * SHA-256 of a file being written at ascending offsets, where the bytes between the ranges given
 * are zeros (the holes a backup leaves in a sparse page file).
 */
export class FileDigest {
  private readonly hash: Hash = createHash('sha256')
  private at = 0

  /** `bytes` lie at `offset` (≥ the end of the previous update). */
  update(offset: number, bytes: Uint8Array): void {
    this.zerosTo(offset)
    this.hash.update(bytes)
    this.at += bytes.length
  }

  /** The digest of a file of `size` bytes (zeros after the last update). */
  digest(size: number): string {
    this.zerosTo(size)
    return this.hash.digest('hex')
  }

  private zerosTo(offset: number): void {
    if (offset < this.at) throw new Error(`internal: a backup file is hashed out of order (${offset} < ${this.at})`)
    // Bounded by `offset`.
    while (this.at < offset) {
      const n = Math.min(ZEROS.length, offset - this.at)
      this.hash.update(ZEROS.subarray(0, n))
      this.at += n
    }
  }
}

/** SHA-256 and length of the file at `path`. */
export function hashFile(path: string): { bytes: number; sha256: string } {
  const fd = openSync(path, 'r')
  try {
    const size = fstatSync(fd).size
    const hash = createHash('sha256')
    const buffer = Buffer.allocUnsafe(Math.min(HASH_CHUNK_BYTES, Math.max(size, 1)))
    let at = 0
    // Bounded by the size taken at open; a file that shrinks meanwhile ends the loop early.
    while (at < size) {
      const got = readSync(fd, buffer, 0, Math.min(buffer.length, size - at), at)
      if (got <= 0) break
      hash.update(buffer.subarray(0, got))
      at += got
    }
    return { bytes: at, sha256: hash.digest('hex') }
  } finally {
    closeSync(fd)
  }
}

/**
 * Compare the files of `dir` with `manifest`: each listed file exists with its length and
 * SHA-256; with `strict`, no log segment or page file is there that the manifest does not list
 * (opening the directory would read it). Returns the problems, each naming the file.
 */
export function checkManifestFiles(dir: string, manifest: BackupManifest, strict: boolean): string[] {
  const problems: string[] = []
  for (const f of manifest.files) {
    const path = join(dir, f.path)
    if (!existsSync(path)) {
      problems.push(`${f.path}: missing (${BACKUP_MANIFEST} lists it with ${f.bytes} bytes)`)
      continue
    }
    const size = statSync(path).size
    if (size !== f.bytes) {
      problems.push(
        `${f.path}: ${size} bytes, ${BACKUP_MANIFEST} says ${f.bytes} (${size < f.bytes ? `${f.bytes - size} bytes short` : `${size - f.bytes} bytes too many`})`,
      )
      continue
    }
    const h = hashFile(path)
    if (h.bytes !== f.bytes || h.sha256 !== f.sha256)
      problems.push(`${f.path}: its contents differ from ${BACKUP_MANIFEST} (SHA-256 ${h.sha256.slice(0, 16)}…, expected ${f.sha256.slice(0, 16)}…)`)
  }
  if (strict) {
    const listed = new Set(manifest.files.map((f) => f.path))
    const logDir = join(dir, LOG_DIR)
    const present = [
      ...(existsSync(join(dir, PAGE_FILE)) ? [PAGE_FILE] : []),
      ...(existsSync(logDir)
        ? readdirSync(logDir)
            .filter((n) => parseSegmentName(n) !== undefined)
            .sort()
            .map((n) => `${LOG_DIR}/${n}`)
        : []),
    ]
    for (const p of present) if (!listed.has(p)) problems.push(`${p}: not in ${BACKUP_MANIFEST} (written after the backup finished)`)
  }
  return problems
}
