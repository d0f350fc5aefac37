/**
 * A `Core` that wraps this process's engine and speaks a protocol above it — a shared
 * directory's participant (shared/core.ts) or a PostgreSQL replica (postgres/core.ts). Reads and
 * the engine's own upkeep pass straight through; each wrapper overrides what its protocol
 * changes (commits, freshness, checkpoints, close).
 */
import type {
  BackupPlan,
  CheckpointRef,
  CommitCheck,
  Core,
  CoreCheckpointOptions,
  CoreScanOptions,
  CoreScavengeOptions,
  CoreScavengeStep,
  CoreStats,
  EngineName,
  LogTail,
  PageFault,
} from './types.js'

/** A commit queued by a wrapper until its batch is written. */
export interface QueuedCommit {
  payload: Uint8Array
  check: CommitCheck | undefined
  /** The wrapper's count of foreign batches applied when the commit was queued. */
  foreignAt: number
  resolve: (lsn: bigint) => void
  reject: (err: unknown) => void
}

/**
 * The commits of `batch` still valid now that foreign batches up to `foreignBatches` are applied:
 * each whose process has seen foreign commits since it was validated runs its `check` again (the
 * same first-committer-wins and unique rules, against what arrived); a refused one rejects with
 * what its check returned or threw, unwritten.
 */
export function stillValid<P extends QueuedCommit>(batch: readonly P[], foreignBatches: number): P[] {
  const go: P[] = []
  for (const p of batch) {
    if (p.check && p.foreignAt !== foreignBatches) {
      let refused: unknown
      try {
        refused = p.check()
      } catch (err) {
        refused = err
      }
      if (refused) {
        p.reject(refused)
        continue
      }
    }
    go.push(p)
  }
  return go
}

export abstract class WrappedCore implements Core {
  readonly engine: EngineName

  constructor(protected readonly inner: Core) {
    this.engine = inner.engine
  }

  get dir(): string {
    return this.inner.dir
  }

  abstract commit(payload: Uint8Array, check?: CommitCheck): Promise<bigint>
  abstract close(): Promise<void>
  abstract crash(tearBytes?: number): Promise<void>

  lastCommitId(): bigint {
    return this.inner.lastCommitId()
  }

  get(collection: string, key: Uint8Array, snapshot: number): Uint8Array | undefined {
    return this.inner.get(collection, key, snapshot)
  }

  scan(collection: string, options: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    return this.inner.scan(collection, options, snapshot)
  }

  find(collection: string, index: string, options: CoreScanOptions, snapshot: number): Array<[Uint8Array, Uint8Array]> {
    return this.inner.find(collection, index, options, snapshot)
  }

  collections(): string[] {
    return this.inner.collections()
  }

  setAgeGroup(group: number): void {
    this.inner.setAgeGroup(group)
  }

  scavenge(options: CoreScavengeOptions): CoreScavengeStep {
    return this.inner.scavenge(options)
  }

  setHorizon(horizon: number, sweep: boolean, pinned?: readonly number[]): void {
    this.inner.setHorizon(horizon, sweep, pinned)
  }

  horizon(): number {
    return this.inner.horizon()
  }

  stats(): CoreStats {
    return this.inner.stats()
  }

  checkpoint(options?: CoreCheckpointOptions): Promise<void> {
    return this.inner.checkpoint(options)
  }

  checkpointRef(): CheckpointRef {
    return this.inner.checkpointRef()
  }

  adoptCheckpoint(): boolean {
    return this.inner.adoptCheckpoint()
  }

  holdWriter(hold: boolean): void {
    this.inner.holdWriter(hold)
  }

  /** The wrapper itself keeps any cross-process lock its protocol takes. */
  keepWriteLock(_fd: number): void {}

  letGoWriteLock(): void {}

  leaveSharing(): void {
    this.inner.leaveSharing()
  }

  logTail(): LogTail {
    return this.inner.logTail()
  }

  catchUp(tail: LogTail, adopt: boolean): Uint8Array[] {
    return this.inner.catchUp(tail, adopt)
  }

  suspendFlusher(): Promise<void> {
    return this.inner.suspendFlusher()
  }

  resumeFlusher(): void {
    this.inner.resumeFlusher()
  }

  backupPlan(): BackupPlan {
    return this.inner.backupPlan()
  }

  setPageFault(fault: PageFault): void {
    this.inner.setPageFault(fault)
  }

  holdSyncs(hold: boolean): void {
    this.inner.holdSyncs(hold)
  }
}
