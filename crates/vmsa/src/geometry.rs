//! The shape of a translation table: granule, levels, input size and the
//! initial lookup level.
//!
//! Every size, shift and index in the library is derived from a
//! [`Geometry`]; nothing else hard-codes "512 entries" or "2 MiB". That keeps
//! the 16 KiB and 64 KiB granules a matter of adding variants to [`Granule`].

use crate::error::Error;

/// The last lookup level of every VMSAv8-64 walk (without FEAT_LPA2's
/// level -1 at the other end).
pub const LAST_LEVEL: u8 = 3;

/// Translation granule: the page size and the size of one table page.
///
/// ARM ARM (DDI0487 M.a.a) D8.2 "Translation process" and D8.3 "Translation
/// table descriptor formats":
/// each lookup level resolves `page_shift - 3` bits of the input address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Granule {
    /// 4 KiB pages; 512 entries per table; blocks of 1 GiB (level 1) and
    /// 2 MiB (level 2).
    K4,
}

impl Granule {
    /// log2 of the page size.
    #[inline(always)]
    pub const fn page_shift(self) -> u32 {
        match self {
            Granule::K4 => 12,
        }
    }

    /// The page (and table page) size in bytes.
    #[inline(always)]
    pub const fn size(self) -> u64 {
        1 << self.page_shift()
    }

    /// Input-address bits resolved by one full table.
    #[inline(always)]
    pub const fn bits_per_level(self) -> u32 {
        self.page_shift() - 3
    }

    /// Entries in one full table page.
    #[inline(always)]
    pub const fn entries(self) -> usize {
        1 << self.bits_per_level()
    }

    /// Whether a block descriptor is permitted at `level` with a 48-bit
    /// output address (ARM ARM D8.3.1, Tables D8-52 and D8-53, per granule:
    /// 4 KiB allows level 1 and 2 blocks; level 0 blocks need FEAT_LPA2).
    #[inline(always)]
    pub const fn block_allowed(self, level: u8) -> bool {
        match self {
            Granule::K4 => level == 1 || level == 2,
        }
    }

    /// The TGx encoding of this granule in TCR_ELx.TG0 and VTCR_EL2.TG0.
    pub const fn tg0(self) -> u64 {
        match self {
            Granule::K4 => 0b00,
        }
    }

    /// The TG encoding used by the range TLBI operands (FEAT_TLBIRANGE) and
    /// by TTL hints (FEAT_TTL): 0b01 for 4 KiB.
    pub const fn tlbi_tg(self) -> u64 {
        match self {
            Granule::K4 => 0b01,
        }
    }
}

/// The shape of one translation table tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    granule: Granule,
    input_bits: u8,
    start_level: u8,
}

impl Geometry {
    /// A stage 1 geometry for a `input_bits`-bit input range (TnSZ =
    /// 64 - `input_bits`), walked from the highest level needed, with a
    /// single root table (stage 1 has no concatenation).
    ///
    /// # Errors
    /// [`Error::UnsupportedGeometry`] when `input_bits` is outside 25..=48
    /// (T0SZ 16..=39 for the 4 KiB granule).
    pub fn stage1(granule: Granule, input_bits: u8) -> Result<Self, Error> {
        if !(25..=48).contains(&input_bits) {
            return Err(Error::UnsupportedGeometry {
                why: "stage 1 input size: 25 to 48 bits",
            });
        }
        let per = granule.bits_per_level();
        let levels = (u32::from(input_bits) - granule.page_shift()).div_ceil(per);
        let start_level = (u32::from(LAST_LEVEL) + 1 - levels) as u8;
        Ok(Self {
            granule,
            input_bits,
            start_level,
        })
    }

    /// A stage 2 geometry for an `ipa_bits`-bit IPA space, starting at the
    /// lowest level that 2 to 16 concatenated root tables allow (as KVM does:
    /// one fewer level whenever at most four extra bits can be resolved by
    /// concatenation).
    ///
    /// ARM ARM D8.2.2 "Concatenated translation tables for the initial stage
    /// 2 lookup": up to 16 tables may be concatenated at the initial level.
    ///
    /// # Errors
    /// [`Error::UnsupportedGeometry`] when `ipa_bits` is outside 32..=48.
    pub fn stage2(granule: Granule, ipa_bits: u8) -> Result<Self, Error> {
        if !(32..=48).contains(&ipa_bits) {
            return Err(Error::UnsupportedGeometry {
                why: "stage 2 IPA size: 32 to 48 bits",
            });
        }
        let per = granule.bits_per_level();
        // Up to 4 bits more than one table resolves go to concatenation.
        let levels = (u32::from(ipa_bits) - 4 - granule.page_shift()).div_ceil(per);
        let start_level = (u32::from(LAST_LEVEL) + 1 - levels) as u8;
        Self::stage2_at(granule, ipa_bits, start_level)
    }

