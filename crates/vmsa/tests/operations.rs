//! Deterministic scenarios for each operation, on live and inactive
//! tables of every regime.

mod common;

use common::{bbm_mask, bbm_violations, snapshot, table_runs, CountingReads};
use vmsa::{
    Ap, Arena, Asid, ChangeFlags, Effect, El1Stage1, El2Stage1, Error, Geometry, Granule, Ipa,
    MapOptions, Pa, PageEvent, Recorder, S2ap, Stage1Attrs, Stage2, Stage2Attrs, Table, TlbiOp, Va,
    VaRange, Vmid,
};

const K: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

/// A stage 2 table with the `Basic` invalidator, whose sequences these
/// tests spell out (the planner's choices are tested in vmsa-model).
fn stage2(ipa_bits: u8) -> (Table<Stage2, Arena>, Recorder) {
    let mut fx = Recorder::new();
    let mut t = Table::new(
        Stage2::new(Vmid(7)),
        Geometry::stage2(Granule::K4, ipa_bits).unwrap(),
        Arena::new(Pa(0x8000_0000), 2048),
        &mut fx,
    )
    .unwrap();
    t.set_invalidator(Box::new(vmsa::Basic::default()));
    (t, fx)
}

fn live_stage2() -> (Table<Stage2, Arena>, Recorder) {
    let (mut t, mut fx) = stage2(40);
    t.activate(&mut fx);
    fx.take();
    (t, fx)
}

fn ipa(r: std::ops::Range<u64>) -> std::ops::Range<Ipa> {
    Ipa(r.start)..Ipa(r.end)
}

