//! What the CPU offers and what it needs worked around, in one value the
//! invalidation planner consults.
//!
//! A [`Table`](crate::Table) reads the capabilities from its invalidator
//! ([`Invalidator::capabilities`](crate::Invalidator::capabilities)) for
//! the maintenance it issues itself; the VMID / ASID rollover flush and the
//! request shim take them as an argument. Every TLBI vmsa issues goes
//! through [`tlbi::issue`](crate::tlbi::issue), which applies the errata
//! workarounds.

/// CPU features and quirks that change which TLB maintenance is possible
/// or needed.
///
/// The default is the architecture's baseline: no optional feature, 16-bit
/// VMIDs and ASIDs, no erratum. Describe the CPU once (from its ID
/// registers and errata list) and hand it to the [`Planner`](crate::Planner),
/// which then uses range TLBIs and level hints only where they exist, and
/// applies the errata on every path:
///
/// ```
/// use vmsa::{tlbi, Barrier, Capabilities, Effect, Planner, Profile, Recorder, TlbiOp};
///
/// // An Armv8.4 CPU with Cortex-A76's repeat-TLBI erratum (1286807).
/// let caps = Capabilities { repeat_tlbi: true, ..Capabilities::armv8_4() };
/// assert!(caps.tlbi_range && caps.ttl);
/// let _planner = Planner::new(caps, Profile::NATIVE);
///
/// // Every TLBI goes through tlbi::issue, which repeats the last one.
/// let mut fx = Recorder::new();
/// tlbi::issue(&mut fx, &caps, [(TlbiOp::Vmalls12e1is, 0)], Barrier::DsbIsh);
/// let tlbis = fx.log().iter().filter(|e| matches!(e, Effect::Tlbi { .. })).count();
/// assert_eq!(tlbis, 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Capabilities {
    /// FEAT_TLBIRANGE: `TLBI RVAE1IS`, `RIPAS2E1IS`, ... (Armv8.4).
    pub tlbi_range: bool,
    /// FEAT_TTL: level hints in TLBI operands are honoured (Armv8.4).
    pub ttl: bool,
    /// FEAT_nTLBPA (`ID_AA64MMFR1_EL1.nTLBPA`), for reporting only: no
    /// maintenance depends on it. The feature says that the intermediate
    /// caching of translation table walks includes no non-coherent caches
    /// keyed by physical address; it says nothing about combined stage 1+2
    /// entries, so stage 2 invalidation by IPA is still followed by
    /// `DSB ISH; TLBI VMALLE1IS` on a CPU that has it.
    pub ntlbpa: bool,
    /// VMID width in bits: 8, or 16 with FEAT_VMID16 and `VTCR_EL2.VS`.
    pub vmid_bits: u8,
    /// ASID width in bits: 8 or 16 (`TCR_EL1.AS`).
    pub asid_bits: u8,
    /// Errata needing a TLBI completed twice (Linux's
    /// `ARM64_WORKAROUND_REPEAT_TLBI`, e.g. Cortex-A76 erratum 1286807,
    /// Qualcomm Falkor E1009): after the TLBIs and the DSB that completes
    /// them, the last TLBI is issued again and completed by the same DSB
    /// ([`tlbi::issue`](crate::tlbi::issue), on every path that issues a
    /// TLBI).
    pub repeat_tlbi: bool,
    /// Speculative AT errata (Cortex-A55 1530923, A76 1165522 and others):
    /// while a [`Table`](crate::Table) switches VTTBR_EL2 to its VMID only
    /// to run TLBIs, it points VTTBR_EL2 at the empty root given to
    /// [`Table::set_empty_root`](crate::Table::set_empty_root), not at its
    /// real root. Without the erratum the real root is used even if an
    /// empty root was set.
    pub speculative_at: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            tlbi_range: false,
            ttl: false,
            ntlbpa: false,
            vmid_bits: 16,
            asid_bits: 16,
            repeat_tlbi: false,
            speculative_at: false,
        }
    }
}

impl Capabilities {
    /// An Armv8.4-class server core: ranges and level hints.
    pub const fn armv8_4() -> Self {
        Capabilities {
            tlbi_range: true,
            ttl: true,
            ntlbpa: false,
            vmid_bits: 16,
            asid_bits: 16,
            repeat_tlbi: false,
            speculative_at: false,
        }
    }
}
