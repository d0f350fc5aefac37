/**
 * Opening a database directory (docs/FORMAT.md "Directory"): create it, or check that it is one.
 */
import { mkdir, readdir, readFile, rename, stat, writeFile, open as fsOpen } from 'node:fs/promises'
import { join } from 'node:path'
import { KestrelError } from '../../errors.js'
import { crc32c } from '../../format/crc32c.js'
import { IDENTITY_BYTES, IDENTITY_FILE, IDENTITY_MAGIC, IDENTITY_VERSION, IDENTITY_VERSION_MIN, LOG_DIR, identityBytes } from '../../format/log.js'
import { syncDir } from './fsutil.js'
import { isLockFile } from '../../lock.js'

function notADatabase(dir: string, why: string): KestrelError {
  return new KestrelError(
    'KESTREL_NOT_A_DATABASE',
    `${dir} is not a kestreldb database (${why}); pass an empty or new directory, or the directory of an existing database`,
  )
}

/** Make sure `dir` is a kestreldb directory, creating it when missing or empty. */
export async function prepareDirectory(dir: string): Promise<void> {
  let entries: string[]
  try {
    const st = await stat(dir)
    if (!st.isDirectory()) throw notADatabase(dir, 'it is a file, not a directory')
    entries = await readdir(dir)
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err
    await mkdir(dir, { recursive: true })
    entries = []
  }

  // The lock's files may exist before the database does.
  entries = entries.filter((e) => !isLockFile(e))
  if (entries.includes(IDENTITY_FILE)) {
    const bytes = new Uint8Array(await readFile(join(dir, IDENTITY_FILE)))
    const version = checkIdentity(dir, bytes)
    await mkdir(join(dir, LOG_DIR), { recursive: true })
    // Version 1 predates sharing; the layout is the same, so the upgrade is the version number.
    if (version < IDENTITY_VERSION) await writeIdentity(dir)
    return
  }
  if (entries.length > 0) throw notADatabase(dir, `it holds ${entries.length} other entries and no ${IDENTITY_FILE} file`)

  await mkdir(join(dir, LOG_DIR))
  await writeIdentity(dir)
}

/** Write the identity file atomically: temp file, fsync, rename, fsync the directory. */
async function writeIdentity(dir: string): Promise<void> {
  const tmp = join(dir, `${IDENTITY_FILE}.tmp`)
  await writeFile(tmp, identityBytes())
  const fh = await fsOpen(tmp, 'r+')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
  await rename(tmp, join(dir, IDENTITY_FILE))
  await syncDir(dir)
}

/** Check the identity file; returns its format version. */
function checkIdentity(dir: string, bytes: Uint8Array): number {
  if (bytes.length !== IDENTITY_BYTES) throw notADatabase(dir, `${IDENTITY_FILE} is ${bytes.length} bytes, expected ${IDENTITY_BYTES}`)
  for (let i = 0; i < IDENTITY_MAGIC.length; i++) {
    if (bytes[i] !== IDENTITY_MAGIC[i]) throw notADatabase(dir, `${IDENTITY_FILE} has the wrong magic`)
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (view.getUint32(12, true) !== crc32c(bytes, 0, 0, 12)) throw notADatabase(dir, `${IDENTITY_FILE} checksum mismatch`)
  const version = view.getUint32(8, true)
  if (version === 0) throw notADatabase(dir, `${IDENTITY_FILE} has format version 0`)
  if (version < IDENTITY_VERSION_MIN || version > IDENTITY_VERSION) {
    throw new KestrelError(
      'KESTREL_FORMAT_VERSION',
      `${dir} uses on-disk format version ${version}; this kestreldb reads versions ${IDENTITY_VERSION_MIN} to ${IDENTITY_VERSION}: upgrade kestreldb`,
    )
  }
  return version
}
