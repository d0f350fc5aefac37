//! Behind the log writer: the **gopher** and the **flusher**.
//!
//! ```text
//! writer ──push(batch)──▶ queue ──gopher──▶ dirty set ──flusher──▶ checkpoint (pages.kdb)
//!                           │                  ▲                     then: trim log, retire
//!                           └──(suspended)──▶ deferred ──resume──────┘
//! ```
//!
//! - A **batch** is what one group-commit batch left as the newest version of each key it wrote,
//!   in commit order. The writer pushes it after the batch is durable and visible.
//! - The **queue** is bounded in bytes: a full queue makes the writer wait before it acknowledges
//!   the batch (committers wait); it never drops a batch.
//! - The **gopher** applies batches to the dirty set in commit order. While the flusher is
//!   suspended it moves them, still in order, to **deferred** instead; past `deferred_bytes_max`
//!   it stops taking batches, so the queue fills and committers are throttled.
//! - After the last `resume` the gopher applies every deferred batch, in commit order, before it
//!   takes anything newer, one batch per hold of the lock (the writer keeps queueing meanwhile);
//!   the flusher does not run until they are all applied.
//! - The **flusher** turns the dirty set into a copy-on-write checkpoint at the last applied LSN,
//!   by size, by age or on request, never while suspended; `suspend` reports whether a checkpoint
//!   is still being written so that the caller (backup, verify) waits it out before reading.
//!
//! Invariants: no batch is ever dropped, reordered or checkpointed while suspended. Suspension
//! is checked by the only two threads that move batches; every wait is for room, never a timeout
//! that gives up; the only thread that applies batches takes the deferred ones first; and nothing
//! can interrupt a resume.

use std::collections::btree_map::Entry as MapEntry;
use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::{Options, Shared};
use crate::error::{Code, Error, Result};
use crate::format::log::parse_segment_name;
use crate::keybuf::KeyBuf;
use crate::pages::{CollectionChanges, PageFault};
use crate::store::{Value, Written};
use crate::vfs::sync_dir;

/// A flusher that failed waits this long before trying again on its own.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// The longest the flusher sleeps between looks at its age threshold.
const FLUSHER_TICK: Duration = Duration::from_millis(200);

/// What one group-commit batch wrote, in commit order.
#[derive(Debug)]
pub struct Batch {
    /// LSN of the batch's last commit.
    pub last_lsn: u64,
    pub writes: Vec<Written>,
    /// Invariant: the sum of `writes[i].bytes()`.
    pub bytes: usize,
}

impl Batch {
    pub fn new(last_lsn: u64, writes: Vec<Written>) -> Batch {
        let bytes = writes.iter().map(Written::bytes).sum();
        Batch { last_lsn, writes, bytes }
    }
}

/// Counters of the flow, for `stats()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub queued_batches: u64,
    pub queued_bytes: u64,
    pub deferred_batches: u64,
    pub deferred_bytes: u64,
    pub dirty_keys: u64,
    pub dirty_bytes: u64,
    /// The last LSN the gopher applied to the dirty set.
    pub applied_lsn: u64,
    pub suspended: u64,
    pub checkpoint_in_flight: bool,
    pub checkpoints: u64,
    pub checkpoint_failures: u64,
    /// Times the writer waited for room in the queue (committers held back).
    pub writer_waits: u64,
    /// Batches that were deferred while suspended (since open).
    pub batches_deferred: u64,
    pub segments_deleted: u64,
    pub pages_written: u64,
    pub last_checkpoint_ms: u64,
}

/// How a requested checkpoint treats pages and the log (`Engine::checkpoint_with`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// May the published free list be reused? False while another participant sharing the
    /// directory may still read an older checkpoint.
    pub reuse_free_pages: bool,
    /// Delete only log segments whose every record is below this LSN (None: no extra bound).
    pub trim_below_lsn: Option<u64>,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions { reuse_free_pages: true, trim_below_lsn: None }
    }
}

impl CheckpointOptions {
    /// Both requests served by one checkpoint: the stricter of each.
    fn merge(self, other: CheckpointOptions) -> CheckpointOptions {
        let trim_below_lsn = match (self.trim_below_lsn, other.trim_below_lsn) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        CheckpointOptions { reuse_free_pages: self.reuse_free_pages && other.reuse_free_pages, trim_below_lsn }
    }
}

