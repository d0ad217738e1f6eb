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
use core::sync::atomic::Ordering;

use super::Table;
use crate::addr::Pa;
use crate::bbm::needs_bbm;
use crate::descriptor::{Descriptor, Kind};
use crate::effects::{Barrier, Effects, PageEvent};
use crate::error::Error;
use crate::geometry::{Geometry, LAST_LEVEL};
use crate::memory::{Slot, TableAllocator};
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

    /// Fast path for a run of entries the range covers whole: handle them
    /// all and return `true`, or return `false` (having changed nothing) to
    /// have them visited one by one.
    #[inline(always)]
    fn run<A: TableAllocator, E: Effects>(
        &mut self,
        _op: &mut Op<'_, R, A, E>,
        _run: &Run,
    ) -> Result<bool, Error> {
        Ok(false)
    }

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
    /// The last `classify_cached` answer.
    classified: Option<((u64, u64, u8, bool), ChangeFlags)>,
}

impl<'a, R: Regime, A: TableAllocator, E: Effects> Op<'a, R, A, E> {
    pub fn new(t: &'a mut Table<R, A>, fx: &'a mut E, plan: bool, reserve: Vec<Pa>) -> Self {
        // Leaves the fault path added join the exclusive count.
        let shared = t.shared_leaves.take();
        if let Some(count) = &mut t.leaves {
            *count += shared;
        }
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
            classified: None,
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
    fn load(&self, ptr: NonNull<Slot>, idx: usize, slot: Pa) -> u64 {
        if !self.makes.is_empty() {
            if let Some(v) = self.makes.get(&slot.0) {
                return *v;
            }
        }
        // SAFETY: `ptr` points at a table page owned by this table (the
        // allocator's contract) and `idx` is within the table.
        unsafe { &*ptr.as_ptr().add(idx) }.load(Ordering::Relaxed)
    }

    /// Stores a descriptor through the effects interface.
    #[inline(always)]
    fn store(&mut self, slot: Pa, new: u64) {
        // SAFETY: `slot` is a descriptor in a table page owned by this table;
        // the allocator's contract makes the pointer valid and unaliased.
        let cell = unsafe { self.t.alloc.to_ptr(slot).as_ref() };
        self.fx.store_descriptor(cell, slot, new);
        self.t.written = true;
        self.t.unpublished = true;
    }

    /// The descriptor at index `i` of a run, as the operation will leave it.
    #[inline(always)]
    pub fn load_run(&self, run: &Run, i: usize) -> u64 {
        self.load(run.ptr, i, run.slot(i))
    }

    /// Whether deferred stores exist (fast paths step aside then).
    #[inline(always)]
    pub fn has_deferred(&self) -> bool {
        !self.makes.is_empty()
    }

    /// The descriptor at index `i` of a run as stored in memory (callers
    /// know no deferred store targets it).
    #[inline(always)]
    pub fn peek_run(&self, run: &Run, i: usize) -> u64 {
        // SAFETY: `run.ptr` points at a table page of this tree and `i` is
        // one of its indices (the allocator's contract).
        unsafe { &*run.ptr.as_ptr().add(i) }.load(Ordering::Relaxed)
    }

    /// Stores `new` at index `i` of a run, through the effects interface.
    /// Fast paths call [`Op::mark_written`] once afterwards.
    #[inline(always)]
    pub fn store_run(&mut self, run: &Run, i: usize, new: u64) {
        // SAFETY: as in `peek_run`.
        let cell = unsafe { &*run.ptr.as_ptr().add(i) };
        self.fx.store_descriptor(cell, run.slot(i), new);
    }

    /// Stores `first`, `first + step`, ... at indices `idx` of a run, as
    /// one [`Effects::store_descriptors`]. Fast paths call
    /// [`Op::mark_written`] once afterwards.
    #[inline(always)]
    pub fn store_run_fill(&mut self, run: &Run, idx: Range<usize>, first: u64, step: u64) {
        debug_assert!(run.idx.start <= idx.start && idx.end <= run.idx.end);
        // SAFETY: as in `peek_run`: the indices are the run's, within one
        // table page of this tree.
        let slots = unsafe {
            core::slice::from_raw_parts(run.ptr.as_ptr().add(idx.start) as *const Slot, idx.len())
        };
        self.fx
            .store_descriptors(slots, run.slot(idx.start), first, step);
    }

    /// Notes that descriptors were stored.
    #[inline(always)]
    pub fn mark_written(&mut self) {
        self.t.written = true;
        self.t.unpublished = true;
    }

    /// Notes that `n` valid leaf descriptors were added to the tree.
    #[inline(always)]
    pub fn leaves_added(&mut self, n: u64) {
        if let Some(count) = &mut self.t.leaves {
            *count += n;
        }
    }

    /// Notes that `n` valid leaf descriptors left the tree.
    #[inline(always)]
    pub fn leaves_removed(&mut self, n: u64) {
        if let Some(count) = &mut self.t.leaves {
            debug_assert!(*count >= n, "mapped-leaf count underflow");
            *count = count.saturating_sub(n);
        }
    }

    /// Notes that a table subtree left an inactive tree without its leaves
    /// being counted: the count is unknown until
    /// [`Table::activate`](super::Table::activate) recounts.
    #[inline(always)]
    fn leaves_unknown(&mut self) {
        debug_assert!(!self.t.live, "a live table keeps an exact leaf count");
        self.t.leaves = None;
    }

    /// Keeps the leaf count for a descriptor going from `old` to `new` at
    /// `level`.
    #[inline(always)]
    fn count_change(&mut self, level: u8, old: u64, new: u64) {
        let was = Descriptor(old).kind(level) == Kind::Leaf;
        let is = Descriptor(new).kind(level) == Kind::Leaf;
        match (was, is) {
            (false, true) => self.leaves_added(1),
            (true, false) => self.leaves_removed(1),
            _ => {}
        }
    }

    /// Whether a leaf change in `run` may need break-before-make at all
    /// (walkers can reach the run).
    #[inline(always)]
    pub fn run_is_live(&self, run: &Run) -> bool {
        self.t.live && run.attached && !run.covered
    }

    /// Whether the leaf change `old` -> `new` at `level` needs
    /// break-before-make by the rule table.
    #[inline(always)]
    pub fn bbm_rule_applies(&self, level: u8, old: u64, new: u64) -> bool {
        needs_bbm(self.t.regime.bbm_rules(), level, old, new).is_some()
    }

    /// Records a change of entries of a run (input offsets `r`).
    #[inline(always)]
    pub fn record(&mut self, r: Range<u64>, level: u8, flags: ChangeFlags, cached: LevelSet) {
        let range = self.abs(&r);
        self.report.push(Change {
            range,
            level,
            flags,
            cached_leaf_levels: cached,
        });
    }

    /// How replacing leaf `old` by leaf-or-invalid `new` at `level` changes
    /// the translation, remembering the last answer (runs of entries change
    /// the same way).
    #[inline(always)]
    pub fn classify_cached(&mut self, level: u8, old: u64, new: u64) -> ChangeFlags {
        let (o, n) = (Descriptor(old), Descriptor(new));
        let g = self.t.geometry.granule();
        let key = (
            o.leaf_attr_bits() | u64::from(o.is_valid()),
            n.leaf_attr_bits() | u64::from(n.is_valid()),
            level,
            o.address(g) != n.address(g),
        );
        if let Some((k, f)) = self.classified {
            if k == key {
                return f;
            }
        }
        let f = self.classify(level, old, new);
        self.classified = Some((key, f));
        f
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
        self.count_change(e.level, e.desc, new);
        let mut flags = self.classify_cached(e.level, e.desc, new);
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
            let broken = Change {
                range: range.clone(),
                level: e.level,
                flags,
                cached_leaf_levels: cached,
            };
            self.break_then_make(slot, broken, new);
            flags |= ChangeFlags::BBM_DONE;
        } else {
            self.store(slot, new);
        }
        self.report.push(Change {
            range,
            level: e.level,
            flags,
            cached_leaf_levels: cached,
        });
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
        self.fx.page_event(PageEvent::Init {
            pa,
            bytes: g.size(),
        });
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
        Ok(TableRef::Real {
            pa,
            attached: e.attached && !deferred,
            covered: e.covered,
        })
    }

