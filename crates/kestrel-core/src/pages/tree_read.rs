//! Reading a page-store B+tree: lookups, ranges in either direction, values (following their
//! overflow chains), and catalog lookups (the catalog is the tree that maps each collection and
//! index tree to its root page and record count).

use std::ops::Bound;

use super::{corrupt, PageSource};
use crate::error::Result;
use crate::format::page_layout::{
    decode_catalog_value, decode_overflow, overflow_pages_for, LeafEntry, ValueRef, INLINE_VALUE_BYTES_MAX, KIND_BRANCH, KIND_LEAF, KIND_OVERFLOW,
};

/// Deepest tree any path may reach. A real tree is far shallower (a full branch page holds
/// ≥ 3 entries, so 2^32 pages need ≤ 21 levels); past this a corrupt file has a cycle.
pub const DEPTH_MAX: usize = 64;

pub(super) const TREE_KINDS: &[u8] = &[KIND_LEAF, KIND_BRANCH];

/// Find `key` in the tree at `root` (0 = empty) and hand its leaf entry (with the leaf's page
/// number) to `f`.
pub fn lookup<T>(src: &PageSource<'_>, root: u32, key: &[u8], f: impl FnOnce(u32, &LeafEntry<'_>) -> Result<T>) -> Result<Option<T>> {
    let mut no = root;
    if no == 0 {
        return Ok(None);
    }
    for _depth in 0..DEPTH_MAX {
        let page = src.read_tree(no)?;
        if page.is_leaf() {
            let i = page.lower_bound(key);
            if i < page.len() && page.key(i) == key {
                return f(no, &page.leaf_entry(i)).map(Some);
            }
            return Ok(None);
        }
        no = page.child(page.child_for(key));
    }
    Err(corrupt(root, &format!("tree deeper than {DEPTH_MAX} levels (a cycle?)")))
}

/// (root, live records) of a collection in the catalog.
pub fn catalog_get(src: &PageSource<'_>, name: &[u8]) -> Result<Option<(u32, u64)>> {
    lookup(src, src.meta.catalog_root, name, |leaf, e| decode_catalog_value(e).map_err(|w| corrupt(leaf, &w)))
}

/// Follow an overflow chain of a `len`-byte value from `first`, handing each page's data to
/// `on_data`; returns the chain's pages. The chain must hold exactly `len` bytes and end there.
pub(super) fn walk_chain(src: &PageSource<'_>, first: u32, len: usize, mut on_data: impl FnMut(&[u8])) -> Result<std::result::Result<Vec<u32>, (u32, String)>> {
    debug_assert!(len > INLINE_VALUE_BYTES_MAX);
    let mut pages = Vec::with_capacity(overflow_pages_for(len));
    let mut no = first;
    let mut got = 0usize;
    // Bounded: every page adds ≥ 1 byte and we stop at `len` bytes.
    while got < len {
        if no == 0 {
            let last = pages.last().copied().unwrap_or(first);
            return Ok(Err((last, format!("overflow chain ends after {got} of {len} bytes"))));
        }
        let page = match src.read_checked(no, &[KIND_OVERFLOW], false)? {
            Ok((_, page)) => page,
            Err(what) => return Ok(Err((no, what))),
        };
        let (data, next) = match decode_overflow(&page) {
            Ok(d) => d,
            Err(what) => return Ok(Err((no, what))),
        };
        pages.push(no);
        got += data.len();
        if got > len {
            return Ok(Err((no, format!("overflow chain holds more than the value's {len} bytes"))));
        }
        on_data(data);
        if got == len && next != 0 {
            return Ok(Err((no, format!("overflow chain goes on past the value's {len} bytes"))));
        }
        no = next;
    }
    Ok(Ok(pages))
}

/// The bytes of a value, following its overflow chain if it has one.
pub fn read_value(src: &PageSource<'_>, value: &ValueRef<'_>) -> Result<Vec<u8>> {
    match *value {
        ValueRef::Inline(v) => Ok(v.to_vec()),
        ValueRef::Overflow { len, first } => {
            let mut out = Vec::with_capacity(len as usize);
            walk_chain(src, first, len as usize, |d| out.extend_from_slice(d))?.map_err(|(no, w)| corrupt(no, &w))?;
            debug_assert_eq!(out.len(), len as usize);
            Ok(out)
        }
    }
}

fn bounds_empty(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u)) | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
        _ => false,
    }
}

/// Visit the leaf entries of the tree at `root` within the bounds, ascending or (reverse)
/// descending, until `visit` returns false. `visit` gets the leaf's page number too.
pub fn range(
    src: &PageSource<'_>,
    root: u32,
    lower: Bound<&[u8]>,
    upper: Bound<&[u8]>,
    reverse: bool,
    visit: &mut dyn FnMut(u32, &LeafEntry<'_>) -> Result<bool>,
) -> Result<()> {
    if root == 0 || bounds_empty(lower, upper) {
        return Ok(());
    }
    range_node(src, root, lower, upper, reverse, visit, 0).map(|_| ())
}

/// Returns false once `visit` asked to stop.
fn range_node(
    src: &PageSource<'_>,
    no: u32,
    lower: Bound<&[u8]>,
    upper: Bound<&[u8]>,
    reverse: bool,
    visit: &mut dyn FnMut(u32, &LeafEntry<'_>) -> Result<bool>,
    depth: usize,
) -> Result<bool> {
    if depth >= DEPTH_MAX {
        return Err(corrupt(no, &format!("tree deeper than {DEPTH_MAX} levels (a cycle?)")));
    }
    let page = src.read_tree(no)?;
    if page.is_leaf() {
        let start = match lower {
            Bound::Unbounded => 0,
            Bound::Included(k) => page.lower_bound(k),
            Bound::Excluded(k) => page.upper_bound(k),
        };
        let end = match upper {
            Bound::Unbounded => page.len(),
            Bound::Included(k) => page.upper_bound(k),
            Bound::Excluded(k) => page.lower_bound(k),
        };
        if start >= end {
            return Ok(true);
        }
        if reverse {
            for i in (start..end).rev() {
                if !visit(no, &page.leaf_entry(i))? {
                    return Ok(false);
                }
            }
        } else {
            for i in start..end {
                if !visit(no, &page.leaf_entry(i))? {
                    return Ok(false);
                }
            }
        }
        return Ok(true);
    }
    // Child i holds keys in [key_i, key_{i+1}); visit the children that can meet the bounds.
    let lo = match lower {
        Bound::Unbounded => 0,
        Bound::Included(k) | Bound::Excluded(k) => page.child_for(k),
    };
    let hi = match upper {
        Bound::Unbounded => page.len() - 1,
        Bound::Included(k) => page.child_for(k),
        Bound::Excluded(k) => match page.lower_bound(k) {
            0 => return Ok(true),
            p => p - 1,
        },
    };
    if lo > hi {
        return Ok(true);
    }
    if reverse {
        for i in (lo..=hi).rev() {
            if !range_node(src, page.child(i), lower, upper, reverse, visit, depth + 1)? {
                return Ok(false);
            }
        }
    } else {
        for i in lo..=hi {
            if !range_node(src, page.child(i), lower, upper, reverse, visit, depth + 1)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
