//! FreeBSD arm64 pmap.

use alloc::vec::Vec;

use vmsa::plan::{Invalidator, Purpose, Space, SpaceKind};
use vmsa::report::Change;
use vmsa::tlbi::{TlbiOp, Ttl};
use vmsa::{Barrier, Effects};

use crate::common::{entries, leaves_of_removed_tables, removed_descriptors, stale, PAGE};

/// FreeBSD's arm64 pmap (sys/arm64/arm64/pmap.c), stage 2 through vmm's
/// `s2_tlbi_range()` (sys/arm64/vmm/vmm_hyp.c, installed as
/// `pmap_stage2_invalidate_range`):
///
/// - a run of 4 KiB pages removed or write-protected
///   (`pmap_remove_l3_range()`, `pmap_protect_l3()`): one
///   `pmap_s_invalidate_range(sva, eva, final_only = true)` call, one
///   `TLBI IPAS2LE1IS` per page, no threshold (stage 1: `VALE1IS`);
/// - a block (`pmap_remove_l2()`, `pmap_protect_l2()`): one
///   `pmap_s_invalidate_page(va, true)`: a TLBI by address removes an
///   entry of any size;
/// - each page-table page freed (`_pmap_unwire_l3()`): one
///   `pmap_s_invalidate_page(va, false)` (`IPAS2E1IS` / `VAE1IS`);
/// - relaxations are not flushed: `pmap_protect()` only ever removes
///   rights, the rest is left to faults.
///
/// Each call: `DSB ISHST`, the operations, `DSB ISH`, for stage 2 `TLBI
/// VMALLE1IS; DSB ISH`, then `ISB` (`pmap_s1_invalidate_range_impl()`;
/// vmm_hyp.c's `s2_tlbi_range()` issues the same after switching
/// VTTBR_EL2, the leading `DSB ISHST` taken from the stage 1 path).
/// Destroying a VM unmaps everything (`vmspace_dofree()` ->
/// `vm_map_remove()` -> `pmap_remove()`): not dead-aware (the "dead
/// pmap" of review D30845 was not committed).
///
/// Not re-read for this crate: this follows the pmap.c of the stable/14
/// era as summarised in the project's domain notes.
#[derive(Clone, Copy, Debug, Default)]
pub struct FreeBsd;

impl FreeBsd {
    /// One `pmap_s_invalidate_range()` / `_page()` call.
    fn call(space: &Space, addrs: &[u64], final_only: bool, fx: &mut dyn Effects) {
        fx.barrier(Barrier::DsbIshst);
        for &a in addrs {
            let (op, operand) = space.by_addr(a, final_only, Ttl::NONE);
            fx.tlbi(op, operand);
        }
        fx.barrier(Barrier::DsbIsh);
        if matches!(space.kind, SpaceKind::Stage2 { .. }) {
            fx.tlbi(TlbiOp::Vmalle1is, 0);
            fx.barrier(Barrier::DsbIsh);
        }
        fx.barrier(Barrier::Isb);
    }
}

impl Invalidator for FreeBsd {
    fn name(&self) -> &'static str {
        "freebsd"
    }
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        let mut emitted = false;
        for c in changes.iter().filter(|c| stale(purpose, c)) {
            for (a, _) in removed_descriptors(space, c) {
                Self::call(space, &[a], false, fx);
                emitted = true;
            }
            if c.flags.contains(vmsa::ChangeFlags::TABLE_REMOVED) && !leaves_of_removed_tables(c) {
                continue;
            }
            if c.level >= 3 {
                let pages = c.range.end.wrapping_sub(c.range.start) / PAGE;
                let addrs: Vec<u64> = (0..pages).map(|i| c.range.start + i * PAGE).collect();
                Self::call(space, &addrs, true, fx);
                emitted = true;
            } else {
                for a in entries(space, c) {
                    Self::call(space, &[a], true, fx);
                    emitted = true;
                }
            }
        }
        emitted
    }
}
