//! Translation regimes as types.
//!
//! A regime fixes what the input and output addresses are, which leaf
//! attributes exist, how the translation-control registers are computed,
//! which break-before-make rules apply and which TLBI removes what it
//! caches. Tables are generic over it: `Table<Stage2, _>` cannot be handed
//! stage 1 attributes.

use core::fmt::Debug;

use crate::addr::{Address, Ipa, Pa, Va};
use crate::bbm::{BbmRule, STAGE1_RULES, STAGE2_RULES};
use crate::descriptor::{Ap, Stage1Attrs, Stage2Attrs, TableAttrs};
use crate::effects::SysReg;
use crate::error::Error;
use crate::geometry::{Geometry, Granule};
use crate::perms::Grants;
use crate::tlbi::{asid_operand, ipa_operand, va_operand, TlbiOp, Ttl};

/// A virtual machine identifier (VTTBR_EL2.VMID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Vmid(pub u16);

/// An address space identifier (TTBRn_EL1.ASID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Asid(pub u16);

/// Which half of a two-range regime a table translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VaRange {
    /// TTBR0: addresses from 0 up.
    Lower,
    /// TTBR1: addresses from the top of the 64-bit space down.
    Upper,
}

/// Physical address size, the PS/IPS encoding of TCR_ELx and VTCR_EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaSize {
    /// 32 bits (0b000).
    Bits32,
    /// 36 bits (0b001).
    Bits36,
    /// 40 bits (0b010).
    Bits40,
    /// 42 bits (0b011).
    Bits42,
    /// 44 bits (0b100).
    Bits44,
    /// 48 bits (0b101).
    Bits48,
}

impl PaSize {
    /// The number of address bits.
    pub const fn bits(self) -> u8 {
        match self {
            PaSize::Bits32 => 32,
            PaSize::Bits36 => 36,
            PaSize::Bits40 => 40,
            PaSize::Bits42 => 42,
            PaSize::Bits44 => 44,
            PaSize::Bits48 => 48,
        }
    }

    /// The PS/IPS field encoding.
    pub const fn encoding(self) -> u64 {
        match self {
            PaSize::Bits32 => 0b000,
            PaSize::Bits36 => 0b001,
            PaSize::Bits40 => 0b010,
            PaSize::Bits42 => 0b011,
            PaSize::Bits44 => 0b100,
            PaSize::Bits48 => 0b101,
        }
    }
}

/// Which stage a regime translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Stage 1 (VA -> IPA or PA).
    One,
    /// Stage 2 (IPA -> PA).
    Two,
}

/// Walk attributes used for every table the library builds: Normal
/// Write-Back Read/Write-Allocate (0b01) inner and outer, Inner Shareable.
const IRGN_WBWA: u64 = 0b01;
const ORGN_WBWA: u64 = 0b01;
const SH_INNER: u64 = 0b11;

/// A translation regime.
pub trait Regime: Copy + Debug {
    /// The input address type.
    type Input: Address;
    /// The output address type.
    type Output: Address;
    /// Leaf attributes.
    type Attrs: Copy + Eq + Debug + core::fmt::Display;

    /// The stage.
    const STAGE: Stage;
    /// A short name for reports.
    const NAME: &'static str;

    /// Validates and encodes leaf attributes into descriptor bits.
    ///
    /// # Errors
    /// [`Error::InvalidAttributes`] for encodings the regime does not allow.
    fn encode_attrs(&self, attrs: &Self::Attrs) -> Result<u64, Error>;
    /// Decodes the attribute bits of a leaf the library wrote.
    fn decode_attrs(&self, bits: u64) -> Self::Attrs;
    /// The rights granted by a leaf's attribute bits.
    fn grants(&self, bits: u64) -> Grants;
    /// Hierarchical attributes of the table descriptors the library writes.
    fn table_attrs(&self) -> TableAttrs {
        TableAttrs::empty()
    }
    /// The break-before-make rule table for this regime's leaves.
    fn bbm_rules(&self) -> &'static [BbmRule];
    /// Size of the output address space in bits.
    fn output_bits(&self) -> u8;
    /// The first input address the table translates (0 for lower ranges).
    fn input_base(&self, geometry: &Geometry) -> u64 {
        let _ = geometry;
        0
    }
    /// Checks that the geometry suits the regime.
    ///
    /// # Errors
    /// [`Error::UnsupportedGeometry`] or [`Error::TagOutOfRange`].
    fn check(&self, geometry: &Geometry) -> Result<(), Error>;

