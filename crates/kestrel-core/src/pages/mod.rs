//! The page store `pages.kdb` (docs/FORMAT.md, "Page store"): the state of every collection at
//! the checkpoint LSN as copy-on-write B+trees in 4096-byte pages, two meta slots, a free list.
//!
//! - `format::page_layout`: page bytes (header, meta, leaf, branch, overflow, free list, packing).
//! - `tree_read.rs`: lookups, ranges, values, catalog lookups.
//! - `allocator.rs`: the allocator, the free list, the quarantine of a failed checkpoint's pages.
//! - `tree_write.rs`: the deterministic copy-on-write apply of a checkpoint (`TreeWriter`, `build_checkpoint`).
//! - `derive.rs`: index-tree changes derived from record changes (step 0).
//! - `check.rs`: the structural walk behind `check` and `reachable_pages`.
//! - this file: [`PageStore`] — open, reads, the checkpoint driver (write, sync, meta, sync,
//!   publish) and the page cache.
//!
//! Concurrency: the published checkpoint (`Published`) sits behind an `RwLock`. Readers hold the
//! read lock for a whole traversal; `checkpoint` reads the published trees and writes new pages
//! without any lock — the allocator only hands out pages the published checkpoint cannot reach —
//! and takes the write lock only to drop stale cache entries and publish.

mod allocator;
mod check;
mod derive;
mod tree_read;
mod tree_write;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::error::{Code, Error, Result};
use crate::format::envelope::{self, STORED_VALUE_BYTES_MAX};
use crate::format::page_layout::{self, check_header, Header, PageBuf, TreePage, META_SLOTS};
pub use crate::format::page_layout::{Meta, PAGE_BYTES};
use crate::format::payload::KEY_BYTES_MAX;
use crate::pio::FileExt;
use allocator::Quarantine;
pub use check::CheckReport;
use tree_write::{build_checkpoint, Built};

pub const PAGE_FILE: &str = "pages.kdb";

/// The page cache holds at least this many pages whatever `cache_bytes` says.
pub const CACHE_PAGES_MIN: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub commit_id: u64,
    pub value: Vec<u8>,
}

/// One changed key: Some((commit id, value)) = the version visible at the checkpoint LSN; None =
/// deleted. The value is any byte container (the engine passes the store's shared values).
pub type Change<V = Vec<u8>> = (Vec<u8>, Option<(u64, V)>);

#[derive(Clone, Debug, Default)]
pub struct CollectionChanges<V = Vec<u8>> {
    pub name: String,
    /// Sorted by key, no duplicates, non-empty.
    pub changes: Vec<Change<V>>,
}

/// Bytes of the new meta page written by [`PageFault::TearMeta`]: the header, magic and version,
/// but not the checkpoint LSN and the fields after it.
pub const TORN_META_BYTES: usize = 40;

/// Test-only crash points inside a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PageFault {
    #[default]
    None,
    /// The new pages reach the file as garbage (lost / garbled unsynced writes), then the
    /// checkpoint fails with KESTREL_IO before its meta page is written.
    LosePagesBeforeMeta,
    /// All pages written and synced, then only the first [`TORN_META_BYTES`] of the new meta
    /// page (the rest of the slot keeps its old bytes: the slot is invalid) and the checkpoint
    /// fails with KESTREL_IO.
    TearMeta,
    /// All pages and the whole new meta page written and synced, then the checkpoint fails with
    /// KESTREL_IO anyway (an fdatasync that reports failure after the data reached the disk):
    /// the slot holds a valid meta of a checkpoint that was never published.
    FailMetaSync,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    pub seq: u64,
    pub lsn: u64,
    /// Tree, overflow and free-list pages written (the meta page not counted).
    pub pages_written: u64,
    /// Pages freed by this checkpoint (reusable from the next one on), incl. the old free-list chain.
    pub pages_freed: u64,
    /// Every byte written to the file, the meta page included: (pages_written + 1) × 4096.
    pub bytes_written: u64,
}

/// The error for a page that fails a check on read; says what to do.
pub(crate) fn corrupt(page_no: u32, what: &str) -> Error {
    Error::new(
        Code::Corrupt,
        format!(
            "{}; the page store is damaged: restore the database from a backup (kestrel restore), and run kestrel verify to see all the damage",
            problem(page_no, what)
        ),
    )
}

/// A check problem naming the page.
pub(crate) fn problem(page_no: u32, what: &str) -> String {
    format!("{PAGE_FILE} page {page_no}: {what}")
}

// ---------------------------------------------------------------------------------------------
// Page cache

