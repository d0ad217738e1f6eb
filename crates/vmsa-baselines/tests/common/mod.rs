//! Drives real vmsa tables through the cases each baseline's source
//! handles and records what the baseline alone emits.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use vmsa::plan::{Invalidator, Purpose, Space};
use vmsa::tlbi::{ipa_operand, va_operand, RangeOperand, TlbiOp, Ttl};
use vmsa::{
    Arena, Asid, Barrier, Capabilities, Change, Effect, Effects, El1Stage1, Geometry, Granule, Ipa,
    MapOptions, Pa, Profile, Recorder, S2ap, Stage1Attrs, Stage2, Stage2Attrs, Table, Va, Vmid,
};

pub const K: u64 = 4096;
pub const M2: u64 = 2 << 20;
pub const G: u64 = 1 << 30;
/// Output addresses.
const OUT: u64 = 0x10_0000_0000;

/// A case a baseline's source handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// Unmap one 4 KiB page (G + 4 KiB) of 2 MiB mapped with pages.
    Page,
    /// Unmap one 2 MiB block (at G) of two.
    Block,
    /// Unmap 600 pages (G + 64 KiB up to G + 2464 KiB) of 4 MiB mapped
    /// with pages: over the 512-operation thresholds.
    Range,
    /// Make two pages (G + 4 KiB, G + 8 KiB) read-only.
    Protect,
    /// Make one read-only page (G + 4 KiB) writable again.
    Relax,
    /// Retire the VMID / ASID, then unmap everything: 4 MiB of pages at G
    /// (two last-level tables) and two 2 MiB blocks at 2 GiB.
    Teardown,
    /// Unmap a 1 GiB block (at G): one entry spanning more than 512 pages.
    GibBlock,
    /// Unmap one page (G + 4 KiB) inside a 2 MiB block: the block is
    /// split with break-before-make.
    Split,
}

/// The regime a case runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    /// Stage 2, VMID 1.
    Stage2,
    /// EL1&0 stage 1, ASID 1.
    Stage1,
}

/// Forwards to a policy and keeps what it emitted.
struct Tap {
    inner: Box<dyn Invalidator>,
    log: Arc<Mutex<Vec<Effect>>>,
}

impl Invalidator for Tap {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn invalidate(
        &self,
        space: &Space,
        purpose: Purpose,
        changes: &[Change],
        mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        let mut rec = Recorder::new();
        let r = self
            .inner
            .invalidate(space, purpose, changes, mapped, &mut rec);
        let mut log = self.log.lock().unwrap();
        for e in rec.take() {
            match e {
                Effect::Barrier(b) => fx.barrier(b),
                Effect::Tlbi { op, operand } => fx.tlbi(op, operand),
                other => panic!("a policy emitted {other}"),
            }
            log.push(e);
        }
        r
    }
}

fn opts(blocks: bool) -> MapOptions {
    MapOptions {
        blocks,
        replace: true,
    }
}

