//! Random table operations on live tables of all three regimes (stage 2,
//! EL1&0 stage 1, EL2): after every operation the table maps what a plain
//! reference map says (a failed operation changes nothing), and the
//! effects of the whole sequence, replayed on the model with four PEs
//! running the table, leave no violation.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vmsa::{
    Ap, Arena, Asid, El1Stage1, El2Stage1, Geometry, Granule, Ipa, MapOptions, Pa,
    Recorder, S2ap, Stage1Attrs, Stage2, Stage2Attrs, Table, Va, Vmid,
};
use vmsa_model::{Config, Event, Machine, Origin};

#[path = "../../crates/vmsa/tests/common/mod.rs"]
mod common;
use common::{table_runs, Reference};

const PAGE: u64 = 4096;
/// Operations stay within 64 MiB (16384 pages) of input.
const PAGES: u64 = 16384;

#[derive(Arbitrary, Debug)]
enum Op {
    Map {
        start: u16,
        len: u16,
        out: u16,
        read_only: bool,
        blocks: bool,
        replace: bool,
    },
    Unmap {
        start: u16,
        len: u16,
    },
    Protect {
        start: u16,
        len: u16,
        read_only: bool,
    },
    Split {
        at: u16,
    },
    Collapse {
        start: u16,
        len: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Case {
    regime: u8,
    ops: Vec<Op>,
}

fn span(start: u16, len: u16) -> (u64, u64) {
    let s = u64::from(start) % PAGES;
    let l = (u64::from(len) % 1024).max(1).min(PAGES - s);
    (s * PAGE, (s + l) * PAGE)
}

macro_rules! run {
    ($case:expr, $regime:expr, $geometry:expr, $input:ident, $output:ident, $rw:expr, $ro:expr) => {{
        let mut fx = Recorder::new();
        let mut t = Table::new(
            $regime,
            $geometry,
            Arena::new(Pa(0x8000_0000), 2048),
            &mut fx,
        )
        .expect("a table");
        t.activate(&mut fx);
        let mut r = Reference::default();
        for op in $case.ops.iter().take(32) {
            let before = table_runs(&t);
            let res = match *op {
                Op::Map { start, len, out, read_only, blocks, replace } => {
                    let (s, e) = span(start, len);
                    let oa = 0x1_0000_0000 + u64::from(out) * PAGE;
                    let a = if read_only { $ro } else { $rw };
                    let opts = MapOptions { blocks, replace };
                    let res = t.map($input(s)..$input(e), $output(oa), a, opts, &mut fx);
                    if res.is_ok() {
                        r.insert(s, e, oa, a);
                    }
                    res.map(|_| ())
                }
                Op::Unmap { start, len } => {
                    let (s, e) = span(start, len);
                    let res = t.unmap($input(s)..$input(e), &mut fx);
                    if res.is_ok() {
                        r.remove(s, e);
                    }
                    res.map(|_| ())
                }
                Op::Protect { start, len, read_only } => {
                    let (s, e) = span(start, len);
                    let a = if read_only { $ro } else { $rw };
                    let res = t.protect($input(s)..$input(e), a, &mut fx);
                    if res.is_ok() {
                        r.protect(s, e, a);
                    }
                    res.map(|_| ())
                }
                // Neither changes what is mapped, only how.
                Op::Split { at } => {
                    let (s, _) = span(at, 1);
                    t.split_block($input(s), &mut fx).map(|_| ())
                }
                Op::Collapse { start, len } => {
                    let (s, e) = span(start, len);
                    t.collapse($input(s)..$input(e), &mut fx).map(|_| ())
                }
            };
            let now = table_runs(&t);
            match res {
                Ok(()) => assert_eq!(now, r.normalized(), "after {op:?}"),
                Err(e) => assert_eq!(now, before, "{op:?} failed ({e}) but changed the table"),
            }
        }
        t.flush(&mut fx);
        // The model: PE 0 ran everything; PEs 1-3 run the table too.
        let log = fx.take();
        let mut m = Machine::new(Config { pes: 4, ..Config::default() });
        let regs: Vec<_> = log
            .iter()
            .filter(|e| matches!(e, vmsa::Effect::SysReg { .. }))
            .copied()
            .collect();
        m.replay(0, &log);
        for pe in 1..4 {
            m.replay(pe, &regs);
        }
        m.step(0, &Event::Complete, Origin::default());
        let v: Vec<String> = m.violations().iter().map(|v| v.to_string()).collect();
        assert!(v.is_empty(), "{:#?}\n{v:#?}", $case.ops);
    }};
}

fuzz_target!(|case: Case| {
    match case.regime % 3 {
        0 => run!(
            case,
            Stage2::new(Vmid(3)),
            Geometry::stage2(Granule::K4, 40).unwrap(),
            Ipa,
            Pa,
            Stage2Attrs::RAM,
            Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly)
        ),
        1 => run!(
            case,
            El1Stage1::new(Asid(9)),
            Geometry::stage1(Granule::K4, 48).unwrap(),
            Va,
            Ipa,
            Stage1Attrs::normal_rw(0),
            Stage1Attrs::normal_rw(0).read_only()
        ),
        _ => {
            let rw = Stage1Attrs {
                ap: Ap::ReadWrite,
                ng: false,
                pxn: false,
                ..Stage1Attrs::normal_rw(1)
            };
            run!(
                case,
                El2Stage1::default(),
                Geometry::stage1(Granule::K4, 39).unwrap(),
                Va,
                Pa,
                rw,
                rw.read_only()
            )
        }
    }
});
