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
//!
//! ## Concurrency
//!
//! A [`Table`] is `Send + Sync`. Its fault path takes `&self` and may run on
//! several PEs at once (KVM's `KVM_PGTABLE_WALK_SHARED` walks under the read
//! side of its `mmu_lock`).
//!
//! ### Locking model
//!
//! The caller keeps the [`Table`] behind a reader-writer lock of its choice
//! (`spin::RwLock`, `std::sync::RwLock`, a per-CPU sharded lock such as
//! `crossbeam_utils::sync::ShardedLock`, ...). Besides the entries it fills,
//! a fault writes only its [`PageCache`]'s own slot of the table's leaf
//! count (a cache line of its own), so how well faults scale is the lock's:
//! a lock with one reader count makes every fault a read-modify-write of
//! that count's line, which costs more than a fault of a few tens of
//! nanoseconds (the `parallel_faults` benchmark shows both).
//!
//! - Under the **read** side, any number of PEs may run
//!   [`map_shared`](crate::Table::map_shared) (fill an invalid entry: the
//!   translation fault of a page not yet mapped) and
//!   [`relax_shared`](crate::Table::relax_shared) (add permissions: the permission
//!   fault of a write-protected page) at the same time. They only ever
//!   change an entry from a value they read, by compare-and-swap: a caller
//!   that loses a race sees the winner's entry ([`Installed::Raced`],
//!   [`Relaxed::AlreadyAllowed`]) and lets the guest retry. Table pages
//!   come from the caller's own [`PageCache`], filled beforehand, so nothing
//!   is allocated while PEs contend; a page that lost its race goes back to
//!   the cache, never seen by any walker. Neither keeps shared bookkeeping:
//!   a new entry needs no invalidation (nothing can be cached for an
//!   invalid entry), and a relaxation leaves stricter entries in TLBs,
//!   which at worst fault once more and are dropped by
//!   [`spurious_fault`](crate::Table::spurious_fault) (a local TLBI) on the
//!   PE that meets one.
//! - Under the **write** side (`&mut self`), everything that breaks an
//!   entry: [`unmap`](crate::Table::unmap), [`protect`](crate::Table::protect),
//!   break-before-make in [`map`](crate::Table::map), [`split_block`](crate::Table::split_block),
//!   [`collapse`](crate::Table::collapse), [`flush`](crate::Table::flush). Changes
//!   left outstanding for a later flush (gathered) are completed with
//!   [`publish`](crate::Table::publish) before the write side is released, since
//!   the flush may run on another PE, whose barriers do not complete this
//!   PE's writes.
//!
//! Table pages are detached only under the write side, so no software
//! walker of the fault path can be inside one when it is detached: the
//! borrow rules make `&mut self` wait for every `&self` walker to finish.
//! Hardware walkers may still hold the detached page through their walk
//! caches; the page is released only after the invalidation that removes
//! them has completed (the pending list, emptied by [`flush`](crate::Table::flush)).
//! That is what an epoch scheme (KVM's RCU-deferred table freeing) is for
//! where fault-path walks may detach tables; here they never do, so no
//! walker count is kept: the type system is the epoch.
//!
//! ### Example
//!
//! Two vCPUs fault on neighbouring pages at once; both fill the same
//! missing tables, one of them wins each.
//!
//! ```
//! use std::sync::RwLock;
//! use vmsa::{Arena, Geometry, Granule, Installed, Ipa, Pa, PageCache, Recorder, Stage2, Stage2Attrs, Table, Vmid};
//!
//! let mut fx = Recorder::new();
//! let g = Geometry::stage2(Granule::K4, 40)?;
//! let mut s2 = Table::new(Stage2::new(Vmid(1)), g, Arena::new(Pa(0x8000_0000), 64), &mut fx)?;
//! s2.activate(&mut fx);
//! // Each vCPU's cache, filled while holding the write lock (or from an
//! // allocator that shares the table's memory, such as a `&PagePool`).
//! let mut caches = [PageCache::new(), PageCache::new()];
//! for c in &mut caches {
//!     s2.topup(c, s2.fault_pages(3))?;
//! }
//! let vm = RwLock::new(s2);
//! std::thread::scope(|s| {
//!     for (i, cache) in caches.iter_mut().enumerate() {
//!         let vm = &vm;
//!         s.spawn(move || {
//!             let mut fx = Recorder::new();
//!             let ipa = Ipa(0x4000_0000 + 0x1000 * i as u64);
//!             let pa = Pa(0x1_0000_0000 + 0x1000 * i as u64);
//!             let s2 = vm.read().unwrap();
//!             let got = s2.map_shared(ipa, pa, Stage2Attrs::RAM, 3, cache, &mut fx).unwrap();
//!             assert_eq!(got, Installed::Mapped);
//!         });
//!     }
//! });
//! let mut s2 = vm.into_inner().unwrap();
//! assert!(s2.translate(Ipa(0x4000_1000)).is_some());
//! for c in &mut caches {
//!     s2.drain_cache(c);
//! }
//! # Ok::<(), vmsa::Error>(())
//! ```

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
