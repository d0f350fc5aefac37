// Time to build a unique index on a populated collection (issue: a quadratic unique check).
// Usage: node benchmark/unique-build.js [records ...] (default 5000 20000 100000), after `npm run build`.
// Prints one line per engine and record count: the time from defining the index to ready().
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { open } from '../dist/index.js'

const counts = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 0)
const CHUNK = 1000

for (const engine of ['native', 'ts']) {
  for (const n of counts.length > 0 ? counts : [5000, 20000, 100000]) {
    const dir = mkdtempSync(join(tmpdir(), 'kestrel-unique-build-'))
    try {
      let db = await open(dir, { engine, durability: 'none' })
      const users = db.collection('users')
      for (let b = 0; b < n; b += CHUNK) {
        await db.transaction((tx) => {
          for (let i = b; i < Math.min(n, b + CHUNK); i++) tx.put(users, `u${i}`, { email: `user${i}@example.com`, n: i })
        })
      }
      await db.close()
      db = await open(dir, { engine, durability: 'none' })
      const t0 = performance.now()
      const indexed = db.collection('users', { indexes: { byEmail: { key: (u) => u.email, unique: true } } })
      await indexed.ready()
      const ms = performance.now() - t0
      const found = [...db.snapshot().find(indexed, 'byEmail', `user${n - 1}@example.com`)].length
      await db.close()
      console.log(`${engine.padEnd(6)} ${String(n).padStart(7)} records: unique index ready in ${(ms / 1000).toFixed(2)} s (lookup found ${found})`)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
