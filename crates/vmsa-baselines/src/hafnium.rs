//! Hafnium.

use alloc::vec::Vec;

use vmsa::plan::{Invalidator, Purpose, Space, SpaceKind};
use vmsa::report::Change;
use vmsa::tlbi::{TlbiOp, Ttl};
use vmsa::{Barrier, Effects};

use crate::common::{entries, leaves_of_removed_tables, outermost_removed, size, touched, PAGE};

/// Hafnium (TF-Hafnium/hafnium): every valid entry it replaces,
/// relaxations included, goes through break-before-make in
/// `mm_replace_entry()` (src/mm.c), which invalidates that entry's whole
/// span at once with `arch_mm_invalidate_stage2_range()` (stage 2) or
/// `arch_mm_invalidate_stage1_range()` (src/arch/aarch64/mm.c):
///
/// - `DSB ISH` (`arch_mm_sync_table_writes()`);
/// - a span over `MAX_TLBI_OPS` (512) pages: `TLBI VMALLS12E1IS` (stage
///   1: `VMALLE1IS`, EL2: `ALLE2IS`); else one `TLBI IPAS2E1IS` per 4 KiB
///   page of the span, whatever the entry's size, then `DSB ISH; TLBI
///   VMALLE1IS` (stage 1: `VAE1IS` per page, EL2: `VAE2IS`);
/// - `DSB ISH; ISB`.
///
/// So one sequence per replaced entry, not per batch ([`gathers`] is
/// false), no range operations and no level hints. Unmapping a run that
/// covers a whole table replaces the table's descriptor (`mm_map_level()`
/// maps or unmaps whole entries where the range covers them): one
/// sequence over the outermost descriptor that lies inside the run (or
/// the leaves' own table). Hafnium does not destroy VMs; not dead-aware.
///
/// [`gathers`]: crate::Baseline::gathers
#[derive(Clone, Copy, Debug, Default)]
pub struct Hafnium;

/// `MAX_TLBI_OPS` (`MM_PTE_PER_PAGE`).
pub const MAX_TLBI_OPS: u64 = 512;

impl Hafnium {
    /// `arch_mm_invalidate_stage{1,2}_range(begin, end)`.
    fn invalidate_range(space: &Space, begin: u64, end: u64, fx: &mut dyn Effects) {
        fx.barrier(Barrier::DsbIsh);
        let pages = end.wrapping_sub(begin) / PAGE;
        if pages > MAX_TLBI_OPS {
            let (op, operand) = match space.kind {
                SpaceKind::El1 { .. } => (TlbiOp::Vmalle1is, 0),
                _ => space.whole(),
            };
            fx.tlbi(op, operand);
        } else {
            for i in 0..pages {
                let (op, operand) = space.by_addr(begin + i * PAGE, false, Ttl::NONE);
                fx.tlbi(op, operand);
            }
            if matches!(space.kind, SpaceKind::Stage2 { .. }) {
                fx.barrier(Barrier::DsbIsh);
                fx.tlbi(TlbiOp::Vmalle1is, 0);
            }
        }
        fx.barrier(Barrier::DsbIsh);
        fx.barrier(Barrier::Isb);
    }
}

impl Invalidator for Hafnium {
    fn name(&self) -> &'static str {
        "hafnium"
    }
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        let mut units: Vec<(u64, u64)> = Vec::new();
        for c in changes.iter().filter(|c| touched(purpose, c)) {
            if c.flags.contains(vmsa::ChangeFlags::TABLE_REMOVED) || leaves_of_removed_tables(c) {
                units.extend(outermost_removed(space, c));
            } else {
                let s = size(space, c.level);
                units.extend(entries(space, c).map(|a| (a, s)));
            }
        }
        for &(a, s) in &units {
            Self::invalidate_range(space, a, a.wrapping_add(s), fx);
        }
        !units.is_empty()
    }
}