    /// The TLBI that removes what may be cached for one input address:
    /// leaf entries only (`leaf_only`) or every level, walk caches included.
    fn tlbi_by_addr(&self, addr: u64, leaf_only: bool, ttl: Ttl) -> (TlbiOp, u64);
    /// The single TLBI that removes everything this regime's tables may have
    /// left in the TLBs, for when per-address operations would cost more.
    fn tlbi_all(&self) -> (TlbiOp, u64);
    /// Whether per-address TLBIs must be followed by `DSB ISH; TLBI
    /// VMALLE1IS` (stage 2: IPA-based operations need not remove combined
    /// stage 1+2 entries).
    fn needs_vmalle1is_after_by_addr(&self) -> bool {
        false
    }
    /// Whether the PE that changed the tables must also execute an ISB
    /// before relying on them (it translates through them itself).
    fn needs_isb(&self) -> bool {
        false
    }
    /// The translation-control and base registers for a table rooted at
    /// `root`: written, in this order, to activate it.
    fn registers(&self, geometry: &Geometry, root: Pa) -> [(SysReg, u64); 2];

    /// The address space as the invalidation planner sees it.
    fn space_kind(&self) -> crate::plan::SpaceKind;
}

/// Stage 2 configuration shared by the VMs of one hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stage2Config {
    /// Physical address size (VTCR_EL2.PS).
    pub pa_size: PaSize,
    /// 16-bit VMIDs (VTCR_EL2.VS, FEAT_VMID16); 8-bit otherwise.
    pub vmid16: bool,
    /// HCR_EL2.FWB is set: leaves use the FEAT_S2FWB MemAttr encoding.
    pub fwb: bool,
}

impl Default for Stage2Config {
    fn default() -> Self {
        Stage2Config {
            pa_size: PaSize::Bits48,
            vmid16: true,
            fwb: false,
        }
    }
}

/// Stage 2 translation of an EL1&0 guest: IPA -> PA, tagged by VMID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stage2 {
    /// The guest's VMID.
    pub vmid: Vmid,
    /// Hypervisor-wide settings.
    pub config: Stage2Config,
}

impl Stage2 {
    /// Stage 2 for `vmid` with the default configuration (48-bit PA, 16-bit
    /// VMIDs, no FWB).
    pub fn new(vmid: Vmid) -> Self {
        Stage2 {
            vmid,
            config: Stage2Config::default(),
        }
    }

    /// VTCR_EL2 for a table of this geometry (ARM ARM D24.2.x VTCR_EL2):
    /// T0SZ \[5:0\], SL0 \[7:6\], IRGN0 \[9:8\], ORGN0 \[11:10\], SH0 \[13:12\],
    /// TG0 \[15:14\], PS \[18:16\], VS \[19\], bit 31 RES1.
    pub fn vtcr(&self, geometry: &Geometry) -> u64 {
        let t0sz = 64 - u64::from(geometry.input_bits());
        // SL0 for the 4 KiB granule: 0b10 level 0, 0b01 level 1, 0b00 level 2.
        let sl0 = match geometry.granule() {
            Granule::K4 => 2 - u64::from(geometry.start_level()),
        };
        t0sz | (sl0 << 6)
            | (IRGN_WBWA << 8)
            | (ORGN_WBWA << 10)
            | (SH_INNER << 12)
            | (geometry.granule().tg0() << 14)
            | (self.config.pa_size.encoding() << 16)
            | (u64::from(self.config.vmid16) << 19)
            | (1 << 31)
    }

