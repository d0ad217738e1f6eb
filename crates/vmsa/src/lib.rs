//! # vmsa
//!
//! AArch64 (VMSAv8-64) translation tables for hypervisors and kernels:
//! stage 2 (IPA -> PA, per VMID) and stage 1 (VA -> IPA per ASID, and the
//! EL2 regime), edited while other CPUs walk them.
//!
//! - Every change that the Arm ARM says needs break-before-make is done
//!   that way by the library ([`bbm`] holds the rule table); the rest is
//!   written in place.
//! - Every operation returns a [`ChangeReport`] saying exactly what
//!   changed, from which the invalidation can be planned.
//! - Every hardware effect (descriptor store, barrier, TLBI, system
//!   register write, cache maintenance) goes through the [`Effects`]
//!   trait, so the same code runs on the CPU (on AArch64,
//!   `arch::aarch64::Cpu`: the real instructions, counted), into a
//!   [`Recorder`], or into the vmsa model.
//! - Operations validate and allocate before they write: an `Err` means
//!   nothing changed. Table pages are freed only after the invalidation
//!   that makes them unreachable has completed.
//!
//! See [`Table`] for an example.

#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod addr;
pub mod arch;
pub mod bbm;
pub mod caps;
pub mod casemate;
pub mod descriptor;
pub mod effects;
pub mod error;
pub mod geometry;
pub mod invalidate;
pub mod memory;
pub mod oplog;
pub mod perms;
pub mod plan;
pub mod regime;
pub mod report;
pub mod request;
pub mod table;
pub mod tlbi;
pub mod vmid;

pub use addr::{Address, Ipa, Pa, Va};
pub use caps::Capabilities;
pub use descriptor::{
    Ap, Descriptor, MemAttr, S2ap, S2xn, Shareability, Stage1Attrs, Stage2Attrs, TableAttrs,
};
pub use effects::{Barrier, CacheOp, Direct, Effect, Effects, PageEvent, Recorder, SysReg};
pub use error::Error;
pub use geometry::{Geometry, Granule};
pub use invalidate::Basic;
#[cfg(not(loom))]
pub use memory::{Arena, PagePool};
pub use memory::{Slot, TableAllocator};
pub use perms::Grants;
pub use plan::{Invalidator, Planner, Profile, Purpose, Space, SpaceKind};
pub use regime::{
    Asid, El1Stage1, El2Stage1, PaSize, Regime, Stage, Stage2, Stage2Config, VaRange, Vmid,
};
pub use report::{Change, ChangeFlags, ChangeReport, LevelSet};
pub use table::{Installed, MapOptions, Mapping, PageCache, Relaxed, Table, Translation};
pub use tlbi::{TlbiOp, Ttl};
pub use vmid::{AllocError, Assigned, TagAllocator, TagKind, TagSlot};
