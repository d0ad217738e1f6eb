//! `collapse`: promote tables of uniform translations back into blocks.

use core::ops::Range;

use super::walk::{Entry, Op, Run, Step, TableRef, Visitor};
use super::Table;
use crate::descriptor::{Descriptor, Kind};
use crate::effects::Effects;
use crate::error::Error;
use crate::memory::TableAllocator;
use crate::regime::Regime;
use crate::report::{ChangeFlags, ChangeReport};

struct CollapseVisitor;

impl<R: Regime> Visitor<R> for CollapseVisitor {
    /// Collapsing never allocates: nothing to plan.
    fn run<A: TableAllocator, E: Effects>(
        &mut self,
        op: &mut Op<'_, R, A, E>,
        _r: &Run,
    ) -> Result<bool, Error> {
        Ok(op.plan)
    }

    fn visit<A: TableAllocator, E: Effects>(
        &mut self,
        op: &mut Op<'_, R, A, E>,
        e: &Entry,
    ) -> Result<Step, Error> {
        if e.kind() != Kind::Table {
            return Ok(Step::Next);
        }
        let pa = crate::Pa(Descriptor(e.desc).address(op.t.geometry.granule()));
        Ok(Step::Descend(TableRef::Real {
            pa,
            attached: e.attached,
            covered: e.covered,
        }))
    }

    /// After the tables below have been collapsed (bottom-up), replaces
    /// this one by a block if it maps one aligned, contiguous output range
    /// with identical attributes.
    fn post<A: TableAllocator, E: Effects>(
        &mut self,
        op: &mut Op<'_, R, A, E>,
        e: &Entry,
        child: &TableRef,
    ) -> Result<(), Error> {
        let TableRef::Real { pa, .. } = *child else {
            return Ok(());
        };
        let g = op.t.geometry;
        if op.plan || !e.full() || !g.leaf_allowed(e.level) {
            return Ok(());
        }
        let child_level = e.level + 1;
        let step = g.entry_size(child_level);
        let mut first: Option<(u64, u64)> = None;
        let mut uniform = true;
        for (i, d) in op.entries(pa, child_level).enumerate() {
            let d = Descriptor(d);
            if d.kind(child_level) != Kind::Leaf {
                uniform = false;
                break;
            }
            let (oa, bits) = (d.address(g.granule()), d.leaf_attr_bits());
            match first {
                None if oa % g.entry_size(e.level) == 0 => first = Some((oa, bits)),
                Some((oa0, bits0)) if oa == oa0 + i as u64 * step && bits == bits0 => {}
                _ => {
                    uniform = false;
                    break;
                }
            }
        }
        if let (true, Some((oa, bits))) = (uniform, first) {
            op.replace_table(
                e,
                Descriptor::leaf(e.level, oa, bits).0,
                ChangeFlags::empty(),
            );
        }
        Ok(())
    }
}

impl<R: Regime, A: TableAllocator> Table<R, A> {
    /// Replaces every table in `range` whose entries map one aligned,
    /// contiguous output range with identical attributes by a single block
    /// (bottom-up, so 4 KiB pages can become a 1 GiB block in one call).
    /// On a live table each replacement uses break-before-make and the
    /// table pages are released once its invalidation has completed.
    ///
    /// # Errors
    /// [`Error::Misaligned`], [`Error::EmptyRange`],
    /// [`Error::InputOutOfRange`]. Collapsing never allocates.
    pub fn collapse(
        &mut self,
        range: Range<R::Input>,
        fx: &mut impl Effects,
    ) -> Result<ChangeReport, Error> {
        let off = self.offsets(&range)?;
        self.run(off, &mut CollapseVisitor, fx, false)
    }
}