    /// A stage 2 geometry with an explicit initial lookup level.
    ///
    /// # Errors
    /// [`Error::UnsupportedGeometry`] when the level would need more than 16
    /// concatenated tables, more levels than the granule has, or an IPA size
    /// outside 32..=48.
    pub fn stage2_at(granule: Granule, ipa_bits: u8, start_level: u8) -> Result<Self, Error> {
        if !(32..=48).contains(&ipa_bits) || start_level > 2 {
            return Err(Error::UnsupportedGeometry {
                why: "stage 2: IPA size 32 to 48 bits, start level 0 to 2",
            });
        }
        let g = Self {
            granule,
            input_bits: ipa_bits,
            start_level,
        };
        let root_bits = u32::from(ipa_bits).checked_sub(g.level_shift(start_level));
        match root_bits {
            Some(bits) if bits >= 1 && bits <= granule.bits_per_level() + 4 => Ok(g),
            _ => Err(Error::UnsupportedGeometry {
                why: "stage 2 start level: at most 16 concatenated root tables, at least 2 entries",
            }),
        }
    }

    /// The translation granule.
    #[inline(always)]
    pub const fn granule(&self) -> Granule {
        self.granule
    }

    /// Size of the input address space in bits.
    #[inline(always)]
    pub const fn input_bits(&self) -> u8 {
        self.input_bits
    }

    /// Size of the input address space in bytes.
    #[inline(always)]
    pub const fn input_size(&self) -> u64 {
        1 << self.input_bits
    }

    /// The initial lookup level.
    #[inline(always)]
    pub const fn start_level(&self) -> u8 {
        self.start_level
    }

    /// Number of table pages concatenated at the initial level (1 to 16).
    #[inline(always)]
    pub fn root_pages(&self) -> usize {
        self.entries_at(self.start_level)
            .div_ceil(self.granule.entries())
    }

    /// Bit position of the lowest input-address bit resolved at `level`.
    #[inline(always)]
    pub const fn level_shift(&self, level: u8) -> u32 {
        self.granule.page_shift() + (LAST_LEVEL - level) as u32 * self.granule.bits_per_level()
    }

    /// Bytes of input address space one entry at `level` maps.
    #[inline(always)]
    pub const fn entry_size(&self, level: u8) -> u64 {
        1 << self.level_shift(level)
    }

    /// Number of entries in a table at `level` (the root may be smaller than
    /// a page, or a concatenation of several).
    #[inline(always)]
    pub fn entries_at(&self, level: u8) -> usize {
        if level == self.start_level {
            1 << (u32::from(self.input_bits) - self.level_shift(level))
        } else {
            self.granule.entries()
        }
    }

    /// Index of the entry for input offset `addr` in a table at `level`.
    #[inline(always)]
    pub fn index(&self, level: u8, addr: u64) -> usize {
        ((addr >> self.level_shift(level)) as usize) & (self.entries_at(level) - 1)
    }

    /// Whether `level` can hold a leaf: the last level, or a block level.
    #[inline(always)]
    pub const fn leaf_allowed(&self, level: u8) -> bool {
        level == LAST_LEVEL || self.granule.block_allowed(level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage1_start_levels_4k() {
        // 48 bits: 4 levels; 39 bits: 3 levels (level 1 root); 40 bits:
        // level 0 root with two entries.
        assert_eq!(Geometry::stage1(Granule::K4, 48).unwrap().start_level(), 0);
        assert_eq!(Geometry::stage1(Granule::K4, 39).unwrap().start_level(), 1);
        let g = Geometry::stage1(Granule::K4, 40).unwrap();
        assert_eq!((g.start_level(), g.entries_at(0)), (0, 2));
        assert_eq!(Geometry::stage1(Granule::K4, 30).unwrap().start_level(), 2);
        assert!(Geometry::stage1(Granule::K4, 49).is_err());
        assert!(Geometry::stage1(Granule::K4, 24).is_err());
    }

    #[test]
    fn stage2_concatenation_4k() {
        // (ipa bits, start level, concatenated root pages), following the
        // rule KVM's kvm_get_vtcr() applies.
        for (bits, level, pages) in [
            (32, 2, 4),
            (34, 2, 16),
            (35, 1, 1),
            (36, 1, 1),
            (40, 1, 2),
            (42, 1, 8),
            (43, 1, 16),
            (44, 0, 1),
            (48, 0, 1),
        ] {
            let g = Geometry::stage2(Granule::K4, bits).unwrap();
            assert_eq!(
                (g.start_level(), g.root_pages()),
                (level, pages),
                "{bits} bits"
            );
        }
        assert!(
            Geometry::stage2_at(Granule::K4, 40, 2).is_err(),
            "would need 512 tables"
        );
        assert_eq!(
            Geometry::stage2_at(Granule::K4, 40, 0)
                .unwrap()
                .entries_at(0),
            2
        );
        assert!(Geometry::stage2(Granule::K4, 31).is_err());
    }

    #[test]
    fn sizes_and_indices() {
        let g = Geometry::stage1(Granule::K4, 48).unwrap();
        assert_eq!(g.entry_size(3), 4096);
        assert_eq!(g.entry_size(2), 2 << 20);
        assert_eq!(g.entry_size(1), 1 << 30);
        assert_eq!(g.index(3, 0x1234_5678_9000), 0x189);
        assert_eq!(g.index(0, 0xffff_ffff_ffff), 511);
        assert!(g.leaf_allowed(1) && g.leaf_allowed(2) && g.leaf_allowed(3) && !g.leaf_allowed(0));
    }
}
