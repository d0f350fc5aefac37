// kestreldb, from the repository's own build (dist/, made by `npm install` at the root), with
// durable commits: acknowledged = fdatasync'd.
export async function open(dir, { engine }) {
  const { open: openDb } = await import('../../dist/index.js')
  const db = await openDb(dir, { engine, durability: 'sync' })
  if (db.engine && db.engine !== engine) throw new Error(`asked for engine '${engine}', got '${db.engine}'`)
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
