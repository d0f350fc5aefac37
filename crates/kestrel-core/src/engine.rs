//! The engine: the serial log with a group-commit writer thread, and the store it publishes to.
//!
//! A commit is validated and given the next LSN on the caller's thread, then queued. The writer
//! takes everything queued while its previous write + fdatasync ran as the next batch, writes it
//! with one `write` and one `fdatasync`, and only then applies the batch to the store (in LSN
//! order), advances the visible LSN and notifies. I1 (durability before visibility) holds because
//! nothing reaches the store before the step that acknowledges it.
//!
//! Behind the writer (see `flush.rs`): the writer hands what each batch wrote to the **gopher**
//! thread through a bounded queue; the gopher applies it, in commit order, to the dirty set (or
//! defers it while the flusher is suspended); the **flusher** thread turns the dirty set into a
//! copy-on-write checkpoint of the page store, then trims the log and retires checkpointed
//! records from memory.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Code, Error, Result};
use crate::flush::{self, Batch, Flow, FlowStats};
use crate::format::*;
use crate::lock::DirLock;
use crate::pages::{PageFault, PageStore, PAGE_FILE};
use crate::payload::{self, Commit};
use crate::recovery::{self, ensure_directory, prepare_directory};
use crate::store::{ScanBounds, ScavengeStep, Store};
use crate::vfs::{sync_dir, FaultOptions, FaultyVfs, LogFile, Purpose, RealVfs, Vfs};

/// Queued bytes past which `commit` waits for the writer (back-pressure, never a drop).
pub const QUEUE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// The writer keeps this many zeroed bytes ahead of the write position: an fdatasync of data
/// written into pre-zeroed space has no file-size change to journal (about 1.4× the syncs/s of
/// appending on ext4 here; see benchmark/limits).
pub const PREALLOC_BYTES: u64 = 4 << 20;
/// In `relaxed` mode, fdatasync with a batch when the last sync is older than this.
pub const RELAXED_SYNC_INTERVAL: Duration = Duration::from_millis(100);

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
        }
    }
}

/// Called from the writer thread after each batch: `(durable_lsn, None)` once the batch is
/// acknowledged and visible, or `(failed_batch_last_lsn, Some(error))` when it failed: the
/// commits after the last acknowledged one up to that LSN failed with `error`, and every commit
/// queued after them failed because the engine stopped (`KESTREL_IO`).
pub type Notify = Box<dyn Fn(u64, Option<Error>) + Send + Sync>;

struct Queued {
    lsn: u64,
    /// A payload already validated by `payload::validate`; parsed again by the writer thread so
    /// that the caller's (JavaScript) thread only pays for one copy and one validation pass.
    payload: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Open,
    Failed(Error),
    /// close(): drain the queue, then stop.
    Closing,
    /// crash(): stop now, write nothing more.
    Crashed,
}

struct Queue {
    items: VecDeque<Queued>,
    /// Invariant: the sum of the frame sizes of `items`.
    bytes: usize,
    /// Invariant: the LSN of the last queued commit + 1.
    next_lsn: u64,
    state: State,
    /// The writer is waiting on `work`: only then does a commit pay for a wake-up.
    writer_idle: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    batches: AtomicU64,
    syncs: AtomicU64,
    pub(crate) segments: AtomicU64,
}

pub(crate) struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    room: Condvar,
    pub(crate) store: RwLock<Store>,
    pub(crate) pages: PageStore,
    /// Writer → gopher → flusher (flush.rs).
    pub(crate) flow: Mutex<Flow>,
    pub(crate) flow_changed: Condvar,
    /// The last published batch: (segment file name, its length after the batch, last LSN).
    /// A backup copies the log up to here.
    durable_at: Mutex<(String, u64, u64)>,
    /// LSN of the last commit applied to the store; only the writer advances it.
    visible_lsn: AtomicU64,
    pub(crate) counters: Counters,
    /// Why the final seal at close failed, for `close()` to report.
    close_error: Mutex<Option<Error>>,
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
    dir: PathBuf,
    /// Held from open until the threads above have stopped (close, crash or drop): no other
    /// engine, in any thread or process, writes these files meanwhile.
    lock: Mutex<Option<DirLock>>,
}

