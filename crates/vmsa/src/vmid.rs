//! VMID and ASID allocation with generations.
//!
//! A TLB entry is tagged with the VMID (and, at stage 1, the ASID) of the
//! address space it was cached for. A tag may therefore be handed to a new
//! address space only once no entry of its previous owner can remain in any
//! TLB. The allocator here makes that cheap with *generations* (the scheme
//! of Linux's arm64 ASID allocator and KVM's VMID allocator):
//!
//! - Tags are handed out from a bitmap, each one at most once per
//!   generation. Nothing is ever given back within a generation.
//! - When the bitmap is full, the allocator *rolls over*: it starts a new
//!   generation with an empty bitmap. Every tag of the old generation is
//!   then invalid, and one broadcast invalidation of everything
//!   ([`TagAllocator::rollover_flush`]: `TLBI ALLE1IS; DSB ISH` for VMIDs,
//!   `TLBI VMALLE1IS; DSB ISH` for the ASIDs of one VMID) removes every
//!   entry any old owner left behind. That single TLBI is the whole cost of
//!   reuse.
//! - Tags running on a PE at the rollover are *kept*: they are marked used
//!   in the new generation and their owners get them back at their next
//!   [`alloc`](TagAllocator::alloc). The PE keeps running without a TLBI
//!   of its own, and no other address space can be given that tag.
//!
//! # Destroying an address space costs no TLBI
//!
//! [`TagAllocator::retire`] does not return the tag to the pool: it stays
//! marked used until the next rollover, and the rollover's flush completes
//! before the tag is handed out again. So once no PE runs the address space
//! (its VTTBR_EL2 / TTBR parked, [`TagAllocator::clear_active`] called),
//! its tables may be freed at once, root first, with no TLBI at all: the
//! entries it leaves in TLBs carry a tag nobody uses, walk caches cannot
//! be used to walk the freed pages because no PE translates with that tag,
//! and they are all gone before the tag has a new owner. (This is the
//! "dead pmap" optimisation done safely: the unsafe version gives the tag
//! back to the free pool while stale entries for it may remain.)
//!
//! For ASIDs this holds for non-global entries only: a stage 1 entry from a
//! descriptor with nG = 0 matches every ASID, so global mappings still need
//! their own invalidation when they are removed.
//!
//! # Reserved tag 0
//!
//! Tag 0 is never handed out. For VMIDs it is the host's (KVM runs the host
//! with VMID 0, and `VTTBR_EL2` holding 0 is how a parked PE looks); for
//! ASIDs it is the one Linux keeps for the kernel's reserved `TTBR0` and
//! the idle task. An 8-bit allocator thus has 255 tags per generation, a
//! 16-bit one 65535.
//!
//! # Example: a VM's life
//!
//! ```
//! use vmsa::vmid::{TagAllocator, TagSlot};
//! use vmsa::{Capabilities, Recorder};
//!
//! // 8-bit VMIDs (VTCR_EL2.VS = 0), 4 PEs.
//! let caps = Capabilities { vmid_bits: 8, ..Capabilities::default() };
//! let mut vmids = TagAllocator::vmids(caps.vmid_bits, 4)?;
//! let mut fx = Recorder::new();
//!
//! // vcpu_load on PE 0: get a VMID of the current generation, run it.
//! let mut vm = TagSlot::new();
//! let got = vmids.activate(0, &mut vm)?;
//! if got.rollover {
//!     vmids.rollover_flush(&caps, &mut fx); // before any new tag is used
//! }
//! assert_eq!(got.tag, 1);
//! // ... VTTBR_EL2 = got.tag << 48 | root ...
//!
//! // The VM is destroyed: PE 0 parks VTTBR_EL2, then the VMID is retired
//! // and the tables freed with no TLBI.
//! vmids.clear_active(0)?;
//! assert_eq!(vmids.retire(&mut vm)?, Some(1));
//! // VMID 1 is not handed out again in this generation.
//! let mut next = TagSlot::new();
//! assert_eq!(vmids.alloc(&mut next).tag, 2);
//! assert_eq!(fx.tlbi_count(), 0);
//! # Ok::<(), vmsa::vmid::AllocError>(())
//! ```

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::caps::Capabilities;
use crate::effects::{Barrier, Effects};
use crate::tlbi::TlbiOp;

