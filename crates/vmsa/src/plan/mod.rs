//! The invalidation planner: from the changes made to an address space,
//! the cheapest TLB maintenance that leaves no stale entry.
//!
//! An [`Invalidator`] turns a batch of [`Change`]s into TLBIs and barriers.
//! [`Planner`] is vmsa's: it prices every correct candidate (nothing,
//! per-entry operations with level hints, range operations, one operation
//! for the whole VMID / ASID / regime) with a [`Profile`] and the CPU's
//! [`Capabilities`], and emits the cheapest. Tables call their invalidator
//! for break-before-make inside an operation and in
//! [`Table::flush`](crate::Table::flush); other policies (the baselines of
//! `vmsa compare`) implement the same trait.

pub mod range;

use alloc::vec::Vec;

use crate::caps::Capabilities;
use crate::effects::{Barrier, Effects};
use crate::report::{Change, ChangeFlags};
use crate::tlbi::{ipa_operand, va_operand, TlbiOp, Ttl};

/// Which address space a table translates, as far as TLB maintenance is
/// concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpaceKind {
    /// A stage 2 table (IPA -> PA) of one VMID.
    Stage2 {
        /// The VMID.
        vmid: u16,
    },
    /// An EL1&0 stage 1 table of one ASID.
    El1 {
        /// The ASID.
        asid: u16,
    },
    /// The EL2 regime's stage 1.
    El2,
}

/// The address space being invalidated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Its kind and tag.
    pub kind: SpaceKind,
    /// Bytes translated by one entry at each level (4 KiB granule: index 3
    /// is 4 KiB).
    pub entry_size: [u64; 4],
    /// The VMID / ASID is retired and will not be reused before a full
    /// invalidation: nothing needs invalidating now.
    pub dead: bool,
    /// The space has been live only on the PE issuing the maintenance
    /// since the other PEs it ran on last flushed it: non-shareable
    /// operations suffice.
    pub local: bool,
    /// How many other PEs a non-shareable invalidation would leave owing a
    /// full local flush of the space when it next runs there.
    pub newly_stale: u32,
}

impl Space {
    /// A space of `kind` with the 4 KiB granule.
    pub const fn new(kind: SpaceKind) -> Self {
        Space {
            kind,
            entry_size: [1 << 39, 1 << 30, 1 << 21, 1 << 12],
            dead: false,
            local: false,
            newly_stale: 0,
        }
    }

    /// The by-address TLBI for `addr`: last level only or every level.
    pub fn by_addr(&self, addr: u64, leaf_only: bool, ttl: Ttl) -> (TlbiOp, u64) {
        match self.kind {
            SpaceKind::Stage2 { .. } => (
                if leaf_only {
                    TlbiOp::Ipas2le1is
                } else {
                    TlbiOp::Ipas2e1is
                },
                ipa_operand(addr, ttl),
            ),
            SpaceKind::El1 { asid } => (
                if leaf_only {
                    TlbiOp::Vale1is
                } else {
                    TlbiOp::Vae1is
                },
                va_operand(asid, addr, ttl),
            ),
            SpaceKind::El2 => (
                if leaf_only {
                    TlbiOp::Vale2is
                } else {
                    TlbiOp::Vae2is
                },
                va_operand(0, addr, ttl),
            ),
        }
    }

    /// The range TLBI for an encoded range operand.
    pub fn by_range(&self, leaf_only: bool) -> TlbiOp {
        match (self.kind, leaf_only) {
            (SpaceKind::Stage2 { .. }, true) => TlbiOp::Ripas2le1is,
            (SpaceKind::Stage2 { .. }, false) => TlbiOp::Ripas2e1is,
            (SpaceKind::El1 { .. }, true) => TlbiOp::Rvale1is,
            (SpaceKind::El1 { .. }, false) => TlbiOp::Rvae1is,
            // The EL2 regime has no range forms in this model of the CPU;
            // callers fall back to by-address operations.
            (SpaceKind::El2, _) => TlbiOp::Vae2is,
        }
    }

    /// The one TLBI that removes everything the space may have cached.
    pub fn whole(&self) -> (TlbiOp, u64) {
        match self.kind {
            SpaceKind::Stage2 { .. } => (TlbiOp::Vmalls12e1is, 0),
            // VMALLE1IS, not ASIDE1IS: the latter leaves global entries.
            SpaceKind::El1 { .. } => (TlbiOp::Vmalle1is, 0),
            SpaceKind::El2 => (TlbiOp::Alle2is, 0),
        }
    }
}

/// What TLB maintenance costs, in cycles, as the planner prices it. The
/// model's named profiles (`vmsa_model::cost::Profile`) are each one of
/// these with a name, and cite each figure's source; [`Profile::NATIVE`]
/// holds the model's `native` figures (a test there checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// A non-shareable TLBI.
    pub local_tlbi: u64,
    /// Issuing a broadcast TLBI for an address or range.
    pub broadcast_by_address: u64,
    /// Issuing a broadcast TLBI of a whole VMID / ASID / regime.
    pub broadcast_whole: u64,
    /// A DSB that waits for TLB maintenance to complete.
    pub dsb: u64,
    /// A `DSB ISHST` / `DSB NSH`.
    pub dsb_light: u64,
    /// An ISB.
    pub isb: u64,
    /// Refilling one entry that an invalidation removed although it was
    /// still correct (a two-dimensional walk for stage 2).
    pub refill_walk: u64,
    /// Whether EL2-only TLBIs (IPAS2*, VMALLS12E1*, ALLE1*, *E2*) trap to an
    /// outer hypervisor.
    pub traps_el2_tlbi: bool,
    /// The trap-and-emulate cost of each such TLBI.
    pub trap_emulate: u64,
    /// The outer hypervisor's shadow stage 2 teardown on a trapped
    /// VMALLS12E1IS or ALLE1IS.
    pub shadow_stage2_teardown: u64,
    /// An exception to the hypervisor and back (a spurious fault costs
    /// this plus a local TLBI).
    pub exception_round_trip: u64,
    /// PEs that may hold the space's entries (each pays the refills).
    pub pes: u64,
}

