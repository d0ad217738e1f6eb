//! VMSAv8-64 translation table descriptors.
//!
//! ARM ARM (DDI0487) D8.3 "Translation table descriptor formats": bit 0 is
//! the valid bit; at levels 0 to 2 bit 1 selects a table (1) or a block (0);
//! at level 3 bit 1 must be 1 for a page (0 is reserved and treated as
//! invalid). The output address of a block or page, and the next-level table
//! address of a table, sit in bits \[47:page_shift\] with a 48-bit output
//! address.

pub mod stage1;
pub mod stage2;
pub mod table;

use crate::geometry::{Granule, LAST_LEVEL};

pub use stage1::{Ap, Stage1Attrs};
pub use stage2::{DeviceType, MemAttr, NormalCacheability, S2ap, S2xn, Stage2Attrs};
pub use table::TableAttrs;

/// Bit 0: the descriptor is valid.
pub const VALID: u64 = 1 << 0;
/// Bit 1: table (levels 0-2) or page (level 3).
pub const TABLE_OR_PAGE: u64 = 1 << 1;
/// Bits \[47:12\]: output address / next-level table address (4 KiB granule,
/// 48-bit OA).
pub const OA_MASK_48: u64 = 0x0000_ffff_ffff_f000;

/// Shareability, the SH\[1:0\] field of a block or page descriptor and the
/// SHx fields of TCR_ELx and VTCR_EL2. 0b01 is reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shareability {
    /// 0b00
    NonShareable = 0b00,
    /// 0b10
    Outer = 0b10,
    /// 0b11
    Inner = 0b11,
}

impl Shareability {
    pub(crate) fn from_bits(bits: u64) -> Self {
        match bits & 0b11 {
            0b10 => Shareability::Outer,
            0b11 => Shareability::Inner,
            // 0b01 is reserved; it is never written by the library and reads
            // back as non-shareable.
            _ => Shareability::NonShareable,
        }
    }
}

pub(crate) fn sh_name(sh: Shareability) -> &'static str {
    match sh {
        Shareability::NonShareable => "nsh",
        Shareability::Outer => "osh",
        Shareability::Inner => "ish",
    }
}

/// What a raw descriptor is at a given level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Not valid: the walk faults here; nothing is cached from it.
    Invalid,
    /// A table descriptor pointing at the next level.
    Table,
    /// A block (levels 0-2) or page (level 3) descriptor.
    Leaf,
}

/// A raw 64-bit descriptor.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Descriptor(pub u64);

impl Descriptor {
    /// The invalid descriptor the library writes (all zeroes).
    pub const INVALID: Descriptor = Descriptor(0);

    /// Classifies the descriptor as found at `level`.
    #[inline(always)]
    pub const fn kind(self, level: u8) -> Kind {
        if self.0 & VALID == 0 {
            Kind::Invalid
        } else if level == LAST_LEVEL {
            if self.0 & TABLE_OR_PAGE != 0 {
                Kind::Leaf
            } else {
                // Reserved encoding at level 3: behaves as invalid.
                Kind::Invalid
            }
        } else if self.0 & TABLE_OR_PAGE != 0 {
            Kind::Table
        } else {
            Kind::Leaf
        }
    }

    /// Whether bit 0 is set.
    #[inline(always)]
    pub const fn is_valid(self) -> bool {
        self.0 & VALID != 0
    }

    /// The output address of a leaf, or the next-level table address of a
    /// table descriptor.
    #[inline(always)]
    pub const fn address(self, granule: Granule) -> u64 {
        let _ = granule;
        self.0 & OA_MASK_48
    }

    /// The attribute bits of a leaf: everything except the valid bit, the
    /// type bit and the output address.
    #[inline(always)]
    pub const fn leaf_attr_bits(self) -> u64 {
        self.0 & !(OA_MASK_48 | VALID | TABLE_OR_PAGE)
    }

    /// Builds a leaf (block or page) descriptor for `level`.
    #[inline(always)]
    pub const fn leaf(level: u8, oa: u64, attr_bits: u64) -> Self {
        let ty = if level == LAST_LEVEL {
            TABLE_OR_PAGE
        } else {
            0
        };
        Descriptor((oa & OA_MASK_48) | attr_bits | ty | VALID)
    }

    /// Builds a table descriptor pointing at the table page `next`.
    #[inline(always)]
    pub const fn table(next: u64, attrs: TableAttrs) -> Self {
        Descriptor((next & OA_MASK_48) | attrs.bits() | TABLE_OR_PAGE | VALID)
    }
}

impl core::fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Descriptor({:#018x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ARM ARM D8.3.1 "VMSAv8-64 descriptor formats": bits[1:0] = 0b11 is a
    // table at levels 0-2 and a page at level 3; 0b01 is a block at levels
    // 1-2 and reserved (invalid) at level 3; bit 0 clear is invalid.
    #[test]
    fn kinds_by_level() {
        assert_eq!(Descriptor(0b11).kind(2), Kind::Table);
        assert_eq!(Descriptor(0b11).kind(3), Kind::Leaf);
        assert_eq!(Descriptor(0b01).kind(2), Kind::Leaf);
        assert_eq!(Descriptor(0b01).kind(3), Kind::Invalid);
        assert_eq!(Descriptor(0b10).kind(1), Kind::Invalid);
        assert_eq!(Descriptor(0).kind(0), Kind::Invalid);
    }

    #[test]
    fn leaf_and_table_layout() {
        let page = Descriptor::leaf(3, 0x1234_5678_9000, 0);
        assert_eq!(page.0, 0x1234_5678_9003);
        let block = Descriptor::leaf(2, 0x4020_0000, 0);
        assert_eq!(block.0, 0x4020_0001);
        let table = Descriptor::table(0x8000_1000, TableAttrs::empty());
        assert_eq!(table.0, 0x8000_1003);
        assert_eq!(table.address(Granule::K4), 0x8000_1000);
        // Output address bits above 47 are not part of a 48-bit OA.
        assert_eq!(Descriptor::leaf(3, 0xffff_0000_0000_1000, 0).0, 0x1003);
    }
}
