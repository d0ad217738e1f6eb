//! TLB maintenance operations and their register operands.
//!
//! Operands are encoded exactly as the system instruction pages of the ARM
//! ARM (C5.5 "A64 System instructions for TLB maintenance") define them, so
//! the model, the recorder and the real CPU see the same 64-bit `Xt`.

use core::fmt;

use crate::caps::Capabilities;
use crate::effects::{Barrier, Effects};

/// A TLBI operation (the `<op>` of `TLBI <op>{, <Xt>}`).
///
/// Names follow the architecture: the `is` suffix is the Inner Shareable
/// (broadcast) form; without it the operation acts on the issuing PE only.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlbiOp {
    Vae1,
    Vae1is,
    Vale1,
    Vale1is,
    Vaae1,
    Vaae1is,
    Vaale1,
    Vaale1is,
    Aside1,
    Aside1is,
    Vmalle1,
    Vmalle1is,
    Ipas2e1,
    Ipas2e1is,
    Ipas2le1,
    Ipas2le1is,
    Vmalls12e1,
    Vmalls12e1is,
    Alle1,
    Alle1is,
    Vae2,
    Vae2is,
    Vale2,
    Vale2is,
    Alle2,
    Alle2is,
    Rvae1,
    Rvae1is,
    Rvale1,
    Rvale1is,
    Rvaae1,
    Rvaae1is,
    Rvaale1,
    Rvaale1is,
    Ripas2e1,
    Ripas2e1is,
    Ripas2le1,
    Ripas2le1is,
}

/// What the operand register of a TLBI carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperandKind {
    /// No operand (`XZR` is passed).
    None,
    /// ASID only, bits \[63:48\].
    Asid,
    /// ASID, TTL and VA\[55:12\] (see [`va_operand`]).
    Va,
    /// TTL and IPA\[51:12\] (see [`ipa_operand`]).
    Ipa,
    /// A range operand (see [`RangeOperand`]).
    Range,
}

impl TlbiOp {
    /// Every operation, for tables and tests.
    pub const ALL: [TlbiOp; 38] = {
        use TlbiOp::*;
        [
            Vae1,
            Vae1is,
            Vale1,
            Vale1is,
            Vaae1,
            Vaae1is,
            Vaale1,
            Vaale1is,
            Aside1,
            Aside1is,
            Vmalle1,
            Vmalle1is,
            Ipas2e1,
            Ipas2e1is,
            Ipas2le1,
            Ipas2le1is,
            Vmalls12e1,
            Vmalls12e1is,
            Alle1,
            Alle1is,
            Vae2,
            Vae2is,
            Vale2,
            Vale2is,
            Alle2,
            Alle2is,
            Rvae1,
            Rvae1is,
            Rvale1,
            Rvale1is,
            Rvaae1,
            Rvaae1is,
            Rvaale1,
            Rvaale1is,
            Ripas2e1,
            Ripas2e1is,
            Ripas2le1,
            Ripas2le1is,
        ]
    };

