//! N-API binding for kestreldb: a thin skin over `kestrel-core`. No engine logic lives here —
//! only argument conversion, error-code mapping and the durability callback — and `mapped.rs`,
//! a memory-mapped view of a file's head for the sharing protocol.

use std::path::Path;

use kestrel_core::pages::PageFault;
use kestrel_core::{CheckpointOptions, Durability, EngineHandle, Errno, FaultOptions, LogTail, Options, ScanBounds, Sharing};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

pub mod mapped;

/// Map an engine error to a JS error whose `code` is the stable KESTREL_* string.
fn to_js(err: kestrel_core::Error) -> napi::Error<String> {
    napi::Error::new(err.code.as_str().to_string(), err.message)
}

fn invalid(message: String) -> napi::Error<String> {
    napi::Error::new("KESTREL_INVALID_ARGUMENT".to_string(), message)
}

/// Fault injection for tests (see docs/ARCHITECTURE.md).
#[napi(object)]
pub struct NativeFaults {
    pub fail_write_at: Option<i64>,
    pub fail_fsync_at: Option<i64>,
    pub errno: Option<String>,
    pub fail_seal_sync: Option<bool>,
}

/// Options the TypeScript layer has already validated and defaulted.
#[napi(object)]
pub struct NativeOpenOptions {
    pub durability: String,
    pub segment_bytes: i64,
    pub group_bytes_max: i64,
    pub faults: Option<NativeFaults>,
    /// Versions of the last this-many commits stay readable after open.
    pub retain_commits: i64,
    pub cache_bytes: i64,
    pub checkpoint_bytes: i64,
    /// 0 = no age threshold.
    pub checkpoint_interval_ms: i64,
    pub flush_queue_bytes: i64,
    pub deferred_bytes_max: i64,
    /// Present: one of several participants sharing the directory (`CoreOpenOptions.sharing`).
    pub sharing: Option<NativeSharing>,
}

/// `CoreSharing`.
#[napi(object)]
pub struct NativeSharing {
    pub tail: Option<NativeLogTail>,
    pub apart: Option<bool>,
    pub publish: Option<bool>,
}

/// `LogTail`: the next frame goes to `segment` at byte `offset`; the one before has LSN `lsn`.
#[napi(object)]
pub struct NativeLogTail {
    pub lsn: f64,
    pub segment: String,
    pub offset: f64,
}

/// What `catchUpFrom` returns: the payloads not seen yet, in LSN order, and the new position.
#[napi(object)]
pub struct NativeCaughtUp {
    pub payloads: Vec<Buffer>,
    pub end: NativeLogTail,
}

/// `CheckpointRef`.
#[napi(object)]
pub struct NativeCheckpointRef {
    pub seq: f64,
    pub lsn: f64,
}

/// `CoreCheckpointOptions`.
#[napi(object)]
pub struct NativeCheckpointOptions {
    pub reuse_free_pages: Option<bool>,
    pub trim_below_lsn: Option<f64>,
}

/// A non-negative integer that fits an f64 exactly.
fn whole(name: &str, v: f64) -> std::result::Result<u64, napi::Error<String>> {
    if !(0.0..=9_007_199_254_740_991.0).contains(&v) || v.fract() != 0.0 {
        return Err(invalid(format!("{name} must be a non-negative integer, got {v}")));
    }
    Ok(v as u64)
}

fn tail_from(t: NativeLogTail) -> std::result::Result<LogTail, napi::Error<String>> {
    if kestrel_core::format::log::parse_segment_name(&t.segment).is_none() {
        return Err(invalid(format!("tail.segment must be a log segment file name, got {:?}", t.segment)));
    }
    Ok(LogTail { lsn: whole("tail.lsn", t.lsn)?, segment: t.segment, offset: whole("tail.offset", t.offset)? })
}

/// What a backup copies (see `Engine::backup_plan`).
#[napi(object)]
pub struct NativeBackupPlan {
    pub commit_id: f64,
    pub seq: f64,
    pub pages: Uint32Array,
    pub page_count: u32,
    pub segment_names: Vec<String>,
    pub segment_bytes: Vec<f64>,
}