/// The writer thread's own state: the active segment.
struct Writer {
    shared: Arc<Shared>,
    options: Options,
    log_dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    active: Box<dyn LogFile>,
    /// The active segment's file name.
    active_name: String,
    last_sync: Instant,
    /// `relaxed`: a batch was written since the last fdatasync. A quiet writer syncs it once
    /// [`RELAXED_SYNC_INTERVAL`] has passed, so what a power loss can take stays bounded by it.
    unsynced: bool,
    /// Owned by the writer thread (the only caller), so that it is dropped — and a JavaScript
    /// callback behind it released — as soon as the writer stops: on close, crash or failure.
    notify: Notify,
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
        ensure_directory(dir)?;
        let lock = DirLock::acquire(dir, "native")?;
        prepare_directory(dir)?;
        let pages = PageStore::open(dir, page_cache_bytes(options.cache_bytes))?;
        let meta = pages.meta();
        check_record_count(&pages, meta.records)?;
        let recovered = recovery::recover(dir, meta.checkpoint_lsn)?;
        let faulty = options.faults.map(FaultyVfs::new);
        let vfs: Arc<dyn Vfs> = match &faulty {
            Some(f) => Arc::new(f.clone()),
            None => Arc::new(RealVfs),
        };
        let log_dir = dir.join(LOG_DIR);
        let mut store = Store::new(meta.checkpoint_lsn, meta.records, meta.catalog_root != 0);
        let last_lsn = recovered.last_lsn;
        let mut flow = Flow::new(meta.checkpoint_lsn, options.retain_commits);
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
            queue: Mutex::new(Queue { items: VecDeque::new(), bytes: 0, next_lsn: last_lsn + 1, state: State::Open, writer_idle: false }),
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
        });
        shared.counters.segments.store(recovered.segments.len().max(1) as u64, Ordering::Relaxed);
        let helpers = flush::start(shared.clone(), &options, log_dir.clone())?;
        let mut writer = Writer { shared: shared.clone(), options, log_dir, vfs, active, active_name, last_sync: Instant::now(), unsynced: false, notify };
        let handle = std::thread::Builder::new()
            .name("kestrel-log-writer".into())
            .spawn(move || writer.run()) // `writer` (and its `notify`) drops when the thread ends
            .map_err(|e| Error::io("starting the log writer thread", &e))?;
        Ok(Engine { shared, writer: Mutex::new(Some(handle)), helpers: Mutex::new(helpers), faulty, dir: dir.to_path_buf(), lock: Mutex::new(Some(lock)) })
    }

    /// Validate a COMMIT payload, give it the next LSN and queue it. Blocks only while more than
    /// [`QUEUE_BYTES_MAX`] bytes are queued.
    pub fn commit(&self, payload_bytes: &[u8]) -> Result<u64> {
        payload::validate(payload_bytes)
            .map_err(|e| Error::new(Code::InvalidArgument, format!("malformed commit payload: {e}")))?;
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
        let wake = q.writer_idle;
        drop(q);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(lsn)
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
        let target = self.last_lsn();
        let ticket = self.shared.flow.lock().expect("flow lock").request(target)?;
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

    /// Write everything queued, sync, stop the writer. Idempotent.
    pub fn close(&self) -> Result<()> {
        self.stop(State::Closing);
        let failed = !matches!(self.shared.queue.lock().expect("queue lock").state, State::Closing);
        // After a failed log write the store may hold nothing unacknowledged, but do not build
        // on a failed engine: the reopen recovers from the log.
        let flushed = self.stop_helpers(!failed);
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
        let _ = self.stop_helpers(true);
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

fn create_segment(log_dir: &Path, vfs: &dyn Vfs, first_lsn: u64) -> Result<Box<dyn LogFile>> {
    let path = log_dir.join(segment_name(first_lsn));
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |e: std::io::Error| Error::io(&what, &e)
    };
    fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(io("creating"))?;
    let mut file = vfs.open_log(&path, 0).map_err(io("opening"))?;
    file.append(&segment_header(first_lsn), Purpose::Meta).map_err(io("writing the header of"))?;
    file.sync(Purpose::Meta).map_err(io("syncing"))?;
    sync_dir(log_dir).map_err(io("syncing the directory of"))?;
    Ok(file)
}

impl Writer {
    fn run(&mut self) {
        // Bounded by the queue: every iteration writes at least one commit or exits.
        while let Some(batch) = self.next_batch() {
            if !self.write_batch(batch) {
                break;
            }
        }
    }

    /// Wait for work; take everything queued up to `group_bytes_max` (at least one commit).
    fn next_batch(&mut self) -> Option<Vec<Queued>> {
        let shared = self.shared.clone();
        let mut q = shared.queue.lock().expect("queue lock");
        loop {
            match q.state {
                State::Crashed | State::Failed(_) => return None,
                _ if !q.items.is_empty() => break,
                State::Closing => {
                    drop(q);
                    // A failure leaves a zeroed tail, which recovery cuts, but commits that
                    // `relaxed`/`none` acknowledged since the last sync may not be durable:
                    // close() reports it.
                    if let Err(e) = self.seal() {
                        *self.shared.close_error.lock().expect("close error") = Some(Error::new(
                            Code::Io,
                            format!("closing: the final fdatasync of the log failed ({e}); commits acknowledged without an fdatasync (durability 'relaxed' or 'none') may be lost on a power failure"),
                        ));
                    }
                    return None;
                }
                State::Open => match self.quiet_sync_in() {
                    Some(wait) if wait.is_zero() => {
                        drop(q);
                        if !self.quiet_sync() {
                            return None;
                        }
                        q = shared.queue.lock().expect("queue lock");
                    }
                    wait => {
                        q.writer_idle = true;
                        q = match wait {
                            Some(wait) => shared.work.wait_timeout(q, wait).expect("queue lock").0,
                            None => shared.work.wait(q).expect("queue lock"),
                        };
                        q.writer_idle = false;
                    }
                },
            }
        }
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while let Some(next) = q.items.front() {
            let size = FRAME_HEADER_BYTES + next.payload.len();
            if !batch.is_empty() && bytes + size > self.options.group_bytes_max {
                break;
            }
            bytes += size;
            batch.push(q.items.pop_front().expect("front exists"));
        }
        q.bytes -= bytes;
        drop(q);
        shared.room.notify_all();
        Some(batch)
    }

    fn crashed(&self) -> bool {
        self.shared.queue.lock().expect("queue lock").state == State::Crashed
    }

    /// Write, sync and publish one batch. Returns false when the writer must stop.
    fn write_batch(&mut self, batch: Vec<Queued>) -> bool {
        debug_assert!(!batch.is_empty());
        let mut buffer = Vec::with_capacity(batch.iter().map(|q| FRAME_HEADER_BYTES + q.payload.len()).sum());
        for (i, q) in batch.iter().enumerate() {
            let t = RECORD_COMMIT | if i + 1 == batch.len() { BATCH_END } else { 0 };
            write_frame(&mut buffer, q.lsn, t, &q.payload);
        }
        // Where the failed batch must be cut back to. Taken after a rollover, which changes the
        // active segment: cutting the new segment to the old one's length would keep the
        // failed batch whole on disk (and a reopen would then replay it).
        let mut len_before = self.active.len();
        let result = (|| -> Result<bool> {
            // An empty segment is never rolled over (a new one would have the same name).
            if self.active.len() > self.options.segment_bytes_max && self.active.len() > SEGMENT_HEADER_BYTES as u64 {
                self.rollover(batch[0].lsn)?;
                len_before = self.active.len();
            }
            debug_assert_eq!(len_before, self.active.len());
            let end = self.active.len() + buffer.len() as u64;
            if end > self.active.allocated() {
                self.active.preallocate(end + PREALLOC_BYTES).map_err(|e| Error::io("preallocating the log", &e))?;
            }
            self.active.append(&buffer, Purpose::Batch).map_err(|e| Error::io("writing the log", &e))?;
            if self.crashed() {
                return Ok(false);
            }
            let now = Instant::now();
            let sync = match self.options.durability {
                Durability::Sync => true,
                Durability::Relaxed => now.duration_since(self.last_sync) > RELAXED_SYNC_INTERVAL,
                Durability::None => false,
            };
            if sync {
                self.active.sync(Purpose::Batch).map_err(|e| Error::io("syncing the log", &e))?;
                self.shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
                self.last_sync = now;
            }
            self.unsynced = !sync;
            Ok(!self.crashed())
        })();
        match result {
            Ok(true) => {}
            Ok(false) => return false,
            Err(cause) => {
                self.fail(cause, len_before, batch.last().expect("non-empty").lsn);
                return false;
            }
        }
        let last = batch.last().expect("non-empty").lsn;
        {
            // Parse before taking the lock: readers wait only for the in-memory apply.
            let commits: Vec<(u64, Commit)> = batch.iter().map(|q| (q.lsn, payload::decode(&q.payload).expect("validated at commit()"))).collect();
            let mut written = Vec::new();
            let mut store = self.shared.store.write().expect("store lock");
            for (lsn, commit) in commits {
                match store.apply(lsn, commit, &self.shared.pages) {
                    Ok(w) => written.extend(w),
                    Err(cause) => {
                        // The batch is durable but a page-store read failed (corruption): stop
                        // here; the reopen replays the batch or reports the damage.
                        drop(store);
                        self.fail(cause, self.active.len(), last);
                        return false;
                    }
                }
            }
            let record_bytes = store.record_bytes() as u64;
            // Advance the horizon while the store is still locked: a reader never sees a commit
            // applied but not yet counted, nor the reverse.
            self.shared.visible_lsn.store(last, Ordering::Release);
            drop(store);
            *self.shared.durable_at.lock().expect("durable lock") =
                (self.active_name.clone(), self.active.len(), last);
            // Hand the batch to the gopher; a full queue holds the acknowledgement back
            // (committers wait), it never drops the batch.
            flush::push(&self.shared, Batch::new(last, written), record_bytes);
        }
        self.shared.counters.batches.fetch_add(1, Ordering::Relaxed);
        (self.notify)(last, None);
        true
    }

    /// How long until written batches are due for a quiet-period fdatasync (`relaxed`), or
    /// None when nothing waits for one.
    fn quiet_sync_in(&self) -> Option<Duration> {
        if self.options.durability != Durability::Relaxed || !self.unsynced {
            return None;
        }
        Some(RELAXED_SYNC_INTERVAL.saturating_sub(self.last_sync.elapsed()))
    }

    /// The quiet-period fdatasync. Its failure stops the engine as a failed batch sync does:
    /// acknowledged commits may not be durable, so nothing more is acknowledged. Returns false
    /// when the writer must stop.
    fn quiet_sync(&mut self) -> bool {
        match self.active.sync(Purpose::Batch) {
            Ok(()) => {
                self.shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
                self.last_sync = Instant::now();
                self.unsynced = false;
                true
            }
            Err(e) => {
                let err = Error::new(
                    Code::Io,
                    format!("the log's periodic fdatasync failed ({e}); commits acknowledged in the last {} ms (durability 'relaxed') may be lost on a power failure: reopen the database to recover the last durable state", RELAXED_SYNC_INTERVAL.as_millis()),
                );
                {
                    let mut q = self.shared.queue.lock().expect("queue lock");
                    q.state = State::Failed(err.clone());
                    q.items.clear();
                    q.bytes = 0;
                }
                self.shared.room.notify_all();
                // Every commit up to the visible LSN was acknowledged: only later ones fail.
                (self.notify)(self.shared.visible_lsn.load(Ordering::Acquire), Some(err));
                false
            }
        }
    }

    fn rollover(&mut self, first_lsn: u64) -> Result<()> {
        // A sealed segment ends at its last record: recovery treats damage in any segment but
        // the last as corruption, so its zeroed preallocation must go first.
        self.seal().map_err(|e| Error::io("sealing the log segment before rollover", &e))?;
        self.active = create_segment(&self.log_dir, self.vfs.as_ref(), first_lsn)?;
        self.active_name = segment_name(first_lsn);
        self.shared.counters.segments.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Cut the preallocated zeros and make the segment durable as it is.
    fn seal(&mut self) -> std::io::Result<()> {
        let len = self.active.len();
        if self.active.allocated() > len {
            self.active.truncate(len)?;
        }
        self.active.sync(Purpose::Seal)?;
        self.unsynced = false;
        Ok(())
    }

    fn fail(&mut self, cause: Error, len_before: u64, batch_last_lsn: u64) {
        let code = if cause.code == Code::DiskFull { Code::DiskFull } else { Code::Io };
        // The cause's own advice ("…; check the disk and reopen the database") is replaced by ours.
        let what = cause.message.split("; ").next().unwrap_or(&cause.message);
        let message = if code == Code::DiskFull {
            format!("the disk is full: this commit was not acknowledged ({what}); free disk space and reopen the database")
        } else {
            format!("a log write failed: this commit was not acknowledged ({what}); reopen the database to recover the last durable state")
        };
        let err = Error::new(code, message);
        // Best effort: cut the failed batch off so that it cannot reappear after a reopen.
        let _ = self.active.truncate(len_before);
        {
            let mut q = self.shared.queue.lock().expect("queue lock");
            q.state = State::Failed(err.clone());
            q.items.clear();
            q.bytes = 0;
        }
        self.shared.room.notify_all();
        (self.notify)(batch_last_lsn, Some(err));
    }
}
