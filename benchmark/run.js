// `npm run bench [-- --quick] [-- --workload W1]`: runs each workload cell in its own process
// against kestreldb (native, ts) and the peers, and rewrites benchmark/RESULTS.md, a chart and
// the raw JSON. Every figure is a ratio measured in the same run: the machine is shared and noisy.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import { W1_CONTESTANTS as CONTESTANTS } from './contestants/stores.js'
import { barChart } from './lib/svg.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = join(HERE, '..')
const args = process.argv.slice(2)
const quick = args.includes('--quick')
const durationMs = quick ? 1000 : 3000
const warmupMs = quick ? 200 : 500
const CONCURRENCY = [1, 64, 256]
const W3_CONCURRENCY = [16, 64]
const READ_RECORDS = quick ? 100_000 : 1_000_000
const READ_CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'lmdb', 'better-sqlite3', 'js-map']
const W3_CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'lmdb', 'better-sqlite3']
const SAVER_CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'sqlite', 'memory']
const SAVER_CONCURRENCY = 8
const selected = (args.find((a) => a.startsWith('--workload='))?.slice(11) ?? 'W1,W2,W3,W5,SAVER').split(',')

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

function runCell(workload, contestant, concurrency, timeoutMs = 120_000) {
  const base = mkdtempSync(join(tmpdir(), 'kestrel-bench-'))
  try {
    const r = spawnSync(process.execPath, [join(HERE, 'child.js'), workload, contestant, String(concurrency), String(durationMs), String(warmupMs), join(base, 'db')], { encoding: 'utf8', timeout: timeoutMs })
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

function w1Section(limit, results) {
  const ops = (c, n) => results[c][n]?.opsPerSec ?? NaN
  const lines = [
    '## W1 — durable single-record commits',
    '',
    `Keys \`k000000\`…, 256-byte values; C concurrent async clients, each awaiting its commit's acknowledgement. Disk limit in the same run: a plain ${limit.recordBytes}-byte append + fdatasync loop (\`benchmark/limits\`, Rust) does **${fmt(limit.opsPerSec)}/s** (p50 ${fmt(limit.p50Us / 1000, 3)} ms); the same loop over a pre-zeroed file (what kestreldb's preallocation gives the log) does **${fmt(limit.prezeroed.opsPerSec)}/s**.`,
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
  const goals = [
    `- W1 C = 64: native ≥ 2× lmdb — this run: ${ratio(ops(64, 'kestrel-native'), ops(64, 'lmdb'))} → ${g64 >= 2 ? '**met**' : '**not met**'}`,
    `- W1 C = 1: one fdatasync per commit (≈ the disk's fdatasync rate) — this run: native at ${ratio(ops(1, 'kestrel-native'), limit.opsPerSec)} of the append limit, ${ratio(ops(1, 'kestrel-native'), limit.prezeroed.opsPerSec)} of the pre-zeroed one → ${g1 >= 0.8 ? '**met**' : '**not met**'}`,
    `- native ≥ 3× ts on W1 — this run: C=64 ${ratio(ops(64, 'kestrel-native'), ops(64, 'kestrel-ts'))}, C=256 ${ratio(ops(256, 'kestrel-native'), ops(256, 'kestrel-ts'))}`,
  ]
  return { lines, goals }
}

function readsSection(results) {
  const lines = ['## W2 / W5 — hot point reads and range scans', '',
    `${fmt(READ_RECORDS)} records (256-byte values), bulk-loaded untimed, then random point reads (W2) and scans of 100 consecutive records from a random key (W5) through one read view / read transaction, single-threaded.`, '',
    '| contestant | W2 reads/s | W5 scans/s | peak RSS MiB | W2 vs lmdb | W5 vs lmdb |', '|---|---:|---:|---:|---:|---:|']
  const l = results.lmdb ?? {}
  for (const name of READ_CONTESTANTS) {
    const r = results[name]
    if (r.error) { lines.push(`| ${name} | not available: ${r.error} | | | | |`); continue }
    lines.push(`| ${name} | ${fmt(r.readsPerSec)} | ${fmt(r.scansPerSec)} | ${fmt(r.peakRssBytes / 2 ** 20)} | ${ratio(r.readsPerSec, l.readsPerSec)} | ${ratio(r.scansPerSec, l.scansPerSec)} |`)
  }
  const n = results['kestrel-native'] ?? {}
  lines.push('')
  const goals = [
    `- W2 hot: native ≥ lmdb — this run: ${ratio(n.readsPerSec, l.readsPerSec)} → ${n.readsPerSec >= l.readsPerSec ? '**met**' : '**not met**'}`,
    `- W5 hot: native ≥ lmdb — this run: ${ratio(n.scansPerSec, l.scansPerSec)} → ${n.scansPerSec >= l.scansPerSec ? '**met**' : '**not met**'}`,
  ]
  return { lines, goals }
}

function w3Section(results) {
  const lines = ['## W3 — read-modify-write transactions', '',
    'Each transaction reads two keys and writes both (durable commit); keys are zipfian (θ = 0.99) over 10,000 records, so a few keys are very hot. kestreldb runs optimistic snapshot-isolation transactions through `db.transaction` (retried on conflict); lmdb and better-sqlite3 serialize their write transactions, so they never retry.', '']
  const ops = (c, n) => results[c][n]?.opsPerSec ?? NaN
  for (const c of W3_CONCURRENCY) {
    lines.push(`### C = ${c}`, '', '| contestant | commits/s | p50 ms | p99 ms | retries per commit | vs lmdb |', '|---|---:|---:|---:|---:|---:|')
    for (const name of W3_CONTESTANTS) {
      const r = results[c][name]
      if (r.error) { lines.push(`| ${name} | not available: ${r.error} | | | | |`); continue }
      lines.push(`| ${name} | ${fmt(r.opsPerSec)} | ${fmt(r.p50Ms, 2)} | ${fmt(r.p99Ms, 2)} | ${fmt(r.retryRate, 2)} | ${ratio(r.opsPerSec, ops(c, 'lmdb'))} |`)
    }
    lines.push('', `native / ts: **${ratio(ops(c, 'kestrel-native'), ops(c, 'kestrel-ts'))}**`, '')
  }
  const goals = W3_CONCURRENCY.flatMap((c) => [
    `- W3 C = ${c}: native ≥ 2× lmdb — this run: ${ratio(ops(c, 'kestrel-native'), ops(c, 'lmdb'))} → ${ops(c, 'kestrel-native') >= 2 * ops(c, 'lmdb') ? '**met**' : '**not met**'}; native ≥ 3× ts: ${ratio(ops(c, 'kestrel-native'), ops(c, 'kestrel-ts'))} → ${ops(c, 'kestrel-native') >= 3 * ops(c, 'kestrel-ts') ? '**met**' : '**not met**'}`,
  ])
  return { lines, goals }
}

function saverSection(results) {
  const lines = ['## LangGraph checkpoint savers', '',
    `${SAVER_CONCURRENCY} concurrent clients, each on its own thread: \`put\` (a checkpoint with two channels, then \`putWrites\` of two pending writes), then \`getTuple\` of the latest checkpoint, then \`list\` of the 10 newest. KestrelSaver commits durably (\`durability: 'sync'\`); the SQLite saver runs with its own defaults; MemorySaver keeps nothing on disk.`, '',
    '| saver | put ops/s | put p99 ms | getTuple ops/s | getTuple p99 ms | list ops/s | list p99 ms |', '|---|---:|---:|---:|---:|---:|---:|']
  for (const name of SAVER_CONTESTANTS) {
    const r = results[name]
    if (r.error) { lines.push(`| ${name} | not available: ${r.error} | | | | | |`); continue }
    lines.push(`| ${name} | ${fmt(r.put.opsPerSec)} | ${fmt(r.put.p99Ms, 2)} | ${fmt(r.get.opsPerSec)} | ${fmt(r.get.p99Ms, 2)} | ${fmt(r.list.opsPerSec)} | ${fmt(r.list.p99Ms, 2)} |`)
  }
  lines.push('')
  return { lines, goals: [] }
}

function log(workload, name, label, r, text) {
  console.log(`${workload} ${label.padEnd(6)} ${name.padEnd(15)} ${r.error ? `not available: ${r.error}` : text(r)}`)
}

async function main() {
  ensurePeers()
  const limitBin = ensureBuilt()
  const started = Date.now()
  const raw = { date: new Date().toISOString(), machine: machine(), quick, durationMs }
  const sections = []
  const goals = []
  if (selected.includes('W1')) {
    const limit = JSON.parse(execFileSync(limitBin, ['records', String(256 + 32 + 17), String(durationMs)], { encoding: 'utf8' }))
    limit.prezeroed = JSON.parse(execFileSync(limitBin, ['prezeroed', String(256 + 32 + 17), String(durationMs)], { encoding: 'utf8' }))
    console.log(`fdatasync limit: ${fmt(limit.opsPerSec)} appends/s (p50 ${fmt(limit.p50Us / 1000, 3)} ms), pre-zeroed ${fmt(limit.prezeroed.opsPerSec)}/s`)
    const results = {}
    for (const c of CONCURRENCY) {
      results[c] = {}
      for (const name of CONTESTANTS) {
        const r = runCell('W1', name, c)
        results[c][name] = r
        log('W1', name, `C=${c}`, r, (x) => `${fmt(x.opsPerSec).padStart(8)} commits/s  p50 ${fmt(x.p50Ms, 2)} ms  p99 ${fmt(x.p99Ms, 2)} ms  RSS ${fmt(x.peakRssBytes / 2 ** 20)} MiB`)
      }
    }
    raw.w1 = { limit, results }
    const ops = (c, n) => results[c][n]?.opsPerSec ?? NaN
    writeFileSync(join(HERE, 'w1.svg'), barChart({ title: 'W1: durable single-record commits per second by concurrency', groups: CONCURRENCY.map((c) => `C = ${c}`), series: CONTESTANTS, value: (g, s) => ops(Number(g.slice(4)), s), unit: 'commits/s' }))
    const w1 = w1Section(limit, results)
    sections.push(...w1.lines)
    goals.push(...w1.goals)
  }
  if (selected.includes('W2') || selected.includes('W5')) {
    const results = {}
    for (const name of READ_CONTESTANTS) {
      const r = runCell('READS', name, READ_RECORDS, 600_000)
      results[name] = r
      log('W2/W5', name, '', r, (x) => `${fmt(x.readsPerSec).padStart(10)} reads/s  ${fmt(x.scansPerSec).padStart(8)} scans/s  RSS ${fmt(x.peakRssBytes / 2 ** 20)} MiB`)
    }
    raw.reads = { records: READ_RECORDS, results }
    const r = readsSection(results)
    sections.push(...r.lines)
    goals.push(...r.goals)
  }
  if (selected.includes('W3')) {
    const results = {}
    for (const c of W3_CONCURRENCY) {
      results[c] = {}
      for (const name of W3_CONTESTANTS) {
        const r = runCell('W3', name, c)
        results[c][name] = r
        log('W3', name, `C=${c}`, r, (x) => `${fmt(x.opsPerSec).padStart(8)} commits/s  p50 ${fmt(x.p50Ms, 2)} ms  p99 ${fmt(x.p99Ms, 2)} ms  retries/commit ${fmt(x.retryRate, 2)}`)
      }
    }
    raw.w3 = { results }
    const r = w3Section(results)
    sections.push(...r.lines)
    goals.push(...r.goals)
  }
  if (selected.includes('SAVER')) {
    const results = {}
    for (const name of SAVER_CONTESTANTS) {
      const r = runCell('SAVER', name, SAVER_CONCURRENCY)
      results[name] = r
      log('SAVER', name, '', r, (x) => `put ${fmt(x.put.opsPerSec)}/s p99 ${fmt(x.put.p99Ms, 2)} ms  getTuple ${fmt(x.get.opsPerSec)}/s p99 ${fmt(x.get.p99Ms, 2)} ms  list ${fmt(x.list.opsPerSec)}/s p99 ${fmt(x.list.p99Ms, 2)} ms`)
    }
    raw.saver = { results }
    sections.push(...saverSection(results).lines)
  }
  const tookS = (Date.now() - started) / 1000
  mkdirSync(join(HERE, 'results'), { recursive: true })
  writeFileSync(join(HERE, 'results', 'latest.json'), JSON.stringify(raw, null, 2) + '\n')
  const lines = [
    '# Benchmark results',
    '',
    `Run: ${raw.date}${quick ? ' (--quick)' : ''}, ${durationMs} ms per cell after ${warmupMs} ms warm-up, each cell in its own process. Machine: ${raw.machine}.`,
    'Absolute numbers move with the machine\'s neighbours; the ratios, measured in the same run, are what to read.',
    '',
    ...sections,
    '## Goals (BENCHMARKS.md)',
    '',
    ...goals,
    '',
    `The whole run took ${fmt(tookS)} s. Raw numbers: \`benchmark/results/latest.json\`.`,
    '',
  ]
  writeFileSync(join(HERE, 'RESULTS.md'), lines.join('\n'))
  console.log(`wrote benchmark/RESULTS.md and benchmark/results/latest.json in ${fmt(tookS)} s`)
}

main().catch((err) => {
  console.error(`benchmark failed: ${err.message}`)
  process.exitCode = 1
})
