//! KVM arm64, stage 2.

use alloc::vec::Vec;

use vmsa::plan::{Invalidator, Purpose, Space, SpaceKind};
use vmsa::report::{Change, ChangeFlags};
use vmsa::tlbi::{TlbiOp, Ttl};
use vmsa::{Barrier, Capabilities, Effects};

use crate::common::{
    end, entries, leaves_of_removed_tables, range_op_loop, removed_descriptors, sequence, stale,
    MAX_TLBI_RANGE_PAGES, PAGE,
};
use crate::linux::Linux;

/// KVM arm64's stage 2 maintenance (arch/arm64/kvm/hyp/pgtable.c and
/// hyp/vhe/tlb.c, v6.18 cycle; a VHE host, FEAT_S2FWB assumed where
/// FEAT_TLBIRANGE is there, as on every CPU that has both):
///
/// - break-before-make (`stage2_try_break_pte()`): a leaf
///   `__kvm_tlb_flush_vmid_ipa(addr, level)`, a table descriptor
///   `kvm_tlb_flush_vmid_range()` over the table's span;
/// - unmap (`kvm_pgtable_stage2_unmap()`, `stage2_unmap_put_pte()`): each
///   freed table descriptor `__kvm_tlb_flush_vmid_ipa(addr,
///   TLBI_TTL_UNKNOWN)` during the walk; the leaves, with FEAT_TLBIRANGE
///   (`stage2_unmap_defer_tlb_flush()`), one deferred
///   `kvm_tlb_flush_vmid_range()` over the range when the walk is done,
///   else `__kvm_tlb_flush_vmid_ipa(addr, level)` per leaf, no threshold;
/// - write-protect and other restrictions
///   (`kvm_pgtable_stage2_wrprotect()`, then
///   `kvm_flush_remote_tlbs_range()`): `kvm_tlb_flush_vmid_range()`;
/// - relaxation (`kvm_pgtable_stage2_relax_perms()`): on the faulting
///   vCPU's PE only, `__kvm_tlb_flush_vmid_ipa_nsh()`; nothing at the
///   flush, the fault path does it ([`Table::spurious_fault`]);
/// - teardown (`kvm_pgtable_stage2_destroy()`: `stage2_free_walker()`
///   frees the tables with no TLBI; the VMID is not used again before a
///   rollover's `TLBI ALLE1IS`): nothing for a dead space.
///
/// The sequences (hyp/vhe/tlb.c):
/// - `__kvm_tlb_flush_vmid_ipa()`: `DSB ISHST; TLBI IPAS2E1IS` (level
///   hint with FEAT_TTL) `; DSB ISH; TLBI VMALLE1IS; DSB ISH; ISB`;
/// - `kvm_tlb_flush_vmid_range()`: with FEAT_TLBIRANGE, per
///   `MAX_TLBI_RANGE_PAGES` chunk `__kvm_tlb_flush_vmid_range()`:
///   `DSB ISHST`, `__flush_s2_tlb_range_op(ipas2e1is, ...)` (range
///   operations, no level; a single page by address), `DSB ISH; TLBI
///   VMALLE1IS; DSB ISH; ISB`; without it the whole VMID,
///   `__kvm_tlb_flush_vmid()`: `DSB ISHST; TLBI VMALLS12E1IS; DSB ISH;
///   ISB`.
///
/// vmsa reports the changed runs, not the range asked for: the deferred
/// flush covers the bounding range of the unmapped leaves of the batch,
/// and a restriction's the bounding range of the restricted entries.
/// Stage 1 tables are Linux's ([`Linux`]).
///
/// [`Table::spurious_fault`]: vmsa::Table::spurious_fault
#[derive(Clone, Copy, Debug)]
pub struct Kvm {
    /// What the CPU offers.
    pub caps: Capabilities,
}

