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
    close: () => db.close(),
  }
}