impl Profile {
    /// The model's `native` profile: a Neoverse N1 class server core,
    /// hypervisor on bare metal, 4 PEs.
    pub const NATIVE: Profile = Profile {
        local_tlbi: 33,
        broadcast_by_address: 33,
        broadcast_whole: 33,
        dsb: 1_073,
        dsb_light: 33,
        isb: 33,
        refill_walk: 264,
        traps_el2_tlbi: false,
        trap_emulate: 0,
        shadow_stage2_teardown: 0,
        exception_round_trip: 752,
        pes: 4,
    };

    /// The cycles of one TLBI.
    pub fn tlbi(&self, op: TlbiOp) -> u64 {
        let issue = if !op.is_broadcast() {
            self.local_tlbi
        } else if matches!(
            op,
            TlbiOp::Vmalle1is
                | TlbiOp::Vmalls12e1is
                | TlbiOp::Alle1is
                | TlbiOp::Aside1is
                | TlbiOp::Alle2is
        ) {
            self.broadcast_whole
        } else {
            self.broadcast_by_address
        };
        let mut c = issue;
        if self.traps_el2_tlbi && el2_only(op) {
            c = c.saturating_add(self.trap_emulate);
            if matches!(
                op,
                TlbiOp::Vmalls12e1is | TlbiOp::Vmalls12e1 | TlbiOp::Alle1is | TlbiOp::Alle1
            ) {
                c = c.saturating_add(self.shadow_stage2_teardown);
            }
        }
        c
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::NATIVE
    }
}

/// TLBIs only EL2 (or EL3) can execute: under nested virtualization the
/// outer hypervisor traps them.
pub const fn el2_only(op: TlbiOp) -> bool {
    use TlbiOp::*;
    matches!(
        op,
        Ipas2e1
            | Ipas2e1is
            | Ipas2le1
            | Ipas2le1is
            | Ripas2e1
            | Ripas2e1is
            | Ripas2le1
            | Ripas2le1is
            | Vmalls12e1
            | Vmalls12e1is
            | Alle1
            | Alle1is
            | Vae2
            | Vae2is
            | Vale2
            | Vale2is
            | Alle2
            | Alle2is
    )
}

/// Why an invalidator is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Break-before-make inside an operation: every change given must be
    /// gone from every TLB when this returns, whatever its flags.
    BreakBeforeMake,
    /// A flush of what operations left outstanding: the invalidator may
    /// skip what cannot be stale or is only stricter than the tables.
    Flush,
}

/// Decides and emits the TLB maintenance for a batch of changes.
///
/// `Send + Sync`, so that a [`Table`](crate::Table) holding one is `Send`
/// (one table behind a lock every PE uses): policies are plain data; one
/// that keeps statistics uses atomics or a lock.
pub trait Invalidator: Send + Sync {
    /// A short name.
    fn name(&self) -> &'static str;

    /// Emits, through `fx`, the maintenance after `changes` to `space`;
    /// `mapped()` counts the valid leaf entries the space maps now (for
    /// pricing whole-space invalidation; call it only if needed). Returns
    /// whether anything was emitted.
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool;

    /// The CPU capabilities the policy was built for. A
    /// [`Table`](crate::Table) reads them from its invalidator for the
    /// maintenance it issues itself: the errata workarounds of
    /// [`vcpu_load`](crate::Table::vcpu_load)'s local flush and of
    /// [`spurious_fault`](crate::Table::spurious_fault), and whether the
    /// VTTBR_EL2 switch for another VMID's TLBIs goes through an empty root
    /// ([`Capabilities::speculative_at`]). The default is the architecture's
    /// baseline ([`Capabilities::default`]: no erratum); [`Planner`] and
    /// [`Basic`](crate::Basic) return theirs.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

/// Whether a change may leave an entry granting more than the tables: the
/// old descriptor was valid, break-before-make has not already removed it,
/// and it was not only relaxed (an entry stricter than the tables costs at
/// most a spurious fault).
pub fn may_be_stale(c: &Change) -> bool {
    let f = c.flags;
    f.contains(ChangeFlags::WAS_VALID)
        && !f.contains(ChangeFlags::BBM_DONE)
        && f.intersects(
            ChangeFlags::OUTPUT_CHANGED
                | ChangeFlags::RESTRICTED
                | ChangeFlags::ATTRS_CHANGED
                | ChangeFlags::SIZE_CHANGED
                | ChangeFlags::TABLE_REMOVED,
        )
}

/// One TLBI to emit, with its price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// Operation.
    pub op: TlbiOp,
    /// Operand.
    pub operand: u64,
}

