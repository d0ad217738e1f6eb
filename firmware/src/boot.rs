//! Entry, exception vectors and the world switch to and from the guest.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    // x19 = current exception level, reported by rust_main.
    mrs     x19, CurrentEL
    ubfx    x19, x19, #2, #2
    adrp    x9, __stack_top
    add     x9, x9, :lo12:__stack_top
    mov     sp, x9

    // aarch64-unknown-none code may use FP/SIMD registers: stop trapping
    // them at the level we are at.
    cmp     x19, #3
    b.ne    1f
    msr     cptr_el3, xzr
    b       3f
1:  cmp     x19, #2
    b.ne    2f
    // CPTR_EL2 (E2H == 0): RES1 bits [13:12], [9:0]; TFP [10] = 0, TZ [8]
    // = 1 (SVE stays trapped), TTA [20] = 0, TCPAC [31] = 0.
    mov     x9, #0x33ff
    msr     cptr_el2, x9
    // The EL2 vectors.
    adrp    x9, el2_vectors
    add     x9, x9, :lo12:el2_vectors
    msr     vbar_el2, x9
    // TPIDR_EL2: this PE's save area for guest runs (PE 0's).
    adrp    x9, HOST_CTX
    add     x9, x9, :lo12:HOST_CTX
    msr     tpidr_el2, x9
    b       3f
2:  // EL1: CPACR_EL1.FPEN = 0b11.
    mov     x9, #(3 << 20)
    msr     cpacr_el1, x9
3:  isb

    // Zero .bss.
"#,
    vmsa_el2::zero_bss_asm!(),
    r#"
    mov     x0, x19
    bl      rust_main
6:  wfe
    b       6b

    // Secondary PEs, started by PSCI CPU_ON with context id = PE index
    // (1 .. MAX_PES - 1) in x0. Each gets its own stack and save area.
    .global _start_secondary
_start_secondary:
    mov     x19, x0
    mrs     x20, CurrentEL
    ubfx    x20, x20, #2, #2
    cmp     x20, #2
    b.ne    9f
    mov     x9, #0x33ff
    msr     cptr_el2, x9
    adrp    x9, el2_vectors
    add     x9, x9, :lo12:el2_vectors
    msr     vbar_el2, x9
    // Save area: HOST_CTX + index * 112.
    adrp    x9, HOST_CTX
    add     x9, x9, :lo12:HOST_CTX
    mov     x10, #112
    madd    x9, x19, x10, x9
    msr     tpidr_el2, x9
    // Stack: __stack1_top - (index - 1) * 64 KiB.
    adrp    x9, __stack1_top
    add     x9, x9, :lo12:__stack1_top
    sub     x10, x19, #1
    lsl     x10, x10, #16
    sub     x9, x9, x10
    mov     sp, x9
    isb
    mov     x0, x19
    mov     x1, x20
    bl      secondary_main
9:  wfe
    b       9b

    // ------------------------------------------------------------------
    // EL2 exception vectors. Exceptions taken from EL2 itself are host
    // bugs: report them. Exceptions from the guest (lower EL, AArch64) end
    // the guest run: see guest_exit.
    .section .text.vectors, "ax"
    .balign 2048
el2_vectors:
    .irp kind, 0, 1, 2, 3, 4, 5, 6, 7
    .balign 128
    mov     x0, #\kind
    mrs     x1, esr_el2
    mrs     x2, elr_el2
    mrs     x3, far_el2
    b       el2_host_exception
    .endr
    .irp kind, 0, 1, 2, 3
    .balign 128
    mov     x15, #\kind
    b       guest_exit
    .endr
    .irp kind, 0, 1, 2, 3
    .balign 128
    // Lower EL, AArch32: not used (HCR_EL2.RW = 1).
    mov     x15, #(\kind + 4)
    b       guest_exit
    .endr

    // ------------------------------------------------------------------
    // enter_guest(run: *mut GuestRun): runs the guest at EL1 from run.pc
    // with x0-x3 from run.x until it takes an exception to EL2, which
    // stores x0-x3 and the syndrome in *run and returns here as if
    // enter_guest had returned. The EL2 callee-saved state lives in this
    // PE's HOST_CTX slot (TPIDR_EL2) meanwhile.
    .section .text, "ax"
    .global enter_guest