/// A bounded map from page number to a verified tree page (header and entries checked, see
/// [`TreePage`]). Eviction is random (cheap and with no pathological pattern); correctness does
/// not depend on what is kept, only on stale entries being dropped when a page number is
/// rewritten (`invalidate`).
pub(crate) struct PageCache {
    /// Invariant: ≥ CACHE_PAGES_MIN.
    capacity_pages: usize,
    inner: Mutex<CacheInner>,
}

struct CacheInner {
    /// page → (page, index in `keys`). Invariant: keys[map[p].1] == p; map.len() == keys.len() ≤ capacity.
    map: HashMap<u32, (Arc<TreePage>, usize)>,
    keys: Vec<u32>,
    /// xorshift state for the eviction choice; never 0.
    rng: u64,
}

impl CacheInner {
    fn remove(&mut self, page_no: u32) {
        let Some((_, at)) = self.map.remove(&page_no) else { return };
        self.keys.swap_remove(at);
        if let Some(&moved) = self.keys.get(at) {
            self.map.get_mut(&moved).expect("cache index consistent").1 = at;
        }
        debug_assert_eq!(self.map.len(), self.keys.len());
    }
}

impl PageCache {
    fn new(cache_bytes: usize) -> PageCache {
        let capacity_pages = (cache_bytes / PAGE_BYTES).max(CACHE_PAGES_MIN);
        PageCache { capacity_pages, inner: Mutex::new(CacheInner { map: HashMap::new(), keys: Vec::new(), rng: 0x9E37_79B9_7F4A_7C15 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, page_no: u32) -> Option<Arc<TreePage>> {
        self.lock().map.get(&page_no).map(|(p, _)| p.clone())
    }

    fn insert(&self, page_no: u32, page: Arc<TreePage>) {
        let mut c = self.lock();
        if let Some(slot) = c.map.get_mut(&page_no) {
            slot.0 = page;
            return;
        }
        if c.keys.len() >= self.capacity_pages {
            c.rng ^= c.rng << 13;
            c.rng ^= c.rng >> 7;
            c.rng ^= c.rng << 17;
            let victim = c.keys[(c.rng % c.keys.len() as u64) as usize];
            c.remove(victim);
        }
        let at = c.keys.len();
        c.keys.push(page_no);
        c.map.insert(page_no, (page, at));
        debug_assert!(c.keys.len() <= self.capacity_pages);
    }

    fn clear(&self) {
        let mut c = self.lock();
        c.map.clear();
        c.keys.clear();
    }

    fn invalidate(&self, pages: impl Iterator<Item = u32>) {
        let mut c = self.lock();
        for p in pages {
            c.remove(p);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading pages of one checkpoint

/// Reads verified pages of one checkpoint (`meta`): the page number must be below its page
/// count, the page must pass CRC / kind / own-number / seq checks.
pub(crate) struct PageSource<'a> {
    pub file: &'a File,
    pub meta: Meta,
    cache: &'a PageCache,
    /// The published checkpoint's remembered catalog lookups (readers only; a checkpoint being
    /// built reads the catalog itself).
    roots: Option<&'a RootMemo>,
}

/// Tree name → root page (None: not in the catalog) as the catalog of one published checkpoint
/// says: a read of a tree finds its root without a catalog search. Emptied when the next
/// checkpoint is published; at most [`ROOT_MEMO_MAX`] names (then emptied and filled again).
type RootMemo = Mutex<HashMap<Box<str>, Option<u32>>>;
const ROOT_MEMO_MAX: usize = 4096;

impl PageSource<'_> {
    /// A page of one of `kinds`; corruption is the inner `Err(what)`, I/O failure the outer one.
    /// `cached`: a tree page (`kinds` leaf and branch) through the page cache, its entries
    /// checked too (see [`read_tree_checked`](Self::read_tree_checked)); overflow and free-list
    /// pages bypass the cache so that big values do not evict the trees.
    pub fn read_checked(&self, page_no: u32, kinds: &[u8], cached: bool) -> Result<std::result::Result<(Header, Arc<PageBuf>), String>> {
        if cached {
            debug_assert!(kinds.iter().all(|k| *k == page_layout::KIND_LEAF || *k == page_layout::KIND_BRANCH), "only tree pages are cached");
            return Ok(self.read_tree_checked(page_no)?.and_then(|t| {
                if kinds.contains(&t.header.kind) {
                    Ok((t.header, t.page.clone()))
                } else {
                    check_header(&t.page, page_no, kinds, self.meta.seq).map(|h| (h, t.page.clone()))
                }
            }));
        }
        Ok(self.read_uncached(page_no, kinds)?.map(|(h, page)| (h, Arc::from(page))))
    }

    fn read_uncached(&self, page_no: u32, kinds: &[u8]) -> Result<std::result::Result<(Header, Box<PageBuf>), String>> {
        if page_no < META_SLOTS || page_no >= self.meta.page_count {
            return Ok(Err(format!("referenced, but outside the checkpoint's pages 2..{}", self.meta.page_count)));
        }
        let mut buf = page_layout::zeroed_page();
        match self.file.read_exact_at(&mut buf[..], page_no as u64 * PAGE_BYTES as u64) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Err("beyond the end of the file".into())),
            Err(e) => return Err(Error::io(&format!("reading {PAGE_FILE} page {page_no}"), &e)),
        }
        Ok(check_header(&buf, page_no, kinds, self.meta.seq).map(|h| (h, buf)))
    }

    /// A leaf or branch page through the page cache: its header and all its entries checked
    /// when it is read from the file (`decode_leaf` / `decode_branch`), so that a search of a
    /// cached page reads only the entries it needs. Corruption is the inner `Err(what)` (such a
    /// page is not cached: every read reports it), I/O failure the outer one.
    pub fn read_tree_checked(&self, page_no: u32) -> Result<std::result::Result<Arc<TreePage>, String>> {
        if page_no < META_SLOTS || page_no >= self.meta.page_count {
            return Ok(Err(format!("referenced, but outside the checkpoint's pages 2..{}", self.meta.page_count)));
        }
        if let Some(page) = self.cache.get(page_no) {
            return Ok(Ok(page));
        }
        let buf = match self.read_uncached(page_no, &[page_layout::KIND_LEAF, page_layout::KIND_BRANCH])? {
            Ok((_, buf)) => buf,
            Err(what) => return Ok(Err(what)),
        };
        let page = match TreePage::new(Arc::from(buf)) {
            Ok(p) => Arc::new(p),
            Err(what) => return Ok(Err(what)),
        };
        self.cache.insert(page_no, page.clone());
        Ok(Ok(page))
    }

    /// As [`read_tree_checked`](Self::read_tree_checked) with corruption as `KESTREL_CORRUPT`.
    pub fn read_tree(&self, page_no: u32) -> Result<Arc<TreePage>> {
        self.read_tree_checked(page_no)?.map_err(|what| corrupt(page_no, &what))
    }

    /// The root page of tree `name` (0 = empty; None = not in the catalog), through the
    /// published checkpoint's memo when this source has one.
    pub fn tree_root(&self, name: &str) -> Result<Option<u32>> {
        if let Some(m) = self.roots {
            if let Some(root) = m.lock().unwrap_or_else(PoisonError::into_inner).get(name) {
                return Ok(*root);
            }
        }
        let root = tree_read::catalog_get(self, name.as_bytes())?.map(|(root, _)| root);
        if let Some(m) = self.roots {
            let mut m = m.lock().unwrap_or_else(PoisonError::into_inner);
            if m.len() >= ROOT_MEMO_MAX {
                m.clear();
            }
            m.insert(name.into(), root);
        }
        Ok(root)
    }

    /// As [`read_checked`](Self::read_checked) with corruption as `KESTREL_CORRUPT`.
    pub fn read(&self, page_no: u32, kinds: &[u8], cached: bool) -> Result<(Header, Arc<PageBuf>)> {
        self.read_checked(page_no, kinds, cached)?.map_err(|what| corrupt(page_no, &what))
    }
}

// ---------------------------------------------------------------------------------------------
// The store

/// The published checkpoint.
struct Published {
    meta: Meta,
    /// None until the file exists (no checkpoint was ever written here).
    file: Option<Arc<File>>,
    /// Catalog lookups of this checkpoint (emptied at each publish).
    roots: RootMemo,
}

/// The page store of one database directory: the published checkpoint's trees, read by any
/// number of threads while one flusher writes the next checkpoint.
pub struct PageStore {
    dir: PathBuf,
    path: PathBuf,
    published: RwLock<Published>,
    cache: PageCache,
    /// Serializes checkpoints: the caller already does (one flusher); this makes it a guarantee,
    /// which the "writes need no lock" argument depends on. Holds the pages of failed attempts
    /// that a retry must not touch (see [`Quarantine`]).
    flusher: Mutex<Quarantine>,
}

// Readers on many threads share one store.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<PageStore>();
};

fn sync_dir(dir: &Path) -> Result<()> {
    crate::pio::sync_dir(dir).map_err(|e| Error::io(&format!("syncing directory {}", dir.display()), &e))
}

/// Read up to `buf.len()` bytes at `offset`; bytes past the end of the file stay as they are.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    // Bounded: each round either reads ≥ 1 byte or ends the loop.
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The published meta of an existing file: the valid slot with the higher seq, or none.
fn read_meta(file: &File) -> Result<Meta> {
    let mut slots = [page_layout::zeroed_page(), page_layout::zeroed_page()];
    for (i, slot) in slots.iter_mut().enumerate() {
        read_up_to(file, &mut slot[..], i as u64 * PAGE_BYTES as u64).map_err(|e| Error::io(&format!("reading {PAGE_FILE} meta slot {i}"), &e))?;
    }
    let mut best: Option<Meta> = None;
    for (i, slot) in slots.iter().enumerate() {
        match page_layout::decode_meta(slot, i as u32) {
            page_layout::Slot::Valid(m) => {
                if best.is_none_or(|b| m.seq > b.seq) {
                    best = Some(m);
                }
            }
            // Spec reading: any otherwise well-formed meta page (CRC, kind, number, parity,
            // magic) of a newer version refuses the file, whichever slot is newer: this build
            // cannot know what that version did to the pages.
            page_layout::Slot::NewerVersion(v) => {
                return Err(Error::new(
                    Code::FormatVersion,
                    format!(
                        "{PAGE_FILE} meta slot {i} has format version {v}, this build reads version {}; open the database with a newer kestreldb",
                        crate::format::FORMAT_VERSION
                    ),
                ))
            }
            page_layout::Slot::Invalid(_) => {}
        }
    }
    let Some(meta) = best else { return Ok(Meta::NONE) };
    // A valid meta page whose numbers do not fit the file is damage, not "no checkpoint".
    let slot = (meta.seq % 2) as u32;
    if meta.page_count < META_SLOTS
        || meta.catalog_root >= meta.page_count
        || meta.free_head >= meta.page_count
        || (meta.catalog_root != 0 && meta.catalog_root < META_SLOTS)
        || (meta.free_head != 0 && meta.free_head < META_SLOTS)
    {
        return Err(corrupt(
            slot,
            &format!("meta page with page count {}, catalog root {}, free list at {}", meta.page_count, meta.catalog_root, meta.free_head),
        ));
    }
    let file_bytes = file.metadata().map_err(|e| Error::io(&format!("reading the size of {PAGE_FILE}"), &e))?.len();
    if file_bytes < meta.page_count as u64 * PAGE_BYTES as u64 {
        return Err(corrupt(slot, &format!("checkpoint {} has {} pages but the file holds only {file_bytes} bytes (truncated)", meta.seq, meta.page_count)));
    }
    Ok(meta)
}

fn invalid(msg: String) -> Error {
    Error::new(Code::InvalidArgument, msg)
}

/// The caller's promises about `checkpoint`'s input, checked.
fn validate_changes<V: AsRef<[u8]>>(lsn: u64, changes: &[CollectionChanges<V>], meta: &Meta) -> Result<()> {
    if lsn < meta.checkpoint_lsn {
        return Err(invalid(format!("checkpoint at LSN {lsn} is before the current checkpoint LSN {}", meta.checkpoint_lsn)));
    }
    for (i, cc) in changes.iter().enumerate() {
        if cc.name.len() > KEY_BYTES_MAX {
            return Err(invalid(format!("collection name of {} bytes", cc.name.len())));
        }
        // Index trees are derived by the checkpoint itself (step 0), never passed in.
        if envelope::is_index_tree(cc.name.as_bytes()) {
            return Err(invalid(format!("collection name {:?} contains 0x00 (index trees are derived, not passed in)", cc.name)));
        }
        // str's Ord is bytewise, as the catalog's key order.
        if i > 0 && changes[i - 1].name >= cc.name {
            return Err(invalid(format!("collections not in strictly ascending name order at {:?}", cc.name)));
        }
        if cc.changes.is_empty() {
            return Err(invalid(format!("collection {:?} listed with no changes", cc.name)));
        }
        for (j, (key, value)) in cc.changes.iter().enumerate() {
            if key.len() > KEY_BYTES_MAX {
                return Err(invalid(format!("collection {:?}: key of {} bytes > {KEY_BYTES_MAX}", cc.name, key.len())));
            }
            if j > 0 && cc.changes[j - 1].0 >= *key {
                return Err(invalid(format!("collection {:?}: changes not in strictly ascending key order", cc.name)));
            }
            if let Some((_, v)) = value {
                let v = v.as_ref();
                if v.len() > STORED_VALUE_BYTES_MAX {
                    return Err(invalid(format!("collection {:?}: value of {} bytes > {STORED_VALUE_BYTES_MAX}", cc.name, v.len())));
                }
            }
        }
    }
    Ok(())
}

/// Pages to write per `write_all_at` when coalescing a run of consecutive page numbers.
const WRITE_RUN_PAGES_MAX: usize = 256;

/// Write `pages` (sorted by number, distinct), coalescing consecutive numbers.
/// `garble`: write deterministic garbage (and some zero pages) instead — the lost-writes fault.
fn write_pages(file: &File, pages: &[(u32, Box<PageBuf>)], garble: bool) -> Result<()> {
    let mut run: Vec<u8> = Vec::with_capacity(WRITE_RUN_PAGES_MAX * PAGE_BYTES);
    let mut i = 0;
    // Bounded: each outer round consumes ≥ 1 page.
    while i < pages.len() {
        let first = pages[i].0;
        run.clear();
        while i < pages.len() && run.len() < WRITE_RUN_PAGES_MAX * PAGE_BYTES && pages[i].0 == first + (run.len() / PAGE_BYTES) as u32 {
            let (no, page) = &pages[i];
            if garble {
                let mut x = (*no as u64) << 1 | 1;
                run.extend((0..PAGE_BYTES).map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Every third page "lost" (zeros), the others garbled.
                    if no % 3 == 0 {
                        0
                    } else {
                        x as u8
                    }
                }));
            } else {
                run.extend_from_slice(&page[..]);
            }
            i += 1;
        }
        file.write_all_at(&run, first as u64 * PAGE_BYTES as u64).map_err(|e| Error::io(&format!("writing {PAGE_FILE} pages {first}.."), &e))?;
    }
    Ok(())
}

