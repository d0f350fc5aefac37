// The in-memory limit for reads: a plain Map plus a sorted key array for scans. Options:
//   index: { field }   W6: a second Map from value[field] to the keys holding it
//   scans: false       W9: no sorted key array (scan100 is then unavailable), the Map alone
export async function open(_dir, { index, scans = true } = {}) {
  const map = new Map()
  const byField = new Map()
  let sorted = []
  return {
    async load(entries) {
      // Keys past the last one sorted (a load in key order, in batches) are appended in order.
      let ordered = scans && (sorted.length === 0 || entries.length === 0 || entries[0][0] > sorted[sorted.length - 1])
      for (let j = 0; j < entries.length; j++) {
        const [k, v] = entries[j]
        if (ordered && (map.has(k) || (j > 0 && k <= entries[j - 1][0]))) ordered = false
        map.set(k, v)
        if (index) {
          const x = v[index.field]
          const keys = byField.get(x)
          if (keys) keys.push(k)
          else byField.set(x, [k])
        }
      }
      if (!scans) return
      if (ordered) for (const [k] of entries) sorted.push(k)
      else sorted = [...map.keys()].sort()
    },
    reader() {
      return {
        get: (k) => map.get(k),
        scan100(start) {
          if (!scans) throw new Error('opened with scans: false')
          let lo = 0
          let hi = sorted.length
          while (lo < hi) {
            const mid = (lo + hi) >>> 1
            if (sorted[mid] < start) lo = mid + 1
            else hi = mid
          }
          let n = 0
          for (let i = lo; i < Math.min(sorted.length, lo + 100); i++) {
            map.get(sorted[i])
            n++
          }
          return n
        },
        // W6: the records whose indexed field equals `x`.
        find: (x) => (byField.get(x) ?? []).map((k) => ({ key: k, value: map.get(k) })),
        close() {},
      }
    },
    close: async () => {},
  }
}
