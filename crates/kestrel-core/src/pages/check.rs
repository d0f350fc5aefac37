//! The structural check of a published checkpoint (docs/FORMAT.md "Checks"): [`walk`] visits
//! everything the meta page reaches — catalog, trees, overflow chains, the free-list chain — and
//! records every problem it meets (checksums, kinds, key order and bounds, leaf depth, record
//! counts, index-tree entries, chain lengths, free-list order) and the accounting rule: reachable
//! ∪ free ∪ the meta slots = every page below the page count. Behind `PageStore::check` (verify)
//! and `PageStore::reachable_pages`.

use std::collections::HashSet;
use std::sync::Arc;

use super::tree_read::{DEPTH_MAX, TREE_KINDS};
use super::{problem, PageSource};
use crate::error::Result;
use crate::format::envelope;
use crate::format::page_layout::{
    self, decode_branch, decode_catalog_value, decode_free, decode_leaf, decode_overflow, leaf_entry_bytes, PageBuf, ValueRef, KIND_FREE, KIND_LEAF,
    KIND_OVERFLOW, META_SLOTS,
};

#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Empty = the published checkpoint is structurally sound.
    pub problems: Vec<String>,
    /// Pages reached from the meta page (catalog, trees, overflow chains, free-list chain).
    pub pages_reachable: u64,
    /// Page numbers listed in the free list.
    pub pages_free: u64,
    /// Leaf entries over all collection trees (index trees not counted): the meta's `records`.
    pub records: u64,
    /// Leaf entries over all index trees (docs/FORMAT.md "Index trees").
    pub index_entries: u64,
    /// Bytes of entries in collection and index-tree leaves over the leaves' 4072-byte bodies, in percent
    /// (0 with no leaves).
    pub leaf_fill_percent: f64,
}

/// Stop recording problems past this many (a wrecked file would list every page).
const PROBLEMS_MAX: usize = 1000;

pub struct Walk {
    /// Pages reached from the meta page, ascending, each once.
    pub reached: Vec<u32>,
    pub problems: Vec<String>,
    /// The free list as read (possibly partial when it is damaged).
    pub free: Vec<u32>,
    /// Leaf entries over all collection trees (not index trees): the meta's `records`.
    pub records: u64,
    /// Leaf entries over all index trees.
    pub index_entries: u64,
    /// Collection and index-tree leaves and the bytes of their entries.
    pub leaf_pages: u64,
    pub leaf_bytes: u64,
}

struct Walker<'s, 'f> {
    src: &'s PageSource<'f>,
    seen: HashSet<u32>,
    out: Walk,
}

/// One collection as the catalog lists it.
struct CatalogEntry {
    name: String,
    root: u32,
    records: u64,
}

impl Walker<'_, '_> {
    fn problem(&mut self, page_no: u32, what: &str) {
        if self.out.problems.len() < PROBLEMS_MAX {
            self.out.problems.push(problem(page_no, what));
        }
    }

    /// Mark a page reached and read it; None (with the problem recorded) when it was reached
    /// before or fails its checks.
    fn visit(&mut self, no: u32, kinds: &[u8]) -> Result<Option<(page_layout::Header, Arc<PageBuf>)>> {
        if !self.seen.insert(no) {
            self.problem(no, "reached twice");
            return Ok(None);
        }
        match self.src.read_checked(no, kinds, false)? {
            Ok(p) => Ok(Some(p)),
            Err(what) => {
                self.problem(no, &what);
                Ok(None)
            }
        }
    }

