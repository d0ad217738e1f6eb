//! Property tests: random sequences of map / unmap / protect / split /
//! collapse / flush on a live stage 2 table, checked after every step
//! against a plain reference map, for leaks, and for break-before-make
//! discipline; and out-of-memory injection at every allocation.

mod common;

use common::{bbm_mask, bbm_violations, snapshot, table_runs, CountingReads, Reference};
use proptest::prelude::*;
use vmsa::{
    Arena, Error, Geometry, Granule, Ipa, MapOptions, MemAttr, Pa, Recorder, S2ap, S2xn, Stage2,
    Stage2Attrs, Table, TableAllocator, Vmid,
};

const K: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;
const WINDOW: u64 = 8 * G1;

/// Places where operations cluster, so they overlap, straddle block
/// boundaries and hit the same tables.
const HOT: [u64; 4] = [0, G1 - M2, G1, 2 * G1 + 3 * M2];

fn attrs(i: u8) -> Stage2Attrs {
    let ram = Stage2Attrs::RAM;
    match i % 5 {
        0 => ram,
        1 => ram.with_s2ap(S2ap::ReadOnly),
        2 => Stage2Attrs::DEVICE,
        3 => Stage2Attrs {
            xn: S2xn::Never,
            ..ram
        },
        _ => Stage2Attrs {
            af: false,
            mem_attr: MemAttr::NORMAL_WB,
            ..ram
        },
    }
}

#[derive(Clone, Debug)]
enum Step {
    Map {
        start: u64,
        len: u64,
        oa: u64,
        attrs: u8,
        blocks: bool,
        replace: bool,
    },
    Unmap {
        start: u64,
        len: u64,
    },
    Protect {
        start: u64,
        len: u64,
        attrs: u8,
    },
    Split {
        addr: u64,
    },
    Collapse {
        start: u64,
        len: u64,
    },
    Flush,
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    (
        prop_oneof![5 => Just(K), 4 => Just(M2), 1 => Just(G1)],
        0..HOT.len(),
        0u64..4,
        1u64..4,
        prop_oneof![3 => Just(0u64), 1 => 0u64..512],
        prop_oneof![3 => Just(0u64), 1 => 0u64..512],
    )
        .prop_map(|(unit, hot, a, n, jitter_start, jitter_len)| {
            let unit = if unit == G1 { G1 } else { unit };
            let start = (HOT[hot] + a * unit + jitter_start * K).min(WINDOW - K);
            let len = (n * unit + jitter_len * K).min(WINDOW - start).max(K);
            let len = if unit == G1 { len } else { len.min(8 * M2) };
            (start, len)
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (range(), prop_oneof![2 => Just(0u64), 1 => Just(16 * G1), 1 => (1u64..64).prop_map(|p| p * K)], any::<u8>(), any::<bool>(), any::<bool>())
            .prop_map(|((start, len), delta, attrs, blocks, replace)| Step::Map {
                start,
                len,
                // Large ranges keep block-aligned outputs, so they map as
                // blocks rather than hundreds of thousands of pages.
                oa: start + if len > 8 * M2 { delta / G1 * G1 } else { delta },
                attrs,
                blocks: blocks || len > 4 * M2,
                replace,
            }),
        3 => range().prop_map(|(start, len)| Step::Unmap { start, len }),
        3 => (range(), any::<u8>()).prop_map(|((start, len), attrs)| Step::Protect { start, len, attrs }),
        2 => range().prop_map(|(start, _)| Step::Split { addr: start }),
        2 => range().prop_map(|(start, len)| Step::Collapse { start, len }),
        1 => Just(Step::Flush),
    ]
}

fn new_table(fx: &mut Recorder) -> Table<Stage2, Arena> {
    let mut t = inactive_table(fx);
    t.activate(fx);
    t
}

fn inactive_table(fx: &mut Recorder) -> Table<Stage2, Arena> {
    let g = Geometry::stage2(Granule::K4, 40).unwrap();
    Table::new(
        Stage2::new(Vmid(3)),
        g,
        Arena::new(Pa(0x40_0000_0000), 1024),
        fx,
    )
    .unwrap()
}

/// The kept mapped-leaf count against a full walk.
fn check_leaf_count<A: TableAllocator>(t: &Table<Stage2, A>) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        t.mapped_leaves(),
        t.mappings().count() as u64,
        "kept leaf count != walked leaf count"
    );
    Ok(())
}

/// An inactive table whose allocator counts the table pages touched.
fn counting_table(fx: &mut Recorder) -> Table<Stage2, CountingReads<Arena>> {
    let g = Geometry::stage2(Granule::K4, 40).unwrap();
    Table::new(
        Stage2::new(Vmid(3)),
        g,
        CountingReads::new(Arena::new(Pa(0x40_0000_0000), 1024)),
        fx,
    )
    .unwrap()
}

