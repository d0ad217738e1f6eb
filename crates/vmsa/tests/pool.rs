//! `PagePool`: allocation and free, physical alignment of runs, exhaustion,
//! zeroing, bad frees, tables sharing one pool, and a multi-threaded
//! stress test.

use std::sync::atomic::{AtomicBool, Ordering};

use vmsa::{
    Error, Geometry, Granule, Ipa, MapOptions, Pa, PagePool, Recorder, Stage2, Stage2Attrs, Table,
    TableAllocator, Vmid,
};

const K: usize = 4096;

#[repr(C, align(4096))]
struct Page([u8; K]);

/// A region of `pages` pages filled with garbage, so zeroing shows.
fn region(pages: usize) -> Vec<Page> {
    (0..pages).map(|_| Page([0x5a; K])).collect()
}

fn pool(mem: &mut [Page], pa: u64) -> PagePool {
    // SAFETY: every test keeps `mem` alive longer than the pool and touches
    // it only through the pool.
    unsafe { PagePool::new(mem.as_mut_ptr().cast(), Pa(pa), mem.len()) }
}

fn bytes(p: &PagePool, pa: Pa, pages: usize) -> &[u8] {
    let ptr = p.virt(pa).unwrap();
    // SAFETY: the caller owns the allocation at `pa` and does not write it
    // while the slice lives.
    unsafe { std::slice::from_raw_parts(ptr.as_ptr(), pages * K) }
}

fn fill(p: &PagePool, pa: Pa, pages: usize, v: u8) {
    let ptr = p.virt(pa).unwrap();
    // SAFETY: the caller owns the allocation at `pa`.
    unsafe { std::ptr::write_bytes(ptr.as_ptr(), v, pages * K) };
}

#[test]
fn pool_allocates_frees_and_reuses() {
    let mut mem = region(8);
    let p = pool(&mut mem, 0x8000_0000);
    assert_eq!((p.base(), p.pages()), (Pa(0x8000_0000), 8));
    let a = p.allocate(1).unwrap();
    let b = p.allocate(1).unwrap();
    assert_ne!(a, b);
    assert!(p.contains(a) && p.contains(b));
    assert_eq!(p.live_pages(), 2);
    // SAFETY: `a` is unused.
    assert!(unsafe { p.free(a, 1) });
    assert_eq!(p.live_pages(), 1);
    assert_eq!(p.allocate(1), Ok(a), "the freed page comes back");
    assert_eq!(p.peak_pages(), 2);
    // SAFETY: both unused.
    unsafe {
        assert!(p.free(a, 1));
        assert!(p.free(b, 1));
    }
    assert_eq!(p.live_pages(), 0);
    assert_eq!(p.peak_pages(), 2);
    assert_eq!(p.bad_frees(), 0);
}

#[test]
fn pool_runs_are_aligned_physically() {
    for origin in [0x8000_0000u64, 0x8000_3000, 0x8003_f000] {
        let mut mem = region(1024);
        let p = pool(&mut mem, origin);
        // A single page first, so that runs cannot all start at 0.
        let one = p.allocate(1).unwrap();
        let mut runs = vec![(one, 1)];
        for n in [2usize, 4, 8, 16, 32, 64, 128, 256, 3, 5, 48] {
            let pa = p
                .allocate(n)
                .unwrap_or_else(|e| panic!("{n} at {origin:#x}: {e:?}"));
            let align = (n.next_power_of_two() * K) as u64;
            assert_eq!(pa.0 % align, 0, "{n} pages at {pa:?} (origin {origin:#x})");
            assert!(p.contains(pa) && p.contains(Pa(pa.0 + (n * K) as u64 - 1)));
            runs.push((pa, n));
        }
        // No two runs overlap.
        let mut spans: Vec<(u64, u64)> = runs
            .iter()
            .map(|&(pa, n)| (pa.0, pa.0 + (n * K) as u64))
            .collect();
        spans.sort();
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "{spans:x?}");
        for (pa, n) in runs {
            // SAFETY: unused.
            assert!(unsafe { p.free(pa, n) }, "{n} at {pa:?}");
        }
        assert_eq!(p.live_pages(), 0);
        assert_eq!(p.bad_frees(), 0);
    }
}

#[test]
fn pool_exhaustion_is_out_of_memory() {
    let mut mem = region(64);
    let p = pool(&mut mem, 0);
    let all: Vec<Pa> = (0..64).map(|_| p.allocate(1).unwrap()).collect();
    assert_eq!(p.allocate(1), Err(Error::OutOfMemory));
    assert_eq!(p.failed_allocations(), 1);
    // SAFETY: unused.
    unsafe { assert!(p.free(all[5], 1)) };
    assert_eq!(
        p.allocate(2),
        Err(Error::OutOfMemory),
        "one page free, no run of two"
    );
    assert_eq!(p.allocate(1), Ok(all[5]));
    assert_eq!(p.failed_allocations(), 2);
    // Zero pages, or more than the region, are refused without counting.
    assert_eq!(p.allocate(0), Err(Error::OutOfMemory));
    assert_eq!(p.allocate(65), Err(Error::OutOfMemory));
    assert_eq!(p.failed_allocations(), 2);
    // Through the table allocator interface too.
    let mut h = &p;
    assert_eq!(h.allocate_zeroed(Granule::K4, 1), Err(Error::OutOfMemory));
}

