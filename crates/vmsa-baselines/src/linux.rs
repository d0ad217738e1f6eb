//! Linux arm64, stage 1.

use alloc::vec::Vec;

use vmsa::plan::{Invalidator, Purpose, Space, SpaceKind};
use vmsa::report::{Change, ChangeFlags};
use vmsa::tlbi::{asid_operand, TlbiOp, Ttl};
use vmsa::{Barrier, Capabilities, Effects};

use crate::common::{
    empty_tables, end, range_op_loop, sequence, size, touched, MAX_TLBI_RANGE_PAGES, PAGE,
};
use crate::kvm::Kvm;

/// Linux arm64's stage 1 TLB maintenance through `mmu_gather`
/// (arch/arm64/include/asm/tlb.h `tlb_flush()`, asm/tlbflush.h
/// `__flush_tlb_range_nosync()`, `__flush_tlb_range_op()`,
/// `flush_tlb_mm()`; v6.18 cycle). One flush per gather, over the
/// bounding range of what the gather cleared, relaxations included
/// (`change_pte_range()` records every pte it changes):
///
/// - range: the hull of the cleared entries, a freed table adding one
///   page at its start (`pte_free_tlb()` and the like);
/// - stride: the smallest entry size cleared (`tlb_get_unmap_size()`);
///   last-level forms (`VALE1IS` / `RVALE1IS`) unless tables were freed;
///   the level hint when every cleared entry is at one level and no table
///   was freed (`tlb_get_level()`), in by-address operands only with
///   FEAT_TTL, in range operands always;
/// - without FEAT_TLBIRANGE, one operation per stride, and the whole ASID
///   (`flush_tlb_mm()`: `TLBI ASIDE1IS`) from `MAX_DVM_OPS` (512)
///   strides on; with it, range operations (scale 3 down, the odd page
///   by address), and the whole ASID above `MAX_TLBI_RANGE_PAGES`
///   (`__flush_tlb_range_limit_excess()`);
/// - `DSB ISHST` before, `DSB ISH` after, no `ISB` (user mappings);
/// - tearing down a dead address space (`tlb->fullmm`): nothing, or one
///   `flush_tlb_mm()` if page tables were freed (the walk caches), since
///   the ASID allocator does not reuse the ASID before a full flush.
///
/// KPTI's second (`__tlbi_user`) operation is not modelled. Stage 2 is
/// KVM's ([`Kvm`]).
#[derive(Clone, Copy, Debug)]
pub struct Linux {
    /// What the CPU offers.
    pub caps: Capabilities,
}

/// `MAX_DVM_OPS` with 4 KiB pages (`PTRS_PER_PTE`).
pub const MAX_DVM_OPS: u64 = 512;

impl Linux {
    fn whole(space: &Space) -> (TlbiOp, u64) {
        match space.kind {
            SpaceKind::El1 { asid } => (TlbiOp::Aside1is, asid_operand(asid)),
            _ => space.whole(),
        }
    }

    fn flush_mm(space: &Space, fx: &mut dyn Effects) {
        sequence(
            fx,
            Barrier::DsbIshst,
            &[Self::whole(space)],
            Barrier::DsbIsh,
        );
        if matches!(space.kind, SpaceKind::El2) {
            fx.barrier(Barrier::Isb);
        }
    }
}

impl Invalidator for Linux {
    fn name(&self) -> &'static str {
        "linux"
    }
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        if matches!(space.kind, SpaceKind::Stage2 { .. }) {
            return Kvm { caps: self.caps }.invalidate(space, purpose, changes, mapped, fx);
        }
        let wanted: Vec<&Change> = changes.iter().filter(|c| touched(purpose, c)).collect();
        if wanted.is_empty() {
            return false;
        }
        let freed = wanted
            .iter()
            .any(|c| c.flags.contains(ChangeFlags::TABLE_REMOVED));
        if space.dead && purpose == Purpose::Flush {
            if !freed {
                return false;
            }
            Self::flush_mm(space, fx);
            return true;
        }
        let deepest = wanted.iter().map(|c| c.level).max().unwrap_or(3);
        let stride = size(space, deepest);
        let one_level = wanted.iter().all(|c| c.level == deepest);
        let level = if !freed && one_level { deepest } else { 0 };
        // A freed table adds one page at its start (`p?d_free_tlb()`:
        // `__tlb_adjust_range(tlb, address, PAGE_SIZE)`).
        let span = |c: &&Change| {
            if empty_tables(c) {
                (c.range.start, c.range.start.saturating_add(PAGE))
            } else {
                (c.range.start, end(c))
            }
        };
        let lo = wanted.iter().map(|c| span(c).0).min().unwrap_or(0) & !(stride - 1);
        let hi = wanted
            .iter()
            .map(|c| span(c).1)
            .max()
            .unwrap_or(0)
            .saturating_add(stride - 1)
            & !(stride - 1);
        let pages = (hi - lo) / PAGE;
        let range = self.caps.tlbi_range && !matches!(space.kind, SpaceKind::El2);
        if !range && hi - lo >= MAX_DVM_OPS.saturating_mul(stride) || pages > MAX_TLBI_RANGE_PAGES {
            Self::flush_mm(space, fx);
            return true;
        }
        let ttl = if self.caps.ttl && level > 0 {
            Ttl::at(1, level)
        } else {
            Ttl::NONE
        };
        let mut ops = Vec::new();
        range_op_loop(
            space, lo, pages, stride, !freed, ttl, level, range, &mut ops,
        );
        sequence(fx, Barrier::DsbIshst, &ops, Barrier::DsbIsh);
        if matches!(space.kind, SpaceKind::El2) {
            fx.barrier(Barrier::Isb);
        }
        true
    }
}
