//! The guest side: EL2 configuration for an EL1 guest under stage 2, and
//! single guest runs that perform one access and report what happened.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::boot::{guest_entry, guest_vectors, run_guest, GuestRun};
use vmsa_el2::{mrs, msr};

/// HCR_EL2.VM: stage 2 translation for EL1&0.
const HCR_VM: u64 = 1 << 0;
/// HCR_EL2.RW: EL1 is AArch64.
const HCR_RW: u64 = 1 << 31;
/// SCTLR_EL1 with its RES1 bits (29, 28, 23, 22, 20, 11) and the MMU, the
/// caches and alignment checks off: the guest runs with stage 1 off, so
/// its addresses are IPAs.
const SCTLR_EL1_MMU_OFF: u64 = 0x30d0_0800;
/// SCTLR_EL1.M: stage 1 on. The data and instruction caches stay off
/// (C = I = 0): EL2 writes the guest's data and stage 1 tables with its
/// own MMU off (non-cacheable), so the guest's accesses and stage 1 walks
/// are non-cacheable too and no cache maintenance is needed.
const SCTLR_EL1_M: u64 = 1 << 0;

/// Exception classes (ESR_ELx.EC).
pub const EC_HVC64: u64 = 0x16;
pub const EC_IABT_LOW: u64 = 0x20;
pub const EC_DABT_LOW: u64 = 0x24;

/// Configures EL2 for running an AArch64 EL1 guest under stage 2: nothing
/// else is trapped or routed (IRQs stay masked in the guest).
pub fn setup_el2() {
    msr!("hcr_el2", HCR_VM | HCR_RW);
    msr!("sctlr_el1", SCTLR_EL1_MMU_OFF);
    // Stage 1 registers are ignored with SCTLR_EL1.M == 0; zero them anyway.
    msr!("tcr_el1", 0u64);
    msr!("ttbr0_el1", 0u64);
    msr!("ttbr1_el1", 0u64);
    // Exceptions taken to EL1 (stage 1 faults) come back to EL2 as HVC #1.
    msr!("vbar_el1", guest_vectors as *const () as u64);
    isb();
}

fn isb() {
    // SAFETY: context synchronization only.
    unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
}

/// Turns the guest's stage 1 on for later runs on this PE: MAIR_EL1 =
/// `mair`, SCTLR_EL1.M = 1. TCR_EL1 and TTBR0_EL1 are the caller's (a
/// stage 1 table's `activate`).
pub fn stage1_on(mair: u64) {
    msr!("mair_el1", mair);
    msr!("sctlr_el1", SCTLR_EL1_MMU_OFF | SCTLR_EL1_M);
    isb();
}

/// Turns the guest's stage 1 off again (the state `setup_el2` leaves).
pub fn stage1_off() {
    msr!("sctlr_el1", SCTLR_EL1_MMU_OFF);
    msr!("tcr_el1", 0u64);
    msr!("ttbr0_el1", 0u64);
    msr!("mair_el1", 0u64);
    isb();
}

/// A data or instruction abort taken to EL2 from the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abort {
    pub ec: u64,
    pub esr: u64,
    /// The faulting IPA: HPFAR_EL2.FIPA (IPA[51:12]) with FAR_EL2[11:0].
    pub ipa: u64,
    pub far: u64,
}

impl Abort {
    /// ISS.DFSC / IFSC.
    pub fn fsc(&self) -> u64 {
        self.esr & 0x3f
    }
    /// A translation fault (at any level).
    pub fn is_translation(&self) -> bool {
        self.fsc() & 0x3c == 0x04
    }
    /// A permission fault (at any level).
    pub fn is_permission(&self) -> bool {
        self.fsc() & 0x3c == 0x0c
    }
    /// The level of the fault.
    pub fn level(&self) -> u64 {
        self.fsc() & 3
    }
    /// ISS.WnR: the access was a write.
    pub fn is_write(&self) -> bool {
        self.ec == EC_DABT_LOW && self.esr & (1 << 6) != 0
    }
    /// ISS.S1PTW: the fault was on a stage 1 walk's access.
    pub fn s1ptw(&self) -> bool {
        self.esr & (1 << 7) != 0
    }
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_translation() {
            "translation"
        } else if self.is_permission() {
            "permission"
        } else if self.fsc() & 0x3c == 0x08 {
            "access flag"
        } else {
            "other"
        };
        write!(
            f,
            "EC {:#x} {kind} fault L{} ({}) at IPA {:#x} (ESR {:#x}, FAR {:#x})",
            self.ec,
            self.level(),
            if self.is_write() { "write" } else { "read" },
            self.ipa,
            self.esr,
            self.far
        )
    }
}