/// A complete maintenance sequence: `DSB ISHST`, the TLBIs, `DSB ISH`,
/// then for stage 2 by-address forms `TLBI VMALLE1IS; DSB ISH`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sequence {
    /// The TLBIs before the first completing DSB.
    pub ops: Vec<Op>,
    /// TLBIs after it (stage 2: `VMALLE1IS`), completed by a second DSB.
    pub after: Vec<Op>,
    /// Estimated cycles.
    pub cycles: u64,
    /// Non-shareable operations, completed by `DSB NSH`.
    pub local: bool,
}

/// The non-shareable form of a broadcast operation (the operation itself
/// for a local one): the mnemonic without its `is`.
pub fn local_form(op: TlbiOp) -> TlbiOp {
    use TlbiOp::*;
    // Planning asks this for every operation it weighs: a match, not a
    // search of the mnemonics (`local_form_drops_is` checks they agree).
    match op {
        Vae1is => Vae1,
        Vale1is => Vale1,
        Vaae1is => Vaae1,
        Vaale1is => Vaale1,
        Aside1is => Aside1,
        Vmalle1is => Vmalle1,
        Ipas2e1is => Ipas2e1,
        Ipas2le1is => Ipas2le1,
        Vmalls12e1is => Vmalls12e1,
        Alle1is => Alle1,
        Vae2is => Vae2,
        Vale2is => Vale2,
        Alle2is => Alle2,
        Rvae1is => Rvae1,
        Rvale1is => Rvale1,
        Rvaae1is => Rvaae1,
        Rvaale1is => Rvaale1,
        Ripas2e1is => Ripas2e1,
        Ripas2le1is => Ripas2le1,
        Vae1 | Vale1 | Vaae1 | Vaale1 | Aside1 | Vmalle1 | Ipas2e1 | Ipas2le1 | Vmalls12e1
        | Alle1 | Vae2 | Vale2 | Alle2 | Rvae1 | Rvale1 | Rvaae1 | Rvaale1 | Ripas2e1
        | Ripas2le1 => op,
    }
}

impl Sequence {
    /// Emits the sequence. `isb`: the issuing PE translates through the
    /// space itself and needs an ISB. Each batch goes through
    /// [`tlbi::issue`](crate::tlbi::issue), which applies the errata of
    /// `caps` (with the repeat-TLBI erratum the last TLBI of each batch
    /// again after its DSB).
    pub fn emit(&self, fx: &mut dyn Effects, isb: bool, caps: &Capabilities) {
        fx.barrier(Barrier::DsbIshst);
        let done = if self.local {
            Barrier::DsbNsh
        } else {
            Barrier::DsbIsh
        };
        for batch in [&self.ops, &self.after] {
            crate::tlbi::issue(fx, caps, batch.iter().map(|o| (o.op, o.operand)), done);
        }
        if isb {
            fx.barrier(Barrier::Isb);
        }
    }
}

/// vmsa's invalidator: the cheapest correct sequence under a profile.
///
/// A [`Table`](crate::Table) uses one by default; give it the CPU's
/// [`Capabilities`] and a cost [`Profile`] to get the TLBI sequence a change
/// needs on that CPU, here for one page unmapped from a live stage 2 table
/// on an Armv8.4 CPU (FEAT_TTL gives the level hint):
///
/// ```
/// use vmsa::tlbi::{ipa_operand, Ttl};
/// use vmsa::{
///     Arena, Barrier, Capabilities, Effect, Geometry, Granule, Ipa, MapOptions, Pa, Planner,
///     Profile, Recorder, Stage2, Stage2Attrs, Table, TlbiOp, Vmid,
/// };
///
/// let mut fx = Recorder::new();
/// let geometry = Geometry::stage2(Granule::K4, 40)?;
/// let mut s2 = Table::new(Stage2::new(Vmid(1)), geometry, Arena::new(Pa(0x8000_0000), 16), &mut fx)?;
/// s2.set_invalidator(Box::new(Planner::new(Capabilities::armv8_4(), Profile::NATIVE)));
/// let ram = Ipa(0)..Ipa(0x20_0000);
/// s2.map(ram, Pa(0x4000_0000), Stage2Attrs::RAM, MapOptions::PAGES, &mut fx)?;
/// s2.activate(&mut fx);
/// fx.take();
///
/// s2.unmap(Ipa(0x3000)..Ipa(0x4000), &mut fx)?;
/// s2.flush(&mut fx);
/// let ops: Vec<Effect> = fx
///     .log()
///     .iter()
///     .copied()
///     .filter(|e| matches!(e, Effect::Tlbi { .. } | Effect::Barrier(_)))
///     .collect();
/// // The leaf, by IPA at level 3, then the combined stage 1+2 entries that
/// // may hold it (VMALLE1IS), each batch completed by one DSB ISH.
/// assert_eq!(ops[0], Effect::Barrier(Barrier::DsbIshst));
/// assert_eq!(
///     ops[1],
///     Effect::Tlbi { op: TlbiOp::Ipas2le1is, operand: ipa_operand(0x3000, Ttl::at(0b01, 3)) }
/// );
/// assert!(ops.contains(&Effect::Tlbi { op: TlbiOp::Vmalle1is, operand: 0 }));
/// assert_eq!(ops.last(), Some(&Effect::Barrier(Barrier::DsbIsh)));
/// # Ok::<(), vmsa::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Planner {
    /// What the CPU can do.
    pub caps: Capabilities,
    /// What things cost.
    pub profile: Profile,
}

