//! `unmap`: remove translations, freeing tables that become empty.

use core::ops::Range;

use super::walk::{Entry, Op, Step, TableRef, Visitor};
use super::Table;
use crate::descriptor::{Descriptor, Kind};
use crate::effects::Effects;
use crate::error::Error;
use crate::memory::TableAllocator;
use crate::regime::Regime;
use crate::report::ChangeReport;

struct UnmapVisitor;

impl<R: Regime> Visitor<R> for UnmapVisitor {
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
                Ok(Step::Descend(TableRef::Real { pa, attached: e.attached, covered: e.covered }))
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
    pub fn unmap(&mut self, range: Range<R::Input>, fx: &mut impl Effects) -> Result<ChangeReport, Error> {
        let off = self.offsets(&range)?;
        self.run(off, &mut UnmapVisitor, fx, false)
    }
}