    /// VTTBR_EL2 for a table rooted at `root`: VMID \[63:48\] (only \[55:48\]
    /// with 8-bit VMIDs), BADDR \[47:1\], CnP \[0\] left clear.
    pub fn vttbr(&self, root: Pa) -> u64 {
        (u64::from(self.vmid.0) << 48) | root.0
    }
}

impl Regime for Stage2 {
    type Input = Ipa;
    type Output = Pa;
    type Attrs = Stage2Attrs;
    const STAGE: Stage = Stage::Two;
    const NAME: &'static str = "stage 2";

    fn encode_attrs(&self, attrs: &Stage2Attrs) -> Result<u64, Error> {
        if attrs.mem_attr.is_fwb_form() != self.config.fwb
            && !matches!(attrs.mem_attr, crate::descriptor::MemAttr::Device(_))
        {
            return Err(Error::InvalidAttributes {
                field: "MemAttr: the FEAT_S2FWB form must match the table's configuration",
            });
        }
        Ok(attrs.to_bits())
    }

    fn decode_attrs(&self, bits: u64) -> Stage2Attrs {
        // The library only writes encodings `encode_attrs` accepted, which
        // always decode; fall back to the raw-bits reading otherwise.
        Stage2Attrs::from_bits(bits, self.config.fwb)
            .or_else(|| Stage2Attrs::from_bits(bits, !self.config.fwb))
            .unwrap_or(Stage2Attrs {
                mem_attr: crate::descriptor::MemAttr::NORMAL_WB,
                ..Stage2Attrs::RAM
            })
    }

    fn grants(&self, bits: u64) -> Grants {
        self.decode_attrs(bits).grants()
    }

    fn bbm_rules(&self) -> &'static [BbmRule] {
        STAGE2_RULES
    }

    fn output_bits(&self) -> u8 {
        self.config.pa_size.bits()
    }

    fn check(&self, geometry: &Geometry) -> Result<(), Error> {
        if !self.config.vmid16 && self.vmid.0 > 0xff {
            return Err(Error::TagOutOfRange {
                tag: self.vmid.0,
                bits: 8,
            });
        }
        if geometry.input_bits() > self.config.pa_size.bits() {
            // An IPA space larger than PS faults (VTCR_EL2.T0SZ vs PS).
            return Err(Error::UnsupportedGeometry {
                why: "the IPA size is larger than the physical address size (VTCR_EL2.PS)",
            });
        }
        Ok(())
    }

    fn tlbi_by_addr(&self, addr: u64, leaf_only: bool, ttl: Ttl) -> (TlbiOp, u64) {
        let op = if leaf_only {
            TlbiOp::Ipas2le1is
        } else {
            TlbiOp::Ipas2e1is
        };
        (op, ipa_operand(addr, ttl))
    }

    fn tlbi_all(&self) -> (TlbiOp, u64) {
        (TlbiOp::Vmalls12e1is, 0)
    }

    fn space_kind(&self) -> crate::plan::SpaceKind {
        crate::plan::SpaceKind::Stage2 { vmid: self.vmid.0 }
    }

    fn needs_vmalle1is_after_by_addr(&self) -> bool {
        true
    }

    fn registers(&self, geometry: &Geometry, root: Pa) -> [(SysReg, u64); 2] {
        [
            (SysReg::VtcrEl2, self.vtcr(geometry)),
            (SysReg::VttbrEl2, self.vttbr(root)),
        ]
    }
}

/// Stage 1 of the EL1&0 regime: VA -> IPA, tagged by ASID (non-global
/// entries) and by the current VMID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct El1Stage1 {
    /// The address space's ASID.
    pub asid: Asid,
    /// TTBR0 or TTBR1 half.
    pub range: VaRange,
    /// Intermediate physical address size (TCR_EL1.IPS).
    pub ipa_size: PaSize,
    /// 16-bit ASIDs (TCR_EL1.AS).
    pub asid16: bool,
}

impl El1Stage1 {
    /// The lower (TTBR0) range for `asid`, 48-bit IPA, 16-bit ASIDs.
    pub fn new(asid: Asid) -> Self {
        El1Stage1 {
            asid,
            range: VaRange::Lower,
            ipa_size: PaSize::Bits48,
            asid16: true,
        }
    }

