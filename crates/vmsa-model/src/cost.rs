//! What TLB maintenance costs: counters kept by the machine, and named
//! profiles that turn them into estimated cycles.
//!
//! # What is counted
//!
//! The [`Machine`](crate::Machine) fills a [`Costs`] as it runs: every TLBI
//! by operation, the DSBs that wait for TLB maintenance to complete
//! (`DSB ISH`, `DSB SY`), the light DSBs (`DSB ISHST`, `DSB NSH`), the
//! ISBs, the still-correct entries an invalidation threw away
//! (*collateral*) and the table walks that will refill them, and the
//! spurious faults taken on entries stricter than the tables.
//!
//! # How counts become cycles
//!
//! A [`Profile`] prices each item. [`Costs::estimate`] multiplies and adds,
//! and returns an [`Estimate`] with the total and one part per item, so a
//! reader can see what dominates. TLBIs are classified with
//! [`TlbiOp::is_broadcast`] and [`TlbiOp::operand_kind`]: local forms,
//! broadcast forms that name an address (VA, IPA or a range), and broadcast
//! forms that remove a whole ASID, VMID or regime.
//!
//! The price of a broadcast invalidation is split the way the hardware
//! splits the work: issuing the TLBI costs the issuing PE about what a local
//! invalidation costs, and the wait for every other PE in the shareability
//! domain to acknowledge is paid by the DSB that completes it. A batch of
//! TLBIs under one DSB therefore pays the wait once. Linux's deferred
//! shootdown on arm64 relies on the same split: issue the TLBIs first, wait
//! once with a DSB at the end (Barry Song, Yicong Yang, "arm64: support
//! batched/deferred tlb shootdown during page reclamation", 2022-2023).
//!
//! # Profiles
//!
//! * [`NATIVE`]: a server-class Arm core (the measurements are mostly from
//!   Neoverse N1 in AWS Graviton2), with the hypervisor at EL2 on bare
//!   metal. TLBIs, barriers and walks cost what the hardware charges; a
//!   spurious fault is an exception to EL2 and back plus a local TLBI.
//! * [`NESTED`]: the same core, but the hypervisor is itself a guest of an
//!   outer hypervisor that uses FEAT_NV/FEAT_NV2. The TLBIs only EL2 can
//!   execute (the IPAS2 family, VMALLS12E1, ALLE1 and the E2 operations)
//!   trap to the outer hypervisor, which emulates them against its shadow
//!   stage 2; each such trap adds a trap-and-emulate cost, and
//!   VMALLS12E1/ALLE1 add the cost of tearing the shadow stage 2 down. EL1
//!   operations (VMALLE1IS, VAE1IS, ASIDE1IS, ...) and barriers run
//!   natively. A spurious fault becomes a nested exception: from the
//!   innermost guest through the outer hypervisor to the guest hypervisor
//!   and back.
//!
//! Every figure in the profiles comes with a comment that names its public
//! source, or says how it was derived from sourced figures.
//!
//! # Limits
//!
//! * The figures come from different machines (X-Gene, AMD Seattle,
//!   Graviton2, Graviton4, an unnamed NVIDIA server) and are put on one
//!   scale by converting nanoseconds at the clock of the machine measured.
//!   The result is an order of magnitude, not a prediction.
//! * The cost of a broadcast TLBI grows with the number of PEs and with
//!   contention; the profiles use one uncontended figure. The KVM patch
//!   "KVM: arm64: Use local TLBI on permission relaxation" (Marc Zyngier,
//!   Ricardo Koller, kvm list, 2023-02) reports implementations that take
//!   milliseconds to complete broadcast TLBIs issued in parallel.
//! * A batch of broadcast TLBIs under one DSB is charged one wait, which
//!   is optimistic for long batches.
//! * Whole-VMID and by-address broadcast invalidations are priced alike:
//!   no public figure separates them. What makes the whole forms expensive
//!   is what they throw away, which the collateral count carries.
//! * Every refill is charged as a two-dimensional walk with all table
//!   entries hitting in the private L2; walk caches make it cheaper, DRAM
//!   misses far dearer.
//! * Under nesting, refills of entries whose shadow stage 2 was torn down
//!   also fault into the outer hypervisor; the counts do not say which
//!   refills those are, so [`NESTED`] does not charge them.
//! * Only the trap itself is priced for the IPAS2 and E2 operations; the
//!   outer hypervisor's work to unmap the named range of the shadow stage 2
//!   has no public figure and is left out.

