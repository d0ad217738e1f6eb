//! One test per checker rule: each place where the model reports a
//! violation has a smallest sequence that breaks that rule alone (and must
//! be reported, with that rule's explanation) and the corrected sequence
//! (which must be clean). Disabling any one rule makes its test fail;
//! `scripts/rule-mutations` does that for every rule in turn.

use vmsa::tlbi::{ipa_operand, TlbiOp, Ttl};
use vmsa_model::{Barrier, Config, Event, Machine, Origin, Reg, ViolationKind};

/// Tree A: root, level 1, 2 and 3 tables.
const A: [u64; 4] = [0x10_0000, 0x10_1000, 0x10_2000, 0x10_3000];
/// Tree B, a second VM's.
const B: [u64; 4] = [0x20_0000, 0x20_1000, 0x20_2000, 0x20_3000];
/// A spare table page.
const SPARE: u64 = 0x30_0000;
/// The IPA both trees map, and where A maps it.
const IPA: u64 = 0x1000;
const PA: u64 = 0x4000_0000;
/// Another output page.
const PA2: u64 = 0x4001_0000;
/// Stage 2 leaf attributes: AF, inner shareable, S2AP read-write, normal
/// memory; valid page descriptor.
const LEAF: u64 = 0x7ff;
/// 4 KiB granule, 48-bit IPA, start at level 0, 48-bit PA.
const VTCR: u64 = 16 | 2 << 6 | 5 << 16;

const DSB: Event = Event::Barrier(Barrier::DSB_ISH);

struct Rig {
    m: Machine,
    seq: u64,
}

impl Rig {
    fn new() -> Self {
        let mut r = Rig {
            m: Machine::new(Config {
                pes: 2,
                ..Config::default()
            }),
            seq: 0,
        };
        for pe in 0..2 {
            r.on(
                pe,
                Event::SysReg {
                    reg: Reg::VtcrEl2,
                    value: VTCR,
                },
            );
        }
        r
    }

    fn on(&mut self, pe: usize, e: Event) -> &mut Self {
        self.seq += 1;
        self.m.step(
            pe,
            &e,
            Origin {
                seq: self.seq,
                line: 0,
            },
        );
        self
    }

    fn ev(&mut self, e: Event) -> &mut Self {
        self.on(0, e)
    }

    fn write(&mut self, pa: u64, value: u64) -> &mut Self {
        self.ev(Event::Write {
            pa,
            value,
            release: false,
        })
    }

    /// Builds tree `t` mapping IPA to `pa` (not yet installed anywhere).
    fn tree(&mut self, t: [u64; 4], pa: u64) -> &mut Self {
        for p in t {
            self.ev(Event::MemInit { pa: p, size: 4096 });
        }
        self.write(t[0], t[1] | 3)
            .write(t[1], t[2] | 3)
            .write(t[2], t[3] | 3)
            .write(t[3] + 8, pa | LEAF)
            .ev(DSB)
    }

    /// PE `pe` runs tree `t` (0: none) with `vmid`.
    fn run(&mut self, pe: usize, t: u64, vmid: u64) -> &mut Self {
        self.on(
            pe,
            Event::SysReg {
                reg: Reg::VttbrEl2,
                value: vmid << 48 | t,
            },
        )
    }

    /// Tree A built and run with VMID 1 on both PEs.
    fn live() -> Self {
        let mut r = Rig::new();
        r.tree(A, PA).run(0, A[0], 1).run(1, A[0], 1);
        r
    }

    /// The broadcast invalidation of IPA's entries of the current VMID
    /// (stage 2 and combined), completed.
    fn flush_ipa(&mut self) -> &mut Self {
        self.ev(Event::Tlbi {
            op: TlbiOp::Ipas2e1is,
            operand: ipa_operand(IPA, Ttl::NONE),
        })
        .ev(DSB)
        .ev(Event::Tlbi {
            op: TlbiOp::Vmalle1is,
            operand: 0,
        })
        .ev(DSB)
    }