/// Collection → key → (commit id, value) of the newest version written since the checkpoint. The
/// names and values are the store's own (shared, not copied).
type DirtyMap = BTreeMap<Arc<str>, BTreeMap<KeyBuf, (u64, Option<Value>)>>;

/// A checkpoint that freed at least this many bytes of changes gives freed memory back to the
/// operating system ([`release_freed_memory`]).
const RELEASE_AFTER_BYTES: usize = 1 << 20;

/// The state shared by writer, gopher, flusher and callers, behind `Shared::flow`.
pub struct Flow {
    queue: VecDeque<Batch>,
    /// Invariant: the sum of `queue[i].bytes`.
    queue_bytes: usize,
    queue_bytes_max: usize,
    deferred: VecDeque<Batch>,
    /// Invariant: the sum of `deferred[i].bytes`.
    deferred_bytes: usize,
    deferred_bytes_max: usize,
    /// Batches inside the retention window (the last `retain_commits` commits): a checkpoint
    /// must not cover them, or reopen could no longer read their older versions (the log is
    /// trimmed up to the checkpoint). Released to the dirty set, in order, as newer ones arrive.
    held: VecDeque<Batch>,
    retain_commits: u64,
    /// Invariant: the highest LSN admitted (held or applied) ≥ applied_lsn.
    seen_lsn: u64,
    /// Reference count of suspenders (backup, verify).
    suspended: u64,
    in_flight: bool,
    /// Newest version of every key written after `checkpointed_lsn`, up to `applied_lsn`.
    dirty: DirtyMap,
    /// Invariant: the sum of the dirty entries' sizes.
    dirty_bytes: usize,
    dirty_keys: usize,
    /// When the oldest change in `dirty` arrived.
    dirty_since: Option<Instant>,
    /// Invariant: applied_lsn ≥ checkpointed_lsn; batches apply in increasing LSN order.
    applied_lsn: u64,
    checkpointed_lsn: u64,
    /// Tickets: `requested` handed out, `completed` served by a published checkpoint.
    requested: u64,
    request_target_lsn: u64,
    /// What the requests not yet taken by a checkpoint ask for.
    request_options: CheckpointOptions,
    completed: u64,
    /// The last failure and the highest ticket it failed.
    failure: Option<(u64, Error)>,
    retry_at: Option<Instant>,
    /// Record memory as the writer last saw it.
    record_bytes: u64,
    /// Some(checkpoint first?) once the engine stops.
    stopping: Option<bool>,
    gopher_done: bool,
    final_error: Option<Error>,
    /// Test-only: where the next checkpoint crashes.
    pub fault: PageFault,
    /// Checkpoints by size, memory and age; false when sharing the directory (only on request).
    auto: bool,
    stats: FlowStats,
}

impl Flow {
    pub fn new(checkpointed_lsn: u64, retain_commits: u64, auto: bool) -> Flow {
        Flow {
            held: VecDeque::new(),
            retain_commits,
            seen_lsn: checkpointed_lsn,
            queue: VecDeque::new(),
            queue_bytes: 0,
            queue_bytes_max: usize::MAX,
            deferred: VecDeque::new(),
            deferred_bytes: 0,
            deferred_bytes_max: usize::MAX,
            suspended: 0,
            in_flight: false,
            dirty: BTreeMap::new(),
            dirty_bytes: 0,
            dirty_keys: 0,
            dirty_since: None,
            applied_lsn: checkpointed_lsn,
            checkpointed_lsn,
            requested: 0,
            request_target_lsn: 0,
            request_options: CheckpointOptions::default(),
            completed: 0,
            failure: None,
            retry_at: None,
            record_bytes: 0,
            stopping: None,
            gopher_done: false,
            final_error: None,
            fault: PageFault::None,
            auto,
            stats: FlowStats::default(),
        }
    }

    /// Take a batch in commit order (the gopher's step; also replay at open): to the dirty set,
    /// or held while it is inside the retention window.
    pub fn admit(&mut self, batch: Batch) {
        debug_assert!(batch.last_lsn >= self.seen_lsn || batch.writes.is_empty(), "batches arrive in commit order");
        self.seen_lsn = self.seen_lsn.max(batch.last_lsn);
        if self.retain_commits == 0 && self.held.is_empty() {
            self.apply_now(batch);
            return;
        }
        self.held.push_back(batch);
        // Bounded by the held queue.
        while let Some(front) = self.held.front() {
            if front.last_lsn.saturating_add(self.retain_commits) > self.seen_lsn {
                break;
            }
            let b = self.held.pop_front().expect("front exists");
            self.apply_now(b);
        }
    }