/// The count against a walk; on a live table also that reading it touches
/// no table page (it is kept, not walked: the price of a flush).
fn check_kept_leaf_count(t: &Table<Stage2, CountingReads<Arena>>) -> Result<(), TestCaseError> {
    t.allocator().reset();
    let kept = t.mapped_leaves();
    if t.is_live() {
        prop_assert_eq!(
            t.allocator().reads(),
            0,
            "a live table's mapped_leaves() walked the table"
        );
    }
    prop_assert_eq!(
        kept,
        t.mappings().count() as u64,
        "kept leaf count != walked leaf count"
    );
    Ok(())
}

/// Steps that remove whole table subtrees (a last-level table, a level 2
/// table with the last-level ones below it, a last-level table replaced by
/// a block) while the table they run on is inactive: such removals leave
/// the leaf count unknown until `activate` recounts.
fn subtree_removals() -> Vec<Step> {
    let pages = |start, len| Step::Map {
        start,
        len,
        oa: start,
        attrs: 0,
        blocks: false,
        replace: false,
    };
    vec![
        // remove_table of a last-level table (unmap's fast path).
        pages(0, 2 * M2),
        Step::Unmap { start: 0, len: M2 },
        // replace_table: a block over a last-level table.
        pages(G1, 3 * M2),
        Step::Map {
            start: G1 + M2,
            len: M2,
            oa: 16 * G1,
            attrs: 1,
            blocks: true,
            replace: true,
        },
        // replace_table by collapse.
        Step::Collapse {
            start: G1 + 2 * M2,
            len: M2,
        },
        // remove_table of a level 2 table and the tables below it.
        pages(2 * G1 + 3 * M2, 3 * M2),
        Step::Unmap {
            start: 2 * G1,
            len: G1,
        },
    ]
}

fn ipa(start: u64, len: u64) -> std::ops::Range<Ipa> {
    Ipa(start)..Ipa(start + len)
}

/// Applies one step to the table, and what it should do to the reference.
fn apply<A: TableAllocator>(
    t: &mut Table<Stage2, A>,
    r: &mut Reference<Stage2Attrs>,
    s: &Step,
    fx: &mut Recorder,
) -> Result<(), Error> {
    match *s {
        Step::Map {
            start,
            len,
            oa,
            attrs: a,
            blocks,
            replace,
        } => {
            let res = t.map(
                ipa(start, len),
                Pa(oa),
                attrs(a),
                MapOptions { blocks, replace },
                fx,
            );
            if !replace && r.overlaps(start, start + len) {
                assert!(matches!(res, Err(Error::AlreadyMapped { .. })), "{res:?}");
            } else {
                res?;
                r.insert(start, start + len, oa, attrs(a));
            }
        }
        Step::Unmap { start, len } => {
            t.unmap(ipa(start, len), fx)?;
            r.remove(start, start + len);
        }
        Step::Protect {
            start,
            len,
            attrs: a,
        } => {
            t.protect(ipa(start, len), attrs(a), fx)?;
            r.protect(start, start + len, attrs(a));
        }
        Step::Split { addr } => {
            let is_block = t.translate(Ipa(addr)).is_some_and(|tr| tr.level < 3);
            let res = t.split_block(Ipa(addr), fx);
            if is_block {
                res?;
            } else {
                assert_eq!(res, Err(Error::NotABlock { addr }));
            }
        }
        Step::Collapse { start, len } => {
            t.collapse(ipa(start, len), fx)?;
        }
        Step::Flush => t.flush(fx),
    }
    Ok(())
}

fn touched(s: &Step) -> Vec<u64> {
    let (start, len) = match *s {
        Step::Map { start, len, .. }
        | Step::Unmap { start, len }
        | Step::Protect { start, len, .. }
        | Step::Collapse { start, len } => (start, len),
        Step::Split { addr } => (addr, K),
        Step::Flush => return vec![],
    };
    let mid = (start + len / 2) & !(K - 1);
    vec![
        start.saturating_sub(K),
        start,
        mid,
        start + len - K,
        start + len,
    ]
}

