//! For each TLBI kind, a case where it must remove an entry and one where
//! it must not. Each case builds a four-level table, installs it, removes
//! one descriptor, runs the maintenance under test and declares the
//! operation complete: the checker must then report a stale translation
//! exactly when the maintenance did not remove every cached entry.

use vmsa::tlbi::{asid_operand, ipa_operand, va_operand, RangeOperand, TlbiOp, Ttl};
use vmsa_model::{Access, Barrier, Config, Event, Key, Machine, Origin, Reg, ViolationKind};

const L0: u64 = 0x10_0000;
const L1: u64 = 0x10_1000;
const L2: u64 = 0x10_2000;
const L3: u64 = 0x10_3000;
/// The leaf: L3[1], input address 0x1000.
const LEAF_SLOT: u64 = L3 + 8;
const ADDR: u64 = 0x1000;
/// The level 2 table descriptor over 0..2 MiB.
const TABLE_SLOT: u64 = L2;

#[derive(Clone, Copy, PartialEq)]
enum Regime {
    Stage2,
    El1 { asid: u16, global: bool },
    El2,
}

struct Case {
    m: Machine,
    seq: u64,
}

impl Case {
    fn new(regime: Regime, pes: usize) -> Case {
        Case::run_on(regime, pes, pes)
    }

