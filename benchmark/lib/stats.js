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