    /// TCR_EL1 fields for this half (ARM ARM D24.2.x TCR_EL1): for TTBR0,
    /// T0SZ \[5:0\], IRGN0 \[9:8\], ORGN0 \[11:10\], SH0 \[13:12\], TG0 \[15:14\] and
    /// EPD1 \[23\] set (no TTBR1 walks); for TTBR1, T1SZ \[21:16\], A1 \[22\] (the
    /// ASID comes from TTBR1), IRGN1 \[25:24\], ORGN1 \[27:26\], SH1 \[29:28\],
    /// TG1 \[31:30\] (0b10 for 4 KiB) and EPD0 \[7\]; IPS \[34:32\]; AS \[36\].
    pub fn tcr(&self, geometry: &Geometry) -> u64 {
        let tsz = 64 - u64::from(geometry.input_bits());
        let walk = IRGN_WBWA | (ORGN_WBWA << 2) | (SH_INNER << 4);
        let common = (self.ipa_size.encoding() << 32) | (u64::from(self.asid16) << 36);
        match self.range {
            VaRange::Lower => {
                tsz | (walk << 8) | (geometry.granule().tg0() << 14) | (1 << 23) | common
            }
            VaRange::Upper => {
                let tg1 = match geometry.granule() {
                    Granule::K4 => 0b10,
                };
                (tsz << 16) | (1 << 22) | (walk << 24) | (tg1 << 30) | (1 << 7) | common
            }
        }
    }
}

impl Regime for El1Stage1 {
    type Input = Va;
    type Output = Ipa;
    type Attrs = Stage1Attrs;
    const STAGE: Stage = Stage::One;
    const NAME: &'static str = "stage 1 EL1&0";

    fn encode_attrs(&self, attrs: &Stage1Attrs) -> Result<u64, Error> {
        if attrs.attr_index > 7 {
            return Err(Error::InvalidAttributes {
                field: "AttrIndx: 0 to 7 (an index into MAIR_EL1)",
            });
        }
        Ok(attrs.to_bits())
    }

    fn decode_attrs(&self, bits: u64) -> Stage1Attrs {
        Stage1Attrs::from_bits(bits)
    }

    fn grants(&self, bits: u64) -> Grants {
        Stage1Attrs::from_bits(bits).grants()
    }

    fn bbm_rules(&self) -> &'static [BbmRule] {
        STAGE1_RULES
    }

    fn output_bits(&self) -> u8 {
        self.ipa_size.bits()
    }

    fn input_base(&self, geometry: &Geometry) -> u64 {
        match self.range {
            VaRange::Lower => 0,
            VaRange::Upper => geometry.input_size().wrapping_neg(),
        }
    }

    fn check(&self, _geometry: &Geometry) -> Result<(), Error> {
        if !self.asid16 && self.asid.0 > 0xff {
            return Err(Error::TagOutOfRange {
                tag: self.asid.0,
                bits: 8,
            });
        }
        Ok(())
    }

    fn tlbi_by_addr(&self, addr: u64, leaf_only: bool, ttl: Ttl) -> (TlbiOp, u64) {
        let op = if leaf_only {
            TlbiOp::Vale1is
        } else {
            TlbiOp::Vae1is
        };
        (op, va_operand(self.asid.0, addr, ttl))
    }

    fn tlbi_all(&self) -> (TlbiOp, u64) {
        // ASIDE1IS would leave global entries; VMALLE1IS removes every
        // stage 1 entry of the current VMID.
        (TlbiOp::Vmalle1is, 0)
    }

    fn space_kind(&self) -> crate::plan::SpaceKind {
        crate::plan::SpaceKind::El1 { asid: self.asid.0 }
    }

    fn registers(&self, geometry: &Geometry, root: Pa) -> [(SysReg, u64); 2] {
        let ttbr = (u64::from(self.asid.0) << 48) | root.0;
        let reg = match self.range {
            VaRange::Lower => SysReg::Ttbr0El1,
            VaRange::Upper => SysReg::Ttbr1El1,
        };
        [(SysReg::TcrEl1, self.tcr(geometry)), (reg, ttbr)]
    }
}

