//! The straightforward correct TLB maintenance, as an [`Invalidator`]:
//! one TLBI per changed entry (every level where a table was removed),
//! or one whole-regime TLBI when that would take more than
//! [`MAX_BY_ADDR_OPS`]; for stage 2, `DSB ISH; TLBI VMALLE1IS` after the
//! IPA-based operations. It prices nothing; [`Planner`](crate::Planner)
//! is the cheap one. Tests that check the mechanics of tables use it for
//! its predictable output. It applies the errata workarounds of the
//! [`Capabilities`] it is built with ([`Basic::new`]; the default has
//! none).

use alloc::vec::Vec;

use crate::caps::Capabilities;
use crate::effects::{Barrier, Effects};
use crate::plan::{Invalidator, Purpose, Space, SpaceKind};
use crate::report::{Change, ChangeFlags};
use crate::tlbi::{TlbiOp, Ttl};

/// Above this many per-address TLBIs one whole-regime TLBI is issued
/// instead: the figure Linux (`MAX_DVM_OPS`, arch/arm64/include/asm/
/// tlbflush.h) and Hafnium (`MAX_TLBI_OPS`, src/arch/aarch64/mm.c) use with
/// 4 KiB pages.
pub const MAX_BY_ADDR_OPS: u64 = 512;

/// The straightforward invalidator (see the [module](self) docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Basic {
    /// The CPU's capabilities: only its errata change what `Basic` emits.
    pub caps: Capabilities,
}

impl Basic {
    /// `Basic` for a CPU with `caps`.
    pub const fn new(caps: Capabilities) -> Self {
        Basic { caps }
    }
}

/// Number of descriptors a change covers (ranges may end at 0: the top of
/// the 64-bit space).
fn count(space: &Space, change: &Change) -> u64 {
    let step = space.entry_size[change.level as usize & 3];
    change
        .range
        .end
        .wrapping_sub(change.range.start)
        .div_ceil(step)
}

/// Emits `DSB ISH`, `ops`, `DSB ISH`; for stage 2 by-address operations
/// (unless `combined` is false) then `TLBI VMALLE1IS; DSB ISH`, since
/// IPA-based operations need not remove combined stage 1+2 entries (KVM's
/// `__kvm_tlb_flush_vmid_ipa`, Hafnium, FreeBSD); `ISB` for the EL2
/// regime. Both batches of TLBIs go through
/// [`tlbi::issue`](crate::tlbi::issue) with `caps` (the repeat-TLBI
/// erratum repeats the last of each). Returns whether anything was
/// emitted. The sequence shape the baseline policies of `vmsa compare`
/// share with [`Basic`].
pub fn emit(
    space: &Space,
    ops: &[(TlbiOp, u64)],
    combined: bool,
    caps: &Capabilities,
    fx: &mut dyn Effects,
) -> bool {
    if ops.is_empty() {
        return false;
    }
    fx.barrier(Barrier::DsbIsh);
    crate::tlbi::issue(fx, caps, ops.iter().copied(), Barrier::DsbIsh);
    let by_addr = ops.iter().any(|(op, _)| {
        !matches!(
            op,
            TlbiOp::Vmalls12e1is | TlbiOp::Alle1is | TlbiOp::Vmalle1is | TlbiOp::Alle2is
        )
    });
    if combined && by_addr && matches!(space.kind, SpaceKind::Stage2 { .. }) {
        crate::tlbi::issue(fx, caps, [(TlbiOp::Vmalle1is, 0)], Barrier::DsbIsh);
    }
    if matches!(space.kind, SpaceKind::El2) {
        fx.barrier(Barrier::Isb);
    }
    true
}

impl Invalidator for Basic {
    fn name(&self) -> &'static str {
        "basic"
    }

    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        let wanted = |c: &&Change| purpose == Purpose::BreakBeforeMake || c.may_leave_stale();
        if space.dead && purpose == Purpose::Flush || !changes.iter().any(|c| wanted(&c)) {
            return false;
        }
        let count_all: u64 = changes.iter().filter(wanted).map(|c| count(space, c)).sum();
        let mut ops = Vec::new();
        if count_all > MAX_BY_ADDR_OPS {
            ops.push(space.whole());
        } else {
            for c in changes.iter().filter(wanted) {
                let step = space.entry_size[c.level as usize & 3];
                let leaf_only = !c.flags.contains(ChangeFlags::TABLE_REMOVED);
                for i in 0..count(space, c) {
                    let addr = c.range.start.wrapping_add(i * step);
                    ops.push(space.by_addr(addr, leaf_only, Ttl::NONE));
                }
            }
        }
        emit(space, &ops, true, &self.caps, fx)
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }
}
