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
import { ENGINES, other, rng, tempDir } from './helpers.js'

const CHILD = fileURLToPath(new URL('./fixtures/crash-child.mjs', import.meta.url))
const ROUNDS = process.env.KESTREL_SOAK ? 200 : 20

/** Run the child until a random moment, SIGKILL it, return the acknowledged commit numbers. */
function runAndKill(dir: string, engine: string, workers: number, killAfterMs: number): Promise<Set<number>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dir, engine, String(workers)], { stdio: ['ignore', 'pipe', 'pipe'] })
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
        const tx = db.begin()
        const a = new Set<number>()
        const b = new Set<number>()
        for (const { key } of tx.scan(c, { prefix: ['a'] })) a.add((key as [string, number])[1])
        for (const { key } of tx.scan(c, { prefix: ['b'] })) b.add((key as [string, number])[1])
        const lost = [...everAcked].filter((n) => !a.has(n) || !b.has(n))
        expect(lost, `round ${round}: acknowledged commits lost`).toEqual([])
        const torn = [...a].filter((n) => !b.has(n)).concat([...b].filter((n) => !a.has(n)))
        expect(torn, `round ${round}: half-applied transactions`).toEqual([])
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
