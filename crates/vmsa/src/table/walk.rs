//! The one table walker, and the primitives operations are built from.
//!
//! Every operation is a [`Visitor`] run twice over the same range: first in
//! *plan* mode, which validates the arguments against the tables and counts
//! the table pages the operation will need (descending into *virtual*
//! tables where the commit would create or split one), then, once all
//! those pages are allocated, in *commit* mode, which writes. An operation
//! that fails therefore fails before it has written anything.
//!
//! Commit mode keeps the break-before-make bookkeeping: descriptors that
//! must be broken are written invalid as the walk meets them, and their new
//! values are stored only in [`Op::finish`], after one `DSB ISH; TLBI ...;
//! DSB ISH` sequence covering all of them. New tables hanging off a live
//! table are filled while unreachable and linked in `finish`, after the
//! barrier that makes their contents visible to walkers.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ops::Range;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use super::Table;
use crate::addr::Pa;
use crate::bbm::needs_bbm;
use crate::descriptor::{Descriptor, Kind};
use crate::effects::{Barrier, Effects, PageEvent};
use crate::error::Error;
use crate::geometry::{Geometry, LAST_LEVEL};
use crate::invalidate::invalidate;
use crate::memory::TableAllocator;
use crate::perms::GrantChange;
use crate::regime::Regime;
use crate::report::{Change, ChangeFlags, ChangeReport, LevelSet};

/// A table the walk can enter.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TableRef {
    /// A table page in memory.
    Real {
        pa: Pa,
        /// Reachable from the root right now (so walkers may use it).
        attached: bool,
        /// Built in this operation under a break-before-make of its parent
        /// entry: whatever changes inside it needs no invalidation of its
        /// own.
        covered: bool,
    },
    /// Plan mode: a table the commit would create empty.
    Empty,
    /// Plan mode: the table the block `desc` at `level` would be split into.
    Split { desc: u64, level: u8 },
}

/// One entry met by the walk.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub level: u8,
    /// Input offsets the entry maps.
    pub region: Range<u64>,
    /// The part of `region` inside the walked range.
    pub piece: Range<u64>,
    /// The descriptor's current value.
    pub desc: u64,
    /// Physical address of the descriptor (`None` in virtual tables).
    pub slot: Option<Pa>,
    pub attached: bool,
    pub covered: bool,
}

impl Entry {
    /// Whether the walked range covers the whole entry.
    #[inline(always)]
    pub fn full(&self) -> bool {
        self.piece == self.region
    }

    #[inline(always)]
    pub fn kind(&self) -> Kind {
        Descriptor(self.desc).kind(self.level)
    }
}

/// What the walker does after a visit.
pub(crate) enum Step {
    Next,
    Descend(TableRef),
}

/// One operation's decisions, entry by entry.
pub(crate) trait Visitor<R: Regime> {
    /// Decides what to do with one entry.
    fn visit<A: TableAllocator, E: Effects>(
        &mut self,
        op: &mut Op<'_, R, A, E>,
        e: &Entry,
    ) -> Result<Step, Error>;

    /// Called after the walk returned from the table `child` below `e`.
    fn post<A: TableAllocator, E: Effects>(
        &mut self,
        _op: &mut Op<'_, R, A, E>,
        _e: &Entry,
        _child: &TableRef,
    ) -> Result<(), Error> {
        Ok(())
    }
}

/// The descriptor at index `idx` of the table a block would be split into.
#[inline(always)]
pub(crate) fn split_child(g: &Geometry, block: u64, level: u8, idx: usize) -> u64 {
    let d = Descriptor(block);
    let oa = d.address(g.granule()) + idx as u64 * g.entry_size(level + 1);
    Descriptor::leaf(level + 1, oa, d.leaf_attr_bits()).0
}

/// State of one operation over one table.
pub(crate) struct Op<'a, R: Regime, A: TableAllocator, E: Effects> {
    pub t: &'a mut Table<R, A>,
    pub fx: &'a mut E,
    pub plan: bool,
    /// Plan mode: table pages the commit will need.
    pub need: usize,
    reserve: Vec<Pa>,
    pub report: ChangeReport,
    /// Entries broken for break-before-make, invalidated in `finish`.
    broken: Vec<Change>,
    /// Descriptor stores deferred to `finish`, by descriptor address.
    makes: BTreeMap<u64, u64>,
    /// Pages detached by break-before-make, released in `finish`.
    release_after: Vec<Pa>,
}

