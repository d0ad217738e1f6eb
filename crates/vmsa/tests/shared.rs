//! The fault path (`map_shared`, `relax_shared`) on the host: several
//! threads on one table at once, races won and lost, and what the shared
//! path refuses to do.
#![cfg(not(loom))]

use std::sync::RwLock;

use vmsa::{
    Arena, Effect, Error, Geometry, Grants, Granule, Installed, Ipa, MapOptions, Pa, PageCache,
    Recorder, Relaxed, S2ap, Stage2, Stage2Attrs, Table, Vmid,
};

const K: u64 = 4096;
const RAM: u64 = 0x4000_0000;

fn live_table(units: usize) -> (Table<Stage2, Arena>, Recorder) {
    let mut fx = Recorder::new();
    let g = Geometry::stage2(Granule::K4, 40).unwrap();
    let mut t = Table::new(
        Stage2::new(Vmid(7)),
        g,
        Arena::new(Pa(0x8000_0000), units),
        &mut fx,
    )
    .unwrap();
    t.activate(&mut fx);
    (t, fx)
}

const fn assert_sync<T: Sync + Send>() {}
const _: () = assert_sync::<Table<Stage2, Arena>>();

#[test]
fn two_threads_fill_one_region_and_nothing_is_lost_or_leaked() {
    let (mut t, _) = live_table(256);
    // Pages of two 2 MiB regions, interleaved between the threads, so both
    // race for the same level 1, 2 and 3 tables.
    const PAGES: u64 = 1024;
    let mut caches = [PageCache::new(), PageCache::new()];
    for c in &mut caches {
        t.topup(c, 8).unwrap();
    }
    let vm = RwLock::new(t);
    let stores = std::thread::scope(|s| {
        let handles: Vec<_> = caches
            .iter_mut()
            .enumerate()
            .map(|(who, cache)| {
                let vm = &vm;
                s.spawn(move || {
                    let mut fx = Recorder::new();
                    let mut mapped = 0;
                    for p in (who as u64..PAGES).step_by(2) {
                        let t = vm.read().unwrap();
                        if cache.len() < t.fault_pages(3) {
                            drop(t);
                            vm.write().unwrap().topup(cache, 8).unwrap();
                            continue;
                        }
                        let got = t
                            .map_shared(
                                Ipa(RAM + p * K),
                                Pa(0x1_0000_0000 + p * K),
                                Stage2Attrs::RAM,
                                3,
                                cache,
                                &mut fx,
                            )
                            .unwrap();
                        assert_eq!(got, Installed::Mapped, "page {p}");
                        mapped += 1;
                    }
                    assert!(
                        fx.log().iter().all(|e| !matches!(e, Effect::Tlbi { .. })),
                        "mapping an invalid entry needs no TLBI"
                    );
                    (mapped, fx.log().len())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let mut t = vm.into_inner().unwrap();
    assert_eq!(stores.iter().map(|s| s.0).sum::<u64>(), PAGES);
    for p in 0..PAGES {
        let tr = t
            .translate(Ipa(RAM + p * K))
            .expect("every fault's page is mapped");
        assert_eq!(tr.output, Pa(0x1_0000_0000 + p * K));
    }
    assert_eq!(t.mapped_leaves(), PAGES);
    // Two concatenated root pages, one level 2 and two level 3 tables:
    // lost races gave their pages back to the caches.
    let tables = t.table_pages().len();
    assert_eq!(tables, 2 + 1 + 2);
    let cached: usize = caches.iter().map(|c| c.len()).sum();
    assert_eq!(t.allocator().live_units(), tables + cached);
    for c in &mut caches {
        t.drain_cache(c);
    }
    assert_eq!(t.allocator().live_units(), tables);
    // The exclusive path still counts right after the shared one.
    t.unmap(Ipa(RAM)..Ipa(RAM + 16 * K), &mut Recorder::new())
        .unwrap();
    assert_eq!(t.mapped_leaves(), PAGES - 16);
}

#[test]
fn the_loser_of_a_race_for_one_page_sees_the_winners_entry() {
    for _ in 0..50 {
        let (mut t, _) = live_table(64);
        let mut caches = [PageCache::new(), PageCache::new()];
        for c in &mut caches {
            t.topup(c, t.fault_pages(3)).unwrap();
        }
        let t = &t;
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = caches
                .iter_mut()
                .enumerate()
                .map(|(who, cache)| {
                    s.spawn(move || {
                        t.map_shared(
                            Ipa(RAM),
                            Pa(0x1_0000_0000 + who as u64 * K),
                            Stage2Attrs::RAM,
                            3,
                            cache,
                            &mut Recorder::new(),
                        )
                        .unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winner = results.iter().position(|r| *r == Installed::Mapped);
        let winner = winner.expect("exactly one thread maps the page");
        let loser = &results[1 - winner];
        let Installed::Raced(tr) = loser else {
            panic!("both threads mapped the page: {results:?}");
        };
        assert_eq!(tr.output, Pa(0x1_0000_0000 + winner as u64 * K));
        assert_eq!(t.translate(Ipa(RAM)).unwrap().output, tr.output);
        assert_eq!(t.mapped_leaves(), 1);
    }
}

#[test]
fn an_entry_whose_removal_is_not_yet_invalidated_needs_the_exclusive_path() {
    let (mut t, mut fx) = live_table(64);
    t.map(
        Ipa(RAM)..Ipa(RAM + 4 * K),
        Pa(0x1_0000_0000),
        Stage2Attrs::RAM,
        MapOptions::PAGES,
        &mut fx,
    )
    .unwrap();
    t.flush(&mut fx);
    // Gathered: the TLBs may still hold the old entry.
    t.unmap(Ipa(RAM + K)..Ipa(RAM + 2 * K), &mut fx).unwrap();
    let mut cache = PageCache::new();
    t.topup(&mut cache, 3).unwrap();
    let before = t.translate(Ipa(RAM + K));
    assert_eq!(
        t.map_shared(
            Ipa(RAM + K),
            Pa(0x2_0000_0000),
            Stage2Attrs::RAM,
            3,
            &mut cache,
            &mut fx
        ),
        Err(Error::NeedsExclusive { addr: RAM + K })
    );
    assert_eq!(t.translate(Ipa(RAM + K)), before, "nothing changed");
    t.flush(&mut fx);
    assert_eq!(
        t.map_shared(
            Ipa(RAM + K),
            Pa(0x2_0000_0000),
            Stage2Attrs::RAM,
            3,
            &mut cache,
            &mut fx
        ),
        Ok(Installed::Mapped)
    );
    // An already mapped page is a race lost, not an error.
    assert!(matches!(
        t.map_shared(Ipa(RAM), Pa(0x2_0000_0000), Stage2Attrs::RAM, 3, &mut cache, &mut fx),
        Ok(Installed::Raced(tr)) if tr.output == Pa(0x1_0000_0000)
    ));
    t.drain_cache(&mut cache);
}

#[test]
fn bad_arguments_and_a_short_cache_change_nothing() {
    let (mut t, mut fx) = live_table(64);
    let mut cache = PageCache::new();
    // 40-bit IPA: two concatenated level 1 root pages, so a page needs a
    // level 2 and a level 3 table.
    assert_eq!(t.fault_pages(3), 2);
    t.topup(&mut cache, 1).unwrap();
    let n = fx.log().len();
    let attrs = Stage2Attrs::RAM;
    assert_eq!(
        t.map_shared(Ipa(RAM), Pa(0x1000), attrs, 3, &mut cache, &mut fx),
        Err(Error::OutOfMemory),
        "two tables are missing, one page cached"
    );
    assert_eq!(
        t.map_shared(Ipa(RAM), Pa(0x1001), attrs, 3, &mut cache, &mut fx),
        Err(Error::Misaligned { value: 0x1001 })
    );
    assert_eq!(
        t.map_shared(Ipa(RAM), Pa(0x1000), attrs, 2, &mut cache, &mut fx),
        Err(Error::Misaligned { value: 0x1000 }),
        "a 2 MiB block needs a 2 MiB aligned output"
    );
    assert_eq!(
        t.map_shared(Ipa(1 << 40), Pa(0x1000), attrs, 3, &mut cache, &mut fx),
        Err(Error::InputOutOfRange { addr: 1 << 40 })
    );
    assert!(matches!(
        t.map_shared(Ipa(RAM), Pa(0x1000), attrs, 0, &mut cache, &mut fx),
        Err(Error::UnsupportedGeometry { .. })
    ));
    assert_eq!(fx.log().len(), n, "no effect at all");
    assert_eq!(cache.len(), 1);
    assert_eq!(t.table_pages().len(), 2);
    t.topup(&mut cache, 2).unwrap();
    // A 2 MiB block through the fault path.
    assert_eq!(
        t.map_shared(Ipa(RAM), Pa(0x20_0000), attrs, 2, &mut cache, &mut fx),
        Ok(Installed::Mapped)
    );
    assert_eq!(t.translate(Ipa(RAM + 5 * K)).unwrap().level, 2);
    t.drain_cache(&mut cache);
}

#[test]
fn relaxing_is_a_swap_and_a_publish_and_refuses_to_restrict() {
    let (mut t, mut fx) = live_table(64);
    let ro = Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly);
    t.map(
        Ipa(RAM)..Ipa(RAM + 4 * K),
        Pa(0x1_0000_0000),
        ro,
        MapOptions::PAGES,
        &mut fx,
    )
    .unwrap();
    t.flush(&mut fx);
    fx.take();
    let t = &t;
    assert_eq!(
        t.relax_shared(Ipa(RAM + K + 8), Stage2Attrs::RAM, Grants::WRITE, &mut fx),
        Ok(Relaxed::Relaxed)
    );
    let log = fx.take();
    assert!(matches!(log[0], Effect::Store { .. }), "{log:?}");
    assert_eq!(
        log[1..],
        [Effect::Barrier(vmsa::Barrier::DsbIshst)],
        "{log:?}"
    );
    // The faulting PE's own stricter entry, if it wants it gone at once.
    assert!(t.spurious_fault(Ipa(RAM + K), Grants::WRITE, &mut fx));
    let log = fx.take();
    let tlbis: Vec<_> = log
        .iter()
        .filter_map(|e| match e {
            Effect::Tlbi { op, .. } => Some(*op),
            _ => None,
        })
        .collect();
    assert!(
        !tlbis.is_empty() && tlbis.iter().all(|op| !op.is_broadcast()),
        "{log:?}"
    );
    assert_eq!(
        t.translate(Ipa(RAM + K)).unwrap().attrs.s2ap,
        S2ap::ReadWrite
    );
    // Relaxed already (another PE won): nothing at all.
    assert_eq!(
        t.relax_shared(Ipa(RAM + K), Stage2Attrs::RAM, Grants::WRITE, &mut fx),
        Ok(Relaxed::AlreadyAllowed)
    );
    assert!(fx.take().is_empty());
    // Restricting, or changing the memory type, is for `protect`.
    assert_eq!(
        t.relax_shared(
            Ipa(RAM + 2 * K),
            ro.with_s2ap(S2ap::None),
            Grants::READ | Grants::WRITE,
            &mut fx
        ),
        Err(Error::NeedsExclusive { addr: RAM + 2 * K })
    );
    assert_eq!(
        t.relax_shared(
            Ipa(RAM + 2 * K),
            Stage2Attrs::DEVICE,
            Grants::WRITE,
            &mut fx
        ),
        Err(Error::NeedsExclusive { addr: RAM + 2 * K })
    );
    assert_eq!(
        t.relax_shared(Ipa(RAM + 64 * K), Stage2Attrs::RAM, Grants::WRITE, &mut fx),
        Err(Error::NotMapped { addr: RAM + 64 * K })
    );
    assert!(
        fx.log().is_empty(),
        "refusals have no effect: {:?}",
        fx.log()
    );
}

#[test]
fn threads_relax_and_map_side_by_side() {
    let (mut t, mut fx) = live_table(128);
    let ro = Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly);
    t.map(
        Ipa(RAM)..Ipa(RAM + 512 * K),
        Pa(0x1_0000_0000),
        ro,
        MapOptions::PAGES,
        &mut fx,
    )
    .unwrap();
    t.flush(&mut fx);
    let mut cache = PageCache::new();
    t.topup(&mut cache, 8).unwrap();
    let t = &t;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut fx = Recorder::new();
            for p in 0..512 {
                let r = t.relax_shared(Ipa(RAM + p * K), Stage2Attrs::RAM, Grants::WRITE, &mut fx);
                assert_eq!(r, Ok(Relaxed::Relaxed));
            }
        });
        s.spawn(|| {
            let mut fx = Recorder::new();
            for p in 512..1024 {
                let r = t.map_shared(
                    Ipa(RAM + p * K),
                    Pa(0x1_0000_0000 + p * K),
                    ro,
                    3,
                    &mut cache,
                    &mut fx,
                );
                assert_eq!(r, Ok(Installed::Mapped));
            }
        });
    });
    for p in 0..1024 {
        let tr = t.translate(Ipa(RAM + p * K)).unwrap();
        assert_eq!(tr.output, Pa(0x1_0000_0000 + p * K));
        let want = if p < 512 {
            S2ap::ReadWrite
        } else {
            S2ap::ReadOnly
        };
        assert_eq!(tr.attrs.s2ap, want, "page {p}");
    }
    assert_eq!(t.mapped_leaves(), 1024);
}
