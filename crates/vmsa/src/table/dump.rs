//! A human-readable picture of a table tree.

use core::fmt;

use super::Table;
use crate::addr::Pa;
use crate::descriptor::{Descriptor, Kind};
use crate::geometry::LAST_LEVEL;
use crate::memory::TableAllocator;
use crate::regime::Regime;

/// Displays every valid descriptor of a table, indented by level, with
/// runs of leaves that continue each other (contiguous output, equal
/// attributes) on one line; see [`Table::dump`].
pub struct Dump<'t, R: Regime, A: TableAllocator>(&'t Table<R, A>);

impl<R: Regime, A: TableAllocator> Table<R, A> {
    /// A [`Display`](fmt::Display) of the tree.
    pub fn dump(&self) -> Dump<'_, R, A> {
        Dump(self)
    }
}

impl<R: Regime, A: TableAllocator> Dump<'_, R, A> {
    fn table(&self, f: &mut fmt::Formatter<'_>, pa: Pa, level: u8, base: u64) -> fmt::Result {
        let t = self.0;
        let g = t.geometry;
        let size = g.entry_size(level);
        let entries: alloc::vec::Vec<u64> = t.read_table(pa, level).collect();
        let indent = 2 * (level - g.start_level()) as usize;
        let mut idx = 0;
        while idx < entries.len() {
            let d = Descriptor(entries[idx]);
            let input = t.base.wrapping_add(base + idx as u64 * size);
            match d.kind(level) {
                Kind::Invalid => idx += 1,
                Kind::Table => {
                    let next = d.address(g.granule());
                    writeln!(
                        f,
                        "{:indent$}L{level}[{idx:3}]      {input:#014x} table -> {next:#x}",
                        ""
                    )?;
                    self.table(f, Pa(next), level + 1, base + idx as u64 * size)?;
                    idx += 1;
                }
                Kind::Leaf => {
                    let (oa, bits) = (d.address(g.granule()), d.leaf_attr_bits());
                    let mut n = 1;
                    while idx + n < entries.len() && {
                        let e = Descriptor(entries[idx + n]);
                        e.kind(level) == Kind::Leaf
                            && e.leaf_attr_bits() == bits
                            && e.address(g.granule()) == oa + n as u64 * size
                    } {
                        n += 1;
                    }
                    let what = if level == LAST_LEVEL { "page" } else { "block" };
                    let plural = if n > 1 { "s" } else { "" };
                    let attrs = t.regime.decode_attrs(bits);
                    if n > 1 {
                        write!(f, "{:indent$}L{level}[{idx:3}..{:3}] ", "", idx + n - 1)?;
                    } else {
                        write!(f, "{:indent$}L{level}[{idx:3}]      ", "")?;
                    }
                    writeln!(f, "{input:#014x} {n} {what}{plural} -> {oa:#x} {attrs}")?;
                    idx += n;
                }
            }
        }
        Ok(())
    }
}

impl<R: Regime, A: TableAllocator> fmt::Display for Dump<'_, R, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        writeln!(
            f,
            "{} table, root {:#x} (level {}, {} page(s)), {}-bit input",
            R::NAME,
            t.root.0,
            t.geometry.start_level(),
            t.geometry.root_pages(),
            t.geometry.input_bits()
        )?;
        self.table(f, t.root, t.geometry.start_level(), 0)
    }
}