    /// Apply a batch to the dirty set.
    fn apply_now(&mut self, batch: Batch) {
        // An adopted checkpoint (sharing) may already cover a batch still on its way here.
        if batch.last_lsn <= self.checkpointed_lsn {
            return;
        }
        debug_assert!(batch.last_lsn > self.applied_lsn || batch.writes.is_empty(), "batches apply in commit order");
        for w in batch.writes {
            if w.commit_id <= self.checkpointed_lsn {
                continue;
            }
            let size = w.bytes();
            let map = match self.dirty.get_mut(&*w.collection) {
                Some(m) => m,
                None => self.dirty.entry(w.collection.clone()).or_default(),
            };
            let name_and_key_len = w.collection.len() + w.key.len();
            match map.insert(w.key, (w.commit_id, w.value)) {
                Some((_, old)) => {
                    let old_size = name_and_key_len + old.map_or(0, |v| v.len()) + crate::store::VERSION_OVERHEAD_BYTES;
                    self.dirty_bytes = self.dirty_bytes + size - old_size;
                }
                None => {
                    self.dirty_bytes += size;
                    self.dirty_keys += 1;
                }
            }
        }
        if self.dirty_since.is_none() && self.dirty_keys > 0 {
            self.dirty_since = Some(Instant::now());
        }
        self.applied_lsn = self.applied_lsn.max(batch.last_lsn);
    }

    /// Sharing: another participant's checkpoint at `lsn` (≤ what this engine applied) is now
    /// the published one. Changes it covers stop being dirty.
    pub fn adopt(&mut self, lsn: u64) {
        debug_assert!(!self.in_flight, "no checkpoint of ours is being written");
        if lsn <= self.checkpointed_lsn {
            return;
        }
        self.checkpointed_lsn = lsn;
        self.applied_lsn = self.applied_lsn.max(lsn);
        let mut bytes = 0usize;
        let mut keys = 0usize;
        self.dirty.retain(|name, map| {
            map.retain(|k, (cid, v)| {
                let keep = *cid > lsn;
                if keep {
                    bytes += name.len() + k.len() + v.as_ref().map_or(0, |v| v.len()) + crate::store::VERSION_OVERHEAD_BYTES;
                    keys += 1;
                }
                keep
            });
            !map.is_empty()
        });
        self.dirty_bytes = bytes;
        self.dirty_keys = keys;
        if keys == 0 {
            self.dirty_since = None;
        }
    }

    pub fn suspend(&mut self) {
        self.suspended += 1;
    }

