//! The fault path's real walker under loom: every descriptor load and
//! compare-and-swap is a scheduling point (`vmsa::Slot` is loom's atomic
//! with `--cfg loom`), and loom runs every interleaving of two PEs.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p vmsa --test loom --release`
//! (`.ci/run` does, in its own target directory). Without `--cfg loom` (in
//! `cargo test --workspace`) the same tests run on std threads and
//! atomics, each body many times: a stress test, not an exhaustive one.
//!
//! Replacing the compare-and-swap with a plain store in `map_shared`
//! (`Table::map_shared` linking a table with `store_descriptor`) makes
//! `two_pes_fill_the_same_missing_tables` fail: one PE's table replaces
//! the other's and that PE's page is lost.
use std::ptr::NonNull;

#[cfg(loom)]
use loom::{sync::Arc, thread};
#[cfg(not(loom))]
use std::{sync::Arc, thread};
use vmsa::{
    Error, Geometry, Grants, Granule, Installed, Ipa, Pa, PageCache, Recorder, Relaxed, S2ap, Slot,
    Stage2, Stage2Attrs, Table, TableAllocator, Vmid,
};

const K: u64 = 4096;
const ENTRIES: usize = 512;
const BASE: u64 = 0x8000_0000;

/// Loom counts every atomic access as a branch, also those of one thread
/// (reading back whole 512-entry tables at the end): allow for them.
#[cfg(loom)]
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.max_branches = 100_000;
    b.check(f);
}

/// Without loom: the body many times on real threads.
#[cfg(not(loom))]
fn model(f: impl Fn() + Sync + Send + 'static) {
    for _ in 0..300 {
        f();
    }
}

/// Table memory made of loom atomics: `pages` 4 KiB pages at `BASE`.
struct LoomPages {
    cells: Box<[Slot]>,
    used: Vec<bool>,
    spent: Vec<bool>,
}

impl LoomPages {
    fn new(pages: usize) -> Self {
        LoomPages {
            cells: (0..pages * ENTRIES).map(|_| Slot::new(0)).collect(),
            used: vec![false; pages],
            spent: vec![false; pages],
        }
    }
}

// SAFETY: pages are handed out once and never reused, start zeroed, and `to_ptr` maps an address to the
// cell of the descriptor there, the page's cells being contiguous.
unsafe impl TableAllocator for LoomPages {
    fn allocate_zeroed(&mut self, granule: Granule, pages: usize) -> Result<Pa, Error> {
        assert_eq!(granule, Granule::K4);
        let first = (0..self.used.len())
            .find(|&i| i + pages <= self.used.len() && self.spent[i..i + pages].iter().all(|u| !u))
            .ok_or(Error::OutOfMemory)?;
        // Pages are never reused (`deallocate` only checks), so every page
        // handed out still holds the zeroes it was created with.
        for i in first..first + pages {
            self.used[i] = true;
            self.spent[i] = true;
        }
        Ok(Pa(BASE + first as u64 * K))
    }

    unsafe fn deallocate(&mut self, pa: Pa, _granule: Granule, pages: usize) {
        let first = ((pa.0 - BASE) / K) as usize;
        for u in &mut self.used[first..first + pages] {
            assert!(*u, "double free of {pa:?}");
            *u = false;
        }
    }

    fn to_ptr(&self, pa: Pa) -> NonNull<Slot> {
        let i = ((pa.0 - BASE) / 8) as usize;
        NonNull::from(&self.cells[i])
    }
}

/// A live stage 2 table with a 39-bit IPA space (one level 1 root page),
/// and one page cache per PE.
fn setup(pes: usize) -> (Table<Stage2, LoomPages>, Vec<PageCache>) {
    let mut fx = Recorder::new();
    let g = Geometry::stage2(Granule::K4, 39).unwrap();
    let mut t = Table::new(Stage2::new(Vmid(1)), g, LoomPages::new(12), &mut fx).unwrap();
    t.activate(&mut fx);
    let caches = (0..pes)
        .map(|_| {
            let mut c = PageCache::new();
            t.topup(&mut c, t.fault_pages(3)).unwrap();
            c
        })
        .collect();
    (t, caches)
}

