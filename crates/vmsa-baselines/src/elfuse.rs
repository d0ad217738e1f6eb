//! elfuse's EL1 shim protocol.

use alloc::vec::Vec;

use vmsa::invalidate::emit;
use vmsa::plan::{Invalidator, Purpose, Space, SpaceKind};
use vmsa::report::Change;
use vmsa::tlbi::{RangeOperand, TlbiOp, Ttl};
use vmsa::{Capabilities, Effects};

use crate::common::{asid, touched, PAGE, TG_4K};

/// elfuse (sysprog21/elfuse), the host-managed guest stage 1 of a Linux
/// process under Hypervisor.framework: after each syscall the host leaves
/// one request for the vCPU's EL1 shim (`src/core/shim.S`, HVC #5, return
/// code in X8). Requests merge by bounding union over every change of a
/// live entry, relaxations included; up to `ELFUSE_MAX_PAGES` (16) pages get
/// one `TLBI VAE1IS` each (X8 = 3), more a broadcast `TLBI VMALLE1IS`
/// (X8 = 1), between `DSB ISH`s.
///
/// - PR #24: the page-table "extend" step requested its whole 2 MiB span,
///   so every change under a table widened to 2 MiB and broadcast.
/// - PR #65: that fixed, and with FEAT_TLBIRANGE one pre-encoded
///   `TLBI RVAE1IS` operand covering the union, rounded up (X8 = 4).
///
/// The I-cache hint (X11) and its `IC IALLU` are not modelled. Stage 1
/// only: elfuse has no stage 2 of its own.
#[derive(Clone, Copy, Debug)]
pub struct Elfuse {
    /// PR #65 (else PR #24).
    pub pr65: bool,
    /// What the CPU offers.
    pub caps: Capabilities,
}

/// The most pages elfuse invalidates one by one.
pub const ELFUSE_MAX_PAGES: u64 = 16;

impl Invalidator for Elfuse {
    fn name(&self) -> &'static str {
        if self.pr65 {
            "elfuse-pr65"
        } else {
            "elfuse-pr24"
        }
    }
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        let mut lo = u64::MAX;
        let mut hi = 0;
        for c in changes.iter().filter(|c| touched(purpose, c)) {
            lo = lo.min(c.range.start);
            hi = hi.max(crate::common::end(c));
        }
        if lo >= hi {
            return false;
        }
        if !self.pr65 {
            // The extend step's 2 MiB span.
            lo &= !((2 << 20) - 1);
            hi = hi.saturating_add((2 << 20) - 1) & !((2 << 20) - 1);
        }
        let pages = (hi - lo) / PAGE;
        if pages <= ELFUSE_MAX_PAGES {
            let ops: Vec<_> = (0..pages)
                .map(|i| space.by_addr(lo + i * PAGE, false, Ttl::NONE))
                .collect();
            return emit(space, &ops, true, &self.caps, fx);
        }
        if self.pr65 && self.caps.tlbi_range && !matches!(space.kind, SpaceKind::El2) {
            if let Some(op) = one_range(space, lo, hi) {
                return emit(space, &[op], true, &self.caps, fx);
            }
        }
        emit(space, &[space.whole()], true, &self.caps, fx)
    }
}

/// One range operation covering at least `[lo, hi)`, if one can.
fn one_range(space: &Space, lo: u64, hi: u64) -> Option<(TlbiOp, u64)> {
    let pages = (hi - lo).div_ceil(PAGE);
    for scale in 0..=3u8 {
        let unit = 1u64 << (5 * scale as u64 + 1);
        let num = pages.div_ceil(unit);
        if num <= 32 {
            let r = RangeOperand {
                asid: asid(space),
                tg: TG_4K,
                scale,
                num: (num.max(1) - 1) as u8,
                ttl: 0,
                base: lo / PAGE,
            };
            return Some((space.by_range(false), r.encode()));
        }
    }
    None
}
