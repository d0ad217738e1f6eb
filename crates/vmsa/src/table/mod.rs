//! A translation table tree for one regime, edited while CPUs may be
//! walking it.

mod collapse;
mod dump;
mod map;
mod protect;
mod query;
mod shared;
mod split;
mod unmap;
pub(crate) mod walk;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ops::Range;

use crate::addr::{Address, Pa};
use crate::effects::{Barrier, Effects, PageEvent};
use crate::error::Error;
use crate::geometry::Geometry;
use crate::memory::TableAllocator;
use crate::plan::{Invalidator, Planner, Purpose, Space};
use crate::regime::Regime;
use crate::report::{Change, ChangeReport};

pub use dump::Dump;
pub use map::MapOptions;
pub use query::{Mapping, Mappings, Translation};
pub use shared::{Installed, PageCache, Relaxed};

use walk::{walk, Op, TableRef, Visitor};

/// A translation table tree: a root (possibly several concatenated pages)
/// and the tables below it, in memory from a [`TableAllocator`].
///
/// Operations ([`map`](Self::map), [`unmap`](Self::unmap),
/// [`protect`](Self::protect), [`split_block`](Self::split_block),
/// [`collapse`](Self::collapse)) may run while the table is live (after
/// [`activate`](Self::activate)): changes the architecture says need
/// break-before-make are done that way, inside the operation. Every other
/// change that may leave a stale TLB entry is returned in the operation's
/// [`ChangeReport`] and kept as *outstanding* until [`flush`](Self::flush)
/// (or the invalidation planner) invalidates it; table pages detached by
/// an operation are released only then.
///
/// # Example
///
/// ```
/// use vmsa::{Arena, Geometry, Granule, Ipa, MapOptions, Pa, Recorder, Stage2, Stage2Attrs, Table, Vmid};
///
/// let mut fx = Recorder::new();
/// let geometry = Geometry::stage2(Granule::K4, 40)?;
/// let arena = Arena::new(Pa(0x8000_0000), 64);
/// let mut s2 = Table::new(Stage2::new(Vmid(1)), geometry, arena, &mut fx)?;
/// s2.activate(&mut fx);
///
/// // 2 MiB of guest RAM at IPA 0x4000_0000: one level 2 block.
/// let ram = Ipa(0x4000_0000)..Ipa(0x4020_0000);
/// s2.map(ram, Pa(0x1_0000_0000), Stage2Attrs::RAM, MapOptions::default(), &mut fx)?;
/// assert_eq!(s2.translate(Ipa(0x4000_1234)).unwrap().output, Pa(0x1_0000_1234));
///
/// // Unmapping one page splits the live block with break-before-make ...
/// let report = s2.unmap(Ipa(0x4000_1000)..Ipa(0x4000_2000), &mut fx)?;
/// assert!(report.changes.iter().any(|c| c.flags.contains(vmsa::ChangeFlags::BBM_DONE)));
/// // ... and the flush removes what the TLBs may still hold.
/// s2.flush(&mut fx);
/// assert!(s2.translate(Ipa(0x4000_1000)).is_none());
/// # Ok::<(), vmsa::Error>(())
/// ```
pub struct Table<R: Regime, A: TableAllocator> {
    regime: R,
    geometry: Geometry,
    /// Input address of table offset 0.
    base: u64,
    root: Pa,
    alloc: A,
    /// Walkers may hold entries from this table (it has been activated).
    live: bool,
    /// Descriptors were written since the last flush.
    written: bool,
    /// Descriptors were written since the last `DSB ISHST` the table
    /// issued ([`publish`](Self::publish)).
    unpublished: bool,
    /// Pages detached from the tree, released at the next flush.
    pending: Vec<Pa>,
    /// Changes that may have left stale entries, invalidated at the next
    /// flush.
    outstanding: Vec<Change>,
    /// Decides the TLB maintenance (vmsa's [`Planner`] by default).
    invalidator: Box<dyn Invalidator>,
    /// The VMID / ASID is retired: nothing needs invalidating.
    dead: bool,
    /// The PE whose effects the caller passes (the issuer of TLBIs).
    issuer: usize,
    /// PEs running the address space now (bit i: PE i).
    running: u64,
    /// PEs it ran on at some time (their TLBs may hold its entries).
    ever: u64,
    /// PEs that missed a local invalidation: they must flush the space
    /// locally before running it again ([`vcpu_load`](Self::vcpu_load)).
    stale_on: u64,
    /// The caller reports where the space runs (`vcpu_load` /
    /// `vcpu_put`); until it does, any PE may run it.
    tracked: bool,
    /// The VTTBR_EL2 value loaded on the issuer when it is not this
    /// table's (stage 2 TLBIs act on the loaded VMID).
    loaded_vttbr: Option<u64>,
    /// An empty root to point VTTBR_EL2 at while switching VMIDs for TLBIs
    /// (speculative AT errata).
    empty_root: Option<Pa>,
    /// Valid leaf descriptors (pages and blocks) in the tree, kept by
    /// every operation as it writes (see [`mapped_leaves`](Self::mapped_leaves)).
    /// `None` (unknown) once a subtree was removed from the table while it
    /// was inactive: such removals do not read the subtree's last-level
    /// tables to count their leaves. Never `None` while the table is live:
    /// [`activate`](Self::activate) recounts.
    leaves: Option<u64>,
    /// Leaves added by the fault path ([`map_shared`](Self::map_shared)),
    /// folded into `leaves` by the next exclusive operation.
    shared_leaves: shared::SharedCount,
}

