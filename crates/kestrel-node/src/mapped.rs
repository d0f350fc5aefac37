//! A read-only, shared memory mapping of the head of a file, as a Buffer: the `SHARED` file's
//! log block is read on every `lastCommitId` of a participant (freshness), and a mapped read
//! costs no system call where a `pread` costs microseconds. Writes by any process land in the
//! page cache, which the mapping is, so they are seen as soon as they are made; the block's two
//! copies and their CRCs let the reader tell a torn copy, as with `pread`.

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Map the first `len_bytes` of the file at `path`, which must be at least that long and never
/// shrink while mapped (the `SHARED` file is written whole once and never cut). The Buffer
/// unmaps when it is collected. Fails where the platform cannot map, or where the runtime copies
/// external memory instead of viewing it (the copy would never change): callers then read the
/// file instead.
#[napi]
pub fn map_shared<'env>(env: &'env Env, path: String, len_bytes: u32) -> Result<BufferSlice<'env>> {
    let len = len_bytes as usize;
    let ptr = imp::map(&path, len).map_err(|e| Error::new(Status::GenericFailure, format!("mapping {path}: {e}")))?;
    // SAFETY: `ptr` is a live mapping of `len` readable bytes until the finalizer unmaps it; no
    // other Buffer views it.
    let view = unsafe { BufferSlice::from_external(env, ptr, len, len, move |_, len| imp::unmap(ptr, len)) }?;
    if !std::ptr::eq(view.as_ptr(), ptr) {
        return Err(Error::new(Status::GenericFailure, "this runtime copies external buffers: a mapped view would not change".to_owned()));
    }
    Ok(view)
}

#[cfg(unix)]
mod imp {
    use std::ffi::c_void;
    use std::os::fd::AsRawFd;

    unsafe extern "C" {
        fn mmap(addr: *mut c_void, len: usize, prot: i32, flags: i32, fd: i32, offset: i64) -> *mut c_void;
        fn munmap(addr: *mut c_void, len: usize) -> i32;
    }
    const PROT_READ: i32 = 1;
    const MAP_SHARED: i32 = 1;

    pub fn map(path: &str, len: usize) -> std::io::Result<*mut u8> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        if len == 0 || size < len as u64 {
            return Err(std::io::Error::other(format!("the file holds {size} bytes, fewer than the {len} to map")));
        }
        // SAFETY: a fresh read-only shared mapping of an open file's first `len` bytes (which
        // exist); the mapping outlives the descriptor, which is closed on return.
        let p = unsafe { mmap(std::ptr::null_mut(), len, PROT_READ, MAP_SHARED, file.as_raw_fd(), 0) };
        if p as isize == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(p.cast())
    }

    pub fn unmap(p: *mut u8, len: usize) {
        // SAFETY: `p` and `len` are those of a mapping made by `map`, unmapped once.
        unsafe {
            munmap(p.cast(), len);
        }
    }
}

#[cfg(not(unix))]
mod imp {
    pub fn map(_path: &str, _len: usize) -> std::io::Result<*mut u8> {
        Err(std::io::Error::other("not on this platform"))
    }

    pub fn unmap(_p: *mut u8, _len: usize) {}
}
