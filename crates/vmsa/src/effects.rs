//! The one interface through which every hardware effect passes.
//!
//! Translation tables never store a descriptor, issue a barrier or a TLBI,
//! or write a system register themselves: they call an [`Effects`]
//! implementation. The same table code therefore drives the real CPU, the
//! [`Recorder`] used by tests and the CLI, and the executable model.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;

use crate::memory::Slot;

use crate::addr::Pa;
use crate::tlbi::{OperandKind, TlbiOp};

/// A memory barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Barrier {
    /// `DSB ISH`: completes earlier memory accesses and TLB maintenance for
    /// the Inner Shareable domain; a broadcast TLBI has taken effect on
    /// every PE once this completes on the issuing PE.
    DsbIsh,
    /// `DSB ISHST`: completes earlier stores (e.g. descriptor writes, so the
    /// table walkers see them).
    DsbIshst,
    /// `DSB NSH`: completes local TLB maintenance.
    DsbNsh,
    /// `DSB SY`.
    DsbSy,
    /// `ISB`: context synchronization on the issuing PE.
    Isb,
}

impl Barrier {
    /// The assembler spelling.
    pub const fn mnemonic(self) -> &'static str {
        match self {
            Barrier::DsbIsh => "dsb ish",
            Barrier::DsbIshst => "dsb ishst",
            Barrier::DsbNsh => "dsb nsh",
            Barrier::DsbSy => "dsb sy",
            Barrier::Isb => "isb",
        }
    }
}

/// A system register the library writes.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SysReg {
    VttbrEl2,
    VtcrEl2,
    HcrEl2,
    Ttbr0El1,
    Ttbr1El1,
    TcrEl1,
    MairEl1,
    SctlrEl1,
    Ttbr0El2,
    TcrEl2,
    MairEl2,
    SctlrEl2,
}

impl SysReg {
    /// The lower-case register name, as in Casemate traces.
    pub const fn name(self) -> &'static str {
        match self {
            SysReg::VttbrEl2 => "vttbr_el2",
            SysReg::VtcrEl2 => "vtcr_el2",
            SysReg::HcrEl2 => "hcr_el2",
            SysReg::Ttbr0El1 => "ttbr0_el1",
            SysReg::Ttbr1El1 => "ttbr1_el1",
            SysReg::TcrEl1 => "tcr_el1",
            SysReg::MairEl1 => "mair_el1",
            SysReg::SctlrEl1 => "sctlr_el1",
            SysReg::Ttbr0El2 => "ttbr0_el2",
            SysReg::TcrEl2 => "tcr_el2",
            SysReg::MairEl2 => "mair_el2",
            SysReg::SctlrEl2 => "sctlr_el2",
        }
    }
}

/// A cache maintenance operation.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheOp {
    /// `DC CVAC`: clean data cache by VA to the point of coherency.
    DcCvac,
    /// `DC CIVAC`: clean and invalidate by VA to the point of coherency.
    DcCivac,
    /// `IC IALLU`: invalidate all instruction caches on this PE.
    IcIallu,
    /// `IC IALLUIS`: invalidate all instruction caches, Inner Shareable.
    IcIalluis,
}

impl CacheOp {
    /// The assembler spelling.
    pub const fn mnemonic(self) -> &'static str {
        match self {
            CacheOp::DcCvac => "dc cvac",
            CacheOp::DcCivac => "dc civac",
            CacheOp::IcIallu => "ic iallu",
            CacheOp::IcIalluis => "ic ialluis",
        }
    }
}

/// Life-cycle events of table pages: not hardware effects, but what a
/// checker needs to know to catch a page reused while a walker may still
/// reach it (Casemate's `mem-init` and `release_table` hint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageEvent {
    /// `bytes` of zeroed table memory at `pa` are now owned by a table.
    Init {
        /// First byte.
        pa: Pa,
        /// Size in bytes.
        bytes: u64,
    },
    /// The table memory at `pa` has gone back to the allocator: every
    /// invalidation that could leave a walker pointing into it has
    /// completed, and it may be reused.
    Release {
        /// First byte.
        pa: Pa,
        /// Size in bytes.
        bytes: u64,
    },
}

