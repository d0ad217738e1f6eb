//! Each baseline's exact maintenance (TLBIs with their operands, barriers,
//! in order) for the cases its source handles: unmapping a page, a 2 MiB
//! block, a range over its threshold; restricting; relaxing; tearing down
//! a retired address space. The tables are real vmsa tables; only what
//! the policy itself emits is compared (see `common`).

mod common;

use common::*;
use vmsa::tlbi::{va_operand, TlbiOp, Ttl};
use vmsa::{Capabilities, Effect};

/// The CPU `vmsa compare` assumes: FEAT_TLBIRANGE and FEAT_TTL.
fn v84() -> Capabilities {
    Capabilities::armv8_4()
}

/// FEAT_TTL but no FEAT_TLBIRANGE.
fn no_range() -> Capabilities {
    Capabilities {
        tlbi_range: false,
        ttl: true,
        ..Capabilities::default()
    }
}

fn cat(parts: Vec<Vec<Effect>>) -> Vec<Effect> {
    parts.into_iter().flatten().collect()
}

fn pages(from: u64, n: u64) -> Vec<u64> {
    (0..n).map(|i| from + i * K).collect()
}

/// 600 pages from G + 64 KiB: 576 (9 units of 64) and 24 (12 units of 2).
const RANGE_BASE: u64 = G + 16 * K;
const RANGE_TAIL: u64 = RANGE_BASE + 576 * K;

fn check(policy: &str, caps: Capabilities, on: On, case: Case, want: Vec<Effect>) {
    let got = run(policy, caps, case, on);
    pin(&format!("{policy} {on:?} {case:?}"), got, want);
}

#[test]
fn broadcast_flushes_the_whole_vmid_after_every_change() {
    for case in [
        Case::Page,
        Case::Block,
        Case::Range,
        Case::Protect,
        Case::Relax,
        Case::Teardown,
    ] {
        check(
            "broadcast",
            v84(),
            On::Stage2,
            case,
            vec![ish(), vmalls12e1is(), ish()],
        );
        check(
            "broadcast",
            v84(),
            On::Stage1,
            case,
            vec![ish(), vmalle1is(), ish()],
        );
    }
}

#[test]
fn elfuse_pr24_widens_to_2_mib_and_broadcasts() {
    for case in [
        Case::Page,
        Case::Block,
        Case::Range,
        Case::Protect,
        Case::Relax,
        Case::Teardown,
    ] {
        check(
            "elfuse-pr24",
            v84(),
            On::Stage1,
            case,
            vec![ish(), vmalle1is(), ish()],
        );
    }
}

#[test]
fn elfuse_pr65_pages_up_to_16_then_one_range_operand() {
    let e = |case, ops: Vec<Effect>| {
        check(
            "elfuse-pr65",
            v84(),
            On::Stage1,
            case,
            cat(vec![vec![ish()], ops, vec![ish()]]),
        )
    };
    e(Case::Page, vec![va(TlbiOp::Vae1is, G + K, Ttl::NONE)]);
    e(
        Case::Block,
        vec![tlbi(TlbiOp::Rvae1is, range(1, G, 1, 7, 0))],
    );
    // 600 pages, rounded up to 10 units of 64.
    e(
        Case::Range,
        vec![tlbi(TlbiOp::Rvae1is, range(1, RANGE_BASE, 1, 9, 0))],
    );
    e(
        Case::Protect,
        vec![
            va(TlbiOp::Vae1is, G + K, Ttl::NONE),
            va(TlbiOp::Vae1is, G + 2 * K, Ttl::NONE),
        ],
    );
    e(Case::Relax, vec![va(TlbiOp::Vae1is, G + K, Ttl::NONE)]);
    // Not dead-aware: the union of everything, G to 2 GiB + 4 MiB, in 5
    // units of 2^16 pages.
    e(
        Case::Teardown,
        vec![tlbi(TlbiOp::Rvae1is, range(1, G, 3, 4, 0))],
    );
    // Without FEAT_TLBIRANGE, over 16 pages: broadcast.
    check(
        "elfuse-pr65",
        Capabilities::default(),
        On::Stage1,
        Case::Range,
        vec![ish(), vmalle1is(), ish()],
    );
}

