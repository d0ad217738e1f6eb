//! Stage 2 block and page attributes.
//!
//! ARM ARM D8.3.2 "Attribute fields in VMSAv8-64 Block and Page
//! descriptors", stage 2 layout: MemAttr\[3:0\] bits \[5:2\], S2AP\[1:0\] bits
//! \[7:6\], SH\[1:0\] bits \[9:8\], AF bit 10, DBM bit 51, Contiguous bit 52,
//! XN\[1:0\] bits \[54:53\] (bit 53 is RES0 without FEAT_XNX).

use super::Shareability;
use crate::perms::Grants;

/// Bits \[5:2\], MemAttr.
pub const MEMATTR_SHIFT: u32 = 2;
/// Bits \[5:2\], MemAttr.
pub const MEMATTR_MASK: u64 = 0b1111 << MEMATTR_SHIFT;
/// Bits \[7:6\], S2AP.
pub const S2AP_SHIFT: u32 = 6;
/// Bits \[7:6\], S2AP.
pub const S2AP_MASK: u64 = 0b11 << S2AP_SHIFT;
/// Bits \[9:8\], SH.
pub const SH_SHIFT: u32 = 8;
/// Bits \[9:8\], SH.
pub const SH_MASK: u64 = 0b11 << SH_SHIFT;
/// Bit 10, the Access Flag.
pub const AF: u64 = 1 << 10;
/// Bit 51, Dirty Bit Modifier.
pub const DBM: u64 = 1 << 51;
/// Bit 52, the Contiguous hint.
pub const CONTIGUOUS: u64 = 1 << 52;
/// Bits \[54:53\], XN\[1:0\].
pub const XN_SHIFT: u32 = 53;
/// Bits \[54:53\], XN\[1:0\].
pub const XN_MASK: u64 = 0b11 << XN_SHIFT;

/// Device memory types, MemAttr\[1:0\] when the memory is Device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// 0b00
    NGnRnE = 0b00,
    /// 0b01
    NGnRE = 0b01,
    /// 0b10
    NGRE = 0b10,
    /// 0b11
    GRE = 0b11,
}

/// Cacheability of Normal memory in the stage 2 MemAttr encoding used
/// when HCR_EL2.FWB is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormalCacheability {
    /// 0b01
    NonCacheable = 0b01,
    /// 0b10
    WriteThrough = 0b10,
    /// 0b11
    WriteBack = 0b11,
}

/// Stage 2 memory attributes, MemAttr\[3:0\].
///
/// With HCR_EL2.FWB == 0 (ARM ARM D8.6.5 "Stage 2 memory type and
/// Cacheability attributes when FEAT_S2FWB is disabled") MemAttr\[3:2\] is
/// 0b00 for Device (MemAttr\[1:0\] the Device type) or the outer cacheability
/// of Normal memory, and MemAttr\[1:0\] the inner cacheability; stage 1 and
/// stage 2 attributes are combined, the stronger type winning.
///
/// With HCR_EL2.FWB == 1 (FEAT_S2FWB, D8.6.6) stage 2 can force the final
/// attribute: MemAttr\[2\] == 0 gives Device (MemAttr\[1:0\]) whatever stage 1
/// says; 0b0101 Normal Non-cacheable; 0b0110 Normal Write-Back, forced;
/// 0b0111 uses the stage 1 attribute. A table is built for one of the two
/// forms; the [`Stage2`](crate::regime::Stage2) regime checks that the
/// attributes match the form it was configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemAttr {
    /// Device memory (both forms): MemAttr = 0b00dd.
    Device(DeviceType),
    /// Normal memory, FWB == 0 form: MemAttr = outer:inner.
    Normal {
        /// MemAttr\[3:2\].
        outer: NormalCacheability,
        /// MemAttr\[1:0\].
        inner: NormalCacheability,
    },
    /// FWB == 1: Normal Non-cacheable, forced (0b0101).
    FwbNormalNonCacheable,
    /// FWB == 1: Normal Write-Back, forced (0b0110).
    FwbNormalWriteBack,
    /// FWB == 1: the stage 1 attributes are used (0b0111).
    FwbUseStage1,
}

