/**
 * I1/I2 under real crashes: a child process commits in a loop and is SIGKILLed at a random moment;
 * on reopen every acknowledged commit is there and every transaction is whole. Odd rounds reopen
 * with the other engine, so recovery is also checked across engines.
 * `npm run test:soak` runs many more rounds.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { open } from '../lib/index.js'
import type { Database, EngineName } from '../lib/index.js'
import { ENGINES, other, rng, tempDir } from './helpers.js'

const CHILD = fileURLToPath(new URL('./fixtures/crash-child.mjs', import.meta.url))
const ROUNDS = process.env.KESTREL_SOAK ? 200 : 20

/**
 * Run the child until a random moment, SIGKILL it, return the acknowledged commit numbers. With
 * `killAt` the child kills itself at that point of its write path instead (docs: SharedCore).
 */
function runAndKill(dir: string, engine: string, workers: number, killAfterMs: number, offset = 0, killAt?: string): Promise<Set<number>> {
  return new Promise((resolve, reject) => {
    const env = killAt ? { ...process.env, KESTREL_TEST_KILL_AT: killAt } : process.env
    const child = spawn(process.execPath, [CHILD, dir, engine, String(workers), String(offset)], { stdio: ['ignore', 'pipe', 'pipe'], env })
    const acked = new Set<number>()
    let buffered = ''
    let stderr = ''
    let timer: NodeJS.Timeout | undefined
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk
      const lines = buffered.split('\n')
      buffered = lines.pop()!
      for (const line of lines) {
        if (line === 'READY' && !timer) timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs)
        else if (line.startsWith('ACK ')) acked.add(Number(line.slice(4)))
      }
    })
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d
    })
    child.on('exit', (code, signal) => {
      if (timer) clearTimeout(timer)
      if (signal === 'SIGKILL') resolve(acked)
      else if (killAt && code === 0) reject(new Error(`crash child ended before its kill point ${killAt}`))
      else reject(new Error(`crash child exited on its own (code ${code}): ${stderr}`))
    })
  })
}

describe.each(ENGINES)('crash safety under SIGKILL [%s]', (engine) => {
  it(
    `${ROUNDS} rounds: every acknowledged commit survives, every transaction is whole`,
    async () => {
      // A fresh directory every 20 rounds, so that every round of a long soak run starts from a
      // database of about the same size (the children's small checkpoints keep the log short).
      let dir = tempDir()
      const everAcked = new Set<number>()
      let ackedTotal = 0
      let survivorsTotal = 0
      const random = rng(12345)
      for (let round = 0; round < ROUNDS; round++) {
        if (round > 0 && round % 20 === 0) dir = tempDir()
        const acked = await runAndKill(dir, engine, 1 + Math.floor(random() * 32), Math.floor(random() * 250))
        for (const n of acked) everAcked.add(n)
        ackedTotal += acked.size
        const reopenWith = round % 2 === 0 ? engine : other(engine)
        const db = await open(dir, { engine: reopenWith })
        const c = db.collection('pairs')
        const a = expectWhole(db, everAcked, round)
        survivorsTotal += a.size
        // Reset the counter space for the next child: clear what is there (also exercises deletes).
        await db.transaction((t) => {
          for (const n of a) {
            t.delete(c, ['a', n])
            t.delete(c, ['b', n])
          }
        })
        await db.close()
        everAcked.clear()
      }
      // The kills must land while commits flow, or the test proves nothing.
      expect(ackedTotal).toBeGreaterThan(ROUNDS * 5)
      expect(survivorsTotal).toBeGreaterThanOrEqual(ackedTotal)
    },
    ROUNDS * 3000,
  )
})

/** Every transaction is whole (both of its keys or neither) and every acknowledged one is there; returns the numbers present. */
function expectWhole(db: Database, everAcked: Set<number>, round: number): Set<number> {
  const c = db.collection('pairs')
  const tx = db.begin()
  const a = new Set<number>()
  const b = new Set<number>()
  for (const { key } of tx.scan(c, { prefix: ['a'] })) a.add((key as [string, number])[1])
  for (const { key } of tx.scan(c, { prefix: ['b'] })) b.add((key as [string, number])[1])
  tx.rollback()
  const lost = [...everAcked].filter((n) => !a.has(n) || !b.has(n))
  expect(lost, `round ${round}: acknowledged commits lost`).toEqual([])
  const torn = [...a].filter((n) => !b.has(n)).concat([...b].filter((n) => !a.has(n)))
  expect(torn, `round ${round}: half-applied transactions`).toEqual([])
  return a
}

/** Both halves of every transaction, every acknowledged one among them (after a reopen with `engine`). */
async function checkWhole(dir: string, engine: EngineName, everAcked: Set<number>, round: number): Promise<void> {
  const db = await open(dir, { engine })
  expectWhole(db, everAcked, round)
  expect((await db.verify()).problems, `round ${round}: verify`).toEqual([])
  await db.close()
}

describe('crash safety under SIGKILL, two processes sharing the directory', () => {
  const rounds = Math.max(4, ROUNDS / 2)
  it(
    `${rounds} rounds: a writer killed anywhere (also holding the write lock, before and after its fdatasync) loses nothing of either process`,
    async () => {
      const random = rng(4242)
      const points = ['', 'locked', 'synced']
      let dir = tempDir()
      const everAcked = new Set<number>()
      let ackedTotal = 0
      for (let round = 0; round < rounds; round++) {
        if (round > 0 && round % 10 === 0) {
          dir = tempDir()
          everAcked.clear()
        }
        const [e1, e2] = ENGINES.length > 1 ? (round % 2 === 0 ? ['native', 'ts'] : ['ts', 'native']) : [ENGINES[0]!, ENGINES[0]!]
        const point = points[round % points.length]!
        const killAt = point ? `${point}:${5 + Math.floor(random() * 40)}` : undefined
        const base = (round + 1) * 10_000_000
        const [one, two] = await Promise.all([
          // With a kill point the child kills itself there (the timer is only a bound).
          runAndKill(dir, e1!, 1 + Math.floor(random() * 16), killAt ? 10_000 : 20 + Math.floor(random() * 200), base, killAt),
          runAndKill(dir, e2!, 1 + Math.floor(random() * 16), 60 + Math.floor(random() * 200), base + 5_000_000),
        ])
        for (const n of [...one, ...two]) everAcked.add(n)
        ackedTotal += one.size + two.size
        await checkWhole(dir, (round % 3 === 0 ? e2 : e1) as EngineName, everAcked, round)
      }
      expect(ackedTotal).toBeGreaterThan(rounds * 5)
    },
    rounds * 6000,
  )
})
