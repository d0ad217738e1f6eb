//! EL2 platform code for vmsa's bare-metal programs on QEMU's `virt`
//! machine: the conformance harness (`firmware/`) and the Linux-hosting
//! hypervisor (`firmware/hyp`) both build on it, so none of this exists
//! twice.
//!
//! - [`sysreg`]: `mrs!` / `msr!`, the counter, this PE's index;
//! - [`uart`]: the PL011 console (`print!` / `println!`), safe to use from
//!   several PEs at once;
//! - [`semihost`]: leaving QEMU with an exit status;
//! - [`psci`]: SMC calls to the platform's PSCI firmware;
//! - [`heap`]: a freeing, lock-protected global allocator whose failure is
//!   a reported verdict, not a panic;
//! - [`mmu`]: the EL2 stage 1 (an `El2Stage1` table built by vmsa) and the
//!   switch that turns the MMU and caches on;
//!
//! vmsa's [`Effects`](vmsa::Effects) as real instructions is the crate's
//! own executor, `vmsa::arch::aarch64::Cpu`: both programs use it.
//!
//! Everything here runs at EL2 on AArch64; it is built only for
//! `aarch64-unknown-none-softfloat`.

#![no_std]

extern crate alloc;

pub mod cpu;
pub mod heap;
pub mod mmu;
pub mod psci;
pub mod semihost;
pub mod sysreg;
pub mod uart;

pub use spin;
