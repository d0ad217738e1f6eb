//! Local invalidation: an address space that runs on one PE only is
//! invalidated with non-shareable operations; when it moves, the PE it
//! returns to flushes it first. The model accepts exactly that.

use vmsa::{
    Arena, Asid, Effect, El1Stage1, Geometry, Granule, Ipa, MapOptions, Pa, Recorder, Stage1Attrs,
    Table, TlbiOp, Va,
};
use vmsa_model::{Config, Event, Machine, ModelEffects, Origin, Reg};

const K: u64 = 4096;

fn setup(m: &mut Machine) -> Table<El1Stage1, Arena> {
    // Every PE runs VMID 1; the process's stage 1 runs on PE 1.
    for pe in 0..4 {
        m.step(
            pe,
            &Event::SysReg {
                reg: Reg::VttbrEl2,
                value: 1 << 48,
            },
            Origin::default(),
        );
    }
    let mut fx = ModelEffects::new(m, 1);
    let mut t = Table::new(
        El1Stage1::new(Asid(3)),
        Geometry::stage1(Granule::K4, 48).unwrap(),
        Arena::new(Pa(0x8000_0000), 64),
        &mut fx,
    )
    .unwrap();
    t.set_issuer(1);
    // Refills nearly free: local invalidation (and the flush it costs a
    // PE that comes back later) always pays here.
    t.set_invalidator(Box::new(vmsa::Planner::new(
        vmsa::Capabilities::default(),
        vmsa::Profile {
            refill_walk: 1,
            ..vmsa::Profile::NATIVE
        },
    )));
    t.map(
        Va(0x40_0000)..Va(0x40_0000 + 16 * K),
        Ipa(0x1000_0000),
        Stage1Attrs::normal_rw(0),
        MapOptions::PAGES,
        &mut fx,
    )
    .unwrap();
    t.activate(&mut fx);
    t.vcpu_load(1, &mut fx);
    t
}

fn tlbis(log: &[Effect]) -> Vec<TlbiOp> {
    log.iter()
        .filter_map(|e| match e {
            Effect::Tlbi { op, .. } => Some(*op),
            _ => None,
        })
        .collect()
}

#[test]
fn a_space_on_one_pe_is_invalidated_locally_and_the_model_agrees() {
    let mut m = Machine::new(Config::default());
    let mut t = setup(&mut m);
    let mut rec = Recorder::new();
    t.unmap(Va(0x40_0000)..Va(0x40_0000 + K), &mut rec).unwrap();
    t.flush(&mut rec);
    let ops = tlbis(rec.log());
    assert!(
        !ops.is_empty() && ops.iter().all(|op| !op.is_broadcast()),
        "{ops:?}"
    );
    m.replay(1, rec.log());
    m.step(1, &Event::Complete, Origin::default());
    assert!(m.violations().is_empty(), "{:?}", m.violations());
}

#[test]
fn moving_flushes_the_pe_that_missed_local_invalidations() {
    let mut m = Machine::new(Config::default());
    let mut t = setup(&mut m);
    // Run on PE 2 instead: PE 1 switches to something else, PE 2 installs
    // the registers.
    t.vcpu_put(1);
    m.step(
        1,
        &Event::SysReg {
            reg: Reg::Ttbr0El1,
            value: 0,
        },
        Origin::default(),
    );
    let mut rec = Recorder::new();
    for (reg, value) in t.registers() {
        rec.write_sysreg(reg, value);
    }
    t.set_issuer(2);
    t.vcpu_load(2, &mut rec);
    t.unmap(Va(0x40_0000)..Va(0x40_0000 + K), &mut rec).unwrap();
    t.flush(&mut rec);
    assert!(tlbis(rec.log()).iter().all(|op| !op.is_broadcast()));
    m.replay(2, &rec.take());
    // PE 1 keeps the stale entry, but does not run the ASID: fine.
    m.step(2, &Event::Complete, Origin::default());
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    // Back to PE 1: it must flush first (vcpu_load does).
    let mut back = m.clone();
    t.vcpu_put(2);
    let mut rec = Recorder::new();
    for (reg, value) in t.registers() {
        rec.write_sysreg(reg, value);
    }
    t.set_issuer(1);
    t.vcpu_load(1, &mut rec);
    let log = rec.take();
    assert!(tlbis(&log).contains(&TlbiOp::Vmalle1), "{log:?}");
    m.replay(1, &log);
    m.step(1, &Event::Complete, Origin::default());
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    // Without that flush PE 1 would run with the stale entry.
    let regs: Vec<Effect> = log
        .iter()
        .filter(|e| matches!(e, Effect::SysReg { .. }))
        .copied()
        .collect();
    back.replay(1, &regs);
    back.step(1, &Event::Complete, Origin::default());
    assert!(!back.violations().is_empty());
}

use vmsa::Effects;