/// One needed invalidation: an entry range at a level, with or without
/// walk-cache entries, and whether a valid entry is there now (so that
/// removing it costs a refill).
#[derive(Clone, Copy, Debug)]
struct Need {
    start: u64,
    end: u64,
    level: u8,
    walk: bool,
    refill: bool,
}

/// A candidate's operations, counted and priced before barriers and the
/// stage 2 combined flush are added.
struct Tally {
    /// Operations.
    ops: usize,
    /// Their TLBIs' cycles.
    tlbi: u64,
    /// Entries refilled after them.
    refill: u64,
}

impl Planner {
    /// A planner for `caps` under `profile`.
    pub const fn new(caps: Capabilities, profile: Profile) -> Self {
        Planner { caps, profile }
    }

    fn needs(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        relaxed_too: bool,
    ) -> Vec<Need> {
        let mut out = Vec::new();
        for c in changes {
            let wanted = purpose == Purpose::BreakBeforeMake
                || may_be_stale(c)
                || relaxed_too && only_relaxed(c);
            if !wanted {
                continue;
            }
            let size = space.entry_size[c.level as usize & 3];
            // Removing a still-valid entry costs a refill; during
            // break-before-make the entry is invalid when the TLBI runs.
            let refill = purpose == Purpose::Flush && c.flags.contains(ChangeFlags::IS_VALID);
            let removed = c.flags.contains(ChangeFlags::TABLE_REMOVED);
            // Leaves removed together with their table (reported at their
            // own level): one all-levels operation per removed table takes
            // the walk-cache entries of every level above; the other
            // entries of that table need only last-level forms.
            let leaves_of_removed_table =
                removed && c.level > 0 && c.cached_leaf_levels.contains(c.level);
            // Upper-range tables may end at the top of the 64-bit space.
            let end = if c.range.end == 0 {
                u64::MAX
            } else {
                c.range.end
            };
            if leaves_of_removed_table {
                let table = size * 512;
                let mut a = c.range.start;
                while a < end {
                    let chunk_end = (a / table + 1).saturating_mul(table).min(end);
                    out.push(Need {
                        start: a,
                        end: a + size,
                        level: c.level,
                        walk: true,
                        refill,
                    });
                    if a + size < chunk_end {
                        out.push(Need {
                            start: a + size,
                            end: chunk_end,
                            level: c.level,
                            walk: false,
                            refill,
                        });
                    }
                    a = chunk_end;
                }
            } else {
                // Leaves at their own level, or table descriptors (every one
                // needs an all-levels operation).
                out.push(Need {
                    start: c.range.start,
                    end,
                    level: c.level,
                    walk: removed,
                    refill,
                });
            }
        }
        out
    }

    fn ttl(&self, level: u8, walk: bool) -> Ttl {
        if self.caps.ttl && !walk && level > 0 {
            Ttl::at(crate::plan::range::TG_4K as u64, level)
        } else {
            Ttl::NONE
        }
    }

    /// Cycles of refilling `entries` correct entries of `kinds` kinds on
    /// every PE.
    fn refills(&self, entries: u64, kinds: u64, pes: u64) -> u64 {
        entries
            .saturating_mul(kinds)
            .saturating_mul(pes)
            .saturating_mul(self.profile.refill_walk)
    }

    /// The cycles of `t.ops` operations whose TLBIs cost `t.tlbi` in all
    /// (those `after` the first DSB included), completed by one DSB (two
    /// with `after`), then `refills`.
    fn price_tally(&self, t: &Tally, after: bool, refills: u64, local: bool) -> u64 {
        let p = &self.profile;
        let dsb = if local { p.dsb_light } else { p.dsb };
        let mut c = p.dsb_light.saturating_add(t.tlbi);
        if t.ops > 0 {
            c = c.saturating_add(dsb);
        }
        if after {
            c = c.saturating_add(dsb);
        }
        c.saturating_add(refills)
    }

    /// PEs that may hold the space's entries.
    fn holders(&self, space: &Space) -> u64 {
        if space.local {
            1
        } else {
            self.profile.pes
        }
    }

    /// Stage 2 by-address forms leave combined stage 1+2 entries: a
    /// `VMALLE1IS` of the VMID must follow, whatever the CPU (FEAT_nTLBPA
    /// is about caches of walks keyed by physical address, not combined
    /// entries: [`Capabilities::ntlbpa`] is for reporting only).
    fn combined_flush(&self, space: &Space) -> bool {
        matches!(space.kind, SpaceKind::Stage2 { .. })
    }

    /// What [`per_entry`](Self::per_entry) would build, counted without
    /// building it: its operations (one per entry of each need, all of a
    /// need the same), their TLBIs' cost once [`finish`](Self::finish)
    /// has made them local where the space is, and the entries refilled.
    fn per_entry_tally(&self, space: &Space, needs: &[Need]) -> Tally {
        let mut t = Tally {
            ops: 0,
            tlbi: 0,
            refill: 0,
        };
        for n in needs {
            let size = space.entry_size[n.level as usize & 3];
            // The loop of `per_entry`: `start`, `start + size`, ... below
            // `end` (which no step passes without ending the loop).
            let count = n.end.saturating_sub(n.start).div_ceil(size.max(1));
            if count == 0 {
                continue;
            }
            let (op, _) = space.by_addr(n.start, !n.walk, self.ttl(n.level, n.walk));
            let op = if space.local { local_form(op) } else { op };
            t.ops = t.ops.saturating_add(count as usize);
            t.tlbi = t
                .tlbi
                .saturating_add(count.saturating_mul(self.profile.tlbi(op)));
            if n.refill {
                t.refill = t.refill.saturating_add(count);
            }
        }
        t
    }

