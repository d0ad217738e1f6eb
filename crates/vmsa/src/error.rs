//! Errors. Every operation validates its arguments and its memory needs
//! before it writes anything, so an `Err` always means "nothing changed".

use core::fmt;

/// Why an operation was refused. When an operation returns an error the
/// table is exactly as it was before the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An address or size is not a multiple of the granule.
    Misaligned {
        /// The offending value.
        value: u64,
    },
    /// An empty or reversed range.
    EmptyRange,
    /// The input range does not fit the table's input address space.
    InputOutOfRange {
        /// First address outside the table.
        addr: u64,
    },
    /// The output range does not fit the output address size.
    OutputOutOfRange {
        /// First output address that does not fit.
        addr: u64,
    },
    /// The range overlaps an existing mapping and the caller did not ask to
    /// replace it.
    AlreadyMapped {
        /// First input address that is already mapped.
        addr: u64,
    },
    /// The address is not mapped by a block descriptor (for `split_block`).
    NotABlock {
        /// The address asked for.
        addr: u64,
    },
    /// The attributes are not valid for the regime (reserved encodings,
    /// fields that are RES0 in the regime).
    InvalidAttributes {
        /// Which field, and why.
        field: &'static str,
    },
    /// The table allocator could not provide a table page. Nothing was
    /// changed: all pages an operation needs are allocated before it writes.
    OutOfMemory,
    /// The geometry is not supported (input size, start level, granule).
    UnsupportedGeometry {
        /// What is not supported.
        why: &'static str,
    },
    /// A VMID or ASID does not fit the configured width.
    TagOutOfRange {
        /// The tag given.
        tag: u16,
        /// The width configured (8 or 16 bits).
        bits: u8,
    },
    /// A fault-path (`&self`) operation cannot make this change: only an
    /// exclusive (`&mut self`) one may (the entry's earlier removal is not
    /// invalidated yet, finer mappings exist below it, or permissions would
    /// be removed).
    NeedsExclusive {
        /// The input address of the entry.
        addr: u64,
    },
    /// Nothing maps the address (for the fault path's permission change).
    NotMapped {
        /// The input address asked for (its page).
        addr: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Misaligned { value } => write!(f, "{value:#x} is not aligned to the granule"),
            Error::EmptyRange => write!(f, "the range is empty"),
            Error::InputOutOfRange { addr } => {
                write!(f, "input address {addr:#x} is outside the table")
            }
            Error::OutputOutOfRange { addr } => {
                write!(
                    f,
                    "output address {addr:#x} is beyond the output address size"
                )
            }
            Error::AlreadyMapped { addr } => write!(f, "{addr:#x} is already mapped"),
            Error::NotABlock { addr } => write!(f, "{addr:#x} is not mapped by a block"),
            Error::InvalidAttributes { field } => {
                write!(f, "attributes not valid for this regime: {field}")
            }
            Error::OutOfMemory => write!(f, "out of table memory"),
            Error::UnsupportedGeometry { why } => {
                write!(f, "unsupported translation table geometry: {why}")
            }
            Error::TagOutOfRange { tag, bits } => {
                write!(f, "VMID or ASID {tag} does not fit in {bits} bits")
            }
            Error::NeedsExclusive { addr } => write!(
                f,
                "the entry for {addr:#x} can only be changed by an exclusive operation"
            ),
            Error::NotMapped { addr } => write!(f, "{addr:#x} is not mapped"),
        }
    }
}

impl core::error::Error for Error {}
