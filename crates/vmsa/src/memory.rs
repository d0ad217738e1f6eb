//! Table memory: where table pages come from and how the library reaches
//! them (KVM's `kvm_pgtable_mm_ops` in spirit).

#[cfg(not(loom))]
use alloc::vec::Vec;
use core::ptr::NonNull;

use crate::addr::Pa;
use crate::error::Error;
use crate::geometry::Granule;

#[cfg(not(loom))]
mod pool;

#[cfg(not(loom))]
pub use pool::PagePool;

/// One descriptor in table memory, the unit of every access the library
/// makes to a table: an atomic 64-bit word, loaded, stored and
/// compared-and-swapped single-copy atomically (the only accesses the
/// architecture's table walkers tolerate while they walk).
///
/// This is `core::sync::atomic::AtomicU64`; built with `--cfg loom` it is
/// loom's, so that host tests run the real walker with every descriptor
/// access a scheduling point (`crates/vmsa/tests/loom.rs`).
#[cfg(not(loom))]
pub type Slot = core::sync::atomic::AtomicU64;
/// One descriptor in table memory (loom's atomic: see the non-loom docs).
#[cfg(loom)]
pub type Slot = loom::sync::atomic::AtomicU64;

/// A source of zeroed table pages.
///
/// # Safety
///
/// Implementations promise that:
/// - [`allocate_zeroed`](Self::allocate_zeroed) returns the address of
///   `pages` physically contiguous table pages of `granule` size, aligned to
///   their total size, filled with zeroes, and not handed out again until
///   they are deallocated;
/// - [`to_ptr`](Self::to_ptr), for any address inside memory allocated and
///   not yet deallocated, returns a pointer to the [`Slot`] holding the
///   descriptor at that address, through which the library may read and
///   write it and the [`Slot`]s after it to the end of the page (so
///   `to_ptr(pa).add(i)` is the descriptor at `pa + 8 * i`), and that no
///   other Rust reference aliases it mutably.
pub unsafe trait TableAllocator {
    /// Allocates `pages` contiguous zeroed table pages.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when none are available.
    fn allocate_zeroed(&mut self, granule: Granule, pages: usize) -> Result<Pa, Error>;

    /// Returns pages to the allocator.
    ///
    /// # Safety
    /// `pa`, `granule` and `pages` must be exactly those of an earlier
    /// allocation that has not been deallocated, and no walker or pointer
    /// may use the memory any more.
    unsafe fn deallocate(&mut self, pa: Pa, granule: Granule, pages: usize);

    /// The descriptor through which software reaches the table memory at
    /// `pa`.
    fn to_ptr(&self, pa: Pa) -> NonNull<Slot>;
}

#[cfg(not(loom))]
const UNIT: usize = 4096;

#[cfg(not(loom))]
#[repr(C, align(4096))]
struct Unit([u64; UNIT / 8]);

/// A fixed-size arena of table memory with chosen physical addresses.
///
/// Deterministic addresses make recorded effects repeatable, the model can
/// be given the same physical layout, and tests can inject allocation
/// failures ([`fail_after`](Self::fail_after)) and check for leaks
/// ([`live_pages`](Self::live_pages)).
#[cfg(not(loom))]
pub struct Arena {
    mem: NonNull<Unit>,
    units: usize,
    base: Pa,
    used: Vec<bool>,
    free: Vec<usize>,
    bump: usize,
    live: usize,
    allocations: u64,
    fail_after: Option<u64>,
    /// Units past `bump` are not zeroed yet (see [`Arena::lazy`]).
    lazy: bool,
}

// SAFETY: the arena owns its memory exclusively; moving it to another thread
// moves that ownership with it.
#[cfg(not(loom))]
unsafe impl Send for Arena {}
// SAFETY: the only `&self` access to the memory is `to_ptr`, which computes
// an address; what is done through it is done by tables with atomic
// accesses (`Slot`). Bookkeeping changes only through `&mut self`.
#[cfg(not(loom))]
unsafe impl Sync for Arena {}

#[cfg(not(loom))]
impl Arena {
    /// An arena of `units` 4 KiB units whose first byte has physical
    /// address `base` (which must be 4 KiB aligned).
    ///
    /// # Panics
    /// If `base` is not 4 KiB aligned or `units` is zero: both are
    /// programming errors in the caller's set-up, not runtime input.
    pub fn new(base: Pa, units: usize) -> Self {
        Self::with_zeroing(base, units, false)
    }

