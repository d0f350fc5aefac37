// The benchmark's contestants, one module each, shared by every workload. openStore(name, dir)
// returns an object offering what the workloads need (a contestant may offer only some):
//   commitOne(key, value) → Promise   one durable single-record transaction (W1)
//   load(entries, { batch }) → Promise   bulk load in transactions of `batch` records (default
//                                       10,000); untimed in W2, W3, W5, timed in W4 (batch 1000)
//   reader()              → { get(key), scan100(startKey), find(x), close() }   synchronous reads
//                                       (W2, W5); find(x) (W6): the records { key, value } whose
//                                       indexed field equals x, when opened with `index`
//   get(key)              → value     the newest committed value, outside any read view: a
//                                       fresh read each call, other processes' commits included
//                                       (WP's tailing reader)
//   rmw(k1, k2)           → Promise   one durable transaction reading two keys, writing both (W3)
//   attempts                          transaction bodies run so far (W3's retry rate)
//   checkpoint()          → Promise   kestreldb only: write a checkpoint, trim the log (W4, W7)
//   backup(destDir, opts) → Promise<{ bytes }>   an online backup while writers go on (W7;
//                                       opts.onProgress is kestreldb's)
//   stats()               → object    kestreldb only: db.stats() (W2 cold, W4, W7, W9)
//   scavenge()            → Promise   kestreldb only: db.scavenge() (W9)
//   synchronous                       true when commitOne never yields to the event loop (W7)
//   close()               → Promise
// Each module is imported only in the child process that runs its cell, so a broken peer cannot
// take the others down.

const MODULES = {
  'kestrel-native': () => import('./kestrel.js'),
  'kestrel-ts': () => import('./kestrel.js'),
  // A replica directory of a database whose log is in PostgreSQL: needs options.postgres.
  'kestrel-native-pg': () => import('./kestrel.js'),
  'kestrel-ts-pg': () => import('./kestrel.js'),
  lmdb: () => import('./lmdb.js'),
  'better-sqlite3': () => import('./better-sqlite3.js'),
  'classic-level': () => import('./classic-level.js'),
  'js-map': () => import('./js-map.js'),
}

export const KESTREL = ['kestrel-native', 'kestrel-ts', 'kestrel-native-pg', 'kestrel-ts-pg']

/**
 * `options` are kestreldb open options (cacheBytes, checkpointBytes, …) for the kestrel
 * contestants; the peers ignore them. Options every store that can honours:
 *   index: { field, unique }   W6: a secondary index on value[field] (kestreldb, better-sqlite3, js-map)
 *   pageCacheBytes             W9: better-sqlite3's page cache (PRAGMA cache_size)
 *   scans: false               W9: js-map without its sorted key array
 *   postgres: { connectionString, schema }   WPG: required by (and only for) the -pg contestants
 */
export async function openStore(name, dir, options = {}) {
  const load = MODULES[name]
  if (!load) throw new Error(`unknown contestant ${name} (known: ${Object.keys(MODULES).join(', ')})`)
  const pgName = name.endsWith('-pg')
  if (pgName !== (options.postgres !== undefined)) throw new Error(`${name}: the postgres option is ${pgName ? 'required' : 'only for the -pg contestants'}`)
  const mod = await load()
  return mod.open(dir, { ...options, engine: name.startsWith('kestrel-ts') ? 'ts' : 'native' })
}