/// What `policy` (built for `caps`) emits in `case` on `on`: the barriers
/// and TLBIs of its own invalidations, in order, nothing else.
pub fn run(policy: &str, caps: Capabilities, case: Case, on: On) -> Vec<Effect> {
    let b = vmsa_baselines::get(policy).expect("policy");
    let log = Arc::new(Mutex::new(Vec::new()));
    let tap = Box::new(Tap {
        inner: b.make(caps, Profile::NATIVE),
        log: log.clone(),
    });
    let mut fx = Recorder::new();
    match on {
        On::Stage2 => {
            let mut t = Table::new(
                Stage2::new(Vmid(1)),
                Geometry::stage2(Granule::K4, 40).unwrap(),
                Arena::new(Pa(0x8000_0000), 8192),
                &mut fx,
            )
            .unwrap();
            t.set_invalidator(tap);
            t.activate(&mut fx);
            let rw = Stage2Attrs::RAM;
            let ro = Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly);
            let map =
                |t: &mut Table<Stage2, Arena>, s: u64, e: u64, at, blocks, fx: &mut Recorder| {
                    t.map(Ipa(s)..Ipa(e), Pa(OUT + s), at, opts(blocks), fx)
                        .unwrap();
                };
            let unmap = |t: &mut Table<Stage2, Arena>, s: u64, e: u64, fx: &mut Recorder| {
                t.unmap(Ipa(s)..Ipa(e), fx).unwrap();
            };
            match case {
                Case::Page | Case::Protect => map(&mut t, G, G + M2, rw, false, &mut fx),
                Case::Relax => map(&mut t, G, G + M2, ro, false, &mut fx),
                Case::Block => map(&mut t, G, G + 2 * M2, rw, true, &mut fx),
                Case::Split => map(&mut t, G, G + M2, rw, true, &mut fx),
                Case::Range => map(&mut t, G, G + 2 * M2 * 2, rw, false, &mut fx),
                Case::Teardown => {
                    map(&mut t, G, G + 2 * M2, rw, false, &mut fx);
                    map(&mut t, 2 * G, 2 * G + 2 * M2, rw, true, &mut fx);
                }
                Case::GibBlock => map(&mut t, G, 2 * G, rw, true, &mut fx),
            }
            t.flush(&mut fx);
            log.lock().unwrap().clear();
            match case {
                Case::Page | Case::Split => unmap(&mut t, G + K, G + 2 * K, &mut fx),
                Case::Block => unmap(&mut t, G, G + M2, &mut fx),
                Case::Range => unmap(&mut t, G + 16 * K, G + 616 * K, &mut fx),
                Case::Protect => {
                    t.protect(Ipa(G + K)..Ipa(G + 3 * K), ro, &mut fx).unwrap();
                }
                Case::Relax => {
                    t.protect(Ipa(G + K)..Ipa(G + 2 * K), rw, &mut fx).unwrap();
                }
                Case::Teardown => {
                    t.retire();
                    unmap(&mut t, 0, 1 << 40, &mut fx);
                }
                Case::GibBlock => unmap(&mut t, G, 2 * G, &mut fx),
            }
            t.flush(&mut fx);
        }
        On::Stage1 => {
            let mut t = Table::new(
                El1Stage1::new(Asid(1)),
                Geometry::stage1(Granule::K4, 48).unwrap(),
                Arena::new(Pa(0x8000_0000), 8192),
                &mut fx,
            )
            .unwrap();
            t.set_invalidator(tap);
            t.activate(&mut fx);
            let rw = Stage1Attrs::normal_rw(0);
            let ro = rw.read_only();
            let map =
                |t: &mut Table<El1Stage1, Arena>, s: u64, e: u64, at, blocks, fx: &mut Recorder| {
                    t.map(Va(s)..Va(e), Ipa(OUT + s), at, opts(blocks), fx)
                        .unwrap();
                };
            let unmap = |t: &mut Table<El1Stage1, Arena>, s: u64, e: u64, fx: &mut Recorder| {
                t.unmap(Va(s)..Va(e), fx).unwrap();
            };
            match case {
                Case::Page | Case::Protect => map(&mut t, G, G + M2, rw, false, &mut fx),
                Case::Relax => map(&mut t, G, G + M2, ro, false, &mut fx),
                Case::Block => map(&mut t, G, G + 2 * M2, rw, true, &mut fx),
                Case::Split => map(&mut t, G, G + M2, rw, true, &mut fx),
                Case::Range => map(&mut t, G, G + 2 * M2 * 2, rw, false, &mut fx),
                Case::Teardown => {
                    map(&mut t, G, G + 2 * M2, rw, false, &mut fx);
                    map(&mut t, 2 * G, 2 * G + 2 * M2, rw, true, &mut fx);
                }
                Case::GibBlock => map(&mut t, G, 2 * G, rw, true, &mut fx),
            }
            t.flush(&mut fx);
            log.lock().unwrap().clear();
            match case {
                Case::Page | Case::Split => unmap(&mut t, G + K, G + 2 * K, &mut fx),
                Case::Block => unmap(&mut t, G, G + M2, &mut fx),
                Case::Range => unmap(&mut t, G + 16 * K, G + 616 * K, &mut fx),
                Case::Protect => {
                    t.protect(Va(G + K)..Va(G + 3 * K), ro, &mut fx).unwrap();
                }
                Case::Relax => {
                    t.protect(Va(G + K)..Va(G + 2 * K), rw, &mut fx).unwrap();
                }
                Case::Teardown => {
                    t.retire();
                    unmap(&mut t, 0, 1 << 48, &mut fx);
                }
                Case::GibBlock => unmap(&mut t, G, 2 * G, &mut fx),
            }
            t.flush(&mut fx);
        }
    }
    let out = log.lock().unwrap().clone();
    out
}

// ----- building expected sequences ----------------------------------------

pub fn ishst() -> Effect {
    Effect::Barrier(Barrier::DsbIshst)
}
pub fn ish() -> Effect {
    Effect::Barrier(Barrier::DsbIsh)
}
pub fn isb() -> Effect {
    Effect::Barrier(Barrier::Isb)
}
pub fn tlbi(op: TlbiOp, operand: u64) -> Effect {
    Effect::Tlbi { op, operand }
}
/// A stage 2 by-IPA operation (all levels unless `last`).
pub fn ipa(addr: u64, ttl: Ttl, last: bool) -> Effect {
    let op = if last {
        TlbiOp::Ipas2le1is
    } else {
        TlbiOp::Ipas2e1is
    };
    tlbi(op, ipa_operand(addr, ttl))
}
/// `TLBI VMALLE1IS`.
pub fn vmalle1is() -> Effect {
    tlbi(TlbiOp::Vmalle1is, 0)
}
/// `TLBI VMALLS12E1IS`.
pub fn vmalls12e1is() -> Effect {
    tlbi(TlbiOp::Vmalls12e1is, 0)
}
/// A stage 1 by-VA operation of ASID 1.
pub fn va(op: TlbiOp, addr: u64, ttl: Ttl) -> Effect {
    tlbi(op, va_operand(1, addr, ttl))
}
/// A range operand (4 KiB granule).
pub fn range(asid: u16, base: u64, scale: u8, num: u8, ttl: u8) -> u64 {
    RangeOperand {
        asid,
        tg: 0b01,
        scale,
        num,
        ttl,
        base: base / K,
    }
    .encode()
}
/// A level hint for the 4 KiB granule.
pub fn ttl(level: u8) -> Ttl {
    Ttl::at(1, level)
}

/// Renders a log for failure messages.
pub fn show(log: &[Effect]) -> String {
    let mut s = String::new();
    for e in log.iter().take(40) {
        s.push_str(&format!("  {e}\n"));
    }
    if log.len() > 40 {
        s.push_str(&format!("  ... ({} in all)\n", log.len()));
    }
    s
}

/// Asserts that `got` is exactly `want`.
#[track_caller]
pub fn pin(what: &str, got: Vec<Effect>, want: Vec<Effect>) {
    assert!(
        got == want,
        "{what}: emitted\n{}wanted\n{}",
        show(&got),
        show(&want)
    );
}
