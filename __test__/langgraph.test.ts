/**
 * KestrelSaver beyond the conformance suite: concurrent puts from two savers keep every
 * checkpoint in one chain, racing appends chain instead of forking, deleteThread against late writes, a real
 * LangGraph graph with an interrupt resumed after a reopen, and bad input — on both engines.
 */
import { Annotation, Command, END, START, StateGraph, interrupt } from '@langchain/langgraph'
import { JsonPlusSerializer, emptyCheckpoint, uuid6, type Checkpoint } from '@langchain/langgraph-checkpoint'
import { describe, expect, it } from 'vitest'
import { KestrelSaver } from '../lib/langgraph/index.js'
import { open } from '../lib/index.js'
import { ENGINES, expectCode, other, saverChain, tempDir } from './helpers.js'

function checkpoint(i: number): Checkpoint {
  return { ...emptyCheckpoint(), id: uuid6(i), channel_values: { n: i }, channel_versions: { n: i + 1 } }
}

const State = Annotation.Root({
  steps: Annotation<string[]>({ reducer: (a, b) => a.concat(b), default: () => [] }),
  approved: Annotation<boolean | undefined>(),
})

function buildGraph() {
  return new StateGraph(State)
    .addNode('draft', () => ({ steps: ['draft'] }))
    .addNode('review', () => {
      const answer = interrupt({ question: 'approve?' }) as boolean
      return { steps: ['review'], approved: answer }
    })
    .addNode('publish', () => ({ steps: ['publish'] }))
    .addEdge(START, 'draft')
    .addEdge('draft', 'review')
    .addEdge('review', 'publish')
    .addEdge('publish', END)
}