    /// Replaces the block at `e` by a table of the same mappings one level
    /// down, built while unreachable and swapped in by break-before-make.
    pub fn split(&mut self, e: &Entry) -> Result<TableRef, Error> {
        if self.plan {
            self.need += 1;
            return Ok(TableRef::Split {
                desc: e.desc,
                level: e.level,
            });
        }
        let slot = e.slot.expect("commit walks only real tables");
        let g = self.geometry();
        let pa = self.take_page()?;
        // One block becomes a table of as many leaves as it has entries.
        self.leaves_added(g.entries_at(e.level + 1) as u64 - 1);
        for i in 0..g.entries_at(e.level + 1) {
            self.store(Pa(pa.0 + 8 * i as u64), split_child(&g, e.desc, e.level, i));
        }
        let desc = Descriptor::table(pa.0, self.t.regime.table_attrs()).0;
        let range = self.abs(&e.region);
        let mut flags = ChangeFlags::WAS_VALID | ChangeFlags::IS_VALID | ChangeFlags::SIZE_CHANGED;
        let cached = LevelSet::only(e.level);
        let live = self.live(e);
        if live {
            let broken = Change {
                range: range.clone(),
                level: e.level,
                flags,
                cached_leaf_levels: cached,
            };
            self.break_then_make(slot, broken, desc);
        } else {
            self.store(slot, desc);
        }
        if live || e.covered {
            flags |= ChangeFlags::BBM_DONE;
        }
        self.report.push(Change {
            range,
            level: e.level,
            flags,
            cached_leaf_levels: cached,
        });
        Ok(TableRef::Real {
            pa,
            attached: e.attached && !live,
            covered: live || e.covered,
        })
    }

