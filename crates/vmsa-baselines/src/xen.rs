//! Xen on Arm.

use vmsa::plan::{Invalidator, Purpose, Space};
use vmsa::report::Change;
use vmsa::{Barrier, Effects};

use crate::common::{sequence, touched};

/// Xen on Arm's p2m (xen/arch/arm/mmu/p2m.c): `__p2m_set_entry()` sets
/// `p2m->need_flush` when it changes a valid entry (relaxations
/// included), and `p2m_write_unlock()` flushes before the p2m lock is
/// dropped, once per p2m operation (`p2m_force_tlb_flush_sync()`, with
/// VTTBR_EL2 switched to the domain's VMID): `flush_guest_tlb()`
/// (xen/arch/arm/include/asm/arm64/flushtlb.h), `DSB ISHST; TLBI
/// VMALLS12E1IS; DSB ISH; ISB`, the whole VMID whatever changed.
/// Domain destruction unmaps everything (`relinquish_p2m_mapping()`,
/// flushed the same way); not dead-aware.
///
/// Not re-read for this crate: this follows the 4.19-era p2m.c as
/// summarised in the project's domain notes (the IPA-based TLBI patch it
/// mentions was a proposal). Stage 2 only; on a stage 1 space the same
/// shape with `VMALLE1IS`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Xen;

impl Invalidator for Xen {
    fn name(&self) -> &'static str {
        "xen"
    }
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        if !changes.iter().any(|c| touched(purpose, c)) {
            return false;
        }
        sequence(fx, Barrier::DsbIshst, &[space.whole()], Barrier::DsbIsh);
        fx.barrier(Barrier::Isb);
        true
    }
}
