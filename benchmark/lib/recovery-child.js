// Child processes of W8 (recovery after SIGKILL), one job each, so that every open is timed in a
// fresh process:
//   node recovery-child.js write <store> <path> <targetLogBytes>
//     commits batches of 1000 × 256-byte records without ever checkpointing, prints
//     "ACK <records>" after each acknowledged batch and "READY <records>" once the log (kestreldb:
//     <path>/log up to its last non-zero byte, SQLite: <path>-wal) holds targetLogBytes, then goes
//     on committing until killed.
//   node recovery-child.js open <store> <path> <checkpoint: 0|1>
//     times open() (recovery and replay) up to a first read, counts the records, then closes
//     (kestreldb: after `await db.checkpoint()` when asked, timed) and prints one JSON line.
// <store> is kestrel-native, kestrel-ts or better-sqlite3.
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { diskUsage, usedBytesIn, valueSource } from './disk.js'

const require = createRequire(import.meta.url)
const [mode, store, path, arg] = process.argv.slice(2)
const BATCH = 1000
const VALUE_BYTES = 256
const GiB = 1 << 30
const key = (i) => `k${String(i).padStart(7, '0')}`
const engine = store === 'kestrel-ts' ? 'ts' : 'native'
// No checkpoint by size (1 GiB of changes) or by age: the whole log stays to be replayed.
const KESTREL_OPTIONS = { engine, durability: 'sync', checkpointBytes: GiB, checkpointIntervalMs: 0 }
// The log's bytes up to its end, without kestreldb's preallocated zeros (SQLite has none).
const logBytes = () => (store === 'better-sqlite3' ? diskUsage(`${path}-wal`).bytes : usedBytesIn(join(path, 'log')))
/** The log's files as they lie, preallocation included. */
const logFileBytes = () => (store === 'better-sqlite3' ? diskUsage(`${path}-wal`).bytes : diskUsage(join(path, 'log')).bytes)

function openSqlite() {
  const Database = require('better-sqlite3')
  const db = new Database(path)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = FULL')
  // No automatic checkpoint: the WAL grows until it is replayed at the next open.
  db.pragma('wal_autocheckpoint = 0')
  db.exec('CREATE TABLE IF NOT EXISTS items (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID')
  return db
}

async function write() {
  const target = Number(arg)
  const value = valueSource(VALUE_BYTES)
  let commitBatch
  if (store === 'better-sqlite3') {
    const db = openSqlite()
    const put = db.prepare('INSERT INTO items (k, v) VALUES (?, ?)')
    const insert = db.transaction((from) => {
      for (let i = from; i < from + BATCH; i++) put.run(key(i), value(i))
    })
    commitBatch = async (from) => insert(from)
  } else {
    const { open } = await import('../../dist/index.js')
    const db = await open(path, KESTREL_OPTIONS)
    const items = db.collection('items')
    commitBatch = (from) =>
      db.transaction((tx) => {
        for (let i = from; i < from + BATCH; i++) tx.put(items, key(i), value(i))
      })
  }
  let ready = false
  // Bounded by the parent's SIGKILL; the cap is a safety net for a parent that never kills.
  for (let from = 0; from < 9_000_000; from += BATCH) {
    await commitBatch(from)
    process.stdout.write(`ACK ${from + BATCH}\n`)
    // Checked every 10 batches (it reads the preallocated zeros at the log's end).
    if (!ready && (from / BATCH) % 10 === 9 && logBytes() >= target) {
      ready = true
      process.stdout.write(`READY ${from + BATCH}\n`)
    }
  }
}

async function openAndCount() {
  const checkpoint = arg === '1'
  const logBytesAtOpen = logBytes()
  const logFileBytesAtOpen = logFileBytes()
  if (store === 'better-sqlite3') {
    const Database = require('better-sqlite3')
    const t0 = performance.now()
    const db = new Database(path)
    // The first read makes SQLite rebuild its WAL index from the whole WAL (recovery).
    db.prepare('SELECT v FROM items WHERE k = ?').get(key(0))
    const openMs = performance.now() - t0
    const records = db.prepare('SELECT count(*) FROM items').pluck().get()
    const c0 = performance.now()
    // The last connection's close checkpoints the WAL into the database and removes it.
    db.close()
    const closeMs = performance.now() - c0
    return { openMs, records, logBytesAtOpen, logFileBytesAtOpen, closeMs }
  }
  const i0 = performance.now()
  const { open } = await import('../../dist/index.js')
  const importMs = performance.now() - i0
  const t0 = performance.now()
  const db = await open(path, KESTREL_OPTIONS)
  const items = db.collection('items')
  const view = db.snapshot()
  const first = view.get(items, key(0))
  const openMs = performance.now() - t0
  view.close()
  if (first === undefined) throw new Error('record 0 missing after open')
  const s = db.stats()
  let checkpointMs = 0
  if (checkpoint) {
    const c0 = performance.now()
    await db.checkpoint()
    checkpointMs = performance.now() - c0
  }
  const c0 = performance.now()
  await db.close()
  const closeMs = performance.now() - c0
  return {
    openMs,
    importMs,
    records: s.keys,
    logBytesAtOpen,
    logFileBytesAtOpen,
    checkpointMs,
    closeMs,
    stats: {
      checkpointLsn: Number(s.checkpointLsn),
      durableLsn: Number(s.durableLsn),
      segments: s.segments,
      pageCount: s.pageCount,
      recordBytes: s.recordBytes,
    },
  }
}

if (mode === 'write') await write()
else if (mode === 'open') process.stdout.write(`${JSON.stringify(await openAndCount())}\n`)
else throw new Error(`unknown mode ${mode}`)
