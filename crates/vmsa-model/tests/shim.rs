//! Host-managed guest stage 1 (elfuse's design): the host (PE 0) edits a
//! guest's EL1&0 stage 1 without any TLB maintenance of its own, records
//! what it changed in the calling vCPU's request slot, and the guest's EL1
//! shim runs the maintenance on the vCPU's PE when the call returns
//! (`vmsa::request::shim_execute`). The model judges the result at the
//! point the call returns to guest code.

use vmsa::effects::Barrier;
use vmsa::plan::{Purpose, Space};
use vmsa::request::{shim_execute, Regs, RequestSlot, X8_BROADCAST, X8_RANGE, X8_SELECTIVE};
use vmsa::{
    Arena, Asid, Capabilities, Change, ChangeReport, Effect, Effects, El1Stage1, Geometry, Granule,
    Invalidator, Ipa, MapOptions, Pa, Planner, Recorder, Stage1Attrs, Table, TlbiOp, Va,
};
use vmsa_model::desc::grant;
use vmsa_model::{Access, Config, Event, Key, Machine, ModelEffects, Origin, Reg, ViolationKind};

const K: u64 = 4096;
const ASID: u16 = 3;
const VMID: u16 = 1;
/// Data pages: 32 pages at this VA (one level 3 table).
const DATA: u64 = 0x40_0000;
/// Code pages: 4 executable pages in another level 3 table.
const CODE: u64 = 0x60_0000;
const DATA_PA: u64 = 0x1000_0000;
const CODE_PA: u64 = 0x2000_0000;
const KEY: Key = Key::Asid {
    vmid: VMID,
    asid: ASID,
};

/// The host's table policy: no maintenance for what operations leave
/// outstanding (the shim does it), but break-before-make inside an
/// operation is still vmsa's.
struct NoFlush;

impl Invalidator for NoFlush {
    fn name(&self) -> &'static str {
        "no flush (guest shim)"
    }

    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        match purpose {
            Purpose::BreakBeforeMake => {
                Planner::default().invalidate(space, purpose, changes, mapped, fx)
            }
            Purpose::Flush => false,
        }
    }
}

/// PE 0 is the host; PEs in `vcpus` run the guest's stage 1 (and so does
/// PE 0, which makes its TLB a holder too).
fn setup(vcpus: &[usize]) -> (Machine, Table<El1Stage1, Arena>) {
    let mut m = Machine::new(Config::default());
    for pe in 0..4 {
        m.step(
            pe,
            &Event::SysReg {
                reg: Reg::VttbrEl2,
                value: u64::from(VMID) << 48,
            },
            Origin::default(),
        );
    }
    let mut fx = ModelEffects::new(&mut m, 0);
    let mut t = Table::new(
        El1Stage1::new(Asid(ASID)),
        Geometry::stage1(Granule::K4, 48).unwrap(),
        Arena::new(Pa(0x8000_0000), 64),
        &mut fx,
    )
    .unwrap();
    t.set_invalidator(Box::new(NoFlush));
    t.map(
        Va(DATA)..Va(DATA + 32 * K),
        Ipa(DATA_PA),
        Stage1Attrs::normal_rw(0),
        MapOptions::PAGES,
        &mut fx,
    )
    .unwrap();
    let code = Stage1Attrs {
        pxn: false,
        ..Stage1Attrs::normal_rw(0).read_only()
    };
    t.map(
        Va(CODE)..Va(CODE + 4 * K),
        Ipa(CODE_PA),
        code,
        MapOptions::PAGES,
        &mut fx,
    )
    .unwrap();
    t.activate(&mut fx);
    t.flush(&mut fx);
    for &pe in vcpus {
        let mut fx = ModelEffects::new(&mut m, pe);
        for (reg, value) in t.registers() {
            fx.write_sysreg(reg, value);
        }
        fx.barrier(Barrier::Isb);
    }
    (m, t)
}

/// The host serves a call: `op` edits the live table on PE 0 and the
/// changes go into `slot`; then the host's exit path makes the stores
/// visible (`DSB ISH`) before the vCPU runs again. No TLBI.
fn host_call(
    m: &mut Machine,
    t: &mut Table<El1Stage1, Arena>,
    slot: &mut RequestSlot,
    exec: bool,
    op: impl FnOnce(&mut Table<El1Stage1, Arena>, &mut ModelEffects) -> ChangeReport,
) {
    let mut fx = ModelEffects::new(m, 0);
    let report = op(t, &mut fx);
    slot.add_changes(&report.changes, exec);
    fx.barrier(Barrier::DsbIsh);
}

