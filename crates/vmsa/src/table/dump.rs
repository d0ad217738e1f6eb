//! A human-readable picture of a table tree.

use core::fmt;

use super::Table;
use crate::addr::Pa;
use crate::descriptor::{Descriptor, Kind};
use crate::memory::TableAllocator;
use crate::regime::Regime;

/// Displays every valid descriptor of a table, indented by level; see
/// [`Table::dump`].
pub struct Dump<'t, R: Regime, A: TableAllocator>(&'t Table<R, A>);

impl<R: Regime, A: TableAllocator> Table<R, A> {
    /// A [`Display`](fmt::Display) of the tree: one line per valid
    /// descriptor with its address, raw value and meaning.
    pub fn dump(&self) -> Dump<'_, R, A> {
        Dump(self)
    }
}

impl<R: Regime, A: TableAllocator> Dump<'_, R, A> {
    fn table(&self, f: &mut fmt::Formatter<'_>, pa: Pa, level: u8, base: u64) -> fmt::Result {
        let t = self.0;
        let g = t.geometry;
        for (idx, raw) in t.read_table(pa, level).enumerate() {
            let d = Descriptor(raw);
            let kind = d.kind(level);
            if kind == Kind::Invalid {
                continue;
            }
            let input = t.base.wrapping_add(base + idx as u64 * g.entry_size(level));
            let indent = 2 * (level - g.start_level()) as usize;
            let slot = pa.0 + 8 * idx as u64;
            write!(f, "{:indent$}L{level}[{idx:3}] {input:#014x} @{slot:#x} = {raw:#018x} ", "")?;
            match kind {
                Kind::Table => {
                    writeln!(f, "table -> {:#x}", d.address(g.granule()))?;
                    self.table(f, Pa(d.address(g.granule())), level + 1, base + idx as u64 * g.entry_size(level))?;
                }
                _ => {
                    let what = if level == crate::geometry::LAST_LEVEL { "page " } else { "block" };
                    writeln!(
                        f,
                        "{what} -> {:#x} {:?}",
                        d.address(g.granule()),
                        t.regime.decode_attrs(d.leaf_attr_bits())
                    )?;
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
