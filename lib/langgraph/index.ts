/**
 * `kestreldb/langgraph`: a LangGraph checkpoint saver on kestreldb collections.
 *
 * Layout (all keys are tuples, so every listing is an ordered scan — never a load-modify-save
 * index blob that concurrent writers could clobber):
 * - `lg:checkpoints` [thread, ns, checkpointId] → checkpoint (without channel values), metadata,
 *   parent id
 * - `lg:blobs` [thread, ns, channel, version] → one channel value, stored once per version
 * - `lg:writes` [thread, ns, checkpointId, taskId, idx] → one pending write
 * - `lg:heads` [thread, ns] → the newest checkpoint id of the namespace
 * - `lg:threads` [thread] → activity counter, bumped with a merge operator by every put and
 *   putWrites and deleted by deleteThread, so that those conflict with a concurrent deletion
 *   while never conflicting with each other.
 *
 * Concurrent writers of one thread: a `put` whose parent is the namespace's head when it is
 * called (the usual append) is linked into the head's chain when it commits — racing appends
 * become one chain in checkpoint-id order, never a silent fork. A `put` from an older checkpoint
 * (an explicit fork, e.g. after time travel) keeps the parent it names, and a `put` without a
 * parent starts a new root.
 */
import {
  BaseCheckpointSaver,
  TASKS,
  WRITES_IDX_MAP,
  compareWritesSortKeys,
  copyCheckpoint,
  getCheckpointId,
  maxChannelVersion,
  writesSortKey,
  type ChannelVersions,
  type Checkpoint,
  type CheckpointListOptions,
  type CheckpointMetadata,
  type CheckpointPendingWrite,
  type CheckpointTuple,
  type PendingWrite,
  type SerializerProtocol,
} from '@langchain/langgraph-checkpoint'
import type { RunnableConfig } from '@langchain/core/runnables'
import { open, type Database } from '../database.js'
import { KestrelError } from '../errors.js'
import type { OpenOptions } from '../options.js'
import type { Collection } from '../collection.js'
import type { ReadView } from '../snapshot.js'
import type { Transaction } from '../transaction.js'

/** A serialized value: the serializer's type tag and bytes. */
interface Blob {
  t: string
  b: Uint8Array
}

interface CheckpointRecord {
  checkpoint: Blob
  metadata: Blob
  parent?: string
  /** The parent was taken from the head by a racing append, so a later racer may slot in before. */
  linked?: true
}

interface WriteRecord {
  channel: string
  value: Blob
  taskPath: string
}

type Reader = Pick<ReadView, 'get' | 'scan'> | Pick<Transaction, 'get' | 'scan'>

/** Retries for transactions that race other writers of the same thread. */
const RETRIES = 64

/** How far back a racing append walks the head's chain to find its place in id order. */
const RELINK_STEPS_MAX = 64

function invalid(message: string): KestrelError {
  return new KestrelError('KESTREL_INVALID_ARGUMENT', message)
}

function threadOf(config: RunnableConfig, what: string): string {
  const id = config?.configurable?.thread_id
  if (typeof id !== 'string' || id.length === 0) {
    throw invalid(`${what}: config.configurable.thread_id is missing; pass { configurable: { thread_id: '…' } } so the saver knows which thread to use`)
  }
  return id
}

function nsOf(config: RunnableConfig): string {
  const ns = config?.configurable?.checkpoint_ns ?? ''
  if (typeof ns !== 'string') throw invalid('config.configurable.checkpoint_ns must be a string')
  return ns
}

/**
 * A LangGraph `BaseCheckpointSaver` backed by a kestreldb database. Safe with several savers
 * over one directory in one process and with several graphs writing one thread at once.
 *
 * @example
 * const checkpointer = await KestrelSaver.open('./agent-state')
 * const graph = workflow.compile({ checkpointer })
 */
export class KestrelSaver extends BaseCheckpointSaver {
  private readonly checkpoints: Collection<CheckpointRecord>
  private readonly blobs: Collection<Blob>
  private readonly writes: Collection<WriteRecord>
  private readonly heads: Collection<string>
  private readonly threads: Collection<number>
  private closed = false

