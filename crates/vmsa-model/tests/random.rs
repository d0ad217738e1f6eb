//! Randomized: guests on several PEs translate while the library changes
//! live tables through the model; after every flush (the operation's
//! completion point) the checker finds nothing, and no PE can translate any
//! address to anything the tables do not grant.

use vmsa::{
    Arena, Capabilities, Geometry, Granule, Ipa, MapOptions, Pa, Planner, Profile, S2ap, Stage2,
    Stage2Attrs, Table, Vmid,
};
use vmsa_model::desc::grant;
use vmsa_model::{Access, Config, Event, Key, Machine, ModelEffects, Origin};

const K: u64 = 4096;
const M2: u64 = 2 << 20;
/// The guest's IPA window: 16 MiB.
const SPAN: u64 = 8 * M2;

/// xorshift64*: small, seeded, good enough to pick operations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random page-aligned range inside the window, sometimes 2 MiB aligned.
fn range(r: &mut Rng) -> (u64, u64) {
    if r.below(3) == 0 {
        let s = r.below(SPAN / M2) * M2;
        (s, s + M2 * (1 + r.below(2)).min((SPAN - s) / M2))
    } else {
        let s = r.below(SPAN / K) * K;
        let len = (1 + r.below(40)) * K;
        (s, (s + len).min(SPAN))
    }
}

fn run(seed: u64, pes: usize, ops: usize, caps: Capabilities) {
    let mut r = Rng(seed | 1);
    let mut m = Machine::new(Config {
        pes,
        ..Config::default()
    });
    let vmid = Vmid(5);
    let mut t = {
        let mut fx = ModelEffects::new(&mut m, 0);
        let mut t = Table::new(
            Stage2::new(vmid),
            Geometry::stage2(Granule::K4, 40).unwrap(),
            Arena::new(Pa(0x8000_0000), 4096),
            &mut fx,
        )
        .unwrap();
        t.set_invalidator(Box::new(Planner::new(caps, Profile::NATIVE)));
        t.activate(&mut fx);
        t
    };
    let key = Key::Vmid(5);
    let rw = Stage2Attrs::RAM;
    let ro = Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly);
    for step in 0..ops {
        // A guest on some PE touches some addresses mid-operation: it may
        // see old or new translations, which is allowed.
        for _ in 0..4 {
            let pe = r.below(pes as u64) as usize;
            let need = if r.below(2) == 0 {
                grant::READ
            } else {
                grant::WRITE
            };
            let _ = m.access(pe, key, r.below(SPAN), need);
        }
        let (s, e) = range(&mut r);
        {
            let mut fx = ModelEffects::new(&mut m, 0);
            let out =
                Pa(0x1_0000_0000 + r.below(64) * M2 + if r.below(2) == 0 { 0 } else { s % M2 });
            let attrs = if r.below(3) == 0 { ro } else { rw };
            let result = match r.below(6) {
                0 | 1 => t
                    .map(
                        Ipa(s)..Ipa(e),
                        out,
                        attrs,
                        MapOptions {
                            replace: true,
                            blocks: r.below(2) == 0,
                        },
                        &mut fx,
                    )
                    .map(|_| ()),
                2 => t.unmap(Ipa(s)..Ipa(e), &mut fx).map(|_| ()),
                3 => t.protect(Ipa(s)..Ipa(e), attrs, &mut fx).map(|_| ()),
                4 => t.split_block(Ipa(s), &mut fx).map(|_| ()),
                _ => t
                    .collapse(Ipa(s & !(M2 - 1))..Ipa((s & !(M2 - 1)) + M2), &mut fx)
                    .map(|_| ()),
            };
            // Errors (nothing to split, overlapping output, ...) leave the
            // table as it was; that is tested in the library.
            let _ = result;
            // Flush after most operations; sometimes batch two.
            if r.below(4) != 0 {
                t.flush(&mut fx);
            } else {
                continue;
            }
        }
        m.step(0, &Event::Complete, Origin::default());
        assert!(
            m.violations().is_empty(),
            "seed {seed} step {step}: {}",
            m.violations()[0]
        );
        // No guest access can get through a stale entry now.
        for _ in 0..8 {
            let pe = r.below(pes as u64) as usize;
            let a = r.below(SPAN);
            let got = m.access(pe, key, a, grant::WRITE);
            assert!(
                !matches!(got, Access::Stale { .. }),
                "seed {seed} step {step}: PE {pe} at {a:#x}: {got:?}"
            );
        }
        // From every PE, every translation it may use is one the tables
        // give (or stricter).
        for _ in 0..16 {
            let a = r.below(SPAN) & !(K - 1);
            let now = t.translate(Ipa(a));
            for pe in 0..pes {
                for (out, g) in m.may_translate(pe, key, a) {
                    let Some(tr) = now else {
                        panic!("seed {seed} step {step}: PE {pe} may translate unmapped {a:#x} to {out:#x}");
                    };
                    assert_eq!(
                        out, tr.output.0,
                        "seed {seed} step {step}: PE {pe} at {a:#x}"
                    );
                    let allowed = if tr.attrs == ro {
                        grant::READ | grant::EXEC | grant::EL0_EXEC
                    } else {
                        0xff
                    };
                    assert_eq!(
                        g & !allowed,
                        0,
                        "seed {seed} step {step}: PE {pe} at {a:#x} grants {g:#b}"
                    );
                }
            }
        }
    }
}

#[test]
fn random_operations_on_a_live_stage2_table_leave_nothing_stale() {
    for seed in 0..60 {
        run(
            seed * 7919 + 1,
            1 + (seed as usize % 4),
            40,
            Capabilities::default(),
        );
        run(
            seed * 7919 + 2,
            1 + (seed as usize % 4),
            40,
            Capabilities::armv8_4(),
        );
    }
}