impl<'a, R: Regime, A: TableAllocator, E: Effects> Op<'a, R, A, E> {
    pub fn new(t: &'a mut Table<R, A>, fx: &'a mut E, plan: bool, reserve: Vec<Pa>) -> Self {
        Op {
            t,
            fx,
            plan,
            need: 0,
            reserve,
            report: ChangeReport::default(),
            broken: Vec::new(),
            makes: BTreeMap::new(),
            release_after: Vec::new(),
        }
    }

    #[inline(always)]
    fn geometry(&self) -> Geometry {
        self.t.geometry
    }

    /// Input addresses of table offsets `r` (an upper-range table ending at
    /// the top of the address space has `end` 0).
    #[inline(always)]
    fn abs(&self, r: &Range<u64>) -> Range<u64> {
        self.t.base.wrapping_add(r.start)..self.t.base.wrapping_add(r.end)
    }

    /// The descriptor at `slot`, as the operation will leave it.
    #[inline(always)]
    fn load(&self, ptr: NonNull<u64>, idx: usize, slot: Pa) -> u64 {
        if !self.makes.is_empty() {
            if let Some(v) = self.makes.get(&slot.0) {
                return *v;
            }
        }
        // SAFETY: `ptr` points at a table page owned by this table (the
        // allocator's contract) and `idx` is within the table.
        unsafe { AtomicU64::from_ptr(ptr.as_ptr().add(idx)) }.load(Ordering::Relaxed)
    }

    /// Stores a descriptor through the effects interface.
    #[inline(always)]
    fn store(&mut self, slot: Pa, new: u64) {
        // SAFETY: `slot` is a descriptor in a table page owned by this table;
        // the allocator's contract makes the pointer valid and unaliased.
        let cell = unsafe { AtomicU64::from_ptr(self.t.alloc.to_ptr(slot).as_ptr()) };
        self.fx.store_descriptor(cell, slot, new);
        self.t.written = true;
    }

    /// Whether changing `e` must respect break-before-make and may only
    /// link new tables after a barrier: walkers can reach it.
    #[inline(always)]
    fn live(&self, e: &Entry) -> bool {
        self.t.live && e.attached && !e.covered
    }

    /// How replacing leaf `old` by leaf `new` at `level` changes the
    /// translation.
    fn classify(&self, level: u8, old: u64, new: u64) -> ChangeFlags {
        let (o, n) = (Descriptor(old), Descriptor(new));
        let was = o.kind(level) == Kind::Leaf;
        let is = n.kind(level) == Kind::Leaf;
        let mut f = ChangeFlags::empty();
        f.set(ChangeFlags::WAS_VALID, was);
        f.set(ChangeFlags::IS_VALID, is);
        match (was, is) {
            (true, true) => {
                let g = self.t.geometry.granule();
                f.set(ChangeFlags::OUTPUT_CHANGED, o.address(g) != n.address(g));
                let gc = GrantChange::between(
                    self.t.regime.grants(o.leaf_attr_bits()),
                    self.t.regime.grants(n.leaf_attr_bits()),
                );
                f.set(ChangeFlags::RELAXED, gc.relaxed);
                f.set(ChangeFlags::RESTRICTED, gc.restricted);
                let oa_mask = crate::descriptor::OA_MASK_48;
                let attrs_changed = self
                    .t
                    .regime
                    .bbm_rules()
                    .iter()
                    .any(|r| r.mask != oa_mask && (old ^ new) & r.mask != 0);
                f.set(ChangeFlags::ATTRS_CHANGED, attrs_changed);
            }
            (true, false) => f |= ChangeFlags::OUTPUT_CHANGED | ChangeFlags::RESTRICTED,
            (false, true) => f |= ChangeFlags::RELAXED,
            (false, false) => {}
        }
        f
    }

    /// Writes invalid to `slot` now and queues `new` for after the
    /// invalidation of `change`.
    fn break_then_make(&mut self, slot: Pa, change: Change, new: u64) {
        self.store(slot, 0);
        self.broken.push(change);
        self.makes.insert(slot.0, new);
    }

