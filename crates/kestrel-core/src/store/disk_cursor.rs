//! The page-store side of a scan or an index lookup: a range of a page-store tree read in
//! growing chunks, merged under the chains in memory (memory answers for every key it holds).

use std::collections::VecDeque;
use std::ops::Bound;

use crate::error::Result;
use crate::pages::{Entry, PageStore};

/// Entries of the first page-store read while merging a scan or a lookup: most reads want a
/// few (a `limit: 1` scan, an exact index lookup), so the first chunk is small and each next one
/// [`SCAN_CHUNK_GROWTH`] times bigger, up to [`SCAN_CHUNK_ENTRIES_MAX`].
const SCAN_CHUNK_ENTRIES_FIRST: usize = 16;
const SCAN_CHUNK_GROWTH: usize = 4;
const SCAN_CHUNK_ENTRIES_MAX: usize = 256;

/// A page-store range read in growing chunks, for merging with memory.
pub(super) struct DiskCursor<'a> {
    pages: &'a PageStore,
    tree: &'a str,
    lower: Bound<&'a [u8]>,
    upper: Bound<&'a [u8]>,
    reverse: bool,
    buffered: VecDeque<Entry>,
    /// The last key read: the next chunk starts after it.
    last: Option<Vec<u8>>,
    /// Entries the next chunk reads.
    chunk: usize,
    done: bool,
}

impl<'a> DiskCursor<'a> {
    pub(super) fn new(pages: &'a PageStore, tree: &'a str, lower: Bound<&'a [u8]>, upper: Bound<&'a [u8]>, reverse: bool) -> Self {
        DiskCursor { pages, tree, lower, upper, reverse, buffered: VecDeque::new(), last: None, chunk: SCAN_CHUNK_ENTRIES_FIRST, done: false }
    }

    /// A cursor that reads nothing: the page store has nothing a merge with memory could use.
    pub(super) fn empty(pages: &'a PageStore, tree: &'a str) -> Self {
        let mut c = DiskCursor::new(pages, tree, Bound::Unbounded, Bound::Unbounded, false);
        c.done = true;
        c
    }

    /// The next entry in order, without taking it.
    pub(super) fn peek(&mut self) -> Result<Option<&Entry>> {
        if self.buffered.is_empty() && !self.done {
            let (lo, hi) = match (&self.last, self.reverse) {
                (None, _) => (self.lower, self.upper),
                (Some(c), false) => (Bound::Excluded(c.as_slice()), self.upper),
                (Some(c), true) => (self.lower, Bound::Excluded(c.as_slice())),
            };
            let chunk = self.pages.range(self.tree, lo, hi, self.reverse, self.chunk)?;
            self.done = chunk.len() < self.chunk;
            self.chunk = (self.chunk * SCAN_CHUNK_GROWTH).min(SCAN_CHUNK_ENTRIES_MAX);
            if let Some(e) = chunk.last() {
                self.last = Some(e.key.clone());
            }
            self.buffered.extend(chunk);
        }
        Ok(self.buffered.front())
    }

    pub(super) fn pop(&mut self) -> Option<Entry> {
        self.buffered.pop_front()
    }
}

/// Order of a memory key against a page-store key in the direction of the merge.
pub(super) fn merge_order(mem: Option<&[u8]>, disk: Option<&[u8]>, reverse: bool) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering::*;
    Some(match (mem, disk) {
        (None, None) => return None,
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        (Some(m), Some(d)) => {
            let o = m.cmp(d);
            if reverse {
                o.reverse()
            } else {
                o
            }
        }
    })
}
