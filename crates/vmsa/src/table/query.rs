//! Reading the tables back: a software walk, and an iterator over what is
//! mapped.

use super::Table;
use crate::addr::{Address, Pa};
use crate::descriptor::{Descriptor, Kind};
use crate::geometry::LAST_LEVEL;
use crate::memory::TableAllocator;
use crate::regime::Regime;

/// The result of a software walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation<R: Regime> {
    /// Where the input address goes.
    pub output: R::Output,
    /// Attributes of the leaf.
    pub attrs: R::Attrs,
    /// Level of the leaf (3 for a page).
    pub level: u8,
}

/// One leaf descriptor, as [`Mappings`] yields it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping<R: Regime> {
    /// First input address.
    pub input: R::Input,
    /// Bytes mapped.
    pub size: u64,
    /// First output address.
    pub output: R::Output,
    /// Attributes.
    pub attrs: R::Attrs,
    /// Level of the leaf.
    pub level: u8,
}

impl<R: Regime, A: TableAllocator> Table<R, A> {
    /// Walks the tables for `addr` as the MMU would (ignoring TLBs).
    pub fn translate(&self, addr: R::Input) -> Option<Translation<R>> {
        let g = self.geometry;
        let off = addr.get().wrapping_sub(self.base);
        if off >= g.input_size() {
            return None;
        }
        let mut table = self.root;
        let mut level = g.start_level();
        loop {
            let idx = g.index(level, off);
            let d = Descriptor(self.read_table(table, level).nth(idx)?);
            match d.kind(level) {
                Kind::Invalid => return None,
                Kind::Table => {
                    table = Pa(d.address(g.granule()));
                    level += 1;
                }
                Kind::Leaf => {
                    let within = off & (g.entry_size(level) - 1);
                    return Some(Translation {
                        output: R::Output::new(d.address(g.granule()) + within),
                        attrs: self.regime.decode_attrs(d.leaf_attr_bits()),
                        level,
                    });
                }
            }
        }
    }

    /// Every leaf descriptor, in input-address order.
    pub fn mappings(&self) -> Mappings<'_, R, A> {
        let mut m = Mappings {
            table: self,
            stack: [(Pa(0), 0, 0, 0); 4],
            depth: 0,
        };
        m.stack[0] = (self.root, self.geometry.start_level(), 0, 0);
        m.depth = 1;
        m
    }
}

/// Iterator over the leaves of a table; see [`Table::mappings`].
pub struct Mappings<'t, R: Regime, A: TableAllocator> {
    table: &'t Table<R, A>,
    /// (table, level, next index, offset of the table's first entry)
    stack: [(Pa, u8, usize, u64); 4],
    depth: usize,
}

impl<R: Regime, A: TableAllocator> Iterator for Mappings<'_, R, A> {
    type Item = Mapping<R>;

    fn next(&mut self) -> Option<Mapping<R>> {
        let t = self.table;
        let g = t.geometry;
        while self.depth > 0 {
            let (pa, level, idx, base) = self.stack[self.depth - 1];
            if idx >= g.entries_at(level) {
                self.depth -= 1;
                continue;
            }
            self.stack[self.depth - 1].2 += 1;
            let ptr = t.alloc.to_ptr(pa);
            // SAFETY: `pa` is a table page of this tree; `idx` is in range.
            let raw =
                unsafe { &*ptr.as_ptr().add(idx) }.load(core::sync::atomic::Ordering::Relaxed);
            let d = Descriptor(raw);
            let off = base + idx as u64 * g.entry_size(level);
            match d.kind(level) {
                Kind::Invalid => {}
                Kind::Table if level < LAST_LEVEL => {
                    self.stack[self.depth] = (Pa(d.address(g.granule())), level + 1, 0, off);
                    self.depth += 1;
                }
                _ => {
                    return Some(Mapping {
                        input: R::Input::new(t.base.wrapping_add(off)),
                        size: g.entry_size(level),
                        output: R::Output::new(d.address(g.granule())),
                        attrs: t.regime.decode_attrs(d.leaf_attr_bits()),
                        level,
                    })
                }
            }
        }
        None
    }
}
