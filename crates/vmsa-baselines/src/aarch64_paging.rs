//! The aarch64-paging crate.

use alloc::vec::Vec;

use vmsa::plan::{Invalidator, Purpose, Space, SpaceKind};
use vmsa::report::Change;
use vmsa::tlbi::{va_operand, TlbiOp, Ttl};
use vmsa::{Barrier, Effects};

use crate::common::{
    entries, leaves_of_removed_tables, outermost_removed, sequence, size, touched,
};

/// aarch64-paging 0.12.3 (crates.io; Google's Rust crate), which refuses
/// live changes that need break-before-make (`BreakBeforeMakeViolation`)
/// and otherwise invalidates by address, one TLBI per descriptor, with no
/// threshold, no range operations and no level hints:
///
/// - `Mapping::map_range()` (unmapping is mapping without VALID) ends with
///   `invalidate_range()`: `DSB ISHST`, one TLBI per descriptor now
///   covering the range (a block once), `DSB ISH; ISB`;
/// - `Mapping::modify_range()` (protect and relax): per table `DSB
///   ISHST`, one TLBI per updated descriptor; `DSB ISH; ISB` at the end;
/// - a subtable detached by the update (`free_detached()`): `DSB ISHST`,
///   one TLBI per valid leaf below it (`invalidate_detached()`, its base
///   if none), `DSB ISH; ISB`, before the final `invalidate_range()`,
///   which then names the now invalid descriptor that replaced it.
///
/// The TLBIs (`TranslationRegime::invalidate_va()`): stage 2 `TLBI
/// IPAS2E1IS` with no `VMALLE1IS` after it, and without switching to the
/// table's VMID, so a combined stage 1+2 entry can stay stale (this
/// policy is not [faithful](crate::Baseline::faithful)); EL1&0 `TLBI
/// VAAE1IS` (every ASID); EL2 `TLBI VAE2IS`. Not dead-aware.
#[derive(Clone, Copy, Debug, Default)]
pub struct Aarch64Paging;

fn tlbi(space: &Space, addr: u64) -> (TlbiOp, u64) {
    match space.kind {
        SpaceKind::El1 { .. } => (TlbiOp::Vaae1is, va_operand(0, addr, Ttl::NONE)),
        _ => space.by_addr(addr, false, Ttl::NONE),
    }
}

impl Invalidator for Aarch64Paging {
    fn name(&self) -> &'static str {
        "aarch64-paging"
    }
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        let mut last = Vec::new();
        for c in changes.iter().filter(|c| touched(purpose, c)) {
            if !c.flags.contains(vmsa::ChangeFlags::TABLE_REMOVED) {
                last.extend(entries(space, c).map(|a| tlbi(space, a)));
                continue;
            }
            for (b, s) in outermost_removed(space, c) {
                let e = b.wrapping_add(s);
                let below: Vec<_> = if leaves_of_removed_tables(c) {
                    let step = size(space, c.level);
                    let (lo, hi) = (b.max(c.range.start), e.min(crate::common::end(c)));
                    (0..hi.saturating_sub(lo).div_ceil(step))
                        .map(|i| tlbi(space, lo + i * step))
                        .collect()
                } else {
                    alloc::vec![tlbi(space, b)]
                };
                sequence(fx, Barrier::DsbIshst, &below, Barrier::DsbIsh);
                fx.barrier(Barrier::Isb);
                last.push(tlbi(space, b.max(c.range.start)));
            }
        }
        if last.is_empty() {
            return false;
        }
        sequence(fx, Barrier::DsbIshst, &last, Barrier::DsbIsh);
        fx.barrier(Barrier::Isb);
        true
    }
}
