//! The policies `vmsa compare` runs: vmsa's planner, and reproductions of
//! the rules real systems use, each citing what it follows (see also the
//! project's domain notes, which summarise those sources).

use vmsa::plan::{range, Invalidator, Purpose, Space, SpaceKind};
use vmsa::report::{Change, ChangeFlags};
use vmsa::tlbi::{TlbiOp, Ttl};
use vmsa::{Barrier, Capabilities, Effects, Planner, Profile};

/// Names, in display order (`vmsa` first, the controls last).
pub const NAMES: &[&str] = &[
    "vmsa",
    "broadcast",
    "elfuse-pr24",
    "elfuse-pr65",
    "linux",
    "kvm",
    "hafnium",
    "freebsd",
    "xen",
    "aarch64-paging",
    "none",
    "oracle",
];

/// Whether the policy knows that a destroyed VM's VMID is not reused
/// before a full invalidation, and so tears it down with no TLBI: vmsa
/// only (FreeBSD's "dead pmap" was a review proposal, D30845; the
/// `freebsd` baseline follows pmap.c, one TLBI per page).
pub fn skips_dead(name: &str) -> bool {
    name == "vmsa"
}

/// Whether the policy gathers the operations of one batch (a hypercall, a
/// syscall) into one flush, as Linux's `mmu_gather`, KVM's range flushes,
/// FreeBSD's `pmap_remove` and elfuse's per-syscall request do; Xen
/// flushes before each p2m operation drops its lock, the early elfuse and
/// aarch64-paging after every change.
pub fn gathers(name: &str) -> bool {
    !matches!(name, "broadcast" | "xen" | "aarch64-paging" | "none")
}

/// vmsa's planner priced with the model's profile.
pub fn planner(caps: Capabilities, p: &vmsa_model::cost::Profile, pes: usize) -> Planner {
    Planner::new(
        caps,
        Profile {
            local_tlbi: p.local_tlbi,
            broadcast_by_address: p.broadcast_tlbi_by_address,
            broadcast_whole: p.broadcast_tlbi_whole,
            dsb: p.dsb,
            dsb_light: p.dsb_light,
            isb: p.isb,
            refill_walk: p.refill_walk,
            traps_el2_tlbi: p.traps_el2_tlbi,
            trap_emulate: p.trap_emulate,
            shadow_stage2_teardown: p.shadow_stage2_teardown,
            exception_round_trip: p.exception_round_trip,
            pes: pes as u64,
        },
    )
}

/// The policy called `name`.
pub fn make(
    name: &str,
    caps: Capabilities,
    p: &vmsa_model::cost::Profile,
    pes: usize,
) -> Box<dyn Invalidator> {
    match name {
        "vmsa" => Box::new(planner(caps, p, pes)),
        "broadcast" => Box::new(Broadcast),
        "elfuse-pr24" => Box::new(Elfuse { pr65: false, caps }),
        "elfuse-pr65" => Box::new(Elfuse { pr65: true, caps }),
        "linux" => Box::new(Linux { caps }),
        "kvm" => Box::new(Kvm { caps }),
        "hafnium" => Box::new(Hafnium),
        "freebsd" => Box::new(FreeBsd),
        "xen" => Box::new(Xen),
        "aarch64-paging" => Box::new(Aarch64Paging),
        "none" => Box::new(NoInvalidation),
        // The oracle's cleaning is done by the model (ModelEffects::oracle)
        // at the DSB this emits.
        "oracle" => Box::new(Oracle),
        other => panic!("unknown policy {other}"),
    }
}

/// Changes a policy acts on: every change of a valid entry that
/// break-before-make has not already handled (baselines flush relaxations
/// too, unless noted).
fn touched(purpose: Purpose, c: &Change) -> bool {
    purpose == Purpose::BreakBeforeMake
        || c.flags.contains(ChangeFlags::WAS_VALID) && !c.flags.contains(ChangeFlags::BBM_DONE)
}

fn entries(space: &Space, c: &Change, step: u64) -> impl Iterator<Item = u64> {
    let _ = space;
    let (s, e) = (c.range.start, c.range.end);
    (0..e.saturating_sub(s).div_ceil(step)).map(move |i| s + i * step)
}

use vmsa::invalidate::emit;

/// elfuse before PR #24: a broadcast invalidation of everything after every
/// change (`TLBI VMALLE1IS`; for stage 2 the VMID, for EL2 the regime).
struct Broadcast;

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
        emit(space, &[space.whole()], true, fx)
    }
}

/// elfuse (sysprog21/elfuse), the EL1 shim's protocol: requests merge by
/// bounding union; up to 16 pages get per-VA `TLBI VAE1IS`, more a
/// broadcast. PR #24's page-table "extend" step requested its whole 2 MiB
/// span, so in practice every change over a table went broadcast; PR #65
/// fixed that, skips changes that change nothing, and sends one range
/// operand (`RVAE1IS`) when FEAT_TLBIRANGE is there.
struct Elfuse {
    pr65: bool,
    caps: Capabilities,
}

