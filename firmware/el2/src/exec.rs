//! vmsa's effects executed by the CPU: descriptor stores, barriers, TLBIs,
//! system register writes and cache maintenance as real instructions,
//! counted.

use alloc::vec::Vec;
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use vmsa::{Barrier, CacheOp, Effects, Pa, PageEvent, SysReg, TlbiOp};

/// `TLBI <op>, Xt`.
macro_rules! tlbi {
    ($op:literal, $x:expr) => {
        // SAFETY: TLB maintenance changes no memory Rust can see.
        unsafe { asm!(concat!("tlbi ", $op, ", {x}"), x = in(reg) $x, options(nostack, preserves_flags)) }
    };
    ($op:literal) => {
        // SAFETY: as above.
        unsafe { asm!(concat!("tlbi ", $op), options(nostack, preserves_flags)) }
    };
}

/// `TLBI <op>, Xt` for the FEAT_TLBIRANGE operations (Armv8.4), which the
/// assembler only accepts with the extension enabled.
macro_rules! tlbi_range {
    ($op:literal, $x:expr) => {
        // SAFETY: as above; callers only issue range operations when
        // ID_AA64ISAR0_EL1.TLB says the CPU has them.
        unsafe {
            asm!(
                ".arch_extension tlb-rmi",
                concat!("tlbi ", $op, ", {x}"),
                x = in(reg) $x,
                options(nostack, preserves_flags)
            )
        }
    };
}

/// Executes one TLBI.
pub fn tlbi(op: TlbiOp, x: u64) {
    use TlbiOp::*;
    match op {
        Vae1 => tlbi!("vae1", x),
        Vae1is => tlbi!("vae1is", x),
        Vale1 => tlbi!("vale1", x),
        Vale1is => tlbi!("vale1is", x),
        Vaae1 => tlbi!("vaae1", x),
        Vaae1is => tlbi!("vaae1is", x),
        Vaale1 => tlbi!("vaale1", x),
        Vaale1is => tlbi!("vaale1is", x),
        Aside1 => tlbi!("aside1", x),
        Aside1is => tlbi!("aside1is", x),
        Vmalle1 => tlbi!("vmalle1"),
        Vmalle1is => tlbi!("vmalle1is"),
        Ipas2e1 => tlbi!("ipas2e1", x),
        Ipas2e1is => tlbi!("ipas2e1is", x),
        Ipas2le1 => tlbi!("ipas2le1", x),
        Ipas2le1is => tlbi!("ipas2le1is", x),
        Vmalls12e1 => tlbi!("vmalls12e1"),
        Vmalls12e1is => tlbi!("vmalls12e1is"),
        Alle1 => tlbi!("alle1"),
        Alle1is => tlbi!("alle1is"),
        Vae2 => tlbi!("vae2", x),
        Vae2is => tlbi!("vae2is", x),
        Vale2 => tlbi!("vale2", x),
        Vale2is => tlbi!("vale2is", x),
        Alle2 => tlbi!("alle2"),
        Alle2is => tlbi!("alle2is"),
        Rvae1 => tlbi_range!("rvae1", x),
        Rvae1is => tlbi_range!("rvae1is", x),
        Rvale1 => tlbi_range!("rvale1", x),
        Rvale1is => tlbi_range!("rvale1is", x),
        Rvaae1 => tlbi_range!("rvaae1", x),
        Rvaae1is => tlbi_range!("rvaae1is", x),
        Rvaale1 => tlbi_range!("rvaale1", x),
        Rvaale1is => tlbi_range!("rvaale1is", x),
        Ripas2e1 => tlbi_range!("ripas2e1", x),
        Ripas2e1is => tlbi_range!("ripas2e1is", x),
        Ripas2le1 => tlbi_range!("ripas2le1", x),
        Ripas2le1is => tlbi_range!("ripas2le1is", x),
    }
}

/// Executes one barrier.
pub fn barrier(b: Barrier) {
    // SAFETY: barriers only order; `nostack` and no `nomem`: they act as
    // compiler fences too.
    unsafe {
        match b {
            Barrier::DsbIsh => asm!("dsb ish", options(nostack, preserves_flags)),
            Barrier::DsbIshst => asm!("dsb ishst", options(nostack, preserves_flags)),
            Barrier::DsbNsh => asm!("dsb nsh", options(nostack, preserves_flags)),
            Barrier::DsbSy => asm!("dsb sy", options(nostack, preserves_flags)),
            Barrier::Isb => asm!("isb", options(nostack, preserves_flags)),
        }
    }
}

