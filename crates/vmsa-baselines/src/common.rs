//! What the baselines share: which changes they act on, the descriptors a
//! change covers, and the upstream range-operation loop.

use alloc::vec::Vec;

use vmsa::plan::{Purpose, Space, SpaceKind};
use vmsa::report::{Change, ChangeFlags};
use vmsa::tlbi::{RangeOperand, TlbiOp, Ttl};
use vmsa::{Barrier, Effects};

/// 4 KiB: the granule every baseline assumes.
pub const PAGE: u64 = 4096;

/// TLBI TG encoding of the 4 KiB granule.
pub const TG_4K: u8 = 0b01;

/// The most pages one range operation covers, and the most Linux and KVM
/// hand to one range loop: `MAX_TLBI_RANGE_PAGES` =
/// `__TLBI_RANGE_PAGES(31, 3)` = 32 << 16 (arch/arm64/include/asm/
/// tlbflush.h).
pub const MAX_TLBI_RANGE_PAGES: u64 = 32 << 16;

/// Changes of a valid entry that break-before-make has not already
/// handled, relaxations included (the policies whose sources flush every
/// change of a live entry).
pub fn touched(purpose: Purpose, c: &Change) -> bool {
    purpose == Purpose::BreakBeforeMake
        || c.flags.contains(ChangeFlags::WAS_VALID) && !c.flags.contains(ChangeFlags::BBM_DONE)
}

/// Changes that may leave an entry granting more than the tables
/// (relaxations excluded: the sources that leave them to the fault path).
pub fn stale(purpose: Purpose, c: &Change) -> bool {
    purpose == Purpose::BreakBeforeMake || vmsa::plan::may_be_stale(c)
}

/// Bytes one descriptor of `level` translates.
pub fn size(space: &Space, level: u8) -> u64 {
    space.entry_size[level as usize & 3]
}

/// The end of a change's range (`u64::MAX` for a range that ends at the
/// top of the 64-bit space).
pub fn end(c: &Change) -> u64 {
    if c.range.end == 0 {
        u64::MAX
    } else {
        c.range.end
    }
}

/// The first address of every descriptor a change covers at its own level.
pub fn entries(space: &Space, c: &Change) -> impl Iterator<Item = u64> {
    let step = size(space, c.level);
    let start = c.range.start;
    let n = c.range.end.wrapping_sub(start).div_ceil(step);
    (0..n).map(move |i| start.wrapping_add(i * step))
}

/// The change removed table descriptors and reports the leaves that were
/// below them (at the leaves' own level).
pub fn leaves_of_removed_tables(c: &Change) -> bool {
    c.flags.contains(ChangeFlags::TABLE_REMOVED)
        && c.level > 0
        && c.cached_leaf_levels.contains(c.level)
}

/// The change reports table descriptors removed with no valid leaf below
/// them (at the descriptors' own level).
pub fn empty_tables(c: &Change) -> bool {
    c.flags.contains(ChangeFlags::TABLE_REMOVED) && !leaves_of_removed_tables(c)
}

/// Every table descriptor a change removed, as (first address, level of
/// the descriptor), deepest first. For leaves of removed tables: the
/// descriptors of their own tables (every one the range touches: the run
/// is of leaves whose tables went), and above those only the descriptors
/// whose whole span lies inside the run (the report does not say whether
/// a higher table that also maps something outside the run went too).
pub fn removed_descriptors(space: &Space, c: &Change) -> Vec<(u64, u8)> {
    let mut out = Vec::new();
    if empty_tables(c) {
        out.extend(entries(space, c).map(|a| (a, c.level)));
        return out;
    }
    if !leaves_of_removed_tables(c) {
        return out;
    }
    let (start, end) = (c.range.start, end(c));
    for level in (0..c.level).rev() {
        let s = size(space, level);
        let mut a = if level + 1 == c.level {
            start & !(s - 1)
        } else {
            start.div_ceil(s).saturating_mul(s)
        };
        while a < end {
            let whole = a.checked_add(s).is_some_and(|e| e <= end);
            if level + 1 == c.level || whole {
                out.push((a, level));
            }
            match a.checked_add(s) {
                Some(n) => a = n,
                None => break,
            }
        }
    }
    out
}

/// The outermost table descriptors a change removed, as (first address,
/// bytes): from each address, the largest descriptor span that starts
/// there and lies inside the run, or the leaves' own table.
pub fn outermost_removed(space: &Space, c: &Change) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if empty_tables(c) {
        let s = size(space, c.level);
        out.extend(entries(space, c).map(|a| (a, s)));
        return out;
    }
    if !leaves_of_removed_tables(c) {
        return out;
    }
    let end = end(c);
    let mut a = c.range.start;
    while a < end {
        let mut unit = None;
        for level in 0..c.level.saturating_sub(1) {
            let s = size(space, level);
            if a % s == 0 && a.checked_add(s).is_some_and(|e| e <= end) {
                unit = Some((a, s));
                break;
            }
        }
        let (b, s) = unit.unwrap_or_else(|| {
            let s = size(space, c.level - 1);
            (a & !(s - 1), s)
        });
        out.push((b, s));
        match b.checked_add(s) {
            Some(n) => a = n,
            None => break,
        }
    }
    out
}

/// The ASID an operand carries.
pub fn asid(space: &Space) -> u16 {
    match space.kind {
        SpaceKind::El1 { asid } => asid,
        _ => 0,
    }
}

/// Linux's `__flush_tlb_range_op()` (arch/arm64/include/asm/tlbflush.h),
/// also behind KVM's `__flush_s2_tlb_range_op()`: `pages` 4 KiB pages from
/// `start`. Without FEAT_TLBIRANGE (`range` false), or for the last odd
/// page, one by-address operation per `stride` bytes with level hint
/// `ttl`; with it, range operations from the largest scale down, each as
/// many units as fit (up to 32), with the level `level` (1 to 3, or 0)
/// in the operand's TTL field.
#[allow(clippy::too_many_arguments)]
pub fn range_op_loop(
    space: &Space,
    start: u64,
    pages: u64,
    stride: u64,
    leaf_only: bool,
    ttl: Ttl,
    level: u8,
    range: bool,
    out: &mut Vec<(TlbiOp, u64)>,
) {
    let mut addr = start;
    let mut pages = pages;
    let mut scale: i32 = 3;
    while pages > 0 {
        if !range || pages == 1 || scale < 0 {
            out.push(space.by_addr(addr, leaf_only, ttl));
            addr = addr.wrapping_add(stride);
            pages = pages.saturating_sub((stride / PAGE).max(1));
            continue;
        }
        let shift = 5 * scale as u64 + 1;
        let units = (pages >> shift).min(32);
        if units > 0 {
            let r = RangeOperand {
                asid: asid(space),
                tg: TG_4K,
                scale: scale as u8,
                num: (units - 1) as u8,
                ttl: if (1..=3).contains(&level) { level } else { 0 },
                base: addr / PAGE,
            };
            out.push((space.by_range(leaf_only), r.encode()));
            addr = addr.wrapping_add((units << shift) * PAGE);
            pages -= units << shift;
        }
        scale -= 1;
    }
}

/// Emits `pre`, the operations, `post`.
pub fn sequence(fx: &mut dyn Effects, pre: Barrier, ops: &[(TlbiOp, u64)], post: Barrier) {
    fx.barrier(pre);
    for &(op, operand) in ops {
        fx.tlbi(op, operand);
    }
    fx.barrier(post);
}
