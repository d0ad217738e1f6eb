//! The heap vmsa's `alloc` uses (change reports, boxed invalidators, work
//! lists): a linked-list allocator (the `linked_list_allocator` crate) that
//! gives memory back, behind a spin lock so every PE may allocate.
//!
//! Running out of heap is a verdict, not a panic: the program installs a
//! handler ([`Heap::on_exhausted`]) that reports and ends the run; without
//! one the failure is printed and QEMU exits with status 1.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::{Mutex, Once};

/// What to do when an allocation cannot be satisfied.
pub type Exhausted = fn(Layout, usize, usize) -> !;

/// A freeing, lock-protected global allocator over one static region.
pub struct Heap {
    inner: Mutex<linked_list_allocator::Heap>,
    size: AtomicUsize,
    peak: AtomicUsize,
    exhausted: Once<Exhausted>,
}

impl Heap {
    /// An empty heap; [`init`](Self::init) gives it its memory.
    pub const fn empty() -> Self {
        Heap {
            inner: Mutex::new(linked_list_allocator::Heap::empty()),
            size: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            exhausted: Once::new(),
        }
    }

    /// Gives the heap `size` bytes at `start`.
    ///
    /// # Safety
    /// The memory must be valid, writable, unused by anything else for the
    /// rest of the program, and this must be called once, before the first
    /// allocation.
    pub unsafe fn init(&self, start: *mut u8, size: usize) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.inner.lock().init(start, size) };
        self.size.store(size, Ordering::Relaxed);
    }

    /// Installs the handler called when an allocation fails.
    pub fn on_exhausted(&self, handler: Exhausted) {
        self.exhausted.call_once(|| handler);
    }

    /// Bytes allocated now.
    pub fn used(&self) -> usize {
        self.inner.lock().used()
    }

    /// Most bytes allocated at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// The heap's size in bytes.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    fn fail(&self, layout: Layout) -> ! {
        let used = self.inner.try_lock().map(|h| h.used()).unwrap_or(0);
        let size = self.size();
        match self.exhausted.get() {
            Some(handler) => handler(layout, used, size),
            None => {
                crate::println!(
                    "FATAL: heap exhausted: {} bytes (align {}) asked, {} of {} in use",
                    layout.size(),
                    layout.align(),
                    used,
                    size
                );
                crate::semihost::exit(1)
            }
        }
    }
}

impl Default for Heap {
    fn default() -> Self {
        Self::empty()
    }
}

// SAFETY: `alloc` hands out blocks of the layout asked for from the
// region given to `init`, each once until `dealloc` (the linked-list
// allocator's contract); the lock serializes all access to its state.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut h = self.inner.lock();
        match h.allocate_first_fit(layout) {
            Ok(p) => {
                self.peak.fetch_max(h.used(), Ordering::Relaxed);
                p.as_ptr()
            }
            Err(()) => {
                drop(h);
                self.fail(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `ptr` came from `alloc` with this layout (the
            // GlobalAlloc contract).
            unsafe { self.inner.lock().deallocate(p, layout) };
        }
    }
}
