//! Property tests: random sequences of map / unmap / protect / split /
//! collapse / flush on a live stage 2 table, checked after every step
//! against a plain reference map, for leaks, and for break-before-make
//! discipline; and out-of-memory injection at every allocation.

mod common;

use common::{bbm_mask, bbm_violations, snapshot, table_runs, Reference};
use proptest::prelude::*;
use vmsa::{
    Arena, Error, Geometry, Granule, Ipa, MapOptions, MemAttr, Pa, Recorder, S2ap, S2xn, Stage2,
    Stage2Attrs, Table, Vmid,
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
fn check_leaf_count(t: &Table<Stage2, Arena>) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        t.mapped_leaves(),
        t.mappings().count() as u64,
        "kept leaf count != walked leaf count"
    );
    Ok(())
}

fn ipa(start: u64, len: u64) -> std::ops::Range<Ipa> {
    Ipa(start)..Ipa(start + len)
}

/// Applies one step to the table, and what it should do to the reference.
fn apply(
    t: &mut Table<Stage2, Arena>,
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
    /// tables (whose removals release pages at once), across activation and
    /// `assume_uncached`, and on live ones.
    #[test]
    fn mapped_leaf_count_matches_a_walk(
        steps in prop::collection::vec(step(), 1..24),
        activate_at in prop::option::of(0usize..24),
        uncache_at in prop::option::of(0usize..24),
    ) {
        let mut fx = Recorder::new();
        let mut t = inactive_table(&mut fx);
        let mut r = Reference::default();
        for (i, s) in steps.iter().enumerate() {
            if activate_at == Some(i) {
                t.activate(&mut fx);
            }
            if uncache_at == Some(i) {
                t.assume_uncached(&mut fx);
            }
            apply(&mut t, &mut r, s, &mut fx).unwrap();
            check_leaf_count(&t)?;
        }
        t.flush(&mut fx);
        check_leaf_count(&t)?;
        t.unmap(ipa(0, WINDOW), &mut fx).unwrap();
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