/// Stage 1 of the EL2 regime with HCR_EL2.E2H == 0: the hypervisor's own
/// VA -> PA mappings; one range, no ASID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct El2Stage1 {
    /// Physical address size (TCR_EL2.PS).
    pub pa_size: PaSize,
}

impl Default for El2Stage1 {
    fn default() -> Self {
        El2Stage1 {
            pa_size: PaSize::Bits48,
        }
    }
}

impl El2Stage1 {
    /// TCR_EL2 (E2H == 0): T0SZ \[5:0\], IRGN0 \[9:8\], ORGN0 \[11:10\], SH0
    /// \[13:12\], TG0 \[15:14\], PS \[18:16\], bits 23 and 31 RES1.
    pub fn tcr(&self, geometry: &Geometry) -> u64 {
        (64 - u64::from(geometry.input_bits()))
            | (IRGN_WBWA << 8)
            | (ORGN_WBWA << 10)
            | (SH_INNER << 12)
            | (geometry.granule().tg0() << 14)
            | (self.pa_size.encoding() << 16)
            | (1 << 23)
            | (1 << 31)
    }
}

impl Regime for El2Stage1 {
    type Input = Va;
    type Output = Pa;
    type Attrs = Stage1Attrs;
    const STAGE: Stage = Stage::One;
    const NAME: &'static str = "stage 1 EL2";

    /// In the EL2 regime AP\[1\] is RES1, PXN is RES0 and there is no nG:
    /// attributes must use [`Ap::ReadWrite`] or [`Ap::ReadOnly`], with
    /// `pxn` and `ng` clear (execute permission is `uxn`, the XN bit).
    fn encode_attrs(&self, attrs: &Stage1Attrs) -> Result<u64, Error> {
        if attrs.attr_index > 7 {
            return Err(Error::InvalidAttributes {
                field: "AttrIndx: 0 to 7 (an index into MAIR_EL2)",
            });
        }
        if attrs.pxn || attrs.ng || !matches!(attrs.ap, Ap::ReadWrite | Ap::ReadOnly) {
            return Err(Error::InvalidAttributes {
                field: "PXN, nG and EL0 access do not exist in the EL2 regime (no E2H)",
            });
        }
        Ok(attrs.to_bits())
    }

    fn decode_attrs(&self, bits: u64) -> Stage1Attrs {
        Stage1Attrs::from_bits(bits)
    }

    fn grants(&self, bits: u64) -> Grants {
        // AP[1] (EL0 access) has no meaning at EL2; XN is the one execute
        // control.
        let a = Stage1Attrs::from_bits(bits);
        let mut g = a.grants() - (Grants::UNPRIV_READ | Grants::UNPRIV_WRITE | Grants::UNPRIV_EXEC);
        g.set(Grants::EXEC, !a.uxn);
        g
    }

    fn bbm_rules(&self) -> &'static [BbmRule] {
        STAGE1_RULES
    }

    fn output_bits(&self) -> u8 {
        self.pa_size.bits()
    }

    fn check(&self, _geometry: &Geometry) -> Result<(), Error> {
        Ok(())
    }

    fn tlbi_by_addr(&self, addr: u64, leaf_only: bool, ttl: Ttl) -> (TlbiOp, u64) {
        let op = if leaf_only {
            TlbiOp::Vale2is
        } else {
            TlbiOp::Vae2is
        };
        (op, va_operand(0, addr, ttl))
    }

    fn tlbi_all(&self) -> (TlbiOp, u64) {
        (TlbiOp::Alle2is, 0)
    }

    fn space_kind(&self) -> crate::plan::SpaceKind {
        crate::plan::SpaceKind::El2
    }

    fn needs_isb(&self) -> bool {
        true
    }

    fn registers(&self, geometry: &Geometry, root: Pa) -> [(SysReg, u64); 2] {
        [
            (SysReg::TcrEl2, self.tcr(geometry)),
            (SysReg::Ttbr0El2, root.0),
        ]
    }
}

