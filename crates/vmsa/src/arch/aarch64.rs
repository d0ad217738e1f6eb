//! vmsa's effects executed by an AArch64 CPU at EL2: descriptor stores,
//! barriers, TLBIs, system register writes and cache maintenance as the
//! instructions they name, counted.
//!
//! [`Cpu`] is the [`Effects`] executor: hand it to any table operation and
//! the effects happen on this PE. [`Counts`] is what it has executed so far
//! (TLBIs by operation, DSBs, ISBs, descriptor stores, system register
//! writes, cache maintenance). A [`Cpu`] made with
//! [`Cpu::with_tlbi_log`] also keeps every TLBI it issued, with the
//! VTTBR_EL2 (so the VMID) it acted under, until
//! [`Cpu::take_tlbi_log`].
//!
//! The free functions [`barrier`], [`tlbi`], [`write_sysreg`] and [`cache`]
//! execute one instruction each without counting. All but [`barrier`] are
//! `unsafe`: their instructions are only defined at EL2 (or change the
//! translation regime the caller runs under), which the caller vouches
//! for.
//!
//! ```ignore
//! // SAFETY: this program runs at EL2 with HCR_EL2.E2H == 0, issues range
//! // TLBIs only when ID_AA64ISAR0_EL1.TLB says the CPU has them, and only
//! // activates tables that keep its own code and data mapped.
//! let mut cpu = unsafe { vmsa::arch::aarch64::Cpu::new() };
//! table.map(ipas, pa, attrs, MapOptions::default(), &mut cpu)?;
//! table.flush(&mut cpu);
//! assert!(cpu.counts().tlbis() > 0);
//! ```

#![warn(clippy::undocumented_unsafe_blocks)]

use alloc::vec::Vec;
use core::arch::asm;
use core::ops::AddAssign;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::{Barrier, CacheOp, Effects, Pa, PageEvent, SysReg, TlbiOp};

/// `TLBI <op>, Xt` (or `TLBI <op>` for the operations without an operand).
macro_rules! tlbi {
    ($op:literal, $x:expr) => {
        // SAFETY: TLB maintenance writes no memory and no register the
        // compiler allocates: it only discards cached translations, so later
        // accesses walk the tables again. The caller of `tlbi` guarantees
        // EL2, where every operation here is defined. Not `nomem`: it is a
        // compiler barrier too.
        unsafe {
            asm!(concat!("tlbi ", $op, ", {x}"), x = in(reg) $x, options(nostack, preserves_flags))
        }
    };
    ($op:literal) => {
        // SAFETY: as for the form with an operand: only cached translations
        // are discarded, at EL2 (the caller's guarantee).
        unsafe { asm!(concat!("tlbi ", $op), options(nostack, preserves_flags)) }
    };
}

