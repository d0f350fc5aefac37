// `npm run bench [-- --quick] [-- --workload W1]`: runs each workload cell in its own process
// against kestreldb (native, ts) and the peers, and rewrites benchmark/RESULTS.md, a chart and
// the raw JSON. Every figure is a ratio measured in the same run: the machine is shared and noisy.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import { CONTESTANTS } from './contestants/index.js'
import { barChart } from './lib/svg.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = join(HERE, '..')
const args = process.argv.slice(2)
const quick = args.includes('--quick')
const durationMs = quick ? 1000 : 3000
const warmupMs = quick ? 200 : 500
const CONCURRENCY = [1, 64, 256]

function ensurePeers() {
  const require = createRequire(join(HERE, 'package.json'))
  const loadable = () => { try { require('lmdb'); require('classic-level'); require('better-sqlite3')(':memory:').close(); return true } catch { return false } }
  if (loadable()) return
  console.log('installing the benchmark peers (lmdb, better-sqlite3, classic-level) into benchmark/node_modules …')
  execFileSync('npm', ['install', '--no-audit', '--no-fund'], { cwd: HERE, stdio: 'inherit' })
  if (!loadable()) {
    console.log('building better-sqlite3 from source (its prebuilt download is not reachable) …')
    execFileSync('npx', ['--yes', 'node-gyp', 'rebuild', '--release'], { cwd: join(HERE, 'node_modules', 'better-sqlite3'), stdio: 'inherit' })
  }
  if (!loadable()) throw new Error('the benchmark peers do not load; see the output above')
}

function ensureBuilt() {
  if (!existsSync(join(ROOT, 'dist', 'index.js'))) throw new Error('dist/ is missing: run `npm install` at the repository root first')
  const limit = join(ROOT, 'target', 'release', 'fsync-limit')
  if (!existsSync(limit)) execFileSync('cargo', ['build', '--release', '-p', 'kestrel-limits'], { cwd: ROOT, stdio: 'inherit' })
  return limit
}

function runCell(workload, contestant, concurrency) {
  const base = mkdtempSync(join(tmpdir(), 'kestrel-bench-'))
  try {
    const r = spawnSync(process.execPath, [join(HERE, 'child.js'), workload, contestant, String(concurrency), String(durationMs), String(warmupMs), join(base, 'db')], { encoding: 'utf8', timeout: 120_000 })
    const line = r.stdout.trim().split('\n').pop()
    try { return JSON.parse(line) } catch { return { error: `no result (exit ${r.status}): ${r.stderr.trim().split('\n').pop() ?? ''}` } }
  } finally {
    rmSync(base, { recursive: true, force: true })
  }
}

function machine() {
  const cpu = cpus()[0]?.model ?? 'unknown cpu'
  let fs = 'unknown'
  try { fs = execFileSync('df', ['-T', tmpdir()], { encoding: 'utf8' }).trim().split('\n').pop().split(/\s+/)[1] } catch {}
  return `${cpus().length} × ${cpu}, Node ${process.version}, ${fs} (${tmpdir()})`
}

const fmt = (n, d = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : '—')
const ratio = (a, b) => (a > 0 && b > 0 ? `${(a / b).toFixed(2)}×` : '—')

