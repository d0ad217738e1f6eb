//! Writing events as Casemate records (keyword form, one per line, numbers
//! as `0x` hex), readable by [`Reader`](super::Reader).

use std::io::{self, Write};

use vmsa::tlbi::OperandKind;

use crate::event::{Barrier, Domain, Event, Hint};

/// The page size by which [`Event::Release`] is split into `release_table`
/// hints.
pub const HINT_PAGE: u64 = 4096;

/// How many records [`write_record`] writes for `event`: one, except for
/// [`Event::Release`], which becomes one `release_table` hint per 4 KiB
/// page (none for an empty range).
pub fn record_count(event: &Event) -> u64 {
    match *event {
        Event::Release { size, .. } => size.div_ceil(HINT_PAGE),
        _ => 1,
    }
}

/// Writes `event`, issued by PE `pe`, as Casemate records with ids `seq`,
/// `seq + 1`, ... ([`record_count`] of them).
///
/// Every event reads back as itself, except:
/// - [`Event::Release`] has no record of its own: it is written as
///   `release_table` hints, which read back as [`Hint::ReleaseTable`];
/// - [`Event::ReleaseData`] and [`Event::Complete`] have no Casemate form:
///   they are written as the vmsa extensions
///   `(release-data (id N) (tid N) (address A) (size S))` and
///   `(complete (id N) (tid N))`, which the reader accepts (Casemate does
///   not);
/// - a `DSB <domain>LD` was read as [`Barrier::Dmb`] and is written as
///   `dmb (kind sy)`.
pub fn write_record(w: &mut impl Write, seq: u64, pe: usize, event: &Event) -> io::Result<()> {
    let (id, tid) = (seq, pe);
    match *event {
        Event::MemInit { pa, size } => writeln!(
            w,
            "(mem-init (id {id}) (tid {tid}) (address {pa:#x}) (size {size:#x}))"
        ),
        Event::MemSet { pa, size, byte } => writeln!(
            w,
            "(mem-set (id {id}) (tid {tid}) (address {pa:#x}) (size {size:#x}) (value {byte:#x}))"
        ),
        Event::Write { pa, value, release } => writeln!(
            w,
            "(mem-write (id {id}) (tid {tid}) (mem-order {}) (address {pa:#x}) (value {value:#x}))",
            if release { "release" } else { "plain" }
        ),
        Event::Read { pa, value } => writeln!(
            w,
            "(mem-read (id {id}) (tid {tid}) (address {pa:#x}) (value {value:#x}))"
        ),
        Event::Barrier(Barrier::Isb) => writeln!(w, "(barrier (id {id}) (tid {tid}) isb)"),
        Event::Barrier(Barrier::Dmb) => {
            writeln!(w, "(barrier (id {id}) (tid {tid}) dmb (kind sy))")
        }
        Event::Barrier(Barrier::Dsb {
            domain,
            stores_only,
        }) => {
            let kind = match (domain, stores_only) {
                (Domain::InnerShareable, false) => "ish",
                (Domain::InnerShareable, true) => "ishst",
                (Domain::NonShareable, false) => "nsh",
                (Domain::NonShareable, true) => "nshst",
                (Domain::OuterShareable, false) => "osh",
                (Domain::OuterShareable, true) => "oshst",
                (Domain::FullSystem, false) => "sy",
                (Domain::FullSystem, true) => "st",
            };
            writeln!(w, "(barrier (id {id}) (tid {tid}) dsb (kind {kind}))")
        }
        Event::Tlbi { op, operand } => {
            if op.operand_kind() == OperandKind::None && operand == 0 {
                writeln!(w, "(tlbi (id {id}) (tid {tid}) {op})")
            } else {
                writeln!(w, "(tlbi (id {id}) (tid {tid}) {op} (value {operand:#x}))")
            }
        }
        Event::SysReg { reg, value } => writeln!(
            w,
            "(sysreg-write (id {id}) (tid {tid}) (sysreg {}) (value {value:#x}))",
            reg.name()
        ),
        Event::Hint(hint) => {
            let (kind, location, value) = match hint {
                Hint::SetRootLock { root, lock } => ("set_root_lock", root, lock),
                Hint::SetOwnerRoot { page, root } => ("set_owner_root", page, root),
                Hint::ReleaseTable { page } => ("release_table", page, 0),
                Hint::SetPteThreadOwner { location, value } => {
                    ("set_pte_thread_owner", location, value)
                }
            };
            write_hint(w, id, tid, kind, location, value)
        }
        Event::Release { pa, size } => {
            for i in 0..size.div_ceil(HINT_PAGE) {
                write_hint(w, id + i, tid, "release_table", pa + i * HINT_PAGE, 0)?;
            }
            Ok(())
        }
        Event::MemFree { pa, size } => writeln!(
            w,
            "(mem-free (id {id}) (tid {tid}) (address {pa:#x}) (size {size:#x}))"
        ),
        Event::ReleaseData { pa, size } => writeln!(
            w,
            "(release-data (id {id}) (tid {tid}) (address {pa:#x}) (size {size:#x}))"
        ),
        Event::Lock { addr } => writeln!(w, "(lock (id {id}) (tid {tid}) (address {addr:#x}))"),
        Event::Unlock { addr } => {
            writeln!(w, "(unlock (id {id}) (tid {tid}) (address {addr:#x}))")
        }
        Event::Complete => writeln!(w, "(complete (id {id}) (tid {tid}))"),
    }
}