impl MemAttr {
    /// Normal Write-Back memory in the FWB == 0 form (KVM's MT_S2_NORMAL,
    /// 0b1111).
    pub const NORMAL_WB: MemAttr = MemAttr::Normal {
        outer: NormalCacheability::WriteBack,
        inner: NormalCacheability::WriteBack,
    };

    /// The 4-bit MemAttr encoding.
    pub const fn bits(self) -> u64 {
        match self {
            MemAttr::Device(d) => d as u64,
            MemAttr::Normal { outer, inner } => ((outer as u64) << 2) | inner as u64,
            MemAttr::FwbNormalNonCacheable => 0b0101,
            MemAttr::FwbNormalWriteBack => 0b0110,
            MemAttr::FwbUseStage1 => 0b0111,
        }
    }

    /// Whether this is one of the FWB == 1 Normal encodings.
    pub const fn is_fwb_form(self) -> bool {
        matches!(
            self,
            MemAttr::FwbNormalNonCacheable | MemAttr::FwbNormalWriteBack | MemAttr::FwbUseStage1
        )
    }

    /// Decodes MemAttr in the given form; `None` for reserved encodings.
    pub fn decode(bits: u64, fwb: bool) -> Option<Self> {
        let bits = bits & 0b1111;
        let cache = |b: u64| match b {
            0b01 => Some(NormalCacheability::NonCacheable),
            0b10 => Some(NormalCacheability::WriteThrough),
            0b11 => Some(NormalCacheability::WriteBack),
            _ => None,
        };
        let device = |b: u64| match b & 0b11 {
            0b00 => DeviceType::NGnRnE,
            0b01 => DeviceType::NGnRE,
            0b10 => DeviceType::NGRE,
            _ => DeviceType::GRE,
        };
        if fwb {
            match bits {
                0b0000..=0b0011 => Some(MemAttr::Device(device(bits))),
                0b0101 => Some(MemAttr::FwbNormalNonCacheable),
                0b0110 => Some(MemAttr::FwbNormalWriteBack),
                0b0111 => Some(MemAttr::FwbUseStage1),
                _ => None,
            }
        } else if bits >> 2 == 0 {
            Some(MemAttr::Device(device(bits)))
        } else {
            Some(MemAttr::Normal {
                outer: cache(bits >> 2)?,
                inner: cache(bits & 0b11)?,
            })
        }
    }
}

/// Stage 2 data access permissions, S2AP\[1:0\] (ARM ARM D8.4.3 "Stage 2
/// data access permissions"): bit 6 grants read, bit 7 grants write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum S2ap {
    /// 0b00: no access.
    None = 0b00,
    /// 0b01: read-only.
    ReadOnly = 0b01,
    /// 0b10: write-only.
    WriteOnly = 0b10,
    /// 0b11: read/write.
    ReadWrite = 0b11,
}

/// Stage 2 execute-never, XN\[1:0\] (ARM ARM D8.4.5 "Stage 2 instruction
/// execution permissions"; the EL1/EL0 distinction needs FEAT_XNX, without
/// it only [`S2xn::Executable`] and [`S2xn::Never`] exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum S2xn {
    /// 0b00: executable at EL1 and EL0.
    Executable = 0b00,
    /// 0b01: not executable at EL1, executable at EL0 (FEAT_XNX).
    El0Only = 0b01,
    /// 0b10: executable at neither.
    Never = 0b10,
    /// 0b11: executable at EL1, not at EL0 (FEAT_XNX).
    El1Only = 0b11,
}

/// Attributes of a stage 2 block or page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stage2Attrs {
    /// Memory type.
    pub mem_attr: MemAttr,
    /// Read/write permission.
    pub s2ap: S2ap,
    /// Execute permission.
    pub xn: S2xn,
    /// Shareability.
    pub sh: Shareability,
    /// Access flag.
    pub af: bool,
    /// Dirty bit modifier (FEAT_HAFDBS at stage 2).
    pub dbm: bool,
}

impl Stage2Attrs {
    /// Guest RAM: Normal Write-Back (FWB == 0 form), inner shareable,
    /// accessed, read/write, executable.
    pub const RAM: Stage2Attrs = Stage2Attrs {
        mem_attr: MemAttr::NORMAL_WB,
        s2ap: S2ap::ReadWrite,
        xn: S2xn::Executable,
        sh: Shareability::Inner,
        af: true,
        dbm: false,
    };

