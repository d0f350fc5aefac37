// The in-memory limit for reads: a plain Map plus a sorted key array for scans.
export async function open() {
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
