//! One engine per shared directory per process: threads (Node Workers) that open the same
//! directory with the sharing option get handles to one [`Engine`], keyed by the directory's
//! device and inode, instead of one engine each. Each handle is still its own participant above
//! the engine (its slot, its locks, its transactions); the engine's memory, page cache, writer
//! and group commit are shared.
//!
//! What differs per handle lives here: the durability callback (every handle hears every batch
//! and settles its own commits), the retention horizon (the engine keeps what the oldest handle
//! needs), the directory's write lock while the handle's thread holds it (a duplicate of its
//! socket, let go only once the handle's commits are written, even if the thread ended first),
//! and closing (the engine closes with its last handle).

use std::collections::HashMap;
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::engine::{Engine, Notify, Options};
use crate::error::{Error, Result};

/// Device and inode of a directory.
type DirKey = (u64, u64);

/// A handle's retention horizon and the snapshots below it it still reads.
struct Horizon {
    horizon: u64,
    pinned: Vec<u64>,
}

struct Host {
    engine: Engine,
    key: Option<DirKey>,
    /// Invariant: the handles not closed yet; changed only under the registry lock.
    handles: AtomicUsize,
    /// Invariant: one entry per open handle; the engine closes when it empties.
    listeners: Arc<Mutex<Vec<(u64, Notify)>>>,
    /// Invariant: one entry per open handle that has set a horizon.
    horizons: Mutex<HashMap<u64, Horizon>>,
}

/// Engines open for sharing in this process, that new handles attach to.
type Hosts = HashMap<DirKey, Arc<Host>>;

fn hosts() -> &'static Mutex<Hosts> {
    static HOSTS: OnceLock<Mutex<Hosts>> = OnceLock::new();
    HOSTS.get_or_init(|| Mutex::new(HashMap::new()))
}

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

/// One thread's use of an engine. Dereferences to the engine for everything that is the same
/// for all handles.
pub struct EngineHandle {
    host: Arc<Host>,
    id: u64,
    closed: AtomicBool,
    /// This handle holds the writer (`hold_writer`): let go at close if its thread could not.
    holding: AtomicBool,
    /// The directory's write lock while this handle's thread holds it: a duplicate of the lock's
    /// socket (`keep_write_lock`). A thread's own sockets close when it ends, before anything
    /// else of it is cleaned up; this one keeps the lock until the handle's commits are written.
    write_lock: Mutex<Option<WriteLockFd>>,
}

#[cfg(unix)]
type WriteLockFd = std::os::fd::OwnedFd;
#[cfg(not(unix))]
type WriteLockFd = ();

