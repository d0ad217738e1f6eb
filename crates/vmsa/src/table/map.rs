//! `map`: create (or, when asked, replace) translations.

use core::ops::Range;

use super::walk::{Entry, Op, Run, Step, TableRef, Visitor};
use super::Table;
use crate::addr::Address;
use crate::descriptor::{Descriptor, Kind};
use crate::effects::Effects;
use crate::error::Error;
use crate::geometry::LAST_LEVEL;
use crate::memory::TableAllocator;
use crate::regime::Regime;
use crate::report::{ChangeFlags, ChangeReport, LevelSet};

/// How [`Table::map`] may lay out the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapOptions {
    /// Use the largest block each aligned piece allows (default). When
    /// false, only last-level pages are written.
    pub blocks: bool,
    /// Replace existing mappings in the range instead of failing with
    /// [`Error::AlreadyMapped`]. Live replacements that change the output
    /// address, memory type or block size are done with break-before-make.
    pub replace: bool,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            blocks: true,
            replace: false,
        }
    }
}

impl MapOptions {
    /// Pages only, no blocks.
    pub const PAGES: MapOptions = MapOptions {
        blocks: false,
        replace: false,
    };
}

struct MapVisitor {
    /// First table offset of the range.
    start: u64,
    /// Output address for `start`.
    oa: u64,
    attr_bits: u64,
    opts: MapOptions,
    base: u64,
}

impl<R: Regime> Visitor<R> for MapVisitor {
    /// A run of empty entries that can all take leaves: write them in one
    /// loop, report them as one change.
    #[inline(always)]
    fn run<A: TableAllocator, E: Effects>(
        &mut self,
        op: &mut Op<'_, R, A, E>,
        r: &Run,
    ) -> Result<bool, Error> {
        let g = op.t.geometry;
        let size = g.entry_size(r.level);
        let oa0 = self.oa + (r.first - self.start);
        let leaves_fit = g.leaf_allowed(r.level)
            && (self.opts.blocks || r.level == LAST_LEVEL)
            && oa0 % size == 0;
        if !leaves_fit || op.has_deferred() {
            return Ok(false);
        }
        if r.idx
            .clone()
            .any(|i| Descriptor(op.load_run(r, i)).kind(r.level) != Kind::Invalid)
        {
            return Ok(false);
        }
        if op.plan {
            return Ok(true);
        }
        // The output address is the only field that changes along the run,
        // and it is aligned to `size`: the descriptors step by `size`.
        let span = (r.idx.len() as u64).saturating_sub(1) * size;
        let first = Descriptor::leaf(r.level, oa0, self.attr_bits).0;
        let last = Descriptor::leaf(r.level, oa0 + span, self.attr_bits).0;
        if last == first.wrapping_add(span) {
            op.store_run_fill(r, r.idx.clone(), first, size);
        } else {
            for (k, i) in r.idx.clone().enumerate() {
                op.store_run(
                    r,
                    i,
                    Descriptor::leaf(r.level, oa0 + k as u64 * size, self.attr_bits).0,
                );
            }
        }
        op.mark_written();
        op.leaves_added(r.idx.len() as u64);
        let end = r.first + r.idx.len() as u64 * size;
        op.record(
            r.first..end,
            r.level,
            ChangeFlags::IS_VALID | ChangeFlags::RELAXED,
            LevelSet::EMPTY,
        );
        Ok(true)
    }

    #[inline(always)]
    fn visit<A: TableAllocator, E: Effects>(
        &mut self,
        op: &mut Op<'_, R, A, E>,
        e: &Entry,
    ) -> Result<Step, Error> {
        let g = op.t.geometry;
        let oa = self.oa + (e.piece.start - self.start);
        let leaf_fits = e.full()
            && g.leaf_allowed(e.level)
            && (self.opts.blocks || e.level == LAST_LEVEL)
            && oa % g.entry_size(e.level) == 0;
        let new = Descriptor::leaf(e.level, oa, self.attr_bits).0;
        match e.kind() {
            Kind::Invalid if leaf_fits => {
                op.set_leaf(e, new);
                Ok(Step::Next)
            }
            Kind::Invalid => Ok(Step::Descend(op.new_table(e)?)),
            Kind::Leaf | Kind::Table
                if !self.opts.replace && (leaf_fits || e.kind() == Kind::Leaf) =>
            {
                // A table fully covered by the range is not empty (empty
                // tables are always removed), so it overlaps too.
                Err(Error::AlreadyMapped {
                    addr: self.base.wrapping_add(e.piece.start),
                })
            }
            Kind::Leaf if leaf_fits => {
                op.set_leaf(e, new);
                Ok(Step::Next)
            }
            Kind::Leaf => Ok(Step::Descend(op.split(e)?)),
            Kind::Table if leaf_fits => {
                op.replace_table(
                    e,
                    new,
                    ChangeFlags::OUTPUT_CHANGED | ChangeFlags::RESTRICTED | ChangeFlags::RELAXED,
                );
                Ok(Step::Next)
            }
            Kind::Table => {
                let pa = crate::Pa(Descriptor(e.desc).address(g.granule()));
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
    /// Maps `range` to the output addresses starting at `output`, with
    /// `attrs`, using the largest block each aligned piece allows unless
    /// `opts.blocks` is false.
    ///
    /// # Errors
    /// [`Error::Misaligned`], [`Error::EmptyRange`],
    /// [`Error::InputOutOfRange`], [`Error::OutputOutOfRange`],
    /// [`Error::InvalidAttributes`]; [`Error::AlreadyMapped`] if part of
    /// the range is mapped and `opts.replace` is false;
    /// [`Error::OutOfMemory`]. On error nothing has changed.
    pub fn map(
        &mut self,
        range: Range<R::Input>,
        output: R::Output,
        attrs: R::Attrs,
        opts: MapOptions,
        fx: &mut impl Effects,
    ) -> Result<ChangeReport, Error> {
        let off = self.offsets(&range)?;
        let attr_bits = self.regime.encode_attrs(&attrs)?;
        let oa = output.get();
        if oa % self.geometry.granule().size() != 0 {
            return Err(Error::Misaligned { value: oa });
        }
        let out_size = 1u64 << self.regime.output_bits();
        let len = off.end - off.start;
        if oa >= out_size || out_size - oa < len {
            return Err(Error::OutputOutOfRange {
                addr: oa.max(out_size),
            });
        }
        let mut v = MapVisitor {
            start: off.start,
            oa,
            attr_bits,
            opts,
            base: self.base,
        };
        self.run(off, &mut v, fx, true)
    }
}
