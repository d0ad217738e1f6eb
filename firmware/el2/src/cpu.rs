//! What the CPU says about itself in its ID registers, as vmsa's
//! [`Capabilities`].

use vmsa::Capabilities;

/// The TLB maintenance features of this CPU.
pub fn capabilities() -> Capabilities {
    let isar0 = crate::mrs!("id_aa64isar0_el1");
    let mmfr0 = crate::mrs!("id_aa64mmfr0_el1");
    let mmfr1 = crate::mrs!("id_aa64mmfr1_el1");
    let mmfr2 = crate::mrs!("id_aa64mmfr2_el1");
    Capabilities {
        // ID_AA64ISAR0_EL1.TLB [59:56]: 0b0010 = TLBIOS + TLBIRANGE.
        tlbi_range: (isar0 >> 56) & 0xf >= 2,
        // ID_AA64MMFR2_EL1.TTL [51:48].
        ttl: (mmfr2 >> 48) & 0xf >= 1,
        // ID_AA64MMFR1_EL1.nTLBPA [51:48].
        ntlbpa: (mmfr1 >> 48) & 0xf >= 1,
        // ID_AA64MMFR1_EL1.VMIDBits [7:4]: 0b0010 = 16 bits.
        vmid_bits: if (mmfr1 >> 4) & 0xf == 2 { 16 } else { 8 },
        // ID_AA64MMFR0_EL1.ASIDBits [7:4].
        asid_bits: if (mmfr0 >> 4) & 0xf == 2 { 16 } else { 8 },
        repeat_tlbi: false,
        speculative_at: false,
    }
}