    /// The cycles of [`per_entry`](Self::per_entry)'s sequence, and how
    /// many operations it has, from its [tally](Self::per_entry_tally).
    fn per_entry_price(
        &self,
        space: &Space,
        needs: &[Need],
        mapped: &mut dyn FnMut() -> u64,
    ) -> (u64, usize) {
        let t = self.per_entry_tally(space, needs);
        let ops = t.ops;
        let (cycles, after) = self.settle(space, t, mapped);
        (cycles, ops + usize::from(after.is_some()))
    }

    /// What [`finish`](Self::finish) adds to a candidate whose operations
    /// (made local where the space is) are tallied in `t`: the stage 2
    /// combined flush after them where one is needed (returned), the
    /// refills, the barriers. Returns the cycles.
    fn settle(
        &self,
        space: &Space,
        mut t: Tally,
        mapped: &mut dyn FnMut() -> u64,
    ) -> (u64, Option<Op>) {
        let pes = self.holders(space);
        let mut refills = self.refills(t.refill, 1, pes);
        let after = (self.combined_flush(space) && t.ops > 0).then(|| {
            let op = TlbiOp::Vmalle1is;
            Op {
                op: if space.local { local_form(op) } else { op },
                operand: 0,
            }
        });
        if let Some(a) = after {
            t.tlbi = t.tlbi.saturating_add(self.profile.tlbi(a.op));
            refills = refills.saturating_add(self.refills(mapped(), 1, pes));
        }
        (
            self.price_tally(&t, after.is_some(), refills, space.local),
            after,
        )
    }

    /// Per entry: one by-address operation per changed entry (one per
    /// block, not per page in it).
    fn per_entry(
        &self,
        space: &Space,
        needs: &[Need],
        mapped: &mut dyn FnMut() -> u64,
    ) -> Sequence {
        // One operation per entry: room for them up front (up to a bound,
        // however large the needs), not grown push by push.
        let count: u64 = needs
            .iter()
            .map(|n| {
                let size = space.entry_size[n.level as usize & 3];
                n.end.saturating_sub(n.start).div_ceil(size.max(1))
            })
            .fold(0, u64::saturating_add);
        let mut ops = Vec::with_capacity(count.min(1024) as usize);
        let mut refill = 0u64;
        for n in needs {
            let size = space.entry_size[n.level as usize & 3];
            let mut a = n.start;
            while a < n.end {
                let (op, operand) = space.by_addr(a, !n.walk, self.ttl(n.level, n.walk));
                ops.push(Op { op, operand });
                if n.refill {
                    refill += 1;
                }
                a = match a.checked_add(size) {
                    Some(next) => next,
                    None => break,
                };
            }
        }
        self.finish(space, ops, refill, mapped)
    }

    /// With FEAT_TLBIRANGE: range operations over runs of entries.
    fn ranges(
        &self,
        space: &Space,
        needs: &[Need],
        mapped: &mut dyn FnMut() -> u64,
    ) -> Option<Sequence> {
        if !self.caps.tlbi_range || matches!(space.kind, SpaceKind::El2) {
            return None;
        }
        let asid = match space.kind {
            SpaceKind::El1 { asid } => asid,
            _ => 0,
        };
        let mut ops = Vec::new();
        let mut refill = 0u64;
        for n in needs {
            let size = space.entry_size[n.level as usize & 3];
            let ttl = if self.caps.ttl && !n.walk { n.level } else { 0 };
            let (rs, singles) = range::cover(n.start, n.end, asid, ttl)?;
            for r in rs {
                ops.push(Op {
                    op: space.by_range(!n.walk),
                    operand: r.encode(),
                });
            }
            for s in singles {
                let (op, operand) = space.by_addr(s, !n.walk, self.ttl(n.level, n.walk));
                ops.push(Op { op, operand });
            }
            if n.refill {
                refill += (n.end - n.start) / size;
            }
        }
        Some(self.finish(space, ops, refill, mapped))
    }

