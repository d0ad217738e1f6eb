//! Which changes to a live descriptor need break-before-make.
//!
//! ARM ARM (DDI0487) D8.17.1 (rule RWHZWS) "Using break-before-make when updating
//! translation table entries": replacing one valid descriptor with another
//! valid one must go through an invalid descriptor, with the TLB
//! maintenance completed in between, when the change alters any of: the
//! output address, the memory type or cacheability, the shareability, the
//! size of the translation (block <-> table, the Contiguous hint), or the
//! global/non-global state. Changes of permissions, the Access Flag and DBM
//! may be written in place. FEAT_BBM relaxes the block-size rule at the risk
//! of TLB conflict aborts; the library does not rely on it.
//!
//! This module is the one place that decides. Creating a mapping (invalid ->
//! valid) and removing one (valid -> invalid) never need it.

use crate::descriptor::{stage1, stage2, Descriptor, Kind, OA_MASK_48};

/// One field whose change on a live leaf needs break-before-make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BbmRule {
    /// What the field is, in the ARM ARM's words.
    pub what: &'static str,
    /// The descriptor bits of the field.
    pub mask: u64,
}

/// The stage 1 fields (D8.17.1; Linux's `pgattr_change_is_safe` applies
/// the same list to its kernel mappings).
pub const STAGE1_RULES: &[BbmRule] = &[
    BbmRule {
        what: "output address",
        mask: OA_MASK_48,
    },
    BbmRule {
        what: "memory type (AttrIndx)",
        mask: stage1::ATTR_INDX_MASK,
    },
    BbmRule {
        what: "shareability",
        mask: stage1::SH_MASK,
    },
    BbmRule {
        what: "contiguous hint",
        mask: stage1::CONTIGUOUS,
    },
    BbmRule {
        what: "global/non-global (nG)",
        mask: stage1::NG,
    },
];

/// The stage 2 fields (D8.17.1; KVM's stage 2 code treats every
/// valid-to-valid change other than permissions this way).
pub const STAGE2_RULES: &[BbmRule] = &[
    BbmRule {
        what: "output address",
        mask: OA_MASK_48,
    },
    BbmRule {
        what: "memory type (MemAttr)",
        mask: stage2::MEMATTR_MASK,
    },
    BbmRule {
        what: "shareability",
        mask: stage2::SH_MASK,
    },
    BbmRule {
        what: "contiguous hint",
        mask: stage2::CONTIGUOUS,
    },
];

/// Why replacing `old` with `new` at `level` needs break-before-make, or
/// `None` when it may be written in place.
pub fn needs_bbm(rules: &[BbmRule], level: u8, old: u64, new: u64) -> Option<&'static str> {
    let (o, n) = (Descriptor(old), Descriptor(new));
    match (o.kind(level), n.kind(level)) {
        (Kind::Invalid, _) | (_, Kind::Invalid) => None,
        (Kind::Table, Kind::Table) => {
            (old & OA_MASK_48 != new & OA_MASK_48).then_some("next-level table address")
        }
        (Kind::Table, Kind::Leaf) | (Kind::Leaf, Kind::Table) => {
            Some("size of the translation (block <-> table)")
        }
        (Kind::Leaf, Kind::Leaf) => {
            let diff = old ^ new;
            rules.iter().find(|r| diff & r.mask != 0).map(|r| r.what)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_changes_are_in_place() {
        let page = Descriptor::leaf(3, 0x4000_0000, stage2::AF | (0b11 << 6)).0;
        let ro = page & !(1 << 7);
        assert_eq!(needs_bbm(STAGE2_RULES, 3, page, ro), None);
        assert_eq!(
            needs_bbm(STAGE2_RULES, 3, page, page | (1 << 54)),
            None,
            "XN"
        );
        assert_eq!(
            needs_bbm(STAGE2_RULES, 3, page, page & !stage2::AF),
            None,
            "AF"
        );
        assert_eq!(
            needs_bbm(STAGE2_RULES, 3, 0, page),
            None,
            "invalid -> valid"
        );
        assert_eq!(
            needs_bbm(STAGE2_RULES, 3, page, 0),
            None,
            "valid -> invalid"
        );
    }

    #[test]
    fn structural_changes_need_bbm() {
        let page = Descriptor::leaf(3, 0x4000_0000, 0).0;
        assert_eq!(
            needs_bbm(STAGE2_RULES, 3, page, Descriptor::leaf(3, 0x4000_1000, 0).0),
            Some("output address")
        );
        assert!(needs_bbm(STAGE2_RULES, 3, page, page | (0b1111 << 2)).is_some());
        assert!(needs_bbm(STAGE2_RULES, 3, page, page | (0b11 << 8)).is_some());
        let block = Descriptor::leaf(2, 0x4000_0000, 0).0;
        let table = Descriptor::table(0x8000_0000, Default::default()).0;
        assert!(needs_bbm(STAGE2_RULES, 2, block, table).is_some());
        assert!(needs_bbm(STAGE2_RULES, 2, table, block).is_some());
        assert!(needs_bbm(STAGE1_RULES, 3, page, page | stage1::NG).is_some());
        assert!(needs_bbm(STAGE1_RULES, 3, page, page | (5 << 2)).is_some());
        assert_eq!(
            needs_bbm(STAGE1_RULES, 3, page, page | stage1::PXN | (1 << 7)),
            None
        );
    }
}
