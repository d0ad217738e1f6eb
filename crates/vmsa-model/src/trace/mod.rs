//! Casemate traces: reading, checking, writing and generating them.
//!
//! The format is Casemate's (rems-project/casemate,
//! `doc/asciidoc/sections/trace-format.adoc`): a sequence of s-expression
//! records, each possibly spanning several lines,
//!
//! ```text
//! (mem-write (id 11) (tid 0) (mem-order plain) (address 23f000) (value 240003) (src "x.c:33"))
//! (barrier (id 16) (tid 0) dsb (kind ish))
//! (tlbi (id 14) (tid 0) ipas2e1is (value 0x300000000000))
//! ```
//!
//! or in the positional form, `(mem-write 1 1 "src" release 42 93)` (id,
//! tid, optional src, then the fields in order). `tid` may be spelled
//! `thread`; keywords are case-insensitive; `src` (a string or an integer)
//! is optional and ignored. `id` and `tid` are decimal, every other number
//! is hexadecimal with or without `0x`. Lines starting with `!` (Casemate's
//! verdicts) are skipped.
//!
//! | record | event |
//! |---|---|
//! | `mem-write (mem-order plain\|release) (address A) (value V)` | [`Event::Write`](crate::Event::Write) |
//! | `mem-read (address A) (value V)` | [`Event::Read`](crate::Event::Read) |
//! | `mem-init (address A) (size S)` | [`Event::MemInit`](crate::Event::MemInit) |
//! | `mem-set (address A) (size S) (value BYTE)` | [`Event::MemSet`](crate::Event::MemSet) |
//! | `mem-free (address A) (size S)` | [`Event::MemFree`](crate::Event::MemFree) |
//! | `barrier dsb (kind K)`, `barrier isb`, `barrier dmb [(kind K)]` | [`Event::Barrier`](crate::Event::Barrier) |
//! | `tlbi OP [(value V)]`, `tlbi OP (addr A) [(level L)]` | [`Event::Tlbi`](crate::Event::Tlbi) (operand 0 if absent; `addr`/`level` folded into the operand) |
//! | `sysreg-write` or `msr`, `(sysreg R) (value V)` | [`Event::SysReg`](crate::Event::SysReg) |
//! | `hint (kind H) (location L) (value V)` | [`Event::Hint`](crate::Event::Hint) |
//! | `lock (address A)`, `trylock (address A)`, `unlock (address A)` | [`Event::Lock`](crate::Event::Lock) (a traced `trylock` is one that took the lock), [`Event::Unlock`](crate::Event::Unlock) |
//! | `release-data (address A) (size S)` (vmsa extension) | [`Event::ReleaseData`](crate::Event::ReleaseData) |
//! | `complete` (vmsa extension) | [`Event::Complete`](crate::Event::Complete) |
//!
//! DSB options: `ish`, `nsh`, `osh`, `sy` and their `st` forms (`st` alone
//! is `sy` for stores); the `ld` forms (`ld`, `ishld`, ...) wait for loads
//! only and so complete nothing the model tracks: they are read as
//! [`Barrier::Dmb`](crate::Barrier::Dmb). `ttbr_el2` (as in the format's
//! positional example) is read as `ttbr0_el2`.

mod generate;
mod parse;
mod write;

use std::io::BufRead;

pub use generate::{
    bbm_stress, BBM_STRESS_CYCLE_RECORDS, BBM_STRESS_LOCK, BBM_STRESS_OUTPUT, BBM_STRESS_ROOT,
    BBM_STRESS_SETUP_RECORDS,
};
pub use parse::{ParseError, Reader, Record, MAX_ITEMS};
pub use write::{record_count, write_record, HINT_PAGE};

use crate::cost::Costs;
use crate::event::Origin;
use crate::machine::check::Violation;
use crate::machine::{Config, Machine};

/// What [`check`] found.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// Records read.
    pub records: u64,
    /// Every violation the machine reported.
    pub violations: Vec<Violation>,
    /// What the maintenance cost.
    pub costs: Costs,
}

/// Streams every record of `input` through a [`Machine`] set up by
/// `config`, then ends the run (a completion point), and reports what the
/// machine found. A `tid` beyond `config.pes` adds PEs (up to 64, the
/// model's limit). Stops at the first record that cannot be read, or whose
/// `tid` is 64 or more.
pub fn check<R: BufRead>(input: R, config: Config) -> Result<CheckReport, ParseError> {
    let pes = 64;
    let mut machine = Machine::new(config);
    let mut reader = Reader::new(input);
    let mut records = 0u64;
    let mut next_seq = 0u64;
    while let Some(record) = reader.next_record() {
        let record = record?;
        if record.pe >= pes {
            return Err(ParseError {
                line: record.origin.line,
                message: format!(
                    "tid {} is not a PE of the model, which has at most {pes} (0 to {})",
                    record.pe,
                    pes - 1
                ),
            });
        }
        machine.step(record.pe, &record.event, record.origin);
        records += 1;
        next_seq = record.origin.seq.wrapping_add(1);
    }
    machine.finish(Origin {
        seq: next_seq,
        line: reader.line(),
    });
    Ok(CheckReport {
        records,
        violations: machine.violations().to_vec(),
        costs: machine.costs().clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_counts_records_and_rejects_foreign_pes() {
        let text = "(lock (id 0) (tid 0) (address 1))\n(unlock (id 1) (tid 3) (address 1))\n";
        let report = check(
            text.as_bytes(),
            Config {
                pes: 2,
                ..Config::default()
            },
        )
        .unwrap();
        assert_eq!(report.records, 2, "tid 3 adds PEs");
        let far = "(lock (id 0) (tid 0) (address 1))\n(unlock (id 1) (tid 64) (address 1))\n";
        let e = check(far.as_bytes(), Config::default()).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("tid 64"), "{e}");
        let e = check(
            "(lock (id 0) (tid 0) (address 1)\n".as_bytes(),
            Config::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1: unbalanced parentheses: the input ends inside this record"
        );
    }
}
