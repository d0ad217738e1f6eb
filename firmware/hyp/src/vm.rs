//! The guest's stage 2 and everything that changes it while Linux runs:
//! dirty-logging rounds, page migration, 2 MiB block split / collapse and
//! swap. Built and changed only through vmsa (`Table<Stage2>`, the
//! planner's `flush`, `spurious_fault`, `relax_shared`), by whichever PE
//! needs it, under the reader-writer lock [`VM`] (vmsa's locking model,
//! `vmsa::table::shared`):
//!
//! - the **read** side ([`Vm::fault_shared`], several vCPUs at once): the
//!   common stage 2 faults, which change no bookkeeping but the dirty log:
//!   a spurious fault (`spurious_fault`: a local TLBI), a translation fault
//!   on a page mapped again by now, and dirty logging's write fault on a
//!   write-protected 4 KiB page (`relax_shared`: a compare-and-swap, then
//!   the page marked in the atomic dirty bitmap and its list);
//! - the **write** side ([`vm_write`]): everything else, which needs
//!   `&mut Vm`: the rounds' write-protect, migration, split and collapse,
//!   swap-out and swap-in, flushes, and every fault the read side declines
//!   ([`Vm::fault`] looks at it again from the start).
//!
//! What the read side needs mutably has its own lock: each PE's executor
//! (a PE locks only its own), the Casemate trace (per effect), the
//! operation log (held across the fault's handling, so that the log's
//! order is the order of the changes), the dirty list. Under the write
//! side they are reached with `get_mut`, without locking.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

use vmsa::arch::aarch64;
use vmsa::oplog::{Encoder, FaultKind, Op};
use vmsa::{
    Barrier, CacheOp, Effect, Effects, Error, Geometry, Grants, Granule, Ipa, MapOptions, Pa,
    PageEvent, Relaxed, S2ap, Stage2, Stage2Attrs, SysReg, Table, TlbiOp, Vmid,
};
use vmsa_el2::semihost::BufferedHostFile;
use vmsa_el2::spin::{Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use vmsa_el2::sysreg::counter;

use crate::config::{Config, Control};
use crate::layout::*;
use crate::pool::Pool;
use crate::stats::STATS;

const PAGE: u64 = 4096;
const BLOCK: u64 = 2 << 20;
const PAGES_PER_BLOCK: usize = 512;
const NO_SLOT: u32 = u32::MAX;
/// The guest's VMID.
pub const VMID: u16 = 1;

/// The right a faulting access needed: execute for an instruction fetch,
/// else write or read.
fn needed(write: bool, exec: bool) -> Grants {
    match (exec, write) {
        (true, _) => Grants::EXEC,
        (false, true) => Grants::WRITE,
        (false, false) => Grants::READ,
    }
}

/// The VM, behind the lock every PE takes to change its stage 2: the read
/// side for the fault path ([`Vm::fault_shared`]), the write side
/// ([`vm_write`]) for everything that needs `&mut Vm`.
pub static VM: RwLock<Option<Vm>> = RwLock::new(None);

/// The write side of [`VM`], preferred over new readers: once a PE asks
/// for it, no new fault handler takes the read side (spin's upgradeable
/// guard) and it waits only for the handlers inside, so that vCPUs
/// faulting in turn cannot starve a round.
pub fn vm_write() -> RwLockWriteGuard<'static, Option<Vm>> {
    VM.upgradeable_read().upgrade()
}

/// Why a change window's TLBIs are issued (a negative control breaks one).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Window {
    /// A fault's relax, split, swap-in.
    Fault,
    /// A round's write-protect.
    Protect,
    /// A migration's break.
    MigrateBreak,
    /// Anything else (migration make, collapse, swap-out).
    Other,
}

/// A Casemate trace of the live stage 2 (the first seconds of a run),
/// written to the host as it happens.
pub struct Trace {
    file: BufferedHostFile,
    next_id: u64,
    /// Tracing stops at the first flush after this counter value.
    until: u64,
    stopped: bool,
}

impl Trace {
    fn record(&mut self, pe: usize, effect: &Effect) {
        if self.stopped {
            return;
        }
        let _ = vmsa::casemate::write_effect(&mut self.file, self.next_id, pe, effect);
        self.next_id += vmsa::casemate::record_count(effect);
    }
}

/// The operation log.
type OpLog = Encoder<BufferedHostFile>;

/// The executors of every PE, the negative control, and the recorders.
/// Each has its own lock for the fault path under the read side of
/// [`VM`]; under the write side they are used through `get_mut`.
pub struct Exec {
    /// Per-PE executors (each PE issues through its own, and locks only
    /// its own: never contended).
    hw: [Mutex<aarch64::Cpu>; MAX_PES],
    control: Control,
    /// Locked per effect (an effect's records stay together).
    trace: Option<Mutex<Trace>>,
    oplog: Mutex<Option<OpLog>>,
    /// An operation log was opened (it may have ended since).
    oplogging: bool,
    /// The operation log stops (with `End`) at the first flush past this size.
    oplog_limit: u64,
}