    /// Like [`new`](Self::new), but each unit is zeroed when it is first
    /// handed out instead of all of them at creation: creating a large
    /// arena costs nothing, and memory the tables never use is never
    /// touched. For many short-lived arenas of which little is used (a
    /// replay's one per address space); [`new`](Self::new) keeps the cost
    /// out of the allocations instead.
    ///
    /// ```
    /// use vmsa::memory::{Arena, TableAllocator};
    /// use vmsa::{Granule, Pa};
    /// let mut a = Arena::lazy(Pa(0x4000_0000), 1 << 16); // 256 MiB, untouched
    /// let pa = a.allocate_zeroed(Granule::K4, 1).unwrap();
    /// assert_eq!(pa, Pa(0x4000_0000));
    /// ```
    ///
    /// # Panics
    /// As [`new`](Self::new).
    pub fn lazy(base: Pa, units: usize) -> Self {
        Self::with_zeroing(base, units, true)
    }

    fn with_zeroing(base: Pa, units: usize, lazy: bool) -> Self {
        assert!(
            base.0 % UNIT as u64 == 0 && units > 0,
            "arena base must be page aligned"
        );
        let layout = core::alloc::Layout::array::<Unit>(units).expect("arena too large");
        // SAFETY: the layout has non-zero size (units > 0). A lazy arena's
        // memory is not read before `allocate_zeroed` zeroes it.
        let raw = unsafe {
            if lazy {
                alloc::alloc::alloc(layout)
            } else {
                alloc::alloc::alloc_zeroed(layout)
            }
        };
        let Some(mem) = NonNull::new(raw.cast::<Unit>()) else {
            alloc::alloc::handle_alloc_error(layout)
        };
        Arena {
            mem,
            units,
            base,
            used: alloc::vec![false; units],
            free: Vec::new(),
            bump: 0,
            live: 0,
            allocations: 0,
            fail_after: None,
            lazy,
        }
    }

    /// Makes the allocation after the next `n` successful ones fail (`None`
    /// turns failure injection off).
    pub fn fail_after(&mut self, n: Option<u64>) {
        self.fail_after = n.map(|n| self.allocations + n);
    }

    /// Number of successful allocations so far.
    pub fn allocations(&self) -> u64 {
        self.allocations
    }

    /// Number of 4 KiB units currently allocated.
    pub fn live_units(&self) -> usize {
        self.live
    }

    /// Physical addresses of every allocated 4 KiB unit, ascending.
    pub fn live_pages(&self) -> Vec<Pa> {
        (0..self.units)
            .filter(|&i| self.used[i])
            .map(|i| self.unit_pa(i))
            .collect()
    }

    fn unit_pa(&self, i: usize) -> Pa {
        Pa(self.base.0 + (i * UNIT) as u64)
    }

    fn zero(&mut self, first: usize, count: usize) {
        // SAFETY: `first..first + count` lies inside the arena (callers
        // checked) and the units were just taken from the free state, so
        // no table references them.
        unsafe { core::ptr::write_bytes(self.mem.as_ptr().add(first), 0, count) };
    }
}

#[cfg(not(loom))]
impl Drop for Arena {
    fn drop(&mut self) {
        let layout = core::alloc::Layout::array::<Unit>(self.units).expect("arena layout");
        // SAFETY: `mem` was allocated in `new` with this layout.
        unsafe { alloc::alloc::dealloc(self.mem.as_ptr().cast(), layout) };
    }
}

// SAFETY: units are handed out at most once until freed, are zeroed on
// allocation (fresh memory is zero from `alloc_zeroed`, or in a lazy arena
// cleared as the bump pointer passes it; reused units are cleared), and multi-unit allocations are aligned to their size. `to_ptr`
// maps addresses linearly into memory the arena owns.
#[cfg(not(loom))]
unsafe impl TableAllocator for Arena {
    fn allocate_zeroed(&mut self, granule: Granule, pages: usize) -> Result<Pa, Error> {
        if self.fail_after.is_some_and(|n| self.allocations >= n) {
            return Err(Error::OutOfMemory);
        }
        let count = pages * (granule.size() as usize / UNIT);
        if count == 0 {
            return Err(Error::OutOfMemory);
        }
        let first = if count == 1 {
            loop {
                match self.free.pop() {
                    Some(i) if !self.used[i] => {
                        self.zero(i, 1);
                        break Some(i);
                    }
                    Some(_) => continue,
                    None if self.bump < self.units => {
                        self.bump += 1;
                        if self.lazy {
                            self.zero(self.bump - 1, 1);
                        }
                        break Some(self.bump - 1);
                    }
                    None => break None,
                }
            }
        } else {
            // Rare (concatenated roots): first fit, aligned to the size.
            let align = count.next_power_of_two();
            let found = (0..self.units)
                .step_by(align)
                .find(|&i| i + count <= self.units && self.used[i..i + count].iter().all(|u| !u));
            if let Some(i) = found {
                self.zero(i, count);
                self.bump = self.bump.max(i + count);
            }
            found
        };
        let first = first.ok_or(Error::OutOfMemory)?;
        for u in &mut self.used[first..first + count] {
            *u = true;
        }
        self.live += count;
        self.allocations += 1;
        Ok(self.unit_pa(first))
    }

