//! `protect`: change the attributes of existing translations.

use core::ops::Range;

use super::walk::{Entry, Op, Step, TableRef, Visitor};
use super::Table;
use crate::descriptor::{Descriptor, Kind};
use crate::effects::Effects;
use crate::error::Error;
use crate::memory::TableAllocator;
use crate::regime::Regime;
use crate::report::ChangeReport;

struct ProtectVisitor {
    attr_bits: u64,
}

impl<R: Regime> Visitor<R> for ProtectVisitor {
    #[inline(always)]
    fn visit<A: TableAllocator, E: Effects>(
        &mut self,
        op: &mut Op<'_, R, A, E>,
        e: &Entry,
    ) -> Result<Step, Error> {
        match e.kind() {
            Kind::Invalid => Ok(Step::Next),
            Kind::Leaf if e.full() => {
                let oa = Descriptor(e.desc).address(op.t.geometry.granule());
                op.set_leaf(e, Descriptor::leaf(e.level, oa, self.attr_bits).0);
                Ok(Step::Next)
            }
            Kind::Leaf => Ok(Step::Descend(op.split(e)?)),
            Kind::Table => {
                let pa = crate::Pa(Descriptor(e.desc).address(op.t.geometry.granule()));
                Ok(Step::Descend(TableRef::Real { pa, attached: e.attached, covered: e.covered }))
            }
        }
    }
}

impl<R: Regime, A: TableAllocator> Table<R, A> {
    /// Gives every translation in `range` the attributes `attrs`, keeping
    /// its output address. Unmapped holes are skipped. Permission and
    /// access-flag changes are written in place; memory-type and
    /// shareability changes on a live table use break-before-make. Blocks
    /// that straddle the range's ends are split first.
    ///
    /// # Errors
    /// [`Error::Misaligned`], [`Error::EmptyRange`],
    /// [`Error::InputOutOfRange`], [`Error::InvalidAttributes`],
    /// [`Error::OutOfMemory`]. On error nothing has changed.
    pub fn protect(
        &mut self,
        range: Range<R::Input>,
        attrs: R::Attrs,
        fx: &mut impl Effects,
    ) -> Result<ChangeReport, Error> {
        let off = self.offsets(&range)?;
        let attr_bits = self.regime.encode_attrs(&attrs)?;
        self.run(off, &mut ProtectVisitor { attr_bits }, fx, false)
    }
}
