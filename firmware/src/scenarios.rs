//! The checks: each builds stage 2 tables with vmsa, runs the guest under
//! them, changes them between runs and compares what the guest sees with
//! what the tables say. Negative controls run a deliberately broken
//! invalidation and say whether the emulated CPU shows the stale entry.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use vmsa::plan::{Invalidator, Purpose, Space};
use vmsa::{
    Barrier, Capabilities, Change, ChangeFlags, Effects, Geometry, Grants, Granule, Ipa,
    MapOptions, Pa, Planner, Profile, S2ap, Stage2, Stage2Attrs, SysReg, Table, TlbiOp, Ttl, Vmid,
};

use crate::guest::{self, Abort, Outcome, EC_DABT_LOW};
use crate::pool::PoolAlloc;
use crate::smp;
use vmsa::arch::aarch64;
use vmsa_el2::mrs;

pub(crate) type S2 = Table<Stage2, PoolAlloc>;

pub(crate) const K4: u64 = 4096;
pub(crate) const M2: u64 = 2 << 20;

/// Guest-visible physical memory: 0x4800_0000.., one 16 MiB region per
/// scenario (RAM is 0x4000_0000..0x6000_0000 with -m 512M; the image and
/// its table pool sit below 0x4800_0000).
const DATA_BASE: u64 = 0x4800_0000;
const DATA_REGION: u64 = 16 << 20;
/// The guest's IPA window for data: 0x8000_0000.., 256 MiB per scenario.
const IPA_BASE: u64 = 0x8000_0000;
const IPA_REGION: u64 = 256 << 20;

/// The value the host leaves at the start of physical page `pa`: the guest
/// reading it names the page it reached.
pub(crate) const fn marker(pa: u64) -> u64 {
    0x5a5a_0000_0000_0000 | pa
}

/// Writes the marker of each page of `pa..pa + len` at its start.
pub(crate) fn fill(pa: u64, len: u64) {
    let mut p = pa;
    while p < pa + len {
        // SAFETY: DATA_BASE.. is RAM no Rust object uses; EL2's MMU is off.
        unsafe { core::ptr::write_volatile(p as *mut u64, marker(p)) };
        p += K4;
    }
}

pub(crate) fn peek(pa: u64) -> u64 {
    // SAFETY: as in `fill`.
    unsafe { core::ptr::read_volatile(pa as *const u64) }
}

pub(crate) fn ipa(r: Range<u64>) -> Range<Ipa> {
    Ipa(r.start)..Ipa(r.end)
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(alloc::format!($($arg)*));
        }
    };
}
pub(crate) use ensure;

pub(crate) fn ok<T>(r: Result<T, vmsa::Error>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e:?}"))
}

/// The guest reads `ipa` and must see `want`.
pub(crate) fn expect_value(o: Outcome, want: u64, what: &str) -> Result<(), String> {
    match o {
        Outcome::Value(v) if v == want => Ok(()),
        Outcome::Value(v) => Err(format!("{what}: guest read {v:#x}, expected {want:#x}")),
        o => Err(format!("{what}: expected value {want:#x}, got {o}")),
    }
}

/// The run must end in a stage 2 data abort at `at` satisfying `kind`.
fn expect_abort(
    o: Outcome,
    at: u64,
    kind: fn(&Abort) -> bool,
    kind_name: &str,
    what: &str,
) -> Result<Abort, String> {
    match o {
        Outcome::Fault(a) if a.ec == EC_DABT_LOW && a.ipa == at && kind(&a) && !a.s1ptw() => Ok(a),
        o => Err(format!(
            "{what}: expected a stage 2 {kind_name} data abort (EC 0x24) at IPA {at:#x}, got {o}"
        )),
    }
}

/// What the CPU reports in its ID registers.
pub struct Cpu {
    pub caps: Capabilities,
    pub midr: u64,
    pub pa_range: u64,
}

impl Cpu {
    pub fn detect() -> Cpu {
        let caps = vmsa_el2::cpu::capabilities();
        Cpu {
            caps,
            midr: mrs!("midr_el1"),
            pa_range: mrs!("id_aa64mmfr0_el1") & 0xf,
        }
    }
}

/// Totals and shared state.
pub struct Runner {
    pub hw: aarch64::Cpu,
    pub cpu: Cpu,
    pub passed: u32,
    pub failed: u32,
    pub caught: u32,
    pub not_caught: u32,
}

/// A negative control's verdict.
pub enum Control {
    /// The CPU showed the stale entry the broken invalidation left.
    Caught(String),
    /// The emulated CPU cannot show it.
    NotCaught(String),
}

impl Runner {
    pub fn new(cpu: Cpu) -> Runner {
        Runner {
            // SAFETY: the harness runs at EL2 (`rust_main` stops
            // otherwise) with HCR_EL2.E2H == 0 (never set); the planner
            // issues range TLBIs only when `cpu.caps.tlbi_range` (read from
            // ID_AA64ISAR0_EL1) says so; the tables activated through it
            // are guest stage 2 and stage 1 tables, which leave EL2's own
            // translation alone; no cache maintenance by address is issued.
            hw: unsafe { aarch64::Cpu::with_tlbi_log() },
            cpu,
            passed: 0,
            failed: 0,
            caught: 0,
            not_caught: 0,
        }
    }

    fn counts_since(&self, before: &aarch64::Counts) -> String {
        let mut s = String::new();
        for (op, n) in self.hw.counts().since(before).tlbis_issued() {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(&format!("{op} x{n}"));
        }
        if s.is_empty() {
            s.push_str("none");
        }
        s
    }

