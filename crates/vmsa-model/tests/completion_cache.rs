//! Completion points remember which stale entries they found harmless (a
//! stricter entry left by a relaxation): a later completion point judges
//! such an entry again once a descriptor over its range changes, at any
//! level.

use vmsa::tlbi::TlbiOp;
use vmsa_model::{Barrier, Config, Event, Machine, Origin, Reg, ViolationKind};

const L0: u64 = 0x10_0000;
const L1: u64 = 0x10_1000;
const L2: u64 = 0x10_2000;
const L3: u64 = 0x10_3000;
/// The leaf: L3[1], IPA 0x1000.
const LEAF_SLOT: u64 = L3 + 8;
/// Stage 2 page: MemAttr 0b1111, S2AP rw, SH inner, AF.
const RW: u64 = 0x4000_0000 | 0x7ff;
/// The same, read-only.
const RO: u64 = RW & !(1 << 7);

struct Run {
    m: Machine,
    seq: u64,
}

impl Run {
    fn ev(&mut self, pe: usize, e: Event) {
        self.seq += 1;
        self.m.step(
            pe,
            &e,
            Origin {
                seq: self.seq,
                line: 0,
            },
        );
    }

    fn write(&mut self, pa: u64, value: u64) {
        self.ev(
            0,
            Event::Write {
                pa,
                value,
                release: false,
            },
        );
        self.ev(0, Event::Barrier(Barrier::DSB_ISH));
    }

    fn complete(&mut self) {
        self.ev(0, Event::Complete);
    }

    /// A live four-level stage 2 mapping IPA 0x1000 read-only, nothing
    /// cached but what the tables hold, then relaxed to read/write without
    /// invalidation: PEs may hold the stricter read-only entry.
    fn relaxed() -> Run {
        let mut r = Run {
            m: Machine::new(Config {
                pes: 2,
                ..Config::default()
            }),
            seq: 0,
        };
        for p in [L0, L1, L2, L3] {
            r.ev(0, Event::MemInit { pa: p, size: 4096 });
        }
        r.write(L0, L1 | 3);
        r.write(L1, L2 | 3);
        r.write(L2, L3 | 3);
        r.write(LEAF_SLOT, RO);
        for pe in 0..2 {
            for (reg, value) in [(Reg::VtcrEl2, 16 | 2 << 6), (Reg::VttbrEl2, 1 << 48 | L0)] {
                r.ev(pe, Event::SysReg { reg, value });
            }
        }
        r.write(LEAF_SLOT, RW);
        r.complete();
        r.complete();
        assert!(r.m.violations().is_empty(), "{:?}", r.m.violations());
        r
    }
}

#[test]
fn a_stricter_entry_is_judged_again_when_its_leaf_changes() {
    let mut r = Run::relaxed();
    r.write(LEAF_SLOT, 0);
    r.complete();
    let v = r.m.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, ViolationKind::StaleTranslation);
    // The read-only entry is the older one: judged first.
    assert!(
        v[0].explanation
            .contains(&format!("from {RO:#x} at {LEAF_SLOT:#x}")),
        "{}",
        v[0]
    );
}

#[test]
fn a_stricter_entry_is_judged_again_when_a_table_above_it_goes() {
    let mut r = Run::relaxed();
    // The level 2 table descriptor over 0..2 MiB: the leaf's own slot is
    // not written, its translation goes all the same.
    r.write(L2, 0);
    r.complete();
    let leaf: Vec<_> =
        r.m.violations()
            .iter()
            .filter(|v| v.location == LEAF_SLOT)
            .collect();
    assert_eq!(leaf.len(), 1, "{:?}", r.m.violations());
    assert!(
        leaf[0]
            .explanation
            .contains(&format!("from {RO:#x} at {LEAF_SLOT:#x}")),
        "{}",
        leaf[0]
    );
}

#[test]
fn an_invalidation_leaves_nothing_to_judge() {
    let mut r = Run::relaxed();
    r.ev(
        0,
        Event::Tlbi {
            op: TlbiOp::Vmalls12e1is,
            operand: 0,
        },
    );
    r.ev(0, Event::Barrier(Barrier::DSB_ISH));
    r.write(LEAF_SLOT, 0);
    r.ev(
        0,
        Event::Tlbi {
            op: TlbiOp::Vmalls12e1is,
            operand: 0,
        },
    );
    r.ev(0, Event::Barrier(Barrier::DSB_ISH));
    r.complete();
    assert!(r.m.violations().is_empty(), "{:?}", r.m.violations());
}