/// Engine counters: the shape of `CoreStats` in lib/core/types.ts (less `engine`), so that the
/// TypeScript side maps nothing.
#[napi(object)]
pub struct NativeStats {
    pub durable_lsn: i64,
    pub batches: i64,
    pub syncs: i64,
    pub segments: i64,
    pub keys: i64,
    pub versions: i64,
    pub record_bytes: i64,
    pub retired: i64,
    pub checkpoint_lsn: i64,
    pub page_count: i64,
    pub index_entries: i64,
    pub age_group: i64,
    pub flow: NativeFlowStats,
}

/// The gopher's and flusher's counters (`CoreStats.flow`).
#[napi(object)]
pub struct NativeFlowStats {
    pub queued_batches: i64,
    pub queued_bytes: i64,
    pub deferred_batches: i64,
    pub deferred_bytes: i64,
    pub dirty_keys: i64,
    pub dirty_bytes: i64,
    pub applied_lsn: i64,
    pub suspended: i64,
    pub checkpoint_in_flight: bool,
    pub checkpoints: i64,
    pub checkpoint_failures: i64,
    pub writer_waits: i64,
    pub batches_deferred: i64,
    pub segments_deleted: i64,
    pub pages_written: i64,
    pub last_checkpoint_ms: i64,
}

/// One scavenge slice's bounds (see `Engine::scavenge`).
#[napi(object)]
pub struct NativeScavengeOptions {
    /// Retire lone checkpointed chains of age group ≤ this (−1: retire nothing).
    pub retire_age_max: i64,
    /// Stop retiring once the record memory is at most this many bytes.
    pub target_bytes: i64,
    /// Visit at most this many chains (≥ 1).
    pub visit_max: i64,
}

/// What one scavenge slice did; `survey` is flat `[ageGroup, bytes, …]` pairs.
#[napi(object)]
pub struct NativeScavengeStep {
    pub visited: f64,
    pub pruned_versions: f64,
    pub index_entries_removed: f64,
    pub retired: f64,
    pub done: bool,
    pub survey: Vec<f64>,
}

type DurableCallback =
    ThreadsafeFunction<FnArgs<(f64, Option<String>, Option<String>)>, Unknown<'static>, FnArgs<(f64, Option<String>, Option<String>)>, Status, false, true>;

/// One thread's handle on an open database engine (threads sharing a directory share one).
#[napi]
pub struct NativeEngine {
    engine: EngineHandle,
    /// Collection names by the small ids handed to JavaScript (no string crossing per read).
    names: std::sync::RwLock<Vec<String>>,
    /// (collection id, index name) by the small ids handed to JavaScript.
    indexes: std::sync::RwLock<Vec<(u32, String)>>,
}

/// Read the bounds a `*Io` call finds at the start of its buffer: `[u8 mask]` (1 gte, 2 gt, 4 lte,
/// 8 lt), then each bound the mask names, in that order, as `[u32 LE length][bytes]`.
fn bounds_from(io: &[u8], reverse: bool, limit: u32) -> std::result::Result<ScanBounds, napi::Error<String>> {
    let bad = || invalid("malformed bounds in the read buffer".into());
    let mask = *io.first().ok_or_else(bad)?;
    if mask & !0x0f != 0 {
        return Err(bad());
    }
    let mut pos = 1usize;
    let mut take = |bit: u8| -> std::result::Result<Option<Vec<u8>>, napi::Error<String>> {
        if mask & bit == 0 {
            return Ok(None);
        }
        let len = io.get(pos..pos + 4).ok_or_else(bad)?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let bytes = io.get(pos + 4..pos + 4 + len).ok_or_else(bad)?;
        pos += 4 + len;
        Ok(Some(bytes.to_vec()))
    };
    Ok(ScanBounds { gte: take(1)?, gt: take(2)?, lte: take(4)?, lt: take(8)?, reverse, limit: limit as usize })
}