    /// An emulated or passed-through device: Device-nGnRE, read/write,
    /// never executable.
    pub const DEVICE: Stage2Attrs = Stage2Attrs {
        mem_attr: MemAttr::Device(DeviceType::NGnRE),
        s2ap: S2ap::ReadWrite,
        xn: S2xn::Never,
        sh: Shareability::NonShareable,
        af: true,
        dbm: false,
    };

    /// The same attributes with another access permission.
    pub const fn with_s2ap(mut self, s2ap: S2ap) -> Self {
        self.s2ap = s2ap;
        self
    }

    /// Encodes the attribute bits of a descriptor.
    pub const fn to_bits(self) -> u64 {
        (self.mem_attr.bits() << MEMATTR_SHIFT)
            | ((self.s2ap as u64) << S2AP_SHIFT)
            | ((self.sh as u64) << SH_SHIFT)
            | if self.af { AF } else { 0 }
            | if self.dbm { DBM } else { 0 }
            | ((self.xn as u64) << XN_SHIFT)
    }

    /// Decodes the attribute bits of a descriptor written in the given
    /// MemAttr form; `None` for a reserved MemAttr.
    pub fn from_bits(bits: u64, fwb: bool) -> Option<Self> {
        Some(Stage2Attrs {
            mem_attr: MemAttr::decode((bits & MEMATTR_MASK) >> MEMATTR_SHIFT, fwb)?,
            s2ap: match (bits & S2AP_MASK) >> S2AP_SHIFT {
                0b00 => S2ap::None,
                0b01 => S2ap::ReadOnly,
                0b10 => S2ap::WriteOnly,
                _ => S2ap::ReadWrite,
            },
            xn: match (bits & XN_MASK) >> XN_SHIFT {
                0b00 => S2xn::Executable,
                0b01 => S2xn::El0Only,
                0b10 => S2xn::Never,
                _ => S2xn::El1Only,
            },
            sh: Shareability::from_bits(bits >> SH_SHIFT),
            af: bits & AF != 0,
            dbm: bits & DBM != 0,
        })
    }