  /** Use an open database (the saver does not close it). */
  constructor(
    readonly db: Database,
    serde?: SerializerProtocol,
    private readonly ownsDb = false,
  ) {
    super(serde)
    this.checkpoints = db.collection('lg:checkpoints')
    this.blobs = db.collection('lg:blobs')
    this.writes = db.collection('lg:writes')
    this.heads = db.collection('lg:heads')
    this.threads = db.collection('lg:threads')
  }

  /** Open (or create) a database directory for checkpoints; `close()` closes it. */
  static async open(path: string, options?: OpenOptions & { serde?: SerializerProtocol }): Promise<KestrelSaver> {
    const { serde, ...dbOptions } = options ?? {}
    return new KestrelSaver(await open(path, dbOptions), serde, true)
  }

  private live(): void {
    if (this.closed) throw new KestrelError('KESTREL_CLOSED', 'this KestrelSaver is closed; open a new one')
  }

  private async dump(value: unknown): Promise<Blob> {
    let t: string
    let b: Uint8Array
    try {
      ;[t, b] = await this.serde.dumpsTyped(value)
    } catch (err) {
      throw invalid(`the checkpoint serializer cannot serialize this value (${(err as Error).message})`)
    }
    return { t, b }
  }

  private load(blob: Blob): Promise<unknown> {
    return this.serde.loadsTyped(blob.t, blob.b)
  }

  async getTuple(config: RunnableConfig): Promise<CheckpointTuple | undefined> {
    this.live()
    // No thread, no checkpoint (the saver contract asks for undefined here, not an error).
    if (config?.configurable?.thread_id === undefined) return undefined
    const thread = threadOf(config, 'getTuple')
    const ns = nsOf(config)
    const view = this.db.snapshot()
    try {
      let id = getCheckpointId(config)
      let record: CheckpointRecord | undefined
      if (id) {
        record = view.get(this.checkpoints, [thread, ns, id])
      } else {
        for (const e of view.scan(this.checkpoints, { prefix: [thread, ns, ''], reverse: true, limit: 1 })) {
          id = (e.key as string[])[2]!
          record = e.value
        }
      }
      if (!record || !id) return undefined
      return await this.tuple(view, thread, ns, id, record, id === getCheckpointId(config) ? config : undefined)
    } finally {
      view.close()
    }
  }

  private async tuple(view: Reader, thread: string, ns: string, id: string, record: CheckpointRecord, config?: RunnableConfig): Promise<CheckpointTuple> {
    const checkpoint = (await this.load(record.checkpoint)) as Checkpoint
    const values: Record<string, unknown> = {}
    for (const [channel, version] of Object.entries(checkpoint.channel_versions ?? {})) {
      const blob = view.get(this.blobs, [thread, ns, channel, String(version)])
      if (blob && blob.t !== 'empty') values[channel] = await this.load(blob)
    }
    checkpoint.channel_values = values
    if (checkpoint.v < 4 && record.parent !== undefined) await this.migratePendingSends(view, checkpoint, thread, ns, record.parent)
    const tuple: CheckpointTuple = {
      config: config ?? { configurable: { thread_id: thread, checkpoint_ns: ns, checkpoint_id: id } },
      checkpoint,
      metadata: (await this.load(record.metadata)) as CheckpointMetadata,
      pendingWrites: await this.pendingWrites(view, thread, ns, id),
    }
    if (record.parent !== undefined) tuple.parentConfig = { configurable: { thread_id: thread, checkpoint_ns: ns, checkpoint_id: record.parent } }
    return tuple
  }

  /** Pending writes of one checkpoint, in the order live execution applies them. */
  private async pendingWrites(view: Reader, thread: string, ns: string, id: string): Promise<CheckpointPendingWrite[]> {
    const rows: Array<{ sort: ReturnType<typeof writesSortKey>; taskId: string; w: WriteRecord }> = []
    for (const { key, value } of view.scan(this.writes, { prefix: [thread, ns, id, ''] })) {
      const [, , , taskId, idx] = key as [string, string, string, string, number]
      rows.push({ sort: writesSortKey(value.taskPath, taskId, idx), taskId, w: value })
    }
    rows.sort((a, b) => compareWritesSortKeys(a.sort, b.sort))
    return Promise.all(rows.map(async (r) => [r.taskId, r.w.channel, await this.load(r.w.value)] as CheckpointPendingWrite))
  }