    /// Walk the tree under `no`, whose keys must lie in [lower, upper) (None = unbounded).
    /// Returns its leaf entries. `catalog`: Some = this is the catalog, collect its entries.
    /// `index_tree`: every entry must split as `ik ‖ pk ‖ u16 BE |pk|` (ik, pk non-empty) and
    /// hold an empty value.
    // One recursive walk: the bounds, depth and leaf depth change at every level.
    #[allow(clippy::too_many_arguments)]
    fn tree(
        &mut self,
        no: u32,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
        depth: usize,
        leaf_depth: &mut Option<usize>,
        mut catalog: Option<&mut Vec<CatalogEntry>>,
        index_tree: bool,
    ) -> Result<u64> {
        if depth >= DEPTH_MAX {
            self.problem(no, &format!("tree deeper than {DEPTH_MAX} levels"));
            return Ok(0);
        }
        let Some((h, page)) = self.visit(no, TREE_KINDS)? else { return Ok(0) };
        let in_bounds = |k: &[u8]| lower.is_none_or(|l| k >= l) && upper.is_none_or(|u| k < u);
        if h.kind == KIND_LEAF {
            match *leaf_depth {
                None => *leaf_depth = Some(depth),
                Some(d) if d != depth => self.problem(no, &format!("leaf at depth {depth}, other leaves of its tree at depth {d}")),
                Some(_) => {}
            }
            let entries = match decode_leaf(&page) {
                Ok(e) => e,
                Err(what) => {
                    self.problem(no, &what);
                    return Ok(0);
                }
            };
            // Spec: "no empty page but an empty root"; depth 0 is the root.
            if entries.is_empty() && depth > 0 {
                self.problem(no, "empty leaf below the root");
            }
            if entries.first().is_some_and(|e| !in_bounds(e.key)) || entries.last().is_some_and(|e| !in_bounds(e.key)) {
                self.problem(no, "keys outside the bounds its parents give");
            }
            for e in &entries {
                match catalog.as_deref_mut() {
                    Some(list) => match decode_catalog_value(e) {
                        Ok((root, records)) => match std::str::from_utf8(e.key) {
                            Ok(name) => list.push(CatalogEntry { name: name.to_string(), root, records }),
                            Err(_) => self.problem(no, &format!("catalog name {:?} is not UTF-8", String::from_utf8_lossy(e.key))),
                        },
                        Err(what) => self.problem(no, &what),
                    },
                    None => {
                        if index_tree {
                            let splits = envelope::split_entry(e.key).is_some_and(|(ik, pk)| !ik.is_empty() && !pk.is_empty());
                            if !splits || !e.value.is_empty() {
                                self.problem(
                                    no,
                                    &format!(
                                        "index-tree entry of {} key bytes and {} value bytes is not ik ‖ pk ‖ u16 |pk| with an empty value",
                                        e.key.len(),
                                        e.value.len()
                                    ),
                                );
                            }
                        }
                        self.out.leaf_bytes += leaf_entry_bytes(e.key.len(), e.value.len()) as u64;
                        if let ValueRef::Overflow { len, first } = e.value {
                            self.chain(first, len as usize)?;
                        }
                    }
                }
            }
            if catalog.is_none() {
                self.out.leaf_pages += 1;
            }
            return Ok(entries.len() as u64);
        }
        let entries = match decode_branch(&page) {
            Ok(e) => e,
            Err(what) => {
                self.problem(no, &what);
                return Ok(0);
            }
        };
        if entries.iter().skip(1).any(|e| !in_bounds(e.key)) {
            self.problem(no, "keys outside the bounds its parents give");
        }
        let mut total = 0;
        for (i, e) in entries.iter().enumerate() {
            let lo = if i == 0 { lower } else { Some(e.key) };
            let hi = entries.get(i + 1).map(|n| n.key).or(upper);
            total += self.tree(e.child, lo, hi, depth + 1, leaf_depth, catalog.as_deref_mut(), index_tree)?;
        }
        Ok(total)
    }

    /// Walk an overflow chain, marking its pages reached.
    fn chain(&mut self, first: u32, len: usize) -> Result<()> {
        let mut no = first;
        let mut got = 0usize;
        // Bounded: each page is visited once (a repeat ends the walk) and adds ≥ 1 byte.
        while got < len {
            if no == 0 {
                self.problem(first, &format!("overflow chain from here ends after {got} of {len} bytes"));
                return Ok(());
            }
            let Some((_, page)) = self.visit(no, &[KIND_OVERFLOW])? else { return Ok(()) };
            let (data, next) = match decode_overflow(&page) {
                Ok(d) => d,
                Err(what) => {
                    self.problem(no, &what);
                    return Ok(());
                }
            };
            got += data.len();
            if got > len || (got == len && next != 0) {
                self.problem(no, &format!("overflow chain from page {first} is longer than its value ({len} bytes)"));
                return Ok(());
            }
            no = next;
        }
        Ok(())
    }