fn positive(name: &str, v: i64) -> std::result::Result<u64, napi::Error<String>> {
    u64::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| invalid(format!("{name} must be a positive integer")))
}

fn bound(b: Option<Uint8Array>) -> Option<Vec<u8>> {
    b.map(|b| b.to_vec())
}

/// Writes rows into a buffer as `[u32 LE key length][key][u32 LE value length][value]…`, straight
/// from the store (no copy in between).
struct RowWriter<'a> {
    out: &'a mut [u8],
    pos: usize,
    rows: i64,
}

impl<'a> RowWriter<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        RowWriter { out, pos: 0, rows: 0 }
    }

    /// Append a row; false when it does not fit (the caller stops and reports -1).
    fn push(&mut self, k: &[u8], v: &[u8]) -> bool {
        if 8 + k.len() + v.len() > self.out.len() - self.pos {
            return false;
        }
        for part in [k, v] {
            let pos = self.pos;
            self.out[pos..pos + 4].copy_from_slice(&(part.len() as u32).to_le_bytes());
            self.out[pos + 4..pos + 4 + part.len()].copy_from_slice(part);
            self.pos += 4 + part.len();
        }
        self.rows += 1;
        true
    }

    /// The number of rows, or -1 when they did not all fit (`complete` false).
    fn finish(self, complete: bool) -> i64 {
        if complete {
            self.rows
        } else {
            -1
        }
    }
}