/// The ASID operand helper, re-exported for callers building their own
/// ASID-wide invalidations.
pub const fn aside1is_operand(asid: Asid) -> u64 {
    asid_operand(asid.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // VTCR_EL2 computed by hand: 40-bit IPA (T0SZ = 24 = 0x18), start level
    // 1 (SL0 = 0b01), WBWA walks (IRGN0 = ORGN0 = 0b01), inner shareable
    // (SH0 = 0b11), 4 KiB (TG0 = 0b00), PS = 48 bits (0b101), VS = 1, RES1
    // bit 31.
    #[test]
    fn vtcr_el2_by_hand() {
        let g = Geometry::stage2(Granule::K4, 40).unwrap();
        let s2 = Stage2::new(Vmid(5));
        let expect = 0x18
            | (0b01 << 6)
            | (0b01 << 8)
            | (0b01 << 10)
            | (0b11 << 12)
            | (0b101 << 16)
            | (1 << 19)
            | (1 << 31);
        assert_eq!(s2.vtcr(&g), expect);
        assert_eq!(expect, 0x800d_3558);
        // 48-bit IPA starts at level 0: SL0 = 0b10. 32-bit at level 2: 0b00.
        assert_eq!(
            (s2.vtcr(&Geometry::stage2(Granule::K4, 48).unwrap()) >> 6) & 3,
            0b10
        );
        assert_eq!(
            (s2.vtcr(&Geometry::stage2(Granule::K4, 32).unwrap()) >> 6) & 3,
            0b00
        );
        assert_eq!(s2.vttbr(Pa(0x8000_2000)), 0x0005_0000_8000_2000);
    }

    #[test]
    fn tcr_by_hand() {
        let g = Geometry::stage1(Granule::K4, 48).unwrap();
        let el1 = El1Stage1::new(Asid(3));
        // T0SZ 16, walk attrs 0x3500 (IRGN0/ORGN0 WBWA, SH0 inner), EPD1,
        // IPS 48-bit (0b101 at 32), AS (bit 36).
        assert_eq!(
            el1.tcr(&g),
            0x10 | 0x3500 | (1 << 23) | (0b101 << 32) | (1 << 36)
        );
        let upper = El1Stage1 {
            range: VaRange::Upper,
            ..el1
        };
        assert_eq!(
            upper.tcr(&g),
            (16 << 16)
                | (1 << 22)
                | (0x35 << 24)
                | (0b10 << 30)
                | (1 << 7)
                | (0b101 << 32)
                | (1 << 36)
        );
        assert_eq!(upper.input_base(&g), 0xffff_0000_0000_0000);
        let el2 = El2Stage1::default();
        assert_eq!(
            el2.tcr(&g),
            0x10 | 0x3500 | (0b101 << 16) | (1 << 23) | (1 << 31)
        );
    }

    #[test]
    fn el2_rejects_res_fields() {
        let ok = Stage1Attrs {
            ap: Ap::ReadWrite,
            ng: false,
            pxn: false,
            ..Stage1Attrs::normal_rw(0)
        };
        assert!(El2Stage1::default().encode_attrs(&ok).is_ok());
        assert!(El2Stage1::default()
            .encode_attrs(&Stage1Attrs { ng: true, ..ok })
            .is_err());
        assert!(El2Stage1::default()
            .encode_attrs(&Stage1Attrs { pxn: true, ..ok })
            .is_err());
        assert!(El1Stage1::new(Asid(1))
            .encode_attrs(&Stage1Attrs {
                attr_index: 8,
                ..ok
            })
            .is_err());
        let s2 = Stage2 {
            vmid: Vmid(300),
            config: Stage2Config {
                vmid16: false,
                ..Default::default()
            },
        };
        assert_eq!(
            s2.check(&Geometry::stage2(Granule::K4, 40).unwrap()),
            Err(Error::TagOutOfRange { tag: 300, bits: 8 })
        );
    }
}
