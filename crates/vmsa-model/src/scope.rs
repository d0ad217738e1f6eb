//! What a TLBI removes: its operand decoded exactly as the system
//! instruction pages define it (Arm ARM C5.5, "A64 System instructions for
//! TLB maintenance"; range operands D8.17.5.2).

use vmsa::tlbi::TlbiOp;

/// Which cached entries of a tree an operation can remove.
pub mod kinds {
    /// Stage 1 entries (EL1&0 stage 1, or the EL2 regime), including the
    /// stage 1 part of walks.
    pub const STAGE1: u8 = 1 << 0;
    /// Stage-2-only entries (IPA -> PA), leaf and walk cache.
    pub const STAGE2_ONLY: u8 = 1 << 1;
    /// Combined stage 1 + 2 entries (VA -> PA) derived from a stage 2 leaf.
    pub const COMBINED: u8 = 1 << 2;
    /// Everything.
    pub const ALL: u8 = STAGE1 | STAGE2_ONLY | COMBINED;
}

/// Which translation regime an operation acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// EL1&0 entries of one VMID (the VMID in the issuing PE's VTTBR_EL2
    /// when the operation executes).
    Vmid(u16),
    /// EL1&0 entries of every VMID (`ALLE1`).
    AllVmids,
    /// The EL2 regime.
    El2,
}

/// Which ASIDs an operation matches (stage 1 EL1&0 entries only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsidMatch {
    /// Any ASID, and global entries.
    Any,
    /// Entries with this ASID, and global entries (`VAE1`).
    OrGlobal(u16),
    /// Non-global entries with this ASID only (`ASIDE1`).
    Only(u16),
}

/// What one TLBI removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The regime.
    pub target: Target,
    /// ASID filter.
    pub asid: AsidMatch,
    /// Input addresses: entries translating any address in `[start, end)`;
    /// `None` for every address.
    pub range: Option<(u64, u64)>,
    /// `true` when the address is an IPA (stage 2 operations).
    pub by_ipa: bool,
    /// For operations by VA: whether the VA is in the upper (TTBR1) range.
    /// A TLBI by VA names one VA, and a VA is translated by TTBR0 or by
    /// TTBR1 by its top bits, so it removes entries of one of the two
    /// tables only. The operand holds VA\[55:12\]; VA\[55\] (bit 43) selects
    /// the range. For range forms (BaseADDR holds VA\[48:12\] with 4 KiB
    /// pages) VA\[48\] is taken, which selects the range of 48-bit spaces.
    /// `None` when not by VA.
    pub upper: Option<bool>,
    /// Last-level forms: walk-cache entries are not removed.
    pub leaf_only: bool,
    /// TTL hint: only entries at this level need be removed.
    pub level: Option<u8>,
    /// Which entry kinds ([`kinds`]).
    pub kinds: u8,
    /// Broadcast to the Inner Shareable domain (`IS` forms).
    pub broadcast: bool,
    /// The hint or range encoding names another granule, or is reserved:
    /// nothing need be removed.
    pub void: bool,
}

const PAGE: u64 = 4096;

/// Decodes a 4-bit TTL field (bits \[47:44\] of VA and IPA operands): \[3:2\]
/// the granule (0b00: no hint), \[1:0\] the level. Returns (level hint, void).
fn ttl4(ttl: u64) -> (Option<u8>, bool) {
    match ttl >> 2 & 0b11 {
        0b00 => (None, false),
        // 4 KiB granule: level 0 is a reserved hint (no level-0 leaves), so
        // it gives no information.
        0b01 => match ttl & 0b11 {
            0 => (None, false),
            l => (Some(l as u8), false),
        },
        // 16 KiB or 64 KiB: not this model's granule, so no 4 KiB entry
        // need be removed.
        _ => (None, true),
    }
}

/// Decodes a FEAT_TLBIRANGE operand: ASID \[63:48\], TG \[47:46\], SCALE
/// \[45:44\], NUM \[43:39\], TTL \[38:37\], BaseADDR \[36:0\]; the range is
/// `BaseADDR * granule + [0, (NUM + 1) * 2^(5 * SCALE + 1) * granule)`.
fn range_operand(xt: u64, by_ipa: bool) -> (Option<(u64, u64)>, Option<u8>, bool) {
    let tg = xt >> 46 & 0b11;
    if tg != 0b01 {
        // TG 0b00 is reserved; 16/64 KiB is not this model's granule.
        return (Some((0, 0)), None, true);
    }
    let scale = xt >> 44 & 0b11;
    let num = xt >> 39 & 0x1f;
    let ttl = (xt >> 37 & 0b11) as u8;
    let base_field = xt & ((1 << 37) - 1);
    // BaseADDR holds VA[48:12] (or IPA[48:12]) for the 4 KiB granule. The
    // model's VAs are VA[47:0] (VA[48] selects the range, see
    // `Scope::upper`).
    let start = if by_ipa {
        base_field * PAGE
    } else {
        (base_field * PAGE) & ((1 << 48) - 1)
    };
    let pages = (num + 1) << (5 * scale + 1);
    let end = start.saturating_add(pages * PAGE);
    let level = if ttl == 0 { None } else { Some(ttl) };
    (Some((start, end)), level, false)
}

