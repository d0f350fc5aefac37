/**
 * Randomized histories: a Jepsen-style list-append workload checked for snapshot isolation, and a
 * differential run of one random transaction stream on both engines (same results, same bytes).
 */
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ConflictError, open, type Transaction } from '../lib/index.js'
import { ENGINES, rng, tempDir } from './helpers.js'

interface Done {
  snapshot: bigint
  commitId: bigint
  reads: Map<number, number[]>
  appends: Array<[number, number]>
}

describe.each(ENGINES)('list-append histories [%s]', (engine) => {
  it('every committed append appears once, in commit order; aborted ones never; reads match the snapshot', async () => {
    const db = await open(tempDir(), { engine })
    const lists = db.collection<number[]>('lists')
    const random = rng(2024)
    const KEYS = 6
    const committed: Done[] = []
    const abortedIds = new Set<number>()
    let nextId = 1
    let conflicts = 0
    const client = async (): Promise<void> => {
      for (let n = 0; n < 40; n++) {
        const tx: Transaction = db.begin()
        const reads = new Map<number, number[]>()
        const appends: Array<[number, number]> = []
        const steps = 1 + Math.floor(random() * 4)
        for (let s = 0; s < steps; s++) {
          const k = Math.floor(random() * KEYS)
          const current = tx.get(lists, k) ?? []
          if (!reads.has(k) && !appends.some(([ak]) => ak === k)) reads.set(k, current)
          if (random() < 0.6) {
            const id = nextId++
            tx.put(lists, k, [...current, id]) // read-modify-write, no merge operator
            appends.push([k, id])
          }
          if (random() < 0.5) await new Promise((r) => setImmediate(r))
        }
        try {
          const { commitId } = await tx.commit()
          if (appends.length > 0) committed.push({ snapshot: tx.snapshot, commitId, reads, appends })
          else committed.push({ snapshot: tx.snapshot, commitId: tx.snapshot, reads, appends })
        } catch (err) {
          if (!(err instanceof ConflictError)) throw err
          conflicts++
          for (const [, id] of appends) abortedIds.add(id)
        }
      }
    }
    await Promise.all(Array.from({ length: 8 }, client))
    expect(conflicts).toBeGreaterThan(0) // the workload really contends
    const writers = committed.filter((d) => d.appends.length > 0).sort((a, b) => Number(a.commitId - b.commitId))
    // The expected final lists: committed appends in commit order.
    const expected = new Map<number, number[]>()
    for (const d of writers) for (const [k, id] of d.appends) expected.set(k, [...(expected.get(k) ?? []), id])
    const final = db.begin()
    for (let k = 0; k < KEYS; k++) {
      const list = final.get(lists, k) ?? []
      expect(list, `key ${k}`).toEqual(expected.get(k) ?? [])
      expect(list.filter((id) => abortedIds.has(id))).toEqual([])
    }
    // Each transaction read the state at one commit point: its snapshot.
    for (const d of committed) {
      for (const [k, seen] of d.reads) {
        const atSnapshot = writers.filter((w) => w.commitId <= d.snapshot).flatMap((w) => w.appends.filter(([ak]) => ak === k).map(([, id]) => id))
        expect(seen, `read of key ${k} at snapshot ${d.snapshot}`).toEqual(atSnapshot)
      }
      expect(d.snapshot <= d.commitId).toBe(true)
    }
    await db.close()
  })
})

describe('differential: one random stream on both engines', () => {
  it('gives the same results, the same committed data and the same log and page bytes, across checkpoints and reopens', async () => {
    const run = async (engine: 'native' | 'ts'): Promise<{ log: string[]; bytes: Buffer[]; pages: Buffer }> => {
      const dir = tempDir(engine)
      const random = rng(77)
      const log: string[] = []
      let db = await open(dir, { engine, retainHistory: { commits: 1000 }, checkpointIntervalMs: 0 })
      const pick = (n: number): number => Math.floor(random() * n)
      for (let round = 0; round < 60; round++) {
        if (round === 30 || round === 55) {
          await db.close()
          db = await open(dir, { engine, retainHistory: { commits: 1000 }, checkpointIntervalMs: 0 })
        }
        if (round === 50) {
          // The other engine carries on with this engine's pages and log for a while.
          await db.close()
          db = await open(dir, { engine: engine === 'native' ? 'ts' : 'native', checkpointIntervalMs: 0, cacheBytes: 1 << 20 })
        }
        if (round === 15 || round === 45 || round === 52) {
          await db.checkpoint()
          log.push(`checkpoint ${db.stats().checkpointLsn} keys ${db.stats().keys}`)
        }
        const c = db.collection<unknown>(`c${pick(2)}`)
        const txs = Array.from({ length: 1 + pick(3) }, () => db.begin())
        for (const tx of txs) {
          for (let i = 0; i < 1 + pick(4); i++) {
            const key = ['k', pick(8)]
            const op = pick(6)
            if (op === 0) tx.delete(c, key)
            else if (op === 1) {
              try {
                tx.append(c as never, ['list', pick(2)], round)
              } catch (e) {
                log.push(`append refused ${(e as { code: string }).code}`)
              }
            } else if (op === 2) {
              try {
                tx.increment(c, ['n', pick(2)], pick(5))
              } catch (e) {
                log.push(`increment refused ${(e as { code: string }).code}`)
              }
            } else tx.put(c, key, { round, i, s: 'x'.repeat(pick(20)) })
            log.push(`get ${JSON.stringify(tx.get(c, key) ?? null)}`)
          }
          log.push(`scan ${JSON.stringify([...tx.scan(c, { limit: 5, reverse: pick(2) === 1 })])}`)
        }
        for (const tx of txs) {
          try {
            log.push(`commit ${(await tx.commit()).commitId}`)
          } catch (e) {
            log.push(`commit failed ${(e as { code: string }).code}`)
          }
        }
        if (round % 10 === 9) log.push(`at ${JSON.stringify([...db.at(db.lastCommitId() - 3n).scan(c)])}`)
      }
      for (const name of ['c0', 'c1']) log.push(`final ${name} ${JSON.stringify([...db.begin().scan(db.collection(name))])}`)
      await db.close()
      const segs = readdirSync(join(dir, 'log')).sort()
      return { log, bytes: segs.map((s) => readFileSync(join(dir, 'log', s))), pages: readFileSync(join(dir, 'pages.kdb')) }
    }
    const native = await run('native')
    const ts = await run('ts')
    expect(native.log.length).toBeGreaterThan(100)
    expect(native.log.some((l) => l.startsWith('commit failed KESTREL_CONFLICT'))).toBe(true)
    expect(ts.log).toEqual(native.log)
    expect(ts.bytes.length).toBe(native.bytes.length)
    for (const [i, b] of ts.bytes.entries()) expect(b.equals(native.bytes[i]!), `segment ${i} bytes`).toBe(true)
    expect(native.pages.length).toBeGreaterThan(3 * 4096)
    expect(ts.pages.equals(native.pages), 'pages.kdb bytes').toBe(true)
  })
})
