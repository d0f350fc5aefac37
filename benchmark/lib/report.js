// Formatting shared by the workloads' RESULTS.md sections.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus, release, tmpdir, totalmem } from 'node:os'

export const fmt = (n, digits = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '—')
export const ratio = (a, b) => (a > 0 && b > 0 ? `${(a / b).toFixed(2)}×` : '—')
export const mib = (bytes) => fmt(bytes / 2 ** 20)

/** A Markdown table; `align` is a string of 'l'/'r' per column. */
export function table(headers, align, rows) {
  const sep = [...align].map((a) => (a === 'r' ? '---:' : '---'))
  return [`| ${headers.join(' | ')} |`, `| ${sep.join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)]
}

/** A row for a cell that produced no number: the reason, then empty cells. */
export const unavailableRow = (name, error, columns) => [name, `not available: ${String(error).replaceAll('|', '\\|')}`, ...Array(columns - 2).fill('')]

/** met / not met / not measured, for the Goals section. */
export const verdict = (value, threshold) => (Number.isFinite(value) ? (value >= threshold ? '**met**' : '**not met**') : '**not measured**')

function cpuModel() {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'))
    if (line) return line.split(':').slice(1).join(':').trim()
  } catch {}
  return cpus()[0]?.model ?? 'unknown cpu'
}

function tmpdirFs() {
  try {
    return execFileSync('df', ['-T', tmpdir()], { encoding: 'utf8' }).trim().split('\n').pop().split(/\s+/)[1]
  } catch {
    return 'unknown fs'
  }
}

export function machine() {
  return {
    cpuCount: cpus().length,
    cpuModel: cpuModel(),
    memGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
    tmpdir: tmpdir(),
    tmpdirFs: tmpdirFs(),
  }
}

export const describeMachine = (m) => `${m.cpuCount} × ${m.cpuModel}, ${m.memGiB} GiB, Linux ${m.kernel}, Node ${m.node}, temp dir ${m.tmpdir} on ${m.tmpdirFs}`