#[test]
fn pool_zeroes_what_it_hands_out() {
    let mut mem = region(128);
    let p = pool(&mut mem, 0x4000_0000);
    for n in [1, 4, 64] {
        let pa = p.allocate(n).unwrap();
        assert!(bytes(&p, pa, n).iter().all(|&b| b == 0), "fresh run of {n}");
        fill(&p, pa, n, 0xff);
        // SAFETY: unused now.
        unsafe { assert!(p.free(pa, n)) };
        let again = p.allocate(n).unwrap();
        assert!(
            bytes(&p, again, n).iter().all(|&b| b == 0),
            "reused run of {n}"
        );
        // SAFETY: unused.
        unsafe { assert!(p.free(again, n)) };
    }
}

#[test]
fn pool_ignores_bad_frees() {
    let mut mem = region(16);
    let p = pool(&mut mem, 0x1_0000_0000);
    let a = p.allocate(1).unwrap();
    let four = p.allocate(4).unwrap();
    // SAFETY: every free below is either of unused pages or bad, which the
    // pool ignores.
    unsafe {
        assert!(p.free(a, 1));
        assert!(!p.free(a, 1), "double free");
        assert!(!p.free(Pa(0x2000_0000), 1), "foreign address");
        assert!(!p.free(Pa(four.0 + 0x800), 1), "not page aligned");
        assert!(!p.free(Pa(four.0 + 0x1000), 2), "misaligned run");
        assert!(!p.free(Pa(0x1_0000_0000 + 15 * 0x1000), 2), "past the end");
        assert!(!p.free(four, 0), "empty");
    }
    assert_eq!(p.bad_frees(), 6);
    assert_eq!(p.live_pages(), 4);
    // The bitmap is intact: the four pages are still taken, the other 12
    // are free (3 aligned runs of 4).
    let runs: Vec<Pa> = (0..3).map(|_| p.allocate(4).unwrap()).collect();
    assert!(!runs.contains(&four));
    assert_eq!(p.allocate(1), Err(Error::OutOfMemory));
    // SAFETY: unused.
    unsafe {
        assert!(p.free(four, 4));
        assert!(!p.free(four, 4), "double free of a run");
        for r in runs {
            assert!(p.free(r, 4));
        }
    }
    assert_eq!(p.live_pages(), 0);
    // Multi-word runs: a double free is caught too.
    let mut mem = region(256);
    let p = pool(&mut mem, 0);
    let big = p.allocate(128).unwrap();
    // SAFETY: unused, then a bad free.
    unsafe {
        assert!(p.free(big, 128));
        assert!(!p.free(big, 128));
    }
    assert_eq!((p.live_pages(), p.bad_frees()), (0, 1));
    // A multi-word free reaching past the region's end (whose bits past
    // the end are reserved) is refused, even when every page is taken.
    let mut mem = region(194);
    let p = pool(&mut mem, 0);
    let all: Vec<Pa> = (0..194).map(|_| p.allocate(1).unwrap()).collect();
    // SAFETY: a bad free, ignored.
    assert!(!unsafe { p.free(Pa(128 * K as u64), 65) });
    assert_eq!(p.allocate(1), Err(Error::OutOfMemory));
    for pa in all {
        // SAFETY: unused.
        assert!(unsafe { p.free(pa, 1) });
    }
    assert_eq!(p.live_pages(), 0);
}

#[test]
fn pool_serves_concatenated_roots() {
    let mut mem = region(64);
    let p = pool(&mut mem, 0x8000_1000);
    let mut h = &p;
    // Sixteen concatenated root pages: aligned to 64 KiB.
    let pa = h.allocate_zeroed(Granule::K4, 16).unwrap();
    assert_eq!(pa.0 % 0x1_0000, 0);
    assert_eq!(p.live_pages(), 16);
    assert_eq!(
        h.to_ptr(pa).as_ptr().cast::<u8>(),
        p.virt(pa).unwrap().as_ptr()
    );
    // SAFETY: unused.
    unsafe { h.deallocate(pa, Granule::K4, 16) };
    assert_eq!(p.live_pages(), 0);
    // A stage 2 table with a concatenated root lives in the pool too.
    let mut fx = Recorder::new();
    let g = Geometry::stage2(Granule::K4, 40).unwrap();
    let t = Table::new(Stage2::new(Vmid(1)), g, &p, &mut fx).unwrap();
    assert_eq!(t.root().0 % (g.root_pages() * K) as u64, 0);
    drop(t);
    assert_eq!(p.live_pages(), 0);
}

