//! Host-managed guest stage 1: TLB maintenance requests handed to a guest
//! shim in registers (the design of elfuse).
//!
//! The host edits a guest's EL1&0 stage 1 tables but does not invalidate
//! the guest's TLB entries itself. Each vCPU has a [`RequestSlot`]; the
//! host adds to it what it changed while serving that vCPU's call, and
//! when the vCPU returns from the call (`HVC`) [`RequestSlot::take`]
//! encodes the request into X8..X11. The guest's EL1 shim then runs the
//! maintenance ([`shim_execute`] is exactly what it runs) before it
//! returns to the code that made the call.
//!
//! # Register encoding
//!
//! | X8 | meaning | X9 | X10 |
//! |----|---------|----|-----|
//! | 0 | nothing to do | - | - |
//! | 1 | broadcast: `TLBI VMALLE1IS` | - | - |
//! | 2 | reserved | - | - |
//! | 3 | selective: `TLBI VAE1IS` per page | first page-aligned VA | page count (1..=16) |
//! | 4 | one range TLBI: `TLBI RVAE1IS, X9` | the encoded range operand | - |
//!
//! X11 is the instruction-cache hint: 1 when some changed mapping was
//! executable, so the shim must run `IC IALLU`; 0 for data-only changes,
//! which skip it.
//!
//! # Merging
//!
//! Requests merge into their bounding union (one VA interval), as elfuse
//! merges them: the registers can carry one interval only. Without
//! FEAT_TLBIRANGE an interval over [`MAX_SELECTIVE`] pages becomes a
//! broadcast; with it, one range operation covers up to 2^21 pages (8 GiB)
//! and throws away far fewer correct entries than `VMALLE1IS` does. A
//! request that no encoding other than broadcast can ever carry (over
//! [`MAX_SELECTIVE`] pages and beyond what one range operation covers)
//! becomes broadcast at once and stays broadcast until taken, whatever is
//! added after it.
//!
//! Slots are per vCPU, not one flag for the guest: a request must be
//! consumed by the vCPU whose call made the change, since that vCPU's
//! return is the point at which the change must be complete. With one
//! shared flag another vCPU may consume it, and the caller returns to code
//! that can still use the stale translation.

use core::fmt;

use crate::caps::Capabilities;
use crate::effects::{Barrier, CacheOp, Effects};
use crate::plan::range::TG_4K;
use crate::report::Change;
use crate::tlbi::{va_operand, RangeOperand, TlbiOp, Ttl};

/// Bytes per page (the guest uses the 4 KiB granule).
pub const PAGE: u64 = 4096;

/// The most pages a selective request names: more become a broadcast.
pub const MAX_SELECTIVE: u64 = 16;

/// X8: no request.
pub const X8_NONE: u64 = 0;
/// X8: invalidate the whole EL1&0 regime of the VMID (`TLBI VMALLE1IS`).
pub const X8_BROADCAST: u64 = 1;
/// X8: reserved (no encoding uses it; the shim rejects it).
pub const X8_RESERVED: u64 = 2;
/// X8: `TLBI VAE1IS` for X10 pages from VA X9.
pub const X8_SELECTIVE: u64 = 3;
/// X8: one `TLBI RVAE1IS` with operand X9.
pub const X8_RANGE: u64 = 4;

/// Page numbers below this are lower-range VAs of a 48-bit address space,
/// which a range operand's BaseADDR (VA\[48:12\]) names unambiguously.
const RANGE_PAGE_LIMIT: u64 = 1 << (48 - 12);

/// The registers the host sets when a vCPU returns from a call, and the
/// shim reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Regs {
    /// The kind of request (`X8_*`).
    pub x8: u64,
    /// Selective: the first page's VA; range: the encoded operand.
    pub x9: u64,
    /// Selective: the page count.
    pub x10: u64,
    /// 1: an executable mapping changed, run `IC IALLU`; 0: data only.
    pub x11: u64,
}

