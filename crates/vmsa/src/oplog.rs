//! A compact log of the operations a hypervisor performs on one stage 2
//! table: what it asked the library to do, where, from which PE, and the
//! guest faults that led to it. Replaying the log through another
//! invalidation policy (in the model) prices that policy on the same
//! stream of changes: a live run cannot be repeated exactly, a log can.
//!
//! The log says nothing about TLB maintenance: that is what a replay
//! decides. It records operations, flush points, which PEs run the VMID
//! and the guest's stage 2 faults.
//!
//! # Format
//!
//! A header, then records. The header is the 8 bytes `VMSAOPS1`. Each
//! record is a tag byte followed by its fields as unsigned LEB128 numbers:
//! addresses and range lengths in 4 KiB pages (every address a table
//! operation takes is page aligned; the encoder drops the low 12 bits),
//! attributes as the descriptor bits of [`Stage2Attrs::to_bits`]. A
//! page-sized change takes about 6 bytes. The last record of a complete
//! log is [`Op::End`].
//!
//! # Example
//!
//! ```
//! use vmsa::oplog::{Decoder, Encoder, Op};
//! use vmsa::{Ipa, Stage2Attrs};
//!
//! let mut bytes = Vec::new();
//! let mut log = Encoder::new(&mut bytes);
//! log.push(&Op::Protect { pe: 0, range: Ipa(0x4000_0000)..Ipa(0x4000_1000), attrs: Stage2Attrs::RAM });
//! log.push(&Op::Flush { pe: 0 });
//! log.push(&Op::End);
//!
//! let ops: Vec<Op> = Decoder::new(&bytes)?.collect::<Result<_, _>>()?;
//! assert_eq!(ops.len(), 3);
//! assert_eq!(ops[1], Op::Flush { pe: 0 });
//! # Ok::<(), vmsa::oplog::DecodeError>(())
//! ```

use core::fmt;
use core::ops::Range;

use crate::addr::{Ipa, Pa};
use crate::descriptor::Stage2Attrs;

/// The first bytes of every log.
pub const MAGIC: &[u8; 8] = b"VMSAOPS1";

/// Addresses are logged in units of 4 KiB.
const PAGE_SHIFT: u32 = 12;

/// What kind of stage 2 fault the guest took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// No valid entry.
    Translation,
    /// An entry without the permission the access needed.
    Permission,
    /// The access flag was clear.
    AccessFlag,
}

/// One logged operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `Table::map` of `range` to `pa` (`blocks`: largest blocks allowed).
    Map {
        /// Issuing PE.
        pe: u8,
        /// Input range.
        range: Range<Ipa>,
        /// First output address.
        pa: Pa,
        /// Attributes.
        attrs: Stage2Attrs,
        /// Whether blocks were allowed.
        blocks: bool,
    },
    /// `Table::unmap`.
    Unmap {
        /// Issuing PE.
        pe: u8,
        /// Input range.
        range: Range<Ipa>,
    },
    /// `Table::protect` to `attrs`.
    Protect {
        /// Issuing PE.
        pe: u8,
        /// Input range.
        range: Range<Ipa>,
        /// New attributes.
        attrs: Stage2Attrs,
    },
    /// `Table::split_block` at `addr`.
    Split {
        /// Issuing PE.
        pe: u8,
        /// An address in the block.
        addr: Ipa,
    },
    /// `Table::collapse` of `range`.
    Collapse {
        /// Issuing PE.
        pe: u8,
        /// Input range.
        range: Range<Ipa>,
    },
    /// `Table::flush`: the policy's invalidation point.
    Flush {
        /// Issuing PE.
        pe: u8,
    },
    /// `Table::activate`: the table goes live, first run on `pe`.
    Activate {
        /// The PE.
        pe: u8,
    },
    /// `Table::vcpu_load`: a vCPU of the VM starts running on `pe`.
    VcpuLoad {
        /// The PE.
        pe: u8,
    },
    /// A guest stage 2 fault at `ipa` on `pe` (logged before the operations
    /// its handling caused).
    Fault {
        /// The faulting PE.
        pe: u8,
        /// The faulting IPA (page aligned).
        ipa: Ipa,
        /// What kind of fault.
        kind: FaultKind,
        /// The access was a write (or a stage 1 walk's descriptor update).
        write: bool,
        /// The fault was taken on the guest's stage 1 walk.
        s1ptw: bool,
    },
    /// `Table::spurious_fault` found the tables already allow the access:
    /// the fault came from a stale, stricter entry.
    Spurious {
        /// The PE.
        pe: u8,
        /// The IPA.
        ipa: Ipa,
    },
    /// A data frame the guest no longer reaches was given back (after a
    /// migration or a swap-out): from now on it may hold anything.
    ReleaseFrame {
        /// The PE.
        pe: u8,
        /// The frame.
        pa: Pa,
    },
    /// The end of a complete log.
    End,
}