impl<R: Regime, A: TableAllocator> Table<R, A> {
    /// Creates an empty, inactive table.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] if the root cannot be allocated; the regime's
    /// own checks ([`Error::UnsupportedGeometry`],
    /// [`Error::TagOutOfRange`]).
    pub fn new(
        regime: R,
        geometry: Geometry,
        mut alloc: A,
        fx: &mut impl Effects,
    ) -> Result<Self, Error> {
        regime.check(&geometry)?;
        let g = geometry.granule();
        let pages = geometry.root_pages();
        let root = alloc.allocate_zeroed(g, pages)?;
        fx.page_event(PageEvent::Init {
            pa: root,
            bytes: g.size() * pages as u64,
        });
        Ok(Table {
            regime,
            base: regime.input_base(&geometry),
            geometry,
            root,
            alloc,
            live: false,
            written: false,
            unpublished: false,
            pending: Vec::new(),
            outstanding: Vec::new(),
            invalidator: Box::new(Planner::default()),
            dead: false,
            issuer: 0,
            running: 0,
            ever: 0,
            stale_on: 0,
            tracked: false,
            loaded_vttbr: None,
            empty_root: None,
            leaves: Some(0),
            shared_leaves: shared::SharedCount::default(),
        })
    }

    /// Replaces the invalidation policy (vmsa's [`Planner`] with default
    /// capabilities and profile unless set).
    pub fn set_invalidator(&mut self, invalidator: Box<dyn Invalidator>) {
        self.invalidator = invalidator;
    }

    /// The invalidation policy.
    pub fn invalidator(&self) -> &dyn Invalidator {
        &*self.invalidator
    }

    /// The address space, as the invalidation policy sees it.
    pub fn space(&self) -> Space {
        let mut s = Space::new(self.regime.space_kind());
        for (l, size) in s.entry_size.iter_mut().enumerate() {
            *size = self.geometry.entry_size(l as u8);
        }
        s.dead = self.dead;
        // Only the issuer runs it, and every other PE that ever did will
        // flush before running it again: non-shareable operations do.
        s.local = self.tracked && self.running & !(1 << self.issuer) == 0;
        // PEs a local invalidation would leave owing a flush on their next
        // load.
        s.newly_stale = (self.ever & !(1 << self.issuer) & !self.stale_on).count_ones();
        s
    }

    /// Sets the PE that issues the effects passed to later calls (the
    /// planner uses non-shareable operations when the address space runs
    /// only there).
    pub fn set_issuer(&mut self, pe: usize) {
        self.issuer = pe.min(63);
    }