    /// The lower-case mnemonic, as the assembler and Casemate traces spell it.
    pub const fn mnemonic(self) -> &'static str {
        use TlbiOp::*;
        match self {
            Vae1 => "vae1",
            Vae1is => "vae1is",
            Vale1 => "vale1",
            Vale1is => "vale1is",
            Vaae1 => "vaae1",
            Vaae1is => "vaae1is",
            Vaale1 => "vaale1",
            Vaale1is => "vaale1is",
            Aside1 => "aside1",
            Aside1is => "aside1is",
            Vmalle1 => "vmalle1",
            Vmalle1is => "vmalle1is",
            Ipas2e1 => "ipas2e1",
            Ipas2e1is => "ipas2e1is",
            Ipas2le1 => "ipas2le1",
            Ipas2le1is => "ipas2le1is",
            Vmalls12e1 => "vmalls12e1",
            Vmalls12e1is => "vmalls12e1is",
            Alle1 => "alle1",
            Alle1is => "alle1is",
            Vae2 => "vae2",
            Vae2is => "vae2is",
            Vale2 => "vale2",
            Vale2is => "vale2is",
            Alle2 => "alle2",
            Alle2is => "alle2is",
            Rvae1 => "rvae1",
            Rvae1is => "rvae1is",
            Rvale1 => "rvale1",
            Rvale1is => "rvale1is",
            Rvaae1 => "rvaae1",
            Rvaae1is => "rvaae1is",
            Rvaale1 => "rvaale1",
            Rvaale1is => "rvaale1is",
            Ripas2e1 => "ripas2e1",
            Ripas2e1is => "ripas2e1is",
            Ripas2le1 => "ripas2le1",
            Ripas2le1is => "ripas2le1is",
        }
    }

    /// Parses a mnemonic (case-insensitive).
    pub fn from_mnemonic(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|op| op.mnemonic().eq_ignore_ascii_case(s))
    }

    /// Whether the operation is broadcast to every PE in the Inner Shareable
    /// domain (the `IS` forms).
    pub const fn is_broadcast(self) -> bool {
        let m = self.mnemonic().as_bytes();
        m[m.len() - 2] == b'i' && m[m.len() - 1] == b's'
    }

    /// The operand the operation takes.
    pub const fn operand_kind(self) -> OperandKind {
        use TlbiOp::*;
        match self {
            Vmalle1 | Vmalle1is | Vmalls12e1 | Vmalls12e1is | Alle1 | Alle1is | Alle2 | Alle2is => {
                OperandKind::None
            }
            Aside1 | Aside1is => OperandKind::Asid,
            Vae1 | Vae1is | Vale1 | Vale1is | Vaae1 | Vaae1is | Vaale1 | Vaale1is | Vae2
            | Vae2is | Vale2 | Vale2is => OperandKind::Va,
            Ipas2e1 | Ipas2e1is | Ipas2le1 | Ipas2le1is => OperandKind::Ipa,
            Rvae1 | Rvae1is | Rvale1 | Rvale1is | Rvaae1 | Rvaae1is | Rvaale1 | Rvaale1is
            | Ripas2e1 | Ripas2e1is | Ripas2le1 | Ripas2le1is => OperandKind::Range,
        }
    }

    /// Whether the operation only removes last-level (leaf) entries and
    /// leaves walk-cache entries for table descriptors alone.
    pub const fn last_level_only(self) -> bool {
        use TlbiOp::*;
        matches!(
            self,
            Vale1
                | Vale1is
                | Vaale1
                | Vaale1is
                | Ipas2le1
                | Ipas2le1is
                | Vale2
                | Vale2is
                | Rvale1
                | Rvale1is
                | Rvaale1
                | Rvaale1is
                | Ripas2le1
                | Ripas2le1is
        )
    }
}

impl fmt::Display for TlbiOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mnemonic())
    }
}

/// A TTL hint (FEAT_TTL): bits \[3:2\] the granule (0b01 4 KiB, 0b10 16 KiB,
/// 0b11 64 KiB), bits \[1:0\] the level of the entry. 0 means "no
/// information": the entry may be at any level. A wrong hint means an entry
/// need not be invalidated, so the library only gives one when it knows the
/// level for certain and the CPU has FEAT_TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Ttl(pub u8);

impl Ttl {
    /// No level information.
    pub const NONE: Ttl = Ttl(0);

    /// A hint for an entry at `level` (1 to 3; level 0 cannot be hinted
    /// with the 4 KiB granule) in the granule with TLBI TG encoding `tg`.
    pub const fn at(tg: u64, level: u8) -> Ttl {
        Ttl(((tg as u8 & 0b11) << 2) | (level & 0b11))
    }
}

/// VA\[55:12\] occupies operand bits \[43:0\]; mask so that the sign bits of an
/// upper-range VA do not spill into the TTL field.
const VA_FIELD_MASK: u64 = (1 << 44) - 1;

/// The operand of `TLBI VAE1IS` and the other VA forms: ASID in \[63:48\],
/// TTL in \[47:44\], VA\[55:12\] in \[43:0\] (4 KiB granule).
pub const fn va_operand(asid: u16, va: u64, ttl: Ttl) -> u64 {
    ((asid as u64) << 48) | (((ttl.0 & 0xf) as u64) << 44) | ((va >> 12) & VA_FIELD_MASK)
}