mod tag {
    pub const MAP: u8 = 1;
    pub const UNMAP: u8 = 2;
    pub const PROTECT: u8 = 3;
    pub const SPLIT: u8 = 4;
    pub const COLLAPSE: u8 = 5;
    pub const FLUSH: u8 = 6;
    pub const ACTIVATE: u8 = 7;
    pub const VCPU_LOAD: u8 = 8;
    pub const FAULT: u8 = 9;
    pub const SPURIOUS: u8 = 10;
    pub const RELEASE_FRAME: u8 = 11;
    pub const END: u8 = 0xff;
}

/// Where an [`Encoder`] puts bytes.
pub trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for alloc::vec::Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn put(&mut self, bytes: &[u8]) {
        (**self).put(bytes);
    }
}

/// Writes a log into a [`Sink`].
pub struct Encoder<S: Sink> {
    sink: S,
    records: u64,
}

impl<S: Sink> Encoder<S> {
    /// Starts a log: writes the header.
    pub fn new(mut sink: S) -> Self {
        sink.put(MAGIC);
        Encoder { sink, records: 0 }
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The sink, to flush or inspect it.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Appends one record.
    pub fn push(&mut self, op: &Op) {
        let mut buf = [0u8; 64];
        let n = encode(op, &mut buf);
        self.sink.put(&buf[..n]);
        self.records += 1;
    }
}

/// Encodes `op` into `buf` (64 bytes always suffice); returns the length.
pub fn encode(op: &Op, buf: &mut [u8; 64]) -> usize {
    let mut w = Writer { buf, at: 0 };
    match op {
        Op::Map {
            pe,
            range,
            pa,
            attrs,
            blocks,
        } => {
            w.byte(tag::MAP);
            w.num(u64::from(*pe));
            w.range(range);
            w.addr(pa.0);
            w.num(attrs.to_bits());
            w.num(u64::from(*blocks));
        }
        Op::Unmap { pe, range } => {
            w.byte(tag::UNMAP);
            w.num(u64::from(*pe));
            w.range(range);
        }
        Op::Protect { pe, range, attrs } => {
            w.byte(tag::PROTECT);
            w.num(u64::from(*pe));
            w.range(range);
            w.num(attrs.to_bits());
        }
        Op::Split { pe, addr } => {
            w.byte(tag::SPLIT);
            w.num(u64::from(*pe));
            w.addr(addr.0);
        }
        Op::Collapse { pe, range } => {
            w.byte(tag::COLLAPSE);
            w.num(u64::from(*pe));
            w.range(range);
        }
        Op::Flush { pe } => {
            w.byte(tag::FLUSH);
            w.num(u64::from(*pe));
        }
        Op::Activate { pe } => {
            w.byte(tag::ACTIVATE);
            w.num(u64::from(*pe));
        }
        Op::VcpuLoad { pe } => {
            w.byte(tag::VCPU_LOAD);
            w.num(u64::from(*pe));
        }
        Op::Fault {
            pe,
            ipa,
            kind,
            write,
            s1ptw,
        } => {
            w.byte(tag::FAULT);
            w.num(u64::from(*pe));
            w.addr(ipa.0);
            let k = match kind {
                FaultKind::Translation => 0,
                FaultKind::Permission => 1,
                FaultKind::AccessFlag => 2,
            };
            w.num(k | (u64::from(*write) << 2) | (u64::from(*s1ptw) << 3));
        }
        Op::Spurious { pe, ipa } => {
            w.byte(tag::SPURIOUS);
            w.num(u64::from(*pe));
            w.addr(ipa.0);
        }
        Op::ReleaseFrame { pe, pa } => {
            w.byte(tag::RELEASE_FRAME);
            w.num(u64::from(*pe));
            w.addr(pa.0);
        }
        Op::End => w.byte(tag::END),
    }
    w.at
}

struct Writer<'a> {
    buf: &'a mut [u8; 64],
    at: usize,
}

