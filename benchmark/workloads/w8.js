// W8: recovery after SIGKILL. A child process commits batches of 1000 × 256-byte records with
// checkpoints disabled (kestreldb: checkpointBytes 1 GiB, checkpointIntervalMs 0; SQLite:
// wal_autocheckpoint = 0) until ~100 MB (--quick: ~20 MB) of log lie after the last checkpoint
// (there is none), and is SIGKILLed while it goes on committing. A fresh process then times
// open() up to a first read (recovery: scanning and replaying the log), checkpoints and closes;
// another fresh process times open() of the same, now checkpointed, database for contrast.
import { spawn, spawnSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { MB } from '../lib/disk.js'
import { fmt, mib, ratio, table, unavailableRow } from '../lib/report.js'

const CHILD = join(dirname(fileURLToPath(import.meta.url)), '..', 'lib', 'recovery-child.js')
const CONTESTANTS = ['kestrel-native', 'kestrel-ts', 'better-sqlite3']

/** Run the writer until it reports READY, SIGKILL it; the records it had acknowledged by then. */
function writeAndKill(store, path, targetBytes, timeoutMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, 'write', store, path, String(targetBytes)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let acked = 0
    let ready = false
    let buffered = ''
    let stderr = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      buffered += chunk
      const lines = buffered.split('\n')
      buffered = lines.pop()
      for (const line of lines) {
        if (line.startsWith('ACK ')) acked = Math.max(acked, Number(line.slice(4)))
        else if (line.startsWith('READY ') && !ready) {
          ready = true
          child.kill('SIGKILL')
        }
      }
    })
    child.stderr.setEncoding('utf8').on('data', (d) => {
      stderr += d
    })
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      if (ready && signal === 'SIGKILL') resolve({ acked })
      else
        reject(
          new Error(
            `writer ${ready ? 'was not killed' : signal ? `killed (${signal}) before READY` : `exited (code ${code})`}: ${stderr.trim().split('\n').pop() ?? ''}`,
          ),
        )
    })
  })
}

function openChild(store, path, checkpoint, timeoutMs) {
  const r = spawnSync(process.execPath, [CHILD, 'open', store, path, checkpoint ? '1' : '0'], { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' })
  const line = r.stdout?.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line)
  } catch {
    throw new Error(`open child failed (${r.error?.code ?? r.signal ?? `exit ${r.status}`}): ${r.stderr?.trim().split('\n').filter(Boolean).pop() ?? ''}`)
  }
}

/** Child side; `param` is the log size to reach before the kill, in bytes. */
export async function cell({ contestant, dir, param: targetBytes }) {
  const path = contestant === 'better-sqlite3' ? `${dir}.sqlite` : dir
  const w0 = performance.now()
  const { acked } = await writeAndKill(contestant, path, targetBytes, 600_000)
  const writeMs = performance.now() - w0
  const recovery = openChild(contestant, path, true, 600_000)
  if (recovery.records < acked) throw new Error(`recovery lost acknowledged records: ${recovery.records} < ${acked}`)
  const checkpointed = openChild(contestant, path, false, 600_000)
  if (checkpointed.records !== recovery.records) throw new Error(`record count changed across the checkpoint: ${recovery.records} → ${checkpointed.records}`)
  return {
    targetBytes,
    writeMs,
    acked,
    records: recovery.records,
    logBytes: recovery.logBytesAtOpen,
    logFileBytes: recovery.logFileBytesAtOpen,
    recoveryOpenMs: recovery.openMs,
    replayMBPerSec: recovery.logBytesAtOpen / MB / (recovery.openMs / 1000),
    checkpointMs: recovery.checkpointMs ?? 0,
    closeMs: recovery.closeMs,
    logBytesAfterCheckpoint: checkpointed.logBytesAtOpen,
    checkpointedOpenMs: checkpointed.openMs,
    importMs: recovery.importMs,
    recoveryStats: recovery.stats,
    checkpointedStats: checkpointed.stats,
  }
}

export async function run(ctx) {
  const targetBytes = (ctx.quick ? 20 : 100) * MB
  const results = {}
  for (const name of CONTESTANTS) {
    const r = ctx.cell(name, targetBytes, { timeoutMs: 1_200_000 })
    results[name] = r
    ctx.log(
      '',
      name,
      r,
      (x) =>
        `log ${mib(x.logBytes)} MiB, ${fmt(x.records)} records: open after SIGKILL ${fmt(x.recoveryOpenMs / 1000, 3)} s (${fmt(x.replayMBPerSec)} MB/s), open after checkpoint ${fmt(x.checkpointedOpenMs / 1000, 3)} s`,
    )
  }
  return { targetBytes, contestants: CONTESTANTS, results }
}

export function render(raw) {
  const open = (name) => raw.results[name]?.recoveryOpenMs ?? NaN
  const headers = [
    'contestant',
    'log MiB at kill',
    'records',
    'open after SIGKILL s',
    'log MB/s read at open',
    'then checkpoint s',
    'then close s',
    'open after checkpoint s',
    'recovery open: this / native',
  ]
  const rows = raw.contestants.map((name) => {
    const r = raw.results[name]
    if (r.error) return unavailableRow(name, r.error, headers.length)
    return [
      name,
      mib(r.logBytes),
      fmt(r.records),
      `**${fmt(r.recoveryOpenMs / 1000, 3)}**`,
      fmt(r.replayMBPerSec),
      name === 'better-sqlite3' ? '—' : fmt(r.checkpointMs / 1000, 3),
      fmt(r.closeMs / 1000, 3),
      fmt(r.checkpointedOpenMs / 1000, 3),
      ratio(r.recoveryOpenMs, open('kestrel-native')),
    ]
  })
  const lines = [
    `A child process commits batches of 1000 × 256-byte records (durable) with checkpoints disabled — kestreldb \`checkpointBytes: 1 GiB, checkpointIntervalMs: 0\`; better-sqlite3 WAL with \`synchronous=FULL\` and \`wal_autocheckpoint=0\` — until the log (kestreldb \`log/\` up to its last non-zero byte, i.e. without the zeros it preallocates ahead; SQLite's \`-wal\`) holds ~${fmt(raw.targetBytes / MB)} MB, and is **SIGKILLed** mid-stream. A fresh process then times \`open()\` up to the first read (kestreldb: the log scanned and replayed into memory; SQLite: the WAL index rebuilt from the whole WAL on first access), checks that every acknowledged record is there, then checkpoints (kestreldb \`await db.checkpoint()\`; SQLite's close checkpoints the WAL) and closes; a second fresh process times \`open()\` of the checkpointed database for contrast. Module loading is not timed. The OS page cache holds the files.`,
    '',
    ...table(headers, 'lrrrrrrrr', rows),
    '',
    `native / ts recovery speed: **${ratio(open('kestrel-ts'), open('kestrel-native'))}** · better-sqlite3 recovery open / native: **${ratio(open('better-sqlite3'), open('kestrel-native'))}**`,
    '',
  ]
  return { lines, goals: [] }
}

export default {
  id: 'W8',
  aliases: ['W8', 'RECOVERY'],
  title: 'W8 — recovery after SIGKILL',
  cell,
  run,
  render,
}