    /// The address space starts running on `pe` (a vCPU is loaded there);
    /// `fx` must issue on `pe`. Calling this (or [`vcpu_put`](Self::vcpu_put))
    /// makes the table track where it runs; until then it assumes any PE
    /// may, and never uses non-shareable invalidation. If `pe` missed local invalidations made
    /// while the space ran elsewhere, its TLB is flushed of the space here
    /// (the flush KVM and Xen do when a vCPU moves): the local form of the
    /// whole-space TLBI and `DSB NSH`, through
    /// [`tlbi::issue`](crate::tlbi::issue) with the invalidator's
    /// [`capabilities`](Invalidator::capabilities) (the repeat-TLBI
    /// erratum issues both again).
    pub fn vcpu_load(&mut self, pe: usize, fx: &mut impl Effects) {
        let bit = 1u64 << pe.min(63);
        if self.stale_on & bit != 0 {
            let (op, operand) = self.space().whole();
            let caps = self.invalidator.capabilities();
            crate::tlbi::issue(
                fx,
                &caps,
                [(crate::plan::local_form(op), operand)],
                Barrier::DsbNsh,
            );
            self.stale_on &= !bit;
        }
        self.running |= bit;
        self.ever |= bit;
        self.tracked = true;
    }

    /// Tells the table which VTTBR_EL2 value the issuing PE has loaded
    /// (`None`: this table's own). Stage 2 TLBIs act on the loaded VMID, so
    /// when another VM's is loaded the table's invalidations switch
    /// VTTBR_EL2 to its own around them and back (with an ISB after each
    /// write).
    pub fn set_loaded_vttbr(&mut self, vttbr: Option<u64>) {
        self.loaded_vttbr = vttbr;
    }

    /// For CPUs with a speculative AT erratum
    /// ([`Capabilities::speculative_at`](crate::Capabilities::speculative_at)
    /// in the invalidator's [`capabilities`](Invalidator::capabilities)): an
    /// empty, zeroed root table (at least as large as this table's root) to
    /// put in VTTBR_EL2, with this table's VMID, while switching VMIDs to
    /// issue TLBIs, so that no speculative walk reaches a real table.
    ///
    /// The capability decides: without `speculative_at` the switch uses this
    /// table's real root even if an empty root was set. With it, an empty
    /// root is required for the protection: until one is set the switch
    /// falls back to the real root (the TLBIs still act on the right VMID;
    /// only the erratum workaround is missing). Set it before
    /// [`set_loaded_vttbr`](Self::set_loaded_vttbr) on such a CPU.
    pub fn set_empty_root(&mut self, root: Option<Pa>) {
        self.empty_root = root;
    }

    /// The fault path for relaxations left uninvalidated: a guest faulted
    /// on `addr` needing `access`. If the tables already allow it (a stale,
    /// stricter entry caused the fault), the entries for that page are
    /// invalidated on the issuing PE only (non-shareable TLBI, `DSB NSH`,
    /// and for stage 2 a local `VMALLE1` for combined entries; then `ISB`;
    /// each TLBI with its `DSB NSH` through
    /// [`tlbi::issue`](crate::tlbi::issue) with the invalidator's
    /// [`capabilities`](Invalidator::capabilities), so the repeat-TLBI
    /// erratum repeats each) and `true` is returned: the guest retries.
    /// Otherwise nothing is emitted and `false` says the fault is real. (KVM's
    /// `kvm_pgtable_stage2_relax_perms` with `__kvm_tlb_flush_vmid_ipa_nsh`;
    /// elfuse's stale-TLB retry.)
    pub fn spurious_fault(
        &self,
        addr: R::Input,
        access: crate::perms::Grants,
        fx: &mut impl Effects,
    ) -> bool {
        let Some(tr) = self.translate(addr) else {
            return false;
        };
        let Ok(bits) = self.regime.encode_attrs(&tr.attrs) else {
            return false;
        };
        if !self.regime.grants(bits).contains(access) {
            return false;
        }
        let space = self.space();
        let page = addr.get() & !(self.geometry.granule().size() - 1);
        let (op, operand) = space.by_addr(page, true, crate::tlbi::Ttl::NONE);
        let caps = self.invalidator.capabilities();
        crate::tlbi::issue(
            fx,
            &caps,
            [(crate::plan::local_form(op), operand)],
            Barrier::DsbNsh,
        );
        if let crate::plan::SpaceKind::Stage2 { .. } = space.kind {
            crate::tlbi::issue(
                fx,
                &caps,
                [(crate::tlbi::TlbiOp::Vmalle1, 0)],
                Barrier::DsbNsh,
            );
        }
        fx.barrier(Barrier::Isb);
        true
    }

    /// The address space stops running on `pe` (its TLB keeps entries).
    pub fn vcpu_put(&mut self, pe: usize) {
        self.running &= !(1u64 << pe.min(63));
        self.tracked = true;
    }