impl Exec {
    /// The effects of `pe` in `window` (under the write side).
    fn fx(&mut self, pe: usize, window: Window) -> PeFx<'_> {
        PeFx::new(
            self.hw[pe].get_mut(),
            self.trace.as_ref(),
            pe,
            self.control,
            window,
        )
    }

    /// Appends `op` to the operation log, if one is kept (under the write
    /// side).
    fn log(&mut self, op: Op) {
        if let Some(log) = self.oplog.get_mut().as_mut() {
            log.push(&op);
        }
    }

    /// The operation log, locked, if one was opened: the fault path holds
    /// it across its handling (the log's order is the changes' order).
    fn oplog_lock(&self) -> Option<MutexGuard<'_, Option<OpLog>>> {
        self.oplogging.then(|| self.oplog.lock())
    }

    /// After a flush: ends the trace and the operation log when their time
    /// or size is up (at a flush, so that neither ends with changes not
    /// yet invalidated).
    fn after_flush(&mut self) {
        if let Some(t) = self.trace.as_mut().map(Mutex::get_mut) {
            if !t.stopped && counter() >= t.until {
                t.stopped = true;
                t.file.flush();
                vmsa_el2::println!(
                    "[hyp] casemate trace ended: {} records, {} bytes{}",
                    t.next_id,
                    t.file.len(),
                    if t.file.truncated() {
                        " (TRUNCATED)"
                    } else {
                        ""
                    }
                );
            }
        }
        if self
            .oplog
            .get_mut()
            .as_ref()
            .is_some_and(|l| l.sink().len() >= self.oplog_limit)
        {
            self.end_oplog();
        }
    }

    /// Writes `End` and closes the operation log.
    pub fn end_oplog(&mut self) {
        if let Some(mut log) = self.oplog.get_mut().take() {
            log.push(&Op::End);
            let records = log.records();
            let f = log.sink_mut();
            f.flush();
            vmsa_el2::println!(
                "[hyp] operation log ended: {} records, {} bytes{}",
                records,
                f.len(),
                if f.truncated() {
                    " (TRUNCATED: no End record)"
                } else {
                    ""
                }
            );
        }
        if let Some(t) = self.trace.as_mut().map(Mutex::get_mut) {
            t.stopped = true;
            t.file.flush();
        }
    }
}

/// Appends `ops` to a locked operation log (if it has not ended).
fn log_ops(log: &mut Option<MutexGuard<'_, Option<OpLog>>>, ops: &[Op]) {
    if let Some(Some(log)) = log.as_deref_mut() {
        for op in ops {
            log.push(op);
        }
    }
}

/// vmsa's effects on one PE: executed (with a negative control applied),
/// counted, and traced while the trace runs.
struct PeFx<'a> {
    hw: &'a mut aarch64::Cpu,
    trace: Option<&'a Mutex<Trace>>,
    pe: usize,
    drop_all: bool,
    local: bool,
    drop_vmalle1: bool,
}

impl<'a> PeFx<'a> {
    /// The effects of `pe` in `window`, executed by `hw` (`pe`'s own).
    fn new(
        hw: &'a mut aarch64::Cpu,
        trace: Option<&'a Mutex<Trace>>,
        pe: usize,
        c: Control,
        window: Window,
    ) -> Self {
        PeFx {
            hw,
            trace,
            pe,
            drop_all: (c == Control::NoProtectTlbi && window == Window::Protect)
                || (c == Control::NoMigrateTlbi && window == Window::MigrateBreak),
            local: c == Control::LocalOnly,
            drop_vmalle1: c == Control::Ipas2Only && window == Window::MigrateBreak,
        }
    }

    fn record(&mut self, effect: Effect) {
        if let Some(t) = self.trace {
            t.lock().record(self.pe, &effect);
        }
    }

    fn issue(&mut self, op: TlbiOp, operand: u64) {
        self.hw.tlbi(op, operand);
        self.record(Effect::Tlbi { op, operand });
    }
}

impl Effects for PeFx<'_> {
    fn store_descriptor(&mut self, slot: &AtomicU64, at: Pa, new: u64) {
        let old = slot.load(Ordering::Relaxed);
        self.hw.store_descriptor(slot, at, new);
        self.record(Effect::Store { pa: at, old, new });
    }
    fn compare_exchange_descriptor(
        &mut self,
        slot: &AtomicU64,
        at: Pa,
        current: u64,
        new: u64,
    ) -> Result<(), u64> {
        // Traced like a store, and only when it happened (a lost race
        // wrote nothing).
        self.hw
            .compare_exchange_descriptor(slot, at, current, new)?;
        self.record(Effect::Store {
            pa: at,
            old: current,
            new,
        });
        Ok(())
    }
    fn barrier(&mut self, barrier: Barrier) {
        self.hw.barrier(barrier);
        self.record(Effect::Barrier(barrier));
    }
    fn tlbi(&mut self, op: TlbiOp, operand: u64) {
        if self.drop_all || (self.drop_vmalle1 && matches!(op, TlbiOp::Vmalle1is | TlbiOp::Vmalle1))
        {
            STATS.control_tlbis.bump();
            return;
        }
        if self.local && op.is_broadcast() {
            STATS.control_tlbis.bump();
            // QEMU applies VMALLS12E1 and ALLE1 to every PE: replace them
            // with VMALLE1, which on QEMU's combined TLB empties this PE only.
            let local = match op {
                TlbiOp::Vmalls12e1is | TlbiOp::Alle1is => TlbiOp::Vmalle1,
                _ => vmsa::plan::local_form(op),
            };
            self.issue(local, operand);
            return;
        }
        self.issue(op, operand);
    }
    fn write_sysreg(&mut self, reg: SysReg, value: u64) {
        self.hw.write_sysreg(reg, value);
        self.record(Effect::SysReg { reg, value });
    }
    fn cache(&mut self, op: CacheOp, addr: u64) {
        self.hw.cache(op, addr);
    }
    fn page_event(&mut self, event: PageEvent) {
        self.hw.page_event(event);
        self.record(Effect::Page(event));
    }
}