/// Tables are `Send` with a pool handle, and several tables on several
/// threads share one pool.
#[test]
fn tables_on_several_threads_share_one_pool() {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PagePool>();
    assert_send::<Table<Stage2, &PagePool>>();

    let mut mem = region(2048);
    let p = pool(&mut mem, 0x8000_0000);
    let g = Geometry::stage2(Granule::K4, 40).unwrap();
    std::thread::scope(|s| {
        for vm in 0..4u16 {
            let p = &p;
            s.spawn(move || {
                let mut fx = Recorder::new();
                let mut t = Table::new(Stage2::new(Vmid(vm + 1)), g, p, &mut fx).unwrap();
                t.activate(&mut fx);
                let base = u64::from(vm) << 32;
                for round in 0..20u64 {
                    let at = base + round * (4 << 20);
                    t.map(
                        Ipa(at)..Ipa(at + (4 << 20)),
                        Pa(0x10_0000_0000),
                        Stage2Attrs::RAM,
                        MapOptions::PAGES,
                        &mut fx,
                    )
                    .unwrap();
                    if round % 3 == 2 {
                        t.unmap(Ipa(at - (4 << 20))..Ipa(at + (2 << 20)), &mut fx)
                            .unwrap();
                    }
                    t.flush(&mut fx);
                    fx.take();
                }
                assert_eq!(t.mapped_leaves(), t.mappings().count() as u64);
                t.unmap(Ipa(base)..Ipa(base + (1 << 30)), &mut fx).unwrap();
                t.flush(&mut fx);
                assert_eq!(
                    t.table_pages().len(),
                    g.root_pages(),
                    "only the root is left"
                );
            });
        }
    });
    assert_eq!(p.live_pages(), 0);
    assert!(p.peak_pages() > 4 * 3);
    assert_eq!(p.bad_frees(), 0);
}

/// 4 threads allocate and free runs of 1, 2 and 4 pages concurrently; an
/// ownership flag per page catches a page handed out twice, a marker
/// written into every page catches a page zeroed or written under its
/// owner.
#[test]
fn pool_stress_on_four_threads() {
    const PAGES: usize = 128;
    const THREADS: usize = 4;
    const ROUNDS: usize = 20_000;
    let mut mem = region(PAGES);
    let p = pool(&mut mem, 0x8000_0000);
    let owned: Vec<AtomicBool> = (0..PAGES).map(|_| AtomicBool::new(false)).collect();
    let index = |pa: Pa| ((pa.0 - 0x8000_0000) as usize) / K;
    let flags = |pa: Pa, n: usize| &owned[index(pa)..index(pa) + n];
    std::thread::scope(|s| {
        for id in 0..THREADS {
            let p = &p;
            s.spawn(move || {
                let mut held: Vec<(Pa, usize)> = Vec::new();
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ id as u64;
                let marker = 0x10 + id as u8;
                for _ in 0..ROUNDS {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let n = 1 << (rng % 3);
                    if held.len() < 12 && rng % 5 != 0 {
                        match p.allocate(n) {
                            Ok(pa) => {
                                assert_eq!(pa.0 % (n * K) as u64, 0);
                                for f in flags(pa, n) {
                                    assert!(
                                        !f.swap(true, Ordering::AcqRel),
                                        "a page of {pa:?} handed out twice"
                                    );
                                }
                                assert!(bytes(p, pa, n).iter().all(|&b| b == 0));
                                fill(p, pa, n, marker);
                                held.push((pa, n));
                            }
                            Err(e) => assert_eq!(e, Error::OutOfMemory),
                        }
                    } else if !held.is_empty() {
                        let (pa, n) = held.swap_remove(rng as usize % held.len());
                        assert!(
                            bytes(p, pa, n).iter().all(|&b| b == marker),
                            "a page of {pa:?} was written under its owner"
                        );
                        for f in flags(pa, n) {
                            assert!(f.swap(false, Ordering::AcqRel));
                        }
                        // SAFETY: this thread owned the run and is done with it.
                        assert!(unsafe { p.free(pa, n) });
                    }
                }
                for (pa, n) in held {
                    for f in flags(pa, n) {
                        assert!(f.swap(false, Ordering::AcqRel));
                    }
                    // SAFETY: as above.
                    assert!(unsafe { p.free(pa, n) });
                }
            });
        }
    });
    assert_eq!(p.live_pages(), 0);
    assert_eq!(p.bad_frees(), 0);
    assert!(p.peak_pages() > 0 && p.peak_pages() <= PAGES);
    assert!(owned.iter().all(|o| !o.load(Ordering::Relaxed)));
}