/// The operand of `TLBI IPAS2E1IS` and `IPAS2LE1IS`: TTL in \[47:44\],
/// IPA\[51:12\] in \[39:0\] (NS, bit 63, left 0: Non-secure IPA space).
pub const fn ipa_operand(ipa: u64, ttl: Ttl) -> u64 {
    (((ttl.0 & 0xf) as u64) << 44) | ((ipa >> 12) & ((1 << 40) - 1))
}

/// The operand of `TLBI ASIDE1IS`: the ASID in bits \[63:48\].
pub const fn asid_operand(asid: u16) -> u64 {
    (asid as u64) << 48
}

/// A FEAT_TLBIRANGE operand: ASID \[63:48\], TG \[47:46\], SCALE \[45:44\],
/// NUM \[43:39\], TTL \[38:37\], BaseADDR \[36:0\] (in granule units). It covers
/// `BaseADDR <= addr < BaseADDR + (NUM + 1) * 2^(5 * SCALE + 1)` granules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RangeOperand {
    /// ASID (ignored by the all-ASID and IPA forms).
    pub asid: u16,
    /// Granule, TLBI TG encoding (0b01 4 KiB, 0b10 16 KiB, 0b11 64 KiB).
    pub tg: u8,
    /// SCALE, 0..=3.
    pub scale: u8,
    /// NUM, 0..=31.
    pub num: u8,
    /// TTL\[1:0\]: the level of the entries (0 = any level).
    pub ttl: u8,
    /// BaseADDR: the first address in granule units (37 bits).
    pub base: u64,
}

impl RangeOperand {
    /// Encodes the operand register.
    pub const fn encode(self) -> u64 {
        ((self.asid as u64) << 48)
            | (((self.tg & 0b11) as u64) << 46)
            | (((self.scale & 0b11) as u64) << 44)
            | (((self.num & 0x1f) as u64) << 39)
            | (((self.ttl & 0b11) as u64) << 37)
            | (self.base & ((1 << 37) - 1))
    }

    /// Decodes an operand register.
    pub const fn decode(xt: u64) -> Self {
        RangeOperand {
            asid: (xt >> 48) as u16,
            tg: ((xt >> 46) & 0b11) as u8,
            scale: ((xt >> 44) & 0b11) as u8,
            num: ((xt >> 39) & 0x1f) as u8,
            ttl: ((xt >> 37) & 0b11) as u8,
            base: xt & ((1 << 37) - 1),
        }
    }

    /// Number of granules covered.
    pub const fn pages(self) -> u64 {
        (self.num as u64 + 1) << (5 * self.scale as u32 + 1)
    }
}

