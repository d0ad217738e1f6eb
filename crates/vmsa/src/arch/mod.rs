//! [`Effects`](crate::Effects) executed by a real CPU.
//!
//! - `aarch64` (compiled only for `target_arch = "aarch64"`): `Cpu`, which
//!   performs every effect as the instruction it names (descriptor stores,
//!   `DSB` / `ISB`, `TLBI`, `MSR`, `DC` / `IC`) and counts them in
//!   `Counts`; for code running at EL2.
//!
//! Everything else in the crate is target-independent: on other targets
//! the tables run into a [`Recorder`](crate::Recorder), [`Direct`](crate::Direct)
//! or the vmsa model.

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