/// A failure that ends the run with a FAIL verdict.
#[derive(Debug)]
pub struct Fatal(pub &'static str, pub Error);

/// What a stage 2 fault on guest RAM turned out to be.
pub enum Handled {
    /// The guest may retry the access.
    Retry,
    /// The page is neither mapped nor swapped out: a hypervisor bug.
    Lost,
}

/// The dirty log: a bitmap the fault path sets under the read side of
/// [`VM`] (atomically: several vCPUs at once), and the list of the pages
/// set, in the order they were; the rounds read and clear both under the
/// write side.
struct DirtyLog {
    bits: Vec<AtomicU64>,
    list: Mutex<Vec<u32>>,
}

impl DirtyLog {
    fn new(pages: usize) -> Self {
        DirtyLog {
            bits: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            list: Mutex::new(Vec::new()),
        }
    }

    /// Logs `page` dirty (any side of the lock).
    fn mark(&self, page: usize) {
        let bit = 1u64 << (page % 64);
        // Relaxed: the rounds read the log under the write side, which
        // every marking PE's read side released to.
        if self.bits[page / 64].fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            self.list.lock().push(page as u32);
        }
    }

    fn is_dirty(&self, page: usize) -> bool {
        self.bits[page / 64].load(Ordering::Relaxed) & (1u64 << (page % 64)) != 0
    }

    /// Clears `page` (under the write side).
    fn clear(&mut self, page: usize) {
        *self.bits[page / 64].get_mut() &= !(1u64 << (page % 64));
    }

    /// The pages logged (under the write side).
    fn list(&mut self) -> &mut Vec<u32> {
        self.list.get_mut()
    }
}

/// The guest: its stage 2 and the live-change state.
pub struct Vm {
    table: Table<Stage2, Pool>,
    cfg: Config,
    /// The policy flushes after every operation (it does not gather a
    /// batch: Xen's p2m, Hafnium, aarch64-paging).
    flush_each: bool,
    /// Executors, control and recorders.
    pub exec: Exec,
    /// Pages written since the last round.
    dirty: DirtyLog,
    /// Checksum of each page when it was last write-protected.
    snap: Vec<u64>,
    /// Swap slot holding each page's contents, or NO_SLOT.
    swapped: Vec<u32>,
    free_slots: Vec<u32>,
    /// Free frames, oldest first (a frame just freed holds poison for a
    /// while before it is reused).
    frames: VecDeque<u64>,
    /// 2 MiB regions split into pages.
    split: Vec<bool>,
    swap_cursor: usize,
    rng: u64,
    last_round: u64,
    last_migrate: u64,
    /// No migrations before this counter value.
    migrate_from: u64,
}

fn ram_range() -> Range<Ipa> {
    Ipa(RAM_BASE)..Ipa(RAM_BASE + RAM_SIZE)
}

fn page_range(page: usize) -> Range<Ipa> {
    let a = RAM_BASE + page as u64 * PAGE;
    Ipa(a)..Ipa(a + PAGE)
}

fn read_only() -> Stage2Attrs {
    Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly)
}

