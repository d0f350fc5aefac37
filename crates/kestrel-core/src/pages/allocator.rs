//! Page allocation of one checkpoint (docs/FORMAT.md "Writing checkpoint seq + 1", steps 1 and
//! 5): the [`Allocator`] — reusable pages of the published free list first, smallest first, then
//! new pages at the end of the file — and the new free-list chain; reading the published free
//! list; and the [`Quarantine`] of pages that a failed checkpoint may have published.

use super::{corrupt, PageSource, PAGE_FILE};
use crate::error::{Code, Error, Result};
use crate::format::page_layout::{decode_free, FREE_NUMBERS_PER_PAGE, KIND_FREE, META_SLOTS};

/// The allocator of one checkpoint (spec step 1).
pub struct Allocator {
    /// The published free list, ascending; `reusable[taken..]` are still free.
    reusable: Vec<u32>,
    taken: usize,
    /// Invariant: ≥ the published page count; pages ≥ `next` are not in use.
    pub(super) next: u32,
    /// Pages freed by this checkpoint: reusable only from the next checkpoint on, because the
    /// published checkpoint can reach them until the new meta page is durable.
    pub(super) freed: Vec<u32>,
    /// False: hand out only new pages at the end of the file (another participant sharing the
    /// directory may still read an older checkpoint that reaches the published free pages);
    /// the whole published free list is carried into the new one.
    reuse: bool,
}

impl Allocator {
    pub fn new(reusable: Vec<u32>, page_count: u32, reuse: bool) -> Allocator {
        debug_assert!(reusable.windows(2).all(|w| w[0] < w[1]));
        debug_assert!(reusable.last().is_none_or(|&p| p < page_count));
        Allocator { reusable, taken: 0, next: page_count, freed: Vec::new(), reuse }
    }

    /// The smallest reusable page, or else a new page at the end of the file.
    pub fn alloc(&mut self) -> Result<u32> {
        if !self.reuse {
            return self.alloc_at_end();
        }
        if let Some(&p) = self.reusable.get(self.taken) {
            self.taken += 1;
            return Ok(p);
        }
        self.alloc_at_end()
    }

    /// A new page at the end of the file (`next++`).
    pub fn alloc_at_end(&mut self) -> Result<u32> {
        let p = self.next;
        self.next =
            p.checked_add(1).ok_or_else(|| Error::new(Code::Io, format!("{PAGE_FILE} is full: 2^32 pages; compact the database (backup and restore)")))?;
        Ok(p)
    }

    pub fn free(&mut self, p: u32) {
        debug_assert!(p >= META_SLOTS && p < self.next);
        self.freed.push(p);
    }

    /// Spec step 5: the pages of the new free-list chain and the numbers they list. With `R`
    /// the still-reusable pages and `N` = |R| + |freed|, the chain has `c` pages, the smallest
    /// `c` ≥ 0 with `N − min(c, |R|) ≤ 1018·c`; they are the `c` smallest pages of `R` (then
    /// new pages at the end), so a database that rewrites the same keys does not grow. The list
    /// is the rest of `R` ∪ `freed`, ascending. A page freed twice means the published
    /// checkpoint reaches it twice (or both reaches and lists it as free): the file is damaged.
    pub(super) fn free_chain(&mut self) -> Result<(Vec<u32>, Vec<u32>)> {
        let reusable_left = self.reusable.len() - self.taken;
        let total = reusable_left + self.freed.len();
        // The chain's pages come from R only when pages may be reused.
        let from_reusable = if self.reuse { reusable_left } else { 0 };
        let per_page = FREE_NUMBERS_PER_PAGE;
        // Bounded: c ≤ ceil(total / 1018) satisfies the condition.
        let mut c = 0usize;
        while total - c.min(from_reusable) > per_page * c {
            c += 1;
        }
        debug_assert!(c <= total.div_ceil(per_page));
        let mut chain = Vec::with_capacity(c);
        for _ in 0..c {
            chain.push(self.alloc()?);
        }
        let mut list: Vec<u32> = self.reusable[self.taken..].to_vec();
        list.extend_from_slice(&self.freed);
        list.sort_unstable();
        if let Some(w) = list.windows(2).find(|w| w[0] == w[1]) {
            return Err(corrupt(w[0], "reached twice by the published checkpoint, or both reached and listed as free"));
        }
        debug_assert!(list.len() <= per_page * c);
        Ok((chain, list))
    }
}

