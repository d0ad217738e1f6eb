//! `protect`: change the attributes of existing translations.

use core::ops::Range;

use super::walk::{Entry, Op, Pending, Run, Step, TableRef, Visitor};
use super::Table;
use crate::descriptor::{Descriptor, Kind, OA_MASK_48};
use crate::effects::Effects;
use crate::error::Error;
use crate::memory::TableAllocator;
use crate::regime::Regime;
use crate::report::{ChangeReport, LevelSet};

struct ProtectVisitor {
    attr_bits: u64,
}

impl<R: Regime> Visitor<R> for ProtectVisitor {
    /// Whole entries: in-place changes in one loop; tables and changes that
    /// need break-before-make take the ordinary path. Planning has nothing
    /// to do here: only blocks straddling the range's ends need pages.
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
        let live = op.run_is_live(r);
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
                Kind::Table => {
                    pending.flush(op);
                    r.visit(op, self, i)?;
                    deferred = op.has_deferred();
                    i += 1;
                }
                Kind::Leaf => {
                    let new = Descriptor::leaf(
                        r.level,
                        Descriptor(old).address(g.granule()),
                        self.attr_bits,
                    )
                    .0;
                    if new == old {
                        i += 1;
                        continue;
                    }
                    if r.covered || (live && op.bbm_rule_applies(r.level, old, new)) {
                        pending.flush(op);
                        r.visit(op, self, i)?;
                        deferred = op.has_deferred();
                        i += 1;
                        continue;
                    }
                    // Every following leaf with the same attribute bits
                    // changes exactly the same way: one tight loop.
                    let flags = op.classify_cached(r.level, old, new);
                    let (old_low, new_low) = (old & !OA_MASK_48, new & !OA_MASK_48);
                    let mut j = i;
                    while j < r.idx.end {
                        let o = if deferred {
                            op.load_run(r, j)
                        } else {
                            op.peek_run(r, j)
                        };
                        if o & !OA_MASK_48 != old_low {
                            break;
                        }
                        op.store_run(r, j, (o & OA_MASK_48) | new_low);
                        j += 1;
                    }
                    wrote = true;
                    let start = r.first + (i - r.idx.start) as u64 * size;
                    pending.add(op, start..start + (j - i) as u64 * size, flags);
                    i = j;
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
                let oa = Descriptor(e.desc).address(op.t.geometry.granule());
                op.set_leaf(e, Descriptor::leaf(e.level, oa, self.attr_bits).0);
                Ok(Step::Next)
            }
            Kind::Leaf => Ok(Step::Descend(op.split(e)?)),
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
}

impl<R: Regime, A: TableAllocator> Table<R, A> {
    /// Gives every translation in `range` the attributes `attrs`, keeping
    /// its output address. Unmapped holes are skipped. Permission and
    /// access-flag changes are written in place; memory-type and
    /// shareability changes on a live table use break-before-make. Blocks
    /// that straddle the range's ends are split first.
    ///
    /// The report says what changed, which is all a flush (or the caller's
    /// own invalidation) needs; dirty logging write-protects so:
    ///
    /// ```
    /// use vmsa::report::ChangeFlags;
    /// use vmsa::{Arena, Direct, Geometry, Granule, Ipa, MapOptions, Pa, S2ap, Stage2};
    /// use vmsa::{Stage2Attrs, Table, Vmid};
    ///
    /// let geometry = Geometry::stage2(Granule::K4, 40)?;
    /// let mut s2 = Table::new(Stage2::new(Vmid(1)), geometry, Arena::new(Pa(0x8000_0000), 8), &mut Direct)?;
    /// s2.map(Ipa(0)..Ipa(0x4000), Pa(0x4000_0000), Stage2Attrs::RAM, MapOptions::PAGES, &mut Direct)?;
    /// let ro = Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly);
    /// let report = s2.protect(Ipa(0x1000)..Ipa(0x3000), ro, &mut Direct)?;
    /// // One run of two level 3 entries, permissions restricted in place.
    /// let c = &report.changes[0];
    /// assert_eq!((c.range.start, c.range.end, c.level), (0x1000, 0x3000, 3));
    /// assert!(c.flags.contains(ChangeFlags::RESTRICTED));
    /// assert_eq!(s2.translate(Ipa(0x1000)).unwrap().attrs, ro);
    /// assert_eq!(s2.translate(Ipa(0)).unwrap().attrs, Stage2Attrs::RAM);
    /// # Ok::<(), vmsa::Error>(())
    /// ```
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