use core::fmt;
use std::collections::BTreeMap;

use vmsa::tlbi::{OperandKind, TlbiOp};

/// Counters for one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Costs {
    /// Events processed.
    pub events: u64,
    /// Descriptor stores that changed a value.
    pub writes: u64,
    /// TLBIs by operation (the operation names the shareability).
    pub tlbi: BTreeMap<TlbiOp, u64>,
    /// `DSB`s of a shareable domain that waited for TLB maintenance
    /// (`DSB ISH`, `DSB SY`, ...).
    pub dsb: u64,
    /// `DSB`s that wait for stores only (`DSB ISHST`) or the local PE only
    /// (`DSB NSH`).
    pub dsb_light: u64,
    /// `ISB`s.
    pub isb: u64,
    /// Entries removed from a PE's TLB that were still correct (the tables
    /// still held them), counted per PE and per entry kind: each is a
    /// refill walk later if the PE uses it again.
    pub collateral: u64,
    /// Faults taken on an entry stricter than the tables (a permission was
    /// relaxed without invalidation), each costing an exception and a local
    /// TLBI.
    pub spurious_faults: u64,
    /// Table walks to refill entries that an invalidation removed although
    /// they were correct. Under the model's adversarial caching every
    /// collateral entry is assumed used again, so this equals
    /// [`collateral`](Self::collateral) unless guests drive the model.
    pub refill_walks: u64,
}

impl Costs {
    /// Total TLBIs.
    pub fn tlbis(&self) -> u64 {
        self.tlbi.values().sum()
    }

    /// Broadcast TLBIs.
    pub fn broadcast_tlbis(&self) -> u64 {
        self.tlbi
            .iter()
            .filter(|(op, _)| op.is_broadcast())
            .map(|(_, n)| n)
            .sum()
    }
}

impl fmt::Display for Costs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} TLBI", self.tlbis())?;
        if !self.tlbi.is_empty() {
            let ops: Vec<String> = self
                .tlbi
                .iter()
                .map(|(op, n)| format!("{} {}", n, op.mnemonic()))
                .collect();
            write!(f, " ({})", ops.join(", "))?;
        }
        write!(
            f,
            ", {} DSB (+{} ST/NSH), {} ISB, {} stores, {} collateral entries, {} refill walks, {} spurious faults",
            self.dsb,
            self.dsb_light,
            self.isb,
            self.writes,
            self.collateral,
            self.refill_walks,
            self.spurious_faults
        )
    }
}

impl Costs {
    /// Prices the counts under `p`.
    pub fn estimate(&self, p: &Profile) -> Estimate {
        let mut local = 0u64;
        let mut by_address = 0u64;
        let mut whole = 0u64;
        let mut trapped = 0u64;
        let mut shadow = 0u64;
        for (&op, &n) in &self.tlbi {
            match TlbiClass::of(op) {
                TlbiClass::Local => local = local.saturating_add(n),
                TlbiClass::BroadcastByAddress => by_address = by_address.saturating_add(n),
                TlbiClass::BroadcastWhole => whole = whole.saturating_add(n),
            }
            if p.prices.traps_el2_tlbi && el2_only(op) {
                trapped = trapped.saturating_add(n);
                if tears_down_stage2(op) {
                    shadow = shadow.saturating_add(n);
                }
            }
        }
        let parts = vec![
            (PART_LOCAL_TLBI, local.saturating_mul(p.prices.local_tlbi)),
            (
                PART_BROADCAST_BY_ADDRESS,
                by_address.saturating_mul(p.prices.broadcast_by_address),
            ),
            (
                PART_BROADCAST_WHOLE,
                whole.saturating_mul(p.prices.broadcast_whole),
            ),
            (PART_DSB, self.dsb.saturating_mul(p.prices.dsb)),
            (
                PART_DSB_LIGHT,
                self.dsb_light.saturating_mul(p.prices.dsb_light),
            ),
            (PART_ISB, self.isb.saturating_mul(p.prices.isb)),
            (
                PART_REFILL_WALKS,
                self.refill_walks.saturating_mul(p.prices.refill_walk),
            ),
            (
                PART_SPURIOUS_FAULTS,
                self.spurious_faults.saturating_mul(p.spurious_fault()),
            ),
            (PART_TRAPS, trapped.saturating_mul(p.prices.trap_emulate)),
            (
                PART_SHADOW_STAGE2,
                shadow.saturating_mul(p.prices.shadow_stage2_teardown),
            ),
        ];
        let cycles = parts
            .iter()
            .fold(0u64, |acc, (_, c)| acc.saturating_add(*c));
        Estimate { cycles, parts }
    }
}