impl Writer<'_> {
    fn byte(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }
    /// Unsigned LEB128: 7 bits a byte, low first, bit 7 set on all but the last.
    fn num(&mut self, mut v: u64) {
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.byte(low);
                return;
            }
            self.byte(low | 0x80);
        }
    }
    /// A page-aligned address, in pages.
    fn addr(&mut self, a: u64) {
        self.num(a >> PAGE_SHIFT);
    }
    /// A range as its start and its length, in pages.
    fn range(&mut self, r: &Range<Ipa>) {
        self.addr(r.start.0);
        self.addr(r.end.0.wrapping_sub(r.start.0));
    }
}

/// Why a log could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The first 8 bytes are not [`MAGIC`].
    NotALog,
    /// The log ends inside the record that starts at `offset`.
    Truncated {
        /// Byte offset of the record.
        offset: usize,
    },
    /// An unknown record tag at `offset`.
    UnknownTag {
        /// Byte offset of the record.
        offset: usize,
        /// The tag byte.
        tag: u8,
    },
    /// A field at `offset` does not fit its type (a number over 64 bits, a
    /// PE over 255, a reversed range, attribute bits that decode to
    /// nothing, a fault kind out of range).
    BadField {
        /// Byte offset of the record.
        offset: usize,
        /// Which field.
        field: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NotALog => write!(f, "not an operation log (no VMSAOPS1 header)"),
            DecodeError::Truncated { offset } => {
                write!(f, "the log ends inside the record at byte {offset}")
            }
            DecodeError::UnknownTag { offset, tag } => {
                write!(f, "unknown record tag {tag:#x} at byte {offset}")
            }
            DecodeError::BadField { offset, field } => {
                write!(f, "record at byte {offset}: bad {field}")
            }
        }
    }
}

