//! PSCI calls to the platform firmware (QEMU's, reached with `SMC #0` on
//! virt with `virtualization=on`), SMCCC calling convention.

/// PSCI_VERSION.
pub const VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND (SMC64).
pub const CPU_SUSPEND: u32 = 0xc400_0001;
/// CPU_OFF.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON (SMC64).
pub const CPU_ON: u32 = 0xc400_0003;
/// AFFINITY_INFO (SMC64).
pub const AFFINITY_INFO: u32 = 0xc400_0004;
/// MIGRATE_INFO_TYPE.
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const FEATURES: u32 = 0x8400_000a;

/// SMCCC / PSCI NOT_SUPPORTED (-1).
pub const NOT_SUPPORTED: u64 = u64::MAX;
/// PSCI INVALID_PARAMETERS (-2).
pub const INVALID_PARAMETERS: u64 = (-2i64) as u64;
/// PSCI ALREADY_ON (-4).
pub const ALREADY_ON: u64 = (-4i64) as u64;

/// Issues `SMC #0` with x0..x3 and returns x0..x3.
pub fn call(args: [u64; 4]) -> [u64; 4] {
    let [mut x0, mut x1, mut x2, mut x3] = args;
    // SAFETY: an SMCCC call to the platform's PSCI firmware; it may
    // clobber x4..x17 (declared), and touches no memory of ours.
    unsafe {
        core::arch::asm!(
            "smc #0",
            inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack)
        );
    }
    [x0, x1, x2, x3]
}

/// CPU_ON for the PE with affinity `mpidr`, starting at `entry` (at EL2,
/// MMU off) with `context` in x0. Returns PSCI's status (0 = success).
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> i64 {
    call([u64::from(CPU_ON), mpidr, entry, context])[0] as i64
}