    /// With FEAT_TLBIRANGE: the needs merged into maximal contiguous spans,
    /// each covered by all-levels range operations (no level hint): fewest
    /// operations when a large region went at once.
    fn merged_ranges(
        &self,
        space: &Space,
        needs: &[Need],
        mapped: &mut dyn FnMut() -> u64,
    ) -> Option<Sequence> {
        if !self.caps.tlbi_range || matches!(space.kind, SpaceKind::El2) || needs.len() < 2 {
            return None;
        }
        let asid = match space.kind {
            SpaceKind::El1 { asid } => asid,
            _ => 0,
        };
        let mut spans: Vec<(u64, u64)> = needs.iter().map(|n| (n.start, n.end)).collect();
        spans.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in spans {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let mut ops = Vec::new();
        for (s, e) in merged {
            let (rs, singles) = range::cover(s, e, asid, 0)?;
            for r in rs {
                ops.push(Op {
                    op: space.by_range(false),
                    operand: r.encode(),
                });
            }
            for a in singles {
                let (op, operand) = space.by_addr(a, false, Ttl::NONE);
                ops.push(Op { op, operand });
            }
        }
        let refill: u64 = needs
            .iter()
            .filter(|n| n.refill)
            .map(|n| (n.end - n.start) / space.entry_size[n.level as usize & 3])
            .sum();
        Some(self.finish(space, ops, refill, mapped))
    }

    fn finish(
        &self,
        space: &Space,
        mut ops: Vec<Op>,
        refill: u64,
        mapped: &mut dyn FnMut() -> u64,
    ) -> Sequence {
        if space.local {
            for o in ops.iter_mut() {
                o.op = local_form(o.op);
            }
        }
        let t = Tally {
            ops: ops.len(),
            tlbi: ops
                .iter()
                .fold(0u64, |c, o| c.saturating_add(self.profile.tlbi(o.op))),
            refill,
        };
        let (cycles, after) = self.settle(space, t, mapped);
        Sequence {
            ops,
            after: after.into_iter().collect(),
            cycles,
            local: space.local,
        }
    }

    /// One operation for the whole space.
    fn whole(&self, space: &Space, mapped: &mut dyn FnMut() -> u64) -> Sequence {
        let (op, operand) = space.whole();
        let kinds = match space.kind {
            SpaceKind::Stage2 { .. } => 2,
            _ => 1,
        };
        let op = if space.local { local_form(op) } else { op };
        let ops = alloc::vec![Op { op, operand }];
        let refills = self.refills(mapped(), kinds, self.holders(space));
        let t = Tally {
            ops: 1,
            tlbi: self.profile.tlbi(op),
            refill: 0,
        };
        let cycles = self.price_tally(&t, false, refills, space.local);
        Sequence {
            ops,
            after: Vec::new(),
            cycles,
            local: space.local,
        }
    }

    /// The cheapest sequence for a set of needs.
    fn cheapest(&self, space: &Space, needs: &[Need], mapped: &mut dyn FnMut() -> u64) -> Sequence {
        // Per entry is priced without being built (one operation per page
        // of a large change), and built only if it wins (`None` below).
        let (mut cycles, mut len) = self.per_entry_price(space, needs, mapped);
        let mut best: Option<Sequence> = None;
        let ranges = self.ranges(space, needs, mapped);
        let merged = self.merged_ranges(space, needs, mapped);
        for r in [ranges, merged].into_iter().flatten() {
            if r.cycles < cycles {
                (cycles, len) = (r.cycles, r.ops.len() + r.after.len());
                best = Some(r);
            }
        }
        // Whole-space only pays when it replaces more than one operation.
        if len > 1 {
            let w = self.whole(space, mapped);
            if w.cycles < cycles {
                best = Some(w);
            }
        }
        best.unwrap_or_else(|| {
            let s = self.per_entry(space, needs, mapped);
            debug_assert_eq!((s.cycles, s.ops.len() + s.after.len()), (cycles, len));
            s
        })
    }

    /// The cheapest correct sequence for `changes` (`None` when nothing
    /// needs invalidating). Entries whose permissions were only relaxed are
    /// left to the spurious-fault path when that is expected to cost less
    /// than invalidating them (one fault per entry, on the PE that needs
    /// the new right).
    pub fn plan(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        mapped: &mut dyn FnMut() -> u64,
    ) -> Option<Sequence> {
        if space.dead && purpose == Purpose::Flush {
            return None;
        }
        // `mapped` is counted once, and only if a candidate needs it.
        let mut cache = None;
        let mut count = || *cache.get_or_insert_with(&mut *mapped);
        if space.local {
            // Non-shareable operations now, but each PE they leave stale
            // pays a full local flush (and its refills) when the space runs
            // there again: compare with broadcasting.
            let wide = Space {
                local: false,
                ..*space
            };
            let local = self.plan_in(space, purpose, changes, &mut count);
            let broad = self.plan_in(&wide, purpose, changes, &mut count);
            return match (local, broad) {
                (Some(l), Some(b)) => {
                    let (op, _) = space.whole();
                    let kinds = if matches!(space.kind, SpaceKind::Stage2 { .. }) {
                        2
                    } else {
                        1
                    };
                    let later = (space.newly_stale as u64).saturating_mul(
                        self.profile
                            .tlbi(local_form(op))
                            .saturating_add(self.profile.dsb_light)
                            .saturating_add(self.refills(count(), kinds, 1)),
                    );
                    if l.cycles.saturating_add(later) <= b.cycles {
                        Some(l)
                    } else {
                        Some(b)
                    }
                }
                (l, b) => l.or(b),
            };
        }
        self.plan_in(space, purpose, changes, &mut count)
    }

    /// [`plan`](Self::plan) for one sharing choice.
    fn plan_in(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        count: &mut dyn FnMut() -> u64,
    ) -> Option<Sequence> {
        let mut count = || count();
        let needs = self.needs(space, purpose, changes, false);
        let relaxed: u64 = if purpose == Purpose::Flush {
            changes
                .iter()
                .filter(|c| only_relaxed(c))
                .map(|c| {
                    let size = space.entry_size[c.level as usize & 3];
                    c.range.end.wrapping_sub(c.range.start).div_ceil(size)
                })
                .sum()
        } else {
            0
        };
        let strict = (!needs.is_empty()).then(|| self.cheapest(space, &needs, &mut count));
        if relaxed == 0 {
            return strict;
        }
        // The PE that needs the new right faults once and invalidates its
        // own entry (KVM's relax path); others fault only if they use that
        // right before the entry leaves their TLB by itself.
        let faults =
            relaxed.saturating_mul(self.profile.exception_round_trip + self.profile.local_tlbi);
        let with_relaxed = self.needs(space, purpose, changes, true);
        let all = self.cheapest(space, &with_relaxed, &mut count);
        let skip = strict
            .as_ref()
            .map_or(0, |s| s.cycles)
            .saturating_add(faults);
        if all.cycles < skip {
            Some(all)
        } else {
            strict
        }
    }
}

/// A change that only added rights to a valid entry.
fn only_relaxed(c: &Change) -> bool {
    c.flags
        .contains(ChangeFlags::WAS_VALID | ChangeFlags::RELAXED)
        && !c.flags.contains(ChangeFlags::BBM_DONE)
        && !may_be_stale(c)
}

impl Invalidator for Planner {
    fn name(&self) -> &'static str {
        "vmsa"
    }

    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        match self.plan(space, purpose, changes, mapped) {
            Some(seq) => {
                seq.emit(fx, matches!(space.kind, SpaceKind::El2), &self.caps);
                true
            }
            None => false,
        }
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effects::{Effect, Recorder};
    use crate::report::LevelSet;