    /// Every entry of the current VMID, completed.
    fn flush_vmid(&mut self) -> &mut Self {
        self.ev(Event::Tlbi {
            op: TlbiOp::Vmalls12e1is,
            operand: 0,
        })
        .ev(DSB)
    }

    /// Every entry of every VMID, completed.
    fn flush_all(&mut self) -> &mut Self {
        self.ev(Event::Tlbi {
            op: TlbiOp::Alle1is,
            operand: 0,
        })
        .ev(DSB)
    }

    fn release(&mut self, pa: u64) -> &mut Self {
        self.ev(Event::Release { pa, size: 4096 })
    }

    fn release_data(&mut self, pa: u64) -> &mut Self {
        self.ev(Event::ReleaseData { pa, size: 4096 })
    }

    fn complete(&mut self) -> &mut Self {
        self.ev(Event::Complete)
    }

    fn violations(&mut self) -> Vec<(ViolationKind, String)> {
        self.m.finish(Origin::default());
        self.m
            .violations()
            .iter()
            .map(|v| (v.kind, v.to_string()))
            .collect()
    }
}

/// `bad` breaks the rule: reported with its kind, the explanation saying
/// `why` (what it leaves behind may break other rules too, such as stale
/// entries at the final completion point); `good` is the correct sequence:
/// clean.
fn rule(kind: ViolationKind, why: &str, bad: impl FnOnce(&mut Rig), good: impl FnOnce(&mut Rig)) {
    let mut r = Rig::live();
    bad(&mut r);
    let v = r.violations();
    assert!(
        v.iter().any(|(k, text)| *k == kind && text.contains(why)),
        "expected {kind:?} saying '{why}', got {v:#?}"
    );
    let mut r = Rig::live();
    good(&mut r);
    let v = r.violations();
    assert!(v.is_empty(), "the corrected sequence is clean, got {v:#?}");
}

#[test]
fn valid_to_valid_needs_break_before_make() {
    rule(
        ViolationKind::BbmValidToValid,
        "changed from",
        |r| {
            r.write(A[3] + 8, PA2 | LEAF).ev(DSB).complete();
        },
        |r| {
            r.write(A[3] + 8, 0)
                .ev(DSB)
                .flush_ipa()
                .write(A[3] + 8, PA2 | LEAF)
                .ev(DSB)
                .complete();
        },
    );
}

#[test]
fn invalid_unclean_to_valid_needs_the_invalidation_first() {
    rule(
        ViolationKind::BbmUncleanToValid,
        "before this write",
        |r| {
            r.write(A[3] + 8, 0).ev(DSB).write(A[3] + 8, PA2 | LEAF);
        },
        |r| {
            r.write(A[3] + 8, 0)
                .ev(DSB)
                .flush_ipa()
                .write(A[3] + 8, PA2 | LEAF);
        },
    );
}

#[test]
fn a_table_page_linked_twice() {
    rule(
        ViolationKind::DoubleUse,
        "while it is already linked",
        |r| {
            r.write(A[2] + 8, A[3] | 3);
        },
        |r| {
            r.ev(Event::MemInit {
                pa: SPARE,
                size: 4096,
            })
            .write(A[2] + 8, SPARE | 3);
        },
    );
}

#[test]
fn a_table_page_relinked_while_its_old_walk_entry_may_be_cached() {
    rule(
        ViolationKind::DoubleUse,
        "may still walk it through the cached table descriptor",
        |r| {
            r.write(A[2], 0).ev(DSB).write(A[2] + 8, A[3] | 3);
        },
        |r| {
            r.write(A[2], 0)
                .ev(DSB)
                .flush_vmid()
                .write(A[2] + 8, A[3] | 3);
        },
    );
}

#[test]
fn a_live_tree_given_a_new_vmid_unflushed() {
    rule(
        ViolationKind::IdReuse,
        "but it is live with",
        |r| {
            r.run(0, A[0], 2);
        },
        |r| {
            // Neither PE runs it with VMID 1 any more, and VMID 1 is
            // invalidated since, before the new tag.
            r.run(1, 0, 0).run(0, 0, 0).flush_all().run(0, A[0], 2);
        },
    );
}

