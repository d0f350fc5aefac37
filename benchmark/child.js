// One benchmark cell in its own process: `node child.js <workload> <contestant> <concurrency> <durationMs> <warmupMs> <dir>`.
// Prints one JSON line with the result and the process's peak RSS.
import { runW1 } from './workloads/w1.js'
import { runReads } from './workloads/reads.js'
import { runW3 } from './workloads/w3.js'
import { runSaver } from './workloads/saver.js'

// For the read workloads the "concurrency" argument carries the record count.
const [workload, contestant, concurrency, durationMs, warmupMs, dir] = process.argv.slice(2)
const workloads = { W1: runW1, READS: (o) => runReads({ ...o, records: o.concurrency }), W3: runW3, SAVER: runSaver }
try {
  const result = await workloads[workload]({ contestant, dir, concurrency: Number(concurrency), durationMs: Number(durationMs), warmupMs: Number(warmupMs) })
  result.peakRssBytes = process.resourceUsage().maxRSS * 1024
  process.stdout.write(JSON.stringify(result) + '\n')
} catch (err) {
  process.stdout.write(JSON.stringify({ error: `${err.code ?? err.name}: ${err.message}` }) + '\n')
}