    fn change(start: u64, end: u64, level: u8, flags: ChangeFlags) -> Change {
        Change {
            range: start..end,
            level,
            flags,
            cached_leaf_levels: LevelSet::only(level),
        }
    }

    const UNMAPPED: ChangeFlags = ChangeFlags::WAS_VALID
        .union(ChangeFlags::OUTPUT_CHANGED)
        .union(ChangeFlags::RESTRICTED);

    proptest::proptest! {
        /// Per entry is priced without being built: the price and length
        /// are those of the sequence built, in every kind of space, local
        /// or not, with and without level hints.
        #[test]
        fn per_entry_is_priced_as_built(
            kind in 0..3u8,
            local: bool,
            ttl: bool,
            needs in proptest::collection::vec(
                (0..1u64 << 30, 0..2000u64, 0..4u8, proptest::bool::ANY, proptest::bool::ANY),
                0..5,
            ),
            mapped in 0..100_000u64,
        ) {
            let kind = match kind {
                0 => SpaceKind::Stage2 { vmid: 3 },
                1 => SpaceKind::El1 { asid: 7 },
                _ => SpaceKind::El2,
            };
            let space = Space { local, ..Space::new(kind) };
            // Every kind of TLBI priced apart, trapped ones dearer.
            let profile = Profile {
                local_tlbi: 10,
                broadcast_by_address: 33,
                broadcast_whole: 50,
                traps_el2_tlbi: true,
                trap_emulate: 700,
                shadow_stage2_teardown: 5000,
                ..Profile::NATIVE
            };
            let p = Planner::new(Capabilities { ttl, ..Capabilities::default() }, profile);
            let needs: Vec<Need> = needs
                .iter()
                .map(|&(start, pages, level, walk, refill)| {
                    let size = space.entry_size[level as usize];
                    let start = start / size * size;
                    Need { start, end: start + pages.min(40) * size, level, walk, refill }
                })
                .collect();
            let built = p.per_entry(&space, &needs, &mut || mapped);
            let priced = p.per_entry_price(&space, &needs, &mut || mapped);
            proptest::prop_assert_eq!(priced, (built.cycles, built.ops.len() + built.after.len()));
        }
    }

    fn run(p: &Planner, space: &Space, changes: &[Change], mapped: u64) -> Vec<Effect> {
        let mut rec = Recorder::new();
        p.invalidate(space, Purpose::Flush, changes, &mut || mapped, &mut rec);
        rec.take()
    }

