//! `split_block`: replace a block by a table of the same translations.

use super::walk::{Entry, Op, Step, TableRef, Visitor};
use super::Table;
use crate::addr::Address;
use crate::descriptor::{Descriptor, Kind};
use crate::effects::Effects;
use crate::error::Error;
use crate::geometry::LAST_LEVEL;
use crate::memory::TableAllocator;
use crate::regime::Regime;
use crate::report::ChangeReport;

struct SplitVisitor {
    addr: u64,
}

impl<R: Regime> Visitor<R> for SplitVisitor {
    fn visit<A: TableAllocator, E: Effects>(
        &mut self,
        op: &mut Op<'_, R, A, E>,
        e: &Entry,
    ) -> Result<Step, Error> {
        match e.kind() {
            Kind::Table => {
                let pa = crate::Pa(Descriptor(e.desc).address(op.t.geometry.granule()));
                Ok(Step::Descend(TableRef::Real {
                    pa,
                    attached: e.attached,
                    covered: e.covered,
                }))
            }
            Kind::Leaf if e.level < LAST_LEVEL => {
                op.split(e)?;
                Ok(Step::Next)
            }
            _ => Err(Error::NotABlock { addr: self.addr }),
        }
    }
}

impl<R: Regime, A: TableAllocator> Table<R, A> {
    /// Splits the block that maps `addr` into a table of the same
    /// translations one level down. The new table is filled while
    /// unreachable and swapped in with break-before-make on a live table.
    ///
    /// # Errors
    /// [`Error::NotABlock`] if `addr` is unmapped or mapped by a page;
    /// [`Error::InputOutOfRange`]; [`Error::OutOfMemory`].
    pub fn split_block(
        &mut self,
        addr: R::Input,
        fx: &mut impl Effects,
    ) -> Result<ChangeReport, Error> {
        let page = self.geometry.granule().size();
        let a = addr.get() & !(page - 1);
        let range = R::Input::new(a)..R::Input::new(a.wrapping_add(page));
        let off = self.offsets(&range)?;
        self.run(off, &mut SplitVisitor { addr: addr.get() }, fx, false)
    }
}