    /// What these attributes let the guest do.
    pub fn grants(self) -> Grants {
        let mut g = Grants::empty();
        if matches!(self.s2ap, S2ap::ReadOnly | S2ap::ReadWrite) {
            g |= Grants::READ;
        }
        if matches!(self.s2ap, S2ap::WriteOnly | S2ap::ReadWrite) {
            g |= Grants::WRITE;
        }
        if matches!(self.xn, S2xn::Executable | S2xn::El1Only) {
            g |= Grants::EXEC;
        }
        if matches!(self.xn, S2xn::Executable | S2xn::El0Only) {
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

impl core::fmt::Display for MemAttr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let c = |c: &NormalCacheability| match c {
            NormalCacheability::NonCacheable => "NC",
            NormalCacheability::WriteThrough => "WT",
            NormalCacheability::WriteBack => "WB",
        };
        match self {
            MemAttr::Device(d) => write!(f, "Device-{d:?}"),
            MemAttr::Normal { outer, inner } if outer == inner => write!(f, "Normal-{}", c(outer)),
            MemAttr::Normal { outer, inner } => write!(f, "Normal-o{}-i{}", c(outer), c(inner)),
            MemAttr::FwbNormalNonCacheable => f.write_str("FWB-Normal-NC"),
            MemAttr::FwbNormalWriteBack => f.write_str("FWB-Normal-WB"),
            MemAttr::FwbUseStage1 => f.write_str("FWB-stage1"),
        }
    }
}

impl core::fmt::Display for Stage2Attrs {
    /// A compact form: memory type, S2AP (`rw`, `r-`, `-w`, `--`), execute
    /// (`x`, `xn`, `x-el0`, `x-el1`), shareability, and `af`/`!af`, `dbm`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let ap = match self.s2ap {
            S2ap::None => "--",
            S2ap::ReadOnly => "r-",
            S2ap::WriteOnly => "-w",
            S2ap::ReadWrite => "rw",
        };
        let xn = match self.xn {
            S2xn::Executable => "x",
            S2xn::Never => "xn",
            S2xn::El0Only => "x-el0",
            S2xn::El1Only => "x-el1",
        };
        write!(f, "{} {ap} {xn} {}", self.mem_attr, super::sh_name(self.sh))?;
        f.write_str(if self.af { " af" } else { " !af" })?;
        if self.dbm {
            f.write_str(" dbm")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ARM ARM D8.3.2, stage 2 Block and Page descriptor attribute fields.
    #[test]
    fn field_positions() {
        let base = Stage2Attrs {
            mem_attr: MemAttr::Device(DeviceType::NGnRnE),
            s2ap: S2ap::None,
            xn: S2xn::Executable,
            sh: Shareability::NonShareable,
            af: false,
            dbm: false,
        };
        assert_eq!(base.to_bits(), 0);
        assert_eq!(
            Stage2Attrs {
                mem_attr: MemAttr::NORMAL_WB,
                ..base
            }
            .to_bits(),
            0b1111 << 2
        );
        assert_eq!(
            Stage2Attrs {
                s2ap: S2ap::ReadOnly,
                ..base
            }
            .to_bits(),
            1 << 6
        );
        assert_eq!(
            Stage2Attrs {
                s2ap: S2ap::WriteOnly,
                ..base
            }
            .to_bits(),
            1 << 7
        );
        assert_eq!(
            Stage2Attrs {
                sh: Shareability::Inner,
                ..base
            }
            .to_bits(),
            0b11 << 8
        );
        assert_eq!(Stage2Attrs { af: true, ..base }.to_bits(), 1 << 10);
        assert_eq!(Stage2Attrs { dbm: true, ..base }.to_bits(), 1 << 51);
        assert_eq!(
            Stage2Attrs {
                xn: S2xn::Never,
                ..base
            }
            .to_bits(),
            1 << 54
        );
        assert_eq!(
            Stage2Attrs {
                xn: S2xn::El0Only,
                ..base
            }
            .to_bits(),
            1 << 53
        );
        assert_eq!(CONTIGUOUS, 1 << 52);
    }

    // MemAttr encodings: D8.6.5 (FWB == 0) and D8.6.6 (FWB == 1); KVM uses
    // 0b1111 for normal memory and 0b0001 for device memory without FWB,
    // 0b0110 and 0b0001 with it.
    #[test]
    fn memattr_encodings() {
        assert_eq!(MemAttr::NORMAL_WB.bits(), 0b1111);
        assert_eq!(MemAttr::Device(DeviceType::NGnRE).bits(), 0b0001);
        let nc = NormalCacheability::NonCacheable;
        assert_eq!(
            MemAttr::Normal {
                outer: nc,
                inner: nc
            }
            .bits(),
            0b0101
        );
        assert_eq!(MemAttr::FwbNormalWriteBack.bits(), 0b0110);
        assert_eq!(MemAttr::FwbNormalNonCacheable.bits(), 0b0101);
        assert_eq!(
            MemAttr::decode(0b0110, true),
            Some(MemAttr::FwbNormalWriteBack)
        );
        assert_eq!(MemAttr::decode(0b0100, true), None);
        assert_eq!(
            MemAttr::decode(0b0100, false),
            None,
            "inner cacheability 0b00 is reserved"
        );
        assert_eq!(MemAttr::decode(0b1111, false), Some(MemAttr::NORMAL_WB));
        for bits in 0..16 {
            for fwb in [false, true] {
                if let Some(m) = MemAttr::decode(bits, fwb) {
                    assert_eq!(m.bits(), bits);
                }
            }
        }
    }

    #[test]
    fn round_trip_and_grants() {
        let ram = Stage2Attrs::RAM;
        assert_eq!(Stage2Attrs::from_bits(ram.to_bits(), false), Some(ram));
        assert_eq!(
            ram.grants(),
            Grants::READ | Grants::WRITE | Grants::EXEC | Grants::UNPRIV_EXEC | Grants::ACCESS
        );
        let ro = ram.with_s2ap(S2ap::ReadOnly);
        assert!(ram.grants().contains(ro.grants()) && ram.grants() != ro.grants());
    }
}