/// Part name: local (non-shareable) TLBIs.
pub const PART_LOCAL_TLBI: &str = "local TLBI";
/// Part name: issuing broadcast TLBIs that name an address or range.
pub const PART_BROADCAST_BY_ADDRESS: &str = "broadcast TLBI by address";
/// Part name: issuing broadcast TLBIs of a whole ASID, VMID or regime.
pub const PART_BROADCAST_WHOLE: &str = "broadcast TLBI of a whole ASID/VMID/regime";
/// Part name: DSBs that wait for broadcast maintenance to complete.
pub const PART_DSB: &str = "DSB (TLBI completion)";
/// Part name: store-only and non-shareable DSBs.
pub const PART_DSB_LIGHT: &str = "DSB ST/NSH";
/// Part name: ISBs.
pub const PART_ISB: &str = "ISB";
/// Part name: table walks refilling collateral entries.
pub const PART_REFILL_WALKS: &str = "refill walks";
/// Part name: spurious faults.
pub const PART_SPURIOUS_FAULTS: &str = "spurious faults";
/// Part name: traps to the outer hypervisor (nested only).
pub const PART_TRAPS: &str = "trap-and-emulate";
/// Part name: the outer hypervisor tearing down a shadow stage 2 (nested
/// only).
pub const PART_SHADOW_STAGE2: &str = "shadow stage 2 teardown";

/// How a TLBI is priced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbiClass {
    /// Acts on the issuing PE only.
    Local,
    /// Broadcast, limited to an address or a range (VA, IPA, range forms).
    BroadcastByAddress,
    /// Broadcast, removing everything of an ASID, a VMID or a regime
    /// (VMALLE1IS, VMALLS12E1IS, ALLE1IS, ASIDE1IS, ALLE2IS).
    BroadcastWhole,
}

impl TlbiClass {
    /// The class of `op`.
    pub const fn of(op: TlbiOp) -> Self {
        if !op.is_broadcast() {
            return TlbiClass::Local;
        }
        match op.operand_kind() {
            OperandKind::None | OperandKind::Asid => TlbiClass::BroadcastWhole,
            OperandKind::Va | OperandKind::Ipa | OperandKind::Range => {
                TlbiClass::BroadcastByAddress
            }
        }
    }
}

/// Whether only EL2 (or EL3) can execute `op`: the stage 2 and combined
/// stage 1+2 operations of the EL1&0 regime and the operations on the EL2
/// regime. Under FEAT_NV these trap when a guest hypervisor issues them.
/// (The library's classification, which its planner prices with.)
pub const fn el2_only(op: TlbiOp) -> bool {
    vmsa::plan::el2_only(op)
}

/// Whether emulating `op` makes the outer hypervisor throw away whole
/// shadow stage 2 tables (KVM's `handle_vmalls12e1is` and `handle_alle1is`
/// unmap every shadow stage 2 of the VMID, or of the VM).
pub const fn tears_down_stage2(op: TlbiOp) -> bool {
    use TlbiOp::*;
    matches!(op, Vmalls12e1 | Vmalls12e1is | Alle1 | Alle1is)
}

/// A named price list: the planner's [`vmsa::Profile`] (the library type
/// that vmsa's planner prices its choices with), with the name and the
/// description the model's reports use. The model's estimates and the
/// planner read the same figures, so a policy priced under a profile is
/// judged under the same one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Short name, as [`profile`] looks it up.
    pub name: &'static str,
    /// One line on what the profile stands for.
    pub description: &'static str,
    /// The cycle prices. In the planner's terms: `local_tlbi` a local
    /// (non-shareable) TLBI, any operand; `broadcast_by_address` issuing
    /// a broadcast TLBI by VA, IPA or range (the wait for the other PEs is
    /// in `dsb`); `broadcast_whole` issuing one of a whole ASID, VMID or
    /// regime; `dsb` a DSB that waits for broadcast maintenance;
    /// `dsb_light` one that waits for stores only or for the local PE;
    /// `isb`; `refill_walk` one table walk refilling a removed entry (for
    /// a guest, a two-dimensional walk); `exception_round_trip` an
    /// exception from the guest to the hypervisor and back (through the
    /// outer one, under nesting); `traps_el2_tlbi` whether the EL2-only
    /// TLBIs ([`el2_only`]) trap to an outer hypervisor, `trap_emulate`
    /// added to each that does, `shadow_stage2_teardown` added to each
    /// that makes the outer hypervisor tear its shadow stage 2 down
    /// ([`tears_down_stage2`]). `pes` is the planner's guess of the PEs
    /// holding a space's entries ([`planner`](Self::planner) sets it per
    /// run); the model counts refills itself and ignores it.
    pub prices: vmsa::Profile,
}