impl PageStore {
    /// Open `<dir>/pages.kdb` (does not create it: a missing file = no checkpoint; the file is
    /// created by the first checkpoint, and the directory fsync'd then). Picks the valid meta
    /// slot with the higher seq. No valid slot = no checkpoint (not an error). A meta page with a
    /// newer format version → `KESTREL_FORMAT_VERSION`. `cache_bytes` bounds the page cache
    /// (at least 64 pages).
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<PageStore> {
        let path = dir.join(PAGE_FILE);
        let (meta, file) = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => (read_meta(&f)?, Some(Arc::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Meta::NONE, None),
            Err(e) => return Err(Error::io(&format!("opening {}", path.display()), &e)),
        };
        Ok(PageStore {
            dir: dir.to_path_buf(),
            path,
            published: RwLock::new(Published { meta, file, roots: RootMemo::default() }),
            cache: PageCache::new(cache_bytes),
            flusher: Mutex::new(Quarantine::default()),
        })
    }

    /// The published checkpoint.
    pub fn meta(&self) -> Meta {
        self.read_state().meta
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, Published> {
        self.published.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f` on the published checkpoint under the read lock; None when there is no file yet.
    fn with_source<T>(&self, f: impl FnOnce(&PageSource<'_>) -> Result<T>) -> Result<Option<T>> {
        let state = self.read_state();
        let Some(file) = &state.file else { return Ok(None) };
        let src = PageSource { file, meta: state.meta, cache: &self.cache, roots: Some(&state.roots) };
        f(&src).map(Some)
    }

    pub fn get(&self, collection: &str, key: &[u8]) -> Result<Option<(u64, Vec<u8>)>> {
        Ok(self
            .with_source(|src| {
                let Some(root) = src.tree_root(collection)? else { return Ok(None) };
                tree_read::lookup(src, root, key, |_, e| Ok((e.commit_id, tree_read::read_value(src, &e.value)?)))
            })?
            .flatten())
    }

    /// Up to `max` entries (max ≥ 1, else `KESTREL_INVALID_ARGUMENT`) of `collection` within
    /// the bounds, ascending or (reverse) descending.
    pub fn range(&self, collection: &str, lower: Bound<&[u8]>, upper: Bound<&[u8]>, reverse: bool, max: usize) -> Result<Vec<Entry>> {
        if max == 0 {
            return Err(invalid("range with max = 0 (pass at least 1)".into()));
        }
        Ok(self
            .with_source(|src| {
                let mut out = Vec::new();
                let Some(root) = src.tree_root(collection)? else { return Ok(out) };
                tree_read::range(src, root, lower, upper, reverse, &mut |_, e| {
                    out.push(Entry { key: e.key.to_vec(), commit_id: e.commit_id, value: tree_read::read_value(src, &e.value)? });
                    Ok(out.len() < max)
                })?;
                Ok(out)
            })?
            .unwrap_or_default())
    }

    /// (name, live records) of every tree the catalog lists in the published checkpoint, name
    /// order: collections and index trees (`collection ‖ 0x00 ‖ index`, counting entries).
    pub fn collections(&self) -> Result<Vec<(String, u64)>> {
        Ok(self
            .with_source(|src| {
                let mut out = Vec::new();
                tree_read::range(src, src.meta.catalog_root, Bound::Unbounded, Bound::Unbounded, false, &mut |page, e| {
                    let (_, records) = page_layout::decode_catalog_value(e).map_err(|what| corrupt(page, &what))?;
                    let name =
                        std::str::from_utf8(e.key).map_err(|_| corrupt(page, &format!("catalog name {:?} is not UTF-8", String::from_utf8_lossy(e.key))))?;
                    out.push((name.to_string(), records));
                    Ok(true)
                })?;
                Ok(out)
            })?
            .unwrap_or_default())
    }

    /// Every page the published checkpoint reaches (catalog, trees, overflow chains, free-list
    /// chain), ascending; not the meta slots. A structural problem → `KESTREL_CORRUPT`.
    pub fn reachable_pages(&self) -> Result<Vec<u32>> {
        Ok(self
            .with_source(|src| {
                let walk = check::walk(src)?;
                if let Some(first) = walk.problems.first() {
                    return Err(Error::new(Code::Corrupt, format!("{first}; restore the database from a backup (kestrel restore)")));
                }
                Ok(walk.reached)
            })?
            .unwrap_or_default())
    }

    /// The pages of the published checkpoint that are not free (nor meta slots), ascending. By
    /// the accounting the checks enforce (reachable ∪ free ∪ {0, 1} = every page below the page
    /// count) these are exactly the pages it reaches, found from the free list alone: a backup
    /// of a large database need not walk its trees (which reads every multi-page overflow
    /// chain). Were the file damaged, this copies a superset — never less than is reachable.
    pub fn pages_in_use(&self) -> Result<Vec<u32>> {
        Ok(self
            .with_source(|src| {
                let (_, free) = allocator::read_free_list(src)?;
                let count = src.meta.page_count;
                let mut out = Vec::with_capacity((count as usize).saturating_sub(free.len() + META_SLOTS as usize));
                let mut listed = free.iter().copied().peekable();
                // Bounded by the page count; `free` is ascending (read_free_list checks it).
                for p in META_SLOTS..count {
                    if listed.peek() == Some(&p) {
                        listed.next();
                    } else {
                        out.push(p);
                    }
                }
                Ok(out)
            })?
            .unwrap_or_default())
    }

    /// Structural check of the published checkpoint per the spec's "Checks" list: the
    /// problems found (empty = fine) plus counts. Reads the pages from disk, not the cache.
    pub fn check(&self) -> Result<CheckReport> {
        Ok(self
            .with_source(|src| {
                let walk = check::walk(src)?;
                let fill = if walk.leaf_pages == 0 { 0.0 } else { 100.0 * walk.leaf_bytes as f64 / (walk.leaf_pages as f64 * page_layout::BODY_BYTES as f64) };
                Ok(CheckReport {
                    pages_reachable: walk.reached.len() as u64,
                    pages_free: walk.free.len() as u64,
                    records: walk.records,
                    index_entries: walk.index_entries,
                    leaf_fill_percent: fill,
                    problems: walk.problems,
                })
            })?
            .unwrap_or_default())
    }

    /// Write checkpoint seq+1 at `lsn` (≥ the current checkpoint LSN) from `changes` (sorted by
    /// name, each non-empty, collections only: the index-tree changes are derived here from the
    /// old and new stored values, spec step 0) exactly per the spec, fdatasync, write the meta
    /// slot, fdatasync, publish. Safe to run while other threads read; on any error the published state is
    /// unchanged.
    pub fn checkpoint(&self, lsn: u64, changes: &[CollectionChanges], fault: PageFault) -> Result<CheckpointReport> {
        self.checkpoint_of(lsn, changes, fault)
    }

    /// [`checkpoint`](Self::checkpoint) with the values in any byte container (the engine's
    /// flusher passes the store's shared values, so that nothing is copied).
    pub fn checkpoint_of<V: AsRef<[u8]>>(&self, lsn: u64, changes: &[CollectionChanges<V>], fault: PageFault) -> Result<CheckpointReport> {
        self.checkpoint_with(lsn, changes, fault, true)
    }

    /// [`checkpoint_of`](Self::checkpoint_of); `reuse_free_pages` false: only new pages at the
    /// end of the file, the published free list carried whole into the new one (see Allocator).
    pub fn checkpoint_with<V: AsRef<[u8]>>(
        &self,
        lsn: u64,
        changes: &[CollectionChanges<V>],
        fault: PageFault,
        reuse_free_pages: bool,
    ) -> Result<CheckpointReport> {
        let mut quarantine = self.flusher.lock().unwrap_or_else(PoisonError::into_inner);
        // Only this (serialized) function changes the published state, so this snapshot stays
        // the published checkpoint until we publish.
        let (meta, file) = {
            let state = self.read_state();
            (state.meta, state.file.clone())
        };
        validate_changes(lsn, changes, &meta)?;
        let file = match file {
            Some(f) => f,
            None => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&self.path)
                    .map_err(|e| Error::io(&format!("creating {}", self.path.display()), &e))?;
                // The new directory entry must be durable before any meta page in it counts.
                sync_dir(&self.dir)?;
                Arc::new(f)
            }
        };
        let src = PageSource { file: &file, meta, cache: &self.cache, roots: None };
        let mut built = build_checkpoint(&src, lsn, changes, &quarantine, reuse_free_pages)?;
        built.pages.sort_unstable_by_key(|(no, _)| *no);
        debug_assert!(built.pages.windows(2).all(|w| w[0].0 < w[1].0), "each page written once");
        debug_assert!(built.pages.iter().all(|(no, _)| *no >= META_SLOTS && *no < built.meta.page_count));

        let outcome = self.write_checkpoint(&file, &built, fault);
        // The pages written (or garbled) may still be cached from an older checkpoint that could
        // reach them; drop them. Under the write lock no reader is mid-traversal.
        let mut state = self.published.write().unwrap_or_else(PoisonError::into_inner);
        self.cache.invalidate(built.pages.iter().map(|(no, _)| *no));
        if let Err((err, meta_attempted)) = outcome {
            if meta_attempted {
                quarantine.add(built.pages.iter().map(|(no, _)| *no), built.meta.page_count);
            }
            return Err(err);
        }
        state.meta = built.meta;
        state.file = Some(file);
        state.roots.get_mut().unwrap_or_else(PoisonError::into_inner).clear();
        drop(state);
        // The new meta page is durable and supersedes every failed attempt's.
        *quarantine = Quarantine::default();
        let pages_written = built.pages.len() as u64;
        Ok(CheckpointReport { seq: built.meta.seq, lsn, pages_written, pages_freed: built.pages_freed, bytes_written: (pages_written + 1) * PAGE_BYTES as u64 })
    }

    /// The newest valid checkpoint on disk (read from both meta slots, as open does; another
    /// participant sharing the directory may have published it), with the file it is in. None
    /// while `pages.kdb` does not exist.
    pub fn newest_on_disk(&self) -> Result<Option<(Meta, Arc<File>)>> {
        let file = match self.read_state().file.clone() {
            Some(f) => f,
            None => match OpenOptions::new().read(true).write(true).open(&self.path) {
                Ok(f) => Arc::new(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(&format!("opening {}", self.path.display()), &e)),
            },
        };
        Ok(Some((read_meta(&file)?, file)))
    }

    /// Make `meta` (newer than the published one, from [`newest_on_disk`](Self::newest_on_disk))
    /// the published checkpoint: reads and the next checkpoint build on it. The page cache is
    /// emptied: another participant may have rewritten pages this one had cached.
    pub fn adopt(&self, meta: Meta, file: Arc<File>) {
        let mut quarantine = self.flusher.lock().unwrap_or_else(PoisonError::into_inner);
        let mut state = self.published.write().unwrap_or_else(PoisonError::into_inner);
        debug_assert!(meta.seq > state.meta.seq, "only a newer checkpoint is adopted");
        state.meta = meta;
        state.file = Some(file);
        state.roots.get_mut().unwrap_or_else(PoisonError::into_inner).clear();
        self.cache.clear();
        // A newer published checkpoint supersedes any failed attempt of ours, as our own does.
        *quarantine = Quarantine::default();
    }

    /// Step 6 of the spec: pages, fdatasync, meta slot, fdatasync. On error also says whether
    /// the meta write had begun (then the new meta page may be on disk after all).
    fn write_checkpoint(&self, file: &File, built: &Built, fault: PageFault) -> std::result::Result<(), (Error, bool)> {
        let before_meta = |e: Error| (e, false);
        let after_meta = |e: Error| (e, true);
        if fault == PageFault::LosePagesBeforeMeta {
            write_pages(file, &built.pages, true).map_err(before_meta)?;
            return Err(before_meta(Error::new(Code::Io, "injected fault: the checkpoint's pages were lost before its meta page was written")));
        }
        write_pages(file, &built.pages, false).map_err(before_meta)?;
        file.sync_data().map_err(|e| before_meta(Error::io(&format!("syncing {PAGE_FILE}"), &e)))?;
        let meta_page = page_layout::encode_meta(&built.meta);
        let slot_offset = (built.meta.seq % 2) * PAGE_BYTES as u64;
        let meta_bytes = if fault == PageFault::TearMeta { TORN_META_BYTES } else { PAGE_BYTES };
        file.write_all_at(&meta_page[..meta_bytes], slot_offset).map_err(|e| after_meta(Error::io(&format!("writing {PAGE_FILE} meta page"), &e)))?;
        if fault == PageFault::TearMeta || fault == PageFault::FailMetaSync {
            file.sync_data().map_err(|e| after_meta(Error::io(&format!("syncing {PAGE_FILE}"), &e)))?;
            let what = if fault == PageFault::TearMeta { "the checkpoint's meta page was torn" } else { "the sync after the checkpoint's meta page failed" };
            return Err(after_meta(Error::new(Code::Io, format!("injected fault: {what}"))));
        }
        file.sync_data().map_err(|e| after_meta(Error::io(&format!("syncing {PAGE_FILE}"), &e)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(tag: u8) -> Arc<TreePage> {
        Arc::new(TreePage::unchecked(Arc::new([tag; PAGE_BYTES])))
    }

    /// Each published checkpoint has its own remembered tree roots: a read after the next
    /// checkpoint (new roots, a tree gone, a tree back) never uses the old ones.
    #[test]
    fn remembered_roots_follow_each_published_checkpoint() {
        let dir = std::env::temp_dir().join(format!("kestrel-pages-roots-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = PageStore::open(&dir, 1 << 20).unwrap();
        let put = |lsn: u64, name: &str, keys: std::ops::Range<u32>, tag: u8| {
            let changes: Vec<Change> = keys.map(|k| (k.to_be_bytes().to_vec(), Some((lsn, vec![tag; 100])))).collect();
            store.checkpoint(lsn, &[CollectionChanges { name: name.into(), changes }], PageFault::None).unwrap();
        };
        let get = |name: &str, k: u32| store.get(name, &k.to_be_bytes()).unwrap().map(|(c, v)| (c, v[0]));
        let count = |name: &str| store.range(name, Bound::Unbounded, Bound::Unbounded, false, usize::MAX).unwrap().len();
        assert_eq!(get("a", 1), None);
        put(1, "a", 0..10, 1);
        assert_eq!((get("a", 1), get("b", 1), count("a")), (Some((1, 1)), None, 10));
        // Enough keys for a new, deeper tree: a new root.
        put(2, "a", 0..500, 2);
        assert_eq!((get("a", 1), get("a", 499), count("a")), (Some((2, 2)), Some((2, 2)), 500));
        put(3, "b", 0..1, 3);
        assert_eq!((get("b", 0), count("b")), (Some((3, 3)), 1));
        // Tree b emptied (it leaves the catalog), then back.
        store.checkpoint(4, &[CollectionChanges { name: "b".into(), changes: vec![(0u32.to_be_bytes().to_vec(), None)] }], PageFault::None).unwrap();
        assert_eq!((get("b", 0), count("b")), (None, 0));
        put(5, "b", 7..8, 5);
        assert_eq!((get("b", 7), get("b", 0), count("b"), get("a", 3)), (Some((5, 5)), None, 1, Some((2, 2))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cache_is_bounded_and_invalidates() {
        let c = PageCache::new(0);
        assert_eq!(c.capacity_pages, CACHE_PAGES_MIN);
        for p in 0..1000u32 {
            c.insert(p, page(p as u8));
            assert_eq!(c.get(p).unwrap().page[0], p as u8);
        }
        {
            let inner = c.lock();
            assert_eq!(inner.keys.len(), CACHE_PAGES_MIN);
            for (i, k) in inner.keys.iter().enumerate() {
                assert_eq!(inner.map[k].1, i);
            }
        }
        c.insert(999, page(7));
        assert_eq!(c.get(999).unwrap().page[0], 7);
        c.invalidate([999, 5_000].into_iter());
        assert!(c.get(999).is_none());
        let inner = c.lock();
        assert_eq!(inner.keys.len(), CACHE_PAGES_MIN - 1);
        for (i, k) in inner.keys.iter().enumerate() {
            assert_eq!(inner.map[k].1, i);
        }
    }
}
