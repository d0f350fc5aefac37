/**
 * The scavenger's policy (the mechanism — prune, index garbage collection, retire — lives in the
 * engines: `Core.scavenge`). It keeps the record memory within the `cacheBytes` budget however
 * long the process runs:
 * - **age groups**: a new group opens every `budget / ageGroups` bytes of committed data; every
 *   chain remembers the group it was last written, loaded or read in (an LRU clock in coarse steps);
 * - **triggers**: allocation volume (one check per age group) and a timer;
 * - **a cycle**: one pass over every chain in slices (pruning what no snapshot can see and taking a
 *   survey of the retirable bytes per age group), then — over the threshold — a second pass that
 *   retires the oldest age groups until the record memory is down to the floor. Records must be in
 *   a checkpoint to be retired, so a cycle that finds too little retirable asks for one first.
 * Slices yield to the event loop between them, so a cycle never holds commits back for long.
 */
import { setImmediate as yieldTurn } from 'node:timers/promises'
import type { Core } from '../core/types.js'

/** The scavenger's settings. */
export interface ScavengerOptions {
  /** The record-memory budget (the database's `cacheBytes`). */
  budgetBytes: number
  /** Retire when the record memory is above this share of the budget (percent). */
  thresholdPercent: number
  /** … down to this share (percent). */
  floorPercent: number
  /** Age groups per budget: a new one opens every budget/ageGroups bytes of committed data. */
  ageGroups: number
  /** Check for work this often (ms); 0 disables the timer. */
  intervalMs: number
  /** Chains per slice (one engine call). */
  sliceChains: number
}

export const SCAVENGER_DEFAULTS: Omit<ScavengerOptions, 'budgetBytes'> = {
  thresholdPercent: 67,
  floorPercent: 50,
  ageGroups: 16,
  intervalMs: 1000,
  sliceChains: 4096,
}

/** A pass over every chain visits them in slices; bound the slices of one pass for safety. */
const SLICES_PER_PASS_MAX = 1 << 20
/** Prune on the timer at most this often when the memory is under the threshold. */
const IDLE_PRUNE_EVERY_MS = 10_000

/** What `db.stats().scavenger` shows. */
export interface ScavengerStats {
  /** Cycles run since open. */
  cycles: number
  /** The current age group. */
  ageGroup: number
  /** Bytes of committed data per age group. */
  ageGroupBytes: number
  /** Retiring starts above this record memory … */
  thresholdBytes: number
  /** … and stops at this one. */
  floorBytes: number
  /** The survey of the last cycle: retirable bytes per age group, oldest first. */
  ageGroups: Array<{ ageGroup: number; bytes: number }>
  /** Totals since open. */
  prunedVersions: number
  indexEntriesRemoved: number
  retired: number
  /** Checkpoints a cycle asked for because too little was retirable. */
  checkpointsRequested: number
  /** Duration of the last cycle, in ms (with the turns it yielded). */
  lastCycleMs: number
  /** Is a cycle running now? */
  running: boolean
}

export class Scavenger {
  private ageGroup = 0
  /** Committed bytes since the current age group opened. */
  private groupFill = 0
  private running: Promise<void> | undefined
  private timer: NodeJS.Timeout | undefined
  private stopped = false
  private lastCycleAt = 0
  private lastHorizon = -1
  /** Record memory at the last measurement, and committed bytes since (an estimate in between). */
  private measuredBytes = 0
  private sinceMeasured = 0
  /** The age group in which a cycle last failed to get under the budget (commits stop waiting until the next). */
  private reliefFailedAt = -1
  private readonly s: ScavengerStats

  constructor(
    private readonly core: Core,
    private readonly o: ScavengerOptions,
    private readonly moveHorizon: () => void,
  ) {
    this.s = {
      cycles: 0,
      ageGroup: 0,
      ageGroupBytes: this.groupBytes,
      thresholdBytes: this.thresholdBytes,
      floorBytes: this.floorBytes,
      ageGroups: [],
      prunedVersions: 0,
      indexEntriesRemoved: 0,
      retired: 0,
      checkpointsRequested: 0,
      lastCycleMs: 0,
      running: false,
    }
    if (o.intervalMs > 0) {
      this.timer = setInterval(() => this.tick(), o.intervalMs)
      this.timer.unref()
    }
  }

  private get groupBytes(): number {
    return Math.max(1, Math.floor(this.o.budgetBytes / this.o.ageGroups))
  }

  private get thresholdBytes(): number {
    return Math.floor((this.o.budgetBytes * this.o.thresholdPercent) / 100)
  }

  private get floorBytes(): number {
    return Math.floor((this.o.budgetBytes * this.o.floorPercent) / 100)
  }

