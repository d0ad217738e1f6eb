//! # vmsa-baselines
//!
//! The TLB maintenance of other systems, reproduced as vmsa
//! [`Invalidator`]s, so that the same table operations can be run under
//! each one (on the CPU by a hypervisor, or in vmsa's model by `vmsa
//! compare` and `vmsa replay`) and compared with vmsa's [`Planner`].
//!
//! Each baseline's doc comment names the upstream file and function it
//! follows and the version read. The sources were read at:
//!
//! - Linux (KVM arm64 and arm64 mm): mainline in the v6.18 development
//!   cycle, `arch/arm64/kvm/hyp/pgtable.c` as of commit
//!   `100baf0184896f859290a684f864b8200d8ac872` (a mirror of mainline:
//!   damonitor/linux; it has `kvm_pgtable_stage2_destroy_range()`, which
//!   landed for v6.18); `arch/arm64/kvm/hyp/{vhe,nvhe}/tlb.c`,
//!   `arch/arm64/include/asm/{tlbflush,tlb}.h` of the same cycle.
//! - Hafnium: TF-Hafnium/hafnium, `src/arch/aarch64/mm.c` at
//!   `07a69ab823592dc73724dc869f55c77c62fa45be`, `src/mm.c` at
//!   `00dbf1bc5d04c25e6bb45654494073fdc4ce1d13`.
//! - aarch64-paging 0.12.3 (crates.io), `src/lib.rs` and `src/paging.rs`.
//! - FreeBSD: `sys/arm64/arm64/pmap.c` and `sys/arm64/vmm/vmm_hyp.c`
//!   (stable/14 era; not re-read for this crate, see [`FreeBsd`]).
//! - Xen: `xen/arch/arm/mmu/p2m.c`, `xen/arch/arm/include/asm/arm64/
//!   flushtlb.h` (4.19 era; not re-read for this crate, see [`Xen`]).
//! - elfuse: sysprog21/elfuse `src/core/shim.S` (its HVC #5 wire
//!   protocol) and PRs #24 and #65.
//!
//! The policies see what vmsa reports ([`Change`](vmsa::Change)s: runs of descriptors at
//! one level that changed the same way), not the calls the upstream code
//! makes, so each maps the reported changes onto its source's calls: one
//! upstream invalidation call becomes one barrier-delimited sequence, with
//! the barriers its source issues. Where the report loses information the
//! source has (which table descriptors above the leaves' own tables were
//! removed, the range an unmap was asked for), the doc comment says what
//! is assumed.
//!
//! The [registry](ALL) describes every policy: which regimes its source
//! covers, whether it gathers the operations of a batch into one flush
//! ([`Baseline::gathers`]), whether it knows that a retired VMID / ASID
//! needs no invalidation ([`Baseline::skips_dead`]). [`STAGE2`] is the set
//! a hypervisor offers for stage 2.

#![no_std]
#![warn(missing_docs)]

extern crate alloc;

use alloc::boxed::Box;

use vmsa::{Capabilities, Invalidator, Planner, Profile};

mod aarch64_paging;
mod broadcast;
mod common;
mod elfuse;
mod freebsd;
mod hafnium;
mod kvm;
mod linux;
mod none;
mod xen;

pub use aarch64_paging::Aarch64Paging;
pub use broadcast::Broadcast;
pub use elfuse::Elfuse;
pub use freebsd::FreeBsd;
pub use hafnium::Hafnium;
pub use kvm::Kvm;
pub use linux::Linux;
pub use none::NoInvalidation;
pub use xen::Xen;