enter_guest:
    mrs     x9, tpidr_el2
    stp     x19, x20, [x9, #0]
    stp     x21, x22, [x9, #16]
    stp     x23, x24, [x9, #32]
    stp     x25, x26, [x9, #48]
    stp     x27, x28, [x9, #64]
    stp     x29, x30, [x9, #80]
    mov     x10, sp
    stp     x10, x0, [x9, #96]
    ldr     x10, [x0, #72]          // run.pc
    msr     elr_el2, x10
    mov     x10, #0x3c5             // EL1h, D A I F masked
    msr     spsr_el2, x10
    // Nothing of EL2 reaches the guest but x0-x3, x8-x11 and what it can
    // address (x4-x7 are zeroed; x12-x30 hold EL2 values, which the guest
    // program never reads before writing).
    mov     x4, xzr
    mov     x5, xzr
    mov     x6, xzr
    mov     x7, xzr
    ldp     x8, x9, [x0, #80]       // run.xr: x8-x11
    ldp     x10, x11, [x0, #96]
    ldp     x2, x3, [x0, #16]
    ldp     x0, x1, [x0, #0]
    eret

guest_exit:
    // x15 = vector kind (0 sync, 1 IRQ, 2 FIQ, 3 SError; +4 AArch32).
    // SP_EL2 is the stack enter_guest ran on: keep the guest's x8-x11
    // there while x8-x12 serve as scratch.
    stp     x8, x9, [sp, #-32]!
    stp     x10, x11, [sp, #16]
    mrs     x9, tpidr_el2
    ldr     x10, [x9, #104]         // the GuestRun
    stp     x0, x1, [x10, #0]
    stp     x2, x3, [x10, #16]
    ldp     x0, x1, [sp, #0]
    stp     x0, x1, [x10, #80]
    ldp     x0, x1, [sp, #16]
    stp     x0, x1, [x10, #96]
    add     sp, sp, #32
    mrs     x11, esr_el2
    mrs     x12, far_el2
    stp     x11, x12, [x10, #32]
    mrs     x11, hpfar_el2
    mrs     x12, elr_el2
    stp     x11, x12, [x10, #48]
    str     x15, [x10, #64]
    ldp     x19, x20, [x9, #0]
    ldp     x21, x22, [x9, #16]
    ldp     x23, x24, [x9, #32]
    ldp     x25, x26, [x9, #48]
    ldp     x27, x28, [x9, #64]
    ldp     x29, x30, [x9, #80]
    ldr     x10, [x9, #96]
    mov     sp, x10
    ret

    // ------------------------------------------------------------------
    // The guest: one EL1 program, in its own page(s) that each VM maps at
    // IPA == PA (and a guest stage 1, when on, at VA == IPA). x1 selects
    // what it does; it always ends with HVC #0 (a fault ends it earlier).
    //   x1 = 0: x0 = load [x0]
    //   x1 = 1: store x2 to [x0]; x0 = 0
    //   x1 = 2: load x2 doublewords [x0], [x0 + x3], ...; x0 = their sum
    //   x1 = 3: load [x0] until it differs from x2, at most x3 times;
    //           x0 = the last value loaded
    //   x1 = 4: a call to the host (HVC #2), which returns with a TLB
    //           maintenance request in x8-x11 (vmsa::request); the shim
    //           runs it, then as x1 = 2 (x0, x2, x3 are kept by the host).
    // HVC #3: the shim met a reserved or unknown x8 (in x0).
    // Exceptions taken to EL1 (a stage 1 fault) end the run with HVC #1:
    // x0 = vector offset / 0x80, x1 = ESR_EL1, x2 = FAR_EL1, x3 = ELR_EL1.
    .section .guest.text, "ax"
    .global guest_entry
guest_entry:
    cmp     x1, #1
    b.eq    1f
    cmp     x1, #2
    b.eq    2f
    cmp     x1, #3
    b.eq    5f
    cmp     x1, #4
    b.eq    7f
    ldr     x0, [x0]
    hvc     #0
1:  str     x2, [x0]
    mov     x0, #0
    hvc     #0
2:  mov     x4, x0
    mov     x0, #0
3:  cbz     x2, 4f
    ldr     x5, [x4]
    add     x0, x0, x5
    add     x4, x4, x3
    sub     x2, x2, #1
    b       3b
4:  hvc     #0
5:  ldr     x5, [x0]
    cmp     x5, x2
    b.ne    6f
    subs    x3, x3, #1
    b.ne    5b
6:  mov     x0, x5
    hvc     #0

    // The call, then the shim: what vmsa::request::shim_execute runs.
7:  hvc     #2
    cbz     x8, 2b                  // X8 = 0: nothing to do
    cmp     x8, #1
    b.eq    10f
    cmp     x8, #3
    b.eq    11f
    cmp     x8, #4
    b.eq    12f
    mov     x0, x8                  // X8 = 2 (reserved) or undefined
    hvc     #3
10: tlbi    vmalle1is               // X8 = 1: broadcast
    b       13f
11: cbz     x10, 2b                 // X8 = 3: X10 pages from X9; 0: nothing
    cmp     x10, #16
    b.hi    10b                     // over 16 pages: as a broadcast
    mrs     x12, ttbr0_el1          // operand: ASID [63:48], VA[55:12]
    and     x12, x12, #0xffff000000000000
    ubfx    x13, x9, #12, #44
    orr     x12, x12, x13
    mov     x13, x10
14: tlbi    vae1is, x12
    add     x12, x12, #1
    subs    x13, x13, #1
    b.ne    14b
    b       13f
12: .arch_extension tlb-rmi
    tlbi    rvae1is, x9             // X8 = 4: one range operation
13: dsb     ish
    cbz     x11, 15f                // X11: an executable mapping changed
    ic      iallu
    dsb     ish
15: isb
    b       2b

    // EL1 vectors (VBAR_EL1): report the exception to the host.
    .balign 2048
    .global guest_vectors
guest_vectors:
    .irp kind, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 128
    mov     x0, #\kind
    mrs     x1, esr_el1
    mrs     x2, far_el1
    mrs     x3, elr_el1
    hvc     #1
    .endr
"#
);

/// PEs the firmware can use (PE 0 and the ones PSCI starts).
pub const MAX_PES: usize = 2;

/// Per PE, the EL2 registers kept while the guest runs: x19-x30, sp, and
/// the `GuestRun` being filled (14 doublewords, 112 bytes per PE).
#[no_mangle]
static mut HOST_CTX: [[u64; 14]; MAX_PES] = [[0; 14]; MAX_PES];

/// What the guest runs with and how its run ended. The layout is fixed by
/// `enter_guest` / `guest_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRun {
    /// x0-x3 at entry; at exit, the guest's x0-x3.
    pub x: [u64; 4],
    /// ESR_EL2 of the exception that ended the run.
    pub esr: u64,
    /// FAR_EL2.
    pub far: u64,
    /// HPFAR_EL2.
    pub hpfar: u64,
    /// ELR_EL2.
    pub elr: u64,
    /// Vector taken: 0 synchronous, 1 IRQ, 2 FIQ, 3 SError (+4 AArch32).
    pub kind: u64,
    /// Entry point (IPA with stage 1 off, VA == IPA with it on).
    pub pc: u64,
    /// x8-x11 at entry (a TLB maintenance request for the shim); at exit,
    /// the guest's x8-x11.
    pub xr: [u64; 4],
}

extern "C" {
    fn enter_guest(run: *mut GuestRun);
    /// First instruction of the guest program.
    pub fn guest_entry();
    /// The guest's EL1 vector table.
    pub fn guest_vectors();
    static __guest_start: u8;
    static __guest_end: u8;
}

/// The guest program's pages, `[start, end)`.
pub fn guest_code() -> (u64, u64) {
    // Linker symbols: only their addresses are taken.
    (
        core::ptr::addr_of!(__guest_start) as u64,
        core::ptr::addr_of!(__guest_end) as u64,
    )
}

/// Runs the guest once with `run.pc` and `run.x`, until its first
/// exception to EL2.
pub fn run_guest(run: &mut GuestRun) {
    // SAFETY: enter_guest saves every callee-saved register and the stack
    // pointer and restores them before returning; the guest reaches no EL2
    // memory except through the stage 2 tables the caller set up.
    unsafe { enter_guest(run) }
}

/// An exception taken from EL2 itself: a firmware bug. Reports and exits.
#[no_mangle]
extern "C" fn el2_host_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    vmsa_el2::println!(
        "FATAL: EL2 exception (vector {kind}) ESR_EL2={esr:#x} (EC {:#x}) ELR_EL2={elr:#x} FAR_EL2={far:#x}",
        esr >> 26
    );
    vmsa_el2::semihost::exit(2)
}