#[test]
fn map_uses_the_largest_block_each_piece_allows() {
    let (mut t, mut fx) = stage2(40);
    // 1 GiB aligned: one level 1 block. Then 2 MiB + 4 KiB unaligned tail.
    t.map(
        ipa(G1..2 * G1),
        Pa(4 * G1),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    t.map(
        ipa(2 * G1..2 * G1 + M2 + K),
        Pa(8 * G1),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    let levels: Vec<(u64, u8)> = t.mappings().map(|m| (m.input.0, m.level)).collect();
    assert_eq!(levels, vec![(G1, 1), (2 * G1, 2), (2 * G1 + M2, 3)]);
    // Output not aligned to the block: pages only.
    t.map(
        ipa(4 * G1..4 * G1 + M2),
        Pa(K),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    assert!(t
        .mappings()
        .filter(|m| m.input.0 >= 4 * G1)
        .all(|m| m.level == 3));
    assert_eq!(
        t.translate(Ipa(4 * G1 + 5 * K + 3)).unwrap().output,
        Pa(6 * K + 3)
    );
    // Blocks forbidden.
    t.map(
        ipa(6 * G1..6 * G1 + M2),
        Pa(0),
        Stage2Attrs::RAM,
        MapOptions::PAGES,
        &mut fx,
    )
    .unwrap();
    assert_eq!(t.mappings().filter(|m| m.input.0 >= 6 * G1).count(), 512);
}

#[test]
fn bad_arguments_are_typed_errors_and_change_nothing() {
    let (mut t, mut fx) = stage2(40);
    t.map(
        ipa(0..M2),
        Pa(0),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    let before = snapshot(&t);
    let ram = Stage2Attrs::RAM;
    let o = MapOptions::default();
    assert_eq!(
        t.map(ipa(1..K), Pa(0), ram, o, &mut fx),
        Err(Error::Misaligned { value: 1 })
    );
    assert_eq!(
        t.map(ipa(K..K), Pa(0), ram, o, &mut fx),
        Err(Error::EmptyRange)
    );
    assert_eq!(
        t.map(Ipa(2 * K)..Ipa(K), Pa(0), ram, o, &mut fx),
        Err(Error::EmptyRange)
    );
    assert_eq!(
        t.map(ipa(0..K), Pa(0x10), ram, o, &mut fx),
        Err(Error::Misaligned { value: 0x10 })
    );
    assert!(matches!(
        t.map(ipa((1 << 40) - K..(1 << 40) + K), Pa(0), ram, o, &mut fx),
        Err(Error::InputOutOfRange { .. })
    ));
    assert!(matches!(
        t.map(
            ipa(M2..M2 + K),
            Pa((1 << 48) - K),
            ram,
            MapOptions {
                blocks: true,
                replace: false
            },
            &mut fx
        )
        .and_then(|_| t.map(ipa(M2 + K..M2 + 3 * K), Pa((1 << 48) - K), ram, o, &mut fx)),
        Err(Error::OutputOutOfRange { .. })
    ));
    t.unmap(ipa(M2..M2 + K), &mut fx).unwrap();
    t.flush(&mut fx);
    let before2 = snapshot(&t);
    assert_eq!(before, before2);
    assert_eq!(
        t.map(ipa(M2 - K..M2 + K), Pa(0), ram, o, &mut fx),
        Err(Error::AlreadyMapped { addr: M2 - K })
    );
    let fwb_attrs = Stage2Attrs {
        mem_attr: vmsa::MemAttr::FwbNormalWriteBack,
        ..ram
    };
    let e = t.map(ipa(M2..2 * M2), Pa(0), fwb_attrs, o, &mut fx);
    assert!(matches!(e, Err(Error::InvalidAttributes { .. })), "{e:?}");
    // The message says which field.
    assert!(e.unwrap_err().to_string().contains("MemAttr"));
    assert_eq!(
        t.split_block(Ipa(8 * M2), &mut fx),
        Err(Error::NotABlock { addr: 8 * M2 })
    );
    assert_eq!(snapshot(&t), before2);
    assert_eq!(
        t.unmap(ipa(0..3), &mut fx),
        Err(Error::Misaligned { value: 3 })
    );
}

#[test]
fn replacing_a_live_leaf_uses_break_before_make() {
    let (mut t, mut fx) = live_stage2();
    t.map(
        ipa(0x4000_0000..0x4000_0000 + K),
        Pa(0x10_0000),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    t.flush(&mut fx);
    fx.take();
    let r = t
        .map(
            ipa(0x4000_0000..0x4000_0000 + K),
            Pa(0x20_0000),
            Stage2Attrs::RAM,
            MapOptions {
                blocks: true,
                replace: true,
            },
            &mut fx,
        )
        .unwrap();
    assert_eq!(r.changes.len(), 1);
    assert!(r.changes[0]
        .flags
        .contains(ChangeFlags::OUTPUT_CHANGED | ChangeFlags::BBM_DONE));
    let log = fx.take();
    let shape: Vec<String> = log
        .iter()
        .map(|e| match e {
            Effect::Store { old, new, .. } => format!("store {} -> {}", old & 1, new & 1),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            "store 1 -> 0".to_string(),
            "dsb ish".into(),
            format!("tlbi    ipas2le1is, {:#x}", 0x4000_0000u64 >> 12),
            "dsb ish".into(),
            "tlbi    vmalle1is".into(),
            "dsb ish".into(),
            "store 0 -> 1".into(),
        ]
    );
    assert!(bbm_violations(&log, bbm_mask(true)).is_empty());
    assert!(t.outstanding().is_empty(), "BBM left nothing to invalidate");
}

#[test]
fn permission_changes_are_in_place_and_classified() {
    let (mut t, mut fx) = live_stage2();
    t.map(
        ipa(0..4 * K),
        Pa(0x10_0000),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    t.flush(&mut fx);
    fx.take();
    let ro = Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly);
    let r = t.protect(ipa(0..4 * K), ro, &mut fx).unwrap();
    assert_eq!(r.changes.len(), 1, "one merged run: {:?}", r.changes);
    let c = &r.changes[0];
    assert_eq!((c.range.clone(), c.level), (0..4 * K, 3));
    assert!(c.flags.contains(ChangeFlags::RESTRICTED) && !c.flags.contains(ChangeFlags::RELAXED));
    assert!(!c
        .flags
        .intersects(ChangeFlags::BBM_DONE | ChangeFlags::OUTPUT_CHANGED));
    let log = fx.take();
    assert_eq!(log.len(), 4, "four in-place stores, nothing else: {log:?}");
    assert_eq!(t.outstanding().len(), 1);
    // Same attributes again: no change, not reported.
    assert!(t.protect(ipa(0..4 * K), ro, &mut fx).unwrap().is_empty());
    assert!(fx.take().is_empty());
    let r = t.protect(ipa(K..2 * K), Stage2Attrs::RAM, &mut fx).unwrap();
    assert!(r.changes[0].flags.contains(ChangeFlags::RELAXED));
    assert!(!r.changes[0].flags.contains(ChangeFlags::RESTRICTED));
    // A memory-type change needs break-before-make.
    let r = t
        .protect(ipa(2 * K..3 * K), Stage2Attrs::DEVICE, &mut fx)
        .unwrap();
    assert!(r.changes[0]
        .flags
        .contains(ChangeFlags::ATTRS_CHANGED | ChangeFlags::BBM_DONE));
    assert!(bbm_violations(&fx.take(), bbm_mask(true)).is_empty());
}

#[test]
fn unmap_frees_empty_tables_only_after_the_flush() {
    let (mut t, mut fx) = live_stage2();
    let root_only = t.table_pages();
    t.map(
        ipa(G1 + K..G1 + 3 * K),
        Pa(0x10_0000),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    t.flush(&mut fx);
    assert_eq!(t.table_pages().len(), root_only.len() + 2);
    fx.take();
    let r = t.unmap(ipa(G1..2 * G1), &mut fx).unwrap();
    // The L1 entry's whole table goes at once; the report names the two
    // leaves that went with it, to be invalidated at all levels.
    assert_eq!(r.changes.len(), 1);
    assert_eq!(
        (r.changes[0].range.clone(), r.changes[0].level),
        (G1 + K..G1 + 3 * K, 3)
    );
    assert!(r.changes[0].flags.contains(ChangeFlags::TABLE_REMOVED));
    assert_eq!(r.changes[0].cached_leaf_levels, vmsa::LevelSet::only(3));
    assert_eq!(t.table_pages(), root_only);
    assert_eq!(t.pending_release().len(), 2);
    assert_eq!(
        t.allocator().live_units(),
        root_only.len() + 2,
        "not freed before the flush"
    );
    let log = fx.take();
    assert!(!log
        .iter()
        .any(|e| matches!(e, Effect::Page(PageEvent::Release { .. }))));
    t.flush(&mut fx);
    let log = fx.take();
    let first_release = log
        .iter()
        .position(|e| matches!(e, Effect::Page(PageEvent::Release { .. })))
        .unwrap();
    let last_dsb = log
        .iter()
        .rposition(|e| matches!(e, Effect::Barrier(vmsa::Barrier::DsbIsh)))
        .unwrap();
    assert!(
        last_dsb < first_release,
        "released after the invalidation completed: {log:?}"
    );
    assert!(log[..first_release].iter().any(|e| matches!(
        e,
        Effect::Tlbi {
            op: TlbiOp::Ipas2e1is,
            ..
        }
    )));
    assert_eq!(t.allocator().live_units(), root_only.len());
}

#[test]
fn partial_unmap_reclaims_the_table_it_empties() {
    let (mut t, mut fx) = live_stage2();
    t.map(
        ipa(M2..M2 + 2 * K),
        Pa(0),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    t.map(
        ipa(3 * M2..3 * M2 + K),
        Pa(0),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    let pages = t.table_pages().len();
    t.unmap(ipa(M2..M2 + K), &mut fx).unwrap();
    assert_eq!(t.table_pages().len(), pages, "table still holds a page");
    let r = t.unmap(ipa(M2 + K..M2 + 2 * K), &mut fx).unwrap();
    assert!(r
        .changes
        .iter()
        .any(|c| c.flags.contains(ChangeFlags::TABLE_REMOVED) && c.level == 2));
    assert_eq!(t.table_pages().len(), pages - 1);
    t.flush(&mut fx);
    assert_eq!(t.allocator().live_units(), t.table_pages().len());
}

#[test]
fn split_then_collapse_round_trips_on_a_live_table() {
    let (mut t, mut fx) = live_stage2();
    t.map(
        ipa(0..G1),
        Pa(G1),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    t.flush(&mut fx);
    let whole = table_runs(&t);
    let r = t.split_block(Ipa(5 * M2 + 7 * K), &mut fx).unwrap();
    assert!(r.changes[0]
        .flags
        .contains(ChangeFlags::SIZE_CHANGED | ChangeFlags::BBM_DONE));
    assert_eq!(table_runs(&t), whole);
    assert_eq!(t.translate(Ipa(5 * M2)).unwrap().level, 2);
    t.split_block(Ipa(5 * M2 + 7 * K), &mut fx).unwrap();
    assert_eq!(t.translate(Ipa(5 * M2)).unwrap().level, 3);
    assert_eq!(
        t.split_block(Ipa(5 * M2), &mut fx),
        Err(Error::NotABlock { addr: 5 * M2 })
    );
    assert_eq!(table_runs(&t), whole);
    // Change one page, collapse fails there; restore it, collapse to 1 GiB.
    let ro = Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly);
    t.protect(ipa(5 * M2..5 * M2 + K), ro, &mut fx).unwrap();
    t.collapse(ipa(0..G1), &mut fx).unwrap();
    assert_eq!(t.translate(Ipa(5 * M2 + K)).unwrap().level, 3);
    t.protect(ipa(5 * M2..5 * M2 + K), Stage2Attrs::RAM, &mut fx)
        .unwrap();
    let r = t.collapse(ipa(0..G1), &mut fx).unwrap();
    assert!(r
        .changes
        .iter()
        .all(|c| c.flags.contains(ChangeFlags::BBM_DONE)));
    assert_eq!(t.translate(Ipa(5 * M2 + K)).unwrap().level, 1);
    assert_eq!(table_runs(&t), whole);
    t.flush(&mut fx);
    assert_eq!(t.allocator().live_units(), t.table_pages().len());
    assert!(bbm_violations(fx.log(), bbm_mask(true)).is_empty());
}

#[test]
fn remapping_an_unclean_entry_invalidates_first() {
    let (mut t, mut fx) = live_stage2();
    t.map(
        ipa(0..K),
        Pa(0x10_0000),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    t.flush(&mut fx);
    t.unmap(ipa(0..K), &mut fx).unwrap();
    // No flush: the old translation may still be cached.
    t.map(
        ipa(0..K),
        Pa(0x20_0000),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    assert!(
        bbm_violations(fx.log(), bbm_mask(true)).is_empty(),
        "{:#?}",
        fx.log()
    );
}

#[test]
fn concatenated_stage2_roots() {
    let (mut t, mut fx) = stage2(42);
    assert_eq!(
        (t.geometry().start_level(), t.geometry().root_pages()),
        (1, 8)
    );
    assert_eq!(t.root().0 % (8 * K), 0);
    let top = (1u64 << 42) - G1;
    t.map(
        ipa(top..top + G1),
        Pa(0),
        Stage2Attrs::RAM,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    assert_eq!(t.translate(Ipa(top + 5)).unwrap().output, Pa(5));
    let [(vtcr, v), (vttbr, b)] = t.registers();
    assert_eq!(
        (vtcr, vttbr),
        (vmsa::SysReg::VtcrEl2, vmsa::SysReg::VttbrEl2)
    );
    assert_eq!(v & 0x3f, 22, "T0SZ");
    assert_eq!(b, (7 << 48) | t.root().0);
}

#[test]
fn stage1_el1_lower_and_upper_ranges() {
    let mut fx = Recorder::new();
    let g = Geometry::stage1(Granule::K4, 48).unwrap();
    let mut lo = Table::new(
        El1Stage1::new(Asid(9)),
        g,
        Arena::new(Pa(0x10_0000), 64),
        &mut fx,
    )
    .unwrap();
    lo.activate(&mut fx);
    let rw = Stage1Attrs::normal_rw(0);
    lo.map(
        Va(0x40_0000)..Va(0x40_2000),
        Ipa(0x9000_0000),
        rw,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    lo.flush(&mut fx);
    fx.take();
    lo.protect(Va(0x40_0000)..Va(0x40_1000), rw.read_only(), &mut fx)
        .unwrap();
    lo.flush(&mut fx);
    let tlbis: Vec<_> = fx
        .take()
        .into_iter()
        .filter(|e| matches!(e, Effect::Tlbi { .. }))
        .collect();
    assert_eq!(
        tlbis,
        vec![Effect::Tlbi {
            op: TlbiOp::Vale1is,
            operand: (9 << 48) | 0x400
        }]
    );

    let upper = El1Stage1 {
        range: VaRange::Upper,
        ..El1Stage1::new(Asid(9))
    };
    let mut hi = Table::new(upper, g, Arena::new(Pa(0x20_0000), 64), &mut fx).unwrap();
    let top = 0xffff_ffff_ffff_f000u64;
    hi.map(
        Va(top)..Va(0),
        Ipa(0x5000),
        rw,
        MapOptions::default(),
        &mut fx,
    )
    .unwrap();
    assert_eq!(hi.translate(Va(top + 8)).unwrap().output, Ipa(0x5008));
    assert!(hi.translate(Va(0x1000)).is_none());
    assert!(matches!(
        hi.map(
            Va(0x1000)..Va(0x2000),
            Ipa(0),
            rw,
            MapOptions::default(),
            &mut fx
        ),
        Err(Error::InputOutOfRange { .. })
    ));
    assert_eq!(hi.mappings().next().unwrap().input, Va(top));
}

#[test]
fn el2_regime_flushes_with_el2_operations_and_an_isb() {
    let mut fx = Recorder::new();
    let g = Geometry::stage1(Granule::K4, 39).unwrap();
    let mut t = Table::new(
        El2Stage1::default(),
        g,
        Arena::new(Pa(0x10_0000), 64),
        &mut fx,
    )
    .unwrap();
    t.activate(&mut fx);
    let rw = Stage1Attrs {
        ap: Ap::ReadWrite,
        ng: false,
        pxn: false,
        ..Stage1Attrs::normal_rw(1)
    };
    t.map(Va(0)..Va(M2), Pa(M2), rw, MapOptions::PAGES, &mut fx)
        .unwrap();
    t.unmap(Va(0)..Va(K), &mut fx).unwrap();
    fx.take();
    t.flush(&mut fx);
    let log = fx.take();
    assert!(log.iter().any(|e| matches!(
        e,
        Effect::Tlbi {
            op: TlbiOp::Vale2is,
            operand: 0
        }
    )));
    assert_eq!(log.last(), Some(&Effect::Barrier(vmsa::Barrier::Isb)));
}

#[test]
fn inactive_tables_free_at_once_and_emit_no_maintenance() {
    let (mut t, mut fx) = stage2(40);
    t.map(
        ipa(0..M2),
        Pa(0),
        Stage2Attrs::RAM,
        MapOptions::PAGES,
        &mut fx,
    )
    .unwrap();
    t.map(
        ipa(M2..2 * M2),
        Pa(0),
        Stage2Attrs::RAM,
        MapOptions::PAGES,
        &mut fx,
    )
    .unwrap();
    t.protect(ipa(0..K), Stage2Attrs::DEVICE, &mut fx).unwrap();
    t.unmap(ipa(0..M2), &mut fx).unwrap();
    assert!(t.pending_release().is_empty());
    let log = fx.take();
    assert!(
        log.iter()
            .all(|e| matches!(e, Effect::Store { .. } | Effect::Page(_))),
        "{log:?}"
    );
    t.flush(&mut fx);
    assert!(fx
        .take()
        .iter()
        .all(|e| !matches!(e, Effect::Tlbi { .. } | Effect::Barrier(_))));
}

/// Compile-time: a table with its invalidator can move between threads
/// (one table behind a lock every PE uses), and so can the policies.
#[test]
fn tables_and_invalidators_are_send() {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send::<Table<Stage2, Arena>>();
    assert_send::<Table<El1Stage1, Arena>>();
    assert_send::<Box<dyn vmsa::Invalidator>>();
    assert_send_sync::<vmsa::Planner>();
    assert_send_sync::<vmsa::Basic>();
    // And a table actually moves to another thread and back.
    let (mut t, mut fx) = live_stage2();
    let mut t = std::thread::spawn(move || {
        t.map(
            ipa(0..K),
            Pa(0),
            Stage2Attrs::RAM,
            MapOptions::PAGES,
            &mut fx,
        )
        .unwrap();
        t.flush(&mut fx);
        t
    })
    .join()
    .unwrap();
    assert_eq!(t.mapped_leaves(), 1);
    t.unmap(ipa(0..K), &mut Recorder::new()).unwrap();
}

/// Removing a whole subtree from an inactive table does not read the
/// last-level tables below it to count their leaves (the count becomes
/// unknown and `mapped_leaves` walks); `activate` recounts, and from then
/// on the count is kept: reading it touches no table page.
#[test]
fn inactive_subtree_removal_reads_no_last_level_table() {
    let mut fx = vmsa::Direct;
    let mut t = Table::new(
        Stage2::new(Vmid(7)),
        Geometry::stage2(Granule::K4, 40).unwrap(),
        CountingReads::new(Arena::new(Pa(0x8000_0000), 1100)),
        &mut fx,
    )
    .unwrap();
    t.map(
        ipa(0..G1),
        Pa(0),
        Stage2Attrs::RAM,
        MapOptions::PAGES,
        &mut fx,
    )
    .unwrap();
    t.map(
        ipa(G1..G1 + M2),
        Pa(G1),
        Stage2Attrs::RAM,
        MapOptions::PAGES,
        &mut fx,
    )
    .unwrap();
    t.allocator().reset();
    assert_eq!(t.mapped_leaves(), 512 * 512 + 512);
    assert_eq!(t.allocator().reads(), 0, "known count, not walked");

    // One level 1 entry: a level 2 table and 512 last-level tables.
    t.unmap(ipa(0..G1), &mut fx).unwrap();
    assert!(
        t.allocator().reads() < 8,
        "{} table pages touched",
        t.allocator().reads()
    );
    // Unknown now: the inactive table walks.
    assert_eq!(t.mapped_leaves(), 512);
    assert!(t.allocator().reads() > 0);

    t.activate(&mut fx);
    t.allocator().reset();
    assert_eq!(t.mapped_leaves(), 512);
    assert_eq!(t.allocator().reads(), 0, "a live table's count is kept");
    t.unmap(ipa(G1..G1 + K), &mut fx).unwrap();
    t.flush(&mut fx);
    t.allocator().reset();
    assert_eq!(t.mapped_leaves(), 511);
    assert_eq!(t.allocator().reads(), 0);
}