async function main() {
  ensurePeers()
  const limitBin = ensureBuilt()
  const started = Date.now()
  const limit = JSON.parse(execFileSync(limitBin, ['records', String(256 + 32 + 17), String(durationMs)], { encoding: 'utf8' }))
  console.log(`fdatasync limit: ${fmt(limit.opsPerSec)} appends/s (p50 ${fmt(limit.p50Us / 1000, 3)} ms)`)
  const results = {}
  for (const c of CONCURRENCY) {
    results[c] = {}
    for (const name of CONTESTANTS) {
      const r = runCell('W1', name, c)
      results[c][name] = r
      console.log(`W1 C=${String(c).padStart(3)} ${name.padEnd(15)} ${r.error ? `not available: ${r.error}` : `${fmt(r.opsPerSec).padStart(8)} commits/s  p50 ${fmt(r.p50Ms, 2)} ms  p99 ${fmt(r.p99Ms, 2)} ms  RSS ${fmt(r.peakRssBytes / 2 ** 20)} MiB`}`)
    }
  }
  const tookS = (Date.now() - started) / 1000
  mkdirSync(join(HERE, 'results'), { recursive: true })
  writeFileSync(join(HERE, 'results', 'w1.json'), JSON.stringify({ date: new Date().toISOString(), machine: machine(), quick, durationMs, limit, results }, null, 2) + '\n')
  const ops = (c, n) => results[c][n]?.opsPerSec ?? NaN
  writeFileSync(join(HERE, 'w1.svg'), barChart({ title: 'W1: durable single-record commits per second by concurrency', groups: CONCURRENCY.map((c) => `C = ${c}`), series: CONTESTANTS, value: (g, s) => ops(Number(g.slice(4)), s), unit: 'commits/s' }))

  const lines = [
    '# Benchmark results',
    '',
    `Run: ${new Date().toISOString()}${quick ? ' (--quick)' : ''}, ${durationMs} ms per cell after ${warmupMs} ms warm-up, each cell in its own process. Machine: ${machine()}.`,
    'Absolute numbers move with the machine\'s neighbours; the ratios, measured in the same run, are what to read.',
    '',
    '## W1 — durable single-record commits',
    '',
    `Keys \`k000000\`…, 256-byte values; C concurrent async clients, each awaiting its commit's acknowledgement. Disk limit in the same run: a plain ${limit.recordBytes}-byte append + fdatasync loop (\`benchmark/limits\`, Rust) does **${fmt(limit.opsPerSec)}/s** (p50 ${fmt(limit.p50Us / 1000, 3)} ms).`,
    '',
    '![W1 chart](w1.svg)',
    '',
  ]
  for (const c of CONCURRENCY) {
    lines.push(`### C = ${c}`, '', '| contestant | commits/s | p50 ms | p99 ms | peak RSS MiB | vs lmdb | vs fdatasync limit |', '|---|---:|---:|---:|---:|---:|---:|')
    for (const name of CONTESTANTS) {
      const r = results[c][name]
      if (r.error) { lines.push(`| ${name} | not available: ${r.error} | | | | | |`); continue }
      lines.push(`| ${name} | ${fmt(r.opsPerSec)} | ${fmt(r.p50Ms, 2)} | ${fmt(r.p99Ms, 2)} | ${fmt(r.peakRssBytes / 2 ** 20)} | ${ratio(r.opsPerSec, ops(c, 'lmdb'))} | ${ratio(r.opsPerSec, limit.opsPerSec)} |`)
    }
    lines.push('', `native / ts: **${ratio(ops(c, 'kestrel-native'), ops(c, 'kestrel-ts'))}**`, '')
  }
  const g64 = ops(64, 'kestrel-native') / ops(64, 'lmdb')
  const g1 = ops(1, 'kestrel-native') / limit.opsPerSec
  lines.push('## Goals (BENCHMARKS.md)', '',
    `- W1 C = 64: native ≥ 2× lmdb — this run: ${ratio(ops(64, 'kestrel-native'), ops(64, 'lmdb'))} → ${g64 >= 2 ? '**met**' : '**not met**'}`,
    `- W1 C = 1: one fdatasync per commit (≈ the disk's fdatasync rate) — this run: native at ${ratio(ops(1, 'kestrel-native'), limit.opsPerSec)} of the limit → ${g1 >= 0.8 ? '**met**' : '**not met**'}`,
    `- native ≥ 3× ts on W1 — this run: C=64 ${ratio(ops(64, 'kestrel-native'), ops(64, 'kestrel-ts'))}, C=256 ${ratio(ops(256, 'kestrel-native'), ops(256, 'kestrel-ts'))}`,
    '', `The whole run took ${fmt(tookS)} s. Raw numbers: \`benchmark/results/w1.json\`.`, '')
  writeFileSync(join(HERE, 'RESULTS.md'), lines.join('\n'))
  console.log(`wrote benchmark/RESULTS.md, benchmark/w1.svg and benchmark/results/w1.json in ${fmt(tookS)} s`)
}

main().catch((err) => {
  console.error(`benchmark failed: ${err.message}`)
  process.exitCode = 1
})