    /// Makes the leaf at `e` hold `new` (a leaf or invalid descriptor),
    /// with break-before-make when the change needs it.
    pub fn set_leaf(&mut self, e: &Entry, new: u64) {
        if self.plan || e.desc == new {
            return;
        }
        let slot = e.slot.expect("commit walks only real tables");
        let mut flags = self.classify(e.level, e.desc, new);
        let range = self.abs(&e.region);
        let cached = if flags.contains(ChangeFlags::WAS_VALID) {
            LevelSet::only(e.level)
        } else {
            LevelSet::EMPTY
        };
        if e.covered {
            flags |= ChangeFlags::BBM_DONE;
            self.store(slot, new);
        } else if self.live(e)
            && needs_bbm(self.t.regime.bbm_rules(), e.level, e.desc, new).is_some()
        {
            let broken = Change { range: range.clone(), level: e.level, flags, cached_leaf_levels: cached };
            self.break_then_make(slot, broken, new);
            flags |= ChangeFlags::BBM_DONE;
        } else {
            self.store(slot, new);
        }
        self.report.push(Change { range, level: e.level, flags, cached_leaf_levels: cached });
    }

    fn take_page(&mut self) -> Result<Pa, Error> {
        let g = self.t.geometry.granule();
        let pa = match self.reserve.pop() {
            Some(pa) => pa,
            None => {
                debug_assert!(false, "plan and commit disagree on table pages");
                self.t.alloc.allocate_zeroed(g, 1)?
            }
        };
        self.fx.page_event(PageEvent::Init { pa, bytes: g.size() });
        self.report.tables_allocated += 1;
        Ok(pa)
    }

    /// Gives the invalid entry `e` a new, empty next-level table.
    pub fn new_table(&mut self, e: &Entry) -> Result<TableRef, Error> {
        if self.plan {
            self.need += 1;
            return Ok(TableRef::Empty);
        }
        let slot = e.slot.expect("commit walks only real tables");
        let pa = self.take_page()?;
        let desc = Descriptor::table(pa.0, self.t.regime.table_attrs()).0;
        let deferred = self.live(e);
        if deferred {
            self.makes.insert(slot.0, desc);
        } else {
            self.store(slot, desc);
        }
        Ok(TableRef::Real { pa, attached: e.attached && !deferred, covered: e.covered })
    }

    /// Replaces the block at `e` by a table of the same mappings one level
    /// down, built while unreachable and swapped in by break-before-make.
    pub fn split(&mut self, e: &Entry) -> Result<TableRef, Error> {
        if self.plan {
            self.need += 1;
            return Ok(TableRef::Split { desc: e.desc, level: e.level });
        }
        let slot = e.slot.expect("commit walks only real tables");
        let g = self.geometry();
        let pa = self.take_page()?;
        for i in 0..g.entries_at(e.level + 1) {
            self.store(Pa(pa.0 + 8 * i as u64), split_child(&g, e.desc, e.level, i));
        }
        let desc = Descriptor::table(pa.0, self.t.regime.table_attrs()).0;
        let range = self.abs(&e.region);
        let mut flags = ChangeFlags::WAS_VALID | ChangeFlags::IS_VALID | ChangeFlags::SIZE_CHANGED;
        let cached = LevelSet::only(e.level);
        let live = self.live(e);
        if live {
            let broken = Change { range: range.clone(), level: e.level, flags, cached_leaf_levels: cached };
            self.break_then_make(slot, broken, desc);
        } else {
            self.store(slot, desc);
        }
        if live || e.covered {
            flags |= ChangeFlags::BBM_DONE;
        }
        self.report.push(Change { range, level: e.level, flags, cached_leaf_levels: cached });
        Ok(TableRef::Real { pa, attached: e.attached && !live, covered: live || e.covered })
    }

    /// The table pages of the subtree rooted at `table` (a table at
    /// `level` mapping offsets from `base`), and its leaves as merged runs
    /// of changes that remove them together with the tables above them.
    fn subtree(&self, table: Pa, level: u8, base: u64) -> (Vec<Pa>, ChangeReport) {
        let g = self.geometry();
        let mut pages = Vec::new();
        let mut leaves = ChangeReport::default();
        self.subtree_at(&g, table, level, base, &mut pages, &mut leaves);
        (pages, leaves)
    }

