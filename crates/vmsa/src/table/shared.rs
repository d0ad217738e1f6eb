//! The fault path: operations that take `&self` and may run on several PEs
//! at once. The locking model is in the crate documentation
//! ([`crate`], "Concurrency").

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::{Table, Translation};
use crate::addr::{Address, Pa};
use crate::bbm::needs_bbm;
use crate::descriptor::{Descriptor, Kind};
use crate::effects::{Barrier, Effects, PageEvent};
use crate::error::Error;
use crate::geometry::Granule;
use crate::memory::TableAllocator;
use crate::perms::Grants;
use crate::regime::Regime;

/// Table pages one caller (a vCPU's fault handler) keeps ready for the
/// fault path, so that [`Table::map_shared`] never allocates while other
/// PEs contend (KVM's `kvm_mmu_memory_cache`).
///
/// Fill it outside the read lock: with [`Table::topup`] (which needs the
/// table exclusively) or [`PageCache::fill`] from an allocator that shares
/// the table's memory (a copy of the table's `&PagePool`). Give the pages
/// back with [`Table::drain_cache`] or [`PageCache::drain`]; a cache dropped
/// with pages in it leaks them (they stay allocated, never reused).
#[derive(Debug)]
pub struct PageCache {
    pages: Vec<Pa>,
    /// This caller's slot in the table's shared counters.
    shard: usize,
}

impl Default for PageCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Hands each new cache the next counter slot.
static NEXT_SHARD: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

impl PageCache {
    /// An empty cache.
    pub fn new() -> Self {
        PageCache {
            pages: Vec::new(),
            shard: NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS,
        }
    }

    /// Pages in the cache.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Allocates zeroed `granule` pages from `alloc` until the cache holds
    /// `up_to`. `alloc` must hand out memory the table's own allocator
    /// reaches with `to_ptr` and can deallocate (the same pool).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] if the allocator (or the cache's own
    /// bookkeeping) runs out; the pages allocated so far stay in the cache.
    pub fn fill(
        &mut self,
        alloc: &mut impl TableAllocator,
        granule: Granule,
        up_to: usize,
    ) -> Result<(), Error> {
        // Reserve first: pushing a page back after a lost race must never
        // allocate.
        self.pages
            .try_reserve(up_to.saturating_sub(self.pages.len()))
            .map_err(|_| Error::OutOfMemory)?;
        while self.pages.len() < up_to {
            self.pages.push(alloc.allocate_zeroed(granule, 1)?);
        }
        Ok(())
    }

    /// Gives every page back to `alloc`.
    pub fn drain(&mut self, alloc: &mut impl TableAllocator, granule: Granule) {
        for pa in self.pages.drain(..) {
            // SAFETY: every page in the cache is a single zeroed page
            // allocated by `fill` (or `Table::topup`) and not linked into
            // any table: a page is removed from the cache before it is
            // linked and pushed back only when the link lost its race.
            unsafe { alloc.deallocate(pa, granule, 1) };
        }
    }
}

const SHARDS: usize = 8;

/// One counter slot, alone in its cache line(s).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(core::sync::atomic::AtomicU64);

/// A count the fault path adds to from several PEs at once: one slot per
/// caller (by its [`PageCache`]), each in its own cache line, so that PEs
/// faulting in parallel do not bounce one line between them on every
/// fault; readers sum the slots.
#[derive(Debug, Default)]
pub(crate) struct SharedCount {
    shards: [Shard; SHARDS],
}

impl SharedCount {
    fn add(&self, shard: usize, n: u64) {
        self.shards[shard % SHARDS]
            .0
            .fetch_add(n, Ordering::Relaxed);
    }

