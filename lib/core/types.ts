/**
 * THE SEAM: everything above `lib/core/` talks to an engine only through {@link Core}.
 * Keys and values cross it as bytes (already encoded by `lib/codec/`); commits cross it as one
 * `COMMIT` payload (docs/FORMAT.md) built by `lib/format/payload.ts`.
 */

/** A re-check of a commit against commits of other processes that arrived after its validation. */
export type CommitCheck = () => Error | undefined

/** Which engine implementation runs. */
export type EngineName = 'native' | 'ts'

/** When a commit is acknowledged: see docs/FORMAT.md "Group commit and durability". */
export type Durability = 'sync' | 'relaxed' | 'none'

/** Faults the test-only file layer injects (both engines implement the same set). */
export interface FaultOptions {
  /** Fail the Nth `write` call on a log segment (1-based) with `errno`. */
  failWriteAt?: number
  /** Fail the Nth `fdatasync` call on a log segment (1-based) with `errno`. */
  failFsyncAt?: number
  /** The error the failing call reports. Default `'EIO'`. */
  errno?: 'EIO' | 'ENOSPC'
  /** Fail every fdatasync that seals a segment (rollover, close). */
  failSealSync?: boolean
}

/** Options an engine is opened with (already validated and defaulted by `lib/options.ts`). */
export interface CoreOpenOptions {
  durability: Durability
  /** Start a new segment once the active one is larger than this. */
  segmentBytes: number
  /** Upper bound on the bytes of one group-commit batch. */
  groupBytesMax: number
  /** Test-only fault injection; absent in production. */
  faults?: FaultOptions
  /** After open, versions of the last this-many commits stay readable (time travel). */
  retainCommits: number
  /** Record memory past which checkpointed records are retired (reads then go to the page store). */
  cacheBytes: number
  /** Write a checkpoint once this many bytes of changes are dirty. */
  checkpointBytes: number
  /** Write a checkpoint when changes are older than this; 0 = only by size, request and close. */
  checkpointIntervalMs: number
  /** Bytes of written batches queued for the flusher before committers wait. */
  flushQueueBytes: number
  /** Bytes of batches deferred while the flusher is suspended before committers are throttled. */
  deferredBytesMax: number
  /**
   * Open as one of several participants sharing the directory (docs/FORMAT.md "Sharing"): the
   * caller holds the locks, so the engine takes none; automatic checkpoints are off (the caller
   * asks for them with `checkpoint(options)` under its checkpoint lock) and `close()` writes no
   * final checkpoint. Absent: the engine is the directory's only user, as before.
   */
  sharing?: CoreSharing
}

/** Where the log ends: the next frame goes to `segment` at byte `offset`; the frame before it has LSN `lsn`. */
export interface LogTail {
  /** LSN of the last record before the tail (0: none). */
  lsn: number
  /** File name of the segment the next frame goes to, e.g. `00000000000000000001.klog`. */
  segment: string
  /** Byte offset in `segment` where the next frame starts (≥ the 32-byte header). */
  offset: number
}

/** See {@link CoreOpenOptions.sharing}. */
export interface CoreSharing {
  /**
   * Other participants are live: replay the log only up to this published tail, never cut or
   * read past it, and continue writing there. Absent: recover the whole log as a sole owner does
   * (cutting a torn tail), then continue after it.
   */
  tail?: LogTail
  /**
   * Test-only: an engine of its own even where this process has one open on the directory
   * (native engines are shared by the threads of a process), standing in for another process's.
   */
  apart?: boolean
  /**
   * The engine's log writer publishes each durable batch's tail in the `SHARED` log block
   * itself (the caller queues commits only while it holds the write lock). Of the threads
   * sharing one native engine, the first opener's choice holds.
   */
  publish?: boolean
}

/** A published checkpoint: its sequence number (0: none yet) and the LSN it covers. */
export interface CheckpointRef {
  seq: number
  lsn: number
}