describe.each(ENGINES)('KestrelSaver [%s]', (engine) => {
  it('20 concurrent puts to one thread from two savers over one directory are all listed, newest first, once, in one chain', async () => {
    const dir = tempDir()
    const a = await KestrelSaver.open(dir, { engine })
    const b = await KestrelSaver.open(dir, { engine })
    const root = await a.put({ configurable: { thread_id: 'thread-7', checkpoint_ns: '' } }, checkpoint(100), { source: 'input', step: -1, parents: {} }, {})
    const ids = Array.from({ length: 20 }, (_, i) => uuid6(i))
    // All 20 append at the root, called newest first so that most commit before an older racer.
    await Promise.all(
      ids.map((_, j) => {
        const i = ids.length - 1 - j
        return (i % 2 ? a : b).put(root, { ...checkpoint(i), id: ids[i]! }, { source: 'loop', step: i, parents: {} }, { n: i + 1 })
      }),
    )
    const listed: string[] = []
    for await (const t of a.list({ configurable: { thread_id: 'thread-7' } })) listed.push(t.checkpoint.id)
    const all = [...ids, root.configurable?.checkpoint_id as string].sort().reverse()
    expect(listed).toEqual(all)
    // The racers were linked into one chain in id order, ending at the root.
    expect(await saverChain(a, 'thread-7')).toEqual(all)
    await a.close()
    await b.close()
    const again = await KestrelSaver.open(dir, { engine: other(engine) })
    let n = 0
    for await (const _ of again.list({ configurable: { thread_id: 'thread-7' } })) n++
    expect(n).toBe(21)
    await again.close()
  })

  it('racing appends at the head form a chain, never a silent fork', async () => {
    const dir = tempDir()
    const a = await KestrelSaver.open(dir, { engine })
    const b = await KestrelSaver.open(dir, { engine })
    const root = await a.put({ configurable: { thread_id: 't', checkpoint_ns: '' } }, checkpoint(0), { source: 'input', step: -1, parents: {} }, { n: 1 })
    // Both writers append to the same head at once.
    await Promise.all([
      a.put(root, checkpoint(1), { source: 'loop', step: 0, parents: {} }, { n: 2 }),
      b.put(root, checkpoint(2), { source: 'loop', step: 0, parents: {} }, { n: 3 }),
    ])
    const parents = new Map<string, string | undefined>()
    for await (const t of a.list({ configurable: { thread_id: 't' } }))
      parents.set(t.checkpoint.id, t.parentConfig?.configurable?.checkpoint_id as string | undefined)
    expect(parents.size).toBe(3)
    const children = [...parents.values()].filter((p) => p !== undefined)
    expect(new Set(children).size).toBe(2) // two different parents: a chain root → x → y
    // An explicit fork from an older checkpoint keeps the parent it names.
    const fork = await a.put(root, checkpoint(3), { source: 'fork', step: 1, parents: {} }, { n: 4 })
    expect((await a.getTuple(fork))?.parentConfig?.configurable?.checkpoint_id).toBe(root.configurable!.checkpoint_id)
    await a.close()
    await b.close()
  })

  it('deleteThread is atomic and a late putWrites does not bring the thread back', async () => {
    const dir = tempDir()
    const saver = await KestrelSaver.open(dir, { engine })
    const cfg = await saver.put({ configurable: { thread_id: 'gone', checkpoint_ns: '' } }, checkpoint(0), { source: 'input', step: -1, parents: {} }, { n: 1 })
    await saver.putWrites(cfg, [['n', 5]], 'task-1')
    const keep = await saver.put(
      { configurable: { thread_id: 'kept', checkpoint_ns: '' } },
      checkpoint(1),
      { source: 'input', step: -1, parents: {} },
      { n: 2 },
    )
    const late = saver.putWrites(cfg, [['n', 6]], 'task-2')
    await saver.deleteThread('gone')
    await late
    await saver.putWrites(cfg, [['n', 7]], 'task-3')
    expect(await saver.getTuple({ configurable: { thread_id: 'gone', checkpoint_ns: '' } })).toBeUndefined()
    const left: string[] = []
    for await (const t of saver.list({})) left.push(t.config.configurable?.thread_id as string)
    expect(left).toEqual(['kept'])
    // Nothing of the deleted thread remains in any collection.
    const db = saver.db
    for (const name of ['lg:checkpoints', 'lg:blobs', 'lg:writes', 'lg:heads', 'lg:threads']) {
      expect([...db.begin().scan(db.collection(name), { prefix: ['gone', ''] })], name).toEqual([])
    }
    expect((await saver.getTuple(keep))?.checkpoint.id).toBe(keep.configurable!.checkpoint_id)
    await saver.close()
  })

  it('runs a real StateGraph with an interrupt, and resumes it after the database is closed and reopened', async () => {
    const dir = tempDir()
    const config = { configurable: { thread_id: 'review-42' } }
    let saver = await KestrelSaver.open(dir, { engine })
    const first = await buildGraph().compile({ checkpointer: saver }).invoke({ steps: [] }, config)
    expect(first.steps).toEqual(['draft'])
    const paused = await buildGraph().compile({ checkpointer: saver }).getState(config)
    expect(paused.next).toEqual(['review'])
    await saver.close()

    saver = await KestrelSaver.open(dir, { engine: other(engine) })
    const graph = buildGraph().compile({ checkpointer: saver })
    const done = await graph.invoke(new Command({ resume: true }), config)
    expect(done.steps).toEqual(['draft', 'review', 'publish'])
    expect(done.approved).toBe(true)
    const history: string[][] = []
    for await (const s of graph.getStateHistory(config)) history.push(s.values.steps ?? [])
    expect(history[0]).toEqual(['draft', 'review', 'publish'])
    expect(history.length).toBeGreaterThanOrEqual(4)
    await saver.close()
  })

  it('bad input: no thread_id, an unserializable checkpoint, use after close', async () => {
    /** A serializer that refuses values marked unserializable, as a strict custom one would. */
    class StrictSerializer extends JsonPlusSerializer {
      override async dumpsTyped(value: unknown): Promise<[string, Uint8Array]> {
        if (JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? 0 : v))?.includes('"unserializable"')) throw new Error('cannot serialize this value')
        return super.dumpsTyped(value)
      }
    }
    const saver = await KestrelSaver.open(tempDir(), { engine, serde: new StrictSerializer() })
    await expectCode(() => saver.put({ configurable: {} }, checkpoint(0), { source: 'input', step: -1, parents: {} }, {}), 'KESTREL_INVALID_ARGUMENT')
    await expectCode(() => saver.putWrites({ configurable: { checkpoint_id: 'x' } }, [], 't'), 'KESTREL_INVALID_ARGUMENT')
    const err = await expectCode(
      () =>
        saver.put(
          { configurable: { thread_id: 't' } },
          { ...checkpoint(1), channel_values: { bad: 'unserializable' } },
          { source: 'input', step: -1, parents: {} },
          { bad: 1 },
        ),
      'KESTREL_INVALID_ARGUMENT',
    )
    expect(err.message).toMatch(/serializer/)
    expect(await saver.getTuple({ configurable: { thread_id: 't' } })).toBeUndefined() // nothing half-written
    expect(await saver.getTuple({ configurable: {} })).toBeUndefined()
    await saver.close()
    await expectCode(() => saver.getTuple({ configurable: { thread_id: 't' } }), 'KESTREL_CLOSED')
    await expectCode(() => saver.put({ configurable: { thread_id: 't' } }, checkpoint(2), { source: 'input', step: -1, parents: {} }, {}), 'KESTREL_CLOSED')
  })

  it('new KestrelSaver(db) shares an open database and leaves it open on close', async () => {
    const db = await open(tempDir(), { engine })
    const saver = new KestrelSaver(db)
    const cp = checkpoint(0)
    await saver.put({ configurable: { thread_id: 't' } }, cp, { source: 'input', step: -1, parents: {} }, { n: 1 })
    await saver.close()
    expect(db.begin().get(db.collection('lg:heads'), ['t', ''])).toBe(cp.id) // the database is still open
    await db.close()
  })
})