    /// The sum of every slot.
    pub(crate) fn sum(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Takes the sum, leaving zero (exclusive access: no adds race).
    pub(crate) fn take(&mut self) -> u64 {
        self.shards
            .iter_mut()
            .map(|s| core::mem::take(s.0.get_mut()))
            .sum()
    }
}

/// What [`Table::map_shared`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed<R: Regime> {
    /// This call wrote the new leaf.
    Mapped,
    /// The entry was already valid: another PE mapped it first (or it was
    /// mapped before the fault was taken). This is the translation the
    /// tables now give; the guest retries its access.
    Raced(Translation<R>),
}

/// What [`Table::relax_shared`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relaxed {
    /// This call added the permissions.
    Relaxed,
    /// The tables already allow the access (another PE relaxed it first, or
    /// a stale entry caused the fault): nothing was written.
    AlreadyAllowed,
}

impl<R: Regime, A: TableAllocator> Table<R, A> {
    /// Table pages [`map_shared`](Self::map_shared) may need to map a leaf
    /// at `level` (one per level between the root and the leaf): keep at
    /// least this many in each caller's [`PageCache`].
    pub fn fault_pages(&self, level: u8) -> usize {
        level.saturating_sub(self.geometry.start_level()) as usize
    }

    /// Tops `cache` up to `up_to` pages from the table's allocator.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`]; the pages allocated so far stay in the cache.
    pub fn topup(&mut self, cache: &mut PageCache, up_to: usize) -> Result<(), Error> {
        let g = self.geometry.granule();
        cache.fill(&mut self.alloc, g, up_to)
    }

    /// Gives the pages of `cache` back to the table's allocator.
    pub fn drain_cache(&mut self, cache: &mut PageCache) {
        let g = self.geometry.granule();
        cache.drain(&mut self.alloc, g);
    }

