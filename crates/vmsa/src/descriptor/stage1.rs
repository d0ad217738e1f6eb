//! Stage 1 block and page attributes.
//!
//! ARM ARM D8.3.2 "Attribute fields in VMSAv8-64 Block and Page
//! descriptors", stage 1 layout: AttrIndx\[2:0\] bits \[4:2\], NS bit 5,
//! AP\[2:1\] bits \[7:6\], SH\[1:0\] bits \[9:8\], AF bit 10, nG bit 11, DBM bit 51,
//! Contiguous bit 52, PXN bit 53, UXN (XN in single-range regimes) bit 54.

use super::Shareability;
use crate::perms::Grants;

/// Bits \[4:2\], AttrIndx: index into MAIR_ELx.
pub const ATTR_INDX_SHIFT: u32 = 2;
/// Bits \[7:6\], AP\[2:1\].
pub const AP_SHIFT: u32 = 6;
/// Bits \[9:8\], SH\[1:0\].
pub const SH_SHIFT: u32 = 8;
/// Bit 10, the Access Flag.
pub const AF: u64 = 1 << 10;
/// Bit 11, not-Global.
pub const NG: u64 = 1 << 11;
/// Bit 51, Dirty Bit Modifier.
pub const DBM: u64 = 1 << 51;
/// Bit 52, the Contiguous hint.
pub const CONTIGUOUS: u64 = 1 << 52;
/// Bit 53, Privileged eXecute-Never.
pub const PXN: u64 = 1 << 53;
/// Bit 54, Unprivileged eXecute-Never (XN in the EL2 regime).
pub const UXN: u64 = 1 << 54;
/// Bits \[4:2\], AttrIndx.
pub const ATTR_INDX_MASK: u64 = 0b111 << ATTR_INDX_SHIFT;
/// Bits \[7:6\], AP\[2:1\].
pub const AP_MASK: u64 = 0b11 << AP_SHIFT;
/// Bits \[9:8\], SH.
pub const SH_MASK: u64 = 0b11 << SH_SHIFT;

/// Data access permissions, AP\[2:1\] (ARM ARM D8.4.1, "Stage 1 data access
/// permissions"). In the EL2 regime (HCR_EL2.E2H == 0) AP\[1\] is RES1 and
/// only [`Ap::ReadWrite`] and [`Ap::ReadOnly`] are meaningful.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ap {
    /// 0b00: read/write at EL1, no access at EL0.
    PrivReadWrite = 0b00,
    /// 0b01: read/write at EL1 and EL0.
    ReadWrite = 0b01,
    /// 0b10: read-only at EL1, no access at EL0.
    PrivReadOnly = 0b10,
    /// 0b11: read-only at EL1 and EL0.
    ReadOnly = 0b11,
}

impl Ap {
    fn from_bits(bits: u64) -> Self {
        match bits & 0b11 {
            0b00 => Ap::PrivReadWrite,
            0b01 => Ap::ReadWrite,
            0b10 => Ap::PrivReadOnly,
            _ => Ap::ReadOnly,
        }
    }
}

/// Attributes of a stage 1 block or page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stage1Attrs {
    /// AttrIndx: which MAIR_ELx attribute (0..=7) gives the memory type.
    pub attr_index: u8,
    /// AP\[2:1\].
    pub ap: Ap,
    /// Shareability.
    pub sh: Shareability,
    /// Access flag: an entry with AF clear faults on first access and is not
    /// held in a TLB.
    pub af: bool,
    /// not-Global: the translation is tagged with the current ASID.
    pub ng: bool,
    /// Privileged execute-never.
    pub pxn: bool,
    /// Unprivileged execute-never (XN in the EL2 regime).
    pub uxn: bool,
    /// Dirty bit modifier (FEAT_HAFDBS): hardware may make a read-only
    /// entry writable.
    pub dbm: bool,
}

impl Stage1Attrs {
    /// Normal memory (MAIR index `attr_index`), inner shareable, accessed,
    /// kernel read/write, never executable, non-global.
    pub const fn normal_rw(attr_index: u8) -> Self {
        Stage1Attrs {
            attr_index,
            ap: Ap::PrivReadWrite,
            sh: Shareability::Inner,
            af: true,
            ng: true,
            pxn: true,
            uxn: true,
            dbm: false,
        }
    }

    /// The same attributes, read-only (keeping the EL0 access bit).
    pub const fn read_only(mut self) -> Self {
        self.ap = match self.ap {
            Ap::PrivReadWrite | Ap::PrivReadOnly => Ap::PrivReadOnly,
            Ap::ReadWrite | Ap::ReadOnly => Ap::ReadOnly,
        };
        self
    }

    /// The same attributes, writable (keeping the EL0 access bit).
    pub const fn writable(mut self) -> Self {
        self.ap = match self.ap {
            Ap::PrivReadWrite | Ap::PrivReadOnly => Ap::PrivReadWrite,
            Ap::ReadWrite | Ap::ReadOnly => Ap::ReadWrite,
        };
        self
    }

    /// Encodes the attribute bits of a descriptor (no valid, type or
    /// address bits). `attr_index` must be below 8: regimes validate it
    /// first.
    pub const fn to_bits(self) -> u64 {
        ((self.attr_index as u64 & 0b111) << ATTR_INDX_SHIFT)
            | ((self.ap as u64) << AP_SHIFT)
            | ((self.sh as u64) << SH_SHIFT)
            | if self.af { AF } else { 0 }
            | if self.ng { NG } else { 0 }
            | if self.dbm { DBM } else { 0 }
            | if self.pxn { PXN } else { 0 }
            | if self.uxn { UXN } else { 0 }
    }

