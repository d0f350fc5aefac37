// Runs one benchmark cell (workload × contestant × parameter) in its own Node process, in a
// fresh directory under the OS temp dir that is removed afterwards: RSS, caches, open files and
// on-disk state cannot leak from one cell into the next, and a crash or hang costs one cell only.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const CELL = join(dirname(fileURLToPath(import.meta.url)), '..', 'cell.js')

/**
 * Returns the cell's JSON result, or { error } saying why there is none.
 * `param` is the workload's own knob (concurrency for W1/W3, record count for the read workloads).
 */
export function runCell({ workload, contestant, param, durationMs, warmupMs, timeoutMs }) {
  const baseDir = mkdtempSync(join(tmpdir(), 'kestrel-bench-'))
  try {
    const r = spawnSync(process.execPath, [CELL, workload, contestant, String(param), String(durationMs), String(warmupMs), join(baseDir, 'db')], {
      encoding: 'utf8',
      timeout: timeoutMs,
      // SIGKILL: a hung native thread must not keep the run waiting after the deadline.
      killSignal: 'SIGKILL',
      maxBuffer: 64 << 20,
    })
    if (r.error?.code === 'ETIMEDOUT') return { error: `timed out after ${Math.round(timeoutMs / 1000)} s (killed)` }
    if (r.error) return { error: `could not run: ${r.error.message}` }
    const line = r.stdout.trim().split('\n').pop() ?? ''
    try {
      return JSON.parse(line)
    } catch {
      const why = r.stderr.trim().split('\n').filter(Boolean).pop() ?? ''
      return { error: `no result (${r.signal ? `signal ${r.signal}` : `exit ${r.status}`})${why ? `: ${why}` : ''}` }
    }
  } finally {
    rmSync(baseDir, { recursive: true, force: true })
  }
}