    pub fn suspended(&self) -> bool {
        self.suspended > 0
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Hold off the flusher (true) while the published checkpoint is switched (sharing).
    pub(crate) fn set_in_flight(&mut self, v: bool) {
        debug_assert_ne!(self.in_flight, v);
        self.in_flight = v;
    }

    /// Undo one suspend. After the last one the gopher applies the deferred batches, in commit
    /// order, before anything newer — one batch per hold of the lock, so that the writer can
    /// keep queueing meanwhile — and the flusher waits until they are all applied.
    pub fn resume(&mut self) -> Result<()> {
        if self.suspended == 0 {
            return Err(Error::new(Code::InvalidArgument, "resume without a matching suspend"));
        }
        self.suspended -= 1;
        Ok(())
    }

    fn drain_deferred(&mut self) {
        // Bounded by the deferred queue; nothing is pushed to it while we hold the lock.
        while let Some(b) = self.deferred.pop_front() {
            self.deferred_bytes -= b.bytes;
            self.admit(b);
        }
        debug_assert_eq!(self.deferred_bytes, 0);
    }

    /// A checkpoint of everything visible up to `target_lsn`: returns its ticket.
    pub fn request(&mut self, target_lsn: u64, options: CheckpointOptions) -> Result<u64> {
        if self.stopping.is_some() {
            return Err(Error::closed());
        }
        self.requested += 1;
        self.request_target_lsn = self.request_target_lsn.max(target_lsn);
        self.request_options = self.request_options.merge(options);
        Ok(self.requested)
    }

    pub fn status(&self, ticket: u64) -> Result<bool> {
        if self.completed >= ticket {
            return Ok(true);
        }
        if let Some((failed_upto, e)) = &self.failure {
            if ticket <= *failed_upto {
                return Err(e.clone());
            }
        }
        if self.gopher_done && !self.in_flight && self.stopping.is_some() {
            return Err(Error::closed());
        }
        Ok(false)
    }

    pub fn stop(&mut self, checkpoint: bool) {
        if self.stopping.is_none() {
            self.stopping = Some(checkpoint);
        }
    }

    pub fn final_error(&mut self) -> Result<()> {
        match self.final_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn stats(&self) -> FlowStats {
        FlowStats {
            queued_batches: self.queue.len() as u64,
            queued_bytes: self.queue_bytes as u64,
            deferred_batches: self.deferred.len() as u64,
            deferred_bytes: self.deferred_bytes as u64,
            dirty_keys: self.dirty_keys as u64,
            dirty_bytes: self.dirty_bytes as u64,
            applied_lsn: self.applied_lsn,
            suspended: self.suspended,
            checkpoint_in_flight: self.in_flight,
            ..self.stats
        }
    }

    fn should_checkpoint(&self, o: &Options, now: Instant) -> bool {
        // Deferred batches are older than anything in the dirty set: they go in first.
        if self.suspended > 0 || self.in_flight || !self.deferred.is_empty() {
            return false;
        }
        let failed_upto = self.failure.as_ref().map_or(0, |f| f.0);
        // Everything up to the target has been taken (what is held inside the retention window
        // cannot be checkpointed, so it does not count against the request).
        let requested = self.requested > self.completed.max(failed_upto) && self.seen_lsn >= self.request_target_lsn;
        if requested {
            return true;
        }
        if !self.auto || self.dirty_keys == 0 || self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        let by_size = self.dirty_bytes as u64 >= o.checkpoint_bytes;
        // Over the memory budget only checkpointed records can be retired: checkpoint sooner.
        let by_memory = self.record_bytes > o.cache_bytes && self.dirty_bytes as u64 >= (o.checkpoint_bytes / 8).max(1);
        let by_age = o.checkpoint_interval_ms > 0 && self.dirty_since.is_some_and(|t| now.duration_since(t) >= Duration::from_millis(o.checkpoint_interval_ms));
        by_size || by_memory || by_age
    }
}

/// The writer's hand-off: queue `batch`, waiting while the queue is over its bound.
pub(crate) fn push(shared: &Shared, batch: Batch, record_bytes: u64) {
    let mut flow = shared.flow.lock().expect("flow lock");
    flow.record_bytes = record_bytes;
    let mut waited = false;
    // Bounded: each wake-up follows the gopher taking a batch, a resume, or a stop.
    while !flow.queue.is_empty() && flow.queue_bytes + batch.bytes > flow.queue_bytes_max && flow.stopping.is_none() {
        waited = true;
        flow = shared.flow_changed.wait(flow).expect("flow lock");
    }
    if waited {
        flow.stats.writer_waits += 1;
    }
    flow.queue_bytes += batch.bytes;
    flow.queue.push_back(batch);
    drop(flow);
    shared.flow_changed.notify_all();
}

/// Catching up (sharing): queue `batch` without waiting for room — the caller's thread may be
/// the one that would resume a suspended flusher. Bounded by what other participants wrote.
pub(crate) fn push_now(shared: &Shared, batch: Batch, record_bytes: u64) {
    let mut flow = shared.flow.lock().expect("flow lock");
    flow.record_bytes = record_bytes;
    flow.queue_bytes += batch.bytes;
    flow.queue.push_back(batch);
    drop(flow);
    shared.flow_changed.notify_all();
}

/// Start the gopher and the flusher.
pub(crate) fn start(shared: Arc<Shared>, options: &Options, log_dir: PathBuf) -> Result<Vec<JoinHandle<()>>> {
    {
        let mut flow = shared.flow.lock().expect("flow lock");
        flow.queue_bytes_max = options.flush_queue_bytes as usize;
        flow.deferred_bytes_max = options.deferred_bytes_max as usize;
    }
    let g = shared.clone();
    let gopher =
        std::thread::Builder::new().name("kestrel-gopher".into()).spawn(move || gopher(&g)).map_err(|e| Error::io("starting the gopher thread", &e))?;
    let f = shared;
    let o = options.clone();
    let flusher = std::thread::Builder::new()
        .name("kestrel-flusher".into())
        .spawn(move || flusher(&f, &o, &log_dir))
        .map_err(|e| Error::io("starting the flusher thread", &e))?;
    Ok(vec![gopher, flusher])
}

fn gopher(shared: &Shared) {
    let mut flow = shared.flow.lock().expect("flow lock");
    // Bounded by the queues: every pass moves a batch, or waits for one, or ends.
    loop {
        if (flow.suspended == 0 || flow.stopping.is_some()) && !flow.deferred.is_empty() {
            // Resumed: the deferred batches first, in order, one per hold of the lock.
            let b = flow.deferred.pop_front().expect("not empty");
            flow.deferred_bytes -= b.bytes;
            flow.admit(b);
            drop(flow);
            shared.flow_changed.notify_all();
            flow = shared.flow.lock().expect("flow lock");
            continue;
        }
        let Some(front) = flow.queue.front() else {
            if flow.stopping.is_some() {
                break;
            }
            flow = shared.flow_changed.wait(flow).expect("flow lock");
            continue;
        };
        let bytes = front.bytes;
        if flow.suspended > 0 && flow.stopping.is_none() {
            // Deferred past the cap: leave it queued; the queue fills and committers wait.
            if !flow.deferred.is_empty() && flow.deferred_bytes + bytes > flow.deferred_bytes_max {
                flow = shared.flow_changed.wait(flow).expect("flow lock");
                continue;
            }
            let b = flow.queue.pop_front().expect("front exists");
            flow.queue_bytes -= bytes;
            flow.deferred_bytes += bytes;
            flow.deferred.push_back(b);
            flow.stats.batches_deferred += 1;
        } else {
            debug_assert!(flow.deferred.is_empty(), "deferred batches go before newer ones");
            let b = flow.queue.pop_front().expect("front exists");
            flow.queue_bytes -= bytes;
            flow.admit(b);
        }
        shared.flow_changed.notify_all();
    }
    flow.drain_deferred();
    flow.gopher_done = true;
    drop(flow);
    shared.flow_changed.notify_all();
}

fn flusher(shared: &Shared, options: &Options, log_dir: &std::path::Path) {
    // Bounded: every pass writes a checkpoint, waits for a reason to, or ends.
    loop {
        let mut flow = shared.flow.lock().expect("flow lock");
        let final_pass = loop {
            if let Some(checkpoint) = flow.stopping {
                if flow.gopher_done {
                    break checkpoint && (flow.dirty_keys > 0 || flow.applied_lsn > flow.checkpointed_lsn);
                }
            } else if flow.should_checkpoint(options, Instant::now()) {
                break true;
            }
            flow = shared.flow_changed.wait_timeout(flow, FLUSHER_TICK).expect("flow lock").0;
        };
        if flow.stopping.is_some() && !final_pass {
            return;
        }
        // Take the dirty set: the gopher starts a new one while this checkpoint is written.
        let mut dirty = std::mem::take(&mut flow.dirty);
        let dirty_bytes = std::mem::take(&mut flow.dirty_bytes);
        let dirty_keys = std::mem::take(&mut flow.dirty_keys);
        let dirty_since = flow.dirty_since.take();
        let lsn = flow.applied_lsn;
        let tickets = flow.requested;
        let fault = std::mem::take(&mut flow.fault);
        let requested = std::mem::take(&mut flow.request_options);
        flow.in_flight = true;
        drop(flow);
        shared.flow_changed.notify_all();

        let started = Instant::now();
        let result = if lsn == shared.pages.meta().checkpoint_lsn && dirty.is_empty() {
            Ok(None)
        } else {
            // The values are shared with the dirty set, not copied.
            let changes: Vec<CollectionChanges<Value>> = dirty
                .iter()
                .map(|(name, keys)| CollectionChanges {
                    name: name.to_string(),
                    changes: keys.iter().map(|(k, (cid, v))| (k.to_vec(), v.as_ref().map(|v| (*cid, v.clone())))).collect(),
                })
                .collect();
            shared.pages.checkpoint_with(lsn, &changes, fault, requested.reuse_free_pages).map(Some)
        };
        let mut deleted = 0u64;
        if let Ok(Some(_)) = &result {
            let mut store = shared.store.write().expect("store lock");
            store.set_checkpointed(lsn);
            store.retire(options.cache_bytes.saturating_mul(3) as usize / 4);
            drop(store);
            let active = shared.durable_at.lock().expect("durable lock").0.clone();
            let bound = match requested.trim_below_lsn {
                Some(below) => below.checked_sub(1).map(|b| b.min(lsn)),
                None => Some(lsn),
            };
            deleted = bound.map_or(0, |b| trim_log(log_dir, b, &active));
            shared.counters_segments_sub(deleted);
        }
        let mut flow = shared.flow.lock().expect("flow lock");
        flow.in_flight = false;
        match result {
            Ok(report) => {
                flow.checkpointed_lsn = lsn;
                flow.completed = flow.completed.max(tickets);
                flow.failure = None;
                flow.retry_at = None;
                if let Some(r) = report {
                    flow.stats.checkpoints += 1;
                    flow.stats.pages_written += r.pages_written;
                    flow.stats.segments_deleted += deleted;
                    flow.stats.last_checkpoint_ms = started.elapsed().as_millis() as u64;
                }
            }
            Err(e) => {
                // The next try serves these requests too.
                flow.request_options = flow.request_options.merge(requested);
                // Nothing is lost: the changes go back under any newer ones, for the next try.
                for (name, keys) in std::mem::take(&mut dirty) {
                    let map = flow.dirty.entry(name.clone()).or_default();
                    let mut added = 0usize;
                    let mut added_keys = 0usize;
                    for (k, v) in keys {
                        // A key written again since is already there, newer: it stays.
                        if let MapEntry::Vacant(slot) = map.entry(k) {
                            added += name.len() + slot.key().len() + v.1.as_ref().map_or(0, |v| v.len()) + crate::store::VERSION_OVERHEAD_BYTES;
                            added_keys += 1;
                            slot.insert(v);
                        }
                    }
                    flow.dirty_bytes += added;
                    flow.dirty_keys += added_keys;
                }
                let _ = (dirty_bytes, dirty_keys);
                flow.dirty_since = dirty_since.or(flow.dirty_since);
                flow.stats.checkpoint_failures += 1;
                flow.retry_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
                flow.failure = Some((tickets, e.clone()));
                if flow.stopping.is_some() {
                    flow.final_error = Some(Error::new(
                        e.code,
                        format!(
                            "the final checkpoint at close failed ({}); nothing is lost: the log still holds every commit, and the next open replays it",
                            e.message
                        ),
                    ));
                    drop(flow);
                    shared.flow_changed.notify_all();
                    return;
                }
            }
        }
        let done = flow.stopping.is_some();
        drop(flow);
        shared.flow_changed.notify_all();
        if done {
            return;
        }
        // Written (or given back above): the dirty set goes — the last references to the values
        // of versions already pruned — outside the lock, and with it the checkpoint's copies and
        // pages gone, the memory they held goes back to the system.
        drop(dirty);
        if dirty_bytes >= RELEASE_AFTER_BYTES {
            release_freed_memory();
        }
    }
}

/// Give memory freed inside the allocator's heaps back to the operating system. A checkpoint
/// frees the pages it built (all of them are in memory until written: about the size of its
/// changes) and the dirty set it took; glibc keeps such memory in its arenas (the process's RSS
/// stays up by about that much) unless asked to trim them. Takes a few milliseconds per few
/// hundred MB of heap, on the flusher thread; an allocation in an arena being trimmed waits.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim is glibc's own, thread-safe (it locks each arena it trims), and
        // only returns free memory to the system.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Delete the log segments whose records are all at or below `lsn` (never the last one, nor
/// `active`, the one this engine writes to). Returns how many were deleted. Best effort: a
/// segment left behind is skipped at recovery and deleted after the next checkpoint.
fn trim_log(log_dir: &std::path::Path, lsn: u64, active: &str) -> u64 {
    let Ok(entries) = fs::read_dir(log_dir) else { return 0 };
    let mut names: Vec<(u64, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            parse_segment_name(&n).map(|l| (l, n))
        })
        .collect();
    names.sort();
    let mut deleted = 0;
    for i in 0..names.len().saturating_sub(1) {
        if names[i + 1].0 <= lsn + 1 && names[i].1 != active && fs::remove_file(log_dir.join(&names[i].1)).is_ok() {
            deleted += 1;
        }
    }
    if deleted > 0 {
        let _ = sync_dir(log_dir);
    }
    deleted
}

impl Shared {
    fn counters_segments_sub(&self, n: u64) {
        if n > 0 {
            // Saturating: sharing, a segment another participant started may not be counted here.
            let _ = self.counters.segments.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some(s.saturating_sub(n)));
        }
    }
}