fn write_hint(
    w: &mut impl Write,
    id: u64,
    tid: usize,
    kind: &str,
    location: u64,
    value: u64,
) -> io::Result<()> {
    writeln!(
        w,
        "(hint (id {id}) (tid {tid}) (kind {kind}) (location {location:#x}) (value {value:#x}))"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Origin, Reg};
    use crate::trace::{Reader, Record};
    use vmsa::tlbi::TlbiOp;

    fn read_all(text: &[u8]) -> Vec<Record> {
        Reader::new(text)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(text)))
    }

    #[test]
    fn every_event_round_trips() {
        let mut events = vec![
            Event::MemInit {
                pa: 0x8000_0000,
                size: 0x1000,
            },
            Event::MemSet {
                pa: 0x8000_0000,
                size: 0x1000,
                byte: 0xff,
            },
            Event::Write {
                pa: 0x8000_0008,
                value: u64::MAX,
                release: false,
            },
            Event::Write {
                pa: 0x8000_0010,
                value: 0,
                release: true,
            },
            Event::Read {
                pa: 0x8000_0008,
                value: 0x4000_07ff,
            },
            Event::Barrier(Barrier::Isb),
            Event::Barrier(Barrier::Dmb),
            Event::Tlbi {
                op: TlbiOp::Vmalle1is,
                operand: 0,
            },
            Event::Tlbi {
                op: TlbiOp::Vmalle1is,
                operand: 7,
            },
            Event::SysReg {
                reg: Reg::VttbrEl2,
                value: 0x1_0000_8000_0000,
            },
            Event::SysReg {
                reg: Reg::Other("sctlr_el2"),
                value: 1,
            },
            Event::SysReg {
                reg: Reg::Ttbr1El1,
                value: 0x5_0000_8000_0000,
            },
            Event::SysReg {
                reg: Reg::Ttbr1El2,
                value: 0x8000_0000,
            },
            Event::SysReg {
                reg: Reg::HcrEl2,
                value: 1 << 34,
            },
            Event::MemFree {
                pa: 0x8000_2000,
                size: 0x1000,
            },
            Event::Hint(Hint::SetRootLock {
                root: 0x8000_0000,
                lock: 0x9000_0000,
            }),
            Event::Hint(Hint::SetOwnerRoot {
                page: 0x8000_1000,
                root: 0x8000_0000,
            }),
            Event::Hint(Hint::ReleaseTable { page: 0x8000_1000 }),
            Event::Hint(Hint::SetPteThreadOwner {
                location: 0x8000_0008,
                value: 3,
            }),
            Event::ReleaseData {
                pa: 0x4000_0000,
                size: 0x20_0000,
            },
            Event::Lock { addr: 0x9000_0000 },
            Event::Unlock { addr: 0x9000_0000 },
            Event::Complete,
        ];
        for domain in [
            Domain::NonShareable,
            Domain::InnerShareable,
            Domain::OuterShareable,
            Domain::FullSystem,
        ] {
            for stores_only in [false, true] {
                events.push(Event::Barrier(Barrier::Dsb {
                    domain,
                    stores_only,
                }));
            }
        }
        for op in TlbiOp::ALL {
            events.push(Event::Tlbi {
                op,
                operand: if op.operand_kind() == OperandKind::None {
                    0
                } else {
                    0x0001_3000_0000_1234
                },
            });
        }
        for reg in [
            Reg::VttbrEl2,
            Reg::VtcrEl2,
            Reg::Ttbr0El1,
            Reg::TcrEl1,
            Reg::Ttbr0El2,
            Reg::TcrEl2,
        ] {
            events.push(Event::SysReg { reg, value: 0x90 });
        }
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            write_record(&mut out, 100 + i as u64, i % 5, e).unwrap();
        }
        let recs = read_all(&out);
        assert_eq!(recs.len(), events.len());
        for (i, (r, e)) in recs.iter().zip(&events).enumerate() {
            assert_eq!(
                *r,
                Record {
                    origin: Origin {
                        seq: 100 + i as u64,
                        line: i as u64 + 1
                    },
                    pe: i % 5,
                    event: *e
                }
            );
        }
    }

    #[test]
    fn release_becomes_release_table_hints() {
        let e = Event::Release {
            pa: 0x8000_0000,
            size: 0x3000,
        };
        assert_eq!(record_count(&e), 3);
        let mut out = Vec::new();
        write_record(&mut out, 7, 1, &e).unwrap();
        let recs = read_all(&out);
        let got: Vec<(u64, Event)> = recs.iter().map(|r| (r.origin.seq, r.event)).collect();
        assert_eq!(
            got,
            (0..3)
                .map(|i| (
                    7 + i,
                    Event::Hint(Hint::ReleaseTable {
                        page: 0x8000_0000 + i * 0x1000
                    })
                ))
                .collect::<Vec<_>>()
        );
    }
}
