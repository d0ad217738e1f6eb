//! What the CPU offers and what it needs worked around, in one value the
//! invalidation planner consults.

/// CPU features and quirks that change which TLB maintenance is possible
/// or needed.
///
/// The default is the architecture's baseline: no optional feature, 16-bit
/// VMIDs and ASIDs, no erratum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Capabilities {
    /// FEAT_TLBIRANGE: `TLBI RVAE1IS`, `RIPAS2E1IS`, ... (Armv8.4).
    pub tlbi_range: bool,
    /// FEAT_TTL: level hints in TLBI operands are honoured (Armv8.4).
    pub ttl: bool,
    /// FEAT_nTLBPA: the TLB holds no entries cached from intermediate
    /// physical addresses, so stage 2 invalidation by IPA needs no
    /// `VMALLE1IS` after it. Off by default: only set it when
    /// `ID_AA64MMFR1_EL1.nTLBPA` says so.
    pub ntlbpa: bool,
    /// FEAT_BBM level (0, 1 or 2: `ID_AA64MMFR2_EL1.BBM`).
    pub bbm_level: u8,
    /// VMID width in bits: 8, or 16 with FEAT_VMID16 and `VTCR_EL2.VS`.
    pub vmid_bits: u8,
    /// ASID width in bits: 8 or 16 (`TCR_EL1.AS`).
    pub asid_bits: u8,
    /// Errata needing every TLBI followed by `DSB ISH` to be issued twice
    /// (Linux's `ARM64_WORKAROUND_REPEAT_TLBI`, e.g. Cortex-A76 erratum
    /// 1286807, Qualcomm Falkor E1009).
    pub repeat_tlbi: bool,
    /// Speculative AT errata (Cortex-A55 1530923, A76 1165522 and others):
    /// while VTTBR_EL2 is switched to another VMID only to run TLBIs, point
    /// it at an empty root, not at a real table.
    pub speculative_at: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            tlbi_range: false,
            ttl: false,
            ntlbpa: false,
            bbm_level: 0,
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
            bbm_level: 0,
            vmid_bits: 16,
            asid_bits: 16,
            repeat_tlbi: false,
            speculative_at: false,
        }
    }
}
