//! `vmsa::vmid::TagAllocator` driving the model: VMs (or processes)
//! created and destroyed in sequence with 8-bit VMIDs (ASIDs), torn down
//! with no TLBI at all, past several rollovers whose only maintenance is
//! the allocator's `TLBI ALLE1IS; DSB ISH` (`TLBI VMALLE1IS; DSB ISH`).
//! The model must find nothing wrong; and it must report `IdReuse` when the
//! flush is skipped, when a retired tag is reused within its generation, or
//! when a running address space's tag is not kept.

use vmsa::vmid::{TagAllocator, TagKind, TagSlot};
use vmsa_model::{Config, Event, Machine, ModelEffects, Origin, Reg, ViolationKind};

/// Physical pages for the VMs' tables: VM `i` uses the pair at
/// `POOL + (i % ROTATE) * 0x2000`, so pages are reused by later VMs
/// after they are released.
const POOL: u64 = 0x10_0000;
const ROTATE: u64 = 3;
/// The long-running VM's tables (PE 1).
const LONG: u64 = 0x80_0000;

struct Sim {
    m: Machine,
    seq: u64,
    /// VMIDs (stage 2 trees in VTTBR_EL2) or ASIDs (stage 1 trees in
    /// TTBR0_EL1, VMID 0).
    vmids: TagAllocator,
    /// Perform the rollover flush the allocator asks for.
    flush: bool,
    /// The base register the tags go in.
    reg: Reg,
    /// The level 1 block descriptor every tree holds.
    block: u64,
}

/// A VM: its VMID slot and its root table.
struct Vm {
    slot: TagSlot,
    root: u64,
}

impl Sim {
    fn new(kind: TagKind, flush: bool) -> Sim {
        let (vmids, reg, block, config) = match kind {
            // 8-bit VMIDs: VTCR_EL2.VS = 0. Block: S2AP RW, AF, SH inner,
            // MemAttr normal.
            TagKind::Vmid => (
                TagAllocator::vmids_for_vtcr(VTCR, 2).unwrap(),
                Reg::VttbrEl2,
                0x4000_0000 | 0x7fd,
                (Reg::VtcrEl2, VTCR),
            ),
            // 8-bit ASIDs (TCR_EL1.AS = 0). Block: AF, SH inner and nG: a
            // global entry matches every ASID, so no ASID scheme covers it.
            TagKind::Asid => (
                TagAllocator::asids(8, 2).unwrap(),
                Reg::Ttbr0El1,
                0x4000_0000 | NG | 0x701,
                (Reg::TcrEl1, TCR),
            ),
        };
        let mut s = Sim {
            m: Machine::new(Config {
                pes: 2,
                ..Config::default()
            }),
            seq: 0,
            vmids,
            flush,
            reg,
            block,
        };
        for pe in 0..2 {
            s.ev(
                pe,
                Event::SysReg {
                    reg: config.0,
                    value: config.1,
                },
            );
        }
        s
    }

    fn ev(&mut self, pe: usize, e: Event) {
        self.seq += 1;
        self.m.step(
            pe,
            &e,
            Origin {
                seq: self.seq,
                line: 0,
            },
        );
    }

    /// A small tree at `root`: a level 0 table descriptor to a level 1
    /// table holding one 1 GiB block.
    fn build(&mut self, root: u64) {
        for page in [root, root + 0x1000] {
            self.ev(
                0,
                Event::MemInit {
                    pa: page,
                    size: 4096,
                },
            );
        }
        self.ev(
            0,
            Event::Write {
                pa: root,
                value: (root + 0x1000) | 3,
                release: false,
            },
        );
        self.ev(
            0,
            Event::Write {
                pa: root + 0x1000,
                value: self.block,
                release: false,
            },
        );
    }

    /// VTTBR_EL2 (or TTBR0_EL1) of `pe` := `tag` and `root`.
    fn base(&mut self, pe: usize, tag: u16, root: u64) {
        self.ev(
            pe,
            Event::SysReg {
                reg: self.reg,
                value: u64::from(tag) << 48 | root,
            },
        );
    }

    /// vcpu_load (context switch) on `pe`: a tag of the current generation
    /// (flushing a rollover first), then the base register. Returns
    /// whether it rolled over.
    fn load(&mut self, pe: usize, vm: &mut Vm) -> bool {
        let got = self.vmids.activate(pe, &mut vm.slot).unwrap();
        if got.rollover && self.flush {
            self.vmids.rollover_flush(
                &vmsa::Capabilities::default(),
                &mut ModelEffects::new(&mut self.m, pe),
            );
            self.seq += 2;
        }
        self.base(pe, got.tag, vm.root);
        got.rollover
    }