#[test]
fn linux_gathers_into_one_range_flush_per_mmu_gather() {
    let l = |caps, case, ops: Vec<Effect>| {
        check(
            "linux",
            caps,
            On::Stage1,
            case,
            cat(vec![vec![ishst()], ops, vec![ish()]]),
        )
    };
    // Last-level forms, the level in the hint (FEAT_TTL) or the range
    // operand's TTL field.
    l(v84(), Case::Page, vec![va(TlbiOp::Vale1is, G + K, ttl(3))]);
    l(
        v84(),
        Case::Block,
        vec![tlbi(TlbiOp::Rvale1is, range(1, G, 1, 7, 2))],
    );
    l(
        v84(),
        Case::Range,
        vec![
            tlbi(TlbiOp::Rvale1is, range(1, RANGE_BASE, 1, 8, 3)),
            tlbi(TlbiOp::Rvale1is, range(1, RANGE_TAIL, 0, 11, 3)),
        ],
    );
    l(
        v84(),
        Case::Protect,
        vec![tlbi(TlbiOp::Rvale1is, range(1, G + K, 0, 0, 3))],
    );
    // change_pte_range() flushes relaxations too.
    l(v84(), Case::Relax, vec![va(TlbiOp::Vale1is, G + K, ttl(3))]);
    // exit_mmap (fullmm): the tables were freed, so flush_tlb_mm() once.
    l(v84(), Case::Teardown, vec![tlbi(TlbiOp::Aside1is, 1 << 48)]);
    // A 1 GiB block and its freed table: all levels, stride 1 GiB, over the
    // hull 0..2 GiB (the freed table adds its first page).
    l(
        v84(),
        Case::GibBlock,
        vec![tlbi(TlbiOp::Rvae1is, range(1, 0, 3, 7, 0))],
    );
    // Without FEAT_TLBIRANGE: one operation per stride, the whole ASID from
    // MAX_DVM_OPS (512) strides on.
    l(
        no_range(),
        Case::Page,
        vec![va(TlbiOp::Vale1is, G + K, ttl(3))],
    );
    l(
        no_range(),
        Case::Block,
        vec![va(TlbiOp::Vale1is, G, ttl(2))],
    );
    l(
        no_range(),
        Case::Protect,
        vec![
            va(TlbiOp::Vale1is, G + K, ttl(3)),
            va(TlbiOp::Vale1is, G + 2 * K, ttl(3)),
        ],
    );
    l(
        no_range(),
        Case::Range,
        vec![tlbi(TlbiOp::Aside1is, 1 << 48)],
    );
    // Stage 2 is KVM's.
    for case in [Case::Page, Case::Range, Case::Teardown] {
        assert_eq!(
            run("linux", v84(), case, On::Stage2),
            run("kvm", v84(), case, On::Stage2),
            "{case:?}"
        );
    }
}

/// `__kvm_tlb_flush_vmid_ipa()`'s or `__kvm_tlb_flush_vmid_range()`'s
/// sequence around `ops`.
fn kvm_call(ops: Vec<Effect>) -> Vec<Effect> {
    cat(vec![
        vec![ishst()],
        ops,
        vec![ish(), vmalle1is(), ish(), isb()],
    ])
}

#[test]
fn kvm_defers_one_range_flush_and_tears_down_with_no_tlbi() {
    let k = |case, want| check("kvm", v84(), On::Stage2, case, want);
    // kvm_pgtable_stage2_unmap() with FEAT_TLBIRANGE: one deferred
    // kvm_tlb_flush_vmid_range(); a single page by IPA, no level.
    k(Case::Page, kvm_call(vec![ipa(G + K, Ttl::NONE, false)]));
    k(
        Case::Block,
        kvm_call(vec![tlbi(TlbiOp::Ripas2e1is, range(0, G, 1, 7, 0))]),
    );
    k(
        Case::Range,
        kvm_call(vec![
            tlbi(TlbiOp::Ripas2e1is, range(0, RANGE_BASE, 1, 8, 0)),
            tlbi(TlbiOp::Ripas2e1is, range(0, RANGE_TAIL, 0, 11, 0)),
        ]),
    );
    k(
        Case::GibBlock,
        kvm_call(vec![tlbi(TlbiOp::Ripas2e1is, range(0, G, 3, 3, 0))]),
    );
    // Write-protect, then kvm_flush_remote_tlbs_range().
    k(
        Case::Protect,
        kvm_call(vec![tlbi(TlbiOp::Ripas2e1is, range(0, G + K, 0, 0, 0))]),
    );
    // Relaxation: the faulting PE's local flush, not the flush point.
    k(Case::Relax, vec![]);
    // kvm_pgtable_stage2_destroy(): no TLBI for a retired VMID.
    k(Case::Teardown, vec![]);
    // stage2_try_break_pte() on the block being split:
    // __kvm_tlb_flush_vmid_ipa() with the block's level.
    k(Case::Split, kvm_call(vec![ipa(G, ttl(2), false)]));
}