    /// Declares the table's VMID / ASID retired: it will not be used
    /// again before a full invalidation (a VMID rollover's `ALLE1IS`), so
    /// later changes (a VM's teardown) need no TLB maintenance at all.
    pub fn retire(&mut self) {
        self.dead = true;
    }

    /// Valid leaf descriptors reachable from the root (blocks count once).
    ///
    /// O(1) for a live table: every operation keeps the count as it
    /// writes, so pricing a whole-space invalidation never walks the table.
    /// During an operation's break-before-make the count is already the
    /// operation's final one.
    ///
    /// An inactive table may walk: removing a table subtree from a table
    /// that is not live does not count the leaves it held (that would read
    /// every last-level table below it), it marks the count unknown, and
    /// until [`activate`](Self::activate) recounts, this walks the whole
    /// table on each call (without caching the result).
    pub fn mapped_leaves(&self) -> u64 {
        match self.leaves {
            Some(n) => n + self.shared_leaves.sum(),
            None => self.count_leaves(),
        }
    }

    /// Counts the valid leaf descriptors by walking the whole tree.
    fn count_leaves(&self) -> u64 {
        let g = self.geometry;
        let mut n = 0;
        // The root level's entry count covers every concatenated page.
        let mut stack: Vec<(Pa, u8)> = alloc::vec![(self.root, g.start_level())];
        while let Some((pa, level)) = stack.pop() {
            for d in self.read_table(pa, level) {
                match crate::Descriptor(d).kind(level) {
                    crate::descriptor::Kind::Leaf => n += 1,
                    crate::descriptor::Kind::Table => {
                        stack.push((Pa(crate::Descriptor(d).address(g.granule())), level + 1))
                    }
                    crate::descriptor::Kind::Invalid => {}
                }
            }
        }
        n
    }

    /// Runs the invalidation policy over `changes`; returns whether it
    /// emitted anything.
    fn run_invalidator(
        &mut self,
        purpose: Purpose,
        changes: &[Change],
        fx: &mut dyn Effects,
    ) -> bool {
        let mut space = self.space();
        // A table page freed after a local invalidation could be linked
        // again while a PE that ran the space earlier still caches the old
        // table descriptor: table removals are invalidated everywhere.
        if space.local
            && self.ever & !(1 << self.issuer) != 0
            && changes
                .iter()
                .any(|c| c.flags.contains(crate::report::ChangeFlags::TABLE_REMOVED))
        {
            space.local = false;
        }
        // Stage 2 TLBIs act on the VMID in VTTBR_EL2: when another VM's is
        // loaded on the issuer, load this table's around them.
        let switch = match (self.loaded_vttbr, space.kind) {
            (Some(loaded), crate::plan::SpaceKind::Stage2 { vmid }) => {
                let own = self.registers()[1].1;
                // With a speculative AT erratum the PE must not walk a real
                // table of this VMID while at EL2: an empty root with the
                // VMID serves the TLBIs as well. The capability decides;
                // without an empty root set, the real one (documented at
                // `set_empty_root`).
                let target = match self.empty_root {
                    Some(root) if self.invalidator.capabilities().speculative_at => {
                        (vmid as u64) << 48 | root.0
                    }
                    _ => own,
                };
                (loaded != own).then_some((target, loaded))
            }
            _ => None,
        };
        if let Some((own, _)) = switch {
            fx.write_sysreg(crate::effects::SysReg::VttbrEl2, own);
            fx.barrier(Barrier::Isb);
        }
        debug_assert!(
            self.leaves.is_some(),
            "a live table's mapped-leaf count is always known"
        );
        let t = &*self;
        let mut watch = Watch {
            inner: fx,
            local: false,
            broadcast: false,
        };
        let emitted = t.invalidator.invalidate(
            &space,
            purpose,
            changes,
            &mut || t.mapped_leaves(),
            &mut watch,
        );
        let (local, broadcast) = (watch.local, watch.broadcast);
        if let Some((_, loaded)) = switch {
            fx.write_sysreg(crate::effects::SysReg::VttbrEl2, loaded);
            fx.barrier(Barrier::Isb);
        }
        if local && !broadcast {
            // The other PEs it ran on did not see this invalidation.
            self.stale_on |= self.ever & !(1 << self.issuer);
        }
        emitted
    }