    /// A VM created and run on `pe`.
    fn create(&mut self, pe: usize, root: u64) -> (Vm, bool) {
        self.build(root);
        let mut vm = Vm {
            slot: TagSlot::new(),
            root,
        };
        let rolled = self.load(pe, &mut vm);
        (vm, rolled)
    }

    /// The VM is destroyed: `pe` parks its base register, the root page
    /// is released first, then the rest, with no TLBI; its tag is retired.
    fn destroy(&mut self, pe: usize, mut vm: Vm) {
        self.base(pe, 0, 0);
        self.vmids.clear_active(pe).unwrap();
        for page in [vm.root, vm.root + 0x1000] {
            self.ev(
                pe,
                Event::Release {
                    pa: page,
                    size: 4096,
                },
            );
        }
        assert!(self.vmids.retire(&mut vm.slot).unwrap().is_some());
    }

    /// `n` VMs created and destroyed one after the other on PE 0. Returns
    /// the indices of the VMs whose creation rolled over.
    fn churn(&mut self, first: u64, n: u64) -> Vec<u64> {
        let mut rolled = Vec::new();
        for i in first..first + n {
            let (vm, r) = self.create(0, POOL + (i % ROTATE) * 0x2000);
            if r {
                rolled.push(i);
            }
            self.destroy(0, vm);
        }
        rolled
    }

    fn finish(&mut self) {
        self.seq += 1;
        self.m.finish(Origin {
            seq: self.seq,
            line: 0,
        });
    }

    fn kinds(&self) -> Vec<ViolationKind> {
        self.m.violations().iter().map(|v| v.kind).collect()
    }
}

/// T0SZ = 16 (48-bit IPA), SL0 = 2 (start at level 0), 4 KiB, VS = 0.
const VTCR: u64 = 16 | 2 << 6;
/// T0SZ = 16 (48-bit VA), 4 KiB, AS = 0.
const TCR: u64 = 16;
/// Stage 1 descriptor bit 11: not global.
const NG: u64 = 1 << 11;

const KINDS: [TagKind; 2] = [TagKind::Vmid, TagKind::Asid];

#[test]
fn vms_destroyed_without_tlbi_past_two_rollovers_are_clean() {
    for kind in KINDS {
        let mut s = Sim::new(kind, true);
        // 255 tags per generation: VM 255 (the 256th) and VM 510 roll over.
        let rolled = s.churn(0, 600);
        assert_eq!(rolled, vec![255, 510]);
        assert_eq!(s.vmids.rollovers(), 2);
        s.finish();
        assert!(s.kinds().is_empty(), "{kind:?}: {:#?}", s.m.violations());
        // The only TLB maintenance in 600 lifetimes: one ALLE1IS (or
        // VMALLE1IS) per rollover.
        let costs = s.m.costs();
        assert_eq!(costs.tlbis(), 2);
        assert_eq!(costs.tlbi.get(&kind.flush_op()), Some(&2));
    }
}

#[test]
fn skipping_the_rollover_flush_is_reported() {
    for kind in KINDS {
        let mut s = Sim::new(kind, false);
        let rolled = s.churn(0, 300);
        assert_eq!(rolled, vec![255]);
        s.finish();
        let v = s.m.violations();
        assert!(!v.is_empty());
        assert!(v.iter().all(|v| v.kind == ViolationKind::IdReuse), "{v:#?}");
        // Reported at the first VM of the new generation: tag 1 again,
        // while PE 0 may still hold VM 0's entries tagged 1.
        assert_eq!(v[0].location, POOL + (255 % ROTATE) * 0x2000);
        let tag1 = match kind {
            TagKind::Vmid => "VMID 1 handed",
            TagKind::Asid => "ASID 1 (VMID 0) handed",
        };
        assert!(v[0].explanation.contains(tag1), "{}", v[0]);
    }
}

#[test]
fn reusing_a_retired_tag_within_its_generation_is_reported() {
    for kind in KINDS {
        let mut s = Sim::new(kind, true);
        s.churn(0, 10);
        let (vm, _) = s.create(0, POOL);
        let tag = vm.slot.tag().unwrap();
        s.destroy(0, vm);
        // By hand, bypassing the allocator: a new VM gets the dead VM's
        // tag in the same generation, with nothing invalidated in between.
        s.build(POOL + 0x2000);
        s.base(0, tag, POOL + 0x2000);
        assert_eq!(s.kinds(), vec![ViolationKind::IdReuse], "{kind:?}");
        // The allocator itself would not have: the next VM gets a fresh
        // tag.
        let mut fresh = TagSlot::new();
        let got = s.vmids.alloc(&mut fresh);
        assert!(!got.rollover);
        assert_ne!(got.tag, tag);
    }
}

