//! [`PagePool`]: a lock-free pool of table pages over a region of memory
//! the caller gives it, shared by every table on every PE.

use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::TableAllocator;
use crate::addr::Pa;
use crate::error::Error;
use crate::geometry::Granule;

/// Bytes per pool page (the 4 KiB unit; a table page of a larger granule
/// is an aligned run of them).
const PAGE: usize = 4096;
/// Pages per bitmap word.
const WORD: usize = 64;

/// A lock-free allocator of 4 KiB table pages over one region of memory,
/// for bare-metal hypervisors and kernels: several tables on several PEs
/// share one pool through `&PagePool`, which implements
/// [`TableAllocator`] (the handle is `Copy`, the pool is `Send + Sync`).
///
/// The caller gives the region: the address at which software reaches it,
/// its physical address (equal in the common identity-mapped case, but
/// kept apart), and its size in 4 KiB pages. The pool keeps one bit per
/// page in a bitmap of `AtomicU64` words (the only heap memory it uses,
/// allocated once in [`new`](Self::new)):
///
/// - [`allocate`](Self::allocate) claims an aligned run of pages with one
///   compare-and-swap on one word (a run of `n` pages is aligned to
///   `n.next_power_of_two()` pages *physically*, as
///   [`TableAllocator::allocate_zeroed`] promises for concatenated roots;
///   runs of more than 64 pages take whole words, claimed one by one and
///   rolled back on contention), then zeroes the pages it claimed;
/// - [`free`](Self::free) clears the run's bits with one
///   compare-and-swap per word, after checking they are all set.
///
/// No lock is taken, so a PE interrupted (or stopped) in the middle of an
/// allocation never blocks the others; an allocation scans every word at
/// most once and may fail while pages are being freed concurrently.
///
/// # Bad frees
///
/// A free of an address outside the region or not 4 KiB aligned, or of a
/// run some of whose pages are already free (a double free caught before
/// the pages are handed out again), changes nothing: it is counted
/// ([`bad_frees`](Self::bad_frees)) and `free` returns `false`. It is never
/// undefined behaviour inside the pool, and the bitmap stays consistent.
/// What a bitmap cannot see is a double free *after* the pages were
/// allocated again, or a free with the wrong size inside the region: both
/// release pages their owner still uses (the breach of `free`'s safety
/// contract is the caller's).
///
/// Counters (relaxed atomics, for statistics): pages live now
/// ([`live_pages`](Self::live_pages)), the most ever live
/// ([`peak_pages`](Self::peak_pages)), failed allocations
/// ([`failed_allocations`](Self::failed_allocations)).
///
/// # Example
///
/// Two stage 2 tables sharing one pool (on the host, a heap buffer serves
/// as the region):
///
/// ```
/// use vmsa::{Geometry, Granule, Ipa, MapOptions, Pa, PagePool, Recorder, Stage2, Stage2Attrs, Table, Vmid};
///
/// #[repr(C, align(4096))]
/// struct Page([u8; 4096]);
/// let mut region: Vec<Page> = (0..64).map(|_| Page([0; 4096])).collect();
/// // SAFETY: the region is valid for its 64 pages, outlives the pool
/// // (declared after it, dropped before it) and is used only through it.
/// let pool = unsafe { PagePool::new(region.as_mut_ptr().cast(), Pa(0x8000_0000), region.len()) };
///
/// let mut fx = Recorder::new();
/// let g = Geometry::stage2(Granule::K4, 40)?;
/// let mut vm1 = Table::new(Stage2::new(Vmid(1)), g, &pool, &mut fx)?;
/// let mut vm2 = Table::new(Stage2::new(Vmid(2)), g, &pool, &mut fx)?;
/// vm1.map(Ipa(0)..Ipa(0x1000), Pa(0x4000_0000), Stage2Attrs::RAM, MapOptions::PAGES, &mut fx)?;
/// vm2.map(Ipa(0)..Ipa(0x1000), Pa(0x5000_0000), Stage2Attrs::RAM, MapOptions::PAGES, &mut fx)?;
/// // Each table: a root of two concatenated pages, a level 2 and a level 3 table.
/// assert_eq!(pool.live_pages(), 8);
///
/// // A table page is any pool page: allocate and free directly too.
/// let four = pool.allocate(4)?;
/// assert_eq!(four.0 % (4 * 4096), 0);
/// // SAFETY: nothing uses the four pages.
/// assert!(unsafe { pool.free(four, 4) });
///
/// drop(vm1);
/// drop(vm2);
/// assert_eq!(pool.live_pages(), 0);
/// assert_eq!(pool.peak_pages(), 12);
/// # Ok::<(), vmsa::Error>(())
/// ```
pub struct PagePool {
    /// Where software reaches the first page of the region.
    virt: NonNull<u8>,
    /// Physical address of the first page of the region.
    pa: Pa,
    /// Pages in the region.
    pages: usize,
    /// Bit `i` of word `w`: the page at physical address
    /// `origin + (64 w + i) * 4 KiB` is allocated. Bits for pages outside
    /// the region (before it in the first word, after it in the last) are
    /// set for good.
    bitmap: Vec<AtomicU64>,
    /// Bit index of the region's first page (`pa` modulo 256 KiB, in pages):
    /// bit 0 is 256 KiB aligned, so runs aligned in the bitmap are aligned
    /// physically.
    head: usize,
    /// Word at which the next allocation starts looking.
    hint: AtomicUsize,
    live: AtomicUsize,
    peak: AtomicUsize,
    failed: AtomicU64,
    bad_frees: AtomicU64,
}