/// Where every hardware effect of the library goes.
///
/// Implementations: [`Recorder`] (an ordered log, stores performed),
/// [`Direct`] (stores only: for tables no hardware walks), the model's
/// executor, and on AArch64 the real-instruction executor.
pub trait Effects {
    /// Stores descriptor `new` at `slot`, whose physical address is `at`.
    /// Implementations must perform the store (as a single-copy-atomic
    /// 64-bit write) before returning.
    fn store_descriptor(&mut self, slot: &Slot, at: Pa, new: u64);
    /// Stores `first`, `first + step`, `first + 2 * step`, ... (wrapping)
    /// into the consecutive descriptors `slots`, the first of which is at
    /// physical address `at`: one [`store_descriptor`](Self::store_descriptor)
    /// per descriptor, in order, which is what the default does. The
    /// library's runs of leaves (a map's or an unmap's entries in one
    /// table) come this way, so an implementation that models the stores
    /// can take a run at once.
    ///
    /// ```
    /// use vmsa::effects::{Effect, Effects, Recorder};
    /// use vmsa::memory::Slot;
    /// use vmsa::Pa;
    /// let slots = [Slot::new(0), Slot::new(0), Slot::new(0)];
    /// let mut rec = Recorder::new();
    /// rec.store_descriptors(&slots, Pa(0x1000), 0x4000_0703, 0x1000);
    /// assert_eq!(slots[2].load(core::sync::atomic::Ordering::Relaxed), 0x4000_2703);
    /// assert_eq!(
    ///     rec.log()[1],
    ///     Effect::Store { pa: Pa(0x1008), old: 0, new: 0x4000_1703 }
    /// );
    /// ```
    #[inline(always)]
    fn store_descriptors(&mut self, slots: &[Slot], at: Pa, first: u64, step: u64) {
        let mut value = first;
        for (i, slot) in slots.iter().enumerate() {
            self.store_descriptor(slot, Pa(at.0 + 8 * i as u64), value);
            value = value.wrapping_add(step);
        }
    }
    /// Stores descriptor `new` at `slot` (physical address `at`) if it
    /// holds `current`, as one atomic compare-and-swap (acquire-release):
    /// `Ok(())` when the store happened, `Err(value)` with what the slot
    /// held otherwise. The fault path's only way to write
    /// ([`Table::map_shared`](crate::Table::map_shared)). Implementations
    /// that record stores record only a store that happened.
    #[inline(always)]
    fn compare_exchange_descriptor(
        &mut self,
        slot: &Slot,
        at: Pa,
        current: u64,
        new: u64,
    ) -> Result<(), u64> {
        let _ = at;
        slot.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }
    /// Executes a barrier.
    fn barrier(&mut self, barrier: Barrier);
    /// Executes `TLBI op, operand`.
    fn tlbi(&mut self, op: TlbiOp, operand: u64);
    /// Writes a system register.
    fn write_sysreg(&mut self, reg: SysReg, value: u64);
    /// Executes a cache maintenance operation on `addr` (ignored by the
    /// "all" forms).
    fn cache(&mut self, op: CacheOp, addr: u64);
    /// Reports a table page life-cycle event.
    fn page_event(&mut self, event: PageEvent);
}

impl<E: Effects + ?Sized> Effects for &mut E {
    #[inline(always)]
    fn store_descriptor(&mut self, slot: &Slot, at: Pa, new: u64) {
        (**self).store_descriptor(slot, at, new)
    }
    #[inline(always)]
    fn store_descriptors(&mut self, slots: &[Slot], at: Pa, first: u64, step: u64) {
        (**self).store_descriptors(slots, at, first, step)
    }
    #[inline(always)]
    fn compare_exchange_descriptor(
        &mut self,
        slot: &Slot,
        at: Pa,
        current: u64,
        new: u64,
    ) -> Result<(), u64> {
        (**self).compare_exchange_descriptor(slot, at, current, new)
    }
    #[inline(always)]
    fn barrier(&mut self, barrier: Barrier) {
        (**self).barrier(barrier)
    }
    #[inline(always)]
    fn tlbi(&mut self, op: TlbiOp, operand: u64) {
        (**self).tlbi(op, operand)
    }
    #[inline(always)]
    fn write_sysreg(&mut self, reg: SysReg, value: u64) {
        (**self).write_sysreg(reg, value)
    }
    #[inline(always)]
    fn cache(&mut self, op: CacheOp, addr: u64) {
        (**self).cache(op, addr)
    }
    #[inline(always)]
    fn page_event(&mut self, event: PageEvent) {
        (**self).page_event(event)
    }
}

/// Performs descriptor stores and nothing else. For tables that no table
/// walker can reach (being built, or never activated), where barriers and
/// TLB maintenance have nothing to act on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Direct;

impl Effects for Direct {
    #[inline(always)]
    fn store_descriptor(&mut self, slot: &Slot, _at: Pa, new: u64) {
        slot.store(new, Ordering::Relaxed);
    }
    #[inline(always)]
    fn barrier(&mut self, _barrier: Barrier) {}
    #[inline(always)]
    fn tlbi(&mut self, _op: TlbiOp, _operand: u64) {}
    #[inline(always)]
    fn write_sysreg(&mut self, _reg: SysReg, _value: u64) {}
    #[inline(always)]
    fn cache(&mut self, _op: CacheOp, _addr: u64) {}
    #[inline(always)]
    fn page_event(&mut self, _event: PageEvent) {}
}