/// A request decoded from [`Regs`], as the shim reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Nothing to do.
    None,
    /// `TLBI VMALLE1IS`.
    Broadcast,
    /// `TLBI VAE1IS` for `count` pages from `va`.
    Pages {
        /// First VA (the page offset is ignored).
        va: u64,
        /// Number of pages.
        count: u64,
    },
    /// `TLBI RVAE1IS` with this operand.
    Range(RangeOperand),
}

/// Registers the shim does not understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShimError {
    /// X8 = 2, the reserved value.
    Reserved,
    /// X8 holds a value no encoding defines.
    Unknown(u64),
}

impl fmt::Display for ShimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShimError::Reserved => write!(f, "X8 = {X8_RESERVED} is reserved"),
            ShimError::Unknown(x8) => write!(f, "X8 = {x8:#x} is not a request"),
        }
    }
}

impl Regs {
    /// What the registers ask for. The X11 hint is read separately
    /// ([`Regs::icache`]).
    ///
    /// # Errors
    /// [`ShimError::Reserved`] for X8 = 2, [`ShimError::Unknown`] for X8
    /// above 4.
    pub const fn decode(&self) -> Result<Request, ShimError> {
        match self.x8 {
            X8_NONE => Ok(Request::None),
            X8_BROADCAST => Ok(Request::Broadcast),
            X8_RESERVED => Err(ShimError::Reserved),
            X8_SELECTIVE => Ok(Request::Pages {
                va: self.x9 & !(PAGE - 1),
                count: self.x10,
            }),
            X8_RANGE => Ok(Request::Range(RangeOperand::decode(self.x9))),
            other => Err(ShimError::Unknown(other)),
        }
    }

    /// Whether the shim must invalidate the instruction cache.
    pub const fn icache(&self) -> bool {
        self.x11 != 0
    }
}

/// The one range operand (4 KiB granule, ASID `asid`, no level hint) that
/// covers the pages `first..=last` (page numbers), starting at `first`:
/// the smallest SCALE whose units fit in 32, as few units as cover. It may
/// cover up to one unit minus one page beyond `last`. `None` when one
/// operation cannot cover them or they are not lower-range VAs of a 48-bit
/// space.
fn range_for_pages(first: u64, last: u64, asid: u16) -> Option<RangeOperand> {
    if first > last || last >= RANGE_PAGE_LIMIT {
        return None;
    }
    let pages = last - first + 1;
    (0..=3u8).find_map(|scale| {
        let units = pages.div_ceil(1 << (5 * scale as u32 + 1));
        (units <= 32).then_some(RangeOperand {
            asid,
            tg: TG_4K,
            scale,
            num: (units - 1) as u8,
            ttl: 0,
            base: first,
        })
    })
}

/// The one range operand that covers `[start_va, end_va)` (see
/// [`RequestSlot::take`] for when the slot uses one), or `None` when one
/// operation cannot, or the range is empty or not in the lower VA range of
/// a 48-bit space.
pub fn covering_range(start_va: u64, end_va: u64, asid: u16) -> Option<RangeOperand> {
    if end_va <= start_va {
        return None;
    }
    range_for_pages(start_va / PAGE, (end_va - 1) / PAGE, asid)
}

/// The pending TLB maintenance of one vCPU: what the host changed in the
/// guest's stage 1 since the vCPU last returned to the guest.
///
/// The host adds to it as it changes the guest's tables and takes it when
/// the vCPU returns; the guest's EL1 shim runs what the registers ask for
/// ([`shim_execute`]):
///
/// ```
/// use vmsa::request::{shim_execute, Request, RequestSlot, X8_SELECTIVE};
/// use vmsa::{Capabilities, Effect, Recorder, TlbiOp};
///
/// let caps = Capabilities::default(); // no FEAT_TLBIRANGE
/// let mut slot = RequestSlot::new();
/// slot.add(0x40_0000, 0x40_2000, false); // two pages unmapped
/// slot.add(0x40_3000, 0x40_4000, false); // and a third, merged
/// let regs = slot.take(&caps, 7);
/// assert!(slot.is_empty());
/// assert_eq!(regs.x8, X8_SELECTIVE);
/// assert_eq!(regs.decode(), Ok(Request::Pages { va: 0x40_0000, count: 4 }));
///
/// let mut fx = Recorder::new();
/// shim_execute(&regs, &caps, 7, &mut fx).unwrap();
/// let vae1is = fx
///     .log()
///     .iter()
///     .filter(|e| matches!(e, Effect::Tlbi { op: TlbiOp::Vae1is, .. }))
///     .count();
/// assert_eq!(vae1is, 4); // the bounding union, page by page
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestSlot {
    /// First and last page number of the bounding union (inclusive).
    pages: Option<(u64, u64)>,
    /// Sticky: only a broadcast can carry the request.
    broadcast: bool,
    /// Some changed mapping was executable.
    exec: bool,
}