/// The vCPU on `pe` returns from its call: the host encodes its slot and
/// the shim runs on `pe`.
fn vcpu_return(m: &mut Machine, pe: usize, slot: &mut RequestSlot, caps: &Capabilities) -> Regs {
    let regs = slot.take(caps, ASID);
    shim_execute(&regs, caps, ASID, &mut ModelEffects::new(m, pe)).unwrap();
    regs
}

/// Back in the host after the shim ran: the table's outstanding changes
/// are done (nothing emitted) and detached table pages are released.
fn host_retire(m: &mut Machine, t: &mut Table<El1Stage1, Arena>) {
    t.flush(&mut ModelEffects::new(m, 0));
}

fn complete(m: &mut Machine, pe: usize) {
    m.step(pe, &Event::Complete, Origin::default());
}

fn unmap(
    from: u64,
    to: u64,
) -> impl FnOnce(&mut Table<El1Stage1, Arena>, &mut ModelEffects) -> ChangeReport {
    move |t, fx| t.unmap(Va(from)..Va(to), fx).unwrap()
}

#[test]
fn shim_selective_flush_of_a_host_unmap_is_clean() {
    let (mut m, mut t) = setup(&[1]);
    let mut slot = RequestSlot::new();
    host_call(
        &mut m,
        &mut t,
        &mut slot,
        false,
        unmap(DATA + 2 * K, DATA + 4 * K),
    );
    let regs = vcpu_return(&mut m, 1, &mut slot, &Capabilities::default());
    assert_eq!(
        regs,
        Regs {
            x8: X8_SELECTIVE,
            x9: DATA + 2 * K,
            x10: 2,
            x11: 0
        }
    );
    host_retire(&mut m, &mut t);
    // munmap: the data pages go back to the host once the call returned.
    m.step(
        0,
        &Event::ReleaseData {
            pa: DATA_PA + 2 * K,
            size: 2 * K,
        },
        Origin::default(),
    );
    complete(&mut m, 1);
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    assert_eq!(m.stale_runs(), 0);
    for pe in [0, 1] {
        assert_eq!(m.access(pe, KEY, DATA + 2 * K, grant::READ), Access::Fault);
    }
    assert_eq!(m.costs().tlbi.get(&TlbiOp::Vae1is), Some(&2));
}

#[test]
fn shim_range_flush_of_a_host_protect_is_clean() {
    let (mut m, mut t) = setup(&[1]);
    let mut slot = RequestSlot::new();
    host_call(&mut m, &mut t, &mut slot, false, |t, fx| {
        t.protect(
            Va(DATA + 8 * K)..Va(DATA + 13 * K),
            Stage1Attrs::normal_rw(0).read_only(),
            fx,
        )
        .unwrap()
    });
    let regs = vcpu_return(&mut m, 1, &mut slot, &Capabilities::armv8_4());
    // 5 pages from VA 0x40_8000: 3 units of 2 pages (NUM 2, SCALE 0),
    // BaseADDR 0x408, ASID 3:
    //   3 << 48 | 1 << 46 | 2 << 39 | 0x408 = 0x0003_4100_0000_0408
    assert_eq!(
        (regs.x8, regs.x9, regs.x11),
        (X8_RANGE, 0x0003_4100_0000_0408, 0)
    );
    host_retire(&mut m, &mut t);
    complete(&mut m, 1);
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    assert_eq!(m.costs().tlbi.get(&TlbiOp::Rvae1is), Some(&1));
    assert!(matches!(
        m.access(1, KEY, DATA + 8 * K, grant::WRITE),
        Access::Fault
    ));
}