/// The published free list: (the chain's pages, the page numbers listed).
pub(crate) fn read_free_list(src: &PageSource<'_>) -> Result<(Vec<u32>, Vec<u32>)> {
    let meta = src.meta;
    let mut chain = Vec::new();
    let mut numbers: Vec<u32> = Vec::with_capacity(meta.free_count as usize);
    let mut no = meta.free_head;
    // Bounded: a chain longer than the file has pages is a cycle.
    while no != 0 {
        if chain.len() >= meta.page_count as usize {
            return Err(corrupt(meta.free_head, "free-list chain longer than the file (a cycle?)"));
        }
        let (_, page) = src.read(no, &[KIND_FREE], false)?;
        let (nums, next) = decode_free(&page).map_err(|w| corrupt(no, &w))?;
        if let (Some(&last), Some(&first)) = (numbers.last(), nums.first()) {
            if last >= first {
                return Err(corrupt(no, "free list not ascending across pages"));
            }
        }
        if let Some(&bad) = nums.iter().find(|&&p| p >= meta.page_count) {
            return Err(corrupt(no, &format!("free page {bad} beyond the page count {}", meta.page_count)));
        }
        numbers.extend_from_slice(&nums);
        chain.push(no);
        no = next;
    }
    if numbers.len() != meta.free_count as usize {
        let slot = (meta.seq % 2) as u32;
        return Err(corrupt(slot, &format!("meta lists {} free pages, the free list holds {}", meta.free_count, numbers.len())));
    }
    Ok((chain, numbers))
}

/// Pages written by failed checkpoints whose meta write had begun. That meta page may be on
/// disk and valid (a failed write or fdatasync says nothing about what reached the disk, and a
/// meta page's second half is zeros anyway), so until a checkpoint is published a retry must
/// neither overwrite these pages nor lose them: it treats them as freed by itself (free from
/// the checkpoint after it on) and never allocates them. Fault paths only: a file written
/// through a retry differs from the TypeScript twin's, which is fine — it is still sound.
#[derive(Clone, Debug, Default)]
pub struct Quarantine {
    /// Ascending, distinct; each in the published free list or ≥ the published page count.
    pub pages: Vec<u32>,
    /// The largest page count among those attempts (0 = none).
    pub page_count: u32,
}

impl Quarantine {
    pub fn add(&mut self, pages: impl Iterator<Item = u32>, page_count: u32) {
        self.pages.extend(pages);
        self.pages.sort_unstable();
        self.pages.dedup();
        self.page_count = self.page_count.max(page_count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::page_layout;

    fn chain_of(reusable: Vec<u32>, page_count: u32, freed: &[u32]) -> (Vec<u32>, Vec<u32>, u32) {
        let mut a = Allocator::new(reusable, page_count, true);
        for &p in freed {
            a.free(p);
        }
        let (chain, list) = a.free_chain().unwrap();
        (chain, list, a.next)
    }

    #[test]
    fn the_free_list_chain_takes_the_smallest_reusable_pages() {
        let (chain, list, next) = chain_of(vec![5, 9, 12], 20, &[3, 15]);
        assert_eq!(chain, vec![5]);
        assert_eq!(list, vec![3, 9, 12, 15]);
        assert_eq!(next, 20, "the file does not grow");
    }

    #[test]
    fn the_free_list_chain_grows_the_file_only_when_nothing_is_reusable() {
        let (chain, list, next) = chain_of(vec![], 20, &[3, 15]);
        assert_eq!((chain, list, next), (vec![20], vec![3, 15], 21));
        let (chain, list, next) = chain_of(vec![], 20, &[]);
        assert_eq!((chain, list, next), (vec![], vec![], 20));
    }

    #[test]
    fn without_reuse_every_page_is_new_and_the_free_list_keeps_all() {
        let mut a = Allocator::new(vec![5, 9, 12], 20, false);
        assert_eq!(a.alloc().unwrap(), 20);
        a.free(3);
        let (chain, list) = a.free_chain().unwrap();
        assert_eq!((chain, list, a.next), (vec![21], vec![3, 5, 9, 12], 22));
    }

    #[test]
    fn the_smallest_chain_may_leave_its_last_page_empty() {
        // N = 1020: one page cannot hold 1019 numbers, two pages leave 1018 — a full page and
        // an empty one.
        let reusable: Vec<u32> = (2..1022).collect();
        let (chain, list, next) = chain_of(reusable, 1022, &[]);
        assert_eq!(chain, vec![2, 3]);
        assert_eq!(list.len(), 1018);
        assert_eq!(next, 1022);
        // Encoded as the spec says: 1018 numbers, then an empty last page; both decode.
        let p0 = page_layout::encode_free(&list, 7, 2, 3);
        let p1 = page_layout::encode_free(&[], 7, 3, 0);
        assert_eq!(page_layout::decode_free(&p0).unwrap(), (list.clone(), 3));
        assert_eq!(page_layout::decode_free(&p1).unwrap(), (vec![], 0));
        // Only the last page may hold fewer than 1018.
        let short = page_layout::encode_free(&list[..5], 7, 2, 3);
        assert!(page_layout::decode_free(&short).is_err());
    }
}
