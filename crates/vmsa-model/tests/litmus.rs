//! The model against the ESOP 2022 litmus tests ("Relaxed virtual memory in
//! Armv8-A", Simner, Armstrong et al.; litmus-tests-armv8a-system-vmsa,
//! tests/pgtable/HAND): message passing where the hypervisor on PE 0
//! unmaps a stage 2 page, performs the maintenance, then writes a flag;
//! the guest on PE 1 reads the flag (after `DSB; ISB`) and accesses the
//! page. Whether the guest may still translate through the old entry is
//! the test's outcome: forbidden or allowed by the architecture. The model
//! must allow at least what the architecture allows, and forbid what it
//! forbids.

use vmsa::tlbi::{ipa_operand, TlbiOp, Ttl};
use vmsa_model::{Barrier, Config, Event, Key, Machine, Origin, Reg};

const L0: u64 = 0x10_0000;
const L1: u64 = 0x10_1000;
const L2: u64 = 0x10_2000;
const L3: u64 = 0x10_3000;
const IPA: u64 = 0x1000;
const PA: u64 = 0x4000_0000;

/// PE 0 runs `maintenance` after unmapping IPA 0x1000; returns whether PE 1
/// (the guest, VMID 1) may then still translate it to the old page.
fn guest_may_see_old_page(maintenance: &[Event]) -> bool {
    let mut m = Machine::new(Config {
        pes: 2,
        ..Config::default()
    });
    let mut seq = 0;
    let mut ev = |m: &mut Machine, pe: usize, e: Event| {
        seq += 1;
        m.step(pe, &e, Origin { seq, line: 0 });
    };
    for p in [L0, L1, L2, L3] {
        ev(&mut m, 0, Event::MemInit { pa: p, size: 4096 });
    }
    let w = |pa, value| Event::Write {
        pa,
        value,
        release: false,
    };
    for (pa, v) in [
        (L0, L1 | 3),
        (L1, L2 | 3),
        (L2, L3 | 3),
        (L3 + 8, PA | 0x7ff),
    ] {
        ev(&mut m, 0, w(pa, v));
    }
    for pe in 0..2 {
        ev(
            &mut m,
            pe,
            Event::SysReg {
                reg: Reg::VtcrEl2,
                value: 16 | 2 << 6,
            },
        );
        ev(
            &mut m,
            pe,
            Event::SysReg {
                reg: Reg::VttbrEl2,
                value: 1 << 48 | L0,
            },
        );
    }
    // PE 1 (the guest) has used the page.
    assert!(m
        .may_translate(1, Key::Vmid(1), IPA)
        .iter()
        .any(|&(o, _)| o == PA));
    // PE 0: unmap, then the maintenance under test, then the flag.
    ev(&mut m, 0, w(L3 + 8, 0));
    for e in maintenance {
        ev(&mut m, 0, *e);
    }
    // PE 1: sees the flag, DSB; ISB, accesses the page.
    ev(&mut m, 1, Event::Barrier(Barrier::DSB_ISH));
    ev(&mut m, 1, Event::Barrier(Barrier::Isb));
    m.may_translate(1, Key::Vmid(1), IPA)
        .iter()
        .any(|&(o, _)| o == PA)
}

const DSB: Event = Event::Barrier(Barrier::DSB_ISH);

fn ipas2() -> Event {
    Event::Tlbi {
        op: TlbiOp::Ipas2e1is,
        operand: ipa_operand(IPA, Ttl::NONE),
    }
}

const VMALLE1IS: Event = Event::Tlbi {
    op: TlbiOp::Vmalle1is,
    operand: 0,
};

#[test]
fn mp_rt_el2_dsb_tlbiipais_dsb_tlbiis_dsb_is_forbidden() {
    // MP.RT.EL2+dsb-tlbiipais-dsb-tlbiis-dsb+dsb-isb: forbidden.
    assert!(!guest_may_see_old_page(&[
        DSB,
        ipas2(),
        DSB,
        VMALLE1IS,
        DSB
    ]));
}

#[test]
fn mp_rt_el2_dsb_tlbiipais_dsb_is_allowed() {
    // MP.RT.EL2+dsb-tlbiipais-dsb+dsb-isb: allowed (the combined stage 1+2
    // entry survives an IPA-based invalidation).
    assert!(guest_may_see_old_page(&[DSB, ipas2(), DSB]));
}

#[test]
fn without_any_maintenance_the_old_page_stays_visible() {
    assert!(guest_may_see_old_page(&[DSB]));
    assert!(guest_may_see_old_page(&[]));
}
