//! What drives the model: one event per hardware effect or bookkeeping hint,
//! each issued by one PE.
//!
//! The vocabulary is the union of what the library's [`vmsa::Effects`] emit
//! and what Casemate traces carry (rems-project/casemate,
//! `doc/asciidoc/sections/trace-format.adoc`), so both drive the same
//! [`Machine`](crate::Machine).

use vmsa::tlbi::TlbiOp;

/// Which observers a `DSB` waits for (the `<option>` of `DSB <option>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// `NSH`: the issuing PE only.
    NonShareable,
    /// `ISH`: the Inner Shareable domain (every PE of the model).
    InnerShareable,
    /// `OSH`.
    OuterShareable,
    /// `SY`: full system.
    FullSystem,
}

/// A barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Barrier {
    /// `DSB <domain>[ST|LD]`. `stores_only` is the `ST` form, which waits
    /// for earlier stores but not for TLB maintenance to complete.
    Dsb {
        /// Shareability domain.
        domain: Domain,
        /// The `ST` variant (`DSB ISHST`, ...).
        stores_only: bool,
    },
    /// `DMB`: orders memory accesses; completes nothing the model tracks.
    Dmb,
    /// `ISB`.
    Isb,
}

impl Barrier {
    /// `DSB ISH`.
    pub const DSB_ISH: Barrier = Barrier::Dsb {
        domain: Domain::InnerShareable,
        stores_only: false,
    };
    /// `DSB ISHST`.
    pub const DSB_ISHST: Barrier = Barrier::Dsb {
        domain: Domain::InnerShareable,
        stores_only: true,
    };
    /// `DSB NSH`.
    pub const DSB_NSH: Barrier = Barrier::Dsb {
        domain: Domain::NonShareable,
        stores_only: false,
    };
    /// `DSB SY`.
    pub const DSB_SY: Barrier = Barrier::Dsb {
        domain: Domain::FullSystem,
        stores_only: false,
    };
}

impl From<vmsa::effects::Barrier> for Barrier {
    fn from(b: vmsa::effects::Barrier) -> Self {
        use vmsa::effects::Barrier as B;
        match b {
            B::DsbIsh => Barrier::DSB_ISH,
            B::DsbIshst => Barrier::DSB_ISHST,
            B::DsbNsh => Barrier::DSB_NSH,
            B::DsbSy => Barrier::DSB_SY,
            B::Isb => Barrier::Isb,
        }
    }
}

/// The system registers whose writes the model interprets. Others are
/// accepted and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reg {
    /// Stage 2 base and VMID (bits \[63:48\], or \[55:48\] with 8-bit VMIDs).
    VttbrEl2,
    /// Stage 2 geometry (T0SZ, SL0, TG0).
    VtcrEl2,
    /// EL1&0 stage 1 TTBR0: base and ASID in bits \[63:48\].
    Ttbr0El1,
    /// EL1&0 stage 1 TTBR1 (the upper VA range): base and ASID.
    Ttbr1El1,
    /// EL1&0 stage 1 geometry (T0SZ, T1SZ, A1).
    TcrEl1,
    /// EL2 stage 1 base; with HCR_EL2.E2H 1 (the EL2&0 regime) it carries
    /// an ASID in bits \[63:48\], which are RES0 otherwise.
    Ttbr0El2,
    /// The EL2&0 regime's TTBR1 (upper VA range, HCR_EL2.E2H 1 only).
    Ttbr1El2,
    /// EL2 stage 1 geometry.
    TcrEl2,
    /// Hypervisor configuration: E2H (bit 34) selects the EL2&0 regime.
    HcrEl2,
    /// Any other register, by lower-case name (kept for trace round trips).
    Other(&'static str),
}

impl Reg {
    /// Parses a lower-case register name as Casemate spells it; names the
    /// model does not interpret become [`Reg::Other`] when they are known
    /// system registers, and `None` otherwise.
    pub fn from_name(name: &str) -> Option<Reg> {
        let lower = name.to_ascii_lowercase();
        Some(match lower.as_str() {
            "vttbr_el2" => Reg::VttbrEl2,
            "vtcr_el2" => Reg::VtcrEl2,
            "ttbr0_el1" => Reg::Ttbr0El1,
            "ttbr1_el1" => Reg::Ttbr1El1,
            "tcr_el1" => Reg::TcrEl1,
            "ttbr0_el2" => Reg::Ttbr0El2,
            "ttbr1_el2" => Reg::Ttbr1El2,
            "tcr_el2" => Reg::TcrEl2,
            "hcr_el2" => Reg::HcrEl2,
            "sctlr_el2" => Reg::Other("sctlr_el2"),
            "sctlr_el1" => Reg::Other("sctlr_el1"),
            "mair_el2" => Reg::Other("mair_el2"),
            "mair_el1" => Reg::Other("mair_el1"),
            _ => return None,
        })
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Reg::VttbrEl2 => "vttbr_el2",
            Reg::VtcrEl2 => "vtcr_el2",
            Reg::Ttbr0El1 => "ttbr0_el1",
            Reg::Ttbr1El1 => "ttbr1_el1",
            Reg::TcrEl1 => "tcr_el1",
            Reg::Ttbr0El2 => "ttbr0_el2",
            Reg::Ttbr1El2 => "ttbr1_el2",
            Reg::TcrEl2 => "tcr_el2",
            Reg::HcrEl2 => "hcr_el2",
            Reg::Other(name) => name,
        }
    }
}

