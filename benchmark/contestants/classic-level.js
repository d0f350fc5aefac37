// classic-level (LevelDB) with { sync: true } on every write: the write-ahead log is synced
// before the put resolves.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export async function open(dir) {
  const { ClassicLevel } = require('classic-level')
  const db = new ClassicLevel(dir, { valueEncoding: 'view' })
  await db.open()
  return {
    commitOne: (key, value) => db.put(key, value, { sync: true }),
    // One synced write batch per `batch` records (values must be bytes: valueEncoding 'view').
    async load(entries, { batch = 10_000 } = {}) {
      for (let i = 0; i < entries.length; i += batch) {
        const ops = []
        for (let j = i; j < Math.min(entries.length, i + batch); j++) ops.push({ type: 'put', key: entries[j][0], value: entries[j][1] })
        await db.batch(ops, { sync: true })
      }
    },
    close: () => db.close(),
  }
}
