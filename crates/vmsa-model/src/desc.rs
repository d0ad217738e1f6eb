//! Descriptor semantics as the model reads them, written independently of
//! the library's encoders so that a mistake in one is caught by the other.
//!
//! References are to the Arm ARM (DDI 0487, version M.a.a): VMSAv8-64
//! descriptor formats in D8.3 (Tables D8-50 to D8-53), the Access flag in
//! D8.5.1, break-before-make in D8.17.1.

/// The three kinds of translation regime the model knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Stage 2 of the EL1&0 regime (IPA -> PA), per VMID.
    Stage2,
    /// Stage 1 of the EL1&0 regime (VA -> IPA), per VMID and ASID.
    El1Stage1,
    /// Stage 1 of the (non-VHE) EL2 regime.
    El2Stage1,
}

/// Output address bits \[47:12\] of a 4 KiB-granule descriptor.
pub const OA_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Bytes one entry at `level` maps with the 4 KiB granule.
pub const fn entry_size(level: u8) -> u64 {
    1 << (12 + 9 * (3 - level as u32))
}

/// Access permissions a leaf grants, as a set of bits; an entry grants more
/// than another when it has a bit the other lacks.
pub mod grant {
    /// Read at EL1 (or EL2, or any level for stage 2).
    pub const READ: u8 = 1 << 0;
    /// Write at EL1 / EL2 / stage 2.
    pub const WRITE: u8 = 1 << 1;
    /// Read from EL0 (stage 1 EL1&0 only).
    pub const EL0_READ: u8 = 1 << 2;
    /// Write from EL0.
    pub const EL0_WRITE: u8 = 1 << 3;
    /// Execute at the privileged level (EL1, EL2; stage 2: EL1).
    pub const EXEC: u8 = 1 << 4;
    /// Execute at EL0 (stage 1 EL1&0 UXN; stage 2 with FEAT_XNX).
    pub const EL0_EXEC: u8 = 1 << 5;
}

/// What a descriptor means at a given level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Faults: invalid, reserved, or a leaf with AF == 0 (never cached,
    /// D8.5.1, as the model has no hardware Access flag management).
    Fault,
    /// Table descriptor pointing at the next-level table.
    Table {
        /// Physical address of the next table.
        next: u64,
    },
    /// Block or page.
    Leaf(Leaf),
}

/// A block or page descriptor's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Output address of the first byte.
    pub oa: u64,
    /// Permissions granted ([`grant`] bits).
    pub grants: u8,
    /// The attributes whose change needs break-before-make (memory type and
    /// cacheability, shareability, contiguous), packed.
    pub attrs: u64,
    /// Global entry (stage 1 EL1&0 with nG == 0; EL2 and stage 2 entries
    /// have no ASID and count as global).
    pub global: bool,
}

/// Whether `desc` at `level` is a table descriptor ([`decode`] gives
/// [`Decoded::Table`]), without decoding it.
#[inline(always)]
pub fn is_table(level: u8, desc: u64) -> bool {
    level < 3 && desc & 0b11 == 0b11
}

/// Whether descriptors at `level` are never tables (the last level).
#[inline(always)]
pub fn is_leaf_level(level: u8) -> bool {
    level >= 3
}

/// Decodes `desc` found at `level` of a table of `stage`.
pub fn decode(stage: Stage, level: u8, desc: u64) -> Decoded {
    match desc & 0b11 {
        0b11 if level < 3 => Decoded::Table {
            next: desc & OA_MASK,
        },
        0b11 => leaf(stage, level, desc),
        // Blocks exist at levels 1 and 2 with the 4 KiB granule (level 0
        // blocks need 52-bit output addresses, which the model does not
        // implement): anything else with bit 0 set is reserved and faults.
        0b01 if level == 1 || level == 2 => leaf(stage, level, desc),
        _ => Decoded::Fault,
    }
}

fn leaf(stage: Stage, level: u8, desc: u64) -> Decoded {
    const AF: u64 = 1 << 10;
    if desc & AF == 0 {
        return Decoded::Fault;
    }
    let oa = desc & OA_MASK & !(entry_size(level) - 1);
    let bit = |n: u32| desc >> n & 1 == 1;
    let sh = desc >> 8 & 0b11;
    let contiguous = desc >> 52 & 1;
    let (grants, memattr, global) = match stage {
        Stage::Stage2 => {
            // S2AP [7:6]: bit 6 read, bit 7 write. XN [54:53] (FEAT_XNX):
            // 00 exec at EL1 and EL0, 01 EL0 only, 10 none, 11 EL1 only.
            let mut g = 0;
            if bit(6) {
                g |= grant::READ;
            }
            if bit(7) {
                g |= grant::WRITE;
            }
            g |= match desc >> 53 & 0b11 {
                0b00 => grant::EXEC | grant::EL0_EXEC,
                0b01 => grant::EL0_EXEC,
                0b11 => grant::EXEC,
                _ => 0,
            };
            // MemAttr [5:2] (with FEAT_S2FWB, bits [5:2] too).
            (g, desc >> 2 & 0xf, true)
        }
        Stage::El1Stage1 => {
            // AP[2:1] = [7:6]: AP[2] read-only, AP[1] EL0 access.
            let ro = bit(7);
            let el0 = bit(6);
            let mut g = grant::READ;
            if !ro {
                g |= grant::WRITE;
            }
            if el0 {
                g |= grant::EL0_READ;
                if !ro {
                    g |= grant::EL0_WRITE;
                }
            }
            // PXN [53], UXN [54]. (A writable EL0 page is never privileged
            // executable, WXN aside; the model keeps PXN as encoded.)
            if !bit(53) {
                g |= grant::EXEC;
            }
            if !bit(54) {
                g |= grant::EL0_EXEC;
            }
            // AttrIndx [4:2]; nG [11].
            (g, desc >> 2 & 0b111, !bit(11))
        }
        Stage::El2Stage1 => {
            let mut g = grant::READ;
            if !bit(7) {
                g |= grant::WRITE;
            }
            // XN [54]; PXN is RES0 and AP[1] RES1 in the EL2 regime.
            if !bit(54) {
                g |= grant::EXEC;
            }
            (g, desc >> 2 & 0b111, true)
        }
    };
    Decoded::Leaf(Leaf {
        oa,
        grants,
        attrs: memattr | sh << 8 | contiguous << 12,
        global,
    })
}