impl RequestSlot {
    /// An empty slot.
    pub const fn new() -> Self {
        RequestSlot {
            pages: None,
            broadcast: false,
            exec: false,
        }
    }

    /// Whether nothing is requested.
    pub const fn is_empty(&self) -> bool {
        self.pages.is_none() && !self.broadcast
    }

    /// Whether the request has become a broadcast whatever the CPU can do.
    pub const fn is_broadcast(&self) -> bool {
        self.broadcast
    }

    /// The bounding union `[start, end)` of what was added (`end` 0: up to
    /// the top of the address space); `None` when empty or broadcast.
    pub fn span(&self) -> Option<(u64, u64)> {
        if self.broadcast {
            return None;
        }
        self.pages
            .map(|(first, last)| (first * PAGE, last.wrapping_add(1).wrapping_mul(PAGE)))
    }

    /// Requests invalidation of `[start_va, end_va)` (rounded out to whole
    /// pages; `end_va` 0 means the top of the address space, as in a
    /// [`Change`]), `exec` when the old mappings there were executable.
    /// Merges with what is pending by bounding union; an empty range adds
    /// nothing.
    pub fn add(&mut self, start_va: u64, end_va: u64, exec: bool) {
        let to_top = end_va == 0 && start_va != 0;
        if end_va <= start_va && !to_top {
            return;
        }
        let first = start_va / PAGE;
        let last = end_va.wrapping_sub(1) / PAGE;
        self.exec |= exec;
        if self.broadcast {
            return;
        }
        let (lo, hi) = match self.pages {
            Some((lo, hi)) => (lo.min(first), hi.max(last)),
            None => (first, last),
        };
        self.pages = Some((lo, hi));
        // Over the selective bound and beyond one range operation: nothing
        // but a broadcast can carry it, now or after any later merge (the
        // union only grows).
        let count = (hi - lo).saturating_add(1);
        if count > MAX_SELECTIVE && range_for_pages(lo, hi, 0).is_none() {
            self.broadcast = true;
            self.pages = None;
        }
    }

    /// Requests invalidation of everything (`TLBI VMALLE1IS`), e.g. after
    /// the tables were rebuilt.
    pub fn add_all(&mut self, exec: bool) {
        self.exec |= exec;
        self.broadcast = true;
        self.pages = None;
    }

    /// Requests invalidation of what `changes` (one operation's
    /// [`ChangeReport`](crate::ChangeReport) changes, or a table's
    /// outstanding ones) may have left cached: every change whose old
    /// descriptor was valid and was not already invalidated by
    /// break-before-make. Relaxations are included: the shim has no
    /// spurious-fault path. `exec`: whether any of the old mappings was
    /// executable (a [`Change`] does not say).
    pub fn add_changes(&mut self, changes: &[Change], exec: bool) {
        for c in changes.iter().filter(|c| c.may_leave_stale()) {
            self.add(c.range.start, c.range.end, exec);
        }
    }

