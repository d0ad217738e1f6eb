//! The EL2 state Linux needs when it is entered at EL1 (after
//! `Documentation/arch/arm64/booting.rst` and Linux's own `init_el2_state`,
//! nVHE flavour), and exception injection into the guest.

use vmsa_el2::{mrs, msr};

const HCR_VM: u64 = 1 << 0;
const HCR_SWIO: u64 = 1 << 1;
const HCR_TWI: u64 = 1 << 13;
const HCR_TSC: u64 = 1 << 19;
const HCR_RW: u64 = 1 << 31;
const HCR_APK: u64 = 1 << 40;
const HCR_API: u64 = 1 << 41;
const HCR_ATA: u64 = 1 << 56;

/// Sets up this PE's EL2 for a Linux vCPU: timers, PMU, GIC system
/// registers, ID registers, no fine-grained or SVE/SME traps, SCTLR_EL1
/// as at reset, stage 2 on (`vtcr`, `vttbr`), and HCR_EL2: stage 2, AArch64
/// EL1, SMCs trapped (the PSCI proxy), pointer authentication keys not
/// trapped, WFI trapped when `trap_wfi` (a tick for the live changes).
pub fn setup_el2(vtcr: u64, vttbr: u64, trap_wfi: bool) {
    let pfr0 = mrs!("id_aa64pfr0_el1");
    let pfr1 = mrs!("id_aa64pfr1_el1");
    let mmfr0 = mrs!("id_aa64mmfr0_el1");
    let mmfr1 = mrs!("id_aa64mmfr1_el1");
    let dfr0 = mrs!("id_aa64dfr0_el1");

    // EL1 may use the physical counter and timer; no virtual offset.
    msr!("cnthctl_el2", 3);
    msr!("cntvoff_el2", 0);
    // PMU: every counter to EL1 (HPMN = PMCR_EL0.N), no debug traps.
    let pmuver = (dfr0 >> 8) & 0xf;
    let hpmn = if pmuver != 0 && pmuver != 0xf {
        (mrs!("pmcr_el0") >> 11) & 0x1f
    } else {
        0
    };
    msr!("mdcr_el2", hpmn);
    // LORegions off.
    if (mmfr1 >> 16) & 0xf != 0 {
        msr!("s3_0_c10_c4_3", 0); // LORC_EL1
    }
    // GICv3: EL1 uses the system register interface (SRE) and may set
    // ICC_SRE_EL1 (Enable); no virtual CPU interface.
    if (pfr0 >> 24) & 0xf != 0 {
        let sre = mrs!("s3_4_c12_c9_5"); // ICC_SRE_EL2
        msr!("s3_4_c12_c9_5", sre | 1 | (1 << 3));
        vmsa_el2::sysreg::isb();
        msr!("s3_4_c12_c11_0", 0); // ICH_HCR_EL2
    }
    msr!("hstr_el2", 0);
    // What EL1 reads as MIDR_EL1 / MPIDR_EL1.
    msr!("vpidr_el2", mrs!("midr_el1"));
    msr!("vmpidr_el2", mrs!("mpidr_el1"));
    // FEAT_HCX: HCRX_EL2 traps nothing.
    if (mmfr1 >> 40) & 0xf != 0 {
        msr!("s3_4_c1_c2_2", 0);
    }
    // FEAT_FGT: no fine-grained traps.
    if (mmfr0 >> 56) & 0xf != 0 {
        msr!("s3_4_c1_c1_4", 0); // HFGRTR_EL2
        msr!("s3_4_c1_c1_5", 0); // HFGWTR_EL2
        msr!("s3_4_c1_c1_6", 0); // HFGITR_EL2
        msr!("s3_4_c3_c1_4", 0); // HDFGRTR_EL2
        msr!("s3_4_c3_c1_5", 0); // HDFGWTR_EL2
    }
    vmsa_el2::sysreg::isb();
    // SVE: the largest vector length (ZCR_EL2.LEN all ones).
    if (pfr0 >> 32) & 0xf != 0 {
        msr!("s3_4_c1_c2_0", 0x1ff); // ZCR_EL2
    }
    // SME: the largest streaming vector length, FA64 if present.
    if (pfr1 >> 24) & 0xf != 0 {
        let fa64 = mrs!("s3_0_c0_c4_5") & (1 << 63); // ID_AA64SMFR0_EL1
        msr!("s3_4_c1_c2_6", 0x1ff | fa64); // SMCR_EL2
        if mrs!("s3_1_c0_c0_6") & (1 << 15) != 0 {
            msr!("s3_4_c1_c2_5", 0); // SMPRIMAP_EL2
        }
    }
    // EL1 as booting.rst wants it: MMU and caches off (RES1 bits set).
    msr!("sctlr_el1", 0x30d0_0800);
    msr!("vtcr_el2", vtcr);
    msr!("vttbr_el2", vttbr);
    vmsa_el2::sysreg::isb();
    // Nothing of this VMID may be cached on this PE from before: local,
    // since only this PE is concerned.
    // SAFETY: TLB maintenance changes no memory Rust can see.
    unsafe {
        core::arch::asm!(
            "tlbi vmalls12e1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        )
    };
    let mut hcr = HCR_VM | HCR_SWIO | HCR_TSC | HCR_RW | HCR_API | HCR_APK;
    if (pfr1 >> 8) & 0xf >= 2 {
        hcr |= HCR_ATA; // FEAT_MTE2: EL1 may use allocation tags
    }
    if trap_wfi {
        hcr |= HCR_TWI;
    }
    msr!("hcr_el2", hcr);
    vmsa_el2::sysreg::isb();
}

/// ESR_ELx.IL: a 32-bit instruction.
const ESR_IL: u64 = 1 << 25;
/// Fault status code: synchronous external abort, not on a walk.
const FSC_SEA: u64 = 0x10;

/// Makes the guest take a synchronous exception at EL1 with syndrome
/// `esr` (and `far`, for aborts) when the current trap returns: what a
/// real EL1 would see, with ELR_EL1 / SPSR_EL1 holding the interrupted
/// context (after KVM's `enter_exception64`).
fn inject(esr: u64, far: Option<u64>) {
    let spsr = mrs!("spsr_el2");
    let elr = mrs!("elr_el2");
    // SPSR.M[3:0]: 0b0000 EL0t, 0b0100 EL1t, 0b0101 EL1h.
    let offset = match spsr & 0xf {
        0b0100 => 0x000,
        0b0101 => 0x200,
        _ => 0x400,
    };
    msr!("elr_el1", elr);
    msr!("spsr_el1", spsr);
    msr!("esr_el1", esr);
    if let Some(far) = far {
        msr!("far_el1", far);
    }
    // EL1h, D, A, I, F masked; PSTATE.PAN set on entry unless SCTLR_EL1.SPAN.
    let mut pstate = 0x3c5;
    let span = mrs!("sctlr_el1") & (1 << 23) != 0;
    if !span || spsr & (1 << 22) != 0 {
        pstate |= 1 << 22;
    }
    msr!("spsr_el2", pstate);
    msr!("elr_el2", mrs!("vbar_el1") + offset);
}

/// Whether the trapped context was EL0.
fn from_el0() -> bool {
    mrs!("spsr_el2") & 0xf == 0
}

/// Answers a guest access outside its IPA map with a synchronous external
/// abort (as KVM's `kvm_inject_dabt` / `kvm_inject_pabt` do): `instruction`
/// for an instruction fetch, with the faulting VA `far`.
pub fn inject_external_abort(instruction: bool, far: u64, original_esr: u64) {
    let ec = match (instruction, from_el0()) {
        (false, true) => 0x24,
        (false, false) => 0x25,
        (true, true) => 0x20,
        (true, false) => 0x21,
    };
    // Keep WnR for data aborts (ISS bit 6).
    let wnr = if instruction {
        0
    } else {
        original_esr & (1 << 6)
    };
    inject((ec << 26) | ESR_IL | wnr | FSC_SEA, Some(far));
}

/// Makes the trapped instruction UNDEFINED for the guest (EC 0, unknown
/// reason), as a real EL1 would see an instruction it may not execute.
pub fn inject_undef() {
    inject(ESR_IL, None);
}
