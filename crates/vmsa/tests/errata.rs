//! Errata and capabilities on the paths where a table issues TLBIs itself
//! (vcpu_load's local flush, the spurious-fault path, the VMID switch for
//! a VMID that is not loaded) and in `Basic`: the repeat-TLBI workaround
//! on each, and `speculative_at` deciding whether the switch goes through
//! the empty root. The planner's sequence, the rollover flush and the
//! request shim have theirs next to their code.

use vmsa::plan::{Invalidator, Purpose, Space, SpaceKind};
use vmsa::tlbi::{ipa_operand, Ttl};
use vmsa::{
    Arena, Asid, Barrier, Basic, Capabilities, Change, ChangeFlags, Effect, El1Stage1, Geometry,
    Grants, Granule, Ipa, LevelSet, MapOptions, Pa, Planner, Profile, Recorder, S2ap, Stage1Attrs,
    Stage2, Stage2Attrs, SysReg, Table, TlbiOp, Va, Vmid,
};

const K: u64 = 4096;

fn caps(repeat_tlbi: bool, speculative_at: bool) -> Capabilities {
    Capabilities {
        repeat_tlbi,
        speculative_at,
        ..Capabilities::default()
    }
}

fn tlbi(op: TlbiOp, operand: u64) -> Effect {
    Effect::Tlbi { op, operand }
}

const DSB_NSH: Effect = Effect::Barrier(Barrier::DsbNsh);
const DSB_ISH: Effect = Effect::Barrier(Barrier::DsbIsh);

/// A process's stage 1 (ASID 3) run on PE 1, then on PE 2, where one page
/// is unmapped with local operations: PE 1 missed them. Returns the table
/// with the process back on no PE and PE 1 as the issuer.
fn stage1_stale_on_pe1(caps: Capabilities) -> Table<El1Stage1, Arena> {
    let mut fx = Recorder::new();
    let mut t = Table::new(
        El1Stage1::new(Asid(3)),
        Geometry::stage1(Granule::K4, 48).unwrap(),
        Arena::new(Pa(0x8000_0000), 64),
        &mut fx,
    )
    .unwrap();
    // Refills nearly free: local invalidation always pays.
    t.set_invalidator(Box::new(Planner::new(
        caps,
        Profile {
            refill_walk: 1,
            ..Profile::NATIVE
        },
    )));
    t.set_issuer(1);
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
    t.vcpu_put(1);
    t.set_issuer(2);
    t.vcpu_load(2, &mut fx);
    fx.take();
    t.unmap(Va(0x40_0000)..Va(0x40_0000 + K), &mut fx).unwrap();
    t.flush(&mut fx);
    let log = fx.take();
    assert!(
        log.iter()
            .any(|e| matches!(e, Effect::Tlbi { op, .. } if !op.is_broadcast()))
            && log.iter().all(|e| match e {
                Effect::Tlbi { op, .. } => !op.is_broadcast(),
                _ => true,
            }),
        "the unmap on PE 2 was not invalidated locally: {log:?}"
    );
    t.vcpu_put(2);
    t.set_issuer(1);
    t
}

#[test]
fn vcpu_load_local_flush_repeats_the_tlbi_with_the_erratum() {
    for repeat in [false, true] {
        let mut t = stage1_stale_on_pe1(caps(repeat, false));
        let mut fx = Recorder::new();
        t.vcpu_load(1, &mut fx);
        let once = [tlbi(TlbiOp::Vmalle1, 0), DSB_NSH];
        let want: Vec<Effect> = if repeat {
            once.iter().chain(once.iter()).copied().collect()
        } else {
            once.to_vec()
        };
        assert_eq!(fx.log(), &want[..], "repeat_tlbi {repeat}");
        // The PE is clean now: loading it again issues nothing.
        t.vcpu_put(1);
        let mut again = Recorder::new();
        t.vcpu_load(1, &mut again);
        assert!(again.log().is_empty(), "{:?}", again.log());
    }
}

/// A live stage 2 table of VMID `vmid` with 16 read-only pages at IPA
/// 0x4000_0000.
fn stage2(vmid: u16, base: u64, invalidator: Box<dyn Invalidator>) -> Table<Stage2, Arena> {
    let mut fx = Recorder::new();
    let mut t = Table::new(
        Stage2::new(Vmid(vmid)),
        Geometry::stage2(Granule::K4, 40).unwrap(),
        Arena::new(Pa(base), 64),
        &mut fx,
    )
    .unwrap();
    t.set_invalidator(invalidator);
    t.map(
        Ipa(0x4000_0000)..Ipa(0x4000_0000 + 16 * K),
        Pa(0x1_0000_0000 + base),
        Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly),
        MapOptions::PAGES,
        &mut fx,
    )
    .unwrap();
    t.activate(&mut fx);
    t
}