    /// Runs one check and prints PASS / FAIL with the TLBIs it issued.
    pub fn check(&mut self, name: &str, f: impl FnOnce(&mut Runner) -> Result<String, String>) {
        let before = *self.hw.counts();
        let live = PoolAlloc::live();
        let result = f(self);
        // Every scenario destroys its tables: the pool must be back where
        // it was.
        let result = result.and_then(|note| {
            if PoolAlloc::live() != live {
                Err(format!(
                    "table pages leaked: {} live before, {} after",
                    live,
                    PoolAlloc::live()
                ))
            } else {
                Ok(note)
            }
        });
        let tlbis = self.counts_since(&before);
        match result {
            Ok(note) => {
                self.passed += 1;
                println!("PASS {name}: {note} [TLBIs: {tlbis}]");
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {why} [TLBIs: {tlbis}]");
            }
        }
        // Whatever the scenario left, the next one starts from clean TLBs.
        self.hw.tlbi(TlbiOp::Alle1is, 0);
        self.hw.barrier(Barrier::DsbIsh);
        self.hw.barrier(Barrier::Isb);
        self.hw.take_tlbi_log();
    }

    /// Runs one negative control and prints CAUGHT / NOT-CAUGHT (or FAIL
    /// if the control could not even be set up).
    pub fn control(&mut self, name: &str, f: fn(&mut Runner) -> Result<Control, String>) {
        let live = PoolAlloc::live();
        let result = f(self);
        let result = result.and_then(|c| {
            if PoolAlloc::live() != live {
                Err(format!(
                    "table pages leaked: {} live before, {} after",
                    live,
                    PoolAlloc::live()
                ))
            } else {
                Ok(c)
            }
        });
        match result {
            Ok(Control::Caught(why)) => {
                self.caught += 1;
                println!("CAUGHT {name}: {why}");
            }
            Ok(Control::NotCaught(why)) => {
                self.not_caught += 1;
                println!("NOT-CAUGHT {name}: {why}");
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: control not run: {why}");
            }
        }
        self.hw.tlbi(TlbiOp::Alle1is, 0);
        self.hw.barrier(Barrier::DsbIsh);
        self.hw.barrier(Barrier::Isb);
        self.hw.take_tlbi_log();
    }

    /// A new VM: an empty stage 2 table for `vmid` (40-bit IPA space, 4 KiB
    /// granule) mapping the guest program at IPA == PA, read-only.
    pub(crate) fn vm(&mut self, vmid: u16) -> Result<S2, String> {
        let geometry = ok(Geometry::stage2(Granule::K4, 40), "geometry")?;
        let mut t = ok(
            Table::new(Stage2::new(Vmid(vmid)), geometry, PoolAlloc, &mut self.hw),
            "Table::new",
        )?;
        let (start, end) = crate::boot::guest_code();
        ok(
            t.map(
                ipa(start..end),
                Pa(start),
                Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly),
                MapOptions::PAGES,
                &mut self.hw,
            ),
            "map guest code",
        )?;
        Ok(t)
    }

    /// Makes `t` the current stage 2 (VTCR_EL2, VTTBR_EL2) and live.
    fn activate(&mut self, t: &mut S2) {
        t.activate(&mut self.hw);
    }

    /// Loads `t`'s VTTBR_EL2 (switching VMs) without anything else.
    pub(crate) fn load(&mut self, t: &S2) {
        let [(_, vtcr), (_, vttbr)] = t.registers();
        self.hw.write_sysreg(SysReg::VtcrEl2, vtcr);
        self.hw.write_sysreg(SysReg::VttbrEl2, vttbr);
        self.hw.barrier(Barrier::Isb);
    }

    /// Tears `t` down once no PE has it loaded.
    pub(crate) fn destroy(&mut self, t: S2) {
        t.destroy(&mut self.hw);
    }
}

pub(crate) fn data(scenario: u64) -> u64 {
    DATA_BASE + scenario * DATA_REGION
}

pub(crate) fn window(scenario: u64) -> u64 {
    IPA_BASE + scenario * IPA_REGION
}

