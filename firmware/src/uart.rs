//! The PL011 UART of QEMU's virt machine (0x0900_0000), transmit only.

use core::fmt;

const BASE: usize = 0x0900_0000;
/// Data register.
const DR: usize = 0x00;
/// Flag register; bit 5 TXFF: the transmit FIFO is full.
const FR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;

/// Writes one byte, waiting while the transmit FIFO is full.
pub fn putc(b: u8) {
    // SAFETY: the PL011 registers of the virt machine, reached with the
    // MMU off (or identity mapped as device memory); nothing else uses them.
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

/// Prints to the UART.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::uart::Uart, format_args!($($arg)*));
    }};
}

/// Prints a line to the UART.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => {{
        $crate::print!($($arg)*);
        $crate::print!("\n");
    }};
}