#[test]
fn a_vm_running_on_pe1_keeps_its_tag_across_rollovers() {
    for kind in KINDS {
        let mut s = Sim::new(kind, true);
        s.build(LONG);
        let mut long = Vm {
            slot: TagSlot::new(),
            root: LONG,
        };
        assert!(!s.load(1, &mut long));
        let tag = long.slot.tag().unwrap();
        // PE 0 churns through two rollovers while PE 1 runs the VM.
        let rolled = s.churn(0, 520);
        assert_eq!(rolled.len(), 2);
        // The tag stayed PE 1's, and nobody else was given it (the model
        // would report two live trees with one tag).
        assert_eq!(s.vmids.active(1), Some(tag));
        // PE 1 comes back to the allocator (vcpu_put / vcpu_load): same
        // tag, no rollover, base register unchanged.
        assert!(!s.vmids.current(&long.slot));
        assert!(!s.load(1, &mut long));
        assert_eq!(long.slot.tag(), Some(tag));
        assert!(s.vmids.current(&long.slot));
        // More VMs on PE 0, then the long-running VM is destroyed too.
        s.churn(520, 100);
        s.destroy(1, long);
        s.churn(620, 300);
        s.finish();
        assert!(s.kinds().is_empty(), "{kind:?}: {:#?}", s.m.violations());
        assert_eq!(s.m.costs().tlbis(), s.vmids.rollovers());
    }
}

#[test]
fn a_running_vm_whose_tag_is_not_kept_is_reported() {
    for kind in KINDS {
        let mut s = Sim::new(kind, true);
        s.build(LONG);
        // PE 1 runs the VM, but the allocator is not told (alloc, not
        // activate): the rollover does not keep its tag.
        let mut long = TagSlot::new();
        let tag = s.vmids.alloc(&mut long).tag;
        s.base(1, tag, LONG);
        s.churn(0, 300);
        let v = s.m.violations();
        assert!(!v.is_empty());
        assert!(v.iter().all(|v| v.kind == ViolationKind::IdReuse), "{v:#?}");
        assert!(
            v[0].explanation
                .contains("while the live tree at 0x800000 owns it"),
            "{}",
            v[0]
        );
    }
}

#[test]
fn global_stage1_entries_are_not_covered_by_asid_retirement() {
    // Processes whose mapping is global (nG = 0) torn down with no TLBI:
    // their entries match every ASID, so a later process may hit them
    // whatever ASID it gets. Retiring ASIDs is only enough for nG = 1.
    let mut s = Sim::new(TagKind::Asid, true);
    s.block &= !NG;
    // The model catches it as soon as the next process gets a tag: ASID 2
    // while the dead process of ASID 1 left global entries.
    s.churn(0, 257);
    let v = s.m.violations();
    assert!(!v.is_empty());
    assert!(v.iter().all(|v| v.kind == ViolationKind::IdReuse), "{v:#?}");
    assert!(
        v[0].explanation.contains("ASID 2 (VMID 0) handed"),
        "{}",
        v[0]
    );
    assert!(
        v[0].explanation.contains("(stage 1, ASID 1 (VMID 0))"),
        "{}",
        v[0]
    );
}

#[test]
fn a_parked_vm_loses_its_tag_at_the_rollover_safely() {
    for kind in KINDS {
        let mut s = Sim::new(kind, true);
        s.build(LONG);
        let mut long = Vm {
            slot: TagSlot::new(),
            root: LONG,
        };
        s.load(1, &mut long);
        let old = long.slot.tag().unwrap();
        // vcpu_put: PE 1 parks; the VM lives on but runs nowhere.
        s.base(1, 0, 0);
        s.vmids.clear_active(1).unwrap();
        // The rollover flush removes its entries; its tag goes to a new VM.
        s.churn(0, 300);
        // vcpu_load: a new tag of the current generation.
        assert!(!s.load(1, &mut long));
        assert_ne!(long.slot.tag(), Some(old));
        s.finish();
        assert!(s.kinds().is_empty(), "{kind:?}: {:#?}", s.m.violations());
    }
}
