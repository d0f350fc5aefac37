// Loops the single-threaded read workloads share (W2/W5, W2 cold, W6, W9).

/**
 * Operations per second of `op` over `durationMs`, calling it `batch` times between clock reads
 * (so the clock's cost stays out of the figure). `op` throws to fail the cell.
 */
export function throughput(op, durationMs, batch = 1000) {
  let ops = 0
  const t0 = performance.now()
  const deadline = t0 + durationMs
  while (performance.now() < deadline) {
    for (let i = 0; i < batch; i++) op()
    ops += batch
  }
  return ops / ((performance.now() - t0) / 1000)
}

/** `await store.checkpoint()` when the store has one; its duration in ms (0 without). */
export async function timedCheckpoint(store) {
  if (!store.checkpoint) return 0
  const t0 = performance.now()
  await store.checkpoint()
  return performance.now() - t0
}

/**
 * Parent side of a workload whose cells take a record count (1M, 100k with --quick): one cell per
 * contestant, each logged with `line(result)`. Returns `{ records, contestants, results }`.
 */
export function cellsByRecordCount(ctx, contestants, line) {
  const records = ctx.quick ? 100_000 : 1_000_000
  const results = {}
  for (const name of contestants) {
    // Loading a million records takes most of a cell's time.
    const r = ctx.cell(name, records, { timeoutMs: ctx.quick ? 180_000 : 600_000 })
    results[name] = r
    ctx.log('', name, r, line)
  }
  return { records, contestants, results }
}
