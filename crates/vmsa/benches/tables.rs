//! Map, protect and unmap 1 GiB of 4 KiB pages on an inactive stage 1
//! table, with vmsa and with aarch64-paging, in one run.
//!
//! Groups `map_1g_4k`, `protect_1g_4k`, `unmap_1g_4k`; functions `vmsa`
//! and `aarch64-paging`. Each iteration starts from a freshly built table
//! (built outside the timed part). The table-page counts of both are
//! printed once: the minimum for 1 GiB of 4 KiB pages under a level 1
//! root is 1 + 1 + 512 = 514.
//!
//! A `floor` function in `map_1g_4k` and `protect_1g_4k` writes the same
//! descriptors into a zeroed array with nothing else (no walk, no checks,
//! no report): the physical limit, for the distance vmsa is from it.
//!
//! Group `parallel_faults`: two threads fault in disjoint halves (8192
//! pages each) of 64 MiB of one live stage 2 table, one `map_shared` per
//! page with effects recorded per thread, the lock taken per fault:
//! - `shared`: the read side of a sharded reader-writer lock
//!   (`crossbeam_utils::sync::ShardedLock`: a reader touches only its own
//!   shard's line; the exclusive side takes every shard);
//! - `shared_rwlock`: the read side of one spinning reader-writer lock
//!   (`spin::RwLock`, the shape of KVM's `mmu_lock`): the faults run at
//!   once but both readers add to one counter, whose line then bounces
//!   twice per fault;
//! - `global_lock`: the same operations under one spin mutex, serialized;
//! - `serial`: one thread makes both halves' faults with no lock at all,
//!   the cost of the faults alone.
//!
//! Group `relax_flush`, functions `64MiB`, `512MiB`, `4GiB`: a live stage 2
//! table mapping that much RAM in 4 KiB pages (built outside the timed
//! part); one iteration makes one page in the middle read-only and
//! flushes, then makes it writable again and flushes, with the default
//! planner. The time must not grow with the table: pricing a flush reads
//! the table's kept mapped-leaf count, it never walks the table.

use std::cell::Cell;
use std::hint::black_box;
use std::ptr::NonNull;

use aarch64_paging::descriptor::{El1Attributes, PhysicalAddress};
use aarch64_paging::paging::{Constraints, El1And0, MemoryRegion, PageTable, Translation, VaRange};
use aarch64_paging::Mapping;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use vmsa::{
    Arena, Asid, Barrier, CacheOp, Direct, Effects, El1Stage1, Geometry, Granule, Ipa, MapOptions,
    Pa, PageCache, PageEvent, Recorder, S2ap, Stage1Attrs, Stage2, Stage2Attrs, SysReg, Table,
    TlbiOp, Va, Vmid,
};

const G1: u64 = 1 << 30;

// ---- vmsa ----

fn vmsa_empty() -> Table<El1Stage1, Arena> {
    let g = Geometry::stage1(Granule::K4, 39).unwrap();
    Table::new(
        El1Stage1::new(Asid(1)),
        g,
        Arena::new(Pa(0x8000_0000), 600),
        &mut Direct,
    )
    .unwrap()
}

fn vmsa_rw() -> Stage1Attrs {
    Stage1Attrs::normal_rw(0)
}

fn vmsa_mapped() -> Table<El1Stage1, Arena> {
    let mut t = vmsa_empty();
    t.map(
        Va(0)..Va(G1),
        Ipa(0),
        vmsa_rw(),
        MapOptions::PAGES,
        &mut Direct,
    )
    .unwrap();
    t
}

// ---- aarch64-paging ----

thread_local! {
    static AP_TABLES: Cell<usize> = const { Cell::new(0) };
}

/// Heap tables, identity "physical" addresses, counting live tables.
struct HeapTranslation;

impl Translation<El1Attributes> for HeapTranslation {
    fn allocate_table(&mut self) -> (NonNull<PageTable<El1Attributes>>, PhysicalAddress) {
        let t = PageTable::new();
        AP_TABLES.with(|c| c.set(c.get() + 1));
        (t, PhysicalAddress(t.as_ptr() as usize))
    }

