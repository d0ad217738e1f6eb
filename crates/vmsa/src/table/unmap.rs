//! `unmap`: remove translations, freeing tables that become empty.

use core::ops::Range;

use super::walk::{Entry, Op, Pending, Run, Step, TableRef, Visitor};
use super::Table;
use crate::descriptor::{Descriptor, Kind, OA_MASK_48};
use crate::effects::Effects;
use crate::error::Error;
use crate::memory::TableAllocator;
use crate::regime::Regime;
use crate::report::{ChangeReport, LevelSet};

struct UnmapVisitor;

impl<R: Regime> Visitor<R> for UnmapVisitor {
    /// Whole entries: leaves cleared in one loop, tables removed whole.
    /// Planning has nothing to do here: only blocks straddling the range's
    /// ends need pages.
    #[inline(always)]
    fn run<A: TableAllocator, E: Effects>(
        &mut self,
        op: &mut Op<'_, R, A, E>,
        r: &Run,
    ) -> Result<bool, Error> {
        if op.plan {
            return Ok(true);
        }
        let g = op.t.geometry;
        let size = g.entry_size(r.level);
        let mut deferred = op.has_deferred();
        let mut pending = Pending::new(r.level, LevelSet::only(r.level));
        let mut wrote = false;
        let mut i = r.idx.start;
        while i < r.idx.end {
            let old = if deferred {
                op.load_run(r, i)
            } else {
                op.peek_run(r, i)
            };
            match Descriptor(old).kind(r.level) {
                Kind::Invalid => i += 1,
                Kind::Leaf if !r.covered => {
                    // Leaves with the same attribute bits: one tight loop.
                    let flags = op.classify_cached(r.level, old, 0);
                    let low = old & !OA_MASK_48;
                    let mut j = i;
                    while j < r.idx.end {
                        let o = if deferred {
                            op.load_run(r, j)
                        } else {
                            op.peek_run(r, j)
                        };
                        if o & !OA_MASK_48 != low {
                            break;
                        }
                        j += 1;
                    }
                    // Reading on before storing is the same: the stores
                    // are to the run's own slots, already read.
                    op.store_run_fill(r, i..j, 0, 0);
                    wrote = true;
                    op.leaves_removed((j - i) as u64);
                    let start = r.first + (i - r.idx.start) as u64 * size;
                    pending.add(op, start..start + (j - i) as u64 * size, flags);
                    i = j;
                }
                _ => {
                    pending.flush(op);
                    r.visit(op, self, i)?;
                    deferred = op.has_deferred();
                    i += 1;
                }
            }
        }
        pending.flush(op);
        if wrote {
            op.mark_written();
        }
        Ok(true)
    }

    #[inline(always)]
    fn visit<A: TableAllocator, E: Effects>(
        &mut self,
        op: &mut Op<'_, R, A, E>,
        e: &Entry,
    ) -> Result<Step, Error> {
        match e.kind() {
            Kind::Invalid => Ok(Step::Next),
            Kind::Leaf if e.full() => {
                op.set_leaf(e, 0);
                Ok(Step::Next)
            }
            Kind::Leaf => Ok(Step::Descend(op.split(e)?)),
            Kind::Table if e.full() => {
                // The whole table goes: one invalid table descriptor, no
                // need to clear the leaves below it.
                op.remove_table(e, false);
                Ok(Step::Next)
            }
            Kind::Table => {
                let pa = crate::Pa(Descriptor(e.desc).address(op.t.geometry.granule()));
                Ok(Step::Descend(TableRef::Real {
                    pa,
                    attached: e.attached,
                    covered: e.covered,
                }))
            }
        }
    }

    fn post<A: TableAllocator, E: Effects>(
        &mut self,
        op: &mut Op<'_, R, A, E>,
        e: &Entry,
        child: &TableRef,
    ) -> Result<(), Error> {
        // A table this unmap emptied goes too, so no empty table stays
        // reachable (the subtree scans rely on that).
        if let (false, TableRef::Real { pa, .. }) = (op.plan, child) {
            if e.kind() == Kind::Table && op.table_is_empty(*pa, e.level + 1) {
                op.remove_table(e, true);
            }
        }
        Ok(())
    }
}

impl<R: Regime, A: TableAllocator> Table<R, A> {
    /// Removes every translation in `range`. Unmapped holes are skipped;
    /// blocks that straddle the range's ends are split first. Tables left
    /// empty are detached and released at the next flush.
    ///
    /// # Errors
    /// [`Error::Misaligned`], [`Error::EmptyRange`],
    /// [`Error::InputOutOfRange`]; [`Error::OutOfMemory`] if a block that
    /// straddles an end of the range cannot be split. On error nothing has
    /// changed.
    pub fn unmap(
        &mut self,
        range: Range<R::Input>,
        fx: &mut impl Effects,
    ) -> Result<ChangeReport, Error> {
        let off = self.offsets(&range)?;
        self.run(off, &mut UnmapVisitor, fx, false)
    }
}
