//! The engine facade: open (directory, lock, page store, recovery, replay), the commit queue,
//! reads, checkpoint and backup hooks, close and crash.
//!
//! A commit is validated and given the next LSN on the caller's thread, then queued for the
//! group-commit log writer (`log/writer.rs`), which makes each batch durable before it applies it
//! to the store: nothing is visible before it is acknowledged.
//!
//! Behind the writer (see `flush.rs`): the writer hands what each batch wrote to the **gopher**
//! thread through a bounded queue; the gopher applies it, in commit order, to the dirty set (or
//! defers it while the flusher is suspended); the **flusher** thread turns the dirty set into a
//! copy-on-write checkpoint of the page store, then trims the log and retires checkpointed
//! records from memory.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use crate::directory::{ensure_directory, prepare_directory};
use crate::error::{Code, Error, Result};
use crate::flush::{self, Batch, CheckpointOptions, Flow, FlowStats};
use crate::format::log::*;
use crate::format::payload;
use crate::lock::DirLock;
use crate::log::reader::{list_segments, read_past_tail, read_to_tail, FollowedFrame, LogTail};
use crate::log::recovery;
use crate::log::writer::{create_segment, Writer};
use crate::pages::{PageFault, PageStore, PAGE_FILE};
use crate::store::{ScanBounds, ScavengeStep, Store};
use crate::vfs::{sync_dir, FaultOptions, FaultyVfs, LogFile, RealVfs, Vfs};

/// Queued bytes past which `commit` waits for the writer (back-pressure, never a drop).
pub const QUEUE_BYTES_MAX: usize = 256 * 1024 * 1024;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Sync,
    Relaxed,
    None,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub durability: Durability,
    pub segment_bytes_max: u64,
    pub group_bytes_max: usize,
    /// Some = use the fault-injecting file layer (tests).
    pub faults: Option<FaultOptions>,
    /// Versions of the last this-many commits stay readable after open (time travel).
    pub retain_commits: u64,
    /// Record memory (the version store) past which checkpointed records are retired.
    pub cache_bytes: u64,
    /// Make a checkpoint once this many bytes of changes are dirty.
    pub checkpoint_bytes: u64,
    /// Make a checkpoint when changes are older than this (0 = only by size, close, request).
    pub checkpoint_interval_ms: u64,
    /// Bytes the writer may queue for the gopher before committers wait.
    pub flush_queue_bytes: u64,
    /// Bytes of batches deferred while the flusher is suspended before committers are throttled.
    pub deferred_bytes_max: u64,
    /// Some = one of several participants sharing the directory: no directory lock, no
    /// automatic or final checkpoint, no cutting of the log at close.
    pub sharing: Option<Sharing>,
}

/// How an engine shares its directory (see [`Options::sharing`]).
#[derive(Clone, Debug, Default)]
pub struct Sharing {
    /// Other participants are live: replay only up to this published tail (cutting nothing)
    /// and continue writing there. None: recover the whole log as a sole owner does.
    pub tail: Option<LogTail>,
    /// Test-only: an engine of its own even where this process has one open on the directory
    /// (see `threads`), standing in for another process's.
    pub apart: bool,
    /// The writer publishes each durable batch's tail in the `SHARED` log block (`log::publish`).
    /// Of the handles sharing one engine, the first opener's choice holds.
    pub publish: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Sync,
            segment_bytes_max: 64 << 20,
            group_bytes_max: 4 << 20,
            faults: None,
            retain_commits: 0,
            cache_bytes: 256 << 20,
            checkpoint_bytes: 64 << 20,
            checkpoint_interval_ms: 10_000,
            flush_queue_bytes: 64 << 20,
            deferred_bytes_max: 256 << 20,
            sharing: None,
        }
    }
}

/// Called from the writer thread after each batch: `(durable_lsn, None)` once the batch is
/// acknowledged and visible, or `(failed_batch_last_lsn, Some(error))` when it failed: the
/// commits after the last acknowledged one up to that LSN failed with `error`, and every commit
/// queued after them failed because the engine stopped (`KESTREL_IO`).
/// How long a catch-up under the write lock waits for commits a closed handle left in flight.
const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub type Notify = Box<dyn Fn(u64, Option<Error>) + Send + Sync>;

pub(crate) struct Queued {
    pub(crate) lsn: u64,
    /// A payload already validated by `payload::validate`; parsed again by the writer thread so
    /// that the caller's (JavaScript) thread only pays for one copy and one validation pass.
    pub(crate) payload: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Open,
    Failed(Error),
    /// close(): drain the queue, then stop.
    Closing,
    /// crash(): stop now, write nothing more.
    Crashed,
}

