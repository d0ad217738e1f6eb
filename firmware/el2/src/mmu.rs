//! The EL2 stage 1: an identity map built by vmsa (`Table<El2Stage1>`), and
//! the switch that turns the EL2 MMU and caches on.
//!
//! With the MMU off every EL2 access is Device-nGnRnE: exclusives (spin
//! locks) need not work, data is not cached and so not coherent with the
//! Normal, write-back memory the stage 2 walker reads (VTCR_EL2's walk
//! attributes). Mapping RAM as Normal Inner/Outer write-back, Inner
//! Shareable, with the same attributes as VTCR_EL2's IRGN0/ORGN0/SH0,
//! and devices as Device-nGnRE, fixes both.

use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

use vmsa::{
    Ap, Effects, El2Stage1, Error, Geometry, Granule, MapOptions, Pa, PaSize, Shareability,
    Stage1Attrs, SysReg, Table, TableAllocator, Va,
};

/// MAIR_EL2 index of Normal memory, Inner/Outer write-back
/// read/write-allocate (0xff).
pub const ATTR_NORMAL: u8 = 0;
/// MAIR_EL2 index of Device-nGnRE memory (0x04).
pub const ATTR_DEVICE: u8 = 1;
/// MAIR_EL2: attribute 0 = 0xff, attribute 1 = 0x04.
pub const MAIR_EL2: u64 = 0xff | (0x04 << 8);

/// SCTLR_EL2 bits: M (MMU), C (data caches), SA (SP alignment check), I
/// (instruction caches), and the RES1 bits of the E2H == 0 layout (4, 5,
/// 11, 16, 18, 22, 23, 28, 29).
const SCTLR_EL2_ON: u64 = (1 << 0)
    | (1 << 2)
    | (1 << 3)
    | (1 << 12)
    | (1 << 4)
    | (1 << 5)
    | (1 << 11)
    | (1 << 16)
    | (1 << 18)
    | (1 << 22)
    | (1 << 23)
    | (1 << 28)
    | (1 << 29);

/// VA bits of the EL2 stage 1 (512 GiB: RAM and devices of the virt
/// machine's low map).
pub const VA_BITS: u8 = 39;

/// What a range of the identity map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    /// Normal write-back memory, read/write, never executable.
    Data,
    /// Normal write-back memory, read-only, executable (the program text).
    Code,
    /// Device-nGnRE, read/write, never executable.
    Device,
}

impl Memory {
    /// The stage 1 attributes of the EL2 regime (no EL0 access bit: AP[1]
    /// is RES1; no nG; PXN RES0; XN is `uxn`).
    pub const fn attrs(self) -> Stage1Attrs {
        let normal = Stage1Attrs {
            attr_index: ATTR_NORMAL,
            ap: Ap::ReadWrite,
            sh: Shareability::Inner,
            af: true,
            ng: false,
            pxn: false,
            uxn: true,
            dbm: false,
        };
        match self {
            Memory::Data => normal,
            Memory::Code => Stage1Attrs {
                ap: Ap::ReadOnly,
                uxn: false,
                ..normal
            },
            Memory::Device => Stage1Attrs {
                attr_index: ATTR_DEVICE,
                sh: Shareability::Outer,
                ..normal
            },
        }
    }
}

/// One identity-mapped range.
#[derive(Clone, Debug)]
pub struct Region {
    /// Addresses (VA == PA), page aligned.
    pub range: Range<u64>,
    /// What it is.
    pub memory: Memory,
}

/// The registers every PE loads to run under the map (TCR_EL2, TTBR0_EL2).
static TCR: AtomicU64 = AtomicU64::new(0);
static TTBR0: AtomicU64 = AtomicU64::new(0);

/// Builds the identity map of `regions` with table pages from `alloc`.
///
/// # Errors
/// vmsa's: [`Error::OutOfMemory`] when the pages run out, overlap or
/// alignment errors for bad regions.
pub fn build<A: TableAllocator>(
    regions: &[Region],
    alloc: A,
    fx: &mut impl Effects,
) -> Result<Table<El2Stage1, A>, Error> {
    let regime = El2Stage1 { pa_size: pa_size() };
    let geometry = Geometry::stage1(Granule::K4, VA_BITS)?;
    let mut table = Table::new(regime, geometry, alloc, fx)?;
    for r in regions {
        table.map(
            Va(r.range.start)..Va(r.range.end),
            Pa(r.range.start),
            r.memory.attrs(),
            MapOptions::default(),
            fx,
        )?;
    }
    Ok(table)
}

/// The physical address size the CPU supports (ID_AA64MMFR0_EL1.PARange),
/// for TCR_EL2.PS.
pub fn pa_size() -> PaSize {
    match crate::mrs!("id_aa64mmfr0_el1") & 0xf {
        0 => PaSize::Bits32,
        1 => PaSize::Bits36,
        2 => PaSize::Bits40,
        3 => PaSize::Bits42,
        4 => PaSize::Bits44,
        _ => PaSize::Bits48,
    }
}

/// Turns the EL2 MMU and caches on under `table` on this PE, and records
/// its registers for [`enable_secondary`]. Runs at EL2 with the MMU off,
/// executing from memory the map identity-maps as [`Memory::Code`].
pub fn enable<A: TableAllocator>(table: &Table<El2Stage1, A>) {
    for (reg, value) in table.registers() {
        match reg {
            SysReg::TcrEl2 => TCR.store(value, Ordering::Relaxed),
            SysReg::Ttbr0El2 => TTBR0.store(value, Ordering::Relaxed),
            _ => {}
        }
    }
    enable_secondary();
}

/// Turns the EL2 MMU and caches on, on a PE started after [`enable`].
pub fn enable_secondary() {
    crate::msr!("mair_el2", MAIR_EL2);
    crate::msr!("tcr_el2", TCR.load(Ordering::Relaxed));
    crate::msr!("ttbr0_el2", TTBR0.load(Ordering::Relaxed));
    // SAFETY: the table descriptors were written with the MMU off (to
    // memory); no EL2 TLB entry may exist from before (none was ever
    // created with these tables), but stale ones from reset are removed
    // anyway, then the new regime is made effective with an ISB. The
    // identity map keeps the PC, the stack and every static where they
    // were.
    unsafe {
        core::arch::asm!(
            "dsb ish",
            "tlbi alle2",
            "ic iallu",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        );
    }
    crate::msr!("sctlr_el2", SCTLR_EL2_ON);
    crate::sysreg::isb();
}

/// Whether the EL2 MMU is on (SCTLR_EL2.M).
pub fn enabled() -> bool {
    crate::mrs!("sctlr_el2") & 1 != 0
}