#[test]
fn a_vmid_installed_for_a_second_live_tree() {
    rule(
        ViolationKind::IdReuse,
        "owns it",
        |r| {
            r.tree(B, PA2).run(0, B[0], 1);
        },
        |r| {
            r.tree(B, PA2).run(0, B[0], 2);
        },
    );
}

#[test]
fn a_vmid_handed_over_with_the_old_trees_entries_cached() {
    let kill_a = |r: &mut Rig| {
        r.run(0, 0, 0).run(1, 0, 0);
        for p in A {
            r.release(p);
        }
    };
    rule(
        ViolationKind::IdReuse,
        "handed to the tree at",
        |r| {
            kill_a(r);
            r.tree(B, PA2).run(0, B[0], 1);
        },
        |r| {
            kill_a(r);
            r.flush_all().tree(B, PA2).run(0, B[0], 1);
        },
    );
}

#[test]
fn a_root_released_while_in_a_base_register() {
    rule(
        ViolationKind::UseAfterFree,
        "in a translation table base register",
        |r| {
            r.release(A[0]);
        },
        |r| {
            r.run(0, 0, 0).run(1, 0, 0).release(A[0]);
        },
    );
}

#[test]
fn a_table_page_released_while_linked() {
    rule(
        ViolationKind::UseAfterFree,
        "while it is still linked",
        |r| {
            r.release(A[3]);
        },
        |r| {
            r.write(A[2], 0).ev(DSB).flush_vmid().release(A[3]);
        },
    );
}

#[test]
fn a_table_page_released_while_a_cached_walk_leads_into_it() {
    rule(
        ViolationKind::UseAfterFree,
        "may still walk into it through the cached",
        |r| {
            r.write(A[2], 0).ev(DSB).release(A[3]);
        },
        |r| {
            r.write(A[2], 0).ev(DSB).flush_vmid().release(A[3]);
        },
    );
}

#[test]
fn a_data_page_released_while_mapped() {
    rule(
        ViolationKind::UseAfterFree,
        "released while the descriptor at",
        |r| {
            r.release_data(PA);
        },
        |r| {
            r.write(A[3] + 8, 0).ev(DSB).flush_ipa().release_data(PA);
        },
    );
}

#[test]
fn a_data_page_released_while_a_pe_may_translate_to_it() {
    rule(
        ViolationKind::UseAfterFree,
        "may still translate to it",
        |r| {
            r.write(A[3] + 8, 0).ev(DSB).release_data(PA);
        },
        |r| {
            r.write(A[3] + 8, 0).ev(DSB).flush_ipa().release_data(PA);
        },
    );
}

#[test]
fn a_stale_translation_at_a_completion_point() {
    rule(
        ViolationKind::StaleTranslation,
        "before this point",
        |r| {
            r.write(A[3] + 8, 0).ev(DSB).complete();
        },
        |r| {
            r.write(A[3] + 8, 0).ev(DSB).flush_ipa().complete();
        },
    );
}

#[test]
fn regions_of_any_size_are_judged_without_visiting_every_page() {
    // A release of (nearly) the whole address space, as a trace may give:
    // the live tables in it are still found, and nothing loops.
    let mut r = Rig::live();
    r.ev(Event::Release {
        pa: 0,
        size: u64::MAX,
    });
    let v = r.violations();
    assert!(
        v.iter()
            .any(|(k, t)| *k == ViolationKind::UseAfterFree && t.contains("root table")),
        "{v:#?}"
    );
    // Re-initialising a huge region under a live tree is the same.
    let mut r = Rig::live();
    r.ev(Event::MemInit {
        pa: 0,
        size: 1 << 60,
    });
    let v = r.violations();
    assert!(
        v.iter().any(|(k, _)| *k == ViolationKind::UseAfterFree),
        "{v:#?}"
    );
    // A huge region initialised first is table memory like any other.
    let mut r = Rig::new();
    r.ev(Event::MemInit {
        pa: 0,
        size: 1 << 60,
    })
    .tree(A, PA)
    .run(0, A[0], 1);
    assert!(r.violations().is_empty());
}