/// Reads a log from bytes: an iterator of records.
pub struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> Decoder<'a> {
    /// Checks the header.
    ///
    /// # Errors
    /// [`DecodeError::NotALog`] when the header is missing.
    pub fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(DecodeError::NotALog);
        }
        Ok(Decoder {
            bytes,
            at: MAGIC.len(),
            done: false,
        })
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> usize {
        self.at
    }

    fn next_op(&mut self) -> Result<Op, DecodeError> {
        let offset = self.at;
        let mut r = Reader {
            bytes: self.bytes,
            at: self.at,
            offset,
        };
        let tag = r.byte()?;
        let op = match tag {
            tag::MAP => {
                let pe = r.pe()?;
                let range = r.range()?;
                let pa = Pa(r.addr()?);
                let attrs = r.attrs()?;
                let blocks = r.flag("blocks")?;
                Op::Map {
                    pe,
                    range,
                    pa,
                    attrs,
                    blocks,
                }
            }
            tag::UNMAP => Op::Unmap {
                pe: r.pe()?,
                range: r.range()?,
            },
            tag::PROTECT => Op::Protect {
                pe: r.pe()?,
                range: r.range()?,
                attrs: r.attrs()?,
            },
            tag::SPLIT => Op::Split {
                pe: r.pe()?,
                addr: Ipa(r.addr()?),
            },
            tag::COLLAPSE => Op::Collapse {
                pe: r.pe()?,
                range: r.range()?,
            },
            tag::FLUSH => Op::Flush { pe: r.pe()? },
            tag::ACTIVATE => Op::Activate { pe: r.pe()? },
            tag::VCPU_LOAD => Op::VcpuLoad { pe: r.pe()? },
            tag::FAULT => {
                let pe = r.pe()?;
                let ipa = Ipa(r.addr()?);
                let bits = r.num()?;
                let kind = match bits & 3 {
                    0 => FaultKind::Translation,
                    1 => FaultKind::Permission,
                    2 => FaultKind::AccessFlag,
                    _ => {
                        return Err(DecodeError::BadField {
                            offset,
                            field: "fault kind",
                        })
                    }
                };
                if bits >> 4 != 0 {
                    return Err(DecodeError::BadField {
                        offset,
                        field: "fault flags",
                    });
                }
                Op::Fault {
                    pe,
                    ipa,
                    kind,
                    write: bits & 4 != 0,
                    s1ptw: bits & 8 != 0,
                }
            }
            tag::SPURIOUS => Op::Spurious {
                pe: r.pe()?,
                ipa: Ipa(r.addr()?),
            },
            tag::RELEASE_FRAME => Op::ReleaseFrame {
                pe: r.pe()?,
                pa: Pa(r.addr()?),
            },
            tag::END => Op::End,
            tag => return Err(DecodeError::UnknownTag { offset, tag }),
        };
        self.at = r.at;
        Ok(op)
    }
}