    /// The table pages of the subtree rooted at `table` (a table at
    /// `level` mapping offsets from `base`), the levels of its leaves and
    /// their number; with `runs`, also its leaves as merged runs of changes
    /// that remove them together with the tables above them. Tables are
    /// never left empty, so without `runs` or `count` last-level tables
    /// need not be read.
    fn subtree(&self, table: Pa, level: u8, base: u64, runs: bool, count: bool) -> Subtree {
        let g = self.geometry();
        let mut out = Subtree {
            pages: Vec::new(),
            levels: LevelSet::EMPTY,
            leaves: ChangeReport::default(),
            count: 0,
        };
        self.subtree_at(&g, table, level, base, runs, count, &mut out);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn subtree_at(
        &self,
        g: &Geometry,
        table: Pa,
        level: u8,
        base: u64,
        runs: bool,
        count: bool,
        out: &mut Subtree,
    ) {
        out.pages.push(table);
        if level == LAST_LEVEL && !runs {
            out.levels = out.levels.with(LevelSet::only(level));
            if count {
                let ptr = self.t.alloc.to_ptr(table);
                out.count += (0..g.entries_at(level))
                    .filter(|&i| {
                        Descriptor(self.load(ptr, i, Pa(table.0 + 8 * i as u64))).kind(level)
                            == Kind::Leaf
                    })
                    .count() as u64;
            }
            return;
        }
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
                    self.subtree_at(g, next, level + 1, off, runs, count, out);
                }
                Kind::Leaf => {
                    out.levels = out.levels.with(LevelSet::only(level));
                    out.count += 1;
                    if runs {
                        out.leaves.push(Change {
                            range: self.abs(&(off..off + size)),
                            level,
                            flags,
                            cached_leaf_levels: LevelSet::only(level),
                        });
                    }
                }
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
        // Where walkers may have cached the leaves, name them one by one
        // so the invalidation can be exact; elsewhere the region will do.
        let precise = self.t.live && e.attached && !emptied;
        // A table this operation emptied has no leaves left to count. A
        // live table keeps its count exact; an inactive one does not read
        // the last-level tables to count them, activate recounts.
        let Subtree {
            pages,
            levels,
            leaves,
            count,
        } = self.subtree(
            child,
            e.level + 1,
            e.region.start,
            precise,
            !emptied && self.t.live,
        );
        if self.t.live {
            self.leaves_removed(count);
        } else if !emptied {
            self.leaves_unknown();
        }
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
        if !precise {
            let range = self.abs(&e.region);
            let mut flags = ChangeFlags::WAS_VALID | ChangeFlags::TABLE_REMOVED;
            if !emptied {
                flags |= ChangeFlags::OUTPUT_CHANGED | ChangeFlags::RESTRICTED;
            }
            let cached = if emptied { LevelSet::EMPTY } else { levels };
            self.report.push(Change {
                range,
                level: e.level,
                flags,
                cached_leaf_levels: cached,
            });
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
        let live = self.live(e);
        // As in `remove_table`: counted exactly only on a live table.
        let Subtree {
            pages,
            levels,
            leaves,
            count,
        } = self.subtree(child, e.level + 1, e.region.start, live, self.t.live);
        if self.t.live {
            self.leaves_removed(count);
        } else {
            self.leaves_unknown();
        }
        self.count_change(e.level, 0, new);
        self.forget_makes_in(&pages);
        let mut flags = ChangeFlags::WAS_VALID
            | ChangeFlags::IS_VALID
            | ChangeFlags::TABLE_REMOVED
            | ChangeFlags::SIZE_CHANGED
            | extra;
        let range = self.abs(&e.region);
        self.report.tables_detached += pages.len();
        if live {
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
        self.report.push(Change {
            range,
            level: e.level,
            flags,
            cached_leaf_levels: levels,
        });
    }

    /// Whether the table at `pa` (at `level`) holds no valid entry, as the
    /// operation will leave it.
    pub fn table_is_empty(&self, pa: Pa, level: u8) -> bool {
        let ptr = self.t.alloc.to_ptr(pa);
        let n = self.geometry().entries_at(level);
        if self.makes.is_empty() {
            // No deferred stores: the table's memory is what the operation
            // leaves. Most tables asked about are empty and read to the
            // end: read them in blocks of 16 entries, without a branch per
            // entry.
            // SAFETY: `ptr` points at a table page owned by this table (the
            // allocator's contract), which holds `n` entries at `level`.
            let slots = unsafe { core::slice::from_raw_parts(ptr.as_ptr() as *const Slot, n) };
            return slots.chunks(16).all(|block| {
                block.iter().fold(true, |empty, s| {
                    empty & (Descriptor(s.load(Ordering::Relaxed)).kind(level) == Kind::Invalid)
                })
            });
        }
        (0..n).all(|i| {
            Descriptor(self.load(ptr, i, Pa(pa.0 + 8 * i as u64))).kind(level) == Kind::Invalid
        })
    }

    /// Reads the entries of the table at `pa` (at `level`) as the operation
    /// will leave them.
    pub fn entries(&self, pa: Pa, level: u8) -> impl Iterator<Item = u64> + '_ {
        let ptr = self.t.alloc.to_ptr(pa);
        (0..self.geometry().entries_at(level))
            .map(move |i| self.load(ptr, i, Pa(pa.0 + 8 * i as u64)))
    }

    /// Completes the operation: invalidates what break-before-make broke,
    /// stores the deferred descriptors, releases what break-before-make
    /// detached, and hands the changes to the table's outstanding set.
    pub fn finish(mut self) -> ChangeReport {
        if !self.broken.is_empty() {
            let broken = core::mem::take(&mut self.broken);
            self.t
                .run_invalidator(crate::plan::Purpose::BreakBeforeMake, &broken, self.fx);
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

/// What [`Op::subtree`] finds below a table.
struct Subtree {
    /// Its table pages, the top one first.
    pages: Vec<Pa>,
    /// Levels of its leaves.
    levels: LevelSet,
    /// Its leaves as changes (when asked for).
    leaves: ChangeReport,
    /// Number of its leaves (when asked for, or when `leaves` was).
    count: u64,
}

/// Walks `range` (table offsets) of the table `table` at `level`.
///
/// Runs of entries that the range covers whole are first offered to
/// [`Visitor::run`]; entries it declines are visited one by one.
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
    let real = match *table {
        TableRef::Real {
            pa,
            attached,
            covered,
        } => Some((pa, op.t.alloc.to_ptr(pa), attached, covered)),
        _ => None,
    };
    let mut addr = range.start;
    while addr < range.end {
        let start = addr & !(size - 1);
        if let (Some((pa, ptr, attached, covered)), true) =
            (real, start == addr && addr + size <= range.end)
        {
            let full_end = range.end & !(size - 1);
            let first = g.index(level, addr);
            let n = ((full_end - addr) / size) as usize;
            let run = Run {
                table: pa,
                ptr,
                level,
                idx: first..first + n,
                first: addr,
                attached,
                covered,
            };
            if v.run(op, &run)? {
                addr = full_end;
                continue;
            }
        }
        let idx = g.index(level, addr);
        let region = start..start + size;
        let piece = addr..region.end.min(range.end);
        let (desc, slot) = match (*table, real) {
            (_, Some((pa, ptr, ..))) => {
                let slot = Pa(pa.0 + 8 * idx as u64);
                (op.load(ptr, idx, slot), Some(slot))
            }
            (TableRef::Split { desc, level: bl }, _) => (split_child(&g, desc, bl, idx), None),
            _ => (0, None),
        };
        let (attached, covered) = real.map_or((false, false), |r| (r.2, r.3));
        let e = Entry {
            level,
            region,
            piece,
            desc,
            slot,
            attached,
            covered,
        };
        visit(op, v, &e)?;
        addr = e.region.end;
    }
    Ok(())
}

/// Visits one entry: the visitor's decision, then the descent and the
/// post-order call it asked for.
fn visit<R, A, E, V>(op: &mut Op<'_, R, A, E>, v: &mut V, e: &Entry) -> Result<(), Error>
where
    R: Regime,
    A: TableAllocator,
    E: Effects,
    V: Visitor<R>,
{
    match v.visit(op, e)? {
        Step::Next => {}
        Step::Descend(child) => {
            // In plan mode a virtual last-level table holds only leaves the
            // commit will write: nothing there to check or count.
            let virtual_leaves =
                !matches!(child, TableRef::Real { .. }) && e.level + 1 == LAST_LEVEL;
            if !(op.plan && virtual_leaves) {
                walk(op, v, &child, e.level + 1, e.piece.clone())?;
            }
            v.post(op, e, &child)?;
        }
    }
    Ok(())
}

/// Accumulates consecutive changes of one fast-path loop before they go
/// into the report, so the report is touched once per run, not per entry.
pub(crate) struct Pending {
    level: u8,
    cached: LevelSet,
    cur: Option<(Range<u64>, ChangeFlags)>,
}

impl Pending {
    pub fn new(level: u8, cached: LevelSet) -> Self {
        Pending {
            level,
            cached,
            cur: None,
        }
    }

    /// Adds the change of the entry mapping `region` (table offsets).
    #[inline(always)]
    pub fn add<R: Regime, A: TableAllocator, E: Effects>(
        &mut self,
        op: &mut Op<'_, R, A, E>,
        region: Range<u64>,
        flags: ChangeFlags,
    ) {
        if let Some((r, f)) = &mut self.cur {
            if r.end == region.start && *f == flags {
                r.end = region.end;
                return;
            }
        }
        self.flush(op);
        self.cur = Some((region, flags));
    }

    /// Hands the accumulated run to the report.
    #[inline(always)]
    pub fn flush<R: Regime, A: TableAllocator, E: Effects>(&mut self, op: &mut Op<'_, R, A, E>) {
        if let Some((r, f)) = self.cur.take() {
            op.record(r, self.level, f, self.cached);
        }
    }
}

/// A run of consecutive entries of one real table, each covered whole by
/// the walked range.
pub(crate) struct Run {
    pub table: Pa,
    pub ptr: NonNull<Slot>,
    pub level: u8,
    /// Entry indices.
    pub idx: Range<usize>,
    /// Table offset mapped by entry `idx.start`.
    pub first: u64,
    pub attached: bool,
    pub covered: bool,
}

impl Run {
    #[inline(always)]
    pub fn slot(&self, i: usize) -> Pa {
        Pa(self.table.0 + 8 * i as u64)
    }

    /// The region of entry `i`.
    #[inline(always)]
    pub fn region(&self, g: &Geometry, i: usize) -> Range<u64> {
        let size = g.entry_size(self.level);
        let start = self.first + (i - self.idx.start) as u64 * size;
        start..start + size
    }

    /// Visits entry `i` the ordinary way (for entries a fast path declines).
    pub fn visit<R, A, E, V>(
        &self,
        op: &mut Op<'_, R, A, E>,
        v: &mut V,
        i: usize,
    ) -> Result<(), Error>
    where
        R: Regime,
        A: TableAllocator,
        E: Effects,
        V: Visitor<R>,
    {
        let region = self.region(&op.t.geometry, i);
        let slot = self.slot(i);
        let e = Entry {
            level: self.level,
            piece: region.clone(),
            region,
            desc: op.load(self.ptr, i, slot),
            slot: Some(slot),
            attached: self.attached,
            covered: self.covered,
        };
        visit(op, v, &e)
    }
}