const ELFUSE_MAX_PAGES: u64 = 16;

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
            hi = hi.max(c.range.end);
        }
        if lo >= hi {
            return false;
        }
        if !self.pr65 {
            // The extend step's 2 MiB span.
            lo &= !((2 << 20) - 1);
            hi = hi.div_ceil(2 << 20) * (2 << 20);
        }
        let pages = (hi - lo) / 4096;
        if pages <= ELFUSE_MAX_PAGES {
            let ops: Vec<_> = (0..pages)
                .map(|i| space.by_addr(lo + i * 4096, false, Ttl::NONE))
                .collect();
            return emit(space, &ops, true, fx);
        }
        if self.pr65 && self.caps.tlbi_range && !matches!(space.kind, SpaceKind::El2) {
            // One pre-encoded operand covering the union, rounded up.
            if let Some(op) = one_range(space, lo, hi) {
                return emit(space, &[op], true, fx);
            }
        }
        emit(space, &[space.whole()], true, fx)
    }
}

/// One range operation covering at least `[lo, hi)`, if one can.
fn one_range(space: &Space, lo: u64, hi: u64) -> Option<(TlbiOp, u64)> {
    let pages = (hi - lo).div_ceil(4096);
    for scale in 0..=3u8 {
        let unit = 1u64 << (5 * scale as u64 + 1);
        let num = pages.div_ceil(unit);
        if num <= 32 {
            let asid = match space.kind {
                SpaceKind::El1 { asid } => asid,
                _ => 0,
            };
            let r = vmsa::tlbi::RangeOperand {
                asid,
                tg: range::TG_4K,
                scale,
                num: (num.max(1) - 1) as u8,
                ttl: 0,
                base: lo / 4096,
            };
            return Some((space.by_range(false), r.encode()));
        }
    }
    None
}

/// Linux arm64 `__flush_tlb_range` (arch/arm64/include/asm/tlbflush.h):
/// one operation per stride (the mapping's size), last-level forms unless
/// tables were freed; with FEAT_TLBIRANGE, range operations; above
/// `MAX_DVM_OPS` (512 with 4 KiB pages) the whole ASID. Stage 2 is KVM's.
struct Linux {
    caps: Capabilities,
}

const MAX_DVM_OPS: u64 = 512;

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
        let mut ops = Vec::new();
        let mut count = 0;
        for c in &wanted {
            let step = space.entry_size[c.level as usize & 3];
            count += c.range.end.saturating_sub(c.range.start).div_ceil(step);
        }
        if count > MAX_DVM_OPS {
            ops.push(space.whole());
        } else if self.caps.tlbi_range && !matches!(space.kind, SpaceKind::El2) {
            for c in &wanted {
                let asid = match space.kind {
                    SpaceKind::El1 { asid } => asid,
                    _ => 0,
                };
                match range::cover(c.range.start, c.range.end, asid, 0) {
                    Some((rs, singles)) => {
                        for r in rs {
                            ops.push((space.by_range(!freed), r.encode()));
                        }
                        for s in singles {
                            ops.push(space.by_addr(s, !freed, Ttl::NONE));
                        }
                    }
                    None => ops.push(space.whole()),
                }
            }
        } else {
            for c in &wanted {
                let step = space.entry_size[c.level as usize & 3];
                for a in entries(space, c, step) {
                    ops.push(space.by_addr(a, !freed, Ttl::NONE));
                }
            }
        }
        emit(space, &ops, true, fx)
    }
}

/// KVM arm64 stage 2 (arch/arm64/kvm/hyp/pgtable.c, nvhe/tlb.c): a
/// break-before-make invalidates the entry with `IPAS2E1IS` (level hint),
/// `DSB ISH`, `VMALLE1IS` (`__kvm_tlb_flush_vmid_ipa`); range flushes
/// (unmap, write-protect) go through `kvm_tlb_flush_vmid_range`: range
/// operations with FEAT_TLBIRANGE, else the whole VMID
/// (`VMALLS12E1IS`); permission relaxation is left to the faulting CPU's
/// local invalidation. Stage 1 tables are Linux's.
struct Kvm {
    caps: Capabilities,
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
        let wanted: Vec<&Change> = changes
            .iter()
            .filter(|c| purpose == Purpose::BreakBeforeMake || vmsa::plan::may_be_stale(c))
            .collect();
        if wanted.is_empty() {
            return false;
        }
        if purpose == Purpose::BreakBeforeMake {
            let mut ops = Vec::new();
            for c in &wanted {
                let step = space.entry_size[c.level as usize & 3];
                let ttl = if self.caps.ttl && c.level > 0 {
                    Ttl::at(1, c.level)
                } else {
                    Ttl::NONE
                };
                let table = c.flags.contains(ChangeFlags::TABLE_REMOVED);
                if table {
                    // stage2_try_break_pte: a table descriptor flushes the
                    // whole VMID.
                    return emit(space, &[space.whole()], true, fx);
                }
                for a in entries(space, c, step) {
                    ops.push(space.by_addr(a, false, ttl));
                }
            }
            return emit(space, &ops, true, fx);
        }
        if self.caps.tlbi_range {
            let mut ops = Vec::new();
            for c in &wanted {
                match range::cover(c.range.start, c.range.end, 0, 0) {
                    Some((rs, singles)) => {
                        for r in rs {
                            ops.push((space.by_range(false), r.encode()));
                        }
                        for s in singles {
                            ops.push(space.by_addr(s, false, Ttl::NONE));
                        }
                    }
                    None => return emit(space, &[space.whole()], true, fx),
                }
            }
            emit(space, &ops, true, fx)
        } else {
            emit(space, &[space.whole()], true, fx)
        }
    }
}