/// Whether replacing leaf `old` with leaf `new` at the same level while it
/// may be cached needs break-before-make (D8.17.1: a change of output
/// address, of memory type or cacheability, of shareability, of the
/// contiguous hint, or of a non-global entry into a global one). Changes
/// of permissions and the Access flag may be made in place.
pub fn leaf_change_needs_bbm(old: &Leaf, new: &Leaf) -> bool {
    old.oa != new.oa || old.attrs != new.attrs || (!old.global && new.global)
}

/// Whether replacing `old` with `new` (both as decoded at `level`) needs
/// break-before-make. Anything to or from a fault never does; a table
/// replaced by a leaf or another table, or a leaf by a table, always does
/// (block size changes, and walk-cache entries of the old table).
pub fn needs_bbm(old: &Decoded, new: &Decoded) -> bool {
    match (old, new) {
        (Decoded::Fault, _) | (_, Decoded::Fault) => false,
        (Decoded::Table { next: a }, Decoded::Table { next: b }) => a != b,
        (Decoded::Leaf(a), Decoded::Leaf(b)) => leaf_change_needs_bbm(a, b),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_table_agrees_with_decode() {
        for level in 0..=3u8 {
            for low in 0..4u64 {
                for d in [
                    0x4000_0400 | low,
                    0x4000_0000 | low,
                    0xffff_ffff_ffff_fffc | low,
                ] {
                    for stage in [Stage::Stage2, Stage::El1Stage1, Stage::El2Stage1] {
                        let decoded = matches!(decode(stage, level, d), Decoded::Table { .. });
                        assert_eq!(is_table(level, d), decoded, "level {level} {d:#x}");
                        if is_leaf_level(level) {
                            assert!(!decoded);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn stage2_page_decodes_fields() {
        // D8.3.1.2 Table D8-53: S2AP [7:6], SH [9:8], AF [10], MemAttr [5:2].
        let d = 0x0000_0001_0000_07ff_u64 & !0b1111_0000_0000_0000;
        let Decoded::Leaf(l) = decode(Stage::Stage2, 3, d | 0b11) else {
            panic!("not a leaf")
        };
        assert_eq!(l.oa, 0x1_0000_0000 | 0x7ff & OA_MASK);
        assert_eq!(
            l.grants,
            grant::READ | grant::WRITE | grant::EXEC | grant::EL0_EXEC
        );
        assert!(l.global);
    }

    #[test]
    fn af_clear_and_reserved_fault() {
        assert_eq!(decode(Stage::Stage2, 3, 0x4000_03c3), Decoded::Fault);
        assert_eq!(decode(Stage::Stage2, 3, 0x4000_0401), Decoded::Fault);
        assert_eq!(decode(Stage::Stage2, 0, 0x4000_0401), Decoded::Fault);
        assert!(matches!(
            decode(Stage::Stage2, 2, 0x4000_0401),
            Decoded::Leaf(_)
        ));
    }

    #[test]
    fn stage1_permissions_and_ng() {
        // AP = 0b11 (read-only, EL0), UXN, nG.
        let d = 0x1000_u64 | 0b11 | 1 << 10 | 0b11 << 6 | 1 << 54 | 1 << 11;
        let Decoded::Leaf(l) = decode(Stage::El1Stage1, 3, d) else {
            panic!()
        };
        assert_eq!(l.grants, grant::READ | grant::EL0_READ | grant::EXEC);
        assert!(!l.global);
    }

    #[test]
    fn bbm_table() {
        let leaf = |oa: u64, ap: u64| decode(Stage::Stage2, 3, oa | 0b11 | 1 << 10 | ap << 6);
        assert!(
            !needs_bbm(&leaf(0x1000, 3), &leaf(0x1000, 1)),
            "permission only"
        );
        assert!(
            needs_bbm(&leaf(0x1000, 3), &leaf(0x2000, 3)),
            "output address"
        );
        let t = decode(Stage::Stage2, 2, 0x5000 | 0b11);
        let b = decode(Stage::Stage2, 2, 0x20_0000 | 0b01 | 1 << 10);
        assert!(needs_bbm(&t, &b), "table to block");
        assert!(!needs_bbm(&Decoded::Fault, &b));
    }
}
