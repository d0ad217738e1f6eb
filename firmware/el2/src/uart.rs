//! The PL011 UART of QEMU's virt machine (0x0900_0000), transmit only.
//!
//! Lines from several PEs do not interleave: `println!` holds a spin lock
//! for the whole line. A PE that finds the lock held for too long (its
//! holder died in a fatal exception) prints anyway rather than hang.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// The UART's address (identity mapped as Device memory once the EL2 MMU
/// is on).
pub const BASE: usize = 0x0900_0000;
/// Data register.
const DR: usize = 0x00;
/// Flag register; bit 5 TXFF: the transmit FIFO is full.
const FR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;

static LINE: AtomicBool = AtomicBool::new(false);

/// Writes one byte, waiting while the transmit FIFO is full.
pub fn putc(b: u8) {
    // SAFETY: the PL011 registers of the virt machine, reached with the
    // MMU off or identity mapped as Device memory; only this module
    // touches them.
    unsafe {
        while core::ptr::read_volatile((BASE + FR) as *const u32) & FR_TXFF != 0 {}
        core::ptr::write_volatile((BASE + DR) as *mut u32, u32::from(b));
    }
}

/// The UART as a `fmt::Write` sink ("\n" becomes "\r\n").
pub struct Uart;

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                putc(b'\r');
            }
            putc(b);
        }
        Ok(())
    }
}

/// Holds the console for one line (see the module docs).
pub struct LineGuard(bool);

/// Takes the console for a line.
pub fn line() -> LineGuard {
    for _ in 0..50_000_000u32 {
        if LINE
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return LineGuard(true);
        }
        core::hint::spin_loop();
    }
    LineGuard(false)
}

impl Drop for LineGuard {
    fn drop(&mut self) {
        if self.0 {
            LINE.store(false, Ordering::Release);
        }
    }
}

/// Prints to the UART.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::uart::Uart, format_args!($($arg)*));
    }};
}

/// Prints a line to the UART, whole.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => {{
        let _line = $crate::uart::line();
        $crate::print!($($arg)*);
        $crate::print!("\n");
    }};
}