/// Flattened `[key0, value0, key1, value1, …]`.
fn flatten(rows: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<Buffer> {
    let mut out = Vec::with_capacity(rows.len() * 2);
    for (k, v) in rows {
        out.push(Buffer::from(k));
        out.push(Buffer::from(v));
    }
    out
}

#[napi]
impl NativeEngine {
    /// Open or create the database directory and recover it. `onDurable(durableLsn, errorCode,
    /// errorMessage)` is called after every batch; it never keeps the event loop alive.
    #[napi(
        factory,
        ts_args_type = "dir: string, options: NativeOpenOptions, onDurable: (durableLsn: number, errorCode: string | null, errorMessage: string | null) => void"
    )]
    pub fn open(dir: String, options: NativeOpenOptions, on_durable: DurableCallback) -> std::result::Result<NativeEngine, napi::Error<String>> {
        let durability = match options.durability.as_str() {
            "sync" => Durability::Sync,
            "relaxed" => Durability::Relaxed,
            "none" => Durability::None,
            other => return Err(invalid(format!("durability must be 'sync', 'relaxed' or 'none', got {other}"))),
        };
        let faults = match options.faults {
            None => None,
            Some(f) => Some(FaultOptions {
                fail_write_at: f.fail_write_at.map(|v| positive("faults.failWriteAt", v)).transpose()?,
                fail_fsync_at: f.fail_fsync_at.map(|v| positive("faults.failFsyncAt", v)).transpose()?,
                errno: match f.errno.as_deref() {
                    None | Some("EIO") => Errno::Eio,
                    Some("ENOSPC") => Errno::Enospc,
                    Some(other) => return Err(invalid(format!("faults.errno must be 'EIO' or 'ENOSPC', got {other}"))),
                },
                fail_seal_sync: f.fail_seal_sync.unwrap_or(false),
            }),
        };
        let opts = Options {
            durability,
            segment_bytes_max: positive("segmentBytes", options.segment_bytes)?,
            group_bytes_max: positive("groupBytesMax", options.group_bytes_max)? as usize,
            faults,
            retain_commits: u64::try_from(options.retain_commits).map_err(|_| invalid("retainCommits must be ≥ 0".into()))?,
            cache_bytes: positive("cacheBytes", options.cache_bytes)?,
            checkpoint_bytes: positive("checkpointBytes", options.checkpoint_bytes)?,
            checkpoint_interval_ms: u64::try_from(options.checkpoint_interval_ms).map_err(|_| invalid("checkpointIntervalMs must be ≥ 0".into()))?,
            flush_queue_bytes: positive("flushQueueBytes", options.flush_queue_bytes)?,
            deferred_bytes_max: positive("deferredBytesMax", options.deferred_bytes_max)?,
            sharing: match options.sharing {
                None => None,
                Some(s) => Some(Sharing { tail: s.tail.map(tail_from).transpose()?, apart: s.apart.unwrap_or(false), publish: s.publish.unwrap_or(false) }),
            },
        };
        let notify: kestrel_core::Notify = Box::new(move |lsn, err| {
            let (code, message) = match err {
                None => (None, None),
                Some(e) => (Some(e.code.as_str().to_string()), Some(e.message)),
            };
            on_durable.call(FnArgs::from((lsn as f64, code, message)), ThreadsafeFunctionCallMode::NonBlocking);
        });
        let engine = EngineHandle::open(Path::new(&dir), opts, notify).map_err(to_js)?;
        Ok(NativeEngine { engine, names: std::sync::RwLock::new(Vec::new()), indexes: std::sync::RwLock::new(Vec::new()) })
    }

    /// Validate and queue a COMMIT payload; returns its LSN (the commit id).
    #[napi]
    pub fn commit(&self, payload: &[u8]) -> std::result::Result<f64, napi::Error<String>> {
        self.engine.commit(payload).map(|lsn| lsn as f64).map_err(to_js)
    }

    /// While held, the writer starts no batch (commits queued meanwhile form one).
    #[napi]
    pub fn hold_writer(&self, hold: bool) {
        self.engine.hold_writer(hold)
    }

    /// A small id for a collection name, for the `*Into` read methods.
    #[napi]
    pub fn collection_id(&self, name: String) -> u32 {
        let mut names = self.names.write().expect("names lock");
        if let Some(i) = names.iter().position(|n| *n == name) {
            return i as u32;
        }
        names.push(name);
        (names.len() - 1) as u32
    }

    /// A small id for index `index` of collection id `collection`, for `findIo`.
    #[napi]
    pub fn index_id(&self, collection: u32, index: String) -> std::result::Result<u32, napi::Error<String>> {
        self.with_name(collection, |_| ())?;
        let mut indexes = self.indexes.write().expect("indexes lock");
        if let Some(i) = indexes.iter().position(|(c, n)| *c == collection && *n == index) {
            return Ok(i as u32);
        }
        indexes.push((collection, index));
        Ok((indexes.len() - 1) as u32)
    }

    /// Run `f` with the name of collection `id`, without copying it.
    fn with_name<R>(&self, id: u32, f: impl FnOnce(&str) -> R) -> std::result::Result<R, napi::Error<String>> {
        let names = self.names.read().expect("names lock");
        let name = names.get(id as usize).ok_or_else(|| invalid(format!("unknown collection id {id}")))?;
        Ok(f(name))
    }

    /// Copy the value of a key at `snapshot` into `out`: returns its length, -1 when absent, or
    /// -2 when it does not fit (call `get` instead). Saves a Buffer allocation per read.
    #[napi]
    pub fn get_into(&self, collection: u32, key: &[u8], snapshot: f64, mut out: Uint8ArraySlice<'_>) -> std::result::Result<i64, napi::Error<String>> {
        // SAFETY: the JavaScript caller's buffer, not touched by JavaScript during this call (a
        // borrow, not a reference kept: a read pays for no handle).
        let out: &mut [u8] = unsafe { out.as_mut() };
        self.with_name(collection, |name| {
            self.engine.with_value(name, key, snapshot as u64, |v| match v {
                None => -1,
                Some(v) if v.len() > out.len() => -2,
                Some(v) => {
                    out[..v.len()].copy_from_slice(v);
                    v.len() as i64
                }
            })
        })?
        .map_err(to_js)
    }

    /// Scan with its bounds read from `io` (see [`bounds_from`]) and its rows written over them,
    /// as `[u32 LE key length][key][u32 LE value length][value]…`: the number of rows, or -1 when
    /// they do not fit (call `scan`).
    /// One buffer argument instead of four optional ones: a read pays for one conversion.
    #[napi]
    pub fn scan_io(
        &self,
        collection: u32,
        reverse: bool,
        limit: u32,
        snapshot: f64,
        mut io: Uint8ArraySlice<'_>,
    ) -> std::result::Result<i64, napi::Error<String>> {
        // SAFETY: the JavaScript caller's buffer, not touched by JavaScript during this call.
        let io: &mut [u8] = unsafe { io.as_mut() };
        let bounds = bounds_from(io, reverse, limit)?;
        let mut w = RowWriter::new(io);
        let complete = self.with_name(collection, |name| self.engine.scan_each(name, &bounds, snapshot as u64, &mut |k, v| w.push(k, v)))?.map_err(to_js)?;
        Ok(w.finish(complete))
    }

    /// Index lookup by index id (see `indexId`) with its bounds read from `io` (see
    /// [`bounds_from`]; bounds on index-tree entry keys) and its rows written over them, as
    /// `scanIo` writes them (`[primary key, value]` rows): the number of rows, or -1 when they do not fit (call `find`).
    #[napi]
    pub fn find_io(&self, index: u32, reverse: bool, limit: u32, snapshot: f64, mut io: Uint8ArraySlice<'_>) -> std::result::Result<i64, napi::Error<String>> {
        // SAFETY: the JavaScript caller's buffer, not touched by JavaScript during this call.
        let io: &mut [u8] = unsafe { io.as_mut() };
        let bounds = bounds_from(io, reverse, limit)?;
        let mut w = RowWriter::new(io);
        let indexes = self.indexes.read().expect("indexes lock");
        let (collection, name) = indexes.get(index as usize).ok_or_else(|| invalid(format!("unknown index id {index}")))?;
        let complete = self.with_name(*collection, |c| self.engine.find_each(c, name, &bounds, snapshot as u64, &mut |k, v| w.push(k, v)))?.map_err(to_js)?;
        Ok(w.finish(complete))
    }

    /// Index lookup: flattened `[primaryKey0, value0, …]` in entry order (limit 0 = all).
    #[napi]
    // The JavaScript signature: positional arguments, one per bound (see `findIo` for the fast path).
    #[allow(clippy::too_many_arguments)]
    pub fn find(
        &self,
        collection: String,
        index: String,
        gte: Option<Uint8Array>,
        gt: Option<Uint8Array>,
        lte: Option<Uint8Array>,
        lt: Option<Uint8Array>,
        reverse: bool,
        limit: u32,
        snapshot: f64,
    ) -> std::result::Result<Vec<Buffer>, napi::Error<String>> {
        let bounds = ScanBounds { gte: bound(gte), gt: bound(gt), lte: bound(lte), lt: bound(lt), reverse, limit: limit as usize };
        Ok(flatten(self.engine.find(&collection, &index, &bounds, snapshot as u64).map_err(to_js)?))
    }

    /// Chains written, loaded or read from now on belong to age group `group` (never decreases).
    #[napi]
    pub fn set_age_group(&self, group: f64) -> std::result::Result<(), napi::Error<String>> {
        if !(group >= 0.0 && group <= u32::MAX as f64) || group.fract() != 0.0 {
            return Err(invalid(format!("setAgeGroup: the age group must be an integer in 0..=2^32-1, got {group}")));
        }
        self.engine.set_age_group(group as u64);
        Ok(())
    }

    /// One slice of a scavenge pass (prune, retire by age, survey); see `Engine::scavenge`.
    #[napi]
    pub fn scavenge(&self, options: NativeScavengeOptions) -> std::result::Result<NativeScavengeStep, napi::Error<String>> {
        if options.retire_age_max < -1 {
            return Err(invalid(format!("scavenge: retireAgeMax must be ≥ -1, got {}", options.retire_age_max)));
        }
        let target = u64::try_from(options.target_bytes).map_err(|_| invalid("scavenge: targetBytes must be ≥ 0".into()))?;
        let visit = positive("scavenge: visitMax", options.visit_max)?;
        let step = self.engine.scavenge(options.retire_age_max, target, visit).map_err(to_js)?;
        Ok(NativeScavengeStep {
            visited: step.visited as f64,
            pruned_versions: step.pruned_versions as f64,
            index_entries_removed: step.index_entries_removed as f64,
            retired: step.retired as f64,
            done: step.done,
            survey: step.survey.iter().flat_map(|(age, bytes)| [*age as f64, *bytes as f64]).collect(),
        })
    }

    /// The value of a key at `snapshot` (a commit id), or null.
    #[napi]
    pub fn get(&self, collection: String, key: &[u8], snapshot: f64) -> std::result::Result<Option<Buffer>, napi::Error<String>> {
        Ok(self.engine.get(&collection, key, snapshot as u64).map_err(to_js)?.map(Buffer::from))
    }

    /// Every collection that may hold records at a readable snapshot, in name order (see
    /// `Engine::collections`).
    #[napi]
    pub fn collections(&self) -> std::result::Result<Vec<String>, napi::Error<String>> {
        self.engine.collections().map_err(to_js)
    }

    /// Allow pruning of versions that no snapshot ≥ `horizon` and no snapshot of `pinned` reads;
    /// `pinned`: the snapshots below `horizon` still open (replaces the previous list; each keeps
    /// the one version it sees); `sweep` prunes every key now.
    #[napi]
    pub fn set_horizon(&self, horizon: f64, sweep: bool, pinned: Vec<f64>) {
        // Commit ids are safe integers, cast as `horizon` is: the cast saturates (NaN and negatives
        // become 0, which keeps nothing; a huge value lies above the horizon and is ignored).
        let pinned: Vec<u64> = pinned.iter().map(|p| *p as u64).collect();
        self.engine.set_horizon(horizon as u64, sweep, &pinned)
    }

    /// The oldest snapshot still fully readable.
    #[napi]
    pub fn horizon(&self) -> f64 {
        self.engine.horizon() as f64
    }

    /// Flattened [key0, value0, key1, value1, …] in key order within the bounds (limit 0 = all).
    #[napi]
    // The JavaScript signature: positional arguments, one per bound (see `scanIo` for the fast path).
    #[allow(clippy::too_many_arguments)]
    pub fn scan(
        &self,
        collection: String,
        gte: Option<Uint8Array>,
        gt: Option<Uint8Array>,
        lte: Option<Uint8Array>,
        lt: Option<Uint8Array>,
        reverse: bool,
        limit: u32,
        snapshot: f64,
    ) -> std::result::Result<Vec<Buffer>, napi::Error<String>> {
        let bounds = ScanBounds { gte: bound(gte), gt: bound(gt), lte: bound(lte), lt: bound(lt), reverse, limit: limit as usize };
        Ok(flatten(self.engine.scan(&collection, &bounds, snapshot as u64).map_err(to_js)?))
    }

    /// Ask for a checkpoint of everything visible now; poll `checkpointStatus(ticket)`.
    #[napi]
    pub fn request_checkpoint(&self) -> std::result::Result<f64, napi::Error<String>> {
        self.engine.request_checkpoint().map(|t| t as f64).map_err(to_js)
    }

    /// `requestCheckpoint` with options. Sharing: adopts the newest checkpoint on disk first
    /// (throws KESTREL_BEHIND when it covers commits not applied here).
    #[napi]
    pub fn request_checkpoint_with(&self, options: NativeCheckpointOptions) -> std::result::Result<f64, napi::Error<String>> {
        let o = CheckpointOptions {
            reuse_free_pages: options.reuse_free_pages.unwrap_or(true),
            trim_below_lsn: options.trim_below_lsn.map(|v| whole("trimBelowLsn", v)).transpose()?,
        };
        self.engine.request_checkpoint_with(o).map(|t| t as f64).map_err(to_js)
    }

    /// The checkpoint reads of retired records go to (seq 0: none).
    #[napi]
    pub fn checkpoint_ref(&self) -> NativeCheckpointRef {
        let (seq, lsn) = self.engine.checkpoint_ref();
        NativeCheckpointRef { seq: seq as f64, lsn: lsn as f64 }
    }

    /// Sharing: from now on the only user of the directory (close seals and checkpoints).
    #[napi]
    pub fn leave_sharing(&self) {
        self.engine.leave_sharing()
    }

    /// Sharing: switch to a newer checkpoint on disk; false when nothing changed.
    #[napi]
    pub fn adopt_checkpoint(&self) -> std::result::Result<bool, napi::Error<String>> {
        self.engine.adopt_checkpoint().map_err(to_js)
    }

    /// Where the log ends after the last acknowledged commit.
    #[napi]
    pub fn log_tail(&self) -> NativeLogTail {
        let t = self.engine.log_tail();
        NativeLogTail { lsn: t.lsn as f64, segment: t.segment, offset: t.offset as f64 }
    }

    /// Sharing: what the handle at `from` has not seen up to `tail` (see `Engine::catch_up_from`).
    #[napi]
    pub fn catch_up_from(&self, from: NativeLogTail, tail: NativeLogTail, adopt: bool) -> std::result::Result<NativeCaughtUp, napi::Error<String>> {
        let (from, tail) = (tail_from(from)?, tail_from(tail)?);
        let (payloads, end) = self.engine.catch_up_from(&from, &tail, adopt).map_err(to_js)?;
        Ok(NativeCaughtUp {
            payloads: payloads.into_iter().map(Buffer::from).collect(),
            end: NativeLogTail { lsn: end.lsn as f64, segment: end.segment, offset: end.offset as f64 },
        })
    }

    /// Sharing: this thread took the directory's write lock, whose listening socket is `fd`; the
    /// engine keeps it taken until `letGoWriteLock`, or, if the thread ends first, until this
    /// handle's queued commits are written (see `EngineHandle::keep_write_lock`).
    #[napi]
    pub fn keep_write_lock(&self, fd: i32) -> std::result::Result<(), napi::Error<String>> {
        self.engine.keep_write_lock(fd).map_err(to_js)
    }

    /// Sharing: this thread lets go of the write lock (call before closing its socket).
    #[napi]
    pub fn let_go_write_lock(&self) {
        self.engine.let_go_write_lock()
    }

    /// Handles open on this engine in this process (threads sharing it), this one included.
    #[napi]
    pub fn handles(&self) -> u32 {
        self.engine.handles() as u32
    }

    /// Sharing: apply what other participants appended up to `tail` (and, with `adopt`, what a
    /// dead writer left past it); returns the payloads applied, in LSN order.
    #[napi]
    pub fn catch_up(&self, tail: NativeLogTail, adopt: bool) -> std::result::Result<Vec<Buffer>, napi::Error<String>> {
        let tail = tail_from(tail)?;
        Ok(self.engine.catch_up(&tail, adopt).map_err(to_js)?.into_iter().map(Buffer::from).collect())
    }

    /// True once the checkpoint of `ticket` is published; throws if it failed.
    #[napi]
    pub fn checkpoint_status(&self, ticket: f64) -> std::result::Result<bool, napi::Error<String>> {
        self.engine.checkpoint_status(ticket as u64).map_err(to_js)
    }

    /// Suspend the flusher (reference-counted); returns whether a checkpoint is still being written.
    #[napi]
    pub fn suspend_flusher(&self) -> bool {
        self.engine.suspend_flusher()
    }

    /// A checkpoint is being written now.
    #[napi]
    pub fn flusher_busy(&self) -> bool {
        self.engine.flusher_busy()
    }

    /// Undo one `suspendFlusher` (the last one applies the deferred batches first).
    #[napi]
    pub fn resume_flusher(&self) -> std::result::Result<(), napi::Error<String>> {
        self.engine.resume_flusher().map_err(to_js)
    }

    /// Test-only: the next checkpoint crashes at `fault` ('none', 'losePagesBeforeMeta', 'tearMeta', 'failMetaSync').
    #[napi]
    pub fn set_page_fault(&self, fault: String) -> std::result::Result<(), napi::Error<String>> {
        let f = match fault.as_str() {
            "none" => PageFault::None,
            "losePagesBeforeMeta" => PageFault::LosePagesBeforeMeta,
            "tearMeta" => PageFault::TearMeta,
            "failMetaSync" => PageFault::FailMetaSync,
            other => return Err(invalid(format!("unknown page fault {other}"))),
        };
        self.engine.set_page_fault(f);
        Ok(())
    }

    /// What a backup copies now (the flusher must be suspended and idle).
    #[napi]
    pub fn backup_plan(&self) -> std::result::Result<NativeBackupPlan, napi::Error<String>> {
        let p = self.engine.backup_plan().map_err(to_js)?;
        Ok(NativeBackupPlan {
            commit_id: p.commit_id as f64,
            seq: p.seq as f64,
            pages: Uint32Array::new(p.pages),
            page_count: p.page_count,
            segment_names: p.segments.iter().map(|(n, _)| n.clone()).collect(),
            segment_bytes: p.segments.iter().map(|(_, b)| *b as f64).collect(),
        })
    }

    /// LSN of the last visible commit.
    #[napi]
    pub fn last_lsn(&self) -> f64 {
        self.engine.last_lsn() as f64
    }

    #[napi]
    pub fn stats(&self) -> NativeStats {
        let s = self.engine.stats();
        let f = &s.flow;
        NativeStats {
            durable_lsn: s.durable_lsn as i64,
            batches: s.batches as i64,
            syncs: s.syncs as i64,
            segments: s.segments as i64,
            keys: s.keys as i64,
            versions: s.versions as i64,
            record_bytes: s.record_bytes as i64,
            retired: s.retired as i64,
            checkpoint_lsn: s.checkpoint_lsn as i64,
            page_count: s.page_count as i64,
            index_entries: s.index_entries as i64,
            age_group: s.age_group as i64,
            flow: NativeFlowStats {
                queued_batches: f.queued_batches as i64,
                queued_bytes: f.queued_bytes as i64,
                deferred_batches: f.deferred_batches as i64,
                deferred_bytes: f.deferred_bytes as i64,
                dirty_keys: f.dirty_keys as i64,
                dirty_bytes: f.dirty_bytes as i64,
                applied_lsn: f.applied_lsn as i64,
                suspended: f.suspended as i64,
                checkpoint_in_flight: f.checkpoint_in_flight,
                checkpoints: f.checkpoints as i64,
                checkpoint_failures: f.checkpoint_failures as i64,
                writer_waits: f.writer_waits as i64,
                batches_deferred: f.batches_deferred as i64,
                segments_deleted: f.segments_deleted as i64,
                pages_written: f.pages_written as i64,
                last_checkpoint_ms: f.last_checkpoint_ms as i64,
            },
        }
    }

    /// Detach this handle; the last one writes everything queued, syncs and stops the writer.
    #[napi]
    pub fn close(&self) -> std::result::Result<(), napi::Error<String>> {
        self.engine.close().map_err(to_js)
    }

    /// Test-only: hold (true) or release (false) every batch fdatasync (needs the fault layer).
    #[napi]
    pub fn hold_syncs(&self, hold: bool) -> std::result::Result<(), napi::Error<String>> {
        self.engine.hold_syncs(hold).map_err(to_js)
    }

    /// Test-only power loss (needs the fault layer).
    #[napi]
    pub fn crash(&self, tear_bytes: f64) -> std::result::Result<(), napi::Error<String>> {
        if tear_bytes.is_nan() || tear_bytes < 0.0 {
            return Err(invalid("tearBytes must be a non-negative number".into()));
        }
        self.engine.crash(tear_bytes as u64).map_err(to_js)
    }
}
