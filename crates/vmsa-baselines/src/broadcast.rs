//! elfuse before PR #24.

use vmsa::invalidate::emit;
use vmsa::plan::{Invalidator, Purpose, Space};
use vmsa::report::Change;
use vmsa::{Capabilities, Effects};

use crate::common::touched;

/// elfuse before PR #24 (sysprog21/elfuse, `src/core/shim.S`: the HVC #5
/// return code X8 = 1, "broadcast TLBI VMALLE1IS"): after every change of
/// a live entry, relaxations included, `DSB ISH; TLBI VMALLE1IS; DSB ISH`
/// (for stage 2 the VMID, `VMALLS12E1IS`; for EL2 the regime, `ALLE2IS`,
/// then `ISB`). Not dead-aware. Used as the "flush everything" control.
#[derive(Clone, Copy, Debug, Default)]
pub struct Broadcast;

impl Invalidator for Broadcast {
    fn name(&self) -> &'static str {
        "broadcast"
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
        emit(space, &[space.whole()], true, &Capabilities::default(), fx)
    }
}
