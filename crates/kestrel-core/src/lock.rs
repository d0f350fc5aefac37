//! The directory lock: one engine writes a database directory at a time, whichever process,
//! thread, JavaScript realm or copy of the package it runs in (docs/FORMAT.md "The directory
//! lock"). The TypeScript twin is `lib/lock.ts`; both take the same lock, so a
//! native and a ts engine exclude each other too.
//!
//! Linux: an abstract Unix socket bound to `kestreldb/<device>/<inode>` of the directory (hex).
//! Binding a name is exclusive within a network namespace, across processes and threads alike,
//! and the kernel frees the name when the socket closes — also when its process dies, so a
//! crashed owner never leaves a stale lock. The socket is never listened on or accepted from.
//!
//! Other platforms take the lock in `lib/lock.ts` before the engine opens (a `LOCK` file
//! created atomically, holding the owner's pid); this module then does nothing.
//!
//! Either way the owner writes `LOCK` (`pid=<pid> engine=<name> nonce=<hex>`), replaced
//! atomically; on Linux it only serves to name the owner in the error a later opener gets.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::Result;
#[cfg(target_os = "linux")]
use crate::error::{Code, Error};
use crate::format::log::LOCK_FILE;

/// Held while an engine owns its directory; released on drop (after the engine's threads stop).
pub struct DirLock {
    path: PathBuf,
    nonce: String,
    #[cfg(target_os = "linux")]
    _socket: std::os::unix::net::UnixListener,
}

/// Bytes of an abstract socket name as Node binds it: `sun_path` less its leading NUL.
#[cfg(target_os = "linux")]
const SUN_PATH_NAME_BYTES: usize = 107;

/// The abstract socket name of directory `dir` (the same bytes as `lockName` in lib/lock.ts).
#[cfg(target_os = "linux")]
pub fn lock_name(dir: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(dir).map_err(|e| Error::io(&format!("reading {}", dir.display()), &e))?;
    Ok(format!("kestreldb/{:x}/{:x}", m.dev(), m.ino()))
}

/// What `LOCK` says of its owner, for the error message: "process 123 (engine ts)" or, for this
/// process, "another thread or copy of kestreldb in this process (engine native)".
///
/// The owner writes `LOCK` just after taking the lock: a line that is missing or names a process
/// that is gone is read again for a moment before it is reported as unknown.
pub fn describe_owner(dir: &Path) -> String {
    const READS_MAX: u32 = 20;
    let alive = |text: &str| {
        let pid = text.split_whitespace().find_map(|f| f.strip_prefix("pid=")).and_then(|p| p.parse::<u32>().ok());
        pid.is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists())
    };
    let mut text = String::new();
    for read in 0..READS_MAX {
        if read > 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        text = fs::read_to_string(dir.join(LOCK_FILE)).unwrap_or_default();
        if !cfg!(target_os = "linux") || alive(&text) {
            break;
        }
    }
    let field = |name: &str| text.split_whitespace().find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')).map(str::to_string));
    let engine = field("engine").map(|e| format!(" (engine {e})")).unwrap_or_default();
    match field("pid").and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) if pid == std::process::id() => format!("another thread or copy of kestreldb in this process{engine}"),
        Some(pid) => format!("process {pid}{engine}"),
        None => "another process or thread".to_string(),
    }
}

#[cfg(target_os = "linux")]
fn locked(dir: &Path) -> Error {
    Error::new(
        Code::Locked,
        format!(
            "{} is open in {}; close it there first (one engine per database directory: share one open database between the threads of a process, or open it from one process only)",
            dir.display(),
            describe_owner(dir)
        ),
    )
}