/// What the tags name: this decides the rollover flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagKind {
    /// VMIDs (`VTTBR_EL2.VMID`): a rollover is flushed with
    /// `TLBI ALLE1IS; DSB ISH`, every EL1&0 entry of every VMID.
    Vmid,
    /// ASIDs of one VMID (`TTBRn_EL1.ASID`): a rollover is flushed with
    /// `TLBI VMALLE1IS; DSB ISH`, every stage 1 entry of the VMID in the
    /// issuer's `VTTBR_EL2`.
    Asid,
}

impl TagKind {
    /// Emits the invalidation a rollover needs before any tag of the new
    /// generation is used: `TLBI ALLE1IS` (VMIDs) or `TLBI VMALLE1IS`
    /// (ASIDs, issued with the VMID they belong to in `VTTBR_EL2`), then
    /// `DSB ISH`, after which it has taken effect on every PE of the Inner
    /// Shareable domain. Issued through [`tlbi::issue`](crate::tlbi::issue)
    /// with `caps`: with the repeat-TLBI erratum
    /// ([`Capabilities::repeat_tlbi`]) the TLBI and the DSB are issued
    /// again.
    ///
    /// ```
    /// use vmsa::vmid::TagKind;
    /// use vmsa::{Barrier, Capabilities, Effect, Recorder, TlbiOp};
    /// let mut fx = Recorder::new();
    /// TagKind::Vmid.rollover_flush(&Capabilities::default(), &mut fx);
    /// assert_eq!(
    ///     fx.log(),
    ///     &[
    ///         Effect::Tlbi { op: TlbiOp::Alle1is, operand: 0 },
    ///         Effect::Barrier(Barrier::DsbIsh),
    ///     ]
    /// );
    /// ```
    pub fn rollover_flush<E: Effects + ?Sized>(self, caps: &Capabilities, fx: &mut E) {
        crate::tlbi::issue(fx, caps, [(self.flush_op(), 0)], Barrier::DsbIsh);
    }

    /// The TLBI of the rollover flush.
    pub const fn flush_op(self) -> TlbiOp {
        match self {
            TagKind::Vmid => TlbiOp::Alle1is,
            TagKind::Asid => TlbiOp::Vmalle1is,
        }
    }
}

/// Why an allocator could not be built or a call was refused. A refused
/// call changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocError {
    /// Tags are 8 or 16 bits wide (16-bit VMIDs need FEAT_VMID16 and
    /// `VTCR_EL2.VS`; 16-bit ASIDs `TCR_ELx.AS`).
    UnsupportedWidth {
        /// The width asked for.
        bits: u8,
    },
    /// Every PE may keep its running tag across a rollover, so there must
    /// be more tags than PEs (and at least one PE).
    TooManyPes {
        /// PEs asked for.
        pes: usize,
        /// Tags per generation (tag 0 is reserved).
        tags: u32,
    },
    /// A PE number beyond those the allocator was built for.
    NoSuchPe {
        /// The PE asked for.
        pe: usize,
        /// PEs the allocator tracks.
        pes: usize,
    },
    /// The slot holds no tag of the current generation: call
    /// [`TagAllocator::alloc`] first.
    Stale,
    /// The address space still runs on a PE (it is its active tag), so it
    /// cannot be retired: park the PE and call
    /// [`TagAllocator::clear_active`] first.
    Running {
        /// A PE running it.
        pe: usize,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AllocError::UnsupportedWidth { bits } => {
                write!(f, "{bits}-bit tags are not supported (8 or 16)")
            }
            AllocError::TooManyPes { pes, tags } => write!(
                f,
                "{pes} PEs need more than the {tags} tags a generation has (or none at all)"
            ),
            AllocError::NoSuchPe { pe, pes } => {
                write!(f, "PE {pe} is not one of the {pes} PEs tracked")
            }
            AllocError::Stale => write!(f, "the tag is not of the current generation"),
            AllocError::Running { pe } => write!(f, "the address space still runs on PE {pe}"),
        }
    }
}

impl core::error::Error for AllocError {}

