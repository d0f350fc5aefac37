// Contestants of the write workloads. Each one opens a store in `dir` and offers
// `commitOne(key, valueBytes)`: one durable single-record transaction, resolved when acknowledged.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export const CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'lmdb', 'better-sqlite3', 'classic-level']

export async function openContestant(name, dir) {
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
        close: () => db.close(),
      }
    }
    case 'lmdb': {
      // Default durable settings: async batched puts, committed with a sync.
      const { open } = require('lmdb')
      const db = open({ path: dir })
      return {
        commitOne: (key, value) => db.put(key, value),
        close: () => db.close(),
      }
    }
    case 'better-sqlite3': {
      const Database = require('better-sqlite3')
      const db = new Database(`${dir}.sqlite`)
      db.pragma('journal_mode = WAL')
      db.pragma('synchronous = FULL')
      db.exec('CREATE TABLE IF NOT EXISTS items (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID')
      const stmt = db.prepare('INSERT OR REPLACE INTO items (k, v) VALUES (?, ?)')
      return {
        // Synchronous: one statement = one durable transaction; concurrency cannot help it.
        async commitOne(key, value) {
          stmt.run(key, value)
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
    default:
      throw new Error(`unknown contestant ${name}`)
  }
}
