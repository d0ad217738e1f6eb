//! Table memory: a static, page-aligned pool inside the image (so inside
//! RAM), handed out by a bitmap. EL2 runs with its MMU off, so a pool
//! address is its physical address (PA == VA).

use core::cell::UnsafeCell;
use core::ptr::NonNull;

use vmsa::{Error, Granule, Pa, TableAllocator};

/// 4 MiB of table pages.
pub const PAGES: usize = 1024;
const PAGE: usize = 4096;

#[repr(C, align(4096))]
struct Page([u8; PAGE]);

struct State {
    mem: [Page; PAGES],
    used: [bool; PAGES],
    live: usize,
    peak: usize,
}

struct Pool(UnsafeCell<State>);

// SAFETY: one PE runs Rust, without interrupts; no reentrancy.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new(State {
    mem: [const { Page([0; PAGE]) }; PAGES],
    used: [false; PAGES],
    live: 0,
    peak: 0,
}));

fn state() -> &'static mut State {
    // SAFETY: single PE, no reentrancy (see `Sync`); callers do not keep
    // the reference across calls.
    unsafe { &mut *POOL.0.get() }
}

/// A handle on the pool; every table holds one.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolAlloc;

impl PoolAlloc {
    /// Pages allocated now.
    pub fn live() -> usize {
        state().live
    }

    /// Most pages ever allocated at once.
    pub fn peak() -> usize {
        state().peak
    }

    /// First byte of the pool.
    pub fn base() -> u64 {
        state().mem.as_ptr() as u64
    }
}

// SAFETY: runs of pages are handed out once until deallocated (the bitmap),
// are zeroed on allocation, and are aligned to their total size (the search
// starts at the first page whose address is a multiple of it and steps by
// it). `to_ptr` is the identity on the pool, which only tables use.
unsafe impl TableAllocator for PoolAlloc {
    fn allocate_zeroed(&mut self, granule: Granule, pages: usize) -> Result<Pa, Error> {
        if granule != Granule::K4 || pages == 0 || !pages.is_power_of_two() {
            return Err(Error::OutOfMemory);
        }
        let s = state();
        let base = s.mem.as_ptr() as usize;
        let align = pages * PAGE;
        let mut i = (base.next_multiple_of(align) - base) / PAGE;
        while i + pages <= PAGES {
            if s.used[i..i + pages].iter().all(|u| !u) {
                for u in &mut s.used[i..i + pages] {
                    *u = true;
                }
                for p in &mut s.mem[i..i + pages] {
                    p.0.fill(0);
                }
                s.live += pages;
                s.peak = s.peak.max(s.live);
                return Ok(Pa((base + i * PAGE) as u64));
            }
            i += pages;
        }
        Err(Error::OutOfMemory)
    }

    unsafe fn deallocate(&mut self, pa: Pa, _granule: Granule, pages: usize) {
        let s = state();
        let base = s.mem.as_ptr() as u64;
        let i = ((pa.0 - base) / PAGE as u64) as usize;
        for u in &mut s.used[i..i + pages] {
            assert!(*u, "table page {:#x} freed twice", pa.0);
            *u = false;
        }
        s.live -= pages;
    }

    fn to_ptr(&self, pa: Pa) -> NonNull<vmsa::Slot> {
        let base = PoolAlloc::base();
        assert!(
            pa.0 >= base && pa.0 < base + (PAGES * PAGE) as u64,
            "{:#x} is not table memory",
            pa.0
        );
        NonNull::new(pa.0 as *mut vmsa::Slot).expect("non-null")
    }
}