  /** Checkpoints before format 4 kept pending sends as writes of the parent. */
  private async migratePendingSends(view: Reader, checkpoint: Checkpoint, thread: string, ns: string, parent: string): Promise<void> {
    const sends: unknown[] = []
    for (const { value } of view.scan(this.writes, { prefix: [thread, ns, parent, ''] })) {
      if (value.channel === TASKS) sends.push(await this.load(value.value))
    }
    checkpoint.channel_values ??= {}
    checkpoint.channel_values[TASKS] = sends
    checkpoint.channel_versions ??= {}
    const versions = Object.values(checkpoint.channel_versions)
    checkpoint.channel_versions[TASKS] = versions.length > 0 ? maxChannelVersion(...versions) : this.getNextVersion(undefined)
  }

  async *list(config: RunnableConfig, options?: CheckpointListOptions): AsyncGenerator<CheckpointTuple> {
    this.live()
    const { before, filter } = options ?? {}
    let limit = options?.limit
    const thread = config?.configurable?.thread_id as string | undefined
    const ns = config?.configurable?.checkpoint_ns as string | undefined
    const only = config?.configurable?.checkpoint_id as string | undefined
    const beforeId = before?.configurable?.checkpoint_id as string | undefined
    // A trailing '' closes the elements before it: [thread, ''] matches thread exactly, any ns.
    const prefix = thread === undefined ? undefined : ns === undefined ? [thread, ''] : [thread, ns, '']
    const view = this.db.snapshot()
    try {
      // Newest first: a reverse ordered scan. With one namespace named, `before` and `limit` go
      // into the scan bounds, so a list reads only what it returns.
      const exact = thread !== undefined && ns !== undefined
      const rows = view.scan(this.checkpoints, {
        ...(prefix ? { prefix } : {}),
        ...(exact && beforeId ? { lt: [thread, ns, beforeId] } : {}),
        // Without a filter, every row the scan yields is returned, so the limit applies as is.
        ...(!filter && !only && (exact || (!beforeId && ns === undefined)) && limit !== undefined ? { limit: Math.max(0, limit) } : {}),
        reverse: true,
      })
      for (const { key, value } of rows) {
        const [t, n, id] = key as [string, string, string]
        if (ns !== undefined && n !== ns) continue
        if (only && id !== only) continue
        if (beforeId && id >= beforeId) continue
        if (filter) {
          const metadata = (await this.load(value.metadata)) as Record<string, unknown>
          if (!Object.entries(filter).every(([k, v]) => metadata[k] === v)) continue
        }
        if (limit !== undefined) {
          if (limit <= 0) break
          limit--
        }
        yield await this.tuple(view, t, n, id, value)
      }
    } finally {
      view.close()
    }
  }

  async put(config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, newVersions: ChannelVersions): Promise<RunnableConfig> {
    this.live()
    const thread = threadOf(config, 'put')
    const ns = nsOf(config)
    const intendedParent = config.configurable?.checkpoint_id as string | undefined
    // An append or a fork is told apart by the head when the caller asks, before any await: a
    // racer that commits first must not turn this append into a fork.
    const appending = intendedParent !== undefined && intendedParent === this.db.get(this.heads, [thread, ns])
    const prepared = copyCheckpoint(checkpoint)
    const values = prepared.channel_values ?? {}
    prepared.channel_values = {}
    const [cpBlob, mdBlob] = await Promise.all([this.dump(prepared), this.dump(metadata)])
    // Channel values are stored once per version: only the channels `newVersions` names.
    const blobs = new Map<string, Blob>()
    for (const [channel, version] of Object.entries(newVersions ?? {})) {
      blobs.set(`${channel}\u0000${String(version)}`, channel in values ? await this.dump(values[channel]) : { t: 'empty', b: new Uint8Array(0) })
    }
    await this.db.transaction(
      (tx) => {
        const head = tx.get(this.heads, [thread, ns])
        const existing = tx.get(this.checkpoints, [thread, ns, checkpoint.id])
        for (const [k, blob] of blobs) {
          const [channel, version] = k.split('\u0000') as [string, string]
          tx.put(this.blobs, [thread, ns, channel, version], blob)
        }
        const record: CheckpointRecord = { checkpoint: cpBlob, metadata: mdBlob }
        if (existing) {
          // Written again: its place in the history stays.
          if (existing.parent !== undefined) record.parent = existing.parent
          if (existing.linked) record.linked = true
        } else if (appending && head !== undefined) {
          record.linked = true
          record.parent = this.linkIntoChain(tx, thread, ns, head, checkpoint.id)
        } else if (intendedParent !== undefined && intendedParent !== checkpoint.id) {
          record.parent = intendedParent
        }
        tx.put(this.checkpoints, [thread, ns, checkpoint.id], record)
        // Always written, even when unchanged: two puts racing on one namespace must conflict.
        tx.put(this.heads, [thread, ns], head === undefined || checkpoint.id > head ? checkpoint.id : head)
        tx.increment(this.threads, [thread], 1)
      },
      { retries: RETRIES },
    )
    return { configurable: { thread_id: thread, checkpoint_ns: ns, checkpoint_id: checkpoint.id } }
  }

