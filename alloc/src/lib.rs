//! The global allocator of the `hotel` binary: mimalloc, called the way its fast paths
//! want.
//!
//! The `mimalloc` crate's `GlobalAlloc` sends every allocation through
//! `mi_malloc_aligned`, whose fast path in mimalloc v3 takes only blocks up to 1 KiB that
//! happen to sit at the asked alignment; anything larger (a boxed request future, a
//! connection's read buffer) goes through `mi_theap_malloc_zero_aligned_at_generic`, and
//! often its over-allocating variant, about 200 instructions more per allocation. The
//! gateway made about ten such allocations per proxied request (callgrind, bench/README.md).
//!
//! [`Allocator`] asks for plain `mi_malloc` when plain is already aligned enough, as the
//! standard library's `System` does with `malloc`: when the alignment is at most 16
//! (`MI_MAX_ALIGN_SIZE`) and at most the size. mimalloc's blocks are 8 bytes or a multiple
//! of 16 (`MI_ALIGN2W`, x86-64 and AArch64), and a page's first block is 16-aligned
//! (`MI_PAGE_MIN_START_BLOCK_ALIGN`), so such a block is aligned to its size's largest
//! power of two up to 16. Larger alignments (tokio's cache-padded task cells) keep the
//! aligned calls. Memory is freed with `mi_free` either way.

#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use libmimalloc_sys as ffi;

/// The alignment every plain `mi_malloc` block of at least that size has.
const PLAIN_ALIGN: usize = 16;

/// Whether a plain allocation of `size` bytes is aligned to `align`.
#[inline]
fn plain_is_aligned(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// A block for `layout` from `plain` when a plain block is aligned enough, else from
/// `aligned`; null (passed on as failure) when mimalloc has none.
///
/// # Safety
///
/// `plain` and `aligned` must be mimalloc allocating calls (size; size and alignment).
#[inline]
#[allow(unsafe_code)]
unsafe fn allocate(
    layout: Layout,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: as the caller promised, both are mimalloc calls, which take any size.
    unsafe {
        if plain_is_aligned(layout.size(), layout.align()) {
            plain(layout.size()).cast()
        } else {
            aligned(layout.size(), layout.align()).cast()
        }
    }
}

/// mimalloc as a [`GlobalAlloc`], through its unaligned fast paths where they suffice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocator;

// SAFETY: every allocation comes from mimalloc and goes back to it (`mi_free` takes
// blocks from the plain and the aligned calls alike). A block from a plain call is
// aligned to `layout.align()` whenever `plain_is_aligned` holds (see the module
// documentation; the tests check it over every size and alignment it admits up to 64
// KiB); otherwise the aligned calls are made, as `mimalloc::MiMalloc` makes them.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocating calls accept any size.
        unsafe { allocate(layout, ffi::mi_malloc, ffi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { allocate(layout, ffi::mi_zalloc, ffi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { ffi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc. A plain `mi_realloc` returns a new block of
        // `new_size` bytes, aligned as above when the new layout admits it.
        unsafe {
            if plain_is_aligned(new_size, layout.align()) {
                ffi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                ffi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code, clippy::unwrap_used)] // the allocator's own tests
mod tests {
    use super::*;

    extern crate std;
    use std::vec::Vec;

    /// Allocates `count` blocks of `layout` at once (so they come from one page, one after
    /// another, and a misaligned block size would show), checks each, frees them.
    fn check(layout: Layout, count: usize, zeroed: bool) {
        let a = Allocator;
        let blocks: Vec<*mut u8> = (0..count)
            .map(|_| {
                // SAFETY: non-zero sizes only (the callers' layouts).
                let p = unsafe {
                    if zeroed {
                        a.alloc_zeroed(layout)
                    } else {
                        a.alloc(layout)
                    }
                };
                assert!(!p.is_null(), "{layout:?}");
                assert_eq!(p as usize % layout.align(), 0, "{layout:?} at {p:p}");
                if zeroed {
                    // SAFETY: `p` is a live block of `layout.size()` bytes.
                    let bytes = unsafe { core::slice::from_raw_parts(p, layout.size()) };
                    assert!(bytes.iter().all(|b| *b == 0), "{layout:?} not zeroed");
                }
                // SAFETY: as above; the whole block is writable.
                unsafe { p.write_bytes(0xa5, layout.size()) };
                p
            })
            .collect();
        for p in blocks {
            // SAFETY: allocated above with `layout`.
            unsafe { a.dealloc(p, layout) };
        }
    }

    #[test]
    fn every_block_is_aligned_as_its_layout_asks() {
        // Every size up to 4 KiB and a spread to 64 KiB, at every alignment the plain
        // path takes and some it does not (64: tokio's padding; 4096: a page).
        let sizes = (1..=4096).chain((4097..=65536).step_by(509));
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                let count = if size <= 1024 { 8 } else { 2 };
                check(layout, count, false);
                if size % 97 == 0 {
                    check(layout, count, true);
                }
            }
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_and_the_alignment() {
        let a = Allocator;
        for align in [8, 16, 64] {
            let layout = Layout::from_size_align(24, align).unwrap();
            // SAFETY: a non-zero layout; each pointer below is the live block.
            unsafe {
                let mut p = a.alloc(layout);
                for (i, b) in (0u8..24).enumerate() {
                    p.add(i).write(b);
                }
                let mut size = 24;
                for new_size in [40, 1000, 5000, 100_000, 33] {
                    p = a.realloc(p, Layout::from_size_align(size, align).unwrap(), new_size);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "align {align}, {new_size} bytes");
                    let kept = core::slice::from_raw_parts(p, 24);
                    assert!(kept.iter().copied().eq(0u8..24), "align {align}");
                    size = new_size;
                }
                a.dealloc(p, Layout::from_size_align(size, align).unwrap());
            }
        }
    }
}
