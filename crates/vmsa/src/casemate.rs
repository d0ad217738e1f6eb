//! Recorded effects as a Casemate trace (rems-project/casemate, the format
//! of `doc/asciidoc/sections/trace-format.adoc`), so that Casemate's
//! offline checker or the vmsa model can judge what the library did.
//!
//! Records are written in the keyword form, one per line, numbers in hex
//! with a `0x` prefix:
//!
//! ```text
//! (mem-write (id 0) (tid 0) (mem-order plain) (address 0x80000000) (value 0x80001003))
//! (barrier (id 1) (tid 0) dsb (kind ish))
//! (tlbi (id 2) (tid 0) ipas2e1is (value 0x40000))
//! ```
//!
//! | effect | records |
//! |---|---|
//! | [`Effect::Store`] | `mem-write`, `mem-order plain` |
//! | [`Effect::Barrier`] | `barrier dsb (kind ish\|ishst\|nsh\|sy)` or `barrier isb` |
//! | [`Effect::Tlbi`] | `tlbi <op>`, with `(value <operand>)` when the operation takes one |
//! | [`Effect::SysReg`] | `sysreg-write` |
//! | [`Effect::Cache`] | none: the format has no cache maintenance |
//! | [`PageEvent::Init`] | `mem-init` |
//! | [`PageEvent::Release`] | one `hint (kind release_table)` per 4 KiB page |

use core::fmt::{self, Write};

use crate::effects::{Barrier, Effect, PageEvent, Recorder};
use crate::tlbi::OperandKind;

/// The page size by which [`PageEvent::Release`] is split into
/// `release_table` hints (Casemate tracks table pages of 4 KiB).
pub const HINT_PAGE: u64 = 4096;

/// How many records [`write_effect`] writes for `effect`.
pub fn record_count(effect: &Effect) -> u64 {
    match *effect {
        Effect::Cache { .. } => 0,
        Effect::Page(PageEvent::Release { bytes, .. }) => bytes.div_ceil(HINT_PAGE),
        _ => 1,
    }
}

/// Writes `effect`, issued by thread `tid`, as Casemate records, each on its
/// own line. An effect that becomes several records (a release of several
/// pages) numbers them `id`, `id + 1`, ...; one without a Casemate form (cache
/// maintenance) writes nothing. [`record_count`] says how many ids were used.
pub fn write_effect(out: &mut impl Write, id: u64, tid: usize, effect: &Effect) -> fmt::Result {
    match *effect {
        Effect::Store { pa, new, .. } => writeln!(
            out,
            "(mem-write (id {id}) (tid {tid}) (mem-order plain) (address {:#x}) (value {new:#x}))",
            pa.0
        ),
        Effect::Barrier(b) => {
            let kind = match b {
                Barrier::DsbIsh => "ish",
                Barrier::DsbIshst => "ishst",
                Barrier::DsbNsh => "nsh",
                Barrier::DsbSy => "sy",
                Barrier::Isb => return writeln!(out, "(barrier (id {id}) (tid {tid}) isb)"),
            };
            writeln!(out, "(barrier (id {id}) (tid {tid}) dsb (kind {kind}))")
        }
        Effect::Tlbi { op, operand } => match op.operand_kind() {
            OperandKind::None => writeln!(out, "(tlbi (id {id}) (tid {tid}) {op})"),
            _ => writeln!(
                out,
                "(tlbi (id {id}) (tid {tid}) {op} (value {operand:#x}))"
            ),
        },
        Effect::SysReg { reg, value } => writeln!(
            out,
            "(sysreg-write (id {id}) (tid {tid}) (sysreg {}) (value {value:#x}))",
            reg.name()
        ),
        Effect::Cache { .. } => Ok(()),
        Effect::Page(PageEvent::Init { pa, bytes }) => writeln!(
            out,
            "(mem-init (id {id}) (tid {tid}) (address {:#x}) (size {bytes:#x}))",
            pa.0
        ),
        Effect::Page(PageEvent::Release { pa, bytes }) => {
            for i in 0..bytes.div_ceil(HINT_PAGE) {
                writeln!(
                    out,
                    "(hint (id {}) (tid {tid}) (kind release_table) (location {:#x}) (value 0x0))",
                    id + i,
                    pa.0 + i * HINT_PAGE
                )?;
            }
            Ok(())
        }
    }
}

impl Recorder {
    /// Writes the recorded effects as a Casemate trace issued by thread
    /// `tid`, numbering the records from 0 (see [`write_effect`]).
    pub fn write_casemate(&self, out: &mut impl Write, tid: usize) -> fmt::Result {
        let mut id = 0;
        for effect in self.log() {
            write_effect(out, id, tid, effect)?;
            id += record_count(effect);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Pa;
    use crate::effects::{CacheOp, SysReg};
    use crate::tlbi::TlbiOp;
    use alloc::string::String;

    #[test]
    fn every_effect_kind() {
        let log = [
            Effect::Page(PageEvent::Init {
                pa: Pa(0x8000_0000),
                bytes: 0x1000,
            }),
            Effect::Store {
                pa: Pa(0x8000_0000),
                old: 0,
                new: 0x8000_1003,
            },
            Effect::Barrier(Barrier::DsbIshst),
            Effect::Cache {
                op: CacheOp::DcCvac,
                addr: 0x8000_0000,
            },
            Effect::Tlbi {
                op: TlbiOp::Ipas2e1is,
                operand: 0x40,
            },
            Effect::Tlbi {
                op: TlbiOp::Vmalle1is,
                operand: 0,
            },
            Effect::Barrier(Barrier::Isb),
            Effect::SysReg {
                reg: SysReg::VttbrEl2,
                value: 0x1_0000_8000_0000,
            },
            Effect::Page(PageEvent::Release {
                pa: Pa(0x8000_2000),
                bytes: 0x2000,
            }),
        ];
        let mut s = String::new();
        let mut id = 0;
        for e in &log {
            write_effect(&mut s, id, 1, e).unwrap();
            id += record_count(e);
        }
        let expected = "\
(mem-init (id 0) (tid 1) (address 0x80000000) (size 0x1000))
(mem-write (id 1) (tid 1) (mem-order plain) (address 0x80000000) (value 0x80001003))
(barrier (id 2) (tid 1) dsb (kind ishst))
(tlbi (id 3) (tid 1) ipas2e1is (value 0x40))
(tlbi (id 4) (tid 1) vmalle1is)
(barrier (id 5) (tid 1) isb)
(sysreg-write (id 6) (tid 1) (sysreg vttbr_el2) (value 0x1000080000000))
(hint (id 7) (tid 1) (kind release_table) (location 0x80002000) (value 0x0))
(hint (id 8) (tid 1) (kind release_table) (location 0x80003000) (value 0x0))
";
        assert_eq!(s, expected);
        assert_eq!(id, 9);
    }
}
