//! Library effects written as a Casemate trace (`Recorder::write_casemate`)
//! read back by the model's trace reader as the same events, one for one.

use vmsa::casemate::HINT_PAGE;
use vmsa::tlbi::OperandKind;
use vmsa::{
    Arena, Effect, Geometry, Granule, Ipa, MapOptions, Pa, PageEvent, Recorder, S2ap, Stage2,
    Stage2Attrs, Table, Vmid,
};
use vmsa_model::trace::Reader;
use vmsa_model::{Event, Hint, Origin};

const K: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

fn ipa(r: std::ops::Range<u64>) -> std::ops::Range<Ipa> {
    Ipa(r.start)..Ipa(r.end)
}

/// A live stage 2 table changed in every way that produces effects.
fn record_operations() -> Recorder {
    let mut fx = Recorder::new();
    let mut t = Table::new(
        Stage2::new(Vmid(7)),
        Geometry::stage2(Granule::K4, 40).unwrap(),
        Arena::new(Pa(0x8000_0000), 64),
        &mut fx,
    )
    .unwrap();
    let o = MapOptions::default();
    t.map(ipa(0..M2 + 4 * K), Pa(G1), Stage2Attrs::RAM, o, &mut fx)
        .unwrap();
    t.activate(&mut fx);
    t.map(ipa(G1..2 * G1), Pa(4 * G1), Stage2Attrs::RAM, o, &mut fx)
        .unwrap();
    let ro = Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly);
    t.protect(ipa(0..8 * K), ro, &mut fx).unwrap();
    // Moving a live page: unmap (with invalidation), then map elsewhere.
    t.unmap(ipa(K..2 * K), &mut fx).unwrap();
    t.map(ipa(K..2 * K), Pa(2 * G1), Stage2Attrs::RAM, o, &mut fx)
        .unwrap();
    // Emptying the level 3 table of [2 MiB, 4 MiB) releases it.
    t.unmap(ipa(M2..M2 + 4 * K), &mut fx).unwrap();
    t.unmap(ipa(G1..2 * G1), &mut fx).unwrap();
    t.flush(&mut fx);
    fx
}

/// The events an effect must read back as.
fn expected(effect: &Effect) -> Vec<Event> {
    match *effect {
        Effect::Store { pa, new, .. } => vec![Event::Write {
            pa: pa.0,
            value: new,
            release: false,
        }],
        Effect::Barrier(b) => vec![Event::Barrier(b.into())],
        Effect::Tlbi { op, operand } => vec![Event::Tlbi {
            op,
            operand: if op.operand_kind() == OperandKind::None {
                0
            } else {
                operand
            },
        }],
        Effect::SysReg { reg, value } => vec![Event::SysReg {
            reg: reg.into(),
            value,
        }],
        Effect::Cache { .. } => vec![],
        Effect::Page(PageEvent::Init { pa, bytes }) => {
            vec![Event::MemInit {
                pa: pa.0,
                size: bytes,
            }]
        }
        Effect::Page(PageEvent::Release { pa, bytes }) => (0..bytes / HINT_PAGE)
            .map(|i| {
                Event::Hint(Hint::ReleaseTable {
                    page: pa.0 + i * HINT_PAGE,
                })
            })
            .collect(),
    }
}

#[test]
fn recorded_effects_read_back_one_for_one() {
    let fx = record_operations();
    let log = fx.log();
    // The scenario exercises every kind of effect with a Casemate form.
    let has = |f: fn(&Effect) -> bool| log.iter().any(f);
    assert!(has(|e| matches!(e, Effect::Store { .. })));
    assert!(has(|e| matches!(e, Effect::Barrier(_))));
    assert!(has(
        |e| matches!(e, Effect::Tlbi { op, .. } if op.operand_kind() != OperandKind::None)
    ));
    assert!(has(|e| matches!(e, Effect::SysReg { .. })));
    assert!(has(|e| matches!(e, Effect::Page(PageEvent::Init { .. }))));
    assert!(has(|e| matches!(
        e,
        Effect::Page(PageEvent::Release { .. })
    )));

    let mut text = String::new();
    fx.write_casemate(&mut text, 3).unwrap();
    let records: Vec<_> = Reader::new(text.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}\n{text}"));

    let want: Vec<Event> = log.iter().flat_map(expected).collect();
    assert_eq!(records.len(), want.len(), "{text}");
    for (i, (r, e)) in records.iter().zip(&want).enumerate() {
        assert_eq!(
            r.origin,
            Origin {
                seq: i as u64,
                line: i as u64 + 1
            }
        );
        assert_eq!(r.pe, 3);
        assert_eq!(r.event, *e, "record {i}: {}", text.lines().nth(i).unwrap());
    }
}