impl Profile {
    /// A spurious fault: an exception to the hypervisor and back, and the
    /// local TLBI that drops the stricter entry.
    pub const fn spurious_fault(&self) -> u64 {
        self.prices.exception_round_trip + self.prices.local_tlbi
    }

    /// The planner's profile for a run on `pes` PEs.
    pub const fn planner(&self, pes: usize) -> vmsa::Profile {
        vmsa::Profile {
            pes: pes as u64,
            ..self.prices
        }
    }
}

// ----- sourced figures -------------------------------------------------

/// Clock of AWS Graviton2 (64 Neoverse N1 cores): 2.5 GHz, WikiChip
/// "AWS Graviton2" and AnandTech, "A Peek Into Graviton2" (2020). Used to
/// turn the nanoseconds measured on Graviton2 into cycles.
const GRAVITON2_MHZ: u64 = 2_500;

/// ISB on Graviton2 (Neoverse N1): 13.2 ns a loop iteration (google
/// benchmark `BM_isb`), rust-lang/rust PR #84725 (commit c064b6560b7c,
/// "[Arm64] use isb instruction instead of yield in spin loops").
/// 13.2 ns x 2.5 GHz = 33 cycles.
const ISB_CYCLES: u64 = 13_200 * GRAVITON2_MHZ / 1_000_000;

/// No public per-instruction figure was found for a local TLBI, for a DSB
/// that has nothing shareable to wait for, or for issuing a broadcast TLBI.
/// Each is charged as one pipeline drain, the ISB figure above (derived).
/// Bound check: Linux commit cb1fa2e99955 (Huang Ying, "arm64, tlbflush:
/// don't TLBI broadcast if page reused in write fault", v6.19) moved a hot
/// flush from broadcast to local and its share of cycles fell from ~50.5%
/// to ~0.3%: local maintenance is two orders of magnitude cheaper than
/// broadcast maintenance. Charging it 33 against the ~1,170 below errs
/// towards local maintenance costing more.
const PIPELINE_DRAIN_CYCLES: u64 = ISB_CYCLES;

/// One broadcast invalidation with its completion, as Linux issues it in
/// `flush_tlb_kernel_range()` (`DSB ISHST; TLBI VAALE1IS; DSB ISH; ISB`,
/// arch/arm64/include/asm/tlbflush.h): about 469 ns. Derived from Alistair
/// Popple (NVIDIA), "[RFC] arm64: mmu: use range based TLB flushing when
/// hot unplugging memory", linux-arm-kernel, 2026-05-20: hot-unplugging
/// 480 GB with one such flush per page took ~1 minute, and ~1 second with
/// one range flush. (60 s - 1 s) / (480 GiB / 4 KiB = 125,829,120 flushes)
/// = 469 ns, assuming 4 KiB pages. Cross-check: Linux commit c320dbb7c80d
/// (Dev Jain, "arm64/mm: Elide TLB flush in certain pte protection
/// transitions") removed one such flush from an mprotect() and the call
/// went from 3.2 us to 2.85 us, i.e. 350 ns. 469 ns x 2.5 GHz = 1,172.
const BROADCAST_FLUSH_CYCLES: u64 = 469 * GRAVITON2_MHZ / 1_000;

/// The DSB that completes a broadcast TLBI: the measured sequence above
/// minus its DSB ISHST, TLBI issue and ISB (three pipeline drains), i.e.
/// the wait for every PE to acknowledge (derived): 1,172 - 3 x 33 = 1,073.
const DSB_COMPLETION_CYCLES: u64 = BROADCAST_FLUSH_CYCLES - 3 * PIPELINE_DRAIN_CYCLES;

