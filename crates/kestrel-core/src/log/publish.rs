//! Sharing: the writer publishes each durable batch's tail in the `SHARED` log block itself,
//! right after the batch's fdatasync, so that neither the other participants nor the lock
//! hand-over wait for the JavaScript thread to hear of the batch first. Batches are written only
//! while a handle of this engine holds the directory's write lock (its callers queue them only
//! then), so the writer writes the block only under that lock, as the protocol requires.
//!
//! A failed write of the block loses nothing: the batch is durable in the log, and the next
//! holder of the write lock adopts whole frames past the published tail (docs/FORMAT.md).

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use crate::format::log::parse_segment_name;
use crate::format::shared::{log_block, LOG_BLOCK_AT, SHARED_FILE};
use crate::pio::FileExt;

/// Test-only (multi-process crash tests): `KESTREL_TEST_KILL_AT=synced:<n>` SIGKILLs the
/// process at its n-th publish, after the batch is durable and before its tail is published.
const KILL_AT_ENV: &str = "KESTREL_TEST_KILL_AT";

pub(crate) struct Publisher {
    path: PathBuf,
    /// Opened at the first publish (the participant creates the file before it commits).
    file: Option<File>,
    /// Publishes so far, for the kill point.
    count: u64,
    kill_at: Option<u64>,
}

impl Publisher {
    pub(crate) fn new(dir: PathBuf) -> Publisher {
        let kill_at = std::env::var(KILL_AT_ENV).ok().and_then(|v| v.strip_prefix("synced:").and_then(|n| n.parse().ok()));
        Publisher { path: dir.join(SHARED_FILE), file: None, count: 0, kill_at }
    }

    /// Publish the tail (`lsn`, segment `segment`, `offset`); best effort (see the module).
    pub(crate) fn publish(&mut self, lsn: u64, segment: &str, offset: u64) {
        self.count += 1;
        if self.kill_at == Some(self.count) {
            kill_self();
        }
        let Some(first) = parse_segment_name(segment) else {
            debug_assert!(false, "the active segment has a segment name: {segment}");
            return;
        };
        if self.file.is_none() {
            self.file = OpenOptions::new().read(true).write(true).open(&self.path).ok();
        }
        let Some(file) = &self.file else { return };
        if file.write_all_at(&log_block(lsn, first, offset, false), LOG_BLOCK_AT).is_err() {
            // Opened again next time (the next holder adopts this batch meanwhile).
            self.file = None;
        }
    }
}

#[cfg(unix)]
fn kill_self() {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    const SIGKILL: i32 = 9;
    // SAFETY: kill(2) with this process's id and a valid signal number.
    unsafe {
        kill(std::process::id() as i32, SIGKILL);
    }
}

#[cfg(not(unix))]
fn kill_self() {
    std::process::abort();
}
