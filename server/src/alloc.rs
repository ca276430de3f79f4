//! The broker's global allocator: the system allocator, except that single allocations of 1 GiB
//! or more are lazily committed anonymous mappings (`MAP_NORESERVE`).
//!
//! Why: kafka-protocol 0.18 decodes an array by calling `Vec::with_capacity(length)` with the
//! length read from the wire before reading any element, so a 14-byte frame claiming 2^31 topics
//! asks for ~150 GB. The system allocator refuses that and Rust aborts the whole process. A
//! `MAP_NORESERVE` mapping only reserves address space; the decoder then fails on the missing
//! bytes, drops the vector and the mapping goes away untouched. Legitimate allocations of that
//! size do not exist in the broker (frames are bounded by `socket.request.max.bytes`). Used on
//! every thread; holds no state.

use std::alloc::{GlobalAlloc, Layout, System};

/// At or above this size an allocation is a lazily committed mapping.
const LAZY_BYTES_MIN: usize = 1 << 30;
/// mmap returns page-aligned memory; stronger alignment goes to the system allocator.
const PAGE_BYTES: usize = 4096;

pub struct BrokerAllocator;

fn is_lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_BYTES_MIN && layout.align() <= PAGE_BYTES
}

// SAFETY: every pointer handed out is either from `System` (and returned to it) or from an
// anonymous mapping of exactly `layout.size()` bytes (and unmapped with that size); `is_lazy`
// depends only on the layout, which callers must pass back unchanged.
unsafe impl GlobalAlloc for BrokerAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_lazy(&layout) {
            return unsafe { System.alloc(layout) };
        }
        let pointer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if pointer == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            pointer as *mut u8
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            // Anonymous mappings are zero-filled.
            unsafe { self.alloc(layout) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if is_lazy(&layout) {
            unsafe { libc::munmap(pointer as *mut libc::c_void, layout.size()) };
        } else {
            unsafe { System.dealloc(pointer, layout) }
        }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees new_size, rounded to align, does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_lazy(&layout) && !is_lazy(&new_layout) {
            return unsafe { System.realloc(pointer, layout, new_size) };
        }
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(pointer, moved, layout.size().min(new_size));
                self.dealloc(pointer, layout);
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_reservation_is_lazy_and_usable() {
        let allocator = BrokerAllocator;
        let layout = Layout::from_size_align(64 << 30, 8).unwrap();
        unsafe {
            let pointer = allocator.alloc(layout);
            assert!(
                !pointer.is_null(),
                "64 GiB of address space is reserved, not committed"
            );
            *pointer = 7;
            *pointer.add((64 << 30) - 1) = 9;
            let smaller = allocator.realloc(pointer, layout, 4096);
            assert_eq!(*smaller, 7);
            allocator.dealloc(smaller, Layout::from_size_align(4096, 8).unwrap());
        }
    }
}