    fn subtree_at(&self, g: &Geometry, table: Pa, level: u8, base: u64, pages: &mut Vec<Pa>, leaves: &mut ChangeReport) {
        pages.push(table);
        let ptr = self.t.alloc.to_ptr(table);
        let size = g.entry_size(level);
        let flags = ChangeFlags::WAS_VALID
            | ChangeFlags::TABLE_REMOVED
            | ChangeFlags::OUTPUT_CHANGED
            | ChangeFlags::RESTRICTED;
        for idx in 0..g.entries_at(level) {
            let d = self.load(ptr, idx, Pa(table.0 + 8 * idx as u64));
            let off = base + idx as u64 * size;
            match Descriptor(d).kind(level) {
                Kind::Table => {
                    let next = Pa(Descriptor(d).address(g.granule()));
                    self.subtree_at(g, next, level + 1, off, pages, leaves);
                }
                Kind::Leaf => leaves.push(Change {
                    range: self.abs(&(off..off + size)),
                    level,
                    flags,
                    cached_leaf_levels: LevelSet::only(level),
                }),
                Kind::Invalid => {}
            }
        }
    }

    /// Drops deferred stores into pages that are being detached.
    fn forget_makes_in(&mut self, pages: &[Pa]) {
        if self.makes.is_empty() {
            return;
        }
        let size = self.geometry().granule().size();
        for p in pages {
            let doomed: Vec<u64> = self.makes.range(p.0..p.0 + size).map(|(k, _)| *k).collect();
            for k in doomed {
                self.makes.remove(&k);
            }
        }
    }

    /// Removes the table below `e`: writes `e` invalid and releases the
    /// subtree's pages once an invalidation covering it has completed (at
    /// the next flush), or at once if no walker can have reached it. The
    /// report lists the leaves that went with it; a table this operation
    /// emptied (`emptied`) is reported as the table descriptor alone.
    pub fn remove_table(&mut self, e: &Entry, emptied: bool) {
        if self.plan {
            return;
        }
        let slot = e.slot.expect("commit walks only real tables");
        let g = self.geometry();
        let child = Pa(Descriptor(e.desc).address(g.granule()));
        let (pages, leaves) = self.subtree(child, e.level + 1, e.region.start);
        self.forget_makes_in(&pages);
        self.store(slot, 0);
        self.report.tables_detached += pages.len();
        if self.t.live && e.attached {
            self.t.pending.extend_from_slice(&pages);
        } else {
            for p in pages {
                self.t.release(p, self.fx);
            }
        }
        if emptied || leaves.is_empty() {
            let range = self.abs(&e.region);
            let flags = ChangeFlags::WAS_VALID | ChangeFlags::TABLE_REMOVED;
            self.report.push(Change { range, level: e.level, flags, cached_leaf_levels: LevelSet::EMPTY });
        } else {
            for c in leaves.changes {
                self.report.push(c);
            }
        }
    }

    /// Replaces the table below `e` by the leaf `new` with
    /// break-before-make; `extra` describes how the translation changed.
    pub fn replace_table(&mut self, e: &Entry, new: u64, extra: ChangeFlags) {
        if self.plan {
            return;
        }
        let slot = e.slot.expect("commit walks only real tables");
        let g = self.geometry();
        let child = Pa(Descriptor(e.desc).address(g.granule()));
        let (pages, leaves) = self.subtree(child, e.level + 1, e.region.start);
        self.forget_makes_in(&pages);
        let levels = leaves.changes.iter().fold(LevelSet::EMPTY, |l, c| l.with(c.cached_leaf_levels));
        let mut flags = ChangeFlags::WAS_VALID
            | ChangeFlags::IS_VALID
            | ChangeFlags::TABLE_REMOVED
            | ChangeFlags::SIZE_CHANGED
            | extra;
        let range = self.abs(&e.region);
        self.report.tables_detached += pages.len();
        if self.live(e) {
            // Break the table descriptor; invalidate every leaf below it
            // (all levels, so the walk caches for the table go too).
            self.store(slot, 0);
            self.broken.extend(leaves.changes);
            self.makes.insert(slot.0, new);
            self.release_after.extend_from_slice(&pages);
            flags |= ChangeFlags::BBM_DONE;
        } else {
            self.store(slot, new);
            for p in pages {
                self.t.release(p, self.fx);
            }
        }
        self.report.push(Change { range, level: e.level, flags, cached_leaf_levels: levels });
    }