/** How a shared participant's checkpoint may treat pages and log (see Core.checkpoint). */
export interface CoreCheckpointOptions {
  /**
   * May pages of the published free list be reused? False while another participant may still
   * read an older checkpoint: new pages then go at the end of the file, and the whole published
   * free list is carried into the new one. Default true.
   */
  reuseFreePages?: boolean
  /** Delete only log segments whose every record is below this LSN (and at or below the checkpoint). Default: no extra bound. */
  trimBelowLsn?: number
}

/** Test-only crash points inside a checkpoint (see docs/ARCHITECTURE.md). */
export type PageFault = 'none' | 'losePagesBeforeMeta' | 'tearMeta' | 'failMetaSync'

/** What a backup copies; fixed while the flusher is suspended. */
export interface BackupPlan {
  /** Every commit up to this one is in the copy, none after. */
  commitId: number
  /** Sequence number of the checkpoint copied (its meta slot is seq mod 2); 0 = none yet. */
  seq: number
  /** Pages that checkpoint reaches (not the meta slots), ascending. */
  pages: Uint32Array
  pageCount: number
  /** Log segments to copy, in LSN order, with the number of bytes to copy of each. */
  segments: Array<{ name: string; bytes: number }>
}

/** Bounds of an ordered scan over encoded keys (all optional). */
export interface CoreScanOptions {
  gte?: Uint8Array
  gt?: Uint8Array
  lte?: Uint8Array
  lt?: Uint8Array
  reverse?: boolean
  /** At most this many entries (default: no limit). */
  limit?: number
}

/** One slice of a scavenge pass: see {@link Core.scavenge}. */
export interface CoreScavengeOptions {
  /** Retire lone checkpointed chains whose age group is ≤ this (−1: retire nothing). */
  retireAgeMax: number
  /** Stop retiring once the record memory is at most this many bytes. */
  targetBytes: number
  /** Visit at most this many chains in this slice (bounds the time the store is held). */
  visitMax: number
}

/** What one scavenge slice did. */
export interface CoreScavengeStep {
  /** Chains visited in this slice. */
  visited: number
  /** Versions pruned (read by no snapshot ≥ the horizon and no pinned one), lone tombstones included. */
  prunedVersions: number
  /** In-memory index entries removed because no staying version holds them any more. */
  indexEntriesRemoved: number
  /** Chains retired from memory (they are read from the page store from now on). */
  retired: number
  /** The pass reached the last chain: the next call starts a new pass at the first one. */
  done: boolean
  /**
   * Survey of the retirable chains (a single version, already checkpointed) left after this
   * slice, as flat pairs `[ageGroup, bytes, ageGroup, bytes, …]`, one pair per age group seen.
   */
  survey: number[]
}

/** Counters every engine reports. */
export interface CoreStats {
  engine: EngineName
  /** LSN of the last durable (acknowledged) record; 0 when the log is empty. */
  durableLsn: number
  /** Number of group-commit batches (write + sync) issued since open. */
  batches: number
  /** Number of fdatasync calls on log segments since open. */
  syncs: number
  /** Number of segment files. */
  segments: number
  /** Keys whose newest version is not a deletion, over all collections. */
  keys: number
  /** Versions held in memory (all keys, all collections). */
  versions: number
  /** Estimated bytes of the records held in memory. */
  recordBytes: number
  /** Records retired from memory (since open): they are read from the page store. */
  retired: number
  /** LSN of the last checkpoint (0 = none): reopen replays the log after it. */
  checkpointLsn: number
  /** Pages in pages.kdb. */
  pageCount: number
  /** Index entries held in memory (pairs of an index key and a primary key, reference-counted). */
  indexEntries: number
  /** The current age group (the scavenger's LRU clock; see Core.setAgeGroup). */
  ageGroup: number
  /**
   * Threads of this process using this engine: a native engine is shared by every thread that
   * opens its directory (one per directory per process); a ts engine is its thread's own (1).
   */
  threads: number
  /** The gopher and flusher. */
  flow: {
    queuedBatches: number
    queuedBytes: number
    deferredBatches: number
    deferredBytes: number
    dirtyKeys: number
    dirtyBytes: number
    appliedLsn: number
    suspended: number
    checkpointInFlight: boolean
    checkpoints: number
    checkpointFailures: number
    writerWaits: number
    batchesDeferred: number
    segmentsDeleted: number
    pagesWritten: number
    lastCheckpointMs: number
  }
  /** A PostgreSQL replica's view of the shared log (absent for a directory database). */
  replica?: {
    /** The PostgreSQL schema holding the database. */
    schema: string
    /** The newest LSN this replica has heard of (a notification, a read or its own commit). */
    headLsn: number
    /** Commits it has heard of and not applied yet: how stale its reads may be. */
    lagCommits: number
    /** PostgreSQL answered the last request (commits are refused while it does not). */
    reachable: boolean
  }
}

