//! FEAT_TLBIRANGE operands: covering an address range with as few range
//! operations as possible.
//!
//! A range operation covers `(NUM + 1) * 2^(5 * SCALE + 1)` granules from
//! BaseADDR (Arm ARM D8.17.5.2; operand layout in [`RangeOperand`]). With
//! NUM in 0..=31 and SCALE in 0..=3 a single operation covers from 2 to
//! 2^21 granules; an odd granule left over needs a by-address operation.

use alloc::vec::Vec;

use crate::tlbi::RangeOperand;

/// TLBI TG encoding of the 4 KiB granule.
pub const TG_4K: u8 = 0b01;

/// Largest BaseADDR (37 bits, in granules).
const BASE_LIMIT: u64 = 1 << 37;

/// The range operands covering `[start, end)` exactly (4 KiB granule), with
/// ASID `asid` and level hint `ttl` (0 for none), and the addresses of
/// single granules left over (at most one), which need a by-address
/// operation. Returns `None` when the range cannot be expressed (beyond
/// the 37-bit BaseADDR field).
pub fn cover(start: u64, end: u64, asid: u16, ttl: u8) -> Option<(Vec<RangeOperand>, Vec<u64>)> {
    const G: u64 = 4096;
    let (mut base, last) = (start / G, end.div_ceil(G));
    if last > BASE_LIMIT {
        return None;
    }
    let mut ops = Vec::new();
    let mut singles = Vec::new();
    // Largest scale first, as many whole units as fit (up to 32, which is
    // one unit of the next scale): each scale then needs at most one
    // operation, except the largest.
    for scale in (0..=3u8).rev() {
        let unit = 1u64 << (5 * scale as u64 + 1);
        while last - base >= unit {
            let n = ((last - base) / unit).min(32);
            ops.push(RangeOperand {
                asid,
                tg: TG_4K,
                scale,
                num: (n - 1) as u8,
                ttl,
                base,
            });
            base += n * unit;
        }
    }
    if base < last {
        singles.push(base * G);
    }
    Some((ops, singles))
}

/// The bytes `op` covers, from its first address.
pub fn span(op: &RangeOperand) -> (u64, u64) {
    let pages = (op.num as u64 + 1) << (5 * op.scale as u64 + 1);
    (op.base * 4096, (op.base + pages) * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_pages_is_scale_0_num_0() {
        let (ops, singles) = cover(0x4000_0000, 0x4000_2000, 7, 3).unwrap();
        assert_eq!(singles, Vec::<u64>::new());
        assert_eq!(ops.len(), 1);
        // By hand: ASID 7 << 48 | TG 01 << 46 | SCALE 0 | NUM 0 | TTL 3 << 37
        // | BaseADDR 0x40000.
        assert_eq!(ops[0].encode(), 7 << 48 | 1 << 46 | 3 << 37 | 0x40000);
    }

    #[test]
    fn two_mib_is_one_operation() {
        // 512 pages = 8 units of 64 pages (SCALE 1): NUM 7.
        let (ops, singles) = cover(0x20_0000, 0x40_0000, 0, 0).unwrap();
        assert!(singles.is_empty());
        assert_eq!(ops.len(), 1);
        assert_eq!((ops[0].scale, ops[0].num), (1, 7));
        assert_eq!(ops[0].encode(), 1 << 46 | 1 << 44 | 7 << 39 | 0x200);
        assert_eq!(span(&ops[0]), (0x20_0000, 0x40_0000));
    }

    #[test]
    fn one_gib_and_odd_pages() {
        // 1 GiB = 262144 pages = 4 units of 2^16 pages (SCALE 3): NUM 3.
        let (ops, singles) = cover(0, 1 << 30, 0, 0).unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!((ops[0].scale, ops[0].num), (3, 3));
        // 3 pages: one 2-page operation and one single page.
        let (ops, singles2) = cover(0x1000, 0x4000, 0, 0).unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(singles2, vec![0x3000]);
        assert!(singles.is_empty());
    }

    #[test]
    fn covers_exactly() {
        for (s, e) in [(0x1000u64, 0x9_3000u64), (0, 0x4567_8000), (0x7000, 0x8000)] {
            let (ops, singles) = cover(s, e, 0, 0).unwrap();
            let mut at = s;
            for op in &ops {
                let (a, b) = span(op);
                assert_eq!(a, at);
                at = b;
            }
            for &p in &singles {
                assert_eq!(p, at);
                at += 4096;
            }
            assert_eq!(at, e);
        }
    }
}