/// A policy: its name, what it reproduces, the driver semantics it implies,
/// and how to build it.
#[derive(Clone, Copy, Debug)]
pub struct Baseline {
    /// The short name (`vmsa compare --policies`, the hypervisor's boot
    /// option).
    pub name: &'static str,
    /// The upstream file and function it reproduces (its doc comment has
    /// the details).
    pub source: &'static str,
    /// It gathers the operations of one batch (a hypercall, a syscall, an
    /// MMU-notifier range) into one flush, as Linux's `mmu_gather`, KVM's
    /// deferred range flush and FreeBSD's `pmap_remove` do; otherwise the
    /// caller flushes after every operation (Xen before each p2m operation
    /// drops its lock, Hafnium per replaced entry, aarch64-paging per call).
    pub gathers: bool,
    /// It knows that a destroyed VM's VMID (a dead process's ASID) is not
    /// used again before a full invalidation, so tearing the address space
    /// down needs no TLBI: a driver retires the table
    /// ([`Table::retire`](vmsa::Table::retire)) before destroying it
    /// instead of unmapping and flushing, and the policy emits nothing for
    /// a [dead](vmsa::Space::dead) space.
    pub skips_dead: bool,
    /// Its source manages stage 2 tables (a hypervisor may offer it for
    /// stage 2).
    pub stage2: bool,
    /// Its source manages stage 1 tables.
    pub stage1: bool,
    /// It leaves no stale entry on either stage as far as its source goes
    /// (false for the broken control and for aarch64-paging, whose stage 2
    /// invalidation leaves combined entries).
    pub faithful: bool,
    /// Builds the policy for a CPU with `caps`; `profile` prices choices
    /// for the policies that price (vmsa's planner); the others ignore it.
    pub build: fn(Capabilities, Profile) -> Box<dyn Invalidator>,
}

impl Baseline {
    /// The policy, for a CPU with `caps`, priced with `profile` where it
    /// prices anything.
    pub fn make(&self, caps: Capabilities, profile: Profile) -> Box<dyn Invalidator> {
        (self.build)(caps, profile)
    }
}

