//! Map, protect and unmap 1 GiB of 4 KiB pages on an inactive stage 1
//! table, with vmsa and with aarch64-paging, in one run.
//!
//! Groups `map_1g_4k`, `protect_1g_4k`, `unmap_1g_4k`; functions `vmsa`
//! and `aarch64-paging`. Each iteration starts from a freshly built table
//! (built outside the timed part). The table-page counts of both are
//! printed once: the minimum for 1 GiB of 4 KiB pages under a level 1
//! root is 1 + 1 + 512 = 514.

use std::cell::Cell;
use std::hint::black_box;
use std::ptr::NonNull;

use aarch64_paging::descriptor::{El1Attributes, PhysicalAddress};
use aarch64_paging::paging::{Constraints, El1And0, MemoryRegion, PageTable, Translation, VaRange};
use aarch64_paging::Mapping;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use vmsa::{
    Arena, Asid, Direct, El1Stage1, Geometry, Granule, Ipa, MapOptions, Pa, Stage1Attrs, Table, Va,
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

criterion_group!(benches, bench);
criterion_main!(benches);
