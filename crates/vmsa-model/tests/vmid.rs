//! VMID life cycle in the model: a live tree may get a new VMID (a
//! rollover) only once no PE runs it with the old one and the old one has
//! been invalidated; a dead VM's VMID may be reused only after that too.

use vmsa::tlbi::TlbiOp;
use vmsa_model::{Barrier, Config, Event, Machine, Origin, Reg, ViolationKind};

const A: u64 = 0x10_0000;
const B: u64 = 0x20_0000;

struct M(Machine, u64);

impl M {
    fn new() -> M {
        let mut m = M(
            Machine::new(Config {
                pes: 2,
                ..Config::default()
            }),
            0,
        );
        for root in [A, B] {
            for i in 0..2 {
                m.ev(
                    0,
                    Event::MemInit {
                        pa: root + i * 0x1000,
                        size: 4096,
                    },
                );
            }
            // One level 0 table descriptor and one level 1 block below it.
            m.ev(
                0,
                Event::Write {
                    pa: root,
                    value: (root + 0x1000) | 3,
                    release: false,
                },
            );
            m.ev(
                0,
                Event::Write {
                    pa: root + 0x1000,
                    value: 0x4000_0000 | 0x7fd,
                    release: false,
                },
            );
        }
        for pe in 0..2 {
            m.ev(
                pe,
                Event::SysReg {
                    reg: Reg::VtcrEl2,
                    value: 16 | 2 << 6,
                },
            );
        }
        m
    }
    fn ev(&mut self, pe: usize, e: Event) {
        self.1 += 1;
        self.0.step(
            pe,
            &e,
            Origin {
                seq: self.1,
                line: 0,
            },
        );
    }
    fn vttbr(&mut self, pe: usize, vmid: u64, root: u64) {
        self.ev(
            pe,
            Event::SysReg {
                reg: Reg::VttbrEl2,
                value: vmid << 48 | root,
            },
        );
    }
    fn alle1is(&mut self) {
        self.ev(
            0,
            Event::Tlbi {
                op: TlbiOp::Alle1is,
                operand: 0,
            },
        );
        self.ev(0, Event::Barrier(Barrier::DSB_ISH));
    }
    fn kinds(&self) -> Vec<ViolationKind> {
        self.0.violations().iter().map(|v| v.kind).collect()
    }
}

#[test]
fn rollover_after_alle1is_may_retag_a_tree_nobody_runs() {
    let mut m = M::new();
    m.vttbr(0, 1, A);
    m.vttbr(0, 2, B); // PE 0 leaves A
    m.alle1is();
    m.vttbr(0, 3, A); // A gets VMID 3 in the new generation
    assert!(m.kinds().is_empty(), "{:?}", m.0.violations());
}

#[test]
fn retagging_without_invalidation_is_reported() {
    let mut m = M::new();
    m.vttbr(0, 1, A);
    m.vttbr(0, 2, B);
    m.vttbr(0, 3, A);
    assert_eq!(m.kinds(), vec![ViolationKind::IdReuse]);
}

#[test]
fn retagging_while_another_pe_runs_the_old_tag_is_reported() {
    let mut m = M::new();
    m.vttbr(1, 1, A); // PE 1 runs A with VMID 1
    m.vttbr(0, 2, B);
    m.alle1is();
    m.vttbr(0, 3, A);
    assert_eq!(m.kinds(), vec![ViolationKind::IdReuse]);
}

#[test]
fn a_dead_vms_vmid_is_reused_safely_only_after_invalidation() {
    // VM A (VMID 1) dies: its tables are released without any TLBI, the
    // root first (the tree is dead from then on), then the rest.
    let mut m = M::new();
    m.vttbr(0, 1, A);
    m.vttbr(0, 2, B);
    m.ev(0, Event::Release { pa: A, size: 4096 });
    m.ev(
        0,
        Event::Release {
            pa: A + 0x1000,
            size: 4096,
        },
    );
    assert!(m.kinds().is_empty(), "{:?}", m.0.violations());
    // Reusing VMID 1 for a new tree at once: its entries may remain.
    let mut bad = M::new();
    bad.vttbr(0, 1, A);
    bad.vttbr(0, 2, B);
    bad.ev(0, Event::Release { pa: A, size: 4096 });
    bad.ev(
        0,
        Event::MemInit {
            pa: 0x30_0000,
            size: 4096,
        },
    );
    bad.vttbr(0, 1, 0x30_0000);
    assert_eq!(bad.kinds(), vec![ViolationKind::IdReuse]);
    // After the rollover's ALLE1IS it is fine.
    m.alle1is();
    m.ev(
        0,
        Event::MemInit {
            pa: 0x30_0000,
            size: 4096,
        },
    );
    m.vttbr(0, 1, 0x30_0000);
    assert!(m.kinds().is_empty(), "{:?}", m.0.violations());
}
