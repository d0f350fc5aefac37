//! The file layer under the log, and its fault-injecting twin (SQLite crash-VFS style). The
//! TypeScript engine has the same pair in `lib/core/ts/vfs.ts`.
//!
//! Counting rule shared with the TS twin: only writes and fdatasyncs issued for commit *batches*
//! ([`Purpose::Batch`]) count toward `fail_write_at` / `fail_fsync_at`; segment headers
//! and directory syncs do not.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use crate::pio::sync_dir;
use crate::pio::FileExt;

/// Why an operation is issued: only `Batch` operations are counted by the fault layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Batch,
    Meta,
    /// The fdatasync that seals a segment (rollover, close).
    Seal,
}

/// One open log segment. `len` is the write position (the end of the records); the file may be
/// longer, pre-filled with zeros by [`LogFile::preallocate`], so that an fdatasync after a write
/// has no file-size change to journal.
#[allow(clippy::len_without_is_empty)] // a segment is never empty: it always holds its header
pub trait LogFile: Send {
    fn len(&self) -> u64;
    /// Physical size: ≥ `len`.
    fn allocated(&self) -> u64;
    /// Write `data` at the write position and advance it.
    fn append(&mut self, data: &[u8], purpose: Purpose) -> io::Result<()>;
    fn sync(&mut self, purpose: Purpose) -> io::Result<()>;
    /// Cut the file (and the write position) to `len`.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Zero-fill the file up to `size` bytes and sync it (not counted by the fault layer).
    fn preallocate(&mut self, size: u64) -> io::Result<()>;
}

/// Opens log files.
pub trait Vfs: Send + Sync {
    fn open_log(&self, path: &Path, len: u64) -> io::Result<Box<dyn LogFile>>;
}

pub struct RealFile {
    file: File,
    /// Invariant: len <= allocated.
    len: u64,
    allocated: u64,
}

impl LogFile for RealFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn allocated(&self) -> u64 {
        self.allocated
    }

    fn append(&mut self, data: &[u8], _purpose: Purpose) -> io::Result<()> {
        self.file.write_all_at(data, self.len)?;
        self.len += data.len() as u64;
        self.allocated = self.allocated.max(self.len);
        Ok(())
    }

    fn preallocate(&mut self, size: u64) -> io::Result<()> {
        const CHUNK: usize = 1 << 20;
        let zeros = vec![0u8; CHUNK];
        let mut at = self.allocated;
        // Bounded: each step writes up to one chunk towards `size`.
        while at < size {
            let n = ((size - at) as usize).min(CHUNK);
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.file.sync_data()?;
        self.allocated = self.allocated.max(size);
        Ok(())
    }

    fn sync(&mut self, _purpose: Purpose) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        self.allocated = len;
        Ok(())
    }
}

/// The file's size, at least `len`: a segment continued at `len` may already be preallocated
/// (zeros past the write position, by this or another process sharing the directory).
fn physical_len(file: &File, len: u64) -> io::Result<u64> {
    Ok(file.metadata()?.len().max(len))
}

/// The plain file layer.
pub struct RealVfs;

impl Vfs for RealVfs {
    fn open_log(&self, path: &Path, len: u64) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let allocated = physical_len(&file, len)?;
        Ok(Box::new(RealFile { file, len, allocated }))
    }
}

/// Which error an injected fault reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Errno {
    #[default]
    Eio,
    Enospc,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct FaultOptions {
    pub fail_write_at: Option<u64>,
    pub fail_fsync_at: Option<u64>,
    pub errno: Errno,
    /// Fail every fdatasync that seals a segment (rollover, close).
    pub fail_seal_sync: bool,
}

struct Tracked {
    path: PathBuf,
    /// Write position at the last successful sync: the records before it are durable.
    synced_len: u64,
    /// Current write position.
    len: u64,
    open: bool,
}

#[derive(Default)]
struct FaultState {
    writes: u64,
    syncs: u64,
    files: Vec<Tracked>,
}