#[test]
fn shim_broadcast_covers_a_removed_table_and_code() {
    // Two calls' worth of changes in one slot: a data page, and the whole
    // code table (its level 3 table is detached). The union is 2 MiB+ wide:
    // broadcast, with the I-cache hint.
    let (mut m, mut t) = setup(&[1]);
    let mut slot = RequestSlot::new();
    host_call(&mut m, &mut t, &mut slot, false, unmap(DATA, DATA + K));
    host_call(
        &mut m,
        &mut t,
        &mut slot,
        true,
        unmap(CODE, CODE + 0x20_0000),
    );
    assert!(!t.pending_release().is_empty());
    let regs = vcpu_return(&mut m, 1, &mut slot, &Capabilities::default());
    assert_eq!((regs.x8, regs.x11), (X8_BROADCAST, 1));
    // The detached table page is released only now, after the shim's
    // DSB ISH: no use after free.
    host_retire(&mut m, &mut t);
    complete(&mut m, 1);
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    assert_eq!(m.costs().tlbi.get(&TlbiOp::Vmalle1is), Some(&1));
}

#[test]
fn shim_dropped_request_leaves_a_stale_translation() {
    let (mut m, mut t) = setup(&[1]);
    let mut slot = RequestSlot::new();
    host_call(
        &mut m,
        &mut t,
        &mut slot,
        false,
        unmap(DATA + 2 * K, DATA + 4 * K),
    );
    // The request is lost: X8 = 0, the shim does nothing.
    let _ = slot.take(&Capabilities::default(), ASID);
    shim_execute(
        &Regs::default(),
        &Capabilities::default(),
        ASID,
        &mut ModelEffects::new(&mut m, 1),
    )
    .unwrap();
    host_retire(&mut m, &mut t);
    assert!(matches!(
        m.access(1, KEY, DATA + 2 * K, grant::READ),
        Access::Stale { .. }
    ));
    complete(&mut m, 1);
    assert!(
        m.violations()
            .iter()
            .any(|v| v.kind == ViolationKind::StaleTranslation),
        "{:?}",
        m.violations()
    );
}

#[test]
fn shim_local_tlbis_would_leave_the_host_pe_stale() {
    // The shim's operations must be the broadcast forms: the host PE runs
    // the table too. Replaying the shim with each TLBI made local (VAE1)
    // leaves PE 0 stale.
    let (mut m, mut t) = setup(&[1]);
    let mut slot = RequestSlot::new();
    host_call(
        &mut m,
        &mut t,
        &mut slot,
        false,
        unmap(DATA + 2 * K, DATA + 4 * K),
    );
    let regs = slot.take(&Capabilities::default(), ASID);
    let mut rec = Recorder::new();
    shim_execute(&regs, &Capabilities::default(), ASID, &mut rec).unwrap();
    let local: Vec<Effect> = rec
        .take()
        .into_iter()
        .map(|e| match e {
            Effect::Tlbi { op, operand } => Effect::Tlbi {
                op: vmsa::plan::local_form(op),
                operand,
            },
            e => e,
        })
        .collect();
    assert!(local.iter().any(|e| matches!(
        e,
        Effect::Tlbi {
            op: TlbiOp::Vae1,
            ..
        }
    )));
    m.replay(1, &local);
    host_retire(&mut m, &mut t);
    complete(&mut m, 1);
    let stale: Vec<_> = m
        .violations()
        .iter()
        .filter(|v| v.kind == ViolationKind::StaleTranslation)
        .collect();
    assert!(!stale.is_empty());
    assert!(stale.iter().all(|v| v.pes == 1 << 0), "{stale:?}");
}