    /// Decodes the attribute bits of a descriptor.
    pub fn from_bits(bits: u64) -> Self {
        Stage1Attrs {
            attr_index: ((bits & ATTR_INDX_MASK) >> ATTR_INDX_SHIFT) as u8,
            ap: Ap::from_bits(bits >> AP_SHIFT),
            sh: Shareability::from_bits(bits >> SH_SHIFT),
            af: bits & AF != 0,
            ng: bits & NG != 0,
            pxn: bits & PXN != 0,
            uxn: bits & UXN != 0,
            dbm: bits & DBM != 0,
        }
    }

    /// What these attributes let software do (ARM ARM D8.4.1 and D8.4.4).
    pub fn grants(self) -> Grants {
        let mut g = Grants::READ;
        if matches!(self.ap, Ap::PrivReadWrite | Ap::ReadWrite) {
            g |= Grants::WRITE;
        }
        if matches!(self.ap, Ap::ReadWrite | Ap::ReadOnly) {
            g |= Grants::UNPRIV_READ;
        }
        if matches!(self.ap, Ap::ReadWrite) {
            g |= Grants::UNPRIV_WRITE;
        }
        if !self.pxn {
            g |= Grants::EXEC;
        }
        if !self.uxn {
            g |= Grants::UNPRIV_EXEC;
        }
        if self.af {
            g |= Grants::ACCESS;
        }
        if self.dbm {
            g |= Grants::DIRTY;
        }
        g
    }
}

impl core::fmt::Display for Stage1Attrs {
    /// A compact form: MAIR index, access (`el1-rw`, `rw`, `el1-ro`, `ro`),
    /// `pxn`/`uxn`, shareability, `af`/`!af`, `ng`/`global`, `dbm`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let ap = match self.ap {
            Ap::PrivReadWrite => "el1-rw",
            Ap::ReadWrite => "rw",
            Ap::PrivReadOnly => "el1-ro",
            Ap::ReadOnly => "ro",
        };
        write!(f, "attr{} {ap}", self.attr_index)?;
        if self.pxn {
            f.write_str(" pxn")?;
        }
        if self.uxn {
            f.write_str(" uxn")?;
        }
        write!(f, " {}", super::sh_name(self.sh))?;
        f.write_str(if self.af { " af" } else { " !af" })?;
        f.write_str(if self.ng { " ng" } else { " global" })?;
        if self.dbm {
            f.write_str(" dbm")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ARM ARM D8.3.2, stage 1 Block and Page descriptor attribute fields.
    #[test]
    fn field_positions() {
        let base = Stage1Attrs {
            attr_index: 0,
            ap: Ap::PrivReadWrite,
            sh: Shareability::NonShareable,
            af: false,
            ng: false,
            pxn: false,
            uxn: false,
            dbm: false,
        };
        assert_eq!(base.to_bits(), 0);
        assert_eq!(
            Stage1Attrs {
                attr_index: 7,
                ..base
            }
            .to_bits(),
            0b111 << 2
        );
        assert_eq!(
            Stage1Attrs {
                attr_index: 5,
                ..base
            }
            .to_bits(),
            0b101 << 2
        );
        assert_eq!(
            Stage1Attrs {
                ap: Ap::ReadWrite,
                ..base
            }
            .to_bits(),
            1 << 6
        );
        assert_eq!(
            Stage1Attrs {
                ap: Ap::PrivReadOnly,
                ..base
            }
            .to_bits(),
            1 << 7
        );
        assert_eq!(
            Stage1Attrs {
                ap: Ap::ReadOnly,
                ..base
            }
            .to_bits(),
            0b11 << 6
        );
        assert_eq!(
            Stage1Attrs {
                sh: Shareability::Outer,
                ..base
            }
            .to_bits(),
            0b10 << 8
        );
        assert_eq!(
            Stage1Attrs {
                sh: Shareability::Inner,
                ..base
            }
            .to_bits(),
            0b11 << 8
        );
        assert_eq!(Stage1Attrs { af: true, ..base }.to_bits(), 1 << 10);
        assert_eq!(Stage1Attrs { ng: true, ..base }.to_bits(), 1 << 11);
        assert_eq!(Stage1Attrs { dbm: true, ..base }.to_bits(), 1 << 51);
        assert_eq!(Stage1Attrs { pxn: true, ..base }.to_bits(), 1 << 53);
        assert_eq!(Stage1Attrs { uxn: true, ..base }.to_bits(), 1 << 54);
        assert_eq!(CONTIGUOUS, 1 << 52);
    }

    #[test]
    fn round_trip_and_grants() {
        let a = Stage1Attrs::normal_rw(3);
        assert_eq!(Stage1Attrs::from_bits(a.to_bits()), a);
        // AttrIndx 3, AP 00, SH 11, AF, nG, PXN, UXN.
        assert_eq!(
            a.to_bits(),
            (3 << 2) | (0b11 << 8) | (1 << 10) | (1 << 11) | (3 << 53)
        );
        let ro = a.read_only();
        assert!(a.grants().contains(Grants::WRITE));
        assert!(!ro.grants().contains(Grants::WRITE));
        assert!(a.grants().contains(ro.grants()));
        assert!(Stage1Attrs {
            ap: Ap::ReadWrite,
            ..a
        }
        .grants()
        .contains(Grants::UNPRIV_WRITE));
    }
}