  /**
   * The parent of a racing append of checkpoint `id` at `head`: the newest checkpoint older than
   * `id` on the head's chain. A newer racer that was linked there first (`linked`) is moved to
   * follow `id`, so the chain stays in id order; forks and roots are never moved.
   */
  private linkIntoChain(tx: Transaction, thread: string, ns: string, head: string, id: string): string {
    let parent = head
    let next: { id: string; record: CheckpointRecord } | undefined
    for (let step = 0; step < RELINK_STEPS_MAX && parent > id; step++) {
      const record = tx.get(this.checkpoints, [thread, ns, parent])
      if (!record?.linked || record.parent === undefined) break
      next = { id: parent, record }
      parent = record.parent
    }
    if (parent > id) return head // no place in id order: follow the head
    if (next) tx.put(this.checkpoints, [thread, ns, next.id], { ...next.record, parent: id })
    return parent
  }

  async putWrites(config: RunnableConfig, writes: PendingWrite[], taskId: string, taskPath?: string): Promise<void> {
    this.live()
    const thread = threadOf(config, 'putWrites')
    const ns = nsOf(config)
    const id = config.configurable?.checkpoint_id as string | undefined
    if (!id) throw invalid('putWrites: config.configurable.checkpoint_id is missing')
    if (typeof taskId !== 'string') throw invalid('putWrites: taskId must be a string')
    const rows = await Promise.all(
      writes.map(async ([channel, value], i) => ({
        idx: (WRITES_IDX_MAP as Record<string, number>)[channel] ?? i,
        record: { channel, value: await this.dump(value), taskPath: taskPath ?? '' } satisfies WriteRecord,
      })),
    )
    await this.db.transaction(
      (tx) => {
        // A write for a checkpoint that is gone (its thread was deleted) is dropped: it must not
        // bring the thread back. The merge below conflicts with a concurrent deleteThread.
        if (tx.get(this.checkpoints, [thread, ns, id]) === undefined) return
        for (const { idx, record } of rows) {
          const key = [thread, ns, id, taskId, idx]
          // Regular writes are idempotent per (task, index); special writes (idx < 0) replace.
          if (idx >= 0 && tx.get(this.writes, key) !== undefined) continue
          tx.put(this.writes, key, record)
        }
        tx.increment(this.threads, [thread], 1)
      },
      { retries: RETRIES },
    )
  }

  async deleteThread(threadId: string): Promise<void> {
    this.live()
    if (typeof threadId !== 'string' || threadId.length === 0) throw invalid('deleteThread needs a thread id string')
    await this.db.transaction(
      (tx) => {
        for (const c of [this.checkpoints, this.blobs, this.writes, this.heads] as Array<Collection<unknown>>) {
          for (const { key } of tx.scan(c, { prefix: [threadId, ''] })) tx.delete(c, key)
        }
        tx.delete(this.threads, [threadId])
      },
      { retries: RETRIES },
    )
  }

  /** Close the saver (and its database when it opened it). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.ownsDb) await this.db.close()
  }
}