#[test]
fn kvm_without_tlbi_range_flushes_each_leaf_or_the_whole_vmid() {
    let k = |case, want| check("kvm", no_range(), On::Stage2, case, want);
    k(Case::Page, kvm_call(vec![ipa(G + K, ttl(3), false)]));
    k(Case::Block, kvm_call(vec![ipa(G, ttl(2), false)]));
    // No threshold: one __kvm_tlb_flush_vmid_ipa() per leaf.
    k(
        Case::Range,
        cat(pages(RANGE_BASE, 600)
            .into_iter()
            .map(|a| kvm_call(vec![ipa(a, ttl(3), false)]))
            .collect()),
    );
    // kvm_tlb_flush_vmid_range() without ranges: __kvm_tlb_flush_vmid().
    k(Case::Protect, vec![ishst(), vmalls12e1is(), ish(), isb()]);
    k(Case::Relax, vec![]);
    k(Case::Teardown, vec![]);
}

/// `arch_mm_invalidate_stage2_range()` over `pages` 4 KiB pages.
fn hafnium_s2(addrs: Vec<u64>) -> Vec<Effect> {
    cat(vec![
        vec![ish()],
        addrs
            .into_iter()
            .map(|a| ipa(a, Ttl::NONE, false))
            .collect(),
        vec![ish(), vmalle1is(), ish(), isb()],
    ])
}

#[test]
fn hafnium_invalidates_each_replaced_entry_page_by_page() {
    let h = |case, want| check("hafnium", v84(), On::Stage2, case, want);
    h(Case::Page, hafnium_s2(vec![G + K]));
    // A 2 MiB block is 512 pages: not over MAX_TLBI_OPS.
    h(Case::Block, hafnium_s2(pages(G, 512)));
    // One mm_replace_entry() per page.
    h(
        Case::Range,
        cat(pages(RANGE_BASE, 600)
            .into_iter()
            .map(|a| hafnium_s2(vec![a]))
            .collect()),
    );
    // Over MAX_TLBI_OPS pages in one entry: the whole VMID.
    h(Case::GibBlock, vec![ish(), vmalls12e1is(), ish(), isb()]);
    h(
        Case::Protect,
        cat(vec![hafnium_s2(vec![G + K]), hafnium_s2(vec![G + 2 * K])]),
    );
    // Relaxations go through break-before-make too.
    h(Case::Relax, hafnium_s2(vec![G + K]));
    // Not dead-aware: the two last-level tables page by page, the table of
    // blocks (1 GiB) as the whole VMID.
    h(
        Case::Teardown,
        cat(vec![
            hafnium_s2(pages(G, 512)),
            hafnium_s2(pages(G + M2, 512)),
            vec![ish(), vmalls12e1is(), ish(), isb()],
        ]),
    );
    // Stage 1: VAE1IS per page, VMALLE1IS over the threshold, no
    // VMALLE1IS after the by-address operations.
    check(
        "hafnium",
        v84(),
        On::Stage1,
        Case::Page,
        vec![ish(), va(TlbiOp::Vae1is, G + K, Ttl::NONE), ish(), isb()],
    );
}

/// One `pmap_s_invalidate_range()` / `_page()` call on stage 2.
fn freebsd_s2(addrs: Vec<u64>, final_only: bool) -> Vec<Effect> {
    cat(vec![
        vec![ishst()],
        addrs
            .into_iter()
            .map(|a| ipa(a, Ttl::NONE, final_only))
            .collect(),
        vec![ish(), vmalle1is(), ish(), isb()],
    ])
}

#[test]
fn freebsd_names_every_page_with_no_threshold() {
    let f = |case, want| check("freebsd", v84(), On::Stage2, case, want);
    f(Case::Page, freebsd_s2(vec![G + K], true));
    // pmap_remove_l2(): one operation for the block.
    f(Case::Block, freebsd_s2(vec![G], true));
    f(Case::GibBlock, freebsd_s2(vec![G], true));
    f(Case::Range, freebsd_s2(pages(RANGE_BASE, 600), true));
    f(Case::Protect, freebsd_s2(vec![G + K, G + 2 * K], true));
    // Relaxations are left to faults.
    f(Case::Relax, vec![]);
    // Not dead-aware: each freed page-table page once (all levels), the
    // pages of the run, each block.
    f(
        Case::Teardown,
        cat(vec![
            freebsd_s2(vec![G], false),
            freebsd_s2(vec![G + M2], false),
            freebsd_s2(pages(G, 1024), true),
            freebsd_s2(vec![2 * G], false),
            freebsd_s2(vec![2 * G], true),
            freebsd_s2(vec![2 * G + M2], true),
        ]),
    );
    // Stage 1: no VMALLE1IS.
    check(
        "freebsd",
        v84(),
        On::Stage1,
        Case::Page,
        vec![ishst(), va(TlbiOp::Vale1is, G + K, Ttl::NONE), ish(), isb()],
    );
}

