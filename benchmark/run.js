// `npm run bench [-- --quick] [-- --workload W1[,W3…]]` (or `node benchmark/run.js …`): runs each
// workload's cells, every contestant × parameter in its own child process, against kestreldb
// (native and ts engines) and the peers; saves benchmark/results/<workload>.json and rewrites
// benchmark/RESULTS.md (every saved workload, each marked with its run) and the charts.
// Every figure is a ratio measured in the same run: the machine is shared and noisy.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { KESTREL } from './contestants/index.js'
import { WORKLOADS, select } from './workloads/index.js'
import { runCell } from './lib/child.js'
import { ensurePeers } from './lib/peers.js'
import { ensureLimitBinary } from './lib/limit.js'
import { describeMachine, fmt, machine } from './lib/report.js'

const BENCH_DIR = dirname(fileURLToPath(import.meta.url))
const ROOT_DIR = join(BENCH_DIR, '..')
const RESULTS_DIR = join(BENCH_DIR, 'results')
const USAGE = `usage: node benchmark/run.js [--quick] [--workload W1[,W2,…]]
  --quick          ~1 s per cell instead of ~3 s, and smaller data: 100k records instead of 1M
                   (W2/W5, W2C, W4, W6, W9), 100 MB instead of 1 GB (W7), 20 MB of log instead of 100 (W8)
  --workload LIST  run only these (${WORKLOADS.flatMap((w) => w.aliases).join(', ')}); default: all
  --report         run nothing: rewrite RESULTS.md and the charts from benchmark/results/*.json
RESULTS.md keeps the sections of workloads not run this time, each marked with its own run.`

function parseArgs(argv) {
  const opts = { quick: false, workloads: WORKLOADS.map((w) => w.id), help: false, reportOnly: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--quick') opts.quick = true
    else if (a === '--help' || a === '-h') opts.help = true
    else if (a === '--report') opts.reportOnly = true
    else if (a === '--workload' || a === '-w') opts.workloads = (argv[++i] ?? '').split(',')
    else if (a.startsWith('--workload=')) opts.workloads = a.slice('--workload='.length).split(',')
    else throw new Error(`unknown argument '${a}'\n${USAGE}`)
  }
  return opts
}

const resultFile = (w) => join(RESULTS_DIR, `${w.id.toLowerCase()}.json`)

function renderResults(current) {
  const header =
    current.workloads.length > 0
      ? `Last run: ${current.date}${current.quick ? ' (`--quick`)' : ''}, workloads ${current.workloads.join(', ')}, ${fmt(current.tookS)} s in all.`
      : `Rendered ${current.date} from the saved results (\`--report\`).`
  const lines = [
    '# Benchmark results',
    '',
    `${header} Machine: ${describeMachine(current.machine)}.`,
    '',
    'Each cell (workload × contestant × concurrency) runs in its own Node process in a fresh directory under the temp dir, after a short warm-up. These machines are shared and noisy: absolute numbers move with the neighbours; the **ratios, measured in the same run**, are what to read. Raw numbers: `benchmark/results/*.json`.',
    '',
  ]
  const goals = []
  for (const w of WORKLOADS) {
    if (!existsSync(resultFile(w))) continue
    const raw = JSON.parse(readFileSync(resultFile(w), 'utf8'))
    const section = w.render(raw)
    // Charts are drawn from the saved results too, so they always match the tables.
    for (const { file, svg } of w.charts?.(raw) ?? []) writeFileSync(join(BENCH_DIR, file), svg)
    const when = `Run ${raw.date}${raw.quick ? ' (`--quick`)' : ''}: ${fmt(raw.durationMs)} ms per cell after ${fmt(raw.warmupMs)} ms warm-up, ${fmt(raw.tookS)} s for the workload${raw.date === current.date || current.workloads.length === 0 ? '' : " — an earlier run than the header's"}${describeMachine(raw.machine) === describeMachine(current.machine) ? '' : `, on ${describeMachine(raw.machine)}`}.`
    lines.push(`## ${w.title}`, '', `_${when}_`, '', ...section.lines)
    goals.push(...section.goals)
  }
  lines.push('## Goals (BENCHMARKS.md)', '', ...goals, '')
  writeFileSync(join(BENCH_DIR, 'RESULTS.md'), lines.join('\n'))
}

async function main() {
  const opts = parseArgs(process.argv.slice(2))
  if (opts.help) {
    console.log(USAGE)
    return
  }
  if (opts.reportOnly) {
    renderResults({ date: new Date().toISOString(), workloads: [], machine: machine() })
    console.log('rewrote benchmark/RESULTS.md and the charts from benchmark/results/*.json')
    return
  }
  const workloads = select(opts.workloads)
  const started = Date.now()
  const durationMs = opts.quick ? 1000 : 3000
  const warmupMs = opts.quick ? 200 : 500
  try {
    ensurePeers(BENCH_DIR)
  } catch (err) {
    // The run goes on: each peer's cells say why they have no number.
    console.error(`warning: ${err.message}`)
  }
  const kestrelError = existsSync(join(ROOT_DIR, 'dist', 'index.js')) ? null : 'dist/ is missing: run `npm install` at the repository root first'
  if (kestrelError) console.error(`warning: kestreldb cells skipped: ${kestrelError}`)
  let limitBinary
  const info = machine()
  const date = new Date().toISOString()
  console.log(
    `${date}: ${workloads.map((w) => w.id).join(', ')}${opts.quick ? ' (--quick)' : ''}, ${durationMs} ms per cell after ${warmupMs} ms warm-up; ${describeMachine(info)}`,
  )
  mkdirSync(RESULTS_DIR, { recursive: true })
  for (const w of workloads) {
    const workloadStarted = Date.now()
    const ctx = {
      quick: opts.quick,
      durationMs,
      warmupMs,
      benchDir: BENCH_DIR,
      // Built on first use: only the durable-commit workloads need the disk limit.
      get limitBinary() {
        limitBinary ??= ensureLimitBinary(ROOT_DIR)
        return limitBinary
      },
      cell(contestant, param, { timeoutMs }) {
        if (kestrelError && KESTREL.includes(contestant)) return { error: kestrelError }
        return runCell({ workload: w.id, contestant, param, durationMs, warmupMs, timeoutMs })
      },
      log(label, name, r, text) {
        console.log(`${w.id.padEnd(5)} ${label.padEnd(6)} ${name.padEnd(15)} ${r.error ? `not available: ${r.error}` : text(r)}`)
      },
    }
    const raw = await w.run(ctx)
    const tookS = (Date.now() - workloadStarted) / 1000
    writeFileSync(
      resultFile(w),
      `${JSON.stringify({ workload: w.id, date, machine: info, quick: opts.quick, durationMs, warmupMs, tookS, ...raw }, null, 2)}\n`,
    )
  }
  // The single-file format of earlier versions is replaced by one file per workload.
  rmSync(join(RESULTS_DIR, 'latest.json'), { force: true })
  const tookS = (Date.now() - started) / 1000
  renderResults({ date, quick: opts.quick, workloads: workloads.map((w) => w.id), tookS, machine: info })
  console.log(`wrote benchmark/RESULTS.md and ${workloads.map((w) => `benchmark/results/${w.id.toLowerCase()}.json`).join(', ')} in ${fmt(tookS)} s`)
}

main().catch((err) => {
  console.error(`benchmark failed: ${err.message}`)
  process.exitCode = 1
})