    /// The fault path's map: makes the invalid entry for the `level` leaf
    /// containing `addr` map `output` (the leaf's first byte) with `attrs`,
    /// creating missing tables from `cache`. May run on several PEs at once
    /// (see the [crate docs](crate) for the locking model): every write is
    /// a compare-and-swap from invalid, and a caller that finds the entry
    /// (or a block above it) already valid gets the tables' translation in
    /// [`Installed::Raced`] instead.
    ///
    /// On a live table the new leaf is made visible to the table walkers
    /// (`DSB ISHST`, and an `ISB` for regimes that need one) before this
    /// returns; no TLBI is needed, as no TLB holds an invalid entry.
    ///
    /// # Errors
    /// [`Error::Misaligned`], [`Error::InputOutOfRange`],
    /// [`Error::OutputOutOfRange`], [`Error::InvalidAttributes`],
    /// [`Error::UnsupportedGeometry`] for a level with no leaves;
    /// [`Error::OutOfMemory`] when `cache` holds fewer pages than the
    /// tables missing above the entry (at most
    /// [`fault_pages`](Self::fault_pages)`(level)`);
    /// [`Error::NeedsExclusive`] when only an exclusive operation can make
    /// the change: the entry was made invalid by an operation whose
    /// invalidation is still outstanding (writing it now would break
    /// break-before-make), or finer mappings exist below it. On error
    /// nothing has changed.
    pub fn map_shared(
        &self,
        addr: R::Input,
        output: R::Output,
        attrs: R::Attrs,
        level: u8,
        cache: &mut PageCache,
        fx: &mut impl Effects,
    ) -> Result<Installed<R>, Error> {
        let g = self.geometry;
        if level < g.start_level() || !g.leaf_allowed(level) {
            return Err(Error::UnsupportedGeometry {
                why: "no leaf (block or page) at that level",
            });
        }
        let size = g.entry_size(level);
        let start = addr.get() & !(size - 1);
        let off = self.offsets(&(R::Input::new(start)..R::Input::new(start.wrapping_add(size))))?;
        let attr_bits = self.regime.encode_attrs(&attrs)?;
        let oa = output.get();
        if oa % size != 0 {
            return Err(Error::Misaligned { value: oa });
        }
        let out_size = 1u64 << self.regime.output_bits();
        if oa >= out_size || out_size - oa < size {
            return Err(Error::OutputOutOfRange {
                addr: oa.max(out_size),
            });
        }
        if self.live && self.unclean(&off) {
            return Err(Error::NeedsExclusive { addr: start });
        }
        let leaf = Descriptor::leaf(level, oa, attr_bits).0;
        let mut table = self.root;
        let mut lvl = g.start_level();
        loop {
            let at = Pa(table.0 + 8 * g.index(lvl, off.start) as u64);
            // SAFETY: `table` is a page of this tree (the root, or a table
            // descriptor's target read with Acquire below), `at` is one of
            // its descriptors: the allocator's contract makes the slot
            // valid. Shared walkers only ever access it atomically.
            let slot = unsafe { self.alloc.to_ptr(at).as_ref() };
            // Acquire: a table descriptor another PE linked is read with
            // the zeroed contents it published before linking.
            let cur = slot.load(Ordering::Acquire);
            let d = Descriptor(cur);
            if lvl == level {
                match d.kind(lvl) {
                    Kind::Invalid => {
                        match fx.compare_exchange_descriptor(slot, at, 0, leaf) {
                            Ok(()) => {
                                self.shared_leaves.add(cache.shard, 1);
                                self.publish_new(fx);
                                return Ok(Installed::Mapped);
                            }
                            // Lost: look at the winner's entry.
                            Err(_) => continue,
                        }
                    }
                    _ => return self.raced(addr, start),
                }
            }
            match d.kind(lvl) {
                Kind::Table => {
                    table = Pa(d.address(g.granule()));
                    lvl += 1;
                }
                Kind::Leaf => return self.raced(addr, start),
                Kind::Invalid => {
                    // The tables missing from here down, checked at the
                    // first missing one, before anything is written: each
                    // link then uses one of them, and a lost race gives its
                    // page back. Other PEs can only link some of them
                    // meanwhile, never unlink (that is exclusive).
                    if cache.len() < (level - lvl) as usize {
                        return Err(Error::OutOfMemory);
                    }
                    let Some(page) = cache.pages.pop() else {
                        return Err(Error::OutOfMemory);
                    };
                    fx.page_event(PageEvent::Init {
                        pa: page,
                        bytes: g.granule().size(),
                    });
                    if self.live {
                        // The page's zeroes must reach the walkers before
                        // the descriptor that leads them there.
                        fx.barrier(Barrier::DsbIshst);
                    }
                    let link = Descriptor::table(page.0, self.regime.table_attrs()).0;
                    match fx.compare_exchange_descriptor(slot, at, 0, link) {
                        Ok(()) => {
                            table = page;
                            lvl += 1;
                        }
                        Err(_) => {
                            // Another PE linked a table (or a block) here
                            // first: ours was never reachable.
                            cache.pages.push(page);
                        }
                    }
                }
            }
        }
    }