/// FNV-1a over a page.
fn checksum(pa: u64) -> u64 {
    let p = pa as *const u64;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..512 {
        // SAFETY: `pa` is a guest frame in RAM, identity mapped at EL2.
        let w = unsafe { core::ptr::read_volatile(p.add(i)) };
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Copies one page of RAM.
fn copy_page(from: u64, to: u64) {
    // SAFETY: both are whole, distinct frames this hypervisor owns or the
    // guest can no longer reach (unmapped and invalidated), identity mapped.
    unsafe { core::ptr::copy_nonoverlapping(from as *const u64, to as *mut u64, 512) };
}

/// Fills a frame with poison: 0xdead << 48 | page << 16 | word, so that a
/// guest reading it through a stale translation sees it (memtest counts
/// such values).
fn poison(pa: u64, page: usize) {
    let p = pa as *mut u64;
    for i in 0..512u64 {
        // SAFETY: a frame the guest can no longer reach, identity mapped.
        unsafe {
            core::ptr::write_volatile(
                p.add(i as usize),
                0xdead_0000_0000_0000 | ((page as u64) << 16) | i,
            )
        };
    }
}

impl Vm {
    /// Builds the identity stage 2: guest devices as Device blocks, RAM as
    /// 4 KiB pages (or 2 MiB blocks with `blocks`); not live yet.
    ///
    /// # Errors
    /// What vmsa returns (out of table pages, ...).
    pub fn new(cfg: Config, pool: Pool) -> Result<Vm, Fatal> {
        let mut exec = Exec {
            // SAFETY: every PE runs vmsa-hyp at EL2 with HCR_EL2.E2H == 0;
            // range TLBIs are issued only when the CPU reports
            // FEAT_TLBIRANGE (the planner's capabilities come from
            // ID_AA64ISAR0_EL1); the registers written through these are
            // the guest's VTCR_EL2 / VTTBR_EL2, which leave EL2's own
            // translation alone; cache maintenance names mapped addresses.
            hw: [const { Mutex::new(unsafe { aarch64::Cpu::new() }) }; MAX_PES],
            control: cfg.control,
            trace: None,
            oplog: Mutex::new(None),
            oplogging: false,
            oplog_limit: cfg.oplog_mb << 20,
        };
        if let Some(path) = cfg.casemate.get() {
            let file = BufferedHostFile::create(path, 1 << 20, 512 << 20)
                .map_err(|_| Fatal("create the Casemate trace on the host", Error::OutOfMemory))?;
            exec.trace = Some(Mutex::new(Trace {
                file,
                next_id: 0,
                until: counter() + vmsa_el2::sysreg::ms_to_ticks(cfg.casemate_s * 1000),
                stopped: false,
            }));
            vmsa_el2::println!(
                "[hyp] casemate trace to {path} (the first {} s)",
                cfg.casemate_s
            );
        }
        if let Some(path) = cfg.oplog.get() {
            // The hard bound leaves room past the soft one (checked at
            // flushes) for the batch in flight and the End record.
            let file = BufferedHostFile::create(path, 1 << 20, (cfg.oplog_mb + 16) << 20)
                .map_err(|_| Fatal("create the operation log on the host", Error::OutOfMemory))?;
            *exec.oplog.get_mut() = Some(Encoder::new(file));
            exec.oplogging = true;
            vmsa_el2::println!("[hyp] operation log to {path} (up to {} MiB)", cfg.oplog_mb);
        }
        let geometry =
            Geometry::stage2(Granule::K4, 40).map_err(|e| Fatal("stage 2 geometry", e))?;
        let mut table = Table::new(
            Stage2::new(Vmid(VMID)),
            geometry,
            pool,
            &mut exec.fx(0, Window::Other),
        )
        .map_err(|e| Fatal("stage 2 root", e))?;
        let caps = vmsa_el2::cpu::capabilities();
        // Config::parse accepted only names of this registry.
        let policy = vmsa_baselines::stage2(cfg.policy()).ok_or(Fatal(
            "unknown stage 2 policy",
            Error::InvalidAttributes {
                field: "policy name",
            },
        ))?;
        table.set_invalidator(policy.make(caps, vmsa::Profile::NATIVE));
        let mut vm = Vm {
            table,
            cfg,
            flush_each: !policy.gathers,
            exec,
            dirty: DirtyLog::new(RAM_PAGES),
            snap: if cfg.verify {
                vec![0; RAM_PAGES]
            } else {
                Vec::new()
            },
            swapped: vec![NO_SLOT; RAM_PAGES],
            free_slots: (0..SWAP_SLOTS as u32).rev().collect(),
            frames: (FRAMES_BASE..FRAMES_END).step_by(PAGE as usize).collect(),
            split: vec![false; RAM_PAGES / PAGES_PER_BLOCK],
            swap_cursor: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            last_round: 0,
            last_migrate: 0,
            migrate_from: counter() + vmsa_el2::sysreg::ms_to_ticks(cfg.migrate_after_s * 1000),
        };
        for (start, end) in GUEST_DEVICES {
            vm.map(
                0,
                Ipa(start)..Ipa(end),
                Pa(start),
                Stage2Attrs::DEVICE,
                true,
                Window::Other,
            )
            .map_err(|e| Fatal("map guest devices", e))?;
        }
        vm.map(
            0,
            ram_range(),
            Pa(RAM_BASE),
            Stage2Attrs::RAM,
            cfg.blocks,
            Window::Other,
        )
        .map_err(|e| Fatal("map guest RAM", e))?;
        Ok(vm)
    }

    /// `Table::map`, logged.
    fn map(
        &mut self,
        pe: usize,
        range: Range<Ipa>,
        pa: Pa,
        attrs: Stage2Attrs,
        blocks: bool,
        w: Window,
    ) -> Result<(), Error> {
        self.exec.log(Op::Map {
            pe: pe as u8,
            range: range.clone(),
            pa,
            attrs,
            blocks,
        });
        self.table.set_issuer(pe);
        let opts = MapOptions {
            blocks,
            ..MapOptions::default()
        };
        let r = self
            .table
            .map(range, pa, attrs, opts, &mut self.exec.fx(pe, w))
            .map(|_| ());
        self.after_op(pe, w, r)
    }

    /// `Table::unmap`, logged.
    fn unmap(&mut self, pe: usize, range: Range<Ipa>, w: Window) -> Result<(), Error> {
        self.exec.log(Op::Unmap {
            pe: pe as u8,
            range: range.clone(),
        });
        self.table.set_issuer(pe);
        let r = self
            .table
            .unmap(range, &mut self.exec.fx(pe, w))
            .map(|_| ());
        self.after_op(pe, w, r)
    }

    /// `Table::protect`, logged.
    fn protect(
        &mut self,
        pe: usize,
        range: Range<Ipa>,
        attrs: Stage2Attrs,
        w: Window,
    ) -> Result<(), Error> {
        self.exec.log(Op::Protect {
            pe: pe as u8,
            range: range.clone(),
            attrs,
        });
        self.table.set_issuer(pe);
        let r = self
            .table
            .protect(range, attrs, &mut self.exec.fx(pe, w))
            .map(|_| ());
        self.after_op(pe, w, r)
    }

    /// `Table::split_block`, logged.
    fn split_block(&mut self, pe: usize, addr: Ipa, w: Window) -> Result<(), Error> {
        self.exec.log(Op::Split { pe: pe as u8, addr });
        self.table.set_issuer(pe);
        let r = self
            .table
            .split_block(addr, &mut self.exec.fx(pe, w))
            .map(|_| ());
        self.after_op(pe, w, r)
    }

    /// `Table::collapse`, logged; whether anything changed.
    fn collapse(&mut self, pe: usize, range: Range<Ipa>, w: Window) -> Result<bool, Error> {
        self.exec.log(Op::Collapse {
            pe: pe as u8,
            range: range.clone(),
        });
        self.table.set_issuer(pe);
        let r = self
            .table
            .collapse(range, &mut self.exec.fx(pe, w))
            .map(|r| !r.changes.is_empty());
        self.after_op(pe, w, r)
    }

    /// A policy that does not gather flushes after every operation.
    fn after_op<T>(&mut self, pe: usize, w: Window, r: Result<T, Error>) -> Result<T, Error> {
        if r.is_ok() && self.flush_each && self.table.is_live() {
            self.flush(pe, w);
        }
        r
    }

    /// VTCR_EL2 and VTTBR_EL2 of the stage 2.
    pub fn registers(&self) -> (u64, u64) {
        let [(_, vtcr), (_, vttbr)] = self.table.registers();
        (vtcr, vttbr)
    }

    /// The stage 2 goes live: from now on vCPUs may walk it; `pe` is the
    /// first to run it (its registers are written by [`crate::guest::setup_el2`]).
    pub fn activate(&mut self, pe: usize) {
        self.exec.log(Op::Activate { pe: pe as u8 });
        self.table.set_issuer(pe);
        self.table.activate(&mut self.exec.fx(pe, Window::Other));
    }

    /// A vCPU starts running on `pe` (the planner uses local TLBIs while
    /// only one PE runs the VMID); `vttbr` is what `pe` loads, for the trace.
    pub fn vcpu_load(&mut self, pe: usize) {
        self.exec.log(Op::VcpuLoad { pe: pe as u8 });
        self.table.set_issuer(pe);
        let mut fx = self.exec.fx(pe, Window::Other);
        self.table.vcpu_load(pe, &mut fx);
        // The trace shows which PE runs the VMID by its VTTBR_EL2 write
        // (setup_el2 writes the register itself).
        let [(_, vtcr), (_, vttbr)] = self.table.registers();
        fx.record(Effect::SysReg {
            reg: SysReg::VtcrEl2,
            value: vtcr,
        });
        fx.record(Effect::SysReg {
            reg: SysReg::VttbrEl2,
            value: vttbr,
        });
    }

    /// The totals of every PE's executor.
    pub fn executed(&self) -> aarch64::Counts {
        let mut all = aarch64::Counts::ZERO;
        for h in &self.exec.hw {
            all += h.lock().counts();
        }
        all
    }

    /// The leaves the table maps.
    pub fn mapped_leaves(&self) -> u64 {
        self.table.mapped_leaves()
    }

    /// 2 MiB regions split now.
    pub fn split_now(&self) -> usize {
        self.split.iter().filter(|s| **s).count()
    }

    /// Pages away from IPA == PA now.
    pub fn migrated_now(&self) -> usize {
        (0..RAM_PAGES)
            .filter(|&p| {
                self.pa_of(p)
                    .is_some_and(|pa| pa != RAM_BASE + p as u64 * PAGE)
            })
            .count()
    }

    /// Pages swapped out now.
    pub fn swapped_now(&self) -> usize {
        SWAP_SLOTS - self.free_slots.len()
    }

    /// `Table::flush` (the policy's invalidation), logged.
    fn flush(&mut self, pe: usize, window: Window) {
        self.exec.log(Op::Flush { pe: pe as u8 });
        self.table.set_issuer(pe);
        self.table.flush(&mut self.exec.fx(pe, window));
        STATS.flushes.bump();
        self.exec.after_flush();
    }

    /// A frame the guest no longer reaches goes back to the free list.
    fn release_frame(&mut self, pe: usize, pa: u64) {
        self.exec.log(Op::ReleaseFrame {
            pe: pe as u8,
            pa: Pa(pa),
        });
        self.frames.push_back(pa);
    }

    fn pa_of(&self, page: usize) -> Option<u64> {
        self.table
            .translate(page_range(page).start)
            .map(|t| t.output.0)
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn take_frame(&mut self) -> Option<u64> {
        self.frames.pop_front()
    }

    /// Blocks mode: splits the live 2 MiB block holding `page` into 512
    /// pages with the same attributes (break-before-make inside vmsa).
    fn ensure_page(&mut self, pe: usize, page: usize, window: Window) -> Result<(), Fatal> {
        let ipa = page_range(page).start;
        if self.table.translate(ipa).is_some_and(|t| t.level < 3) {
            self.split_block(pe, ipa, window)
                .map_err(|e| Fatal("split a 2 MiB block", e))?;
            self.flush(pe, window);
            self.split[page / PAGES_PER_BLOCK] = true;
            STATS.splits.bump();
        }
        Ok(())
    }

    /// A stage 2 abort on guest RAM page `page` (the write side of [`VM`]
    /// is held) of `kind`; `write`: the access was a write (or a stage 1
    /// walk update); `exec`: an instruction fetch; `s1ptw`: taken on the
    /// stage 1 walk. Handles every fault, and looks at it from the start:
    /// [`fault_shared`](Self::fault_shared) may have declined it, and the
    /// tables may have changed while this PE waited for the lock.
    ///
    /// # Errors
    /// Running out of table pages or frames.
    pub fn fault(
        &mut self,
        pe: usize,
        page: usize,
        kind: FaultKind,
        write: bool,
        exec: bool,
        s1ptw: bool,
    ) -> Result<Handled, Fatal> {
        let ipa = page_range(page).start;
        let translation = kind == FaultKind::Translation;
        self.exec.log(Op::Fault {
            pe: pe as u8,
            ipa,
            kind,
            write,
            s1ptw,
        });
        let access = needed(write, exec);
        match self.table.translate(ipa) {
            None if self.swapped[page] != NO_SLOT => {
                self.swap_in(pe, page)?;
                return Ok(Handled::Retry);
            }
            None => return Ok(Handled::Lost),
            Some(_) if translation => {
                // Mapped again by now (a migration or swap-in finished
                // while this PE waited for the lock): invalid entries are
                // never cached, so just retry.
                STATS.window_retries.bump();
                return Ok(Handled::Retry);
            }
            Some(_) => {}
        }
        self.table.set_issuer(pe);
        if self
            .table
            .spurious_fault(ipa, access, &mut self.exec.fx(pe, Window::Fault))
        {
            self.exec.log(Op::Spurious { pe: pe as u8, ipa });
            STATS.spurious_faults.bump();
            return Ok(Handled::Retry);
        }
        if !write || !self.cfg.dirty {
            // A permission fault the tables do not explain: not ours to fix.
            return Ok(Handled::Lost);
        }
        // A write to a write-protected page: log it dirty and let it write.
        if self.cfg.blocks {
            self.ensure_page(pe, page, Window::Fault)?;
        }
        self.protect(pe, page_range(page), Stage2Attrs::RAM, Window::Fault)
            .map_err(|e| Fatal("relax a page", e))?;
        self.flush(pe, Window::Fault);
        self.dirty.mark(page);
        STATS.relaxed.bump();
        Ok(Handled::Retry)
    }

    /// The fault path under the read side of [`VM`], on several vCPUs at
    /// once: the faults that need no `&mut Vm`. `Some(Handled::Retry)`:
    /// handled, the guest retries; `None`: declined, nothing changed, and
    /// [`fault`](Self::fault) (under the write side) must handle it. The
    /// cases, in the order [`fault`](Self::fault) tries them:
    ///
    /// - a translation fault on a page mapped again by now (a migration or
    ///   swap-in finished while this PE waited for the lock): retry;
    /// - a spurious fault (the tables allow the access: a stale, stricter
    ///   entry): `spurious_fault`'s local TLBI;
    /// - dirty logging's write fault on a write-protected 4 KiB page:
    ///   `relax_shared` to RAM attributes (a compare-and-swap), and the
    ///   page logged dirty. A page of a 2 MiB block (a split), a page not
    ///   mapped (a swap-in) and anything vmsa answers `NeedsExclusive` are
    ///   declined.
    ///
    /// A relax issues no TLBI (`relax_shared` is a compare-and-swap and
    /// the `DSB ISHST` that publishes it; this handler does not ask for
    /// the optional local invalidation after it). That is what vmsa's planner
    /// chooses for a relaxation on the write side (the exclusive path's
    /// `protect` + `flush` issues nothing for it): an entry stricter than
    /// the tables costs at most one more fault, on the PE that needs the
    /// right, which `spurious_fault` then invalidates, as it does on the
    /// other PEs. On QEMU, whose TLB keeps no entry that faulted, the
    /// invalidation would only cost: its VMALLE1 empties the PE's whole
    /// TLB at every relax, which also wipes the stale entries the
    /// 1-vCPU negative controls leave behind before the guest can use
    /// them (they would no longer be caught).
    ///
    /// Logged as the write side logs the same fault: `Fault` then
    /// `Spurious`, or `Fault`, a `Protect` of the page to RAM attributes
    /// and a `Flush` for a relax (the replay's semantics are the exclusive
    /// path's), with the log held across the handling so that its order
    /// is the order of the changes.
    pub fn fault_shared(
        &self,
        pe: usize,
        page: usize,
        kind: FaultKind,
        write: bool,
        exec: bool,
        s1ptw: bool,
    ) -> Option<Handled> {
        if !self.cfg.shared {
            return None;
        }
        let ipa = page_range(page).start;
        let fault = Op::Fault {
            pe: pe as u8,
            ipa,
            kind,
            write,
            s1ptw,
        };
        let access = needed(write, exec);
        let mut log = self.exec.oplog_lock();
        // Not mapped: swapped out (a swap-in takes a frame and a slot) or
        // lost; either is the write side's.
        let tr = self.table.translate(ipa)?;
        if kind == FaultKind::Translation {
            log_ops(&mut log, &[fault]);
            STATS.window_retries.bump();
            return Some(Handled::Retry);
        }
        let mut hw = self.exec.hw[pe].lock();
        let mut fx = PeFx::new(
            &mut hw,
            self.exec.trace.as_ref(),
            pe,
            self.exec.control,
            Window::Fault,
        );
        if self.table.spurious_fault(ipa, access, &mut fx) {
            log_ops(&mut log, &[fault, Op::Spurious { pe: pe as u8, ipa }]);
            STATS.spurious_faults.bump();
            return Some(Handled::Retry);
        }
        if !write || !self.cfg.dirty || tr.level != 3 {
            return None;
        }
        match self
            .table
            .relax_shared(ipa, Stage2Attrs::RAM, Grants::WRITE, &mut fx)
        {
            Ok(Relaxed::Relaxed) => {
                // Before the read side is let go: the next round (the write
                // side) sees it.
                self.dirty.mark(page);
                log_ops(
                    &mut log,
                    &[
                        fault,
                        Op::Protect {
                            pe: pe as u8,
                            range: page_range(page),
                            attrs: Stage2Attrs::RAM,
                        },
                        Op::Flush { pe: pe as u8 },
                    ],
                );
                STATS.relaxed.bump();
                Some(Handled::Retry)
            }
            Ok(Relaxed::AlreadyAllowed) => {
                // Another vCPU relaxed it (and logged it dirty) first.
                log_ops(&mut log, &[fault, Op::Spurious { pe: pe as u8, ipa }]);
                STATS.spurious_faults.bump();
                Some(Handled::Retry)
            }
            Err(_) => None,
        }
    }

    fn round_due(&self, now: u64) -> bool {
        self.cfg.dirty
            && (self.cfg.max_rounds == 0 || STATS.rounds.get() < self.cfg.max_rounds)
            && now.wrapping_sub(self.last_round) >= vmsa_el2::sysreg::ms_to_ticks(self.cfg.round_ms)
    }

    fn migration_due(&self, now: u64) -> bool {
        self.cfg.migrate > 0
            && (self.cfg.max_migrations == 0 || STATS.migrations.get() < self.cfg.max_migrations)
            && now >= self.migrate_from
            && now.wrapping_sub(self.last_migrate)
                >= vmsa_el2::sysreg::ms_to_ticks(self.cfg.migrate_ms)
    }

    /// Whether a round or a migration tick is due at `now`.
    pub fn due(&self, now: u64) -> bool {
        self.round_due(now) || self.migration_due(now)
    }

    /// Runs what is due: a migration tick, a round.
    ///
    /// # Errors
    /// Running out of table pages or frames.
    pub fn tick(&mut self, pe: usize) -> Result<(), Fatal> {
        let now = counter();
        let t0 = now;
        if self.migration_due(now) {
            for k in 0..self.cfg.migrate {
                let page = if k % 2 == 0 && !self.dirty.list().is_empty() {
                    let i = self.next_rand() as usize % self.dirty.list().len();
                    self.dirty.list()[i] as usize
                } else {
                    self.next_rand() as usize % RAM_PAGES
                };
                self.migrate(pe, page)?;
            }
            self.last_migrate = counter();
        }
        if self.round_due(now) {
            self.round(pe)?;
            self.last_round = counter();
        }
        STATS.live_ticks.add(counter().wrapping_sub(t0));
        Ok(())
    }

    /// The first round, before the guest runs: all RAM write-protected.
    ///
    /// # Errors
    /// Running out of table pages.
    pub fn start_dirty_logging(&mut self, pe: usize) -> Result<(), Fatal> {
        self.protect(pe, ram_range(), read_only(), Window::Other)
            .map_err(|e| Fatal("write-protect guest RAM", e))?;
        self.flush(pe, Window::Other);
        if self.cfg.verify {
            for page in 0..RAM_PAGES {
                if let Some(pa) = self.pa_of(page) {
                    self.snap[page] = checksum(pa);
                }
            }
        }
        STATS.protected.add(RAM_PAGES as u64);
        STATS.rounds.bump();
        self.last_round = counter();
        Ok(())
    }

    /// A dirty-logging round: verify (every `verify_every` rounds) that
    /// every page not logged dirty is unchanged, collapse clean split
    /// regions, write-protect the dirty pages again (one flush), record
    /// their checksums, swap out some clean pages.
    fn round(&mut self, pe: usize) -> Result<(), Fatal> {
        let round = STATS.rounds.get() + 1;
        let quiet = self.cfg.quiet;
        if self.cfg.verify && round % self.cfg.verify_every == 0 {
            let mut missed = 0;
            for page in 0..RAM_PAGES {
                if self.dirty.is_dirty(page) || self.swapped[page] != NO_SLOT {
                    continue;
                }
                if let Some(pa) = self.pa_of(page) {
                    if checksum(pa) != self.snap[page] {
                        if missed < 4 {
                            vmsa_el2::println!(
                                "[hyp] MISSED DIRTY: page {:#x} (IPA {:#x}) changed in round {} but was not logged",
                                page,
                                RAM_BASE + page as u64 * PAGE,
                                round
                            );
                        }
                        missed += 1;
                        self.snap[page] = checksum(pa);
                    }
                }
            }
            STATS.missed_dirty.add(missed);
            STATS.verify_rounds.bump();
            STATS.verify_pages.add(RAM_PAGES as u64);
        }
        if self.cfg.blocks {
            self.collapse_clean(pe)?;
        }
        let list = core::mem::take(self.dirty.list());
        STATS.max_dirty.max(list.len() as u64);
        // Protect runs of consecutive pages with one call each.
        let mut sorted = list.clone();
        sorted.sort_unstable();
        let mut i = 0;
        self.table.set_issuer(pe);
        while i < sorted.len() {
            let mut j = i + 1;
            while j < sorted.len() && sorted[j] == sorted[j - 1] + 1 {
                j += 1;
            }
            let a = RAM_BASE + u64::from(sorted[i]) * PAGE;
            let b = RAM_BASE + (u64::from(sorted[j - 1]) + 1) * PAGE;
            self.protect(pe, Ipa(a)..Ipa(b), read_only(), Window::Protect)
                .map_err(|e| Fatal("write-protect dirty pages", e))?;
            i = j;
        }
        self.flush(pe, Window::Protect);
        // Their contents from now on, until they are logged dirty again.
        for &p in &list {
            let page = p as usize;
            self.dirty.clear(page);
            if self.cfg.verify {
                if let Some(pa) = self.pa_of(page) {
                    self.snap[page] = checksum(pa);
                }
            }
        }
        STATS.protected.add(list.len() as u64);
        if self.cfg.swap > 0 {
            self.swap_out_clean(pe)?;
        }
        STATS.rounds.bump();
        if !quiet && (round <= 3 || round % 100 == 0) {
            vmsa_el2::println!(
                "[hyp] round {}: {} pages were dirty; relaxed {}, migrations {}, splits {}, collapses {}, swapped out {} in {}, missed dirty {}",
                round,
                list.len(),
                STATS.relaxed.get(),
                STATS.migrations.get(),
                STATS.splits.get(),
                STATS.collapses.get(),
                STATS.swap_outs.get(),
                STATS.swap_ins.get(),
                STATS.missed_dirty.get()
            );
        }
        Ok(())
    }

    /// Blocks mode: collapses split regions none of whose pages was
    /// written this round (vmsa declines when the pages are no longer one
    /// contiguous, uniform run, e.g. after a migration).
    fn collapse_clean(&mut self, pe: usize) -> Result<(), Fatal> {
        let mut busy = vec![false; self.split.len()];
        for &p in self.dirty.list().iter() {
            busy[p as usize / PAGES_PER_BLOCK] = true;
        }
        let mut any = false;
        self.table.set_issuer(pe);
        for r in 0..self.split.len() {
            if !self.split[r] || busy[r] {
                continue;
            }
            let a = RAM_BASE + r as u64 * BLOCK;
            let collapsed = self
                .collapse(pe, Ipa(a)..Ipa(a + BLOCK), Window::Other)
                .map_err(|e| Fatal("collapse a region", e))?;
            if collapsed {
                self.split[r] = false;
                STATS.collapses.bump();
                any = true;
            }
        }
        if any {
            self.flush(pe, Window::Other);
        }
        Ok(())
    }

    /// Moves a guest page to a new frame with break-before-make: unmap +
    /// flush (the break and its TLBIs, chosen by the planner), copy, poison
    /// the old frame, map the new one.
    fn migrate(&mut self, pe: usize, page: usize) -> Result<(), Fatal> {
        if self.swapped[page] != NO_SLOT {
            return Ok(());
        }
        if self.cfg.blocks {
            self.ensure_page(pe, page, Window::Other)?;
        }
        let Some(tr) = self.table.translate(page_range(page).start) else {
            return Ok(());
        };
        let Some(new) = self.take_frame() else {
            return Ok(());
        };
        let old = tr.output.0;
        self.unmap(pe, page_range(page), Window::Other)
            .map_err(|e| Fatal("unmap for migration", e))?;
        self.flush(pe, Window::MigrateBreak);
        copy_page(old, new);
        poison(old, page);
        self.release_frame(pe, old);
        // The copy must be visible before a walker can reach the new frame
        // (the map's own barriers order the descriptor store after it).
        aarch64::barrier(Barrier::DsbIsh);
        self.map(
            pe,
            page_range(page),
            Pa(new),
            tr.attrs,
            false,
            Window::Other,
        )
        .map_err(|e| Fatal("map the new frame", e))?;
        self.flush(pe, Window::Other);
        STATS.migrations.bump();
        Ok(())
    }

    /// Swaps out up to `swap` pages not written since the last round:
    /// unmap them (one flush), keep their contents in the swap pool,
    /// poison and free their frames. Stops when the pool is full.
    fn swap_out_clean(&mut self, pe: usize) -> Result<(), Fatal> {
        let mut victims: Vec<(usize, u64)> = Vec::new();
        let mut scanned = 0;
        while victims.len() < self.cfg.swap as usize && scanned < RAM_PAGES {
            if self.free_slots.len() <= victims.len() {
                STATS.swap_full.bump();
                break;
            }
            let page = self.swap_cursor;
            self.swap_cursor = (self.swap_cursor + 1) % RAM_PAGES;
            scanned += 1;
            if self.dirty.is_dirty(page) || self.swapped[page] != NO_SLOT {
                continue;
            }
            match self.table.translate(page_range(page).start) {
                Some(t) if t.level == 3 => victims.push((page, t.output.0)),
                _ => {}
            }
        }
        if victims.is_empty() {
            return Ok(());
        }
        for &(page, _) in &victims {
            self.unmap(pe, page_range(page), Window::Other)
                .map_err(|e| Fatal("unmap for swap-out", e))?;
        }
        self.flush(pe, Window::Other);
        for (page, pa) in victims {
            let Some(slot) = self.free_slots.pop() else {
                break;
            };
            copy_page(pa, SWAP_BASE + u64::from(slot) * PAGE);
            poison(pa, page);
            self.release_frame(pe, pa);
            self.swapped[page] = slot;
            STATS.swap_outs.bump();
        }
        Ok(())
    }

    /// Maps a swapped-out page back, in a new frame, read-only (it was
    /// clean; a write faults and logs it dirty as usual).
    fn swap_in(&mut self, pe: usize, page: usize) -> Result<(), Fatal> {
        let slot = self.swapped[page];
        let Some(frame) = self.take_frame() else {
            return Err(Fatal("swap-in: no free frame", Error::OutOfMemory));
        };
        copy_page(SWAP_BASE + u64::from(slot) * PAGE, frame);
        aarch64::barrier(Barrier::DsbIsh);
        let attrs = if self.cfg.dirty {
            read_only()
        } else {
            Stage2Attrs::RAM
        };
        self.map(pe, page_range(page), Pa(frame), attrs, false, Window::Fault)
            .map_err(|e| Fatal("map a swapped-in page", e))?;
        self.flush(pe, Window::Fault);
        if self.cfg.verify {
            self.snap[page] = checksum(frame);
        }
        self.swapped[page] = NO_SLOT;
        self.free_slots.push(slot);
        STATS.swap_ins.bump();
        Ok(())
    }
}
