//! vmsa on an emulated AArch64 CPU: a bare-metal image for QEMU's virt
//! machine that runs at EL2, builds stage 2 tables with vmsa, runs a guest
//! at EL1 under them, changes them between guest runs and checks what the
//! guest sees. Results go to the PL011 UART; the exit status (semihosting)
//! is 0 when every check passed.

#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod heap;
mod semihost;
#[macro_use]
mod uart;

use core::panic::PanicInfo;

#[no_mangle]
extern "C" fn rust_main(el: u64) -> ! {
    println!("vmsa firmware: hello from EL{el}");
    if el != 2 {
        println!("FATAL: started at EL{el}, need EL2 (qemu -machine virt,virtualization=on)");
        semihost::exit(3);
    }
    semihost::exit(0)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("PANIC: {info}");
    semihost::exit(101)
}
