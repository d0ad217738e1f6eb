//! Arm semihosting (QEMU `-semihosting`): leaving the emulator with a status.

/// SYS_EXIT.
const SYS_EXIT: u64 = 0x18;
/// ADP_Stopped_ApplicationExit: with the AArch64 parameter block, the
/// second word is the exit status.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

/// Ends the emulation with exit status `code`.
pub fn exit(code: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    // SAFETY: the semihosting call reads the two-word block and does not
    // return when the host implements it.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            inout("x0") SYS_EXIT => _,
            in("x1") block.as_ptr(),
            options(nostack)
        );
    }
    // Without semihosting the call returns (or traps): park the PE.
    loop {
        // SAFETY: waiting for an interrupt has no memory effects.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
    }
}