/// Fault-injecting file layer for tests.
#[derive(Clone, Default)]
pub struct FaultyVfs {
    options: FaultOptions,
    state: Arc<Mutex<FaultState>>,
    /// While true, batch fdatasyncs wait (tests hold a commit between write and durability).
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

fn injected(errno: Errno, what: &str) -> io::Error {
    match errno {
        Errno::Eio => io::Error::other(format!("EIO: input/output error (injected at {what})")),
        Errno::Enospc => io::Error::from_raw_os_error(28),
    }
}

impl FaultyVfs {
    pub fn new(options: FaultOptions) -> Self {
        FaultyVfs { options, state: Arc::default(), gate: Arc::default() }
    }

    /// Hold (true) or release (false) every batch fdatasync.
    pub fn hold_syncs(&self, hold: bool) {
        let (lock, cond) = &*self.gate;
        *lock.lock().expect("gate") = hold;
        cond.notify_all();
    }

    /// Power loss: every file keeps its synced records plus `tear_bytes` of what was written
    /// after them; the rest of what was written reads back as the zeros that were there before.
    pub fn crash(&self, tear_bytes: u64) -> io::Result<()> {
        let mut st = self.state.lock().expect("fault state");
        for t in st.files.iter_mut().filter(|t| t.open) {
            let unsynced = t.len.saturating_sub(t.synced_len);
            let keep = t.synced_len + tear_bytes.min(unsynced);
            if keep < t.len {
                let f = OpenOptions::new().write(true).open(&t.path)?;
                f.write_all_at(&vec![0u8; (t.len - keep) as usize], keep)?;
            }
            t.len = keep;
            t.open = false;
        }
        Ok(())
    }
}

struct FaultyFile {
    inner: RealFile,
    index: usize,
    vfs: FaultyVfs,
}

impl LogFile for FaultyFile {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn allocated(&self) -> u64 {
        self.inner.allocated()
    }

    fn preallocate(&mut self, size: u64) -> io::Result<()> {
        self.inner.preallocate(size)
    }

    fn append(&mut self, data: &[u8], purpose: Purpose) -> io::Result<()> {
        let mut st = self.vfs.state.lock().expect("fault state");
        if purpose == Purpose::Batch {
            st.writes += 1;
            if self.vfs.options.fail_write_at == Some(st.writes) {
                return Err(injected(self.vfs.options.errno, &format!("write #{}", st.writes)));
            }
        }
        self.inner.append(data, purpose)?;
        st.files[self.index].len = self.inner.len();
        Ok(())
    }

    fn sync(&mut self, purpose: Purpose) -> io::Result<()> {
        if purpose == Purpose::Batch {
            let (lock, cond) = &*self.vfs.gate;
            let mut held = lock.lock().expect("gate");
            // Bounded by the test that holds the gate: it releases it, or crashes the engine.
            while *held {
                held = cond.wait(held).expect("gate");
            }
        }
        if purpose == Purpose::Seal && self.vfs.options.fail_seal_sync {
            return Err(injected(self.vfs.options.errno, "the sealing fdatasync"));
        }
        let mut st = self.vfs.state.lock().expect("fault state");
        if purpose == Purpose::Batch {
            st.syncs += 1;
            if self.vfs.options.fail_fsync_at == Some(st.syncs) {
                return Err(injected(self.vfs.options.errno, &format!("fdatasync #{}", st.syncs)));
            }
        }
        self.inner.sync(purpose)?;
        st.files[self.index].synced_len = self.inner.len();
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut st = self.vfs.state.lock().expect("fault state");
        self.inner.truncate(len)?;
        let t = &mut st.files[self.index];
        t.len = len;
        t.synced_len = t.synced_len.min(len);
        Ok(())
    }
}

impl Drop for FaultyFile {
    fn drop(&mut self) {
        if let Ok(mut st) = self.vfs.state.lock() {
            // A closed file was synced before it was closed (rollover, close): nothing to lose.
            if st.files[self.index].synced_len == st.files[self.index].len {
                st.files[self.index].open = false;
            }
        }
    }
}

impl Vfs for FaultyVfs {
    fn open_log(&self, path: &Path, len: u64) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let allocated = physical_len(&file, len)?;
        let mut st = self.state.lock().expect("fault state");
        st.files.push(Tracked { path: path.to_path_buf(), synced_len: len, len, open: true });
        let index = st.files.len() - 1;
        drop(st);
        Ok(Box::new(FaultyFile { inner: RealFile { file, len, allocated }, index, vfs: self.clone() }))
    }
}