#[test]
fn shim_per_vcpu_slots_keep_requests_apart() {
    // vCPU A (PE 1) unmaps page X; vCPU B (PE 2) makes page Y read-only.
    // Each change is complete when its own vCPU returns.
    let x = DATA + 4 * K;
    let y = DATA + 10 * K;
    let caps = Capabilities::default();
    let (mut m, mut t) = setup(&[1, 2]);
    let (mut slot_a, mut slot_b) = (RequestSlot::new(), RequestSlot::new());
    host_call(&mut m, &mut t, &mut slot_a, false, unmap(x, x + K));
    host_call(&mut m, &mut t, &mut slot_b, false, |t, fx| {
        t.protect(Va(y)..Va(y + K), Stage1Attrs::normal_rw(0).read_only(), fx)
            .unwrap()
    });
    // A returns first: its shim flushes exactly A's request.
    let regs_a = vcpu_return(&mut m, 1, &mut slot_a, &caps);
    assert_eq!((regs_a.x8, regs_a.x9, regs_a.x10), (X8_SELECTIVE, x, 1));
    // X is gone from every PE (broadcast operation, DSB ISH on PE 1) ...
    for pe in 0..3 {
        assert_eq!(m.access(pe, KEY, x, grant::READ), Access::Fault);
    }
    // ... while B's request waits in B's slot, and B's call has not
    // returned: B may still hold the writable entry for Y.
    assert!(!slot_b.is_empty());
    assert!(matches!(
        m.access(2, KEY, y, grant::WRITE),
        Access::Stale { .. }
    ));
    // B returns: its own shim flushes Y.
    let regs_b = vcpu_return(&mut m, 2, &mut slot_b, &caps);
    assert_eq!((regs_b.x8, regs_b.x9, regs_b.x10), (X8_SELECTIVE, y, 1));
    host_retire(&mut m, &mut t);
    complete(&mut m, 2);
    assert!(m.violations().is_empty(), "{:?}", m.violations());

    // The same calls with one slot for the whole guest: B's host thread
    // takes the merged request first (B's vCPU has not run its shim yet),
    // and A returns with X8 = 0 to code that can still read X.
    let (mut global, mut t2) = setup(&[1, 2]);
    let mut shared = RequestSlot::new();
    host_call(&mut global, &mut t2, &mut shared, false, unmap(x, x + K));
    host_call(&mut global, &mut t2, &mut shared, false, |t, fx| {
        t.protect(Va(y)..Va(y + K), Stage1Attrs::normal_rw(0).read_only(), fx)
            .unwrap()
    });
    // The merged request: X through Y, 7 pages.
    let regs_b = shared.take(&caps, ASID);
    assert_eq!((regs_b.x8, regs_b.x9, regs_b.x10), (X8_SELECTIVE, x, 7));
    let regs_a = shared.take(&caps, ASID);
    assert_eq!(regs_a, Regs::default());
    shim_execute(&regs_a, &caps, ASID, &mut ModelEffects::new(&mut global, 1)).unwrap();
    assert!(matches!(
        global.access(1, KEY, x, grant::READ),
        Access::Stale { .. }
    ));
    complete(&mut global, 1);
    assert!(global
        .violations()
        .iter()
        .any(|v| v.kind == ViolationKind::StaleTranslation));
}

#[test]
fn shim_range_beyond_sixteen_pages_pays_in_the_model() {
    // 24 pages unmapped: without ranges a broadcast, which throws away the
    // 8 data and 4 code pages still mapped on every PE; with ranges one
    // RVAE1IS (12 units of 2 pages) that throws away nothing still mapped.
    let mut collateral = Vec::new();
    for caps in [Capabilities::default(), Capabilities::armv8_4()] {
        let (mut m, mut t) = setup(&[1]);
        let mut slot = RequestSlot::new();
        host_call(&mut m, &mut t, &mut slot, false, unmap(DATA, DATA + 24 * K));
        let before = m.costs().collateral;
        let regs = vcpu_return(&mut m, 1, &mut slot, &caps);
        host_retire(&mut m, &mut t);
        complete(&mut m, 1);
        assert!(m.violations().is_empty(), "{:?}", m.violations());
        collateral.push((regs.x8, m.costs().collateral - before));
    }
    assert_eq!(collateral[0].0, X8_BROADCAST);
    assert_eq!(collateral[1], (X8_RANGE, 0));
    assert!(collateral[0].1 > 0, "{collateral:?}");
}

#[test]
fn shim_table_page_released_before_the_shim_is_use_after_free() {
    // The host may not release a detached table page when it edits the
    // table: until the shim's DSB ISH a walker may still reach it.
    let (mut m, mut t) = setup(&[1]);
    let mut slot = RequestSlot::new();
    host_call(
        &mut m,
        &mut t,
        &mut slot,
        true,
        unmap(CODE, CODE + 0x20_0000),
    );
    host_retire(&mut m, &mut t);
    vcpu_return(&mut m, 1, &mut slot, &Capabilities::default());
    complete(&mut m, 1);
    assert!(
        m.violations()
            .iter()
            .any(|v| v.kind == ViolationKind::UseAfterFree),
        "{:?}",
        m.violations()
    );
}
