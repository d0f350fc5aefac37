/**
 * The pruning horizon with many open readers, on both engines: past the bound on distinct pinned
 * snapshots the store keeps more versions, never fewer (and never fails), and the coordinator
 * ignores only a closed engine when it moves the horizon.
 */
import { describe, expect, it, vi } from 'vitest'
import { KestrelError, open } from '../lib/index.js'
import { encodeKey } from '../lib/codec/key.js'
import { decodeValue, encodeValue } from '../lib/codec/value.js'
import { encodeCommit, OP_PUT } from '../lib/format/payload.js'
import { PINNED_MAX } from '../lib/core/ts/store/keep.js'
import type { Coordinator } from '../lib/txn/coordinator.js'
import { ENGINES, coreOf, tempDir } from './helpers.js'

describe.each(ENGINES)('pinned snapshots and the horizon [%s]', (engine) => {
  // PINNED_MAX is the ts store's constant; the Rust store's has the same value (store/keep.rs).
  it('past PINNED_MAX pinned snapshots every one still reads its version; at the bound the rest is pruned', async () => {
    // The retention window keeps the coordinator's own horizon at 0 (its scavenger may run
    // meanwhile): only the calls below move the engine's.
    const db = await open(tempDir(), { engine, durability: 'none', retainHistory: { commits: 1 << 30 } })
    const core = coreOf(db)
    // PINNED_MAX + 64 commits, one write each: every 1024th and the last 48 write 'k' (its value
    // is the commit's index), the others a key of their own. Submitted straight to the engine in
    // waves, so that no horizon moves meanwhile and every version stays.
    const n = PINNED_MAX + 64
    const writesK = (i: number): boolean => i % 1024 === 0 || i >= n - 48
    const ids: number[] = []
    const WAVE = 4096
    for (let done = 0; done < n; done += WAVE) {
      const wave = Array.from({ length: Math.min(WAVE, n - done) }, (_, j) => {
        const i = done + j
        return core.commit(encodeCommit([{ kind: OP_PUT, collection: 'c', key: encodeKey(writesK(i) ? 'k' : `f${i}`), value: encodeValue(i) }]))
      })
      for (const id of await Promise.all(wave)) ids.push(Number(id))
    }
    const last = ids[n - 1]!
    // What 'k' reads at a snapshot: the value of the newest commit writing it at or below.
    const kCommits = ids.map((id, i) => [id, i] as const).filter(([, i]) => writesK(i))
    const expectedAt = (s: number): number => {
      let v = -1
      // Bounded by the ~110 commits that write 'k'.
      for (const [id, i] of kCommits) if (id <= s) v = i
      return v
    }
    const wrong = (snapshots: readonly number[]): number[] => {
      const bad: number[] = []
      for (const s of snapshots) {
        const bytes = core.get('c', encodeKey('k'), s)
        if ((bytes === undefined ? undefined : decodeValue(bytes)) !== expectedAt(s)) bad.push(s)
      }
      return bad
    }
    // Every commit but the last is pinned (more than PINNED_MAX distinct; newest first, some
    // twice), the horizon at the last: the oldest PINNED_MAX are kept and everything above them.
    const pinned = ids.slice(0, -1).reverse()
    core.setHorizon(last, true, [...pinned, ...pinned.slice(0, 100)])
    expect(core.horizon()).toBe(last)
    expect(core.stats().versions).toBe(n)
    expect(wrong(ids)).toEqual([])
    // A scavenge pass over every chain keeps them too.
    for (let slice = 0; slice < 10_000; slice++) {
      if (core.scavenge({ retireAgeMax: -1, targetBytes: Number.MAX_SAFE_INTEGER, visitMax: 1 << 20 }).done) break
    }
    expect(core.stats().versions).toBe(n)
    expect(wrong(ids)).toEqual([])
    // Exactly at the bound, the versions of 'k' between the newest pinned snapshot and the
    // horizon go; the pinned ones and the horizon still read theirs.
    const oldest = ids.slice(0, PINNED_MAX)
    core.setHorizon(last, true, oldest)
    const keptK = new Set([...oldest, last].map(expectedAt))
    expect(core.stats().versions).toBe(n - kCommits.length + keptK.size)
    expect(wrong([...oldest, last])).toEqual([])
    await db.close()
  })

  it('the scheduled horizon move ignores a closed engine, and no other engine error', async () => {
    const db = await open(tempDir(), { engine })
    const core = coreOf(db)
    const coordinator = (db as unknown as { lease: { coordinator: Coordinator } }).lease.coordinator
    await db.transaction((tx) => tx.put(db.collection('c'), 'k', 1))
    await new Promise((r) => setImmediate(r)) // the horizon move that commit scheduled has run
    // An old reader below the horizon: the move has something to tell the engine.
    coordinator.pin(0)
    /** Capture the move an unpin schedules (synchronously, so nothing else is captured). */
    const scheduledMove = (): (() => void) => {
      let scheduled: (() => void) | undefined
      const spy = vi.spyOn(globalThis, 'setImmediate').mockImplementation(((fn: () => void) => {
        scheduled = fn
        return { unref: () => undefined }
      }) as never)
      try {
        coordinator.pin(0)
        coordinator.unpin(0)
      } finally {
        spy.mockRestore()
      }
      expect(scheduled).toBeTypeOf('function')
      return scheduled!
    }
    const failWith = (err: Error): void => {
      Object.defineProperty(core, 'setHorizon', {
        value: () => {
          throw err
        },
        configurable: true,
        writable: true,
      })
    }
    try {
      failWith(new KestrelError('KESTREL_IO', 'the engine failed while pruning'))
      expect(scheduledMove()).toThrow('the engine failed while pruning')
      failWith(new TypeError('a bug in the engine'))
      expect(scheduledMove()).toThrow('a bug in the engine')
      failWith(new KestrelError('KESTREL_CLOSED', 'the database is closed'))
      expect(scheduledMove()).not.toThrow()
    } finally {
      delete (core as { setHorizon?: unknown }).setHorizon
    }
    coordinator.unpin(0)
    await db.close()
  })
})