/// The commit queue, between `commit` (callers) and the log writer.
pub(crate) struct Queue {
    pub(crate) items: VecDeque<Queued>,
    /// Invariant: the sum of the frame sizes of `items`.
    pub(crate) bytes: usize,
    /// Invariant: the LSN of the last queued commit + 1.
    next_lsn: u64,
    pub(crate) state: State,
    /// The writer waits on `work` and no one has woken it yet: only then does a commit pay for a
    /// wake-up (the waker clears it).
    pub(crate) writer_idle: bool,
    /// The caller is queueing one batch: the writer waits until it is whole (`hold_writer`).
    pub(crate) held: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) segments: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) queue: Mutex<Queue>,
    /// Signalled when a commit is queued to an idle writer, or the state changes.
    pub(crate) work: Condvar,
    /// Signalled when the writer takes a batch off the queue, or the state changes.
    pub(crate) room: Condvar,
    pub(crate) store: RwLock<Store>,
    pub(crate) pages: PageStore,
    /// Writer → gopher → flusher (flush.rs).
    pub(crate) flow: Mutex<Flow>,
    pub(crate) flow_changed: Condvar,
    /// The last published batch: (segment file name, its length after the batch, last LSN).
    /// A backup copies the log up to here.
    pub(crate) durable_at: Mutex<(String, u64, u64)>,
    /// LSN of the last commit applied to the store; only the writer advances it.
    pub(crate) visible_lsn: AtomicU64,
    pub(crate) counters: Counters,
    /// Why the final seal at close failed, for `close()` to report.
    pub(crate) close_error: Mutex<Option<Error>>,
    /// Sharing: where `catch_up` moved the log end (the segment opened there, its name); the
    /// writer continues there with its next batch.
    pub(crate) reposition: Mutex<Option<(Box<dyn LogFile>, String)>>,
    /// Sharing the directory now: close neither seals the log nor writes a final checkpoint
    /// (cleared by `leave_sharing` when this engine becomes the directory's only user).
    pub(crate) sharing: AtomicBool,
}

/// Engine statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub durable_lsn: u64,
    pub batches: u64,
    pub syncs: u64,
    pub segments: u64,
    pub keys: u64,
    pub versions: u64,
    pub record_bytes: u64,
    pub retired: u64,
    pub checkpoint_lsn: u64,
    pub page_count: u64,
    /// Index entries held in memory (reference-counted pairs of an index key and a primary key).
    pub index_entries: u64,
    /// The current age group (the scavenger's LRU clock).
    pub age_group: u64,
    pub flow: FlowStats,
}

/// What a backup copies, fixed while the flusher is suspended.
#[derive(Clone, Debug)]
pub struct BackupPlan {
    /// Every commit up to this one is in the copy, none after.
    pub commit_id: u64,
    /// Checkpoint sequence number and the meta slot it lives in (seq mod 2).
    pub seq: u64,
    /// Pages the checkpoint reaches (not the meta slots), ascending.
    pub pages: Vec<u32>,
    pub page_count: u32,
    /// Log segments (file name, bytes to copy), in LSN order.
    pub segments: Vec<(String, u64)>,
}

pub struct Engine {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    helpers: Mutex<Vec<JoinHandle<()>>>,
    faulty: Option<FaultyVfs>,
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    /// Opened with `Options::sharing`.
    sharing: bool,
    /// Held from open until the threads above have stopped (close, crash or drop): no other
    /// engine, in any thread or process, writes these files meanwhile.
    lock: Mutex<Option<DirLock>>,
}

/// Bytes of the page cache for a record cache of `cache_bytes`.
fn page_cache_bytes(cache_bytes: u64) -> usize {
    (cache_bytes / 8).clamp(1 << 20, 64 << 20) as usize
}