impl Iterator for Decoder<'_> {
    type Item = Result<Op, DecodeError>;

    /// The next record; `None` after [`Op::End`], at the end of the bytes,
    /// or after an error (which is returned once).
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.at >= self.bytes.len() {
            return None;
        }
        let r = self.next_op();
        if matches!(r, Ok(Op::End) | Err(_)) {
            self.done = true;
        }
        Some(r)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    offset: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.at).ok_or(DecodeError::Truncated {
            offset: self.offset,
        })?;
        self.at += 1;
        Ok(b)
    }
    fn num(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadField {
            offset: self.offset,
            field: "number (over 64 bits)",
        })
    }
    fn pe(&mut self) -> Result<u8, DecodeError> {
        u8::try_from(self.num()?).map_err(|_| DecodeError::BadField {
            offset: self.offset,
            field: "PE",
        })
    }
    fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.num()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadField {
                offset: self.offset,
                field,
            }),
        }
    }
    fn addr(&mut self) -> Result<u64, DecodeError> {
        let pages = self.num()?;
        if pages >> (64 - PAGE_SHIFT) != 0 {
            return Err(DecodeError::BadField {
                offset: self.offset,
                field: "address",
            });
        }
        Ok(pages << PAGE_SHIFT)
    }
    fn range(&mut self) -> Result<Range<Ipa>, DecodeError> {
        let start = self.addr()?;
        let len = self.addr()?;
        let end = start.checked_add(len).ok_or(DecodeError::BadField {
            offset: self.offset,
            field: "range",
        })?;
        Ok(Ipa(start)..Ipa(end))
    }
    fn attrs(&mut self) -> Result<Stage2Attrs, DecodeError> {
        let bits = self.num()?;
        Stage2Attrs::from_bits(bits, false)
            .or_else(|| Stage2Attrs::from_bits(bits, true))
            .ok_or(DecodeError::BadField {
                offset: self.offset,
                field: "attributes",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::S2ap;
    use alloc::vec::Vec;

    fn all_ops() -> Vec<Op> {
        let r = Ipa(0x4000_0000)..Ipa(0x4020_0000);
        alloc::vec![
            Op::Map {
                pe: 0,
                range: r.clone(),
                pa: Pa(0x4000_0000),
                attrs: Stage2Attrs::RAM,
                blocks: true
            },
            Op::Map {
                pe: 1,
                range: Ipa(0)..Ipa(0x4000_0000),
                pa: Pa(0),
                attrs: Stage2Attrs::DEVICE,
                blocks: false
            },
            Op::Activate { pe: 0 },
            Op::VcpuLoad { pe: 1 },
            Op::Protect {
                pe: 2,
                range: r.clone(),
                attrs: Stage2Attrs::RAM.with_s2ap(S2ap::ReadOnly)
            },
            Op::Fault {
                pe: 1,
                ipa: Ipa(0x4000_1000),
                kind: FaultKind::Permission,
                write: true,
                s1ptw: true
            },
            Op::Fault {
                pe: 0,
                ipa: Ipa(0x4000_2000),
                kind: FaultKind::AccessFlag,
                write: false,
                s1ptw: false
            },
            Op::Fault {
                pe: 0,
                ipa: Ipa(0x4000_3000),
                kind: FaultKind::Translation,
                write: false,
                s1ptw: false
            },
            Op::Spurious {
                pe: 1,
                ipa: Ipa(0x4000_1000)
            },
            Op::Split {
                pe: 1,
                addr: Ipa(0x4000_1000)
            },
            Op::Collapse {
                pe: 2,
                range: r.clone()
            },
            Op::Unmap {
                pe: 2,
                range: Ipa(0x4000_5000)..Ipa(0x4000_6000)
            },
            Op::ReleaseFrame {
                pe: 2,
                pa: Pa(0x6500_0000)
            },
            Op::Flush { pe: 2 },
            Op::End,
        ]
    }

    #[test]
    fn every_record_round_trips() {
        let ops = all_ops();
        let mut bytes = Vec::new();
        let mut e = Encoder::new(&mut bytes);
        for op in &ops {
            e.push(op);
        }
        assert_eq!(e.records(), ops.len() as u64);
        let back: Vec<Op> = Decoder::new(&bytes)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, ops);
    }

    #[test]
    fn a_page_change_is_small() {
        let mut buf = [0u8; 64];
        let n = encode(
            &Op::Unmap {
                pe: 1,
                range: Ipa(0x5fff_f000)..Ipa(0x6000_0000),
            },
            &mut buf,
        );
        assert!(n <= 6, "{n} bytes");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(Decoder::new(b"VMSA").err(), Some(DecodeError::NotALog));
        let mut bytes = MAGIC.to_vec();
        bytes.push(0x42);
        let r: Vec<_> = Decoder::new(&bytes).unwrap().collect();
        assert_eq!(
            r,
            alloc::vec![Err(DecodeError::UnknownTag {
                offset: 8,
                tag: 0x42
            })]
        );
        // Truncated inside a number.
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[tag::UNMAP, 0, 0x80]);
        let r: Vec<_> = Decoder::new(&bytes).unwrap().collect();
        assert_eq!(r, alloc::vec![Err(DecodeError::Truncated { offset: 8 })]);
        // A number over 64 bits.
        let mut bytes = MAGIC.to_vec();
        bytes.push(tag::FLUSH);
        bytes.extend_from_slice(&[0xff; 11]);
        assert!(matches!(
            Decoder::new(&bytes).unwrap().next(),
            Some(Err(DecodeError::BadField { .. }))
        ));
        // A range that wraps.
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[tag::UNMAP, 0]);
        // start = 2^52 - 1 pages, length 1 page: the end does not fit.
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x07, 0x01]);
        assert_eq!(
            Decoder::new(&bytes).unwrap().next(),
            Some(Err(DecodeError::BadField {
                offset: 8,
                field: "range"
            }))
        );
    }

    #[test]
    fn decoding_stops_after_end() {
        let mut bytes = Vec::new();
        let mut e = Encoder::new(&mut bytes);
        e.push(&Op::End);
        e.push(&Op::Flush { pe: 0 });
        assert_eq!(Decoder::new(&bytes).unwrap().count(), 1);
    }
}