#[test]
fn spurious_fault_repeats_each_local_tlbi_with_the_erratum() {
    for repeat in [false, true] {
        let c = caps(repeat, false);
        let mut t = stage2(1, 0x8000_0000, Box::new(Planner::new(c, Profile::NATIVE)));
        let page = Ipa(0x4000_2000);
        let mut fx = Recorder::new();
        // Relaxed read-only -> read/write: left to the fault path.
        t.protect(page..Ipa(page.0 + K), Stage2Attrs::RAM, &mut fx)
            .unwrap();
        t.flush(&mut fx);
        assert_eq!(fx.tlbi_count(), 0, "{:?}", fx.log());
        fx.take();
        assert!(t.spurious_fault(page, Grants::WRITE, &mut fx));
        let by_ipa = [
            tlbi(TlbiOp::Ipas2le1, ipa_operand(page.0, Ttl::NONE)),
            DSB_NSH,
        ];
        let combined = [tlbi(TlbiOp::Vmalle1, 0), DSB_NSH];
        let times = if repeat { 2 } else { 1 };
        let mut want = Vec::new();
        for batch in [&by_ipa, &combined] {
            for _ in 0..times {
                want.extend_from_slice(batch);
            }
        }
        want.push(Effect::Barrier(Barrier::Isb));
        assert_eq!(fx.log(), &want[..], "repeat_tlbi {repeat}");
    }
}

const UNMAPPED: ChangeFlags = ChangeFlags::WAS_VALID
    .union(ChangeFlags::OUTPUT_CHANGED)
    .union(ChangeFlags::RESTRICTED);

#[test]
fn basic_repeats_the_last_tlbi_of_each_batch_with_the_erratum() {
    let s2 = Space::new(SpaceKind::Stage2 { vmid: 1 });
    // Two pages unmapped: two IPAS2LE1IS, then VMALLE1IS.
    let changes = [Change {
        range: 0x1000..0x3000,
        level: 3,
        flags: UNMAPPED,
        cached_leaf_levels: LevelSet::only(3),
    }];
    for repeat in [false, true] {
        let basic = Basic::new(caps(repeat, false));
        assert_eq!(basic.capabilities(), caps(repeat, false));
        let mut fx = Recorder::new();
        assert!(basic.invalidate(&s2, Purpose::Flush, &changes, &mut || 100, &mut fx));
        let first = tlbi(TlbiOp::Ipas2le1is, ipa_operand(0x1000, Ttl::NONE));
        let second = tlbi(TlbiOp::Ipas2le1is, ipa_operand(0x2000, Ttl::NONE));
        let vmalle1is = tlbi(TlbiOp::Vmalle1is, 0);
        let want = if repeat {
            vec![
                DSB_ISH, first, second, DSB_ISH, second, DSB_ISH, vmalle1is, DSB_ISH, vmalle1is,
                DSB_ISH,
            ]
        } else {
            vec![DSB_ISH, first, second, DSB_ISH, vmalle1is, DSB_ISH]
        };
        assert_eq!(fx.log(), &want[..], "repeat_tlbi {repeat}");
    }
    // The default has no erratum.
    assert_eq!(Basic::default().capabilities(), Capabilities::default());
}

/// VM A (VMID 1) is invalidated from PE 0 while it runs VM B (VMID 2):
/// the VTTBR_EL2 values the flush writes, in order.
fn switch_writes(c: Capabilities, empty_root: Option<Pa>) -> (Vec<u64>, u64, u64) {
    let mut a = stage2(1, 0x8000_0000, Box::new(Planner::new(c, Profile::NATIVE)));
    let b = stage2(2, 0x9000_0000, Box::new(Planner::new(c, Profile::NATIVE)));
    let (own, vttbr_b) = (a.registers()[1].1, b.registers()[1].1);
    a.set_loaded_vttbr(Some(vttbr_b));
    a.set_empty_root(empty_root);
    let mut fx = Recorder::new();
    a.unmap(Ipa(0x4000_0000)..Ipa(0x4000_0000 + K), &mut fx)
        .unwrap();
    a.flush(&mut fx);
    assert!(fx.tlbi_count() > 0, "{:?}", fx.log());
    let writes = fx
        .log()
        .iter()
        .filter_map(|e| match *e {
            Effect::SysReg {
                reg: SysReg::VttbrEl2,
                value,
            } => Some(value),
            _ => None,
        })
        .collect();
    (writes, own, vttbr_b)
}

const EMPTY: Pa = Pa(0xa000_0000);

#[test]
fn with_speculative_at_the_switch_goes_through_the_empty_root() {
    let (writes, _, vttbr_b) = switch_writes(caps(false, true), Some(EMPTY));
    assert_eq!(writes, vec![1 << 48 | EMPTY.0, vttbr_b]);
}

#[test]
fn without_speculative_at_the_switch_uses_the_real_root_even_with_an_empty_one() {
    let (writes, own, vttbr_b) = switch_writes(caps(false, false), Some(EMPTY));
    assert_eq!(writes, vec![own, vttbr_b]);
    let (writes, own, vttbr_b) = switch_writes(caps(false, false), None);
    assert_eq!(writes, vec![own, vttbr_b]);
}

#[test]
fn with_speculative_at_but_no_empty_root_the_switch_falls_back_to_the_real_root() {
    let (writes, own, vttbr_b) = switch_writes(caps(false, true), None);
    assert_eq!(writes, vec![own, vttbr_b]);
}