    /// Encodes the request for the shim and empties the slot.
    ///
    /// - nothing pending: X8 = 0 (and X9..X11 = 0);
    /// - a single page: X8 = 3 (`VAE1IS` is as cheap as a range);
    /// - several pages with `caps.tlbi_range`, coverable by one operation
    ///   in the lower VA range: X8 = 4, X9 the operand with ASID `asid`
    ///   (it may cover some pages past the end: NUM counts units of
    ///   2^(5 * SCALE + 1) pages);
    /// - otherwise up to [`MAX_SELECTIVE`] pages: X8 = 3, X9 the first page
    ///   VA, X10 the count;
    /// - otherwise X8 = 1.
    ///
    /// X11 = 1 when an executable mapping changed.
    pub fn take(&mut self, caps: &Capabilities, asid: u16) -> Regs {
        let slot = core::mem::take(self);
        let mut regs = Regs {
            x11: slot.exec as u64,
            ..Regs::default()
        };
        match (slot.broadcast, slot.pages) {
            (false, None) => return Regs::default(),
            (true, _) => regs.x8 = X8_BROADCAST,
            (false, Some((first, last))) => {
                let count = (last - first).saturating_add(1);
                let range = if caps.tlbi_range && count > 1 {
                    range_for_pages(first, last, asid)
                } else {
                    None
                };
                if let Some(op) = range {
                    regs.x8 = X8_RANGE;
                    regs.x9 = op.encode();
                } else if count <= MAX_SELECTIVE {
                    regs.x8 = X8_SELECTIVE;
                    regs.x9 = first * PAGE;
                    regs.x10 = count;
                } else {
                    regs.x8 = X8_BROADCAST;
                }
            }
        }
        regs
    }
}

