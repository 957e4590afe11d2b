//! The process's allocator, chosen once, by how the process runs, before
//! its first allocation: mimalloc for a FastCGI worker, glibc's malloc
//! for everything else (a CGI request, the command line).
//!
//! A FastCGI worker serves thousands of requests, and a pull decodes a few
//! hundred small row values and frees them all at the end, where glibc
//! spends its time in its free lists (`malloc_consolidate`, chunk
//! unlinking): with mimalloc, pull 100 through Apache answered 3 % sooner
//! at one connection and served 4 % more at eight (the same build with and
//! without, interleaved). A CGI process lives for one request: there
//! mimalloc's set-up and its purge at exit cost more than it saves (CGI
//! `/health` took 0.6 to 1 ms more CPU with it), so it keeps glibc's
//! malloc. mimalloc is built without transparent huge pages (`no_thp`): a
//! 2 MiB page to fault in is a cost, not a saving, at this size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

const UNDECIDED: u8 = 0;
const MIMALLOC: u8 = 1;
const SYSTEM: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// mimalloc in a FastCGI worker, glibc's malloc otherwise.
pub struct ByMode;

/// The allocator of this process: decided by the first allocation (before
/// `main`, on the only thread there is) and never changed, so every block
/// is freed by the allocator that made it.
fn choice() -> u8 {
    match CHOICE.load(Ordering::Acquire) {
        UNDECIDED => {
            let chosen = if crate::fd0_is_listening_socket() {
                MIMALLOC
            } else {
                SYSTEM
            };
            match CHOICE.compare_exchange(UNDECIDED, chosen, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => chosen,
                Err(decided) => decided,
            }
        }
        decided => decided,
    }
}

// SAFETY: each method forwards its arguments unchanged to one allocator,
// the same one for the life of the process (`choice`), so the caller's
// guarantees carry over and a block is always returned to the allocator
// that made it. `choice` itself does not allocate: one getsockopt on a
// local integer and an atomic.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for ByMode {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match choice() {
            // SAFETY: forwarded as received (see the impl).
            MIMALLOC => unsafe { mimalloc::MiMalloc.alloc(layout) },
            // SAFETY: forwarded as received (see the impl).
            _ => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match choice() {
            // SAFETY: forwarded as received (see the impl).
            MIMALLOC => unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) },
            // SAFETY: forwarded as received (see the impl).
            _ => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match choice() {
            // SAFETY: `ptr` came from this allocator (see the impl).
            MIMALLOC => unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) },
            // SAFETY: `ptr` came from this allocator (see the impl).
            _ => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match choice() {
            // SAFETY: `ptr` came from this allocator (see the impl).
            MIMALLOC => unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) },
            // SAFETY: `ptr` came from this allocator (see the impl).
            _ => unsafe { System.realloc(ptr, layout, new_size) },
        }
    }
}