// SAFETY: the pool never hands a page to two owners at once (the bitmap is
// changed only by atomic compare-and-swap), and it dereferences `virt` only
// to zero pages it has just claimed and so owns exclusively. Sharing or
// moving it between threads is therefore sound.
unsafe impl Send for PagePool {}
// SAFETY: as above: every `&self` method is synchronised by atomics.
unsafe impl Sync for PagePool {}

impl PagePool {
    /// Bytes per pool page.
    pub const PAGE_SIZE: usize = PAGE;

    /// A pool over `pages` 4 KiB pages reached by software at `virt`, with
    /// physical address `pa`. Allocates the bitmap (one bit per page) from
    /// the global allocator. Nothing of the region is read or written until
    /// pages are allocated.
    ///
    /// # Safety
    /// `virt` must be valid for reads and writes of `pages * 4096` bytes
    /// for as long as the pool (or any table using it) lives; that memory
    /// must be reachable at physical address `pa` onwards (for the
    /// hardware walkers), and used by nothing but the pool and the owners
    /// of the pages it hands out.
    ///
    /// # Panics
    /// If `virt` or `pa` is not 4 KiB aligned, `pages` is zero, or the
    /// region wraps around the address space: set-up errors, not runtime
    /// input.
    pub unsafe fn new(virt: *mut u8, pa: Pa, pages: usize) -> PagePool {
        let virt = NonNull::new(virt).expect("page pool region at null");
        assert!(
            virt.as_ptr() as usize % PAGE == 0 && pa.0 % PAGE as u64 == 0 && pages > 0,
            "page pool region must be 4 KiB aligned and non-empty"
        );
        assert!(
            pages
                .checked_mul(PAGE)
                .and_then(|b| (virt.as_ptr() as usize).checked_add(b))
                .is_some()
                && pa.0.checked_add(pages as u64 * PAGE as u64).is_some(),
            "page pool region wraps around"
        );
        let head = ((pa.0 / PAGE as u64) % WORD as u64) as usize;
        let bits = head + pages;
        let words = bits.div_ceil(WORD);
        let bitmap: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        // Pages outside the region stay allocated for good.
        bitmap[0].fetch_or(low_bits(head), Ordering::Relaxed);
        let tail = bits % WORD;
        if tail != 0 {
            bitmap[words - 1].fetch_or(!low_bits(tail), Ordering::Relaxed);
        }
        PagePool {
            virt,
            pa,
            pages,
            bitmap,
            head,
            hint: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            failed: AtomicU64::new(0),
            bad_frees: AtomicU64::new(0),
        }
    }