/// How long a closing handle waits for its commits before letting go of the write lock.
const QUEUE_WRITTEN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl EngineHandle {
    /// Open `dir`, or, with the sharing option, attach to the engine this process already has
    /// open on it (its options stay those of the first opener). `notify` hears every batch.
    pub fn open(dir: &Path, options: Options, notify: Notify) -> Result<EngineHandle> {
        let id = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        // A fault-injecting engine (tests) is never shared: its faults are its own.
        let key = match &options.sharing {
            Some(s) if !s.apart && options.faults.is_none() => dir_key(dir)?,
            _ => None,
        };
        let Some(key) = key else {
            return Ok(EngineHandle::new(Arc::new(Host::open(dir, options, None, id, notify)?), id));
        };
        // Held while opening: a second thread waits for the first one's engine instead of
        // starting its own over the same files.
        let mut hosts = hosts().lock().expect("hosts lock");
        // A failed or crashed engine takes no new handles: the opener recovers in an engine of
        // its own, which later openers attach to (the old one closes with its last handle).
        if let Some(host) = hosts.get(&key).filter(|h| h.engine.is_open()) {
            host.listeners.lock().expect("listeners lock").push((id, notify));
            // Until it sets its own: a new handle reads from where the engine is now.
            let start = host.engine.last_lsn();
            host.horizons.lock().expect("horizons lock").insert(id, Horizon { horizon: start, pinned: Vec::new() });
            host.handles.fetch_add(1, Ordering::AcqRel);
            return Ok(EngineHandle::new(host.clone(), id));
        }
        let host = Arc::new(Host::open(dir, options, Some(key), id, notify)?);
        hosts.insert(key, host.clone());
        Ok(EngineHandle::new(host, id))
    }

    fn new(host: Arc<Host>, id: u64) -> EngineHandle {
        EngineHandle { host, id, closed: AtomicBool::new(false), holding: AtomicBool::new(false), write_lock: Mutex::new(None) }
    }

    /// While held, the engine's writer starts no batch (see [`Engine::hold_writer`]).
    pub fn hold_writer(&self, hold: bool) {
        self.holding.store(hold, Ordering::Release);
        self.host.engine.hold_writer(hold)
    }

    /// This thread took the directory's write lock, whose socket is `fd`: keep a duplicate of it,
    /// so that the lock stays taken until [`EngineHandle::let_go_write_lock`] — or, if the thread
    /// ends first, until the commits it queued are written (at close).
    pub fn keep_write_lock(&self, fd: i32) -> Result<()> {
        let kept = duplicate(fd)?;
        *self.write_lock.lock().expect("write lock fd") = Some(kept);
        Ok(())
    }

    /// This thread lets go of the directory's write lock (its commits are settled): drop the
    /// duplicate first, so that the lock is free once the thread closes its own socket.
    pub fn let_go_write_lock(&self) {
        self.write_lock.lock().expect("write lock fd").take();
    }

    /// Handles open on this engine in this process (this one included).
    pub fn handles(&self) -> usize {
        self.host.handles.load(Ordering::Acquire)
    }

    /// This handle's retention horizon (see [`Engine::set_horizon`]); the engine keeps what the
    /// oldest handle needs.
    pub fn set_horizon(&self, horizon: u64, sweep: bool, pinned: &[u64]) {
        let mut horizons = self.host.horizons.lock().expect("horizons lock");
        horizons.insert(self.id, Horizon { horizon, pinned: pinned.to_vec() });
        let (h, p) = combined(&horizons);
        // Under the lock: two handles setting at once apply in the order they combined.
        self.host.engine.set_horizon(h, sweep, &p);
    }

    /// Detach this handle; the last one closes the engine (see [`Engine::close`]).
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // A thread that ended while holding the writer or the write lock (a Worker stopped
        // mid-commit): its queued commits are written before the lock goes.
        if self.holding.swap(false, Ordering::AcqRel) {
            self.host.engine.hold_writer(false);
        }
        let kept = self.write_lock.lock().expect("write lock fd").take();
        let closed = self.detach();
        if kept.is_some() {
            self.host.engine.wait_queue_written(QUEUE_WRITTEN_WAIT);
        }
        drop(kept);
        closed
    }

    /// The rest of `close`: detach from the host; the last handle closes the engine.
    fn detach(&self) -> Result<()> {
        let last = {
            let mut hosts = hosts().lock().expect("hosts lock");
            let before = self.host.handles.fetch_sub(1, Ordering::AcqRel);
            debug_assert!(before > 0);
            if before == 1 {
                if let Some(key) = self.host.key {
                    if hosts.get(&key).is_some_and(|h| Arc::ptr_eq(h, &self.host)) {
                        hosts.remove(&key);
                    }
                }
            }
            before == 1
        };
        self.host.listeners.lock().expect("listeners lock").retain(|(id, _)| *id != self.id);
        if last {
            return self.host.engine.close();
        }
        let mut horizons = self.host.horizons.lock().expect("horizons lock");
        if horizons.remove(&self.id).is_some() && !horizons.is_empty() {
            let (h, p) = combined(&horizons);
            self.host.engine.set_horizon(h, false, &p);
        }
        Ok(())
    }
}

/// A duplicate of file descriptor `fd` (close-on-exec), owned.
#[cfg(unix)]
fn duplicate(fd: i32) -> Result<WriteLockFd> {
    use std::os::fd::BorrowedFd;
    if fd < 0 {
        return Err(Error::new(crate::error::Code::InvalidArgument, format!("not a file descriptor: {fd}")));
    }
    // SAFETY: the caller's descriptor is open for the duration of this call; it is only duplicated.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned().map_err(|e| Error::io("keeping the write lock", &e))
}

#[cfg(not(unix))]
fn duplicate(_fd: i32) -> Result<WriteLockFd> {
    Ok(())
}

/// Device and inode of `dir` (None where the platform has no inodes: no engine is shared there).
#[cfg(unix)]
fn dir_key(dir: &Path) -> Result<Option<DirKey>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(&format!("reading {}", dir.display()), &e))?;
    Ok(Some((meta.dev(), meta.ino())))
}

#[cfg(not(unix))]
fn dir_key(_dir: &Path) -> Result<Option<DirKey>> {
    Ok(None)
}

/// The oldest horizon of all handles, and every snapshot any of them pins below it.
fn combined(horizons: &HashMap<u64, Horizon>) -> (u64, Vec<u64>) {
    let h = horizons.values().map(|x| x.horizon).min().unwrap_or(0);
    // Pins at or above the oldest horizon are kept by it anyway.
    let mut pinned: Vec<u64> = horizons.values().flat_map(|x| x.pinned.iter().copied()).filter(|p| *p < h).collect();
    pinned.sort_unstable();
    pinned.dedup();
    (h, pinned)
}

impl Host {
    fn open(dir: &Path, options: Options, key: Option<DirKey>, id: u64, notify: Notify) -> Result<Host> {
        let listeners: Arc<Mutex<Vec<(u64, Notify)>>> = Arc::new(Mutex::new(vec![(id, notify)]));
        let hear = listeners.clone();
        let fan_out: Notify = Box::new(move |lsn, err| {
            for (_, n) in hear.lock().expect("listeners lock").iter() {
                n(lsn, err.clone());
            }
        });
        let engine = Engine::open(dir, options, fan_out)?;
        Ok(Host { engine, key, handles: AtomicUsize::new(1), listeners, horizons: Mutex::new(HashMap::new()) })
    }
}

impl Deref for EngineHandle {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.host.engine
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        // A handle dropped without close (its thread ended): detach it all the same.
        let _ = self.close();
    }
}
