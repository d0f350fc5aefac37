/**
 * I5 — no lost batch: the flusher's suspension (backup, verify) defers batches in order, a full
 * queue holds committers back instead of dropping anything, deferred memory is capped, cancelling
 * resumes correctly, and overlapping suspenders are counted. Both engines.
 */
import { describe, expect, it } from 'vitest'
import { open } from '../lib/index.js'
import { coreOf, delay, ENGINES, other, tempDir } from './helpers.js'

describe.each(ENGINES)('flusher (%s)', (engine) => {
  it('a full queue during suspension makes committers wait; nothing is dropped and all of it is checkpointed on resume', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine, flushQueueBytes: 1024, deferredBytesMax: 2048, checkpointIntervalMs: 0 })
    const c = db.collection<string>('c')
    const core = coreOf(db)
    await core.suspendFlusher()
    let done = 0
    // Four writers, one commit at a time each: small batches (one group commit could otherwise
    // carry all 60 commits in one batch, which an empty queue always accepts).
    const commits = Array.from({ length: 4 }, async (_, w) => {
      for (let i = w; i < 60; i += 4) {
        await db.transaction((tx) => tx.put(c, ['k', i], 'v'.repeat(200)))
        done++
      }
    })
    // Bounded wait for the flow to fill up.
    for (let i = 0; i < 200 && core.stats().flow.queuedBytes === 0; i++) await delay(5)
    await delay(50)
    const held = core.stats().flow
    expect(done, 'committers are held back while the queue is full').toBeLessThan(60)
    expect(held.deferredBytes).toBeLessThanOrEqual(2048 + 400)
    expect(held.queuedBytes).toBeGreaterThan(0)
    expect(held.checkpoints).toBe(0)
    // A checkpoint requested while suspended waits for the resume.
    let checkpointed = false
    const cp = db.checkpoint().then(() => {
      checkpointed = true
    })
    await delay(30)
    expect(checkpointed).toBe(false)
    core.resumeFlusher()
    await Promise.all(commits)
    await cp
    expect(done).toBe(60)
    // A commit is acknowledged once its batch is queued for the gopher, which may not have taken
    // it yet: a checkpoint of everything committed (its target is the last commit) proves it has.
    await db.checkpoint()
    const after = core.stats().flow
    expect(after.deferredBatches).toBe(0)
    expect(after.queuedBatches).toBe(0)
    expect(after.writerWaits).toBeGreaterThan(0)
    expect(after.batchesDeferred).toBeGreaterThan(0)
    await db.close()
    const again = await open(dir, { engine: other(engine) })
    expect(again.stats().checkpointLsn).toBe(again.lastCommitId())
    for (let i = 0; i < 60; i++) expect(again.snapshot().get(again.collection<string>('c'), ['k', i])).toBe('v'.repeat(200))
    await again.close()
  })

  it('deferred batches are applied in commit order on resume: the checkpoint holds the last write of every key', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine, checkpointIntervalMs: 0 })
    const c = db.collection<number>('c')
    const core = coreOf(db)
    await core.suspendFlusher()
    const appliedBefore = core.stats().flow.appliedLsn
    for (let i = 1; i <= 100; i++)
      await db.transaction((tx) => {
        tx.put(c, 'k', i)
        tx.put(c, ['other', i % 7], i)
      })
    // Every batch is deferred or (the last one, native) still queued for the gopher; none applied.
    const flow = core.stats().flow
    expect(flow.deferredBatches + flow.queuedBatches).toBeGreaterThanOrEqual(100)
    expect(flow.appliedLsn).toBe(appliedBefore)
    core.resumeFlusher()
    await db.checkpoint()
    const s = core.stats()
    expect(s.flow.appliedLsn).toBe(Number(db.lastCommitId()))
    expect(s.checkpointLsn).toBe(Number(db.lastCommitId()))
    // Simulate nothing more: a crash-free close, then a reopen whose empty cache reads the pages.
    await db.close()
    const again = await open(dir, { engine: other(engine) })
    expect(again.stats().versions).toBe(0) // nothing replayed: everything comes from the page store
    const snap = again.snapshot()
    expect(snap.get(again.collection<number>('c'), 'k')).toBe(100)
    for (let r = 0; r < 7; r++) {
      let last = 0
      for (let i = 1; i <= 100; i++) if (i % 7 === r) last = i
      expect(snap.get(again.collection<number>('c'), ['other', r])).toBe(last)
    }
    snap.close()
    await again.close()
  })

  it('overlapping suspenders are reference-counted: the flusher restarts only after the last resume', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine, checkpointIntervalMs: 0 })
    const c = db.collection<number>('c')
    const core = coreOf(db)
    await core.suspendFlusher()
    await core.suspendFlusher()
    await db.transaction((tx) => tx.put(c, 'a', 1))
    let checkpointed = false
    const cp = db.checkpoint().then(() => {
      checkpointed = true
    })
    core.resumeFlusher()
    await delay(30)
    expect(core.stats().flow.suspended).toBe(1)
    expect(checkpointed, 'one suspender is still there').toBe(false)
    core.resumeFlusher()
    await cp
    expect(core.stats().checkpointLsn).toBe(Number(db.lastCommitId()))
    expect(() => core.resumeFlusher()).toThrow(/resume without a matching suspend/)
    await db.close()
  })

  it('a new suspension in the middle of applying deferred batches keeps them first and in order', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine, checkpointIntervalMs: 0 })
    const c = db.collection<number>('c')
    const core = coreOf(db)
    let last = 0
    for (let round = 0; round < 5; round++) {
      await core.suspendFlusher()
      // Many small batches, so that the resume below has work left when the next suspend lands.
      for (let i = 0; i < 300; i++) {
        last++
        await db.transaction((tx) => {
          tx.put(c, 'k', last)
          tx.put(c, ['each', last % 50], last)
        })
      }
      core.resumeFlusher()
    }
    // The last suspension ended above; everything deferred goes in before this checkpoint.
    await db.checkpoint()
    const s = core.stats()
    expect(s.flow.deferredBatches).toBe(0)
    expect(s.flow.suspended).toBe(0)
    expect(s.checkpointLsn).toBe(Number(db.lastCommitId()))
    await db.close()
    // The page store alone (a tiny cache, nothing to replay) holds the last write of every key.
    const again = await open(dir, { engine: other(engine), cacheBytes: 1 << 20 })
    expect(again.stats().checkpointLsn).toBe(again.lastCommitId())
    const snap = again.snapshot()
    expect(snap.get(again.collection<number>('c'), 'k')).toBe(last)
    for (let j = 0; j < 50; j++) {
      const want = last - ((((last - j) % 50) + 50) % 50)
      expect(snap.get(again.collection<number>('c'), ['each', j])).toBe(want)
    }
    snap.close()
    await again.close()
  })

  it('backup and verify overlapping under writers lose nothing', async () => {
    const dir = tempDir()
    const db = await open(dir, { engine, checkpointBytes: 64 * 1024, checkpointIntervalMs: 10 })
    const c = db.collection<number>('c')
    let running = true
    let n = 0
    const writer = (async () => {
      while (running) {
        const i = n++
        await db.transaction((tx) => tx.put(c, ['w', i], i))
      }
    })()
    // Some commits first (waiting on them, not on a fixed delay: a loaded machine is slow).
    for (let waited = 0; db.lastCommitId() < 5n && waited < 2000; waited++) await delay(5)
    const [b, v] = await Promise.all([db.backup(tempDir('b')), db.verify(), db.verify()])
    expect(v.ok, v.problems.join('\n')).toBe(true)
    expect(b.commitId).toBeGreaterThan(0n)
    running = false
    await writer
    expect(coreOf(db).stats().flow.suspended).toBe(0)
    await db.close()
    const again = await open(dir, { engine: other(engine), cacheBytes: 1 << 20 })
    for (let i = 0; i < n; i++) expect(again.snapshot().get(again.collection<number>('c'), ['w', i])).toBe(i)
    const report = await again.verify()
    expect(report.ok, report.problems.join('\n')).toBe(true)
    await again.close()
  })
})