    /// A machine of `pes` PEs where only the first `runners` run the
    /// regime.
    fn run_on(regime: Regime, pes: usize, runners: usize) -> Case {
        let mut c = Case {
            m: Machine::new(Config {
                pes,
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
        let leaf = match regime {
            // Stage 2 page: MemAttr 0b1111, S2AP rw, SH inner, AF.
            Regime::Stage2 => 0x4000_0000 | 0x7ff,
            // Stage 1 page: AttrIndx 0, AP rw EL1, SH inner, AF, nG.
            Regime::El1 { global, .. } => 0x4000_0000 | 0x703 | if global { 0 } else { 1 << 11 },
            Regime::El2 => 0x4000_0000 | 0x703,
        };
        c.write(LEAF_SLOT, leaf);
        // Every PE that runs the regime may cache its entries.
        for pe in 0..runners {
            match regime {
                Regime::Stage2 => {
                    // 48-bit IPA, start at level 0 (SL0 = 2).
                    c.reg(pe, Reg::VtcrEl2, 16 | 2 << 6);
                    c.reg(pe, Reg::VttbrEl2, 1 << 48 | L0);
                }
                Regime::El1 { asid, .. } => {
                    c.reg(pe, Reg::VttbrEl2, 1 << 48 | 0x7_0000);
                    c.reg(pe, Reg::TcrEl1, 16);
                    c.reg(pe, Reg::Ttbr0El1, (asid as u64) << 48 | L0);
                }
                Regime::El2 => {
                    c.reg(pe, Reg::TcrEl2, 16);
                    c.reg(pe, Reg::Ttbr0El2, L0);
                }
            }
        }
        c
    }

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

    fn reg(&mut self, pe: usize, reg: Reg, value: u64) {
        self.ev(pe, Event::SysReg { reg, value });
    }

    fn dsb(&mut self) {
        self.ev(0, Event::Barrier(Barrier::DSB_ISH));
    }

    fn tlbi(&mut self, op: TlbiOp, operand: u64) {
        self.ev(0, Event::Tlbi { op, operand });
    }

    /// Completes and returns whether the checker found a stale entry.
    fn stale(mut self) -> bool {
        self.ev(0, Event::Complete);
        let v = self.m.violations();
        assert!(
            v.iter().all(|v| v.kind == ViolationKind::StaleTranslation),
            "unexpected: {v:?}"
        );
        !v.is_empty()
    }
}

/// Removes the leaf, then runs `ops` between DSB ISHs, then completes.
fn unmap_leaf(regime: Regime, pes: usize, ops: &[(TlbiOp, u64)]) -> bool {
    let mut c = Case::new(regime, pes);
    c.write(LEAF_SLOT, 0);
    c.dsb();
    for &(op, x) in ops {
        c.tlbi(op, x);
        c.dsb();
    }
    c.stale()
}

/// Removes the level 2 table descriptor (and so the walk-cache entry and
/// the leaf below it), then runs `ops`.
fn unmap_table(regime: Regime, ops: &[(TlbiOp, u64)]) -> bool {
    let mut c = Case::new(regime, 4);
    c.write(TABLE_SLOT, 0);
    c.dsb();
    for &(op, x) in ops {
        c.tlbi(op, x);
        c.dsb();
    }
    c.stale()
}

const S2: Regime = Regime::Stage2;
const EL1: Regime = Regime::El1 {
    asid: 5,
    global: false,
};
const EL1_GLOBAL: Regime = Regime::El1 {
    asid: 5,
    global: true,
};

fn ipa(ttl: Ttl) -> u64 {
    ipa_operand(ADDR, ttl)
}

use TlbiOp::*;

#[test]
fn no_invalidation_leaves_stale_entries() {
    assert!(unmap_leaf(S2, 4, &[]));
    assert!(unmap_leaf(EL1, 4, &[]));
    assert!(unmap_leaf(Regime::El2, 4, &[]));
}

#[test]
fn ipas2e1is_then_vmalle1is_removes_both_kinds() {
    assert!(!unmap_leaf(
        S2,
        4,
        &[(Ipas2e1is, ipa(Ttl::NONE)), (Vmalle1is, 0)]
    ));
}

#[test]
fn ipas2_alone_leaves_the_combined_entry() {
    // IPA-based operations need not remove combined stage 1+2 entries
    // (ESOP'22 MP.RT.EL2+dsb-tlbiipais-dsb+dsb-isb is allowed).
    assert!(unmap_leaf(S2, 4, &[(Ipas2e1is, ipa(Ttl::NONE))]));
    assert!(unmap_leaf(S2, 4, &[(Ipas2le1is, ipa(Ttl::NONE))]));
}

#[test]
fn vmalle1is_alone_leaves_the_stage2_only_entry() {
    assert!(unmap_leaf(S2, 4, &[(Vmalle1is, 0)]));
}

#[test]
fn vmalls12e1is_and_alle1is_remove_everything() {
    assert!(!unmap_leaf(S2, 4, &[(Vmalls12e1is, 0)]));
    assert!(!unmap_leaf(S2, 4, &[(Alle1is, 0)]));
    assert!(!unmap_table(S2, &[(Vmalls12e1is, 0)]));
    assert!(!unmap_leaf(EL1, 4, &[(Alle1is, 0)]));
}

#[test]
fn ipas2_other_address_does_not_remove() {
    assert!(unmap_leaf(
        S2,
        4,
        &[
            (Ipas2e1is, ipa_operand(ADDR + 0x1000, Ttl::NONE)),
            (Vmalle1is, 0)
        ]
    ));
}

#[test]
fn operations_act_on_the_vmid_in_vttbr() {
    // Same sequence, but VTTBR_EL2 holds VMID 2 when the TLBIs run.
    let mut c = Case::new(S2, 4);
    c.write(LEAF_SLOT, 0);
    c.dsb();
    c.reg(0, Reg::VttbrEl2, 2 << 48 | 0x20_0000);
    c.tlbi(Vmalls12e1is, 0);
    c.dsb();
    assert!(c.stale(), "VMALLS12E1IS with VMID 2 must not clean VMID 1");
}

#[test]
fn ttl_hints() {
    let l3 = Ttl::at(1, 3);
    let l2 = Ttl::at(1, 2);
    assert!(!unmap_leaf(S2, 4, &[(Ipas2le1is, ipa(l3)), (Vmalle1is, 0)]));
    assert!(
        unmap_leaf(S2, 4, &[(Ipas2le1is, ipa(l2)), (Vmalle1is, 0)]),
        "a wrong level hint need not remove the entry"
    );
    // A 16 KiB granule hint does not match 4 KiB entries.
    assert!(unmap_leaf(
        S2,
        4,
        &[(Ipas2e1is, ipa(Ttl::at(2, 3))), (Vmalle1is, 0)]
    ));
}

#[test]
fn last_level_operations_leave_walk_cache_entries() {
    assert!(unmap_table(
        S2,
        &[(Ipas2le1is, ipa(Ttl::NONE)), (Vmalle1is, 0)]
    ));
    assert!(!unmap_table(
        S2,
        &[(Ipas2e1is, ipa(Ttl::NONE)), (Vmalle1is, 0)]
    ));
    assert!(unmap_table(
        EL1,
        &[(Vale1is, va_operand(5, ADDR, Ttl::NONE))]
    ));
    assert!(!unmap_table(
        EL1,
        &[(Vae1is, va_operand(5, ADDR, Ttl::NONE))]
    ));
    assert!(unmap_table(
        Regime::El2,
        &[(Vale2is, va_operand(0, ADDR, Ttl::NONE))]
    ));
    assert!(!unmap_table(
        Regime::El2,
        &[(Vae2is, va_operand(0, ADDR, Ttl::NONE))]
    ));
}

#[test]
fn asids_and_global_entries() {
    let va = |asid| va_operand(asid, ADDR, Ttl::NONE);
    assert!(!unmap_leaf(EL1, 4, &[(Vae1is, va(5))]));
    assert!(unmap_leaf(EL1, 4, &[(Vae1is, va(6))]), "other ASID");
    assert!(
        !unmap_leaf(EL1_GLOBAL, 4, &[(Vae1is, va(6))]),
        "a global entry matches every ASID"
    );
    assert!(!unmap_leaf(EL1, 4, &[(Vaae1is, va(6))]), "all ASIDs");
    assert!(!unmap_leaf(EL1, 4, &[(Vaale1is, va(9))]));
    assert!(!unmap_leaf(EL1, 4, &[(Aside1is, asid_operand(5))]));
    assert!(unmap_leaf(EL1, 4, &[(Aside1is, asid_operand(6))]));
    assert!(
        unmap_leaf(EL1_GLOBAL, 4, &[(Aside1is, asid_operand(5))]),
        "ASIDE1 does not remove global entries"
    );
    assert!(!unmap_leaf(EL1_GLOBAL, 4, &[(Vmalle1is, 0)]));
    assert!(
        unmap_leaf(EL1, 4, &[(Ipas2e1is, ipa(Ttl::NONE))]),
        "stage 2 operations leave stage 1 entries"
    );
}

#[test]
fn el2_operations() {
    let va = va_operand(0, ADDR, Ttl::NONE);
    assert!(!unmap_leaf(Regime::El2, 4, &[(Vae2is, va)]));
    assert!(!unmap_leaf(Regime::El2, 4, &[(Vale2is, va)]));
    assert!(!unmap_leaf(Regime::El2, 4, &[(Alle2is, 0)]));
    assert!(
        unmap_leaf(Regime::El2, 4, &[(Vae1is, va), (Alle1is, 0)]),
        "EL1 operations leave the EL2 regime alone"
    );
    assert!(unmap_leaf(EL1, 4, &[(Alle2is, 0)]));
}

#[test]
fn only_pes_that_ran_a_context_cache_it() {
    // The table runs on PE 0 only: a local invalidation there suffices.
    let mut c = Case {
        m: Machine::new(Config {
            pes: 4,
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
    c.reg(0, Reg::VtcrEl2, 16 | 2 << 6);
    c.reg(0, Reg::VttbrEl2, 1 << 48 | L0);
    c.write(LEAF_SLOT, 0);
    c.dsb();
    c.tlbi(Ipas2e1, ipa(Ttl::NONE));
    c.ev(0, Event::Barrier(Barrier::DSB_NSH));
    c.tlbi(Vmalle1, 0);
    c.ev(0, Event::Barrier(Barrier::DSB_NSH));
    assert!(!c.stale());
}

#[test]
fn local_operations_act_on_the_issuing_pe_only() {
    assert!(unmap_leaf(
        S2,
        4,
        &[(Ipas2e1, ipa(Ttl::NONE)), (Vmalle1, 0)]
    ));
    assert!(!unmap_leaf(
        S2,
        1,
        &[(Ipas2e1, ipa(Ttl::NONE)), (Vmalle1, 0)]
    ));
    assert!(unmap_leaf(
        EL1,
        2,
        &[(Vae1, va_operand(5, ADDR, Ttl::NONE))]
    ));
    assert!(!unmap_leaf(
        EL1,
        1,
        &[(Vae1, va_operand(5, ADDR, Ttl::NONE))]
    ));
    assert!(unmap_leaf(Regime::El2, 2, &[(Alle2, 0)]));
}

fn range(base: u64, scale: u8, num: u8, ttl: u8, asid: u16) -> u64 {
    RangeOperand {
        asid,
        tg: 1,
        scale,
        num,
        ttl,
        base: base >> 12,
    }
    .encode()
}

#[test]
fn range_operations_and_their_bounds() {
    // [0, 2 pages) covers 0x1000; [0, 1 page)... NUM = 0, SCALE = 0 covers
    // two pages (2^(5*0+1)), so start one page further to miss it.
    assert!(!unmap_leaf(
        S2,
        4,
        &[(Ripas2e1is, range(0, 0, 0, 0, 0)), (Vmalle1is, 0)]
    ));
    assert!(unmap_leaf(
        S2,
        4,
        &[(Ripas2e1is, range(0x2000, 0, 0, 0, 0)), (Vmalle1is, 0)]
    ));
    assert!(!unmap_leaf(
        S2,
        4,
        &[(Ripas2le1is, range(0, 0, 0, 3, 0)), (Vmalle1is, 0)]
    ));
    assert!(
        unmap_leaf(
            S2,
            4,
            &[(Ripas2le1is, range(0, 0, 0, 2, 0)), (Vmalle1is, 0)]
        ),
        "range TTL says level 2"
    );
    assert!(!unmap_leaf(EL1, 4, &[(Rvae1is, range(0, 1, 3, 0, 5))]));
    assert!(unmap_leaf(EL1, 4, &[(Rvae1is, range(0, 1, 3, 0, 6))]));
    assert!(!unmap_leaf(EL1, 4, &[(Rvaae1is, range(0, 1, 3, 0, 6))]));
    assert!(!unmap_leaf(EL1, 4, &[(Rvale1is, range(0, 0, 0, 0, 5))]));
    assert!(unmap_table(EL1, &[(Rvaale1is, range(0, 0, 0, 0, 5))]));
    // TG = 0b00 is reserved: nothing need be removed.
    let reserved = range(0, 0, 0, 0, 5) & !(0b11 << 46);
    assert!(unmap_leaf(EL1, 4, &[(Rvae1is, reserved)]));
}

#[test]
fn ordering_of_writes_tlbis_and_dsbs() {
    // TLBI before the DSB that makes the invalid descriptor visible: a
    // walker may refill from the old value after the TLBI.
    let mut c = Case::new(S2, 4);
    c.write(LEAF_SLOT, 0);
    c.tlbi(Vmalls12e1is, 0);
    c.dsb();
    assert!(c.stale());
    // DSB ISHST does not complete a TLBI.
    let mut c = Case::new(S2, 4);
    c.write(LEAF_SLOT, 0);
    c.dsb();
    c.tlbi(Vmalls12e1is, 0);
    c.ev(0, Event::Barrier(Barrier::DSB_ISHST));
    assert!(c.stale());
    // DSB NSH does not complete a broadcast TLBI.
    let mut c = Case::new(S2, 4);
    c.write(LEAF_SLOT, 0);
    c.dsb();
    c.tlbi(Vmalls12e1is, 0);
    c.ev(0, Event::Barrier(Barrier::DSB_NSH));
    assert!(c.stale());
    // VMALLE1IS issued before the IPA invalidation completed: a walk may
    // rebuild the combined entry from the stage-2-only one in between.
    let mut c = Case::new(S2, 4);
    c.write(LEAF_SLOT, 0);
    c.dsb();
    c.tlbi(Ipas2e1is, ipa(Ttl::NONE));
    c.tlbi(Vmalle1is, 0);
    c.dsb();
    assert!(c.stale());
    // The full sequence.
    let mut c = Case::new(S2, 4);
    c.write(LEAF_SLOT, 0);
    c.ev(0, Event::Barrier(Barrier::DSB_ISHST));
    c.tlbi(Vmalls12e1is, 0);
    c.dsb();
    assert!(!c.stale());
}

#[test]
fn relaxing_permissions_needs_no_invalidation_restricting_does() {
    // Stage 2 rw -> ro (S2AP write bit 7 cleared): stale until invalidated.
    let mut c = Case::new(S2, 4);
    c.write(LEAF_SLOT, (0x4000_0000 | 0x7ff) & !(1 << 7));
    c.dsb();
    assert!(c.stale());
    // ro -> rw: the old entry is stricter, a spurious fault at worst.
    let mut c = Case::new(S2, 4);
    c.write(LEAF_SLOT, (0x4000_0000 | 0x7ff) & !(1 << 7));
    c.dsb();
    c.tlbi(Vmalls12e1is, 0);
    c.dsb();
    c.write(LEAF_SLOT, 0x4000_0000 | 0x7ff);
    c.dsb();
    // A guest write may hit the stricter entry: a spurious fault, after
    // which the handler's local invalidation lets the retry through.
    let need = vmsa_model::desc::grant::WRITE;
    assert_eq!(
        c.m.access(2, Key::Vmid(1), ADDR, need),
        Access::SpuriousFault
    );
    assert_eq!(c.m.costs().spurious_faults, 1);
    assert_eq!(
        c.m.access(2, Key::Vmid(1), ADDR, need),
        Access::Ok { pa: 0x4000_0000 }
    );
    // Restricting without invalidation: the guest may still write.
    c.write(LEAF_SLOT, (0x4000_0000 | 0x7ff) & !(1 << 7));
    c.dsb();
    assert_eq!(
        c.m.access(1, Key::Vmid(1), ADDR, need),
        Access::Stale { pa: 0x4000_0000 }
    );
    assert!(c.stale());
}

#[test]
fn break_before_make() {
    // Valid to valid with another output address: a violation at the write.
    let mut c = Case::new(S2, 4);
    c.write(LEAF_SLOT, 0x5000_0000 | 0x7ff);
    assert_eq!(
        c.m.violations()[0].kind,
        ViolationKind::BbmValidToValid,
        "{:?}",
        c.m.violations()
    );
    // Invalid, DSB, DSB, new: the old entry is still cached.
    let mut c = Case::new(S2, 4);
    c.write(LEAF_SLOT, 0);
    c.dsb();
    c.dsb();
    c.write(LEAF_SLOT, 0x5000_0000 | 0x7ff);
    assert_eq!(c.m.violations()[0].kind, ViolationKind::BbmUncleanToValid);
    assert!(c.m.violations()[0].to_string().contains("0x103008"));
    // Correct: invalid, DSB, TLBIs, DSB, new.
    let mut c = Case::new(S2, 4);
    c.write(LEAF_SLOT, 0);
    c.dsb();
    c.tlbi(Ipas2e1is, ipa(Ttl::NONE));
    c.dsb();
    c.tlbi(Vmalle1is, 0);
    c.dsb();
    c.write(LEAF_SLOT, 0x5000_0000 | 0x7ff);
    assert!(c.m.violations().is_empty(), "{:?}", c.m.violations());
    // Permissions may change in place.
    let mut c = Case::new(S2, 4);
    c.write(LEAF_SLOT, (0x4000_0000 | 0x7ff) & !(1 << 7));
    assert!(c.m.violations().is_empty());
}

#[test]
fn capacity_eviction_forgets_stale_entries() {
    // With room for no stale entry at all, nothing stays behind.
    let mut m = Machine::new(Config {
        pes: 2,
        capacity: Some(0),
        ..Config::default()
    });
    let mut seq = 0;
    let mut ev = |m: &mut Machine, e: Event| {
        seq += 1;
        m.step(0, &e, Origin { seq, line: 0 });
    };
    for p in [L0, L1, L2, L3] {
        ev(&mut m, Event::MemInit { pa: p, size: 4096 });
    }
    for (pa, v) in [
        (L0, L1 | 3),
        (L1, L2 | 3),
        (L2, L3 | 3),
        (LEAF_SLOT, 0x4000_07ff),
    ] {
        ev(
            &mut m,
            Event::Write {
                pa,
                value: v,
                release: false,
            },
        );
    }
    ev(
        &mut m,
        Event::SysReg {
            reg: Reg::VtcrEl2,
            value: 16 | 2 << 6,
        },
    );
    ev(
        &mut m,
        Event::SysReg {
            reg: Reg::VttbrEl2,
            value: 1 << 48 | L0,
        },
    );
    ev(
        &mut m,
        Event::Write {
            pa: LEAF_SLOT,
            value: 0,
            release: false,
        },
    );
    ev(&mut m, Event::Complete);
    assert!(m.violations().is_empty());
    assert_eq!(m.stale_runs(), 0);
}

/// A fully local flush (`DSB NSH`, non-shareable TLBIs, `DSB NSH`, as
/// Linux's local flushes) of a stage 2 page whose VMID ran on the first
/// `runners` of two PEs: whether a stale entry remains.
fn local_unmap(runners: usize) -> bool {
    let mut c = Case::run_on(Regime::Stage2, 2, runners);
    c.write(LEAF_SLOT, 0);
    c.ev(0, Event::Barrier(Barrier::DSB_NSH));
    c.tlbi(Ipas2e1, ipa(Ttl::NONE));
    c.ev(0, Event::Barrier(Barrier::DSB_NSH));
    c.tlbi(Vmalle1, 0);
    c.ev(0, Event::Barrier(Barrier::DSB_NSH));
    c.stale()
}

#[test]
fn a_local_flush_of_a_tag_only_the_issuer_ran_is_clean() {
    assert!(!local_unmap(1));
}

#[test]
fn a_local_flush_of_a_tag_another_pe_ran_is_stale() {
    assert!(local_unmap(2));
}

/// Collateral: the correct entries an invalidation takes from every PE it
/// reaches (each refilled later), counted from the tables: one per
/// translation it names that the tables still hold, none for an address
/// they do not map.
#[test]
fn collateral_counts_the_translations_an_invalidation_takes() {
    let taken = |regime: Regime, op: TlbiOp, operand: u64| {
        let mut c = Case::new(regime, 4);
        let before = c.m.costs().collateral;
        c.tlbi(op, operand);
        c.dsb();
        c.m.costs().collateral - before
    };
    let unmapped = ADDR + 0x1000;
    // One page, mapped: its entry on each of the 4 PEs.
    assert_eq!(taken(S2, Ipas2e1is, ipa(Ttl::NONE)), 4);
    assert_eq!(taken(EL1, Vale1is, va_operand(5, ADDR, Ttl::NONE)), 4);
    // One page, not mapped: nothing.
    assert_eq!(taken(S2, Ipas2e1is, ipa_operand(unmapped, Ttl::NONE)), 0);
    assert_eq!(taken(EL1, Vale1is, va_operand(5, unmapped, Ttl::NONE)), 0);
    // A range over both: the one mapped page.
    assert_eq!(taken(EL1, Rvale1is, range(0, 0, 1, 0, 5)), 4);
    // The whole VMID: the one leaf, stage 2 and combined entries.
    assert_eq!(taken(S2, Vmalls12e1is, 0), 8);
}