/// Hafnium (src/arch/aarch64/mm.c): one operation per 4 KiB page up to
/// `MAX_TLBI_OPS` (512), then `DSB ISH; VMALLE1IS` for stage 2; above it
/// the whole VMID (`VMALLS12E1IS`) or regime.
struct Hafnium;

const MAX_TLBI_OPS: u64 = 512;

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
        let wanted: Vec<&Change> = changes.iter().filter(|c| touched(purpose, c)).collect();
        if wanted.is_empty() {
            return false;
        }
        let pages: u64 = wanted
            .iter()
            .map(|c| c.range.end.saturating_sub(c.range.start) / 4096)
            .sum();
        if pages > MAX_TLBI_OPS {
            return emit(space, &[space.whole()], true, fx);
        }
        let mut ops = Vec::new();
        for c in &wanted {
            for a in entries(space, c, 4096) {
                ops.push(space.by_addr(a, false, Ttl::NONE));
            }
        }
        emit(space, &ops, true, fx)
    }
}

/// FreeBSD arm64 pmap (sys/arm64/arm64/pmap.c): one operation per 4 KiB
/// page with no threshold, last-level forms unless a table went
/// (`final_only`); stage 2 then `VMALLE1IS`; permissions are only ever reduced by `pmap_protect`, so relaxations are
/// not flushed (faults fix them).
struct FreeBsd;

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
        let mut ops = Vec::new();
        for c in changes
            .iter()
            .filter(|c| purpose == Purpose::BreakBeforeMake || vmsa::plan::may_be_stale(c))
        {
            let final_only = !c.flags.contains(ChangeFlags::TABLE_REMOVED);
            // A freed table page is invalidated once (`_pmap_unwire_l3`),
            // not page by page over the region it covered.
            let table_only = !final_only && !c.cached_leaf_levels.contains(c.level);
            let step = if table_only {
                space.entry_size[c.level as usize & 3]
            } else {
                4096
            };
            for a in entries(space, c, step) {
                ops.push(space.by_addr(a, final_only, Ttl::NONE));
            }
        }
        emit(space, &ops, true, fx)
    }
}

/// Xen on Arm (xen/arch/arm/mmu/p2m.c): any change to a valid entry sets
/// `need_flush`, flushed before the p2m lock is dropped with a whole-VMID
/// `VMALLS12E1IS`.
struct Xen;

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
        emit(space, &[space.whole()], true, fx)
    }
}

/// aarch64-paging 0.12 (Rust crate): one TLBI per changed leaf descriptor,
/// no threshold and no range operations; for stage 2 `IPAS2E1IS` with no
/// `VMALLE1IS` after it (so a combined entry can stay stale).
struct Aarch64Paging;

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
        let mut ops = Vec::new();
        for c in changes.iter().filter(|c| touched(purpose, c)) {
            let step = space.entry_size[c.level as usize & 3];
            for a in entries(space, c, step) {
                ops.push(space.by_addr(a, false, Ttl::NONE));
            }
        }
        emit(space, &ops, false, fx)
    }
}

/// No invalidation at all: a broken control the checker must catch.
struct NoInvalidation;

impl Invalidator for NoInvalidation {
    fn name(&self) -> &'static str {
        "none"
    }
    fn invalidate(
        &self,
        _space: &Space,
        _purpose: Purpose,
        _changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        _fx: &mut dyn Effects,
    ) -> bool {
        false
    }
}

/// The oracle: a `DSB ISH` at which the model removes exactly the stale
/// entries. Not realizable: the floor.
struct Oracle;

impl Invalidator for Oracle {
    fn name(&self) -> &'static str {
        "oracle"
    }
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        if !changes
            .iter()
            .any(|c| purpose == Purpose::BreakBeforeMake || vmsa::plan::may_be_stale(c))
        {
            return false;
        }
        fx.barrier(if space.local {
            Barrier::DsbNsh
        } else {
            Barrier::DsbIsh
        });
        true
    }
}
