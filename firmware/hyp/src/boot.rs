//! Entry points, EL2 exception vectors and the guest trap frame.
//!
//! PE 0 enters at `_start` (QEMU's `-kernel` ELF, at EL2, MMU off); other
//! PEs at `_start_secondary` with their index in x0 (the hypervisor's own
//! PSCI CPU_ON). Each PE has a 64 KiB stack. A guest exit saves x0..x30 on
//! the PE's stack as a [`Frame`] and calls `handle_lower_sync`; the
//! handler may change the frame, ELR_EL2 and SPSR_EL2 before the ERET.

use core::arch::global_asm;

use crate::layout::MAX_PES;

/// The guest's general-purpose registers at a trap.
#[repr(C)]
pub struct Frame {
    /// x0..x30 (index 31 unused, keeps the frame 16-byte sized).
    pub x: [u64; 32],
}

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    mov     x0, xzr
    b       common_entry

    .global _start_secondary
_start_secondary:
    // x0 = PE index (the context id of our own CPU_ON).
common_entry:
    mov     x19, x0
    cmp     x19, #{max_pes}
    b.hs    park
    adrp    x9, __stacks
    add     x9, x9, :lo12:__stacks
    add     x10, x19, #1
    lsl     x10, x10, #16
    add     sp, x9, x10
    // CPTR_EL2 (E2H == 0): RES1 [13], [9], [7:0]; TFP [10], TZ [8], TSM
    // [12], TTA [20], TAM [30], TCPAC [31] all 0: FP, SVE, SME, trace,
    // AMU belong to the guest and are not trapped (this image is softfloat
    // and never touches them).
    mov     x9, #0x22ff
    msr     cptr_el2, x9
    adrp    x9, el2_vectors
    add     x9, x9, :lo12:el2_vectors
    msr     vbar_el2, x9
    msr     tpidr_el2, x19
    isb
    cbnz    x19, 2f
    // PE 0 only: zero .bss.
"#,
    vmsa_el2::zero_bss_asm!(),
    r#"
2:  mov     x0, x19
    bl      pe_main
park:
    wfe
    b       park

    // enter_guest(pc, x0, stack_top): first entry of a vCPU at EL1h with
    // DAIF masked and every other GPR zero. Later exits come in through the
    // vectors with SP_EL2 = stack_top.
    .global enter_guest
enter_guest:
    mov     sp, x2
    msr     elr_el2, x0
    mov     x9, #0x3c5
    msr     spsr_el2, x9
    mov     x0, x1
    .irp r, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30
    mov     x\r, xzr
    .endr
    isb
    eret

    .section .text.vectors, "ax"
    .balign 2048
el2_vectors:
    // Current EL (SP_EL0, then SP_ELx): faults of the hypervisor itself.
    .irp k, 0, 1, 2, 3, 4, 5, 6, 7
    .balign 128
    mov     x0, #\k
    b       el2_fatal
    .endr
    // Lower EL, AArch64: synchronous exits; IRQ, FIQ and SError stay with
    // EL1 (HCR_EL2.IMO/FMO/AMO = 0), so those vectors are never taken.
    .balign 128
    b       lower_sync
    .irp k, 9, 10, 11
    .balign 128
    mov     x0, #\k
    b       el2_fatal
    .endr
    // Lower EL, AArch32: never (HCR_EL2.RW = 1).
    .irp k, 12, 13, 14, 15
    .balign 128
    mov     x0, #\k
    b       el2_fatal
    .endr

el2_fatal:
    mrs     x1, esr_el2
    mrs     x2, elr_el2
    mrs     x3, far_el2
    bl      el2_fatal_rust
    b       park

lower_sync:
    sub     sp, sp, #256
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    mov     x0, sp
    bl      handle_lower_sync
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    add     sp, sp, #256
    eret
"#,
    max_pes = const MAX_PES,
);

extern "C" {
    /// First entry into the guest on this PE; never returns.
    pub fn enter_guest(pc: u64, x0: u64, stack_top: u64) -> !;
    /// The secondary entry point, for PSCI CPU_ON.
    pub fn _start_secondary();
    static __stacks: u8;
    static __text_start: u8;
    static __text_end: u8;
}

/// The top of PE `pe`'s stack.
pub fn stack_top(pe: usize) -> u64 {
    core::ptr::addr_of!(__stacks) as u64 + (pe as u64 + 1) * 0x10000
}

/// The image's text and read-only data.
pub fn text() -> core::ops::Range<u64> {
    core::ptr::addr_of!(__text_start) as u64..core::ptr::addr_of!(__text_end) as u64
}