  /** A commit of `bytes` was published: advance the age groups; check the memory once per group. */
  noteCommit(bytes: number): void {
    if (this.stopped) return
    this.groupFill += bytes
    this.sinceMeasured += bytes
    if (this.groupFill < this.groupBytes) return
    this.groupFill = 0
    this.ageGroup++
    this.s.ageGroup = this.ageGroup
    try {
      this.core.setAgeGroup(this.ageGroup)
      if (this.measure() > this.thresholdBytes) void this.run().catch(() => undefined)
    } catch {
      // The engine closed meanwhile.
    }
  }

  private measure(): number {
    this.measuredBytes = this.core.stats().recordBytes
    this.sinceMeasured = 0
    return this.measuredBytes
  }

  /**
   * Back-pressure: under the budget, undefined (go ahead). Over it, a promise that settles when a
   * cycle has run, so writers cannot outrun the scavenger. When a cycle cannot get under the
   * budget (e.g. old readers pin more than it), commits stop waiting until the next age group.
   */
  admission(): Promise<void> | undefined {
    if (this.stopped || this.measuredBytes + this.sinceMeasured <= this.o.budgetBytes || this.reliefFailedAt === this.ageGroup) return undefined
    return this.run().then(
      () => {
        if (this.measuredBytes > this.o.budgetBytes) this.reliefFailedAt = this.ageGroup
      },
      () => undefined,
    )
  }

  private tick(): void {
    if (this.stopped || this.running) return
    try {
      const over = this.core.stats().recordBytes > this.thresholdBytes
      const horizon = this.core.horizon()
      const idlePrune = horizon !== this.lastHorizon && Date.now() - this.lastCycleAt >= IDLE_PRUNE_EVERY_MS
      if (over || idlePrune) void this.run().catch(() => undefined)
    } catch {
      // The engine closed meanwhile.
    }
  }

  /** Run a cycle now (or join the one running). */
  run(): Promise<void> {
    this.running ??= this.cycle().finally(() => {
      this.running = undefined
      this.s.running = false
    })
    return this.running
  }

  /** One pass over every chain; returns the survey (age group → retirable bytes). */
  private async pass(retireAgeMax: number, targetBytes: number): Promise<Map<number, number>> {
    const survey = new Map<number, number>()
    for (let slice = 0; slice < SLICES_PER_PASS_MAX; slice++) {
      if (this.stopped) break
      const step = this.core.scavenge({ retireAgeMax, targetBytes, visitMax: this.o.sliceChains })
      this.s.prunedVersions += step.prunedVersions
      this.s.indexEntriesRemoved += step.indexEntriesRemoved
      this.s.retired += step.retired
      for (let i = 0; i + 1 < step.survey.length; i += 2) survey.set(step.survey[i]!, (survey.get(step.survey[i]!) ?? 0) + step.survey[i + 1]!)
      if (step.done) break
      await yieldTurn()
    }
    return survey
  }

  private async cycle(): Promise<void> {
    this.s.running = true
    const started = Date.now()
    // The newest horizon first: what the pass prunes depends on it.
    this.moveHorizon()
    this.lastHorizon = this.core.horizon()
    let survey = await this.pass(-1, Number.MAX_SAFE_INTEGER)
    let bytes = this.core.stats().recordBytes
    if (bytes > this.thresholdBytes && !this.stopped) {
      const need = bytes - this.floorBytes
      let retirable = 0
      for (const b of survey.values()) retirable += b
      if (retirable < need) {
        // Only checkpointed records can leave memory: make the rest checkpointed, then look again.
        this.s.checkpointsRequested++
        await this.core.checkpoint()
        survey = await this.pass(-1, Number.MAX_SAFE_INTEGER)
        bytes = this.core.stats().recordBytes
      }
      const ages = [...survey.keys()].sort((a, b) => a - b)
      let cutoff = -1
      let freed = 0
      for (const age of ages) {
        cutoff = age
        freed += survey.get(age)!
        if (freed >= bytes - this.floorBytes) break
      }
      if (cutoff >= 0 && !this.stopped) await this.pass(cutoff, this.floorBytes)
    }
    if (!this.stopped) this.measure()
    this.s.ageGroups = [...survey.entries()].sort((a, b) => a[0] - b[0]).map(([ageGroup, b]) => ({ ageGroup, bytes: b }))
    this.s.cycles++
    this.lastCycleAt = Date.now()
    this.s.lastCycleMs = this.lastCycleAt - started
  }

  stats(): ScavengerStats {
    return { ...this.s, ageGroups: this.s.ageGroups.map((g) => ({ ...g })) }
  }

  /** Stop the timer and any cycle at its next slice. */
  stop(): void {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
  }
}
