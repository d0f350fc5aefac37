// Latency statistics over a sample of milliseconds.
export function percentile(sortedMs, q) {
  if (sortedMs.length === 0) return NaN
  return sortedMs[Math.min(sortedMs.length - 1, Math.floor(q * sortedMs.length))]
}

export function summarize(latenciesMs, elapsedMs) {
  const sorted = Float64Array.from(latenciesMs).sort()
  return {
    ops: latenciesMs.length,
    opsPerSec: latenciesMs.length / (elapsedMs / 1000),
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
  }
}

/** What W4 and W7 keep of kestreldb's db.stats() (commit ids are bigints there; JSON wants numbers). */
export function storeStats(s) {
  return {
    checkpointLsn: Number(s.checkpointLsn),
    pageCount: s.pageCount,
    segments: s.segments,
    recordBytes: s.recordBytes,
    retired: s.retired,
    checkpoints: s.flow?.checkpoints,
  }
}
