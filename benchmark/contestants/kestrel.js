// kestreldb, from the repository's own build (dist/, made by `npm install` at the root), with
// durable commits: acknowledged = fdatasync'd. Other open options (cacheBytes, checkpointBytes, …)
// pass through. `index: { field, unique }` (W6) gives the collection a secondary index named
// after the field, keyed by value[field], read by reader().find(fieldValue); the peers' own
// options (pageCacheBytes, scans) are dropped.
export async function open(dir, { engine, durability = 'sync', index, pageCacheBytes, scans, ...options }) {
  const { open: openDb } = await import('../../dist/index.js')
  const db = await openDb(dir, { ...options, engine, durability })
  if (db.engine && db.engine !== engine) throw new Error(`asked for engine '${engine}', got '${db.engine}'`)
  const items = index
    ? db.collection('items', { indexes: { [index.field]: { key: (v) => v[index.field], unique: index.unique === true } } })
    : db.collection('items')
  await items.ready()
  return {
    async commitOne(key, value) {
      const tx = db.begin()
      tx.put(items, key, value)
      await tx.commit()
    },
    async load(entries, { batch = 10_000 } = {}) {
      for (let i = 0; i < entries.length; i += batch) {
        await db.transaction((tx) => {
          for (let j = i; j < Math.min(entries.length, i + batch); j++) tx.put(items, entries[j][0], entries[j][1])
        })
      }
    },
    // The newest committed value, outside any snapshot: each call sees commits made since,
    // other processes' included (WP's tailing reader).
    get: (key) => db.get(items, key),
    checkpoint: () => db.checkpoint(),
    backup: (dest, options) => db.backup(dest, options),
    stats: () => db.stats(),
    scavenge: () => db.scavenge(),
    reader() {
      const snap = db.snapshot()
      return {
        get: (k) => snap.get(items, k),
        scan100(start) {
          let n = 0
          for (const _ of snap.scan(items, { gte: start, limit: 100 })) n++
          return n
        },
        // W6: the records whose indexed field equals `x`, decoded.
        find: (x) => [...snap.find(items, index.field, x)],
        close: () => snap.close(),
      }
    },
    attempts: 0,
    async rmw(k1, k2) {
      await db.transaction(
        (tx) => {
          this.attempts++
          const a = tx.get(items, k1)?.n ?? 0
          const b = tx.get(items, k2)?.n ?? 0
          tx.put(items, k1, { n: a + 1 })
          tx.put(items, k2, { n: b + 1 })
        },
        { retries: 1000 },
      )
    },
    close: () => db.close(),
  }
}