/// How a guest run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It reached `HVC #0` with this x0.
    Value(u64),
    /// A stage 2 abort (EC 0x24 / 0x20).
    Fault(Abort),
    /// An exception the guest took to EL1 (a stage 1 fault), reported by
    /// its vectors with HVC #1.
    El1 {
        /// Vector offset / 0x80 (0: synchronous, current EL, SP_EL0; 4:
        /// synchronous, current EL, SP_ELx; ...).
        vector: u64,
        /// ESR_EL1.
        esr: u64,
        /// FAR_EL1.
        far: u64,
        /// ELR_EL1.
        elr: u64,
    },
    /// The guest's shim refused the request registers (HVC #3): x8.
    ShimRefused(u64),
    /// Anything else (a bug).
    Other { kind: u64, esr: u64, elr: u64 },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Value(v) => write!(f, "value {v:#x}"),
            Outcome::Fault(a) => write!(f, "{a}"),
            Outcome::El1 {
                vector,
                esr,
                far,
                elr,
            } => write!(
                f,
                "EL1 exception (vector {vector}): ESR_EL1 {esr:#x} (EC {:#x}, FSC {:#x}), FAR_EL1 {far:#x}, ELR_EL1 {elr:#x}",
                esr >> 26,
                esr & 0x3f
            ),
            Outcome::ShimRefused(x8) => write!(f, "the guest's shim refused X8 = {x8:#x}"),
            Outcome::Other { kind, esr, elr } => write!(
                f,
                "unexpected exit: vector {kind}, ESR {esr:#x} (EC {:#x}), ELR {elr:#x}",
                esr >> 26
            ),
        }
    }
}

/// Guest runs so far, on every PE. A plain load and store, not a
/// read-modify-write: memory is Device with the MMU off, and the count is
/// only reported.
static RUNS: AtomicU64 = AtomicU64::new(0);

/// Number of guest runs so far.
pub fn runs() -> u64 {
    RUNS.load(Ordering::Relaxed)
}

/// Runs the guest once on this PE with x0-x3 = `x` (see `guest_entry`).
pub fn run(x: [u64; 4]) -> Outcome {
    run_with_calls(x, |_| None)
}

/// Runs the guest from `x` (see `guest_entry`); whenever it makes a call
/// (HVC #2), `call` is given the guest's x0-x3 and returns the x8-x11 the
/// guest resumes with after the HVC (`None`: end the run with an
/// unexpected exit).
pub fn run_with_calls(x: [u64; 4], mut call: impl FnMut([u64; 4]) -> Option<[u64; 4]>) -> Outcome {
    let mut run = GuestRun {
        x,
        pc: guest_entry as *const () as u64,
        ..GuestRun::default()
    };
    loop {
        run_guest(&mut run);
        RUNS.store(RUNS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let ec = run.esr >> 26;
        let imm = run.esr & 0xffff;
        return match (run.kind, ec, imm) {
            (0, EC_HVC64, 0) => Outcome::Value(run.x[0]),
            (0, EC_HVC64, 1) => Outcome::El1 {
                vector: run.x[0],
                esr: run.x[1],
                far: run.x[2],
                elr: run.x[3],
            },
            (0, EC_HVC64, 2) => match call(run.x) {
                Some(xr) => {
                    // Resume after the HVC (ELR_EL2 points past it) with
                    // the guest's x0-x3 and the request in x8-x11.
                    run.pc = run.elr;
                    run.xr = xr;
                    continue;
                }
                None => Outcome::Other {
                    kind: run.kind,
                    esr: run.esr,
                    elr: run.elr,
                },
            },
            (0, EC_HVC64, 3) => Outcome::ShimRefused(run.x[0]),
            (0, EC_DABT_LOW | EC_IABT_LOW, _) => Outcome::Fault(Abort {
                ec,
                esr: run.esr,
                ipa: ((run.hpfar >> 4) & ((1 << 44) - 1)) << 12 | (run.far & 0xfff),
                far: run.far,
            }),
            _ => Outcome::Other {
                kind: run.kind,
                esr: run.esr,
                elr: run.elr,
            },
        };
    }
}

/// The guest loads the doubleword at `ipa`.
pub fn read(ipa: u64) -> Outcome {
    run([ipa, 0, 0, 0])
}

/// The guest stores `value` at `ipa`.
pub fn write(ipa: u64, value: u64) -> Outcome {
    run([ipa, 1, value, 0])
}

/// The guest loads `count` doublewords at `ipa`, `ipa + stride`, ... and
/// returns their sum.
pub fn read_many(ipa: u64, count: u64, stride: u64) -> Outcome {
    run([ipa, 2, count, stride])
}

/// Arguments of the guest's spin: load `ipa` until it differs from `old`,
/// at most `max` times; the result is the last value loaded.
pub const fn spin_args(ipa: u64, old: u64, max: u64) -> [u64; 4] {
    [ipa, 3, old, max]
}

/// The VTTBR_EL2 loaded now.
pub fn vttbr() -> u64 {
    mrs!("vttbr_el2")
}
