// lmdb-js with its default durable settings: put() is queued and committed asynchronously in
// batches, each batch synced before the promise resolves.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export async function open(dir) {
  const { open: openDb } = require('lmdb')
  const db = openDb({ path: dir })
  return {
    commitOne: (key, value) => db.put(key, value),
    async load(entries) {
      for (let i = 0; i < entries.length; i += 10_000) {
        await db.transaction(() => { for (const [k, v] of entries.slice(i, i + 10_000)) db.put(k, v) })
      }
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