    unsafe fn deallocate(&mut self, pa: Pa, granule: Granule, pages: usize) {
        let count = pages * (granule.size() as usize / UNIT);
        let first = ((pa.0 - self.base.0) as usize) / UNIT;
        for i in first..first + count {
            debug_assert!(self.used[i], "double free of table page {:#x}", pa.0);
            self.used[i] = false;
            self.free.push(i);
        }
        self.live -= count;
    }

    fn to_ptr(&self, pa: Pa) -> NonNull<Slot> {
        let offset = (pa.0 - self.base.0) as usize;
        debug_assert!(offset < self.units * UNIT, "{pa:?} is outside the arena");
        // SAFETY: the offset is inside the arena's allocation (callers only
        // pass addresses the arena handed out), so the result is in bounds
        // and non-null.
        unsafe { NonNull::new_unchecked(self.mem.as_ptr().cast::<u8>().add(offset).cast::<Slot>()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lazy_arena_hands_out_zeroed_units() {
        // Leave garbage where the arena's memory is likely to come from.
        let garbage = vec![0xaau8; 17 * UNIT];
        drop(core::hint::black_box(garbage));
        let mut a = Arena::lazy(Pa(0x8000_0000), 16);
        let mut pages = Vec::new();
        pages.push(a.allocate_zeroed(Granule::K4, 2).unwrap());
        for _ in 0..14 {
            pages.push(a.allocate_zeroed(Granule::K4, 1).unwrap());
        }
        for (n, &pa) in pages.iter().enumerate() {
            let words = if n == 0 { 1024 } else { 512 };
            for i in 0..words {
                // SAFETY: the unit was just allocated and is ours alone.
                let v = unsafe { &*a.to_ptr(Pa(pa.0 + 8 * i as u64)).as_ptr() }
                    .load(core::sync::atomic::Ordering::Relaxed);
                assert_eq!(v, 0, "word {i} of the unit at {:#x}", pa.0);
            }
        }
    }

    #[test]
    fn allocates_zeroed_aligned_and_reuses() {
        let mut a = Arena::new(Pa(0x8000_0000), 64);
        let p = a.allocate_zeroed(Granule::K4, 1).unwrap();
        assert_eq!(p, Pa(0x8000_0000));
        // SAFETY: p was just allocated and is exclusively ours.
        unsafe { a.to_ptr(p).as_ref() }.store(0xdead, core::sync::atomic::Ordering::Relaxed);
        let four = a.allocate_zeroed(Granule::K4, 4).unwrap();
        assert_eq!(
            four.0 % (4 * 4096),
            0,
            "concatenated tables are size aligned"
        );
        // SAFETY: p was allocated above and is not used any more.
        unsafe { a.deallocate(p, Granule::K4, 1) };
        let again = a.allocate_zeroed(Granule::K4, 1).unwrap();
        assert_eq!(again, p);
        // SAFETY: reading our own page.
        assert_eq!(
            unsafe { a.to_ptr(again).as_ref() }.load(core::sync::atomic::Ordering::Relaxed),
            0,
            "reused pages are zeroed"
        );
        assert_eq!(a.live_units(), 5);
    }

    #[test]
    fn failure_injection_and_exhaustion() {
        let mut a = Arena::new(Pa(0), 2);
        a.fail_after(Some(1));
        assert!(a.allocate_zeroed(Granule::K4, 1).is_ok());
        assert_eq!(a.allocate_zeroed(Granule::K4, 1), Err(Error::OutOfMemory));
        a.fail_after(None);
        assert!(a.allocate_zeroed(Granule::K4, 1).is_ok());
        assert_eq!(a.allocate_zeroed(Granule::K4, 1), Err(Error::OutOfMemory));
    }
}