#[test]
fn xen_flushes_the_whole_vmid_per_p2m_operation() {
    for case in [
        Case::Page,
        Case::Block,
        Case::Range,
        Case::GibBlock,
        Case::Protect,
        Case::Relax,
        Case::Teardown,
    ] {
        check(
            "xen",
            v84(),
            On::Stage2,
            case,
            vec![ishst(), vmalls12e1is(), ish(), isb()],
        );
    }
}

/// `DSB ISHST`, stage 2 `IPAS2E1IS` per address, `DSB ISH; ISB`.
fn a64p_s2(addrs: Vec<u64>) -> Vec<Effect> {
    cat(vec![
        vec![ishst()],
        addrs
            .into_iter()
            .map(|a| ipa(a, Ttl::NONE, false))
            .collect(),
        vec![ish(), isb()],
    ])
}

#[test]
fn aarch64_paging_one_tlbi_per_descriptor_and_no_vmalle1is() {
    let a = |case, want| check("aarch64-paging", v84(), On::Stage2, case, want);
    a(Case::Page, a64p_s2(vec![G + K]));
    a(Case::Block, a64p_s2(vec![G]));
    a(Case::GibBlock, a64p_s2(vec![G]));
    a(Case::Range, a64p_s2(pages(RANGE_BASE, 600)));
    a(Case::Protect, a64p_s2(vec![G + K, G + 2 * K]));
    a(Case::Relax, a64p_s2(vec![G + K]));
    // free_detached() per detached table (its valid leaves), then
    // invalidate_range() naming the descriptors that replaced them.
    a(
        Case::Teardown,
        cat(vec![
            a64p_s2(pages(G, 512)),
            a64p_s2(pages(G + M2, 512)),
            a64p_s2(vec![2 * G, 2 * G + M2]),
            a64p_s2(vec![G, G + M2, 2 * G]),
        ]),
    );
    // EL1&0: VAAE1IS, every ASID.
    check(
        "aarch64-paging",
        v84(),
        On::Stage1,
        Case::Page,
        vec![
            ishst(),
            tlbi(TlbiOp::Vaae1is, va_operand(0, G + K, Ttl::NONE)),
            ish(),
            isb(),
        ],
    );
}

#[test]
fn none_emits_nothing() {
    for on in [On::Stage2, On::Stage1] {
        for case in [
            Case::Page,
            Case::Block,
            Case::Range,
            Case::Protect,
            Case::Relax,
            Case::Teardown,
        ] {
            check("none", v84(), on, case, vec![]);
        }
    }
}

#[test]
fn the_registry() {
    let names: Vec<_> = vmsa_baselines::ALL.iter().map(|b| b.name).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "{names:?}");
    assert_eq!(names[0], "vmsa");
    assert_eq!(names[names.len() - 1], "none");
    for b in vmsa_baselines::ALL {
        let p = b.make(v84(), vmsa::Profile::NATIVE);
        assert_eq!(p.name(), b.name);
        assert!(!b.source.is_empty());
        assert_eq!(
            vmsa_baselines::make(b.name, v84(), vmsa::Profile::NATIVE).map(|p| p.name()),
            Some(b.name)
        );
    }
    assert!(vmsa_baselines::get("oracle").is_none());
    assert!(vmsa_baselines::make("oracle", v84(), vmsa::Profile::NATIVE).is_none());
    // The stage 2 set a hypervisor offers.
    assert_eq!(
        vmsa_baselines::STAGE2,
        &[
            "vmsa",
            "kvm",
            "xen",
            "hafnium",
            "freebsd",
            "aarch64-paging",
            "broadcast",
            "none"
        ]
    );
    for n in vmsa_baselines::STAGE2 {
        assert!(vmsa_baselines::stage2(n).is_some(), "{n}");
    }
    for b in vmsa_baselines::ALL.iter().filter(|b| b.stage2) {
        assert!(vmsa_baselines::STAGE2.contains(&b.name), "{}", b.name);
    }
    assert!(vmsa_baselines::stage2("elfuse-pr65").is_none());
    // Driver semantics.
    let dead: Vec<_> = vmsa_baselines::ALL
        .iter()
        .filter(|b| b.skips_dead)
        .map(|b| b.name)
        .collect();
    assert_eq!(dead, ["vmsa", "linux", "kvm"]);
    let flush_each: Vec<_> = vmsa_baselines::ALL
        .iter()
        .filter(|b| !b.gathers)
        .map(|b| b.name)
        .collect();
    assert_eq!(
        flush_each,
        ["broadcast", "hafnium", "xen", "aarch64-paging", "none"]
    );
    let unfaithful: Vec<_> = vmsa_baselines::ALL
        .iter()
        .filter(|b| !b.faithful)
        .map(|b| b.name)
        .collect();
    assert_eq!(unfaithful, ["aarch64-paging", "none"]);
}