/// `TLBI <op>, Xt` for the FEAT_TLBIRANGE operations (Armv8.4), which the
/// assembler only accepts with the extension enabled.
macro_rules! tlbi_range {
    ($op:literal, $x:expr) => {
        // SAFETY: as for `tlbi!`; in addition the caller of `tlbi`
        // guarantees that the CPU implements FEAT_TLBIRANGE (otherwise the
        // instruction is UNDEFINED). The `.arch_extension` directive only
        // tells the assembler to accept the encoding.
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

/// `DSB <option>` or `ISB`.
macro_rules! barrier {
    ($insn:literal) => {
        // SAFETY: a barrier only orders memory accesses, TLB maintenance and
        // instruction fetch; it reads and writes no memory or register and
        // is defined at every exception level. Not `nomem`, so the compiler
        // keeps memory accesses on their side of it as well.
        unsafe { asm!($insn, options(nostack, preserves_flags)) }
    };
}

/// `MSR <reg>, Xt`.
macro_rules! msr {
    ($reg:literal, $x:expr) => {
        // SAFETY: the caller of `write_sysreg` guarantees EL2 and a value
        // that keeps this program's own execution environment valid (see its
        // `# Safety`); the instruction writes no memory itself. Not `nomem`:
        // stores before it (the tables a TTBR points at) stay before it.
        unsafe { asm!(concat!("msr ", $reg, ", {x}"), x = in(reg) $x, options(nostack, preserves_flags)) }
    };
}

/// `DC <op>, Xt`.
macro_rules! dc {
    ($op:literal, $addr:expr) => {
        // SAFETY: cleaning writes dirty lines back and cleaning and
        // invalidating then drops only clean lines, so the memory contents
        // Rust sees are unchanged; the caller of `cache` guarantees that the
        // address is mapped.
        unsafe { asm!(concat!("dc ", $op, ", {a}"), a = in(reg) $addr, options(nostack, preserves_flags)) }
    };
}

/// `IC <op>`.
macro_rules! ic {
    ($op:literal) => {
        // SAFETY: invalidating instruction caches loses nothing: later
        // instructions are fetched from memory again. Defined at EL1 and
        // above (the caller of `cache` guarantees EL2).
        unsafe { asm!(concat!("ic ", $op), options(nostack, preserves_flags)) }
    };
}

/// Executes `TLBI op, x` (`x` ignored by the operations without an
/// operand). Not counted.
///
/// # Safety
///
/// The caller runs at EL2: the EL2 and stage 2 operations (and, with
/// HCR_EL2 traps, the EL1 ones) are not available below it. The range
/// operations (`Rvae1`, ..., `Ripas2le1is`) need FEAT_TLBIRANGE
/// (ID_AA64ISAR0_EL1.TLB == 0b0010); without it they are UNDEFINED.
pub unsafe fn tlbi(op: TlbiOp, x: u64) {
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

/// Executes one barrier. Not counted. Safe at any exception level.
pub fn barrier(b: Barrier) {
    match b {
        Barrier::DsbIsh => barrier!("dsb ish"),
        Barrier::DsbIshst => barrier!("dsb ishst"),
        Barrier::DsbNsh => barrier!("dsb nsh"),
        Barrier::DsbSy => barrier!("dsb sy"),
        Barrier::Isb => barrier!("isb"),
    }
}

/// Writes one system register (`MSR`). Not counted.
///
/// # Safety
///
/// The caller runs at EL2 (every register here is inaccessible from EL0,
/// and the `_EL2` ones from EL1), with HCR_EL2.E2H == 0 when writing an
/// `_EL1` register (with E2H == 1 the `_EL1` names reach the `_EL2`
/// registers). The value keeps this program's own execution environment
/// valid: a TTBR0_EL2, TCR_EL2, MAIR_EL2 or SCTLR_EL2 write leaves the code,
/// stack and data in use mapped at the same addresses with compatible
/// attributes, and a stage 2 or EL1 register write points at tables that
/// stay alive while they can be walked. Context synchronization (`ISB`)
/// is the caller's, as for any `MSR`.
pub unsafe fn write_sysreg(reg: SysReg, v: u64) {
    match reg {
        SysReg::VttbrEl2 => msr!("vttbr_el2", v),
        SysReg::VtcrEl2 => msr!("vtcr_el2", v),
        SysReg::HcrEl2 => msr!("hcr_el2", v),
        SysReg::Ttbr0El1 => msr!("ttbr0_el1", v),
        SysReg::Ttbr1El1 => msr!("ttbr1_el1", v),
        SysReg::TcrEl1 => msr!("tcr_el1", v),
        SysReg::MairEl1 => msr!("mair_el1", v),
        SysReg::SctlrEl1 => msr!("sctlr_el1", v),
        SysReg::Ttbr0El2 => msr!("ttbr0_el2", v),
        SysReg::TcrEl2 => msr!("tcr_el2", v),
        SysReg::MairEl2 => msr!("mair_el2", v),
        SysReg::SctlrEl2 => msr!("sctlr_el2", v),
    }
}

/// Executes one cache maintenance operation (`addr` ignored by the `IC`
/// "all" forms). Not counted.
///
/// # Safety
///
/// The caller runs at EL1 or above (EL2 for a [`Cpu`]), and for the `DC`
/// operations `addr` is a mapped virtual address (a `DC` by VA to an
/// unmapped one takes a translation fault).
pub unsafe fn cache(op: CacheOp, addr: u64) {
    match op {
        CacheOp::DcCvac => dc!("cvac", addr),
        CacheOp::DcCivac => dc!("civac", addr),
        CacheOp::IcIallu => ic!("iallu"),
        CacheOp::IcIalluis => ic!("ialluis"),
    }
}

/// Reads VTTBR_EL2. EL2 only (a [`Cpu`]'s contract).
fn vttbr_el2() -> u64 {
    let v: u64;
    // SAFETY: reading a system register has no side effects and touches no
    // memory; only called by a `Cpu`, whose constructor's caller guarantees
    // EL2, where VTTBR_EL2 is readable.
    unsafe { asm!("mrs {v}, vttbr_el2", v = out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// What a [`Cpu`] has executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// TLBIs issued, indexed like [`TlbiOp::ALL`] (see [`Counts::tlbi`]).
    pub tlbis_by_op: [u64; TlbiOp::ALL.len()],
    /// Descriptor stores.
    pub stores: u64,
    /// DSBs of every kind.
    pub dsbs: u64,
    /// DSBs that complete TLB maintenance: `DSB ISH`, `DSB NSH`, `DSB SY`
    /// (not `DSB ISHST`).
    pub completing_dsbs: u64,
    /// ISBs.
    pub isbs: u64,
    /// System register writes.
    pub sysreg_writes: u64,
    /// Cache maintenance operations.
    pub cache_ops: u64,
}

impl Counts {
    /// Nothing executed.
    pub const ZERO: Counts = Counts {
        tlbis_by_op: [0; TlbiOp::ALL.len()],
        stores: 0,
        dsbs: 0,
        completing_dsbs: 0,
        isbs: 0,
        sysreg_writes: 0,
        cache_ops: 0,
    };

    /// TLBIs of operation `op`.
    pub fn tlbi(&self, op: TlbiOp) -> u64 {
        self.tlbis_by_op[index(op)]
    }

    /// TLBIs, all operations.
    pub fn tlbis(&self) -> u64 {
        self.tlbis_by_op.iter().sum()
    }

    /// Broadcast (Inner Shareable) TLBIs.
    pub fn broadcast_tlbis(&self) -> u64 {
        TlbiOp::ALL
            .iter()
            .zip(self.tlbis_by_op.iter())
            .filter(|(op, _)| op.is_broadcast())
            .map(|(_, n)| n)
            .sum()
    }

    /// Barriers: DSBs and ISBs.
    pub fn barriers(&self) -> u64 {
        self.dsbs + self.isbs
    }

    /// The operations whose TLBI count is not zero, with their counts, in
    /// [`TlbiOp::ALL`] order.
    pub fn tlbis_issued(&self) -> impl Iterator<Item = (TlbiOp, u64)> + '_ {
        TlbiOp::ALL
            .iter()
            .zip(self.tlbis_by_op.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(op, n)| (*op, *n))
    }

    /// What was executed since `earlier` (a copy of these counts taken
    /// before).
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut d = *self;
        for (a, b) in d.tlbis_by_op.iter_mut().zip(earlier.tlbis_by_op.iter()) {
            *a = a.wrapping_sub(*b);
        }
        d.stores = d.stores.wrapping_sub(earlier.stores);
        d.dsbs = d.dsbs.wrapping_sub(earlier.dsbs);
        d.completing_dsbs = d.completing_dsbs.wrapping_sub(earlier.completing_dsbs);
        d.isbs = d.isbs.wrapping_sub(earlier.isbs);
        d.sysreg_writes = d.sysreg_writes.wrapping_sub(earlier.sysreg_writes);
        d.cache_ops = d.cache_ops.wrapping_sub(earlier.cache_ops);
        d
    }
}

impl Default for Counts {
    fn default() -> Self {
        Counts::ZERO
    }
}

/// Adds another executor's counts (per-PE totals).
impl AddAssign<&Counts> for Counts {
    fn add_assign(&mut self, other: &Counts) {
        for (a, b) in self.tlbis_by_op.iter_mut().zip(other.tlbis_by_op.iter()) {
            *a += b;
        }
        self.stores += other.stores;
        self.dsbs += other.dsbs;
        self.completing_dsbs += other.completing_dsbs;
        self.isbs += other.isbs;
        self.sysreg_writes += other.sysreg_writes;
        self.cache_ops += other.cache_ops;
    }
}

/// One TLBI as a [`Cpu`] issued it, with the VTTBR_EL2 loaded at the time
/// (stage 2 and EL1 operations act on its VMID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuedTlbi {
    /// The operation.
    pub op: TlbiOp,
    /// Its Xt operand (0 for the operations without one).
    pub operand: u64,
    /// VTTBR_EL2 when it ran.
    pub vttbr: u64,
}

/// vmsa's [`Effects`] executed by this PE at EL2, counted.
///
/// Descriptor stores are single-copy-atomic 64-bit release stores;
/// barriers, TLBIs, system register writes and cache maintenance are the
/// instructions they name. [`counts`](Cpu::counts) says what has been
/// executed; with [`with_tlbi_log`](Cpu::with_tlbi_log) every TLBI is also
/// kept until [`take_tlbi_log`](Cpu::take_tlbi_log). Page life-cycle
/// events are no hardware effect and are ignored.
///
/// A wrapper that adds behaviour (tracing, fault injection) implements
/// [`Effects`] by delegating to a `&mut Cpu`.
#[derive(Debug)]
pub struct Cpu {
    counts: Counts,
    log: Option<Vec<IssuedTlbi>>,
}

impl Cpu {
    /// An executor that counts what it executes and keeps no TLBI log.
    ///
    /// # Safety
    ///
    /// Its [`Effects`] methods are safe to call, so the caller vouches
    /// here, for every effect executed through it (by table operations or
    /// directly), that:
    ///
    /// - it runs on an AArch64 PE at EL2: the EL2 and stage 2 TLBIs, the
    ///   EL2 system registers and VTTBR_EL2 (read for the TLBI log) are not
    ///   accessible below EL2; with HCR_EL2.E2H == 0 if `_EL1` registers
    ///   are written through it;
    /// - range TLBIs are issued through it only if the CPU implements
    ///   FEAT_TLBIRANGE (vmsa's planner issues them only when
    ///   [`Capabilities::tlbi_range`](crate::Capabilities::tlbi_range) is
    ///   set);
    /// - system register writes through it (a table's `activate`) meet
    ///   [`write_sysreg`]'s contract: an EL2 stage 1 activated through it
    ///   keeps the running code, stack and data mapped at the same
    ///   addresses;
    /// - cache maintenance by address through it names mapped addresses.
    pub const unsafe fn new() -> Cpu {
        Cpu {
            counts: Counts::ZERO,
            log: None,
        }
    }

    /// An executor that also keeps every TLBI it issues (see
    /// [`take_tlbi_log`](Self::take_tlbi_log)).
    ///
    /// # Safety
    ///
    /// As for [`Cpu::new`].
    pub const unsafe fn with_tlbi_log() -> Cpu {
        Cpu {
            counts: Counts::ZERO,
            log: Some(Vec::new()),
        }
    }

    /// What this executor has executed so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Whether it keeps a TLBI log.
    pub fn logs_tlbis(&self) -> bool {
        self.log.is_some()
    }

    /// The TLBIs issued since the last call (none without a log).
    pub fn take_tlbi_log(&mut self) -> Vec<IssuedTlbi> {
        self.log.as_mut().map(core::mem::take).unwrap_or_default()
    }
}

fn index(op: TlbiOp) -> usize {
    TlbiOp::ALL.iter().position(|o| *o == op).unwrap_or(0)
}

impl Effects for Cpu {
    fn store_descriptor(&mut self, slot: &AtomicU64, _at: Pa, new: u64) {
        // A single-copy-atomic 64-bit store; the barriers vmsa asks for
        // order it against the table walkers.
        slot.store(new, Ordering::Release);
        self.counts.stores += 1;
    }

    fn compare_exchange_descriptor(
        &mut self,
        slot: &AtomicU64,
        _at: Pa,
        current: u64,
        new: u64,
    ) -> Result<(), u64> {
        // CASAL (FEAT_LSE) or an LDAXR/STLXR loop: single-copy atomic, and
        // a failed attempt writes nothing.
        slot.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)?;
        self.counts.stores += 1;
        Ok(())
    }

    fn barrier(&mut self, b: Barrier) {
        barrier(b);
        match b {
            Barrier::Isb => self.counts.isbs += 1,
            Barrier::DsbIshst => self.counts.dsbs += 1,
            Barrier::DsbIsh | Barrier::DsbNsh | Barrier::DsbSy => {
                self.counts.dsbs += 1;
                self.counts.completing_dsbs += 1;
            }
        }
    }

    fn tlbi(&mut self, op: TlbiOp, operand: u64) {
        // SAFETY: `Cpu::new`'s caller guarantees EL2 and FEAT_TLBIRANGE for
        // any range operation issued through this executor.
        unsafe { tlbi(op, operand) };
        self.counts.tlbis_by_op[index(op)] += 1;
        if let Some(log) = self.log.as_mut() {
            log.push(IssuedTlbi {
                op,
                operand,
                vttbr: vttbr_el2(),
            });
        }
    }

    fn write_sysreg(&mut self, reg: SysReg, value: u64) {
        // SAFETY: `Cpu::new`'s caller guarantees that writes through this
        // executor meet `write_sysreg`'s contract.
        unsafe { write_sysreg(reg, value) };
        self.counts.sysreg_writes += 1;
    }

    fn cache(&mut self, op: CacheOp, addr: u64) {
        // SAFETY: `Cpu::new`'s caller guarantees EL2 and mapped addresses.
        unsafe { cache(op, addr) };
        self.counts.cache_ops += 1;
    }

    fn page_event(&mut self, _event: PageEvent) {}
}
