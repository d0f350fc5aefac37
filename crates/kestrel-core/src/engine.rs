//! The engine: the serial log with a group-commit writer thread, and the store it publishes to.
//!
//! A commit is validated and given the next LSN on the caller's thread, then queued. The writer
//! takes everything queued while its previous write + fdatasync ran as the next batch, writes it
//! with one `write` and one `fdatasync`, and only then applies the batch to the store (in LSN
//! order), advances the visible LSN and notifies. I1 (durability before visibility) holds because
//! nothing reaches the store before the step that acknowledges it.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Code, Error, Result};
use crate::format::*;
use crate::payload::{self, Commit};
use crate::recovery::{self, prepare_directory};
use crate::store::{ScanBounds, Store};
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
}

impl Default for Options {
    fn default() -> Self {
        Options { durability: Durability::Sync, segment_bytes_max: 64 << 20, group_bytes_max: 4 << 20, faults: None, retain_commits: 0 }
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
struct Counters {
    batches: AtomicU64,
    syncs: AtomicU64,
    segments: AtomicU64,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    room: Condvar,
    store: RwLock<Store>,
    /// LSN of the last commit applied to the store; only the writer advances it.
    visible_lsn: AtomicU64,
    counters: Counters,
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
}

pub struct Engine {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    faulty: Option<FaultyVfs>,
}

/// The writer thread's own state: the active segment.
struct Writer {
    shared: Arc<Shared>,
    options: Options,
    log_dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    active: Box<dyn LogFile>,
    last_sync: Instant,
    /// Owned by the writer thread (the only caller), so that it is dropped — and a JavaScript
    /// callback behind it released — as soon as the writer stops: on close, crash or failure.
    notify: Notify,
}

impl Engine {
    /// Open (or create) the database in `dir` and recover it.
    pub fn open(dir: &Path, options: Options, notify: Notify) -> Result<Engine> {
        if options.group_bytes_max == 0 || options.segment_bytes_max == 0 {
            return Err(Error::new(Code::InvalidArgument, "segmentBytes and groupBytesMax must be positive"));
        }
        prepare_directory(dir)?;
        let recovered = recovery::recover(dir)?;
        let faulty = options.faults.map(FaultyVfs::new);
        let vfs: Arc<dyn Vfs> = match &faulty {
            Some(f) => Arc::new(f.clone()),
            None => Arc::new(RealVfs),
        };
        let log_dir = dir.join(LOG_DIR);
        let mut store = Store::default();
        let last_lsn = recovered.last_lsn;
        for (lsn, commit) in recovered.commits {
            store.apply(lsn, commit);
        }
        // Replay installed every version; keep only what the retention window asks for.
        store.set_horizon(last_lsn.saturating_sub(options.retain_commits), true);
        let active = match recovered.segments.last() {
            Some(seg) => vfs.open_log(&log_dir.join(&seg.name), seg.len).map_err(|e| Error::io("opening the active log segment", &e))?,
            None => create_segment(&log_dir, vfs.as_ref(), last_lsn + 1)?,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { items: VecDeque::new(), bytes: 0, next_lsn: last_lsn + 1, state: State::Open, writer_idle: false }),
            work: Condvar::new(),
            room: Condvar::new(),
            store: RwLock::new(store),
            visible_lsn: AtomicU64::new(last_lsn),
            counters: Counters::default(),
            close_error: Mutex::new(None),
        });
        shared.counters.segments.store(recovered.segments.len().max(1) as u64, Ordering::Relaxed);
        let mut writer = Writer { shared: shared.clone(), options, log_dir, vfs, active, last_sync: Instant::now(), notify };
        let handle = std::thread::Builder::new()
            .name("kestrel-log-writer".into())
            .spawn(move || writer.run()) // `writer` (and its `notify`) drops when the thread ends
            .map_err(|e| Error::io("starting the log writer thread", &e))?;
        Ok(Engine { shared, writer: Mutex::new(Some(handle)), faulty })
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
    pub fn get(&self, collection: &str, key: &[u8], snapshot: u64) -> Option<Vec<u8>> {
        self.shared.store.read().expect("store lock").get(collection, key, snapshot).map(|v| v.to_vec())
    }

    /// Run `f` on the value of a key at `snapshot` without copying it out of the store.
    pub fn with_value<R>(&self, collection: &str, key: &[u8], snapshot: u64, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        f(self.shared.store.read().expect("store lock").get(collection, key, snapshot))
    }

    pub fn scan(&self, collection: &str, bounds: &ScanBounds, snapshot: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.shared.store.read().expect("store lock").scan(collection, bounds, snapshot)
    }

    /// Allow pruning of versions no snapshot ≥ `horizon` can see (the horizon never decreases).
    pub fn set_horizon(&self, horizon: u64, sweep: bool) {
        self.shared.store.write().expect("store lock").set_horizon(horizon, sweep)
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
        Stats {
            durable_lsn: self.last_lsn(),
            batches: c.batches.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            segments: c.segments.load(Ordering::Relaxed),
            keys: self.shared.store.read().expect("store lock").key_count() as u64,
            versions: self.shared.store.read().expect("store lock").version_count() as u64,
        }
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
        match self.shared.close_error.lock().expect("close error").take() {
            Some(e) => Err(e),
            None => Ok(()),
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
        faulty.crash(tear_bytes).map_err(|e| Error::io("simulating a crash", &e))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop(State::Closing);
    }
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
                State::Open => {
                    q.writer_idle = true;
                    q = shared.work.wait(q).expect("queue lock");
                    q.writer_idle = false;
                }
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
            let mut store = self.shared.store.write().expect("store lock");
            for (lsn, commit) in commits {
                store.apply(lsn, commit);
            }
            // Advance the horizon while the store is still locked: a reader never sees a commit
            // applied but not yet counted, nor the reverse.
            self.shared.visible_lsn.store(last, Ordering::Release);
        }
        self.shared.counters.batches.fetch_add(1, Ordering::Relaxed);
        (self.notify)(last, None);
        true
    }

    fn rollover(&mut self, first_lsn: u64) -> Result<()> {
        // A sealed segment ends at its last record: recovery treats damage in any segment but
        // the last as corruption, so its zeroed preallocation must go first.
        self.seal().map_err(|e| Error::io("sealing the log segment before rollover", &e))?;
        self.active = create_segment(&self.log_dir, self.vfs.as_ref(), first_lsn)?;
        self.shared.counters.segments.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Cut the preallocated zeros and make the segment durable as it is.
    fn seal(&mut self) -> std::io::Result<()> {
        let len = self.active.len();
        if self.active.allocated() > len {
            self.active.truncate(len)?;
        }
        self.active.sync(Purpose::Seal)
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
