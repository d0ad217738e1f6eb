//! A fully local flush (`DSB NSH`, non-shareable TLBIs, `DSB NSH`) of a tag
//! only the issuing PE ever ran is enough, as the architecture allows and
//! Linux's local flushes do; once another PE has run the tag it is not.

use vmsa::tlbi::{ipa_operand, TlbiOp, Ttl};
use vmsa_model::{Barrier, Config, Event, Machine, Origin, Reg, ViolationKind};

const L0: u64 = 0x10_0000;
const L1: u64 = 0x10_1000;
const L2: u64 = 0x10_2000;
const L3: u64 = 0x10_3000;
const LEAF_SLOT: u64 = L3 + 8;
const IPA: u64 = 0x1000;

struct Case {
    m: Machine,
    seq: u64,
}

impl Case {
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
    }

    /// A stage 2 table mapping one page, on a 2-PE machine, run on PE 0 and,
    /// with `both`, on PE 1 too.
    fn new(both: bool) -> Case {
        let mut c = Case {
            m: Machine::new(Config {
                pes: 2,
                ..Config::default()
            }),
            seq: 0,
        };
        for p in [L0, L1, L2, L3] {
            c.ev(0, Event::MemInit { pa: p, size: 4096 });
        }
        c.write(L0, L1 | 3);
        c.write(L1, L2 | 3);
        c.write(L2, L3 | 3);
        c.write(LEAF_SLOT, 0x4000_0000 | 0x7ff);
        let pes: &[usize] = if both { &[0, 1] } else { &[0] };
        for &pe in pes {
            c.ev(
                pe,
                Event::SysReg {
                    reg: Reg::VtcrEl2,
                    value: 16 | 2 << 6,
                },
            );
            c.ev(
                pe,
                Event::SysReg {
                    reg: Reg::VttbrEl2,
                    value: 1 << 48 | L0,
                },
            );
        }
        c
    }

    /// Unmaps the page with Linux's local sequence, completes, and returns
    /// the stale-translation reports.
    fn local_unmap(mut self) -> usize {
        self.write(LEAF_SLOT, 0);
        self.ev(0, Event::Barrier(Barrier::DSB_NSH));
        self.ev(
            0,
            Event::Tlbi {
                op: TlbiOp::Ipas2e1,
                operand: ipa_operand(IPA, Ttl::NONE),
            },
        );
        self.ev(0, Event::Barrier(Barrier::DSB_NSH));
        self.ev(
            0,
            Event::Tlbi {
                op: TlbiOp::Vmalle1,
                operand: 0,
            },
        );
        self.ev(0, Event::Barrier(Barrier::DSB_NSH));
        self.ev(0, Event::Complete);
        self.m
            .violations()
            .iter()
            .filter(|v| v.kind == ViolationKind::StaleTranslation)
            .count()
    }
}

#[test]
fn a_local_flush_of_a_tag_only_the_issuer_ran_is_clean() {
    assert_eq!(Case::new(false).local_unmap(), 0);
}

#[test]
fn a_local_flush_of_a_tag_another_pe_ran_is_stale() {
    assert!(Case::new(true).local_unmap() > 0);
}