    /// Walk the free-list chain: the listed pages, ascending, none reachable.
    fn free_list(&mut self) -> Result<()> {
        let meta = self.src.meta;
        let mut no = meta.free_head;
        // Bounded: each chain page is visited once (a repeat ends the walk).
        while no != 0 {
            let Some((_, page)) = self.visit(no, &[KIND_FREE])? else { break };
            let (nums, next) = match decode_free(&page) {
                Ok(d) => d,
                Err(what) => {
                    self.problem(no, &what);
                    break;
                }
            };
            if let (Some(&last), Some(&first)) = (self.out.free.last(), nums.first()) {
                if last >= first {
                    self.problem(no, "free list not ascending across pages");
                }
            }
            self.out.free.extend_from_slice(&nums);
            no = next;
        }
        if self.out.free.len() != meta.free_count as usize {
            self.problem((meta.seq % 2) as u32, &format!("meta lists {} free pages, the free list holds {}", meta.free_count, self.out.free.len()));
        }
        Ok(())
    }
}

/// Walk everything the published checkpoint reaches and run the spec's checks.
pub fn walk(src: &PageSource<'_>) -> Result<Walk> {
    let meta = src.meta;
    let slot = (meta.seq % 2) as u32;
    let mut w = Walker {
        src,
        seen: HashSet::new(),
        out: Walk { reached: Vec::new(), problems: Vec::new(), free: Vec::new(), records: 0, index_entries: 0, leaf_pages: 0, leaf_bytes: 0 },
    };

    let mut catalog = Vec::new();
    if meta.catalog_root != 0 {
        let mut leaf_depth = None;
        w.tree(meta.catalog_root, None, None, 0, &mut leaf_depth, Some(&mut catalog), false)?;
    }
    let mut records = 0u64;
    let mut index_entries = 0u64;
    for c in &catalog {
        let mut leaf_depth = None;
        let index_tree = envelope::is_index_tree(c.name.as_bytes());
        let n = w.tree(c.root, None, None, 0, &mut leaf_depth, None, index_tree)?;
        if n != c.records {
            w.problem(c.root, &format!("collection {:?}: the catalog says {} records, its leaves hold {n}", c.name, c.records));
        }
        if n == 0 {
            w.problem(c.root, &format!("collection {:?} is listed in the catalog but has no records", c.name));
        }
        if index_tree {
            index_entries += n;
        } else {
            records += n;
        }
    }
    w.out.records = records;
    w.out.index_entries = index_entries;
    if records != meta.records {
        w.problem(slot, &format!("meta says {} records, the trees hold {records}", meta.records));
    }
    w.free_list()?;

    let mut reached: Vec<u32> = w.seen.iter().copied().collect();
    reached.sort_unstable();
    let free = std::mem::take(&mut w.out.free);
    let free_set: HashSet<u32> = free.iter().copied().collect();
    if let Some(&p) = free.iter().find(|p| w.seen.contains(p)) {
        w.problem(p, "listed as free but reachable");
    }
    // reachable ∪ free ∪ {0, 1} = every page below the page count.
    let mut missing = 0u64;
    let mut first_missing = None;
    for p in META_SLOTS..meta.page_count {
        if !w.seen.contains(&p) && !free_set.contains(&p) {
            missing += 1;
            first_missing.get_or_insert(p);
        }
    }
    if let Some(p) = first_missing {
        w.problem(p, &format!("neither reachable nor free ({missing} such pages from here on)"));
    }
    if let Some(&p) = free.iter().find(|&&p| p < META_SLOTS || p >= meta.page_count) {
        w.problem(p, &format!("listed as free but outside the pages 2..{}", meta.page_count));
    }
    w.out.reached = reached;
    w.out.free = free;
    Ok(w.out)
}
