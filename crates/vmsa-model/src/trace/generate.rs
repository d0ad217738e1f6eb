//! Generated traces, for benchmarks and stress tests.

use std::io::{self, Write};

use vmsa::tlbi::{ipa_operand, TlbiOp, Ttl};

use super::write::write_record;
use crate::event::{Barrier, Event, Hint, Reg};

/// First table page of [`bbm_stress`]; the four levels follow each other.
pub const BBM_STRESS_ROOT: u64 = 0x8000_0000;
/// The lock guarding [`bbm_stress`]'s tree.
pub const BBM_STRESS_LOCK: u64 = 0x8001_0000;
/// Output address of [`bbm_stress`]'s first level 3 entry at the start.
pub const BBM_STRESS_OUTPUT: u64 = 0x4000_0000;
/// Records [`bbm_stress`] writes before the cycles.
pub const BBM_STRESS_SETUP_RECORDS: u64 = 4 + 1 + 3 + 3 + 512 + 2;
/// Records per cycle of [`bbm_stress`].
pub const BBM_STRESS_CYCLE_RECORDS: u64 = 9;

/// Low attribute bits of a valid stage 2 page descriptor: descriptor type
/// 0b11, MemAttr 0b1111 (Normal write-back), S2AP read/write, Inner
/// Shareable, AF.
const S2_PAGE_ATTRS: u64 = 0b11 | (0b1111 << 2) | (0b11 << 6) | (0b11 << 8) | (1 << 10);
/// `VTCR_EL2`: T0SZ = 16 (48-bit IPA), SL0 = 0b10 (start at level 0 with
/// TG0 = 0, the 4 KiB granule).
const VTCR: u64 = 16 | (0b10 << 6);
/// The VMID in `VTTBR_EL2` \[63:48\].
const VMID: u64 = 1;

/// A small xorshift64 generator: the trace depends on the seed only.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        let s = seed ^ 0x9e37_79b9_7f4a_7c15;
        XorShift(if s == 0 { 1 } else { s })
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Writes numbered records from thread 0.
struct Out<'a, W: Write> {
    w: &'a mut W,
    seq: u64,
}

impl<W: Write> Out<'_, W> {
    fn emit(&mut self, event: Event) -> io::Result<()> {
        write_record(self.w, self.seq, 0, &event)?;
        self.seq += 1;
        Ok(())
    }
}

/// Writes the break-before-make benchmark trace and returns the number of
/// records written ([`BBM_STRESS_SETUP_RECORDS`] +
/// [`BBM_STRESS_CYCLE_RECORDS`] × `cycles`), all issued by thread 0.
///
/// Setup: a stage 2 tree L0 -> L1 -> L2 -> L3 in four zeroed pages from
/// [`BBM_STRESS_ROOT`] (`set_root_lock` on the root, `set_owner_root` for
/// the others), the three table descriptors, 512 valid page descriptors
/// (IPA `i * 0x1000` -> PA [`BBM_STRESS_OUTPUT`]` + i * 0x1000`), then
/// `VTCR_EL2` (48-bit IPA, start at level 0) and `VTTBR_EL2` (VMID 1).
///
/// Then `cycles` times, on a pseudo-random level 3 entry, a correct
/// break-before-make under the lock: `lock`, write 0, `dsb ish`, `tlbi
/// ipas2e1is` of its IPA, `dsb ish`, `tlbi vmalle1is`, `dsb ish`, write a
/// valid descriptor with another output address (bit 32 toggled), `unlock`.
/// A correct checker finds nothing wrong.
pub fn bbm_stress(w: &mut impl Write, cycles: u64, seed: u64) -> io::Result<u64> {
    let mut out = Out { w, seq: 0 };
    let page = |level: u64| BBM_STRESS_ROOT + level * 0x1000;
    for level in 0..4 {
        out.emit(Event::MemInit {
            pa: page(level),
            size: 0x1000,
        })?;
    }
    out.emit(Event::Hint(Hint::SetRootLock {
        root: page(0),
        lock: BBM_STRESS_LOCK,
    }))?;
    for level in 1..4 {
        out.emit(Event::Hint(Hint::SetOwnerRoot {
            page: page(level),
            root: page(0),
        }))?;
    }
    for level in 0..3 {
        out.emit(Event::Write {
            pa: page(level),
            value: page(level + 1) | 0b11,
            release: false,
        })?;
    }
    let mut entries = [0u64; 512];
    for (i, entry) in entries.iter_mut().enumerate() {
        *entry = (BBM_STRESS_OUTPUT + i as u64 * 0x1000) | S2_PAGE_ATTRS;
        out.emit(Event::Write {
            pa: page(3) + i as u64 * 8,
            value: *entry,
            release: false,
        })?;
    }
    out.emit(Event::SysReg {
        reg: Reg::VtcrEl2,
        value: VTCR,
    })?;
    out.emit(Event::SysReg {
        reg: Reg::VttbrEl2,
        value: page(0) | (VMID << 48),
    })?;

    let mut rng = XorShift::new(seed);
    for _ in 0..cycles {
        let i = (rng.next() % 512) as usize;
        let slot = page(3) + i as u64 * 8;
        let ipa = i as u64 * 0x1000;
        entries[i] ^= 1 << 32;
        let events = [
            Event::Lock {
                addr: BBM_STRESS_LOCK,
            },
            Event::Write {
                pa: slot,
                value: 0,
                release: false,
            },
            Event::Barrier(Barrier::DSB_ISH),
            Event::Tlbi {
                op: TlbiOp::Ipas2e1is,
                operand: ipa_operand(ipa, Ttl::NONE),
            },
            Event::Barrier(Barrier::DSB_ISH),
            Event::Tlbi {
                op: TlbiOp::Vmalle1is,
                operand: 0,
            },
            Event::Barrier(Barrier::DSB_ISH),
            Event::Write {
                pa: slot,
                value: entries[i],
                release: false,
            },
            Event::Unlock {
                addr: BBM_STRESS_LOCK,
            },
        ];
        for e in events {
            out.emit(e)?;
        }
    }
    Ok(out.seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Reader;

    #[test]
    fn bbm_stress_shape() {
        let mut out = Vec::new();
        let n = bbm_stress(&mut out, 10, 42).unwrap();
        assert_eq!(n, BBM_STRESS_SETUP_RECORDS + 10 * BBM_STRESS_CYCLE_RECORDS);
        let recs: Vec<_> = Reader::new(&out[..]).collect::<Result<_, _>>().unwrap();
        assert_eq!(recs.len() as u64, n);
        assert!(recs
            .iter()
            .enumerate()
            .all(|(i, r)| r.origin.seq == i as u64 && r.pe == 0));
        assert_eq!(
            recs[BBM_STRESS_SETUP_RECORDS as usize - 1].event,
            Event::SysReg {
                reg: Reg::VttbrEl2,
                value: 0x0001_0000_8000_0000
            }
        );
        // Deterministic in the seed.
        let mut again = Vec::new();
        bbm_stress(&mut again, 10, 42).unwrap();
        assert_eq!(out, again);
        let mut other = Vec::new();
        bbm_stress(&mut other, 10, 43).unwrap();
        assert_ne!(out, other);
        // The first page descriptor.
        assert_eq!(
            recs[11].event,
            Event::Write {
                pa: 0x8000_3000,
                value: 0x4000_07ff,
                release: false
            }
        );
    }
}
