// The benchmark's contestants. Each opens a store in `dir` and offers: commitOne(key, value) →
// Promise (one durable single-record transaction, W1), load(entries) (bulk, untimed),
// reader() → { get(key), scan100(startKey) } (synchronous where the store allows, W2/W5), and
// rmw(k1, k2) → Promise (one durable transaction that reads two keys and writes both, W3).
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export const W1_CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'lmdb', 'better-sqlite3', 'classic-level']

export async function openStore(name, dir) {
  switch (name) {
    case 'kestrel-native':
    case 'kestrel-ts': {
      const { open } = await import('../../dist/index.js')
      const db = await open(dir, { engine: name === 'kestrel-native' ? 'native' : 'ts', durability: 'sync' })
      const items = db.collection('items')
      return {
        async commitOne(key, value) {
          const tx = db.begin()
          tx.put(items, key, value)
          await tx.commit()
        },
        async load(entries) {
          for (let i = 0; i < entries.length; i += 10_000) {
            await db.transaction((tx) => { for (const [k, v] of entries.slice(i, i + 10_000)) tx.put(items, k, v) })
          }
        },
        reader() {
          const snap = db.snapshot()
          return {
            get: (k) => snap.get(items, k),
            scan100(start) {
              let n = 0
              for (const _ of snap.scan(items, { gte: start, limit: 100 })) n++
              return n
            },
            close: () => snap.close(),
          }
        },
        attempts: 0,
        async rmw(k1, k2) {
          await db.transaction((tx) => {
            this.attempts++
            const a = tx.get(items, k1)?.n ?? 0
            const b = tx.get(items, k2)?.n ?? 0
            tx.put(items, k1, { n: a + 1 })
            tx.put(items, k2, { n: b + 1 })
          }, { retries: 1000 })
        },
        close: () => db.close(),
      }
    }
    case 'lmdb': {
      const { open } = require('lmdb')
      // Default durable settings: async batched puts, committed with a sync.
      const db = open({ path: dir })
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
    case 'better-sqlite3': {
      const Database = require('better-sqlite3')
      const db = new Database(`${dir}.sqlite`)
      db.pragma('journal_mode = WAL')
      db.pragma('synchronous = FULL')
      db.exec('CREATE TABLE IF NOT EXISTS items (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID')
      const put = db.prepare('INSERT OR REPLACE INTO items (k, v) VALUES (?, ?)')
      const get = db.prepare('SELECT v FROM items WHERE k = ?').pluck()
      const range = db.prepare('SELECT k, v FROM items WHERE k >= ? ORDER BY k LIMIT 100')
      const enc = (v) => Buffer.from(JSON.stringify(v))
      const dec = (b) => (b === undefined ? undefined : JSON.parse(b))
      const rmw = db.transaction((k1, k2) => {
        const a = dec(get.get(k1))?.n ?? 0
        const b = dec(get.get(k2))?.n ?? 0
        put.run(k1, enc({ n: a + 1 }))
        put.run(k2, enc({ n: b + 1 }))
      })
      return {
        // Synchronous: one statement = one durable transaction; concurrency cannot help it.
        async commitOne(key, value) {
          put.run(key, value)
        },
        async load(entries) {
          const batch = db.transaction((rows) => { for (const [k, v] of rows) put.run(k, enc(v)) })
          for (let i = 0; i < entries.length; i += 10_000) batch(entries.slice(i, i + 10_000))
        },
        reader() {
          return {
            get: (k) => dec(get.get(k)),
            scan100(start) {
              let n = 0
              for (const row of range.iterate(start)) { dec(row.v); n++ }
              return n
            },
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
    case 'classic-level': {
      const { ClassicLevel } = require('classic-level')
      const db = new ClassicLevel(dir, { valueEncoding: 'buffer' })
      await db.open()
      return {
        commitOne: (key, value) => db.put(key, value, { sync: true }),
        close: () => db.close(),
      }
    }
    case 'js-map': {
      // The in-memory limit for reads: a plain Map and a sorted key array.
      const map = new Map()
      let sorted = []
      return {
        async load(entries) {
          for (const [k, v] of entries) map.set(k, v)
          sorted = [...map.keys()].sort()
        },
        reader() {
          return {
            get: (k) => map.get(k),
            scan100(start) {
              let lo = 0
              let hi = sorted.length
              while (lo < hi) { const mid = (lo + hi) >>> 1; if (sorted[mid] < start) lo = mid + 1; else hi = mid }
              let n = 0
              for (let i = lo; i < Math.min(sorted.length, lo + 100); i++) { map.get(sorted[i]); n++ }
              return n
            },
            close() {},
          }
        },
        close: async () => {},
      }
    }
    default:
      throw new Error(`unknown contestant ${name}`)
  }
}
