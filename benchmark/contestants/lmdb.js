// lmdb-js with its default durable settings: put() is queued and committed asynchronously in
// batches, each batch synced before the promise resolves.
import { mkdirSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'

const require = createRequire(import.meta.url)

export async function open(dir) {
  const { open: openDb } = require('lmdb')
  const db = openDb({ path: dir })
  return {
    commitOne: (key, value) => db.put(key, value),
    // The newest committed value, other processes' included: lmdb-js renews its read
    // transaction on a setTimeout(0) after first use, so a read is at most a timer tick stale.
    get: (key) => db.get(key),
    async load(entries, { batch = 10_000 } = {}) {
      for (let i = 0; i < entries.length; i += batch) {
        await db.transaction(() => {
          for (let j = i; j < Math.min(entries.length, i + batch); j++) db.put(entries[j][0], entries[j][1])
        })
      }
    },
    // mdb_env_copy2 from a read transaction (writers go on), off the main thread. The store is
    // a directory environment, so the copy is a directory too: dest/data.mdb.
    async backup(dest) {
      mkdirSync(dest, { recursive: true })
      await db.backup(dest, false)
      return { bytes: statSync(join(dest, 'data.mdb')).size }
    },
    reader() {
      return {
        get: (k) => db.get(k),
        scan100(start) {
          let n = 0
          for (const _ of db.getRange({ start, limit: 100 })) n++
          return n
        },
        close() {},
      }
    },
    attempts: 0,
    async rmw(k1, k2) {
      // lmdb serializes write transactions, so the body runs once per commit (no retries).
      await db.transaction(() => {
        this.attempts++
        const a = db.get(k1)?.n ?? 0
        const b = db.get(k2)?.n ?? 0
        db.put(k1, { n: a + 1 })
        db.put(k2, { n: b + 1 })
      })
    },
    close: () => db.close(),
  }
}