impl Engine {
    /// Open (or create) the database in `dir` and recover it.
    pub fn open(dir: &Path, options: Options, notify: Notify) -> Result<Engine> {
        if options.group_bytes_max == 0 || options.segment_bytes_max == 0 {
            return Err(Error::new(Code::InvalidArgument, "segmentBytes and groupBytesMax must be positive"));
        }
        if options.flush_queue_bytes == 0 || options.checkpoint_bytes == 0 {
            return Err(Error::new(Code::InvalidArgument, "checkpointBytes and the flush queue bound must be positive"));
        }
        // The lock first: before it, another opener may be halfway through creating the files.
        // Sharing: the caller holds the locks.
        ensure_directory(dir)?;
        let lock = match options.sharing {
            Some(_) => None,
            None => Some(DirLock::acquire(dir, "native")?),
        };
        prepare_directory(dir)?;
        let pages = PageStore::open(dir, page_cache_bytes(options.cache_bytes))?;
        let meta = pages.meta();
        check_record_count(&pages, meta.records)?;
        let recovered = match options.sharing.as_ref().and_then(|s| s.tail.as_ref()) {
            Some(tail) => recovery::recover_to_tail(dir, meta.checkpoint_lsn, tail)?,
            None => recovery::recover(dir, meta.checkpoint_lsn)?,
        };
        let faulty = options.faults.map(FaultyVfs::new);
        let vfs: Arc<dyn Vfs> = match &faulty {
            Some(f) => Arc::new(f.clone()),
            None => Arc::new(RealVfs),
        };
        let log_dir = dir.join(LOG_DIR);
        let mut store = Store::new(meta.checkpoint_lsn, meta.records, meta.catalog_root != 0);
        let last_lsn = recovered.last_lsn;
        let sharing = options.sharing.is_some();
        let mut flow = Flow::new(meta.checkpoint_lsn, options.retain_commits, !sharing);
        for (lsn, commit) in recovered.commits {
            // The replayed tail is not in the page store yet: it is dirty.
            let written = store.apply(lsn, commit, &pages)?;
            flow.admit(Batch::new(lsn, written));
        }
        // Replay installed every version; keep only what the retention window asks for.
        store.set_horizon(last_lsn.saturating_sub(options.retain_commits), true, &[]);
        let active = match recovered.segments.last() {
            // A log that ends below the checkpoint continues in a new segment after it.
            Some(seg) if recovered.log_end_lsn >= last_lsn => {
                vfs.open_log(&log_dir.join(&seg.name), seg.len).map_err(|e| Error::io("opening the active log segment", &e))?
            }
            _ => create_segment(&log_dir, vfs.as_ref(), last_lsn + 1)?,
        };
        let active_name = match recovered.segments.last() {
            Some(seg) if recovered.log_end_lsn >= last_lsn => seg.name.clone(),
            _ => segment_name(last_lsn + 1),
        };
        let active_len = active.len();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { items: VecDeque::new(), bytes: 0, next_lsn: last_lsn + 1, state: State::Open, writer_idle: false, held: false }),
            work: Condvar::new(),
            room: Condvar::new(),
            store: RwLock::new(store),
            pages,
            flow: Mutex::new(flow),
            flow_changed: Condvar::new(),
            durable_at: Mutex::new((active_name.clone(), active_len, last_lsn)),
            visible_lsn: AtomicU64::new(last_lsn),
            counters: Counters::default(),
            close_error: Mutex::new(None),
            reposition: Mutex::new(None),
            sharing: AtomicBool::new(sharing),
        });
        shared.counters.segments.store(recovered.segments.len().max(1) as u64, Ordering::Relaxed);
        let helpers = flush::start(shared.clone(), &options, log_dir.clone())?;
        let handle = Writer::new(shared.clone(), options, log_dir, vfs.clone(), active, active_name, notify).spawn()?;
        Ok(Engine {
            shared,
            writer: Mutex::new(Some(handle)),
            helpers: Mutex::new(helpers),
            faulty,
            vfs,
            dir: dir.to_path_buf(),
            sharing,
            lock: Mutex::new(lock),
        })
    }

    /// Validate a COMMIT payload, give it the next LSN and queue it. Blocks only while more than
    /// [`QUEUE_BYTES_MAX`] bytes are queued.
    pub fn commit(&self, payload_bytes: &[u8]) -> Result<u64> {
        payload::validate(payload_bytes).map_err(|e| Error::new(Code::InvalidArgument, format!("malformed commit payload: {e}")))?;
        if payload_bytes.len() > RECORD_PAYLOAD_BYTES_MAX {
            return Err(Error::new(Code::InvalidArgument, "a commit record is limited to 256 MiB; split the transaction"));
        }
        let mut q = self.shared.queue.lock().expect("queue lock");
        // Bounded: each wait ends when the writer drains a batch or the state changes.
        loop {
            refuse(&q.state)?;
            if q.bytes <= QUEUE_BYTES_MAX {
                break;
            }
            q = self.shared.room.wait(q).expect("queue lock");
        }
        let lsn = q.next_lsn;
        q.next_lsn += 1;
        q.bytes += FRAME_HEADER_BYTES + payload_bytes.len();
        q.items.push_back(Queued { lsn, payload: payload_bytes.to_vec() });
        // One wake-up per idle spell, none while held: each one costs the writer a trip through
        // the queue lock, which commits of a held batch would otherwise ping-pong with it.
        let wake = q.writer_idle && !q.held;
        if wake {
            q.writer_idle = false;
        }
        drop(q);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(lsn)
    }

    /// Wait until every queued commit is written and settled, or the engine stopped, for at most
    /// `wait`: whether it got there. A handle whose thread ended calls it before it lets go of
    /// the directory's write lock (`threads`), so that no commit of it lands after the lock.
    pub fn wait_queue_written(&self, wait: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        let mut q = self.shared.queue.lock().expect("queue lock");
        // Bounded by the deadline.
        loop {
            let stopped = matches!(q.state, State::Crashed | State::Failed(_));
            if stopped || (q.items.is_empty() && q.next_lsn == self.log_tail().lsn + 1) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            drop(q);
            std::thread::sleep(std::time::Duration::from_millis(1));
            q = self.shared.queue.lock().expect("queue lock");
        }
    }

    /// While held, the writer starts no batch: commits queued meanwhile go out as one write and
    /// one fdatasync (a participant holding the write lock of a shared directory for one batch).
    pub fn hold_writer(&self, hold: bool) {
        let mut q = self.shared.queue.lock().expect("queue lock");
        q.held = hold;
        let wake = !hold && q.writer_idle && !q.items.is_empty();
        if wake {
            q.writer_idle = false;
        }
        drop(q);
        if wake {
            self.shared.work.notify_one();
        }
    }

    /// The value of a key at `snapshot` (a commit id), or None.
    pub fn get(&self, collection: &str, key: &[u8], snapshot: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.shared.store.read().expect("store lock").get(collection, key, snapshot, &self.shared.pages)?.map(|v| v.into_owned()))
    }

    /// Run `f` on the value of a key at `snapshot`, without copying it when it is in memory.
    pub fn with_value<R>(&self, collection: &str, key: &[u8], snapshot: u64, f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R> {
        let store = self.shared.store.read().expect("store lock");
        let v = store.get(collection, key, snapshot, &self.shared.pages)?;
        Ok(f(v.as_deref()))
    }

    pub fn scan(&self, collection: &str, bounds: &ScanBounds, snapshot: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.shared.store.read().expect("store lock").scan(collection, bounds, snapshot, &self.shared.pages)
    }

    /// Every collection that may hold records at a readable snapshot: those with chains in memory
    /// and those the published checkpoint's catalog lists (not index trees), in name order
    /// (bytewise UTF-8), each once. A superset: some may hold nothing at a given snapshot.
    pub fn collections(&self) -> Result<Vec<String>> {
        let store = self.shared.store.read().expect("store lock");
        let mut names: std::collections::BTreeSet<String> = store.collection_names().map(str::to_owned).collect();
        for (name, _) in self.shared.pages.collections()? {
            if !name.contains('\0') {
                names.insert(name);
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Index lookup at `snapshot`: (primary key, value) of the records of `collection` whose
    /// visible version holds a key of index `index` whose index-tree entry key lies within the
    /// bounds, in entry order (see `Store::find`).
    pub fn find(&self, collection: &str, index: &str, bounds: &ScanBounds, snapshot: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.shared.store.read().expect("store lock").find(collection, index, bounds, snapshot, &self.shared.pages)
    }

    /// As [`Engine::scan`], handing each (key, value) to `visit` (under the store's read lock)
    /// instead of copying it, until `visit` returns false; false iff `visit` stopped it.
    pub fn scan_each(&self, collection: &str, bounds: &ScanBounds, snapshot: u64, visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool> {
        self.shared.store.read().expect("store lock").scan_each(collection, bounds, snapshot, &self.shared.pages, visit)
    }

    /// As [`Engine::find`], handing each (primary key, value) to `visit` (under the store's
    /// read lock) instead of copying it, until `visit` returns false; false iff `visit` stopped it.
    pub fn find_each(&self, collection: &str, index: &str, bounds: &ScanBounds, snapshot: u64, visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool> {
        self.shared.store.read().expect("store lock").find_each(collection, index, bounds, snapshot, &self.shared.pages, visit)
    }

    /// Chains installed, loaded or read from now on belong to age group `group` (never
    /// decreases). Only the read lock: the age group is an atomic.
    pub fn set_age_group(&self, group: u64) {
        self.shared.store.read().expect("store lock").set_age_group(group)
    }

    /// One slice of a scavenge pass (see `Store::scavenge`): at most `visit_max` (≥ 1) chains
    /// under the store's write lock, so readers and the writer wait for one slice at most.
    pub fn scavenge(&self, retire_age_max: i64, target_bytes: u64, visit_max: u64) -> Result<ScavengeStep> {
        if visit_max == 0 {
            return Err(Error::new(Code::InvalidArgument, "scavenge: visitMax must be at least 1"));
        }
        let target = usize::try_from(target_bytes).unwrap_or(usize::MAX);
        let visit = usize::try_from(visit_max).unwrap_or(usize::MAX);
        Ok(self.shared.store.write().expect("store lock").scavenge(retire_age_max, target, visit))
    }

    /// Allow pruning of versions that no snapshot ≥ `horizon` (the horizon never decreases) and
    /// no snapshot of `pinned` reads. `pinned`: the snapshots below `horizon` still open — all of
    /// them, each call (it replaces the previous list; see `Store::set_horizon`); each keeps the
    /// one version of each key it reads. `sweep` prunes every key now.
    pub fn set_horizon(&self, horizon: u64, sweep: bool, pinned: &[u64]) {
        self.shared.store.write().expect("store lock").set_horizon(horizon, sweep, pinned)
    }

    /// The oldest snapshot still fully readable.
    pub fn horizon(&self) -> u64 {
        self.shared.store.read().expect("store lock").horizon()
    }

    /// Still taking commits: not failed, closed or crashed.
    pub fn is_open(&self) -> bool {
        matches!(self.shared.queue.lock().expect("queue lock").state, State::Open)
    }

    /// LSN of the last visible commit.
    pub fn last_lsn(&self) -> u64 {
        self.shared.visible_lsn.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let meta = self.shared.pages.meta();
        let store = self.shared.store.read().expect("store lock");
        Stats {
            durable_lsn: self.last_lsn(),
            batches: c.batches.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            segments: c.segments.load(Ordering::Relaxed),
            keys: store.key_count(),
            versions: store.version_count() as u64,
            record_bytes: store.record_bytes() as u64,
            retired: store.retired_count(),
            checkpoint_lsn: meta.checkpoint_lsn,
            page_count: meta.page_count as u64,
            index_entries: store.index_entry_count() as u64,
            age_group: store.age_group() as u64,
            flow: self.shared.flow.lock().expect("flow lock").stats(),
        }
    }

    /// Ask for a checkpoint of everything visible now; returns a ticket for
    /// [`Engine::checkpoint_status`].
    pub fn request_checkpoint(&self) -> Result<u64> {
        self.request_checkpoint_with(CheckpointOptions::default())
    }

    /// [`Engine::request_checkpoint`] with options. Sharing: the newest checkpoint on disk is
    /// adopted first, and the new one is written on top of it; `KESTREL_BEHIND` when that one
    /// covers commits this engine has not applied (catch up and retry).
    pub fn request_checkpoint_with(&self, options: CheckpointOptions) -> Result<u64> {
        if self.sharing {
            self.adopt_newest(true)?;
        }
        let target = self.last_lsn();
        let ticket = self.shared.flow.lock().expect("flow lock").request(target, options)?;
        self.shared.flow_changed.notify_all();
        Ok(ticket)
    }

    /// Ok(true) once the checkpoint of `ticket` (or a later one) is published; the error of a
    /// checkpoint that failed after the request.
    pub fn checkpoint_status(&self, ticket: u64) -> Result<bool> {
        self.shared.flow.lock().expect("flow lock").status(ticket)
    }

    /// Request a checkpoint and wait for it (Rust callers and tests; JavaScript polls).
    pub fn checkpoint(&self) -> Result<()> {
        let ticket = self.request_checkpoint()?;
        let mut flow = self.shared.flow.lock().expect("flow lock");
        // Bounded by the flusher: it publishes, fails or stops.
        loop {
            if flow.status(ticket)? {
                return Ok(());
            }
            flow = self.shared.flow_changed.wait(flow).expect("flow lock");
        }
    }

    /// Request a checkpoint with `options` and wait for it.
    pub fn checkpoint_with(&self, options: CheckpointOptions) -> Result<()> {
        let ticket = self.request_checkpoint_with(options)?;
        let mut flow = self.shared.flow.lock().expect("flow lock");
        // Bounded by the flusher: it publishes, fails or stops.
        loop {
            if flow.status(ticket)? {
                return Ok(());
            }
            flow = self.shared.flow_changed.wait(flow).expect("flow lock");
        }
    }

    /// (seq, LSN) of the checkpoint reads of retired records go to and the next one builds on
    /// ((0, 0): none).
    pub fn checkpoint_ref(&self) -> (u64, u64) {
        let meta = self.shared.pages.meta();
        (meta.seq, meta.checkpoint_lsn)
    }

    /// Sharing: switch to the newest checkpoint on disk when it is newer than this engine's,
    /// covers no commit it has not applied, and no checkpoint of its own is being written.
    /// Always false when not sharing.
    pub fn adopt_checkpoint(&self) -> Result<bool> {
        if !self.sharing {
            return Ok(false);
        }
        self.adopt_newest(false)
    }

    /// Adopt the newest checkpoint on disk if it is newer than ours. `for_checkpoint`: wait out
    /// a checkpoint of ours being written, and a newer one covering commits not applied here is
    /// `KESTREL_BEHIND` (else: false in both cases).
    fn adopt_newest(&self, for_checkpoint: bool) -> Result<bool> {
        {
            let mut flow = self.shared.flow.lock().expect("flow lock");
            // Bounded by the flusher: the checkpoint being written ends.
            while flow.in_flight() {
                if !for_checkpoint {
                    return Ok(false);
                }
                flow = self.shared.flow_changed.wait(flow).expect("flow lock");
            }
            // Hold off the flusher while the published checkpoint changes under it.
            flow.set_in_flight(true);
        }
        let adopted = self.adopt_reserved(for_checkpoint);
        let mut flow = self.shared.flow.lock().expect("flow lock");
        flow.set_in_flight(false);
        if let Ok(Some(lsn)) = adopted {
            flow.adopt(lsn);
        }
        drop(flow);
        self.shared.flow_changed.notify_all();
        adopted.map(|a| a.is_some())
    }

    /// The body of [`Engine::adopt_newest`] while the flusher is held off: the adopted LSN.
    fn adopt_reserved(&self, for_checkpoint: bool) -> Result<Option<u64>> {
        let Some((disk, file)) = self.shared.pages.newest_on_disk()? else { return Ok(None) };
        let own = self.shared.pages.meta();
        if disk.seq <= own.seq {
            return Ok(None);
        }
        let applied = self.last_lsn();
        if disk.checkpoint_lsn > applied {
            if for_checkpoint {
                return Err(Error::new(
                    Code::Behind,
                    format!(
                        "checkpoint {} on disk covers commits up to {}, this engine has applied up to {applied}: catch up and retry",
                        disk.seq, disk.checkpoint_lsn
                    ),
                ));
            }
            return Ok(None);
        }
        self.shared.pages.adopt(disk, file);
        self.shared.store.write().expect("store lock").set_checkpointed(disk.checkpoint_lsn);
        Ok(Some(disk.checkpoint_lsn))
    }

    /// Where the log ends after the last acknowledged commit: the next frame goes there.
    /// Meaningful only while nothing is queued or being written.
    pub fn log_tail(&self) -> LogTail {
        let (segment, offset, lsn) = self.shared.durable_at.lock().expect("durable lock").clone();
        LogTail { lsn, segment, offset }
    }

    /// Sharing: apply what other participants appended from this engine's log end up to `tail`
    /// (durable: visible at once) and continue writing at `tail`; with `adopt`, also what a dead
    /// writer left past it (see `read_past_tail`), made durable first, the torn rest cut off.
    /// Returns the payloads applied, in LSN order. Only while no commit of this engine is
    /// queued or being written.
    pub fn catch_up(&self, tail: &LogTail, adopt: bool) -> Result<Vec<Vec<u8>>> {
        if !self.sharing {
            return Err(Error::new(Code::InvalidArgument, "catchUp needs an engine opened with the sharing option"));
        }
        // Held throughout: no commit is queued meanwhile (the writer stays idle).
        let mut q = self.shared.queue.lock().expect("queue lock");
        self.catch_up_locked(&mut q, tail, adopt)
    }

    /// Sharing, with several handles on this engine in one process (threads): what the handle
    /// at `from` has not seen, up to `tail`. Frames this engine holds already (applied by another
    /// handle's commits or catch-ups) are read back from the log; what lies past its log end is
    /// applied as [`Engine::catch_up`] does. With `adopt`, frames of this engine past `tail` (a
    /// handle that stopped between its fdatasync and publishing) count as seen too. Returns the
    /// payloads in LSN order and the handle's new position.
    pub fn catch_up_from(&self, from: &LogTail, tail: &LogTail, adopt: bool) -> Result<(Vec<Vec<u8>>, LogTail)> {
        if !self.sharing {
            return Err(Error::new(Code::InvalidArgument, "catchUp needs an engine opened with the sharing option"));
        }
        // Held throughout: the log end cannot move between reading it and applying past it.
        let mut q = self.shared.queue.lock().expect("queue lock");
        if adopt {
            // Under the write lock no handle has a commit in flight — unless one lost the lock
            // with commits queued (its thread ended): they are written first, then read back.
            let deadline = std::time::Instant::now() + IN_FLIGHT_WAIT;
            // Bounded by the deadline.
            while !q.items.is_empty() || q.next_lsn != self.log_tail().lsn + 1 {
                refuse(&q.state)?;
                if std::time::Instant::now() >= deadline {
                    return Err(Error::new(Code::Io, "catchUp: commits of a closed handle were not written within 30 s"));
                }
                drop(q);
                std::thread::sleep(std::time::Duration::from_millis(1));
                q = self.shared.queue.lock().expect("queue lock");
            }
        }
        refuse(&q.state)?;
        let own = self.log_tail();
        if from.lsn > own.lsn {
            return Err(Error::new(Code::InvalidArgument, format!("catchUp from LSN {} past this engine's log end (LSN {})", from.lsn, own.lsn)));
        }
        if tail.lsn < from.lsn {
            return Err(Error::new(
                Code::Corrupt,
                format!(
                    "the published log tail (LSN {}) lies before what this participant has seen (LSN {}): the shared state is inconsistent",
                    tail.lsn, from.lsn
                ),
            ));
        }
        let seen_to = if adopt || tail.lsn >= own.lsn { own.clone() } else { tail.clone() };
        let log_dir = self.dir.join(LOG_DIR);
        let mut payloads: Vec<Vec<u8>> =
            if seen_to.lsn > from.lsn { read_to_tail(&log_dir, from, &seen_to)?.into_iter().map(|(_, p)| p).collect() } else { Vec::new() };
        if tail.lsn < own.lsn || (tail.lsn == own.lsn && !adopt) {
            return Ok((payloads, seen_to));
        }
        // Past this engine's log end: no handle of it holds the write lock, so none has a commit
        // in flight (catch_up_locked checks).
        payloads.extend(self.catch_up_locked(&mut q, tail, adopt)?);
        Ok((payloads, self.log_tail()))
    }

    /// The body of [`Engine::catch_up`], with the queue locked by the caller.
    fn catch_up_locked(&self, q: &mut std::sync::MutexGuard<'_, Queue>, tail: &LogTail, adopt: bool) -> Result<Vec<Vec<u8>>> {
        refuse(&q.state)?;
        let own = self.log_tail();
        if !q.items.is_empty() || q.next_lsn != own.lsn + 1 || self.last_lsn() != own.lsn {
            return Err(Error::new(Code::InvalidArgument, "catchUp while commits are in flight"));
        }
        if tail.lsn < own.lsn {
            return Err(Error::new(
                Code::Corrupt,
                format!("the published log tail (LSN {}) lies before this engine's log end (LSN {}): the shared state is inconsistent", tail.lsn, own.lsn),
            ));
        }
        if *tail == own && !adopt {
            return Ok(Vec::new());
        }
        let log_dir = self.dir.join(LOG_DIR);
        let mut frames: Vec<FollowedFrame> = if tail.lsn > own.lsn { read_to_tail(&log_dir, &own, tail)? } else { Vec::new() };
        let mut end = tail.clone();
        if adopt {
            if let Some(past) = read_past_tail(&log_dir, tail)? {
                end = self.settle_past_tail(&log_dir, tail, &past)?;
                frames.extend(past.frames);
            }
        }
        if frames.is_empty() && end == own {
            return Ok(Vec::new());
        }
        let mut commits = Vec::with_capacity(frames.len());
        for (lsn, bytes) in &frames {
            let commit = payload::decode(bytes).map_err(|e| {
                Error::new(Code::Corrupt, format!("log record {lsn} does not parse ({e}); published records cannot be trusted: restore from a backup"))
            })?;
            commits.push((*lsn, commit));
        }
        let file = self.vfs.open_log(&log_dir.join(&end.segment), end.offset).map_err(|e| Error::io("opening the log segment to continue in", &e))?;
        if !commits.is_empty() {
            let mut written = Vec::new();
            let mut store = self.shared.store.write().expect("store lock");
            for (lsn, commit) in commits {
                match store.apply(lsn, commit, &self.shared.pages) {
                    Ok(w) => written.extend(w),
                    Err(cause) => {
                        // Partly applied: nothing more can be trusted until a reopen.
                        q.state = State::Failed(cause.clone());
                        return Err(cause);
                    }
                }
            }
            let record_bytes = store.record_bytes() as u64;
            self.shared.visible_lsn.store(end.lsn, Ordering::Release);
            drop(store);
            flush::push_now(&self.shared, Batch::new(end.lsn, written), record_bytes);
        }
        if end.segment != own.segment {
            // Segments other participants started count as this engine's too (stats, trimming).
            let started = list_segments(&log_dir)?.iter().filter(|(_, n)| *n > own.segment && *n <= end.segment).count();
            self.shared.counters.segments.fetch_add(started as u64, Ordering::Relaxed);
        }
        *self.shared.durable_at.lock().expect("durable lock") = (end.segment.clone(), end.offset, end.lsn);
        *self.shared.reposition.lock().expect("reposition lock") = Some((file, end.segment.clone()));
        q.next_lsn = end.lsn + 1;
        Ok(frames.into_iter().map(|(_, p)| p).collect())
    }

    /// Make what `read_past_tail` found durable and the log clean after it: fdatasync the
    /// segments holding adopted frames, cut the torn rest of the last one, remove a segment the
    /// dead writer created past them. Returns the new log end.
    fn settle_past_tail(&self, log_dir: &Path, tail: &LogTail, past: &crate::log::reader::PastTail) -> Result<LogTail> {
        let end = past.end.clone().unwrap_or_else(|| tail.clone());
        let what = |name: &str| format!("adopting {LOG_DIR}/{name}");
        for name in past.segments.iter().filter(|n| **n != end.segment) {
            let f = fs::OpenOptions::new().write(true).open(log_dir.join(name)).map_err(|e| Error::io(&what(name), &e))?;
            f.sync_data().map_err(|e| Error::io(&what(name), &e))?;
        }
        let f = fs::OpenOptions::new().write(true).open(log_dir.join(&end.segment)).map_err(|e| Error::io(&what(&end.segment), &e))?;
        let len = f.metadata().map_err(|e| Error::io(&what(&end.segment), &e))?.len();
        if len > end.offset {
            // As recovery cuts a torn tail.
            f.set_len(end.offset).map_err(|e| Error::io(&what(&end.segment), &e))?;
        }
        f.sync_data().map_err(|e| Error::io(&what(&end.segment), &e))?;
        if let Some(orphan) = &past.orphan {
            fs::remove_file(log_dir.join(orphan)).map_err(|e| Error::io(&format!("removing {LOG_DIR}/{orphan}"), &e))?;
            sync_dir(log_dir).map_err(|e| Error::io("syncing log/", &e))?;
        }
        Ok(end)
    }

    /// Suspend the flusher (reference-counted): from now on batches are deferred, in order, and
    /// no page is written. Returns whether a checkpoint is still being written: wait until
    /// [`Engine::flusher_busy`] is false before reading the page file.
    pub fn suspend_flusher(&self) -> bool {
        let mut flow = self.shared.flow.lock().expect("flow lock");
        flow.suspend();
        flow.in_flight()
    }

    /// A checkpoint is being written.
    pub fn flusher_busy(&self) -> bool {
        self.shared.flow.lock().expect("flow lock").in_flight()
    }

    /// Undo one [`Engine::suspend_flusher`]. The last one applies the deferred batches in commit
    /// order before anything newer, then flushing restarts.
    pub fn resume_flusher(&self) -> Result<()> {
        self.shared.flow.lock().expect("flow lock").resume()?;
        self.shared.flow_changed.notify_all();
        Ok(())
    }

    /// Test-only: the next checkpoint crashes at `fault`.
    pub fn set_page_fault(&self, fault: PageFault) {
        self.shared.flow.lock().expect("flow lock").fault = fault;
    }

    /// What a backup must copy now. Only while the flusher is suspended and not busy.
    pub fn backup_plan(&self) -> Result<BackupPlan> {
        {
            let flow = self.shared.flow.lock().expect("flow lock");
            if !flow.suspended() || flow.in_flight() {
                return Err(Error::new(Code::InvalidArgument, "backup_plan() needs the flusher suspended and idle"));
            }
        }
        let (segment, len, commit_id) = self.shared.durable_at.lock().expect("durable lock").clone();
        let meta = self.shared.pages.meta();
        let pages = self.shared.pages.pages_in_use()?;
        let log_dir = self.dir.join(LOG_DIR);
        let mut names: Vec<String> = fs::read_dir(&log_dir)
            .map_err(|e| Error::io("listing log/", &e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| parse_segment_name(n).is_some() && n.as_str() <= segment.as_str())
            .collect();
        names.sort();
        let mut segments = Vec::with_capacity(names.len());
        for name in names {
            let bytes = if name == segment {
                len
            } else {
                // Sealed: its length is final (the flusher, which deletes segments, is suspended).
                fs::metadata(log_dir.join(&name)).map_err(|e| Error::io("reading a log segment's size", &e))?.len()
            };
            segments.push((name, bytes));
        }
        Ok(BackupPlan { commit_id, seq: meta.seq, pages, page_count: meta.page_count, segments })
    }

    /// The page file's path.
    pub fn page_file(&self) -> PathBuf {
        self.dir.join(PAGE_FILE)
    }

    /// Structural check of the published checkpoint (see PageStore::check).
    pub fn check_pages(&self) -> Result<crate::pages::CheckReport> {
        self.shared.pages.check()
    }

    fn stop_crashed(&self, faulty: &FaultyVfs) {
        {
            let mut q = self.shared.queue.lock().expect("queue lock");
            q.state = State::Crashed;
        }
        // A held sync would keep the writer from seeing the crash.
        faulty.hold_syncs(false);
        self.stop(State::Crashed);
    }

    /// Stop the gopher and flusher: with `checkpoint`, apply everything (deferred too) and write
    /// a final checkpoint first.
    fn stop_helpers(&self, checkpoint: bool) -> Result<()> {
        self.shared.flow.lock().expect("flow lock").stop(checkpoint);
        self.shared.flow_changed.notify_all();
        for h in self.helpers.lock().expect("helpers lock").drain(..) {
            let _ = h.join();
        }
        self.shared.flow.lock().expect("flow lock").final_error()
    }

    fn stop(&self, state: State) {
        {
            let mut q = self.shared.queue.lock().expect("queue lock");
            if matches!(q.state, State::Open | State::Failed(_)) {
                q.state = state;
            }
        }
        self.shared.work.notify_all();
        self.shared.room.notify_all();
        if let Some(h) = self.writer.lock().expect("writer lock").take() {
            let _ = h.join();
        }
    }

    /// Sharing: this engine is now the directory's only user (the caller holds every lock and has
    /// caught up), so `close` seals the log and writes the final checkpoint as without sharing.
    pub fn leave_sharing(&self) {
        self.shared.sharing.store(false, Ordering::Release);
    }

    /// Write everything queued, sync, stop the writer. Idempotent.
    pub fn close(&self) -> Result<()> {
        self.stop(State::Closing);
        let failed = !matches!(self.shared.queue.lock().expect("queue lock").state, State::Closing);
        // After a failed log write the store may hold nothing unacknowledged, but do not build
        // on a failed engine: the reopen recovers from the log.
        // Sharing: no final checkpoint (the caller asks for one under its checkpoint lock).
        let flushed = self.stop_helpers(!failed && !self.shared.sharing.load(Ordering::Acquire));
        self.release_lock();
        match self.shared.close_error.lock().expect("close error").take() {
            Some(e) => Err(e),
            None => flushed,
        }
    }

    /// Test-only: hold (or release) every batch fdatasync, so a commit stays written but not
    /// durable. Needs the fault layer.
    pub fn hold_syncs(&self, hold: bool) -> Result<()> {
        let Some(faulty) = &self.faulty else {
            return Err(Error::new(Code::InvalidArgument, "holdSyncs() needs the fault layer: open with faults: {}"));
        };
        faulty.hold_syncs(hold);
        Ok(())
    }

    /// Test-only power loss: stop without writing what is queued, then drop unsynced data
    /// except `tear_bytes` of it.
    pub fn crash(&self, tear_bytes: u64) -> Result<()> {
        let Some(faulty) = &self.faulty else {
            return Err(Error::new(Code::InvalidArgument, "crash() needs the fault layer: open with faults: {}"));
        };
        self.stop_crashed(faulty);
        let _ = self.stop_helpers(false);
        let lost = faulty.crash(tear_bytes).map_err(|e| Error::io("simulating a crash", &e));
        self.release_lock();
        lost
    }

    /// Let another engine open the directory: only once no thread of this one writes to it.
    fn release_lock(&self) {
        debug_assert!(self.writer.lock().expect("writer lock").is_none(), "the writer has stopped");
        debug_assert!(self.helpers.lock().expect("helpers lock").is_empty(), "the gopher and flusher have stopped");
        self.lock.lock().expect("lock slot").take();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop(State::Closing);
        let _ = self.stop_helpers(!self.shared.sharing.load(Ordering::Acquire));
    }
}

/// The meta page's live-record count is where the store's count starts: it must be what the
/// catalog says the collection trees hold (index trees, named `collection ‖ 0x00 ‖ index`, count
/// index entries and are left out).
fn check_record_count(pages: &PageStore, meta_records: u64) -> Result<()> {
    let counted: u64 = pages.collections()?.iter().filter(|(name, _)| !name.contains('\0')).map(|(_, n)| n).sum();
    if counted != meta_records {
        return Err(Error::new(
            Code::Corrupt,
            format!("{PAGE_FILE}: the meta page counts {meta_records} live records but the catalog's collections hold {counted}; run `kestrel verify` and restore from a backup"),
        ));
    }
    Ok(())
}

fn refuse(state: &State) -> Result<()> {
    match state {
        State::Open => Ok(()),
        State::Failed(e) => Err(Error::new(
            Code::Io,
            format!("an earlier log write failed ({}); nothing more is acknowledged: reopen the database to recover the last durable state", e.code.as_str()),
        )),
        State::Closing | State::Crashed => Err(Error::closed()),
    }
}