/// (1) The guest reads, through a stage 2 mapping vmsa built, what the
/// host wrote at the physical page.
pub fn read_through_mapping(r: &mut Runner) -> Result<String, String> {
    let (pa, ip) = (data(1), window(1));
    fill(pa, 4 * K4);
    let mut t = r.vm(1)?;
    ok(
        t.map(
            ipa(ip..ip + 4 * K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map",
    )?;
    r.activate(&mut t);
    t.flush(&mut r.hw);
    for i in 0..4 {
        expect_value(guest::read(ip + i * K4), marker(pa + i * K4), "read")?;
    }
    // And a write lands at the PA.
    expect_value(guest::write(ip + 8, 0x1234_5678), 0, "write")?;
    ensure!(
        peek(pa + 8) == 0x1234_5678,
        "guest write not at PA {:#x}",
        pa + 8
    );
    // An IPA outside the mapping faults.
    expect_abort(
        guest::read(ip + 4 * K4),
        ip + 4 * K4,
        Abort::is_translation,
        "translation",
        "unmapped read",
    )?;
    r.destroy(t);
    Ok(format!(
        "IPA {ip:#x} -> PA {pa:#x}: 4 pages read, 1 write, unmapped page faults"
    ))
}

/// (2) Unmapping a page the guest has used, then flushing with the table's
/// default planner: the guest's next access takes a stage 2 translation
/// fault at that IPA.
pub fn unmap_then_fault(r: &mut Runner) -> Result<String, String> {
    let (pa, ip) = (data(2), window(2));
    fill(pa, 2 * K4);
    let mut t = r.vm(2)?;
    ok(
        t.map(
            ipa(ip..ip + 2 * K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map",
    )?;
    r.activate(&mut t);
    t.flush(&mut r.hw);
    expect_value(guest::read(ip), marker(pa), "read before unmap")?;
    expect_value(guest::read(ip + K4), marker(pa + K4), "read before unmap")?;
    r.hw.take_tlbi_log();
    let report = ok(t.unmap(ipa(ip..ip + K4), &mut r.hw), "unmap")?;
    t.flush(&mut r.hw);
    let log = r.hw.take_tlbi_log();
    ensure!(
        !log.is_empty(),
        "the flush issued no TLBI after unmapping a cached page"
    );
    let a = expect_abort(
        guest::read(ip),
        ip,
        Abort::is_translation,
        "translation",
        "read after unmap",
    )?;
    ensure!(
        a.ipa & !0xfff == ip,
        "HPFAR_EL2 << 8 = {:#x}, expected {ip:#x}",
        a.ipa & !0xfff
    );
    // The neighbour is untouched.
    expect_value(guest::read(ip + K4), marker(pa + K4), "neighbour")?;
    r.destroy(t);
    Ok(format!(
        "{} change(s); fault: {a}; flush: {}",
        report.changes.len(),
        describe(&log)
    ))
}

pub(crate) fn describe(log: &[aarch64::IssuedTlbi]) -> String {
    let mut s = String::new();
    for (i, e) in log.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        if i == 6 {
            s.push_str(&format!("... {} in all", log.len()));
            break;
        }
        s.push_str(&format!("tlbi {} {:#x}", e.op, e.operand));
    }
    s
}

/// (3) Remapping a page the guest has read to another physical page: the
/// guest reads the new contents.
pub fn remap(r: &mut Runner) -> Result<String, String> {
    let (pa, ip) = (data(3), window(3));
    fill(pa, 4 * K4);
    let mut t = r.vm(3)?;
    ok(
        t.map(
            ipa(ip..ip + K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map",
    )?;
    r.activate(&mut t);
    t.flush(&mut r.hw);
    expect_value(guest::read(ip), marker(pa), "read before remap")?;
    for n in 1..4 {
        let report = ok(
            t.map(
                ipa(ip..ip + K4),
                Pa(pa + n * K4),
                Stage2Attrs::RAM,
                MapOptions {
                    blocks: true,
                    replace: true,
                },
                &mut r.hw,
            ),
            "remap",
        )?;
        ensure!(
            report
                .changes
                .iter()
                .any(|c| c.flags.contains(ChangeFlags::OUTPUT_CHANGED)),
            "remap reported no output change"
        );
        t.flush(&mut r.hw);
        expect_value(guest::read(ip), marker(pa + n * K4), "read after remap")?;
    }
    r.destroy(t);
    Ok(format!(
        "IPA {ip:#x} remapped 3 times, guest saw each new page"
    ))
}

/// (4) Write-protecting a page the guest has written: its next write takes
/// a permission fault. Relaxing it again (which the planner need not
/// invalidate) and calling `spurious_fault` on a fault: the write succeeds.
pub fn protect_and_relax(r: &mut Runner) -> Result<String, String> {
    let (pa, ip) = (data(4), window(4));
    fill(pa, K4);
    let mut t = r.vm(4)?;
    ok(
        t.map(
            ipa(ip..ip + K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map",
    )?;
    r.activate(&mut t);
    t.flush(&mut r.hw);
    expect_value(guest::write(ip, 1), 0, "write while writable")?;
    ok(
        t.protect(
            ipa(ip..ip + K4),
            Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly),
            &mut r.hw,
        ),
        "protect",
    )?;
    t.flush(&mut r.hw);
    let a = expect_abort(
        guest::write(ip, 2),
        ip,
        Abort::is_permission,
        "permission",
        "write after protect",
    )?;
    ensure!(a.is_write(), "abort is not a write (WnR clear): {a}");
    ensure!(peek(pa) == 1, "the refused write reached memory");
    expect_value(guest::read(ip), 1, "read of the read-only page")?;
    // The fault is real: spurious_fault says so and emits nothing.
    r.hw.take_tlbi_log();
    ensure!(
        !t.spurious_fault(Ipa(ip), Grants::WRITE, &mut r.hw),
        "spurious_fault called a real permission fault spurious"
    );
    ensure!(
        r.hw.take_tlbi_log().is_empty(),
        "spurious_fault issued TLBIs for a real fault"
    );

    // Relax: read-write again.
    let report = ok(
        t.protect(ipa(ip..ip + K4), Stage2Attrs::RAM, &mut r.hw),
        "relax",
    )?;
    ensure!(
        report
            .changes
            .iter()
            .all(|c| c.flags.contains(ChangeFlags::RELAXED)
                && !c.flags.contains(ChangeFlags::RESTRICTED)),
        "relaxation reported as a restriction"
    );
    t.flush(&mut r.hw);
    let relax_tlbis = r.hw.take_tlbi_log().len();
    let mut spurious = 0;
    let mut o = guest::write(ip, 3);
    while let Outcome::Fault(a) = o {
        ensure!(spurious < 2, "write still faults after spurious_fault: {a}");
        ensure!(
            a.is_permission() && a.ipa == ip,
            "unexpected fault after relaxing: {a}"
        );
        ensure!(
            t.spurious_fault(Ipa(ip), Grants::WRITE, &mut r.hw),
            "spurious_fault says the fault is real but the tables allow the write"
        );
        spurious += 1;
        o = guest::write(ip, 3);
    }
    expect_value(o, 0, "write after relaxing")?;
    ensure!(peek(pa) == 3, "write after relaxing not in memory");
    // spurious_fault on the now-allowed access: it says "retry" and
    // invalidates locally (what a vCPU's fault path would do).
    ensure!(
        t.spurious_fault(Ipa(ip), Grants::WRITE, &mut r.hw),
        "spurious_fault refused an allowed write"
    );
    let local = r.hw.take_tlbi_log();
    ensure!(
        local.iter().all(|e| !e.op.is_broadcast()),
        "spurious_fault broadcast: {}",
        describe(&local)
    );
    expect_value(guest::write(ip, 4), 0, "write after spurious_fault")?;
    r.destroy(t);
    Ok(format!(
        "write fault: {a}; relax flush issued {relax_tlbis} TLBI(s); write after relax faulted {spurious} time(s); spurious_fault: {}",
        describe(&local)
    ))
}

/// (5) Splitting a live 2 MiB block, remapping one page inside it, putting
/// it back and collapsing the table into the block again: the guest sees
/// each state.
pub fn split_and_collapse(r: &mut Runner) -> Result<String, String> {
    let (pa, ip) = (data(5), window(5));
    let other = pa + 4 * M2;
    fill(pa, M2);
    fill(other, K4);
    let page = 5 * K4;
    let mut t = r.vm(5)?;
    ok(
        t.map(
            ipa(ip..ip + M2),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map",
    )?;
    ensure!(
        t.translate(Ipa(ip)).map(|x| x.level) == Some(2),
        "2 MiB not mapped by a block"
    );
    r.activate(&mut t);
    t.flush(&mut r.hw);
    let sum = |base: u64| {
        (0..512u64)
            .map(|i| marker(base + i * K4))
            .fold(0u64, |a, b| a.wrapping_add(b))
    };
    expect_value(
        guest::read_many(ip, 512, K4),
        sum(pa),
        "every page of the block",
    )?;

    ok(t.split_block(Ipa(ip + page), &mut r.hw), "split_block")?;
    t.flush(&mut r.hw);
    ensure!(
        t.translate(Ipa(ip + page)).map(|x| x.level) == Some(3),
        "not split"
    );
    expect_value(
        guest::read_many(ip, 512, K4),
        sum(pa),
        "every page after the split",
    )?;

    ok(
        t.map(
            ipa(ip + page..ip + page + K4),
            Pa(other),
            Stage2Attrs::RAM,
            MapOptions {
                blocks: true,
                replace: true,
            },
            &mut r.hw,
        ),
        "remap one page",
    )?;
    t.flush(&mut r.hw);
    expect_value(guest::read(ip + page), marker(other), "the remapped page")?;
    expect_value(
        guest::read(ip + page + K4),
        marker(pa + page + K4),
        "its neighbour",
    )?;
    let c = t.collapse(ipa(ip..ip + M2), &mut r.hw);
    ok(c, "collapse (not collapsible)")?;
    ensure!(
        t.translate(Ipa(ip)).map(|x| x.level) == Some(3),
        "collapsed a table that maps a foreign page"
    );

    ok(
        t.map(
            ipa(ip + page..ip + page + K4),
            Pa(pa + page),
            Stage2Attrs::RAM,
            MapOptions {
                blocks: true,
                replace: true,
            },
            &mut r.hw,
        ),
        "map the page back",
    )?;
    t.flush(&mut r.hw);
    expect_value(
        guest::read(ip + page),
        marker(pa + page),
        "the page mapped back",
    )?;
    let before = t.table_pages().len();
    let report = ok(t.collapse(ipa(ip..ip + M2), &mut r.hw), "collapse")?;
    t.flush(&mut r.hw);
    ensure!(
        t.translate(Ipa(ip + page)).map(|x| x.level) == Some(2),
        "not collapsed into a block"
    );
    let after = t.table_pages().len();
    ensure!(
        after + 1 == before,
        "table pages {before} -> {after}, expected one fewer"
    );
    expect_value(
        guest::read_many(ip, 512, K4),
        sum(pa),
        "every page after the collapse",
    )?;
    r.destroy(t);
    Ok(format!(
        "block -> table -> one page remapped -> back -> block ({} change(s) in the collapse)",
        report.changes.len()
    ))
}

/// (6) Two VMs with different VMIDs map the same IPA to different pages;
/// switching VTTBR_EL2 between guest runs, each sees its own.
pub fn two_vms(r: &mut Runner) -> Result<String, String> {
    let (pa, ip) = (data(6), window(6));
    fill(pa, 2 * K4);
    let mut a = r.vm(61)?;
    let mut b = r.vm(62)?;
    ok(
        a.map(
            ipa(ip..ip + K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map a",
    )?;
    ok(
        b.map(
            ipa(ip..ip + K4),
            Pa(pa + K4),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map b",
    )?;
    r.activate(&mut b);
    b.flush(&mut r.hw);
    r.activate(&mut a);
    a.flush(&mut r.hw);
    for round in 0..3 {
        r.load(&a);
        expect_value(guest::read(ip), marker(pa), &format!("VM a, round {round}"))?;
        r.load(&b);
        expect_value(
            guest::read(ip),
            marker(pa + K4),
            &format!("VM b, round {round}"),
        )?;
    }
    ensure!(
        guest::vttbr() >> 48 == 62,
        "VTTBR_EL2 VMID {:#x}",
        guest::vttbr() >> 48
    );
    r.destroy(a);
    r.destroy(b);
    Ok("VMIDs 61 and 62, same IPA, 3 rounds of switching".into())
}

/// (7) Invalidating for a VM that is not loaded: the table switches
/// VTTBR_EL2 to its own VMID around its TLBIs and back.
pub fn invalidate_other_vmid(r: &mut Runner) -> Result<String, String> {
    let (pa, ip) = (data(7), window(7));
    fill(pa, 3 * K4);
    let mut a = r.vm(71)?;
    let mut b = r.vm(72)?;
    ok(
        a.map(
            ipa(ip..ip + K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map a",
    )?;
    ok(
        b.map(
            ipa(ip..ip + K4),
            Pa(pa + K4),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map b",
    )?;
    r.activate(&mut a);
    a.flush(&mut r.hw);
    expect_value(guest::read(ip), marker(pa), "VM a")?;
    r.activate(&mut b);
    b.flush(&mut r.hw);
    expect_value(guest::read(ip), marker(pa + K4), "VM b")?;
    let vttbr_a = a.registers()[1].1;
    let vttbr_b = b.registers()[1].1;

    // b is loaded; change a.
    a.set_loaded_vttbr(Some(vttbr_b));
    r.hw.take_tlbi_log();
    ok(
        a.map(
            ipa(ip..ip + K4),
            Pa(pa + 2 * K4),
            Stage2Attrs::RAM,
            MapOptions {
                blocks: true,
                replace: true,
            },
            &mut r.hw,
        ),
        "remap in a",
    )?;
    a.flush(&mut r.hw);
    let log = r.hw.take_tlbi_log();
    ensure!(!log.is_empty(), "no TLBI for a's remap");
    for e in &log {
        ensure!(
            e.vttbr == vttbr_a,
            "tlbi {} issued with VTTBR_EL2 {:#x} loaded, not a's {vttbr_a:#x}",
            e.op,
            e.vttbr
        );
    }
    ensure!(
        guest::vttbr() == vttbr_b,
        "VTTBR_EL2 not switched back: {:#x}",
        guest::vttbr()
    );
    expect_value(guest::read(ip), marker(pa + K4), "VM b after a's change")?;
    a.set_loaded_vttbr(None);
    r.load(&a);
    expect_value(
        guest::read(ip),
        marker(pa + 2 * K4),
        "VM a after its change",
    )?;
    r.destroy(a);
    r.destroy(b);
    Ok(format!(
        "{} TLBI(s), all with VMID 71 loaded: {}",
        log.len(),
        describe(&log)
    ))
}

/// (8) Unmapping 8 MiB of pages (2048 entries) with the planner given the
/// CPU's capabilities (range TLBIs, level hints): few TLBIs, and the guest's
/// reads fault everywhere in the range.
pub fn big_unmap(r: &mut Runner) -> Result<String, String> {
    let (pa, ip) = (data(8), window(8));
    let len = 8 << 20;
    fill(pa, len);
    let mut t = r.vm(8)?;
    let caps = Capabilities {
        tlbi_range: r.cpu.caps.tlbi_range,
        ttl: r.cpu.caps.ttl,
        ..Default::default()
    };
    t.set_invalidator(Box::new(Planner::new(caps, Profile::NATIVE)));
    ok(
        t.map(
            ipa(ip..ip + len),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::PAGES,
            &mut r.hw,
        ),
        "map",
    )?;
    r.activate(&mut t);
    t.flush(&mut r.hw);
    let pages = len / K4;
    let sum = (0..pages)
        .map(|i| marker(pa + i * K4))
        .fold(0u64, |a, b| a.wrapping_add(b));
    expect_value(guest::read_many(ip, pages, K4), sum, "all 2048 pages")?;
    r.hw.take_tlbi_log();
    // Leave one page in each 2 MiB so that the leaf tables stay (a range
    // of live leaves to invalidate), then the rest.
    let mut changes = 0;
    for chunk in 0..(len / M2) {
        let s = ip + chunk * M2;
        let report = ok(t.unmap(ipa(s..s + M2 - K4), &mut r.hw), "unmap")?;
        changes += report.changes.len();
    }
    t.flush(&mut r.hw);
    let log = r.hw.take_tlbi_log();
    let ranged = log
        .iter()
        .filter(|e| matches!(e.op, TlbiOp::Ripas2e1is | TlbiOp::Ripas2le1is))
        .count();
    ensure!(
        !log.is_empty(),
        "no TLBI after unmapping 8 MiB the guest had read"
    );
    ensure!(log.len() < 64, "{} TLBIs for 4 ranges", log.len());
    if caps.tlbi_range {
        ensure!(
            ranged > 0,
            "FEAT_TLBIRANGE present but no range TLBI: {}",
            describe(&log)
        );
    }
    for i in [0u64, 1, 510, 512, 1000, 1534, 2046] {
        let at = ip + i * K4;
        expect_abort(
            guest::read(at),
            at,
            Abort::is_translation,
            "translation",
            "read after unmap",
        )?;
    }
    for chunk in 0..(len / M2) {
        let at = ip + chunk * M2 + M2 - K4;
        expect_value(
            guest::read(at),
            marker(pa + chunk * M2 + M2 - K4),
            "kept page",
        )?;
    }
    r.hw.take_tlbi_log();
    // Then everything: the leaf tables go too.
    ok(t.unmap(ipa(ip..ip + len), &mut r.hw), "unmap all")?;
    t.flush(&mut r.hw);
    let log2 = r.hw.take_tlbi_log();
    for chunk in 0..(len / M2) {
        let at = ip + chunk * M2 + M2 - K4;
        expect_abort(
            guest::read(at),
            at,
            Abort::is_translation,
            "translation",
            "read after unmapping all",
        )?;
    }
    r.destroy(t);
    Ok(format!(
        "range {} ttl {}: {changes} change(s), {} TLBI(s) ({ranged} range): {}; then the last pages: {}",
        caps.tlbi_range,
        caps.ttl,
        log.len(),
        describe(&log),
        describe(&log2)
    ))
}

/// An invalidator that emits nothing at all.
pub(crate) struct NoTlbi;

impl Invalidator for NoTlbi {
    fn name(&self) -> &'static str {
        "none"
    }
    fn invalidate(
        &self,
        _space: &Space,
        _purpose: Purpose,
        _changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        _fx: &mut dyn Effects,
    ) -> bool {
        false
    }
}

/// Stage 2 by-IPA invalidation without the `VMALLE1IS` the architecture
/// requires after it (combined stage 1+2 entries survive IPAS2E1IS).
struct Ipas2Only;

impl Invalidator for Ipas2Only {
    fn name(&self) -> &'static str {
        "ipas2-only"
    }
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        let wanted: Vec<&Change> = changes
            .iter()
            .filter(|c| purpose == Purpose::BreakBeforeMake || c.may_leave_stale())
            .collect();
        if wanted.is_empty() {
            return false;
        }
        fx.barrier(Barrier::DsbIshst);
        for c in wanted {
            let step = space.entry_size[c.level as usize & 3];
            let mut a = c.range.start;
            while a < c.range.end {
                let (op, operand) = space.by_addr(a, false, Ttl::NONE);
                fx.tlbi(op, operand);
                a += step;
            }
        }
        fx.barrier(Barrier::DsbIsh);
        true
    }
}

/// The shared body of the remap controls: map, read (caching), remap with
/// the given invalidator, read again.
fn remap_control(
    r: &mut Runner,
    scenario: u64,
    inv: Box<dyn Invalidator>,
) -> Result<(u64, u64, u64, String), String> {
    let (pa, ip) = (data(scenario), window(scenario));
    fill(pa, 2 * K4);
    let mut t = r.vm(scenario as u16)?;
    ok(
        t.map(
            ipa(ip..ip + K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map",
    )?;
    r.activate(&mut t);
    t.flush(&mut r.hw);
    expect_value(guest::read(ip), marker(pa), "read before remap")?;
    t.set_invalidator(inv);
    r.hw.take_tlbi_log();
    ok(
        t.map(
            ipa(ip..ip + K4),
            Pa(pa + K4),
            Stage2Attrs::RAM,
            MapOptions {
                blocks: true,
                replace: true,
            },
            &mut r.hw,
        ),
        "remap",
    )?;
    t.flush(&mut r.hw);
    let log = describe(&r.hw.take_tlbi_log());
    let seen = match guest::read(ip) {
        Outcome::Value(v) => v,
        o => return Err(format!("read after remap: {o}")),
    };
    // Clean up with a full invalidation of the VMID before the pages go.
    r.hw.tlbi(TlbiOp::Vmalls12e1is, 0);
    r.hw.barrier(Barrier::DsbIsh);
    t.set_invalidator(Box::new(Planner::default()));
    r.destroy(t);
    Ok((seen, marker(pa), marker(pa + K4), log))
}

/// (9) Control: remapping with no TLBI at all. A CPU that caches the
/// translation lets the guest read the old page.
pub fn control_no_tlbi(r: &mut Runner) -> Result<Control, String> {
    let (seen, old, new, _) = remap_control(r, 9, Box::new(NoTlbi))?;
    Ok(if seen == old {
        Control::Caught(format!(
            "guest read the old page ({seen:#x}) after a remap with no TLBI"
        ))
    } else if seen == new {
        Control::NotCaught(
            "guest read the new page: the CPU did not keep the stale translation".into(),
        )
    } else {
        Control::NotCaught(format!("guest read {seen:#x}, neither page"))
    })
}

/// (10) Control: stage 2 IPAS2E1IS without the VMALLE1IS after it. The
/// combined (stage 1+2) entry survives and the guest reads the old page.
pub fn control_ipas2_without_vmalle1(r: &mut Runner) -> Result<Control, String> {
    let (seen, old, new, log) = remap_control(r, 10, Box::new(Ipas2Only))?;
    Ok(if seen == old {
        Control::Caught(format!("guest read the old page ({seen:#x}) after {log}"))
    } else if seen == new {
        Control::NotCaught(format!(
            "guest read the new page after {log}: the CPU dropped the combined entry"
        ))
    } else {
        Control::NotCaught(format!("guest read {seen:#x}, neither page"))
    })
}

/// (11) Two PEs: PE 1 runs the guest under a VM's stage 2 while PE 0 (with
/// the same VMID loaded) remaps and unmaps with the default planner, whose
/// broadcast TLBIs must reach PE 1's TLB — also while PE 1's guest is
/// running, spinning on the page.
pub fn two_pe(r: &mut Runner) -> Result<String, String> {
    ensure!(smp::online(), "PE 1 is not online (PSCI CPU_ON failed)");
    let (pa, ip) = (data(11), window(11));
    fill(pa, 4 * K4);
    let mut t = r.vm(11)?;
    ok(
        t.map(
            ipa(ip..ip + K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map",
    )?;
    r.activate(&mut t);
    t.flush(&mut r.hw);
    let [(_, vtcr), (_, vttbr)] = t.registers();
    let on_pe1 = |x: [u64; 4]| smp::submit(vtcr, vttbr, x).wait();
    let replace = MapOptions {
        blocks: true,
        replace: true,
    };

    expect_value(on_pe1([ip, 0, 0, 0]), marker(pa), "PE 1 read")?;
    ok(
        t.map(
            ipa(ip..ip + K4),
            Pa(pa + K4),
            Stage2Attrs::RAM,
            replace,
            &mut r.hw,
        ),
        "remap",
    )?;
    t.flush(&mut r.hw);
    expect_value(
        on_pe1([ip, 0, 0, 0]),
        marker(pa + K4),
        "PE 1 read after PE 0's remap",
    )?;

    // PE 1's guest spins on the page while PE 0 remaps it.
    let p = smp::submit(vtcr, vttbr, guest::spin_args(ip, marker(pa + K4), SPIN_MAX));
    p.wait_started();
    delay(100_000);
    ok(
        t.map(
            ipa(ip..ip + K4),
            Pa(pa + 2 * K4),
            Stage2Attrs::RAM,
            replace,
            &mut r.hw,
        ),
        "remap while running",
    )?;
    t.flush(&mut r.hw);
    let live_remap = match p.wait() {
        Outcome::Value(v) if v == marker(pa + 2 * K4) => "saw the new page",
        Outcome::Value(v) if v == marker(pa + K4) => {
            return Err(format!(
                "PE 1's guest still read the old page after {SPIN_MAX} loads"
            ))
        }
        Outcome::Fault(a) if a.is_translation() && a.ipa == ip => {
            // It met the break of break-before-make: a real hypervisor
            // would let it retry.
            expect_value(
                on_pe1([ip, 0, 0, 0]),
                marker(pa + 2 * K4),
                "retry after the break",
            )?;
            "faulted in the break-before-make window, then saw the new page"
        }
        o => return Err(format!("PE 1's spinning guest: {o}")),
    };

    // And while it spins, PE 0 unmaps: the guest must fault.
    let p = smp::submit(
        vtcr,
        vttbr,
        guest::spin_args(ip, marker(pa + 2 * K4), SPIN_MAX),
    );
    p.wait_started();
    delay(100_000);
    ok(t.unmap(ipa(ip..ip + K4), &mut r.hw), "unmap while running")?;
    t.flush(&mut r.hw);
    match p.wait() {
        Outcome::Fault(a) if a.is_translation() && a.ipa == ip => {}
        Outcome::Value(v) => {
            return Err(format!(
                "PE 1's guest kept reading ({v:#x}) after the unmap"
            ))
        }
        o => return Err(format!("PE 1's spinning guest after the unmap: {o}")),
    }

    // The by-IPA broadcast sequence (IPAS2E1IS / IPAS2LE1IS, DSB ISH,
    // VMALLE1IS), which the planner does not pick for so small a VM: with
    // vmsa's Basic invalidator.
    t.set_invalidator(Box::new(vmsa::Basic::default()));
    ok(
        t.map(
            ipa(ip..ip + K4),
            Pa(pa + 3 * K4),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map again",
    )?;
    t.flush(&mut r.hw);
    expect_value(
        on_pe1([ip, 0, 0, 0]),
        marker(pa + 3 * K4),
        "PE 1 read, Basic",
    )?;
    r.hw.take_tlbi_log();
    ok(
        t.map(
            ipa(ip..ip + K4),
            Pa(pa),
            Stage2Attrs::RAM,
            replace,
            &mut r.hw,
        ),
        "remap, Basic",
    )?;
    t.flush(&mut r.hw);
    let basic = describe(&r.hw.take_tlbi_log());
    expect_value(
        on_pe1([ip, 0, 0, 0]),
        marker(pa),
        "PE 1 read after the Basic remap",
    )?;
    r.destroy(t);
    Ok(format!(
        "guest on PE 1: remap seen; while spinning: remap {live_remap}, unmap faulted; by-IPA broadcast ({basic}) seen"
    ))
}

/// Loads the guest's spin may do before giving up.
const SPIN_MAX: u64 = 50_000_000;

fn delay(n: u64) {
    for _ in 0..n {
        core::hint::spin_loop();
    }
}

/// Every change invalidated with non-shareable operations only (this PE's
/// TLB): wrong while the VM runs on another PE. `whole`: one local
/// `TLBI VMALLS12E1`; otherwise the by-IPA sequence `TLBI IPAS2E1` per
/// entry, then `TLBI VMALLE1` (what `Table::spurious_fault` issues).
struct LocalOnly {
    whole: bool,
}

impl Invalidator for LocalOnly {
    fn name(&self) -> &'static str {
        "local-only"
    }
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        _mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        if !changes
            .iter()
            .any(|c| purpose == Purpose::BreakBeforeMake || c.may_leave_stale())
        {
            return false;
        }
        fx.barrier(Barrier::DsbIshst);
        if self.whole {
            fx.tlbi(TlbiOp::Vmalls12e1, 0);
        } else {
            for c in changes {
                let step = space.entry_size[c.level as usize & 3];
                let mut a = c.range.start;
                while a < c.range.end {
                    let (op, operand) = space.by_addr(a, false, Ttl::NONE);
                    fx.tlbi(vmsa::plan::local_form(op), operand);
                    a += step;
                }
            }
            fx.barrier(Barrier::DsbNsh);
            fx.tlbi(TlbiOp::Vmalle1, 0);
        }
        fx.barrier(Barrier::DsbNsh);
        true
    }
}

/// The shared body of the two-PE local-only controls.
fn two_pe_local(r: &mut Runner, scenario: u64, whole: bool) -> Result<Control, String> {
    ensure!(smp::online(), "PE 1 is not online (PSCI CPU_ON failed)");
    let (pa, ip) = (data(scenario), window(scenario));
    fill(pa, 2 * K4);
    let mut t = r.vm(scenario as u16)?;
    ok(
        t.map(
            ipa(ip..ip + K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map",
    )?;
    r.activate(&mut t);
    t.flush(&mut r.hw);
    let [(_, vtcr), (_, vttbr)] = t.registers();
    // Both PEs cache the translation.
    expect_value(guest::read(ip), marker(pa), "PE 0 read")?;
    expect_value(
        smp::submit(vtcr, vttbr, [ip, 0, 0, 0]).wait(),
        marker(pa),
        "PE 1 read",
    )?;
    t.set_invalidator(Box::new(LocalOnly { whole }));
    r.hw.take_tlbi_log();
    ok(
        t.map(
            ipa(ip..ip + K4),
            Pa(pa + K4),
            Stage2Attrs::RAM,
            MapOptions {
                blocks: true,
                replace: true,
            },
            &mut r.hw,
        ),
        "remap",
    )?;
    t.flush(&mut r.hw);
    let log = describe(&r.hw.take_tlbi_log());
    // The local invalidation did its job on PE 0.
    expect_value(
        guest::read(ip),
        marker(pa + K4),
        "PE 0 read after the remap",
    )?;
    let seen = match smp::submit(vtcr, vttbr, [ip, 0, 0, 0]).wait() {
        Outcome::Value(v) => v,
        o => return Err(format!("PE 1 read after the remap: {o}")),
    };
    r.hw.tlbi(TlbiOp::Vmalls12e1is, 0);
    r.hw.barrier(Barrier::DsbIsh);
    t.set_invalidator(Box::new(Planner::default()));
    r.destroy(t);
    Ok(if seen == marker(pa) {
        Control::Caught(format!(
            "PE 1 read the old page after PE 0's {log} (PE 0 read the new one)"
        ))
    } else if seen == marker(pa + K4) {
        Control::NotCaught(format!(
            "PE 1 read the new page after PE 0's {log}: the emulator applied the local TLBI to every PE"
        ))
    } else {
        Control::NotCaught(format!("PE 1 read {seen:#x}, neither page"))
    })
}

/// (12) Control: PE 0 remaps with local by-IPA invalidation only (IPAS2E1,
/// VMALLE1, DSB NSH) while the VM also runs on PE 1: PE 1 keeps the old
/// translation.
pub fn control_two_pe_local_only(r: &mut Runner) -> Result<Control, String> {
    two_pe_local(r, 12, false)
}

/// (12b) The same with one local `TLBI VMALLS12E1`.
pub fn control_two_pe_local_vmalls12e1(r: &mut Runner) -> Result<Control, String> {
    two_pe_local(r, 14, true)
}

/// (13) Control: changing a VM that is not loaded without telling the
/// table (`set_loaded_vttbr`): its TLBIs act on the loaded VMID, and the
/// changed VM's own entries survive.
pub fn control_wrong_vmid(r: &mut Runner) -> Result<Control, String> {
    let (pa, ip) = (data(13), window(13));
    fill(pa, 3 * K4);
    let mut a = r.vm(131)?;
    let mut b = r.vm(132)?;
    ok(
        a.map(
            ipa(ip..ip + K4),
            Pa(pa),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map a",
    )?;
    ok(
        b.map(
            ipa(ip..ip + K4),
            Pa(pa + K4),
            Stage2Attrs::RAM,
            MapOptions::default(),
            &mut r.hw,
        ),
        "map b",
    )?;
    r.activate(&mut a);
    a.flush(&mut r.hw);
    expect_value(guest::read(ip), marker(pa), "VM a")?;
    r.activate(&mut b);
    b.flush(&mut r.hw);
    expect_value(guest::read(ip), marker(pa + K4), "VM b")?;
    let vttbr_b = b.registers()[1].1;
    r.hw.take_tlbi_log();
    ok(
        a.map(
            ipa(ip..ip + K4),
            Pa(pa + 2 * K4),
            Stage2Attrs::RAM,
            MapOptions {
                blocks: true,
                replace: true,
            },
            &mut r.hw,
        ),
        "remap in a",
    )?;
    a.flush(&mut r.hw);
    let log = r.hw.take_tlbi_log();
    ensure!(
        !log.is_empty() && log.iter().all(|e| e.vttbr == vttbr_b),
        "the control's TLBIs did not all run with b's VTTBR_EL2: {}",
        describe(&log)
    );
    r.load(&a);
    let seen = match guest::read(ip) {
        Outcome::Value(v) => v,
        o => return Err(format!("VM a read: {o}")),
    };
    r.hw.tlbi(TlbiOp::Vmalls12e1is, 0);
    r.hw.barrier(Barrier::DsbIsh);
    r.destroy(a);
    r.destroy(b);
    Ok(if seen == marker(pa) {
        Control::Caught("VM a read its old page: the TLBIs went to VMID 132".into())
    } else {
        Control::NotCaught(
            "VM a read its new page: QEMU flushes its TLB whenever VTTBR_EL2 changes (entries are not kept per VMID)".into(),
        )
    })
}