    /// The fault path's permission change: makes the leaf mapping `addr`
    /// grant what `attrs` grants, where that only adds permissions (same
    /// output address, memory type and size: for example write access to a
    /// page write-protected for dirty logging), and publishes it to the
    /// table walkers (`DSB ISHST` on a live table). May run on several PEs
    /// at once: the leaf is changed by compare-and-swap from the value
    /// read, and re-read when another PE changed it first (KVM's
    /// `kvm_pgtable_stage2_relax_perms`).
    ///
    /// No TLB maintenance: an entry stricter than the tables, on any PE
    /// including the faulting one, costs at most one more fault, which
    /// [`spurious_fault`](Self::spurious_fault) drops with a local
    /// invalidation on the PE that takes it. A caller that wants the
    /// faulting PE's own stale entry gone at once (as KVM's
    /// `__kvm_tlb_flush_vmid_ipa_nsh` after a relax does) calls
    /// `spurious_fault` on that PE right after.
    ///
    /// `access` is what the faulting access needed: when the tables
    /// already allow it, nothing is written ([`Relaxed::AlreadyAllowed`]).
    ///
    /// # Errors
    /// [`Error::InvalidAttributes`]; [`Error::NotMapped`] if nothing maps
    /// `addr` (a translation fault: use [`map_shared`](Self::map_shared));
    /// [`Error::NeedsExclusive`] if going to `attrs` would remove a
    /// permission or change anything but permissions (only
    /// [`protect`](Self::protect) may). On error nothing has changed.
    pub fn relax_shared(
        &self,
        addr: R::Input,
        attrs: R::Attrs,
        access: Grants,
        fx: &mut impl Effects,
    ) -> Result<Relaxed, Error> {
        let want = self.regime.encode_attrs(&attrs)?;
        let g = self.geometry;
        let page = addr.get() & !(g.granule().size() - 1);
        loop {
            let Some((slot, at, level, cur)) = self.leaf_slot(addr) else {
                return Err(Error::NotMapped { addr: page });
            };
            if self
                .regime
                .grants(Descriptor(cur).leaf_attr_bits())
                .contains(access)
            {
                return Ok(Relaxed::AlreadyAllowed);
            }
            let d = Descriptor(cur);
            let new = Descriptor::leaf(level, d.address(g.granule()), want).0;
            let (old_g, new_g) = (
                self.regime.grants(d.leaf_attr_bits()),
                self.regime.grants(want),
            );
            if !new_g.contains(old_g)
                || !new_g.contains(access)
                || needs_bbm(self.regime.bbm_rules(), level, cur, new).is_some()
            {
                return Err(Error::NeedsExclusive { addr: page });
            }
            // SAFETY: `slot` points at a descriptor of this tree (found by
            // `leaf_slot`); shared walkers access it only atomically.
            let cell = unsafe { slot.as_ref() };
            if fx.compare_exchange_descriptor(cell, at, cur, new).is_ok() {
                self.publish_new(fx);
                return Ok(Relaxed::Relaxed);
            }
            // Another PE changed the leaf between the read and the swap:
            // judge its value.
        }
    }

    /// The leaf descriptor mapping `addr`: its slot, address, level and
    /// value (read with Acquire).
    fn leaf_slot(
        &self,
        addr: R::Input,
    ) -> Option<(core::ptr::NonNull<crate::memory::Slot>, Pa, u8, u64)> {
        let g = self.geometry;
        let off = addr.get().wrapping_sub(self.base);
        if addr.get() < self.base || off >= g.input_size() {
            return None;
        }
        let mut table = self.root;
        let mut lvl = g.start_level();
        loop {
            let at = Pa(table.0 + 8 * g.index(lvl, off) as u64);
            let ptr = self.alloc.to_ptr(at);
            // SAFETY: a descriptor of this tree (allocator contract).
            let cur = unsafe { ptr.as_ref() }.load(Ordering::Acquire);
            match Descriptor(cur).kind(lvl) {
                Kind::Invalid => return None,
                Kind::Leaf => return Some((ptr, at, lvl, cur)),
                Kind::Table => {
                    table = Pa(Descriptor(cur).address(g.granule()));
                    lvl += 1;
                }
            }
        }
    }

    /// The answer for a fault whose entry was found valid.
    fn raced(&self, addr: R::Input, start: u64) -> Result<Installed<R>, Error> {
        match self.translate(addr) {
            Some(t) => Ok(Installed::Raced(t)),
            // A table with nothing mapped at `addr` below the entry.
            None => Err(Error::NeedsExclusive { addr: start }),
        }
    }

    /// Makes a new descriptor visible to the walkers.
    fn publish_new(&self, fx: &mut impl Effects) {
        if self.live {
            fx.barrier(Barrier::DsbIshst);
            if self.regime.needs_isb() {
                fx.barrier(Barrier::Isb);
            }
        }
    }
}