/// Memory references of a two-dimensional walk with 4-level guest and host
/// tables: (4 + 1) x (4 + 1) - 1 = 24. Bhargava, Serebrin, Spadini, Manne,
/// "Accelerating Two-Dimensional Page Walks for Virtualized Systems",
/// ASPLOS 2008, section 2; restated as "up to twenty-four sequential memory
/// accesses" in the abstract of Stojkovic et al., "Parallel Virtualized
/// Memory Translation with Nested Elastic Cuckoo Page Tables", ASPLOS 2022.
const WALK_2D_REFERENCES: u64 = 24;

/// L2 hit latency of Neoverse N1 in Graviton2 (1 MiB L2): 11 cycles,
/// AnandTech, "Cloud Clash: Amazon Graviton2 Arm Against Intel and AMD"
/// (2020), memory subsystem page. Each walk reference is charged as an L2
/// hit (derived); the same page gives ~81 ns for DRAM, so walks that miss
/// to memory cost about 18 times more.
const L2_HIT_CYCLES: u64 = 11;

/// A refill as a two-dimensional walk: 24 references x 11 cycles = 264
/// (derived from the two figures above).
const REFILL_WALK_2D_CYCLES: u64 = WALK_2D_REFERENCES * L2_HIT_CYCLES;

/// A null hypercall round trip with the hypervisor running at EL2
/// (el2Linux, standing in for a VHE or type 1 design): 752 cycles on AMD
/// Seattle (Cortex-A57). Dall, Li, Lim, Nieh, "Optimizing the Design and
/// Implementation of the Linux ARM Hypervisor", USENIX ATC 2017, Table 2.
/// (Taken from a public research note that quotes the table; the split-mode
/// KVM figure of the same table, 6,413, and the 6,500 cycles of Dall et
/// al., "ARM Virtualization: Performance and Architectural Implications",
/// ISCA 2016, Table II, on X-Gene, show what a hypervisor that leaves EL2
/// for every trap pays instead.)
const EL2_ROUND_TRIP_CYCLES: u64 = 752;

/// A hypercall from a VM to KVM and back, the cost of one trap to the outer
/// hypervisor: 2,729 cycles. Lim, Dall, Li, Nieh, Zyngier, "NEVE: Nested
/// Virtualization Extensions for ARM", SOSP 2017, section 5, Table 1 ("VM"
/// column). (Taken from a public research note that quotes the table.)
const OUTER_TRAP_CYCLES: u64 = 2_729;

/// A hypercall from a nested VM to the guest hypervisor and back with NEVE,
/// the design adopted as FEAT_NV2: 92,385 to 100,895 cycles (the lower
/// figure is used). NEVE (SOSP 2017), Table 6. (Taken from a public
/// research note that quotes the table.) Without NEVE, on ARMv8.3 NV, the
/// same paper's Table 1 gives 307,363 to 422,720 cycles.
const NESTED_ROUND_TRIP_CYCLES: u64 = 92_385;

/// Clock of AWS Graviton4 (96 Neoverse V2 cores): 2.8 GHz, WikiChip
/// "AWS Graviton4".
const GRAVITON4_MHZ: u64 = 2_800;

/// KVM emulating a trapped `TLBI VMALLS12E1IS` from a guest hypervisor by
/// unmapping its shadow stage 2 (`handle_vmalls12e1is()`, arch/arm64/kvm/
/// sys_regs.c): ftrace reported 1464441 to 9495486 us per call for Xen
/// running under KVM on Graviton4 (r8g.metal-24xl) with a 48-bit IPA space.
/// Haseeb Ashraf (Siemens), "Re: Limitations for Running Xen on KVM Arm64",
/// xen-devel, 2025-10-31. The minimum, 1.464441 s, is used: x 2.8 GHz =
/// 4,100,434,800 cycles. The same thread reports the cost 256 times lower
/// with a 40-bit IPA space (about 16 million cycles), and that domU
/// creation took up to 200 minutes because of it. ALLE1IS is charged the
/// same: KVM's `handle_alle1is()` unmaps every shadow stage 2 of the VM.
const SHADOW_STAGE2_TEARDOWN_CYCLES: u64 = 1_464_441 * GRAVITON4_MHZ;