impl From<vmsa::effects::SysReg> for Reg {
    fn from(r: vmsa::effects::SysReg) -> Self {
        use vmsa::effects::SysReg as S;
        match r {
            S::VttbrEl2 => Reg::VttbrEl2,
            S::VtcrEl2 => Reg::VtcrEl2,
            S::Ttbr0El1 => Reg::Ttbr0El1,
            S::Ttbr1El1 => Reg::Ttbr1El1,
            S::HcrEl2 => Reg::HcrEl2,
            S::TcrEl1 => Reg::TcrEl1,
            S::Ttbr0El2 => Reg::Ttbr0El2,
            S::TcrEl2 => Reg::TcrEl2,
            other => Reg::Other(other.name()),
        }
    }
}

/// Casemate's hints: software telling the checker about ownership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hint {
    /// `set_root_lock`: `root` is the root of a table tree guarded by `lock`.
    SetRootLock {
        /// Root table address.
        root: u64,
        /// Lock address.
        lock: u64,
    },
    /// `set_owner_root`: table page `page` belongs to the tree at `root`.
    SetOwnerRoot {
        /// Table page.
        page: u64,
        /// Its tree's root.
        root: u64,
    },
    /// `release_table`: the table page (or, for a root, the whole tree) at
    /// `page` is no longer a table and may be reused.
    ReleaseTable {
        /// Table page or root.
        page: u64,
    },
    /// `set_pte_thread_owner`: accepted, not interpreted.
    SetPteThreadOwner {
        /// Location.
        location: u64,
        /// Value.
        value: u64,
    },
}

/// One thing a PE did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// Zeroed memory handed to tables (`mem-init`; the library's
    /// `PageEvent::Init`).
    MemInit {
        /// First byte.
        pa: u64,
        /// Bytes.
        size: u64,
    },
    /// `mem-set`: every byte of the region set to `byte`.
    MemSet {
        /// First byte (8-byte aligned).
        pa: u64,
        /// Bytes (a multiple of 8).
        size: u64,
        /// The byte value.
        byte: u8,
    },
    /// A 64-bit store to (potential) table memory.
    Write {
        /// Address of the descriptor.
        pa: u64,
        /// Value stored.
        value: u64,
        /// Store-release (`mem-order release`) rather than plain.
        release: bool,
    },
    /// A 64-bit load of table memory (`mem-read`): checked against the
    /// model's memory only for consistency, it changes nothing.
    Read {
        /// Address.
        pa: u64,
        /// Value the software saw.
        value: u64,
    },
    /// A barrier.
    Barrier(Barrier),
    /// A TLB maintenance instruction and its operand register.
    Tlbi {
        /// Operation.
        op: TlbiOp,
        /// `Xt` (0 for operations without one).
        operand: u64,
    },
    /// A system register write (`MSR`).
    SysReg {
        /// Register.
        reg: Reg,
        /// Value.
        value: u64,
    },
    /// A Casemate hint.
    Hint(Hint),
    /// A table page given back to its allocator (the library's
    /// `PageEvent::Release`): like `release_table`, for one page.
    Release {
        /// First byte.
        pa: u64,
        /// Bytes.
        size: u64,
    },
    /// Casemate `mem-free`: the region stops being memory the software
    /// tracks (the inverse of `mem-init`). Whatever it held is gone: a
    /// table in it may no longer be walked, and no live entry may still
    /// translate to it (both use after free).
    MemFree {
        /// First byte.
        pa: u64,
        /// Bytes.
        size: u64,
    },
    /// A data page (not a table) that stops belonging to whoever it was
    /// mapped for: no PE may translate to it any more.
    ReleaseData {
        /// First byte.
        pa: u64,
        /// Bytes.
        size: u64,
    },
    /// Lock acquired (Casemate `lock`, or a `trylock` that succeeded: that
    /// record is only traced when it took the lock). Lock discipline is not
    /// an architectural rule: it is checked only on request
    /// ([`Config::locks`](crate::Config::locks)).
    Lock {
        /// Lock address.
        addr: u64,
    },
    /// Lock released (Casemate `unlock`): the end of a critical section, so
    /// a completion point: every operation under the lock must be complete.
    Unlock {
        /// Lock address.
        addr: u64,
    },
    /// An explicit completion point: the operations before it claim to be
    /// complete, so no PE may hold a translation that grants more than the
    /// tables.
    Complete,
}

/// Where an event came from, for explanations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Sequence number (Casemate `id`, or the position in an effect log).
    pub seq: u64,
    /// Line in the trace file (0 when not from a file).
    pub line: u64,
}
