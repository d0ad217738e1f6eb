//! System register access and the few CPU facts everything needs.

/// Reads a system register by name (`mrs!("vttbr_el2")`).
#[macro_export]
macro_rules! mrs {
    ($reg:literal) => {{
        let v: u64;
        // SAFETY: reading a system register has no memory effects.
        unsafe { core::arch::asm!(concat!("mrs {v}, ", $reg), v = out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// Writes a system register by name (`msr!("hcr_el2", value)`).
///
/// Callers only write EL1, EL2 and stage 2 control registers with values
/// that keep EL2 running; the macro cannot check that.
#[macro_export]
macro_rules! msr {
    ($reg:literal, $x:expr) => {{
        let x: u64 = $x;
        // SAFETY: see the macro's documentation: the values written keep
        // this EL2 program's own execution environment intact.
        unsafe { core::arch::asm!(concat!("msr ", $reg, ", {x}"), x = in(reg) x, options(nostack, preserves_flags)) }
    }};
}

/// `ISB`.
#[inline(always)]
pub fn isb() {
    // SAFETY: a context synchronization barrier only orders.
    unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
}

/// The physical counter (CNTPCT_EL0).
#[inline(always)]
pub fn counter() -> u64 {
    crate::mrs!("cntpct_el0")
}

/// Counter ticks per second (CNTFRQ_EL0).
#[inline(always)]
pub fn frequency() -> u64 {
    crate::mrs!("cntfrq_el0").max(1)
}

/// Milliseconds in `ticks` of the counter.
pub fn ticks_to_ms(ticks: u64) -> u64 {
    ((ticks as u128) * 1000 / frequency() as u128) as u64
}

/// Counter ticks in `ms` milliseconds.
pub fn ms_to_ticks(ms: u64) -> u64 {
    ((ms as u128) * frequency() as u128 / 1000) as u64
}

/// This PE's linear index on QEMU virt (MPIDR_EL1.Aff0 + 8 * Aff1; the
/// machine puts up to 8 PEs in a cluster).
pub fn pe_index() -> usize {
    let mpidr = crate::mrs!("mpidr_el1");
    ((mpidr & 0xff) + ((mpidr >> 8) & 0xff) * 8) as usize
}

/// Assembly that zeroes `.bss` (from `__bss_start` to `__bss_end`, 16-byte
/// aligned, both defined by the program's linker script), clobbering x9
/// and x10: the one copy of the loop both bare-metal programs' entry code
/// runs before any Rust. Use it inside `global_asm!` as a template piece.
#[macro_export]
macro_rules! zero_bss_asm {
    () => {
        "
    adrp    x9, __bss_start
    add     x9, x9, :lo12:__bss_start
    adrp    x10, __bss_end
    add     x10, x10, :lo12:__bss_end
8:  cmp     x9, x10
    b.hs    9f
    stp     xzr, xzr, [x9], #16
    b       8b
9:
"
    };
}