impl Kvm {
    /// `__kvm_tlb_flush_vmid_ipa(addr, level)`.
    fn flush_ipa(&self, space: &Space, addr: u64, level: Option<u8>, fx: &mut dyn Effects) {
        let ttl = match level {
            Some(l) if self.caps.ttl && l > 0 => Ttl::at(1, l),
            _ => Ttl::NONE,
        };
        sequence(
            fx,
            Barrier::DsbIshst,
            &[space.by_addr(addr, false, ttl)],
            Barrier::DsbIsh,
        );
        fx.tlbi(TlbiOp::Vmalle1is, 0);
        fx.barrier(Barrier::DsbIsh);
        fx.barrier(Barrier::Isb);
    }

    /// `kvm_tlb_flush_vmid_range(addr, size)`.
    fn flush_range(&self, space: &Space, addr: u64, end: u64, fx: &mut dyn Effects) {
        if !self.caps.tlbi_range {
            sequence(fx, Barrier::DsbIshst, &[space.whole()], Barrier::DsbIsh);
            fx.barrier(Barrier::Isb);
            return;
        }
        let mut start = addr & !(PAGE - 1);
        let mut pages = end.saturating_sub(start).div_ceil(PAGE);
        while pages > 0 {
            let chunk = pages.min(MAX_TLBI_RANGE_PAGES);
            let mut ops = Vec::new();
            range_op_loop(
                space,
                start,
                chunk,
                PAGE,
                false,
                Ttl::NONE,
                0,
                true,
                &mut ops,
            );
            sequence(fx, Barrier::DsbIshst, &ops, Barrier::DsbIsh);
            fx.tlbi(TlbiOp::Vmalle1is, 0);
            fx.barrier(Barrier::DsbIsh);
            fx.barrier(Barrier::Isb);
            start = start.wrapping_add(chunk * PAGE);
            pages -= chunk;
        }
    }
}

/// The bounding range of some changes.
fn bounds<'a>(changes: impl Iterator<Item = &'a Change>) -> Option<(u64, u64)> {
    changes.fold(None, |acc, c| {
        let (s, e) = (c.range.start, end(c));
        Some(match acc {
            None => (s, e),
            Some((lo, hi)) => (lo.min(s), hi.max(e)),
        })
    })
}

impl Invalidator for Kvm {
    fn name(&self) -> &'static str {
        "kvm"
    }
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        if !matches!(space.kind, SpaceKind::Stage2 { .. }) {
            return Linux { caps: self.caps }.invalidate(space, purpose, changes, mapped, fx);
        }
        let wanted: Vec<&Change> = changes.iter().filter(|c| stale(purpose, c)).collect();
        if wanted.is_empty() || space.dead && purpose == Purpose::Flush {
            return false;
        }
        if purpose == Purpose::BreakBeforeMake {
            for c in &wanted {
                if c.flags.contains(ChangeFlags::TABLE_REMOVED) {
                    self.flush_range(space, c.range.start, end(c), fx);
                } else {
                    for a in entries(space, c) {
                        self.flush_ipa(space, a, Some(c.level), fx);
                    }
                }
            }
            return true;
        }
        // Unmaps: freed tables during the walk, then the leaves.
        let unmapped = || {
            wanted
                .iter()
                .copied()
                .filter(|c| !c.flags.contains(ChangeFlags::IS_VALID))
        };
        for c in unmapped() {
            for (a, _) in removed_descriptors(space, c) {
                self.flush_ipa(space, a, None, fx);
            }
        }
        let leaves = || {
            unmapped().filter(|c| {
                !c.flags.contains(ChangeFlags::TABLE_REMOVED) || leaves_of_removed_tables(c)
            })
        };
        if self.caps.tlbi_range {
            if let Some((lo, hi)) = bounds(leaves()) {
                self.flush_range(space, lo, hi, fx);
            }
        } else {
            for c in leaves() {
                for a in entries(space, c) {
                    self.flush_ipa(space, a, Some(c.level), fx);
                }
            }
        }
        // Restrictions of entries that stay valid.
        let kept = wanted
            .iter()
            .copied()
            .filter(|c| c.flags.contains(ChangeFlags::IS_VALID));
        if let Some((lo, hi)) = bounds(kept) {
            self.flush_range(space, lo, hi, fx);
        }
        true
    }
}
