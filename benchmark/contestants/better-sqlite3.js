// better-sqlite3 in WAL mode with synchronous=FULL: every transaction is fsync'd before it
// returns. It is synchronous, so C concurrent clients only interleave between statements.
import { mkdirSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'

const require = createRequire(import.meta.url)

export async function open(dir, { index, pageCacheBytes } = {}) {
  const Database = require('better-sqlite3')
  const db = new Database(`${dir}.sqlite`)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = FULL')
  // Negative: a size in KiB rather than in pages.
  if (pageCacheBytes) db.pragma(`cache_size = ${-Math.ceil(pageCacheBytes / 1024)}`)
  // Bytes are stored as they are (W1, W4, W7); other values as JSON.
  const enc = (v) => (v instanceof Uint8Array ? v : Buffer.from(JSON.stringify(v)))
  const dec = (b) => (b === undefined ? undefined : JSON.parse(b))
  let put
  let write
  let find
  if (index) {
    db.exec('CREATE TABLE IF NOT EXISTS items (k TEXT PRIMARY KEY, x, v BLOB) WITHOUT ROWID')
    db.exec(`CREATE ${index.unique ? 'UNIQUE ' : ''}INDEX IF NOT EXISTS items_x ON items (x)`)
    put = db.prepare('INSERT OR REPLACE INTO items (k, x, v) VALUES (?, ?, ?)')
    write = (k, v) => put.run(k, v instanceof Uint8Array ? null : (v?.[index.field] ?? null), enc(v))
    find = db.prepare('SELECT k, v FROM items WHERE x = ?')
  } else {
    db.exec('CREATE TABLE IF NOT EXISTS items (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID')
    put = db.prepare('INSERT OR REPLACE INTO items (k, v) VALUES (?, ?)')
    write = (k, v) => put.run(k, enc(v))
  }
  const get = db.prepare('SELECT v FROM items WHERE k = ?').pluck()
  const range = db.prepare('SELECT k, v FROM items WHERE k >= ? ORDER BY k LIMIT 100')
  const rmw = db.transaction((k1, k2) => {
    const a = dec(get.get(k1))?.n ?? 0
    const b = dec(get.get(k2))?.n ?? 0
    write(k1, { n: a + 1 })
    write(k2, { n: b + 1 })
  })
  return {
    // One statement = one durable transaction (autocommit). The caller's `await` on the returned
    // promise is the `await null` that lets the other clients take their turn.
    async commitOne(key, value) {
      write(key, value)
    },
    async load(entries, { batch = 10_000 } = {}) {
      const insert = db.transaction((from, to) => {
        for (let j = from; j < to; j++) write(entries[j][0], entries[j][1])
      })
      for (let i = 0; i < entries.length; i += batch) insert(i, Math.min(entries.length, i + batch))
    },
    // The SQLite online backup API: 100 pages per step between event-loop turns; writes made
    // through this connection meanwhile are carried into the copy.
    async backup(dest) {
      const file = join(dest, 'backup.sqlite')
      mkdirSync(dest, { recursive: true })
      await db.backup(file)
      return { bytes: statSync(file).size }
    },
    // Its commits never wait on the event loop: a workload that needs timers or a backup to run
    // alongside must yield between them.
    synchronous: true,
    reader() {
      return {
        get: (k) => dec(get.get(k)),
        scan100(start) {
          let n = 0
          for (const row of range.iterate(start)) {
            dec(row.v)
            n++
          }
          return n
        },
        // W6: the records whose indexed field equals `x`, decoded.
        find: (x) => find.all(x).map((row) => ({ key: row.k, value: dec(row.v) })),
        close() {},
      }
    },
    attempts: 0,
    async rmw(k1, k2) {
      this.attempts++
      rmw(k1, k2)
    },
    close: async () => db.close(),
  }
}