    fn tlbis(log: &[Effect]) -> Vec<(TlbiOp, u64)> {
        log.iter()
            .filter_map(|e| match *e {
                Effect::Tlbi { op, operand } => Some((op, operand)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_operation_per_block_with_a_level_hint() {
        let p = Planner::new(
            Capabilities {
                ttl: true,
                ..Capabilities::default()
            },
            Profile::NATIVE,
        );
        let s1 = Space::new(SpaceKind::El1 { asid: 4 });
        // Two 2 MiB blocks unmapped: two VALE1IS with TTL level 2.
        let log = run(&p, &s1, &[change(0, 4 << 20, 2, UNMAPPED)], 1000);
        assert_eq!(
            tlbis(&log),
            vec![
                (TlbiOp::Vale1is, va_operand(4, 0, Ttl::at(1, 2))),
                (TlbiOp::Vale1is, va_operand(4, 2 << 20, Ttl::at(1, 2))),
            ]
        );
        // DSB ISHST before, DSB ISH after: one per batch.
        assert_eq!(log.first(), Some(&Effect::Barrier(Barrier::DsbIshst)));
        assert_eq!(log.last(), Some(&Effect::Barrier(Barrier::DsbIsh)));
    }

    #[test]
    fn stage2_by_ipa_then_vmalle1is() {
        let p = Planner::default();
        let s2 = Space::new(SpaceKind::Stage2 { vmid: 1 });
        let log = run(&p, &s2, &[change(0x1000, 0x2000, 3, UNMAPPED)], 100_000);
        assert_eq!(
            tlbis(&log),
            vec![
                (TlbiOp::Ipas2le1is, ipa_operand(0x1000, Ttl::NONE)),
                (TlbiOp::Vmalle1is, 0)
            ]
        );
        // A DSB ISH completes the IPA invalidation before VMALLE1IS.
        let dsb_before_vmalle1is = log.windows(2).any(|w| {
            w[0] == Effect::Barrier(Barrier::DsbIsh)
                && matches!(
                    w[1],
                    Effect::Tlbi {
                        op: TlbiOp::Vmalle1is,
                        ..
                    }
                )
        });
        assert!(dsb_before_vmalle1is, "{log:?}");
    }

    #[test]
    fn ntlbpa_does_not_drop_the_vmalle1is_after_ipas2() {
        // FEAT_nTLBPA says nothing about combined stage 1+2 entries: the
        // by-IPA sequence is the same with it.
        let s2 = Space::new(SpaceKind::Stage2 { vmid: 1 });
        let changes = [change(0x1000, 0x2000, 3, UNMAPPED)];
        let without = run(&Planner::default(), &s2, &changes, 100_000);
        let p = Planner::new(
            Capabilities {
                ntlbpa: true,
                ..Capabilities::default()
            },
            Profile::NATIVE,
        );
        let with = run(&p, &s2, &changes, 100_000);
        assert_eq!(with, without);
        assert_eq!(
            tlbis(&with),
            vec![
                (TlbiOp::Ipas2le1is, ipa_operand(0x1000, Ttl::NONE)),
                (TlbiOp::Vmalle1is, 0)
            ]
        );
    }

    #[test]
    fn ranges_when_the_cpu_has_them() {
        let p = Planner::new(Capabilities::armv8_4(), Profile::NATIVE);
        let s1 = Space::new(SpaceKind::El1 { asid: 4 });
        // 64 pages: one range operation instead of 64.
        let log = run(
            &p,
            &s1,
            &[change(0x40_0000, 0x44_0000, 3, UNMAPPED)],
            100_000,
        );
        let ops = tlbis(&log);
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert_eq!(ops[0].0, TlbiOp::Rvale1is);
    }

    #[test]
    fn the_whole_space_when_that_is_cheaper() {
        let p = Planner::default();
        let s1 = Space::new(SpaceKind::El1 { asid: 4 });
        // 4096 pages of a space that maps little else.
        let log = run(&p, &s1, &[change(0, 4096 * 4096, 3, UNMAPPED)], 10);
        assert_eq!(tlbis(&log), vec![(TlbiOp::Vmalle1is, 0)]);
        // Under the nested profile VMALLS12E1IS traps and tears down the
        // outer shadow stage 2: by IPA instead.
        let nested = Planner::new(
            Capabilities::armv8_4(),
            Profile {
                traps_el2_tlbi: true,
                trap_emulate: 2_729,
                shadow_stage2_teardown: 4_100_434_800,
                ..Profile::NATIVE
            },
        );
        let s2 = Space::new(SpaceKind::Stage2 { vmid: 1 });
        let log = run(&nested, &s2, &[change(0, 1 << 30, 3, UNMAPPED)], 10);
        assert!(tlbis(&log)
            .iter()
            .all(|(op, _)| *op != TlbiOp::Vmalls12e1is));
    }

    #[test]
    fn nothing_for_relaxed_never_valid_or_dead() {
        let p = Planner::default();
        let s2 = Space::new(SpaceKind::Stage2 { vmid: 1 });
        let relaxed = ChangeFlags::WAS_VALID
            .union(ChangeFlags::IS_VALID)
            .union(ChangeFlags::RELAXED);
        assert!(run(&p, &s2, &[change(0, 0x1000, 3, relaxed)], 100_000).is_empty());
        assert!(run(&p, &s2, &[change(0, 0x1000, 3, ChangeFlags::IS_VALID)], 1).is_empty());
        let dead = Space { dead: true, ..s2 };
        assert!(run(&p, &dead, &[change(0, 0x1000, 3, UNMAPPED)], 1).is_empty());
    }

    #[test]
    fn local_form_drops_is() {
        for op in TlbiOp::ALL {
            let by_name = op
                .mnemonic()
                .strip_suffix("is")
                .and_then(TlbiOp::from_mnemonic)
                .unwrap_or(op);
            assert_eq!(local_form(op), by_name, "{op:?}");
            assert!(!local_form(op).is_broadcast(), "{op:?}");
        }
    }

    #[test]
    fn local_forms_for_a_space_on_the_issuer_only() {
        let p = Planner::default();
        let local = Space {
            local: true,
            ..Space::new(SpaceKind::El1 { asid: 4 })
        };
        let log = run(&p, &local, &[change(0, 0x1000, 3, UNMAPPED)], 10);
        assert_eq!(
            tlbis(&log),
            vec![(TlbiOp::Vale1, va_operand(4, 0, Ttl::NONE))]
        );
        assert_eq!(log.last(), Some(&Effect::Barrier(Barrier::DsbNsh)));
    }

    #[test]
    fn repeat_tlbi_erratum_repeats_the_last_operation() {
        let p = Planner::new(
            Capabilities {
                repeat_tlbi: true,
                ..Capabilities::default()
            },
            Profile::NATIVE,
        );
        let s1 = Space::new(SpaceKind::El1 { asid: 4 });
        let log = run(&p, &s1, &[change(0, 0x1000, 3, UNMAPPED)], 10);
        let op = Effect::Tlbi {
            op: TlbiOp::Vale1is,
            operand: va_operand(4, 0, Ttl::NONE),
        };
        assert_eq!(
            log,
            vec![
                Effect::Barrier(Barrier::DsbIshst),
                op,
                Effect::Barrier(Barrier::DsbIsh),
                op,
                Effect::Barrier(Barrier::DsbIsh),
            ]
        );
    }
}
