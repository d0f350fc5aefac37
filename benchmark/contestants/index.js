// The benchmark's contestants, one module each, shared by every workload. openStore(name, dir)
// returns an object offering what the workloads need (a contestant may offer only some):
//   commitOne(key, value) → Promise   one durable single-record transaction (W1)
//   load(entries)         → Promise   bulk load, untimed (W2, W3, W5)
//   reader()              → { get(key), scan100(startKey), close() }   synchronous reads (W2, W5)
//   rmw(k1, k2)           → Promise   one durable transaction reading two keys, writing both (W3)
//   attempts                          transaction bodies run so far (W3's retry rate)
//   close()               → Promise
// Each module is imported only in the child process that runs its cell, so a broken peer cannot
// take the others down.

const MODULES = {
  'kestrel-native': () => import('./kestrel.js'),
  'kestrel-ts': () => import('./kestrel.js'),
  lmdb: () => import('./lmdb.js'),
  'better-sqlite3': () => import('./better-sqlite3.js'),
  'classic-level': () => import('./classic-level.js'),
  'js-map': () => import('./js-map.js'),
}

export const KESTREL = ['kestrel-native', 'kestrel-ts']

export async function openStore(name, dir) {
  const load = MODULES[name]
  if (!load) throw new Error(`unknown contestant ${name} (known: ${Object.keys(MODULES).join(', ')})`)
  const mod = await load()
  return mod.open(dir, { engine: name === 'kestrel-ts' ? 'ts' : 'native' })
}