    /// Physical address of the region's first page.
    pub fn base(&self) -> Pa {
        self.pa
    }

    /// Pages in the region.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Whether the page at `pa` lies in the region.
    pub fn contains(&self, pa: Pa) -> bool {
        pa.0 >= self.pa.0 && pa.0 - self.pa.0 < (self.pages * PAGE) as u64
    }

    /// Where software reaches the byte at `pa` (`None` outside the region).
    pub fn virt(&self, pa: Pa) -> Option<NonNull<u8>> {
        if !self.contains(pa) {
            return None;
        }
        // SAFETY: the offset is inside the region, which `new`'s caller
        // vouched for, so the result is in bounds and non-null.
        Some(unsafe { self.virt.add((pa.0 - self.pa.0) as usize) })
    }

    /// Pages allocated now.
    pub fn live_pages(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The most pages ever allocated at once.
    pub fn peak_pages(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Allocations that failed for want of a free run.
    pub fn failed_allocations(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Frees ignored as foreign addresses or double frees (see the
    /// [type](Self) docs).
    pub fn bad_frees(&self) -> u64 {
        self.bad_frees.load(Ordering::Relaxed)
    }

    /// Allocates `pages` contiguous zeroed 4 KiB pages, aligned physically
    /// to `pages.next_power_of_two()` pages; returns the first one's
    /// physical address.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when no such run is free (counted in
    /// [`failed_allocations`](Self::failed_allocations)), or when `pages`
    /// is zero or larger than the region (not counted).
    pub fn allocate(&self, pages: usize) -> Result<Pa, Error> {
        if pages == 0 || pages > self.pages {
            return Err(Error::OutOfMemory);
        }
        let claimed = if pages <= WORD {
            self.claim_in_word(pages)
        } else {
            self.claim_words(pages)
        };
        let Some((bit, units)) = claimed else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return Err(Error::OutOfMemory);
        };
        let index = bit - self.head;
        // SAFETY: the run lies inside the region (bits outside it are never
        // clear) and was just claimed, so nothing else uses it.
        unsafe { core::ptr::write_bytes(self.virt.as_ptr().add(index * PAGE), 0, pages * PAGE) };
        let live = self.live.fetch_add(units, Ordering::Relaxed) + units;
        self.peak.fetch_max(live, Ordering::Relaxed);
        Ok(Pa(self.pa.0 + (index * PAGE) as u64))
    }

    /// Returns the run of `pages` pages at `pa` (an earlier
    /// [`allocate`](Self::allocate) of the same size) to the pool; `false`
    /// if the free was ignored as bad (see the [type](Self) docs).
    ///
    /// # Safety
    /// Nothing may use the pages any more (no reference, pointer or
    /// hardware walker), and `pa` and `pages` must be those of an
    /// allocation not yet freed. (A breach the pool can see, it ignores.)
    pub unsafe fn free(&self, pa: Pa, pages: usize) -> bool {
        let Some((bit, units)) = self.run_of(pa, pages) else {
            self.bad_frees.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let freed = if units <= WORD {
            let (w, mask) = (bit / WORD, run_mask(bit % WORD, units));
            // Release: the owner's writes to the pages happen before the
            // next owner's zeroing.
            self.bitmap[w]
                .fetch_update(Ordering::Release, Ordering::Relaxed, |v| {
                    (v & mask == mask).then_some(v & !mask)
                })
                .is_ok()
        } else {
            let words = &self.bitmap[bit / WORD..(bit + units) / WORD];
            // Whole words, all claimed by one allocation: check them, then
            // take the first one back by compare-and-swap (of two racing
            // frees only one gets it) and clear the rest.
            words.iter().all(|w| w.load(Ordering::Relaxed) == u64::MAX)
                && words[0]
                    .compare_exchange(u64::MAX, 0, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
                && {
                    for w in &words[1..] {
                        w.store(0, Ordering::Release);
                    }
                    true
                }
        };
        if freed {
            self.live.fetch_sub(units, Ordering::Relaxed);
        } else {
            self.bad_frees.fetch_add(1, Ordering::Relaxed);
        }
        freed
    }

    /// The bitmap run (first bit, bits) an allocation of `pages` at `pa`
    /// holds, if it lies in the region and is aligned as allocations are.
    fn run_of(&self, pa: Pa, pages: usize) -> Option<(usize, usize)> {
        if pages == 0 || pa.0 % PAGE as u64 != 0 || !self.contains(pa) {
            return None;
        }
        let index = ((pa.0 - self.pa.0) / PAGE as u64) as usize;
        // A multi-word run's rounding included: every bit it covers must be
        // a page of the region (the reserved bits at its edges stay set).
        let units = claim_units(pages);
        if units > self.pages - index {
            return None;
        }
        let bit = self.head + index;
        let align = pages.next_power_of_two();
        let aligned = if pages <= WORD {
            bit % align == 0
        } else {
            bit % WORD == 0 && self.word_aligned(bit / WORD, align)
        };
        aligned.then_some((bit, units))
    }

    /// Whether word `w` starts a physically `align`-page aligned run
    /// (`align` a multiple of 64).
    fn word_aligned(&self, w: usize, align: usize) -> bool {
        let first_word = (self.pa.0 / PAGE as u64) as usize / WORD;
        (first_word + w) % (align / WORD) == 0
    }

    /// Claims `pages` (at most 64) bits aligned to their size rounded up to
    /// a power of two, in one word; returns (first bit, bits claimed).
    fn claim_in_word(&self, pages: usize) -> Option<(usize, usize)> {
        let words = self.bitmap.len();
        let start = self.hint.load(Ordering::Relaxed) % words;
        let align = pages.next_power_of_two();
        for k in 0..words {
            let w = (start + k) % words;
            let word = &self.bitmap[w];
            let mut v = word.load(Ordering::Relaxed);
            while let Some(pos) = free_run(v, pages, align) {
                let mask = run_mask(pos, pages);
                // Acquire: the last owner's writes happen before ours.
                match word.compare_exchange_weak(v, v | mask, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => {
                        if v | mask == u64::MAX {
                            self.hint.store(w + 1, Ordering::Relaxed);
                        } else if w != start {
                            self.hint.store(w, Ordering::Relaxed);
                        }
                        return Some((w * WORD + pos, pages));
                    }
                    Err(now) => v = now,
                }
            }
        }
        None
    }

    /// Claims whole words for a run of more than 64 pages, physically
    /// aligned to its size rounded up to a power of two.
    fn claim_words(&self, pages: usize) -> Option<(usize, usize)> {
        let n = pages.div_ceil(WORD);
        let align = pages.next_power_of_two();
        let words = self.bitmap.len();
        let mut w = 0;
        while w + n <= words {
            if !self.word_aligned(w, align) {
                w += 1;
                continue;
            }
            let mut got = 0;
            while got < n
                && self.bitmap[w + got]
                    .compare_exchange(0, u64::MAX, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                got += 1;
            }
            if got == n {
                return Some((w * WORD, n * WORD));
            }
            // Contention or a used word: give back what was claimed.
            for word in &self.bitmap[w..w + got] {
                word.store(0, Ordering::Release);
            }
            w += 1;
        }
        None
    }
}

/// Bits an allocation of `pages` holds in the bitmap.
fn claim_units(pages: usize) -> usize {
    if pages <= WORD {
        pages
    } else {
        pages.div_ceil(WORD) * WORD
    }
}

/// The low `n` bits (`n` at most 64).
fn low_bits(n: usize) -> u64 {
    if n >= WORD {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// `n` bits from bit `pos`.
fn run_mask(pos: usize, n: usize) -> u64 {
    low_bits(n) << pos
}

/// The first position, a multiple of `align`, of `n` clear bits in `v`.
fn free_run(v: u64, n: usize, align: usize) -> Option<usize> {
    if n == 1 {
        return (v != u64::MAX).then(|| v.trailing_ones() as usize);
    }
    (0..=WORD - n)
        .step_by(align)
        .find(|&pos| v & run_mask(pos, n) == 0)
}

// SAFETY: pages are handed out at most once until freed (atomic bitmap),
// are zeroed after being claimed, and runs are physically aligned to their
// size (the bitmap's bit 0 is 256 KiB aligned; larger runs are aligned by
// word). `to_ptr` maps region addresses linearly to the memory `new`'s
// caller vouched for.
unsafe impl TableAllocator for &PagePool {
    fn allocate_zeroed(&mut self, granule: Granule, pages: usize) -> Result<Pa, Error> {
        let units = pages
            .checked_mul(granule.size() as usize / PAGE)
            .ok_or(Error::OutOfMemory)?;
        self.allocate(units)
    }

    unsafe fn deallocate(&mut self, pa: Pa, granule: Granule, pages: usize) {
        let units = pages * (granule.size() as usize / PAGE);
        // SAFETY: forwarded from the caller.
        let freed = unsafe { self.free(pa, units) };
        debug_assert!(freed, "bad free of table pages at {pa:?}");
    }

    fn to_ptr(&self, pa: Pa) -> NonNull<super::Slot> {
        let off = pa.0.wrapping_sub(self.pa.0) as usize;
        debug_assert!(self.contains(pa), "{pa:?} is outside the page pool");
        // SAFETY: callers pass only addresses of pages the pool handed out,
        // which lie inside the region; the result is in bounds and non-null.
        unsafe { self.virt.add(off).cast::<super::Slot>() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(4096))]
    struct Page([u8; PAGE]);

    fn region(pages: usize) -> Vec<Page> {
        (0..pages).map(|_| Page([0xa5; PAGE])).collect()
    }

    #[test]
    fn masks_and_runs() {
        assert_eq!(run_mask(0, 64), u64::MAX);
        assert_eq!(run_mask(4, 2), 0b11_0000);
        assert_eq!(free_run(0b1011, 1, 1), Some(2));
        assert_eq!(free_run(0b0001, 2, 2), Some(2));
        assert_eq!(free_run(0b0100, 2, 2), Some(0));
        assert_eq!(free_run(0b0110, 2, 2), Some(4));
        assert_eq!(free_run(u64::MAX, 1, 1), None);
        assert_eq!(free_run(1, 64, 64), None);
        assert_eq!(free_run(0, 64, 64), Some(0));
    }

    #[test]
    fn unaligned_region_keeps_its_edges_reserved() {
        let mut mem = region(5);
        // The region starts 3 pages into a 256 KiB unit.
        // SAFETY: `mem` outlives the pool and is used only through it.
        let pool = unsafe { PagePool::new(mem.as_mut_ptr().cast(), Pa(0x4000_3000), 5) };
        let got: Vec<Pa> = (0..5).map(|_| pool.allocate(1).unwrap()).collect();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..5)
                .map(|i| Pa(0x4000_3000 + i * 0x1000))
                .collect::<Vec<_>>()
        );
        assert_eq!(pool.allocate(1), Err(Error::OutOfMemory));
        for p in got {
            // SAFETY: unused pages.
            assert!(unsafe { pool.free(p, 1) });
        }
        // Runs are aligned physically: 4 pages at 0x4000_4000 (16 KiB),
        // not at the region's start.
        assert_eq!(pool.allocate(4), Ok(Pa(0x4000_4000)));
        assert_eq!(pool.allocate(2), Err(Error::OutOfMemory));
        assert_eq!(pool.allocate(1), Ok(Pa(0x4000_3000)));
        assert_eq!(pool.allocate(1), Err(Error::OutOfMemory));
        assert_eq!(pool.failed_allocations(), 3);
        // Frees outside the region or into its reserved edges change nothing.
        // SAFETY: bad frees, which the pool ignores.
        unsafe {
            assert!(!pool.free(Pa(0x4000_2000), 1));
            assert!(!pool.free(Pa(0x4000_8000), 1));
            assert!(!pool.free(Pa(0x4000_4000), 8));
        }
        assert_eq!(pool.bad_frees(), 3);
        assert_eq!(pool.live_pages(), 5);
    }
}