impl PartialEq for Baseline {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Baseline {}

/// vmsa's planner: the cheapest correct maintenance under the profile.
pub const VMSA: Baseline = Baseline {
    name: "vmsa",
    source: "vmsa::plan::Planner",
    gathers: true,
    skips_dead: true,
    stage2: true,
    stage1: true,
    faithful: true,
    build: |caps, profile| Box::new(Planner::new(caps, profile)),
};

/// [`Broadcast`].
pub const BROADCAST: Baseline = Baseline {
    name: "broadcast",
    source: "elfuse before PR #24: src/core/shim.S, X8 = 1 (TLBI VMALLE1IS after every change)",
    gathers: false,
    skips_dead: false,
    stage2: true,
    stage1: true,
    faithful: true,
    build: |_, _| Box::new(Broadcast),
};

/// [`Elfuse`] as of PR #24.
pub const ELFUSE_PR24: Baseline = Baseline {
    name: "elfuse-pr24",
    source:
        "sysprog21/elfuse PR #24: src/core/shim.S HVC #5 (X8 = 1 / 3), the host's per-vCPU request",
    gathers: true,
    skips_dead: false,
    stage2: false,
    stage1: true,
    faithful: true,
    build: |caps, _| Box::new(Elfuse { pr65: false, caps }),
};

/// [`Elfuse`] as of PR #65.
pub const ELFUSE_PR65: Baseline = Baseline {
    name: "elfuse-pr65",
    source: "sysprog21/elfuse PR #65: src/core/shim.S HVC #5 (X8 = 1 / 3 / 4, RVAE1IS)",
    gathers: true,
    skips_dead: false,
    stage2: false,
    stage1: true,
    faithful: true,
    build: |caps, _| Box::new(Elfuse { pr65: true, caps }),
};

/// [`Linux`].
pub const LINUX: Baseline = Baseline {
    name: "linux",
    source: "arch/arm64/include/asm/tlb.h tlb_flush(), asm/tlbflush.h __flush_tlb_range_nosync() \
             and flush_tlb_mm() (stage 2: KVM's)",
    gathers: true,
    skips_dead: true,
    stage2: false,
    stage1: true,
    faithful: true,
    build: |caps, _| Box::new(Linux { caps }),
};

/// [`Kvm`].
pub const KVM: Baseline = Baseline {
    name: "kvm",
    source: "arch/arm64/kvm/hyp/pgtable.c kvm_pgtable_stage2_unmap(), stage2_try_break_pte(), \
             kvm_tlb_flush_vmid_range(), kvm_pgtable_stage2_relax_perms(), \
             kvm_pgtable_stage2_destroy(); hyp/vhe/tlb.c (stage 1: Linux's)",
    gathers: true,
    skips_dead: true,
    stage2: true,
    stage1: false,
    faithful: true,
    build: |caps, _| Box::new(Kvm { caps }),
};

/// [`Hafnium`].
pub const HAFNIUM: Baseline = Baseline {
    name: "hafnium",
    source: "src/mm.c mm_replace_entry(), src/arch/aarch64/mm.c arch_mm_invalidate_stage2_range() \
             and arch_mm_invalidate_stage1_range()",
    gathers: false,
    skips_dead: false,
    stage2: true,
    stage1: true,
    faithful: true,
    build: |_, _| Box::new(Hafnium),
};

/// [`FreeBsd`].
pub const FREEBSD: Baseline = Baseline {
    name: "freebsd",
    source: "sys/arm64/arm64/pmap.c pmap_remove_l3_range(), pmap_remove_l2(), _pmap_unwire_l3(), \
             pmap_protect(); sys/arm64/vmm/vmm_hyp.c s2_tlbi_range()",
    gathers: true,
    skips_dead: false,
    stage2: true,
    stage1: true,
    faithful: true,
    build: |_, _| Box::new(FreeBsd),
};

/// [`Xen`].
pub const XEN: Baseline = Baseline {
    name: "xen",
    source: "xen/arch/arm/mmu/p2m.c p2m_write_unlock() -> p2m_force_tlb_flush_sync(), \
             asm/arm64/flushtlb.h flush_guest_tlb()",
    gathers: false,
    skips_dead: false,
    stage2: true,
    stage1: false,
    faithful: true,
    build: |_, _| Box::new(Xen),
};

/// [`Aarch64Paging`].
pub const AARCH64_PAGING: Baseline = Baseline {
    name: "aarch64-paging",
    source:
        "aarch64-paging 0.12.3 src/lib.rs Mapping::invalidate_range(), Mapping::modify_range(); \
             src/paging.rs free_detached(), invalidate_detached()",
    gathers: false,
    skips_dead: false,
    stage2: true,
    stage1: true,
    faithful: false,
    build: |_, _| Box::new(Aarch64Paging),
};

/// [`NoInvalidation`].
pub const NONE: Baseline = Baseline {
    name: "none",
    source: "no invalidation at all: a broken control",
    gathers: false,
    skips_dead: false,
    stage2: true,
    stage1: true,
    faithful: false,
    build: |_, _| Box::new(NoInvalidation),
};

/// Every policy, in display order: vmsa first, the control last.
pub const ALL: &[Baseline] = &[
    VMSA,
    BROADCAST,
    ELFUSE_PR24,
    ELFUSE_PR65,
    LINUX,
    KVM,
    HAFNIUM,
    FREEBSD,
    XEN,
    AARCH64_PAGING,
    NONE,
];

/// The policies a hypervisor offers for stage 2, in display order.
pub const STAGE2: &[&str] = &[
    "vmsa",
    "kvm",
    "xen",
    "hafnium",
    "freebsd",
    "aarch64-paging",
    "broadcast",
    "none",
];

/// The policy called `name`.
pub fn get(name: &str) -> Option<&'static Baseline> {
    ALL.iter().find(|b| b.name == name)
}

/// The stage 2 policy called `name` (one of [`STAGE2`]).
pub fn stage2(name: &str) -> Option<&'static Baseline> {
    get(name).filter(|b| b.stage2)
}

/// The policy called `name`, built for `caps` and priced with `profile`.
pub fn make(name: &str, caps: Capabilities, profile: Profile) -> Option<Box<dyn Invalidator>> {
    get(name).map(|b| b.make(caps, profile))
}