    /// Whether the table at `pa` (at `level`) holds no valid entry, as the
    /// operation will leave it.
    pub fn table_is_empty(&self, pa: Pa, level: u8) -> bool {
        let ptr = self.t.alloc.to_ptr(pa);
        (0..self.geometry().entries_at(level))
            .all(|i| Descriptor(self.load(ptr, i, Pa(pa.0 + 8 * i as u64))).kind(level) == Kind::Invalid)
    }

    /// Reads the entries of the table at `pa` (at `level`) as the operation
    /// will leave them.
    pub fn entries(&self, pa: Pa, level: u8) -> impl Iterator<Item = u64> + '_ {
        let ptr = self.t.alloc.to_ptr(pa);
        (0..self.geometry().entries_at(level)).map(move |i| self.load(ptr, i, Pa(pa.0 + 8 * i as u64)))
    }

    /// Completes the operation: invalidates what break-before-make broke,
    /// stores the deferred descriptors, releases what break-before-make
    /// detached, and hands the changes to the table's outstanding set.
    pub fn finish(mut self) -> ChangeReport {
        if !self.broken.is_empty() {
            let (regime, g) = (self.t.regime, self.t.geometry);
            invalidate(&regime, &g, self.broken.iter(), self.fx);
        } else if !self.makes.is_empty() && self.t.live {
            self.fx.barrier(Barrier::DsbIshst);
        }
        let makes = core::mem::take(&mut self.makes);
        for (slot, v) in makes {
            self.store(Pa(slot), v);
        }
        for p in core::mem::take(&mut self.release_after) {
            self.t.release(p, self.fx);
        }
        let g = self.t.geometry.granule();
        for p in core::mem::take(&mut self.reserve) {
            // SAFETY: allocated for this operation and never used.
            unsafe { self.t.alloc.deallocate(p, g, 1) };
        }
        let outstanding = self.report.needing_invalidation().cloned();
        self.t.outstanding.extend(outstanding);
        self.report
    }
}

/// Walks `range` (table offsets) of the table `table` at `level`.
pub(crate) fn walk<R, A, E, V>(
    op: &mut Op<'_, R, A, E>,
    v: &mut V,
    table: &TableRef,
    level: u8,
    range: Range<u64>,
) -> Result<(), Error>
where
    R: Regime,
    A: TableAllocator,
    E: Effects,
    V: Visitor<R>,
{
    let g = op.t.geometry;
    let size = g.entry_size(level);
    let (ptr, table_pa, attached, covered) = match *table {
        TableRef::Real { pa, attached, covered } => (Some(op.t.alloc.to_ptr(pa)), pa, attached, covered),
        _ => (None, Pa(0), false, false),
    };
    let mut addr = range.start;
    while addr < range.end {
        let idx = g.index(level, addr);
        let start = addr & !(size - 1);
        let region = start..start + size;
        let piece = addr..region.end.min(range.end);
        let (desc, slot) = match (*table, ptr) {
            (TableRef::Real { .. }, Some(ptr)) => {
                let slot = Pa(table_pa.0 + 8 * idx as u64);
                (op.load(ptr, idx, slot), Some(slot))
            }
            (TableRef::Split { desc, level: bl }, _) => (split_child(&g, desc, bl, idx), None),
            _ => (0, None),
        };
        let e = Entry { level, region, piece, desc, slot, attached, covered };
        match v.visit(op, &e)? {
            Step::Next => {}
            Step::Descend(child) => {
                // In plan mode a virtual last-level table holds only leaves
                // the commit will write: nothing there to check or count.
                let virtual_leaves = !matches!(child, TableRef::Real { .. }) && level + 1 == LAST_LEVEL;
                if !(op.plan && virtual_leaves) {
                    walk(op, v, &child, level + 1, e.piece.clone())?;
                }
                v.post(op, &e, &child)?;
            }
        }
        addr = e.region.end;
    }
    Ok(())
}
