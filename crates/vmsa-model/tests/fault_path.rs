//! The spurious-fault path and invalidating a VMID that is not loaded,
//! checked in the model.

use vmsa::{
    Arena, Capabilities, Geometry, Grants, Granule, Ipa, MapOptions, Pa, Planner, Profile,
    Recorder, S2ap, Stage2, Stage2Attrs, Table, Vmid,
};
use vmsa_model::desc::grant;
use vmsa_model::{Access, Config, Event, Key, Machine, Origin};

const K: u64 = 4096;

/// A live stage 2 table of VMID `vmid` at `base`, installed on PE 0 and,
/// with `everywhere`, on every PE.
fn vm(m: &mut Machine, vmid: u16, base: u64, everywhere: bool) -> Table<Stage2, Arena> {
    let mut rec = Recorder::new();
    let mut t = Table::new(
        Stage2::new(Vmid(vmid)),
        Geometry::stage2(Granule::K4, 40).unwrap(),
        Arena::new(Pa(base), 64),
        &mut rec,
    )
    .unwrap();
    t.map(
        Ipa(0x4000_0000)..Ipa(0x4000_0000 + 16 * K),
        Pa(0x1_0000_0000 + base),
        Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly),
        MapOptions::PAGES,
        &mut rec,
    )
    .unwrap();
    t.activate(&mut rec);
    let log = rec.take();
    m.replay(0, &log);
    let others = if everywhere { m.pes() } else { 1 };
    for pe in 1..others {
        let regs: Vec<_> = log
            .iter()
            .filter(|e| matches!(e, vmsa::Effect::SysReg { .. }))
            .copied()
            .collect();
        m.replay(pe, &regs);
    }
    t
}

#[test]
fn a_relaxed_page_faults_once_then_the_local_invalidation_lets_it_through() {
    let mut m = Machine::new(Config::default());
    let mut t = vm(&mut m, 1, 0x8000_0000, true);
    let page = Ipa(0x4000_2000);
    // Relax read-only -> read/write: the planner leaves it to the fault path.
    let mut rec = Recorder::new();
    t.protect(page..Ipa(page.0 + K), Stage2Attrs::RAM, &mut rec)
        .unwrap();
    t.flush(&mut rec);
    assert_eq!(rec.tlbi_count(), 0, "{:?}", rec.log());
    m.replay(0, &rec.take());
    m.step(0, &Event::Complete, Origin::default());
    assert!(m.violations().is_empty());
    // PE 2's guest writes: it may hit the stale read-only entry. The
    // hypervisor's fault handler on PE 2 sees the tables allow it.
    let mut on2 = Recorder::new();
    assert!(t.spurious_fault(page, Grants::WRITE, &mut on2));
    assert!(on2.log().iter().all(|e| match e {
        vmsa::Effect::Tlbi { op, .. } => !op.is_broadcast(),
        _ => true,
    }));
    m.replay(2, &on2.take());
    assert_eq!(
        m.access(2, Key::Vmid(1), page.0, grant::WRITE),
        Access::Ok {
            pa: 0x1_0000_0000 + 0x8000_0000 + 2 * K
        }
    );
    // A real fault (nothing mapped there) is not handled.
    assert!(!t.spurious_fault(Ipa(0x5000_0000), Grants::READ, &mut on2));
    assert!(on2.log().is_empty());
}

#[test]
fn with_a_speculative_at_erratum_the_switch_uses_an_empty_root() {
    // The capability decides: with it the switch goes through the empty
    // root, without it through the real one although an empty root is set.
    for speculative_at in [true, false] {
        let mut m = Machine::new(Config::default());
        let mut a = vm(&mut m, 1, 0x8000_0000, true);
        a.set_invalidator(Box::new(Planner::new(
            Capabilities {
                speculative_at,
                ..Capabilities::default()
            },
            Profile::NATIVE,
        )));
        let b = vm(&mut m, 2, 0x9000_0000, false);
        let vttbr_b = b.registers()[1].1;
        m.step(
            0,
            &Event::SysReg {
                reg: vmsa_model::Reg::VttbrEl2,
                value: vttbr_b,
            },
            Origin::default(),
        );
        // A zeroed two-page root (40-bit IPA: two concatenated level 1
        // pages).
        let empty = 0xa000_0000;
        m.step(
            0,
            &Event::MemInit {
                pa: empty,
                size: 2 * 4096,
            },
            Origin::default(),
        );
        a.set_loaded_vttbr(Some(vttbr_b));
        a.set_empty_root(Some(Pa(empty)));
        let mut rec = Recorder::new();
        a.unmap(Ipa(0x4000_0000)..Ipa(0x4000_0000 + K), &mut rec)
            .unwrap();
        a.flush(&mut rec);
        let log = rec.take();
        let target = if speculative_at {
            1 << 48 | empty
        } else {
            a.registers()[1].1
        };
        assert!(
            log.contains(&vmsa::Effect::SysReg {
                reg: vmsa::SysReg::VttbrEl2,
                value: target
            }),
            "speculative_at {speculative_at}: {log:?}"
        );
        m.replay(0, &log);
        m.step(0, &Event::Complete, Origin::default());
        assert!(
            m.violations().is_empty(),
            "speculative_at {speculative_at}: {:?}",
            m.violations()
        );
    }
}

#[test]
fn invalidating_a_vm_whose_vmid_is_not_loaded_switches_vttbr() {
    for switch in [true, false] {
        let mut m = Machine::new(Config::default());
        let mut a = vm(&mut m, 1, 0x8000_0000, true);
        let b = vm(&mut m, 2, 0x9000_0000, false);
        // PE 0 now runs VM 2; VM 1 keeps running on PEs 1-3.
        let vttbr_b = b.registers()[1].1;
        m.step(
            0,
            &Event::SysReg {
                reg: vmsa_model::Reg::VttbrEl2,
                value: vttbr_b,
            },
            Origin::default(),
        );
        if switch {
            a.set_loaded_vttbr(Some(vttbr_b));
        }
        let mut rec = Recorder::new();
        a.unmap(Ipa(0x4000_0000)..Ipa(0x4000_0000 + K), &mut rec)
            .unwrap();
        a.flush(&mut rec);
        m.replay(0, &rec.take());
        m.step(0, &Event::Complete, Origin::default());
        assert_eq!(
            m.violations().is_empty(),
            switch,
            "switch {switch}: {:?}",
            m.violations()
        );
    }
}
