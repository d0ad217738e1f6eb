//! An executable model of what the AArch64 architecture allows TLBs and
//! walk caches to do, and a checker built on it.
//!
//! The [`Machine`] holds physical memory with translation tables and a set
//! of PEs. It is driven by [`Event`]s: the effects the `vmsa` library emits
//! (through [`ModelEffects`]) or the records of a Casemate trace
//! ([`trace`]). It is adversarial: every translation that was valid in the
//! tables of an installed tree is assumed cached by every PE, speculatively,
//! and stays cached until an invalidation that provably removes it has
//! completed. What that leaves behind is judged by the checker: stale
//! translations, break-before-make violations, use-after-free of table and
//! data pages, VMID/ASID reuse, and table pages linked twice.
//!
//! It also counts what the maintenance cost ([`Costs`]) and turns the
//! counts into cycles under named [`cost::Profile`]s.

#![forbid(unsafe_code)]

pub mod cost;
pub mod desc;
pub mod event;
pub mod litmus;
pub mod machine;
pub mod scope;
pub mod trace;

pub use cost::Costs;
pub use event::{Barrier, Domain, Event, Hint, Origin, Reg};
pub use machine::check::{Violation, ViolationKind};
pub use machine::{Access, Config, Key, Machine, ModelEffects};