/// An address space's claim on a tag: the tag it was last given and the
/// generation it was given in. Keep one per VM (for VMIDs) or per process
/// (for ASIDs); a new one holds no tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TagSlot {
    /// 0: never assigned (or retired). Generations start at 1.
    generation: u64,
    tag: u16,
}

impl TagSlot {
    /// A slot that holds no tag.
    pub const fn new() -> Self {
        TagSlot {
            generation: 0,
            tag: 0,
        }
    }

    /// The tag last assigned, whatever its generation (`None` if never
    /// assigned or retired). Use [`TagAllocator::current`] to know whether
    /// it may still be used.
    pub const fn tag(&self) -> Option<u16> {
        if self.generation == 0 {
            None
        } else {
            Some(self.tag)
        }
    }

    /// The generation the tag was assigned in (0: none).
    pub const fn generation(&self) -> u64 {
        self.generation
    }
}

/// What [`TagAllocator::alloc`] gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Assigned {
    /// The tag, of the current generation.
    pub tag: u16,
    /// A new generation began: before this tag, or any tag assigned after
    /// it, is installed on any PE, the caller must perform
    /// [`TagAllocator::rollover_flush`] (without releasing the lock that
    /// serialises allocation).
    pub rollover: bool,
}

/// A VMID or ASID allocator with generations: see the [module
/// documentation](self).
///
/// The allocator is not synchronised: callers serialise calls (KVM holds
/// `cpu_vmid_lock`), including the rollover flush.
#[derive(Clone, Debug)]
pub struct TagAllocator {
    kind: TagKind,
    bits: u8,
    /// Current generation, from 1.
    generation: u64,
    /// Bit `t` set: tag `t` is used in this generation (bit 0 always).
    used: Vec<u64>,
    /// Tags marked used in this generation, not counting tag 0.
    in_use: u32,
    /// Next tag to try: every tag below it is used.
    cursor: u32,
    /// Per PE: the slot (as it was when it was activated) whose tag the PE
    /// runs.
    active: Vec<Option<TagSlot>>,
    /// Slots whose tags were kept at the last rollover, not yet reclaimed.
    kept: Vec<TagSlot>,
    rollovers: u64,
}

impl TagAllocator {
    /// An allocator of `bits`-bit tags (8 or 16) of `kind` for `pes` PEs.
    ///
    /// # Errors
    /// [`AllocError::UnsupportedWidth`] for widths other than 8 and 16;
    /// [`AllocError::TooManyPes`] unless `1 <= pes < 2^bits - 1`.
    ///
    /// ```
    /// use vmsa::vmid::{AllocError, TagAllocator, TagKind};
    /// assert!(TagAllocator::new(TagKind::Vmid, 16, 8).is_ok());
    /// assert_eq!(
    ///     TagAllocator::new(TagKind::Vmid, 12, 8).unwrap_err(),
    ///     AllocError::UnsupportedWidth { bits: 12 }
    /// );
    /// assert_eq!(
    ///     TagAllocator::new(TagKind::Asid, 8, 255).unwrap_err(),
    ///     AllocError::TooManyPes { pes: 255, tags: 255 }
    /// );
    /// ```
    pub fn new(kind: TagKind, bits: u8, pes: usize) -> Result<Self, AllocError> {
        if bits != 8 && bits != 16 {
            return Err(AllocError::UnsupportedWidth { bits });
        }
        let tags = (1u32 << bits) - 1;
        if pes == 0 || pes >= tags as usize {
            return Err(AllocError::TooManyPes { pes, tags });
        }
        let words = (1usize << bits) / 64;
        let mut a = TagAllocator {
            kind,
            bits,
            generation: 1,
            used: vec![0; words],
            in_use: 0,
            cursor: 1,
            active: vec![None; pes],
            kept: Vec::new(),
            rollovers: 0,
        };
        a.used[0] = 1;
        Ok(a)
    }