    /// The regime.
    pub fn regime(&self) -> &R {
        &self.regime
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Physical address of the root table.
    pub fn root(&self) -> Pa {
        self.root
    }

    /// The table allocator.
    pub fn allocator(&self) -> &A {
        &self.alloc
    }

    /// Mutable access to the table allocator (e.g. for failure injection).
    pub fn allocator_mut(&mut self) -> &mut A {
        &mut self.alloc
    }

    /// Whether walkers may hold entries from this table.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The translation-control and base register values that make this
    /// table current.
    pub fn registers(&self) -> [(crate::effects::SysReg, u64); 2] {
        self.regime.registers(&self.geometry, self.root)
    }

    /// Writes the registers that make this table current (followed by an
    /// ISB) and marks it live: from now on changes respect
    /// break-before-make and stale entries are tracked. If subtrees were
    /// removed while the table was inactive, the mapped-leaf count is
    /// recounted here (one walk), so that a live table's
    /// [`mapped_leaves`](Self::mapped_leaves) is always O(1).
    pub fn activate(&mut self, fx: &mut impl Effects) {
        if self.leaves.is_none() {
            self.leaves = Some(self.count_leaves());
            self.shared_leaves.take();
        }
        for (reg, value) in self.registers() {
            fx.write_sysreg(reg, value);
        }
        fx.barrier(Barrier::Isb);
        self.live = true;
        self.running |= 1 << self.issuer;
        self.ever |= 1 << self.issuer;
    }

    /// Declares that no TLB holds entries from this table any more (after
    /// a full invalidation of its VMID/ASID, or a VMID/ASID rollover) and no
    /// walker will reach it until it is activated again.
    ///
    /// # Safety
    /// Not memory-unsafe in Rust terms, but the caller vouches for the
    /// hardware state: if it is wrong, later changes skip invalidations the
    /// CPUs need. Outstanding changes are dropped and pending pages
    /// released.
    pub fn assume_uncached(&mut self, fx: &mut impl Effects) {
        self.live = false;
        self.outstanding.clear();
        self.written = false;
        self.unpublished = false;
        for p in core::mem::take(&mut self.pending) {
            self.release(p, fx);
        }
    }

    /// Changes made since the last flush that may have left stale TLB
    /// entries.
    pub fn outstanding(&self) -> &[Change] {
        &self.outstanding
    }

    /// Completes this PE's descriptor writes for every other PE's table
    /// walkers (`DSB ISHST`) if the table is live and written since the
    /// last time. Call it before releasing the write side of the table's
    /// lock with changes still outstanding (gathered for a later
    /// [`flush`](Self::flush)): when another PE flushes them, its DSBs
    /// complete only its own writes, and a walker could still fetch the
    /// descriptors this PE replaced after the TLBIs (the model reports
    /// `BbmUncleanToValid` or `StaleTranslation`). [`flush`](Self::flush)
    /// on the writing PE makes this unnecessary.
    pub fn publish(&mut self, fx: &mut impl Effects) {
        if self.live && self.unpublished {
            fx.barrier(Barrier::DsbIshst);
        }
        self.unpublished = false;
    }

    /// Table pages detached from the tree and waiting for the flush that
    /// makes them safe to reuse.
    pub fn pending_release(&self) -> &[Pa] {
        &self.pending
    }

    /// Invalidates everything outstanding with the table's
    /// [`Invalidator`], or just makes new descriptors visible with `DSB
    /// ISHST` when nothing can be stale, then releases the pending table
    /// pages. On an inactive table only the release happens.
    pub fn flush(&mut self, fx: &mut impl Effects) {
        if self.live {
            let outstanding = core::mem::take(&mut self.outstanding);
            let emitted =
                !outstanding.is_empty() && self.run_invalidator(Purpose::Flush, &outstanding, fx);
            if !emitted && self.written {
                fx.barrier(Barrier::DsbIshst);
                if self.regime.needs_isb() {
                    fx.barrier(Barrier::Isb);
                }
            }
        }
        self.outstanding.clear();
        self.written = false;
        self.unpublished = false;
        for p in core::mem::take(&mut self.pending) {
            self.release(p, fx);
        }
    }

    /// Returns one detached table page to the allocator.
    fn release(&mut self, pa: Pa, fx: &mut impl Effects) {
        let g = self.geometry.granule();
        fx.page_event(PageEvent::Release {
            pa,
            bytes: g.size(),
        });
        // SAFETY: `pa` is a single table page this table allocated, it has
        // been detached from the tree, and any invalidation walkers needed
        // has completed (callers guarantee: flush, the end of a
        // break-before-make, or a table no walker reaches).
        unsafe { self.alloc.deallocate(pa, g, 1) };
    }

    /// Tears the table down: flushes what is outstanding, then gives every
    /// table page back, the root first (so that a checker sees the tree
    /// die before its pages are reused). For a table whose VMID / ASID was
    /// [`retire`](Self::retire)d this issues no TLBI at all; call it only
    /// once no PE has the table in a base register.
    pub fn destroy(mut self, fx: &mut impl Effects) {
        self.flush(fx);
        let g = self.geometry.granule();
        let root_pages = self.geometry.root_pages();
        fx.page_event(PageEvent::Release {
            pa: self.root,
            bytes: g.size() * root_pages as u64,
        });
        for pa in self.table_pages().into_iter().skip(root_pages) {
            fx.page_event(PageEvent::Release {
                pa,
                bytes: g.size(),
            });
        }
        // Dropping returns the memory to the allocator.
    }

    /// Every table page reachable from the root, root first.
    pub fn table_pages(&self) -> Vec<Pa> {
        let g = self.geometry;
        let mut out = alloc::vec![self.root];
        let mut levels = alloc::vec![g.start_level()];
        let mut i = 0;
        while i < out.len() {
            let (pa, level) = (out[i], levels[i]);
            i += 1;
            if level == crate::geometry::LAST_LEVEL {
                continue;
            }
            for d in self.read_table(pa, level) {
                if crate::Descriptor(d).kind(level) == crate::descriptor::Kind::Table {
                    out.push(Pa(crate::Descriptor(d).address(g.granule())));
                    levels.push(level + 1);
                }
            }
        }
        // The root of a concatenated table counts once per page.
        for p in 1..g.root_pages() {
            out.insert(p, Pa(self.root.0 + p as u64 * g.granule().size()));
        }
        out
    }

    /// The descriptors of the table at `pa` (a table at `level`).
    fn read_table(&self, pa: Pa, level: u8) -> impl Iterator<Item = u64> + '_ {
        let ptr = self.alloc.to_ptr(pa);
        (0..self.geometry.entries_at(level)).map(move |i| {
            // SAFETY: `pa` is a table page of this tree and `i` is within it.
            unsafe { &*ptr.as_ptr().add(i) }.load(core::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Checks and converts an input range to table offsets. An
    /// upper-range table may end at the top of the 64-bit space (`end` 0).
    fn offsets(&self, range: &Range<R::Input>) -> Result<Range<u64>, Error> {
        let (start, end) = (range.start.get(), range.end.get());
        let page = self.geometry.granule().size();
        for v in [start, end] {
            if v % page != 0 {
                return Err(Error::Misaligned { value: v });
            }
        }
        let size = self.geometry.input_size();
        let (off_start, off_end) = (start.wrapping_sub(self.base), end.wrapping_sub(self.base));
        if start < self.base || off_start >= size {
            return Err(Error::InputOutOfRange { addr: start });
        }
        if off_end <= off_start {
            return Err(Error::EmptyRange);
        }
        if off_end > size {
            return Err(Error::InputOutOfRange {
                addr: end.wrapping_sub(1),
            });
        }
        Ok(off_start..off_end)
    }

    /// Whether an outstanding change overlaps `range` (table offsets): an
    /// entry there was made invalid (or its table removed) and the
    /// invalidation is gathered for the next flush, so a new valid entry
    /// written there now would coexist with the stale one.
    fn unclean(&self, range: &Range<u64>) -> bool {
        let base = self.base;
        // A removed table leaves walk-cache entries for the descriptor
        // that pointed at it, which may be at any level above: a new
        // table linked there (for a range that does not overlap the
        // removed leaves) would meet them. Widen such changes to the
        // root entry they lie in.
        let top = self.geometry.entry_size(self.geometry.start_level());
        self.outstanding.iter().any(|c: &Change| {
            let (mut s, mut e) = (
                c.range.start.wrapping_sub(base),
                c.range.end.wrapping_sub(base),
            );
            if c.flags.contains(crate::report::ChangeFlags::TABLE_REMOVED) {
                s &= !(top - 1);
                e = e.wrapping_add(top - 1) & !(top - 1);
            }
            let e = if e == 0 {
                self.geometry.input_size()
            } else {
                e
            };
            s < range.end && range.start < e
        })
    }

    /// Runs `visitor` over `range` (offsets): plan, allocate, commit.
    ///
    /// With `clean_first`, outstanding changes overlapping `range` are
    /// invalidated (by a flush) before the commit writes: an entry made
    /// invalid without invalidation is "unclean", and writing a new valid
    /// entry over it would let the stale and the new translation coexist,
    /// which break-before-make forbids.
    fn run<V: Visitor<R>, E: Effects>(
        &mut self,
        range: Range<u64>,
        visitor: &mut V,
        fx: &mut E,
        clean_first: bool,
    ) -> Result<ChangeReport, Error> {
        let root = TableRef::Real {
            pa: self.root,
            attached: true,
            covered: false,
        };
        let level = self.geometry.start_level();

        let need = {
            let mut plan = Op::new(self, fx, true, Vec::new());
            walk(&mut plan, visitor, &root, level, range.clone())?;
            plan.need
        };

        let g = self.geometry.granule();
        let mut reserve = Vec::new();
        reserve
            .try_reserve_exact(need)
            .map_err(|_| Error::OutOfMemory)?;
        for _ in 0..need {
            match self.alloc.allocate_zeroed(g, 1) {
                Ok(pa) => reserve.push(pa),
                Err(e) => {
                    for pa in reserve {
                        // SAFETY: allocated just above and never used.
                        unsafe { self.alloc.deallocate(pa, g, 1) };
                    }
                    return Err(e);
                }
            }
        }

        if clean_first && self.live && self.unclean(&range) {
            self.flush(fx);
        }
        let mut op = Op::new(self, fx, false, reserve);
        let result = walk(&mut op, visitor, &root, level, range);
        debug_assert!(
            result.is_ok(),
            "commit failed after a successful plan: {result:?}"
        );
        let report = op.finish();
        result.map(|()| report)
    }
}

/// Passes effects through, noting whether TLBIs were local or broadcast.
struct Watch<'a> {
    inner: &'a mut dyn Effects,
    local: bool,
    broadcast: bool,
}

impl Effects for Watch<'_> {
    fn store_descriptor(&mut self, slot: &crate::memory::Slot, at: Pa, new: u64) {
        self.inner.store_descriptor(slot, at, new)
    }
    fn store_descriptors(&mut self, slots: &[crate::memory::Slot], at: Pa, first: u64, step: u64) {
        self.inner.store_descriptors(slots, at, first, step)
    }
    fn compare_exchange_descriptor(
        &mut self,
        slot: &crate::memory::Slot,
        at: Pa,
        current: u64,
        new: u64,
    ) -> Result<(), u64> {
        self.inner
            .compare_exchange_descriptor(slot, at, current, new)
    }
    fn barrier(&mut self, barrier: Barrier) {
        self.inner.barrier(barrier)
    }
    fn tlbi(&mut self, op: crate::tlbi::TlbiOp, operand: u64) {
        if op.is_broadcast() {
            self.broadcast = true;
        } else {
            self.local = true;
        }
        self.inner.tlbi(op, operand)
    }
    fn write_sysreg(&mut self, reg: crate::effects::SysReg, value: u64) {
        self.inner.write_sysreg(reg, value)
    }
    fn cache(&mut self, op: crate::effects::CacheOp, addr: u64) {
        self.inner.cache(op, addr)
    }
    fn page_event(&mut self, event: PageEvent) {
        self.inner.page_event(event)
    }
}

impl<R: Regime, A: TableAllocator> Drop for Table<R, A> {
    /// Returns every table page to the allocator. Drop a table only when no
    /// walker can reach it and no TLB holds its entries (or after
    /// [`Table::assume_uncached`]); otherwise keep it until then.
    fn drop(&mut self) {
        let g = self.geometry.granule();
        let pages = self.table_pages();
        for pa in pages
            .iter()
            .skip(self.geometry.root_pages())
            .chain(self.pending.iter())
        {
            // SAFETY: single table pages owned by this table, not used again.
            unsafe { self.alloc.deallocate(*pa, g, 1) };
        }
        // SAFETY: the root allocation, made in `new`.
        unsafe {
            self.alloc
                .deallocate(self.root, g, self.geometry.root_pages())
        };
    }
}