/// A server-class Arm core (figures mostly from Neoverse N1 in Graviton2),
/// hypervisor at EL2 on bare metal.
pub const NATIVE: Profile = Profile {
    name: "native",
    description: "server-class Arm core (Neoverse N1 class), hypervisor at EL2 on bare metal",
    prices: vmsa::Profile {
        local_tlbi: PIPELINE_DRAIN_CYCLES,
        broadcast_by_address: PIPELINE_DRAIN_CYCLES,
        broadcast_whole: PIPELINE_DRAIN_CYCLES,
        dsb: DSB_COMPLETION_CYCLES,
        dsb_light: PIPELINE_DRAIN_CYCLES,
        isb: ISB_CYCLES,
        refill_walk: REFILL_WALK_2D_CYCLES,
        exception_round_trip: EL2_ROUND_TRIP_CYCLES,
        traps_el2_tlbi: false,
        trap_emulate: 0,
        shadow_stage2_teardown: 0,
        pes: 4,
    },
};

/// The same core, with the hypervisor a guest of an outer hypervisor that
/// traps and emulates its EL2-only TLBIs (FEAT_NV/NV2, KVM-style shadow
/// stage 2).
pub const NESTED: Profile = Profile {
    name: "nested",
    description: "hypervisor as a guest of an outer hypervisor (FEAT_NV/NV2) that traps and \
                  emulates its EL2-only TLBIs",
    prices: vmsa::Profile {
        exception_round_trip: NESTED_ROUND_TRIP_CYCLES,
        traps_el2_tlbi: true,
        trap_emulate: OUTER_TRAP_CYCLES,
        shadow_stage2_teardown: SHADOW_STAGE2_TEARDOWN_CYCLES,
        ..NATIVE.prices
    },
};

/// Every named profile.
pub const PROFILES: &[&Profile] = &[&NATIVE, &NESTED];

/// The profile called `name` (case-insensitive).
pub fn profile(name: &str) -> Option<&'static Profile> {
    PROFILES
        .iter()
        .copied()
        .find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Estimated cycles for a run, and what they are made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// Total cycles.
    pub cycles: u64,
    /// Cycles by item, in a fixed order; items that cost nothing are kept.
    pub parts: Vec<(&'static str, u64)>,
}

