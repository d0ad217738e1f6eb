//! CPU capabilities that must not change correctness, checked in the
//! model: with FEAT_nTLBPA the planner still follows stage 2 invalidation
//! by IPA with `VMALLE1IS` (the feature is about caches of walks keyed by
//! physical address, not combined stage 1+2 entries), and the repeat-TLBI
//! workaround's extra operations leave nothing stale.

use vmsa::{
    Arena, Capabilities, Effect, Geometry, Granule, Ipa, MapOptions, Pa, Planner, Profile,
    Recorder, Stage2, Stage2Attrs, Table, TlbiOp, Vmid,
};
use vmsa_model::{Config, Event, Machine, Origin, ViolationKind};

const K: u64 = 4096;

/// A live stage 2 table of VMID 1 with 16 pages at IPA 0x4000_0000,
/// installed on every PE (each may cache its entries, and combined ones),
/// invalidated by the planner for `caps`.
fn vm(m: &mut Machine, caps: Capabilities) -> Table<Stage2, Arena> {
    let mut rec = Recorder::new();
    let mut t = Table::new(
        Stage2::new(Vmid(1)),
        Geometry::stage2(Granule::K4, 40).unwrap(),
        Arena::new(Pa(0x8000_0000), 64),
        &mut rec,
    )
    .unwrap();
    t.set_invalidator(Box::new(Planner::new(caps, Profile::NATIVE)));
    t.map(
        Ipa(0x4000_0000)..Ipa(0x4000_0000 + 16 * K),
        Pa(0x1_0000_0000),
        Stage2Attrs::RAM,
        MapOptions::PAGES,
        &mut rec,
    )
    .unwrap();
    t.activate(&mut rec);
    let log = rec.take();
    m.replay(0, &log);
    let regs: Vec<_> = log
        .iter()
        .filter(|e| matches!(e, Effect::SysReg { .. }))
        .copied()
        .collect();
    for pe in 1..m.pes() {
        m.replay(pe, &regs);
    }
    t
}

/// Unmaps one page and flushes; returns the TLBIs and the model's
/// violations once the operation is declared complete.
fn unmap_one_page(caps: Capabilities) -> (Vec<TlbiOp>, Vec<ViolationKind>) {
    let mut m = Machine::new(Config::default());
    let mut t = vm(&mut m, caps);
    let mut rec = Recorder::new();
    t.unmap(Ipa(0x4000_3000)..Ipa(0x4000_4000), &mut rec)
        .unwrap();
    t.flush(&mut rec);
    let log = rec.take();
    m.replay(0, &log);
    m.step(0, &Event::Complete, Origin::default());
    let ops = log
        .iter()
        .filter_map(|e| match e {
            Effect::Tlbi { op, .. } => Some(*op),
            _ => None,
        })
        .collect();
    (ops, m.violations().iter().map(|v| v.kind).collect())
}

#[test]
fn with_ntlbpa_the_by_ipa_sequence_keeps_vmalle1is_and_nothing_is_stale() {
    let caps = Capabilities {
        ntlbpa: true,
        ..Capabilities::default()
    };
    let (ops, violations) = unmap_one_page(caps);
    assert_eq!(ops, vec![TlbiOp::Ipas2le1is, TlbiOp::Vmalle1is]);
    assert!(violations.is_empty(), "{violations:?}");
    // The same sequence as without the feature.
    assert_eq!(unmap_one_page(Capabilities::default()).0, ops);
}

#[test]
fn the_repeat_tlbi_workaround_leaves_nothing_stale() {
    let caps = Capabilities {
        repeat_tlbi: true,
        ..Capabilities::default()
    };
    let (ops, violations) = unmap_one_page(caps);
    assert_eq!(
        ops,
        vec![
            TlbiOp::Ipas2le1is,
            TlbiOp::Ipas2le1is,
            TlbiOp::Vmalle1is,
            TlbiOp::Vmalle1is
        ]
    );
    assert!(violations.is_empty(), "{violations:?}");
}