fn check_leaks(t: &Table<Stage2, Arena>) {
    let mut expect: Vec<Pa> = t.table_pages();
    expect.extend_from_slice(t.pending_release());
    expect.sort();
    assert_eq!(
        t.allocator().live_pages(),
        expect,
        "allocator pages != reachable + pending"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_match_the_reference(steps in prop::collection::vec(step(), 1..24)) {
        let mut fx = Recorder::new();
        let mut t = new_table(&mut fx);
        let mut r = Reference::default();
        for s in &steps {
            apply(&mut t, &mut r, s, &mut fx).unwrap();
            prop_assert_eq!(table_runs(&t), r.normalized(), "after {:?}", s);
            for a in touched(s) {
                let got = t.translate(Ipa(a)).map(|tr| (tr.output.0, tr.attrs));
                prop_assert_eq!(got, r.lookup(a), "translate {:#x} after {:?}", a, s);
            }
            check_leaks(&t);
            check_leaf_count(&t)?;
        }
        t.flush(&mut fx);
        check_leaks(&t);
        prop_assert!(t.pending_release().is_empty());
        let v = bbm_violations(fx.log(), bbm_mask(true));
        prop_assert!(v.is_empty(), "{:#?}", v);
    }

    /// The mapped-leaf count the table keeps (and the planner prices
    /// flushes with) equals a full walk after every step, on inactive
    /// tables (whose subtree removals release pages at once and leave the
    /// count to be recounted), across activation and `assume_uncached`, and
    /// on live ones, where reading it never touches a table page. With
    /// `removals_first`, the inactive table first loses whole subtrees
    /// (unmap, map over a table, collapse); whatever state the steps leave,
    /// the table is then (re)activated and live operations follow.
    #[test]
    fn mapped_leaf_count_matches_a_walk(
        removals_first in any::<bool>(),
        steps in prop::collection::vec(step(), 1..24),
        activate_at in prop::option::of(0usize..24),
        uncache_at in prop::option::of(0usize..24),
    ) {
        let mut fx = Recorder::new();
        let mut t = counting_table(&mut fx);
        let mut r = Reference::default();
        if removals_first {
            for s in &subtree_removals() {
                apply(&mut t, &mut r, s, &mut fx).unwrap();
                check_kept_leaf_count(&t)?;
            }
            prop_assert_eq!(t.mapped_leaves(), 512 + 512 + 1 + 1);
        }
        for (i, s) in steps.iter().enumerate() {
            if activate_at == Some(i) {
                t.activate(&mut fx);
                check_kept_leaf_count(&t)?;
            }
            if uncache_at == Some(i) {
                t.assume_uncached(&mut fx);
            }
            apply(&mut t, &mut r, s, &mut fx).unwrap();
            check_kept_leaf_count(&t)?;
        }
        t.flush(&mut fx);
        check_kept_leaf_count(&t)?;
        // (Re)activated, after whatever the steps removed while inactive.
        if !t.is_live() {
            t.activate(&mut fx);
        }
        check_kept_leaf_count(&t)?;
        let live = [
            Step::Map { start: 5 * G1, len: 2 * M2, oa: 5 * G1, attrs: 0, blocks: false, replace: true },
            Step::Protect { start: 5 * G1 + K, len: M2, attrs: 1 },
            Step::Unmap { start: 5 * G1 + M2, len: M2 },
            Step::Flush,
        ];
        for s in &live {
            apply(&mut t, &mut r, s, &mut fx).unwrap();
            check_kept_leaf_count(&t)?;
        }
        t.unmap(ipa(0, WINDOW), &mut fx).unwrap();
        t.flush(&mut fx);
        check_kept_leaf_count(&t)?;
        prop_assert_eq!(t.mapped_leaves(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn out_of_memory_at_every_allocation_changes_nothing(steps in prop::collection::vec(step(), 1..8)) {
        for i in 0..steps.len() {
            for fail_at in 0u64.. {
                // Rebuild the state before step i, then fail its allocation
                // number `fail_at`.
                let mut fx = Recorder::new();
                let mut t = new_table(&mut fx);
                let mut r = Reference::default();
                for s in &steps[..i] {
                    apply(&mut t, &mut r, s, &mut fx).unwrap();
                }
                let (before, pages, log_len) = (snapshot(&t), t.allocator().live_pages(), fx.log().len());
                let pending = t.pending_release().to_vec();
                let leaves = t.mapped_leaves();
                t.allocator_mut().fail_after(Some(fail_at));
                match apply(&mut t, &mut r, &steps[i], &mut fx) {
                    Err(Error::OutOfMemory) => {
                        prop_assert_eq!(snapshot(&t), before.clone());
                        prop_assert_eq!(t.allocator().live_pages(), pages.clone());
                        prop_assert_eq!(t.pending_release(), &pending[..]);
                        prop_assert_eq!(fx.log().len(), log_len, "no effect on failure");
                        prop_assert_eq!(t.mapped_leaves(), leaves);
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                    Ok(()) => {
                        check_leaks(&t);
                        check_leaf_count(&t)?;
                        break;
                    }
                }
            }
        }
    }
}