impl Estimate {
    /// The cycles of the part called `name`, if there is such a part.
    pub fn part(&self, name: &str) -> Option<u64> {
        self.parts.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
    }
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cycles", self.cycles)?;
        let parts: Vec<String> = self
            .parts
            .iter()
            .filter(|(_, c)| *c > 0)
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ops: &[(TlbiOp, u64)], dsb: u64, isb: u64) -> Costs {
        let mut c = Costs {
            dsb,
            isb,
            ..Costs::default()
        };
        for &(op, n) in ops {
            *c.tlbi.entry(op).or_insert(0) += n;
        }
        c
    }

    #[test]
    fn figures_derive_as_documented() {
        assert_eq!(ISB_CYCLES, 33);
        assert_eq!(BROADCAST_FLUSH_CYCLES, 1_172);
        assert_eq!(DSB_COMPLETION_CYCLES, 1_073);
        assert_eq!(REFILL_WALK_2D_CYCLES, 264);
        assert_eq!(SHADOW_STAGE2_TEARDOWN_CYCLES, 4_100_434_800);
        // One DSB ISHST; TLBI; DSB ISH; ISB sequence prices at the measured
        // flush.
        let c = Costs {
            dsb_light: 1,
            ..run(&[(TlbiOp::Vaae1is, 1)], 1, 1)
        };
        assert_eq!(c.estimate(&NATIVE).cycles, BROADCAST_FLUSH_CYCLES);
    }

    #[test]
    fn the_planners_native_profile_is_the_models() {
        assert_eq!(NATIVE.prices, vmsa::Profile::NATIVE);
        assert_eq!(NATIVE.planner(8).pes, 8);
        assert_eq!(
            vmsa::Profile {
                pes: 0,
                ..NESTED.planner(3)
            },
            vmsa::Profile {
                pes: 0,
                ..NESTED.prices
            }
        );
    }

    #[test]
    fn nested_vmalls12e1is_dwarfs_native() {
        let c = run(&[(TlbiOp::Vmalls12e1is, 1)], 1, 1);
        let native = c.estimate(&NATIVE);
        let nested = c.estimate(&NESTED);
        assert!(
            nested.cycles > 1_000 * native.cycles,
            "{nested} vs {native}"
        );
        assert_eq!(nested.part(PART_TRAPS), Some(OUTER_TRAP_CYCLES));
        assert_eq!(
            nested.part(PART_SHADOW_STAGE2),
            Some(SHADOW_STAGE2_TEARDOWN_CYCLES)
        );
        assert_eq!(native.part(PART_TRAPS), Some(0));
        // An IPAS2E1IS traps too, but only pays the trap.
        let ipa = run(&[(TlbiOp::Ipas2e1is, 1)], 1, 0).estimate(&NESTED);
        assert_eq!(ipa.part(PART_TRAPS), Some(OUTER_TRAP_CYCLES));
        assert_eq!(ipa.part(PART_SHADOW_STAGE2), Some(0));
    }

    #[test]
    fn el1_operations_cost_the_same_nested() {
        let c = run(&[(TlbiOp::Vmalle1is, 2), (TlbiOp::Vae1is, 5)], 3, 1);
        let native = c.estimate(&NATIVE);
        let nested = c.estimate(&NESTED);
        for e in [&native, &nested] {
            assert_eq!(e.part(PART_TRAPS), Some(0));
            assert_eq!(e.part(PART_SHADOW_STAGE2), Some(0));
        }
        assert_eq!(native, nested);
    }

    #[test]
    fn estimates_grow_with_collateral() {
        let base = run(&[(TlbiOp::Vmalls12e1is, 1)], 1, 1);
        for p in PROFILES {
            let mut more = base.clone();
            // The machine counts one refill walk per collateral entry.
            more.collateral += 100;
            more.refill_walks += 100;
            let (a, b) = (base.estimate(p), more.estimate(p));
            assert!(b.cycles > a.cycles, "{}: {b} vs {a}", p.name);
            assert_eq!(b.part(PART_REFILL_WALKS), Some(100 * REFILL_WALK_2D_CYCLES));
        }
    }

    #[test]
    fn spurious_faults_cost_more_nested() {
        let c = Costs {
            spurious_faults: 1,
            ..Costs::default()
        };
        assert_eq!(
            c.estimate(&NATIVE).cycles,
            EL2_ROUND_TRIP_CYCLES + PIPELINE_DRAIN_CYCLES
        );
        assert_eq!(
            c.estimate(&NESTED).cycles,
            NESTED_ROUND_TRIP_CYCLES + PIPELINE_DRAIN_CYCLES
        );
    }

    #[test]
    fn profiles_resolve_by_name() {
        assert_eq!(profile("native"), Some(&NATIVE));
        assert_eq!(profile("nested"), Some(&NESTED));
        assert_eq!(profile("Nested").map(|p| p.name), Some("nested"));
        assert_eq!(profile("bare"), None);
        let mut names: Vec<_> = PROFILES.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROFILES.len());
    }

    #[test]
    fn classification() {
        use TlbiOp::*;
        assert_eq!(TlbiClass::of(Vae1), TlbiClass::Local);
        assert_eq!(TlbiClass::of(Vmalls12e1), TlbiClass::Local);
        assert_eq!(TlbiClass::of(Vae1is), TlbiClass::BroadcastByAddress);
        assert_eq!(TlbiClass::of(Ipas2e1is), TlbiClass::BroadcastByAddress);
        assert_eq!(TlbiClass::of(Rvae1is), TlbiClass::BroadcastByAddress);
        for op in [Vmalle1is, Vmalls12e1is, Alle1is, Aside1is, Alle2is] {
            assert_eq!(TlbiClass::of(op), TlbiClass::BroadcastWhole, "{op:?}");
        }
        let trapped: Vec<_> = TlbiOp::ALL.into_iter().filter(|&o| el2_only(o)).collect();
        assert_eq!(trapped.len(), 18);
        assert!(trapped.iter().all(|o| {
            let m = o.mnemonic();
            m.contains("s2") || m.contains("s12") || m.contains("e2") || m.starts_with("alle1")
        }));
        assert!(!el2_only(Vmalle1is) && !el2_only(Vae1is) && !el2_only(Aside1is));
    }

    #[test]
    fn display_lists_nonzero_parts() {
        let c = run(&[(TlbiOp::Vale1is, 1)], 1, 0);
        let s = c.estimate(&NATIVE).to_string();
        assert!(s.starts_with("1106 cycles ("), "{s}");
        assert!(s.contains("broadcast TLBI by address 33"), "{s}");
        assert!(!s.contains("ISB"), "{s}");
    }
}