/// Writes one system register.
pub fn write_sysreg(reg: SysReg, v: u64) {
    match reg {
        SysReg::VttbrEl2 => crate::msr!("vttbr_el2", v),
        SysReg::VtcrEl2 => crate::msr!("vtcr_el2", v),
        SysReg::HcrEl2 => crate::msr!("hcr_el2", v),
        SysReg::Ttbr0El1 => crate::msr!("ttbr0_el1", v),
        SysReg::Ttbr1El1 => crate::msr!("ttbr1_el1", v),
        SysReg::TcrEl1 => crate::msr!("tcr_el1", v),
        SysReg::MairEl1 => crate::msr!("mair_el1", v),
        SysReg::SctlrEl1 => crate::msr!("sctlr_el1", v),
        SysReg::Ttbr0El2 => crate::msr!("ttbr0_el2", v),
        SysReg::TcrEl2 => crate::msr!("tcr_el2", v),
        SysReg::MairEl2 => crate::msr!("mair_el2", v),
        SysReg::SctlrEl2 => crate::msr!("sctlr_el2", v),
    }
}

/// Executes one cache maintenance operation.
pub fn cache(op: CacheOp, addr: u64) {
    // SAFETY: cleaning / invalidating caches by VA to the point of
    // coherency or invalidating instruction caches loses no data.
    unsafe {
        match op {
            CacheOp::DcCvac => {
                asm!("dc cvac, {a}", a = in(reg) addr, options(nostack, preserves_flags))
            }
            CacheOp::DcCivac => {
                asm!("dc civac, {a}", a = in(reg) addr, options(nostack, preserves_flags))
            }
            CacheOp::IcIallu => asm!("ic iallu", options(nostack, preserves_flags)),
            CacheOp::IcIalluis => asm!("ic ialluis", options(nostack, preserves_flags)),
        }
    }
}

/// One TLBI as issued, with the VTTBR_EL2 loaded at the time (stage 2
/// operations act on its VMID).
#[derive(Clone, Copy, Debug)]
pub struct Issued {
    /// The operation.
    pub op: TlbiOp,
    /// Its Xt operand.
    pub operand: u64,
    /// VTTBR_EL2 when it ran.
    pub vttbr: u64,
}

/// The real-CPU effects executor. Counts every TLBI by kind and keeps a
/// log of the TLBIs issued since the last [`Hw::take_log`].
pub struct Hw {
    /// TLBIs issued, indexed like `TlbiOp::ALL`.
    pub counts: [u64; TlbiOp::ALL.len()],
    /// Descriptor stores.
    pub stores: u64,
    /// Barriers (DSB and ISB).
    pub barriers: u64,
    /// DSBs that complete TLBIs (ISH, NSH, SY).
    pub completing_dsbs: u64,
    /// Keep a log of the TLBIs issued (off: counts only).
    pub logging: bool,
    log: Vec<Issued>,
}

impl Hw {
    /// An executor that counts what it issues and keeps no log.
    pub const fn new() -> Self {
        Hw {
            counts: [0; TlbiOp::ALL.len()],
            stores: 0,
            barriers: 0,
            completing_dsbs: 0,
            logging: false,
            log: Vec::new(),
        }
    }

    /// An executor that also logs every TLBI (see [`take_log`](Self::take_log)).
    pub const fn logging() -> Self {
        let mut hw = Self::new();
        hw.logging = true;
        hw
    }

    /// TLBIs issued, all kinds.
    pub fn tlbis(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Broadcast (Inner Shareable) TLBIs issued.
    pub fn broadcast_tlbis(&self) -> u64 {
        TlbiOp::ALL
            .iter()
            .zip(self.counts.iter())
            .filter(|(op, _)| op.is_broadcast())
            .map(|(_, n)| n)
            .sum()
    }

    /// Adds another executor's counts to these (per-PE totals).
    pub fn add(&mut self, other: &Hw) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.stores += other.stores;
        self.barriers += other.barriers;
        self.completing_dsbs += other.completing_dsbs;
    }

    /// The TLBIs issued since the last call.
    pub fn take_log(&mut self) -> Vec<Issued> {
        core::mem::take(&mut self.log)
    }
}

fn index(op: TlbiOp) -> usize {
    TlbiOp::ALL.iter().position(|o| *o == op).unwrap_or(0)
}

impl Effects for Hw {
    fn store_descriptor(&mut self, slot: &AtomicU64, _at: Pa, new: u64) {
        // A single-copy-atomic 64-bit store; the barriers vmsa asks for
        // order it against the walkers.
        slot.store(new, Ordering::Release);
        self.stores += 1;
    }

    fn barrier(&mut self, b: Barrier) {
        barrier(b);
        self.barriers += 1;
        if matches!(b, Barrier::DsbIsh | Barrier::DsbNsh | Barrier::DsbSy) {
            self.completing_dsbs += 1;
        }
    }

    fn tlbi(&mut self, op: TlbiOp, operand: u64) {
        tlbi(op, operand);
        self.counts[index(op)] += 1;
        if self.logging {
            self.log.push(Issued {
                op,
                operand,
                vttbr: crate::mrs!("vttbr_el2"),
            });
        }
    }

    fn write_sysreg(&mut self, reg: SysReg, value: u64) {
        write_sysreg(reg, value);
    }

    fn cache(&mut self, op: CacheOp, addr: u64) {
        cache(op, addr);
    }

    fn page_event(&mut self, _event: PageEvent) {}
}