    unsafe fn deallocate_table(&mut self, page_table: NonNull<PageTable<El1Attributes>>) {
        AP_TABLES.with(|c| c.set(c.get() - 1));
        let layout = std::alloc::Layout::new::<PageTable<El1Attributes>>();
        // SAFETY: allocated by PageTable::new with the global allocator and
        // this layout; aarch64-paging frees each table once.
        unsafe { std::alloc::dealloc(page_table.as_ptr().cast(), layout) };
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<El1Attributes>> {
        NonNull::new(pa.0 as *mut PageTable<El1Attributes>).expect("null table")
    }
}

type ApMapping = Mapping<HeapTranslation, El1And0>;

fn ap_flags() -> El1Attributes {
    El1Attributes::VALID
        | El1Attributes::ATTRIBUTE_INDEX_0
        | El1Attributes::INNER_SHAREABLE
        | El1Attributes::ACCESSED
        | El1Attributes::NON_GLOBAL
        | El1Attributes::PXN
        | El1Attributes::UXN
}

fn ap_region() -> MemoryRegion {
    MemoryRegion::new(0, G1 as usize)
}

fn ap_empty() -> ApMapping {
    Mapping::with_asid_and_va_range(HeapTranslation, 1, 1, El1And0, VaRange::Lower)
}

fn ap_mapped() -> ApMapping {
    let mut m = ap_empty();
    m.map_range(
        &ap_region(),
        PhysicalAddress(0),
        ap_flags(),
        Constraints::NO_BLOCK_MAPPINGS,
    )
    .unwrap();
    m
}

// ---- floor: the same descriptors, written into zeroed memory ----

/// 514 zeroed table pages (root, one level 1 table, 512 last-level
/// tables), as one array.
fn floor_empty() -> Vec<u64> {
    vec![0u64; 514 * 512]
}

/// The descriptors vmsa's `map` of 1 GiB of pages writes, in the order a
/// walker would link them: no walking, no checks, no bookkeeping. The
/// physical limit for producing that table.
#[inline(never)]
fn floor_map(mem: &mut [u64]) {
    let base = mem.as_ptr() as u64;
    let attrs = 0x0060_0000_0000_0743; // a stage 1 RW page's attribute bits
    let (root, l2) = mem.split_at_mut(512);
    let (l2, l3) = l2.split_at_mut(512);
    root[0] = (base + 512 * 8) | 3;
    for (i, d) in l2.iter_mut().enumerate() {
        *d = (base + (1024 + i as u64 * 512) * 8) | 3;
    }
    for (i, d) in l3.iter_mut().enumerate() {
        *d = (i as u64) << 12 | attrs;
    }
    black_box(mem);
}

/// The descriptors `protect` of the same 1 GiB rewrites (read-only: AP[2]).
#[inline(never)]
fn floor_protect(mem: &mut [u64]) {
    for d in &mut mem[1024..] {
        *d |= 1 << 7;
    }
    black_box(mem);
}

fn report_table_pages() {
    let t = vmsa_mapped();
    let vmsa_pages = t.table_pages().len();
    let before = AP_TABLES.with(|c| c.get());
    let m = ap_mapped();
    let ap_pages = AP_TABLES.with(|c| c.get()) - before; // its root included
    drop(m);
    eprintln!("table pages for 1 GiB of 4 KiB pages: vmsa {vmsa_pages}, aarch64-paging {ap_pages} (minimum 514)");
}

fn bench(c: &mut Criterion) {
    report_table_pages();

    let mut g = c.benchmark_group("map_1g_4k");
    g.sample_size(20);
    g.bench_function("vmsa", |b| {
        b.iter_batched(
            vmsa_empty,
            |mut t| {
                t.map(
                    Va(0)..Va(G1),
                    Ipa(0),
                    vmsa_rw(),
                    MapOptions::PAGES,
                    &mut Direct,
                )
                .unwrap();
                t
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("floor", |b| {
        b.iter_batched(
            floor_empty,
            |mut mem| {
                floor_map(&mut mem);
                mem
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("aarch64-paging", |b| {
        b.iter_batched(
            ap_empty,
            |mut m| {
                m.map_range(
                    &ap_region(),
                    PhysicalAddress(0),
                    ap_flags(),
                    Constraints::NO_BLOCK_MAPPINGS,
                )
                .unwrap();
                m
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("protect_1g_4k");
    g.sample_size(20);
    g.bench_function("vmsa", |b| {
        b.iter_batched(
            vmsa_mapped,
            |mut t| {
                black_box(
                    t.protect(Va(0)..Va(G1), vmsa_rw().read_only(), &mut Direct)
                        .unwrap(),
                );
                t
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("floor", |b| {
        b.iter_batched(
            || {
                let mut mem = floor_empty();
                floor_map(&mut mem);
                mem
            },
            |mut mem| {
                floor_protect(&mut mem);
                mem
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("aarch64-paging", |b| {
        b.iter_batched(
            ap_mapped,
            |mut m| {
                m.modify_range(&ap_region(), &|_, d| {
                    if d.is_table() || !d.flags().contains(El1Attributes::VALID) {
                        return Ok(());
                    }
                    d.set(d.output_address(), d.flags() | El1Attributes::READ_ONLY)
                })
                .unwrap();
                m
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("unmap_1g_4k");
    g.sample_size(20);
    g.bench_function("vmsa", |b| {
        b.iter_batched(
            vmsa_mapped,
            |mut t| {
                black_box(t.unmap(Va(0)..Va(G1), &mut Direct).unwrap());
                t
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("aarch64-paging", |b| {
        b.iter_batched(
            ap_mapped,
            |mut m| {
                m.map_range(
                    &ap_region(),
                    PhysicalAddress(0),
                    El1Attributes::empty(),
                    Constraints::NO_BLOCK_MAPPINGS,
                )
                .unwrap();
                m
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

// ---- relax_flush ----

/// Performs descriptor stores and counts the rest: a cheap sink for a live
/// table (a `Recorder` would grow with every iteration).
#[derive(Default)]
struct Counting {
    tlbis: u64,
    barriers: u64,
}

impl Effects for Counting {
    #[inline(always)]
    fn store_descriptor(&mut self, slot: &std::sync::atomic::AtomicU64, _at: Pa, new: u64) {
        slot.store(new, std::sync::atomic::Ordering::Relaxed);
    }
    #[inline(always)]
    fn barrier(&mut self, _barrier: Barrier) {
        self.barriers += 1;
    }
    #[inline(always)]
    fn tlbi(&mut self, _op: TlbiOp, _operand: u64) {
        self.tlbis += 1;
    }
    fn write_sysreg(&mut self, _reg: SysReg, _value: u64) {}
    fn cache(&mut self, _op: CacheOp, _addr: u64) {}
    fn page_event(&mut self, _event: PageEvent) {}
}

/// A live stage 2 table mapping `bytes` of RAM at IPA 0 in 4 KiB pages.
fn live_stage2_pages(bytes: u64, fx: &mut Counting) -> Table<Stage2, Arena> {
    // Last-level tables, level 2 tables, the (concatenated) root, spare.
    let units = (bytes >> 21) + (bytes >> 30) + 16;
    let mut t = Table::new(
        Stage2::new(Vmid(1)),
        Geometry::stage2(Granule::K4, 40).unwrap(),
        Arena::new(Pa(0x80_0000_0000), units as usize),
        fx,
    )
    .unwrap();
    t.map(
        Ipa(0)..Ipa(bytes),
        Pa(0x1_0000_0000),
        Stage2Attrs::RAM,
        MapOptions::PAGES,
        fx,
    )
    .unwrap();
    t.activate(fx);
    t.flush(fx);
    assert_eq!(t.mapped_leaves(), bytes >> 12);
    t
}

/// Restrict one page and flush, relax it again and flush.
#[inline(always)]
fn relax_flush_once(t: &mut Table<Stage2, Arena>, page: u64, fx: &mut Counting) {
    let r = Ipa(page)..Ipa(page + 4096);
    black_box(
        t.protect(r.clone(), Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly), fx)
            .unwrap(),
    );
    t.flush(fx);
    black_box(t.protect(r, Stage2Attrs::RAM, fx).unwrap());
    t.flush(fx);
}

fn relax_flush(c: &mut Criterion) {
    let mut g = c.benchmark_group("relax_flush");
    g.sample_size(50);
    g.warm_up_time(std::time::Duration::from_secs(1));
    g.measurement_time(std::time::Duration::from_secs(3));
    for (name, bytes) in [
        ("64MiB", 64u64 << 20),
        ("512MiB", 512 << 20),
        ("4GiB", 4 << 30),
    ] {
        let mut fx = Counting::default();
        let mut t = live_stage2_pages(bytes, &mut fx);
        // A page in the middle, not at a table boundary.
        let page = bytes / 2 + 37 * 4096;
        let before = (fx.tlbis, fx.barriers);
        relax_flush_once(&mut t, page, &mut fx);
        eprintln!(
            "relax_flush/{name}: {} leaves, {} TLBIs and {} barriers per iteration",
            t.mapped_leaves(),
            fx.tlbis - before.0,
            fx.barriers - before.1
        );
        g.bench_function(name, |b| b.iter(|| relax_flush_once(&mut t, page, &mut fx)));
    }
    g.finish();
}

// ---- parallel_faults ----

/// Pages each of the two threads faults in (32 MiB each, disjoint halves of
/// one 64 MiB region, so the threads share the upper tables).
const FAULT_PAGES: u64 = 8192;

/// A live stage 2 table with nothing mapped, and a page cache per thread
/// holding what its faults will need.
fn faulting_table() -> (Table<Stage2, Arena>, [PageCache; 2]) {
    let mut fx = Counting::default();
    let mut t = Table::new(
        Stage2::new(Vmid(1)),
        Geometry::stage2(Granule::K4, 40).unwrap(),
        Arena::new(Pa(0x80_0000_0000), 64),
        &mut fx,
    )
    .unwrap();
    t.activate(&mut fx);
    let mut caches = [PageCache::new(), PageCache::new()];
    for c in &mut caches {
        // 16 last-level tables and a level 2 table each, at worst.
        t.topup(c, 18).unwrap();
    }
    (t, caches)
}

/// Thread `who`'s faults: one `map_shared` per page, the lock taken per
/// fault as a hypervisor's fault handler takes it.
#[inline(always)]
fn fault_in(
    who: u64,
    cache: &mut PageCache,
    fx: &mut Recorder,
    mut with_table: impl FnMut(&mut dyn FnMut(&Table<Stage2, Arena>)),
) {
    for p in who * FAULT_PAGES..(who + 1) * FAULT_PAGES {
        with_table(&mut |t| {
            let got = t
                .map_shared(
                    Ipa(0x4000_0000 + p * 4096),
                    Pa(0x1_0000_0000 + p * 4096),
                    Stage2Attrs::RAM,
                    3,
                    cache,
                    fx,
                )
                .unwrap();
            debug_assert_eq!(got, vmsa::Installed::Mapped);
        });
    }
}

/// A faulting table (and the caches) with the table behind `lock`.
fn faulting_table_behind<L>(lock: impl FnOnce(Table<Stage2, Arena>) -> L) -> (L, [PageCache; 2]) {
    let (t, caches) = faulting_table();
    (lock(t), caches)
}

/// Two threads fault in their halves, each reaching the table through
/// `with` (which takes the lock).
fn two_vcpus_fault<L: Sync>(
    vm: L,
    mut caches: [PageCache; 2],
    with: impl Fn(&L, &mut dyn FnMut(&Table<Stage2, Arena>)) + Sync,
) -> (L, [PageCache; 2]) {
    std::thread::scope(|s| {
        for (who, cache) in caches.iter_mut().enumerate() {
            let (vm, with) = (&vm, &with);
            s.spawn(move || {
                let mut fx = Recorder::new();
                fault_in(who as u64, cache, &mut fx, |f| with(vm, f));
                black_box(fx.log().len());
            });
        }
    });
    (vm, caches)
}

fn parallel_faults(c: &mut Criterion) {
    let mut g = c.benchmark_group("parallel_faults");
    g.sample_size(20);
    g.throughput(criterion::Throughput::Elements(2 * FAULT_PAGES));
    // Read side of a sharded reader-writer lock per fault: both threads
    // walk and swap at once, and neither writes a line the other reads.
    g.bench_function("shared", |b| {
        b.iter_batched(
            || faulting_table_behind(crossbeam_utils::sync::ShardedLock::new),
            |(vm, caches)| {
                two_vcpus_fault(vm, caches, |vm, f| {
                    f(&vm.read().expect("no writer panicked"))
                })
            },
            BatchSize::LargeInput,
        )
    });
    // Read side of one reader-writer lock: the faults still run at once,
    // but every acquire and release is a read-modify-write of the one
    // reader count.
    g.bench_function("shared_rwlock", |b| {
        b.iter_batched(
            || faulting_table_behind(spin::RwLock::new),
            |(vm, caches)| two_vcpus_fault(vm, caches, |vm, f| f(&vm.read())),
            BatchSize::LargeInput,
        )
    });
    // The same operations under one spinlock: the faults serialize.
    g.bench_function("global_lock", |b| {
        b.iter_batched(
            || faulting_table_behind(spin::Mutex::new),
            |(vm, caches)| two_vcpus_fault(vm, caches, |vm, f| f(&vm.lock())),
            BatchSize::LargeInput,
        )
    });
    // Both halves' faults on one thread, no lock: what the faults cost
    // with nothing shared (the thread is spawned as the others are).
    g.bench_function("serial", |b| {
        b.iter_batched(
            faulting_table,
            |(vm, mut caches)| {
                std::thread::scope(|s| {
                    s.spawn(|| {
                        for (who, cache) in caches.iter_mut().enumerate() {
                            let mut fx = Recorder::new();
                            fault_in(who as u64, cache, &mut fx, |f| f(&vm));
                            black_box(fx.log().len());
                        }
                    });
                });
                (vm, caches)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench, relax_flush, parallel_faults);
criterion_main!(benches);