/// Issues the TLBIs `ops`, in order, then `done`, the barrier that
/// completes them (`DSB ISH` for broadcast operations, `DSB NSH` for local
/// ones), honouring the errata in `caps`: with
/// [`Capabilities::repeat_tlbi`] the last operation is issued again after
/// `done`, and `done` again after it (Linux's
/// `ARM64_WORKAROUND_REPEAT_TLBI`). Returns whether anything was issued:
/// with no operations nothing is, not even `done`.
///
/// Every TLBI vmsa issues goes through here: the
/// [`Planner`](crate::Planner)'s sequences (once per batch),
/// [`Basic`](crate::Basic) and the baselines' shared
/// [`invalidate::emit`](crate::invalidate::emit),
/// [`Table::vcpu_load`](crate::Table::vcpu_load)'s local flush,
/// [`Table::spurious_fault`](crate::Table::spurious_fault), the VMID /
/// ASID rollover flush ([`TagKind::rollover_flush`](crate::TagKind::rollover_flush))
/// and the request shim ([`request::shim_execute`](crate::request::shim_execute)).
///
/// ```
/// use vmsa::{tlbi, Barrier, Capabilities, Effect, Recorder, TlbiOp};
/// let caps = Capabilities { repeat_tlbi: true, ..Capabilities::default() };
/// let mut fx = Recorder::new();
/// tlbi::issue(&mut fx, &caps, [(TlbiOp::Vmalle1is, 0)], Barrier::DsbIsh);
/// let op = Effect::Tlbi { op: TlbiOp::Vmalle1is, operand: 0 };
/// let dsb = Effect::Barrier(Barrier::DsbIsh);
/// assert_eq!(fx.log(), &[op, dsb, op, dsb]);
/// ```
pub fn issue<E: Effects + ?Sized>(
    fx: &mut E,
    caps: &Capabilities,
    ops: impl IntoIterator<Item = (TlbiOp, u64)>,
    done: Barrier,
) -> bool {
    let mut last = None;
    for (op, operand) in ops {
        fx.tlbi(op, operand);
        last = Some((op, operand));
    }
    let Some((op, operand)) = last else {
        return false;
    };
    fx.barrier(done);
    if caps.repeat_tlbi {
        fx.tlbi(op, operand);
        fx.barrier(done);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values computed by hand from the TLBI VAE1IS and TLBI IPAS2E1IS
    // register descriptions (C5.5): ASID [63:48], TTL [47:44], VA[55:12]
    // [43:0]; IPA[51:12] in [39:0].
    #[test]
    fn va_and_ipa_operands() {
        assert_eq!(
            va_operand(0x42, 0x0000_1234_5678_9000, Ttl::NONE),
            0x0042_0001_2345_6789
        );
        // An upper-range VA: bits 63:56 are sign bits and must not reach TTL.
        assert_eq!(
            va_operand(0, 0xffff_8000_0000_0000, Ttl::NONE),
            0x0000_0ff8_0000_0000
        );
        assert_eq!(
            va_operand(1, 0x20_0000, Ttl::at(0b01, 2)),
            0x0001_6000_0000_0200
        );
        // The Casemate sample traces use 0x300000000000 = TTL 0b0011 (level
        // 3, no granule) for IPA 0.
        assert_eq!(ipa_operand(0x8000_0000, Ttl::NONE), 0x8_0000);
        assert_eq!(
            ipa_operand(0x000f_ffff_ffff_f000, Ttl::at(0b01, 3)),
            0x0000_70ff_ffff_ffff
        );
        assert_eq!(asid_operand(0xffff), 0xffff_0000_0000_0000);
    }

    // Range operand, TLBI RVAE1IS description: TG [47:46], SCALE [45:44],
    // NUM [43:39], TTL [38:37], BaseADDR [36:0].
    #[test]
    fn range_operand_layout() {
        let r = RangeOperand {
            asid: 7,
            tg: 0b01,
            scale: 1,
            num: 3,
            ttl: 0b11,
            base: 0x100,
        };
        let xt = r.encode();
        assert_eq!(
            xt,
            (7 << 48) | (1 << 46) | (1 << 44) | (3 << 39) | (3 << 37) | 0x100
        );
        assert_eq!(RangeOperand::decode(xt), r);
        // (NUM+1) * 2^(5*SCALE+1) = 4 * 64 granules.
        assert_eq!(r.pages(), 256);
        let max = RangeOperand {
            asid: 0,
            tg: 1,
            scale: 3,
            num: 31,
            ttl: 0,
            base: 0,
        };
        assert_eq!(max.pages(), 32 << 16);
    }

    #[test]
    fn mnemonics_and_classes() {
        for op in TlbiOp::ALL {
            assert_eq!(TlbiOp::from_mnemonic(op.mnemonic()), Some(op));
        }
        assert!(TlbiOp::Vmalle1is.is_broadcast());
        assert!(!TlbiOp::Vmalle1.is_broadcast());
        assert!(TlbiOp::Ripas2le1is.is_broadcast() && TlbiOp::Ripas2le1is.last_level_only());
        assert!(!TlbiOp::Vae1is.last_level_only());
        assert_eq!(TlbiOp::Ipas2e1is.operand_kind(), OperandKind::Ipa);
        assert_eq!(
            TlbiOp::from_mnemonic("VMALLS12E1IS"),
            Some(TlbiOp::Vmalls12e1is)
        );
    }
}
