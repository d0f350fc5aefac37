// One benchmark cell, in its own process (spawned by lib/child.js):
//   node cell.js <workload id> <contestant> <param> <durationMs> <warmupMs> <dir>
// Prints one JSON line: the workload's result plus this process's peak RSS, or { error }.
import { byId } from './workloads/index.js'

const [workloadId, contestant, param, durationMs, warmupMs, dir] = process.argv.slice(2)
let result
try {
  const workload = byId(workloadId)
  if (!workload) throw new Error(`unknown workload ${workloadId}`)
  result = await workload.cell({ contestant, dir, param: Number(param), durationMs: Number(durationMs), warmupMs: Number(warmupMs) })
  // maxRSS is in KiB and covers the whole life of the process, setup included.
  result.peakRssBytes = process.resourceUsage().maxRSS * 1024
} catch (err) {
  result = { error: `${err.code ?? err.name}: ${err.message.split('\n')[0]}` }
}
// Exit explicitly: a store that leaves a handle open must not keep the cell alive until the
// parent's timeout.
// Commit ids are bigints in kestreldb's API: numbers in the JSON line.
process.stdout.write(`${JSON.stringify(result, (_k, v) => (typeof v === 'bigint' ? Number(v) : v))}\n`, () => process.exit(0))