impl DirLock {
    /// Take the lock of `dir` (an existing directory) for `engine`, or fail with `KESTREL_LOCKED`.
    #[cfg(target_os = "linux")]
    pub fn acquire(dir: &Path, engine: &str) -> Result<DirLock> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixListener};
        // Node (libuv) binds abstract names padded with NULs to the whole `sun_path` (108 bytes
        // with the leading NUL); the same bytes here, or the two engines would not exclude
        // each other.
        let mut name = lock_name(dir)?.into_bytes();
        debug_assert!(name.len() <= SUN_PATH_NAME_BYTES);
        name.resize(SUN_PATH_NAME_BYTES, 0);
        let addr = SocketAddr::from_abstract_name(&name).map_err(|e| Error::io("naming the directory lock", &e))?;
        let socket = match UnixListener::bind_addr(&addr) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(locked(dir)),
            Err(e) => return Err(Error::io("taking the directory lock", &e)),
        };
        let lock = DirLock { path: dir.join(LOCK_FILE), nonce: nonce(), _socket: socket };
        lock.write_owner(engine)?;
        Ok(lock)
    }

    /// Other platforms: `lib/lock.ts` took the lock before the engine was opened.
    #[cfg(not(target_os = "linux"))]
    pub fn acquire(dir: &Path, _engine: &str) -> Result<DirLock> {
        Ok(DirLock { path: dir.join(LOCK_FILE), nonce: String::new() })
    }

    /// Replace `LOCK` with this owner's line (a finished temporary file renamed over it, so a
    /// reader never sees it half-written).
    #[cfg(target_os = "linux")]
    fn write_owner(&self, engine: &str) -> Result<()> {
        let tmp = self.path.with_file_name(format!("{LOCK_FILE}.{}.tmp", self.nonce));
        let line = format!("pid={} engine={engine} nonce={}\n", std::process::id(), self.nonce);
        fs::write(&tmp, line).and_then(|_| fs::rename(&tmp, &self.path)).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("writing the LOCK file", &e)
        })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Remove `LOCK` only while it is still ours, and before the socket closes: once the
        // name is free a new owner may already have written its own line.
        if !self.nonce.is_empty() {
            if let Ok(text) = fs::read_to_string(&self.path) {
                if text.split_whitespace().any(|f| f.strip_prefix("nonce=") == Some(self.nonce.as_str())) {
                    let _ = fs::remove_file(&self.path);
                }
            }
        }
    }
}

/// A value no other owner of this directory has: pid, time and a per-process counter.
#[cfg(target_os = "linux")]
fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:x}{:x}", std::process::id(), nanos as u64, COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kestrel-lock-{label}-{}", nonce()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_second_owner_is_refused_until_the_first_drops() {
        let dir = temp_dir("second");
        let first = DirLock::acquire(&dir, "native").unwrap();
        let err = DirLock::acquire(&dir, "native").err().expect("the second owner is refused");
        assert_eq!(err.code, Code::Locked);
        assert!(err.message.contains("another thread or copy of kestreldb in this process (engine native)"), "{}", err.message);
        drop(first);
        assert!(!dir.join(LOCK_FILE).exists(), "the owner removes its LOCK line");
        let again = DirLock::acquire(&dir, "ts").unwrap();
        assert!(fs::read_to_string(dir.join(LOCK_FILE)).unwrap().contains("engine=ts"));
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn threads_exclude_each_other() {
        let dir = temp_dir("threads");
        let wins = std::sync::atomic::AtomicU32::new(0);
        let tried = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let lock = DirLock::acquire(&dir, "native");
                    if lock.is_ok() {
                        wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    // The winner holds the lock until every thread has tried.
                    tried.wait();
                    drop(lock);
                });
            }
        });
        assert_eq!(wins.into_inner(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_lock_line_does_not_lock() {
        let dir = temp_dir("stale");
        fs::write(dir.join(LOCK_FILE), "pid=1 engine=ts nonce=dead\n").unwrap();
        let lock = DirLock::acquire(&dir, "native").expect("only the socket decides");
        assert!(fs::read_to_string(dir.join(LOCK_FILE)).unwrap().contains(&format!("pid={}", std::process::id())));
        drop(lock);
        fs::remove_dir_all(&dir).unwrap();
    }
}
