//! The group-commit log writer: one thread that takes everything queued while its previous write
//! and fdatasync ran as the next batch, writes it with one `write` (the last frame flagged
//! BATCH_END) and one `fdatasync`, and only then applies the batch to the store (in LSN order),
//! advances the visible LSN, publishes the tail (sharing), hands the batch to the gopher and
//! notifies. Durability before
//! visibility holds because nothing reaches the store before the step that acknowledges it.
//!
//! The active segment keeps [`PREALLOC_BYTES`] of synced zeros ahead of the write position, so a
//! batch's fdatasync has no file-size change to journal; a segment is sealed (cut back to its last
//! record, synced) at rollover and close. A failed write or sync cuts the segment back to before
//! the batch, fails the batch and everything queued, and stops the engine until it is reopened.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::{Durability, Notify, Options, Queued, Shared, State};
use crate::error::{Code, Error, Result};
use crate::flush::{self, Batch};
use crate::format::log::*;
use crate::format::payload::{self, Commit};
use crate::log::publish::Publisher;
use crate::vfs::{sync_dir, LogFile, Purpose, Vfs};

/// The writer keeps this many zeroed bytes ahead of the write position: an fdatasync of data
/// written into pre-zeroed space has no file-size change to journal (about 1.4× the syncs/s of
/// appending on ext4 here; see benchmark/limits).
pub const PREALLOC_BYTES: u64 = 4 << 20;
/// In `relaxed` mode, fdatasync with a batch when the last sync is older than this.
pub const RELAXED_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// The writer thread's own state: the active segment.
pub(crate) struct Writer {
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
    /// Sharing: publishes each durable batch's tail (`log::publish`).
    publisher: Option<Publisher>,
}

/// Create segment `first_lsn` in `log_dir`: the file, its header, both durable.
pub(crate) fn create_segment(log_dir: &Path, vfs: &dyn Vfs, first_lsn: u64) -> Result<Box<dyn LogFile>> {
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
    /// The writer of the active segment `active` (named `active_name`, in `log_dir`).
    pub(crate) fn new(
        shared: Arc<Shared>,
        options: Options,
        log_dir: PathBuf,
        vfs: Arc<dyn Vfs>,
        active: Box<dyn LogFile>,
        active_name: String,
        notify: Notify,
    ) -> Writer {
        let dir = log_dir.parent().expect("the log directory is inside the database directory").to_path_buf();
        let publisher = options.sharing.as_ref().filter(|s| s.publish).map(|_| Publisher::new(dir));
        Writer { shared, options, log_dir, vfs, active, active_name, last_sync: Instant::now(), unsynced: false, notify, publisher }
    }

    /// Run the writer on its own thread until the engine stops or a write fails.
    pub(crate) fn spawn(mut self) -> Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("kestrel-log-writer".into())
            .spawn(move || self.run()) // the writer (and its `notify`) drops when the thread ends
            .map_err(|e| Error::io("starting the log writer thread", &e))
    }

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
                _ if !q.items.is_empty() && !q.held => break,
                // The caller is still queueing this batch: it lets go within its call.
                _ if q.held => {
                    q.writer_idle = true;
                    q = shared.work.wait(q).expect("queue lock");
                    q.writer_idle = false;
                }
                State::Closing => {
                    drop(q);
                    // A failure leaves a zeroed tail, which recovery cuts, but commits that
                    // `relaxed`/`none` acknowledged since the last sync may not be durable:
                    // close() reports it. Sharing: another participant may write on in this
                    // segment, so it is synced, never cut.
                    let closed = if self.shared.sharing.load(Ordering::Acquire) { self.active.sync(Purpose::Seal) } else { self.seal() };
                    if let Err(e) = closed {
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
        // Sharing: catchUp moved the log end (while nothing was queued); continue there.
        if let Some((file, name)) = self.shared.reposition.lock().expect("reposition lock").take() {
            if self.unsynced {
                // Best effort (relaxed): the quiet-period sync would have covered it.
                let _ = self.active.sync(Purpose::Meta);
                self.unsynced = false;
            }
            self.active = file;
            self.active_name = name;
        }
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
            *self.shared.durable_at.lock().expect("durable lock") = (self.active_name.clone(), self.active.len(), last);
            if let Some(p) = &mut self.publisher {
                p.publish(last, &self.active_name, self.active.len());
            }
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
                // Every commit up to the visible LSN was acknowledged: only later ones fail.
                self.stop_acknowledging(err, self.shared.visible_lsn.load(Ordering::Acquire));
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
        self.stop_acknowledging(err, batch_last_lsn);
    }

    /// After a failed write or fdatasync: refuse every queued and later commit with `err`, and
    /// report the commits after the last acknowledged one up to `last_lsn` as failed with it.
    fn stop_acknowledging(&mut self, err: Error, last_lsn: u64) {
        {
            let mut q = self.shared.queue.lock().expect("queue lock");
            q.state = State::Failed(err.clone());
            q.items.clear();
            q.bytes = 0;
        }
        self.shared.room.notify_all();
        (self.notify)(last_lsn, Some(err));
    }
}