    /// A VMID allocator (`bits` 16 only with FEAT_VMID16 and
    /// `VTCR_EL2.VS` set).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn vmids(bits: u8, pes: usize) -> Result<Self, AllocError> {
        Self::new(TagKind::Vmid, bits, pes)
    }

    /// A VMID allocator whose width follows `VTCR_EL2.VS` (bit 19) in
    /// `vtcr`: 16 bits when set, 8 otherwise.
    ///
    /// ```
    /// use vmsa::vmid::TagAllocator;
    /// assert_eq!(TagAllocator::vmids_for_vtcr(1 << 19, 4)?.bits(), 16);
    /// assert_eq!(TagAllocator::vmids_for_vtcr(0x8000_3558, 4)?.bits(), 8);
    /// # Ok::<(), vmsa::vmid::AllocError>(())
    /// ```
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn vmids_for_vtcr(vtcr: u64, pes: usize) -> Result<Self, AllocError> {
        Self::vmids(if vtcr >> 19 & 1 == 1 { 16 } else { 8 }, pes)
    }

    /// An allocator for the ASIDs of one VMID (`bits` 16 only with
    /// `TCR_ELx.AS` set).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn asids(bits: u8, pes: usize) -> Result<Self, AllocError> {
        Self::new(TagKind::Asid, bits, pes)
    }

    /// What the tags name.
    pub fn kind(&self) -> TagKind {
        self.kind
    }

    /// Tag width in bits.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Tags a generation has: `2^bits - 1` (tag 0 is reserved).
    pub fn tags(&self) -> u32 {
        (1u32 << self.bits) - 1
    }

    /// Number of PEs tracked.
    pub fn pes(&self) -> usize {
        self.active.len()
    }

    /// The current generation (the first is 1).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Rollovers so far.
    pub fn rollovers(&self) -> u64 {
        self.rollovers
    }

    /// Tags marked used in the current generation: assigned, retired or
    /// kept for a PE at the rollover.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Whether `slot` holds a tag of the current generation, which may be
    /// installed without calling [`alloc`](Self::alloc) again.
    pub fn current(&self, slot: &TagSlot) -> bool {
        slot.generation != 0 && slot.generation == self.generation
    }

    /// Gives `slot` a tag of the current generation:
    ///
    /// - its tag, if it is of the current generation or was kept at the
    ///   last rollover because a PE was running it;
    /// - otherwise the next free tag;
    /// - if there is none, the allocator rolls over (new generation, every
    ///   tag free but those running on a PE) and the result says so: the
    ///   caller must then [flush](Self::rollover_flush) before any tag
    ///   assigned from now on is used.
    ///
    /// ```
    /// use vmsa::vmid::{TagAllocator, TagSlot};
    /// let mut asids = TagAllocator::asids(8, 2)?;
    /// let mut slots = [TagSlot::new(); 256];
    /// for (i, s) in slots.iter_mut().enumerate().take(255) {
    ///     let got = asids.alloc(s);
    ///     assert_eq!((got.tag, got.rollover), (i as u16 + 1, false));
    /// }
    /// // The 256th address space finds every tag used: rollover.
    /// let got = asids.alloc(&mut slots[255]);
    /// assert_eq!((got.tag, got.rollover), (1, true));
    /// # Ok::<(), vmsa::vmid::AllocError>(())
    /// ```
    pub fn alloc(&mut self, slot: &mut TagSlot) -> Assigned {
        if self.current(slot) {
            return Assigned {
                tag: slot.tag,
                rollover: false,
            };
        }
        if slot.generation != 0 {
            if let Some(i) = self.kept.iter().position(|k| k == slot) {
                // A PE ran it across the rollover: the tag is already marked
                // used in this generation and nobody else can have it.
                self.kept.swap_remove(i);
                let new = TagSlot {
                    generation: self.generation,
                    tag: slot.tag,
                };
                for a in self.active.iter_mut().flatten() {
                    if a == slot {
                        *a = new;
                    }
                }
                *slot = new;
                return Assigned {
                    tag: new.tag,
                    rollover: false,
                };
            }
        }
        let (tag, rollover) = match self.take_free() {
            Some(t) => (t, false),
            None => {
                self.roll_over();
                // At most `pes` tags are kept and `new` made sure there are
                // more tags than PEs, so one is free.
                match self.take_free() {
                    Some(t) => (t, true),
                    None => unreachable!("a generation has more tags than PEs"),
                }
            }
        };
        *slot = TagSlot {
            generation: self.generation,
            tag,
        };
        Assigned { tag, rollover }
    }

    /// [`alloc`](Self::alloc), then records that PE `pe` runs the tag (what
    /// a `vcpu_load` or context switch does before writing the base
    /// register).
    ///
    /// # Errors
    /// [`AllocError::NoSuchPe`]; nothing is assigned then.
    pub fn activate(&mut self, pe: usize, slot: &mut TagSlot) -> Result<Assigned, AllocError> {
        self.check_pe(pe)?;
        let got = self.alloc(slot);
        self.active[pe] = Some(*slot);
        Ok(got)
    }

    /// Records that PE `pe` now runs `slot`'s tag. A rollover keeps it for
    /// `slot` for as long as the PE runs it.
    ///
    /// # Errors
    /// [`AllocError::NoSuchPe`]; [`AllocError::Stale`] if the slot's tag is
    /// not of the current generation (call [`alloc`](Self::alloc) first).
    pub fn set_active(&mut self, pe: usize, slot: &TagSlot) -> Result<u16, AllocError> {
        self.check_pe(pe)?;
        if !self.current(slot) {
            return Err(AllocError::Stale);
        }
        self.active[pe] = Some(*slot);
        Ok(slot.tag)
    }

    /// Records that PE `pe` runs no tag of this allocator any more (its
    /// base register is parked, or holds the reserved tag 0). Returns the
    /// tag it ran.
    ///
    /// # Errors
    /// [`AllocError::NoSuchPe`].
    pub fn clear_active(&mut self, pe: usize) -> Result<Option<u16>, AllocError> {
        self.check_pe(pe)?;
        Ok(self.active[pe].take().map(|s| s.tag))
    }

    /// The tag PE `pe` runs, if any (`None` also for an unknown PE).
    pub fn active(&self, pe: usize) -> Option<u16> {
        self.active.get(pe).copied().flatten().map(|s| s.tag)
    }

    /// The address space of `slot` is destroyed. Its tag is *not* freed:
    /// it stays used until the next rollover, whose flush removes every
    /// entry it left before the tag can have a new owner. So its tables
    /// may be freed at once without any TLBI, once no PE runs it. The slot
    /// is emptied; returns the tag it held in the current generation, if
    /// any.
    ///
    /// # Errors
    /// [`AllocError::Running`] if a PE still runs it (see
    /// [`clear_active`](Self::clear_active)); nothing changes then.
    pub fn retire(&mut self, slot: &mut TagSlot) -> Result<Option<u16>, AllocError> {
        if slot.generation == 0 {
            return Ok(None);
        }
        if let Some(pe) = self.active.iter().position(|a| a.as_ref() == Some(&*slot)) {
            return Err(AllocError::Running { pe });
        }
        let held = if self.current(slot) {
            Some(slot.tag)
        } else if let Some(i) = self.kept.iter().position(|k| k == slot) {
            // Kept at the rollover and never reclaimed: the tag stays used
            // in this generation all the same.
            self.kept.swap_remove(i);
            Some(slot.tag)
        } else {
            None
        };
        *slot = TagSlot::new();
        Ok(held)
    }

    /// Emits the rollover's invalidation (see [`TagKind::rollover_flush`]):
    /// `TLBI ALLE1IS; DSB ISH` for VMIDs, `TLBI VMALLE1IS; DSB ISH` for
    /// ASIDs, with the errata workarounds `caps` asks for. Call it whenever
    /// [`alloc`](Self::alloc) reports a rollover, before any tag of the new
    /// generation is installed.
    pub fn rollover_flush<E: Effects + ?Sized>(&self, caps: &Capabilities, fx: &mut E) {
        self.kind.rollover_flush(caps, fx)
    }

    fn check_pe(&self, pe: usize) -> Result<(), AllocError> {
        if pe < self.active.len() {
            Ok(())
        } else {
            Err(AllocError::NoSuchPe {
                pe,
                pes: self.active.len(),
            })
        }
    }

    fn is_used(&self, tag: u32) -> bool {
        self.used[(tag / 64) as usize] >> (tag % 64) & 1 == 1
    }

    fn mark(&mut self, tag: u32) {
        if !self.is_used(tag) {
            self.used[(tag / 64) as usize] |= 1 << (tag % 64);
            self.in_use += 1;
        }
    }

    /// The first free tag at or after the cursor, marked used. Tags are
    /// never freed within a generation, so none below the cursor is free.
    fn take_free(&mut self) -> Option<u16> {
        let mut t = self.cursor;
        let end = 1u32 << self.bits;
        while t < end {
            let word = self.used[(t / 64) as usize] >> (t % 64);
            if word == u64::MAX >> (t % 64) {
                // The rest of this word is used.
                t = (t / 64 + 1) * 64;
                continue;
            }
            let free = t + (!word).trailing_zeros();
            self.mark(free);
            self.cursor = free + 1;
            return Some(free as u16);
        }
        self.cursor = end;
        None
    }

    /// A new generation: every tag free but 0 and those PEs run.
    fn roll_over(&mut self) {
        // 2^64 generations cannot happen; wrap past 0, which means "none".
        self.generation = self.generation.wrapping_add(1).max(1);
        self.rollovers += 1;
        self.used.iter_mut().for_each(|w| *w = 0);
        self.used[0] = 1;
        self.in_use = 0;
        self.cursor = 1;
        self.kept.clear();
        for i in 0..self.active.len() {
            if let Some(a) = self.active[i] {
                self.mark(u32::from(a.tag));
                if !self.kept.contains(&a) {
                    self.kept.push(a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effects::{Effect, Recorder};
    use std::collections::HashSet;

    #[test]
    fn widths_and_pe_counts_are_checked() {
        for bits in [0, 1, 7, 9, 12, 15, 17, 32, 255] {
            assert_eq!(
                TagAllocator::vmids(bits, 1).unwrap_err(),
                AllocError::UnsupportedWidth { bits }
            );
        }
        assert_eq!(
            TagAllocator::vmids(8, 0).unwrap_err(),
            AllocError::TooManyPes { pes: 0, tags: 255 }
        );
        assert!(TagAllocator::vmids(8, 254).is_ok());
        assert_eq!(
            TagAllocator::vmids(8, 255).unwrap_err(),
            AllocError::TooManyPes {
                pes: 255,
                tags: 255
            }
        );
        assert!(TagAllocator::asids(16, 65534).is_ok());
        assert_eq!(
            TagAllocator::asids(16, 65535).unwrap_err(),
            AllocError::TooManyPes {
                pes: 65535,
                tags: 65535
            }
        );
        let a = TagAllocator::vmids_for_vtcr(1 << 19, 2).unwrap();
        assert_eq!((a.bits(), a.tags(), a.kind()), (16, 65535, TagKind::Vmid));
        assert_eq!(
            TagAllocator::vmids_for_vtcr(!(1 << 19), 2).unwrap().bits(),
            8
        );
    }

    #[test]
    fn tags_are_unique_within_a_generation_and_never_zero() {
        for bits in [8u8, 16] {
            let mut a = TagAllocator::vmids(bits, 4).unwrap();
            let n = a.tags() as usize;
            let mut slots = vec![TagSlot::new(); n];
            let mut seen = HashSet::new();
            for s in slots.iter_mut() {
                let got = a.alloc(s);
                assert!(!got.rollover);
                assert_ne!(got.tag, 0);
                assert!(seen.insert(got.tag), "tag {} handed out twice", got.tag);
                assert_eq!(s.tag(), Some(got.tag));
                assert!(a.current(s));
            }
            assert_eq!(a.in_use(), a.tags());
            // Asking again keeps the tag.
            for s in slots.iter_mut() {
                let before = s.tag();
                let got = a.alloc(s);
                assert_eq!((Some(got.tag), got.rollover), (before, false));
            }
            assert_eq!(a.generation(), 1);
        }
    }

    #[test]
    fn eight_bit_tags_roll_over_after_255_allocations() {
        let mut a = TagAllocator::vmids(8, 2).unwrap();
        let mut slots = vec![TagSlot::new(); 256];
        for s in slots.iter_mut().take(255) {
            assert!(!a.alloc(s).rollover);
        }
        assert_eq!((a.generation(), a.rollovers()), (1, 0));
        let got = a.alloc(&mut slots[255]);
        assert_eq!(
            got,
            Assigned {
                tag: 1,
                rollover: true
            }
        );
        assert_eq!((a.generation(), a.rollovers(), a.in_use()), (2, 1, 1));
        // Every earlier slot is stale now and gets a new tag of the new
        // generation, none of which repeats.
        let mut seen = HashSet::from([1u16]);
        for s in slots.iter_mut().take(254) {
            assert!(!a.current(s));
            let got = a.alloc(s);
            assert!(!got.rollover);
            assert!(seen.insert(got.tag));
        }
        // The 255th stale slot finds the generation full again.
        assert!(a.alloc(&mut slots[254]).rollover);
        assert_eq!(a.generation(), 3);
    }

    #[test]
    fn sixteen_bit_tags_roll_over_after_65535_allocations() {
        let mut a = TagAllocator::asids(16, 2).unwrap();
        let mut s = TagSlot::new();
        for i in 1..=65535u32 {
            s = TagSlot::new();
            let got = a.alloc(&mut s);
            assert_eq!((u32::from(got.tag), got.rollover), (i, false));
        }
        assert_eq!(s.tag(), Some(0xffff));
        let mut t = TagSlot::new();
        assert_eq!(
            a.alloc(&mut t),
            Assigned {
                tag: 1,
                rollover: true
            }
        );
    }

    #[test]
    fn retired_tags_stay_out_of_the_pool_until_the_rollover() {
        let mut a = TagAllocator::vmids(8, 2).unwrap();
        let mut vm = TagSlot::new();
        let first = a.activate(0, &mut vm).unwrap().tag;
        assert_eq!(a.retire(&mut vm), Err(AllocError::Running { pe: 0 }));
        assert_eq!(vm.tag(), Some(first), "a refused retire changes nothing");
        assert_eq!(a.clear_active(0), Ok(Some(first)));
        assert_eq!(a.retire(&mut vm), Ok(Some(first)));
        assert_eq!(vm, TagSlot::new());
        assert_eq!(a.retire(&mut vm), Ok(None));
        // The rest of the generation: never `first`.
        let mut others = vec![TagSlot::new(); 254];
        for s in others.iter_mut() {
            let got = a.alloc(s);
            assert!(!got.rollover);
            assert_ne!(got.tag, first);
        }
        // Only after a rollover can it come back.
        let mut next = TagSlot::new();
        assert_eq!(
            a.alloc(&mut next),
            Assigned {
                tag: first,
                rollover: true
            }
        );
        // A retired slot used again starts afresh.
        assert_eq!(
            a.alloc(&mut vm),
            Assigned {
                tag: 2,
                rollover: false
            }
        );
    }

    #[test]
    fn rollover_keeps_the_tags_pes_run() {
        let mut a = TagAllocator::vmids(8, 4).unwrap();
        let mut running = TagSlot::new();
        let mut shared = TagSlot::new();
        let mut parked = TagSlot::new();
        let mut filler = vec![TagSlot::new(); 100];
        for s in filler.iter_mut() {
            a.alloc(s);
        }
        let r = a.activate(1, &mut running).unwrap().tag; // 101
        let s = a.activate(2, &mut shared).unwrap().tag; // 102, on PE 2 and 3
        a.set_active(3, &shared).unwrap();
        let p = a.activate(0, &mut parked).unwrap().tag; // 103, then parked
        a.clear_active(0).unwrap();
        assert_eq!((r, s, p), (101, 102, 103));
        // Use the rest of the generation, then roll over.
        let mut rest = vec![TagSlot::new(); 152];
        for t in rest.iter_mut() {
            assert!(!a.alloc(t).rollover);
        }
        let mut new = TagSlot::new();
        let got = a.alloc(&mut new);
        assert!(got.rollover);
        assert_eq!(got.tag, 1);
        // 1 and the two running tags.
        assert_eq!(a.in_use(), 3);
        assert_eq!(
            (a.active(1), a.active(2), a.active(3)),
            (Some(r), Some(s), Some(s))
        );
        assert_eq!(a.active(0), None);
        // The new generation never hands out a kept tag to anyone else.
        let mut seen = HashSet::from([1u16]);
        for t in filler.iter_mut().chain(rest.iter_mut()).take(252) {
            let got = a.alloc(t);
            assert!(!got.rollover);
            assert!(got.tag != r && got.tag != s && seen.insert(got.tag));
        }
        // Their owners get them back, with no rollover.
        assert_eq!(
            a.alloc(&mut running),
            Assigned {
                tag: r,
                rollover: false
            }
        );
        assert!(a.current(&running));
        assert_eq!(
            a.activate(3, &mut shared).unwrap(),
            Assigned {
                tag: s,
                rollover: false
            }
        );
        // The parked VM lost its tag: the generation is full, so it rolls
        // over, keeping what PEs 1 to 3 run.
        let got = a.alloc(&mut parked);
        assert!(got.rollover);
        assert!(got.tag != r && got.tag != s);
        assert_eq!(a.in_use(), 3);
        assert_eq!(
            a.alloc(&mut shared),
            Assigned {
                tag: s,
                rollover: false
            }
        );
        assert_eq!(
            a.alloc(&mut running),
            Assigned {
                tag: r,
                rollover: false
            }
        );
    }

    #[test]
    fn a_tag_is_kept_across_several_rollovers_while_it_runs() {
        let mut a = TagAllocator::vmids(8, 2).unwrap();
        let mut vm = TagSlot::new();
        let t = a.activate(1, &mut vm).unwrap().tag;
        let mut others = vec![TagSlot::new(); 254];
        for round in 0..3 {
            let mut rolled = false;
            for s in others.iter_mut() {
                *s = TagSlot::new();
                let got = a.alloc(s);
                rolled |= got.rollover;
                assert_ne!(got.tag, t, "round {round}");
            }
            let mut extra = TagSlot::new();
            rolled |= a.alloc(&mut extra).rollover;
            assert!(rolled);
        }
        assert!(!a.current(&vm));
        assert_eq!(
            a.alloc(&mut vm),
            Assigned {
                tag: t,
                rollover: false
            }
        );
        // Set active with a stale slot is refused.
        let stale = TagSlot {
            generation: 1,
            tag: 9,
        };
        assert_eq!(a.set_active(0, &stale), Err(AllocError::Stale));
        assert_eq!(
            a.set_active(2, &vm),
            Err(AllocError::NoSuchPe { pe: 2, pes: 2 })
        );
        assert_eq!(a.active(7), None);
    }

    #[test]
    fn a_tag_kept_but_not_reclaimed_stays_used_when_retired() {
        let mut a = TagAllocator::vmids(8, 2).unwrap();
        let mut vm = TagSlot::new();
        let t = a.activate(1, &mut vm).unwrap().tag;
        let mut others = vec![TagSlot::new(); 255];
        for s in others.iter_mut() {
            a.alloc(s);
        }
        // Rolled over with `vm` kept; PE 1 parks and the VM dies.
        a.clear_active(1).unwrap();
        assert_eq!(a.retire(&mut vm), Ok(Some(t)));
        let mut more = vec![TagSlot::new(); 253];
        for s in more.iter_mut() {
            let got = a.alloc(s);
            assert!(!got.rollover);
            assert_ne!(got.tag, t);
        }
    }

    #[test]
    fn rollover_flushes() {
        let mut fx = Recorder::new();
        let caps = Capabilities::default();
        TagAllocator::vmids(8, 1)
            .unwrap()
            .rollover_flush(&caps, &mut fx);
        TagAllocator::asids(16, 1)
            .unwrap()
            .rollover_flush(&caps, &mut fx);
        assert_eq!(
            fx.log(),
            &[
                Effect::Tlbi {
                    op: TlbiOp::Alle1is,
                    operand: 0
                },
                Effect::Barrier(Barrier::DsbIsh),
                Effect::Tlbi {
                    op: TlbiOp::Vmalle1is,
                    operand: 0
                },
                Effect::Barrier(Barrier::DsbIsh),
            ]
        );
    }
    #[test]
    fn rollover_flush_repeats_the_tlbi_with_the_erratum() {
        let caps = Capabilities {
            repeat_tlbi: true,
            ..Capabilities::default()
        };
        for (a, op) in [
            (TagAllocator::vmids(8, 1).unwrap(), TlbiOp::Alle1is),
            (TagAllocator::asids(16, 1).unwrap(), TlbiOp::Vmalle1is),
        ] {
            let mut fx = Recorder::new();
            a.rollover_flush(&caps, &mut fx);
            let tlbi = Effect::Tlbi { op, operand: 0 };
            let dsb = Effect::Barrier(Barrier::DsbIsh);
            assert_eq!(fx.log(), &[tlbi, dsb, tlbi, dsb]);
        }
    }
}