/// One recorded effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// A descriptor store.
    Store {
        /// Physical address of the descriptor.
        pa: Pa,
        /// The value it held.
        old: u64,
        /// The value stored.
        new: u64,
    },
    /// A barrier.
    Barrier(Barrier),
    /// A TLBI and its operand.
    Tlbi {
        /// The operation.
        op: TlbiOp,
        /// The operand register (0 for operations without one).
        operand: u64,
    },
    /// A system register write.
    SysReg {
        /// The register.
        reg: SysReg,
        /// The value.
        value: u64,
    },
    /// A cache maintenance operation.
    Cache {
        /// The operation.
        op: CacheOp,
        /// Its address operand.
        addr: u64,
    },
    /// A table page life-cycle event.
    Page(PageEvent),
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Effect::Store { pa, old, new } => {
                write!(f, "store   [{:#x}] {:#018x} -> {:#018x}", pa.0, old, new)
            }
            Effect::Barrier(b) => write!(f, "{}", b.mnemonic()),
            Effect::Tlbi { op, operand } => match op.operand_kind() {
                OperandKind::None => write!(f, "tlbi    {op}"),
                _ => write!(f, "tlbi    {op}, {operand:#x}"),
            },
            Effect::SysReg { reg, value } => write!(f, "msr     {}, {value:#x}", reg.name()),
            Effect::Cache { op, addr } => write!(f, "{}, {addr:#x}", op.mnemonic()),
            Effect::Page(PageEvent::Init { pa, bytes }) => {
                write!(f, "page    init {:#x} ({bytes:#x} bytes, zeroed)", pa.0)
            }
            Effect::Page(PageEvent::Release { pa, bytes }) => {
                write!(f, "page    release {:#x} ({bytes:#x} bytes)", pa.0)
            }
        }
    }
}

/// Performs descriptor stores and records every effect, in order.
///
/// Tests and tools use it to see exactly what an operation does to the
/// hardware; each effect prints as the instruction it stands for:
///
/// ```
/// use vmsa::{Arena, Effect, Geometry, Granule, Ipa, MapOptions, Pa, Recorder, Stage2};
/// use vmsa::{Stage2Attrs, Table, Vmid};
///
/// let mut fx = Recorder::new();
/// let geometry = Geometry::stage2(Granule::K4, 40)?;
/// let mut s2 = Table::new(Stage2::new(Vmid(1)), geometry, Arena::new(Pa(0x8000_0000), 8), &mut fx)?;
/// s2.map(Ipa(0)..Ipa(0x1000), Pa(0x4000_0000), Stage2Attrs::RAM, MapOptions::PAGES, &mut fx)?;
/// // An inactive table: stores only (the level 1 and 2 table descriptors
/// // and the leaf).
/// let stores = fx.log().iter().filter(|e| matches!(e, Effect::Store { .. })).count();
/// assert_eq!(stores, 3);
/// for e in fx.log() {
///     println!("{e}"); // e.g. "str     0x400000000007ff, [0x80003000]"
/// }
/// let log = fx.take(); // and start afresh
/// assert!(fx.log().is_empty() && !log.is_empty());
/// # Ok::<(), vmsa::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    log: Vec<Effect>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The effects recorded so far.
    pub fn log(&self) -> &[Effect] {
        &self.log
    }

    /// Takes the recorded effects, leaving the log empty.
    pub fn take(&mut self) -> Vec<Effect> {
        core::mem::take(&mut self.log)
    }

    /// Number of TLBIs recorded.
    pub fn tlbi_count(&self) -> usize {
        self.log
            .iter()
            .filter(|e| matches!(e, Effect::Tlbi { .. }))
            .count()
    }
}

impl Effects for Recorder {
    fn store_descriptor(&mut self, slot: &Slot, at: Pa, new: u64) {
        let old = slot.swap(new, Ordering::Relaxed);
        self.log.push(Effect::Store { pa: at, old, new });
    }
    fn compare_exchange_descriptor(
        &mut self,
        slot: &Slot,
        at: Pa,
        current: u64,
        new: u64,
    ) -> Result<(), u64> {
        slot.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)?;
        self.log.push(Effect::Store {
            pa: at,
            old: current,
            new,
        });
        Ok(())
    }
    fn barrier(&mut self, barrier: Barrier) {
        self.log.push(Effect::Barrier(barrier));
    }
    fn tlbi(&mut self, op: TlbiOp, operand: u64) {
        self.log.push(Effect::Tlbi { op, operand });
    }
    fn write_sysreg(&mut self, reg: SysReg, value: u64) {
        self.log.push(Effect::SysReg { reg, value });
    }
    fn cache(&mut self, op: CacheOp, addr: u64) {
        self.log.push(Effect::Cache { op, addr });
    }
    fn page_event(&mut self, event: PageEvent) {
        self.log.push(Effect::Page(event));
    }
}
