//! A bump allocator over a static region: the heap vmsa's `alloc` uses
//! (change reports, boxed invalidators, work lists). Nothing is given back
//! except the most recent allocation; the run is short and bounded.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

const HEAP_SIZE: usize = 16 << 20;

#[repr(C, align(4096))]
struct Region([u8; HEAP_SIZE]);

pub struct Bump {
    mem: UnsafeCell<Region>,
    next: UnsafeCell<usize>,
    peak: UnsafeCell<usize>,
}

// SAFETY: the firmware runs Rust on one PE only, with no interrupts, so the
// allocator is never entered twice at once.
unsafe impl Sync for Bump {}

#[global_allocator]
pub static HEAP: Bump = Bump {
    mem: UnsafeCell::new(Region([0; HEAP_SIZE])),
    next: UnsafeCell::new(0),
    peak: UnsafeCell::new(0),
};

impl Bump {
    /// Bytes in use at the high-water mark.
    pub fn peak(&self) -> usize {
        // SAFETY: single PE, no reentrancy (see `Sync`).
        unsafe { *self.peak.get() }
    }
}

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.mem.get() as usize;
        let next = &mut *self.next.get();
        let start = (base + *next).next_multiple_of(layout.align());
        let end = match start.checked_add(layout.size()) {
            Some(e) if e <= base + HEAP_SIZE => e,
            _ => return core::ptr::null_mut(),
        };
        *next = end - base;
        let peak = &mut *self.peak.get();
        *peak = (*peak).max(*next);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only the last allocation can be given back.
        let base = self.mem.get() as usize;
        let next = &mut *self.next.get();
        if ptr as usize + layout.size() == base + *next {
            *next = ptr as usize - base;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let base = self.mem.get() as usize;
        let next = &mut *self.next.get();
        // Growing or shrinking the last allocation in place.
        if ptr as usize + layout.size() == base + *next
            && ptr as usize + new_size <= base + HEAP_SIZE
        {
            *next = ptr as usize + new_size - base;
            let peak = &mut *self.peak.get();
            *peak = (*peak).max(*next);
            return ptr;
        }
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}