/** A storage engine: serial log + store. Implemented by `native.ts` and `ts/engine.ts`. */
export interface Core {
  readonly engine: EngineName
  /**
   * Append one `COMMIT` payload. Resolves with the record's LSN (the commit id) once the record
   * is acknowledged per the durability mode AND its writes are visible to `get`/`scan`; rejects
   * with a `KestrelError` (`KESTREL_IO`, `KESTREL_DISK_FULL`, `KESTREL_CLOSED`, …) otherwise.
   * After any log I/O failure every later commit rejects with `KESTREL_IO` until reopened.
   * `check` (shared directories): run just before the record is written if commits of other
   * processes arrived after the caller validated; an error it returns rejects the commit unwritten.
   */
  commit(payload: Uint8Array, check?: CommitCheck): Promise<bigint>
  /**
   * The value bytes of a key at `snapshot` (a commit id), or `undefined`. The bytes are valid
   * only until the next call on this core (the native engine reuses one read buffer): decode
   * them at once.
   */
  get(collection: string, key: Uint8Array, snapshot: number): Uint8Array | undefined
  /** Entries visible at `snapshot` in key order within the bounds, as `[key, value]` pairs. */
  scan(collection: string, options: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]>
  /**
   * Index lookup at `snapshot`: the records of `collection` whose visible version holds an index
   * key of index `index` that lies within `options` — bounds on the index-tree entry keys
   * (docs/FORMAT.md "Index trees") — as `[primaryKey, value]` pairs in entry order (index key,
   * then primary key; reversed with `reverse`), at most `limit` of them.
   */
  find(collection: string, index: string, options: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]>
  /**
   * Every collection that may hold records at a readable snapshot — those with versions in
   * memory and those the published checkpoint's catalog lists (not index trees), engine-internal
   * ones (names starting with 0x01) included — in bytewise UTF-8 name order, each once. A
   * superset: scan a collection to see what it holds at a snapshot.
   */
  collections(): string[]
  /** Chains written, loaded or read from now on belong to age group `group` (never decreases). */
  setAgeGroup(group: number): void
  /**
   * One slice of a scavenge pass, continuing where the last slice stopped: prune every visited
   * chain below the horizon (with index garbage collection), drop lone tombstones already
   * checkpointed, retire lone checkpointed chains of age group ≤ `retireAgeMax` while the record
   * memory is above `targetBytes`.
   */
  scavenge(options: CoreScavengeOptions): CoreScavengeStep
  /**
   * Versions that no snapshot ≥ `horizon` and no `pinned` snapshot can see may be pruned (the
   * horizon never decreases; `pinned` — the snapshots below `horizon` still open, ascending —
   * replaces the previous list, each keeping the one version it sees). `sweep` prunes every key
   * now instead of as keys are written.
   */
  setHorizon(horizon: number, sweep: boolean, pinned?: readonly number[]): void
  /** The oldest snapshot still fully readable. */
  horizon(): number
  /** LSN of the last visible commit (0 for an empty database). */
  lastCommitId(): bigint
  stats(): CoreStats
  /**
   * Write a checkpoint of every commit visible now (waits while the flusher is suspended);
   * resolves once it is published. Sharing: it is written on top of the newest checkpoint on
   * disk (adopted first, see adoptCheckpoint; rejects with `KESTREL_BEHIND` when that one covers
   * commits this engine has not applied yet — catch up and retry).
   */
  checkpoint(options?: CoreCheckpointOptions): Promise<void>
  /** The checkpoint this engine reads retired records from. */
  checkpointRef(): CheckpointRef
  /**
   * Sharing: switch to the newest checkpoint on disk when it is newer than this engine's and
   * covers no commit it has not applied (≤ lastCommitId): reads of retired records go to it,
   * changes it covers stop being dirty, and the page cache is emptied (another participant may
   * have rewritten freed pages). False when nothing changed (none newer, too new, or a
   * checkpoint is being written).
   */
  adoptCheckpoint(): boolean
  /**
   * While held, the log writer starts no batch: commits submitted meanwhile go out as one write
   * and one fdatasync. Release it in the same synchronous step.
   */
  holdWriter(hold: boolean): void
  /**
   * Sharing: this thread took the directory's write lock, whose listening socket is `fd`. The
   * engine may keep it taken (a duplicate of the socket) until `letGoWriteLock` — or, if the
   * thread ends first, until the commits it queued are written — so that none of them lands
   * after another process took the lock.
   */
  keepWriteLock(fd: number): void
  /** Sharing: this thread lets go of the write lock; call it before closing the socket. */
  letGoWriteLock(): void
  /**
   * Sharing: this engine is now the directory's only user (the caller holds every lock and has
   * caught up), so `close()` seals the log and writes the final checkpoint as without sharing.
   */
  leaveSharing(): void
  /**
   * Where the log ends after the last acknowledged commit. Meaningful only while no commit is
   * queued or being written.
   */
  logTail(): LogTail
  /**
   * Sharing: apply the records other participants appended, from this engine's log end up to
   * `tail` (they are durable: visible at once), and continue writing at `tail`. With `adopt`,
   * also take the whole frames past `tail` that a dead writer left (as crash recovery would:
   * up to the last whole BATCH_END), make them durable (fdatasync) and apply them, and cut the
   * rest off. Returns the payloads applied, in LSN order (the first has LSN lastCommitId()+1 as
   * it was before the call). Only while no commit of this engine is queued or being written.
   */
  catchUp(tail: LogTail, adopt: boolean): Uint8Array[]
  /**
   * Suspend the flusher (reference-counted): later batches are deferred in order and no page is
   * written. Resolves once no checkpoint is being written, so the page file is stable.
   */
  suspendFlusher(): Promise<void>
  /** Undo one suspendFlusher; the last applies the deferred batches in commit order first. */
  resumeFlusher(): void
  /** What a backup must copy now (only while suspended). */
  backupPlan(): BackupPlan
  /** The database directory. */
  readonly dir: string
  /** Test-only: the next checkpoint crashes at `fault`. */
  setPageFault(fault: PageFault): void
  /** Wait for queued commits, sync, write a final checkpoint, and release the files. Idempotent. */
  close(): Promise<void>
  /**
   * Test-only (needs the fault layer): hold every batch fdatasync until released, so that
   * commits stay written but not durable — and therefore not visible.
   */
  holdSyncs(hold: boolean): void
  /**
   * Test-only: simulate a machine crash. Everything not yet fdatasync'd is lost, except that the
   * first `tearBytes` bytes of the last unsynced write survive (a torn write). Pending commits
   * reject with `KESTREL_CLOSED`. The files are released; reopen to recover.
   */
  crash(tearBytes?: number): Promise<void>
}