/// What the guest's EL1 shim runs after a call returns, issued through
/// `fx` on the vCPU's PE, for a CPU with `caps`; `asid` is the ASID the
/// guest runs (its TTBR0_EL1.ASID), used for the selective operands.
///
/// - X8 = 0: nothing at all.
/// - X8 = 3: `TLBI VAE1IS` for each of the X10 pages from X9 (no level
///   hint); a count of 0 does nothing (no loop), a count above
///   [`MAX_SELECTIVE`] is run as `TLBI VMALLE1IS`, so the loop never runs
///   more than 16 times.
/// - X8 = 4: `TLBI RVAE1IS, X9`.
/// - X8 = 1: `TLBI VMALLE1IS`.
///
/// Then `DSB ISH` (the TLBIs and it go through
/// [`tlbi::issue`](crate::tlbi::issue): with the repeat-TLBI erratum the
/// last TLBI and the `DSB ISH` again), and when X11 says an executable
/// mapping changed `IC IALLU; DSB ISH`, and finally `ISB`.
///
/// # Errors
/// X8 = 2 or an undefined X8: nothing is run and the error says why.
pub fn shim_execute(
    regs: &Regs,
    caps: &Capabilities,
    asid: u16,
    fx: &mut impl Effects,
) -> Result<(), ShimError> {
    match regs.decode()? {
        Request::None | Request::Pages { count: 0, .. } => return Ok(()),
        Request::Pages { va, count } if count <= MAX_SELECTIVE => {
            crate::tlbi::issue(
                fx,
                caps,
                (0..count).map(|i| {
                    let page = va.wrapping_add(i * PAGE);
                    (TlbiOp::Vae1is, va_operand(asid, page, Ttl::NONE))
                }),
                Barrier::DsbIsh,
            );
        }
        Request::Pages { .. } | Request::Broadcast => {
            crate::tlbi::issue(fx, caps, [(TlbiOp::Vmalle1is, 0)], Barrier::DsbIsh);
        }
        Request::Range(_) => {
            crate::tlbi::issue(fx, caps, [(TlbiOp::Rvae1is, regs.x9)], Barrier::DsbIsh);
        }
    }
    if regs.icache() {
        fx.cache(CacheOp::IcIallu, 0);
        fx.barrier(Barrier::DsbIsh);
    }
    fx.barrier(Barrier::Isb);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effects::{Effect, Recorder};
    use crate::report::{ChangeFlags, LevelSet};

    fn plain() -> Capabilities {
        Capabilities::default()
    }

    fn ranged() -> Capabilities {
        Capabilities::armv8_4()
    }

    fn run(regs: &Regs, asid: u16) -> (Result<(), ShimError>, Vec<Effect>) {
        let mut rec = Recorder::new();
        let r = shim_execute(regs, &plain(), asid, &mut rec);
        (r, rec.take())
    }

    const TAIL: [Effect; 2] = [
        Effect::Barrier(Barrier::DsbIsh),
        Effect::Barrier(Barrier::Isb),
    ];

    #[test]
    fn request_one_page_is_selective() {
        let mut s = RequestSlot::new();
        s.add(0x4000_3000, 0x4000_4000, false);
        // One page: X8 = 3, X9 the page, X10 = 1, even with ranges.
        let regs = s.take(&ranged(), 3);
        assert_eq!(
            regs,
            Regs {
                x8: 3,
                x9: 0x4000_3000,
                x10: 1,
                x11: 0
            }
        );
        assert!(s.is_empty());
        // The shim's operand, TLBI VAE1IS: ASID [63:48] = 3, TTL [47:44] =
        // 0, VA[55:12] [43:0] = 0x4000_3000 >> 12 = 0x40003.
        let (r, log) = run(&regs, 3);
        assert_eq!(r, Ok(()));
        assert_eq!(
            log,
            [
                Effect::Tlbi {
                    op: TlbiOp::Vae1is,
                    operand: 0x0003_0000_0004_0003
                },
                TAIL[0],
                TAIL[1]
            ]
        );
    }

    #[test]
    fn request_range_operands_by_hand() {
        // 3 pages at 0x1000, ASID 5. Range operand (TLBI RVAE1IS): SCALE 0
        // counts units of 2^(5*0+1) = 2 pages, so 3 pages need 2 units:
        // NUM = 1 (covers 4 pages, 0x1000..0x5000). BaseADDR = 0x1000 >> 12
        // = 1, TTL 0.
        //   ASID 5 << 48    = 0x0005_0000_0000_0000
        //   TG 0b01 << 46   = 0x0000_4000_0000_0000
        //   SCALE 0 << 44   = 0
        //   NUM 1 << 39     = 0x0000_0080_0000_0000
        //   TTL 0 << 37     = 0
        //   BaseADDR 1      = 0x0000_0000_0000_0001
        //   X9              = 0x0005_4080_0000_0001
        let mut s = RequestSlot::new();
        s.add(0x1000, 0x4000, false);
        let regs = s.take(&ranged(), 5);
        assert_eq!((regs.x8, regs.x9, regs.x10), (4, 0x0005_4080_0000_0001, 0));
        let (r, log) = run(&regs, 5);
        assert_eq!(r, Ok(()));
        assert_eq!(
            log[0],
            Effect::Tlbi {
                op: TlbiOp::Rvae1is,
                operand: 0x0005_4080_0000_0001
            }
        );
        assert_eq!(log[1..], TAIL);

        // Without FEAT_TLBIRANGE the same request is selective.
        s.add(0x1000, 0x4000, false);
        assert_eq!(
            s.take(&plain(), 5),
            Regs {
                x8: 3,
                x9: 0x1000,
                x10: 3,
                x11: 0
            }
        );

        // 2 pages at 0x4000_0000, ASID 7: one unit of 2, NUM 0; BaseADDR
        // 0x4000_0000 >> 12 = 0x40000.
        //   7 << 48 | 1 << 46 | 0x40000 = 0x0007_4000_0004_0000
        s.add(0x4000_0000, 0x4000_2000, false);
        assert_eq!(s.take(&ranged(), 7).x9, 0x0007_4000_0004_0000);

        // 64 pages at 0x20_0000, ASID 1: 32 units of 2 at SCALE 0, NUM 31;
        // BaseADDR 0x200.
        //   1 << 48         = 0x0001_0000_0000_0000
        //   1 << 46         = 0x0000_4000_0000_0000
        //   31 << 39        = 0x0000_0f80_0000_0000
        //   X9              = 0x0001_4f80_0000_0200
        s.add(0x20_0000, 0x20_0000 + 64 * PAGE, false);
        assert_eq!(s.take(&ranged(), 1).x9, 0x0001_4f80_0000_0200);

        // 65 pages: 33 units of 2 do not fit NUM; SCALE 1 counts units of
        // 2^6 = 64 pages: 2 units, NUM 1 (covers 128 pages).
        //   1 << 48 | 1 << 46 | 1 << 44 (0x1000_0000_0000) | 1 << 39
        //   (0x80_0000_0000) | 0x200 = 0x0001_5080_0000_0200
        s.add(0x20_0000, 0x20_0000 + 65 * PAGE, false);
        assert_eq!(s.take(&ranged(), 1).x9, 0x0001_5080_0000_0200);

        // The encoder alone, and the layout read back.
        let op = covering_range(0x20_0000, 0x20_0000 + 65 * PAGE, 1).unwrap();
        assert_eq!((op.scale, op.num, op.base, op.pages()), (1, 1, 0x200, 128));
        assert_eq!(op.encode(), 0x0001_5080_0000_0200);
        // Largest: NUM 31, SCALE 3 = 32 * 2^16 pages = 8 GiB.
        assert!(covering_range(0, 8 << 30, 0).is_some());
        assert!(covering_range(0, (8 << 30) + PAGE, 0).is_none());
        // Upper-range VAs are not given to a range operand.
        assert!(covering_range(0xffff_0000_0000_0000, 0xffff_0000_0000_2000, 0).is_none());
        assert!(covering_range(0x1000, 0x1000, 0).is_none());
    }

    #[test]
    fn request_merges_by_bounding_union() {
        let mut s = RequestSlot::new();
        s.add(0x9000, 0xb000, false);
        s.add(0x5000, 0x6000, false);
        // An unaligned range rounds out to whole pages: 0x7800..0x7801 is
        // the page 0x7000, inside the union already.
        s.add(0x7800, 0x7801, false);
        // Empty ranges add nothing.
        s.add(0x10_0000, 0x10_0000, false);
        assert_eq!(s.span(), Some((0x5000, 0xb000)));
        // Union 0x5000..0xb000 = 6 pages.
        assert_eq!(
            s.take(&plain(), 0),
            Regs {
                x8: 3,
                x9: 0x5000,
                x10: 6,
                x11: 0
            }
        );
        assert_eq!(s.take(&plain(), 0), Regs::default());
    }

    #[test]
    fn request_over_sixteen_pages_is_broadcast_and_sticky() {
        let mut s = RequestSlot::new();
        // Exactly 16 pages is still selective.
        s.add(0, 16 * PAGE, false);
        assert_eq!(
            s.take(&plain(), 0),
            Regs {
                x8: 3,
                x9: 0,
                x10: 16,
                x11: 0
            }
        );
        // 17 pages: broadcast without ranges, and it stays so as more is
        // added (the union only grows).
        s.add(0, 16 * PAGE, false);
        s.add(16 * PAGE, 17 * PAGE, false);
        s.add(0x3000, 0x4000, false);
        let mut ranged_slot = s.clone();
        assert_eq!(
            s.take(&plain(), 0),
            Regs {
                x8: 1,
                ..Regs::default()
            }
        );
        // With ranges the same 17 pages are one operation: 9 units of 2
        // pages at SCALE 0, NUM 8, BaseADDR 0:
        //   1 << 46 | 8 << 39 = 0x4000_0000_0000 | 0x400_0000_0000
        //                     = 0x0000_4400_0000_0000
        assert_eq!(
            ranged_slot.take(&ranged(), 0),
            Regs {
                x8: 4,
                x9: 0x0000_4400_0000_0000,
                ..Regs::default()
            }
        );
        // Beyond what any encoding but broadcast carries (a union reaching
        // the upper VA range): broadcast at once, and a later small request
        // does not bring the interval back.
        s.add(0x1000, 0x2000, false);
        s.add(0xffff_0000_0000_0000, 0xffff_0000_0000_1000, false);
        assert!(s.is_broadcast() && s.span().is_none());
        s.add(0x1000, 0x2000, false);
        assert!(s.is_broadcast());
        assert_eq!(s.take(&ranged(), 0).x8, X8_BROADCAST);
        // A range to the top of the space (end 0).
        s.add(0xffff_ffff_ffe0_0000, 0, false);
        assert!(s.is_broadcast());
        s.add_all(false);
        assert_eq!(s.take(&plain(), 0).x8, 1);
        assert!(s.is_empty());
    }

    #[test]
    fn request_icache_hint() {
        let mut s = RequestSlot::new();
        s.add(0x1000, 0x2000, false);
        s.add(0x2000, 0x3000, true);
        s.add(0x3000, 0x4000, false);
        let regs = s.take(&plain(), 2);
        assert_eq!(
            regs,
            Regs {
                x8: 3,
                x9: 0x1000,
                x10: 3,
                x11: 1
            }
        );
        let (r, log) = run(&regs, 2);
        assert_eq!(r, Ok(()));
        // VAE1IS operands: 2 << 48 | page >> 12.
        let want = [
            Effect::Tlbi {
                op: TlbiOp::Vae1is,
                operand: 0x0002_0000_0000_0001,
            },
            Effect::Tlbi {
                op: TlbiOp::Vae1is,
                operand: 0x0002_0000_0000_0002,
            },
            Effect::Tlbi {
                op: TlbiOp::Vae1is,
                operand: 0x0002_0000_0000_0003,
            },
            Effect::Barrier(Barrier::DsbIsh),
            Effect::Cache {
                op: CacheOp::IcIallu,
                addr: 0,
            },
            Effect::Barrier(Barrier::DsbIsh),
            Effect::Barrier(Barrier::Isb),
        ];
        assert_eq!(log, want);
        // The hint survives a broadcast; data-only requests clear it.
        s.add(0, 64 * PAGE, true);
        assert_eq!(
            s.take(&plain(), 2),
            Regs {
                x8: 1,
                x11: 1,
                ..Regs::default()
            }
        );
        s.add(0, PAGE, false);
        assert_eq!(s.take(&plain(), 2).x11, 0);
    }

    #[test]
    fn request_upper_range_pages() {
        // TTBR1 addresses: selective even with ranges. The shim's operand:
        // 0xffff_0000_0000_0000 >> 12 = 0x000f_fff0_0000_0000, masked to
        // VA[55:12] (44 bits) = 0x0000_0ff0_0000_0000; ASID 2 << 48.
        let mut s = RequestSlot::new();
        s.add(0xffff_0000_0000_0000, 0xffff_0000_0000_2000, false);
        let regs = s.take(&ranged(), 2);
        assert_eq!((regs.x8, regs.x9, regs.x10), (3, 0xffff_0000_0000_0000, 2));
        let (_, log) = run(&regs, 2);
        assert_eq!(
            log[..2],
            [
                Effect::Tlbi {
                    op: TlbiOp::Vae1is,
                    operand: 0x0002_0ff0_0000_0000
                },
                Effect::Tlbi {
                    op: TlbiOp::Vae1is,
                    operand: 0x0002_0ff0_0000_0001
                }
            ]
        );
    }

    #[test]
    fn request_shim_guards() {
        // X8 = 0: nothing, whatever the other registers hold.
        let (r, log) = run(
            &Regs {
                x8: 0,
                x9: 0x1000,
                x10: 3,
                x11: 1,
            },
            0,
        );
        assert_eq!((r, log.len()), (Ok(()), 0));
        // Selective with a zero count: no TLBI, no loop, nothing.
        let (r, log) = run(
            &Regs {
                x8: 3,
                x9: 0x1000,
                x10: 0,
                x11: 0,
            },
            0,
        );
        assert_eq!((r, log.len()), (Ok(()), 0));
        // A count over 16 (never encoded): one VMALLE1IS, not a long loop.
        let (r, log) = run(
            &Regs {
                x8: 3,
                x9: 0x1000,
                x10: u64::MAX,
                x11: 0,
            },
            0,
        );
        assert_eq!(r, Ok(()));
        assert_eq!(
            log,
            [
                Effect::Tlbi {
                    op: TlbiOp::Vmalle1is,
                    operand: 0
                },
                TAIL[0],
                TAIL[1]
            ]
        );
        // Broadcast.
        let (r, log) = run(
            &Regs {
                x8: 1,
                ..Regs::default()
            },
            0,
        );
        assert_eq!(r, Ok(()));
        assert_eq!(log.len(), 3);
        // Reserved and undefined values: an error and nothing run.
        let (r, log) = run(
            &Regs {
                x8: 2,
                ..Regs::default()
            },
            0,
        );
        assert_eq!((r, log.len()), (Err(ShimError::Reserved), 0));
        let (r, log) = run(
            &Regs {
                x8: 9,
                x11: 1,
                ..Regs::default()
            },
            0,
        );
        assert_eq!((r, log.len()), (Err(ShimError::Unknown(9)), 0));
    }

    #[test]
    fn request_shim_repeats_the_last_tlbi_with_the_erratum() {
        let caps = Capabilities {
            repeat_tlbi: true,
            ..plain()
        };
        let vae1is = |page: u64| Effect::Tlbi {
            op: TlbiOp::Vae1is,
            operand: 0x0002_0000_0000_0000 | page,
        };
        let dsb = Effect::Barrier(Barrier::DsbIsh);
        let isb = Effect::Barrier(Barrier::Isb);
        let vmalle1is = Effect::Tlbi {
            op: TlbiOp::Vmalle1is,
            operand: 0,
        };
        let rvae1is = Effect::Tlbi {
            op: TlbiOp::Rvae1is,
            operand: 0x0005_4080_0000_0001,
        };
        let ic = Effect::Cache {
            op: CacheOp::IcIallu,
            addr: 0,
        };
        let cases = [
            // Selective, 3 pages from 0x1000, ASID 2, with the I-cache
            // hint: the last page again, before the IC IALLU.
            (
                Regs {
                    x8: X8_SELECTIVE,
                    x9: 0x1000,
                    x10: 3,
                    x11: 1,
                },
                2,
                vec![
                    vae1is(1),
                    vae1is(2),
                    vae1is(3),
                    dsb,
                    vae1is(3),
                    dsb,
                    ic,
                    dsb,
                    isb,
                ],
            ),
            (
                Regs {
                    x8: X8_BROADCAST,
                    ..Regs::default()
                },
                0,
                vec![vmalle1is, dsb, vmalle1is, dsb, isb],
            ),
            (
                Regs {
                    x8: X8_RANGE,
                    x9: 0x0005_4080_0000_0001,
                    ..Regs::default()
                },
                5,
                vec![rvae1is, dsb, rvae1is, dsb, isb],
            ),
        ];
        for (regs, asid, want) in cases {
            let mut rec = Recorder::new();
            assert_eq!(shim_execute(&regs, &caps, asid, &mut rec), Ok(()));
            assert_eq!(rec.take(), want, "{regs:?}");
        }
        // Nothing to do is still nothing.
        let mut rec = Recorder::new();
        let nothing = Regs {
            x8: X8_SELECTIVE,
            x9: 0x1000,
            x10: 0,
            x11: 0,
        };
        assert_eq!(shim_execute(&nothing, &caps, 0, &mut rec), Ok(()));
        assert!(rec.log().is_empty());
    }

    #[test]
    fn request_from_changes() {
        let change = |start: u64, end: u64, flags: ChangeFlags| Change {
            range: start..end,
            level: 3,
            flags,
            cached_leaf_levels: LevelSet::only(3),
        };
        let unmapped = ChangeFlags::WAS_VALID | ChangeFlags::OUTPUT_CHANGED;
        let mut s = RequestSlot::new();
        s.add_changes(
            &[
                // New mappings and break-before-make done: nothing cached.
                change(0x10_0000, 0x20_0000, ChangeFlags::IS_VALID),
                change(
                    0x30_0000,
                    0x30_1000,
                    unmapped | ChangeFlags::BBM_DONE | ChangeFlags::IS_VALID,
                ),
                // Unmapped pages and a relaxation: requested.
                change(0x4000, 0x6000, unmapped),
                change(
                    0x8000,
                    0x9000,
                    ChangeFlags::WAS_VALID | ChangeFlags::IS_VALID | ChangeFlags::RELAXED,
                ),
            ],
            false,
        );
        assert_eq!(s.span(), Some((0x4000, 0x9000)));
        assert_eq!(
            s.take(&plain(), 0),
            Regs {
                x8: 3,
                x9: 0x4000,
                x10: 5,
                x11: 0
            }
        );
        // Nothing stale: nothing requested.
        s.add_changes(&[change(0, 0x1000, ChangeFlags::IS_VALID)], true);
        assert!(s.is_empty());
        assert_eq!(s.take(&ranged(), 0), Regs::default());
    }
}