#[test]
fn two_pes_fill_the_same_missing_tables() {
    model(|| {
        let (t, caches) = setup(2);
        let t = Arc::new(t);
        let handles: Vec<_> = caches
            .into_iter()
            .enumerate()
            .map(|(pe, mut cache)| {
                let t = t.clone();
                thread::spawn(move || {
                    let ipa = Ipa(0x4000_0000 + pe as u64 * K);
                    let pa = Pa(0x1_0000_0000 + pe as u64 * K);
                    let got = t
                        .map_shared(
                            ipa,
                            pa,
                            Stage2Attrs::RAM,
                            3,
                            &mut cache,
                            &mut Recorder::new(),
                        )
                        .unwrap();
                    assert_eq!(got, Installed::Mapped);
                    cache
                })
            })
            .collect();
        let caches: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut t = Arc::try_unwrap(t).ok().unwrap();
        for pe in 0..2u64 {
            let tr = t
                .translate(Ipa(0x4000_0000 + pe * K))
                .expect("mapping lost");
            assert_eq!(tr.output, Pa(0x1_0000_0000 + pe * K));
        }
        assert_eq!(t.mapped_leaves(), 2);
        // Root, one level 2 and one level 3 table; the losers' pages are
        // back in their caches, none is leaked.
        assert_eq!(t.table_pages().len(), 3);
        let cached: usize = caches.iter().map(|c| c.len()).sum();
        assert_eq!(cached, 2, "two pages used of four");
        for mut c in caches {
            t.drain_cache(&mut c);
        }
    });
}

#[test]
fn two_pes_race_for_one_page_and_the_loser_sees_the_winner() {
    model(|| {
        let (t, caches) = setup(2);
        let t = Arc::new(t);
        let handles: Vec<_> = caches
            .into_iter()
            .enumerate()
            .map(|(pe, mut cache)| {
                let t = t.clone();
                thread::spawn(move || {
                    let pa = Pa(0x1_0000_0000 + pe as u64 * K);
                    let got = t
                        .map_shared(
                            Ipa(0x4000_0000),
                            pa,
                            Stage2Attrs::RAM,
                            3,
                            &mut cache,
                            &mut Recorder::new(),
                        )
                        .unwrap();
                    (got, cache)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut t = Arc::try_unwrap(t).ok().unwrap();
        let won: Vec<_> = (0..2)
            .filter(|&pe| results[pe].0 == Installed::Mapped)
            .collect();
        assert_eq!(won.len(), 1, "exactly one PE maps the page");
        let winner = Pa(0x1_0000_0000 + won[0] as u64 * K);
        match results[1 - won[0]].0 {
            Installed::Raced(tr) => assert_eq!(tr.output, winner),
            other => panic!("the loser got {other:?}"),
        }
        assert_eq!(t.translate(Ipa(0x4000_0000)).unwrap().output, winner);
        assert_eq!(t.mapped_leaves(), 1);
        for (_, mut c) in results {
            t.drain_cache(&mut c);
        }
    });
}

#[test]
fn a_relaxation_and_a_map_in_one_table_both_hold() {
    model(|| {
        let (mut t, mut caches) = setup(1);
        let ro = Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly);
        let mut fx = Recorder::new();
        let mut c = caches.pop().unwrap();
        t.map_shared(Ipa(0x4000_0000), Pa(0x1_0000_0000), ro, 3, &mut c, &mut fx)
            .unwrap();
        t.topup(&mut c, 2).unwrap();
        let t = Arc::new(t);
        let relaxer = {
            let t = t.clone();
            thread::spawn(move || {
                // Two PEs take the same write fault.
                t.relax_shared(
                    Ipa(0x4000_0000),
                    Stage2Attrs::RAM,
                    Grants::WRITE,
                    &mut Recorder::new(),
                )
                .unwrap()
            })
        };
        let second = {
            let t = t.clone();
            thread::spawn(move || {
                t.relax_shared(
                    Ipa(0x4000_0000),
                    Stage2Attrs::RAM,
                    Grants::WRITE,
                    &mut Recorder::new(),
                )
                .unwrap()
            })
        };
        let got = t
            .map_shared(
                Ipa(0x4000_1000),
                Pa(0x1_0000_1000),
                ro,
                3,
                &mut c,
                &mut Recorder::new(),
            )
            .unwrap();
        assert_eq!(got, Installed::Mapped);
        let r = [relaxer.join().unwrap(), second.join().unwrap()];
        assert!(r.contains(&Relaxed::Relaxed), "{r:?}");
        let mut t = Arc::try_unwrap(t).ok().unwrap();
        assert_eq!(
            t.translate(Ipa(0x4000_0000)).unwrap().attrs.s2ap,
            S2ap::ReadWrite
        );
        assert_eq!(
            t.translate(Ipa(0x4000_1000)).unwrap().attrs.s2ap,
            S2ap::ReadOnly
        );
        t.drain_cache(&mut c);
    });
}
