//! The TLB maintenance the tables emit themselves: to complete a
//! break-before-make, and in [`Table::flush`](crate::Table::flush).
//!
//! This is the straightforward correct sequence (one TLBI per changed
//! entry, or one whole-regime TLBI when that would take more than
//! [`MAX_BY_ADDR_OPS`]); choosing the cheapest sequence is the planner's job.

use crate::effects::{Barrier, Effects};
use crate::geometry::Geometry;
use crate::regime::Regime;
use crate::report::{Change, ChangeFlags};
use crate::tlbi::{TlbiOp, Ttl};

/// Above this many per-address TLBIs one whole-regime TLBI is issued
/// instead: the figure Linux (`MAX_DVM_OPS`, arch/arm64/include/asm/
/// tlbflush.h) and Hafnium (`MAX_TLBI_OPS`, src/arch/aarch64/mm.c) use with
/// 4 KiB pages.
pub const MAX_BY_ADDR_OPS: u64 = 512;

/// The address step and TLBI form for one change: one operation per
/// changed descriptor; last-level forms unless a table on the walk was
/// removed (then walk-cache entries must go too).
fn step_of(geometry: &Geometry, change: &Change) -> (u64, bool) {
    let leaf_only = !change.flags.contains(ChangeFlags::TABLE_REMOVED);
    (geometry.entry_size(change.level), leaf_only)
}

/// Number of descriptors a change covers (ranges may end at 0: the top of
/// the 64-bit space).
fn count(geometry: &Geometry, change: &Change) -> u64 {
    let (step, _) = step_of(geometry, change);
    change
        .range
        .end
        .wrapping_sub(change.range.start)
        .div_ceil(step)
}

/// Number of per-address TLBIs [`invalidate`] would issue for `changes`.
pub fn by_addr_ops<'c>(geometry: &Geometry, changes: impl Iterator<Item = &'c Change>) -> u64 {
    changes.map(|c| count(geometry, c)).sum()
}

/// Emits `DSB ISH`, the TLBIs removing everything `changes` may have left
/// cached, and `DSB ISH` (plus `VMALLE1IS` for stage 2 and `ISB` where the
/// regime needs them). Once this returns on the real CPU, no PE holds a
/// translation the changes made stale.
pub fn invalidate<'c, R: Regime, E: Effects>(
    regime: &R,
    geometry: &Geometry,
    changes: impl Iterator<Item = &'c Change> + Clone,
    fx: &mut E,
) {
    fx.barrier(Barrier::DsbIsh);
    if by_addr_ops(geometry, changes.clone()) > MAX_BY_ADDR_OPS {
        let (op, operand) = regime.tlbi_all();
        fx.tlbi(op, operand);
    } else {
        for c in changes {
            let (step, leaf_only) = step_of(geometry, c);
            for i in 0..count(geometry, c) {
                let addr = c.range.start.wrapping_add(i * step);
                let (op, operand) = regime.tlbi_by_addr(addr, leaf_only, Ttl::NONE);
                fx.tlbi(op, operand);
            }
        }
        if regime.needs_vmalle1is_after_by_addr() {
            // IPA-based operations need not remove combined stage 1+2
            // entries: complete them, then remove stage 1 entries of the
            // VMID (KVM's __kvm_tlb_flush_vmid_ipa, Hafnium, FreeBSD).
            fx.barrier(Barrier::DsbIsh);
            fx.tlbi(TlbiOp::Vmalle1is, 0);
        }
    }
    fx.barrier(Barrier::DsbIsh);
    if regime.needs_isb() {
        fx.barrier(Barrier::Isb);
    }
}