impl Scope {
    /// The scope of `op` with operand `xt`, issued by a PE whose VTTBR_EL2
    /// holds `vmid`.
    pub fn of(op: TlbiOp, xt: u64, vmid: u16) -> Scope {
        use TlbiOp::*;
        let asid = (xt >> 48) as u16;
        // VA[55:12] in [43:0]; the model's inputs are at most 48 bits.
        let va = (xt & ((1 << 44) - 1)) << 12 & ((1 << 48) - 1);
        // IPA[51:48] in [39:36], IPA[47:12] in [35:0].
        let ipa = (xt & ((1 << 40) - 1)) << 12;
        let (ttl_level, ttl_void) = ttl4(xt >> 44 & 0xf);
        let one = |a: u64| Some((a, a + PAGE));
        let va_upper = Some(xt >> 43 & 1 == 1);
        let range_upper = Some(xt >> 36 & 1 == 1);
        let mut s = Scope {
            target: Target::Vmid(vmid),
            asid: AsidMatch::Any,
            range: None,
            by_ipa: false,
            upper: None,
            leaf_only: false,
            level: None,
            kinds: kinds::STAGE1,
            broadcast: op.is_broadcast(),
            void: false,
        };
        match op {
            Vae1 | Vae1is | Vale1 | Vale1is => {
                s.asid = AsidMatch::OrGlobal(asid);
                s.range = one(va);
                s.upper = va_upper;
                (s.level, s.void) = (ttl_level, ttl_void);
            }
            Vaae1 | Vaae1is | Vaale1 | Vaale1is => {
                s.range = one(va);
                s.upper = va_upper;
                (s.level, s.void) = (ttl_level, ttl_void);
            }
            Aside1 | Aside1is => s.asid = AsidMatch::Only(asid),
            Vmalle1 | Vmalle1is => s.kinds = kinds::STAGE1 | kinds::COMBINED,
            Ipas2e1 | Ipas2e1is | Ipas2le1 | Ipas2le1is => {
                s.kinds = kinds::STAGE2_ONLY;
                s.by_ipa = true;
                s.range = one(ipa);
                (s.level, s.void) = (ttl_level, ttl_void);
            }
            Vmalls12e1 | Vmalls12e1is => s.kinds = kinds::ALL,
            Alle1 | Alle1is => {
                s.target = Target::AllVmids;
                s.kinds = kinds::ALL;
            }
            Vae2 | Vae2is | Vale2 | Vale2is => {
                s.target = Target::El2;
                // With HCR_EL2.E2H 1 the operand's ASID field selects the
                // EL2&0 regime's ASID (entries without one, E2H 0, ignore
                // it).
                s.asid = AsidMatch::OrGlobal(asid);
                s.range = one(va);
                s.upper = va_upper;
                (s.level, s.void) = (ttl_level, ttl_void);
            }
            Alle2 | Alle2is => s.target = Target::El2,
            Rvae1 | Rvae1is | Rvale1 | Rvale1is => {
                s.asid = AsidMatch::OrGlobal(asid);
                (s.range, s.level, s.void) = range_operand(xt, false);
                s.upper = range_upper;
            }
            Rvaae1 | Rvaae1is | Rvaale1 | Rvaale1is => {
                (s.range, s.level, s.void) = range_operand(xt, false);
                s.upper = range_upper;
            }
            Ripas2e1 | Ripas2e1is | Ripas2le1 | Ripas2le1is => {
                s.kinds = kinds::STAGE2_ONLY;
                s.by_ipa = true;
                (s.range, s.level, s.void) = range_operand(xt, true);
            }
        }
        s.leaf_only = op.last_level_only();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmsa::tlbi::{ipa_operand, va_operand, RangeOperand, Ttl};

    #[test]
    fn va_operand_fields() {
        let s = Scope::of(TlbiOp::Vae1is, va_operand(7, 0x1234_5000, Ttl::at(1, 3)), 3);
        assert_eq!(s.asid, AsidMatch::OrGlobal(7));
        assert_eq!(s.range, Some((0x1234_5000, 0x1234_6000)));
        assert_eq!(s.level, Some(3));
        assert_eq!(s.target, Target::Vmid(3));
        assert!(s.broadcast && !s.leaf_only);
    }

    #[test]
    fn ipa_operand_high_bits() {
        // IPA[47:12] in [35:0]; a 48-bit IPA's top bits land in [35:32].
        let s = Scope::of(
            TlbiOp::Ipas2le1,
            ipa_operand(0xffff_ffff_f000, Ttl::NONE),
            1,
        );
        assert_eq!(s.range, Some((0xffff_ffff_f000, 0x1_0000_0000_0000)));
        assert!(s.leaf_only && !s.broadcast && s.by_ipa);
        assert_eq!(s.kinds, kinds::STAGE2_ONLY);
    }

    #[test]
    fn casemate_ttl_without_granule_is_no_hint() {
        // Casemate traces pass 0x300000000000: TTL 0b0011, granule 0b00.
        let s = Scope::of(TlbiOp::Ipas2e1is, 0x3000_0000_0000, 0);
        assert_eq!((s.level, s.void), (None, false));
        let s = Scope::of(TlbiOp::Vae2is, 2 << 46, 0);
        assert!(s.void, "16 KiB hint");
    }

    #[test]
    fn range_operand_bounds() {
        let op = RangeOperand {
            asid: 5,
            tg: 1,
            scale: 1,
            num: 2,
            ttl: 3,
            base: 0x40000,
        };
        let s = Scope::of(TlbiOp::Rvale1is, op.encode(), 0);
        // (2 + 1) * 2^(5 + 1) = 192 pages from 0x4000_0000.
        assert_eq!(s.range, Some((0x4000_0000, 0x4000_0000 + 192 * 4096)));
        assert_eq!(s.level, Some(3));
        assert_eq!(s.asid, AsidMatch::OrGlobal(5));
    }
}
